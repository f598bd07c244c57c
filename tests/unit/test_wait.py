"""wait_for_job pieces that need no cluster: per-index records and the log follower."""

from datetime import UTC, datetime

from tasks.stages.wait import build_records

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def pod(name, index, phase, code=None, created="2026-01-01T11:00:00Z"):
    state = {"terminated": {"exitCode": code, "reason": "Error" if code else "Completed",
                            "startedAt": "2026-01-01T11:00:00Z", "finishedAt": "2026-01-01T11:00:30Z"}}
    return {"metadata": {"name": name, "creationTimestamp": created,
                         "annotations": {"batch.kubernetes.io/job-completion-index": str(index)}},
            "status": {"phase": phase, "containerStatuses": [{"name": "workload", "state": state}]}}


def test_records_take_the_last_attempt_and_sum_time():
    pods = {"a": pod("a", 0, "Failed", 1, "2026-01-01T11:00:00Z"),
            "b": pod("b", 0, "Succeeded", 0, "2026-01-01T11:01:00Z"),
            "c": pod("c", 1, "Failed", 42)}
    recs = build_records(pods, 3, now=NOW)
    assert [r.status for r in recs] == ["succeeded", "failed", "pending"]
    assert [a.pod for a in recs[0].attempts] == ["a", "b"] and recs[0].pod == "b" and recs[0].seconds == 60
    assert [a.outcome for a in recs[0].attempts] == ["exit", "succeeded"]
    assert recs[1].exit_code == 42 and recs[1].reason == "exit code 42"


def test_ledger_counts_reclaims_and_never_shows_a_failed_index_as_pending():
    reclaimed = pod("a", 0, "Failed", 137, "2026-01-01T11:00:00Z")
    reclaimed["status"].update({"reason": "BidFailed", "startTime": "2026-01-01T10:59:50Z"})
    reclaimed["metadata"]["annotations"]["k8s.aliyun.com/eci-spot-strategy"] = "SpotAsPriceGo"
    pods = {"a": reclaimed, "b": pod("b", 0, "Succeeded", 0, "2026-01-01T11:01:00Z")}
    recs = build_records(pods, 3, now=NOW, failed_indexes={2}, finished=True)
    first = recs[0].attempts[0]
    assert (first.outcome, first.spot, first.billed_seconds) == ("reclaimed", True, 40)
    assert recs[0].reclaims == 1 and recs[0].status == "succeeded"
    assert recs[1].status == "not_started" and recs[2].status == "failed"
    running = pod("c", 1, "Running")
    running["status"]["containerStatuses"][0]["state"] = {"running": {"startedAt": "2026-01-01T11:00:00Z"}}
    assert build_records({"c": running}, 2, now=NOW, finished=True)[1].status == "failed"


def test_the_smallest_accepted_ttl_covers_the_waiters_log_drain():
    from tasks.spec import MIN_TTL_SECONDS_AFTER_FINISHED
    from tasks.stages.wait import WaitOptions

    o = WaitOptions()
    assert o.log_grace_seconds + o.log_catch_up_seconds + o.tick_seconds <= MIN_TTL_SECONDS_AFTER_FINISHED


def test_a_rerun_report_merges_reused_indexes_and_follow_ups():
    from tasks.handles import IndexRecord, JobHandle, JobReport
    from tasks.stages.wait import merge_reports

    whole = JobHandle(namespace="ns", name="askb-r-1", uid=None, completions=3)
    follow = JobHandle(namespace="ns", name="askb-r-2", uid="u", completions=1, index=1)
    rep = JobReport(job=follow, succeeded=False, reason="BackoffLimitExceeded",
                    indexes=[IndexRecord(index=1, status="failed", reason="exit code 3")])
    merged = merge_reports(whole, [0, 2], [rep])
    assert [r.status for r in merged.records()] == ["succeeded", "failed", "succeeded"]
    assert not merged.succeeded and "index 1" in merged.reason and merged.reused == [0, 2]


def test_a_follow_up_pod_reports_its_original_index():
    p = pod("f", 0, "Succeeded", 0)
    p["metadata"]["labels"] = {"ask-batch.io/index": "7"}
    rec = build_records({"f": p}, 1, now=NOW, indexes=[7])
    assert [(r.index, r.status) for r in rec] == [(7, "succeeded")]


def test_the_on_demand_try_is_appended_to_its_indexs_ledger():
    from tasks.handles import Attempt, IndexRecord, JobHandle, JobReport
    from tasks.stages.wait import merge_on_demand

    first_job = JobHandle(namespace="ns", name="askb-r-1", uid="u1", completions=2)
    spot = [Attempt(pod=f"p{i}", outcome="reclaimed", spot=True, seconds=2, billed_seconds=3) for i in range(2)]
    spot.append(Attempt(pod="p2", outcome="moved-on-demand", spot=True, seconds=1, billed_seconds=1))
    first = JobReport(job=first_job, succeeded=True, on_demand=[1], indexes=[
        IndexRecord(index=0, status="succeeded", attempts=[Attempt(pod="q", outcome="succeeded", spot=True)]),
        IndexRecord(index=1, status="failed", attempts=spot, seconds=5, billed_seconds=7)])
    try_job = JobHandle(namespace="ns", name="askb-r-2", uid="u2", completions=1, index=1)
    done = Attempt(pod="d", outcome="succeeded", spot=False, seconds=4, billed_seconds=5)
    tried = JobReport(job=try_job, succeeded=True, indexes=[
        IndexRecord(index=1, status="succeeded", pod="d", attempts=[done], seconds=4, billed_seconds=5)])
    merged = merge_on_demand(first, [tried])
    assert merged.succeeded and merged.on_demand == [1] and merged.follow_ups == [try_job]
    record = list(merged.records())[1]
    assert [(a.outcome, a.spot) for a in record.attempts] == [
        ("reclaimed", True), ("reclaimed", True), ("moved-on-demand", True), ("succeeded", False)]
    assert (record.status, record.pod, record.reclaims, record.seconds, record.billed_seconds) == (
        "succeeded", "d", 2, 9, 12)
    failed = merge_on_demand(first, [tried.model_copy(update={"succeeded": False, "reason": "BackoffLimitExceeded"})])
    assert not failed.succeeded and "on-demand try of index 1" in failed.reason


def test_the_pod_watch_queues_what_the_wait_reads_and_little_else():
    from tasks.stages.wait import _container, watched_pod

    full = pod("p-0", 0, "Running")
    full["metadata"].update({
        "uid": "u-1", "resourceVersion": "7", "labels": {"ask-batch.io/run": "r"},
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "job-uid",
                             "controller": True, "blockOwnerDeletion": True}],
        "managedFields": [{"manager": "kube-controller-manager", "fieldsV1": {"f:spec": {"x" * 40: {}}}}] * 8})
    full["spec"] = {"restartPolicy": "OnFailure", "nodeName": "virtual-kubelet",
                    "containers": [{"name": "workload", "image": "registry/img:1", "command": ["sh", "-c", "y" * 800],
                                    "env": [{"name": f"V{i}", "value": "z" * 60} for i in range(20)]}]}
    full["status"]["containerStatuses"][0].update({"image": "registry/img:1", "imageID": "sha256:" + "0" * 64,
                                                   "containerID": "eci://" + "1" * 64, "restartCount": 2})
    small = watched_pod(full)
    assert small["metadata"]["ownerReferences"] == [{"uid": "job-uid"}]
    assert small["spec"] == {"restartPolicy": "OnFailure"}
    assert small["metadata"]["labels"] == full["metadata"]["labels"]
    assert small["metadata"]["annotations"] == full["metadata"]["annotations"]
    assert small["status"]["phase"] == "Running" and _container(small) == _container(full)
    assert len(repr(small)) * 3 < len(repr(full))
