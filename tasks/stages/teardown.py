"""Stage teardown: delete what the run created, per policy, whatever happened before — and say what it did.

Why it is shaped like this:

- **It runs after success, failure and cancellation**, so any handle may be missing (the failure happened before
  that stage returned). Every kind is therefore *also* found by the run label ``ask-batch.io/run=<run key>``
  (Kubernetes) or by our tags (NAS, cluster): a crashed run can be swept later with ``sweep`` and nothing else
  than the run key and the spec.
- **It never raises for one failure**: each deletion is recorded as deleted, kept (on purpose: the policy, or
  the object is not ours) or failed (with the error), and the next one is tried. A 404 is "already gone", which
  makes teardown idempotent — Prefect may fire both a ``finally`` and an ``on_crashed`` hook.
- **Jobs are deleted with propagationPolicy Background.** The batch/v1 API defaults to *Orphan* for Jobs
  deleted through the API: the Job disappears and its pods keep running (and billing) on ECI. We then wait,
  with a watch, until the run's pods are gone, for as long as they keep going (a big Job's pods are deleted by
  the garbage collector a batch at a time).
- **Order matters**: Job (pods release the PVC) -> ConfigMap/Secret -> PVC (wait: pvc-protection holds it while
  a pod uses it) -> PV -> NAS mount targets (wait: DeleteFileSystem is refused while any exists) -> file system
  -> cluster. A user's own PVC (mode 'pvc'), a file system or a cluster that ask-batch did not create (no
  ``app.kubernetes.io/managed-by: ask-batch`` tag) are never deleted.
- **The cleanup command** (``flows.cleanup``) deletes what it found, of every run, through the same steps
  (``delete_managed_objects``, ``delete_managed_file_system``, ``delete_managed_cluster`` at the end of this module).
"""

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.cloud.cluster_access import existing_handle, find_cluster, locate_cluster
from tasks.cloud.context import stage_context, stage_logs
from tasks.cloud.list_pages import METADATA_WATCH, list_pages
from tasks.cloud.nas import describe_file_system, find_file_systems_by_name, list_mount_targets, tags_of
from tasks.cloud.retry import CloudError, call, call_or_none, is_gone
from tasks.handles import ClusterHandle, ConfigHandle, JobHandle, TeardownItem, TeardownReport, VolumeHandle
from tasks.naming import MANAGED_BY_LABEL, MANAGED_BY_VALUE, MANAGED_SELECTOR, run_selector
from tasks.spec import BatchSpec

log = logging.getLogger("ask_batch.teardown")



class _Recorder:
    """Collects the report; each step adds its items here."""

    def __init__(self) -> None:
        self.report = TeardownReport()

    def deleted(self, kind: str, name: str, why: str) -> None:
        log.info("teardown: deleted %s %s (%s)", kind, name, why)
        self.report.deleted.append(TeardownItem(kind=kind, name=name, why=why))

    def kept(self, kind: str, name: str, why: str) -> None:
        log.info("teardown: kept %s %s (%s)", kind, name, why)
        self.report.kept.append(TeardownItem(kind=kind, name=name, why=why))

    def failed(self, kind: str, name: str, why: str, *, count: int = 1) -> None:
        log.warning("teardown: FAILED to delete %s %s: %s", kind, name, why)
        self.report.failed.append(TeardownItem(kind=kind, name=name, why=why, count=count))


def decide(policy: str, succeeded: bool) -> tuple[bool, str]:
    """(delete?, why) for a policy and the run's outcome."""
    if policy == "always":
        return True, "policy 'always'"
    if policy == "on_success":
        return (True, "policy 'on_success', the run succeeded") if succeeded else (
            False, "policy 'on_success' and the run did not succeed (kept for inspection)")
    return False, f"policy {policy!r}"


def _delete(rec: _Recorder, kind: str, name: str, why: str, fn: Callable[[], Any], *,
            service: str = "Kubernetes") -> bool:
    """Run one deletion and record it; a 404 counts as deleted. Returns True unless it failed."""
    try:
        call(fn, service=service, operation=f"delete {kind} {name}")
    except CloudError as err:
        if is_gone(err):
            rec.deleted(kind, name, f"{why}; already gone")
            return True
        rec.failed(kind, name, str(err))
        return False
    except Exception as exc:  # noqa: BLE001 - recorded; teardown goes on
        rec.failed(kind, name, f"{type(exc).__name__}: {exc}")
        return False
    rec.deleted(kind, name, why)
    return True


#: Names of what is left that a report gives (the rest is counted).
LEFT_EXAMPLES = 5
#: While many objects are going away, a progress line this often (seconds).
PROGRESS_SECONDS = 10.0


def _listed(list_fn: Callable[..., Any], **kwargs: Any) -> tuple[int, list[str], str | None]:
    """(how many ``list_fn`` lists, the first ``LEFT_EXAMPLES`` names, the list's resourceVersion to watch from),
    read page by page as JSON and counted, not kept: at 100,000 pods, names alone are ~13 MB."""
    count, examples, rv = 0, list[str](), None

    def restart() -> None:  # the list's snapshot expired between pages: it is read again from the start
        nonlocal count, examples, rv
        count, examples, rv = 0, [], None

    for page in list_pages(partial(call, list_fn, service="Kubernetes", operation="list (waiting for deletion)"),
                           metadata_only=True, on_restart=restart, **kwargs):
        items = page.get("items") or []
        count += len(items)
        examples += [item["metadata"]["name"] for item in items[:LEFT_EXAMPLES - len(examples)]]
        rv = rv or (page.get("metadata") or {}).get("resourceVersion")
    return count, examples, rv


def wait_gone(list_fn: Callable[..., Any], *, stall_seconds: float, what: str = "objects",
              **kwargs: Any) -> tuple[int, list[str]]:
    """Watch a listing until it is empty, for as long as things keep going: gives up only once nothing has gone
    for ``stall_seconds``. The garbage collector deletes a big Job's pods a batch at a time, under
    kube-controller-manager's client QPS (https://kubernetes.io/docs/reference/command-line-tools-reference/kube-controller-manager/,
    ``--kube-api-qps``), so the pods of a 100,000-pod Job take many minutes to go: a fixed deadline would call
    them leaked while they are being deleted. The wait time counts from the end of the first list (reading
    100,000 pods from a busy API server takes minutes) and restarts at every deletion seen, by the watch or as a
    smaller count in a later list. A later list's own time does not count either: it answers for the moment it
    began (a paged list is one snapshot, "Retrieving large results sets in chunks" in
    https://kubernetes.io/docs/reference/using-api/api-concepts/), and the watch that follows replays what went
    while it was read. Logs progress every ``PROGRESS_SECONDS`` while they go.

    Returns (how many are left, up to ``LEFT_EXAMPLES`` of their names): (0, []) when all are gone. Holds no
    name per object: the list is paged and counted, the watch events are read as JSON one at a time (a DELETED
    event counts one down, an ADDED one up: the watch starts at the list's resourceVersion, so every event is of
    something listed or newer). Both ask for metadata only (``PartialObjectMetadataList`` /
    ``PartialObjectMetadata``, ``tasks.cloud.list_pages``): a pod's metadata is about a quarter of its JSON, and a
    page of 500 whole pods cost the flow ~20 MB of peak memory at 100,000 pods. Raises ``CloudError`` when listing
    fails after the retry policy.
    """
    import json

    from kubernetes.watch.watch import iter_resp_lines

    last_gone = time.monotonic()
    first: int | None = None
    previous: int | None = None
    next_progress = time.monotonic() + PROGRESS_SECONDS
    while True:
        list_started = time.monotonic()
        count, examples, rv = _listed(list_fn, **kwargs)
        if first is None or (previous is not None and count < previous):
            # The wait time counts from here: reading 100,000 pods from a busy API server takes minutes, and
            # what went meanwhile (or between two watches) is only seen now.
            last_gone = time.monotonic()
        first = count if first is None else first
        previous = count
        # A list answers for the moment it began (every page of a paged list is served from the first page's
        # snapshot), so its own time does not count: what goes while it is read is seen by the next watch.
        remaining = last_gone + stall_seconds - list_started
        if not count or remaining <= 0:
            return count, examples
        try:
            resp = list_fn(watch=True, resource_version=rv, timeout_seconds=max(1, int(remaining + 0.999)),
                           _preload_content=False, _headers={"Accept": METADATA_WATCH}, **kwargs)
            try:
                for line in iter_resp_lines(resp):
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    kind = event.get("type")
                    if kind == "ERROR":
                        break  # e.g. 410 Gone: relist
                    if kind == "DELETED":
                        count -= 1
                        last_gone = time.monotonic()
                    elif kind == "ADDED":
                        count += 1
                    if count <= 0:
                        return 0, []
                    if time.monotonic() >= next_progress:
                        next_progress = time.monotonic() + PROGRESS_SECONDS
                        log.info("teardown: %s of %s %s gone, waiting for the other %s", f"{max(0, first - count):,}",
                                 f"{first:,}", what, f"{count:,}")
                    if time.monotonic() - last_gone >= stall_seconds:
                        break  # nothing went for the whole wait time: relist once and give up
            finally:
                resp.release_conn()
        except Exception as exc:  # noqa: BLE001 - a dropped watch: relist
            log.debug("watch dropped (%s); relisting", type(exc).__name__)
            time.sleep(0.5)
        previous = count


def record_left(rec: "_Recorder", kind: str, count: int, examples: list[str], why: str) -> None:
    """Record what ``wait_gone`` left: one failed item per object when all are named, else a single item that
    counts them and names a few (100,000 pods are not 100,000 report lines, log lines and event bytes)."""
    if count <= len(examples):
        for name in examples:
            rec.failed(kind, name, why)
    elif count:
        rec.failed(kind, f"{', '.join(examples)} and {count - len(examples):,} more", why, count=count)


def _names(listing: Any) -> set[str]:
    return {item.metadata.name for item in listing.items or []}


# --------------------------------------------------------------------------------------------- kubernetes


def _teardown_jobs(rec: _Recorder, *, delete: bool, why: str, ns: str, selector: str, job: JobHandle | None,
                   core_v1: Any, batch_v1: Any, timeout: float) -> None:
    names = {job.name} if job else set()
    names |= _names(call(batch_v1.list_namespaced_job, ns, label_selector=selector, service="Kubernetes",
                         operation="list Jobs"))
    if not delete:
        for name in sorted(names):
            rec.kept("Job", name, why)
        return
    for name in sorted(names):
        # Background: the Job goes now, the garbage collector deletes its pods (the API default is Orphan).
        _delete(rec, "Job", name, why,
                partial(batch_v1.delete_namespaced_job, name, ns, propagation_policy="Background"))
    count, examples = wait_gone(core_v1.list_namespaced_pod, stall_seconds=timeout, what="pods", namespace=ns,
                                label_selector=selector)
    record_left(rec, "Pod", count, examples, f"still present: none went away in the last {timeout:.0f}s after "
                "its Job was deleted")


def _teardown_config(rec: _Recorder, *, delete: bool, why: str, ns: str, selector: str,
                     config: ConfigHandle | None, core_v1: Any) -> None:
    kinds = {
        "ConfigMap": (core_v1.list_namespaced_config_map, core_v1.delete_namespaced_config_map,
                      config.config_map if config else None),
        "Secret": (core_v1.list_namespaced_secret, core_v1.delete_namespaced_secret,
                   config.secret if config else None),
        "ServiceAccount": (core_v1.list_namespaced_service_account, core_v1.delete_namespaced_service_account,
                           config.service_account if config else None),
    }
    for kind, (list_fn, delete_fn, known) in kinds.items():
        names = ({known} if known else set()) | _names(call(list_fn, ns, label_selector=selector,
                                                            service="Kubernetes", operation=f"list {kind}s"))
        for name in sorted(names):
            if delete:
                _delete(rec, kind, name, why, partial(delete_fn, name, ns))
            else:
                rec.kept(kind, name, why)


def _teardown_volume(rec: _Recorder, *, delete: bool, why: str, ns: str, selector: str,
                     volume: VolumeHandle | None, core_v1: Any, timeout: float) -> None:
    if volume and volume.mode == "pvc" and volume.claim_name:
        rec.kept("PersistentVolumeClaim", volume.claim_name, "the user's own claim (storage mode 'pvc')")
    ours = volume if volume and volume.mode == "nas" else None
    pvcs = ({ours.claim_name} if ours and ours.claim_name else set()) | _names(call(
        core_v1.list_namespaced_persistent_volume_claim, ns, label_selector=selector, service="Kubernetes",
        operation="list PersistentVolumeClaims"))
    pvs = ({ours.pv_name} if ours and ours.pv_name else set()) | _names(call(
        core_v1.list_persistent_volume, label_selector=selector, service="Kubernetes",
        operation="list PersistentVolumes"))
    if not delete:
        for kind, names in (("PersistentVolumeClaim", pvcs), ("PersistentVolume", pvs)):
            for name in sorted(names):
                rec.kept(kind, name, why)
        return
    for name in sorted(pvcs):
        _delete(rec, "PersistentVolumeClaim", name, why,
                partial(core_v1.delete_namespaced_persistent_volume_claim, name, ns))
    if pvcs:
        count, examples = wait_gone(core_v1.list_namespaced_persistent_volume_claim, stall_seconds=timeout,
                                    what="PersistentVolumeClaims", namespace=ns, label_selector=selector)
        record_left(rec, "PersistentVolumeClaim", count, examples, f"still terminating after {timeout:.0f}s (a pod "
                    "still uses it?)")
    for name in sorted(pvs):
        _delete(rec, "PersistentVolume", name, why, partial(core_v1.delete_persistent_volume, name))


# --------------------------------------------------------------------------------------------- NAS


def _nas_target(spec: BatchSpec, volume: VolumeHandle | None, nas: Any) -> dict[str, Any] | None:
    """The run's file system (from the handle, else found by id or name tag), or None."""
    if volume and volume.file_system_id:
        return describe_file_system(nas, volume.file_system_id)
    if spec.storage.mode != "nas":
        return None
    options = spec.storage.nas
    if options.file_system_id:
        return describe_file_system(nas, options.file_system_id)
    found = find_file_systems_by_name(nas, options.name)
    return found[0] if found else None


def _managed(tags: dict[str, str]) -> bool:
    return tags.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE


def _ours_to_delete(rec: _Recorder, kind: str, name: str, tags: dict[str, str], *, delete: bool, why: str) -> bool:
    """True when the resource carries ask-batch's managed-by tag and the policy deletes it; else it is recorded
    as kept, saying why."""
    if not _managed(tags):
        rec.kept(kind, name, "not created by ask-batch (no managed-by tag)")
        return False
    if not delete:
        rec.kept(kind, name, why)
        return False
    return True


def _wait_no_mount_targets(nas: Any, fs_id: str, *, timeout: float, poll: float = 1.0) -> list[str]:
    """Poll (NAS has no watch) until the file system has no mount target; returns those left."""
    deadline = time.monotonic() + timeout
    while True:
        left = [mt["MountTargetDomain"] for mt in list_mount_targets(nas, fs_id)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(poll)


def _teardown_nas(rec: _Recorder, *, delete: bool, why: str, spec: BatchSpec, volume: VolumeHandle | None,
                  nas: Any, timeout: float) -> None:
    fs = _nas_target(spec, volume, nas)
    if fs is None:
        return
    fs_id = str(fs["FileSystemId"])
    if _ours_to_delete(rec, "NasFileSystem", fs_id, tags_of(fs), delete=delete, why=why):
        _delete_file_system(rec, fs_id, why=why, nas=nas, timeout=timeout)


def _delete_file_system(rec: _Recorder, fs_id: str, *, why: str, nas: Any, timeout: float) -> None:
    """Delete the mount targets, wait until they are gone, then the file system."""
    from alibabacloud_nas20170626 import models as m

    for domain in [mt["MountTargetDomain"] for mt in list_mount_targets(nas, fs_id)]:
        _delete(rec, "NasMountTarget", domain, why, partial(nas.delete_mount_target, m.DeleteMountTargetRequest(
            file_system_id=fs_id, mount_target_domain=domain)), service="NAS")
    left = _wait_no_mount_targets(nas, fs_id, timeout=timeout)
    if left:
        rec.failed("NasFileSystem", fs_id, f"mount target(s) {', '.join(left)} still present after "
                   f"{timeout:.0f}s; DeleteFileSystem would be refused")
        return
    _delete(rec, "NasFileSystem", fs_id, why,
            lambda: nas.delete_file_system(m.DeleteFileSystemRequest(file_system_id=fs_id)), service="NAS")


# --------------------------------------------------------------------------------------------- cluster


def _teardown_cluster(rec: _Recorder, *, delete: bool, why: str, spec: BatchSpec, cluster: ClusterHandle | None,
                      cs: Any) -> None:
    if spec.cluster.managed is None:
        if cluster or delete:
            rec.kept("Cluster", "(existing)", "cluster mode 'existing': ask-batch never deletes it")
        return
    cluster_id = cluster.cluster_id if cluster else None
    if not cluster_id:
        found = find_cluster(cs, region=spec.target.region, name=spec.cluster.managed.name, kind=spec.cluster.mode)
        cluster_id = found["cluster_id"] if found else None
    if not cluster_id:
        return
    _delete_cluster(rec, cluster_id, delete=delete, why=why, cs=cs)


def _delete_cluster(rec: _Recorder, cluster_id: str, *, delete: bool, why: str, cs: Any) -> None:
    """Delete the cluster if it carries ask-batch's managed-by tag (else keep it and say why)."""
    from alibabacloud_cs20151215 import models as m

    detail = call_or_none(cs.describe_cluster_detail, cluster_id, service="CS", operation="DescribeClusterDetail")
    if detail is None:
        rec.deleted("Cluster", cluster_id, f"{why}; already gone")
        return
    body = detail.body.to_map() if detail.body else {}
    tags = {t.get("key"): t.get("value") for t in body.get("tags") or []}
    if not _ours_to_delete(rec, "Cluster", cluster_id, tags, delete=delete, why=why):
        return
    options = [m.DeleteClusterRequestDeleteOptions(resource_type=r, delete_mode="delete")
               for r in ("SLS_Data", "SLS_ControlPlane", "PrivateZone", "ALB")]
    _delete(rec, "Cluster", cluster_id, why, lambda: cs.delete_cluster(
        cluster_id, m.DeleteClusterRequest(retain_all_resources=False, delete_options=options)), service="CS")


# --------------------------------------------------------------------------------------------- the stage


def _step(rec: _Recorder, kind: str, fn: Callable[[], None]) -> None:
    """Run one step; an unexpected error (a failed listing, say) is recorded and the next step still runs."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - teardown must go on
        rec.failed(kind, "(lookup)", f"{type(exc).__name__}: {exc}")


def teardown(spec: BatchSpec, *, run_key: str, succeeded: bool, cluster: ClusterHandle | None,
             volume: VolumeHandle | None, config: ConfigHandle | None, job: JobHandle | None, core_v1: Any | None,
             batch_v1: Any | None, nas: Any | None, cs: Any | None, wait_seconds: float = 120.0) -> TeardownReport:
    """Delete the run's objects per ``spec.teardown.effective()`` and report; never raises for a single failure.

    Args:
        spec: validated parameters (``teardown``, and ``storage``/``cluster`` to find things without handles).
        run_key: the run key; objects are also found by the label ``ask-batch.io/run=<run key>``.
        succeeded: the run's outcome (for 'on_success' policies).
        cluster, volume, config, job: handles from the stages that finished; any may be None.
        core_v1, batch_v1: Kubernetes APIs (None when the cluster could not be reached: recorded as a failure).
        nas: NAS client (needed when the NAS may be deleted), cs: CS client (cluster deletion, mode 'ask').
        wait_seconds: how long to wait for mount targets to disappear, and for pods and PVCs while none of them
            goes away (they are waited for as long as they keep going).

    Returns:
        The ``TeardownReport``: deleted, kept (and why), failed (with the error).

    Example:
        >>> teardown(spec, run_key="demo", succeeded=True, cluster=ch, volume=None, config=None, job=jh,
        ...          core_v1=core, batch_v1=batch, nas=None, cs=None).lines()
        ['deleted: Job askb-demo-1a2b3c4d5e (policy \\'always\\')', ...]
    """
    rec = _Recorder()
    policies = spec.teardown.effective()
    ns = cluster.namespace if cluster else (job.namespace if job else spec.cluster.namespace)
    selector = run_selector(run_key)
    if core_v1 is None or batch_v1 is None:
        if job or config or (volume and volume.claim_name):
            rec.failed("Kubernetes", ns, "no connection to the cluster: the run's Kubernetes objects were not "
                       "deleted; fix: run the sweep again once the cluster is reachable")
    else:
        steps = (("Job", "job", lambda d, w: _teardown_jobs(rec, delete=d, why=w, ns=ns, selector=selector, job=job,
                                                            core_v1=core_v1, batch_v1=batch_v1,
                                                            timeout=wait_seconds)),
                 ("Config", "config", lambda d, w: _teardown_config(rec, delete=d, why=w, ns=ns, selector=selector,
                                                                    config=config, core_v1=core_v1)),
                 ("Volume", "volume", lambda d, w: _teardown_volume(rec, delete=d, why=w, ns=ns, selector=selector,
                                                                    volume=volume, core_v1=core_v1,
                                                                    timeout=wait_seconds)))
        for kind, key, fn in steps:
            delete, why = decide(policies[key], succeeded)
            _step(rec, kind, partial(fn, delete, why))
    if nas is not None:
        delete, why = decide(policies["nas"], succeeded)
        _step(rec, "NasFileSystem", lambda: _teardown_nas(rec, delete=delete, why=why, spec=spec, volume=volume,
                                                          nas=nas, timeout=wait_seconds))
    elif volume and volume.file_system_id:
        rec.kept("NasFileSystem", volume.file_system_id, "no NAS client given")
    if cs is not None or spec.cluster.mode == "existing":
        delete, why = decide(policies["cluster"], succeeded)
        _step(rec, "Cluster", lambda: _teardown_cluster(rec, delete=delete, why=why, spec=spec, cluster=cluster,
                                                        cs=cs))
    return rec.report


def sweep(spec: BatchSpec, *, run_key: str, core_v1: Any | None, batch_v1: Any | None, nas: Any | None,
          cs: Any | None, wait_seconds: float = 120.0) -> TeardownReport:
    """Clean up after a run that left no handles (crashed, killed): everything is found by label and tag.

    The outcome of such a run is unknown, so 'on_success' resources are kept.
    """
    return teardown(spec, run_key=run_key, succeeded=False, cluster=None, volume=None, config=None, job=None,
                    core_v1=core_v1, batch_v1=batch_v1, nas=nas, cs=cs, wait_seconds=wait_seconds)


# --------------------------------------------------------------------------------------------- cleanup


CLEANUP_WHY = "cleanup: created by ask-batch"


def delete_managed_objects(*, namespace: str, core_v1: Any, batch_v1: Any, coordination_v1: Any,
                           wait_seconds: float = 120.0) -> TeardownReport:
    """Delete every object labelled ``app.kubernetes.io/managed-by=ask-batch`` in ``namespace`` (all runs), in
    teardown's order: Jobs and their pods (and pods left without a Job), ConfigMaps and Secrets, PVCs and the
    PVs (cluster-scoped: all of ask-batch's), ServiceAccounts, Leases. For ``flows.cleanup``; never raises for one
    failure."""
    rec = _Recorder()
    sel = MANAGED_SELECTOR

    def jobs_and_pods() -> None:
        for name in sorted(_names(call(batch_v1.list_namespaced_job, namespace, label_selector=sel,
                                       service="Kubernetes", operation="list Jobs"))):
            _delete(rec, "Job", name, CLEANUP_WHY,
                    partial(batch_v1.delete_namespaced_job, name, namespace, propagation_policy="Background"))
        for name in sorted(_names(call(core_v1.list_namespaced_pod, namespace, label_selector=sel,
                                       service="Kubernetes", operation="list Pods"))):
            _delete(rec, "Pod", name, CLEANUP_WHY, partial(core_v1.delete_namespaced_pod, name, namespace))
        count, examples = wait_gone(core_v1.list_namespaced_pod, stall_seconds=wait_seconds, what="pods",
                                    namespace=namespace, label_selector=sel)
        record_left(rec, "Pod", count, examples, f"still present: none went away in the last {wait_seconds:.0f}s "
                    "after its deletion")

    def listed(kind: str, list_fn: Any, delete_fn: Any) -> None:
        for name in sorted(_names(call(list_fn, namespace, label_selector=sel, service="Kubernetes",
                                       operation=f"list {kind}s"))):
            _delete(rec, kind, name, CLEANUP_WHY, partial(delete_fn, name, namespace))

    _step(rec, "Job", jobs_and_pods)
    _step(rec, "Config", lambda: _teardown_config(rec, delete=True, why=CLEANUP_WHY, ns=namespace, selector=sel,
                                                  config=None, core_v1=core_v1))
    _step(rec, "Volume", lambda: _teardown_volume(rec, delete=True, why=CLEANUP_WHY, ns=namespace, selector=sel,
                                                  volume=None, core_v1=core_v1, timeout=wait_seconds))
    _step(rec, "ServiceAccount", lambda: listed("ServiceAccount", core_v1.list_namespaced_service_account,
                                                core_v1.delete_namespaced_service_account))
    _step(rec, "Lease", lambda: listed("Lease", coordination_v1.list_namespaced_lease,
                                       coordination_v1.delete_namespaced_lease))
    return rec.report


def delete_managed_file_system(nas: Any, file_system_id: str, *, wait_seconds: float = 120.0) -> TeardownReport:
    """Delete a NAS file system that carries ask-batch's managed-by tag, its mount targets first (else kept)."""
    rec = _Recorder()

    def step() -> None:
        fs = describe_file_system(nas, file_system_id)
        if fs is None:
            rec.deleted("NasFileSystem", file_system_id, f"{CLEANUP_WHY}; already gone")
        elif not _managed(tags_of(fs)):
            rec.kept("NasFileSystem", file_system_id, "not created by ask-batch (no managed-by tag)")
        else:
            _delete_file_system(rec, file_system_id, why=CLEANUP_WHY, nas=nas, timeout=wait_seconds)

    _step(rec, "NasFileSystem", step)
    return rec.report


def delete_managed_cluster(cs: Any, cluster_id: str) -> TeardownReport:
    """Delete a CS cluster that carries ask-batch's managed-by tag (else kept, and said why)."""
    rec = _Recorder()
    _step(rec, "Cluster", lambda: _delete_cluster(rec, cluster_id, delete=True, why=CLEANUP_WHY, cs=cs))
    return rec.report


# --------------------------------------------------------------------------------------------- Prefect task


def _cluster_for_sweep(spec: BatchSpec, cs: Any | None, run_key: str) -> ClusterHandle | None:
    """A handle for the cluster without creating anything (the cluster stage may not have finished)."""
    if spec.cluster.mode == "existing":
        return existing_handle(spec)  # no API call in this mode
    return locate_cluster(spec, cs=cs) if cs else None


@task(name="teardown", cache_policy=NO_CACHE)
def teardown_task(spec: BatchSpec, *, run_key: str, succeeded: bool, cluster: ClusterHandle | None = None,
                  volume: VolumeHandle | None = None, config: ConfigHandle | None = None,
                  job: JobHandle | None = None) -> TeardownReport:
    """Prefect task: ``teardown`` with clients built from ``spec.target``; a client that cannot be built is
    recorded in the report, never raised."""
    from kubernetes import client

    core_v1 = batch_v1 = None
    with stage_context(spec) as ctx, stage_logs(ctx.scrubber):
        cs = ctx.cs()
        nas = ctx.nas() if spec.storage.mode == "nas" else None
        try:
            handle = cluster or _cluster_for_sweep(spec, cs, run_key)
            if handle is not None:
                api = ctx.kube(handle)
                core_v1, batch_v1 = client.CoreV1Api(api), client.BatchV1Api(api)
        except Exception as exc:  # noqa: BLE001 - teardown still does what it can without Kubernetes
            log.warning("teardown: cannot reach the cluster (%s): %s", type(exc).__name__, exc)
        # The per-item lines are logged by the recorder as they happen (forwarded by stage_logs).
        return teardown(spec, run_key=run_key, succeeded=succeeded, cluster=cluster, volume=volume,
                        config=config, job=job, core_v1=core_v1, batch_v1=batch_v1, nas=nas, cs=cs)
