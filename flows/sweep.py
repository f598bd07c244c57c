"""Teardown for an ask-batch run whose flow pod crashed: the ``on_crashed`` hook, run by the server's automation.

Why a flow of its own: on a process worker, a killed flow process is seen by the worker, which runs the flow's
``on_crashed`` hook (``flows.hooks.sweep``). On a Kubernetes work pool nothing runs it: the flow runs in a pod,
the prefect-kubernetes worker only creates the Job, and its observer marks the run Crashed when the pod fails
(it runs no hooks). The Job, ConfigMap and Secret the run made would then stay in the cluster, billed pods
included. So ``prefect.yaml`` gives the deployment ``ask-batch/sweep-k8s`` of this flow a trigger: when a flow run
of ``ask-batch`` on the Kubernetes pool emits ``prefect.flow-run.Crashed``, the server's automation starts this
flow with that run's id, in a pod of the same pool. It reads the crashed run's parameters from the API and sweeps
by the run's labels, exactly as the hook would, logging into the crashed run's own log.

Prefect documents deployment triggers with templated parameters here:
https://docs.prefect.io/v3/how-to-guides/automations/creating-deployment-triggers
"""

from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger

from flows.hooks import sweep

#: The flow whose runs this sweeps (``flows.ask_batch.ask_batch``).
SWEPT_FLOW = "ask-batch"


def _run_id(crashed_run: str) -> UUID:
    """``prefect.flow-run.<uuid>`` (an event's resource id) or a bare ``<uuid>`` -> the UUID.

    Raises:
        ValueError: neither form (names the value and the expected forms).
    """
    try:
        return UUID(crashed_run.rsplit(".", 1)[-1])
    except ValueError:
        raise ValueError(f"crashed_run {crashed_run!r} is not a flow run id; give 'prefect.flow-run.<uuid>' (the "
                         f"resource id of a prefect.flow-run.Crashed event) or the run's UUID") from None


@flow(name="ask-batch-sweep", flow_run_name="sweep-{crashed_run}")
def sweep_crashed_run(crashed_run: str) -> dict[str, Any]:
    """Tear down, by its labels and per its teardown policy, what a crashed ask-batch run left behind.

    Args:
        crashed_run: the crashed flow run, as ``prefect.flow-run.<uuid>`` or ``<uuid>``.

    Returns:
        ``{"flow_run_id", "state"}`` of the run that was swept. What was deleted and kept is in that run's log
        (lines ``ask-batch sweep (crashed) <run key>: ...``).

    Raises:
        ValueError: ``crashed_run`` is not a flow run id, or the run is not an ``ask-batch`` run or not Crashed.
    """
    from prefect.client.orchestration import get_client

    run_id = _run_id(crashed_run)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        flow_name = client.read_flow(run.flow_id).name
    state = run.state
    if flow_name != SWEPT_FLOW or state is None or not state.is_crashed():
        raise ValueError(f"flow run {run_id} is a {flow_name!r} run in state "
                         f"{state.type.value if state else None}; only crashed {SWEPT_FLOW!r} runs are swept")
    get_run_logger().info("sweeping crashed run %s (%s); its log says what was deleted and kept", run.name, run_id)
    sweep(None, run, state)  # never raises; logs into the crashed run's log
    return {"flow_run_id": str(run_id), "state": state.type.value}
