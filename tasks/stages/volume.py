"""Stage ensure_volume: the shared volume the pods mount — nothing, an existing PVC, or a NAS file system.

Mode 'nas' walks the chain Alibaba's static-NAS recipe asks for
(https://www.alibabacloud.com/help/en/ack/serverless-kubernetes/user-guide/nas-volume-overview-3):

    file system (Running) -> mount target in the cluster's VPC (Active) -> static PV (CSI) -> PVC (Bound)

Every link is find-then-create, so calling this twice — or from two processes at once — ends with one of each:

- The file system is found by id, or by our tag ``ask-batch.io/nas=<name>`` (DescribeFileSystems has no name
  filter; the tag filter is re-checked client-side while paging, because a lax filter would make us adopt a
  stranger's file system). Creation carries a ClientToken derived from region and name, so racing creators get
  the same FileSystemId. A token can outlive its file system (a deleted one): a create that answers with an id
  that no longer exists is retried once with a fresh token.
- CreateMountTarget has no ClientToken. Racing creators in one process are serialised by a lock; across
  processes, a creator that finds a second mount target in the VPC after its own create keeps the smaller domain
  and deletes its own, so both racers converge (General-purpose NAS allows only 2 mount targets per FS).
- PV and PVC names derive from the run key; a 409 means an earlier attempt made them, and they are adopted
  after checking they point where we want.

NAS has no watch API, so its states are polled with progress logged on every change; the PVC is watched.
"""

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.cloud.context import RETRY_DELAYS, stage_context, stage_logs, transient_only
from tasks.cloud.nas import (
    describe_file_system,
    find_file_systems_by_name,
    list_mount_targets,
    nas_call,
)
from tasks.cloud.retry import CloudError, call, call_or_none
from tasks.errors import VolumeError
from tasks.handles import ClusterHandle, VolumeHandle
from tasks.naming import short_hash, volume_names
from tasks.render.manifests import (
    NAS_NAME_TAG,
    nas_create_file_system_request,
    nas_create_mount_target_request,
    nas_pv_manifest,
    nas_pvc_manifest,
)
from tasks.spec import BatchSpec, NasOptions

log = logging.getLogger("ask_batch.volume")

MANAGED_BY_TAG = "app.kubernetes.io/managed-by"
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock(key: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


# --------------------------------------------------------------------------------------------- file system


def find_file_system(nas: Any, options: NasOptions) -> dict[str, Any] | None:
    """The configured file system: by id (must exist) or by name tag (None when there is none yet)."""
    if options.file_system_id:
        fs = describe_file_system(nas, options.file_system_id)
        if fs is None:
            raise VolumeError(f"NAS file system {options.file_system_id!r} (storage.nas.file_system_id) does not "
                              f"exist in this region; fix: correct the id, or leave it empty to find/create one by "
                              f"storage.nas.name")
        return fs
    matches = find_file_systems_by_name(nas, options.name)
    if len(matches) > 1:
        # Deterministic choice, so concurrent runs agree on the same one.
        log.warning("%d NAS file systems are tagged %s=%s (%s); using the oldest", len(matches), NAS_NAME_TAG,
                    options.name, ", ".join(fs["FileSystemId"] for fs in matches))
    return matches[0] if matches else None


def create_file_system(nas: Any, options: NasOptions, *, region: str, run_key: str) -> str:
    """CreateFileSystem with a ClientToken derived from region and name; returns an id that exists."""
    from alibabacloud_nas20170626 import models as m

    base = nas_create_file_system_request(options, region=region, run_key=run_key)
    for attempt in range(2):
        req_map = dict(base)
        if attempt:  # the first token belonged to a file system that was deleted since
            req_map["ClientToken"] = "askb-" + short_hash(f"{region}/{options.name}/{time.time_ns()}", 32)
        try:
            body = nas_call(nas.create_file_system, m.CreateFileSystemRequest().from_map(req_map),
                             "CreateFileSystem")
        except CloudError as err:
            if err.code != "IdempotentParameterMismatch":
                raise
            # Another run created it with the same token (its tags name that run): adopt it if it is there.
            found = find_file_system(nas, options)
            if found:
                return str(found["FileSystemId"])
            continue
        fs_id = str(body["FileSystemId"])
        if describe_file_system(nas, fs_id) is not None:
            return fs_id
        log.warning("NAS returned file system %s for a reused ClientToken, but it no longer exists; retrying "
                    "with a new token", fs_id)
    raise VolumeError(f"could not create NAS file system {options.name!r}; fix: check the NAS console")


def _poll(describe: Callable[[], str | None], *, what: str, want: str, timeout: float, fix: str,
          poll: float, sleep: Callable[[float], None] = time.sleep,
          clock: Callable[[], float] = time.monotonic) -> None:
    """Poll ``describe()`` (a status) until it equals ``want``; log every change; time out with ``fix``."""
    deadline, last, started = clock() + timeout, "", clock()
    while True:
        status = describe()
        if status != last:
            log.info("%s: %s (%.0fs)", what, status, clock() - started)
            last = status or ""
        if status == want:
            return
        if status is None:
            raise VolumeError(f"{what} disappeared while waiting for it to become {want}")
        if clock() > deadline:
            raise VolumeError(f"{what} is still {status!r} after {timeout:.0f}s, not {want}; fix: {fix}")
        sleep(poll)


def wait_file_system_running(nas: Any, fs_id: str, *, timeout: float, poll: float = 2.0) -> None:
    def status() -> str | None:
        fs = describe_file_system(nas, fs_id)
        return fs.get("Status") if fs else None

    _poll(status, what=f"NAS file system {fs_id}", want="Running", timeout=timeout, poll=poll,
          fix="raise storage.nas.ready_timeout_seconds, or check the file system in the NAS console")


# --------------------------------------------------------------------------------------------- mount target


def _usable_in_vpc(mts: list[dict[str, Any]], vpc_id: str) -> list[dict[str, Any]]:
    return sorted((mt for mt in mts if mt.get("VpcId") == vpc_id and mt.get("Status") in ("Active", "Pending")),
                  key=lambda mt: mt["MountTargetDomain"])


def ensure_mount_target(nas: Any, fs_id: str, *, vpc_id: str, vswitch_id: str) -> tuple[str, bool]:
    """(mount target domain, created) in ``vpc_id``: found, or created (see the module docstring on races)."""
    from alibabacloud_nas20170626 import models as m

    with _lock(f"mt:{fs_id}:{vpc_id}"):
        existing = _usable_in_vpc(list_mount_targets(nas, fs_id), vpc_id)
        if existing:
            return existing[0]["MountTargetDomain"], False
        req = m.CreateMountTargetRequest().from_map(
            nas_create_mount_target_request(fs_id, vpc_id=vpc_id, vswitch_id=vswitch_id))
        try:
            mine = str(nas_call(nas.create_mount_target, req, "CreateMountTarget")["MountTargetDomain"])
        except CloudError as err:
            again = _usable_in_vpc(list_mount_targets(nas, fs_id), vpc_id)
            if again:  # e.g. MountTargetLimitExceeded because a racing creator got there first
                return again[0]["MountTargetDomain"], False
            raise VolumeError(f"cannot create a mount target for NAS {fs_id} in {vpc_id}/{vswitch_id}: {err}; "
                              f"fix: check storage.nas.vpc_id/vswitch_id (or the cluster's VPC)") from err
        winner = _usable_in_vpc(list_mount_targets(nas, fs_id), vpc_id)[0]["MountTargetDomain"]
        if winner != mine:
            log.info("another mount target %s appeared concurrently in %s; deleting ours (%s)", winner, vpc_id, mine)
            call(nas.delete_mount_target, m.DeleteMountTargetRequest(file_system_id=fs_id, mount_target_domain=mine),
                 service="NAS", operation="DeleteMountTarget")
            return winner, False
        return mine, True


def wait_mount_target_active(nas: Any, fs_id: str, domain: str, *, timeout: float, poll: float = 2.0) -> None:
    def status() -> str | None:
        for mt in list_mount_targets(nas, fs_id):
            if mt.get("MountTargetDomain") == domain:
                return mt.get("Status")
        return None

    _poll(status, what=f"NAS mount target {domain}", want="Active", timeout=timeout, poll=poll,
          fix="raise storage.nas.ready_timeout_seconds, or check the mount target in the NAS console")


# --------------------------------------------------------------------------------------------- PV / PVC


def _create_or_read(create: Callable[[], Any], read: Callable[[], Any], *, what: str) -> tuple[Any, bool]:
    """Create; on 409 read the existing object. Returns (object, created)."""
    try:
        return call(create, service="Kubernetes", operation=f"create {what}"), True
    except CloudError as err:
        if err.status != 409:
            raise
    return call(read, service="Kubernetes", operation=f"read {what}"), False


def ensure_pv(core_v1: Any, body: dict[str, Any]) -> bool:
    """Create the static PV or adopt it; refuse one that points at another server/path. Returns created."""
    name = body["metadata"]["name"]
    pv, created = _create_or_read(lambda: core_v1.create_persistent_volume(body),
                                  lambda: core_v1.read_persistent_volume(name), what=f"PersistentVolume {name}")
    if not created:
        attrs = (pv.spec.csi.volume_attributes or {}) if pv.spec and pv.spec.csi else {}
        want = body["spec"]["csi"]["volumeAttributes"]
        if attrs.get("server") != want["server"] or attrs.get("path") != want["path"]:
            raise VolumeError(f"PersistentVolume {name} exists but mounts {attrs.get('server')}:{attrs.get('path')}"
                              f", not {want['server']}:{want['path']} (left by an earlier file system?); fix: "
                              f"delete it (kubectl delete pv {name}) and run again")
    return created


def ensure_pvc(core_v1: Any, body: dict[str, Any]) -> bool:
    """Create the PVC or adopt it when it claims the same PV. Returns created."""
    meta = body["metadata"]
    name, ns = meta["name"], meta["namespace"]
    pvc, created = _create_or_read(lambda: core_v1.create_namespaced_persistent_volume_claim(ns, body),
                                   lambda: core_v1.read_namespaced_persistent_volume_claim(name, ns),
                                   what=f"PersistentVolumeClaim {ns}/{name}")
    if not created:
        bound_to = pvc.spec.volume_name if pvc.spec else None
        if bound_to and bound_to != body["spec"]["volumeName"]:
            raise VolumeError(f"PersistentVolumeClaim {ns}/{name} exists but is bound to {bound_to}; fix: delete "
                              f"it and run again")
    return created


def wait_pvc_bound(core_v1: Any, namespace: str, name: str, *, timeout: float) -> None:
    """Watch the PVC until its phase is Bound (list first, then watch from that resourceVersion)."""
    from kubernetes import watch

    deadline = time.monotonic() + timeout
    phase = None
    while time.monotonic() < deadline:
        listing = call(core_v1.list_namespaced_persistent_volume_claim, namespace,
                       field_selector=f"metadata.name={name}", service="Kubernetes",
                       operation=f"list PersistentVolumeClaim {name}")
        for item in listing.items or []:
            phase = item.status.phase if item.status else None
        if phase == "Bound":
            return
        log.info("PersistentVolumeClaim %s/%s: %s", namespace, name, phase or "absent")
        w = watch.Watch()
        remaining = max(1, int(deadline - time.monotonic()))
        try:
            for event in w.stream(core_v1.list_namespaced_persistent_volume_claim, namespace,
                                  field_selector=f"metadata.name={name}",
                                  resource_version=listing.metadata.resource_version, timeout_seconds=remaining):
                obj = event.get("object")
                new = obj.status.phase if getattr(obj, "status", None) else None
                if new != phase:
                    phase = new
                    log.info("PersistentVolumeClaim %s/%s: %s", namespace, name, phase)
                if phase == "Bound":
                    w.stop()
                    return
        except Exception as exc:  # noqa: BLE001 - a dropped watch: relist and watch again
            log.debug("PVC watch dropped (%s); relisting", type(exc).__name__)
            time.sleep(0.5)
    raise VolumeError(f"PersistentVolumeClaim {namespace}/{name} is {phase or 'absent'}, not Bound, after "
                      f"{timeout:.0f}s; fix: kubectl describe pvc {name} -n {namespace}")


# --------------------------------------------------------------------------------------------- the stage


def check_existing_claim(core_v1: Any, namespace: str, claim_name: str) -> None:
    """Mode 'pvc': the claim must exist and be Bound, or the pods would hang in Pending."""
    pvc = call_or_none(core_v1.read_namespaced_persistent_volume_claim, claim_name, namespace,
                       service="Kubernetes", operation=f"read PersistentVolumeClaim {claim_name}")
    if pvc is None:
        raise VolumeError(f"storage.claim_name {claim_name!r}: no such PersistentVolumeClaim in namespace "
                          f"{namespace!r}; fix: create it first, or correct storage.claim_name / cluster.namespace")
    phase = pvc.status.phase if pvc.status else None
    if phase != "Bound":
        raise VolumeError(f"storage.claim_name {claim_name!r}: PersistentVolumeClaim {namespace}/{claim_name} is "
                          f"{phase or 'unknown'}, not Bound; fix: bind it to a volume first (a StorageClass with "
                          f"WaitForFirstConsumer is not supported here)")


def _mount_network(spec: BatchSpec, cluster: ClusterHandle) -> tuple[str, str]:
    vpc = spec.storage.nas.vpc_id or cluster.vpc_id
    vsw = spec.storage.nas.vswitch_id or (cluster.vswitch_ids[0] if cluster.vswitch_ids else None)
    if not vpc or not vsw:
        raise VolumeError("the NAS mount target needs a VPC and a vSwitch, and the cluster did not report them; "
                          "fix: set storage.nas.vpc_id and storage.nas.vswitch_id")
    return vpc, vsw


def ensure_nas(spec: BatchSpec, *, run_key: str, cluster: ClusterHandle, nas: Any) -> tuple[str, str, bool, bool]:
    """(file system id, mount target domain, created FS, created MT), both ready to mount."""
    options = spec.storage.nas
    with _lock(f"fs:{spec.target.region}:{options.file_system_id or options.name}"):
        fs = find_file_system(nas, options)
        created_fs = False
        if fs is None:
            if not options.create_if_missing:
                raise VolumeError(f"no NAS file system tagged {NAS_NAME_TAG}={options.name} in "
                                  f"{spec.target.region}; fix: set storage.nas.create_if_missing, or "
                                  f"storage.nas.file_system_id")
            log.info("NAS %s not found: creating it (%s)", options.name, options.storage_type)
            fs_id, created_fs = create_file_system(nas, options, region=spec.target.region, run_key=run_key), True
        else:
            fs_id = str(fs["FileSystemId"])
            log.info("NAS %s found: %s (%s)", options.name, fs_id, fs.get("Status"))
    wait_file_system_running(nas, fs_id, timeout=options.ready_timeout_seconds)
    vpc, vsw = _mount_network(spec, cluster)
    domain, created_mt = ensure_mount_target(nas, fs_id, vpc_id=vpc, vswitch_id=vsw)
    log.info("NAS mount target %s %s", domain, "created" if created_mt else "found")
    wait_mount_target_active(nas, fs_id, domain, timeout=options.ready_timeout_seconds)
    return fs_id, domain, created_fs, created_mt


def ensure_volume(spec: BatchSpec, *, run_key: str, cluster: ClusterHandle, core_v1: Any,
                  nas: Any | None) -> VolumeHandle:
    """Make the run's shared volume ready to mount and return its handle.

    Args:
        spec: validated parameters (``spec.storage``).
        run_key: names the PV/PVC and tags what is created.
        cluster: the cluster handle (its VPC/vSwitch host the NAS mount target unless overridden).
        core_v1: a ``kubernetes.client.CoreV1Api`` for the cluster.
        nas: a NAS client (mode 'nas' only).

    Returns:
        A ``VolumeHandle``; ``claim_name`` is what the pods mount (None in mode 'none').

    Raises:
        VolumeError: a missing/unbound claim, a timeout, or a conflicting PV/PVC, naming the field to fix.
        CloudError: a permanent API error.

    Example:
        >>> ensure_volume(spec, run_key="demo", cluster=handle, core_v1=CoreV1Api(api), nas=nas_client(t, c))
        VolumeHandle(mode='nas', claim_name='askb-pvc-demo', ...)
    """
    storage = spec.storage
    namespace = cluster.namespace
    if storage.mode == "none":
        return VolumeHandle(mode="none")
    if storage.mode == "pvc":
        assert storage.claim_name  # StorageSpec guarantees it
        check_existing_claim(core_v1, namespace, storage.claim_name)
        return VolumeHandle(mode="pvc", claim_name=storage.claim_name)
    if nas is None:
        raise ValueError("storage mode 'nas' needs a NAS client")
    fs_id, domain, created_fs, created_mt = ensure_nas(spec, run_key=run_key, cluster=cluster, nas=nas)
    pv_name, pvc_name = volume_names(run_key)
    options = storage.nas
    ensure_pv(core_v1, nas_pv_manifest(pv_name, run_key=run_key, server=domain, path=options.path, nas=options,
                                       claim_namespace=namespace, claim_name=pvc_name))
    ensure_pvc(core_v1, nas_pvc_manifest(pvc_name, pv_name, run_key=run_key, namespace=namespace,
                                         capacity_gib=options.capacity_gib))
    wait_pvc_bound(core_v1, namespace, pvc_name, timeout=min(300.0, float(options.ready_timeout_seconds)))
    log.info("volume ready: PVC %s/%s -> PV %s -> %s:%s", namespace, pvc_name, pv_name, domain, options.path)
    return VolumeHandle(mode="nas", claim_name=pvc_name, pv_name=pv_name, file_system_id=fs_id,
                        mount_target=domain, created_file_system=created_fs, created_mount_target=created_mt)


# --------------------------------------------------------------------------------------------- Prefect task


@task(name="ensure_volume", cache_policy=NO_CACHE, retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=transient_only)
def ensure_volume_task(spec: BatchSpec, *, run_key: str, cluster: ClusterHandle) -> VolumeHandle:
    """Prefect task: ``ensure_volume`` with clients built from ``spec.target`` and the cluster handle."""
    if spec.storage.mode == "none":
        return VolumeHandle(mode="none")
    from kubernetes import client

    with stage_context(spec) as ctx, stage_logs(ctx.scrubber):
        nas = ctx.nas() if spec.storage.mode == "nas" else None
        return ensure_volume(spec, run_key=run_key, cluster=cluster, core_v1=client.CoreV1Api(ctx.kube(cluster)),
                             nas=nas)
