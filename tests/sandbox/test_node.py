"""The sandbox's scheduler and virtual node, in process: pods really run as local processes.

Each test starts a KubeCluster with only the Scheduler and the VirtualNode (no HTTP client involved)
and creates objects directly in the store, then waits on the stored pod.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from sandbox.faults import Faults
from sandbox.k8s.cluster import KubeCluster, NodeConfig
from sandbox.k8s.node.kubelet import VirtualNode
from sandbox.k8s.node.scheduler import Scheduler
from sandbox.k8s.serviceaccounts import ServiceAccountController

Obj = dict[str, Any]


# ------------------------------------------------------------------ fixtures and helpers


async def start_cluster(data_dir: Path, monkeypatch: pytest.MonkeyPatch, **node: Any) -> KubeCluster:
    monkeypatch.setattr(KubeCluster, "_controller_classes", lambda self: [ServiceAccountController, Scheduler,
                                                                          VirtualNode])
    # backoff_scale 0.01: the kubelet's 10 s..5 min crash-loop and image-pull back-offs become 0.1 s..3 s
    config = NodeConfig(cpu=node.pop("cpu", "4"), memory=node.pop("memory", "8Gi"), pods=node.pop("pods", 50),
                        backoff_scale=node.pop("backoff_scale", 0.01))
    cluster = KubeCluster("node-test", data_dir, faults=Faults(seed=7), node=config)
    await cluster.start()
    timings = cluster.controller("VirtualNode").timings
    timings.backoff_initial_s = 0.2
    timings.err_image_pull_hold_s = 0.2
    timings.deps_fallback_s = 2.0
    return cluster


@pytest.fixture
async def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[KubeCluster]:
    c = await start_cluster(tmp_path / "data", monkeypatch)
    try:
        yield c
    finally:
        await c.stop()


def pod_manifest(name: str, command: list[str], **spec: Any) -> Obj:
    container: Obj = {"name": "main", "image": "busybox:1.36", "command": command}
    container.update(spec.pop("container", {}))
    annotations = spec.pop("annotations", None)
    meta: Obj = {"name": name, "namespace": "default"}
    if annotations:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": {"restartPolicy": "Never", "containers": [container], **spec}}


def create_pod(cluster: KubeCluster, name: str, command: list[str], **spec: Any) -> Obj:
    return cluster.store.create("pods", pod_manifest(name, command, **spec))


async def wait_pod(cluster: KubeCluster, name: str, predicate: Callable[[Obj], bool], timeout: float = 15.0,
                   namespace: str = "default") -> Obj:
    deadline = time.monotonic() + timeout
    pod: Obj | None = None
    while time.monotonic() < deadline:
        pod = cluster.store.peek("pods", namespace, name)
        if pod is not None and predicate(pod):
            return pod
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for pod {name}: {json.dumps((pod or {}).get('status'), indent=1)}")


def phase_is(*phases: str) -> Callable[[Obj], bool]:
    return lambda pod: (pod.get("status") or {}).get("phase") in phases


def waiting_reason(pod: Obj) -> str | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting:
            return waiting.get("reason")
    return None


def terminated(pod: Obj) -> Obj:
    return pod["status"]["containerStatuses"][0]["state"]["terminated"]


def condition(pod: Obj, type_: str) -> Obj | None:
    return next((c for c in (pod.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


def log_text(cluster: KubeCluster, pod: Obj, container: str = "main") -> str:
    path = cluster.data_dir / "pods" / pod["metadata"]["uid"] / "logs" / f"{container}.log"
    return path.read_text() if path.exists() else ""


def events_for(cluster: KubeCluster, name: str) -> dict[str, list[Obj]]:
    out: dict[str, list[Obj]] = {}
    for ev in cluster.store.iter_objects("events"):
        if ev["involvedObject"].get("name") == name:
            out.setdefault(ev["reason"], []).append(ev)
    return out


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# ------------------------------------------------------------------ running pods


async def test_pod_runs_logs_and_status(cluster: KubeCluster) -> None:
    create_pod(cluster, "hello", ["sh", "-c", "echo hello from $HOSTNAME; echo oops >&2"])
    pod = await wait_pod(cluster, "hello", phase_is("Succeeded", "Failed"))
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["spec"]["nodeName"] == cluster.node.name
    term = terminated(pod)
    assert term["exitCode"] == 0 and term["reason"] == "Completed"
    assert term["startedAt"] and term["finishedAt"] and term["containerID"].startswith("containerd://")
    assert pod["status"]["podIP"].startswith("10.") and pod["status"]["hostIP"] == "127.0.0.1"
    assert condition(pod, "Ready")["reason"] == "PodCompleted"
    assert condition(pod, "ContainerInstanceCreated")["status"] == "True"
    assert pod["metadata"]["annotations"]["k8s.aliyun.com/eci-instance-id"].startswith("eci-")
    assert log_text(cluster, pod) == "hello from hello\noops\n"
    reasons = events_for(cluster, "hello")
    assert {"Scheduled", "Pulled", "Created", "Started"} <= set(reasons)
    assert "does not pull images" in reasons["Pulled"][0]["message"]
    records = [json.loads(line) for line in (cluster.data_dir / "node" / "processes.jsonl").read_text().splitlines()]
    assert [(r["pod"], r["container"]) for r in records] == [("hello", "main")]
    node = cluster.store.get("nodes", None, cluster.node.name)
    assert node["metadata"]["labels"]["type"] == "virtual-kubelet"
    assert node["spec"]["taints"][0]["key"] == "virtual-kubelet.io/provider"
    assert node["status"]["allocatable"]["cpu"] == "4"


async def test_running_state_and_exit_code(cluster: KubeCluster) -> None:
    create_pod(cluster, "slow-fail", ["sh", "-c", "sleep 0.6; exit 3"])
    running = await wait_pod(cluster, "slow-fail", phase_is("Running"))
    cs = running["status"]["containerStatuses"][0]
    assert cs["ready"] and cs["started"] and "running" in cs["state"]
    assert condition(running, "Ready")["status"] == "True"
    pod = await wait_pod(cluster, "slow-fail", phase_is("Succeeded", "Failed"))
    assert pod["status"]["phase"] == "Failed"
    assert terminated(pod)["exitCode"] == 3 and terminated(pod)["reason"] == "Error"
    assert condition(pod, "Ready")["reason"] == "PodFailed"


async def test_env_from_configmap_secret_and_fields(cluster: KubeCluster) -> None:
    store = cluster.store
    store.create("configmaps", {"metadata": {"name": "cfg"}, "data": {"mode": "fast", "level": "3"}},
                 namespace="default")
    store.create("secrets", {"metadata": {"name": "creds"}, "data": {"token": b64("s3cr3t")}}, namespace="default")
    env = [
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "TEAM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['team']"}}},
        {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
        {"name": "COMBINED", "value": "$(POD)-$(MODE)-$$(KEPT)"},
    ]
    manifest = pod_manifest("envy", ["sh", "-c", "echo $MODE $TOKEN $POD $NS $TEAM $MEM $COMBINED $IP_PREFIX "
                                     "$KUBERNETES_SERVICE_HOST $CFG_level"],
                            container={"env": env, "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
                                       "resources": {"limits": {"memory": "64Mi"}}})
    manifest["metadata"]["labels"] = {"team": "blue"}
    store.create("pods", manifest)
    pod = await wait_pod(cluster, "envy", phase_is("Succeeded", "Failed"))
    assert pod["status"]["phase"] == "Succeeded", log_text(cluster, pod)
    assert log_text(cluster, pod).split() == ["fast", "s3cr3t", "envy", "default", "blue", "64", "envy-fast-$(KEPT)",
                                              "127.0.0.1", "3"]


async def test_volumes_visible_at_mount_paths_by_rewriting(cluster: KubeCluster, tmp_path: Path) -> None:
    store = cluster.store
    store.create("configmaps", {"metadata": {"name": "app"}, "data": {"settings.json": '{"a": 1}'}},
                 namespace="default")
    store.create("secrets", {"metadata": {"name": "creds"}, "data": {"token": b64("tok")}}, namespace="default")
    shared = tmp_path / "pv-data"
    store.create("persistentvolumes", {"metadata": {"name": "pv1"}, "spec": {
        "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "hostPath": {"path": str(shared)},
        "storageClassName": ""}})
    store.create("persistentvolumeclaims", {"metadata": {"name": "work"}, "spec": {
        "accessModes": ["ReadWriteMany"], "storageClassName": "", "volumeName": "pv1",
        "resources": {"requests": {"storage": "1Gi"}}}}, namespace="default")
    store.mutate("persistentvolumeclaims", "default", "work",
                 lambda o: o.__setitem__("status", {"phase": "Bound"}), subresource="status")
    script = ("cat /etc/cfg/settings.json; echo; cat /etc/secret/token; echo; "
              "echo written > /data/out/result.txt; echo $OUT; pwd")
    create_pod(cluster, "mounts", ["sh", "-c", script],
               container={"env": [{"name": "OUT", "value": "/data/out/result.txt"}],
                          "workingDir": "/data",
                          "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"},
                                           {"name": "sec", "mountPath": "/etc/secret", "readOnly": True},
                                           {"name": "work", "mountPath": "/data"},
                                           {"name": "work", "mountPath": "/data/out", "subPath": "run-1"}]},
               volumes=[{"name": "cfg", "configMap": {"name": "app"}},
                        {"name": "sec", "secret": {"secretName": "creds"}},
                        {"name": "work", "persistentVolumeClaim": {"claimName": "work"}}])
    pod = await wait_pod(cluster, "mounts", phase_is("Succeeded", "Failed"))
    lines = log_text(cluster, pod).splitlines()
    assert pod["status"]["phase"] == "Succeeded", lines
    assert lines == ['{"a": 1}', "tok", str(shared / "run-1" / "result.txt"), str(shared)]
    assert (shared / "run-1" / "result.txt").read_text() == "written\n"
    assert not (cluster.data_dir / "pods" / pod["metadata"]["uid"] / "volumes").exists()  # cleaned at the end


async def test_pvc_not_bound_waits_with_failed_mount(cluster: KubeCluster, tmp_path: Path) -> None:
    store = cluster.store
    create_pod(cluster, "waits-pvc", ["sh", "-c", "ls /data"],
               container={"volumeMounts": [{"name": "d", "mountPath": "/data"}]},
               volumes=[{"name": "d", "persistentVolumeClaim": {"claimName": "late"}}])
    await asyncio.sleep(0.5)
    pod = store.peek("pods", "default", "waits-pvc")
    assert pod["status"]["phase"] == "Pending" and waiting_reason(pod) == "ContainerCreating"
    assert "FailedMount" in events_for(cluster, "waits-pvc")
    store.create("persistentvolumes", {"metadata": {"name": "pv-late"}, "spec": {
        "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": str(tmp_path / "l")},
        "storageClassName": ""}})
    store.create("persistentvolumeclaims", {"metadata": {"name": "late"}, "spec": {
        "accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": "pv-late",
        "resources": {"requests": {"storage": "1Gi"}}}}, namespace="default")
    store.mutate("persistentvolumeclaims", "default", "late",
                 lambda o: o.__setitem__("status", {"phase": "Bound"}), subresource="status")
    pod = await wait_pod(cluster, "waits-pvc", phase_is("Succeeded", "Failed"), timeout=5)
    assert pod["status"]["phase"] == "Succeeded"


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to an unprivileged user needs root")
async def test_workload_runs_as_unprivileged_user(monkeypatch: pytest.MonkeyPatch) -> None:
    base = Path(tempfile.mkdtemp(prefix="node-nobody-"))
    os.chmod(base, 0o755)
    try:
        (base / "data" / "pods").mkdir(parents=True)
        for path in (base / "data", base / "data" / "pods"):
            os.chmod(path, 0o755)
        c = await start_cluster(base / "data", monkeypatch)
        shared = base / "shared"
        shared.mkdir(mode=0o777)
        os.chmod(shared, 0o777)
        try:
            c.store.create("configmaps", {"metadata": {"name": "app"}, "data": {"k": "v"}}, namespace="default")
            create_pod(c, "nobody", ["sh", "-c", "id -u; cat /etc/cfg/k; echo; echo hi > /out/f; cat /out/f; "
                                     "touch scratch && echo cwd-writable"],
                       securityContext={"runAsUser": 65534, "runAsGroup": 65534},
                       container={"volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"},
                                                   {"name": "out", "mountPath": "/out"}]},
                       volumes=[{"name": "cfg", "configMap": {"name": "app"}},
                                {"name": "out", "hostPath": {"path": str(shared)}}])
            pod = await wait_pod(c, "nobody", phase_is("Succeeded", "Failed"))
            assert log_text(c, pod).split() == ["65534", "v", "hi", "cwd-writable"]
            assert pod["status"]["phase"] == "Succeeded"
            assert (shared / "f").stat().st_uid == 65534
        finally:
            await c.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ------------------------------------------------------------------ failures and retries


async def test_missing_secret_key_then_recovers(cluster: KubeCluster) -> None:
    store = cluster.store
    create_pod(cluster, "needs-creds", ["sh", "-c", "echo token=$TOKEN"],
               container={"env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}]})
    pod = await wait_pod(cluster, "needs-creds", lambda p: waiting_reason(p) == "CreateContainerConfigError")
    assert pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"] == 'secret "creds" not found'
    store.create("secrets", {"metadata": {"name": "creds"}, "data": {"other": b64("x")}}, namespace="default")
    pod = await wait_pod(cluster, "needs-creds", lambda p: "couldn't find key" in json.dumps(p["status"]))
    assert (pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
            == "couldn't find key token in Secret default/creds")
    assert pod["status"]["phase"] == "Pending"
    assert any(e["type"] == "Warning" for e in events_for(cluster, "needs-creds")["Failed"])
    store.mutate("secrets", "default", "creds", lambda s: s["data"].__setitem__("token", b64("abc")))
    pod = await wait_pod(cluster, "needs-creds", phase_is("Succeeded", "Failed"), timeout=5)
    assert log_text(cluster, pod) == "token=abc\n"


async def test_bad_image_backs_off_and_delete_removes_at_once(cluster: KubeCluster) -> None:
    create_pod(cluster, "bad-image", ["true"], container={"image": "unreachable.invalid/nope:1"})
    await wait_pod(cluster, "bad-image", lambda p: waiting_reason(p) == "ErrImagePull")
    pod = await wait_pod(cluster, "bad-image", lambda p: waiting_reason(p) == "ImagePullBackOff")
    assert pod["status"]["phase"] == "Pending"
    reasons = events_for(cluster, "bad-image")
    assert "Failed to pull image" in reasons["Failed"][0]["message"] and "BackOff" in reasons
    cluster.store.delete("pods", "default", "bad-image")
    await wait_pod_gone(cluster, "bad-image", timeout=2)


async def test_invalid_image_name_and_missing_image_knob(cluster: KubeCluster) -> None:
    create_pod(cluster, "upper", ["true"], container={"image": "Busybox:1.36"})
    pod = await wait_pod(cluster, "upper", lambda p: waiting_reason(p) == "InvalidImageName")
    waiting = pod["status"]["containerStatuses"][0]["state"]["waiting"]
    assert waiting["message"] == ('Failed to apply default image tag "Busybox:1.36": couldn\'t parse image name '
                                  '"Busybox:1.36": invalid reference format: repository name (library/Busybox) '
                                  "must be lowercase")
    assert events_for(cluster, "upper")["InspectFailed"][0]["type"] == "Warning"
    cluster.faults.update({"missing_images": "registry.example.com/team/gone:*,nosuch:1"})
    try:
        create_pod(cluster, "gone", ["true"], container={"image": "nosuch:1"})
        pod = await wait_pod(cluster, "gone", lambda p: waiting_reason(p) == "ImagePullBackOff")
        waiting = pod["status"]["containerStatuses"][0]["state"]["waiting"]
        assert waiting["message"] == (
            'Back-off pulling image "nosuch:1": ErrImagePull: rpc error: code = NotFound desc = failed to pull and '
            'unpack image "docker.io/library/nosuch:1": failed to resolve reference "docker.io/library/nosuch:1": '
            "docker.io/library/nosuch:1: not found")
        messages = [e["message"] for e in events_for(cluster, "gone")["Failed"]]
        assert "Error: ErrImagePull" in messages and "Error: ImagePullBackOff" in messages
        cluster.faults.update({"missing_images": ""})  # the image appears in the registry: the next try runs it
        pod = await wait_pod(cluster, "gone", phase_is("Succeeded"), timeout=10)
    finally:
        cluster.faults.update({"missing_images": []})
    for name in ("upper", "gone"):
        cluster.store.delete("pods", "default", name)


async def wait_pod_gone(cluster: KubeCluster, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while cluster.store.peek("pods", "default", name) is not None:
        assert time.monotonic() < deadline, f"pod {name} still there"
        await asyncio.sleep(0.05)


async def test_memory_limit_oomkills(cluster: KubeCluster) -> None:
    create_pod(cluster, "hog", [sys.executable, "-c", "import time; b = b'x' * (300 << 20); time.sleep(10)"],
               container={"resources": {"limits": {"memory": "100Mi"}}})
    pod = await wait_pod(cluster, "hog", phase_is("Succeeded", "Failed"), timeout=10)
    assert terminated(pod)["reason"] == "OOMKilled" and terminated(pod)["exitCode"] == 137


async def test_restart_on_failure_in_place(cluster: KubeCluster, tmp_path: Path) -> None:
    marker = tmp_path / "tried"
    create_pod(cluster, "flaky", ["sh", "-c", f"if [ -e {marker} ]; then echo second; else touch {marker}; "
                                              "echo first; exit 1; fi"], restartPolicy="OnFailure")
    pod = await wait_pod(cluster, "flaky", phase_is("Succeeded", "Failed"))
    cs = pod["status"]["containerStatuses"][0]
    assert pod["status"]["phase"] == "Succeeded" and cs["restartCount"] == 1
    assert cs["lastState"]["terminated"]["exitCode"] == 1
    assert log_text(cluster, pod) == "second\n"  # a restarted container's log holds only its attempt
    assert log_text(cluster, pod, "main.previous") == "first\n"


async def test_crash_loop_backs_off_as_the_kubelet_does(cluster: KubeCluster) -> None:
    """First restart at once, then CrashLoopBackOff with 10 s doubling (x backoff_scale 0.01: 0.1 s, 0.2 s...)."""
    create_pod(cluster, "crashy", ["sh", "-c", "echo attempt; exit 2"], restartPolicy="Always")
    pod = await wait_pod(cluster, "crashy", lambda p: waiting_reason(p) == "CrashLoopBackOff", timeout=10)
    cs = pod["status"]["containerStatuses"][0]
    assert cs["restartCount"] >= 1 and cs["lastState"]["terminated"]["exitCode"] == 2
    uid = pod["metadata"]["uid"]
    assert cs["state"]["waiting"]["message"].startswith("back-off ") and cs["state"]["waiting"]["message"].endswith(
        f"restarting failed container=main pod=crashy_default({uid})")
    pod = await wait_pod(cluster, "crashy", lambda p: p["status"]["containerStatuses"][0]["restartCount"] >= 4,
                         timeout=10)
    starts = [r["started"] for r in map(json.loads, (cluster.data_dir / "node" / "processes.jsonl").read_text()
                                        .splitlines()) if r["pod"] == "crashy"]
    assert len(starts) >= 5
    assert "BackOff" in events_for(cluster, "crashy")
    assert log_text(cluster, pod) in ("", "attempt\n") and log_text(cluster, pod, "main.previous") == "attempt\n"
    cluster.store.delete("pods", "default", "crashy", grace_period_seconds=0)


def test_backoff_duration_prints_like_go() -> None:
    from sandbox.k8s.node.kubelet import _duration

    assert [_duration(s) for s in (10, 20, 160, 300, 0.1, 1.5)] == ["10s", "20s", "2m40s", "5m0s", "100ms", "1.5s"]


async def test_no_command_fails_clearly(cluster: KubeCluster) -> None:
    manifest = pod_manifest("entrypoint", [])
    del manifest["spec"]["containers"][0]["command"]
    cluster.store.create("pods", manifest)
    pod = await wait_pod(cluster, "entrypoint", phase_is("Succeeded", "Failed"))
    assert pod["status"]["phase"] == "Failed" and "entrypoint" in pod["status"]["message"]


# ------------------------------------------------------------------ scheduling


async def test_unschedulable_until_capacity_frees(cluster: KubeCluster) -> None:
    big = {"resources": {"requests": {"cpu": "3", "memory": "1Gi"}}}
    create_pod(cluster, "big-a", ["sleep", "30"], container=big, terminationGracePeriodSeconds=1)
    await wait_pod(cluster, "big-a", phase_is("Running"))
    create_pod(cluster, "big-b", ["true"], container={"resources": {"limits": {"cpu": "2", "memory": "1Gi"}}})
    pod = await wait_pod(cluster, "big-b", lambda p: (condition(p, "PodScheduled") or {}).get("status") == "False")
    cond = condition(pod, "PodScheduled")
    assert cond["reason"] == "Unschedulable" and cond["message"] == "0/1 nodes are available: 1 Insufficient cpu."
    assert "nodeName" not in pod["spec"]
    assert events_for(cluster, "big-b")["FailedScheduling"][0]["type"] == "Warning"
    cluster.store.delete("pods", "default", "big-a")
    pod = await wait_pod(cluster, "big-b", phase_is("Succeeded"), timeout=8)
    assert condition(pod, "PodScheduled")["status"] == "True"


async def test_node_selector_mismatch_stays_pending(cluster: KubeCluster) -> None:
    create_pod(cluster, "elsewhere", ["true"], nodeSelector={"type": "ecs"})
    pod = await wait_pod(cluster, "elsewhere", lambda p: condition(p, "PodScheduled") is not None)
    assert "didn't match Pod's node affinity/selector" in condition(pod, "PodScheduled")["message"]


async def test_graceful_delete_runs_term_trap(cluster: KubeCluster, tmp_path: Path) -> None:
    mark = tmp_path / "mark"
    script = 'trap "echo got-term > $MARK; exit 0" TERM; echo ready; while :; do sleep 0.1; done'
    create_pod(cluster, "trapper", ["sh", "-c", script], container={"env": [{"name": "MARK", "value": str(mark)}]})
    pod = await wait_pod(cluster, "trapper", lambda p: phase_is("Running")(p) and "ready" in log_text(cluster, p))
    watcher = cluster.store.watch("pods", field_selector="metadata.name=trapper",
                                  resource_version=str(cluster.store.rv))
    cluster.store.delete("pods", "default", "trapper", grace_period_seconds=5)
    final = None
    async for event in watcher:
        if event.type == "DELETED":
            final = event.obj
            break
    watcher.close()
    assert mark.read_text() == "got-term\n"
    assert terminated(final)["exitCode"] == 0
    assert not (cluster.data_dir / "pods" / pod["metadata"]["uid"]).exists()


async def test_pod_active_deadline(cluster: KubeCluster) -> None:
    create_pod(cluster, "slowpoke", ["sleep", "30"], activeDeadlineSeconds=1, terminationGracePeriodSeconds=1)
    pod = await wait_pod(cluster, "slowpoke", phase_is("Failed"), timeout=6)
    assert pod["status"]["reason"] == "DeadlineExceeded"


# ------------------------------------------------------------------ ECI faults


async def test_eci_nostock_keeps_pending_then_recovers(cluster: KubeCluster) -> None:
    cluster.faults.update({"eci_create_fail_rate": 1.0, "eci_create_fail_reason": "NoStock"})
    create_pod(cluster, "nostock", ["true"])
    pod = await wait_pod(cluster, "nostock", lambda p: (condition(p, "ContainerInstanceCreated") or {}).get("status")
                         == "False")
    cond = condition(pod, "ContainerInstanceCreated")
    assert cond["reason"] == "NoStock" and "out of stock" in cond["message"]
    assert pod["status"]["phase"] == "Pending"
    assert events_for(cluster, "nostock")["NoStock"][0]["type"] == "Warning"
    cluster.faults.update({"eci_create_fail_rate": 0.0})
    pod = await wait_pod(cluster, "nostock", phase_is("Succeeded"), timeout=5)
    assert condition(pod, "ContainerInstanceCreated")["status"] == "True"


async def test_eci_provider_failed_fails_fast(cluster: KubeCluster) -> None:
    cluster.faults.update({"eci_create_fail_rate": 1.0, "eci_create_fail_reason": "ProviderFailed"})
    create_pod(cluster, "provider", ["true"])
    pod = await wait_pod(cluster, "provider", phase_is("Failed"))
    assert pod["status"]["reason"] == "ProviderFailed"
    assert condition(pod, "ContainerInstanceCreated")["reason"] == "ProviderFailed"


async def test_spot_pod_is_reclaimed_bidfailed(cluster: KubeCluster) -> None:
    cluster.faults.update({"spot_reclaim_after_s": 0.5})
    create_pod(cluster, "spot", ["sleep", "30"], annotations={"k8s.aliyun.com/eci-spot-strategy": "SpotAsPriceGo"})
    create_pod(cluster, "on-demand", ["sleep", "1.5"])
    pod = await wait_pod(cluster, "spot", phase_is("Failed", "Succeeded"), timeout=6)
    assert pod["status"]["phase"] == "Failed" and pod["status"]["reason"] == "BidFailed"
    assert condition(pod, "DisruptionTarget")["status"] == "True"
    assert terminated(pod)["exitCode"] == 137
    assert events_for(cluster, "spot")["SpotToBeReleased"][0]["type"] == "Warning"
    other = await wait_pod(cluster, "on-demand", phase_is("Failed", "Succeeded"), timeout=6)
    assert other["status"]["phase"] == "Succeeded"


# ------------------------------------------------------------------ restart and scale


async def test_sandbox_restart_fails_running_pods(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = await start_cluster(tmp_path / "data", monkeypatch)
    create_pod(c, "long", ["sleep", "30"])
    await wait_pod(c, "long", phase_is("Running"))
    await c.stop()
    c2 = await start_cluster(tmp_path / "data", monkeypatch)
    try:
        pod = await wait_pod(c2, "long", phase_is("Failed"))
        term = terminated(pod)
        assert term["exitCode"] == 137 and term["message"] == "the sandbox restarted while the container ran"
    finally:
        await c2.stop()


async def test_many_short_pods(cluster: KubeCluster) -> None:
    n = 120
    started = time.monotonic()
    for i in range(n):
        manifest = pod_manifest(f"many-{i}", ["true"], annotations={"batch.kubernetes.io/job-completion-index": str(i)})
        cluster.store.create("pods", manifest)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = sum(1 for p in cluster.store.iter_objects("pods", "default")
                   if (p.get("status") or {}).get("phase") == "Succeeded")
        if done == n:
            break
        await asyncio.sleep(0.1)
    elapsed = time.monotonic() - started
    assert done == n, f"{done}/{n} succeeded"
    records = [json.loads(line) for line in (cluster.data_dir / "node" / "processes.jsonl").read_text().splitlines()]
    assert sorted(int(r["index"]) for r in records) == list(range(n))
    print(f"{n} pods of `true` in {elapsed:.2f}s")


async def test_init_containers_then_parallel_containers_share_empty_dir(cluster: KubeCluster) -> None:
    mount = [{"name": "shared", "mountPath": "/work"}]
    manifest = pod_manifest("multi", ["sh", "-c", "cat /work/seed; sleep 0.2"], container={"volumeMounts": mount},
                            volumes=[{"name": "shared", "emptyDir": {}}])
    manifest["spec"]["initContainers"] = [{"name": "seed", "image": "busybox", "volumeMounts": mount,
                                           "command": ["sh", "-c", "echo seeded > /work/seed"]}]
    manifest["spec"]["containers"].append({"name": "side", "image": "busybox", "volumeMounts": mount,
                                           "command": ["sh", "-c", "cat /work/seed"]})
    cluster.store.create("pods", manifest)
    pod = await wait_pod(cluster, "multi", phase_is("Succeeded", "Failed"))
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["status"]["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    assert [cs["name"] for cs in pod["status"]["containerStatuses"]] == ["main", "side"]
    assert log_text(cluster, pod) == "seeded\n" and log_text(cluster, pod, "side") == "seeded\n"
