"""Issue 2's "Done when", end to end: `python -m sandbox serve` in a subprocess, driven only from outside.

Everything here goes through what a user has: DIR/kubeconfig (https + CA + token), DIR/endpoints.json (the
control endpoint for fault knobs), kubectl 1.32 and 1.37, and the unmodified `kubernetes` and
`kubernetes_asyncio` clients configured from that kubeconfig. Pods are real local processes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from served import Served, start_served, stop_served, wait_for

for _var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_var, None)

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    running = start_served(tmp_path_factory.mktemp("served") / "sandbox")
    try:
        yield running
    finally:
        stop_served(running)


@pytest.fixture(scope="module")
def api(served: Served) -> Iterator[client.ApiClient]:
    with config.new_client_from_config(config_file=str(served.kubeconfig)) as api_client:
        yield api_client


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def batch(api: client.ApiClient) -> client.BatchV1Api:
    return client.BatchV1Api(api)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def shell_job(name: str, script: str, **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "busybox:1.36", "command": ["sh", "-c", script]}
    container.update(spec.pop("container", {}))
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [container]}}, **spec}}


def shell_pod(name: str, command: list[str], **container: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"test": name}},
            "spec": {"restartPolicy": "Never",
                     "containers": [{"name": "main", "image": "busybox:1.36", "command": command, **container}]}}


def job_condition(job: client.V1Job, kind: str) -> client.V1JobCondition | None:
    for cond in (job.status.conditions or []) if job.status else []:
        if cond.type == kind and cond.status == "True":
            return cond
    return None


# ------------------------------------------------------------------ kubectl


def _kubectl_binaries() -> list[str]:
    found: list[str] = []
    for candidate in ("/usr/bin/kubectl", str(REPO / ".venv" / "bin" / "kubectl"), shutil.which("kubectl")):
        if candidate and Path(candidate).exists() and os.path.realpath(candidate) not in map(os.path.realpath, found):
            found.append(candidate)
    return found


@pytest.mark.parametrize("binary", _kubectl_binaries() or [None])
def test_kubectl_indexed_job_with_configmap_secret_and_pvc(
    binary: str | None, served: Served, core: client.CoreV1Api, tmp_path: Path
) -> None:
    if binary is None:
        pytest.skip("no kubectl binary")
    version = subprocess.run([binary, "version", "--client", "-o", "json"], capture_output=True, text=True)
    env = {**os.environ, "KUBECONFIG": str(served.kubeconfig), "HOME": str(tmp_path)}

    def kubectl(*args: str, timeout: float = 30) -> str:
        proc = subprocess.run([binary, *args], env=env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"kubectl {' '.join(args)} failed: {proc.stdout}{proc.stderr}"
        return proc.stdout

    ns, job = unique("acc"), "readers"
    pv_dir = tmp_path / "pv"
    pv_dir.mkdir()
    script = ('g=$(cat /etc/app/greeting); p=$(cat /etc/creds/password); '
              'echo "pod $JOB_COMPLETION_INDEX read: $g / $p"; '
              'echo "$g $p $JOB_COMPLETION_INDEX" > /out/result-$JOB_COMPLETION_INDEX.txt')
    manifests = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app", "namespace": ns},
         "data": {"greeting": "hello"}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": ns},
         "stringData": {"password": "s3cret"}},
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{ns}-pv"},
         "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": ns,
                  "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(pv_dir)}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "out", "namespace": ns},
         "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": ns,
                  "resources": {"requests": {"storage": "1Gi"}}}},
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": job, "namespace": ns},
         "spec": {"completionMode": "Indexed", "completions": 5, "parallelism": 2, "backoffLimit": 0,
                  "template": {"spec": {
                      "restartPolicy": "Never",
                      "containers": [{"name": "work", "image": "busybox:1.36", "command": ["sh", "-c", script],
                                      "volumeMounts": [{"name": "app", "mountPath": "/etc/app"},
                                                       {"name": "creds", "mountPath": "/etc/creds"},
                                                       {"name": "out", "mountPath": "/out"}]}],
                      "volumes": [{"name": "app", "configMap": {"name": "app"}},
                                  {"name": "creds", "secret": {"secretName": "creds"}},
                                  {"name": "out", "persistentVolumeClaim": {"claimName": "out"}}]}}}},
    ]
    manifest = tmp_path / "all.yaml"
    manifest.write_text(yaml.safe_dump_all(manifests))
    applied = kubectl("apply", "-f", str(manifest))
    for line in (f"namespace/{ns} created", "configmap/app created", "secret/creds created",
                 f"persistentvolume/{ns}-pv created", "persistentvolumeclaim/out created", f"job.batch/{job} created"):
        assert line in applied, (version.stdout, applied)

    assert "condition met" in kubectl("-n", ns, "wait", "--for=condition=complete", f"job/{job}", "--timeout=60s",
                                      timeout=70)
    names = kubectl("-n", ns, "get", "pods", "-l", f"job-name={job}", "-o", "jsonpath={.items[*].metadata.name}")
    pods = names.split()
    assert len(pods) == 5
    assert kubectl("-n", ns, "logs", pods[0]).startswith("pod ") and "read: hello / s3cret" in kubectl(
        "-n", ns, "logs", pods[0])
    table = kubectl("-n", ns, "get", "pods", "-l", f"job-name={job}").splitlines()
    assert table[0].split()[:3] == ["NAME", "READY", "STATUS"] and len(table) == 6
    assert all(row.split()[2] == "Completed" for row in table[1:]), table
    phases = kubectl("-n", ns, "get", "pods", "-l", f"job-name={job}", "-o", "jsonpath={.items[*].status.phase}")
    assert phases.split() == ["Succeeded"] * 5
    jobs_table = kubectl("-n", ns, "get", "job", job)
    assert "5/5" in jobs_table and "Complete" in jobs_table

    assert f'job.batch "{job}" deleted' in kubectl("-n", ns, "delete", "job", job)
    wait_for(lambda: not core.list_namespaced_pod(ns).items, 15, "the job's pods to be deleted")
    assert "No resources found" in subprocess.run([binary, "-n", ns, "get", "pods"], env=env, capture_output=True,
                                                  text=True).stderr
    files = sorted(p.name for p in pv_dir.iterdir())
    assert files == [f"result-{i}.txt" for i in range(5)]
    assert {(pv_dir / f).read_text() for f in files} == {f"hello s3cret {i}\n" for i in range(5)}
    kubectl("delete", "namespace", ns, "--wait=false")


# ------------------------------------------------------------------ failures as on a real cluster


def test_bad_image_goes_to_image_pull_backoff(core: client.CoreV1Api) -> None:
    name = unique("badimg")
    core.create_namespaced_pod("default", shell_pod(name, ["true"], image="unreachable.invalid/x:1"))

    def backoff() -> client.V1ContainerStateWaiting | None:
        pod = core.read_namespaced_pod(name, "default")
        statuses = pod.status.container_statuses or []
        waiting = statuses[0].state.waiting if statuses else None
        return waiting if waiting is not None and waiting.reason == "ImagePullBackOff" else None

    waiting = wait_for(backoff, 15, "ImagePullBackOff")
    assert "unreachable.invalid/x:1" in waiting.message
    pod = core.read_namespaced_pod(name, "default")
    assert pod.status.phase == "Pending"
    events = core.list_namespaced_event("default", field_selector=f"involvedObject.name={name}").items
    assert {"Failed", "BackOff"} <= {e.reason for e in events}
    core.delete_namespaced_pod(name, "default")


def test_requests_over_capacity_are_unschedulable(core: client.CoreV1Api) -> None:
    name = unique("huge")
    core.create_namespaced_pod("default", shell_pod(name, ["true"], resources={"requests": {"cpu": "10000"}}))

    def unschedulable() -> client.V1PodCondition | None:
        conditions = core.read_namespaced_pod(name, "default").status.conditions or []
        return next((c for c in conditions if c.type == "PodScheduled" and c.status == "False"
                     and c.reason == "Unschedulable"), None)

    condition = wait_for(unschedulable, 10, "PodScheduled=False/Unschedulable")
    assert "Insufficient cpu" in condition.message
    pod = core.read_namespaced_pod(name, "default")
    assert pod.status.phase == "Pending" and not pod.spec.node_name
    core.delete_namespaced_pod(name, "default")


def test_exit_code_fails_pod_and_job_after_backoff_limit(core: client.CoreV1Api, batch: client.BatchV1Api) -> None:
    name = unique("exit3")
    batch.create_namespaced_job("default", shell_job(name, "echo failing; exit 3", backoffLimit=1))
    job = wait_for(lambda: job_condition(batch.read_namespaced_job(name, "default"), "Failed")
                   and batch.read_namespaced_job(name, "default"), 30, "the job to fail")
    failed = job_condition(job, "Failed")
    assert failed is not None and failed.reason == "BackoffLimitExceeded"
    assert job.status.failed == 2 and not job.status.succeeded
    pods = core.list_namespaced_pod("default", label_selector=f"job-name={name}").items
    assert len(pods) == 2
    for pod in pods:
        terminated = pod.status.container_statuses[0].state.terminated
        assert pod.status.phase == "Failed" and terminated.exit_code == 3 and terminated.reason == "Error"
    batch.delete_namespaced_job(name, "default", propagation_policy="Background")


def test_active_deadline_fails_job_with_deadline_exceeded(core: client.CoreV1Api,
                                                          batch: client.BatchV1Api) -> None:
    name = unique("deadline")
    started = time.monotonic()
    batch.create_namespaced_job("default", shell_job(name, "sleep 60", activeDeadlineSeconds=2, parallelism=2,
                                                     completions=2))
    job = wait_for(lambda: job_condition(batch.read_namespaced_job(name, "default"), "Failed")
                   and batch.read_namespaced_job(name, "default"), 20, "the deadline to fail the job")
    # startTime has a resolution of one second, so (as on a real cluster) the deadline may come up to 1 s early
    assert 1 <= time.monotonic() - started < 20
    assert job_condition(job, "Failed").reason == "DeadlineExceeded"
    wait_for(lambda: all(p.status.phase == "Failed" for p in core.list_namespaced_pod(
        "default", label_selector=f"job-name={name}").items) or None, 15, "the job's pods to be terminated")
    batch.delete_namespaced_job(name, "default", propagation_policy="Background")


def test_memory_limit_oomkills(core: client.CoreV1Api) -> None:
    name = unique("hog")
    hog = "import time; b = b'x' * (400 << 20); time.sleep(20)"
    core.create_namespaced_pod("default", shell_pod(name, [sys.executable, "-c", hog],
                                                    resources={"limits": {"memory": "100Mi"}}))
    pod = wait_for(lambda: (p := core.read_namespaced_pod(name, "default")).status.phase in ("Failed", "Succeeded")
                   and p, 20, "the pod to end")
    terminated = pod.status.container_statuses[0].state.terminated
    assert pod.status.phase == "Failed" and terminated.reason == "OOMKilled" and terminated.exit_code == 137
    core.delete_namespaced_pod(name, "default")


# ------------------------------------------------------------------ official Python clients with real pods


def test_kubernetes_client_pods_selectors_watch_and_log_follow(core: client.CoreV1Api) -> None:
    ns = "default"
    run = unique("lines")
    start_rv = core.list_namespaced_pod(ns, label_selector=f"run={run}").metadata.resource_version
    script = "for i in 1 2 3 4 5; do echo line-$i; sleep 0.3; done"
    for name, team in ((f"{run}-a", "a"), (f"{run}-b", "b")):
        pod = shell_pod(name, ["sh", "-c", script])
        pod["metadata"]["labels"] = {"run": run, "team": team}
        core.create_namespaced_pod(ns, pod)
    assert [p.metadata.name for p in core.list_namespaced_pod(ns, label_selector=f"run={run},team in (a)").items] \
        == [f"{run}-a"]
    assert [p.metadata.name for p in core.list_namespaced_pod(
        ns, label_selector=f"run={run},team!=a", field_selector=f"metadata.name={run}-b").items] == [f"{run}-b"]

    wait_for(lambda: core.read_namespaced_pod(f"{run}-a", ns).status.phase == "Running", 10, "the pod to run")
    response = core.read_namespaced_pod_log(f"{run}-a", ns, follow=True, _preload_content=False)
    arrivals: list[tuple[float, str]] = []
    try:
        buffer = b""
        for chunk in response.stream(64):
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                arrivals.append((time.monotonic(), line.decode()))
    finally:
        response.release_conn()
    assert [line for _, line in arrivals] == [f"line-{i}" for i in range(1, 6)]
    assert arrivals[-1][0] - arrivals[0][0] > 0.6, "lines arrived at once, not while the pod ran"

    wait_for(lambda: core.read_namespaced_pod(f"{run}-b", ns).status.phase == "Succeeded", 10, "pod b to end")
    core.delete_namespaced_pod(f"{run}-b", ns)
    events: list[tuple[str, str | None]] = []
    for event in watch.Watch().stream(core.list_namespaced_pod, ns, label_selector=f"run={run},team=b",
                                      resource_version=start_rv, timeout_seconds=3):
        events.append((event["type"], event["object"].status.phase))
        if event["type"] == "DELETED":
            break
    types = [t for t, _ in events]
    assert types[0] == "ADDED" and types[-1] == "DELETED" and set(types[1:-1]) == {"MODIFIED"}, events
    phases = [phase for _, phase in events]
    assert phases.index("Running") < phases.index("Succeeded")
    core.delete_namespaced_pod(f"{run}-a", ns)


async def test_kubernetes_asyncio_pods_selectors_watch_and_log_follow(served: Served) -> None:
    from kubernetes_asyncio import client as aclient
    from kubernetes_asyncio import config as aconfig
    from kubernetes_asyncio import watch as awatch

    async with await aconfig.new_client_from_config(config_file=str(served.kubeconfig)) as api:
        core = aclient.CoreV1Api(api)
        ns, name = "default", unique("async")
        start_rv = (await core.list_namespaced_pod(ns)).metadata.resource_version
        pod = shell_pod(name, ["sh", "-c", "for i in 1 2 3 4; do echo tick-$i; sleep 0.3; done"])
        await core.create_namespaced_pod(ns, pod)
        listed = await core.list_namespaced_pod(ns, label_selector=f"test={name}")
        assert [p.metadata.name for p in listed.items] == [name]
        assert not (await core.list_namespaced_pod(ns, label_selector=f"test={name},test notin ({name})")).items

        for _ in range(100):
            if (await core.read_namespaced_pod(name, ns)).status.phase == "Running":
                break
            await asyncio.sleep(0.05)
        response = await core.read_namespaced_pod_log(name, ns, follow=True, _preload_content=False)
        arrivals = []
        async for raw in response.content:
            arrivals.append((time.monotonic(), raw.decode().rstrip("\n")))
        response.release()
        assert [line for _, line in arrivals] == [f"tick-{i}" for i in range(1, 5)]
        assert arrivals[-1][0] - arrivals[0][0] > 0.5

        await core.delete_namespaced_pod(name, ns)
        seen = []
        async with awatch.Watch().stream(core.list_namespaced_pod, ns, field_selector=f"metadata.name={name}",
                                         resource_version=start_rv, timeout_seconds=5) as stream:
            async for event in stream:
                seen.append(event["type"])
                if event["type"] == "DELETED":
                    break
        assert seen[0] == "ADDED" and seen[-1] == "DELETED" and set(seen[1:-1]) == {"MODIFIED"}, seen


# ------------------------------------------------------------------ robustness under faults


@dataclass
class Informer:
    """What a controller does: list, then watch from the list's resourceVersion; re-watch after a dropped
    stream or an error, re-list after 410 Gone. Keeps name -> object."""

    list_fn: Callable[..., Any]
    namespace: str
    items: dict[str, Any] = field(default_factory=dict)
    relists: int = 0
    rewatches: int = 0
    errors: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                listed = self.list_fn(self.namespace, _request_timeout=10)
            except ApiException:
                self.errors += 1
                continue
            self.relists += 1
            self.items = {obj.metadata.name: obj for obj in listed.items}
            rv = listed.metadata.resource_version
            while not self.stop.is_set():
                try:
                    for event in watch.Watch().stream(self.list_fn, self.namespace, resource_version=rv,
                                                      allow_watch_bookmarks=True, timeout_seconds=5):
                        obj = event["object"]
                        rv = obj.metadata.resource_version
                        if event["type"] == "DELETED":
                            self.items.pop(obj.metadata.name, None)
                        elif event["type"] in ("ADDED", "MODIFIED"):
                            self.items[obj.metadata.name] = obj
                        if self.stop.is_set():
                            return
                    self.rewatches += 1
                except ApiException as exc:
                    self.errors += 1
                    if exc.status == 410:
                        break  # too old: re-list
                except Exception:  # a connection cut mid-stream
                    self.errors += 1
                    self.rewatches += 1


def retrying(fn: Callable[[], T], *, ok_statuses: tuple[int, ...] = ()) -> T | None:
    """Call `fn` until it succeeds; injected 5xx/429 are retried, `ok_statuses` mean it already happened."""
    for _ in range(50):
        try:
            return fn()
        except ApiException as exc:
            if exc.status in ok_statuses:
                return None
            if exc.status not in (429, 500, 503):
                raise
    raise AssertionError("50 injected errors in a row")


def test_informers_see_final_state_under_injected_faults(served: Served, core: client.CoreV1Api,
                                                         batch: client.BatchV1Api) -> None:
    ns = unique("faulty")
    core.create_namespace({"metadata": {"name": ns}})
    informers = [Informer(core.list_namespaced_config_map, ns), Informer(batch.list_namespaced_job, ns),
                 Informer(core.list_namespaced_pod, ns)]
    threads = [threading.Thread(target=i.run, daemon=True) for i in informers]
    served.control("PUT", "/faults", {"error_rate": 0.1, "watch_drop_after_s": 1})
    try:
        assert served.control("GET", "/faults")["error_rate"] == 0.1
        for thread in threads:
            thread.start()
        injected = 0
        for i in range(50):
            retrying(lambda i=i: core.create_namespaced_config_map(ns, {"metadata": {"name": f"cm-{i}"},
                                                                        "data": {"v": "0"}}), ok_statuses=(409,))
        for i in range(0, 50, 2):
            retrying(lambda i=i: core.patch_namespaced_config_map(f"cm-{i}", ns, {"data": {"v": "1"}}))
        for i in range(0, 50, 5):
            retrying(lambda i=i: core.delete_namespaced_config_map(f"cm-{i}", ns), ok_statuses=(404,))
        retrying(lambda: batch.create_namespaced_job(ns, shell_job("work", "sleep 0.5; echo $JOB_COMPLETION_INDEX",
                                                                   completionMode="Indexed", completions=6,
                                                                   parallelism=3)), ok_statuses=(409,))
        expected = {f"cm-{i}": ("1" if i % 2 == 0 else "0") for i in range(50) if i % 5}

        def informers_caught_up() -> bool:
            cms = informers[0].items
            job = informers[1].items.get("work")
            ours = {n: o.data["v"] for n, o in cms.items() if n != "kube-root-ca.crt"}  # every namespace has it
            return (ours == expected and job is not None
                    and job_condition(job, "Complete") is not None
                    and sum(p.status.phase == "Succeeded" for p in informers[2].items.values()) == 6)

        wait_for(informers_caught_up, 40, "the informers to see the final state")
        # The watches are cut every second while the faults are on: wait until each kind of cut really happened.
        wait_for(lambda: sum(i.rewatches for i in informers) >= 3, 30, "the watches to be cut and resumed")
        injected = sum(i.errors for i in informers)
    finally:
        served.control("PUT", "/faults", {"error_rate": 0, "watch_drop_after_s": 0})
        for informer in informers:
            informer.stop.set()

    # the watches were really cut and errors really answered, yet nothing was missed
    assert sum(i.rewatches for i in informers) >= 3 and injected + sum(i.relists for i in informers) > 3
    for informer, list_fn in zip(informers, (core.list_namespaced_config_map, batch.list_namespaced_job,
                                             core.list_namespaced_pod), strict=True):
        truth = {o.metadata.name: o.metadata.resource_version for o in list_fn(ns).items}
        wait_for(lambda informer=informer, truth=truth: {n: o.metadata.resource_version
                                                         for n, o in informer.items.items()} == truth,
                 10, "the informer to equal a fault-free list")
    # the server's own state is whole: exactly the writes that succeeded, nothing duplicated or lost
    cms = core.list_namespaced_config_map(ns).items
    assert {c.metadata.name: c.data["v"] for c in cms if c.metadata.name.startswith("cm-")} == expected
    job = batch.read_namespaced_job("work", ns)
    assert job.status.succeeded == 6 and job.status.completed_indexes == "0-5" and not job.status.failed
    pods = core.list_namespaced_pod(ns).items
    assert sorted(p.metadata.annotations["batch.kubernetes.io/job-completion-index"] for p in pods) == \
        [str(i) for i in range(6)]
    versions = [int(c.metadata.resource_version) for c in cms]
    assert len(set(versions)) == len(versions)
    core.delete_namespace(ns)
