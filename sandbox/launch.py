"""Starting and stopping a sandbox in the background: the one launcher behind every way of getting one.

``python -m sandbox serve --dir DIR --detach --wait-ready`` (the CLI's ``make run``, ``make up``) and the library
calls ``start_detached`` / ``stop_detached`` (tests, bench) all come here, so a sandbox started by any of them is
found, reused and stopped the same way:

- **one per directory**: a sandbox that already answers on DIR's control endpoint (``endpoints.json``) is reused,
  never doubled;
- **detached**: its own session (Ctrl-C in the terminal that started it does not reach it), stdin closed, output
  appended to ``DIR/sandbox.log``, its pid in ``DIR/sandbox.pid``;
- **ready means answering**: the control endpoint's ``/healthz`` of an ``endpoints.json`` written by *this* process
  (a stale file from an earlier sandbox does not count), waited for by polling the child, which also notices it
  dying;
- **PATH**: the pods of the virtual node inherit the sandbox's PATH, so the interpreter that started it goes
  first: ``python3`` in a Job command then has the same packages (the OSS SDK) as this interpreter, as the example
  image has on ASK.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


class LaunchError(RuntimeError):
    """The sandbox did not start (or stop); the message names its log file."""


def _pid_of(directory: Path) -> int | None:
    try:
        return int((directory / "sandbox.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (our own child not yet reaped) is not alive
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def healthy(directory: Path, *, newer_than: float = 0.0) -> bool:
    """True when DIR's ``endpoints.json`` (written after ``newer_than``, a ``time.time()``) answers ``/healthz``."""
    endpoints = directory / "endpoints.json"
    try:
        if endpoints.stat().st_mtime < newer_than:
            return False
        base = json.loads(endpoints.read_text())["control"]["endpoint"]
        with urllib.request.urlopen(base + "/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, ValueError, KeyError):
        return False


def start_detached(directory: Path, serve_args: list[str] | None = None, *, timeout: float = 90.0,
                   wait_ready: bool = True, interpreter_args: list[str] | None = None) -> tuple[int | None, bool]:
    """Start ``python -m sandbox serve --dir DIR [serve_args]`` in the background, or reuse the one running there.

    ``interpreter_args`` go before ``-m sandbox`` (e.g. ``["-m", "cProfile", "-o", FILE]`` for a profile, written
    when it is stopped).

    Returns:
        (pid or None if unknown, started): ``started`` is False when a sandbox already answered in DIR.

    Raises:
        LaunchError: the process exited, or did not answer within ``timeout`` seconds (``wait_ready``).
    """
    directory = directory.resolve()
    if healthy(directory):
        return _pid_of(directory), False
    directory.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log_path = directory / "sandbox.log"
    started_at = time.time() - 1.0  # file systems with 1 s timestamps
    with log_path.open("ab") as log:
        argv = [sys.executable, *(interpreter_args or []), "-m", "sandbox", "serve", "--dir", str(directory),
                *(serve_args or [])]
        proc = subprocess.Popen(argv, cwd=PACKAGE_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    (directory / "sandbox.pid").write_text(f"{proc.pid}\n")
    if not wait_ready:
        return proc.pid, True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LaunchError(f"the sandbox exited with code {proc.returncode}; see {log_path}")
        if healthy(directory, newer_than=started_at):
            return proc.pid, True
        time.sleep(0.1)  # polling a child we just started: nothing to watch but its control endpoint
    proc.terminate()
    raise LaunchError(f"the sandbox did not become ready in {timeout:.0f} s; see {log_path}")


def stop_detached(directory: Path, *, timeout: float = 20.0) -> int | None:
    """Stop the sandbox started in DIR (SIGTERM, then SIGKILL after ``timeout`` s). Returns its pid, or None when
    none was running."""
    directory = directory.resolve()
    pid = _pid_of(directory)
    if pid is None or not _alive(pid):
        (directory / "sandbox.pid").unlink(missing_ok=True)
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            break
        time.sleep(0.1)
    (directory / "sandbox.pid").unlink(missing_ok=True)
    return pid
