"""wait_for_job's pod logs through the sandbox: streams cut mid-line, a wait that starts again, restarted containers.

Real Jobs on the session sandbox (pods run as processes), the kubernetes client, the sandbox's fault knobs
``log_cut_after_bytes`` / ``log_cut_after_s``; the kept files and displayed lines are what a user reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tasks.cloud.cluster_access import connect
from tasks.errors import JobFailed
from tasks.render.manifests import JobInputs, job_manifest
from tasks.stages.cluster import ensure_cluster
from tasks.stages.job import launch_job
from tasks.stages.wait import WaitOptions, wait_for_job

# Lines written in pieces, with pauses inside a line: a stream cut while the pod sleeps is cut mid-line.
SCRIPT = ('printf "alpha beta gamma\\n"; printf "delta "; sleep 1; printf "epsilon\\n"; '
          'for i in 1 2 3 4 5 6; do printf "line $i of six "; sleep 0.3; printf "ends here\\n"; done; '
          'printf "no newline at the end"')
EXPECTED = ("alpha beta gamma\ndelta epsilon\n"
            + "".join(f"line {i} of six ends here\n" for i in range(1, 7)) + "no newline at the end")


@pytest.fixture
def api(cloud: Any, make_spec: Any, sandbox: Any) -> Any:
    spec = make_spec()
    handle = ensure_cluster(spec, run_key="it", cs=cloud.cs)
    api = connect(handle, spec, cs=cloud.cs)
    yield api
    sandbox.sandbox.faults.update({"log_cut_after_bytes": 0, "log_cut_after_s": 0.0})
    api.close()


def start_job(api: Any, make_spec: Any, run_key: str, script: str, **job: Any) -> Any:
    spec = make_spec({"job": {"image": "busybox", "command": ["sh", "-c", script], "completions": 2,
                              "parallelism": 2, **job}})
    return launch_job(client.BatchV1Api(api), job_manifest(spec, run_key=run_key, inputs=JobInputs()))


def kept(log_dir: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(log_dir.glob("*.log"))}


@pytest.mark.parametrize("knob", [{"log_cut_after_bytes": 9}, {"log_cut_after_s": 0.4}])
def test_follow_streams_cut_mid_line_keep_every_line_whole(api: Any, make_spec: Any, run_key: str, sandbox: Any,
                                                          tmp_path: Path, knob: dict[str, Any]) -> None:
    sandbox.sandbox.faults.update(knob)
    job = start_job(api, make_spec, run_key, SCRIPT)
    shown: list[str] = []
    report = wait_for_job(api, job, run_key=run_key, options=WaitOptions(log_dir=tmp_path, tick_seconds=0.5),
                          emit=shown.append)
    assert report.succeeded and report.incomplete_logs == {}
    files = kept(tmp_path)
    assert len(files) == 2 and set(files.values()) == {EXPECTED}
    for name in files:
        pod = name.removesuffix(".log")
        lines = [s.split("] ", 1)[1] for s in shown if f"pod={pod}]" in s]
        assert lines == EXPECTED.split("\n")


def test_a_wait_started_again_continues_the_kept_logs_without_a_line_twice(api: Any, make_spec: Any, run_key: str,
                                                                          tmp_path: Path) -> None:
    """What a task retry of the wait, or a re-attach after the flow process died, does: the same Job, the same
    log directory, a new wait_for_job; the first one gave up (here: its timeout) while the pods ran."""
    job = start_job(api, make_spec, run_key, SCRIPT)
    with pytest.raises(JobFailed, match="gave up waiting"):
        wait_for_job(api, job, run_key=run_key, options=WaitOptions(log_dir=tmp_path, timeout_seconds=1.5,
                                                                    tick_seconds=0.2, log_catch_up_seconds=0.5),
                     emit=lambda line: None)
    partial = kept(tmp_path)
    assert partial and all(EXPECTED.startswith(text) and text != EXPECTED for text in partial.values())
    report = wait_for_job(api, job, run_key=run_key, options=WaitOptions(log_dir=tmp_path, tick_seconds=0.5),
                          emit=lambda line: None)
    assert report.succeeded
    files = kept(tmp_path)
    assert len(files) == 2 and set(files.values()) == {EXPECTED}


def test_a_restarted_containers_attempts_are_kept_apart_and_the_failure_quotes_the_last(
        api: Any, make_spec: Any, run_key: str, tmp_path: Path) -> None:
    """restartPolicy OnFailure: the container restarts in the same pod, and the node's current log holds only the
    running attempt, ``previous=true`` the one before (the sandbox's side is checked with kubectl in
    tests/sandbox/test_k8s_fidelity.py). The Job fails once the restarts reach its backoffLimit, and its
    controller then deletes the pod, stopping the last attempt, which (like a workload that handles SIGTERM) says
    so and takes two seconds to stop."""
    marker = tmp_path / "attempts"
    marker.mkdir()
    # Each attempt counts the ones before it (shell builtins only: it prints at once), says which it is and fails
    # 1.5 s later (time for the reader on a loaded machine); the first restart is immediate, the next ones after
    # the kubelet's back-off. The third attempt waits to be stopped. (No ``$$`` here: Kubernetes turns it into
    # ``$`` in a command.)
    script = (f'exec 2>/dev/null; n=0; for f in {marker}/*; do [ -e "$f" ] && n=$((n+1)); done; : > {marker}/a$n; '
              'trap \'echo "attempt $n stopped"; sleep 2; exit 143\' TERM; '
              'echo "attempt $n starts"; sleep 1.5; echo "attempt $n fails"; '
              'if [ "$n" -ge 2 ]; then while :; do sleep 0.1; done; fi; exit 3')
    core = client.CoreV1Api(api)  # built before the Job starts: its first build takes seconds (pydantic models)
    job = start_job(api, make_spec, run_key, script, completions=1, parallelism=1, restart_policy="OnFailure",
                    backoff_limit=2)
    shown: list[str] = []
    with pytest.raises(JobFailed) as failed:
        wait_for_job(api, job, run_key=run_key, options=WaitOptions(log_dir=tmp_path / "logs", tick_seconds=0.5,
                                                                    grace_seconds=60), emit=shown.append)
    pods = core.list_namespaced_pod(job.namespace, label_selector=f"job-name={job.name}").items
    assert pods == []  # the Job controller deleted it: what was kept is all there is
    files = kept(tmp_path / "logs")
    pod = next(iter(files)).split(".")[0]
    assert sorted(files) == [f"{pod}.attempt-1.log", f"{pod}.attempt-2.log", f"{pod}.log"], failed.value
    for n, name in enumerate([f"{pod}.log", f"{pod}.attempt-1.log"]):
        assert files[name] == f"attempt {n} starts\nattempt {n} fails\n"  # each attempt once, nothing else
    last = "attempt 2 starts\nattempt 2 stopped\n"
    # The pod is deleted the moment the last attempt ends. Every byte is kept; whether a read could confirm the
    # end depends on what came first: if the node ended the follow, the log was followed to its end; if the pod's
    # event did (the reader cuts a follow once the container ended), the end was not seen. Either way the kept log
    # and the report say the same (tests/unit/test_pod_logs.py pins each order).
    assert files[f"{pod}.attempt-2.log"].startswith(last)
    rest = files[f"{pod}.attempt-2.log"].removeprefix(last)
    assert rest in ("", "[ask-batch: log incomplete: the pod was deleted as this attempt ended: its log was "
                        "followed to the end of the stream but could not be read again to confirm that end]\n",
                    "[ask-batch: log incomplete: the pod was deleted before its log was read to its end]\n")
    assert failed.value.report.incomplete_logs == ({pod: rest[len("[ask-batch: log incomplete: "):-2]} if rest else {})
    assert [s.split("] ", 1)[1] for s in shown if "attempt=2]" in s][:2] == ["attempt 2 starts", "attempt 2 stopped"]
    # the diagnosis quotes the last attempt's log, not an earlier one's
    message = str(failed.value)
    assert f"log lines of {pod}:\n    attempt 2 starts\n    attempt 2 stopped" in message
    assert "attempt 1 " not in message
