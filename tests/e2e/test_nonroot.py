"""The example image's user, in the sandbox with user switching on (issue 11): non-root pods work for real.

The example image runs as USER 65534 (examples/Dockerfile) and deployments/example.yaml says so in
``job.security``. The sandbox runs each container as that user (when it runs as root, as CI does), with root-owned
volume files in their Kubernetes modes, so a permission mistake fails here as it would on ASK.
"""

import os
from pathlib import Path

import pytest

from tests.e2e.conftest import processes
from tests.e2e.test_flow import run

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox switches container users only when it "
                                "runs as root (docs/sandbox.md); this machine runs tests as a normal user")


def test_example_runs_as_its_image_user_and_every_index_succeeds(sandbox_dir: Path, workdir: Path) -> None:
    _, state = run(sandbox_dir, workdir, "e2e-nonroot", "job.completions=3", "job.parallelism=3")
    assert state.is_completed(), state.message
    started = [p for p in processes(sandbox_dir) if p["pod"].startswith("askb-e2e-nonroot-")]
    workload = [p for p in started if p["container"] == "workload"]
    assert sorted(int(p["index"]) for p in workload) == [0, 1, 2]
    assert {p["user"] for p in workload} == {65534}
    # the data directory was handed over by the root init container, then written by the workload
    assert {p["user"] for p in started if p["container"] == "prepare-data-dir"} == {0}
    results = sorted((workdir / "outputs").rglob("result.json"))
    assert len(results) == 3
