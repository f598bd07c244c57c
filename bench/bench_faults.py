"""Whole runs of the example against a cloud that fails 10 % of the time: how many succeed, what is left behind.

Set-up: a sandbox (subprocess) whose fault knobs answer ``--error-rate`` of the requests of every service
(Kubernetes, OSS, CS, NAS) with 500/503/429 and drop ``--drop-rate`` of the connections without an answer; a
temporary Prefect server. Each repetition is one whole flow run of deployments/example.yaml (``--completions``
indexes, NAS, OSS outputs, default teardown) with its own run key. After each run the run's Kubernetes objects
(Job, pods, ConfigMap, Secret, PVC, PV by the run label) are counted with faults off: "left behind" is their sum.

There is no baseline to run beside it: the figure is the success rate of the one retry policy (tasks/cloud/retry.py).
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, Sandbox, base_parser, load_average, provenance, table, write_section

HEADING = "## Runs under injected faults (retry policy)"
WORKLOAD = REPO / "examples" / "workload"


def set_faults(sb: Sandbox, **knobs: Any) -> None:
    request = urllib.request.Request(sb.endpoints["control"]["endpoint"] + "/faults", method="PUT",
                                     data=json.dumps(knobs).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10):
        pass


def leftovers(sb: Sandbox, run_key: str) -> int:
    from kubernetes import client

    from tasks.naming import run_selector

    api = sb.api_client()
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    sel = run_selector(run_key)
    return (len(batch.list_namespaced_job("default", label_selector=sel).items)
            + len(core.list_namespaced_pod("default", label_selector=sel).items)
            + len(core.list_namespaced_config_map("default", label_selector=sel).items)
            + len(core.list_namespaced_secret("default", label_selector=sel).items)
            + len(core.list_namespaced_persistent_volume_claim("default", label_selector=sel).items)
            + len(core.list_persistent_volume(label_selector=sel).items))


def run(repeat: int, completions: int, error_rate: float, drop_rate: float) -> list[dict[str, Any]]:
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    rows: list[dict[str, Any]] = []
    with Sandbox() as sb, prefect_test_harness(server_startup_timeout=300), \
            temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        from flows.ask_batch import ask_batch
        from flows.cli import build_spec
        from flows.run_files import flow_parameters

        for rep in range(repeat):
            run_key = f"faults-{rep}"
            work = sb.root / run_key
            work.mkdir()
            sets = [f"run_key={run_key}", f"job.completions={completions}", f"job.parallelism={completions}",
                    f"outputs.download_dir={work / 'outputs'}",
                    f"config.local_paths=[{WORKLOAD / 'shard_hash.py'}, {WORKLOAD / 'settings.json'}]",
                    f"config.secret_files=[{{name: token, file: {WORKLOAD / 'demo-token.txt'}}}]"]
            spec = build_spec(REPO / "deployments" / "example.yaml", sets, sb.dir)
            set_faults(sb, error_rate=error_rate, drop_rate=drop_rate, error_statuses="500,503,429",
                       services="k8s,oss,cs,nas")
            t0 = time.perf_counter()
            try:
                state = ask_batch(**flow_parameters(spec), return_state=True)
                ok, message = state.is_completed(), "" if state.is_completed() else (state.message or "")
            finally:
                set_faults(sb, error_rate=0.0, drop_rate=0.0)
            wall = time.perf_counter() - t0
            left = leftovers(sb, run_key)
            rows.append({"run": rep, "ok": ok, "seconds": wall, "left": left, "message": message[:200]})
            print(f"run {rep}: {'ok' if ok else 'FAILED'} in {wall:.1f} s, {left} object(s) left"
                  f"{' — ' + message[:200] if message else ''}", flush=True)
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    ok = sum(r["ok"] for r in rows)
    left = sum(r["left"] for r in rows)
    walls = sorted(r["seconds"] for r in rows)
    median = walls[len(walls) // 2] if walls else 0.0
    return table(["runs", "succeeded", "objects left behind", "median run (s)"],
                 [[len(rows), f"{ok}/{len(rows)}", left, f"{median:.1f}"]])


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = base_parser(__doc__, repeat=30)
    parser.add_argument("--completions", type=int, default=3)
    parser.add_argument("--error-rate", type=float, default=0.1)
    parser.add_argument("--drop-rate", type=float, default=0.02)
    args = parser.parse_args(argv)
    load = load_average()
    rows = run(args.repeat, args.completions, args.error_rate, args.drop_rate)
    body = render(rows)
    print(body)
    failed = [r for r in rows if not r["ok"] or r["left"]]
    if not args.no_write:
        cmd = (f"python bench/bench_faults.py --repeat {args.repeat} --completions {args.completions} "
               f"--error-rate {args.error_rate} --drop-rate {args.drop_rate}")
        detail = "\n".join(f"- run {r['run']}: {r['message'] or 'ok'}; {r['left']} left" for r in failed)
        write_section(HEADING, provenance(cmd, load) + "\n\n" + (__doc__ or "").split("\n\n")[1] + "\n\n" + body
                      + ("\n\n" + detail if detail else ""))
    return rows


if __name__ == "__main__":
    main()
