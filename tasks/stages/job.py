"""Stage launch_job: create the Job, or adopt the one an earlier attempt of this run created.

The Job's name is the run key plus a hash of its rendered spec (``tasks.render.manifests.job_manifest``). So:

- a retried task or a re-run of the same flow run renders the same name, gets 409 AlreadyExists, reads the Job
  and re-attaches to it — running or finished — instead of starting the work twice (pods are billed);
- a Job with that name but a different ``ask-batch.io/spec-hash`` annotation is refused: something else made it.

Re-running only what is missing (``job.rerun: missing``, the default): a retry of the flow run, or a new run with the
same run key, first asks OSS which indexes already have complete outputs (``complete_indexes``). When some do and
the run's Job is not running any more (deleted by teardown, or finished), ``relaunch`` returns the missing indexes:
the wait stage runs each as a follow-up Job (``job_manifest(index=...)``), at most ``job.parallelism`` at once;
its pod sees its original index as ``ASK_BATCH_INDEX`` (and ``JOB_COMPLETION_INDEX``). Kubernetes cannot run an
arbitrary subset of an Indexed Job's indexes, nor give each pod of one template its own env value, hence one
small Job per index. A Job of the run that still exists and has not failed is re-attached to instead, as before.

Creating and adopting Jobs (``launch_job``) lives in ``tasks.cloud.jobs``: the wait stage creates follow-up Jobs
too.
"""

import logging
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.cloud.context import RETRY_DELAYS, stage_context, stage_logs, transient_only
from tasks.cloud.jobs import launch_job
from tasks.cloud.retry import CloudError, call, call_or_none
from tasks.errors import PodRejected
from tasks.handles import ClusterHandle, ConfigHandle, JobHandle, VolumeHandle
from tasks.render.manifests import render_job
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


def job_reusable(batch_v1: Any, namespace: str, name: str) -> bool:
    """The Job exists and has not failed (it runs, or it completed): re-attaching to it is right."""
    existing = call_or_none(batch_v1.read_namespaced_job, name, namespace, service="Kubernetes",
                            operation=f"read Job {name}")
    if existing is None:
        return False
    conditions = (existing.status.conditions if existing.status else None) or []
    return not any(c.type == "Failed" and c.status == "True" for c in conditions)


def relaunch(batch_v1: Any, whole: dict[str, Any], missing: list[int]) -> tuple[JobHandle | None, list[int]]:
    """Re-run what is missing: (the run's Job re-attached, []) while it exists and has not failed, else (None,
    the indexes to run as follow-up Jobs). The wait stage creates those, at most ``job.parallelism`` at once.

    Args:
        batch_v1: a ``kubernetes.client.BatchV1Api``.
        whole: the run's whole Job as rendered (``render_job``).
        missing: the indexes without complete outputs.
    """
    meta = whole["metadata"]
    if job_reusable(batch_v1, meta["namespace"], meta["name"]):
        return launch_job(batch_v1, whole), []
    log.info("re-running %d missing index(es) as follow-up Jobs: %s", len(missing),
             ", ".join(str(i) for i in missing[:20]) + (" ..." if len(missing) > 20 else ""))
    return None, list(missing)


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

    with stage_context(spec) as ctx, stage_logs(ctx.scrubber):
        body = render_job(spec, run_key=run_key, flow_run_name=flow_run_name, volume=volume, config=config,
                          kind=cluster.kind)
        api = ctx.kube(cluster)
        check_pod_admission(client.CoreV1Api(api), body)
        handle = launch_job(client.BatchV1Api(api), body)
        verb = "re-attached to" if handle.adopted else "created"
        log.info("job %s %s/%s: %d indexes, parallelism %d", verb, handle.namespace, handle.name,
                 handle.completions, spec.job.parallelism)
        return handle


@task(name="relaunch_missing", cache_policy=NO_CACHE, retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=transient_only)
def relaunch_task(spec: BatchSpec, run_key: str, flow_run_name: str, cluster: ClusterHandle,
                  volume: VolumeHandle | None, config: ConfigHandle | None,
                  missing: list[int]) -> tuple[JobHandle, list[int]]:
    """Prefect task: ``relaunch``. Returns (the Job to wait for, or the whole Job as rendered, with no uid, when
    follow-ups run instead; the indexes to run as follow-up Jobs, for ``wait_for_follow_ups``)."""
    from kubernetes import client

    whole = render_job(spec, run_key=run_key, flow_run_name=flow_run_name, volume=volume, config=config,
                       kind=cluster.kind)
    with stage_context(spec) as ctx, stage_logs(ctx.scrubber):
        adopted, follow_ups = relaunch(client.BatchV1Api(ctx.kube(cluster)), whole, missing)
        if adopted is not None:
            log.info("job re-attached to %s/%s (it exists and has not failed)", adopted.namespace, adopted.name)
            return adopted, []
    meta = whole["metadata"]
    return JobHandle(namespace=meta["namespace"], name=meta["name"], uid=None,
                     completions=whole["spec"]["completions"]), follow_ups
