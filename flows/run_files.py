"""What a flow run is called and where its files go: the run key, the run name, the pod-log directories.

Shared by the flow (``flows.ask_batch``), its hooks (``flows.hooks``), the summary (``flows.summary``) and the
CLI (``flows.cli``); it holds no Prefect flow, so each of them can import it without importing the others.
"""

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect.runtime import flow_run as current_run

from tasks.naming import make_run_key
from tasks.spec import BatchSpec, parse_spec


def derive_run_key(spec: BatchSpec, flow_run_id: Any) -> str:
    """``spec.run_key``, else one derived from the flow run id (stable across retries of that flow run)."""
    return run_key_for(spec.run_key, flow_run_id)


def run_key_for(given: object, flow_run_id: Any) -> str:
    """``given`` when it is a non-empty string, else the run key derived from the flow run id."""
    if isinstance(given, str) and given:
        return given
    return make_run_key("r" + str(flow_run_id).replace("-", "")[:12])


#: The flow's parameters, in the order the Prefect UI form shows them: the work first, where it runs last. Each is
#: one section of a ``BatchSpec``, so ``prefect deployment run --param job='{...}'`` replaces one section and the
#: server keeps the deployment's others (it merges run parameters into the deployment's by name).
SECTIONS = ("job", "config", "outputs", "storage", "cluster", "target", "teardown", "wait", "run_key")


def flow_parameters(spec: BatchSpec) -> dict[str, Any]:
    """The flow's parameters for ``spec``: ``ask_batch(**flow_parameters(spec))``."""
    return {name: getattr(spec, name) for name in SECTIONS} | {"run_key": spec.run_key or ""}


def spec_data(parameters: dict[str, Any]) -> dict[str, Any]:
    """The flow's parameters as one ``BatchSpec`` mapping (sections that are None or absent are left out)."""
    data: dict[str, Any] = {}
    for name in SECTIONS:
        value = parameters.get(name)
        if value is None:
            continue
        data[name] = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
    return data


def spec_from_parameters(parameters: dict[str, Any]) -> BatchSpec:
    """The flow's parameters validated into a ``BatchSpec`` (``SpecError`` names every bad field)."""
    return parse_spec(spec_data(parameters))


def flow_run_name() -> str:
    """``ask-batch-<run key>``: the name the outputs directory and the UI show.

    Reads only the ``run_key`` parameter (the flow validates the whole spec once, in its body; a bad run key is
    refused there with the others); empty: derived from the flow run id, as ``derive_run_key`` does.
    """
    return f"ask-batch-{run_key_for(current_run.parameters.get('run_key'), current_run.id)}"


def log_dir_for(spec: BatchSpec, name: str) -> Path:
    """Where wait_for_job streams each pod's whole log while the Job runs (a staging directory).

    collect_outputs uploads these files to OSS and copies them to ``<download_dir>/<run>/logs/``; when the run
    fails before that, the flow copies them there itself (``keep_logs``), so the logs are always found there.
    """
    return Path(spec.outputs.download_dir) / ".pod-logs" / name


def kept_logs_dir(spec: BatchSpec, name: str) -> Path:
    """Where the user finds every pod's log after the run: ``<download_dir>/<run>/logs/``."""
    return Path(spec.outputs.download_dir) / name / "logs"


def ledger_path(spec: BatchSpec, name: str) -> Path:
    """Where the run's per-index ledger goes: ``<download_dir>/<run>/ledger.jsonl`` (``flows.summary.write_ledger``)."""
    return Path(spec.outputs.download_dir) / name / "ledger.jsonl"


def keep_logs(spec: BatchSpec, name: str) -> Path:
    """Copy the streamed pod logs to ``kept_logs_dir`` (for runs that fail before collect_outputs does it)."""
    dest = kept_logs_dir(spec, name)
    source = log_dir_for(spec, name)
    if source.is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        for path in source.glob("*.log"):
            shutil.copyfile(path, dest / path.name)
    return dest


def save_logs_after_failure(spec: BatchSpec, *, run_key: str, name: str,
                            logger: Any) -> tuple[Mapping[str, str] | None, str | None]:
    """Upload a failed run's pod logs to ``<run prefix>logs/`` in OSS, as collect_outputs does on success.

    Best effort: returns (pod -> key, None), or (None, why not); never raises, so the run's own error stays
    the one the user sees.
    """
    from tasks.stages.outputs import save_pod_logs_task

    source = log_dir_for(spec, name)
    if not source.is_dir() or not any(source.glob("*.log")):
        return None, "no pod log was streamed"
    try:
        saved = save_pod_logs_task(spec, run_key=run_key, flow_run_name=name, log_dir=source)
    except Exception as exc:  # noqa: BLE001 - never hide the run's own error behind this one
        logger.error("could not upload the pod logs to OSS: %s: %s", type(exc).__name__, exc)
        return None, f"{type(exc).__name__}: {exc}"
    return saved, None

