"""``make down`` / ``status`` see the sandbox that ``make run`` (the CLI) started, not only the one ``make up`` did."""

from pathlib import Path

from deployments.local import Stack, pid_alive
from flows.cli import ensure_sandbox


def test_down_stops_the_sandbox_that_make_run_started(tmp_path: Path) -> None:
    sandbox_dir = tmp_path / "sandbox"
    ensure_sandbox(sandbox_dir)  # what `make run` does when no sandbox answers: a detached one, pid in its dir
    pid = int((sandbox_dir / "sandbox.pid").read_text())
    stack = Stack(state=tmp_path / ".prefect", port=1, sandbox_dir=sandbox_dir)
    try:
        assert stack.status()["sandbox"] == f"running (pid {pid})"
        assert stack.stop("sandbox") == f"sandbox: stopped (pid {pid})"
        assert not pid_alive(pid)
        assert stack.status()["sandbox"] == "not running"
    finally:
        if pid_alive(pid):
            import os
            import signal

            os.killpg(pid, signal.SIGKILL)
