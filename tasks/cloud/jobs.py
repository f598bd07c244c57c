"""Kubernetes Job calls two stages share: create-or-adopt a Job (``launch_job``: the first Job, the follow-up Jobs
of a re-run and of an on-demand try), and move a preemptible pod's index on demand (``stop_for_on_demand``).

We create with the sync kubernetes client instead of prefect-kubernetes' ``create_namespaced_job`` task: that task
is async and raises on 409, and adoption is the whole point here
(https://github.com/PrefectHQ/prefect/blob/main/src/integrations/prefect-kubernetes/prefect_kubernetes/jobs.py).
"""

import logging
from datetime import UTC, datetime
from typing import Any

from tasks.cloud.retry import CloudError, call
from tasks.errors import JobConflict
from tasks.handles import JobHandle
from tasks.render.compute import ON_DEMAND_CONDITION

log = logging.getLogger("ask_batch.job")

def launch_job(batch_v1: Any, body: dict[str, Any]) -> JobHandle:
    """Create ``body`` (from ``job_manifest``) or adopt the existing Job of the same name and spec hash.

    Args:
        batch_v1: a ``kubernetes.client.BatchV1Api``.
        body: the rendered Job.

    Returns:
        The handle; ``adopted`` says whether it already existed.
    """
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    try:
        created = call(batch_v1.create_namespaced_job, ns, body, service="Kubernetes", operation=f"create Job {name}")
        log.info("job %s/%s created", ns, name)
        return JobHandle(namespace=ns, name=name, uid=created.metadata.uid, adopted=False,
                         completions=body["spec"]["completions"])
    except CloudError as err:
        if err.status != 409:
            raise
    existing = call(batch_v1.read_namespaced_job, name, ns, service="Kubernetes", operation=f"read Job {name}")
    want = meta["annotations"]["ask-batch.io/spec-hash"]
    have = (existing.metadata.annotations or {}).get("ask-batch.io/spec-hash")
    if have != want:
        raise JobConflict(f"Job {ns}/{name} exists with spec hash {have!r}, not {want!r}; fix: delete it, or use "
                          f"another run_key")
    log.info("job %s/%s already exists: re-attaching (no new pods are started)", ns, name)
    return JobHandle(namespace=ns, name=name, uid=existing.metadata.uid, adopted=True,
                     completions=body["spec"]["completions"])


def stop_for_on_demand(core_v1: Any, namespace: str, pod: str, *, reclaims: int) -> bool:
    """End a preemptible pod so that its Job fails its index (and only it): write the condition
    ``ON_DEMAND_CONDITION`` through the pods/status subresource, then delete the pod.

    The Job's podFailurePolicy rule ``FailIndex`` on that condition (``ON_DEMAND_RULE``) then marks the index
    failed instead of starting it again on spot, once the pod reached phase Failed
    (https://kubernetes.io/docs/concepts/workloads/controllers/job/#pod-failure-policy); a pod that succeeds
    before it stops simply counts as the index's success. Needs RBAC ``patch`` on ``pods/status`` and ``delete``
    on ``pods``.

    Returns:
        False when the pod was already gone (404), else True.

    Raises:
        CloudError: the API refused (e.g. 403: the kubeconfig's user may not patch pods/status).
    """
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {"status": {"conditions": [{
        "type": ON_DEMAND_CONDITION, "status": "True", "reason": "MaxReclaimsReached", "lastTransitionTime": now,
        "message": f"reclaimed {reclaims} times (job.eci.max_reclaims): ask-batch stops this pod; the index's "
                   f"last try runs on demand in a follow-up Job"}]}}
    try:
        call(core_v1.patch_namespaced_pod_status, pod, namespace, body, service="Kubernetes",
             operation=f"patch Pod {pod} status")
        call(core_v1.delete_namespaced_pod, pod, namespace, service="Kubernetes", operation=f"delete Pod {pod}")
    except CloudError as err:
        if err.status == 404:
            return False
        raise
    return True
