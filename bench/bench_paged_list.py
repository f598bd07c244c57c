"""What serving a paged list as one snapshot costs the sandbox: a full paged list of N pods while nothing changes,
against the same list while D pods are deleted between every two pages (the pages are then rebuilt as of the first
page's resourceVersion from the watch history, ``Store._changed_since``).

    .venv/bin/python bench/bench_paged_list.py [--pods 100000] [--deleted-per-page 500] [--repeat 3] [--no-write]

In-process: the sandbox's real ``Store`` (encoded objects, history ring), no HTTP. Pods are the Succeeded pod of a
real sandbox run (``bench/probe_store_scale_pod.json``), renamed. Each repetition lists the quiet store first, then
the churned one (the deletions themselves are not timed); 500 objects a page, as kubectl and ask-batch ask.
Figures: seconds of CPU for the whole list (``time.process_time``), median (min–max).
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository's packages must be importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Series, base_parser, command_line, load_average, provenance, ratio, table, write_section
from sandbox.k8s.store import Store

POD = json.loads(Path(__file__).with_name("probe_store_scale_pod.json").read_text())
PAGE = 500


def filled(n: int) -> Store:
    store = Store(history_size=50_000)
    store.create("namespaces", {"metadata": {"name": "default"}})
    for i in range(n):
        pod = copy.deepcopy(POD)
        meta = pod["metadata"]
        for key in ("resourceVersion", "uid", "creationTimestamp", "ownerReferences", "deletionTimestamp",
                    "finalizers"):
            meta.pop(key, None)
        meta["name"], meta["namespace"] = f"pod-{i:06d}", "default"
        store.create("pods", pod)
    return store


def list_all(store: Store, deleted_per_page: int, victims: list[str]) -> tuple[float, int]:
    """CPU seconds of one whole paged list, and how many pods it returned; deletes between pages (untimed)."""
    spent, token, count = 0.0, None, 0
    while True:
        started = time.process_time()
        result = store.list("pods", "default", limit=PAGE, continue_token=token)
        spent += time.process_time() - started
        count += len(result.items)
        token = result.continue_token
        if not token:
            return spent, count
        for _ in range(min(deleted_per_page, len(victims))):
            store.delete("pods", "default", victims.pop(), grace_period_seconds=0)


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__, repeat=3)
    parser.add_argument("--pods", type=int, default=100_000)
    parser.add_argument("--deleted-per-page", type=int, default=500)
    args = parser.parse_args(argv)
    load = load_average()
    quiet, churned = Series(), Series()
    for rep in range(args.repeat):
        store = filled(args.pods)
        seconds, count = list_all(store, 0, [])
        quiet.add(seconds)
        assert count == args.pods, count
        victims = [f"pod-{i:06d}" for i in range(args.pods)]  # from the end of the key order: pages not yet read
        seconds, count = list_all(store, args.deleted_per_page, victims)
        churned.add(seconds)
        assert count == args.pods, f"the snapshot lost pods: {count} of {args.pods}"
        print(f"repetition {rep + 1}: quiet {quiet.values[-1]:.2f} s, churned {churned.values[-1]:.2f} s "
              f"({count:,} pods listed both times)", flush=True)
    extra_ms = (churned.median - quiet.median) / max(1, args.pods // PAGE) * 1000
    note = (f"Served as one snapshot (as kube-apiserver serves a paged list), a list read while pods go costs the "
            f"sandbox {churned.median / quiet.median:.2f}x the quiet list's CPU, about {extra_ms:.0f} ms more a "
            f"page at {args.pods:,} pods: each history entry written since the first page is decoded once for the "
            f"list. Not measured here: the whole flow at this size (`bench_flow_scale.py`), whose teardown lists "
            f"while the garbage collector deletes.")
    body = "\n\n".join([
        provenance(command_line(argv), load),
        table(["list of " + f"{args.pods:,} pods, {PAGE} a page", "CPU seconds", "ratio (quiet / churned)"], [
            ["nothing changes between pages (baseline)", quiet.cell("{:.2f}"), "1.00"],
            [f"{args.deleted_per_page:,} pods deleted between every two pages, served as of the first page",
             churned.cell("{:.2f}"), ratio(quiet, churned)],
        ]),
        note,
    ])
    print(body)
    if not args.no_write:
        write_section("## Sandbox: a paged list served as one snapshot", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
