"""End-to-end fixtures: the real flow, a Prefect test server, the session sandbox, the example parameters.

The sandbox's virtual node runs pod commands as host processes with this process's PATH, so this interpreter's
``bin`` goes first on PATH before any pod starts: ``python3`` in the example Job then has the OSS SDK, as the
example image does on ASK (the CLI does the same when it starts a sandbox; see flows/cli.py).
"""

import json
import os
import sys
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
    """One temporary Prefect server (SQLite) for the session; flow heartbeats off (research/prefect.md §4.1)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60), \
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
