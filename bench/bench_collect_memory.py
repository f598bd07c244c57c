"""Output collection's memory (issue 10, "Bounded"): what ``collect_outputs`` holds at 1,000 / 10,000 / 100,000
indexes, against the stage as it was before (``bench/collect_baseline.py``), in the same run.

    .venv/bin/python bench/bench_collect_memory.py [--sizes 1000 10000 100000] [--no-logs] [--no-write]

Per size N, once: N done-markers ``ask-batch/mem-N/index-NNNNN/_SUCCESS`` (2 bytes each) are put into a sandbox
bucket with the OSS v2 SDK, and N one-line pod logs ``<job>-<index>-<suffix>.log`` are written to a local
directory (``--no-logs``: none, as pods that print nothing). Then each contender runs ``collect_outputs`` on them
in a **fresh child process** (so one's allocations do not hide the other's), record only (``outputs.download``
off, as the whole-flow scale bench runs; ``completeness: marker``): save the N logs to OSS, list the prefix (N
markers + N logs, 1,000 keys a page), judge every index, build the manifest. The report names only the Job
(``JobReport.indexes`` empty: the pods are found by the ``<job>-<index>-<suffix>`` rule), so the report's own
memory, another stage's, is not counted.

Figures, per child: **peak** = tracemalloc's peak of Python allocations during the call (transient lists and
dicts included), **kept** = what is still allocated after the call with the returned manifest alive, **RSS
growth** = the process's peak RSS (VmHWM) after the call minus its RSS before (includes tracemalloc's own
bookkeeping, about as much again as the traced blocks; the two contenders pay it alike), and wall time (slowed by
tracemalloc; it includes N log uploads).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, Sandbox, base_parser, load_average, provenance, table, write_section

HEADING = "## Output collection: memory (issue 10)"
BUCKET = "bench-collect-memory"
CONTENDERS = ("before (baseline)", "ask-batch")


def job_name(n: int) -> str:
    return f"askb-mem-{n}"


def seed(oss: Any, n: int, log_dir: Path | None) -> None:
    """N markers in OSS, and N one-line pod logs in ``log_dir`` (when given)."""
    import alibabacloud_oss_v2 as o

    def put(i: int) -> None:
        oss.put_object(o.PutObjectRequest(bucket=BUCKET, key=f"ask-batch/mem-{n}/index-{i:05d}/_SUCCESS", body=b"ok"))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(n)))
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (log_dir / f"{job_name(n)}-{i}-{i % 99991:05x}.log").write_text(f"index {i} did nothing\n")


def vm(field: str) -> float:
    """A /proc/self/status figure (VmRSS, VmHWM), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def child(contender: str, n: int, endpoints: str, log_dir: str | None, work: str) -> dict[str, float]:
    """One measurement, in this (fresh) process: import everything first, then trace only the call."""
    import gc
    import tracemalloc

    from tasks.cloud.clients import AliCredentials, oss_client, target_from_endpoints_file
    from tasks.errors import OutputsIncomplete
    from tasks.handles import JobHandle, JobReport
    from tasks.spec import parse_spec

    if contender == "ask-batch":
        from tasks.stages.outputs import collect_outputs
    else:
        from bench.collect_baseline import collect_outputs  # type: ignore[assignment]
    target, env = target_from_endpoints_file(Path(endpoints))
    oss = oss_client(target, AliCredentials(env["ALIBABA_CLOUD_ACCESS_KEY_ID"], env["ALIBABA_CLOUD_ACCESS_KEY_SECRET"]))
    spec = parse_spec({
        "target": target.model_dump(mode="json"),
        "cluster": {"mode": "existing", "existing": {"kubeconfig_path": __file__}},
        "job": {"image": "busybox:1.36", "command": ["true"], "completions": n, "parallelism": 1},
        "outputs": {"bucket": BUCKET, "prefix_template": "ask-batch/{run_key}/", "index_template": "index-{index:05d}/",
                    "completeness": "marker", "download": False, "download_dir": work},
    })
    report = JobReport(job=JobHandle(namespace="default", name=job_name(n), uid="u", completions=n), succeeded=True)
    gc.collect()
    rss0 = vm("VmRSS")
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        manifest: Any = collect_outputs(spec, run_key=f"mem-{n}", flow_run_name=f"mem-{n}", report=report, oss=oss,
                                        log_dir=Path(log_dir) if log_dir else None)
    except OutputsIncomplete as exc:
        manifest = exc.manifest
    wall = time.perf_counter() - t0
    gc.collect()
    kept, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert manifest.complete and len(manifest.log_keys) == (n if log_dir else 0), (manifest.complete,
                                                                                   len(manifest.log_keys))
    return {"peak_mb": peak / 1e6, "kept_mb": kept / 1e6, "rss_growth_mb": vm("VmHWM") - rss0, "wall_s": wall}


def measure(contender: str, n: int, sb: Sandbox, log_dir: Path | None, work: Path) -> dict[str, float]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", contender, "--completions", str(n),
           "--endpoints", str(sb.endpoints_file), "--work", str(work)]
    cmd += ["--log-dir", str(log_dir)] if log_dir else []
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3600)
    if out.returncode:
        raise SystemExit(f"{contender} at {n} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> dict[tuple[int, str], dict[str, float]]:
    parser = base_parser(__doc__, repeat=1)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--no-logs", action="store_true", help="pods that print nothing: no log files")
    parser.add_argument("--child", choices=CONTENDERS, help=argparse_hidden())
    parser.add_argument("--completions", type=int, help=argparse_hidden())
    parser.add_argument("--endpoints", help=argparse_hidden())
    parser.add_argument("--log-dir", help=argparse_hidden())
    parser.add_argument("--work", help=argparse_hidden())
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.completions, args.endpoints, args.log_dir, args.work)))
        return {}
    load = load_average()
    results: dict[tuple[int, str], dict[str, float]] = {}
    with Sandbox() as sb:
        import alibabacloud_oss_v2 as o

        oss = sb.oss()
        oss.put_bucket(o.PutBucketRequest(bucket=BUCKET))
        for n in args.sizes:
            t = time.perf_counter()
            log_dir = None if args.no_logs else sb.root / f"logs-{n}"
            seed(oss, n, log_dir)
            print(f"seeded {n} markers{'' if args.no_logs else ' and pod logs'} in {time.perf_counter() - t:.0f} s",
                  flush=True)
            for contender in CONTENDERS:
                results[n, contender] = r = measure(contender, n, sb, log_dir, sb.root / "work")
                print(f"{n:>7} {contender:<18} peak {r['peak_mb']:7.1f} MB  kept {r['kept_mb']:7.1f} MB  "
                      f"RSS growth {r['rss_growth_mb']:7.1f} MB  {r['wall_s']:6.1f} s", flush=True)
    body = render(results, args.sizes)
    print(body)
    if not args.no_write:
        cmd = f"python bench/bench_collect_memory.py --sizes {' '.join(map(str, args.sizes))}" + (
            " --no-logs" if args.no_logs else "")
        write_section(HEADING, provenance(cmd, load) + "\n\n" + definition(args.no_logs) + "\n\n" + body)
    return results


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


def definition(no_logs: bool) -> str:
    logs = "no pod log" if no_logs else "one one-line pod log per index (saved to OSS by the stage)"
    return (f"Per size N: N indexes, one done-marker each, {logs}; `collect_outputs` record only "
            "(`download: false`), each contender in a fresh child process, one run each. peak: tracemalloc peak "
            "during the call; kept: still allocated after it, with the manifest alive; RSS growth: VmHWM after "
            "minus VmRSS before (tracemalloc's bookkeeping included); per index: peak / N.")


def render(results: dict[tuple[int, str], dict[str, float]], sizes: list[int]) -> str:
    rows = []
    for n in sizes:
        for contender in CONTENDERS:
            r = results[n, contender]
            rows.append([f"{n:,}", contender, f"{r['peak_mb']:.1f}", f"{r['kept_mb']:.1f}",
                         f"{r['rss_growth_mb']:.1f}", f"{r['peak_mb'] * 1e6 / n:,.0f}", f"{r['wall_s']:.1f}"])
    return table(["indexes", "collect_outputs", "peak (MB)", "kept (MB)", "RSS growth (MB)", "peak per index (B)",
                  "wall (s)"], rows)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
