"""Re-running only what is missing (issue 9): the same run key after a failed index starts that index alone.

Checked where a user sees it: the sandbox's record of the processes its virtual node started, the manifest and
the downloaded files, and what the re-run pod printed about its index.
"""

import json
from pathlib import Path
from typing import Any

import pytest

from examples.workload.shard_hash import compute_shard
from flows.ask_batch import ask_batch
from flows.cli import build_spec
from flows.run_files import flow_parameters
from tests.e2e.conftest import EXAMPLE, example_sets, processes


def run(sandbox_dir: Path, workdir: Path, run_key: str, *extra: str, **settings: Any) -> Any:
    spec = build_spec(EXAMPLE, example_sets(workdir, run_key, **settings) + list(extra), sandbox_dir)
    return ask_batch(**flow_parameters(spec), return_state=True)


def started(sandbox_dir: Path, run_key: str) -> list[dict[str, Any]]:
    return [p for p in processes(sandbox_dir) if p["pod"].startswith(f"askb-{run_key}-")]


def test_same_run_key_after_a_failed_index_runs_only_that_index(sandbox_dir: Path, workdir: Path) -> None:
    key = "e2e-rerun"
    first = run(sandbox_dir, workdir, key, "job.completions=4", "job.parallelism=4",
                "job.backoff_limit_per_index=0", fail_indexes=[1])
    assert first.is_failed()
    assert len(started(sandbox_dir, key)) == 4
    second = run(sandbox_dir, workdir, key, "job.completions=4", "job.parallelism=4",
                 "job.backoff_limit_per_index=0")  # the command is fixed: index 1 no longer fails
    assert second.is_completed(), second.message
    again = started(sandbox_dir, key)[4:]
    assert len(again) == 1, again  # only the missing index ran
    root = workdir / "outputs" / f"ask-batch-{key}"
    results = {int(p.parent.name.split("-")[1]): json.loads(p.read_text()) for p in root.glob("index-*/result.json")}
    assert sorted(results) == [0, 1, 2, 3]
    # The re-run pod saw its original index: it computed index 1's shard and wrote it under index-00001/.
    assert results[1]["index"] == 1
    assert results[1]["sha256"] == compute_shard("ask-batch-demo", 1, 1 << 20)["sha256"]
    log = next((root / "logs").glob(f"{again[0]['pod']}.log")).read_text()
    assert "index 1: shard" in log


def test_rerun_all_runs_every_index_again(sandbox_dir: Path, workdir: Path) -> None:
    key = "e2e-rerun-all"
    assert run(sandbox_dir, workdir, key, "job.completions=2", "job.parallelism=2").is_completed()
    state = run(sandbox_dir, workdir, key, "job.completions=2", "job.parallelism=2", "job.rerun=all",
                "job.env={AGAIN: '1'}")
    assert state.is_completed(), state.message
    assert len(started(sandbox_dir, key)) == 4


@pytest.mark.parametrize("ttl", [0, 10])
def test_a_ttl_shorter_than_the_log_drain_is_refused_before_any_request(sandbox_dir: Path, ttl: int,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from flows.cli import main

    code = main(["--params", str(EXAMPLE), "--sandbox", str(sandbox_dir), "--set",
                 f"job.ttl_seconds_after_finished={ttl}"])
    err = capsys.readouterr().err
    assert code == 2 and "job.ttl_seconds_after_finished" in err and "at least 34" in err
