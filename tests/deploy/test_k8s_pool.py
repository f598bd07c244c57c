"""The flow itself in the cluster: ``ask-batch/adhoc-k8s`` through a prefect-kubernetes worker on the sandbox.

The stack is the one ``make up`` builds (server, sandbox wired, pools, ``prefect deploy --all`` from a fresh copy
of the repository) plus ``prefect worker start --type kubernetes`` pointed at the sandbox's default cluster with
its kubeconfig, as an operator points it at ASK. For each run the worker creates a Job from
``deployments/k8s-base-job-template.json`` in namespace ``ask-batch`` (``deployments/k8s-namespace.yaml`` is
applied first, as a user would). The sandbox's virtual node runs the pod's command, ``prefect flow-run execute``,
as a host process with the sandbox's PATH — the project's venv first, standing in for the image's PATH — and the
deployment's pull step changes into the repository, which ``prefect deploy`` was told is where the image keeps it
(``ASK_BATCH_IMAGE_WORKDIR``; ``/app`` in ``deployments/Dockerfile``). Nothing in the flow, the template or the
worker knows it is on the sandbox.

The flow pod then does what it does anywhere: finds the ASK cluster by name through the Container Service (the
sandbox lists its default cluster as ``sandbox``), fetches the intranet kubeconfig, and launches the batch Job in
that same cluster, next to itself.

What is checked is what a user sees: the run's final state in Prefect, its logs and artifacts (sent from the pod),
the Job and pod the worker made, the batch pods in the same cluster, the cluster empty of the run's objects after
a cancellation or a crash, and the worker stopping on one SIGTERM.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from deployments.k8s_pool import IMAGE_DIRECTORY_ENV, start_worker
from deployments.local import Stack
from tests.deploy.conftest import NOT_COPIED, REPO
from tests.deploy.helpers import STAGES, api, artifacts, flow_run, poll, run_deployment_cli, run_params, task_runs
from tests.ports import free_port

# Several minutes (a flow pod per run, a sweep pod after the crash): `make test-slow`, which .ci/run runs too.
pytestmark = [pytest.mark.deploy, pytest.mark.slow, pytest.mark.timeout(1500)]

DEPLOYMENT = "adhoc-k8s"
K8S_WORKER = "k8s-worker"
FLOW_NAMESPACE = "ask-batch"  # the template's default (deployments/k8s-base-job-template.json)
# The batch Job goes to the cluster the flow pod runs in: found by name, reached on its intranet endpoint.
IN_CLUSTER = ("cluster.ask.name=sandbox", "cluster.ask.create_if_missing=false",
              "cluster.ask.private_kubeconfig=true", "storage.mode=none")
SMALL = ("job.completions=2", "job.parallelism=2")
WAITING = (*SMALL, 'job.command=["python3", "-c"]',
           "job.args=[\"import time; print('waiting', flush=True); time.sleep(300)\"]")
RUN_LABEL = "ask-batch.io/run={}"
FLOW_RUN_LABEL = "prefect.io/flow-run-id={}"
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack of ``make up`` on a fresh clone, plus a Kubernetes worker on the sandbox's default cluster."""
    base = tmp_path_factory.mktemp("k8s")
    clone = base / "clone"
    shutil.copytree(REPO, clone, ignore=shutil.ignore_patterns(*NOT_COPIED))
    sandbox_dir = base / "sandbox"
    st = Stack(root=clone, state=base / "prefect", port=free_port(), sandbox_dir=sandbox_dir,
               worker_name="test-worker", worker_query_seconds=1,
               extra_env={IMAGE_DIRECTORY_ENV: str(clone), "KUBECONFIG": str(sandbox_dir / "kubeconfig")})
    try:
        # A fresh server migrates its database first: give it longer than `up` does on a busy 2-core machine.
        st.start_server(timeout=300)
        st.up(say=lambda line: None)
        from kubernetes import utils

        utils.create_from_yaml(kube(st), str(clone / "deployments" / "k8s-namespace.yaml"))
        yield st
    finally:
        st.stop(K8S_WORKER)
        st.down(say=lambda line: None)


@pytest.fixture(scope="module")
def k8s_worker(stack: Stack) -> subprocess.Popen:
    """The Kubernetes worker of the stack (stopped by the last test, or by the stack's teardown)."""
    return start_worker(stack, K8S_WORKER)


def kube(st: Stack) -> Any:
    """A kubernetes ApiClient on the sandbox's default cluster (the worker's kubeconfig)."""
    from kubernetes import config

    assert st.sandbox_dir is not None
    return config.new_client_from_config(str(st.sandbox_dir / "kubeconfig"))


def processes(st: Stack) -> list[dict[str, Any]]:
    """Every process the default cluster's virtual node started (the sandbox's record, one JSON per line)."""
    assert st.sandbox_dir is not None
    cluster_id = json.loads((st.sandbox_dir / "endpoints.json").read_text())["kubernetes"]["cluster_id"]
    path = st.sandbox_dir / "clusters" / cluster_id / "node" / "processes.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def flow_job(st: Stack, run_id: str) -> Any:
    """The Job the Kubernetes worker created for the flow run (by Prefect's flow-run label)."""
    from kubernetes import client

    jobs = client.BatchV1Api(kube(st)).list_namespaced_job(FLOW_NAMESPACE,
                                                           label_selector=FLOW_RUN_LABEL.format(run_id)).items
    assert len(jobs) == 1, [j.metadata.name for j in jobs]
    return jobs[0]


def left_in_cluster(st: Stack, run_key: str) -> dict[str, list[str]]:
    """The batch run's objects still in the cluster, by kind (found by the run label, as the sweep finds them)."""
    from kubernetes import client

    api_client = kube(st)
    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    sel = RUN_LABEL.format(run_key)
    listings = {"Job": batch.list_namespaced_job("default", label_selector=sel),
                "Pod": core.list_namespaced_pod("default", label_selector=sel),
                "ConfigMap": core.list_namespaced_config_map("default", label_selector=sel),
                "Secret": core.list_namespaced_secret("default", label_selector=sel)}
    return {kind: [i.metadata.name for i in listing.items] for kind, listing in listings.items() if listing.items}


def run_logs(st: Stack, run_id: str) -> list[str]:
    """Every log message of the run, oldest first (paged: the API returns at most 200 at a time)."""
    out: list[str] = []
    while True:
        page = api(st, "/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200,
                                        "offset": len(out), "sort": "TIMESTAMP_ASC"})
        out += [entry["message"] for entry in page]
        if len(page) < 200:
            return out


def start_waiting_run(st: Stack, run_key: str) -> str:
    """Create an adhoc-k8s run whose two batch pods sleep; return once both run (the flow pod waits on them)."""
    from kubernetes import client

    dep = api(st, f"/deployments/name/ask-batch/{DEPLOYMENT}")
    params = json.loads(run_params(st, f"run_key={run_key}", *IN_CLUSTER, *WAITING))
    run_id = api(st, f"/deployments/{dep['id']}/create_flow_run",
                 {"parameters": params, "state": {"type": "SCHEDULED"}})["id"]
    core = client.CoreV1Api(kube(st))

    def running() -> int:
        pods = core.list_namespaced_pod("default", label_selector=RUN_LABEL.format(run_key)).items
        return sum(1 for p in pods if p.status.phase == "Running")

    poll(running, lambda n: n == 2, timeout=300, what=f"running batch pods of {run_key}")
    assert flow_run(st, run_id)["state_type"] == "RUNNING"
    return run_id


def test_flow_runs_as_a_pod_and_launches_the_batch_job_in_the_same_cluster(stack: Stack,
                                                                           k8s_worker: subprocess.Popen) -> None:
    from kubernetes import client

    code, output, run_id = run_deployment_cli(stack, DEPLOYMENT,
                                              run_params(stack, "run_key=k8s-ok", *IN_CLUSTER, *SMALL), timeout=420)
    assert code == 0 and "Completed" in output, output
    run = flow_run(stack, run_id)
    assert run["state_type"] == "COMPLETED"

    # The worker ran the flow as a Job of the template, in the flow namespace, as the template's service account.
    job = flow_job(stack, run_id)
    assert run["infrastructure_pid"].endswith(f"{FLOW_NAMESPACE}:{job.metadata.name}"), run["infrastructure_pid"]
    core = client.CoreV1Api(kube(stack))
    # The engine reports Completed just before its process exits: the pod follows a moment later.
    pod = poll(lambda: core.list_namespaced_pod(FLOW_NAMESPACE, label_selector=f"job-name={job.metadata.name}").items,
               lambda pods: len(pods) == 1 and pods[0].status.phase in ("Succeeded", "Failed"), timeout=120,
               what="the flow pod's end")[0]
    assert pod.status.phase == "Succeeded" and pod.spec.service_account_name == "ask-batch-flow"
    assert pod.spec.containers[0].args == ["prefect", "flow-run", "execute"]
    assert "Finished in state Completed" in core.read_namespaced_pod_log(pod.metadata.name, FLOW_NAMESPACE)

    # The flow pod and the batch pods it launched ran on the same cluster's node.
    started = processes(stack)
    assert [p["pod"] for p in started if p["namespace"] == FLOW_NAMESPACE].count(pod.metadata.name) == 1
    batch_pods = [p for p in started if p["namespace"] == "default" and p["pod"].startswith("askb-k8s-ok-")]
    assert sorted(p["index"] for p in batch_pods) == ["0", "1"], batch_pods

    # Prefect has what the pod reported: every stage, the run's log lines, the summary; outputs where it says.
    states = {tr["name"].rsplit("-", 1)[0]: tr["state_type"] for tr in task_runs(stack, run_id)}
    assert all(states.get(stage) == "COMPLETED" for stage in STAGES), states
    logs = run_logs(stack, run_id)
    assert any("run key k8s-ok" in m for m in logs) and any("set_working_directory" in m for m in logs), logs[:20]
    summary = next(a for a in artifacts(stack, run_id) if (a["key"] or "") == "summary-k8s-ok")
    name = run["name"]
    assert f"downloaded to `outputs/{name}`" in summary["data"], summary["data"]
    assert any(p.is_file() for p in (stack.root / "outputs" / name).rglob("*"))
    assert left_in_cluster(stack, "k8s-ok") == {}


def test_cancelled_flow_pod_ends_cancelled_and_is_torn_down(stack: Stack, k8s_worker: subprocess.Popen) -> None:
    run_id = start_waiting_run(stack, "k8s-cancel")
    stack.prefect("flow-run", "cancel", run_id)
    run = poll(lambda: flow_run(stack, run_id), lambda r: r["state_type"] in TERMINAL, timeout=240,
               what="the cancelled run's state")
    assert run["state_type"] == "CANCELLED", run["state"]
    poll(lambda: left_in_cluster(stack, "k8s-cancel"), lambda left: left == {}, timeout=120,
         what="the cancelled run's objects in the cluster")
    # Torn down by the flow's own `finally` (the runner in the pod, `prefect flow-run execute`, SIGTERMs its
    # engine process when the run is Cancelling), or by the `on_cancellation` sweep that runner runs afterwards.
    logs = run_logs(stack, run_id)
    assert any(m.startswith("teardown: deleted Job askb-k8s-cancel-")
               or m.startswith("ask-batch sweep (cancelling) k8s-cancel: deleted: Job") for m in logs), logs


def kill_container(pid: int) -> None:
    """SIGKILL a container's processes, as the OOM killer or a node failure ends a container's cgroup: the main
    process and every descendant (``prefect flow-run execute`` runs the engine in a child of its own session)."""
    def tree(root: int) -> list[int]:
        children: list[int] = []
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{root}/task"):
                with open(f"/proc/{root}/task/{task}/children") as f:
                    children += [int(c) for c in f.read().split()]
        return [root] + [p for child in children for p in tree(child)]

    for member in tree(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)


def test_killed_flow_pod_ends_crashed_and_the_automation_sweeps_it(stack: Stack,
                                                                   k8s_worker: subprocess.Popen) -> None:
    """Nothing runs ``on_crashed`` for a flow pod; the ``sweep-k8s`` deployment's trigger does the teardown."""
    run_id = start_waiting_run(stack, "k8s-crash")
    job = flow_job(stack, run_id)
    (entry,) = [p for p in processes(stack) if p["namespace"] == FLOW_NAMESPACE
                and p["pod"].startswith(f"{job.metadata.name}-")]
    kill_container(entry["pid"])
    run = poll(lambda: flow_run(stack, run_id), lambda r: r["state_type"] in TERMINAL, timeout=180,
               what="the killed run's state")
    assert run["state_type"] == "CRASHED", run["state"]

    def sweeps() -> list[dict[str, Any]]:
        runs = api(stack, "/flow_runs/filter", {"flows": {"name": {"any_": ["ask-batch-sweep"]}}})
        return [r for r in runs if r["parameters"].get("crashed_run") == f"prefect.flow-run.{run_id}"]

    done = poll(sweeps, lambda rs: any(r["state_type"] in TERMINAL for r in rs), timeout=300,
                what=f"the sweep run started by the automation for {run_id}")
    assert [r["state_type"] for r in done if r["state_type"] in TERMINAL][0] == "COMPLETED", done
    assert left_in_cluster(stack, "k8s-crash") == {}
    # The sweep pod sends its log lines in batches (Prefect's APILogHandler): the last batch may reach the API after
    # the sweep run is COMPLETED, so read until the closing line is there.
    poll(lambda: run_logs(stack, run_id),
         lambda logs: any(m.startswith("ask-batch sweep (crashed) k8s-crash: done (4 deleted") for m in logs),
         timeout=60, what="the sweep's closing line in the crashed run's log")


def test_kubernetes_worker_stops_on_one_sigterm(stack: Stack, k8s_worker: subprocess.Popen) -> None:
    """One SIGTERM stops the worker (Prefect forwards it as SIGINT to itself): what Kubernetes, systemd and
    ``make down`` send. Started with SIGINT ignored (``cmd &`` in a script) a single SIGTERM does nothing: see
    docs/deployments.md; the stack starts workers with SIGINT at its default."""
    proc = k8s_worker
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=60)
    assert proc.returncode == 0, f"the worker did not exit on SIGTERM (log {stack.log_file(K8S_WORKER)})"
    assert f"Worker '{K8S_WORKER}' stopped!" in stack.log_file(K8S_WORKER).read_text()
