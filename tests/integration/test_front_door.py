"""Bad input stops at the door (issue 15): the fuzz cases that used to pass validation and fail in a cloud stage (or
end in a traceback, a hang, a MemoryError) are refused by the CLI, with and without ``--dry-run``, with exit 2 and
one line per problem, before any request reaches the sandbox (its request counters do not move)."""

import json
import os
import urllib.request
from pathlib import Path

import pytest

from flows.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deployments" / "example.yaml"


@pytest.fixture(scope="module")
def sandbox_dir(sandbox: object) -> Path:
    return Path(sandbox.sandbox.data_dir)  # type: ignore[attr-defined]


def requests_served(sandbox_dir: Path) -> dict[str, int]:
    """The sandbox's request counters: per Kubernetes cluster and per cloud service (OSS, CS, NAS)."""
    base = json.loads((sandbox_dir / "endpoints.json").read_text())["control"]["endpoint"]
    with urllib.request.urlopen(base + "/stats", timeout=5) as resp:
        stats = json.loads(resp.read())
    counters = {f"k8s:{cid}": c["requests"] for cid, c in stats["clusters"].items()}
    counters.update({name: s["requests"] for name, s in stats["services"].items()})
    return counters


def bomb(levels: int = 9, fanout: int = 10) -> str:
    lines = ['a0: &a0 "xxxxxxxx"'] + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fanout) + "]"
                                     for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def example_with(tmp: Path, text: str = "", raw: bytes = b"") -> str:
    """The example parameters with ``text`` appended (or ``raw`` bytes), as a file in ``tmp``."""
    path = tmp / "params.yaml"
    path.write_bytes(EXAMPLE.read_bytes().replace(b"examples/", str(REPO / "examples").encode() + b"/")
                     + text.encode() + raw)
    return str(path)


def make_fifo(tmp: Path) -> str:
    os.mkfifo(tmp / "pipe")
    return str(tmp / "pipe")


def make_big(tmp: Path) -> str:
    (tmp / "big.txt").write_bytes(b"x" * 1_100_000)
    return str(tmp / "big.txt")


# (case id, params file maker, --set values, the fields named, one per line)
CASES = [
    ("deadline 1e20", None, ["job.active_deadline_seconds=1.0e+20"], ["job.active_deadline_seconds"]),
    ("ttl 1e20", None, ["job.ttl_seconds_after_finished=100000000000000000000"], ["job.ttl_seconds_after_finished"]),
    ("junk vpc id", None, ["cluster.ask.vpc_id=vpc_ü!"], ["cluster.ask.vpc_id"]),
    ("$(VAR) in the marker", None, ["outputs.marker_name=$(ASK_BATCH_RUN_KEY)"], ["outputs.marker_name"]),
    ("config over 1 MiB", None, ["config.local_paths=[{big}]"], ["config.local_paths.0"]),
    ("/dev/zero in local_paths", None, ["config.local_paths=[/dev/zero]"], ["config.local_paths.0"]),
    ("FIFO in local_paths", None, ["config.local_paths=[{fifo}]"], ["config.local_paths.0"]),
    ("anchor bomb", lambda t: example_with(t, "\n" + bomb()), [], ["--params {params}"]),
    ("non-UTF-8 params", lambda t: example_with(t, raw=b"\n# caf\xe9\n"), [], ["--params {params}"]),
    ("deep nesting", lambda t: example_with(t, "\nx: " + "[" * 100 + "]" * 100 + "\n"), [], ["--params {params}"]),
    ("over 512 KB of parameters", None, ["config.files={{big.txt: '" + "x" * 600_000 + "'}}"], ["(spec)"]),
    ("pod_template_patch: unknown field", None,
     ["job.pod_template_patch={{spec: {{containers: [{{name: workload, imagee: x}}]}}}}"],
     ["job.pod_template_patch.spec.containers[0]"]),
    ("pod_template_patch: protected field", None, ["job.pod_template_patch={{spec: {{restartPolicy: Always}}}}"],
     ["job.pod_template_patch.spec.restartPolicy"]),
    ("three problems at once", None, ["job.active_deadline_seconds=1.0e+20", "cluster.ask.vpc_id=junk",
                                      "config.local_paths=[/dev/zero]"],
     ["cluster.ask.vpc_id", "job.active_deadline_seconds"]),  # spec problems first; files are read once it is valid
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
@pytest.mark.parametrize(("make_params", "sets", "fields"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_fuzz_cases_are_refused_at_the_door(sandbox_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            make_params, sets: list[str], fields: list[str], dry_run: bool) -> None:
    names = {"big": make_big(tmp_path) if any("{big}" in s for s in sets) else "",
             "fifo": make_fifo(tmp_path) if any("{fifo}" in s for s in sets) else ""}
    params = make_params(tmp_path) if make_params else str(EXAMPLE)
    argv = ["--params", params, "--sandbox", str(sandbox_dir)]
    for item in sets:
        argv += ["--set", item.format(**names)]
    before = requests_served(sandbox_dir)
    cwd = Path.cwd()
    os.chdir(REPO)  # the example's relative paths
    try:
        code = main(argv + (["--dry-run"] if dry_run else []))
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("  - ")]
    assert [line[4:].split(": ", 1)[0] for line in lines] == [f.format(params=params) for f in fields], err
    assert requests_served(sandbox_dir) == before
