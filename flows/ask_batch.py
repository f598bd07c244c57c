"""The ask-batch flow: one parallel Indexed Job on ASK, from cluster to downloaded outputs to a clean bill.

    ensure_cluster -> ensure_volume -> publish_config -> launch_job -> wait_for_job -> collect_outputs
    └────────────────────────── teardown, whatever happened ──────────────────────────┘

This module is the checklist only; the rest of the flow package:

- ``flows.run_files``: the run key, the run name and the pod-log directories;
- ``flows.hooks``: the ``on_cancellation`` / ``on_crashed`` sweep;
- ``flows.summary``: the run summary artifact;
- ``flows.cli``: the command line (``python -m flows.ask_batch`` runs it);
- ``flows.plan``: the dry run.

Why it is shaped like this:

- **Run key.** Every name the run creates derives from it (``tasks.naming``). It is ``spec.run_key`` when given,
  else derived from the flow run id, so a retry of the same flow run — or a new run with the same ``run_key`` —
  renders the same Job name and re-attaches to the Job instead of starting the work twice (``launch_job``).
- **Teardown always runs**: in a ``finally`` for failures and in-process cancellation, and in the
  ``on_cancellation`` / ``on_crashed`` hooks, which sweep by the run's labels when the flow body never reached its
  ``finally`` (a worker reporting a killed process runs ``on_crashed``). Teardown is idempotent, so it does not
  matter that several of these may fire. A process killed with SIGKILL outside a worker gets no hook at all:
  running the same run key again re-attaches and its teardown cleans up.
- **Secrets** never enter parameters (block names and file paths only), handles, logs, artifacts or errors: the
  stages scrub every known secret value from pod log lines and error texts.
"""

import sys
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run as current_run

from flows.hooks import sweep
from flows.run_files import (
    LOCK_LEASE_SECONDS,
    derive_run_key,
    flow_run_name,
    keep_logs,
    log_dir_for,
    save_logs_after_failure,
)
from flows.summary import summary_markdown
from tasks.cloud.admission import admit
from tasks.handles import ClusterHandle, ConfigHandle, JobHandle, JobReport, VolumeHandle
from tasks.spec import BatchSpec
from tasks.stages.cluster import ensure_cluster_task
from tasks.stages.config import publish_config_task
from tasks.stages.job import launch_job_task
from tasks.stages.volume import ensure_volume_task
from tasks.stages.wait import JobFailed, wait_for_job_task

__all__ = ["LOCK_LEASE_SECONDS", "ask_batch", "derive_run_key"]


@flow(name="ask-batch", flow_run_name=flow_run_name, on_cancellation=[sweep], on_crashed=[sweep],
      log_prints=False)
def ask_batch(spec: BatchSpec) -> dict[str, Any]:
    """Run one parallel batch Job on ASK and collect its outputs.

    Args:
        spec: the run's parameters (``tasks.spec.BatchSpec``); every field is described in the Prefect UI form.

    Returns:
        ``{"run_key", "flow_run_name", "job", "outputs_dir", "succeeded"}``.

    Raises:
        JobFailed: an index failed (naming index, pod, exit code) or could not start (pod and reason).
        OutputsIncomplete: the Job succeeded but some index's outputs are missing or do not verify.

    Example:
        >>> ask_batch(parse_spec(yaml.safe_load(open("deployments/example.yaml"))))
    """
    from tasks.cloud.run_lock import lock_key, run_lock
    from tasks.stages.outputs import collect_outputs_task, ensure_bucket_task
    from tasks.stages.teardown import teardown_task

    logger = get_run_logger()
    from tasks.cloud.clients import _load_prefect_secret

    # The same door as the CLI and `prefect deploy` (tasks.cloud.admission): every rule, the input files and the
    # Secret block values, before any cloud call; a SpecError fails the run with one line per problem.
    spec = admit(spec, load_secret=_load_prefect_secret).spec
    run_key = derive_run_key(spec, current_run.id)
    name = current_run.name or f"ask-batch-{run_key}"
    logger.info("run key %s: Job %d indexes x parallelism %d, image %s", run_key, spec.job.completions,
                spec.job.parallelism, spec.job.image)
    cluster: ClusterHandle | None = None
    volume: VolumeHandle | None = None
    config: ConfigHandle | None = None
    job: JobHandle | None = None
    report: JobReport | None = None
    outputs: Any = None
    error: BaseException | None = None
    # One run per spec at a time, teardown included: a second run of the same spec is refused while this one
    # holds the lock (a Prefect global concurrency limit with a lease, so a crashed holder frees it within
    # LOCK_LEASE_SECONDS; a re-run after a crash then re-attaches to the Job).
    with run_lock(lock_key(spec), wait_seconds=0, lease_seconds=LOCK_LEASE_SECONDS):
        try:
            cluster = ensure_cluster_task(spec, run_key)
            volume = ensure_volume_task(spec, run_key=run_key, cluster=cluster)
            ensure_bucket_task(spec)
            config = publish_config_task(spec, run_key, cluster)
            job = launch_job_task(spec, run_key, name, cluster, volume, config)
            try:
                report = wait_for_job_task(spec, run_key, cluster, job, str(log_dir_for(spec, name)))
            except JobFailed as exc:
                report = exc.report
                raise
            outputs = collect_outputs_task(spec, run_key=run_key, flow_run_name=name, report=report,
                                           log_dir=log_dir_for(spec, name))
        except BaseException as exc:
            error = exc
            raise
        finally:
            saved_logs: dict[str, str] | None = None
            logs_problem: str | None = None
            if error is not None:
                keep_logs(spec, name)
                saved_logs, logs_problem = save_logs_after_failure(spec, run_key=run_key, name=name,
                                                                   logger=logger)
            teardown = None
            try:
                teardown = teardown_task(spec, run_key=run_key, succeeded=error is None, cluster=cluster,
                                         volume=volume, config=config, job=job)
            except Exception as exc:  # noqa: BLE001 - never hide the run's own error behind a teardown error
                logger.error("teardown failed: %s: %s", type(exc).__name__, exc)
            try:
                create_markdown_artifact(
                    summary_markdown(spec, run_key=run_key, name=name, cluster=cluster, job=job, report=report,
                                     outputs=outputs, teardown=teardown,
                                     error=None if error is None else f"{type(error).__name__}: {error}",
                                     saved_logs=saved_logs, logs_problem=logs_problem),
                    key=f"summary-{run_key}", description=f"ask-batch run {name}")
            except Exception as exc:  # noqa: BLE001
                logger.error("could not publish the summary artifact: %s", exc)
    return {"run_key": run_key, "flow_run_name": name, "job": job.name,
            "outputs_dir": outputs.download_dir if outputs is not None else None, "succeeded": True}



if __name__ == "__main__":
    from flows.cli import main

    sys.exit(main())
