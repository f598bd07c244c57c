"""What the deployment tests share: API reads, polling with a deadline, the CLI run, and the ad-hoc end-to-end check
(run by the SQLite-backed stack in test_deployments.py and by the PostgreSQL-backed one in test_postgres.py)."""

import re
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from deployments.local import Stack, http_json

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
SMALL = ("job.completions=3", "job.parallelism=3", "storage.mode=none")
STAGES = ("ensure_cluster", "publish_config", "launch_job", "wait_for_job", "collect_outputs", "teardown")


def api(stack: Stack, path: str, body: object | None = None) -> Any:
    return http_json(f"{stack.api_url}{path}", body, timeout=10)


def poll(read: Callable[[], Any], done: Callable[[Any], bool], *, timeout: float, what: str) -> Any:
    """Read until ``done(value)``; fail with the last value at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: still {value!r} after {timeout:.0f}s")
        time.sleep(0.5)  # the API has no push channel for these reads; poll it


def run_params(stack: Stack, *sets: str, file: str = "deployments/example.yaml") -> str:
    """``python -m deployments.params FILE --set ...`` in the clone: the JSON for ``--params``."""
    argv = [sys.executable, "-m", "deployments.params", file]
    for item in sets:
        argv += ["--set", item]
    result = subprocess.run(argv, cwd=stack.root, env=stack.env(), text=True, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def flow_run(stack: Stack, run_id: str) -> dict[str, Any]:
    return api(stack, f"/flow_runs/{run_id}")


def task_runs(stack: Stack, run_id: str) -> list[dict[str, Any]]:
    return api(stack, "/task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}, "limit": 200})


def artifacts(stack: Stack, run_id: str) -> list[dict[str, Any]]:
    return api(stack, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}})


def deployment(stack: Stack, name: str) -> dict[str, Any]:
    return api(stack, f"/deployments/name/ask-batch/{name}")


def run_deployment_cli(stack: Stack, name: str, params: str, timeout: int = 240) -> tuple[int, str, str]:
    """``prefect deployment run ask-batch/NAME --params ... --watch``: (exit code, output, flow run id)."""
    result = stack.prefect("deployment", "run", f"ask-batch/{name}", "--params", params, "--watch",
                           "--watch-interval", "1", "--watch-timeout", str(timeout), check=False,
                           timeout=timeout + 60)
    output = result.stdout + result.stderr
    match = UUID_RE.search(output)
    assert match, output
    return result.returncode, output, match.group(0)


def adhoc_run_end_to_end(stack: Stack) -> dict[str, Any]:
    """``prefect deployment run ask-batch/adhoc --watch`` to Completed, then read back through the API: the wired
    target, every stage's task run, the logs, the summary artifact, and the outputs where the summary says.

    Returns the flow run (as the API answers ``/flow_runs/<id>``).
    """
    code, output, run_id = run_deployment_cli(stack, "adhoc", run_params(stack, *SMALL))
    assert code == 0 and "Completed" in output, output

    run = flow_run(stack, run_id)
    assert run["state_type"] == "COMPLETED"
    assert run["parameters"]["target"]["region"] == "cn-sandbox"  # the wired target, resolved by the server
    name = run["name"]

    by_name: dict[str, list[str]] = {}
    for tr in task_runs(stack, run_id):
        by_name.setdefault(tr["name"].rsplit("-", 1)[0], []).append(tr["state_type"])
    for stage in STAGES:
        assert by_name.get(stage) == ["COMPLETED"], (stage, by_name)

    logs = api(stack, "/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})
    assert any("run key" in entry["message"] for entry in logs), [entry["message"] for entry in logs[:20]]

    found = artifacts(stack, run_id)
    keys = {a["key"] for a in found}
    summary = next(a for a in found if (a["key"] or "").startswith("summary-"))
    assert summary["type"] == "markdown", keys

    # The outputs are where the summary says: downloaded under the clone (the pull step's working directory).
    out_dir = stack.root / "outputs" / name
    assert f"downloaded to `outputs/{name}`" in summary["data"], summary["data"]
    assert out_dir.is_dir() and any(p.is_file() for p in out_dir.rglob("*")), out_dir
    return run
