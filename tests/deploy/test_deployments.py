"""The deployments end to end: prefect.yaml deployed to a real Prefect server, runs picked up by a process worker,
executed against the sandbox, and everything read back through the Prefect REST API.

Select them with ``pytest -m deploy tests/deploy`` (about two minutes; they start their own server, sandbox and
worker, see conftest.py). Every wait polls the API for a state, with a deadline.
"""

import json
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from deployments.local import Stack
from tests.deploy.helpers import (
    SMALL,
    TERMINAL,
    UUID_RE,
    adhoc_run_end_to_end,
    api,
    deployment,
    flow_run,
    poll,
    run_deployment_cli,
    run_params,
    task_runs,
)

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(900)]


# --------------------------------------------------------------------------------------------- tests


def test_adhoc_run_completes_and_is_readable_through_the_api(stack: Stack) -> None:
    adhoc_run_end_to_end(stack)


def test_nightly_schedule_produces_runs_at_0200_shanghai(stack: Stack) -> None:
    dep = deployment(stack, "nightly")
    (schedule,) = dep["schedules"]
    assert schedule["schedule"]["cron"] == "0 2 * * *" and schedule["schedule"]["timezone"] == "Asia/Shanghai"
    assert dep["global_concurrency_limit"]["limit"] == 1
    assert dep["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"

    def scheduled() -> list[dict[str, Any]]:
        return api(stack, "/flow_runs/filter", {
            "flow_runs": {"deployment_id": {"any_": [dep["id"]]}, "state": {"type": {"any_": ["SCHEDULED"]}}},
            "sort": "EXPECTED_START_TIME_ASC", "limit": 5})

    runs = poll(scheduled, lambda rs: len(rs) >= 3, timeout=90, what="scheduled nightly runs")
    shanghai = ZoneInfo("Asia/Shanghai")
    starts = [datetime.fromisoformat(r["expected_start_time"].replace("Z", "+00:00")).astimezone(shanghai)
              for r in runs]
    now = datetime.now(shanghai)
    first = (now + timedelta(days=1 if now.hour >= 2 else 0)).replace(hour=2, minute=0, second=0, microsecond=0)
    assert starts[:3] == [first + timedelta(days=i) for i in range(3)], starts
    # Each scheduled run carries the nightly parameter set with the wired target.
    spec = runs[0]["parameters"]
    assert list(spec) == ["job", "config", "outputs", "storage", "cluster", "target", "teardown", "wait", "run_key"]
    assert spec["job"]["completions"] == 10 and spec["outputs"]["prefix_template"].startswith("nightly/")
    assert spec["target"]["region"] == "cn-sandbox"


def test_one_section_from_the_cli_replaces_that_section_and_keeps_the_deployments_others(stack: Stack) -> None:
    """``prefect deployment run ask-batch/adhoc --param job='{...}'`` with only image, command and completions:
    the server merges parameters by name, so config, outputs, storage, cluster and target stay the deployment's."""
    job = {"image": "registry.cn-hangzhou.aliyuncs.com/ask-batch/shard-hash:0.1",
           "command": ["python3", "/etc/ask-batch/config/shard_hash.py", "--settings", "settings.json"],
           "completions": 3, "parallelism": 3}
    result = stack.prefect("deployment", "run", "ask-batch/adhoc", "--param", f"job={json.dumps(job)}", "--watch",
                           "--watch-interval", "1", "--watch-timeout", "400", check=False, timeout=460)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Completed" in output, output
    run = flow_run(stack, UUID_RE.search(output).group(0))  # type: ignore[union-attr]
    params = run["parameters"]
    assert params["job"]["completions"] == 3 and params["job"]["image"] == job["image"]
    assert params["target"]["region"] == "cn-sandbox"  # the deployment's wired target, kept
    assert params["config"]["local_paths"] == ["examples/workload/shard_hash.py", "examples/workload/settings.json"]
    launches = [tr for tr in task_runs(stack, run["id"]) if tr["name"].startswith("launch_job")]
    assert [tr["state_type"] for tr in launches] == ["COMPLETED"]


def test_failing_run_is_retried_per_deployment_and_torn_down_each_time(stack: Stack) -> None:
    env = deployment(stack, "adhoc")["job_variables"]["env"]
    attempts = 1 + int(env["PREFECT_FLOWS_DEFAULT_RETRIES"])
    params = run_params(stack, *SMALL, "job.completions=1", "job.parallelism=1", "job.backoff_limit=0",
                        "job.backoff_limit_per_index=null", 'job.command=["python3", "-c", "raise SystemExit(3)"]',
                        "job.args=[]")
    code, output, run_id = run_deployment_cli(stack, "adhoc", params)
    assert code == 1 and "Failed" in output, output

    run = flow_run(stack, run_id)
    assert run["state_type"] == "FAILED" and run["run_count"] == attempts, (run["state_type"], run["run_count"])
    names = [tr["name"].rsplit("-", 1)[0] for tr in task_runs(stack, run_id)]
    teardowns = [tr for tr in task_runs(stack, run_id) if tr["name"].startswith("teardown")]
    assert names.count("launch_job") == attempts, names
    assert len(teardowns) == attempts and {tr["state_type"] for tr in teardowns} == {"COMPLETED"}, teardowns


def test_same_spec_twice_at_once_launches_the_job_once(stack: Stack) -> None:
    dep = deployment(stack, "nightly")
    params = json.loads(run_params(stack, *SMALL, file="deployments/nightly.yaml"))
    body = {"parameters": params, "state": {"type": "SCHEDULED"}}
    ids = [api(stack, f"/deployments/{dep['id']}/create_flow_run", body)["id"] for _ in range(2)]

    runs = poll(lambda: [flow_run(stack, i) for i in ids], lambda rs: all(r["state_type"] in TERMINAL for r in rs),
                timeout=240, what="both nightly runs")
    states = sorted(r["state_type"] for r in runs)
    assert states == ["CANCELLED", "COMPLETED"], [(r["state_type"], r["state"]["message"]) for r in runs]
    launches = [tr for i in ids for tr in task_runs(stack, i) if tr["name"].startswith("launch_job")]
    assert len(launches) == 1, launches


def test_lock_key_is_the_run_key_or_the_spec() -> None:
    from tasks.cloud.run_lock import lock_key
    from tasks.spec import parse_spec

    base = {"job": {"image": "python:3.11-slim", "completions": 2, "parallelism": 2}}
    assert lock_key(parse_spec({**base, "run_key": "nightly-1"})) == "nightly-1"
    assert lock_key(parse_spec(base)) == lock_key(parse_spec(base)).lower()
    assert lock_key(parse_spec(base)) == lock_key(parse_spec(dict(base)))
    other = {"job": {**base["job"], "completions": 3}}
    assert lock_key(parse_spec(base)) != lock_key(parse_spec(other))


def test_kubernetes_base_job_template_renders_a_valid_job() -> None:
    """deployments/k8s-base-job-template.json: accepted by the prefect-kubernetes worker, with our defaults.

    Rendered offline (defaults applied the way the worker applies them, without a server to resolve blocks).
    """
    from prefect.utilities.templating import apply_values
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    from deployments.steps import PROJECT_ROOT

    template = json.loads((PROJECT_ROOT / "deployments" / "k8s-base-job-template.json").read_text())
    variables = template["variables"]["properties"]
    defaults = {name: spec["default"] for name, spec in variables.items() if "default" in spec}
    config = KubernetesWorkerJobConfiguration(**apply_values(template["job_configuration"], defaults,
                                                             remove_notset=True))
    manifest = config.job_manifest
    assert manifest["metadata"]["namespace"] == "ask-batch"
    pod = manifest["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "ask-batch-flow" and pod["restartPolicy"] == "Never"
    assert pod["containers"][0]["resources"]["requests"] == {"cpu": "1", "memory": "2Gi"}
