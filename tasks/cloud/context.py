"""What every ``@task`` wrapper around a stage shares: retry rule, clients from (spec, handles), secret scrubbing.

Why this exists: handles carry no secrets (they are task results, shown in the UI), so each task rebuilds the
clients it needs from the spec — credentials from their source, the kubeconfig from the cluster's source. That
takes a few lines every stage would otherwise repeat. The same goes for two Prefect concerns:

- **retries**: ``tasks.cloud.retry.call`` is the one retry policy (backoff with jitter within a time budget, per API
  call). Task-level retries are off (``RETRY_DELAYS`` is empty): they multiplied with it. ``transient_only``
  stays the rule should a task ever be given retries again.
- **logs**: the stage functions log to the stdlib ``ask_batch.*`` loggers so they stay free of Prefect;
  ``stage_logs()`` forwards those records, scrubbed, into the task's Prefect run log while the task runs.
"""

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from tasks.cloud.clients import AliCredentials, cs_client, resolve_credentials
from tasks.cloud.cluster_access import connect
from tasks.cloud.retry import CloudError, classify
from tasks.handles import ClusterHandle
from tasks.spec import BatchSpec

#: Task retries (seconds before each). Empty: ``tasks.cloud.retry.call()`` is the one retry layer (see above).
RETRY_DELAYS: list[float] = []


def transient_only(task: Any, task_run: Any, state: Any) -> bool:
    """``retry_condition_fn``: retry a task only when it failed on a transient cloud error."""
    try:
        state.result(raise_on_failure=True)
    except CloudError as err:
        return err.transient
    except Exception as exc:  # noqa: BLE001 - classify anything else the same way call() does
        return classify(exc, service="?", operation="?").transient
    return False


def credentials(spec: BatchSpec) -> AliCredentials:
    """The run's AccessKey, from its source (never from a handle)."""
    return resolve_credentials(spec.target.credentials)


def cs_for(spec: BatchSpec, creds: AliCredentials | None = None) -> Any | None:
    """A Container Service client in cluster modes 'ask' and 'acs' (and 'existing' with kind 'auto'), else None."""
    if spec.cluster.mode == "existing" and spec.cluster.existing.kind != "auto":
        return None
    return cs_client(spec.target, creds or credentials(spec))


def kube_for(spec: BatchSpec, cluster: ClusterHandle, creds: AliCredentials | None = None) -> Any:
    """A ``kubernetes.client.ApiClient`` for the run's cluster (kubeconfig fetched again from its source)."""
    cs = cs_for(spec, creds) if cluster.mode in ("ask", "acs") else None
    return connect(cluster, spec, cs=cs)


class _Forward(logging.Handler):
    def __init__(self, target: Callable[[int, str], None], scrub: Callable[[str], str]):
        super().__init__(level=logging.INFO)
        self.target, self.scrub = target, scrub

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.target(record.levelno, self.scrub(record.getMessage()))


@contextlib.contextmanager
def stage_logs(scrub: Callable[[str], str] = str) -> Iterator[Any]:
    """Forward ``ask_batch.*`` log records into the current Prefect run log; yields that run logger."""
    from prefect import get_run_logger

    run_logger = get_run_logger()
    handler = _Forward(run_logger.log, scrub)
    root = logging.getLogger("ask_batch")
    saved = root.level, root.propagate
    root.addHandler(handler)
    # The run logger already prints to the console; propagating too would print every line twice.
    root.propagate = False
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        yield run_logger
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        root.propagate = saved[1]
