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

import contextlib
from collections.abc import Mapping
from typing import Any, TypeVar, cast

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run as current_run
from prefect.utilities.annotations import opaque

from flows.console import plain_console_logging
from flows.hooks import sweep
from flows.run_files import (
    derive_run_key,
    flow_run_name,
    keep_logs,
    ledger_path,
    log_dir_for,
    save_logs_after_failure,
    spec_data,
)
from flows.summary import run_scrubber, summary_markdown, write_ledger
from tasks.cloud.admission import admit
from tasks.cloud.context import run_context
from tasks.cloud.run_lock import cluster_run_lock
from tasks.errors import RunLocked, TeardownIncomplete
from tasks.handles import ClusterHandle, ConfigHandle, JobHandle, JobReport, VolumeHandle
from tasks.spec import (
    BatchSpec,
    ClusterSpec,
    ConfigSpec,
    JobSpec,
    OutputsSpec,
    StorageSpec,
    Target,
    TeardownSpec,
    WaitSpec,
)
from tasks.stages.cluster import ensure_cluster_task
from tasks.stages.config import publish_config_task
from tasks.stages.job import launch_job_task, relaunch_task
from tasks.stages.volume import ensure_volume_task
from tasks.stages.wait import JobFailed, wait_for_follow_ups_task, wait_for_job_task

__all__ = ["ask_batch", "derive_run_key"]


T = TypeVar("T")


def untraversed(value: T) -> T:
    """``value`` as a task parameter that Prefect resolves without walking into it (``opaque``).

    Prefect resolves a task's parameters by visiting every element of every collection and pydantic model in them,
    and remembers each object it saw until the walk ends. For a 100,000-index ``JobReport`` that cost +30 MB at peak
    and ~10 s of CPU before ``collect_outputs`` started (measured with tracemalloc). ``opaque`` resolves only the
    value itself, so the run graph still links the task to the one whose result it is. Source: the docstring of
    ``prefect.utilities.annotations.opaque`` and ``visit_collection`` in
    https://github.com/PrefectHQ/prefect/blob/main/src/prefect/utilities/collections.py
    """
    return cast(T, opaque(value))


def finish(spec: BatchSpec, logger: Any, *, run_key: str, name: str, cluster: ClusterHandle | None,
           volume: VolumeHandle | None, config: ConfigHandle | None, job: JobHandle | None,
           report: JobReport | None, outputs: Any, error: BaseException | None) -> None:
    """Whatever happened: keep and upload a failed run's pod logs, tear down per policy, publish the summary.

    Never hides the run's own error behind its own. When the run otherwise succeeded, a teardown that could not
    delete what it should have raises (``TeardownIncomplete``, or the teardown's own error): a leftover may still
    be billed, so it is never a silent success.
    """
    from tasks.stages.teardown import teardown_task

    saved_logs: Mapping[str, str] | None = None
    logs_problem: str | None = None
    if error is not None:
        keep_logs(spec, name)
        saved_logs, logs_problem = save_logs_after_failure(spec, run_key=run_key, name=name, logger=logger)
    teardown = None
    teardown_error: Exception | None = None
    try:
        teardown = teardown_task(spec, run_key=run_key, succeeded=error is None, cluster=cluster, volume=volume,
                                 config=config, job=job)
    except Exception as exc:  # noqa: BLE001 - never hide the run's own error behind a teardown error
        logger.error("teardown failed: %s: %s", type(exc).__name__, exc)
        teardown_error = exc
    scrub = run_scrubber(spec)
    if report is not None:
        try:
            write_ledger(report, ledger_path(spec, name), scrub)
        except OSError as exc:
            logger.error("could not write the per-index ledger %s: %s", ledger_path(spec, name), exc)
    try:
        create_markdown_artifact(
            scrub(summary_markdown(spec, run_key=run_key, name=name, cluster=cluster, job=job, report=report,
                                   outputs=outputs, teardown=teardown,
                                   error=None if error is None else f"{type(error).__name__}: {error}",
                                   saved_logs=saved_logs, logs_problem=logs_problem)),
            key=f"summary-{run_key}", description=f"ask-batch run {name}")
    except Exception as exc:  # noqa: BLE001
        logger.error("could not publish the summary artifact: %s", exc)
    if error is None and teardown_error is not None:
        raise teardown_error
    if error is None and teardown is not None and not teardown.ok:
        raise TeardownIncomplete(teardown, run_key=run_key)


# Defaults of the optional sections (module constants: never mutated, and the form shows their values).
_CONFIG, _OUTPUTS, _STORAGE = ConfigSpec(), OutputsSpec(), StorageSpec()
_CLUSTER, _TARGET, _TEARDOWN, _WAIT = ClusterSpec(), Target(), TeardownSpec(), WaitSpec()


@flow(name="ask-batch", flow_run_name=flow_run_name, on_cancellation=[sweep], on_crashed=[sweep],
      log_prints=False, validate_parameters=False)
def ask_batch(job: JobSpec, config: ConfigSpec = _CONFIG, outputs: OutputsSpec = _OUTPUTS,
              storage: StorageSpec = _STORAGE, cluster: ClusterSpec = _CLUSTER, target: Target = _TARGET,
              teardown: TeardownSpec = _TEARDOWN, wait: WaitSpec = _WAIT, run_key: str = "") -> dict[str, Any]:
    """Run one parallel batch Job on ASK and collect its outputs.

    The parameters are the sections of a ``tasks.spec.BatchSpec``, the work first (``flows.run_files.SECTIONS``);
    ``ask_batch(**flow_parameters(spec))`` runs a whole spec. Prefect does not validate them itself
    (``validate_parameters=False``): the flow checks them all at once as ``parse_spec`` does everywhere else, so a
    bad field gets the same message — naming the field, the fix, and for a misspelt name the one meant.

    Args:
        job: The batch Job: image, command, completions, parallelism, resources, retries.
        config: Files, secrets and environment variables given to the pods.
        outputs: Where the pods put their results in OSS, how completeness is checked, the download.
        storage: A shared volume for the pods (none, an existing PVC, or NAS).
        cluster: The cluster the Job runs on (an ASK cluster by name, or an existing kubeconfig) and namespace.
        target: Region, credentials and endpoints.
        teardown: What to delete at the end.
        wait: Watching the Job: fail-fast grace, timeout, log streaming.
        run_key: Stable key naming everything this run creates; the same key re-attaches instead of starting
            again. Empty: derived from the flow run.

    Returns:
        ``{"run_key", "flow_run_name", "job", "cluster_id", "outputs_dir", "succeeded"}`` (``cluster_id``: the
        CS cluster id in modes 'ask' and 'acs', else None).

    Raises:
        SpecError: a parameter is invalid (nothing was created).
        RunLocked: another run of the same spec holds the run lock.
        JobFailed: an index failed (naming index, pod, exit code) or could not start (pod and reason).
        OutputsIncomplete: the Job succeeded but some index's outputs are missing or do not verify.

    Example:
        >>> ask_batch(**flow_parameters(parse_spec(yaml.safe_load(open("deployments/example.yaml")))))
    """
    from tasks.stages.outputs import collect_outputs_task, complete_indexes_task, ensure_bucket_task

    plain_console_logging()  # an ARN's ":ram:" (or a workload's ":ok:") is not an emoji on the terminal
    logger = get_run_logger()
    from tasks.cloud.clients import _load_prefect_secret

    # The same door as the CLI and `prefect deploy` (tasks.cloud.admission): every field, cross-field rule, input
    # file and Secret block value, before any cloud call; a SpecError fails the run with one line per problem.
    spec = admit(spec_data({"job": job, "config": config, "outputs": outputs, "storage": storage,
                            "cluster": cluster, "target": target, "teardown": teardown, "wait": wait,
                            "run_key": run_key}), load_secret=_load_prefect_secret).spec
    run_key = derive_run_key(spec, current_run.id)
    name = current_run.name or f"ask-batch-{run_key}"
    logger.info("run key %s: Job %d indexes x parallelism %d, image %s", run_key, spec.job.completions,
                spec.job.parallelism, spec.job.image)
    cluster_handle: ClusterHandle | None = None
    volume: VolumeHandle | None = None
    config_handle: ConfigHandle | None = None
    job_handle: JobHandle | None = None
    report: JobReport | None = None
    manifest: Any = None
    error: BaseException | None = None
    # One run per spec at a time, teardown included: a Lease in the target cluster (tasks/cloud/run_lock.py), taken
    # once the cluster is known. A run refused by it touches nothing: the resources are the holder's.
    held = contextlib.ExitStack()
    # The run's clients (tasks.cloud.context.StageContext): built once, shared by every stage, closed at the end.
    held.enter_context(run_context(spec))
    locked_out = False
    # Cheap checks before anything billed: a missing, foreign or read-only bucket stops the run here, before a
    # cluster, a NAS file system or a PV exists — and before the try below, since there is nothing to tear down
    # (no CS, NAS or Kubernetes request at all). The check is idempotent, so it needs no lock.
    try:
        ensure_bucket_task(spec)
    except BaseException:
        held.close()  # the run's clients
        raise
    try:
        cluster_handle = ensure_cluster_task(spec, run_key)
        try:
            held.enter_context(cluster_run_lock(spec, cluster_handle, holder=str(current_run.id)))
        except RunLocked:
            locked_out = True
            raise
        volume = ensure_volume_task(spec, run_key=run_key, cluster=cluster_handle)
        config_handle = publish_config_task(spec, run_key, cluster_handle)
        # rerun 'missing': indexes an earlier attempt of this run key finished are not run again.
        done = complete_indexes_task(spec, run_key=run_key, flow_run_name=name) if spec.job.rerun == "missing" else []
        follow_ups: list[int] = []  # indexes to run as follow-up Jobs (a re-run of the missing ones)
        if done:
            missing = sorted(set(range(spec.job.completions)) - set(done))
            job_handle, follow_ups = relaunch_task(spec, run_key, name, cluster_handle, volume, config_handle,
                                                   untraversed(missing))
        else:
            job_handle = launch_job_task(spec, run_key, name, cluster_handle, volume, config_handle)
        try:
            if job_handle.uid is None:  # follow-up Jobs run the missing indexes
                report = wait_for_follow_ups_task(spec, run_key, cluster_handle, job_handle, untraversed(follow_ups),
                                                  untraversed(done),
                                                  str(log_dir_for(spec, name)), flow_run_name=name, volume=volume,
                                                  config=config_handle)
            else:
                report = wait_for_job_task(spec, run_key, cluster_handle, job_handle, str(log_dir_for(spec, name)),
                                           flow_run_name=name, volume=volume, config=config_handle)
        except JobFailed as exc:
            report = exc.report
            raise
        manifest = collect_outputs_task(spec, run_key=run_key, flow_run_name=name, report=untraversed(report),
                                       log_dir=log_dir_for(spec, name))
    except BaseException as exc:
        error = exc
        raise
    finally:
        with held:  # the Lease and the clients, released last: after teardown
            if not locked_out:
                finish(spec, logger, run_key=run_key, name=name, cluster=cluster_handle, volume=volume,
                       config=config_handle, job=job_handle, report=report, outputs=manifest, error=error)
    return {"run_key": run_key, "flow_run_name": name, "job": job_handle.name,
            "cluster_id": cluster_handle.cluster_id if cluster_handle else None,
            "outputs_dir": manifest.download_dir if manifest is not None else None, "succeeded": True}


if __name__ == "__main__":
    from flows.cli import run

    run()
