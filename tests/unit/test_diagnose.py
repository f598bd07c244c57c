"""Fail-fast classifier: fatal at once, fatal after grace, or keep waiting."""

from datetime import UTC, datetime, timedelta

import pytest

from tasks.render.diagnose import (
    attempt_end,
    diagnose_pod,
    due_on_demand,
    exit_code,
    job_finished,
    parse_indexes,
    pod_index,
)

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
    ("an OOM kill is the Job's business", pod(age_s=1, phase="Failed", terminated=("OOMKilled", 137)), None),
    ("plain non-zero exit is the Job's business", pod(phase="Failed", terminated=("Error", 1)), None),
    ("unschedulable within grace", pod(age_s=5, conditions=[
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]), None),
    ("unschedulable after grace", pod(age_s=90, conditions=[
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "no stock"}]),
     "Unschedulable"),
    ("eci creation failed after grace", pod(age_s=90, conditions=[
        {"type": "ContainerInstanceCreated", "status": "False", "reason": "NoStock"}]), "ECI NoStock"),
    ("a failed ECI creation is the Job's business", pod(age_s=1, phase="Failed", reason="ProviderFailed"), None),
    ("a spot reclaim is the Job's business", pod(age_s=1, phase="Failed", reason="BidFailed"), None),
    ("an eviction is the Job's business", pod(age_s=1, phase="Failed", reason="Evicted"), None),
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


def ended(phase="Failed", reason=None, message="", terminated=None, conditions=None, spot=False):
    p = pod(phase=phase, conditions=conditions, reason=reason)
    if reason:
        p["status"]["message"] = message
    if terminated:
        p["status"]["containerStatuses"] = [{"name": "workload", "state": {"terminated": terminated}}]
    if spot:
        p["metadata"]["annotations"]["k8s.aliyun.com/eci-spot-strategy"] = "SpotAsPriceGo"
    return p


ENDS = [
    ("spot release", ended(reason="BidFailed", terminated={"exitCode": 137, "reason": "Error"}), "reclaimed",
     "spot instance reclaimed (BidFailed)"),
    ("disruption condition on a spot pod", ended(spot=True, terminated={"exitCode": 137, "reason": "Error"},
     conditions=[{"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet"}]), "reclaimed",
     "spot instance reclaimed (TerminationByKubelet)"),
    ("eci stock-out", ended(reason="ProviderFailed", message="create eci failed, reason: NoStock, message: x"),
     "stock-out", "ECI had no stock for the instance (ProviderFailed)"),
    ("eci other creation failure", ended(reason="ProviderFailed", message="quota"), "create-failed",
     "ECI could not create the instance (ProviderFailed)"),
    ("eviction", ended(reason="Evicted"), "evicted", "pod evicted (Evicted)"),
    ("oom", ended(terminated={"exitCode": 137, "reason": "OOMKilled"}), "oom", "out of memory (OOMKilled)"),
    ("exit code", ended(terminated={"exitCode": 3, "reason": "Error"}), "exit", "exit code 3"),
    ("success", ended(phase="Succeeded", terminated={"exitCode": 0, "reason": "Completed"}), "succeeded",
     "completed"),
    ("moved on demand by ask-batch, after a disruption too", ended(spot=True, terminated={"exitCode": 143}, conditions=[
        {"type": "DisruptionTarget", "status": "True", "reason": "BidFailed"},
        {"type": "ask-batch.io/RetryOnDemand", "status": "True", "message": "reclaimed 3 times"}]),
     "moved-on-demand", "stopped by ask-batch after its spot reclaims: the last try runs on demand"),
]


@pytest.mark.parametrize(("p", "outcome", "words"), [c[1:] for c in ENDS], ids=[c[0] for c in ENDS])
def test_attempt_end_names_how_a_pod_ended(p, outcome, words):
    end = attempt_end(p)
    assert (end.outcome, end.reason) == (outcome, words)


def test_start_error_carries_the_container_message_and_a_fix():
    msg = 'exec: "no-such-tool": executable file not found in $PATH'
    end = attempt_end(ended(terminated={"exitCode": 128, "reason": "StartError", "message": msg}))
    assert end.outcome == "start-error" and msg in end.message and "job.command" in end.message


def test_a_running_pod_has_not_ended():
    assert attempt_end(pod(phase="Running")) is None


def test_index_intervals():
    assert parse_indexes("1,3-5,9") == {1, 3, 4, 5, 9} and parse_indexes(None) == set()


def test_an_index_moves_on_demand_once_reclaimed_max_reclaims_times_unless_settled():
    reclaims = {0: 3, 1: 2, 2: 5, 3: 4}
    # 0: due; 1: one reclaim short; 2: already succeeded or failed (settled); 3: already moved (settled too)
    assert due_on_demand(reclaims, max_reclaims=3, settled={2, 3}) == [0]
    assert due_on_demand(reclaims, max_reclaims=2, settled=set()) == [0, 1, 2, 3]
    assert due_on_demand(reclaims, max_reclaims=0, settled=set()) == []  # off
