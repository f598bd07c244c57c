"""What every ``@task`` wrapper around a stage shares: the run's clients (``StageContext``), the retry rule, logs.

Why this exists: handles carry no secrets (they are task results, shown in the UI), so the clients a stage needs
are built from the spec — credentials from their source, the kubeconfig from the cluster's source. ``StageContext``
does that **once per run**: the flow opens it around its stages (``run_context``), every task asks for it
(``stage_context``) and gets the same clients, and it closes them all when the run ends. A task called on its own
(a test, the crash hook) gets a context of its own, closed when it returns. So the kubeconfig is fetched once per
run (not once per task: DescribeClusterUserKubeconfig), credentials are resolved once, and the run's one scrubber
covers every stage's logs. Two Prefect concerns live here too:

- **retries**: ``tasks.cloud.retry.call`` is the one retry policy (backoff with jitter within a time budget, per API
  call). Task-level retries are off (``RETRY_DELAYS`` is empty): they multiplied with it. ``transient_only``
  stays the rule should a task ever be given retries again.
- **logs**: the stage functions log to the stdlib ``ask_batch.*`` loggers so they stay free of Prefect;
  ``stage_logs()`` forwards those records, scrubbed, into the task's Prefect run log while the task runs.
"""

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from tasks.cloud.clients import (
    AliCredentials,
    _load_prefect_secret,
    cs_client,
    nas_client,
    oss_client,
    resolve_credentials,
)
from tasks.cloud.cluster_access import connect
from tasks.cloud.inputs import run_secret_values
from tasks.cloud.retry import CloudError, classify
from tasks.handles import ClusterHandle
from tasks.render.redact import Scrubber
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


#: Clients built from STS credentials (they carry a security token, which expires: typically after an hour) are
#: rebuilt, with credentials resolved again, when older than this.
STS_REFRESH_SECONDS = 600.0


def _fingerprint(spec: BatchSpec) -> str:
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()


class StageContext:
    """The cloud clients of one run, each built on first use from the spec, all closed by ``close()``.

    ``credentials`` (``AliCredentials``), ``cs()`` (None unless the cluster mode talks to Container Service),
    ``nas()``, ``oss()``, ``kube(cluster)`` (a ``kubernetes.client.ApiClient`` per cluster handle, its kubeconfig
    fetched once; a temporary kubeconfig, ``cluster.ask.kubeconfig_minutes``, again after half its validity) and
    ``scrubber`` (every form of every secret value the run handles). Thread-safe: the wait stage's log readers share
    it. Not a task parameter (it holds secrets and sockets): tasks find it with ``stage_context(spec)``.

    Raises:
        Whatever building a client raises (credentials that cannot be resolved, ``CloudError`` for a kubeconfig
        that cannot be fetched), from the call that needs it.
    """

    def __init__(self, spec: BatchSpec, *, load_secret: Callable[[str], str] = _load_prefect_secret) -> None:
        self.spec = spec
        self.fingerprint = _fingerprint(spec)
        self._load_secret = load_secret
        self._lock = threading.RLock()
        self._creds: AliCredentials | None = None
        self._creds_at = 0.0
        self._clients: dict[str, Any] = {}
        self._kube: dict[tuple[str, str | None, str], tuple[float, Any]] = {}
        self._retired: list[Any] = []
        self._scrubber: Scrubber | None = None

    # ---- credentials and the cloud SDK clients

    @property
    def credentials(self) -> AliCredentials:
        """The run's AccessKey, from its source (never from a handle); resolved again when an STS token ages."""
        with self._lock:
            stale = (self._creds is not None and self._creds.security_token is not None
                     and time.monotonic() - self._creds_at > STS_REFRESH_SECONDS)
            if self._creds is None or stale:
                self._creds = resolve_credentials(self.spec.target.credentials, load_secret=self._load_secret)
                self._creds_at = time.monotonic()
                self._clients.clear()  # tea and OSS clients hold the credentials they were built with
            return self._creds

    def _client(self, name: str, build: Callable[[AliCredentials], Any]) -> Any:
        with self._lock:
            creds = self.credentials
            if name not in self._clients:
                self._clients[name] = build(creds)
            return self._clients[name]

    def cs(self) -> Any | None:
        """A Container Service client in cluster modes 'ask' and 'acs' (and 'existing' with kind 'auto'), else
        None."""
        return self._client("cs", lambda c: cs_for(self.spec, c))

    def nas(self) -> Any:
        """A NAS client."""
        return self._client("nas", lambda c: nas_client(self.spec.target, c))

    def oss(self) -> Any:
        """An OSS v2 client for the flow (outputs, saved logs)."""
        return self._client("oss", lambda c: oss_client(self.spec.target, c))

    def kube(self, cluster: ClusterHandle) -> Any:
        """The ``kubernetes.client.ApiClient`` of ``cluster`` (shared: callers never close it)."""
        key = (cluster.mode, cluster.cluster_id, cluster.kubeconfig_source)
        managed = self.spec.cluster.managed
        minutes = managed.kubeconfig_minutes if managed is not None and cluster.mode != "existing" else None
        with self._lock:
            built = self._kube.get(key)
            if built is not None and minutes is not None and time.monotonic() - built[0] > minutes * 30:
                self._retired.append(built[1])  # still in use by a reader: closed with the context
                built = None
            if built is None:
                cs = self.cs() if cluster.mode in ("ask", "acs") else None
                built = (time.monotonic(), connect(cluster, self.spec, cs=cs))
                self._kube[key] = built
            return built[1]

    @property
    def scrubber(self) -> Scrubber:
        """The run's one scrubber: the AccessKey and every secret file and env value, in every form."""
        with self._lock:
            if self._scrubber is None:
                creds = self.credentials
                try:
                    self._scrubber = Scrubber(run_secret_values(self.spec, creds, load_secret=self._load_secret))
                except Exception:  # noqa: BLE001 - a config source that cannot be read is reported by its stage
                    self._scrubber = Scrubber(creds.secret_values())
            return self._scrubber

    def close(self) -> None:
        """Close every client built (idempotent)."""
        with self._lock:
            apis = [api for _, api in self._kube.values()] + self._retired
            self._kube.clear()
            self._retired.clear()
            self._clients.clear()
        for api in apis:
            with contextlib.suppress(Exception):
                api.close()


_OPEN: dict[str, StageContext] = {}
_OPEN_LOCK = threading.Lock()


@contextlib.contextmanager
def run_context(spec: BatchSpec) -> Iterator[StageContext]:
    """The flow's context for one run: open while the stages run, closed (every client) at the end.

    Example:
        >>> with run_context(spec) as ctx:
        ...     cluster = ensure_cluster_task(spec, run_key)   # the task's stage_context(spec) is ctx
    """
    ctx = StageContext(spec)
    with _OPEN_LOCK:
        outer = _OPEN.get(ctx.fingerprint)
        _OPEN[ctx.fingerprint] = ctx
    try:
        yield ctx
    finally:
        with _OPEN_LOCK:
            if outer is None:
                _OPEN.pop(ctx.fingerprint, None)
            else:
                _OPEN[ctx.fingerprint] = outer
        ctx.close()


@contextlib.contextmanager
def stage_context(spec: BatchSpec) -> Iterator[StageContext]:
    """The open run context for this spec, or (a task called outside a run) a new one closed on exit."""
    with _OPEN_LOCK:
        ctx = _OPEN.get(_fingerprint(spec))
    if ctx is not None:
        yield ctx
        return
    own = StageContext(spec)
    try:
        yield own
    finally:
        own.close()


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
