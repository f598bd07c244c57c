"""What every benchmark shares: a sandbox subprocess on a temp dir, timing, statistics, tables, RESULTS.md.

Conventions (every script under bench/ follows them):

- each script runs alone (``.venv/bin/python bench/bench_X.py --repeat N``), prints its table and, unless
  ``--no-write``, replaces its own ``## heading`` section of bench/RESULTS.md (other sections are kept);
- a figure is the median of the repetitions, with min and max beside it;
- the baseline and ask-batch are measured in the same process run, on the same sandbox, interleaved per
  repetition, so a load spike from the other agents sharing this machine hits both;
- ratio = baseline / ask-batch for "lower is better" figures (ratio > 1: ask-batch is better).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

for _var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_var, None)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "RESULTS.md"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Pods of the sandbox's virtual node run as host processes with the sandbox's PATH: the venv's bin goes first so
# that `python3` in a Job command has the OSS SDK (as flows/ask_batch.py does when it starts a sandbox).
VENV_BIN = str(Path(sys.executable).parent)
if not os.environ.get("PATH", "").startswith(VENV_BIN):
    os.environ["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"


# --------------------------------------------------------------------------------------------- sandbox


class Sandbox:
    """A background sandbox on ``<tmp>/sandbox``, through the sandbox's one launcher (sandbox/launch.py);
    ``stop()`` (or ``with``) ends it. ``pid``: its process, for RSS and CPU figures. ``profile_to``: run it under
    cProfile, the profile written there when it stops."""

    def __init__(self, *, node_pods: int = 1000, keep: bool = False, profile_to: Path | None = None) -> None:
        from sandbox.launch import LaunchError, start_detached

        self._tmp = tempfile.TemporaryDirectory(prefix="bench-")
        self.root = Path(self._tmp.name)
        self.dir = self.root / "sandbox"
        self.keep = keep
        try:
            pid, _ = start_detached(self.dir, ["--node-pods", str(node_pods), "--cluster-create-delay", "0"],
                                    timeout=90, interpreter_args=None if profile_to is None else [
                                        "-m", "cProfile", "-o", str(profile_to)])
        except LaunchError as exc:
            raise SystemExit(str(exc)) from exc
        assert pid is not None
        self.pid: int = pid
        self.endpoints: dict[str, Any] = json.loads((self.dir / "endpoints.json").read_text())

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def endpoints_file(self) -> Path:
        return self.dir / "endpoints.json"

    def _get(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(self.endpoints["control"]["endpoint"] + path, timeout=10) as resp:
            return dict(json.loads(resp.read()))

    def stats(self) -> dict[str, Any]:
        return self._get("/stats")

    def requests(self, cluster_id: str | None = None) -> int:
        """Kubernetes API requests served so far (one cluster, or all)."""
        clusters = self.stats()["clusters"]
        if cluster_id:
            return int(clusters[cluster_id]["requests"])
        return sum(int(c["requests"]) for c in clusters.values())

    @property
    def default_cluster_id(self) -> str:
        return str(self.endpoints["kubernetes"]["cluster_id"])

    def api_client(self) -> Any:
        """A sync ``kubernetes.client.ApiClient`` for the default cluster (ask-batch's own factory)."""
        from tasks.cloud.clients import kube_api_client

        return kube_api_client(self.kubeconfig)

    def oss(self) -> Any:
        """An OSS v2 client on the sandbox (ask-batch's own factory: same retry/path-style config)."""
        from tasks.cloud.clients import AliCredentials, oss_client, target_from_endpoints_file

        target, env = target_from_endpoints_file(self.endpoints_file)
        creds = AliCredentials(env["ALIBABA_CLOUD_ACCESS_KEY_ID"], env["ALIBABA_CLOUD_ACCESS_KEY_SECRET"])
        return oss_client(target, creds)

    def stop(self) -> None:
        from sandbox.launch import stop_detached

        stop_detached(self.dir, timeout=60)
        if not self.keep:
            self._tmp.cleanup()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------- process memory


def proc_status_mb(pid: int | str, field: str = "VmRSS") -> float:
    """One memory field of ``/proc/<pid>/status`` in MB (``VmRSS``: resident now; ``VmHWM``: its peak so far);
    ``pid`` may be ``"self"``. NaN when the process is gone or the field is absent (proc(5))."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# --------------------------------------------------------------------------------------------- statistics


@dataclass
class Series:
    """Repeated measurements of one figure."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(float(value))

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def min(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def max(self) -> float:
        return max(self.values) if self.values else float("nan")

    def cell(self, fmt: str = "{:.3f}") -> str:
        if not self.values:
            return "-"
        return f"{fmt.format(self.median)} ({fmt.format(self.min)}–{fmt.format(self.max)})"


def ratio(baseline: Series, ours: Series, *, higher_is_better: bool = False) -> str:
    """baseline/ours for lower-is-better figures, ours/baseline otherwise (> 1: ask-batch is better)."""
    if not baseline.values or not ours.values:
        return "-"
    num, den = (ours.median, baseline.median) if higher_is_better else (baseline.median, ours.median)
    if den == 0:
        return "∞" if num > 0 else "1.00"
    return f"{num / den:.2f}"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """A markdown table; ``align`` is one of l/r per column (default: first left, rest right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- machine, results


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
        return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"
    except OSError:
        return "?"


def machine() -> str:
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal:"))
    return (f"{os.cpu_count()} cores ({platform.machine()}), {mem_kb / 1024 / 1024:.1f} GiB RAM, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}")


def provenance(command: str, started_load: str) -> str:
    """The line every section starts with: command, date, machine, load before/after."""
    now = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (f"`{command}` on {now}; {machine()}; load average (1/5/15 min) {started_load} before, "
            f"{load_average()} after (the 2 cores are shared with other agents' work).")


def write_section(heading: str, body: str) -> None:
    """Replace (or append) the ``heading`` section of RESULTS.md, keeping every other section."""
    today = dt.date.today().isoformat()
    text = RESULTS.read_text() if RESULTS.exists() else f"# Benchmark results\n\nMachine: {machine()}. {today}.\n"
    section = f"{heading}\n\n{body.rstrip()}\n"
    start = text.find(heading + "\n")
    if start >= 0:
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + section + (text[end:] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)


def base_parser(doc: str | None, repeat: int) -> Any:
    import argparse

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=repeat, help=f"repetitions (default {repeat})")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {RESULTS.name}")
    return parser


def command_line(argv: Sequence[str] | None) -> str:
    args = list(sys.argv[1:] if argv is None else argv)
    script = Path(sys.argv[0]).name if argv is None else "…"
    return " ".join(["python", f"bench/{script}" if script.endswith(".py") else script, *args])
