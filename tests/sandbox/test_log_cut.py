"""Fault knobs log_cut_after_bytes / log_cut_after_s: pods/log follow streams end early, mid-line if it falls there.

Through the session sandbox (real API server, virtual node running the pod as a process, the kubernetes client).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from tests.sandbox.served import wait_for

SCRIPT = 'printf "alpha beta\\n"; printf "gamma "; sleep 6; printf "delta\\n"'


@pytest.fixture
def core(sandbox: Any) -> Iterator[client.CoreV1Api]:
    api = config.new_client_from_config(str(Path(sandbox.sandbox.data_dir) / "kubeconfig"))
    try:
        yield client.CoreV1Api(api)
    finally:
        sandbox.sandbox.faults.update({"log_cut_after_bytes": 0, "log_cut_after_s": 0.0})
        api.close()


def running_pod(core: client.CoreV1Api) -> str:
    name = "logcut-" + uuid.uuid4().hex[:8]
    core.create_namespaced_pod("default", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox",
                                                            "command": ["sh", "-c", SCRIPT]}]}})

    def started() -> bool:
        return "gamma" in core.read_namespaced_pod_log(name, "default") if core.read_namespaced_pod(
            name, "default").status.phase == "Running" else False

    wait_for(started, 60, f"pod {name} printed its first lines")
    return name


def test_log_follow_ends_after_n_bytes_mid_line(sandbox: Any, core: client.CoreV1Api) -> None:
    name = running_pod(core)
    sandbox.sandbox.faults.update({"log_cut_after_bytes": 14})
    cut = core.read_namespaced_pod_log(name, "default", follow=True, _preload_content=False).data
    assert cut == b"alpha beta\ngam"
    assert core.read_namespaced_pod(name, "default").status.phase == "Running"  # ended by the knob, not the pod
    # A plain read is not cut: the knob is about long-lived follow streams.
    assert core.read_namespaced_pod_log(name, "default") == "alpha beta\ngamma "


def test_log_follow_ends_after_n_seconds(sandbox: Any, core: client.CoreV1Api) -> None:
    name = running_pod(core)
    sandbox.sandbox.faults.update({"log_cut_after_s": 0.5})
    cut = core.read_namespaced_pod_log(name, "default", follow=True, _preload_content=False).data
    assert cut == b"alpha beta\ngamma "  # the stream ended while the line was unfinished and the pod ran on
    assert core.read_namespaced_pod(name, "default").status.phase == "Running"
    sandbox.sandbox.faults.update({"log_cut_after_s": 0.0})
    whole = core.read_namespaced_pod_log(name, "default", follow=True, _preload_content=False).data
    assert whole == b"alpha beta\ngamma delta\n"


def test_a_client_that_closes_a_follow_ends_it_quietly(sandbox: Any, core: client.CoreV1Api,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """ask-batch cuts a follow once the pod's event says its container ended. kube-apiserver ends that request
    without an error; the sandbox logged a traceback ("Cannot write to closing transport") on its next write."""
    name = "logclose-" + uuid.uuid4().hex[:8]
    core.create_namespaced_pod("default", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "command": [
            "sh", "-c", "i=0; while [ $i -lt 100 ]; do echo tick $i; i=$((i+1)); sleep 0.05; done"]}]}})
    wait_for(lambda: core.read_namespaced_pod(name, "default").status.phase == "Running", 60, f"pod {name} runs")
    resp = core.read_namespaced_pod_log(name, "default", follow=True, _preload_content=False)
    assert next(resp.stream(16)).startswith(b"tick 0")
    resp.close()
    # the pod goes on printing; the sandbox's next writes meet the closed connection until the pod ends
    wait_for(lambda: core.read_namespaced_pod(name, "default").status.phase == "Succeeded", 60, f"pod {name} ends")
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []
