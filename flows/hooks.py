"""The ``on_cancellation`` / ``on_crashed`` hooks: tear a run down from its parameters alone.

Teardown normally runs in the flow's ``finally``; these hooks cover the runs whose body never got there (a worker
cancelling the run and stopping its process, or reporting a process that died). Teardown is idempotent, so it does
not matter that several of them may fire.
"""

import contextlib
import logging
import sys
from typing import Any

from flows.run_files import derive_run_key, spec_data
from tasks.naming import RUN_LABEL
from tasks.spec import BatchSpec, SpecError, parse_spec


def _spec_for_sweep(parameters: dict[str, Any]) -> BatchSpec:
    """The run's spec as the hook needs it: target, cluster, storage and teardown policy.

    The hook may run in the worker's process, whose working directory need not be the one the run's relative
    ``config`` paths were checked against; those files play no part in a sweep, so when they are what fails
    validation, the spec is read without its ``config`` section.
    """
    data = spec_data(parameters)
    try:
        return parse_spec(data)
    except SpecError:
        return parse_spec({k: v for k, v in data.items() if k != "config"})


def sweep(flow: Any, flow_run: Any, state: Any) -> None:
    """``on_cancellation`` / ``on_crashed``: tear down by the run's labels and tags, from the parameters alone.

    Prefect runs it in the flow's process (cancellation seen by the engine) or in the worker's (the worker
    cancelled the run and stopped its process, or saw the process die:
    https://docs.prefect.io/v3/develop/manage-states), so every client is built here from the run's parameters.
    It logs what it deleted and kept into the run's own log (and stderr), and never raises: the state that
    triggered it must stay the run's state. The parameter names are Prefect's: its runner calls hooks with
    ``flow=, flow_run=, state=`` keywords.
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

        from tasks.cloud.cluster_access import locate_cluster
        from tasks.cloud.context import stage_context
        from tasks.stages import teardown

        spec = _spec_for_sweep(flow_run.parameters)
        run_key = derive_run_key(spec, flow_run.id)
        say(logging.INFO, f"ask-batch sweep ({what}) {run_key}: tearing down by the label {RUN_LABEL}={run_key}")
        with stage_context(spec) as ctx:
            cs = ctx.cs()
            cluster = locate_cluster(spec, cs=cs)
            api = ctx.kube(cluster) if cluster else None
            report = teardown.sweep(spec, run_key=run_key, core_v1=client.CoreV1Api(api) if api else None,
                                    batch_v1=client.BatchV1Api(api) if api else None,
                                    nas=ctx.nas() if spec.storage.mode == "nas" else None, cs=cs)
            scrub = ctx.scrubber
        for line in report.lines():
            say(logging.WARNING if line.startswith("FAILED") else logging.INFO,
                scrub(f"ask-batch sweep ({what}) {run_key}: {line}"))
        say(logging.INFO, f"ask-batch sweep ({what}) {run_key}: done ({len(report.deleted)} deleted, "
                          f"{len(report.kept)} kept, {len(report.failed)} failed)")
    except Exception as exc:  # noqa: BLE001 - a hook must not hide the state that triggered it
        say(logging.ERROR, f"ask-batch sweep ({what}) of {run_key} failed: {type(exc).__name__}: {exc}")

