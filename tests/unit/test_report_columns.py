"""The per-index ledger at scale: indexes that simply succeeded are kept in columns, every record stays exact,
and the summary of a huge Job lists the indexes worth reading."""

import json
from datetime import UTC, datetime

from flows.summary import SUMMARY_MAX_ROWS, summary_markdown
from tasks.handles import JobHandle, JobReport, split_records
from tasks.spec import parse_spec
from tasks.stages.outputs import pod_index_finder
from tasks.stages.wait import Ledger, build_records, ledger_records

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def pod(name, index, phase, code=0, created="2026-01-01T11:00:00Z", spot=False):
    state = {"terminated": {"exitCode": code, "reason": "Error" if code else "Completed",
                            "startedAt": "2026-01-01T11:00:00Z", "finishedAt": "2026-01-01T11:00:30Z"}}
    annotations = {"batch.kubernetes.io/job-completion-index": str(index)}
    if spot:
        annotations["k8s.aliyun.com/eci-spot-strategy"] = "SpotAsPriceGo"
    return {"metadata": {"name": name, "creationTimestamp": created, "annotations": annotations},
            "status": {"phase": phase, "startTime": "2026-01-01T10:59:58Z",
                       "containerStatuses": [{"name": "workload", "state": state}]}}


def mixed_pods():
    pods = {f"p{i}": pod(f"p{i}", i, "Succeeded", spot=i % 2 == 0) for i in range(6)}
    pods["r3"] = pod("r3", 3, "Failed", 137, created="2026-01-01T10:00:00Z")  # index 3 retried, then succeeded
    pods["p4"] = pod("p4", 4, "Failed", 2)  # index 4 failed
    del pods["p5"]  # index 5 never started
    return pods


def test_a_report_keeps_every_record_exactly_with_simple_successes_in_columns():
    records = build_records(mixed_pods(), 7, now=NOW, finished=True)
    notable, plain = split_records(iter(records))
    assert plain.index == [0, 1, 2] and [r.index for r in notable] == [3, 4, 5, 6]
    report = JobReport(job=JobHandle(namespace="d", name="j", uid="u", completions=7), succeeded=False,
                       indexes=notable, succeeded_once=plain)
    assert list(report.records()) == records
    assert report.index_count == 7 and sorted(report.all_seconds()) == sorted(r.seconds for r in records)
    assert dict(report.pod_index_pairs()) == {"p0": 0, "p1": 1, "p2": 2, "r3": 3, "p3": 3, "p4": 4}
    # What Prefect hands to the next task survives a JSON round trip unchanged.
    assert list(JobReport.model_validate_json(report.model_dump_json()).records()) == records


def test_the_ledger_folds_ended_pods_and_keeps_what_a_deletion_did_not_know():
    ledger = Ledger()
    done = pod("a", 0, "Succeeded")
    ledger.fold(done, NOW)
    deleted = pod("a", 0, "Succeeded")
    deleted["status"]["containerStatuses"] = []  # the DELETED event's copy: nothing more to learn from it
    ledger.fold(deleted, NOW, replace=False)
    ledger.fold(pod("a", 0, "Succeeded"), NOW)  # seen again in the final list: one attempt still
    [record] = ledger_records(ledger, 1, finished=True)
    assert record.status == "succeeded" and [a.pod for a in record.attempts] == ["a"]
    assert record.attempts[0].seconds == 32  # from the instance's start, as before the deletion


def test_the_summary_of_a_huge_job_lists_the_indexes_worth_reading_and_counts_the_rest():
    n = SUMMARY_MAX_ROWS + 500
    pods = {f"askb-x-{i}-abcde": pod(f"askb-x-{i}-abcde", i, "Succeeded") for i in range(n)}
    pods["askb-x-7-abcde"] = pod("askb-x-7-abcde", 7, "Failed", 3)
    notable, plain = split_records(iter(build_records(pods, n, now=NOW, finished=True)))
    job = JobHandle(namespace="default", name="askb-x", uid="u", completions=n)
    report = JobReport(job=job, succeeded=False, indexes=notable, succeeded_once=plain)
    spec = parse_spec({"cluster": {"mode": "existing", "existing": {"kubeconfig_path": __file__}},
                       "job": {"image": "busybox", "command": ["true"], "completions": n, "parallelism": 10}})
    text = summary_markdown(spec, run_key="x", name="run-x", cluster=None, job=job, report=report, outputs=None,
                            teardown=None, error="JobFailed: index 7")
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| index")]
    assert rows == [line for line in rows if line.startswith("| 7 | failed |")] and len(rows) == 1
    assert f"the other {n - 1:,} succeeded on their first attempt" in text
    # The cost still counts every index.
    small = summary_markdown(spec, run_key="x", name="run-x", cluster=None, job=job, report=JobReport(
        job=job, succeeded=False, indexes=list(report.records())), outputs=None, teardown=None, error="x")
    cost = [line for line in text.splitlines() if "Estimated cost" in line or line.startswith("- ") and "CNY" in line]
    assert cost and cost == [line for line in small.splitlines() if line in cost]


def test_the_ledger_file_holds_every_index_one_json_object_per_line(tmp_path):
    from flows.summary import write_ledger
    from tasks.handles import IndexRecord

    records = build_records(mixed_pods(), 7, now=NOW, finished=True)
    notable, plain = split_records(iter(records))
    report = JobReport(job=JobHandle(namespace="d", name="j", uid="u", completions=7), succeeded=False,
                       indexes=notable, succeeded_once=plain)
    path = write_ledger(report, tmp_path / "run" / "ledger.jsonl", scrub=lambda s: s.replace("p4", "<redacted>"))
    lines = path.read_text().splitlines()
    assert [IndexRecord.model_validate_json(line).index for line in lines] == list(range(7))
    assert IndexRecord.model_validate_json(lines[3]) == records[3] and "p4" not in path.read_text()
    # Nothing the wait cannot know: where a pod's log was saved is collect's (manifest.jsonl, "log_keys"); a
    # "log_key": null on every line read as "no log saved" although every log was.
    assert not [line for line in lines if "log_key" in json.loads(line)]


def test_the_ledgers_columns_give_the_same_records_as_its_rows():
    """The ledger of ended pods keeps single-success indexes in columns, everything else as rows; what it reports
    must not depend on where an index is kept (``build_records`` folds into an overlay, which keeps rows only)."""
    pods = {f"p{i}": pod(f"p{i}", i, "Succeeded") for i in range(8)}
    pods["p2"] = pod("p2", 2, "Failed", 3)  # failed: a row
    pods["r3"] = pod("r3", 3, "Failed", 1)  # index 3 failed once, then succeeded: two rows
    pods["p5"]["status"]["containerStatuses"][0]["state"]["terminated"]["message"] = "done, with a message"
    pods["p12"] = pod("p12", 12, "Succeeded")  # beyond the columns grown so far; 8-11 never seen
    ledger = Ledger()
    for p in pods.values():
        ledger.fold(p, NOW)
    ledger.fold(pod("p4", 4, "Succeeded"), NOW, replace=False)  # seen again: kept once
    ledger.fold(pod("q6", 6, "Failed", 2), NOW)  # a later failed pod turns a column slot into rows
    pods["q6"] = pod("q6", 6, "Failed", 2)
    assert list(ledger_records(ledger, 13, finished=True)) == build_records(pods, 13, now=NOW, finished=True)
    assert [a.pod for a in ledger.attempts(6)] == ["p6", "q6"] and ledger.has("p0", 0) and not ledger.has("p9", 9)


def test_the_pod_index_finder_answers_for_named_pods_follow_up_pods_and_strangers():
    # j-<index>-<suffix> pods answer by the Indexed Job name rule; a follow-up Job's pod (another Job's name)
    # answers from the report; a pod of neither kind has no index.
    pods = {name: pod(name, index, "Succeeded") for name, index in
            (("j-0-aaaaa", 0), ("j-1-bbbbb", 1), ("j-fu1-0-ccccc", 2), ("j-7-ddddd", 3))}
    notable, plain = split_records(iter(build_records(pods, 4, now=NOW, finished=True)))
    report = JobReport(job=JobHandle(namespace="d", name="j", uid="u", completions=4), succeeded=True,
                       indexes=notable, succeeded_once=plain)
    index_of = pod_index_finder(report)
    assert [index_of(p) for p in ("j-0-aaaaa", "j-1-bbbbb", "j-fu1-0-ccccc", "j-7-ddddd")] == [0, 1, 2, 3]
    assert index_of("j-12-eeeee") == 12 and index_of("other-0-aaaaa") is None and index_of("j-x-aaaaa") is None
