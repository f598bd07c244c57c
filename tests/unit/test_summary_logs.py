"""The run summary names every pod whose kept log is incomplete (never a silent gap)."""

from flows.summary import summary_markdown
from tasks.handles import JobHandle, JobReport
from tasks.spec import parse_spec


def test_the_summary_lists_incomplete_pod_logs_with_the_reason():
    spec = parse_spec({"cluster": {"mode": "existing", "existing": {"kubeconfig_path": __file__}},
                       "job": {"image": "busybox", "command": ["true"], "completions": 1, "parallelism": 1}})
    job = JobHandle(namespace="default", name="askb-x", uid="u", adopted=False, completions=1)
    report = JobReport(job=job, succeeded=True, incomplete_logs={
        "askb-x-0-abcde": "the pod was deleted before its log was read to its end"})
    text = summary_markdown(spec, run_key="x", name="run-x", cluster=None, job=job, report=report, outputs=None,
                            teardown=None, error=None)
    assert "incomplete pod logs (1)" in text
    assert "`askb-x-0-abcde`: the pod was deleted before its log was read to its end" in text
