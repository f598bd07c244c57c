"""The one sandbox launcher, as a user runs it: `python -m sandbox serve --detach --wait-ready` and `stop`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from sandbox.launch import _alive

REPO = Path(__file__).resolve().parents[2]


def sandbox_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sandbox", *args], cwd=REPO, text=True, capture_output=True,
                          timeout=120)


def answers(directory: Path) -> bool:
    base = json.loads((directory / "endpoints.json").read_text())["control"]["endpoint"]
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_detach_starts_once_reuses_and_stops(tmp_path: Path) -> None:
    directory = tmp_path / "sb"
    first = sandbox_cli("serve", "--dir", str(directory), "--detach", "--wait-ready", "60",
                        "--cluster-create-delay", "0")
    try:
        assert first.returncode == 0, first.stderr
        pid = int((directory / "sandbox.pid").read_text())
        assert first.stdout.startswith(f"sandbox started in {directory} (pid {pid}), ready")
        assert answers(directory)  # ready means answering, when the command returns
        assert os.getsid(pid) == pid  # its own session: a Ctrl-C in the caller's terminal does not reach it

        again = sandbox_cli("serve", "--dir", str(directory), "--detach", "--wait-ready")
        assert again.returncode == 0 and f"already running in {directory} (pid {pid})" in again.stdout

        stopped = sandbox_cli("stop", "--dir", str(directory))
        assert stopped.stdout.strip() == f"sandbox in {directory}: stopped (pid {pid})"
        assert not _alive(pid) and not (directory / "sandbox.pid").exists()
        assert sandbox_cli("stop", "--dir", str(directory)).stdout.strip() == f"sandbox in {directory}: not running"
    finally:
        if (directory / "sandbox.pid").exists():
            os.kill(int((directory / "sandbox.pid").read_text()), signal.SIGKILL)


def test_a_killed_sandbox_is_replaced_not_taken_for_ready(tmp_path: Path) -> None:
    """A sandbox killed with SIGKILL leaves its endpoints.json: the next start must not report that one ready."""
    directory = tmp_path / "sb"
    assert sandbox_cli("serve", "--dir", str(directory), "--detach", "--wait-ready", "60").returncode == 0
    old = int((directory / "sandbox.pid").read_text())
    os.kill(old, signal.SIGKILL)
    try:
        restarted = sandbox_cli("serve", "--dir", str(directory), "--detach", "--wait-ready", "60")
        assert restarted.returncode == 0, restarted.stderr
        new = int((directory / "sandbox.pid").read_text())
        assert new != old and "started" in restarted.stdout and answers(directory)
    finally:
        sandbox_cli("stop", "--dir", str(directory))


def test_a_sandbox_that_cannot_start_says_where_its_log_is(tmp_path: Path) -> None:
    directory = tmp_path / "sb"
    (directory / "endpoints.json").mkdir(parents=True)  # it cannot write its endpoints: it exits at start
    result = sandbox_cli("serve", "--dir", str(directory), "--detach", "--wait-ready", "60")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("the sandbox exited with code ")
    assert result.stderr.strip().endswith(f"see {directory / 'sandbox.log'}")
    assert "endpoints.json" in (directory / "sandbox.log").read_text()


def test_the_printed_stop_command_works_in_a_plain_shell(tmp_path: Path) -> None:
    # `make run` starts the sandbox with the project's .venv interpreter; a plain shell's `python` is not that one
    # (or does not exist): the hint must name the interpreter that has the sandbox's packages.
    directory = tmp_path / "sb"
    started = sandbox_cli("serve", "--dir", str(directory), "--detach", "--wait-ready", "60")
    try:
        assert started.returncode == 0, started.stderr
        hint = started.stdout.split("stop it with: ", 1)[1].strip()
        plain = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}
        stopped = subprocess.run(hint, shell=True, cwd=REPO, env=plain, text=True, capture_output=True, timeout=60)
        assert stopped.returncode == 0 and "stopped" in stopped.stdout, (hint, stopped.stderr[-300:])
    finally:
        if (directory / "sandbox.pid").exists():
            os.kill(int((directory / "sandbox.pid").read_text()), signal.SIGKILL)
