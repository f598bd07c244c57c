"""Stage ensure_cluster: find the ASK or ACS cluster by name or create it; or take an existing cluster's kubeconfig.

ASK and ACS clusters are found and created through the same CS API and differ by ``profile``: ``Serverless`` for
ACK Serverless, ``Acs`` for Container Compute Service. The handle records which kind the cluster is
(``ClusterHandle.kind``), because pods are rendered differently (ECI annotations on ASK, ACS labels on ACS). In
mode 'existing' the kind is ``cluster.existing.kind``, or with 'auto' the kind of the CS cluster whose API server
endpoint is the kubeconfig's server ('ask' when no ASK/ACS cluster in the region has it).

Find-then-create, safe to repeat: the lookup filters on the exact name (the CS ``name`` filter is fuzzy), ASK's
current type (``ManagedKubernetes`` + ``Serverless``) and a live state; creation carries a ``client_token`` derived
from region and name, so two racing attempts get one cluster. Listing uses ``DescribeClustersForRegion`` because
``DescribeClustersV1`` is being switched off in 2026 (alibaba.md §0.2); V1 is only a fallback.

Alibaba closed ASK creation to new accounts in February 2025: when CreateCluster is refused, the error says so
and names the way out (cluster mode 'existing').
"""

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.clients import kube_api_client, kubeconfig_from_block, load_kubeconfig
from tasks.handles import ClusterHandle
from tasks.manifests import create_cluster_body
from tasks.retry import CloudError, call
from tasks.spec import BatchSpec
from tasks.stage import RETRY_DELAYS, cs_for, stage_logs, transient_only

log = logging.getLogger("ask_batch.cluster")

DEAD_STATES = {"deleting", "deleted", "delete_failed", "failed"}
PROFILES = {"ask": "Serverless", "acs": "Acs"}  # cluster kind -> CS profile
KIND_NAMES = {"ask": "ASK", "acs": "ACS"}
CREATION_REFUSED_HINT = (
    "Alibaba Cloud stopped ACK Serverless (ASK) cluster creation for accounts that never created one (since "
    "2025-02-17; they are offered ACS instead). If that is the case here, run against a cluster you already have: "
    "set cluster.mode to 'existing' with cluster.existing.kubeconfig_path (or a KubernetesCredentials block).")


class ClusterError(RuntimeError):
    """The cluster cannot be found, created or reached; the message says what to change."""


def _as_map(obj: Any) -> dict[str, Any]:
    return obj.to_map() if hasattr(obj, "to_map") else dict(obj or {})


def list_clusters(cs: Any, *, region: str, name: str | None = None,
                  profile: str | None = None) -> list[dict[str, Any]]:
    """Every ManagedKubernetes cluster of the region (filtered by CS on ``name`` fuzzily and ``profile``)."""
    from alibabacloud_cs20151215 import models as m

    out: list[dict[str, Any]] = []
    page = 1
    while True:
        req = m.DescribeClustersForRegionRequest(cluster_type="ManagedKubernetes", profile=profile,
                                                 name=name, page_number=page, page_size=100)
        try:
            resp = call(cs.describe_clusters_for_region, region, req, service="CS",
                        operation="DescribeClustersForRegion")
        except CloudError as err:
            if err.status != 404:
                raise
            req_v1 = m.DescribeClustersV1Request(cluster_type="ManagedKubernetes", profile=profile,
                                                 name=name, region_id=region, page_number=page, page_size=100)
            resp = call(cs.describe_clusters_v1, req_v1, service="CS", operation="DescribeClustersV1")
        body = _as_map(resp.body)
        clusters = body.get("clusters") or []
        out += clusters
        total = (body.get("page_info") or {}).get("total_count") or 0
        if not clusters or page * 100 >= total:
            return out
        page += 1


def find_cluster(cs: Any, *, region: str, name: str, kind: str = "ask") -> dict[str, Any] | None:
    """The live ASK (``kind`` 'ask') or ACS ('acs') cluster named exactly ``name`` in ``region``, or None."""
    profile = PROFILES[kind]
    matches = [c for c in list_clusters(cs, region=region, name=name, profile=profile)
               if c.get("name") == name and c.get("cluster_type") == "ManagedKubernetes"
               and c.get("profile") == profile and c.get("state") not in DEAD_STATES]
    if len(matches) > 1:
        ids = ", ".join(c["cluster_id"] for c in matches)
        raise ClusterError(f"{len(matches)} {KIND_NAMES[kind]} clusters are named {name!r} in {region} ({ids}); "
                           f"fix: give cluster.{kind}.name a unique name")
    return matches[0] if matches else None


def find_ask_cluster(cs: Any, *, region: str, name: str) -> dict[str, Any] | None:
    """The live ASK cluster named exactly ``name`` in ``region``, as a CS cluster map, or None."""
    return find_cluster(cs, region=region, name=name, kind="ask")


def create_managed_cluster(cs: Any, spec: BatchSpec, *, run_key: str) -> str:
    """CreateCluster for the ASK or ACS cluster of ``spec.cluster.mode``; returns the cluster id.

    A refusal of an ASK creation carries the ASK-closed-to-new-accounts hint (use ACS).
    """
    from alibabacloud_cs20151215 import models as m

    kind = spec.cluster.mode
    opts = spec.cluster.managed
    assert opts is not None, "mode 'ask' or 'acs' needed"
    body = create_cluster_body(opts, region=spec.target.region, run_key=run_key, profile=PROFILES[kind])
    try:
        resp = call(cs.create_cluster, m.CreateClusterRequest().from_map(body), service="CS",
                    operation="CreateCluster")
    except CloudError as err:
        if kind == "ask" and err.status is not None and 400 <= err.status < 500:
            raise ClusterError(f"{err}\n{CREATION_REFUSED_HINT}") from err
        raise
    return _as_map(resp.body)["cluster_id"]


def create_ask_cluster(cs: Any, spec: BatchSpec, *, run_key: str) -> str:
    """CreateCluster for ASK (kept for callers of the ASK-only name); see ``create_managed_cluster``."""
    return create_managed_cluster(cs, spec, run_key=run_key)


def wait_cluster_running(cs: Any, cluster_id: str, *, timeout: float, poll: float = 10.0,
                         sleep: Callable[[float], None] = time.sleep,
                         clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Poll DescribeClusterDetail until ``running`` (CS has no watch); log each state change.

    The interval starts at 1 s and doubles up to ``poll``: a found cluster is usually running already, a new one
    takes minutes, and neither should cost a fixed 10 s or a request storm.
    """
    deadline, last, interval = clock() + timeout, None, 1.0
    while True:
        detail = _as_map(call(cs.describe_cluster_detail, cluster_id, service="CS",
                              operation="DescribeClusterDetail").body)
        state = detail.get("state")
        if state != last:
            log.info("cluster %s: %s", cluster_id, state)
            last = state
        if state == "running":
            return detail
        if state in DEAD_STATES:
            raise ClusterError(f"cluster {cluster_id} is {state!r}; fix: see its events in the ACK console, "
                               f"delete it, and run again")
        if clock() > deadline:
            raise ClusterError(f"cluster {cluster_id} still {state!r} after {timeout:.0f}s; fix: raise "
                               f"cluster.<mode>.ready_timeout_seconds or check the console")
        sleep(interval)
        interval = min(poll, interval * 2)


def ensure_cluster(spec: BatchSpec, *, run_key: str, cs: Any | None) -> ClusterHandle:
    """Find (or create) the cluster and return its handle; the kubeconfig is fetched by ``connect``.

    Args:
        spec: the validated parameters.
        run_key: the run key (tags a cluster this run creates).
        cs: a CS client (mode 'ask'); None in mode 'existing'.
    """
    ns = spec.cluster.namespace
    if spec.cluster.mode == "existing":
        ex = spec.cluster.existing
        if ex.kubeconfig_path:
            source = f"file:{Path(ex.kubeconfig_path).expanduser().resolve()}"
        elif ex.credentials_block:
            source = f"block:{ex.credentials_block}"
        else:
            source = f"secret:{ex.kubeconfig_secret_block}"
        handle = ClusterHandle(mode="existing", region=spec.target.region, namespace=ns,
                               vpc_id=spec.storage.nas.vpc_id,
                               vswitch_ids=[spec.storage.nas.vswitch_id] if spec.storage.nas.vswitch_id else [],
                               kubeconfig_source=source)
        kind = ex.kind if ex.kind != "auto" else existing_kind(handle, spec, cs=cs)
        return handle.model_copy(update={"kind": kind})
    assert cs is not None, "mode 'ask'/'acs' needs a CS client"
    kind, opts = spec.cluster.mode, spec.cluster.managed
    assert opts is not None
    found = find_cluster(cs, region=spec.target.region, name=opts.name, kind=kind)
    if found and found.get("state") == "running":
        # Found running: no need to poll (saves a DescribeClusterDetail round per stage that reconnects).
        log.info("%s cluster %s found: %s", KIND_NAMES[kind], opts.name, found["cluster_id"])
        return _handle_from(spec, found, created=False)
    created = False
    if found:
        cluster_id = found["cluster_id"]
        log.info("%s cluster %s found: %s (%s)", KIND_NAMES[kind], opts.name, cluster_id, found.get("state"))
    elif not opts.create_if_missing:
        raise ClusterError(f"no {KIND_NAMES[kind]} cluster named {opts.name!r} in {spec.target.region}; fix: "
                           f"create it, set cluster.{kind}.create_if_missing, or use cluster.mode 'existing'")
    else:
        log.info("%s cluster %s not found: creating it in %s", KIND_NAMES[kind], opts.name, spec.target.region)
        cluster_id = create_managed_cluster(cs, spec, run_key=run_key)
        created = True
    detail = wait_cluster_running(cs, cluster_id, timeout=opts.ready_timeout_seconds)
    return _handle_from(spec, detail, created=created)


def _handle_from(spec: BatchSpec, detail: dict[str, Any], *, created: bool) -> ClusterHandle:
    vswitches = detail.get("vswitch_ids") or ([detail["vswitch_id"]] if detail.get("vswitch_id") else [])
    kind = "acs" if detail.get("profile") == PROFILES["acs"] else "ask"
    opts = spec.cluster.managed or spec.cluster.ask
    return ClusterHandle(mode=kind, kind=kind, region=spec.target.region, namespace=spec.cluster.namespace,
                         cluster_id=detail["cluster_id"], name=opts.name, vpc_id=detail.get("vpc_id"),
                         vswitch_ids=list(vswitches), created=created,
                         kubeconfig_source=f"cs:{detail['cluster_id']}")


def locate_cluster(spec: BatchSpec, *, cs: Any | None) -> ClusterHandle | None:
    """The run's cluster if it exists, never creating one (for sweeps after a crash or a cancellation)."""
    if spec.cluster.mode == "existing":
        return ensure_cluster(spec, run_key="", cs=cs)
    assert cs is not None, "mode 'ask'/'acs' needs a CS client"
    opts = spec.cluster.managed
    assert opts is not None
    found = find_cluster(cs, region=spec.target.region, name=opts.name, kind=spec.cluster.mode)
    return _handle_from(spec, found, created=False) if found else None


def _server_of(kubeconfig: dict[str, Any], context: str | None) -> str | None:
    ctx_name = context or kubeconfig.get("current-context")
    contexts = {c["name"]: c.get("context") or {} for c in kubeconfig.get("contexts") or []}
    cluster_name = contexts.get(ctx_name, {}).get("cluster") if ctx_name else None
    for cluster in kubeconfig.get("clusters") or []:
        if cluster_name is None or cluster.get("name") == cluster_name:
            return str((cluster.get("cluster") or {}).get("server") or "").rstrip("/") or None
    return None


def existing_kind(handle: ClusterHandle, spec: BatchSpec, *, cs: Any | None) -> str:
    """'acs' or 'ask' for a cluster reached by kubeconfig: the kind of the CS cluster serving that API endpoint.

    Lists the region's ASK and ACS clusters and compares each one's ``master_url`` endpoints with the kubeconfig's
    server. Without a CS client, or when no cluster matches (a cluster of another account, a tunnel), the answer is
    'ask' and the log says why; set ``cluster.existing.kind`` to decide explicitly.
    """
    import json

    if cs is None:
        log.info("existing cluster: kind 'ask' (no Container Service client to check; set cluster.existing.kind)")
        return "ask"
    server = _server_of(fetch_kubeconfig(handle, spec, cs=None), spec.cluster.existing.context)
    try:
        candidates = [c for c in list_clusters(cs, region=spec.target.region)
                      if c.get("profile") in PROFILES.values() and c.get("state") not in DEAD_STATES]
        for c in candidates:
            detail = _as_map(call(cs.describe_cluster_detail, c["cluster_id"], service="CS",
                                  operation="DescribeClusterDetail").body)
            endpoints = json.loads(detail.get("master_url") or "{}")
            if server and server in {str(v).rstrip("/") for v in endpoints.values() if v}:
                kind = "acs" if detail.get("profile") == PROFILES["acs"] else "ask"
                log.info("existing cluster is %s cluster %s (%s)", KIND_NAMES[kind], detail.get("name"),
                         c["cluster_id"])
                return kind
    except CloudError as err:
        log.info("existing cluster: kind 'ask' (the Container Service lookup failed: %s; set "
                 "cluster.existing.kind)", err)
        return "ask"
    log.info("existing cluster: kind 'ask' (no ASK or ACS cluster in %s serves %s; set cluster.existing.kind)",
             spec.target.region, server)
    return "ask"


def fetch_kubeconfig(handle: ClusterHandle, spec: BatchSpec, *, cs: Any | None,
                     load_secret: Callable[[str], str] | None = None) -> dict[str, Any]:
    """The cluster's kubeconfig, fetched from its source each time (never stored in a handle or result)."""
    kind, _, ref = handle.kubeconfig_source.partition(":")
    if kind == "cs":
        from alibabacloud_cs20151215 import models as m

        ask = spec.cluster.managed or spec.cluster.ask
        req = m.DescribeClusterUserKubeconfigRequest(private_ip_address=ask.private_kubeconfig,
                                                     temporary_duration_minutes=ask.kubeconfig_minutes)
        resp = call(cs.describe_cluster_user_kubeconfig, ref, req, service="CS",
                    operation="DescribeClusterUserKubeconfig")
        return load_kubeconfig(_as_map(resp.body)["config"])
    if kind == "file":
        return load_kubeconfig(Path(ref))
    if kind == "block":
        return kubeconfig_from_block(ref)
    if kind == "secret":
        if load_secret is None:
            from tasks.clients import _load_prefect_secret as load_secret  # noqa: N813
        return load_kubeconfig(load_secret(ref))
    raise ValueError(f"unknown kubeconfig source {handle.kubeconfig_source!r}")


def connect(handle: ClusterHandle, spec: BatchSpec, *, cs: Any | None) -> Any:
    """A ``kubernetes.client.ApiClient`` for the cluster (endpoint override applied).

    The connection pool is sized for the wait stage: two watches plus one log stream per running pod. With the
    client's default of 10, a Job with parallelism 10 makes urllib3 drop and reopen connections all the time.
    """
    kubeconfig = fetch_kubeconfig(handle, spec, cs=cs)
    api = kube_api_client(kubeconfig, context=spec.cluster.existing.context if handle.mode == "existing" else None,
                          server_override=spec.target.endpoints.kubernetes)
    pool = min(256, spec.job.parallelism + 8)
    if api.configuration.connection_pool_maxsize < pool:
        from kubernetes import client

        api.configuration.connection_pool_maxsize = pool
        fresh = client.ApiClient(api.configuration)
        api.close()
        api = fresh
    return api


# --------------------------------------------------------------------------------------------- Prefect task


@task(name="ensure_cluster", cache_policy=NO_CACHE, retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=transient_only)
def ensure_cluster_task(spec: BatchSpec, run_key: str) -> ClusterHandle:
    """Prefect task: find or create the run's cluster (see ``ensure_cluster``).

    Example:
        >>> cluster = ensure_cluster_task(spec, run_key)   # inside a flow
    """
    with stage_logs():
        handle = ensure_cluster(spec, run_key=run_key, cs=cs_for(spec))
        # Reach the API server once now: a wrong endpoint or kubeconfig fails here, not in the middle of a run.
        from kubernetes import client

        api = connect(handle, spec, cs=cs_for(spec))
        try:
            call(client.VersionApi(api).get_code, service="Kubernetes", operation="GET /version")
        finally:
            api.close()
        log.info("cluster ready: %s (%s)", handle.name or handle.kubeconfig_source, handle.cluster_id or "existing")
        return handle
