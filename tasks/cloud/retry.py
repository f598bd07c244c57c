"""Retrying transient cloud errors, and turning permanent ones into errors a human can act on.

Why our own helper: the tea clients (CS, NAS) retry nothing by default, the OSS client retries only inside one
call, and the Kubernetes client not at all; Prefect task retries restart a whole stage, which is the wrong grain for
a single 503 in the middle of a paginated listing. So every API call goes through ``call()``: 5xx, 429/throttling
and dropped connections are retried with capped exponential backoff and jitter; anything else is raised at once as
a ``CloudError`` carrying the service's own code, message and request id (what support asks for).
"""

import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from tasks.errors import CloudError

T = TypeVar("T")
log = logging.getLogger("ask_batch.retry")

TRANSIENT_CODES = {"Throttling", "Throttling.User", "Throttling.Api", "ServiceUnavailable", "InternalError",
                   "RequestTimeout", "SlowDown", "OperationConflict"}


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
        inner = getattr(exc, "inner_exception", None)
        if inner is None and hasattr(exc, "unwrap"):
            try:
                inner = exc.unwrap()
            except Exception:  # noqa: BLE001 - unwrap of a foreign error; best effort
                inner = None
        exc = inner or exc.__cause__ or exc.__context__
    return False


def classify(exc: BaseException, *, service: str, operation: str) -> CloudError:
    """Map an SDK exception to a ``CloudError`` (``transient`` says whether retrying can help)."""
    if isinstance(exc, CloudError):
        return exc
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
        or (status is None and _connection_like(exc))
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


def backoff_delays(attempts: int, *, base: float = 0.5, cap: float = 20.0, jitter: float = 0.2) -> list[float]:
    """Sleep before each retry: base·2^n capped, ± jitter (so parallel callers do not retry in lockstep)."""
    return [min(cap, base * 2**n) * (1 + random.uniform(-jitter, jitter)) for n in range(max(0, attempts - 1))]


def call(fn: Callable[..., T], *args: Any, service: str, operation: str, attempts: int = 5,
         base_delay: float = 0.5, max_delay: float = 20.0, sleep: Callable[[float], None] = time.sleep,
         **kwargs: Any) -> T:
    """Call ``fn(*args, **kwargs)``, retrying transient failures; raise ``CloudError`` otherwise.

    Example:
        >>> call(cs.describe_cluster_detail, cluster_id, service="CS", operation="DescribeClusterDetail")
    """
    delays = backoff_delays(attempts, base=base_delay, cap=max_delay)
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - classified below, re-raised as CloudError
            err = classify(exc, service=service, operation=operation)
            retry_after = getattr(exc, "retry_after", None)
            if not err.transient or attempt == attempts - 1:
                raise err from exc
            delay = delays[attempt]
            if isinstance(retry_after, int | float) and retry_after > 0:
                delay = min(max(delay, float(retry_after)), max_delay)
            log.warning("%s %s: transient %s, retry %d/%d in %.1fs", service, operation, err.code,
                        attempt + 1, attempts - 1, delay)
            sleep(delay)
    raise AssertionError("unreachable")
