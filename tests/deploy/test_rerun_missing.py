"""Issue 9 on a real Prefect server: the deployments' flow retries re-run only the indexes that are missing.

The ad-hoc deployment retries a failed flow run (PREFECT_FLOWS_DEFAULT_RETRIES). Index 1 of the example workload
fails on purpose every time; indexes 0 and 2 succeed on the first attempt. Each retry must start index 1's pod
alone, as the sandbox's virtual node records every process it started.
"""

import functools
import json
from collections.abc import Iterator
from typing import Any

import pytest

from deployments.local import Stack
from tests.deploy.conftest import running_stack
from tests.deploy.helpers import SMALL, deployment, flow_run, run_deployment_cli, run_params, task_runs

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The module's own stack; its server may take longer than the default 90 s to answer on a busy machine
    (several test stacks at once), so it gets 300 s."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Stack, "start_server", functools.partialmethod(Stack.start_server, timeout=300.0))
        with running_stack(tmp_path_factory, name="rerun") as st:
            yield st


def processes(stack: Stack, run_key: str) -> list[dict[str, Any]]:
    assert stack.sandbox_dir is not None
    records = []
    for path in stack.sandbox_dir.glob("clusters/*/node/processes.jsonl"):
        records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r["pod"].startswith(f"askb-{run_key}-")]


def test_flow_retries_rerun_only_the_missing_index(stack: Stack) -> None:
    retries = int(deployment(stack, "adhoc")["job_variables"]["env"]["PREFECT_FLOWS_DEFAULT_RETRIES"])
    assert retries >= 1
    settings = json.loads((stack.root / "examples/workload/settings.json").read_text())
    settings["fail_indexes"] = [1]
    (stack.root / "fail-one").mkdir(exist_ok=True)
    (stack.root / "fail-one/settings.json").write_text(json.dumps(settings))
    params = run_params(stack, *SMALL, "job.backoff_limit_per_index=0",
                        "config.local_paths=[examples/workload/shard_hash.py, fail-one/settings.json]")
    code, output, run_id = run_deployment_cli(stack, "adhoc", params)
    assert code == 1 and "Failed" in output, output

    run = flow_run(stack, run_id)
    assert run["run_count"] == 1 + retries, run["run_count"]
    run_key = run["name"].removeprefix("ask-batch-")
    started = processes(stack, run_key)
    # First attempt: every index; each retry: index 1 alone (its follow-up Job's pod).
    assert len(started) == 3 + retries, [(p["pod"], p["index"]) for p in started]
    names = [tr["name"].rsplit("-", 1)[0] for tr in task_runs(stack, run_id)]
    assert names.count("launch_job") == 1 and names.count("relaunch_missing") == retries, names
