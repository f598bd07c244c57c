"""Which Prefect server a CLI run reports to, so every run lands in the one history ``make up`` shows.

One Prefect home for ``make run``, the CLI and ``make up``: the project's ``.prefect/`` (``PREFECT_HOME``; its
SQLite database ``.prefect/prefect.db`` holds every run). A CLI run reports to, in this order:

1. ``PREFECT_API_URL`` when the environment sets it (a server the user chose);
2. the server ``make up`` runs on this home, when it answers (``make up`` writes its API URL to
   ``<home>/api_url``);
3. otherwise a temporary server on the same home's database, started here and stopped with the CLI. Its runs are
   in the database, so a later ``make up`` shows them.

The temporary server is this process's child, in its own session (a Ctrl-C to the terminal's process group must
not stop it before the run's teardown has reported through it), and it is tied to this process with Linux's
parent-death signal (``PR_SET_PDEATHSIG``, https://man7.org/linux/man-pages/man2/prctl.2.html), set before it
execs, so it dies with the CLI even when the CLI is killed with SIGKILL. Telemetry is off for local runs
(``PREFECT_SERVER_ANALYTICS_ENABLED=false`` for the server, ``DO_NOT_TRACK=1`` for the client:
https://docs.prefect.io/v3/manage/telemetry): it only ever failed against a busy SQLite database.

Call ``use_project_home()`` before Prefect reads its settings, then ``prefect_api()`` around the run.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROJECT_HOME = REPO / ".prefect"
#: ``make up`` writes its server's API URL here (``<home>/api_url``) and removes it on ``make down``.
API_URL_FILE = "api_url"
UP_UI_URL = "http://127.0.0.1:4200"  # where ``make up`` serves the UI by default

# Run in the server's child process before it execs uvicorn: die with the parent (SIGTERM), even after SIGKILL
# of the parent; and exit at once when the parent is already gone (the race prctl leaves open).
_DEATHSIG = (
    "import ctypes, os, signal, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "if libc.prctl(1, signal.SIGTERM, 0, 0, 0) != 0:\n"  # 1 = PR_SET_PDEATHSIG
    "    sys.exit('prctl(PR_SET_PDEATHSIG) failed: errno %d' % ctypes.get_errno())\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(0)\n"
    "os.execv(sys.executable, [sys.executable] + sys.argv[2:])\n"
)


def use_project_home(environ: dict[str, str] | None = None) -> Path:
    """Point Prefect at the project's home (unless ``PREFECT_HOME`` is set) with telemetry off; returns the home.

    Sets the variables in ``environ`` (default ``os.environ``) and makes an already imported Prefect read them.
    """
    env = os.environ if environ is None else environ
    home = Path(env.get("PREFECT_HOME") or PROJECT_HOME).resolve()
    env["PREFECT_HOME"] = str(home)
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("DO_NOT_TRACK", "1")
    if environ is None and "prefect.context" in sys.modules:
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()
    return home


def healthy(api_url: str, *, timeout: float = 2.0) -> bool:
    """True when the Prefect API at ``api_url`` answers its health check."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{api_url.rstrip('/')}/health", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def up_server(home: Path) -> str | None:
    """The API URL of the ``make up`` server of ``home`` if it answers, else None."""
    with contextlib.suppress(OSError):
        url = (home / API_URL_FILE).read_text().strip()
        if url and healthy(url):
            return url
    return None


class TemporaryServer:
    """A Prefect API server (no UI) on ``home``'s database, for one CLI run; dies with this process.

    Its listening socket is made here, on a port the kernel chooses, and handed to the server (uvicorn's ``--fd``,
    https://www.uvicorn.org/settings/#socket-binding): the port is held from the moment it is chosen, so no other
    program can take it before the server serves it (closing a probe socket and letting the server bind the same
    port later could lose it: "address already in use").
    """

    def __init__(self, home: Path) -> None:
        self.home = home
        self._socket: socket.socket | None = socket.socket()
        self._socket.bind(("127.0.0.1", 0))  # bound, not listening: health checks are refused until it serves
        self.port = int(self._socket.getsockname()[1])
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_file = home / "temporary-server.log"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self, timeout: float = 300.0) -> str:
        """Start it and wait for its health check; returns its API URL. Raises RuntimeError naming its log."""
        import prefect

        fresh = not (self.home / "prefect.db").exists()
        print(f"starting a temporary Prefect server on {self.home} for this run"
              f"{' (a new database: its first start takes a while)' if fresh else ''} ...", file=sys.stderr,
              flush=True)

        self.home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        env.update({"PREFECT_HOME": str(self.home), "PREFECT_UI_ENABLED": "false",
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"})
        fd = self._held().fileno()
        argv = [sys.executable, "-c", _DEATHSIG, str(os.getpid()), "-m", "uvicorn", "--app-dir",
                str(Path(prefect.__file__).parent.parent), "--factory", "prefect.server.api.server:create_app",
                "--fd", str(fd), "--log-level", "error", "--lifespan", "on"]
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True, pass_fds=[fd])
        self._release()  # the server holds it now
        deadline = time.monotonic() + timeout
        while not healthy(self.api_url, timeout=1.0):
            if self.proc.poll() is not None:
                raise RuntimeError(f"the temporary Prefect server exited with code {self.proc.returncode}; "
                                   f"see {self.log_file}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the temporary Prefect server did not answer in {timeout:.0f} s; "
                                   f"see {self.log_file}")
            time.sleep(0.2)  # polling the health check of a child we just started
        return self.api_url

    def _held(self) -> socket.socket:
        if self._socket is None:
            raise RuntimeError("this temporary server was started once already; make a new one")
        return self._socket

    def _release(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s; safe to call twice."""
        self._release()
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@dataclass
class Api:
    """Where this run reports: the API URL, and the UI URL when a UI serves that history right now."""

    api_url: str
    ui_url: str | None
    server: TemporaryServer | None = None

    def stop(self) -> None:
        """Stop the temporary server, if this run started one."""
        if self.server is not None:
            self.server.stop()


@contextlib.contextmanager
def prefect_api(home: Path) -> Iterator[Api]:
    """Set ``PREFECT_API_URL`` for the ``with`` block to the server chosen as the module docstring says."""
    from prefect.context import refresh_global_settings_context

    chosen = os.environ.get("PREFECT_API_URL")
    if chosen:
        ui = os.environ.get("PREFECT_UI_URL") or chosen.rstrip("/").removesuffix("/api")
        yield Api(chosen, ui)
        return
    up = up_server(home)
    server = None if up else TemporaryServer(home)
    url = up or server.start()  # type: ignore[union-attr]
    os.environ["PREFECT_API_URL"] = url
    refresh_global_settings_context()
    try:
        yield Api(url, url.removesuffix("/api") if up else None, server)
    finally:
        if server is not None:
            drain_to_server()
        os.environ.pop("PREFECT_API_URL", None)
        refresh_global_settings_context()
        if server is not None:
            server.stop()


def drain_to_server(timeout: float = 2.0) -> None:
    """Send the run's queued logs and events to the server now, while it still runs (at most ``timeout`` s each).

    Prefect ships them from background workers that otherwise drain at interpreter exit: after the temporary
    server has stopped, that drain retries a closed port for over a minute before the process can exit.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            worker.drain_all(timeout=timeout, at_exit=False)


def run_url_hint(api: Api, flow_run_id: object, home: Path) -> str:
    """The end-of-run line: where to see this run in the UI."""
    if api.ui_url:
        return f"see the run in the Prefect UI: {api.ui_url}/runs/flow-run/{flow_run_id}"
    return (f"the run is recorded in {home}; to see it: `make up`, then open "
            f"{UP_UI_URL}/runs/flow-run/{flow_run_id}")
