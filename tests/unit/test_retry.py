"""Retry helper: transient errors are retried with backoff, permanent ones surface the service's code."""

import pytest
from alibabacloud_tea_openapi.exceptions import ClientException, ServerException, ThrottlingException

from tasks.cloud.retry import CloudError, RetryPolicy, backoff_delays, call, classify


class Flaky:
    def __init__(self, errors, result="ok"):
        self.errors, self.result, self.calls = list(errors), result, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


def api_exception(status, body=""):
    from kubernetes.client.exceptions import ApiException

    exc = ApiException(status=status, reason="r")
    exc.body = body
    return exc


TRANSIENT = [
    ServerException(code="InternalError", message="boom", status_code=500, request_id="R1"),
    ThrottlingException(code="Throttling", message="slow down", status_code=400, retry_after=1),
    ClientException(code="Throttling.User", message="too many", status_code=400),
    ConnectionResetError("reset by peer"),
    api_exception(503),
    api_exception(429),
    api_exception(0),
]


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: type(e).__name__)
def test_transient_errors_are_retried(error):
    sleeps = []
    fn = Flaky([error, error])
    assert call(fn, service="CS", operation="Op", sleep=sleeps.append) == "ok"
    assert fn.calls == 3 and len(sleeps) == 2


def test_permanent_error_surfaces_code_and_message_at_once():
    fn = Flaky([ClientException(code="ErrorClusterNotFound", message="no such cluster", status_code=404,
                                request_id="RID-7")])
    with pytest.raises(CloudError) as err:
        call(fn, service="CS", operation="DescribeClusterDetail", sleep=lambda s: None)
    assert fn.calls == 1
    assert err.value.code == "ErrorClusterNotFound" and err.value.status == 404
    assert "ErrorClusterNotFound" in str(err.value) and "RID-7" in str(err.value)
    assert "no such cluster" in str(err.value)


def test_gives_up_after_the_attempts():
    fn = Flaky([ServerException(code="InternalError", message="x", status_code=503)] * 10)
    with pytest.raises(CloudError) as err:
        call(fn, service="NAS", operation="Op", policy=RetryPolicy(max_attempts=3), sleep=lambda s: None)
    assert fn.calls == 3 and err.value.transient and "gave up after 3 tries" in str(err.value)


def test_kubernetes_status_reason_is_used():
    err = classify(api_exception(409, '{"reason": "AlreadyExists", "message": "jobs \\"x\\" exists"}'),
                   service="Kubernetes", operation="create Job")
    assert err.code == "AlreadyExists" and not err.transient and err.status == 409


def test_backoff_grows_and_is_capped():
    delays = backoff_delays(8, base=1, cap=10, jitter=0)
    assert delays[:4] == [1, 2, 4, 8] and max(delays) == 10


def test_kubernetes_status_subclasses_give_the_status_message():
    """kubernetes >= 31 raises ApiException subclasses (BadRequestException for 400): the Status message is kept."""
    import json

    from kubernetes.client.exceptions import BadRequestException

    exc = BadRequestException(status=400, reason="Bad Request")
    exc.body = json.dumps({"kind": "Status", "reason": "BadRequest", "code": 400,
                           "message": 'admission webhook "w" denied the request: label x="y" is not supported'})
    err = classify(exc, service="Kubernetes", operation="create Pod")
    assert (err.code, err.status) == ("BadRequest", 400)
    assert err.message == 'admission webhook "w" denied the request: label x="y" is not supported'


def oss_operation_error(status, code):
    """What the OSS v2 SDK raises for a service error: OperationError wrapping ServiceError."""
    from alibabacloud_oss_v2 import exceptions as e

    inner = e.ServiceError(status_code=status, code=code, message="m", request_id="OSS-RID", ec="0000",
                           timestamp="", request_target="GET /b/k", snapshot=None, headers={})
    return e.OperationError(name="GetObject", error=inner)


@pytest.mark.parametrize(("status", "code"), [(503, "ServiceUnavailable"), (500, "InternalError"),
                                              (429, "QpsLimitExceeded")])
def test_oss_service_errors_inside_operation_error_are_transient(status, code):
    err = classify(oss_operation_error(status, code), service="OSS", operation="GetObject")
    assert err.transient and err.status == status and err.code == code and err.request_id == "OSS-RID"
    fn = Flaky([oss_operation_error(status, code)] * 2)
    assert call(fn, service="OSS", operation="GetObject", sleep=lambda s: None) == "ok"


def test_oss_access_denied_is_permanent_with_the_service_code():
    err = classify(oss_operation_error(403, "AccessDenied"), service="OSS", operation="PutObject")
    assert not err.transient and err.status == 403 and err.code == "AccessDenied"


def test_oss_connection_reset_inside_request_error_is_transient():
    from alibabacloud_oss_v2 import exceptions as e

    wrapped = e.OperationError(name="GetObject", error=e.RequestError(error=ConnectionResetError("reset")))
    assert classify(wrapped, service="OSS", operation="GetObject").transient


def test_time_budget_stops_retries_before_the_attempts_run_out():
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds

    fn = Flaky([ServerException(code="InternalError", message="x", status_code=503)] * 100)
    policy = RetryPolicy(max_attempts=100, base_delay=1.0, max_delay=4.0, budget_s=10.0)
    with pytest.raises(CloudError):
        call(fn, service="CS", operation="Op", policy=policy, sleep=sleep, clock=lambda: now[0])
    assert now[0] <= 10.0 and 3 <= fn.calls < 100


def test_delays_are_jittered_within_half_to_full_and_capped():
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0)
    samples = [policy.delay(n) for n in range(6) for _ in range(50)]
    for n in range(6):
        ceiling = min(8.0, 2.0 ** n)
        mine = samples[n * 50:(n + 1) * 50]
        assert all(ceiling / 2 <= d <= ceiling for d in mine)
        assert len(set(mine)) > 1  # jittered, not lockstep
