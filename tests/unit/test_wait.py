"""wait_for_job pieces that need no cluster: per-index records (the log reader: tests/unit/test_pod_logs.py)."""

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
    assert recs[0].attempts == 2 and recs[0].pod == "b" and recs[0].seconds == 60
    assert recs[1].exit_code == 42 and recs[1].reason == "Error"
