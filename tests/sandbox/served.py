"""`python -m sandbox serve --dir DIR` as a subprocess, for the acceptance tests (and the user's view of it).

Only what a user has is used: the files the sandbox writes (DIR/kubeconfig, DIR/endpoints.json) and its
control endpoint.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


@dataclass
class Served:
    """A `python -m sandbox serve --dir DIR` subprocess and the files it wrote."""

    dir: Path
    proc: subprocess.Popen[bytes]
    endpoints: dict[str, Any]

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if method != "GET":  # writes carry the control token from endpoints.json
            headers["Authorization"] = f"Bearer {self.endpoints['control']['token']}"
        request = urllib.request.Request(self.endpoints["control"]["endpoint"] + path, data=data, method=method,
                                         headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def start_served(data_dir: Path, *extra: str) -> Served:
    log = open(data_dir.parent / f"{data_dir.name}.serve.log", "ab")  # noqa: SIM115 - kept for the process's life
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", "serve", "--dir", str(data_dir), *extra],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT)

    def ready() -> dict[str, Any] | None:
        assert proc.poll() is None, f"sandbox exited with {proc.returncode}; see {log.name}"
        if not (data_dir / "endpoints.json").exists():
            return None
        endpoints: dict[str, Any] = json.loads((data_dir / "endpoints.json").read_text())
        try:
            with urllib.request.urlopen(endpoints["control"]["endpoint"] + "/healthz", timeout=2):
                return endpoints
        except OSError:
            return None

    return Served(data_dir, proc, wait_for(ready, 30, "the sandbox to be ready"))


def stop_served(served: Served) -> None:
    served.proc.send_signal(signal.SIGTERM)
    try:
        served.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        served.proc.kill()
        served.proc.wait()
