"""Runs a person can live with: ``make run`` and the CLI as real processes — Ctrl-C, kill -9, two Prefect homes,
one history — against the session's sandbox.

Each test starts the CLI the way a user does (``make run`` in its own process group, or ``python -m
flows.ask_batch``) with its own Prefect home and no ``PREFECT_API_URL``, so the CLI chooses its server itself.
Exit times are asserted loosely (it exits at all within a generous bound), the state afterwards exactly.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.cli import build_spec
from tasks.cloud.run_lock import LEASE_SECONDS
from tests.e2e.conftest import EXAMPLE, REPO, example_sets, left_in_cluster, processes, wait_lock_free

# Several CLI processes per test, each with its own Prefect server: minutes on a loaded machine.
pytestmark = pytest.mark.timeout(1500)

RUN_URL = re.compile(r"/runs/flow-run/([0-9a-f-]{36})")


@pytest.fixture(scope="session", autouse=True)
def prefect_server() -> None:
    """No in-process test server here: every run in this module is a CLI process that chooses its own."""


@pytest.fixture(scope="module")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Prefect database with every migration applied, copied into each test's homes: a first start migrates,
    which takes minutes on a loaded machine, and is not what these tests are about."""
    from flows.prefect_home import TemporaryServer

    home = tmp_path_factory.mktemp("migrated-home")
    server = TemporaryServer(home)
    server.start()
    server.stop()
    return home / "prefect.db"


@pytest.fixture
def homes(workdir: Path, migrated_db: Path) -> list[Path]:
    """Two Prefect homes for this test, each with the migrated database."""
    import shutil

    out = []
    for name in ("home-a", "home-b"):
        (workdir / name).mkdir()
        shutil.copyfile(migrated_db, workdir / name / "prefect.db")
        out.append(workdir / name)
    return out


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any PREFECT_* setting (the CLI picks home and server itself)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PYTHONPATH": str(REPO), "NO_PROXY": "127.0.0.1,localhost", **extra})
    return env


def home_env(home: Path) -> dict[str, str]:
    return clean_env(PREFECT_HOME=str(home))


def make_run(sandbox_dir: Path, home: Path, sets: list[str]) -> subprocess.Popen:
    """``make run`` in its own process group (as a terminal runs it), on this sandbox and Prefect home."""
    run_args = " ".join(f"--set {shlex.quote(item)}" for item in sets)
    argv = ["make", "-s", "-C", str(REPO), "-o", ".venv/.installed", "run", f"SANDBOX={sandbox_dir}",
            f"PARAMS={EXAMPLE}", f"PREFECT_DIR={home}", f"RUN_ARGS={run_args}"]
    return subprocess.Popen(argv, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def cli(sandbox_dir: Path, home: Path, sets: list[str]) -> list[str]:
    """The CLI's argv (its Prefect home is set by ``clean_env(PREFECT_HOME=...)`` at the call)."""
    argv = [sys.executable, "-m", "flows.ask_batch", "--params", str(EXAMPLE), "--sandbox", str(sandbox_dir)]
    for item in sets:
        argv += ["--set", item]
    return argv


def wait_pods(sandbox_dir: Path, run_key: str, count: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while len(pods_of(sandbox_dir, run_key)) < count:
        assert proc.poll() is None, f"the run ended before its pods ran:\n{proc.stdout.read() if proc.stdout else ''}"
        assert time.monotonic() < deadline, "the Job's pods did not start"
        time.sleep(0.2)


def servers_of(home: Path) -> list[int]:
    """Pids of Prefect API servers whose PREFECT_HOME is ``home``."""
    pids = []
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            cmdline = (proc_dir / "cmdline").read_bytes()
            environ = (proc_dir / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"prefect.server.api.server:create_app" in cmdline and f"PREFECT_HOME={home}".encode() in environ:
            pids.append(int(proc_dir.name))
    return pids


def wait_no_server(home: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while servers_of(home):
        assert time.monotonic() < deadline, f"a Prefect server of {home} outlived the CLI: {servers_of(home)}"
        time.sleep(0.2)


def pods_of(sandbox_dir: Path, run_key: str) -> dict[str, int]:
    """Pod uid -> index of every pod of the run that started a process (init containers share their pod's uid)."""
    return {p["uid"]: int(p["index"]) for p in processes(sandbox_dir) if p["pod"].startswith(f"askb-{run_key}-")}


def ran_once(sandbox_dir: Path, run_key: str, completions: int = 10) -> None:
    """Exactly one pod per index ran: the work was not started twice."""
    indexes = sorted(pods_of(sandbox_dir, run_key).values())
    assert indexes == list(range(completions)), indexes


def test_ctrl_c_of_make_run_tears_down_exits_and_the_next_run_starts_at_once(
        sandbox_dir: Path, workdir: Path, homes: list[Path]) -> None:
    home, key = homes[0], "cli-sigint"
    sets = example_sets(workdir, key, sleep_seconds=60)
    proc = make_run(sandbox_dir, home, sets)
    try:
        wait_pods(sandbox_dir, key, 10, proc)
        assert servers_of(home), "the run should report to a temporary server of its home"
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal: the whole process group
        out, _ = proc.communicate(timeout=60)  # the promise is 10 s; 60 only bounds a hang
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0, out
    assert "SIGINT: stopping the run and tearing it down" in out, out
    spec = build_spec(EXAMPLE, sets, sandbox_dir)
    assert left_in_cluster(spec, key) == []  # Job, ConfigMap, Secret, PVC, PV and the run's Lease are gone
    wait_no_server(home)
    # The next run of the same spec is not locked out: it starts at once and completes.
    again = subprocess.run(cli(sandbox_dir, home, example_sets(workdir, key, sleep_seconds=0)), cwd=workdir,
                           env=home_env(home), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    wait_no_server(home)


def test_sigterm_of_the_cli_tears_down_and_leaves_no_server(sandbox_dir: Path, workdir: Path,
                                                            homes: list[Path]) -> None:
    home, key = homes[0], "cli-sigterm"
    sets = example_sets(workdir, key, sleep_seconds=60)
    proc = subprocess.Popen(cli(sandbox_dir, home, sets), cwd=workdir, env=home_env(home), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_pods(sandbox_dir, key, 10, proc)
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert left_in_cluster(build_spec(EXAMPLE, sets, sandbox_dir), key) == []
    wait_no_server(home)


def test_kill_9_then_the_same_run_key_from_another_home_reattaches_after_the_lease(
        sandbox_dir: Path, workdir: Path, homes: list[Path]) -> None:
    """kill -9 of a CLI run mid-wait: its temporary server dies with it; the same run key from another Prefect
    home is refused while the dead run's Lease is live, then re-attaches: every index ran once, nothing is left."""
    (home_a, home_b), key = homes, "cli-kill"
    sets = example_sets(workdir, key, sleep_seconds=5)
    proc = subprocess.Popen(cli(sandbox_dir, home_a, sets), cwd=workdir, env=home_env(home_a),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_pods(sandbox_dir, key, 10, proc)
        os.kill(proc.pid, signal.SIGKILL)  # while it waits: the pods sleep 5 s
    finally:
        proc.wait(30)
    wait_no_server(home_a)  # the parent-death signal took the temporary server down with the CLI
    early = subprocess.run(cli(sandbox_dir, home_b, sets), cwd=workdir, env=home_env(home_b), capture_output=True,
                           text=True, timeout=180)
    assert early.returncode == 1 and "RunLocked" in early.stdout + early.stderr, early.stderr[-3000:]
    spec = build_spec(EXAMPLE, sets, sandbox_dir)
    wait_lock_free(spec, key, timeout=LEASE_SECONDS + 60)
    rerun = subprocess.run(cli(sandbox_dir, home_b, sets), cwd=workdir, env=home_env(home_b), capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert "re-attached" in rerun.stdout + rerun.stderr
    ran_once(sandbox_dir, key)
    assert len(list((workdir / "outputs" / f"ask-batch-{key}").glob("index-*/result.json"))) == 10
    assert left_in_cluster(spec, key) == []
    wait_no_server(home_b)


def test_one_spec_started_twice_from_two_homes_runs_once(sandbox_dir: Path, workdir: Path,
                                                         homes: list[Path]) -> None:
    key = "cli-twice"
    sets = example_sets(workdir, key, sleep_seconds=8)
    procs = [subprocess.Popen(cli(sandbox_dir, home, sets), cwd=workdir, env=home_env(home), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for home in homes]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], outs
    refused = outs[[p.returncode for p in procs].index(1)]
    assert "RunLocked" in refused, refused
    ran_once(sandbox_dir, key)


def test_a_make_run_shows_in_the_ui_of_a_later_make_up(sandbox_dir: Path, workdir: Path,
                                                       homes: list[Path]) -> None:
    from deployments.local import Stack, http_json
    from tests.ports import free_port

    home, key = homes[0], "cli-history"
    done = subprocess.run(cli(sandbox_dir, home, example_sets(workdir, key, sleep_seconds=0)), cwd=workdir,
                          env=home_env(home), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "make up" in done.stdout and "prefect server start" not in done.stdout + done.stderr
    assert "telemetry" not in (done.stdout + done.stderr).lower()
    role = [line for line in (done.stdout + done.stderr).splitlines() if "assumes RAM role" in line]
    assert role and "RAM role acs:ram::" in role[0], role  # as logged: Rich made ":ram:" a ram emoji
    first_id = RUN_URL.search(done.stdout).group(1)  # type: ignore[union-attr]
    wait_no_server(home)
    # `make up` on the same home (server only: the part that serves the UI and the API)
    stack = Stack(state=home, port=free_port(), sandbox_dir=None)
    stack.start_server()
    try:
        assert http_json(f"{stack.api_url}/flow_runs/{first_id}")["name"] == f"ask-batch-{key}"  # type: ignore[index]
        # While it runs, a CLI run reports to it and its end line links to the run in that UI.
        second = subprocess.run(cli(sandbox_dir, home, example_sets(workdir, key + "-2", sleep_seconds=0)),
                                cwd=workdir, env=home_env(home), capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
        assert f"{stack.ui_url}/runs/flow-run/" in second.stdout, second.stdout
        second_id = RUN_URL.search(second.stdout).group(1)  # type: ignore[union-attr]
        assert http_json(f"{stack.api_url}/flow_runs/{second_id}")["state_type"] == "COMPLETED"  # type: ignore[index]
    finally:
        stack.stop("server")


def test_the_temporary_server_keeps_its_port_from_the_moment_it_is_chosen(homes: list[Path]) -> None:
    """A CLI run's temporary server holds its port from the moment it is chosen: another program that starts
    listening meanwhile (here, on the very port) cannot take it. It could: the port was found by binding port 0 and
    closing it, and the server bound it again later; under parallel tests another server took it and the run
    failed with "address already in use"."""
    import socket

    from deployments.local import http_json
    from flows.prefect_home import TemporaryServer

    server = TemporaryServer(homes[0])
    squatter = socket.socket()
    try:
        with pytest.raises(OSError):
            squatter.bind(("127.0.0.1", server.port))
            squatter.listen()
        url = server.start()
        assert http_json(f"{url}/health") is True
    finally:
        squatter.close()
        server.stop()
