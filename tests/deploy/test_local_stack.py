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


def test_up_on_a_port_another_program_listens_on_says_so_before_starting_anything(tmp_path: Path) -> None:
    """``make up`` when something else already listens on 4200 (another server, an earlier UI): a clear error that
    names the port and the option, not "the process exited" after a server start that could never work."""
    import socket

    import pytest

    from deployments.local import StackError

    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen()
    stack = Stack(state=tmp_path / ".prefect", port=other.getsockname()[1], sandbox_dir=None)
    try:
        with pytest.raises(StackError) as err:
            stack.start_server(timeout=30)
    finally:
        other.close()
    message = str(err.value)
    assert f"port {stack.port}" in message and "--port" in message, message
    assert not stack.pid_file("server").exists()  # nothing was started
