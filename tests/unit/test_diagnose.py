"""Fail-fast classifier: fatal at once, fatal after grace, or keep waiting."""

from datetime import UTC, datetime, timedelta

import pytest

from tasks.render.diagnose import diagnose_pod, exit_code, job_finished, pod_index

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def pod(age_s=10, phase="Pending", waiting=None, terminated=None, conditions=None, reason=None, index="3"):
    created = (NOW - timedelta(seconds=age_s)).isoformat().replace("+00:00", "Z")
    state = {}
    if waiting:
        state["waiting"] = {"reason": waiting, "message": f"{waiting} detail"}
    if terminated:
        state["terminated"] = {"reason": terminated[0], "exitCode": terminated[1]}
    status = {"phase": phase, "containerStatuses": [{"name": "workload", "state": state}] if state else [],
              "conditions": conditions or []}
    if reason:
        status["reason"] = reason
        status["message"] = "eci says no"
    return {"metadata": {"name": "askb-x-3-abcde", "creationTimestamp": created,
                         "annotations": {"batch.kubernetes.io/job-completion-index": index}}, "status": status}


CASES = [
    ("image pull within grace", pod(age_s=10, waiting="ImagePullBackOff"), None),
    ("image pull after grace", pod(age_s=120, waiting="ImagePullBackOff"), "ImagePullBackOff"),
    ("err image pull after grace", pod(age_s=120, waiting="ErrImagePull"), "ErrImagePull"),
    ("invalid image at once", pod(age_s=1, waiting="InvalidImageName"), "InvalidImageName"),
    ("config error after grace", pod(age_s=100, waiting="CreateContainerConfigError"), "CreateContainerConfigError"),
    ("oom at once", pod(age_s=1, phase="Failed", terminated=("OOMKilled", 137)), "OOMKilled"),
    ("plain non-zero exit is the Job's business", pod(phase="Failed", terminated=("Error", 1)), None),
    ("unschedulable within grace", pod(age_s=5, conditions=[
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]), None),
    ("unschedulable after grace", pod(age_s=90, conditions=[
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "no stock"}]),
     "Unschedulable"),
    ("eci creation failed after grace", pod(age_s=90, conditions=[
        {"type": "ContainerInstanceCreated", "status": "False", "reason": "NoStock"}]), "ECI NoStock"),
    ("eci provider failed at once", pod(age_s=1, phase="Failed", reason="ProviderFailed"), "ProviderFailed"),
    ("running is fine", pod(phase="Running"), None),
]


@pytest.mark.parametrize(("p", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_diagnose(p, reason):
    d = diagnose_pod(p, now=NOW, grace=60)
    assert (d.reason if d else None) == reason
    if d:
        assert d.index == 3 and "askb-x-3-abcde" in d.describe()


def test_exit_code_and_index():
    p = pod(phase="Failed", terminated=("Error", 42))
    assert exit_code(p) == 42 and pod_index(p) == 3


def test_job_conditions():
    assert job_finished({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}) == (True, True, None)
    done, ok, why = job_finished({"status": {"conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "too many"}]}})
    assert done and not ok and "BackoffLimitExceeded" in why
    assert job_finished({"status": {}}) == (False, False, None)
