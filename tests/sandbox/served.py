"""`python -m sandbox serve --dir DIR` in the background, for the acceptance tests (and the user's view of it).

Started and stopped by the sandbox's one launcher (sandbox/launch.py, what `python -m sandbox serve --detach
--wait-ready` and `make run` use). Only what a user has is used: the files the sandbox writes (DIR/kubeconfig,
DIR/endpoints.json) and its control endpoint.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sandbox.launch import start_detached, stop_detached

T = TypeVar("T")


@dataclass
class Served:
    """A background `python -m sandbox serve --dir DIR` and the files it wrote."""

    dir: Path
    pid: int
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
    pid, started = start_detached(data_dir, list(extra), timeout=60)
    assert started and pid is not None, f"a sandbox already ran in {data_dir}"
    return Served(data_dir, pid, json.loads((data_dir / "endpoints.json").read_text()))


def stop_served(served: Served) -> None:
    """Stop it (idempotent: a sandbox already stopped, or replaced by a newer one in the same directory, is left)."""
    pid_file = served.dir / "sandbox.pid"
    if pid_file.exists() and int(pid_file.read_text()) == served.pid:
        assert stop_detached(served.dir) == served.pid
