"""Shared fixtures: one sandbox per test session, started in-process on 127.0.0.1."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# tea (CS/NAS SDKs) ignores NO_PROXY: a proxy in the environment would swallow loopback calls.
for _var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_var, None)


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A running sandbox (Kubernetes, OSS, CS, NAS) for the whole session; yields the SandboxThread."""
    from sandbox.k8s.cluster import NodeConfig
    from sandbox.server import SandboxThread, Settings

    data_dir: Path = tmp_path_factory.mktemp("sandbox")
    # backoff_scale: the kubelet's real restart / image-pull back-offs (10 s doubling to 5 min) are 50x shorter
    # here, so pods with restartPolicy OnFailure/Always and pull failures move on within a test's time
    settings = Settings(cluster_create_delay_s=0.5, nas_ready_delay_s=0.2, node=NodeConfig(backoff_scale=0.02))
    runner = SandboxThread(data_dir, settings=settings)
    with runner:
        yield runner
