"""Stage launch_job: create the Job, or adopt the one an earlier attempt of this run created.

The Job's name is the run key plus a hash of its rendered spec (``tasks.render.manifests.job_manifest``). So:

- a retried task or a re-run of the same flow run renders the same name, gets 409 AlreadyExists, reads the Job
  and re-attaches to it — running or finished — instead of starting the work twice (pods are billed);
- a Job with that name but a different ``ask-batch.io/spec-hash`` annotation is refused: something else made it.

Re-running only what is missing (``job.rerun: missing``, the default): a retry of the flow run, or a new run with the
same run key, first asks OSS which indexes already have complete outputs (``complete_indexes``). When some do and
the run's Job is not running any more (deleted by teardown, or finished), ``relaunch`` starts one follow-up Job per
missing index (``job_manifest(index=...)``): its pod sees its original index as ``ASK_BATCH_INDEX`` (and
``JOB_COMPLETION_INDEX``). Kubernetes cannot run an arbitrary subset of an Indexed Job's indexes, nor give each pod
of one template its own env value, hence one small Job per index; they all start at once. A Job of the run that
still exists and has not failed is re-attached to instead, as before.

We create with the sync kubernetes client instead of prefect-kubernetes' ``create_namespaced_job`` task: that task
is async and raises on 409, and adoption is the whole point here
(https://github.com/PrefectHQ/prefect/blob/main/src/integrations/prefect-kubernetes/prefect_kubernetes/jobs.py).
"""

import logging
from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.cloud.context import RETRY_DELAYS, kube_for, stage_logs, transient_only
from tasks.cloud.retry import CloudError, call
from tasks.errors import JobConflict, PodRejected
from tasks.handles import ClusterHandle, ConfigHandle, JobHandle, VolumeHandle
from tasks.render.manifests import JobInputs, job_manifest, pod_oss_env
from tasks.render.rrsa import RrsaIdentity
from tasks.spec import BatchSpec

log = logging.getLogger("ask_batch.job")


def check_pod_admission(core_v1: Any, body: dict[str, Any]) -> None:
    """Server-side dry run (``dryRun=All``) of one pod of the Job: the API server runs its admission (defaulting,
    validation, webhooks such as ACS's compute-label checks) without storing anything.

    Without this check a refused pod only shows as a ``FailedCreate`` event on the Job, and the run would wait for
    the Job's deadline. A webhook that does not support dry runs makes the server refuse the dry run itself; that
    says nothing about the pod, so it is logged and the Job is created as usual.
    https://kubernetes.io/docs/reference/using-api/api-concepts/#dry-run

    Raises:
        PodRejected: the pod is refused (HTTP 400/403/422 from admission), with the server's message.
    """
    meta, template = body["metadata"], body["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {**template.get("metadata", {}), "name": f"{meta['name']}-admission-check"},
           "spec": template["spec"]}
    try:
        call(core_v1.create_namespaced_pod, meta["namespace"], pod, dry_run="All", service="Kubernetes",
             operation="create Pod (dry run)")
    except CloudError as err:
        if err.status not in (400, 403, 422):
            raise
        if "dry run" in (err.message or "").lower() or "dryrun" in (err.message or "").lower():
            log.info("admission dry run not supported by the cluster (%s); creating the Job", err.message)
            return
        raise PodRejected(f"the cluster refuses the Job's pods, so no pod would ever start: {err.message}; fix: "
                          f"correct the pod settings it names (job.compute, job.eci, job.labels) and run again") \
            from err


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


def job_reusable(batch_v1: Any, namespace: str, name: str) -> bool:
    """The Job exists and has not failed (it runs, or it completed): re-attaching to it is right."""
    try:
        existing = call(batch_v1.read_namespaced_job, name, namespace, service="Kubernetes",
                        operation=f"read Job {name}")
    except CloudError as err:
        if err.status == 404:
            return False
        raise
    conditions = (existing.status.conditions if existing.status else None) or []
    return not any(c.type == "Failed" and c.status == "True" for c in conditions)


def relaunch(batch_v1: Any, whole: dict[str, Any], follow_up: Callable[[int], dict[str, Any]],
             missing: list[int]) -> tuple[JobHandle | None, list[JobHandle]]:
    """Re-run what is missing: (the run's Job re-attached, []) while it exists and has not failed, else (None,
    one follow-up Job per missing index, created or adopted).

    Args:
        batch_v1: a ``kubernetes.client.BatchV1Api``.
        whole: the run's whole Job as rendered (``render_job``).
        follow_up: renders the follow-up Job of one original index.
        missing: the indexes without complete outputs.
    """
    meta = whole["metadata"]
    if job_reusable(batch_v1, meta["namespace"], meta["name"]):
        return launch_job(batch_v1, whole), []
    handles = []
    for index in missing:
        handle = launch_job(batch_v1, follow_up(index))
        handles.append(handle.model_copy(update={"index": index}))
    log.info("re-running %d missing index(es) as follow-up Jobs: %s", len(missing),
             ", ".join(str(i) for i in missing[:20]) + (" ..." if len(missing) > 20 else ""))
    return None, handles


def render_job(spec: BatchSpec, *, run_key: str, flow_run_name: str, volume: VolumeHandle | None,
               config: ConfigHandle | None, index: int | None = None, kind: str = "ask") -> dict[str, Any]:
    """The Job manifest for this run, from the handles of the earlier stages (names only, no content).

    ``kind`` is the cluster's (``ClusterHandle.kind``): pods are rendered for ASK or for ACS.
    """
    inputs = JobInputs(
        config_map=config.config_map if config else None,
        secret=config.secret if config else None,
        secret_file_keys=config.secret_file_keys if config else (),
        secret_env_keys=config.secret_env_keys if config else (),
        claim_name=volume.claim_name if volume else None,
        oss_env=pod_oss_env(spec, run_key=run_key, flow_run_name=flow_run_name),
        rrsa=RrsaIdentity(config.service_account, config.rrsa_role_arn, config.rrsa_oidc_provider_arn)
        if config and config.service_account and config.rrsa_role_arn and config.rrsa_oidc_provider_arn else None,
    )
    return job_manifest(spec, run_key=run_key, inputs=inputs, index=index, kind=kind)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- Prefect task


@task(name="launch_job", cache_policy=NO_CACHE, retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=transient_only)
def launch_job_task(spec: BatchSpec, run_key: str, flow_run_name: str, cluster: ClusterHandle,
                    volume: VolumeHandle | None, config: ConfigHandle | None) -> JobHandle:
    """Prefect task: create the Job, or re-attach to the one an earlier attempt of this run created.

    A task retry after a transient error is safe for the same reason a flow re-run is: the Job name is
    deterministic, so a create that reached the server before the connection dropped is adopted, not repeated.
    """
    from kubernetes import client

    with stage_logs():
        body = render_job(spec, run_key=run_key, flow_run_name=flow_run_name, volume=volume, config=config,
                          kind=cluster.kind)
        api = kube_for(spec, cluster)
        try:
            check_pod_admission(client.CoreV1Api(api), body)
            handle = launch_job(client.BatchV1Api(api), body)
        finally:
            api.close()
        verb = "re-attached to" if handle.adopted else "created"
        log.info("job %s %s/%s: %d indexes, parallelism %d", verb, handle.namespace, handle.name,
                 handle.completions, spec.job.parallelism)
        return handle


@task(name="relaunch_missing", cache_policy=NO_CACHE, retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=transient_only)
def relaunch_task(spec: BatchSpec, run_key: str, flow_run_name: str, cluster: ClusterHandle,
                  volume: VolumeHandle | None, config: ConfigHandle | None,
                  missing: list[int]) -> tuple[JobHandle, list[JobHandle]]:
    """Prefect task: ``relaunch``. Returns (the Job to wait for, or the whole Job as rendered, with no uid, when
    follow-ups run instead; the follow-up Jobs)."""
    from kubernetes import client

    whole = render_job(spec, run_key=run_key, flow_run_name=flow_run_name, volume=volume, config=config,
                       kind=cluster.kind)
    with stage_logs():
        api = kube_for(spec, cluster)
        try:
            adopted, follow_ups = relaunch(client.BatchV1Api(api), whole, lambda i: render_job(
                spec, run_key=run_key, flow_run_name=flow_run_name, volume=volume, config=config, index=i,
                kind=cluster.kind), missing)
        finally:
            api.close()
        if adopted is not None:
            log.info("job re-attached to %s/%s (it exists and has not failed)", adopted.namespace, adopted.name)
            return adopted, []
    meta = whole["metadata"]
    return JobHandle(namespace=meta["namespace"], name=meta["name"], uid=None,
                     completions=whole["spec"]["completions"]), follow_ups
