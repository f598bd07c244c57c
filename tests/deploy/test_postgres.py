"""The Prefect server on PostgreSQL runs the same end-to-end ad-hoc test as the SQLite one.

The test starts its own PostgreSQL (Debian's ``postgresql`` package, ``/usr/lib/postgresql/<v>/bin``): a fresh
cluster in a temp dir, listening on 127.0.0.1 and a free port only, trust auth for the superuser ``prefect``, run as
the ``postgres`` user when the test runs as root (PostgreSQL refuses root). The stack's Prefect processes get
``PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://prefect@127.0.0.1:<port>/prefect`` (``asyncpg`` comes
with prefect); the server migrates that database, and the run is then read back through the API *and* straight
from PostgreSQL. Without the package the module is skipped, naming it (``make test`` installs it as root).
"""

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deployments.local import Stack
from tests.deploy.conftest import running_stack
from tests.deploy.helpers import adhoc_run_end_to_end, api
from tests.ports import free_port


def _pg_bin() -> Path | None:
    """The newest installed PostgreSQL's bin dir (Debian layout), or None."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")
             if (Path(p).parent / "pg_ctl").exists()]
    return max(found, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0) if found else None


def _run_as() -> str | None:
    """The user to run the cluster as: ourselves, or ``postgres`` when we are root (None: root and no such user)."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name
    with contextlib.suppress(KeyError):
        return pwd.getpwnam("postgres").pw_name
    return None


PG_BIN = _pg_bin()
RUN_AS = _run_as()

pytestmark = [
    pytest.mark.deploy,
    pytest.mark.timeout(300),
    pytest.mark.skipif(PG_BIN is None, reason="the PostgreSQL test needs Debian's package postgresql "
                                              "(apt-get install postgresql; `make test` does it as root)"),
    pytest.mark.skipif(RUN_AS is None, reason="running as root and there is no 'postgres' user to run PostgreSQL "
                                              "as (it comes with the postgresql package)"),
]


@dataclass
class Postgres:
    bin: Path
    port: int
    user: str = "prefect"
    database: str = "prefect"

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def psql(self, sql: str) -> str:
        """Run one statement through ``psql`` (TCP, trust auth); return its unaligned output."""
        result = subprocess.run([str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                                 "-d", self.database, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
                                text=True, capture_output=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()


def _as_cluster_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", RUN_AS, "--", *argv] if os.geteuid() == 0 else argv


def _check(argv: list[str], what: str, log: Path | None = None, timeout: float = 120) -> None:
    result = subprocess.run(argv, text=True, capture_output=True, timeout=timeout)
    if result.returncode != 0:
        tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
        pytest.fail(f"{what} failed ({result.returncode}):\n{result.stdout}{result.stderr}{tail}")


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL cluster on 127.0.0.1:<free port> with an empty database ``prefect``."""
    assert PG_BIN is not None and RUN_AS is not None
    # Under /tmp rather than pytest's tmp dir: that one is private to root, and the cluster may run as postgres.
    base = Path(tempfile.mkdtemp(prefix="ask-batch-pg-"))
    data, log = base / "data", base / "postgres.log"
    if os.geteuid() == 0:
        shutil.chown(base, user=RUN_AS)
    pg = Postgres(bin=PG_BIN, port=free_port())
    try:
        _check(_as_cluster_user([str(PG_BIN / "initdb"), "-D", str(data), "-U", pg.user, "--auth=trust",
                                 "-E", "UTF8", "--no-locale", "--no-sync"]), "initdb")
        settings = {"listen_addresses": "'127.0.0.1'", "port": str(pg.port),
                    "unix_socket_directories": f"'{base}'",  # not /var/run/postgresql: this cluster is private
                    "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}  # a test: speed first
        conf = "".join(f"{key} = {value}\n" for key, value in settings.items())
        with (data / "postgresql.conf").open("a") as fh:
            fh.write(conf)
        # pg_ctl -w waits until the server accepts connections (or fails at -t seconds): no sleep here.
        _check(_as_cluster_user([str(PG_BIN / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(data), "-l", str(log)]),
               "pg_ctl start", log)
        _check([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", pg.user, pg.database],
               "createdb", log)
        yield pg
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(_as_cluster_user([str(PG_BIN / "pg_ctl"), "stop", "-w", "-t", "60", "-m", "fast", "-D",
                                             str(data)]), capture_output=True, timeout=90)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_stack(tmp_path_factory: pytest.TempPathFactory, postgres: Postgres) -> Iterator[Stack]:
    """The same stack as the SQLite tests', its server on the PostgreSQL database."""
    with running_stack(tmp_path_factory, "deploy-pg",
                       extra_env={"PREFECT_API_DATABASE_CONNECTION_URL": postgres.url}) as st:
        yield st


def test_adhoc_run_end_to_end_on_a_postgresql_backed_server(pg_stack: Stack, postgres: Postgres) -> None:
    run = adhoc_run_end_to_end(pg_stack)

    # The server really is on PostgreSQL: the run, its task runs and artifacts are rows there, and no SQLite file.
    assert postgres.psql(f"select state_type from flow_run where id = '{run['id']}'") == "COMPLETED"
    assert int(postgres.psql(f"select count(*) from task_run where flow_run_id = '{run['id']}'")) >= 6
    keys = postgres.psql(f"select key from artifact where flow_run_id = '{run['id']}' order by key").split()
    assert any(k.startswith("summary-") for k in keys) and any(k.startswith("progress-") for k in keys), keys
    assert not list(pg_stack.state.glob("*.db")), list(pg_stack.state.iterdir())
    # ... and the API answers from it: the deployments `prefect deploy` created are rows too.
    names = set(postgres.psql("select name from deployment").split())
    assert names == {d["name"] for d in api(pg_stack, "/deployments/filter", {})} == {"nightly", "adhoc",
                                                                                      "adhoc-k8s", "sweep-k8s"}
