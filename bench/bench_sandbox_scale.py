"""Sandbox scale benchmark: one Indexed Job of N completions whose pods run `true`.

    .venv/bin/python bench/bench_sandbox_scale.py [--completions 10000] [--parallelism 500] [--repeat 1]
                                                  [--baseline 1000] [--profile DIR] [--no-write]

For each size (the baseline first, then N) it starts a fresh `python -m sandbox serve` subprocess on a
temporary directory, creates the Job through the `kubernetes` client (configured from DIR/kubeconfig),
waits for its Complete condition with a watch, and records the wall time (create -> Complete seen),
pods per second, and the sandbox process's peak RSS (VmHWM from /proc/<pid>/status; the control
endpoint's /stats figure as a fallback). It prints a markdown table and writes it to bench/RESULTS.md
under a "Sandbox scale" heading.

`--profile DIR` runs the sandbox under cProfile (`python -m cProfile -o DIR/<size>.prof -m sandbox serve`)
and prints the top functions by cumulative and internal time after each run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import pstats
import statistics
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the repository's packages (sandbox) must be importable
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import proc_status_mb

for _var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_var, None)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "RESULTS.md"
HEADING = "## Sandbox scale"


@dataclass
class Run:
    completions: int
    parallelism: int
    wall_s: float
    peak_rss_mb: float
    cpu_s: float
    api_requests: int

    @property
    def pods_per_s(self) -> float:
        return self.completions / self.wall_s


class ServedSandbox:
    """`python -m sandbox serve` on a temporary directory, optionally under cProfile."""

    def __init__(self, data_dir: Path, profile_to: Path | None = None, node_pods: int = 1000) -> None:
        from sandbox.launch import LaunchError, start_detached

        self.data_dir = data_dir
        profile = ["-m", "cProfile", "-o", str(profile_to)] if profile_to is not None else []
        try:
            pid, _ = start_detached(data_dir, ["--node-pods", str(node_pods)], timeout=60, interpreter_args=profile)
        except LaunchError as exc:
            raise SystemExit(str(exc)) from exc
        assert pid is not None
        self.pid: int = pid
        self.endpoints: dict[str, Any] = json.loads((data_dir / "endpoints.json").read_text())

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.endpoints["control"]["endpoint"] + "/stats", timeout=10) as resp:
            return dict(json.loads(resp.read()))

    def peak_rss_mb(self) -> float:
        peak = proc_status_mb(self.pid, "VmHWM")
        return peak if peak == peak else float(self.stats()["peak_rss_mb"])  # NaN: gone, ask it

    def cpu_seconds(self) -> float:
        """User + system CPU time of the sandbox process so far (not of the pods' processes)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        from sandbox.launch import stop_detached

        stop_detached(self.data_dir, timeout=120)


def job_manifest(name: str, completions: int, parallelism: int) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"completionMode": "Indexed", "completions": completions, "parallelism": parallelism,
                     "backoffLimit": 0,
                     "template": {"spec": {"restartPolicy": "Never",
                                           "containers": [{"name": "c", "image": "busybox:1.36",
                                                           "command": ["true"]}]}}}}


def wait_complete(batch: Any, name: str, timeout: float) -> dict[str, Any]:
    """Watch the Job until it is Complete (re-watching after a closed stream); fail on Failed."""
    from kubernetes import watch

    deadline = time.monotonic() + timeout
    rv = None
    while time.monotonic() < deadline:
        stream = watch.Watch().stream(batch.list_namespaced_job, "default", field_selector=f"metadata.name={name}",
                                      timeout_seconds=60, **({"resource_version": rv} if rv else {}))
        for event in stream:
            job = event["object"]
            rv = job.metadata.resource_version
            if event["type"] not in ("ADDED", "MODIFIED") or job.status is None:
                continue
            conditions = {c.type: c.status for c in (job.status.conditions or [])}
            if conditions.get("Failed") == "True":
                raise SystemExit(f"job {name} failed: {job.status}")
            if conditions.get("Complete") == "True":
                return {"succeeded": job.status.succeeded, "failed": job.status.failed or 0}
    raise SystemExit(f"job {name} not complete after {timeout}s")


def run_once(completions: int, parallelism: int, profile_dir: Path | None) -> Run:
    from kubernetes import client, config

    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as tmp:
        data_dir = Path(tmp) / "sandbox"
        profile_to = profile_dir / f"sandbox-{completions}.prof" if profile_dir else None
        sandbox = ServedSandbox(data_dir, profile_to, node_pods=max(1000, parallelism))
        try:
            api = config.new_client_from_config(config_file=str(data_dir / "kubeconfig"))
            batch = client.BatchV1Api(api)
            cpu_before = sandbox.cpu_seconds()
            started = time.monotonic()
            batch.create_namespaced_job("default", job_manifest("scale", completions, parallelism))
            result = wait_complete(batch, "scale", timeout=max(300, completions * 0.2))
            wall = time.monotonic() - started
            cpu = sandbox.cpu_seconds() - cpu_before
            assert result["succeeded"] == completions, result
            stats = sandbox.stats()
            requests = sum(c["requests"] for c in stats["clusters"].values())
            rss = sandbox.peak_rss_mb()
            api.close()
        finally:
            sandbox.stop()
        if profile_to is not None and profile_to.exists():
            print(f"\n--- cProfile of the sandbox, {completions} completions ({profile_to}) ---")
            stats_view = pstats.Stats(str(profile_to))
            stats_view.sort_stats("tottime").print_stats(25)
            stats_view.sort_stats("cumulative").print_stats(25)
        return Run(completions, parallelism, wall, rss, cpu, requests)


def machine() -> str:
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal:"))
    return (f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
            f"{mem_kb / 1024 / 1024:.1f} GiB RAM, Python {platform.python_version()}, {platform.system()}")


def table(runs: list[Run], baseline: list[Run]) -> str:
    base_pps = sum(r.pods_per_s for r in baseline) / len(baseline) if baseline else None
    rows = ["| completions | parallelism | wall time (s) | pods/s | pods/s vs baseline | sandbox CPU (s) "
            "| peak RSS (MB) | API requests |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run in [*baseline, *runs]:
        ratio = f"{run.pods_per_s / base_pps:.2f}" if base_pps else "-"
        rows.append(f"| {run.completions:,} | {run.parallelism} | {run.wall_s:.1f} | {run.pods_per_s:.0f} "
                    f"| {ratio} | {run.cpu_s:.1f} | {run.peak_rss_mb:.0f} | {run.api_requests:,} |")
    return "\n".join(rows)


def _spread(values: list[float], fmt: str) -> str:
    return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}–{format(max(values), fmt)})"


def summary_table(runs: list[Run], baseline: list[Run]) -> str:
    """Median (min–max) per Job size, and how the large Job compares with the baseline size."""
    rows = ["| completions | runs | wall time (s) | pods/s | sandbox CPU per pod (ms) | peak RSS (MB) |",
            "|---:|---:|---:|---:|---:|---:|"]
    for group in (baseline, runs):
        if group:
            rows.append(f"| {group[0].completions:,} | {len(group)} | {_spread([r.wall_s for r in group], '.1f')} "
                        f"| {_spread([r.pods_per_s for r in group], '.0f')} "
                        f"| {_spread([r.cpu_s / r.completions * 1000 for r in group], '.2f')} "
                        f"| {_spread([r.peak_rss_mb for r in group], '.0f')} |")
    if runs and baseline:
        pps = statistics.median(r.pods_per_s for r in runs) / statistics.median(r.pods_per_s for r in baseline)
        rss = statistics.median(r.peak_rss_mb for r in runs) / statistics.median(r.peak_rss_mb for r in baseline)
        rows.append("")
        rows.append(f"{runs[0].completions:,} vs {baseline[0].completions:,} completions: pods/s ratio {pps:.2f} "
                    f"(1.00 would be perfectly linear time), peak RSS ×{rss:.1f} for ×"
                    f"{runs[0].completions / baseline[0].completions:.0f} the pods.")
    return "\n".join(rows)


def write_results(section: str) -> None:
    today = dt.date.today().isoformat()
    if RESULTS.exists():
        text = RESULTS.read_text()
    else:
        text = f"# Benchmark results\n\nMachine: {machine()}. Created {today}.\n"
    start = text.find(HEADING)
    if start >= 0:
        end = text.find("\n## ", start + len(HEADING))
        text = text[:start] + section + (text[end:] if end >= 0 else "\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS.write_text(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--completions", type=int, default=10_000)
    parser.add_argument("--parallelism", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--baseline", type=int, default=1_000, help="completions of the baseline run (0: none)")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="run the sandbox under cProfile")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {RESULTS.name}")
    args = parser.parse_args(argv)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)

    baseline = [run_once(args.baseline, args.parallelism, args.profile) for _ in range(args.repeat)] \
        if args.baseline else []
    runs = [run_once(args.completions, args.parallelism, args.profile) for _ in range(args.repeat)]
    body = summary_table(runs, baseline) + "\n\nEvery run:\n\n" + table(runs, baseline)
    section = (f"{HEADING}\n\n`bench/bench_sandbox_scale.py --completions {args.completions} --parallelism "
               f"{args.parallelism} --repeat {args.repeat}` on {dt.date.today().isoformat()}, {machine()}. "
               "One Indexed Job whose pods run `true`; wall time from the Job's creation to its Complete "
               "condition seen through a watch; sandbox CPU is that process's user+system time over the same "
               "span and peak RSS its VmHWM (the pods' processes are in neither). The machine's 2 cores are "
               "shared with other work, so wall time varies between runs; CPU time varies less.\n\n" + body + "\n")
    print(body)
    if not args.no_write:
        write_results(section)
        print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
