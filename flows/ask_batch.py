"""The ask-batch flow: one parallel Indexed Job on ASK, from cluster to downloaded outputs to a clean bill.

    ensure_cluster -> ensure_volume -> publish_config -> launch_job -> wait_for_job -> collect_outputs
    └────────────────────────── teardown, whatever happened ──────────────────────────┘

Why it is shaped like this:

- **Run key.** Every name the run creates derives from it (``tasks.naming``). It is ``spec.run_key`` when given,
  else derived from the flow run id, so a retry of the same flow run — or a new run with the same ``run_key`` —
  renders the same Job name and re-attaches to the Job instead of starting the work twice (``launch_job``).
- **Teardown always runs**: in a ``finally`` for failures and in-process cancellation, and in the
  ``on_cancellation`` / ``on_crashed`` hooks, which sweep by the run's labels when the flow body never reached its
  ``finally`` (a worker reporting a killed process runs ``on_crashed``; research/prefect.md §2.5). Teardown is
  idempotent, so it does not matter that several of these may fire. A process killed with SIGKILL outside a worker
  gets no hook at all: running the same run key again re-attaches and its teardown cleans up.
- **Secrets** never enter parameters (block names and file paths only), handles, logs, artifacts or errors: the
  stages scrub every known secret value from pod log lines and error texts.

CLI (ad-hoc runs; ``make run`` uses it):

    python -m flows.ask_batch --params FILE [--set a.b=value ...] [--sandbox DIR] [--dry-run]

``--sandbox DIR`` runs against the sandbox (a local Alibaba Cloud region) whose ``endpoints.json`` is in DIR,
starting one in the background if none answers there. It only swaps the ``target`` (region, endpoints, key):
the flow itself cannot tell. The sandbox's virtual node runs each pod's command as a host process with the
sandbox's PATH, so it is started with this Python's ``bin`` first on PATH: ``python3`` in a Job command then is
an interpreter that has the OSS SDK, as the example image (examples/Dockerfile) does on real ASK.
"""

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run as current_run

from tasks.handles import ClusterHandle, ConfigHandle, JobHandle, JobReport, VolumeHandle
from tasks.naming import RUN_LABEL, make_run_key
from tasks.render.acs_cost import estimate_acs_job
from tasks.render.cost import estimate_job
from tasks.render.manifests import run_prefix
from tasks.spec import BatchSpec, SpecError, parse_spec
from tasks.stages.cluster import ensure_cluster_task
from tasks.stages.config import publish_config_task
from tasks.stages.job import launch_job_task
from tasks.stages.volume import ensure_volume_task
from tasks.stages.wait import JobFailed, wait_for_job_task

REPO = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------------------------- naming


#: How long a crashed run keeps its spec locked (the live holder renews its lease well before this).
LOCK_LEASE_SECONDS = 60.0  # the Prefect server's minimum lease


def derive_run_key(spec: BatchSpec, flow_run_id: Any) -> str:
    """``spec.run_key``, else one derived from the flow run id (stable across retries of that flow run)."""
    if spec.run_key:
        return spec.run_key
    return make_run_key("r" + str(flow_run_id).replace("-", "")[:12])


def _spec_of(parameters: dict[str, Any]) -> BatchSpec:
    value = parameters["spec"]
    return value if isinstance(value, BatchSpec) else parse_spec(value)


def flow_run_name() -> str:
    """``ask-batch-<run key>``: the name the outputs directory and the UI show."""
    return f"ask-batch-{derive_run_key(_spec_of(current_run.parameters), current_run.id)}"


def log_dir_for(spec: BatchSpec, name: str) -> Path:
    """Where wait_for_job streams each pod's whole log while the Job runs (a staging directory).

    collect_outputs uploads these files to OSS and copies them to ``<download_dir>/<run>/logs/``; when the run
    fails before that, the flow copies them there itself (``keep_logs``), so the logs are always found there.
    """
    return Path(spec.outputs.download_dir) / ".pod-logs" / name


def kept_logs_dir(spec: BatchSpec, name: str) -> Path:
    """Where the user finds every pod's log after the run: ``<download_dir>/<run>/logs/``."""
    return Path(spec.outputs.download_dir) / name / "logs"


def keep_logs(spec: BatchSpec, name: str) -> Path:
    """Copy the streamed pod logs to ``kept_logs_dir`` (for runs that fail before collect_outputs does it)."""
    import shutil

    dest = kept_logs_dir(spec, name)
    source = log_dir_for(spec, name)
    if source.is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        for path in source.glob("*.log"):
            shutil.copyfile(path, dest / path.name)
    return dest


def save_logs_after_failure(spec: BatchSpec, *, run_key: str, name: str,
                            logger: Any) -> tuple[dict[str, str] | None, str | None]:
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


# --------------------------------------------------------------------------------------------- hooks


def _spec_for_sweep(parameters: dict[str, Any]) -> BatchSpec:
    """The run's spec as the hook needs it: target, cluster, storage and teardown policy.

    The hook may run in the worker's process, whose working directory need not be the one the run's relative
    ``config`` paths were checked against; those files play no part in a sweep, so when they are what fails
    validation, the spec is read without its ``config`` section.
    """
    value = parameters["spec"]
    if isinstance(value, BatchSpec):
        return value
    try:
        return parse_spec(value)
    except SpecError:
        return parse_spec({k: v for k, v in dict(value).items() if k != "config"})


def sweep(flow: Any, flow_run: Any, state: Any) -> None:
    """``on_cancellation`` / ``on_crashed``: tear down by the run's labels and tags, from the parameters alone.

    Prefect runs it in the flow's process (cancellation seen by the engine) or in the worker's (the worker
    cancelled the run and stopped its process, or saw the process die: research/prefect.md §2.5), so every
    client is built here from the run's parameters. It logs what it deleted and kept into the run's own log
    (and stderr), and never raises: the state that triggered it must stay the run's state. The parameter names
    are Prefect's: its runner calls hooks with ``flow=, flow_run=, state=`` keywords.
    """
    what = getattr(getattr(state, "type", None), "value", "?").lower()
    logger: Any = None
    try:
        from prefect.logging.loggers import flow_run_logger

        logger = flow_run_logger(flow_run, flow)
    except Exception:  # noqa: BLE001 - stderr still gets every line
        pass

    def say(level: int, text: str) -> None:
        print(text, file=sys.stderr)
        if logger is not None:
            with contextlib.suppress(Exception):
                logger.log(level, text)

    run_key = "?"
    try:
        from kubernetes import client

        from tasks.cloud.clients import nas_client
        from tasks.cloud.cluster_access import connect, locate_cluster
        from tasks.cloud.context import Scrubber, credentials, cs_for
        from tasks.stages import teardown

        spec = _spec_for_sweep(flow_run.parameters)
        run_key = derive_run_key(spec, flow_run.id)
        say(logging.INFO, f"ask-batch sweep ({what}) {run_key}: tearing down by the label {RUN_LABEL}={run_key}")
        creds = credentials(spec)
        scrub = Scrubber(creds.secret_values())
        cs = cs_for(spec, creds)
        nas = nas_client(spec.target, creds) if spec.storage.mode == "nas" else None
        cluster = locate_cluster(spec, cs=cs)
        api = connect(cluster, spec, cs=cs) if cluster else None
        report = teardown.sweep(spec, run_key=run_key, core_v1=client.CoreV1Api(api) if api else None,
                                batch_v1=client.BatchV1Api(api) if api else None, nas=nas, cs=cs)
        for line in report.lines():
            say(logging.WARNING if line.startswith("FAILED") else logging.INFO,
                scrub(f"ask-batch sweep ({what}) {run_key}: {line}"))
        say(logging.INFO, f"ask-batch sweep ({what}) {run_key}: done ({len(report.deleted)} deleted, "
                          f"{len(report.kept)} kept, {len(report.failed)} failed)")
    except Exception as exc:  # noqa: BLE001 - a hook must not hide the state that triggered it
        say(logging.ERROR, f"ask-batch sweep ({what}) of {run_key} failed: {type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------------------------- summary


def summary_markdown(spec: BatchSpec, *, run_key: str, name: str, cluster: ClusterHandle | None,
                     job: JobHandle | None, report: JobReport | None, outputs: Any, teardown: Any,
                     error: str | None, saved_logs: dict[str, str] | None = None,
                     logs_problem: str | None = None) -> str:
    """The run summary artifact: cluster, job, per-index record, outputs, pod logs, cost, teardown.

    ``saved_logs`` (pod -> OSS key) are the logs a failed run uploaded itself (a successful run's are in
    ``outputs.log_keys``); ``logs_problem`` says why that upload did not happen.
    """
    lines = [f"# ask-batch run `{name}`", ""]
    lines.append(f"**Result:** {'succeeded' if error is None else 'FAILED'}")
    if error:
        lines += ["", "```", error, "```"]
    lines += ["", "## Cluster"]
    if cluster:
        lines.append(f"- {cluster.mode} cluster `{cluster.name or cluster.kubeconfig_source}` ({cluster.kind.upper()})"
                     f"{f' (`{cluster.cluster_id}`)' if cluster.cluster_id else ''}, region `{cluster.region}`, "
                     f"namespace `{cluster.namespace}`{', created by this run' if cluster.created else ''}")
    else:
        lines.append("- not reached")
    lines += ["", "## Job"]
    if job:
        lines.append(f"- `{job.namespace}/{job.name}` ({job.completions} indexes, parallelism "
                     f"{spec.job.parallelism}, image `{spec.job.image}`)"
                     f"{' — re-attached to an existing Job' if job.adopted else ''}")
    else:
        lines.append("- not launched")
    per_index = {}
    if outputs is not None:
        per_index = {i.index: i for i in outputs.indexes}
    if report:
        lines += ["", "| index | status | attempts | exit code | reason | duration (s) | outputs |",
                  "|---|---|---|---|---|---|---|"]
        for r in report.indexes:
            out = per_index.get(r.index)
            out_txt = (f"{len(out.objects)} object(s){'' if out.complete else ' — ' + (out.problem or 'incomplete')}"
                       if out else "")
            lines.append(f"| {r.index} | {r.status} | {r.attempts} | {'' if r.exit_code is None else r.exit_code} "
                         f"| {r.reason or ''}{f' ({r.reclaims} reclaimed)' if r.reclaims else ''} | {r.seconds:.1f} "
                         f"| {out_txt} |")
    lines += ["", "## Outputs"]
    prefix = run_prefix(spec.outputs, run_key=run_key, flow_run_name=name)
    lines.append(f"- OSS: `oss://{spec.outputs.bucket}/{prefix}`")
    if outputs is not None and outputs.download_dir:
        lines.append(f"- downloaded to `{outputs.download_dir}` ({outputs.total_bytes} bytes"
                     f"{', complete' if outputs.complete else f', missing indexes {outputs.missing}'})")
    in_oss = saved_logs if saved_logs is not None else (outputs.log_keys if outputs is not None else None)
    if in_oss:
        lines.append(f"- pod logs: {len(in_oss)} in OSS under `oss://{spec.outputs.bucket}/{prefix}logs/`, "
                     f"and copied to `{kept_logs_dir(spec, name)}/`")
    else:
        lines.append(f"- pod logs: `{kept_logs_dir(spec, name)}/`"
                     f"{f' (not uploaded to OSS: {logs_problem})' if logs_problem else ''}")
    if report:
        estimator = estimate_acs_job if cluster is not None and cluster.kind == "acs" else estimate_job
        cost = estimator(spec.job, [r.seconds for r in report.indexes], region=spec.target.region)
        lines += ["", "## Estimated cost", f"- {cost.summary()}"]
        lines += [f"- {note}" for note in cost.notes]
        lines.append(f"- prices: {cost.source}")
    if teardown is not None:
        lines += ["", "## Teardown"] + [f"- {line}" for line in teardown.lines()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- the flow


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
    spec = parse_spec(spec)  # re-check cross-field rules and local files in this process
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


# --------------------------------------------------------------------------------------------- CLI


class ParamsError(ValueError):
    """The params file or a --set cannot be read (exit code 2, like an invalid spec)."""


def load_params(path: str | Path, sets: list[str] | None = None) -> dict[str, Any]:
    """The params file (YAML/JSON) with ``--set a.b=value`` applied (values parsed as YAML)."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise ParamsError(f"--params {path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"--params {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ParamsError(f"--params {path}: must be a mapping of BatchSpec fields")
    for item in sets or []:
        dotted, sep, raw = item.partition("=")
        if not sep or not dotted:
            raise ParamsError(f"--set {item!r}: expected a.b=value")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[leaf] = value
    return data


def _healthy(endpoints_file: Path) -> bool:
    try:
        base = json.loads(endpoints_file.read_text())["control"]["endpoint"]
        with urllib.request.urlopen(base + "/healthz", timeout=2) as resp:
            return resp.status == 200
    except (OSError, ValueError, KeyError):
        return False


def ensure_sandbox(directory: Path, *, timeout: float = 90.0) -> Path:
    """The sandbox's endpoints.json in ``directory``, starting a detached sandbox there if none answers."""
    directory = directory.resolve()
    endpoints = directory / "endpoints.json"
    if _healthy(endpoints):
        return endpoints
    directory.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    # Pods of the virtual node inherit this PATH: put the interpreter that has the OSS SDK first (module docstring).
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log_file = (directory / "sandbox.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", "serve", "--dir", str(directory)], cwd=REPO,
                            env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                            start_new_session=True)
    (directory / "sandbox.pid").write_text(f"{proc.pid}\n")
    print(f"started a sandbox in {directory} (pid {proc.pid}, log {directory / 'sandbox.log'}); it keeps running "
          f"for later runs — stop it with: kill $(cat {directory / 'sandbox.pid'})", file=sys.stderr)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the sandbox exited with code {proc.returncode}; see {directory / 'sandbox.log'}")
        if _healthy(endpoints):
            return endpoints
        time.sleep(0.2)  # polling a child we just started: nothing to watch but its control endpoint
    raise RuntimeError(f"the sandbox did not become ready in {timeout:.0f}s; see {directory / 'sandbox.log'}")


def build_spec(params: str | Path, sets: list[str] | None, sandbox: str | Path | None, *,
               start_sandbox: bool = True) -> BatchSpec:
    """Validate the parameters (no network), then point ``target`` at the sandbox if asked.

    Raises ``ParamsError``/``SpecError`` before anything is contacted or started.
    """
    from tasks.cloud.clients import apply_env, target_from_endpoints_file

    data = load_params(params, sets)
    spec = parse_spec(data)
    if sandbox is None:
        return spec
    endpoints = Path(sandbox) / "endpoints.json"
    if start_sandbox:
        endpoints = ensure_sandbox(Path(sandbox))
    elif not endpoints.exists():
        return spec
    target, env = target_from_endpoints_file(endpoints)
    apply_env(env)
    data["target"] = {**target.model_dump(mode="json"),
                      "credentials": spec.target.credentials.model_dump(mode="json")}
    return parse_spec(data)


def _ui_hint(flow_run_id: Any) -> str:
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    if PREFECT_API_URL.value():
        ui = PREFECT_UI_URL.value() or PREFECT_API_URL.value().removesuffix("/api")
        return f"see the run in the Prefect UI: {ui}/runs/flow-run/{flow_run_id}"
    return ("this run was recorded by a temporary Prefect server that stopped with it (PREFECT_API_URL is unset).\n"
            "  To keep history and browse runs: `.venv/bin/prefect server start` in another terminal, then\n"
            "  `export PREFECT_API_URL=http://127.0.0.1:4200/api` and run again; the UI is at http://127.0.0.1:4200")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.ask_batch", description=__doc__.splitlines()[0])
    parser.add_argument("--params", required=True, help="YAML/JSON file with the BatchSpec")
    parser.add_argument("--set", action="append", default=[], metavar="A.B=VALUE",
                        help="override one field (value parsed as YAML); repeatable")
    parser.add_argument("--sandbox", metavar="DIR", help="run against the sandbox in DIR (started if not running)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print every manifest and API request as YAML (secrets redacted); change nothing")
    args = parser.parse_args(argv)
    try:
        spec = build_spec(args.params, args.set, args.sandbox, start_sandbox=not args.dry_run)
    except (ParamsError, SpecError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if args.dry_run:
        from flows.plan import render_plan

        run_key = spec.run_key or "dry-run"
        print(f"# ask-batch dry run: nothing is created. Run key {run_key!r}"
              f"{'' if spec.run_key else ' (a real run derives it from the flow run id)'}.")
        print(render_plan(spec, run_key=run_key, flow_run_name=f"ask-batch-{run_key}"), end="")
        return 0
    state = ask_batch(spec, return_state=True)
    result = state.result(raise_on_failure=False)
    name = state.state_details.flow_run_id
    from prefect import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(name)
    download = Path(spec.outputs.download_dir) / run.name
    if state.is_completed():
        print(f"\nask-batch run {run.name}: succeeded")
        print(f"  outputs downloaded to {download}/" if spec.outputs.download else
              f"  outputs recorded (not downloaded) under oss://{spec.outputs.bucket}/")
    else:
        print(f"\nask-batch run {run.name}: {state.type.value.lower()}\n  {result}", file=sys.stderr)
        print(f"  pod logs kept in {kept_logs_dir(spec, run.name)}/", file=sys.stderr)
    print(f"  {_ui_hint(run.id)}")
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
