"""The flow goes through the same door as the CLI (issue 15): input the CLI refuses fails the flow run with the same
message, before any request reaches the sandbox."""

import json
import urllib.request
from pathlib import Path

import pytest

from flows.ask_batch import ask_batch
from flows.cli import build_spec, main
from flows.run_files import flow_parameters
from tasks.spec import ConfigSpec
from tests.e2e.conftest import EXAMPLE, example_sets


def requests_served(sandbox_dir: Path) -> dict[str, int]:
    base = json.loads((sandbox_dir / "endpoints.json").read_text())["control"]["endpoint"]
    with urllib.request.urlopen(base + "/stats", timeout=5) as resp:
        stats = json.loads(resp.read())
    return {**{cid: c["requests"] for cid, c in stats["clusters"].items()},
            **{name: s["requests"] for name, s in stats["services"].items()}}


def test_the_flow_refuses_what_the_cli_refuses_with_the_same_message(
        sandbox_dir: Path, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    big = workdir / "big.txt"
    big.write_bytes(b"x" * 1_100_000)
    sets = example_sets(workdir, "door-flow") + [f"config.local_paths=[/dev/zero, {big}]"]
    argv = ["--params", str(EXAMPLE), "--sandbox", str(sandbox_dir)]
    for item in sets:
        argv += ["--set", item]
    assert main(argv) == 2
    cli_message = capsys.readouterr().err.strip()
    assert cli_message.count("\n  - config.local_paths.") == 2, cli_message

    # The parameters as a deployment would send them: the file checks pass the schema, the door is in the flow.
    spec = build_spec(EXAMPLE, example_sets(workdir, "door-flow"), sandbox_dir)
    params = flow_parameters(spec)
    params["config"] = ConfigSpec.model_validate({**spec.config.model_dump(mode="json"),
                                                  "local_paths": ["/dev/zero", str(big)]})
    before = requests_served(sandbox_dir)
    state = ask_batch(**params, return_state=True)
    assert state.is_failed()
    assert str(state.result(raise_on_failure=False)) == cli_message
    assert requests_served(sandbox_dir) == before
