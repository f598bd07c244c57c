"""End-to-end fixtures: the real flow, a Prefect test server, the session sandbox, the example parameters.

The sandbox's virtual node runs pod commands as host processes with this process's PATH, so this interpreter's
``bin`` goes first on PATH before any pod starts: ``python3`` in the example Job then has the OSS SDK, as the
example image does on ASK (the CLI does the same when it starts a sandbox; see flows/cli.py).
"""

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deployments" / "example.yaml"
WORKLOAD = REPO / "examples" / "workload"

os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture(scope="session", autouse=True)
def prefect_server() -> Iterator[str]:
    """One temporary Prefect server (SQLite) for the session; flow heartbeats off."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        temporary_settings,
    )

    from tests.prefect_harness import prefect_harness

    with prefect_harness(server_startup_timeout=300), \
            temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield str(PREFECT_API_URL.value())


@pytest.fixture(scope="session")
def sandbox_dir(sandbox: Any) -> Path:
    return Path(sandbox.sandbox.data_dir)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test runs in its own directory, so its downloaded outputs are its own."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def settings_file(directory: Path, **changes: Any) -> Path:
    """A copy of the example workload's settings with ``changes`` (e.g. fail_indexes=[3])."""
    data = json.loads((WORKLOAD / "settings.json").read_text())
    data.update(changes)
    path = directory / "settings" / "settings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def example_sets(directory: Path, run_key: str, **settings: Any) -> list[str]:
    """``--set`` values that make the example run self-contained in ``directory``."""
    return [
        f"run_key={run_key}",
        f"outputs.download_dir={directory / 'outputs'}",
        f"config.local_paths=[{WORKLOAD / 'shard_hash.py'}, {settings_file(directory, **settings)}]",
        f"config.secret_files=[{{name: token, file: {WORKLOAD / 'demo-token.txt'}}}]",
    ]


def processes(sandbox_dir: Path) -> list[dict[str, Any]]:
    """Every process the virtual nodes of every sandbox cluster started."""
    records = []
    for path in sandbox_dir.glob("clusters/*/node/processes.jsonl"):
        records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return records


def kube(spec: Any) -> Any:
    from tasks.cloud.cluster_access import connect, locate_cluster
    from tasks.cloud.context import cs_for

    cluster = locate_cluster(spec, cs=cs_for(spec))
    return connect(cluster, spec, cs=cs_for(spec))


def left_in_cluster(spec: Any, run_key: str) -> list[str]:
    """Every object of the run still in its namespace (by the run label), and its lock's Lease."""
    from kubernetes import client

    from tasks.cloud.run_lock import lease_name
    from tasks.naming import RUN_LABEL

    api, ns, selector = kube(spec), spec.cluster.namespace, f"{RUN_LABEL}={run_key}"
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    left = [f"Job/{o.metadata.name}" for o in batch.list_namespaced_job(ns, label_selector=selector).items]
    left += [f"ConfigMap/{o.metadata.name}"
             for o in core.list_namespaced_config_map(ns, label_selector=selector).items]
    left += [f"Secret/{o.metadata.name}" for o in core.list_namespaced_secret(ns, label_selector=selector).items]
    left += [f"PersistentVolumeClaim/{o.metadata.name}"
             for o in core.list_namespaced_persistent_volume_claim(ns, label_selector=selector).items]
    left += [f"PersistentVolume/{o.metadata.name}"
             for o in core.list_persistent_volume(label_selector=selector).items]
    left += [f"Lease/{o.metadata.name}" for o in client.CoordinationV1Api(api).list_namespaced_lease(ns).items
             if o.metadata.name == lease_name(run_key)]
    return left


def wait_lock_free(spec: Any, key: str, *, timeout: float) -> None:
    """Wait until the run lock of ``key`` (its Lease in the target cluster) has no live holder."""
    from datetime import UTC, datetime, timedelta

    from kubernetes import client

    from tasks.cloud.run_lock import lease_name

    leases = client.CoordinationV1Api(kube(spec))
    deadline = time.monotonic() + timeout
    while True:
        try:
            lease = leases.read_namespaced_lease(lease_name(key), spec.cluster.namespace)
        except client.ApiException as exc:
            assert exc.status == 404
            return
        expires = lease.spec.renew_time + timedelta(seconds=lease.spec.lease_duration_seconds)
        if expires < datetime.now(UTC):
            return
        assert time.monotonic() < deadline, f"the lock of {key!r} was not freed after {timeout} s"
        time.sleep(1)
