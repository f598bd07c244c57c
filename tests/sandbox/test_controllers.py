"""The sandbox's controllers (Job, garbage collector, namespace, PV binder), in process.

Each test runs a KubeCluster's store with only the controllers under test plus `FakeRunner`, a tiny
stand-in for the scheduler and virtual node: it binds every new pod and ends it at once (or holds it)
according to annotations on the pod template, so the tests depend on nothing but the store.

Runner annotations: `test/exit-code` (default 0), `test/fail-index` + `test/fail-code` (indexes that
always fail), `test/fail-first` (the first N pods of a Job fail), `test/condition` (a pod condition
added on failure, e.g. DisruptionTarget), `test/hold` (keep running until deleted).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from sandbox.k8s.cluster import KubeCluster
from sandbox.k8s.controllers.gc import GarbageCollector
from sandbox.k8s.controllers.jobs import (
    FINALIZER,
    INDEX_KEY,
    JobController,
    format_intervals,
    parse_intervals,
)
from sandbox.k8s.controllers.namespaces import NamespaceController
from sandbox.k8s.controllers.pv import PersistentVolumeController
from sandbox.k8s.serviceaccounts import ServiceAccountController
from sandbox.k8s.store import Obj, Store, now_iso

NS = "default"


# ------------------------------------------------------------------ fake pod runner


class FakeRunner:
    """Binds pods and finishes them per their annotations; ends graceful deletions at once."""

    def __init__(self, cluster: KubeCluster) -> None:
        self.store: Store = cluster.store
        self.failures_by_owner: dict[str, int] = {}
        self.max_running = 0
        self.running: set[str] = set()

    async def run(self) -> None:
        watcher = self.store.watch("pods")
        try:
            async for event in watcher:
                meta = event.obj["metadata"]
                if event.type == "DELETED":
                    self.running.discard(meta["uid"])
                    continue
                pod = self.store.peek("pods", meta["namespace"], meta["name"])
                if pod is not None and pod["metadata"]["uid"] == meta["uid"]:
                    self.handle(pod)
        finally:
            watcher.close()

    def handle(self, pod: Obj) -> None:
        meta = pod["metadata"]
        phase = (pod.get("status") or {}).get("phase")
        terminal = phase in ("Succeeded", "Failed")
        if meta.get("deletionTimestamp"):
            self.running.discard(meta["uid"])
            if not terminal and pod["spec"].get("nodeName"):
                self.finish(pod, 143, None)
            if meta.get("deletionGracePeriodSeconds") != 0 or not meta.get("finalizers"):
                self.store.finish_delete("pods", meta["namespace"], meta["name"])
            return
        if terminal or pod["spec"].get("nodeName"):
            return
        pod = self.store.bind(meta["namespace"], meta["name"], "fake-node")
        self.running.add(meta["uid"])
        self.max_running = max(self.max_running, len(self.running))
        annotations = meta.get("annotations") or {}
        if annotations.get("test/hold") == "true":
            self.set_status(pod, {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastProbeTime": None, "lastTransitionTime": now_iso()}]})
            return
        code, condition = self.outcome(pod, annotations)
        self.finish(pod, code, condition)

    def outcome(self, pod: Obj, annotations: dict[str, str]) -> tuple[int, str | None]:
        code = int(annotations.get("test/exit-code", "0"))
        index = annotations.get(INDEX_KEY)
        fail_indexes = [i for i in annotations.get("test/fail-index", "").split(",") if i]
        if index is not None and index in fail_indexes:
            code = int(annotations.get("test/fail-code", "1"))
        owner = pod["metadata"]["ownerReferences"][0]["uid"]
        if self.failures_by_owner.get(owner, 0) < int(annotations.get("test/fail-first", "0")):
            self.failures_by_owner[owner] = self.failures_by_owner.get(owner, 0) + 1
            code = int(annotations.get("test/fail-code", "1"))
        return code, (annotations.get("test/condition") if code else None)

    def finish(self, pod: Obj, code: int, condition: str | None) -> None:
        self.running.discard(pod["metadata"]["uid"])
        conditions = [{"type": "Ready", "status": "False", "reason": "PodCompleted", "lastProbeTime": None,
                       "lastTransitionTime": now_iso()}]
        if condition:
            conditions.append({"type": condition, "status": "True", "reason": "Test", "lastProbeTime": None,
                               "lastTransitionTime": now_iso()})
        self.set_status(pod, {
            "phase": "Succeeded" if code == 0 else "Failed",
            "conditions": conditions,
            "containerStatuses": [{"name": c["name"], "ready": False, "restartCount": 0, "image": c.get("image"),
                                   "state": {"terminated": {"exitCode": code,
                                                            "reason": "Completed" if code == 0 else "Error"}}}
                                  for c in pod["spec"]["containers"]]})

    def set_status(self, pod: Obj, status: Obj) -> None:
        def apply(obj: Obj) -> None:
            obj.setdefault("status", {}).update(status)

        meta = pod["metadata"]
        with contextlib.suppress(Exception):
            self.store.mutate("pods", meta["namespace"], meta["name"], apply, subresource="status")


# ------------------------------------------------------------------ fixtures and helpers


async def start(cluster: KubeCluster) -> None:
    """KubeCluster.start() without the HTTP server: bootstrap objects and supervised controllers."""
    cluster._bootstrap()
    for cls in cluster._controller_classes():
        controller = cls(cluster)
        cluster.controllers.append(controller)
        cluster._tasks.append(asyncio.create_task(cluster._supervise(controller), name=cls.__name__))


@pytest.fixture
async def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[KubeCluster]:
    monkeypatch.setattr(KubeCluster, "_controller_classes", lambda self: [
        NamespaceController, ServiceAccountController, GarbageCollector, JobController, PersistentVolumeController,
        FakeRunner])
    c = KubeCluster("controllers-test", tmp_path / "data")
    await start(c)
    try:
        yield c
    finally:
        await c.stop()


async def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def job_manifest(name: str, *, annotations: dict[str, str] | None = None, restart: str = "Never",
                 **spec: Any) -> Obj:
    template: Obj = {"spec": {"restartPolicy": restart, "containers": [
        {"name": "main", "image": "busybox:1.36", "command": ["true"]}]}}
    if annotations:
        template["metadata"] = {"annotations": annotations}
    return {"metadata": {"name": name, "namespace": NS}, "spec": {"template": template, **spec}}


def job(cluster: KubeCluster, name: str, namespace: str = NS) -> Obj | None:
    return cluster.store.peek("jobs", namespace, name)


def conditions(obj: Obj | None) -> list[tuple[str, str, str]]:
    return [(c["type"], c["status"], c.get("reason", "")) for c in ((obj or {}).get("status") or {}).get(
        "conditions") or []]


def finished(cluster: KubeCluster, name: str) -> Callable[[], Obj | None]:
    def check() -> Obj | None:
        j = job(cluster, name)
        return j if any(t in ("Complete", "Failed") and s == "True" for t, s, _ in conditions(j)) else None
    return check


def pods_of(cluster: KubeCluster, name: str, namespace: str = NS) -> list[Obj]:
    return [p for p in cluster.store.iter_objects("pods", namespace)
            if (p["metadata"].get("labels") or {}).get("batch.kubernetes.io/job-name") == name]


def events(cluster: KubeCluster, name: str, namespace: str = NS) -> list[str]:
    return [e["reason"] for e in cluster.store.iter_objects("events", namespace)
            if e["involvedObject"]["name"] == name]


# ------------------------------------------------------------------ Job controller


def test_intervals_roundtrip() -> None:
    assert format_intervals({0, 1, 2, 4, 7, 8}) == "0-2,4,7-8"
    assert format_intervals(set()) == ""
    assert parse_intervals("0-2,4,7-8") == {0, 1, 2, 4, 7, 8}


async def test_indexed_job_completes(cluster: KubeCluster) -> None:
    cluster.store.create("jobs", job_manifest("idx", completions=5, parallelism=2, completionMode="Indexed"))
    done = await wait_for(finished(cluster, "idx"), what="indexed job")
    status = done["status"]
    assert status["completedIndexes"] == "0-4"
    assert status["succeeded"] == 5 and "failed" not in status and "active" not in status
    assert conditions(done) == [("SuccessCriteriaMet", "True", "CompletionsReached"),
                                ("Complete", "True", "CompletionsReached")]
    assert status["completionTime"] and status["startTime"] and status["uncountedTerminatedPods"] == {}
    assert status["ready"] == 0 and status["terminating"] == 0
    pods = pods_of(cluster, "idx")
    assert sorted(int(p["metadata"]["annotations"][INDEX_KEY]) for p in pods) == [0, 1, 2, 3, 4]
    for pod in pods:
        index = pod["metadata"]["labels"][INDEX_KEY]
        assert pod["metadata"]["name"].startswith(f"idx-{index}-")
        assert pod["spec"]["hostname"] == f"idx-{index}"
        assert FINALIZER not in (pod["metadata"].get("finalizers") or [])
        ref = pod["metadata"]["ownerReferences"][0]
        assert ref == {"apiVersion": "batch/v1", "kind": "Job", "name": "idx", "uid": done["metadata"]["uid"],
                       "controller": True, "blockOwnerDeletion": True}
        env = pod["spec"]["containers"][0]["env"]
        assert env[-1]["name"] == "JOB_COMPLETION_INDEX"
        assert pod["metadata"]["labels"]["batch.kubernetes.io/controller-uid"] == done["metadata"]["uid"]
    assert cluster.controller("FakeRunner").max_running <= 2
    assert "SuccessfulCreate" in events(cluster, "idx") and "Completed" in events(cluster, "idx")


async def test_non_indexed_job(cluster: KubeCluster) -> None:
    cluster.store.create("jobs", job_manifest("plain", completions=3, parallelism=2))
    done = await wait_for(finished(cluster, "plain"), what="job")
    assert done["status"]["succeeded"] == 3 and "completedIndexes" not in done["status"]
    assert conditions(done)[-1] == ("Complete", "True", "CompletionsReached")
    assert len(pods_of(cluster, "plain")) == 3


async def test_work_queue_job(cluster: KubeCluster) -> None:
    cluster.store.create("jobs", job_manifest("queue", parallelism=3))
    done = await wait_for(finished(cluster, "queue"), what="work-queue job")
    assert conditions(done)[-1][0] == "Complete"
    assert done["status"]["succeeded"] == 3  # all three started together, each succeeded


async def test_backoff_limit_exceeded(cluster: KubeCluster) -> None:
    cluster.store.create("jobs", job_manifest("failing", backoffLimit=2,
                                              annotations={"test/exit-code": "1"}))
    done = await wait_for(finished(cluster, "failing"), what="failed job")
    assert done["status"]["failed"] == 3
    assert conditions(done) == [("FailureTarget", "True", "BackoffLimitExceeded"),
                                ("Failed", "True", "BackoffLimitExceeded")]
    assert done["status"]["conditions"][-1]["message"] == "Job has reached the specified backoff limit"
    assert "completionTime" not in done["status"]
    assert "BackoffLimitExceeded" in events(cluster, "failing")
    await asyncio.sleep(0.2)
    assert len(pods_of(cluster, "failing")) == 3  # a finished Job never creates pods again


async def test_backoff_limit_per_index(cluster: KubeCluster) -> None:
    cluster.store.create("jobs", job_manifest(
        "perindex", completions=4, parallelism=4, completionMode="Indexed", backoffLimitPerIndex=1,
        annotations={"test/fail-index": "1"}))
    done = await wait_for(finished(cluster, "perindex"), what="per-index job")
    status = done["status"]
    assert status["failedIndexes"] == "1" and status["completedIndexes"] == "0,2-3"
    assert status["failed"] == 2 and status["succeeded"] == 3
    assert conditions(done)[-1] == ("Failed", "True", "FailedIndexes")
    counts = sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"]
                    for p in pods_of(cluster, "perindex") if p["metadata"]["labels"][INDEX_KEY] == "1")
    assert counts == ["0", "1"]


async def test_active_deadline(cluster: KubeCluster) -> None:
    # startTime has whole seconds, as on a real cluster: a 2 s deadline can fire 1 s after creation, so the test
    # waits for the two (held) pods, not for them to be Ready, before the deadline may end the Job.
    cluster.store.create("jobs", job_manifest("slow", parallelism=2, completions=4, activeDeadlineSeconds=2,
                                              annotations={"test/hold": "true"}))
    await wait_for(lambda: len(pods_of(cluster, "slow")) == 2, what="two pods")
    done = await wait_for(finished(cluster, "slow"), timeout=6, what="deadline")
    assert conditions(done) == [("FailureTarget", "True", "DeadlineExceeded"), ("Failed", "True", "DeadlineExceeded")]
    assert done["status"]["conditions"][-1]["message"] == "Job was active longer than specified deadline"
    assert done["status"]["failed"] == 2 and "active" not in done["status"]
    await wait_for(lambda: not pods_of(cluster, "slow"), what="pods deleted")
    assert "DeadlineExceeded" in events(cluster, "slow")


async def test_pod_failure_policy_fail_job(cluster: KubeCluster) -> None:
    policy = {"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}]}
    cluster.store.create("jobs", job_manifest("pfp", backoffLimit=5, podFailurePolicy=policy,
                                              annotations={"test/exit-code": "42"}))
    done = await wait_for(finished(cluster, "pfp"), what="FailJob")
    assert conditions(done)[-1] == ("Failed", "True", "PodFailurePolicy")
    message = done["status"]["conditions"][-1]["message"]
    assert "failed with exit code 42 matching FailJob rule at index 0" in message
    assert done["status"]["failed"] == 1


async def test_pod_failure_policy_ignore_and_count(cluster: KubeCluster) -> None:
    ignore = {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}
    cluster.store.create("jobs", job_manifest("ign", backoffLimit=0, podFailurePolicy=ignore, annotations={
        "test/fail-first": "2", "test/condition": "DisruptionTarget"}))
    count = {"rules": [{"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [5]}}]}
    cluster.store.create("jobs", job_manifest("cnt", backoffLimit=0, podFailurePolicy=count,
                                              annotations={"test/fail-first": "1"}))
    ignored = await wait_for(finished(cluster, "ign"), what="Ignore job")
    assert conditions(ignored)[-1][0] == "Complete" and "failed" not in ignored["status"]
    assert len(pods_of(cluster, "ign")) == 3
    counted = await wait_for(finished(cluster, "cnt"), what="Count job")
    assert conditions(counted)[-1] == ("Failed", "True", "BackoffLimitExceeded")
    assert counted["status"]["failed"] == 1


async def test_suspend_and_resume(cluster: KubeCluster) -> None:
    cluster.store.create("jobs", job_manifest("sus", completions=2, parallelism=2, suspend=True))
    await wait_for(lambda: ("Suspended", "True", "JobSuspended") in conditions(job(cluster, "sus")), what="Suspended")
    assert not pods_of(cluster, "sus") and "startTime" not in job(cluster, "sus")["status"]

    def resume(obj: Obj) -> None:
        obj["spec"]["suspend"] = False

    cluster.store.mutate("jobs", NS, "sus", resume)
    done = await wait_for(finished(cluster, "sus"), what="resumed job")
    assert ("Suspended", "False", "JobResumed") in conditions(done) and done["status"]["startTime"]
    assert done["status"]["succeeded"] == 2


async def test_suspend_running_job_deletes_pods(cluster: KubeCluster) -> None:
    cluster.store.create("jobs", job_manifest("hold", completions=3, parallelism=3,
                                              annotations={"test/hold": "true"}))
    await wait_for(lambda: (job(cluster, "hold") or {}).get("status", {}).get("active") == 3, what="active")

    def suspend(obj: Obj) -> None:
        obj["spec"]["suspend"] = True

    cluster.store.mutate("jobs", NS, "hold", suspend)
    await wait_for(lambda: not pods_of(cluster, "hold"), what="pods deleted on suspend")
    status = await wait_for(lambda: (s := job(cluster, "hold")["status"]) and "active" not in s and s, what="status")
    assert ("Suspended", "True", "JobSuspended") in conditions(job(cluster, "hold"))
    assert "failed" not in status  # pods removed by suspension are not failures


async def test_ttl_after_finished(cluster: KubeCluster) -> None:
    cluster.store.create("jobs", job_manifest("ttl", completions=2, ttlSecondsAfterFinished=0))
    await wait_for(lambda: job(cluster, "ttl") is None and not pods_of(cluster, "ttl"), what="ttl deletion")


async def test_status_counts_survive_controller_restart(cluster: KubeCluster) -> None:
    cluster.store.create("jobs", job_manifest("restart", completions=6, parallelism=2, completionMode="Indexed"))
    await wait_for(lambda: (job(cluster, "restart") or {}).get("status", {}).get("succeeded", 0) >= 2, what="progress")
    index = next(i for i, c in enumerate(cluster.controllers) if isinstance(c, JobController))
    cluster._tasks[index].cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await cluster._tasks[index]
    fresh = JobController(cluster)
    cluster._tasks[index] = asyncio.create_task(cluster._supervise(fresh))
    done = await wait_for(finished(cluster, "restart"), what="job after restart")
    assert done["status"]["completedIndexes"] == "0-5" and done["status"]["succeeded"] == 6


# ------------------------------------------------------------------ garbage collector


async def test_gc_background_foreground_orphan(cluster: KubeCluster) -> None:
    store = cluster.store
    for name in ("bg", "fg", "orph"):
        store.create("jobs", job_manifest(name, completions=2, parallelism=2, annotations={"test/hold": "true"}))
    await wait_for(lambda: all(len(pods_of(cluster, n)) == 2 for n in ("bg", "fg", "orph")), what="pods")
    store.delete("jobs", NS, "bg", propagation_policy="Background")
    store.delete("jobs", NS, "fg", propagation_policy="Foreground")
    fg = job(cluster, "fg")
    assert fg is not None and "foregroundDeletion" in fg["metadata"]["finalizers"]
    store.delete("jobs", NS, "orph", propagation_policy="Orphan")
    await wait_for(lambda: not pods_of(cluster, "bg"), what="background cascade")
    await wait_for(lambda: job(cluster, "fg") is None and not pods_of(cluster, "fg"), what="foreground cascade")
    await asyncio.sleep(0.2)
    orphans = pods_of(cluster, "orph")
    assert len(orphans) == 2
    await wait_for(lambda: all(FINALIZER not in (p["metadata"].get("finalizers") or [])
                               and not p["metadata"].get("ownerReferences") for p in pods_of(cluster, "orph")),
                   what="orphans released")


async def test_gc_dangling_and_multiple_owners(cluster: KubeCluster) -> None:
    store = cluster.store
    owner_a = store.create("configmaps", {"metadata": {"name": "owner-a"}}, namespace=NS)
    owner_b = store.create("configmaps", {"metadata": {"name": "owner-b"}}, namespace=NS)

    def ref(owner: Obj) -> Obj:
        return {"apiVersion": "v1", "kind": "ConfigMap", "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"]}

    store.create("configmaps", {"metadata": {"name": "two-owners", "ownerReferences": [ref(owner_a), ref(owner_b)]}},
                 namespace=NS)
    store.create("configmaps", {"metadata": {"name": "dangling", "ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "ghost", "uid": "00000000-0000-0000-0000-000000000000"}]}},
        namespace=NS)
    await wait_for(lambda: store.peek("configmaps", NS, "dangling") is None, what="dangling deleted")
    store.delete("configmaps", NS, "owner-a")
    await wait_for(lambda: len(store.peek("configmaps", NS, "two-owners")["metadata"]["ownerReferences"]) == 1,
                   what="dangling reference removed")
    store.delete("configmaps", NS, "owner-b")
    await wait_for(lambda: store.peek("configmaps", NS, "two-owners") is None, what="last owner gone")


# ------------------------------------------------------------------ namespaces


async def test_namespace_deletion(cluster: KubeCluster) -> None:
    store = cluster.store
    store.create("namespaces", {"metadata": {"name": "scratch"}})
    store.create("configmaps", {"metadata": {"name": "cm"}}, namespace="scratch")
    store.create("persistentvolumeclaims", {"metadata": {"name": "claim"}, "spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}, namespace="scratch")
    manifest = job_manifest("work", completions=2, parallelism=2, annotations={"test/hold": "true"})
    manifest["metadata"]["namespace"] = "scratch"
    store.create("jobs", manifest)
    await wait_for(lambda: len(pods_of(cluster, "work", "scratch")) == 2, what="pods")
    store.delete("namespaces", None, "scratch")
    assert store.peek("namespaces", None, "scratch")["status"]["phase"] == "Terminating"
    await wait_for(lambda: store.peek("namespaces", None, "scratch") is None, what="namespace gone")
    assert not any(True for plural in ("pods", "jobs", "configmaps", "persistentvolumeclaims")
                   for _ in store.iter_objects(plural, "scratch"))


# ------------------------------------------------------------------ persistent volumes


def pv(name: str, size: str, *, labels: dict[str, str] | None = None, cls: str | None = None,
       modes: tuple[str, ...] = ("ReadWriteOnce", "ReadWriteMany"), policy: str = "Retain") -> Obj:
    spec: Obj = {"capacity": {"storage": size}, "accessModes": list(modes), "hostPath": {"path": f"/tmp/{name}"},
                 "persistentVolumeReclaimPolicy": policy}
    if cls is not None:
        spec["storageClassName"] = cls
    meta: Obj = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"metadata": meta, "spec": spec}


def pvc(name: str, size: str, **spec: Any) -> Obj:
    return {"metadata": {"name": name}, "spec": {"accessModes": spec.pop("modes", ["ReadWriteOnce"]),
                                                 "resources": {"requests": {"storage": size}}, **spec}}


def bound_to(cluster: KubeCluster, claim: str) -> Callable[[], str | None]:
    def check() -> str | None:
        obj = cluster.store.peek("persistentvolumeclaims", NS, claim)
        return obj["spec"].get("volumeName") if obj and obj.get("status", {}).get("phase") == "Bound" else None
    return check


async def test_pv_binding_rules(cluster: KubeCluster) -> None:
    store = cluster.store
    store.create("persistentvolumes", pv("big", "10Gi"))
    store.create("persistentvolumes", pv("small", "2Gi"))
    store.create("persistentvolumes", pv("tiny", "500Mi"))
    store.create("persistentvolumes", pv("labelled", "50Gi", labels={"tier": "gold"}))
    store.create("persistentvolumes", pv("classy", "1Gi", cls="nas"))
    store.create("persistentvolumes", pv("named", "3Gi"))
    store.create("persistentvolumes", pv("rox", "100Gi", modes=("ReadOnlyMany",)))
    await wait_for(lambda: store.peek("persistentvolumes", None, "big")["status"]["phase"] == "Available",
                   what="PV Available")
    assert "kubernetes.io/pv-protection" in store.peek("persistentvolumes", None, "big")["metadata"]["finalizers"]

    store.create("persistentvolumeclaims", pvc("fits", "1Gi"), namespace=NS)
    store.create("persistentvolumeclaims", pvc("sel", "1Gi", selector={"matchLabels": {"tier": "gold"}}),
                 namespace=NS)
    store.create("persistentvolumeclaims", pvc("cls", "1Gi", storageClassName="nas"), namespace=NS)
    store.create("persistentvolumeclaims", pvc("pre", "1Gi", volumeName="named"), namespace=NS)
    store.create("persistentvolumeclaims", pvc("none", "1Ti"), namespace=NS)
    assert await wait_for(bound_to(cluster, "fits"), what="fits") == "small"  # smallest that fits
    assert await wait_for(bound_to(cluster, "sel"), what="selector") == "labelled"
    assert await wait_for(bound_to(cluster, "cls"), what="class") == "classy"
    assert await wait_for(bound_to(cluster, "pre"), what="volumeName") == "named"

    claim = store.peek("persistentvolumeclaims", NS, "fits")
    assert claim["status"]["capacity"] == {"storage": "2Gi"}
    assert "kubernetes.io/pvc-protection" in claim["metadata"]["finalizers"]
    volume = store.peek("persistentvolumes", None, "small")
    assert volume["status"]["phase"] == "Bound"
    ref = volume["spec"]["claimRef"]
    assert (ref["kind"], ref["namespace"], ref["name"], ref["uid"]) == (
        "PersistentVolumeClaim", NS, "fits", claim["metadata"]["uid"])
    await wait_for(lambda: "FailedBinding" in events(cluster, "none"), what="FailedBinding event")
    assert store.peek("persistentvolumeclaims", NS, "none")["status"]["phase"] == "Pending"

    store.delete("persistentvolumeclaims", NS, "fits")
    await wait_for(lambda: store.peek("persistentvolumeclaims", NS, "fits") is None, what="PVC deleted")
    await wait_for(lambda: store.peek("persistentvolumes", None, "small")["status"]["phase"] == "Released",
                   what="Released")


async def test_pv_delete_policy_and_pvc_protection(cluster: KubeCluster) -> None:
    store = cluster.store
    store.create("persistentvolumes", pv("scratch", "1Gi", policy="Delete"))
    store.create("persistentvolumeclaims", pvc("data", "1Gi"), namespace=NS)
    await wait_for(bound_to(cluster, "data"), what="bound")
    store.create("pods", {"metadata": {"name": "user", "annotations": {"test/hold": "true"}}, "spec": {
        "restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox:1.36"}],
        "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}}, namespace=NS)
    await wait_for(lambda: store.peek("pods", NS, "user")["status"].get("phase") == "Running", what="pod running")
    store.delete("persistentvolumeclaims", NS, "data")
    await asyncio.sleep(0.3)
    assert store.peek("persistentvolumeclaims", NS, "data") is not None  # still in use
    store.delete("pods", NS, "user")
    await wait_for(lambda: store.peek("persistentvolumeclaims", NS, "data") is None, what="PVC released")
    await wait_for(lambda: store.peek("persistentvolumes", None, "scratch") is None, what="PV deleted")


# ------------------------------------------------------------------ scale


async def test_scale_indexed_job(cluster: KubeCluster) -> None:
    started = time.monotonic()
    cluster.store.create("jobs", job_manifest("scale", completions=2000, parallelism=200, completionMode="Indexed"))
    done = await wait_for(finished(cluster, "scale"), timeout=120, what="2000-pod job")
    elapsed = time.monotonic() - started
    controller = cluster.controller("JobController")
    print(f"\n2000 completions / parallelism 200: {elapsed:.2f}s, {controller.syncs} syncs, "
          f"{controller.status_writes} status writes")
    assert done["status"]["succeeded"] == 2000 and done["status"]["completedIndexes"] == "0-1999"
    assert "failed" not in done["status"]
    indexes = [int(p["metadata"]["labels"][INDEX_KEY]) for p in pods_of(cluster, "scale")]
    assert sorted(indexes) == list(range(2000))  # each index exactly once
    assert cluster.controller("FakeRunner").max_running <= 200


def test_store_ttl_counts_from_the_last_write_and_spares_other_resources() -> None:
    """An event written again gets a new lease (the event registry's TTL applies on create and update);
    resources without a TTL never expire."""
    store = Store(ttl={"events": 60})
    now = [1000.0]
    store.clock = lambda: now[0]
    store.create("namespaces", {"metadata": {"name": NS}})
    event = {"metadata": {"name": "e", "namespace": NS}, "reason": "R", "message": "m",
             "involvedObject": {"kind": "Pod", "name": "p", "namespace": NS}}
    store.create("events", dict(event))
    store.create("events", {**event, "metadata": {"name": "renewed", "namespace": NS}})
    store.create("configmaps", {"metadata": {"name": "c", "namespace": NS}})
    watcher = store.watch("events", NS, resource_version=str(store.rv))
    now[0] += 30
    store.mutate("events", NS, "renewed", lambda ev: ev.update(count=2))
    assert store.expire() == 0
    now[0] += 30
    assert store.expire() == 1  # "e" only: "renewed" was written 30 s later
    assert store.peek("events", NS, "e") is None and store.peek("events", NS, "renewed") is not None
    assert store.peek("configmaps", NS, "c") is not None
    assert [(ev.type, ev.obj["metadata"]["name"]) for ev in _drain(watcher)] == [
        ("MODIFIED", "renewed"), ("DELETED", "e")]
    now[0] += 30
    assert store.expire() == 1
    assert store.peek("events", NS, "renewed") is None


def test_store_hands_out_copies() -> None:
    """Objects are stored encoded: what a reader gets is a copy, and changing it changes nothing stored."""
    store = Store()
    store.create("namespaces", {"metadata": {"name": NS}})
    created = store.create("configmaps", {"metadata": {"name": "c", "namespace": NS}, "data": {"a": "1"}})
    created["data"]["a"] = "changed"
    peeked = store.peek("configmaps", NS, "c")
    assert peeked is not None and peeked["data"] == {"a": "1"}
    peeked["data"]["a"] = "changed"
    assert store.get("configmaps", NS, "c")["data"] == {"a": "1"}
    assert next(store.iter_objects("configmaps", NS))["data"] == {"a": "1"}


def _drain(watcher: Any) -> list[Any]:
    out = []
    while not watcher.queue.empty():
        event = watcher.queue.get_nowait()
        if event is not None:
            out.append(event)
    return out


def test_gc_deletes_a_big_cascade_a_batch_per_tick(tmp_path: Path) -> None:
    """An owner with more dependents than one batch: each tick deletes at most ``gc.BATCH`` of them (the store's
    watchers hold every DELETED event's object until read, so deleting 100,000 pods in one tick held them all at
    once: the sandbox went from ~0.9 to 4.3 GB while a 100,000-pod Job was torn down), and all go in the end."""
    import sandbox.k8s.controllers.gc as gc_module

    cluster = KubeCluster("gc-batch", tmp_path / "data")
    cluster._bootstrap()
    store = cluster.store
    owner = store.create("configmaps", {"metadata": {"name": "owner"}}, namespace=NS)
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    batch = getattr(gc_module, "BATCH", 500)
    total = batch * 2 + 7
    for i in range(total):
        store.create("configmaps", {"metadata": {"name": f"dep-{i}", "ownerReferences": [ref]}}, namespace=NS)
    gc = GarbageCollector(cluster)
    store.delete("configmaps", NS, "owner")
    gc.gone.add(owner["metadata"]["uid"])
    left = []
    for _ in range(4):
        gc.tick()
        left.append(sum(1 for i in range(total) if store.peek("configmaps", NS, f"dep-{i}") is not None))
    assert left == [total - batch, total - 2 * batch, 0, 0]
    assert gc.deleted == total and not gc.cascades


def test_gc_deletes_a_big_foreground_cascade_a_batch_per_tick(tmp_path: Path) -> None:
    """The same bound for ``propagationPolicy: Foreground``: the owner's blocking dependents are deleted a batch per
    tick (it deleted them all in one), and once they are gone the owner goes too."""
    import sandbox.k8s.controllers.gc as gc_module

    cluster = KubeCluster("gc-fg-batch", tmp_path / "data")
    cluster._bootstrap()
    store = cluster.store
    owner = store.create("configmaps", {"metadata": {"name": "owner"}}, namespace=NS)
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"],
           "blockOwnerDeletion": True}
    batch = getattr(gc_module, "BATCH", 500)
    total = batch * 2 + 7
    for i in range(total):
        store.create("configmaps", {"metadata": {"name": f"dep-{i}", "ownerReferences": [ref]}}, namespace=NS)
    gc = GarbageCollector(cluster)
    store.delete("configmaps", NS, "owner", propagation_policy="Foreground")
    gc.foreground.add(owner["metadata"]["uid"])
    left = []
    for _ in range(4):
        gc.dirty_foreground.add(owner["metadata"]["uid"])  # what its dependents' events do (no informer runs here)
        gc.tick()
        left.append(sum(1 for i in range(total) if store.peek("configmaps", NS, f"dep-{i}") is not None))
    assert left == [total - batch, total - 2 * batch, 0, 0]
    assert store.peek("configmaps", NS, "owner") is None and gc.deleted == total
