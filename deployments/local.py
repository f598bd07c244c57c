"""The local stack behind ``make up`` / ``make down``: Prefect server, sandbox, wiring, deployments, a worker.

    python -m deployments.local up   [--port 4200] [--sandbox .sandbox] [--no-sandbox] [--database-url URL]
    python -m deployments.local down
    python -m deployments.local status

Everything lives under the project: ``PREFECT_HOME=.prefect`` (SQLite ``.prefect/prefect.db``, results), and
``.prefect/<service>.pid`` / ``.prefect/<service>.log`` for each process this module starts. Everything listens on
127.0.0.1. ``up`` is idempotent: a service that already answers is kept (and ``down`` leaves it alone unless
``up`` started it: only the pid files written here are acted upon).

Why Python and not a shell script: each step waits for a *condition* with a deadline (the server's
``/api/health``, the sandbox's control endpoint, the worker's registration in the API) instead of sleeping, the
same code starts the stack for the end-to-end tests (on free ports, in temp dirs), and stopping has one quirk
worth code: a ``prefect worker`` started in the background of a non-interactive shell inherits SIGINT as ignored
and then ignores its first SIGTERM (observed with Prefect 3.9.1; the worker's handler is
``setup_signal_handlers_worker``:
https://github.com/PrefectHQ/prefect/blob/main/src/prefect/utilities/processutils.py). Children are therefore
started with SIGINT reset to the default, in their own session, and stopped with SIGTERM, a second SIGTERM, then
SIGKILL.
"""

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployments.steps import PROJECT_ROOT
from flows.prefect_home import API_URL_FILE

POOL = "ask-batch-process"
WORKER_NAME = "ask-batch-local"
BIN = Path(sys.executable).parent


class StackError(RuntimeError):
    """A service did not start (the message names its log file)."""


RETRY_STATUSES = (429, 503)  # the Prefect server's "try again" (503: its SQLite database was busy)


def http_json(url: str, body: object | None = None, *, timeout: float = 5.0, attempts: int = 6) -> object:
    """GET (or POST ``body`` as JSON) and decode the JSON answer. Proxies are bypassed: all of this is local.

    429 and 503 are retried with backoff, as Prefect's own client does: a busy SQLite-backed server answers 503
    ("database is locked") when it wants the request sent again.
    """
    data = None if body is None else json.dumps(body).encode()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for attempt in range(attempts):
        request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with opener.open(request, timeout=timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            if exc.code not in RETRY_STATUSES or attempt == attempts - 1:
                raise
            time.sleep(min(0.5 * 2**attempt, 8.0))
    raise AssertionError("unreachable")


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.25,
               alive: Callable[[], bool] | None = None) -> None:
    """Poll ``check`` until it is true; raise ``StackError`` at the deadline or when ``alive()`` turns false."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError):
            if check():
                return
        if alive is not None and not alive():
            raise StackError(f"{what}: the process exited")
        if time.monotonic() > deadline:
            raise StackError(f"{what}: not ready after {timeout:.0f}s")
        time.sleep(interval)  # polling an external process's endpoint: there is nothing to wait on instead


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server could listen on ``host:port`` now: binds it with ``SO_REUSEADDR`` (as uvicorn does, so a
    connection of an earlier server still in TIME_WAIT does not count) and lets it go."""
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _reset_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        status = Path(f"/proc/{pid}/stat").read_text()
        return status.rsplit(")", 1)[1].split()[0] != "Z"
    return True


@dataclass
class Stack:
    """One local stack: where its state lives and where it listens.

    ``root`` is the clone whose flows run (and where ``prefect deploy`` runs); ``state`` holds PREFECT_HOME, pid
    files and logs; ``sandbox_dir`` is the sandbox's data dir (None: no sandbox, no wiring).
    """

    root: Path = PROJECT_ROOT
    state: Path = PROJECT_ROOT / ".prefect"
    port: int = 4200
    sandbox_dir: Path | None = PROJECT_ROOT / ".sandbox"
    pool: str = POOL
    worker_name: str = WORKER_NAME
    worker_query_seconds: int = 2
    extra_env: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ environment

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The environment of every Prefect process of this stack (server, CLI, worker, flow runs)."""
        env = {k: v for k, v in os.environ.items()
               if k.lower() not in ("http_proxy", "https_proxy", "all_proxy") and not k.startswith("PREFECT_")}
        env.update({
            "PREFECT_HOME": str(self.state),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_UI_URL": self.ui_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_CLI_PROMPT": "false",
            "PREFECT_WORKER_QUERY_SECONDS": str(self.worker_query_seconds),
            # Pods on the sandbox's virtual node run with the sandbox's PATH: this venv's python3 first.
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "NO_PROXY": "127.0.0.1,localhost",
        })
        env.update(self.extra_env)
        return env

    def pid_file(self, service: str) -> Path:
        return self.state / f"{service}.pid"

    def log_file(self, service: str) -> Path:
        return self.state / f"{service}.log"

    def pid_files(self, service: str) -> list[Path]:
        """Where the pid of ``service`` may be: ``<state>/<service>.pid``, and for the sandbox also the
        ``sandbox.pid`` that ``make run`` (the CLI) writes into the sandbox directory when it starts one."""
        files = [self.pid_file(service)]
        if service == "sandbox" and self.sandbox_dir is not None:
            files.append(self.sandbox_dir / "sandbox.pid")
        return files

    def running_pid(self, service: str) -> int | None:
        """The pid from the first pid file of ``service`` whose process still runs, else None."""
        for path in self.pid_files(service):
            with contextlib.suppress(OSError, ValueError):
                pid = int(path.read_text().split()[0])
                if pid_alive(pid):
                    return pid
        return None

    # ------------------------------------------------------------------ processes

    def _spawn(self, service: str, argv: list[str]) -> subprocess.Popen:
        self.state.mkdir(parents=True, exist_ok=True)
        log = self.log_file(service).open("ab")
        proc = subprocess.Popen(argv, cwd=self.root, env=self.env(), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_reset_sigint)
        log.close()
        self.pid_file(service).write_text(f"{proc.pid}\n")
        return proc

    def prefect(self, *args: str, timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess:
        """Run a ``prefect`` CLI command against this stack (in ``root``); raise StackError when it fails."""
        result = subprocess.run([str(BIN / "prefect"), *args], cwd=self.root, env=self.env(), text=True,
                                capture_output=True, timeout=timeout)
        if check and result.returncode != 0:
            raise StackError(f"prefect {' '.join(args)} failed ({result.returncode}):\n{result.stdout}"
                             f"{result.stderr}")
        return result

    def server_healthy(self) -> bool:
        try:
            return http_json(f"{self.api_url}/health", timeout=2) is True
        except (OSError, ValueError):
            return False

    def sandbox_healthy(self) -> bool:
        if self.sandbox_dir is None:
            return False
        try:
            base = json.loads((self.sandbox_dir / "endpoints.json").read_text())["control"]["endpoint"]
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(base + "/healthz",
                                                                                   timeout=2) as resp:
                return resp.status == 200
        except (OSError, ValueError, KeyError):
            return False

    def worker_online(self, since: float = 0.0) -> bool:
        """True when a worker named ``worker_name`` has a heartbeat in the pool (newer than ``since``, epoch s)."""
        from datetime import datetime

        workers: Any = http_json(f"{self.api_url}/work_pools/{self.pool}/workers/filter", {})
        for worker in workers or []:
            if worker["name"] == self.worker_name and worker.get("last_heartbeat_time"):
                beat = datetime.fromisoformat(worker["last_heartbeat_time"].replace("Z", "+00:00")).timestamp()
                if beat >= since:
                    return True
        return False

    # ------------------------------------------------------------------ steps of `up`

    def start_server(self, timeout: float = 300.0) -> str:
        """Start (or keep) the server; record its API URL in ``<state>/api_url`` for CLI runs
        (``flows.prefect_home``: a ``make run`` then reports to this server, so its runs show in this UI)."""
        self.state.mkdir(parents=True, exist_ok=True)
        if self.server_healthy():
            (self.state / API_URL_FILE).write_text(self.api_url + "\n")
            return f"Prefect server: already answering at {self.ui_url}"
        if not port_free(self.port):
            raise StackError(f"port {self.port} on 127.0.0.1 is in use by another program (not a Prefect server "
                             f"answering {self.api_url}/health): stop that program, or start on another port: "
                             f"{sys.executable} -m deployments.local up --port {self.port + 1}")
        proc = self._spawn("server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                                      "--port", str(self.port)])
        wait_until(self.server_healthy, timeout=timeout, alive=lambda: proc.poll() is None,
                   what=f"Prefect server (log {self.log_file('server')})")
        (self.state / API_URL_FILE).write_text(self.api_url + "\n")
        return f"Prefect server: started (pid {proc.pid}) at {self.ui_url}"

    def start_sandbox(self, timeout: float = 60.0) -> str:
        """Start (or keep) the sandbox with its one launcher, ``python -m sandbox serve --detach --wait-ready``
        (the same as ``make run``'s: pid and log in the sandbox directory, so ``stop``/``status`` find either)."""
        assert self.sandbox_dir is not None
        result = subprocess.run([sys.executable, "-m", "sandbox", "serve", "--dir", str(self.sandbox_dir),
                                 "--detach", "--wait-ready", str(timeout)], cwd=self.root, env=self.env(),
                                text=True, capture_output=True, timeout=timeout + 30)
        if result.returncode != 0:
            raise StackError(f"the sandbox did not start: {(result.stdout + result.stderr).strip()}")
        return "sandbox: " + result.stdout.strip().removeprefix("sandbox ")

    def wire(self) -> str:
        assert self.sandbox_dir is not None
        result = subprocess.run([sys.executable, "-m", "deployments.wire", "--sandbox", str(self.sandbox_dir)],
                                cwd=self.root, env=self.env(), text=True, capture_output=True, timeout=120)
        if result.returncode != 0:
            raise StackError(f"wiring failed:\n{result.stdout}{result.stderr}")
        return "wired the sandbox: " + "; ".join(result.stdout.strip().splitlines())

    def create_pool(self) -> str:
        """Create the process pool the worker serves and the Kubernetes pool of ``adhoc-k8s`` (both must exist
        before ``prefect deploy --all``); existing pools are kept."""
        from deployments.k8s_pool import BASE_JOB_TEMPLATE
        from deployments.k8s_pool import POOL as K8S_POOL

        said = []
        for pool, extra in ((self.pool, ["--type", "process"]),
                            (K8S_POOL, ["--type", "kubernetes", "--base-job-template", BASE_JOB_TEMPLATE])):
            if self.prefect("work-pool", "inspect", pool, check=False).returncode == 0:
                said.append(f"work pool {pool}: exists")
                continue
            self.prefect("work-pool", "create", pool, *extra)
            said.append(f"work pool {pool}: created ({extra[1]})")
        return "; ".join(said)

    def deploy(self) -> str:
        result = self.prefect("deploy", "--all", "--no-prompt", timeout=300)
        names = [line.split("'")[1] for line in result.stdout.splitlines() if "successfully created" in line]
        return "deployed: " + ", ".join(names)

    def start_worker(self, timeout: float = 60.0) -> str:
        pid = self.running_pid("worker")
        if pid is not None:
            return f"worker {self.worker_name}: already running (pid {pid})"
        started = time.time() - 1
        proc = self._spawn("worker", [str(BIN / "prefect"), "worker", "start", "--pool", self.pool, "--type",
                                      "process", "--name", self.worker_name])
        wait_until(lambda: self.worker_online(since=started), timeout=timeout, alive=lambda: proc.poll() is None,
                   what=f"worker (log {self.log_file('worker')})", interval=0.5)
        return f"worker {self.worker_name}: started (pid {proc.pid}) on pool {self.pool}"

    def up(self, say: Callable[[str], None] = print) -> None:
        """Start (or keep) every service, wire, create the pool, deploy; idempotent."""
        say(self.start_server())
        if self.sandbox_dir is not None:
            say(self.start_sandbox())
            say(self.wire())
        say(self.create_pool())
        say(self.deploy())
        say(self.start_worker())
        say(f"UI: {self.ui_url}   (`make run` and the CLI report here while it runs; their runs are kept in "
            f"{self.state} either way)")

    # ------------------------------------------------------------------ down

    def stop(self, service: str, *, grace: float = 15.0) -> str:
        """Stop the process group started for ``service`` (SIGTERM, SIGTERM, then SIGKILL)."""
        if service == "server":
            (self.state / API_URL_FILE).unlink(missing_ok=True)
        pid = self.running_pid(service)
        if pid is None:
            for path in self.pid_files(service):
                path.unlink(missing_ok=True)
            return f"{service}: not running"
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)  # the group is the session `_spawn` created for this service alone
            with contextlib.suppress(StackError):
                wait_until(lambda: not pid_alive(pid), timeout=wait, what=service, interval=0.1)
                break
        for path in self.pid_files(service):
            path.unlink(missing_ok=True)
        return f"{service}: stopped (pid {pid})"

    def down(self, say: Callable[[str], None] = print) -> None:
        """Stop what ``up`` started, worker first (it stops the flow runs it spawned), server last."""
        for service in ("worker", "sandbox", "server"):
            say(self.stop(service))

    def status(self) -> Mapping[str, str]:
        out = {}
        for service in ("server", "sandbox", "worker"):
            pid = self.running_pid(service)
            out[service] = f"running (pid {pid})" if pid else "not running"
        out["api"] = f"{self.api_url} {'healthy' if self.server_healthy() else 'not answering'}"
        return out


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m deployments.local", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--port", type=int, default=4200)
    parser.add_argument("--sandbox", default=str(PROJECT_ROOT / ".sandbox"), metavar="DIR")
    parser.add_argument("--no-sandbox", action="store_true", help="no sandbox and no wiring (wire a real target)")
    parser.add_argument("--database-url", metavar="URL",
                        help="the server's database, e.g. postgresql+asyncpg://USER:PASSWORD@HOST:5432/prefect "
                             "(PREFECT_API_DATABASE_CONNECTION_URL; default: SQLite in .prefect/)")
    args = parser.parse_args(argv)
    extra_env = {"PREFECT_API_DATABASE_CONNECTION_URL": args.database_url} if args.database_url else {}
    stack = Stack(port=args.port, sandbox_dir=None if args.no_sandbox else Path(args.sandbox).resolve(),
                  extra_env=extra_env)
    try:
        if args.command == "up":
            stack.up()
        elif args.command == "down":
            stack.down()
        else:
            for service, line in stack.status().items():
                print(f"{service:8} {line}")
    except StackError as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
