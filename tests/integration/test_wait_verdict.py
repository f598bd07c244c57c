"""wait_for_job through the sandbox: the Job decides whether the run can still succeed, ask-batch explains.

Each test is one "Done when" promise of issue 9, checked where a user sees it: the report's per-index ledger, the
error text, the log lines, and the Job and pods left in the cluster. The sandbox's ECI knobs (spot reclaims,
stock-outs) act on the real Job controller's retry rules (backoffLimitPerIndex, podFailurePolicy).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tasks.cloud.cluster_access import connect
from tasks.errors import JobFailed
from tasks.handles import JobHandle, JobReport
from tasks.naming import INDEX_LABEL, run_selector
from tasks.render.compute import ON_DEMAND_ANNOTATION
from tasks.render.diagnose import parse_indexes
from tasks.render.manifests import JobInputs, job_manifest
from tasks.stages.cluster import ensure_cluster
from tasks.stages.job import launch_job
from tasks.stages.wait import WaitOptions, merge_on_demand, run_follow_ups, wait_for_job, wait_options


@pytest.fixture
def kube(cloud: Any, make_spec: Any) -> tuple[Any, Any, Any, Any]:
    spec = make_spec()
    handle = ensure_cluster(spec, run_key="it", cs=cloud.cs)
    api = connect(handle, spec, cs=cloud.cs)
    return handle, api, client.CoreV1Api(api), client.BatchV1Api(api)


@pytest.fixture
def faults(sandbox: Any) -> Iterator[Any]:
    """The sandbox's fault knobs, put back to calm after the test (they are shared by the whole session)."""
    knobs = sandbox.sandbox.faults
    yield knobs
    knobs.update({"spot_reclaim_after_s": 0, "eci_create_fail_rate": 0.0, "eci_create_fail_reason": "NoStock"})


def launch(make_spec: Any, kube: Any, run_key: str, other: dict[str, Any] | None = None,
           **job: Any) -> tuple[Any, JobHandle]:
    spec = make_spec({**{f"job.{k}": v for k, v in job.items()}, **(other or {})})
    return spec, launch_job(kube[3], job_manifest(spec, run_key=run_key, inputs=JobInputs()))


def wait(kube: Any, job: JobHandle, run_key: str, tmp_path: Path, *, timeout: float = 120,
         lines: list[str] | None = None) -> JobReport:
    options = WaitOptions(grace_seconds=20, timeout_seconds=timeout, log_dir=tmp_path / "logs", tick_seconds=0.5)
    return wait_for_job(kube[1], job, run_key=run_key, options=options,
                        emit=(lines.append if lines is not None else lambda _: None))


def pods_of(kube: Any, run_key: str) -> list[Any]:
    return kube[2].list_namespaced_pod("default", label_selector=run_selector(run_key)).items


def index_of(pod: Any) -> int:
    return int(pod.metadata.annotations["batch.kubernetes.io/job-completion-index"])


def test_spot_reclaims_are_retried_by_the_job_without_spending_the_budget(
        faults: Any, make_spec: Any, kube: Any, run_key: str, tmp_path: Path) -> None:
    """Reclaims every second, each attempt needs 3 s: every attempt is reclaimed (more often than the per-index
    budget of 2 allows) until the knob is turned off; the run still succeeds, one success per index."""
    faults.update({"spot_reclaim_after_s": 1})
    _, job = launch(make_spec, kube, run_key, command=["sleep", "3"], completions=2, parallelism=2,
                    backoff_limit_per_index=2, eci={"spot_strategy": "SpotAsPriceGo"})
    result: dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: result.update(
        report=_catch(lambda: wait(kube, job, run_key, tmp_path))), daemon=True)
    waiter.start()
    deadline = time.monotonic() + 90
    while True:  # until each index was reclaimed more often than its budget would allow
        reclaimed = [index_of(p) for p in pods_of(kube, run_key) if p.status.reason == "BidFailed"]
        if all(reclaimed.count(i) >= 3 for i in (0, 1)):
            break
        assert waiter.is_alive(), f"the wait ended at a reclaim: {result}"
        assert time.monotonic() < deadline, f"not enough reclaims: {reclaimed}"
        time.sleep(0.2)
    faults.update({"spot_reclaim_after_s": 0})
    waiter.join(120)
    report = result["report"]
    assert isinstance(report, JobReport) and report.succeeded, report
    for record in report.records():
        outcomes = [a.outcome for a in record.attempts]
        assert outcomes.count("succeeded") == 1 and outcomes.count("reclaimed") >= 3, outcomes
        assert record.status == "succeeded" and record.reclaims >= 3
        assert all(a.spot for a in record.attempts)
        assert "spot instance reclaimed" in record.attempts[0].reason


def _catch(fn: Any) -> Any:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - the test asserts on it
        return exc


def test_eci_stock_outs_while_the_flow_waits_are_retried(faults: Any, make_spec: Any, kube: Any, run_key: str,
                                                         tmp_path: Path) -> None:
    """A third of instance creations fail (pods Failed ProviderFailed with fail_on_create_error); parallelism
    below completions, so most pods are created while the wait already runs."""
    faults.update({"eci_create_fail_rate": 0.33, "eci_create_fail_reason": "NoStock", "seed": 7})
    _, job = launch(make_spec, kube, run_key, command=["true"], completions=6, parallelism=2,
                    backoff_limit_per_index=4, eci={"fail_on_create_error": True})
    report = wait(kube, job, run_key, tmp_path)
    assert report.succeeded
    outcomes = [a.outcome for r in report.records() for a in r.attempts]
    assert outcomes.count("succeeded") == 6 and "stock-out" in outcomes, outcomes
    stock_out = next(a for r in report.records() for a in r.attempts if a.outcome == "stock-out")
    assert stock_out.billed_seconds == 0 and "NoStock" in (stock_out.message or "")


def test_an_index_that_always_fails_fails_the_run_after_its_budget_and_the_others_finish(
        make_spec: Any, kube: Any, run_key: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _, job = launch(make_spec, kube, run_key, completions=3, parallelism=3, backoff_limit_per_index=1,
                    command=["sh", "-c", 'if [ "$JOB_COMPLETION_INDEX" = 1 ]; then exit 3; fi; sleep 2'])
    with caplog.at_level(logging.INFO, logger="ask_batch"), pytest.raises(JobFailed) as caught:
        wait(kube, job, run_key, tmp_path)
    report = caught.value.report
    assert [r.status for r in report.records()] == ["succeeded", "failed", "succeeded"]
    failed = list(report.records())[1]
    assert [(a.outcome, a.exit_code) for a in failed.attempts] == [("exit", 3), ("exit", 3)]
    assert "index 1: pod " in str(caught.value) and "exit code 3" in str(caught.value)
    assert any("index 1 failed for good" in r.getMessage() for r in caplog.records)
    # Nothing was deleted before the Job's verdict: every pod of the Job is still there, the others Succeeded.
    phases = sorted((index_of(p), p.status.phase) for p in pods_of(kube, run_key))
    assert phases == [(0, "Succeeded"), (1, "Failed"), (1, "Failed"), (2, "Succeeded")]


def test_a_job_deleted_mid_run_fails_the_wait_saying_so(make_spec: Any, kube: Any, run_key: str,
                                                         tmp_path: Path) -> None:
    _, job = launch(make_spec, kube, run_key, command=["sleep", "60"], completions=2, parallelism=2)
    result: dict[str, Any] = {}
    waiter = threading.Thread(target=lambda: result.update(
        outcome=_catch(lambda: wait(kube, job, run_key, tmp_path, timeout=90))), daemon=True)
    waiter.start()
    deadline = time.monotonic() + 30
    while not all(p.status.phase == "Running" for p in pods_of(kube, run_key)) or len(pods_of(kube, run_key)) < 2:
        assert time.monotonic() < deadline, "the pods did not start"
        time.sleep(0.2)
    kube[3].delete_namespaced_job(job.name, "default", propagation_policy="Background")
    deleted_at = time.monotonic()
    waiter.join(60)
    assert not waiter.is_alive()
    assert time.monotonic() - deleted_at < 30
    outcome = result["outcome"]
    assert isinstance(outcome, JobFailed), outcome
    assert "was deleted while it ran" in str(outcome) and "wait.timeout_seconds" not in str(outcome)


def test_a_job_removed_by_its_ttl_before_the_wait_is_judged_by_what_was_seen(
        make_spec: Any, kube: Any, run_key: str, tmp_path: Path) -> None:
    _, job = launch(make_spec, kube, run_key, {"wait.stream_logs": False}, command=["true"], completions=1,
                    parallelism=1, ttl_seconds_after_finished=0)
    deadline = time.monotonic() + 30
    while kube[3].list_namespaced_job("default", label_selector=run_selector(run_key)).items:
        assert time.monotonic() < deadline, "the TTL controller did not remove the Job"
        time.sleep(0.2)
    started = time.monotonic()
    report = wait(kube, job, run_key, tmp_path, timeout=60)
    assert time.monotonic() - started < 15
    assert report.job_gone and report.succeeded  # the outputs decide (collect_outputs)


def test_a_job_removed_by_its_ttl_while_waited_on_ends_the_wait_with_its_verdict(
        make_spec: Any, kube: Any, run_key: str, tmp_path: Path) -> None:
    _, job = launch(make_spec, kube, run_key, {"wait.stream_logs": False}, command=["sleep", "1"], completions=2,
                    parallelism=2, ttl_seconds_after_finished=0)
    started = time.monotonic()
    report = wait(kube, job, run_key, tmp_path, timeout=60)
    assert time.monotonic() - started < 30
    assert report.succeeded and not report.job_gone
    assert [r.status for r in report.records()] == ["succeeded", "succeeded"]


def test_a_missing_executable_is_named_in_the_error(make_spec: Any, kube: Any, run_key: str,
                                                    tmp_path: Path) -> None:
    _, job = launch(make_spec, kube, run_key, command=["no-such-tool-9x"], completions=1, parallelism=1,
                    backoff_limit=0)
    with pytest.raises(JobFailed) as caught:
        wait(kube, job, run_key, tmp_path)
    message = str(caught.value)
    assert "no-such-tool-9x" in message and "could not start" in message and "job.command" in message


def test_an_index_reclaimed_max_reclaims_times_runs_its_last_try_on_demand(
        faults: Any, make_spec: Any, kube: Any, run_key: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Spot stock is gone: every spot pod is reclaimed a second after it starts, each attempt needs 3 s. With
    max_reclaims 2 the waiter stops each index on spot after its second reclaim, the Job fails those indexes
    (FailIndex on ask-batch's condition) and nothing else; their on-demand follow-up Jobs then finish them."""
    faults.update({"spot_reclaim_after_s": 1})
    spec, job = launch(make_spec, kube, run_key, command=["sleep", "3"], completions=2, parallelism=2,
                       backoff_limit_per_index=2, eci={"spot_strategy": "SpotAsPriceGo", "max_reclaims": 2})
    options = wait_options(spec, log_dir=tmp_path / "logs")
    assert options.max_reclaims == 2
    with caplog.at_level(logging.INFO, logger="ask_batch"):
        first = wait_for_job(kube[1], job, run_key=run_key, options=options, emit=lambda _: None)
    assert first.succeeded and first.on_demand == [0, 1], first
    for record in first.records():
        outcomes = [a.outcome for a in record.attempts]
        assert outcomes[:2] == ["reclaimed", "reclaimed"] and "succeeded" not in outcomes, outcomes
        assert record.reclaims >= 2 and all(a.spot for a in record.attempts)
    assert any("index 0: spot instance reclaimed 2 times" in r.getMessage() for r in caplog.records)
    # The first Job ran no index to success: the moved indexes are its failed ones.
    status = kube[3].read_namespaced_job(job.name, "default").status
    assert not status.completed_indexes and parse_indexes(status.failed_indexes) == {0, 1}

    def render(index: int) -> dict[str, Any]:
        return job_manifest(spec, run_key=run_key, inputs=JobInputs(), index=index, on_demand=True)

    results = run_follow_ups(kube[3], first.on_demand, render, lambda handle: wait_for_job(
        kube[1], handle, run_key=run_key, options=options, emit=lambda _: None), parallelism=2)
    merged = merge_on_demand(first, [rep for rep, _ in results])
    assert merged.succeeded and [r.status for r in merged.records()] == ["succeeded", "succeeded"]
    for record in merged.records():
        assert [(a.outcome, a.spot) for a in record.attempts][-1] == ("succeeded", False)
        assert record.reclaims >= 2
    on_demand_pods = [p for p in pods_of(kube, run_key) if ON_DEMAND_ANNOTATION in (p.metadata.annotations or {})]
    assert sorted(int(p.metadata.labels[INDEX_LABEL]) for p in on_demand_pods) == [0, 1]
    for pod in on_demand_pods:
        assert not any(k.startswith("k8s.aliyun.com/eci-spot") for k in pod.metadata.annotations), pod.metadata
        assert pod.status.phase == "Succeeded"
    succeeded = [p for p in pods_of(kube, run_key) if p.status.phase == "Succeeded"]
    assert len(succeeded) == 2  # each index ran to success once


def test_the_verdict_is_reported_first_and_the_logs_are_still_drained_whole(make_spec: Any, kube: Any,
                                                                              run_key: str, tmp_path: Path) -> None:
    # Each pod prints its last line just before it exits: at the Job's verdict that line may not be read yet.
    _, job = launch(make_spec, kube, run_key, completions=2, parallelism=2,
                    command=["sh", "-c", 'sleep 1; echo "last line of $JOB_COMPLETION_INDEX"'])
    events: list[tuple[str, Any]] = []
    options = WaitOptions(grace_seconds=20, timeout_seconds=120, log_dir=tmp_path / "logs", tick_seconds=0.5)
    report = wait_for_job(kube[1], job, run_key=run_key, options=options,
                          emit=lambda line: events.append(("line", line)),
                          on_verdict=lambda ok, why: events.append(("verdict", (ok, why))))
    verdicts = [value for kind, value in events if kind == "verdict"]
    assert verdicts == [(True, None)] and report.succeeded
    # Reported once, and the report that follows still has every pod's whole log.
    kept = sorted(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert kept == ["last line of 0\n", "last line of 1\n"]


def test_a_failing_job_reports_its_verdict_with_the_reason(make_spec: Any, kube: Any, run_key: str,
                                                          tmp_path: Path) -> None:
    _, job = launch(make_spec, kube, run_key, completions=1, parallelism=1, backoff_limit_per_index=0,
                    command=["sh", "-c", "echo bye; exit 4"])
    verdicts: list[tuple[bool, str | None]] = []
    options = WaitOptions(grace_seconds=20, timeout_seconds=120, log_dir=tmp_path / "logs", tick_seconds=0.5)
    with pytest.raises(JobFailed) as caught:
        wait_for_job(kube[1], job, run_key=run_key, options=options, emit=lambda _: None,
                     on_verdict=lambda ok, why: verdicts.append((ok, why)))
    assert len(verdicts) == 1 and verdicts[0][0] is False and verdicts[0][1]
    assert verdicts[0][1] in str(caught.value) and "bye" in str(caught.value)


def test_a_wait_reattached_to_a_finished_job_reads_every_pod_in_pages(make_spec: Any, kube: Any, run_key: str,
                                                                      tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.cloud.list_pages as list_pages_module

    _, job = launch(make_spec, kube, run_key, completions=5, parallelism=5, command=["sh", "-c", "echo done"])
    first = wait(kube, job, run_key, tmp_path / "first")
    # A second wait (a retried task, a re-attached run) lists the finished Job's pods: two per page here.
    monkeypatch.setattr(list_pages_module, "PAGE_SIZE", 2)
    calls: list[dict[str, Any]] = []
    real = client.CoreV1Api.list_namespaced_pod

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:  # the real call, its arguments noted
        calls.append(kwargs)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(client.CoreV1Api, "list_namespaced_pod", spy)
    again = wait(kube, job, run_key, tmp_path / "again")
    lists = [c for c in calls if not c.get("watch")]
    assert len(lists) >= 3 and all(c.get("limit") == 2 for c in lists) and lists[1].get("_continue")
    assert [(r.index, r.status, r.pod) for r in again.records()] == [
        (r.index, r.status, r.pod) for r in first.records()]
    assert all(r.status == "succeeded" and r.pod for r in again.records())
