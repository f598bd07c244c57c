"""Reaching a cluster: find the ASK or ACS cluster by name, fetch its kubeconfig, open a Kubernetes API client.

ASK and ACS clusters are listed through the same CS API and differ by ``profile``: ``Serverless`` for ACK Serverless,
``Acs`` for Container Compute Service. A cluster brought by kubeconfig (mode 'existing') is recognised as ASK or ACS
by the CS cluster whose API server endpoint it uses (``existing_kind``), unless ``cluster.existing.kind`` says.

Shared by the stages that need the cluster without creating it (``ensure_cluster`` finds before it creates; the
other stages and the crash/cancel sweep reconnect through ``connect``). Listing uses ``DescribeClustersForRegion``
because ``DescribeClustersV1`` is being retired (CS API reference:
https://www.alibabacloud.com/help/en/ack/ack-managed-and-ack-dedicated/developer-reference/api-cs-2015-12-15-describeclustersforregion);
V1 stays a fallback for a 404.
"""

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.cloud.clients import kube_api_client, kubeconfig_from_block, load_kubeconfig
from tasks.cloud.retry import CloudError, call
from tasks.errors import ClusterError
from tasks.handles import ClusterHandle
from tasks.spec import BatchSpec

log = logging.getLogger("ask_batch.cluster")

DEAD_STATES = {"deleting", "deleted", "delete_failed", "failed"}
PROFILES = {"ask": "Serverless", "acs": "Acs"}  # cluster kind -> CS profile
KIND_NAMES = {"ask": "ASK", "acs": "ACS"}


def as_map(obj: Any) -> dict[str, Any]:
    """A Tea SDK model (``to_map``) or a mapping as a plain dict."""
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
        body = as_map(resp.body)
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


def existing_handle(spec: BatchSpec) -> ClusterHandle:
    """The handle of a cluster brought by kubeconfig (mode 'existing'); no API call."""
    ex = spec.cluster.existing
    if ex.kubeconfig_path:
        source = f"file:{Path(ex.kubeconfig_path).expanduser().resolve()}"
    elif ex.credentials_block:
        source = f"block:{ex.credentials_block}"
    else:
        source = f"secret:{ex.kubeconfig_secret_block}"
    return ClusterHandle(mode="existing", kind="acs" if ex.kind == "acs" else "ask", region=spec.target.region,
                         namespace=spec.cluster.namespace, vpc_id=spec.storage.nas.vpc_id,
                         vswitch_ids=[spec.storage.nas.vswitch_id] if spec.storage.nas.vswitch_id else [],
                         kubeconfig_source=source)


def handle_from(spec: BatchSpec, detail: dict[str, Any], *, created: bool) -> ClusterHandle:
    """The handle of an ASK or ACS cluster from its CS cluster map (``find_cluster`` or DescribeClusterDetail)."""
    vswitches = detail.get("vswitch_ids") or ([detail["vswitch_id"]] if detail.get("vswitch_id") else [])
    kind = "acs" if detail.get("profile") == PROFILES["acs"] else "ask"
    opts = spec.cluster.managed or spec.cluster.ask
    raw = detail.get("rrsa_config")
    rrsa: dict[str, Any] = raw if isinstance(raw, dict) else {}
    return ClusterHandle(mode=kind, kind=kind, region=spec.target.region, namespace=spec.cluster.namespace,
                         cluster_id=detail["cluster_id"], name=opts.name, vpc_id=detail.get("vpc_id"),
                         vswitch_ids=list(vswitches), created=created,
                         kubeconfig_source=f"cs:{detail['cluster_id']}",
                         rrsa_oidc_provider_arn=(rrsa.get("oidc_arn") or None) if rrsa.get("enabled") else None)


def locate_cluster(spec: BatchSpec, *, cs: Any | None) -> ClusterHandle | None:
    """The run's cluster if it exists, never creating one (for sweeps after a crash or a cancellation)."""
    if spec.cluster.mode == "existing":
        return existing_handle(spec)
    assert cs is not None, "mode 'ask'/'acs' needs a CS client"
    opts = spec.cluster.managed
    assert opts is not None
    found = find_cluster(cs, region=spec.target.region, name=opts.name, kind=spec.cluster.mode)
    return handle_from(spec, found, created=False) if found else None


def fetch_kubeconfig(handle: ClusterHandle, spec: BatchSpec, *, cs: Any | None,
                     load_secret: Callable[[str], str] | None = None) -> dict[str, Any]:
    """The cluster's kubeconfig, fetched from its source each time (never stored in a handle or result)."""
    kind, _, ref = handle.kubeconfig_source.partition(":")
    if kind == "cs":
        from alibabacloud_cs20151215 import models as m

        assert cs is not None, "a kubeconfig from CS needs a CS client"
        ask = spec.cluster.managed or spec.cluster.ask
        req = m.DescribeClusterUserKubeconfigRequest(private_ip_address=ask.private_kubeconfig,
                                                     temporary_duration_minutes=ask.kubeconfig_minutes)
        resp = call(cs.describe_cluster_user_kubeconfig, ref, req, service="CS",
                    operation="DescribeClusterUserKubeconfig")
        return load_kubeconfig(as_map(resp.body)["config"])
    if kind == "file":
        return load_kubeconfig(Path(ref))
    if kind == "block":
        return kubeconfig_from_block(ref)
    if kind == "secret":
        from tasks.cloud.clients import _load_prefect_secret

        return load_kubeconfig((load_secret or _load_prefect_secret)(ref))
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
    if cs is None:
        log.info("existing cluster: kind 'ask' (no Container Service client to check; set cluster.existing.kind)")
        return "ask"
    server = _server_of(fetch_kubeconfig(handle, spec, cs=None), spec.cluster.existing.context)
    try:
        candidates = [c for c in list_clusters(cs, region=spec.target.region)
                      if c.get("profile") in PROFILES.values() and c.get("state") not in DEAD_STATES]
        for c in candidates:
            detail = as_map(call(cs.describe_cluster_detail, c["cluster_id"], service="CS",
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
