"""Everything ask-batch created in an account, found by its tags and labels (for ``flows.cleanup``).

Nothing here deletes; it lists, read-only:

- CS clusters (ASK and ACS) tagged ``app.kubernetes.io/managed-by: ask-batch`` (``tasks.render.manifests.cloud_tags``),
  via DescribeClustersForRegion, which returns each cluster's tags;
- NAS file systems with the same tag (DescribeFileSystems filters by tag; the tag is re-checked here) and their
  mount targets (in the same answer);
- in every reachable cluster (the tagged ones and the spec's own, e.g. a cluster brought by kubeconfig): Jobs,
  Pods, ConfigMaps, Secrets, PersistentVolumeClaims, PersistentVolumes, ServiceAccounts and Leases labelled
  ``app.kubernetes.io/managed-by=ask-batch``, across all namespaces.

Each finding carries its hourly price when it is billed by itself (``tasks.render.hourly_cost``): running pods,
NAS file systems, clusters (no management fee). A listing that fails is recorded as a problem, never skipped
silently: the cleanup then exits non-zero.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tasks.cloud.cluster_access import DEAD_STATES, PROFILES, connect, handle_from, list_clusters, locate_cluster
from tasks.cloud.nas import nas_call, tags_of
from tasks.cloud.retry import call
from tasks.handles import ClusterHandle
from tasks.naming import MANAGED_BY_LABEL, MANAGED_BY_VALUE, MANAGED_SELECTOR, RUN_LABEL
from tasks.render.hourly_cost import Hourly, cluster_hourly, nas_hourly, pod_hourly
from tasks.spec import BatchSpec

log = logging.getLogger("ask_batch.inventory")

CREATED_BY_RUN_TAG = "ask-batch.io/created-by-run"


@dataclass(frozen=True)
class Found:
    """One thing ask-batch created. ``hourly`` None: not billed by itself (a ConfigMap, a Job object)."""

    kind: str
    name: str
    where: str
    run_key: str = ""
    hourly: Hourly | None = None
    cluster_id: str | None = None
    namespace: str | None = None


@dataclass
class ClusterScan:
    """A cluster whose Kubernetes objects were listed, and the API client to delete them with."""

    key: str
    api: Any
    namespaces: set[str] = field(default_factory=set)
    has_volumes: bool = False


@dataclass
class Inventory:
    found: list[Found] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    clusters: list[str] = field(default_factory=list)       # ids of tagged CS clusters
    file_systems: list[str] = field(default_factory=list)   # ids of tagged NAS file systems
    scans: list[ClusterScan] = field(default_factory=list)

    def empty(self) -> bool:
        return not self.found


def _managed(tags: dict[str, Any]) -> bool:
    return tags.get(MANAGED_BY_LABEL) == MANAGED_BY_VALUE


def _attempt(inv: Inventory, what: str, fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - recorded: the cleanup reports it and exits non-zero
        inv.problems.append(f"could not list {what}: {type(exc).__name__}: {exc}")


def managed_clusters(cs: Any, *, region: str) -> list[dict[str, Any]]:
    """The live CS clusters of the region (ASK or ACS profile) that carry ask-batch's managed-by tag."""
    out = []
    for cluster in list_clusters(cs, region=region):
        tags = {t.get("key"): t.get("value") for t in cluster.get("tags") or []}
        if (_managed(tags) and cluster.get("profile") in PROFILES.values()
                and cluster.get("state") not in DEAD_STATES):
            out.append(cluster)
    return out


def managed_file_systems(nas: Any) -> list[dict[str, Any]]:
    """Every NAS file system of the region with ask-batch's managed-by tag (paged; tag re-checked)."""
    from alibabacloud_nas20170626 import models as m

    found: list[dict[str, Any]] = []
    page = 1
    while True:
        req = m.DescribeFileSystemsRequest().from_map({"PageNumber": page, "PageSize": 100, "Tag": [
            {"Key": MANAGED_BY_LABEL, "Value": MANAGED_BY_VALUE}]})
        body = nas_call(nas.describe_file_systems, req, "DescribeFileSystems")
        rows = (body.get("FileSystems") or {}).get("FileSystem") or []
        found += [fs for fs in rows if _managed(tags_of(fs))]
        if not rows or page * int(body.get("PageSize") or 100) >= int(body.get("TotalCount") or 0):
            return found
        page += 1


def _kubernetes_objects(api: Any, *, key: str, kind: str, region: str, site: str | None) -> tuple[list[Found],
                                                                                               ClusterScan]:
    """Every object labelled managed-by ask-batch in the cluster, all namespaces; pods priced."""
    from kubernetes import client

    core, batch, coord = client.CoreV1Api(api), client.BatchV1Api(api), client.CoordinationV1Api(api)
    scan = ClusterScan(key=key, api=api)
    found: list[Found] = []
    listings: list[tuple[str, Callable[..., Any]]] = [
        ("Job", batch.list_job_for_all_namespaces), ("Pod", core.list_pod_for_all_namespaces),
        ("ConfigMap", core.list_config_map_for_all_namespaces), ("Secret", core.list_secret_for_all_namespaces),
        ("PersistentVolumeClaim", core.list_persistent_volume_claim_for_all_namespaces),
        ("PersistentVolume", core.list_persistent_volume),
        ("ServiceAccount", core.list_service_account_for_all_namespaces),
        ("Lease", coord.list_lease_for_all_namespaces)]
    for what, list_fn in listings:
        listing = call(list_fn, label_selector=MANAGED_SELECTOR, service="Kubernetes",
                       operation=f"list {what}s (all namespaces)")
        for item in listing.items or []:
            meta = item.metadata
            ns = meta.namespace
            hourly = None
            if what == "Pod":
                hourly = pod_hourly(api.sanitize_for_serialization(item), region=region, kind=kind, site=site)
            if ns:
                scan.namespaces.add(ns)
            if what == "PersistentVolume":
                scan.has_volumes = True
            found.append(Found(kind=what, name=meta.name, where=f"{key}/{ns}" if ns else key,
                               run_key=(meta.labels or {}).get(RUN_LABEL, ""), hourly=hourly, cluster_id=key,
                               namespace=ns))
    return found, scan


def take_inventory(spec: BatchSpec, *, cs: Any | None, nas: Any | None, site: str | None = None) -> Inventory:
    """List everything ask-batch created in ``spec.target``'s region and clusters (module docstring).

    Args:
        spec: gives the region, the endpoints and the spec's own cluster (found, never created).
        cs, nas: the CS and NAS clients (None: that service is not looked at, e.g. a kubeconfig-only setup).
        site: the account's billing site ('cn' or 'intl') for the currency; None guesses from the region.
    """
    inv = Inventory()
    region = spec.target.region
    handles: dict[str, ClusterHandle] = {}
    if cs is not None:
        def clusters() -> None:
            for cluster in managed_clusters(cs, region=region):
                cid = cluster["cluster_id"]
                inv.clusters.append(cid)
                handles[cid] = handle_from(spec, cluster, created=False)
                kind = "ACS" if cluster.get("profile") == PROFILES["acs"] else "ASK"
                tags = {t.get("key"): t.get("value") for t in cluster.get("tags") or []}
                inv.found.append(Found(kind="Cluster", name=f"{cid} ({kind} {cluster.get('name')})", where=region,
                                       run_key=tags.get(CREATED_BY_RUN_TAG, ""),
                                       hourly=cluster_hourly(region=region, site=site), cluster_id=cid))
        _attempt(inv, f"the CS clusters of {region}", clusters)
    if nas is not None:
        def file_systems() -> None:
            for fs in managed_file_systems(nas):
                fs_id = str(fs["FileSystemId"])
                inv.file_systems.append(fs_id)
                tags = tags_of(fs)
                inv.found.append(Found(kind="NasFileSystem", name=fs_id, where=region,
                                       run_key=tags.get(CREATED_BY_RUN_TAG, ""),
                                       hourly=nas_hourly(float(fs.get("MeteredSize") or 0),
                                                         str(fs.get("StorageType") or ""), region=region, site=site)))
                for mt in (fs.get("MountTargets") or {}).get("MountTarget") or []:
                    inv.found.append(Found(kind="NasMountTarget", name=str(mt["MountTargetDomain"]),
                                           where=f"{region}/{fs_id}", run_key=tags.get(CREATED_BY_RUN_TAG, "")))
        _attempt(inv, f"the NAS file systems of {region}", file_systems)

    def own_cluster() -> None:
        if spec.cluster.mode != "existing" and cs is None:
            raise ValueError(f"cluster mode {spec.cluster.mode!r} is reached through CS, which is not looked at "
                             f"(--kubernetes-only); fix: drop --kubernetes-only")
        handle = locate_cluster(spec, cs=cs)
        if handle is not None and (handle.cluster_id or "existing") not in handles:
            handles[handle.cluster_id or "existing"] = handle
    _attempt(inv, "the spec's own cluster", own_cluster)

    for key, handle in handles.items():
        def scan(key: str = key, handle: ClusterHandle = handle) -> None:
            api = connect(handle, spec, cs=cs if handle.mode in ("ask", "acs") else None)
            kind = handle.kind if handle.kind in ("ask", "acs") else (
                "acs" if spec.cluster.existing.kind == "acs" else "ask")
            found, cluster_scan = _kubernetes_objects(api, key=key, kind=kind, region=region, site=site)
            inv.found += found
            inv.scans.append(cluster_scan)
        _attempt(inv, f"the Kubernetes objects of cluster {key}", scan)
    return inv
