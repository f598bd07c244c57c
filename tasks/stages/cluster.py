"""Stage ensure_cluster: find the ASK or ACS cluster by name or create it; or take an existing cluster's kubeconfig.

The handle records which kind the cluster is (``ClusterHandle.kind``): pods are rendered differently on ASK (ECI
annotations) and ACS (compute labels). ACS clusters are the same CS API with ``profile`` Acs.

Find-then-create, safe to repeat: the lookup filters on the exact name (the CS ``name`` filter is fuzzy), ASK's
current type (``ManagedKubernetes`` + ``Serverless``) and a live state; creation carries a ``client_token`` derived
from region and name, so two racing attempts get one cluster. Listing uses ``DescribeClustersForRegion`` because
``DescribeClustersV1`` is being switched off in 2026
(https://www.alibabacloud.com/help/en/ack/product-overview/announcement-on-ack-openapi-parameter-changes-and-deprecation);
V1 is only a fallback.

Alibaba closed ASK creation to new accounts in February 2025: when CreateCluster is refused, the error says so
and names the way out (cluster mode 'existing').
"""

import logging
import time
from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.cloud.cluster_access import (
    DEAD_STATES,
    KIND_NAMES,
    PROFILES,
    as_map,
    existing_handle,
    existing_kind,
    find_cluster,
    handle_from,
)
from tasks.cloud.context import RETRY_DELAYS, stage_context, stage_logs, transient_only
from tasks.cloud.retry import CloudError, call
from tasks.errors import ClusterError
from tasks.handles import ClusterHandle
from tasks.render.manifests import create_cluster_body
from tasks.spec import BatchSpec

log = logging.getLogger("ask_batch.cluster")

CREATION_REFUSED_HINT = (
    "Alibaba Cloud stopped ACK Serverless (ASK) cluster creation for accounts that never created one (since "
    "2025-02-17; they are offered ACS instead). If that is the case here, run against a cluster you already have: "
    "set cluster.mode to 'existing' with cluster.existing.kubeconfig_path (or a KubernetesCredentials block).")


# What a refused CreateCluster means, by the service's error code (codes as CS answers them, e.g. ErrorCheckAcl,
# QuotaExceeded.Cluster). The code for "ASK creation is closed to new accounts" is not published: that hint is
# given only when the message says so; any other refusal shows the service's own code and message.
CREATE_HINTS: dict[str, str] = {
    "QuotaExceeded.Cluster": "the account's cluster quota is used up; fix: delete an unused cluster or raise the "
                             "quota in the Quota Center",
    "ErrorCheckAcl": "this RAM identity may not create clusters; fix: grant cs:CreateCluster (docs/ram-policy.md)",
    "Forbidden.RAM": "this RAM identity may not create clusters; fix: grant cs:CreateCluster (docs/ram-policy.md)",
    "NoPermission": "this RAM identity may not create clusters; fix: grant cs:CreateCluster (docs/ram-policy.md)",
    "ErrorRamRoleNotExist": "Container Service's service roles are not authorised in this account; fix: open "
                            "the ACK console once and accept the role authorisation (AliyunCSDefaultRole ...)",
}
ASK_CLOSED_WORDS = ("new user", "new account", "no longer", "not allowed to create", "ACS")


def create_refusal_hint(err: CloudError) -> str:
    """The hint for a 4xx CreateCluster answer: by code, else the ASK-closed hint when the message says so."""
    if err.code in CREATE_HINTS:
        return CREATE_HINTS[err.code]
    message = err.message or ""
    if "zone_id" in message:
        return "fix: set cluster.ask.zone_id (a zone of the region), or cluster.ask.vpc_id and vswitch_ids"
    if "Serverless" in message and any(w.lower() in message.lower() for w in ASK_CLOSED_WORDS):
        return CREATION_REFUSED_HINT
    return "fix: see the service's code and message above (and its request id for Alibaba Cloud support)"


def create_managed_cluster(cs: Any, spec: BatchSpec, *, run_key: str) -> str:
    """CreateCluster for the ASK (profile Serverless) or ACS (profile Acs) cluster of ``spec.cluster.mode``; returns
    the cluster id.

    Raises:
        ClusterError: the request would be refused (no VPC and no zone), or was refused; the message has the
            service's code and message and a hint chosen by that code (``create_refusal_hint``).
    """
    from alibabacloud_cs20151215 import models as m

    kind = spec.cluster.mode
    ask = spec.cluster.managed
    assert ask is not None, "mode 'ask' or 'acs' needed"
    if not ask.vpc_id and not ask.zone_id:
        raise ClusterError(f"cannot create cluster {ask.name!r}: without cluster.{kind}.vpc_id, CS needs "
                           f"cluster.{kind}.zone_id (it creates the VPC in that zone); fix: set zone_id, e.g. "
                           f"'{spec.target.region}-k', or vpc_id and vswitch_ids")
    body = create_cluster_body(ask, region=spec.target.region, run_key=run_key, profile=PROFILES[kind],
                               rrsa=spec.outputs.pod_credentials == "rrsa")
    try:
        resp = call(cs.create_cluster, m.CreateClusterRequest().from_map(body), service="CS",
                    operation="CreateCluster")
    except CloudError as err:
        if err.status is not None and 400 <= err.status < 500:
            raise ClusterError(f"{err}\n{create_refusal_hint(err)}") from err
        raise
    return as_map(resp.body)["cluster_id"]


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
        detail = as_map(call(cs.describe_cluster_detail, cluster_id, service="CS",
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
        cs: a CS client (modes 'ask', 'acs', and 'existing' with kind 'auto'); else None.
    """
    if spec.cluster.mode == "existing":
        handle = existing_handle(spec)
        if spec.cluster.existing.kind != "auto":
            return handle
        return handle.model_copy(update={"kind": existing_kind(handle, spec, cs=cs)})
    assert cs is not None, "mode 'ask'/'acs' needs a CS client"
    kind, opts = spec.cluster.mode, spec.cluster.managed
    assert opts is not None
    found = find_cluster(cs, region=spec.target.region, name=opts.name, kind=kind)
    if found and found.get("state") == "running":
        # Found running: no need to poll (saves a DescribeClusterDetail round per stage that reconnects).
        log.info("%s cluster %s found: %s", KIND_NAMES[kind], opts.name, found["cluster_id"])
        if spec.outputs.pod_credentials == "rrsa" and "rrsa_config" not in found:
            # the cluster list does not carry rrsa_config; the detail does
            found = as_map(call(cs.describe_cluster_detail, found["cluster_id"], service="CS",
                                operation="DescribeClusterDetail").body)
        return require_rrsa(spec, handle_from(spec, found, created=False))
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
    return require_rrsa(spec, handle_from(spec, detail, created=created))


def require_rrsa(spec: BatchSpec, handle: ClusterHandle) -> ClusterHandle:
    """With pod credentials 'rrsa', the cluster must have RRSA on (its OIDC provider is what the pods' role
    trusts); else ClusterError naming the fix. RRSA is turned on in the console (cluster > Basic Information >
    Security and Auditing > RRSA OIDC) or with ModifyCluster ``enable_rrsa``
    (https://www.alibabacloud.com/help/en/ack/ack-managed-and-ack-dedicated/user-guide/use-rrsa-to-authorize-pods-to-access-different-cloud-services)."""
    if spec.outputs.pod_credentials != "rrsa" or handle.rrsa_oidc_provider_arn:
        return handle
    raise ClusterError(f"{KIND_NAMES[handle.kind]} cluster {handle.name!r} ({handle.cluster_id}) has RRSA off, and "
                       f"outputs.pod_credentials 'rrsa' (the default) gives the pods their OSS credentials through "
                       f"it; fix: turn RRSA on for the cluster (console: Cluster Information > Basic Information > "
                       f"Security and Auditing > RRSA OIDC > Enable, or `aliyun cs PUT /api/v2/clusters/"
                       f"{handle.cluster_id} --body '{{\"enable_rrsa\": true}}'`; takes 2-3 minutes), or set "
                       f"outputs.pod_credentials 'target' (the flow's own AccessKey goes to the pods)")


# --------------------------------------------------------------------------------------------- Prefect task


@task(name="ensure_cluster", cache_policy=NO_CACHE, retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=transient_only)
def ensure_cluster_task(spec: BatchSpec, run_key: str) -> ClusterHandle:
    """Prefect task: find or create the run's cluster (see ``ensure_cluster``).

    Example:
        >>> cluster = ensure_cluster_task(spec, run_key)   # inside a flow
    """
    from kubernetes import client

    with stage_context(spec) as ctx, stage_logs(ctx.scrubber):
        handle = ensure_cluster(spec, run_key=run_key, cs=ctx.cs())
        # Reach the API server once now: a wrong endpoint or kubeconfig fails here, not in the middle of a run.
        call(client.VersionApi(ctx.kube(handle)).get_code, service="Kubernetes", operation="GET /version")
        log.info("cluster ready: %s (%s)", handle.name or handle.kubeconfig_source, handle.cluster_id or "existing")
        return handle
