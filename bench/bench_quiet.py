"""Quiet waiting: Kubernetes API requests per minute made by a waiter while a Job runs for a short vs a long time.

    .venv/bin/python bench/bench_quiet.py [--repeat 5] [--short | --full] [--completions 4] [--no-write]

Durations: ``--short`` (the default, what ``make bench`` runs) 20 s and 100 s; ``--full`` 120 s and 600 s (the
2 and 10 minutes of the question: 12+ minutes per repetition). Any pair with ``--durations A B``.

Each (waiter, duration) pair gets **its own sandbox**, so the sandbox's request counter (control endpoint
``/stats``) counts that waiter's requests alone; the pairs of one repetition run at the same time (their Jobs
sleep, so they barely compete for CPU). Per pair: create the Job (ask-batch's rendered Indexed Job,
``completions`` pods running ``sleep D``), read the counter, run the waiter to the end of the Job, read the
counter again. Requests per minute = the difference / the waiter's wall time in minutes.

Waiters:
- **ask-batch**: ``tasks.stages.wait.wait_for_job``, flow defaults (Job + pod watches, live log stream per pod,
  server-side watch timeout 240 s then a resumed watch);
- **prefect-kubernetes**: ``KubernetesJobRun.await_for_completion()`` with ``interval_seconds=5`` (the default),
  ``delete_after_completion=False``;
- **kubectl wait** ``--for=condition=complete`` (its discovery requests included).

A long-lived request (a watch, a followed log) counts once, when it starts.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_detect import render_job, start_kubectl, wait_ask_batch, wait_kubectl, wait_prefect
from bench.common import Sandbox, Series, base_parser, load_average, provenance, ratio, table, write_section

HEADING = "## Quiet waiting"
WAITERS = ("ask-batch", "prefect-kubernetes", "kubectl wait")


def one(waiter: str, duration: float, completions: int, out: dict[str, Any]) -> None:
    from kubernetes import client

    try:
        with Sandbox() as sb:
            api = sb.api_client()
            run_key = f"quiet-{int(duration)}"
            body = render_job(run_key, sleep_s=duration, stamp_file=sb.root / "stamps", completions=completions,
                              kubeconfig=sb.kubeconfig)
            name = body["metadata"]["name"]
            created = client.BatchV1Api(api).create_namespaced_job("default", body)
            if waiter == "prefect-kubernetes":  # see bench_detect.measure: wait for the sandbox to write a status
                while not client.BatchV1Api(api).read_namespaced_job(name, "default").status:
                    time.sleep(0.01)
            before, t0 = sb.requests(), time.time()
            if waiter == "ask-batch":
                done = wait_ask_batch(sb, api, body, created, run_key, sb.root / "logs")
            elif waiter == "kubectl wait":
                done = wait_kubectl(start_kubectl(sb, name))
            else:
                done = wait_prefect(sb, body)
            after = sb.requests()
            api.close()
        out["requests"] = after - before
        out["minutes"] = (done - t0) / 60
    except Exception as exc:  # noqa: BLE001 - reported by the caller
        out["error"] = exc


def run(repeat: int, durations: tuple[float, float], completions: int) -> dict[tuple[str, float], dict[str, Series]]:
    results = {(w, d): {"rpm": Series(), "total": Series()} for w in WAITERS for d in durations}
    for rep in range(repeat):
        outs: dict[tuple[str, float], dict[str, Any]] = {k: {} for k in results}
        threads = [threading.Thread(target=one, args=(w, d, completions, outs[(w, d)])) for w, d in results]
        for t in threads:
            t.start()
            time.sleep(1.0)  # stagger the sandboxes' start-up a little on 2 cores
        for t in threads:
            t.join()
        for key, out in outs.items():
            if "error" in out:
                raise RuntimeError(f"{key}: {out['error']!r}") from out["error"]
            results[key]["rpm"].add(out["requests"] / out["minutes"])
            results[key]["total"].add(out["requests"])
            print(f"rep {rep} {key[0]:<20} {key[1]:5.0f} s: {out['requests']:4d} requests in "
                  f"{out['minutes'] * 60:6.1f} s = {out['requests'] / out['minutes']:6.1f}/min", flush=True)
    return results


def render(results: dict[tuple[str, float], dict[str, Series]], durations: tuple[float, float]) -> str:
    rows = []
    for waiter in WAITERS:
        cells = []
        for d in durations:
            r = results[(waiter, d)]
            cells += [r["total"].cell("{:.0f}"), r["rpm"].cell("{:.1f}")]
        short_rpm, long_rpm = (results[(waiter, d)]["rpm"] for d in durations)
        growth = f"{long_rpm.median / short_rpm.median:.2f}" if short_rpm.median else "-"
        ours = results[("ask-batch", durations[1])]["rpm"]
        vs = "1.00" if waiter == "ask-batch" else ratio(results[(waiter, durations[1])]["rpm"], ours)
        rows.append([f"**{waiter}**" if waiter == "ask-batch" else waiter, *cells, growth, vs])
    a, b = (f"{d:.0f} s" for d in durations)
    return table(["waiter", f"requests, {a} Job", f"req/min, {a}", f"requests, {b} Job", f"req/min, {b}",
                  f"req/min {b} / {a}", f"ratio at {b} (baseline / ask-batch)"], rows)


def notes(results: dict[tuple[str, float], dict[str, Series]], durations: tuple[float, float]) -> str:
    long = durations[1]
    ours = results[("ask-batch", long)]["rpm"].median
    pk = results[("prefect-kubernetes", long)]["rpm"].median
    return (f"During the {long:.0f} s Job ask-batch made {ours:.1f} requests/min against prefect-kubernetes' "
            f"{pk:.1f} ({pk / ours if ours else float('inf'):.1f}×). ask-batch's requests are a fixed set (list + "
            "watch for the Job and for its pods, one followed log and one pod read per pod, one final pod list), "
            "plus one resumed watch per stream every 240 s (`WaitOptions.watch_seconds`); its rate therefore "
            "*falls* as the Job gets longer, while a poller's stays at 2 requests per interval. kubectl wait "
            "makes fewer requests still (one watch, plus its discovery), but it streams no logs and reports "
            "nothing per index.")


def main(argv: list[str] | None = None) -> dict[tuple[str, float], dict[str, Series]]:
    parser = base_parser(__doc__, repeat=5)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--short", action="store_true", help="20 s vs 100 s (default)")
    mode.add_argument("--full", action="store_true", help="120 s vs 600 s")
    mode.add_argument("--durations", type=float, nargs=2, metavar=("A", "B"))
    parser.add_argument("--completions", type=int, default=4)
    args = parser.parse_args(argv)
    durations = tuple(args.durations) if args.durations else (120.0, 600.0) if args.full else (20.0, 100.0)
    load = load_average()
    results = run(args.repeat, durations, args.completions)
    body = render(results, durations)
    print(body)
    if not args.no_write:
        flag = "--full" if args.full else f"--durations {durations[0]:.0f} {durations[1]:.0f}" if args.durations \
            else "--short"
        cmd = f"python bench/bench_quiet.py --repeat {args.repeat} {flag} --completions {args.completions}"
        scaled = "" if args.full else " (scaled down from the 2 and 10 minutes of the question; `--full` runs those)"
        definition = (
            f"Jobs of {args.completions} pods sleeping {durations[0]:.0f} s and {durations[1]:.0f} s{scaled}. "
            "Each waiter and duration on its own sandbox so the sandbox's request counter is the waiter's alone; "
            "requests from just after the Job's creation to the waiter's return. Median (min–max).")
        write_section(HEADING, provenance(cmd, load) + "\n\n" + definition + "\n\n" + body + "\n\n"
                      + notes(results, durations))
    return results


if __name__ == "__main__":
    main()
