"""Cancellation and crash through Prefect for real: a deployment run on a process worker, cancelled with
``prefect flow-run cancel`` or its flow process killed with SIGKILL while it waits on the Job.

What each test checks is what a user relies on: the run ends Cancelled / Crashed, and teardown ran per policy
(job, config and volume 'always', NAS 'never'): the run's Job, pods, ConfigMap, Secret, PVC and PV are gone from
the cluster (read with the kubernetes client), the NAS file system is kept, and the run's own log says what the
``on_cancellation`` / ``on_crashed`` hook (``flows.hooks.sweep``) deleted and kept.

In Prefect 3.9.1 both hooks run in the *worker's* process (``prefect.runner._hook_runner``): after a cancel the
worker stops the flow process and runs ``on_cancellation`` before it sets Cancelled; after the process dies it
proposes Crashed and then runs ``on_crashed``. The flow process's own ``finally`` may also tear down on a cancel
(the engine turns the worker's SIGTERM into a cancellation): teardown is idempotent, so either may go first.
"""

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from deployments.local import Stack
from tests.deploy.helpers import api, flow_run, poll, run_params, task_runs

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
# Two indexes that wait long enough to be interrupted; NAS storage, so the run has a PVC and a PV.
WAITING = ("job.completions=2", "job.parallelism=2", 'job.command=["python3", "-c"]',
           "job.args=[\"import time; print('waiting', flush=True); time.sleep(300)\"]")
SELECTOR = "ask-batch.io/run={}"


def sandbox_spec(stack: Stack, run_key: str) -> Any:
    """The run's spec aimed at the stack's sandbox, to look at the cluster and the NAS as the flow does."""
    from flows.cli import build_spec

    return build_spec(REPO / "deployments" / "example.yaml", [f"run_key={run_key}", "config.local_paths=[]",
                                                              "config.secret_files=[]"],
                      stack.sandbox_dir, start_sandbox=False)


def kube(spec: Any) -> Any:
    from tasks.cloud.cluster_access import connect, locate_cluster
    from tasks.cloud.context import cs_for

    return connect(locate_cluster(spec, cs=cs_for(spec)), spec, cs=cs_for(spec))


def left_in_cluster(api_client: Any, run_key: str) -> dict[str, list[str]]:
    """The run's objects still in the cluster, by kind (found by the run label, as the sweep finds them)."""
    from kubernetes import client

    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    sel = SELECTOR.format(run_key)
    listings = {"Job": batch.list_namespaced_job("default", label_selector=sel),
                "Pod": core.list_namespaced_pod("default", label_selector=sel),
                "ConfigMap": core.list_namespaced_config_map("default", label_selector=sel),
                "Secret": core.list_namespaced_secret("default", label_selector=sel),
                "PersistentVolumeClaim": core.list_namespaced_persistent_volume_claim("default", label_selector=sel),
                "PersistentVolume": core.list_persistent_volume(label_selector=sel)}
    return {kind: [i.metadata.name for i in listing.items] for kind, listing in listings.items() if listing.items}


def run_logs(stack: Stack, run_id: str) -> list[str]:
    logs = api(stack, "/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200,
                                       "sort": "TIMESTAMP_ASC"})
    return [entry["message"] for entry in logs]


def start_waiting_run(stack: Stack, run_key: str) -> tuple[str, Any, Any]:
    """Create an adhoc run, wait until both of its pods run; (flow run id, spec, kubernetes ApiClient)."""
    from kubernetes import client

    dep = api(stack, "/deployments/name/ask-batch/adhoc")
    params = json.loads(run_params(stack, f"run_key={run_key}", *WAITING))
    run_id = api(stack, f"/deployments/{dep['id']}/create_flow_run",
                 {"parameters": params, "state": {"type": "SCHEDULED"}})["id"]
    spec = sandbox_spec(stack, run_key)
    poll(lambda: [tr for tr in task_runs(stack, run_id) if tr["name"].startswith("launch_job")
                  and tr["state_type"] == "COMPLETED"], bool, timeout=120, what=f"the Job of {run_key} launched")
    api_client = kube(spec)

    def running() -> int:
        pods = client.CoreV1Api(api_client).list_namespaced_pod(
            "default", label_selector=SELECTOR.format(run_key)).items
        return sum(1 for p in pods if p.status.phase == "Running")

    poll(running, lambda n: n == 2, timeout=60, what=f"running pods of {run_key}")
    assert flow_run(stack, run_id)["state_type"] == "RUNNING"
    return run_id, spec, api_client


def assert_swept(stack: Stack, run_id: str, run_key: str, spec: Any, api_client: Any, what: str) -> None:
    from tasks.cloud.clients import nas_client
    from tasks.cloud.context import credentials
    from tasks.cloud.nas import find_file_systems_by_name

    # The hook's last line: it has finished (in the worker, on_crashed runs after Crashed is set).
    logs = poll(lambda: run_logs(stack, run_id), lambda ms: any(f"sweep ({what}) {run_key}: done" in m for m in ms),
                timeout=120, what=f"the {what} sweep of {run_key} in the run's log")
    assert left_in_cluster(api_client, run_key) == {}
    sweep_lines = [m for m in logs if m.startswith(f"ask-batch sweep ({what}) {run_key}:")]
    assert any("kept: NasFileSystem" in m and "policy 'never'" in m for m in sweep_lines), sweep_lines
    nas = nas_client(spec.target, credentials(spec))
    assert len(find_file_systems_by_name(nas, spec.storage.nas.name)) == 1  # the NAS is kept


def test_cancelled_run_ends_cancelled_and_is_torn_down(stack: Stack) -> None:
    run_id, spec, api_client = start_waiting_run(stack, "dep-cancel")
    stack.prefect("flow-run", "cancel", run_id)
    run = poll(lambda: flow_run(stack, run_id), lambda r: r["state_type"] in ("CANCELLED", "CRASHED", "FAILED",
                                                                                "COMPLETED"),
               timeout=90, what="the cancelled run's state")
    assert run["state_type"] == "CANCELLED", run["state"]
    assert_swept(stack, run_id, "dep-cancel", spec, api_client, "cancelling")


def test_killed_flow_process_ends_crashed_and_is_torn_down(stack: Stack) -> None:
    run_id, spec, api_client = start_waiting_run(stack, "dep-crash")
    pid = int(str(flow_run(stack, run_id)["infrastructure_pid"]).rsplit(":", 1)[-1])
    os.kill(pid, signal.SIGKILL)  # the flow's process, as the OOM killer would: no finally, no engine hook
    run = poll(lambda: flow_run(stack, run_id), lambda r: r["state_type"] in ("CANCELLED", "CRASHED", "FAILED",
                                                                                "COMPLETED"),
               timeout=60, what="the killed run's state")
    assert run["state_type"] == "CRASHED", run["state"]
    assert_swept(stack, run_id, "dep-crash", spec, api_client, "crashed")
