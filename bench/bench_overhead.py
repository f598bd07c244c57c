"""Pipeline overhead: the whole ask-batch flow vs a kubectl shell script doing the same Job.

    .venv/bin/python bench/bench_overhead.py [--repeat 5] [--completions 10] [--no-write]

Set-up (not timed): a sandbox; a temporary Prefect server (``prefect_test_harness``, flow heartbeats off, as the
e2e tests run); a NAS file system + mount target and a static PV/PVC bound to it, made with ask-batch's own
functions — "cluster and NAS already there". Both contenders use the sandbox's default cluster (its kubeconfig)
and that PVC.

The Job: the example workload (``examples/workload/shard_hash.py``, ``--completions`` indexes, all in parallel)
with a 1 KiB shard, so each pod is a Python start-up, a tiny hash and two small OSS uploads (result + marker),
then exits.

- **ask-batch**: ``ask_batch(**flow_parameters(spec))`` in this process (cluster mode ``existing``, storage ``pvc``):
  ensure_cluster, ensure_volume (checks the claim), ensure_bucket, publish_config, launch_job, wait_for_job
  (live logs), collect_outputs (saves the pod logs to OSS, lists, downloads and verifies 2 objects per index),
  teardown (Job, ConfigMap, Secret; waits until they are gone), summary artifact. Timed from the call to its
  return, so it includes Prefect's own bookkeeping (flow/task runs, states, logs, artifacts sent to the
  server).
- **kubectl script**: ``bash run.sh``: ``kubectl apply -f config.yaml`` (the same ConfigMap and Secret
  ask-batch renders), ``kubectl apply -f job.yaml`` (the same Job manifest, other run key),
  ``kubectl wait --for=condition=complete``, ``kubectl delete -f job.yaml -f config.yaml`` (waits for the
  objects to be gone; pods deleted in the background). No logs, no outputs check, no download.

API requests: the sandbox's counter for the cluster (``/stats``) before and after, each contender alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, Sandbox, Series, base_parser, load_average, provenance, ratio, table, write_section

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # its sqlite writes only add noise here

HEADING = "## Pipeline overhead"
WORKLOAD = REPO / "examples" / "workload"
SHARED_RUN = "bench-shared"
BUCKET = "bench-overhead"


def make_spec(sb: Sandbox, work: Path, *, run_key: str, claim: str, completions: int) -> Any:
    from tasks.cloud.clients import apply_env, target_from_endpoints_file
    from tasks.spec import parse_spec

    target, env = target_from_endpoints_file(sb.endpoints_file)
    apply_env(env)
    settings = json.loads((WORKLOAD / "settings.json").read_text())
    settings["shard_bytes"] = 1024
    (work / "settings.json").write_text(json.dumps(settings))
    return parse_spec({
        "run_key": run_key,
        "target": target.model_dump(mode="json"),
        "cluster": {"mode": "existing", "namespace": "default",
                    "existing": {"kubeconfig_path": str(sb.kubeconfig)}},
        "storage": {"mode": "pvc", "claim_name": claim, "mount_path": "/mnt/data"},
        "config": {"local_paths": [str(WORKLOAD / "shard_hash.py"), str(work / "settings.json")],
                   "mount_path": "/etc/ask-batch/config",
                   "secret_files": [{"name": "token", "file": str(WORKLOAD / "demo-token.txt")}],
                   "env": {"PYTHONUNBUFFERED": "1"}},
        "job": {"image": "registry.cn-hangzhou.aliyuncs.com/ask-batch/shard-hash:0.1",
                "command": ["python3", "/etc/ask-batch/config/shard_hash.py"], "args": ["--settings", "settings.json"],
                "cpu": "1", "memory": "2Gi", "completions": completions, "parallelism": completions,
                "completion_mode": "Indexed", "backoff_limit_per_index": 1, "active_deadline_seconds": 600},
        "wait": {"fail_fast_grace_seconds": 60, "stream_logs": True},
        "outputs": {"bucket": BUCKET, "prefix_template": "ask-batch/{run_key}/",
                    "completeness": "marker", "download": True, "download_dir": str(work / "outputs")},
        "teardown": {"job": "always", "config": "always", "volume": "always", "nas": "never", "cluster": "never"},
    })


def shared_volume(sb: Sandbox) -> str:
    """A NAS file system, mount target, PV and bound PVC, made once with ask-batch's functions; the PVC name."""
    from kubernetes import client

    from tasks.cloud.clients import AliCredentials, apply_env, nas_client, target_from_endpoints_file
    from tasks.handles import ClusterHandle
    from tasks.naming import volume_names
    from tasks.render.manifests import nas_pv_manifest, nas_pvc_manifest
    from tasks.spec import parse_spec
    from tasks.stages.volume import ensure_nas, ensure_pv, ensure_pvc, wait_pvc_bound

    target, env = target_from_endpoints_file(sb.endpoints_file)
    apply_env(env)
    spec = parse_spec({"target": target.model_dump(mode="json"),
                       "cluster": {"mode": "existing", "existing": {"kubeconfig_path": str(sb.kubeconfig)}},
                       "storage": {"mode": "nas", "nas": {"name": "bench", "vpc_id": sb.endpoints["vpc_id"],
                                                          "vswitch_id": sb.endpoints["vswitch_id"]}},
                       "job": {"image": "x", "command": ["true"]}})
    creds = AliCredentials(env["ALIBABA_CLOUD_ACCESS_KEY_ID"], env["ALIBABA_CLOUD_ACCESS_KEY_SECRET"])
    cluster = ClusterHandle(mode="existing", region=target.region, namespace="default", kubeconfig_source="file:x")
    _, domain, _, _ = ensure_nas(spec, run_key=SHARED_RUN, cluster=cluster, nas=nas_client(target, creds))
    pv, pvc = volume_names(SHARED_RUN)
    api = sb.api_client()
    core = client.CoreV1Api(api)
    ensure_pv(core, nas_pv_manifest(pv, run_key=SHARED_RUN, server=domain, path="/", nas=spec.storage.nas,
                                    claim_namespace="default", claim_name=pvc))
    ensure_pvc(core, nas_pvc_manifest(pvc, pv, run_key=SHARED_RUN, namespace="default", capacity_gib=100))
    wait_pvc_bound(core, "default", pvc, timeout=60)
    api.close()
    import alibabacloud_oss_v2 as o

    sb.oss().put_bucket(o.PutBucketRequest(bucket=BUCKET))  # the flow would create it; the script expects it
    return pvc


def script_files(sb: Sandbox, spec: Any, work: Path, run_key: str) -> Path:
    """config.yaml + job.yaml rendered by ask-batch's own renderers for ``run_key``, and run.sh."""
    import yaml

    from tasks.cloud.clients import AliCredentials
    from tasks.cloud.inputs import collect_config_content, pod_credential_env
    from tasks.handles import ConfigHandle, VolumeHandle
    from tasks.render.manifests import render_config_objects
    from tasks.stages.job import render_job

    env = sb.endpoints
    creds = AliCredentials(env["access_key_id"], env["access_key_secret"])
    content = collect_config_content(spec.config, load_secret=lambda name: "",
                                     extra_secret_env=pod_credential_env(spec, creds))
    objects = render_config_objects(spec, run_key, content)
    names = {o["kind"]: o["metadata"]["name"] for o in objects}
    config = ConfigHandle(namespace="default", config_map=names.get("ConfigMap"), secret=names.get("Secret"),
                          secret_file_keys=tuple(sorted(content.secret_files)),
                          secret_env_keys=tuple(sorted(content.secret_env)))
    job = render_job(spec, run_key=run_key, flow_run_name=f"ask-batch-{run_key}",
                     volume=VolumeHandle(mode="pvc", claim_name=spec.storage.claim_name), config=config)
    (work / "config.yaml").write_text(yaml.safe_dump_all(objects))
    (work / "job.yaml").write_text(yaml.safe_dump(job))
    script = work / "run.sh"
    script.write_text(f"""#!/bin/bash
set -euo pipefail
export KUBECONFIG={sb.kubeconfig}
cd {work}
kubectl apply -f config.yaml
kubectl apply -f job.yaml
kubectl wait --for=condition=complete job/{job['metadata']['name']} --timeout=120s
kubectl delete -f job.yaml -f config.yaml
""")
    return script


def run(repeat: int, completions: int) -> dict[str, dict[str, Series]]:
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    results = {n: {"wall": Series(), "requests": Series()} for n in ("ask-batch", "kubectl script")}
    with Sandbox() as sb, prefect_test_harness(server_startup_timeout=120), \
            temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        from flows.ask_batch import ask_batch
        from flows.run_files import flow_parameters

        claim = shared_volume(sb)
        cid = sb.default_cluster_id
        for rep in range(-1, repeat):  # -1: warm-up (imports, bucket creation, page cache), not recorded
            order = ("ask-batch", "kubectl script") if rep % 2 == 0 else ("kubectl script", "ask-batch")
            for name in order:
                work = sb.root / f"{name.split()[0]}-{rep + 1}"
                work.mkdir(parents=True)
                run_key = f"ovh-{name.split()[0][:3]}-{rep + 1}"
                spec = make_spec(sb, work, run_key=run_key, claim=claim, completions=completions)
                script = script_files(sb, spec, work, run_key) if name == "kubectl script" else None
                before, t0 = sb.requests(cid), time.perf_counter()
                if script is None:
                    state = ask_batch(**flow_parameters(spec), return_state=True)
                    wall = time.perf_counter() - t0
                    if not state.is_completed():
                        raise RuntimeError(f"flow run failed: {state.message}")
                else:
                    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True)
                    wall = time.perf_counter() - t0
                    if proc.returncode != 0:
                        raise RuntimeError(f"script failed: {proc.stdout}\n{proc.stderr}")
                time.sleep(0.5)  # let requests still in flight (pod deletions by the GC are in-process) land
                requests = sb.requests(cid) - before
                if rep >= 0:
                    results[name]["wall"].add(wall)
                    results[name]["requests"].add(requests)
                print(f"rep {rep} {name:<15} {wall:6.2f} s, {requests:4d} API requests", flush=True)
    return results


def render(results: dict[str, dict[str, Series]]) -> str:
    ours, base = results["ask-batch"], results["kubectl script"]
    rows = [["wall time (s)", base["wall"].cell("{:.2f}"), ours["wall"].cell("{:.2f}"),
             ratio(base["wall"], ours["wall"])],
            ["Kubernetes API requests", base["requests"].cell("{:.0f}"), ours["requests"].cell("{:.0f}"),
             ratio(base["requests"], ours["requests"])]]
    return table(["figure", "kubectl script (baseline)", "ask-batch flow", "ratio (baseline / ask-batch)"], rows)


def notes(results: dict[str, dict[str, Series]]) -> str:
    ours, base = results["ask-batch"], results["kubectl script"]
    return (f"ask-batch loses here, as expected: {ours['wall'].median:.1f} s against {base['wall'].median:.1f} s "
            f"({ours['wall'].median / base['wall'].median:.1f}× the time) and {ours['requests'].median:.0f} API "
            f"requests against {base['requests'].median:.0f}. What the extra time and requests buy: Prefect "
            "flow/task runs with states, logs and artifacts (sent to the Prefect server, not counted as "
            "Kubernetes requests), a live log stream per pod (one followed log + one pod read each), the final "
            "pod list for the per-index report, the pod logs saved to OSS, the outputs listed, downloaded and "
            "CRC-checked, and a teardown that waits until the Job's pods are really gone. The kubectl script "
            "checks none of that.")


def main(argv: list[str] | None = None) -> dict[str, dict[str, Series]]:
    parser = base_parser(__doc__, repeat=5)
    parser.add_argument("--completions", type=int, default=10)
    args = parser.parse_args(argv)
    load = load_average()
    results = run(args.repeat, args.completions)
    body = render(results)
    print(body)
    if not args.no_write:
        cmd = f"python bench/bench_overhead.py --repeat {args.repeat} --completions {args.completions}"
        definition = (
            f"The example workload with a 1 KiB shard, {args.completions} indexes in parallel, on a PVC bound to "
            "an existing NAS file system (cluster and NAS already there). ask-batch: the whole flow "
            "(`ask_batch(spec)`, temporary Prefect server already running). Baseline: a bash script "
            "applying the same ConfigMap, Secret and Job with kubectl, `kubectl wait`, `kubectl delete`. "
            "Requests: the sandbox's count for the cluster, before/after. Median (min–max).")
        write_section(HEADING, provenance(cmd, load) + "\n\n" + definition + "\n\n" + body + "\n\n" + notes(results))
    return results


if __name__ == "__main__":
    main()
