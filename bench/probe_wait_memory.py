"""Where the wait's memory goes: one Job on a fresh sandbox, ``wait_for_job`` in this process, sampled.

Not a contest (no baseline): a probe that answers "what does the wait hold at its peak?" for the whole-flow
benchmark (bench_flow_scale.py), whose flow process peaks inside ``wait_for_job``. Every 0.25 s it records this
process's RSS and the length of the wait's watch-event queue; with ``--trace`` it also runs tracemalloc and prints
the top allocation sites (by traceback) of the snapshot taken at the highest traced size.

    .venv/bin/python bench/probe_wait_memory.py --completions 10000 --parallelism 500 [--trace] [--reattach]

Prints a table of samples (one row per 10 %% of the run) and the peak figures; writes nothing to RESULTS.md.
"""

from __future__ import annotations

import argparse
import queue
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Sandbox, load_average, proc_status_mb, table


class _CountingQueues:
    """Stands in for the ``queue`` module inside tasks.stages.wait: every Queue it makes is remembered."""

    Empty = queue.Empty
    Full = queue.Full

    def __init__(self) -> None:
        self.made: list[queue.Queue] = []

    def Queue(self, *args: Any, **kwargs: Any) -> queue.Queue:  # noqa: N802 - mirrors queue.Queue
        q: queue.Queue = queue.Queue(*args, **kwargs)
        self.made.append(q)
        return q


def job_body(run_key: str, completions: int, parallelism: int, kubeconfig: Path) -> dict[str, Any]:
    from tasks.render.manifests import JobInputs, job_manifest
    from tasks.spec import parse_spec

    spec = parse_spec({
        "cluster": {"mode": "existing", "namespace": "default", "existing": {"kubeconfig_path": str(kubeconfig)}},
        "job": {"image": "busybox", "command": ["true"], "completions": completions,
                "parallelism": min(parallelism, completions), "cpu": f"{min(0.1, 50 / parallelism):g}",
                "memory": "0.25Gi", "completion_mode": "Indexed", "backoff_limit_per_index": 1,
                "ttl_seconds_after_finished": 3600},
    })
    return job_manifest(spec, run_key=run_key, inputs=JobInputs())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--completions", type=int, default=10000)
    parser.add_argument("--parallelism", type=int, default=500)
    parser.add_argument("--trace", action="store_true", help="run tracemalloc (slower) and print the top sites")
    parser.add_argument("--trace-end", action="store_true",
                        help="start tracemalloc only at the verdict: what the end of the wait (drain, last list, "
                             "report) allocates")
    parser.add_argument("--relist", action="store_true", help="after the wait, list every pod once more in pages "
                        "(as the wait's last list does) and report the RSS it costs")
    parser.add_argument("--teardown", action="store_true", help="after the wait, delete the Job and time "
                        "teardown's wait for its pods to go (wait_gone), with the RSS it costs")
    parser.add_argument("--reattach", action="store_true", help="after the wait, wait for the finished Job twice "
                        "more (a re-attach or a task retry: the pod watch lists every pod at once), queueing whole "
                        "pods as before commit 49d92ac and then the compact form; prints each one's traced peak")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)

    from kubernetes import client

    import tasks.stages.wait as wait_mod
    from tasks.handles import JobHandle

    queues = _CountingQueues()
    wait_mod.queue = queues  # type: ignore[assignment]
    pages: list[tuple[float, int]] = []  # (s, items) of every list page the wait read
    real_pages = wait_mod.list_pages

    def counted_pages(*a: Any, **kw: Any) -> Any:
        for page in real_pages(*a, **kw):
            pages.append((time.monotonic() - t0, len(page.get("items") or [])))
            yield page

    wait_mod.list_pages = counted_pages  # type: ignore[assignment]
    t0 = time.monotonic()
    print(f"load {load_average()}; completions {args.completions}, parallelism {args.parallelism}", flush=True)
    samples: list[tuple[float, float, int, float]] = []  # (s, RSS MB, queued events, traced MB)
    best: dict[str, Any] = {"traced": 0.0, "snap": None}
    stop = threading.Event()
    with Sandbox(node_pods=max(1000, args.parallelism * 2)) as sb, tempfile.TemporaryDirectory() as logs:
        api = sb.api_client()
        api.configuration.connection_pool_maxsize = 80  # as the flow sizes it (cluster_access.connect)
        api = client.ApiClient(api.configuration)
        body = job_body("probe", args.completions, args.parallelism, sb.kubeconfig)
        created = client.BatchV1Api(api).create_namespaced_job("default", body)
        handle = JobHandle(namespace="default", name=body["metadata"]["name"], uid=created.metadata.uid,
                           completions=args.completions)
        if args.trace and not args.teardown:
            tracemalloc.start(12)
        t0 = time.monotonic()

        def traced_mb() -> float:
            """Traced MB now (0 when tracemalloc is off); a snapshot is kept each time it grows 5 % past the last."""
            if not tracemalloc.is_tracing():
                return 0.0
            traced = tracemalloc.get_traced_memory()[0] / 2**20
            if traced > best["traced"] * 1.05:
                best["traced"], best["snap"] = traced, tracemalloc.take_snapshot()
            return traced

        def sample() -> None:
            while not stop.wait(0.25):
                queued = sum(q.qsize() for q in queues.made)
                samples.append((time.monotonic() - t0, proc_status_mb("self"), queued, traced_mb()))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        progress = {"n": 0}

        def on_progress(done: int, total: int) -> None:
            if done >= progress["n"] + total // 10:
                progress["n"] = done
                print(f"  {time.monotonic() - t0:7.1f} s  {done}/{total}  RSS {proc_status_mb('self'):.0f} MB  "
                      f"queued {sum(q.qsize() for q in queues.made)}", flush=True)

        report = wait_mod.wait_for_job(api, handle, run_key="probe", options=wait_mod.WaitOptions(
            log_dir=Path(logs), timeout_seconds=None), emit=lambda line: None, on_progress=on_progress,
            on_verdict=lambda ok, why: tracemalloc.start(12) if args.trace_end else None)
        stop.set()
        sampler.join()
        if args.teardown:
            # What teardown's wait for the pods to go costs: the Job deleted (Background), then wait_gone.
            from tasks.stages.teardown import wait_gone

            before, peak_gone, t1 = proc_status_mb("self"), [0.0], time.monotonic()
            watching = threading.Event()

            def watch_rss() -> None:
                while not watching.wait(0.05):
                    peak_gone[0] = max(peak_gone[0], proc_status_mb("self"))
                    traced_mb()

            watcher = threading.Thread(target=watch_rss, daemon=True)
            watcher.start()
            client.BatchV1Api(api).delete_namespaced_job(handle.name, "default", propagation_policy="Background")
            if args.trace:
                tracemalloc.start(12)
            left, _ = wait_gone(client.CoreV1Api(api).list_namespaced_pod, namespace="default",
                                label_selector="ask-batch.io/run=probe", stall_seconds=600)
            watching.set()
            watcher.join()
            print(f"teardown's wait for {args.completions} pods to go: {time.monotonic() - t1:.1f} s, "
                  f"{left} left; RSS {before:.0f} MB before, {peak_gone[0]:.0f} MB peak, "
                  f"{proc_status_mb('self'):.0f} MB after")
        if args.reattach:
            reattach(wait_mod, api, handle, Path(logs), queues)
        if args.relist:
            # What the wait's last list costs when it runs (the watch had not shown every pod the Job counted):
            # every page read and parsed in a thread, as final_pods does.
            before, peak_list = proc_status_mb("self"), [0.0]

            def relist() -> None:
                for page in real_pages(client.CoreV1Api(api).list_namespaced_pod, namespace="default",
                                       label_selector="ask-batch.io/run=probe"):
                    peak_list[0] = max(peak_list[0], proc_status_mb("self"))
                    del page

            lister = threading.Thread(target=relist)
            lister.start()
            lister.join()
            print(f"last list of every pod in a thread: RSS {before:.0f} MB before, {peak_list[0]:.0f} MB peak, "
                  f"{proc_status_mb('self'):.0f} MB after")
    wall = time.monotonic() - t0
    peak = max(samples, key=lambda s: s[1]) if samples else (0, float("nan"), 0, 0)
    step = max(1, len(samples) // 10)
    print(table(["s", "RSS MB", "queued events", "traced MB"],
                [(f"{s:.1f}", f"{r:.0f}", q, f"{t:.0f}") for s, r, q, t in samples[::step] + samples[-8:]]))
    if pages:
        print(f"list pages read: {len(pages)} ({sum(n for _, n in pages)} items), from {pages[0][0]:.1f} s "
              f"to {pages[-1][0]:.1f} s")
    print(f"\nsucceeded {report.succeeded}; {report.index_count} indexes; wall {wall:.1f} s; "
          f"peak RSS {peak[1]:.0f} MB at {peak[0]:.1f} s with {peak[2]} events queued; "
          f"most queued {max((s[2] for s in samples), default=0)}; load {load_average()}")
    if best["snap"] is not None:
        print(f"\ntop sites at the traced peak ({best['traced']:.0f} MB):")
        for stat in best["snap"].statistics("traceback")[:args.top]:
            frames = [f for f in stat.traceback if "/tasks/" in f.filename or "/sandbox/" in f.filename]
            where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in frames[:4]) or str(stat.traceback[0])
            print(f"  {stat.size / 2**20:7.1f} MB {stat.count:8d} blocks  {where}")


def reattach(wait_mod: Any, api: Any, handle: Any, logs: Path, queues: _CountingQueues) -> None:
    """Wait for the finished Job again, as a re-attach or a retried task does: the pod watch lists every pod and
    queues them faster than the wait applies them. With whole parsed pods queued (the watch's ``shrink`` off: the
    code before commit 49d92ac) and as the wait now queues them, twice each, alternating; tracemalloc's peak
    (Python allocations only) during each, and the most events queued (sampled every 10 ms)."""
    real_init = wait_mod._Watcher.__init__
    # Twice each, alternating, so neither form gains from going second (caches, interned names).
    for label, shrink in (("whole pods queued (before)", False), ("compact form queued (now)", True)) * 2:
        def init(self: Any, *a: Any, _shrink: bool = shrink, **kw: Any) -> None:
            real_init(self, *a, **kw)
            if not _shrink:
                self.shrink = None

        wait_mod._Watcher.__init__ = init
        most, stop = [0], threading.Event()

        def count_queued(most: list[int] = most, stop: threading.Event = stop) -> None:
            while not stop.wait(0.01):
                most[0] = max(most[0], sum(q.qsize() for q in queues.made))

        counter = threading.Thread(target=count_queued, daemon=True)
        tracemalloc.start()
        counter.start()
        t1 = time.monotonic()
        try:
            wait_mod.wait_for_job(api, handle, run_key="probe", options=wait_mod.WaitOptions(
                log_dir=logs, timeout_seconds=None), emit=lambda line: None)
        finally:
            stop.set()
            counter.join()
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            wait_mod._Watcher.__init__ = real_init
        print(f"re-attach, {label}: {time.monotonic() - t1:.1f} s, traced peak {peak:.1f} MB, "
              f"most events queued {most[0]}", flush=True)


if __name__ == "__main__":
    main()
