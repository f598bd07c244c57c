"""One retry policy for every cloud call, and turning permanent errors into errors a human can act on.

Why one place: retries used to multiply (the OSS SDK's own retryer x ``call()`` x a download loop x Prefect task
retries: up to 135 GETs for one object), while a transient OSS 503 was treated as permanent because the OSS v2
SDK wraps the service's error in ``OperationError``. Now:

- **What is transient** (``classify``): HTTP 5xx and 429, throttling codes, a dropped/reset/timed-out connection
  — found by looking *inside* the SDKs' wrappers (``OperationError.unwrap()`` of the OSS v2 SDK, tea's
  ``inner_exception``, ``__cause__``), so the service's status and code are what decide.
- **How long** (``RetryPolicy``): exponential backoff with jitter (each delay drawn from [d/2, d], so parallel
  callers spread out), at most ``max_attempts`` tries *and* at most ``budget_s`` seconds from the first try —
  whichever comes first. A ``Retry-After`` hint from the service is honoured within the same budget.
- **Where**: only in ``call()``. The SDKs are configured not to retry (``tasks.cloud.clients``), the stages do not loop
  on errors, and Prefect task retries are off (``tasks.cloud.context.RETRY_DELAYS`` is empty).

Anything else is raised at once as a ``CloudError`` carrying the service's own code, message and request id (what
support asks for).
"""

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tasks.errors import CloudError

T = TypeVar("T")
log = logging.getLogger("ask_batch.retry")

#: Error codes that mean "no such resource" where the service does not answer HTTP 404 (NAS and CS answer 400/404
#: with these codes: https://api.aliyun.com/document/NAS/2017-06-26/errorCode,
#: https://api.aliyun.com/document/CS/2015-12-15/errorCode).
GONE_CODES = {"InvalidFileSystem.NotFound", "InvalidMountTarget.NotFound", "ErrorClusterNotFound", "NotFound"}

TRANSIENT_CODES = {"Throttling", "Throttling.User", "Throttling.Api", "ServiceUnavailable", "InternalError",
                   "RequestTimeout", "SlowDown", "OperationConflict", "QpsLimitExceeded"}


def _status_of(exc: BaseException) -> int | None:
    for attr in ("status_code", "statusCode", "status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    return None


def _connection_like(exc: BaseException | None) -> bool:
    """A dropped/refused/timed-out connection, through the wrappers the SDKs put around it."""
    seen = 0
    while exc is not None and seen < 6:
        seen += 1
        if isinstance(exc, ConnectionError | TimeoutError):
            return True
        name = type(exc).__name__
        if name in {"ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "ProtocolError",
                    "MaxRetryError", "NewConnectionError", "RemoteDisconnected", "ChunkedEncodingError",
                    "IncompleteRead", "ServerDisconnectedError", "ClientConnectionError"}:
            return True
        exc = _inner(exc) or exc.__context__
    return False


def _inner(exc: BaseException) -> BaseException | None:
    inner = getattr(exc, "inner_exception", None)
    if inner is None and hasattr(exc, "unwrap"):
        try:
            inner = exc.unwrap()
        except Exception:  # noqa: BLE001 - unwrap of a foreign error; best effort
            inner = None
    return inner if isinstance(inner, BaseException) else (exc.__cause__ or None)


def _service_error(exc: BaseException) -> BaseException:
    """The innermost error that carries an HTTP status (e.g. the OSS v2 SDK's ``ServiceError`` inside its
    ``OperationError``); ``exc`` itself when none does."""
    current: BaseException | None = exc
    for _ in range(6):
        if current is None:
            break
        status = _status_of(current)
        if status:  # 0 is "no response" for the kubernetes client: keep looking, then fall back
            return current
        current = _inner(current)
    return exc


def classify(exc: BaseException, *, service: str, operation: str) -> CloudError:
    """Map an SDK exception to a ``CloudError`` (``transient`` says whether retrying can help)."""
    if isinstance(exc, CloudError):
        return exc
    outer = exc
    exc = _service_error(exc)
    status = _status_of(exc)
    code = getattr(exc, "code", None)
    message = getattr(exc, "message", None)
    request_id = getattr(exc, "request_id", None)
    # kubernetes.client.ApiException: .status, .reason, .body (JSON Status with "reason"/"message")
    # (kubernetes >= 31 raises subclasses per status: BadRequestException, NotFoundException, ...)
    if any(cls.__name__ == "ApiException" for cls in type(exc).__mro__):
        body = getattr(exc, "body", None) or ""
        code, message = _k8s_reason(body) or (getattr(exc, "reason", None), str(body)[:500])
        if status == 0:  # kubernetes clients report a connection that failed mid-request as status 0
            status = 503
    code = str(code) if code is not None else None
    transient = (
        (status is not None and (status >= 500 or status == 429))
        or (code in TRANSIENT_CODES)
        or type(exc).__name__ in {"ThrottlingException", "ServerException"}
        or getattr(exc, "transient", False) is True  # our own errors say so (tasks.errors, e.g. ChecksumMismatch)
        or (status is None and _connection_like(outer))
    )
    if message is None:
        message = str(exc)
    return CloudError(service=service, operation=operation, code=code or type(exc).__name__, message=message,
                      status=status, request_id=request_id, transient=transient)


def _k8s_reason(body: str) -> tuple[str, str] | None:
    import json

    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return None
    if isinstance(data, dict):
        return str(data.get("reason") or "ApiError"), str(data.get("message") or "")
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """How transient errors are retried: exponential backoff with jitter, bounded by attempts and by time.

    Attributes:
        max_attempts: tries in all (the first included).
        base_delay: seconds before the first retry (upper end; the delay is drawn from [d/2, d]).
        max_delay: cap of one delay, seconds.
        budget_s: no retry starts later than this many seconds after the first try.
    """

    max_attempts: int = 8
    base_delay: float = 0.5
    max_delay: float = 10.0
    budget_s: float = 90.0

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0-based): ``min(cap, base·2^n)``, jittered to [d/2, d]."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** retry)
        return random.uniform(ceiling / 2, ceiling)


#: The one policy every cloud call uses (tests may pass a faster one).
DEFAULT_POLICY = RetryPolicy()


def backoff_delays(attempts: int, *, base: float = 0.5, cap: float = 20.0, jitter: float = 0.2) -> list[float]:
    """Sleep before each retry: base·2^n capped, ± jitter (kept for callers that poll, not for errors)."""
    return [min(cap, base * 2**n) * (1 + random.uniform(-jitter, jitter)) for n in range(max(0, attempts - 1))]


def call(fn: Callable[..., T], *args: Any, service: str, operation: str, policy: RetryPolicy | None = None,
         sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
         **kwargs: Any) -> T:
    """Call ``fn(*args, **kwargs)``, retrying transient failures per ``policy``; raise ``CloudError`` otherwise.

    Raises:
        CloudError: a permanent error at once, or the last transient one when the attempts or the time budget
            are spent (``transient`` is then True and the message says how many tries were made).

    Example:
        >>> call(cs.describe_cluster_detail, cluster_id, service="CS", operation="DescribeClusterDetail")
    """
    policy = policy or DEFAULT_POLICY
    started = clock()
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - classified below, re-raised as CloudError
            err = classify(exc, service=service, operation=operation)
            if not err.transient:
                raise err from exc
            delay = policy.delay(attempt - 1)
            retry_after = getattr(exc, "retry_after", None)
            if isinstance(retry_after, int | float) and retry_after > 0:
                delay = max(delay, float(retry_after))
            elapsed = clock() - started
            if attempt >= policy.max_attempts or elapsed + delay > policy.budget_s:
                err.args = (f"{err.args[0]} (gave up after {attempt} tries in {elapsed:.0f} s)",)
                raise err from exc
            log.warning("%s %s: transient %s, retry %d/%d in %.1fs", service, operation, err.code,
                        attempt, policy.max_attempts - 1, delay)
            sleep(delay)


def is_gone(err: CloudError) -> bool:
    """True when ``err`` says the resource does not exist (HTTP 404, or a not-found code in ``GONE_CODES``)."""
    return err.status == 404 or (err.code or "") in GONE_CODES


def call_or_none(fn: Callable[..., T], *args: Any, service: str, operation: str, **kwargs: Any) -> T | None:
    """``call()`` for a read: the result, or None when the resource does not exist (``is_gone``).

    Raises:
        CloudError: any other failure, as ``call()`` raises it.

    Example:
        >>> job = call_or_none(batch_v1.read_namespaced_job, name, ns, service="Kubernetes", operation="read Job")
    """
    try:
        return call(fn, *args, service=service, operation=operation, **kwargs)
    except CloudError as err:
        if is_gone(err):
            return None
        raise
