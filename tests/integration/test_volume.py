"""ensure_volume through the sandbox: NAS file system + mount target + static PV/PVC, created once however
often (and however concurrently) the stage runs; mode 'pvc' refuses a missing or unbound claim."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kubernetes import client

from tasks.cloud.cluster_access import connect
from tasks.cloud.nas import find_file_systems_by_name, list_mount_targets
from tasks.errors import VolumeError
from tasks.handles import VolumeHandle
from tasks.stages.cluster import ensure_cluster
from tasks.stages.volume import ensure_volume


@pytest.fixture
def kube(cloud: Any, make_spec: Any) -> tuple[Any, Any]:
    """(cluster handle, CoreV1Api) for the sandbox's default cluster, through CS like the flow does."""
    spec = make_spec()
    handle = ensure_cluster(spec, run_key="it", cs=cloud.cs)
    return handle, client.CoreV1Api(connect(handle, spec, cs=cloud.cs))


def test_nas_volume_created_once_and_bound(cloud: Any, make_spec: Any, kube: Any, run_key: str) -> None:
    handle, core = kube
    nas_name = "nas-" + run_key
    spec = make_spec({"storage": {"mode": "nas", "nas": {"name": nas_name}}})

    def run(_: int) -> VolumeHandle:
        return ensure_volume(spec, run_key=run_key, cluster=handle, core_v1=core, nas=cloud.nas)

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(run, range(2))
    third = run(3)

    assert first.file_system_id == second.file_system_id == third.file_system_id
    assert first.mount_target == second.mount_target == third.mount_target
    assert [first.created_file_system, second.created_file_system].count(True) == 1
    assert not third.created_file_system and not third.created_mount_target
    file_systems = find_file_systems_by_name(cloud.nas, nas_name)
    assert [fs["FileSystemId"] for fs in file_systems] == [first.file_system_id]
    assert file_systems[0]["Status"] == "Running"
    mount_targets = list_mount_targets(cloud.nas, first.file_system_id)
    assert [mt["MountTargetDomain"] for mt in mount_targets] == [first.mount_target]
    assert mount_targets[0]["Status"] == "Active" and mount_targets[0]["VpcId"] == handle.vpc_id

    pvc = core.read_namespaced_persistent_volume_claim(first.claim_name, handle.namespace)
    assert pvc.status.phase == "Bound" and pvc.spec.volume_name == first.pv_name
    assert pvc.metadata.labels["ask-batch.io/run"] == run_key
    pv = core.read_persistent_volume(first.pv_name)
    assert pv.spec.csi.driver == "nasplugin.csi.alibabacloud.com"
    assert pv.spec.csi.volume_attributes["server"] == first.mount_target


def test_the_nas_pv_is_reserved_for_the_runs_claim(cloud: Any, make_spec: Any, kube: Any, run_key: str) -> None:
    """A pending claim of someone else that fits the PV (class "", ReadWriteMany, small enough) must not take it:
    a free PV goes to any matching claim (https://kubernetes.io/docs/concepts/storage/persistent-volumes/
    #reserving-a-persistentvolume), which would leave the run's claim Pending and mount the run's NAS elsewhere."""
    handle, core = kube
    other = "other-" + run_key
    core.create_namespace({"metadata": {"name": other}})
    core.create_namespaced_persistent_volume_claim(other, {
        "metadata": {"name": "wants-any-volume"},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "",
                 "resources": {"requests": {"storage": "1Gi"}}}})
    try:
        spec = make_spec({"storage": {"mode": "nas", "nas": {"name": "nas-" + run_key}}})
        volume = ensure_volume(spec, run_key=run_key, cluster=handle, core_v1=core, nas=cloud.nas)
        pv = core.read_persistent_volume(volume.pv_name)
        assert (pv.spec.claim_ref.namespace, pv.spec.claim_ref.name) == (handle.namespace, volume.claim_name)
        assert core.read_namespaced_persistent_volume_claim("wants-any-volume", other).status.phase == "Pending"
    finally:
        core.delete_namespace(other)


def test_a_pod_writes_to_the_nas_volume(cloud: Any, make_spec: Any, kube: Any, run_key: str) -> None:
    handle, core = kube
    spec = make_spec({"storage": {"mode": "nas", "nas": {"name": "nas-" + run_key, "path": "/shared"}}})
    volume = ensure_volume(spec, run_key=run_key, cluster=handle, core_v1=core, nas=cloud.nas)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "writer-" + run_key},
           "spec": {"restartPolicy": "Never",
                    "containers": [{"name": "w", "image": "busybox",
                                    "command": ["sh", "-c", "echo hello-nas > /mnt/data/hello.txt"],
                                    "volumeMounts": [{"name": "data", "mountPath": "/mnt/data"}]}],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": volume.claim_name}}]}}
    core.create_namespaced_pod(handle.namespace, pod)
    deadline = time.monotonic() + 30
    phase = None
    while time.monotonic() < deadline and phase not in ("Succeeded", "Failed"):
        time.sleep(0.2)
        phase = core.read_namespaced_pod(pod["metadata"]["name"], handle.namespace).status.phase
    assert phase == "Succeeded"
    written = cloud.data_dir / "nas" / volume.file_system_id / "shared" / "hello.txt"
    assert written.read_text() == "hello-nas\n"


def test_pvc_mode_needs_an_existing_bound_claim(make_spec: Any, kube: Any) -> None:
    handle, core = kube
    spec = make_spec({"storage": {"mode": "pvc", "claim_name": "no-such-claim"}})
    with pytest.raises(VolumeError, match=r"storage.claim_name 'no-such-claim'.*no such PersistentVolumeClaim"):
        ensure_volume(spec, run_key="x", cluster=handle, core_v1=core, nas=None)

    pending = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "pending-claim"},
               "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                        "resources": {"requests": {"storage": "1Gi"}}}}
    core.create_namespaced_persistent_volume_claim(handle.namespace, pending)
    spec = make_spec({"storage": {"mode": "pvc", "claim_name": "pending-claim"}})
    try:
        with pytest.raises(VolumeError, match=r"storage.claim_name 'pending-claim'.*Pending, not Bound"):
            ensure_volume(spec, run_key="x", cluster=handle, core_v1=core, nas=None)
    finally:
        core.delete_namespaced_persistent_volume_claim("pending-claim", handle.namespace)


def test_none_mode_touches_nothing(make_spec: Any, kube: Any) -> None:
    handle, _ = kube
    assert ensure_volume(make_spec(), run_key="x", cluster=handle, core_v1=None, nas=None) == VolumeHandle(mode="none")


def test_missing_file_system_id_is_named(cloud: Any, make_spec: Any, kube: Any) -> None:
    handle, core = kube
    spec = make_spec({"storage": {"mode": "nas", "nas": {"file_system_id": "0000000000"}}})
    with pytest.raises(VolumeError, match="storage.nas.file_system_id"):
        ensure_volume(spec, run_key="x", cluster=handle, core_v1=core, nas=cloud.nas)
