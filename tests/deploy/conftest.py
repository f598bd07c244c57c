"""The deployment tests' stack: a real Prefect server, a sandbox and a process worker, all started by the tests.

One stack per module (starting it takes ~20 s): a fresh copy of the repository (so ``prefect deploy`` is shown to
work from any clone, not just this checkout), its own PREFECT_HOME and a free port on 127.0.0.1. It is built by
``deployments.local.Stack`` — the same code ``make up`` runs — and stopped by pid at the end.
"""

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployments.local import Stack
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
NOT_COPIED = (".venv", ".git", ".sandbox", ".prefect", "outputs", "__pycache__", ".pytest_cache", ".ruff_cache",
              "out", "*.pyc")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "deploy: end-to-end on a real Prefect server, worker and sandbox (slow)")


@contextlib.contextmanager
def running_stack(tmp_path_factory: pytest.TempPathFactory, name: str = "deploy",
                  extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    """Copy the repository, start a stack on it (server, sandbox wired, pool, deployments, worker), stop it after.

    ``extra_env`` goes to every Prefect process of the stack (e.g. ``PREFECT_API_DATABASE_CONNECTION_URL``).
    """
    base = tmp_path_factory.mktemp(name)
    clone = base / "clone"
    shutil.copytree(REPO, clone, ignore=shutil.ignore_patterns(*NOT_COPIED))
    st = Stack(root=clone, state=base / "prefect", port=free_port(), sandbox_dir=base / "sandbox",
               worker_name="test-worker", worker_query_seconds=1, extra_env=dict(extra_env or {}))
    try:
        st.up(say=lambda line: None)
        yield st
    finally:
        st.down(say=lambda line: None)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A running stack (SQLite): server, sandbox (wired), pool, both deployments, one worker."""
    with running_stack(tmp_path_factory) as st:
        yield st
