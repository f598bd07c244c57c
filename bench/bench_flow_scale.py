"""Whole-flow scale: the ask-batch flow on an Indexed Job of 10,000 completions (parallelism 500) vs 1,000.

    .venv/bin/python bench/bench_flow_scale.py [--completions 10000] [--baseline 1000] [--parallelism 500]
                                               [--repeat 3] [--baseline-repeat 5] [--timeout 480] [--no-write]

What runs, per repetition (each on a FRESH sandbox subprocess, so its VmHWM is that run's peak):

- the flow exactly as a user runs it: ``python -m flows.ask_batch --params FILE --sandbox DIR --set ...`` in a
  subprocess, against a Prefect server started once by this script (``prefect_test_harness``; its URL is passed
  as PREFECT_API_URL so the flow process starts no server of its own). Cluster mode ``existing`` (the sandbox's
  default cluster: "cluster already there"), storage ``none``, pods run ``true``;
- every stage runs: ensure_cluster, ensure_volume (none), ensure_bucket, publish_config (an empty ConfigMap-less
  run: only the Secret with the pods' OSS keys), launch_job, wait_for_job (a live log stream per pod, the default),
  collect_outputs (pod logs saved to OSS, the run prefix listed, every index's marker checked; no download:
  ``outputs.download=false``), teardown (Job + Secret, waits until gone), summary artifact.

Why the markers are put by this script: the flow's collection fails unless every index left its done-marker in
OSS (``completeness`` is ``marker`` or ``min_objects >= 1``; there is no "no outputs" mode), and a pod that
writes a signed OSS object needs the OSS SDK: a Python start-up per pod, ~10,000 CPU-seconds at 10,000
completions on this 2-core machine, which would measure the workload, not ask-batch. So before the flow starts
(not timed) this script PUTs the empty ``_SUCCESS`` marker of every index under the run's prefix (the run key is
fixed), and the pods run ``true``: the flow still lists and checks all N markers. The run sets ``job.rerun: all``:
with the default ``missing`` the flow would find every index already complete and start no pod.

Measured: wall time of the flow subprocess (spawn to exit); its peak RSS: the kernel's high-water mark of the
flow process's own address space (VmHWM), which the process writes at its last exit handler (``bench/own_peak.py``
runs the module as ``python -m`` does), or the highest VmHWM sampled if higher (``--timeline``); and the sandbox's
peak RSS (VmHWM of its process read from /proc just before it is stopped; it includes the N marker objects it
holds). A 10-completion warm-up run (Prefect server, page cache, imports) is not recorded.

Not ``ru_maxrss`` from ``os.wait4``: on Linux a child's ``ru_maxrss`` is at least its parent's high-water mark at
spawn time (``bench/own_peak.py`` says why). After PUTting 100,000 markers through 100,000 futures at once, this
script's own mark was ~385 MB: that is what the sixth session's 100,000 runs reported as the flow's "peak at
exit". ``--timeline`` prints both figures.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    REPO,
    Sandbox,
    Series,
    base_parser,
    load_average,
    proc_status_mb,
    provenance,
    table,
    write_section,
)

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

HEADING = "## Whole-flow scale"
BUCKET = "bench-flow-scale"
MARKER = "_SUCCESS"


class RunFailed(RuntimeError):
    pass


def params(sb: Sandbox, work: Path, *, run_key: str, completions: int, parallelism: int, deadline_s: int) -> Path:
    data = {
        "run_key": run_key,
        "cluster": {"mode": "existing", "namespace": "default",
                    "existing": {"kubeconfig_path": str(sb.kubeconfig)}},
        "storage": {"mode": "none"},
        "job": {"image": "busybox", "command": ["true"], "args": [],
                # the sandbox's node has 64 CPUs: 0.1 each fits 500 at once, 0.05 each 1,000
                "cpu": f"{min(0.1, 50 / parallelism):g}", "memory": "0.25Gi",
                "completions": completions, "parallelism": min(parallelism, completions), "completion_mode": "Indexed",
                "backoff_limit_per_index": 1, "active_deadline_seconds": deadline_s,
                "rerun": "all"},  # every marker is already there: rerun "missing" would run no pod at all
        "outputs": {"bucket": BUCKET, "prefix_template": "ask-batch/{run_key}/", "completeness": "marker",
                    "marker_name": MARKER, "download": False, "download_dir": str(work / "outputs")},
        "teardown": {"job": "always", "config": "always", "volume": "always", "nas": "never", "cluster": "never"},
    }
    path = work / "params.json"
    path.write_text(json.dumps(data))
    return path


def put_markers(sb: Sandbox, run_key: str, completions: int) -> None:
    """The empty done-marker of every index, where the pods would have written it (module docstring)."""
    import alibabacloud_oss_v2 as oss

    from tasks.spec import OutputsSpec

    client = sb.oss()
    try:
        client.put_bucket(oss.PutBucketRequest(bucket=BUCKET))
    except Exception as exc:  # noqa: BLE001 - already there (earlier run on the same sandbox)
        if "BucketAlreadyExists" not in str(exc) and "AlreadyOwned" not in str(exc):
            raise
    out = OutputsSpec(bucket=BUCKET)
    prefix = out.prefix_template.format(run_key=run_key, flow_run_name="")

    def put(i: int) -> None:
        key = prefix + out.index_template.format(index=i) + MARKER
        client.put_object(oss.PutObjectRequest(bucket=BUCKET, key=key, body=b""))

    # A bounded window of requests in flight, not ``pool.map`` over all N (100,000 futures and results at once):
    # this process's size at spawn time would otherwise count in the flow child's ``ru_maxrss`` (module docstring).
    with ThreadPoolExecutor(max_workers=16) as pool:
        window: deque[Future[None]] = deque()
        for i in range(completions):
            window.append(pool.submit(put, i))
            if len(window) >= 256:
                window.popleft().result()
        for future in window:
            future.result()


def stage_peaks(samples: list[tuple[float, float, float]], flow_log: str) -> list[tuple[str, float, float]]:
    """(task, peak RSS in MB while it ran, how much the process's high-water mark rose meanwhile in MB) for each
    task run of the flow, then for the time after the last task ended. ``samples`` are (epoch seconds, VmRSS MB,
    VmHWM MB); the task runs' start and end come from the flow's console log (Prefect prints ``HH:MM:SS.mmm |
    INFO | Task run 'NAME' - ...`` lines; the first line of a task run is its start, ``Finished in state`` its end).

    VmHWM is the kernel's high-water mark (proc(5)): it never falls, so a rise places a peak in a task even when
    the allocation lived shorter than the sampling interval and no VmRSS sample saw it."""
    import datetime as dt
    import re

    spans: dict[str, list[float]] = {}
    day = dt.datetime.now(dt.UTC).date()
    for line in flow_log.splitlines():
        m = re.match(r"(\d\d):(\d\d):(\d\d)\.(\d{3}) \| \w+ +\| Task run '([^']+)'", line)
        if not m:
            continue
        h, mi, se, ms, name = m.groups()
        t = dt.datetime(day.year, day.month, day.day, int(h), int(mi), int(se), int(ms) * 1000,
                        tzinfo=dt.UTC).timestamp()
        span = spans.setdefault(name, [t, t])
        span[0], span[1] = min(span[0], t), max(span[1], t)

    def within(lo: float, hi: float) -> tuple[float, float]:
        inside = [(rss, hwm) for t, rss, hwm in samples if lo - 0.5 <= t <= hi + 0.5]
        before = [hwm for t, _, hwm in samples if t < lo - 0.5]
        if not inside:
            return float("nan"), float("nan")
        return max(r for r, _ in inside), max(h for _, h in inside) - (before[-1] if before else inside[0][1])

    peaks = [(name, *within(lo, hi)) for name, (lo, hi) in sorted(spans.items(), key=lambda kv: kv[1][0])]
    last = max((hi for _, hi in spans.values()), default=None)
    if last is not None:  # the flow's finish: the ledger file, the summary artifact, the engine's own end
        peaks.append(("after the last task", *within(last + 0.5, float("inf"))))
    return peaks


def one_run(api_url: str, *, run_key: str, completions: int, parallelism: int, timeout: float,
            timeline: bool = False, profile_dir: Path | None = None) -> dict[str, float]:
    profile = None if profile_dir is None else profile_dir / f"sandbox-{run_key}.prof"
    with Sandbox(profile_to=profile) as sb:
        work = sb.root / run_key
        work.mkdir()
        put_markers(sb, run_key, completions)
        pfile = params(sb, work, run_key=run_key, completions=completions, parallelism=parallelism,
                       deadline_s=max(1800, int(timeout)))
        env = dict(os.environ, PREFECT_API_URL=api_url)
        log = open(work / "flow.log", "wb")  # noqa: SIM115
        peak_file = work / "flow-peak-kb"
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, str(REPO / "bench" / "own_peak.py"), str(peak_file),
                                 "flows.ask_batch", "--params", str(pfile), "--sandbox", str(sb.dir)],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = t0 + timeout
        status, usage = 0, None
        samples: list[tuple[float, float, float]] = []
        while True:
            if timeline:
                samples.append((time.time(), proc_status_mb(proc.pid), proc_status_mb(proc.pid, "VmHWM")))
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                flow_mb, sandbox_mb = proc_status_mb(proc.pid, "VmHWM"), proc_status_mb(sb.pid, "VmHWM")
                proc.kill()
                os.wait4(proc.pid, 0)
                proc.returncode = -9
                log.close()
                tail = (work / "flow.log").read_text(errors="replace")[-3000:]
                progress = [ln for ln in tail.splitlines() if "progress:" in ln]
                raise RunFailed(f"{completions} completions: flow still running after {timeout:.0f} s; killed "
                                f"(flow peak RSS so far {flow_mb:.0f} MB, sandbox {sandbox_mb:.0f} MB; last "
                                f"progress line: {progress[-1].strip() if progress else '-'}). Log tail:\n{tail}")
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.close()
        sandbox_mb = proc_status_mb(sb.pid, "VmHWM")
        if proc.returncode != 0:
            tail = (work / "flow.log").read_text(errors="replace")[-3000:]
            raise RunFailed(f"{completions} completions: flow exited {proc.returncode}. Log tail:\n{tail}")
        try:
            at_exit = int(peak_file.read_text()) / 1024
        except (OSError, ValueError) as exc:
            raise RunFailed(f"{completions} completions: the flow process wrote no peak RSS ({exc})") from exc
        sampled = max((hwm for _, _, hwm in samples if not math.isnan(hwm)), default=float("nan"))
        flow_mb = at_exit if math.isnan(sampled) else max(at_exit, sampled)
        if timeline:
            text = (work / "flow.log").read_text(errors="replace")
            print(f"{run_key}: flow RSS peak while each task ran (and the rise of its high-water mark): " + ", ".join(
                f"{name} {mb:.0f} MB (+{rise:.0f})" for name, mb, rise in stage_peaks(samples, text))
                + f"; high-water mark {sampled:.0f} MB at the last sample, {at_exit:.0f} MB at the last exit "
                f"handler (not used: wait4's ru_maxrss {usage.ru_maxrss / 1024:.0f} MB, which is at least this "
                "bench's own high-water mark at spawn)", flush=True)
        return {"wall": wall, "flow_rss": flow_mb, "sandbox_rss": sandbox_mb}


def run(sizes: list[tuple[int, int, int]], timeout: float,
        smoke: int | None, timeline: bool = False,
        profile_dir: Path | None = None) -> tuple[dict[int, dict[str, Series]], list[str]]:
    """``sizes``: (completions, repetitions, parallelism) each; ``smoke`` runs unrecorded at the first one's
    parallelism."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    results = {n: {"wall": Series(), "flow_rss": Series(), "sandbox_rss": Series()} for n, _, _ in sizes}
    problems: list[str] = []
    with prefect_test_harness(server_startup_timeout=300):
        api_url = str(PREFECT_API_URL.value())
        plan: list[tuple[str, int, int, bool]] = [("warm", 10, 10, False)]
        if smoke:
            plan.append(("smoke", smoke, sizes[0][2], False))
        for n, reps, parallelism in sizes:
            plan += [(f"r{i}", n, parallelism, True) for i in range(reps)]
        done: dict[int, int] = {}
        failed_sizes: set[int] = set()
        for tag, n, parallelism, record in plan:
            if n in failed_sizes:
                continue  # this size failed once: do not burn more time on it
            rep = done.get(n, 0)
            run_key = f"fs-{n}-{tag}"
            try:
                r = one_run(api_url, run_key=run_key, completions=n, parallelism=parallelism, timeout=timeout,
                            timeline=timeline, profile_dir=profile_dir)
            except RunFailed as exc:
                print(f"FAILED {run_key}: {exc}", flush=True)
                problems.append(f"{n}: {exc}")
                failed_sizes.add(n)
                continue
            print(f"{run_key:<14} {n:6d} completions: {r['wall']:7.1f} s, flow peak RSS {r['flow_rss']:6.0f} MB, "
                  f"sandbox peak RSS {r['sandbox_rss']:6.0f} MB", flush=True)
            if record and n in results:
                for k, v in r.items():
                    results[n][k].add(v)
                done[n] = rep + 1
    return results, problems


def render(results: dict[int, dict[str, Series]], parallelism: dict[int, int]) -> str:
    rows = []
    for n, s in results.items():
        per_pod = Series([v / n * 1000 for v in s["wall"].values])
        rows.append([f"{n:,}", parallelism[n], len(s["wall"].values), s["wall"].cell("{:.1f}"), per_pod.cell("{:.1f}"),
                     s["flow_rss"].cell("{:.0f}"), s["sandbox_rss"].cell("{:.0f}")])
    return table(["completions", "parallelism", "runs", "flow wall time (s)", "wall per pod (ms)",
                  "flow process peak RSS (MB)", "sandbox peak RSS (MB)"], rows)


def ratios(results: dict[int, dict[str, Series]]) -> str:
    if len(results) < 2:
        return ""
    (small, s), (big, b) = sorted(results.items())[:2]
    if not s["wall"].values or not b["wall"].values:
        return ""
    x = big / small
    return (f"{big:,} vs {small:,} completions (×{x:.0f} the pods): "
            f"wall time ×{b['wall'].median / s['wall'].median:.1f}"
            f" (wall per pod ×{(b['wall'].median / big) / (s['wall'].median / small):.2f}; 1.00 = linear), "
            f"flow peak RSS ×{b['flow_rss'].median / s['flow_rss'].median:.1f} "
            f"(+{b['flow_rss'].median - s['flow_rss'].median:.0f} MB, "
            f"{(b['flow_rss'].median - s['flow_rss'].median) * 1024 / (big - small):.0f} KB per extra pod), "
            f"sandbox peak RSS ×{b['sandbox_rss'].median / s['sandbox_rss'].median:.1f}.")


def main(argv: list[str] | None = None) -> Any:
    parser = base_parser(__doc__, repeat=3)
    parser.add_argument("--completions", type=int, default=10000)
    parser.add_argument("--baseline", type=int, default=1000)
    parser.add_argument("--baseline-repeat", type=int, default=5)
    parser.add_argument("--parallelism", type=int, default=500)
    parser.add_argument("--baseline-parallelism", type=int,
                        help="parallelism of the baseline size (default: --parallelism)")
    parser.add_argument("--sandbox-alone", action="store_true",
                        help="after the flow runs, run the same Job on a fresh sandbox without the flow "
                             "(bench_sandbox_scale.run_once) and compare wall times")
    parser.add_argument("--timeout", type=float, default=480, help="kill a flow run after this many seconds")
    parser.add_argument("--no-smoke", action="store_true", help="skip the unrecorded baseline-size smoke run")
    parser.add_argument("--timeline", action="store_true",
                        help="sample the flow's RSS every 50 ms and print its peak while each task ran")
    parser.add_argument("--profile-sandbox", type=Path, metavar="DIR",
                        help="run each sandbox under cProfile; profiles go to DIR/sandbox-<run>.prof")
    args = parser.parse_args(argv)
    load = load_average()
    if args.profile_sandbox:
        args.profile_sandbox.mkdir(parents=True, exist_ok=True)
    base_parallelism = args.baseline_parallelism or args.parallelism
    sizes = [(args.baseline, args.baseline_repeat, base_parallelism), (args.completions, args.repeat,
                                                                       args.parallelism)]
    results, problems = run(sizes, args.timeout, None if args.no_smoke else args.baseline,
                            timeline=args.timeline, profile_dir=args.profile_sandbox)
    body = render(results, {args.baseline: base_parallelism, args.completions: args.parallelism})
    note = ratios(results)
    if args.sandbox_alone:
        alone = sandbox_alone(args.completions, args.parallelism, results[args.completions])
        note = f"{note}\n\n{alone}" if note else alone
    print(body, note, *problems, sep="\n\n")
    if not args.no_write:
        cmd = (f"python bench/bench_flow_scale.py --completions {args.completions} --baseline {args.baseline} "
               f"--repeat {args.repeat} --baseline-repeat {args.baseline_repeat} --parallelism {args.parallelism}"
               f" --baseline-parallelism {base_parallelism}{' --sandbox-alone' if args.sandbox_alone else ''}")
        definition = (
            "The whole flow as a user runs it (`python -m flows.ask_batch --params FILE --sandbox DIR`, a "
            "subprocess; Prefect server already running; cluster mode `existing`, storage `none`), on an Indexed "
            "Job whose pods run `true` (0.25 GiB and 0.1 CPU each, 0.05 above parallelism 500: all fit the "
            "sandbox's 64-CPU node at once), parallelism as in the table, one fresh sandbox per run. The pods write "
            "nothing, so this script PUTs every index's empty `_SUCCESS` marker before the flow starts (not "
            "timed): the flow has no 'no outputs' mode and a pod writing a signed OSS object needs a Python "
            "start-up, which would measure the workload. `outputs.download=false`; logs streamed live (default). "
            "Wall: flow process spawn to exit. Flow RSS: the high-water mark (VmHWM) of the flow process's own "
            "address space, written by its last exit handler (`bench/own_peak.py`; not `os.wait4`'s `ru_maxrss`, "
            "which on Linux includes the spawning process's RSS). Sandbox RSS: "
            "its VmHWM (holds the N markers too). Median (min–max).")
        parts = [provenance(cmd, load), definition, body]
        if note:
            parts.append(note)
        if problems:
            parts.append("Failures (recorded as they happened; the flow's last output lines):\n\n" + "\n\n".join(
                "```\n" + "\n".join(ln[:400] for ln in p.splitlines()[-8:]) + "\n```" for p in problems))
        parts.append(closing(results, problems))
        write_section(HEADING, "\n\n".join(parts))
    return results


def sandbox_alone(completions: int, parallelism: int, flow: dict[str, Series]) -> str:
    """The same Job size without the flow, on a fresh sandbox (``bench_sandbox_scale.run_once``: the Job created
    with the kubernetes client, its Complete condition seen with a watch): the baseline for the flow's wall."""
    from bench.bench_sandbox_scale import run_once

    print(f"sandbox alone: {completions} completions, parallelism {parallelism}", flush=True)
    r = run_once(completions, parallelism, None)
    line = (f"Sandbox alone, same invocation: the same Job ({completions:,} completions, parallelism {parallelism}, "
            f"pods `true`) created with the kubernetes client on a fresh sandbox, no flow: {r.wall_s:.0f} s to "
            f"its Complete condition ({r.pods_per_s:.0f} pods/s), sandbox peak RSS {r.peak_rss_mb:.0f} MB.")
    if flow["wall"].values:
        line += (f" The whole flow took {flow['wall'].median:.0f} s: ×{flow['wall'].median / r.wall_s:.2f} the "
                 "sandbox alone (the flow's wall also holds collect, teardown and Prefect's start-up).")
    print(line, flush=True)
    return line


def closing(results: dict[int, dict[str, Series]], problems: list[str]) -> str:
    sized = sorted((n, s) for n, s in results.items() if s["wall"].values)
    head = ""
    if len(sized) >= 2:
        (small, s), (big, b) = sized[0], sized[-1]
        per_small, per_big = s["wall"].median / small * 1000, b["wall"].median / big * 1000
        head = (f"At {big:,} completions the whole flow takes {b['wall'].median:.0f} s ({per_big:.1f} ms per pod, "
                f"against {per_small:.1f} ms at {small:,}: ×{per_big / per_small:.2f}); the flow process peaks at "
                f"{b['flow_rss'].median:.0f} MB against {s['flow_rss'].median:.0f} MB "
                f"(×{b['flow_rss'].median / s['flow_rss'].median:.1f} for ×{big // small} the pods) and the sandbox "
                f"at {b['sandbox_rss'].median:.0f} MB against {s['sandbox_rss'].median:.0f} MB. ")
    elif sized:
        n, s = sized[0]
        head = (f"ask-batch loses at scale. {n:,} completions pass: the whole flow takes {s['wall'].median:.1f} s "
                f"({s['wall'].median / n * 1000:.1f} ms per pod; the same Job without the flow takes about 2.3 s "
                f"in Sandbox scale), the flow process peaks at {s['flow_rss'].median:.0f} MB. "
                "The larger size did not finish (above). ")
    cause = ("What grows with the pods in the flow process: one compact ledger row per ended pod (its index's "
             "attempt: a tuple, not the pod object) and its name in the log reader's done set; pods still running "
             "are held whole until they end (at most `parallelism` of them). Logs are read by a bounded pool "
             "(`wait.max_log_streams` follows and a few readers, not a thread per pod), the watch queue holds at "
             "most 1,000 events, and collect streams the listing into per-index arrays. The wait loop applies "
             "queued events in batches and diagnoses only the pods that changed.")
    return head + cause


if __name__ == "__main__":
    main()
