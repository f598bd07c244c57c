"""Many runs at once: N ask-batch runs of different specs on one Prefect server, beside one run alone.

    .venv/bin/python bench/bench_concurrency.py [--runs 20 [40 ...]] [--alone 1] [--databases sqlite postgresql]
                                                [--timeout 600] [--keep DIR] [--no-write]

What runs, per database (SQLite, then PostgreSQL when its binaries are installed: scripts/install-test-deps.sh):

- the stack of ``make up`` (``deployments.local.Stack``: server, sandbox wired, both pools, ``prefect deploy
  --all`` from a copy of the repository, one process worker) plus one Kubernetes worker
  (``deployments.k8s_pool.start_worker``) on the sandbox's default cluster; on PostgreSQL, a throwaway cluster
  on 127.0.0.1 (``initdb``/``pg_ctl``, as in tests/deploy/test_postgres.py);
- **alone** (the baseline, same invocation, same stack): ``--alone`` runs of ``ask-batch/adhoc`` (process
  worker) and as many of ``ask-batch/adhoc-k8s`` (the flow as a pod), one after the other, nothing else running;
- **at once**: N runs created together (concurrently, through Prefect's own client and its retries, as
  ``prefect deployment run`` does), alternately on the two deployments, each with its own spec (its run key,
  2 or 3 indexes, parallelism = indexes); every flow launches its own batch Job on the same cluster. With
  several ``--runs`` values the phases follow each other, and the first one where a run does not complete ends
  the measurement (that is where it breaks).

The runs are kept small so that the measurement is about orchestration: storage ``none``, each index runs
``sh -c 'echo ...'``, ``outputs.completeness: none`` (nothing to collect), the ASK cluster found by name (the
sandbox's default cluster, where the flow pods run too). The flow still runs every stage: cluster, config
(ConfigMap + Secret), the run's Lease, the Job, the wait with a live log stream per pod, the pod logs saved to
OSS, teardown, the summary artifact.

Measured from the API: per run, the latency from creation to its end (``end_time - created``) and the part of
it spent before the flow started (``start_time - created``: worker polling, process or pod start, pull step):
median, p95 and max. The server's CPU seconds (utime + stime of its process tree, from /proc, over the phase;
on PostgreSQL the database's processes are counted apart) and its peak RSS (the tree's RSS sampled every
0.5 s). Every answer 503 the server gave: the server runs with ``PREFECT_SERVER_LOG_RETRYABLE_ERRORS=true``, so
each is logged with its traceback; they are counted per phase, with the API route and the database error. The
creations' client-side retries are counted from Prefect's client logger. The logs of the server, the workers
and every pod are copied to ``--keep`` (default ``/tmp/bench-concurrency-<time>``) for the evidence.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    REPO,
    Series,
    base_parser,
    command_line,
    load_average,
    provenance,
    table,
    write_section,
)
from deployments.k8s_pool import IMAGE_DIRECTORY_ENV, start_worker  # noqa: E402
from deployments.local import Stack, http_json  # noqa: E402
from deployments.params import run_parameters  # noqa: E402

HEADINGS = {"sqlite": "## Many runs at once: SQLite", "postgresql": "## Many runs at once: PostgreSQL"}
K8S_WORKER = "k8s-worker"
IN_CLUSTER = ["cluster.ask.name=sandbox", "cluster.ask.create_if_missing=false",
              "cluster.ask.private_kubeconfig=true", "storage.mode=none"]
TINY = ["job.command=[sh, -c]", 'job.args=["echo index $ASK_BATCH_INDEX of $JOB_COMPLETION_INDEX"]',
        "outputs.completeness=none", "outputs.download=false"]
NOT_COPIED = (".venv", ".git", ".sandbox", ".prefect", "outputs", "__pycache__", ".pytest_cache", ".ruff_cache",
              "out", "*.pyc")
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
PAGE = 4096
# The server's log line for each 503 (prefect.server.api.server.custom_internal_exception_handler).
RETRYABLE = "Encountered retryable exception in request"


# --------------------------------------------------------------------------------------------- process usage


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc/<pid>/task/*/children)."""
    out = [pid]
    with suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                for child in fh.read().split():
                    out += tree(int(child))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            # utime, stime, and cutime, cstime: the children it reaped (a PostgreSQL backend whose connection
            # closed, a process ended), whose time no longer shows in the tree (proc(5), /proc/pid/stat)
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / os.sysconf("SC_CLK_TCK")


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    return total / 2**20


class Usage:
    """CPU seconds and peak RSS of a process tree (``pid``; None: nothing) while the ``with`` block runs."""

    def __init__(self, pid: int | None) -> None:
        self.pid, self.peak, self.cpu = pid, 0.0, 0.0
        self._stop = threading.Event()

    def _pids(self) -> list[int]:
        return tree(self.pid) if self.pid else []

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, rss_mib(self._pids()))

    def __enter__(self) -> Usage:
        self._cpu0 = cpu_seconds(self._pids())
        self.peak = rss_mib(self._pids())
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.cpu = cpu_seconds(self._pids()) - self._cpu0


# --------------------------------------------------------------------------------------------- PostgreSQL


def pg_bin() -> Path | None:
    import glob

    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")
             if (Path(p).parent / "pg_ctl").exists()]
    return max(found, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0) if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Database:
    """Where the server's database is: its URL for ``PREFECT_API_DATABASE_CONNECTION_URL`` (None: SQLite in
    PREFECT_HOME) and the pid of a separate database server (the PostgreSQL postmaster), for its usage."""

    name: str
    url: str | None = None
    pid: int | None = None


@contextmanager
def postgres() -> Iterator[Database]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 and a free port (as ``postgres`` when root)."""
    import pwd

    binary = pg_bin()
    assert binary is not None
    port = free_port()
    base = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    data, log = base / "data", base / "postgres.log"
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, user=pwd.getpwnam("postgres").pw_name)
        as_user = ["runuser", "-u", "postgres", "--"]
    try:
        subprocess.run([*as_user, str(binary / "initdb"), "-D", str(data), "-U", "prefect", "--auth=trust", "-E",
                        "UTF8", "--no-locale", "--no-sync"], check=True, capture_output=True, timeout=120)
        with (data / "postgresql.conf").open("a") as fh:
            fh.write(f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{base}'\n"
                     "max_connections = 200\n")
        subprocess.run([*as_user, str(binary / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(data), "-l",
                        str(log)], check=True, capture_output=True, timeout=90)
        subprocess.run([str(binary / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "prefect", "prefect"],
                       check=True, capture_output=True, timeout=60)
        postmaster = int((data / "postmaster.pid").read_text().split()[0])
        yield Database("postgresql", f"postgresql+asyncpg://prefect@127.0.0.1:{port}/prefect", postmaster)
    finally:
        subprocess.run([*as_user, str(binary / "pg_ctl"), "stop", "-w", "-t", "60", "-m", "fast", "-D", str(data)],
                       capture_output=True, timeout=90)
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------------------------- the server's 503s


def retryable_errors(log_text: str) -> list[tuple[str, str]]:
    """Every 503 the server logged (``PREFECT_SERVER_LOG_RETRYABLE_ERRORS``): (API route, error).

    The route is the deepest frame under ``prefect/server/api/`` (module.function); the error is the traceback's
    last exception line and the statement it ran, e.g. ``sqlalchemy.exc.OperationalError: (sqlite3.OperationalError)
    database is locked [INSERT INTO flow_run]``.
    """
    out = []
    for block in log_text.split(RETRYABLE)[1:]:
        body = re.split(r"\n\d\d:\d\d:\d\d\.\d+ \| ", block, maxsplit=1)[0]  # up to the next log record
        routes = [f"{module}.{function}" for module, function
                  in re.findall(r'prefect/server/api/(\w+)\.py", line \d+, in (\w+)', body) if module != "server"]
        errors = [line.strip() for line in body.splitlines() if re.match(r"^[\w.]+(Error|Exception): ", line)]
        statement = re.findall(r"\[SQL: (\w+(?: \w+){0,2})", body)
        error = errors[-1].split(" [SQL:")[0][:120] if errors else "?"
        out.append((routes[-1] if routes else "?", error + (f" [{statement[-1]}]" if statement else "")))
    return out


# --------------------------------------------------------------------------------------------- runs


@dataclass
class Phase:
    name: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    cpu: float = 0.0
    db_cpu: float = 0.0
    peak_rss: float = 0.0
    wall: float = 0.0
    create_retries: int = 0
    create_again: int = 0
    answered_503: list[tuple[str, str]] = field(default_factory=list)
    server_errors: Counter[str] = field(default_factory=Counter)
    api_errors: list[str] = field(default_factory=list)

    @property
    def completed(self) -> int:
        return sum(1 for r in self.runs if r["state"] == "COMPLETED")


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


class _RetryCount(logging.Handler):
    """Counts the Prefect client's "retryable status code" records (it logs each retry at DEBUG)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "retryable" in record.getMessage():
            self.count += 1


async def _create(api_url: str, requests: list[tuple[str, dict[str, Any]]],
                  deadline: float) -> tuple[list[str | None], int]:
    """Create the runs concurrently; a creation still refused with 503 after the client's own retries is sent
    again, until ``deadline`` (monotonic). Returns the ids (None: not created) and how many times that happened."""
    from prefect.client.orchestration import PrefectClient
    from prefect.exceptions import PrefectHTTPStatusError

    again = 0

    async with PrefectClient(api_url) as client:
        async def one(deployment_id: str, params: dict[str, Any]) -> str | None:
            nonlocal again
            while True:
                try:
                    return str((await client.create_flow_run_from_deployment(deployment_id, parameters=params)).id)
                except PrefectHTTPStatusError as exc:
                    if exc.response.status_code != 503 or time.monotonic() > deadline:
                        print(f"  creating a run failed: {exc}", flush=True)
                        return None
                    again += 1
                except Exception as exc:  # noqa: BLE001 - a refused creation is a result, reported
                    print(f"  creating a run failed: {type(exc).__name__}: {exc}", flush=True)
                    return None

        ids = list(await asyncio.gather(*(one(d, p) for d, p in requests)))
    return ids, again


def create_runs(st: Stack, specs: list[tuple[str, list[str]]],
                deadline: float) -> tuple[list[str | None], int, int]:
    """Create one run per spec, all at once, through Prefect's client: each 503 is retried by the client
    (``PREFECT_CLIENT_MAX_RETRIES``, 5, backoff 2, 4, 8, 16, 32 s with jitter) and, when still refused, sent
    again until ``deadline``. Returns the run ids (None: not created, a run that did not complete), the client's
    retries and the creations sent again."""
    deployments: Any = http_json(f"{st.api_url}/deployments/filter", {}, timeout=60)
    ids = {d["name"]: d["id"] for d in deployments}
    cwd = Path.cwd()
    os.chdir(st.root)  # config.local_paths are relative to the project root
    try:
        requests = [(ids[deployment], run_parameters("deployments/example.yaml", sets)) for deployment, sets in specs]
    finally:
        os.chdir(cwd)
    counter = _RetryCount()
    client_logger = logging.getLogger("prefect.client")
    client_logger.addHandler(counter)
    level = client_logger.level
    client_logger.setLevel(logging.DEBUG)
    try:
        ids, again = asyncio.run(_create(st.api_url, requests, deadline))
        return ids, counter.count, again
    finally:
        client_logger.removeHandler(counter)
        client_logger.setLevel(level)


def read_runs(st: Stack, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The runs ``ids`` in one request (``/flow_runs/filter``), by id."""
    found: Any = http_json(f"{st.api_url}/flow_runs/filter",
                           {"flow_runs": {"id": {"any_": ids}}, "limit": len(ids)}, timeout=60)
    return {r["id"]: r for r in found}


def run_phase(st: Stack, server_pid: int, db: Database, name: str, specs: list[tuple[str, list[str]]],
              timeout: float) -> Phase:
    phase = Phase(name)
    log = st.log_file("server")
    log_start = log.stat().st_size
    started, requested = time.monotonic(), time.time()
    deadline = started + timeout
    with Usage(server_pid) as usage, Usage(db.pid) as db_usage:
        ids, phase.create_retries, phase.create_again = create_runs(st, specs, deadline)
        created = [i for i in ids if i]
        seen: dict[str, dict[str, Any]] = {}
        while created:
            try:
                seen.update(read_runs(st, created))
            except OSError as exc:  # a server too busy to answer in time: noted, asked again next round
                phase.api_errors.append(f"{type(exc).__name__}: {exc}")
            if all(seen.get(i, {}).get("state_type") in TERMINAL for i in created) or time.monotonic() > deadline:
                break
            time.sleep(2)  # polling the API for end states: there is no push channel for them
    phase.wall = time.monotonic() - started
    phase.cpu, phase.peak_rss, phase.db_cpu = usage.cpu, usage.peak, db_usage.cpu
    with log.open(errors="replace") as fh:
        fh.seek(log_start)
        text = fh.read()
    phase.answered_503 = retryable_errors(text)
    phase.server_errors = Counter(f"{logger}: {message.split(':')[0][:60]}" for logger, message
                                  in re.findall(r"^[\d:.]+ \| ERROR +\| (\S+) - (.*)$", text, re.MULTILINE)
                                  if RETRYABLE not in message and logger != "uvicorn.error")
    for (deployment, _), run_id in zip(specs, ids, strict=True):
        run = seen.get(run_id or "", {})
        created_at, start, end = _ts(run.get("created")), _ts(run.get("start_time")), _ts(run.get("end_time"))
        phase.runs.append({"deployment": deployment, "name": run.get("name", "-"),
                           "state": run.get("state_type", "NOT CREATED" if run_id is None else "?"),
                           "latency": end - requested if end else None,
                           "to_start": start - requested if start else None,
                           "created": created_at - requested if created_at else None})
    return phase


def spec_sets(i: int, run_key: str) -> list[str]:
    n = 2 + (i // 2) % 2  # 2, 2, 3, 3, 2, 2, ...: both sizes on both deployments
    return [*IN_CLUSTER, *TINY, f"run_key={run_key}", f"job.completions={n}", f"job.parallelism={n}"]


def keep_logs(base: Path, keep: Path) -> None:
    """Copy the server's, the workers' and every pod's logs (the sandbox keeps them per pod) to ``keep``."""
    keep.mkdir(parents=True, exist_ok=True)
    for path in (base / "prefect").glob("*.log"):
        shutil.copy2(path, keep / path.name)
    for path in (base / "sandbox").rglob("*.log"):
        shutil.copy2(path, keep / ("pod-" + "-".join(path.relative_to(base / "sandbox").parts[-3:])))


def measure(db: Database, runs: list[int], alone: int, timeout: float, keep: Path,
            done: Callable[[list[Phase]], None], server_env: dict[str, str] | None = None) -> list[Phase]:
    """Bring the stack up, run the phases, hand them to ``done`` (before the slow stop), stop the stack."""
    base = Path(tempfile.mkdtemp(prefix=f"bench-conc-{db.name}-"))
    clone = base / "clone"
    shutil.copytree(REPO, clone, ignore=shutil.ignore_patterns(*NOT_COPIED))
    sandbox_dir = base / "sandbox"
    extra_env = {IMAGE_DIRECTORY_ENV: str(clone), "KUBECONFIG": str(sandbox_dir / "kubeconfig"),
                 "PREFECT_SERVER_LOG_RETRYABLE_ERRORS": "true"}
    if db.url:
        extra_env["PREFECT_API_DATABASE_CONNECTION_URL"] = db.url
    extra_env.update(server_env or {})
    st = Stack(root=clone, state=base / "prefect", port=free_port(), sandbox_dir=sandbox_dir,
               worker_name="bench-worker", worker_query_seconds=2, extra_env=extra_env)
    phases: list[Phase] = []
    try:
        t0 = time.monotonic()
        st.start_server(timeout=300)  # migrations of a fresh database are slow on a busy machine
        st.up(say=lambda line: print(f"  {line}", flush=True))
        from kubernetes import config, utils

        utils.create_from_yaml(config.new_client_from_config(str(sandbox_dir / "kubeconfig")),
                               str(clone / "deployments" / "k8s-namespace.yaml"))
        start_worker(st, K8S_WORKER)
        print(f"  {db.name}: stack up in {time.monotonic() - t0:.0f} s", flush=True)
        server_pid = st.running_pid("server")
        assert server_pid is not None
        for deployment in ("adhoc", "adhoc-k8s"):
            for k in range(alone):
                print(f"  {db.name}: one {deployment} run alone ({k + 1}/{alone})", flush=True)
                phases.append(run_phase(st, server_pid, db, f"alone ({deployment})",
                                        [(deployment, spec_sets(k, f"alone-{deployment}-{k}"))], timeout))
        for n in runs:
            print(f"  {db.name}: {n} runs at once", flush=True)
            specs = [("adhoc" if i % 2 == 0 else "adhoc-k8s", spec_sets(i, f"conc{n}-{i:02d}")) for i in range(n)]
            phases.append(run_phase(st, server_pid, db, f"{n} at once", specs, timeout))
            print(f"  {db.name}: {phases[-1].completed}/{n} Completed in {phases[-1].wall:.0f} s", flush=True)
            if phases[-1].completed < n:
                break  # where it breaks: a larger phase would only break harder
        done(phases)
        return phases
    finally:
        st.stop(K8S_WORKER)
        st.down(say=lambda line: None)
        with suppress(OSError):
            keep_logs(base, keep / db.name)
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------------------------- report


def p95(values: list[float]) -> float:
    """The 95th percentile, nearest rank (of 20 values: the 19th)."""
    ordered = sorted(values)
    return ordered[max(0, -(-95 * len(ordered) // 100) - 1)]


def figures(runs: list[dict[str, Any]], key: str) -> tuple[float, float, float] | None:
    values = [r[key] for r in runs if r[key] is not None]
    if not values:
        return None
    return Series(values).median, p95(values), max(values)


def fmt(f: tuple[float, float, float] | None) -> str:
    return " / ".join(f"{v:.0f}" for v in f) if f else "–"


def merged(phases: list[Phase], name: str) -> tuple[list[dict[str, Any]], float, float, float]:
    """The runs of every phase called ``name`` and their summed server CPU, database CPU and peak RSS."""
    chosen = [p for p in phases if p.name == name]
    return ([r for p in chosen for r in p.runs], sum(p.cpu for p in chosen), sum(p.db_cpu for p in chosen),
            max((p.peak_rss for p in chosen), default=0.0))


def rows(database: str, phases: list[Phase]) -> tuple[list[list[str]], list[list[str]]]:
    """The figures table's rows and the ratios table's rows (at once / alone, per worker kind)."""
    out, ratios = [], []
    alone = {kind: merged(phases, f"alone ({dep})") for kind, dep in (("process", "adhoc"),
                                                                       ("kubernetes", "adhoc-k8s"))}
    names = list(dict.fromkeys(p.name for p in phases))
    for name in names:
        runs, cpu, db_cpu, peak = merged(phases, name)
        wall = sum(p.wall for p in phases if p.name == name)
        for kind, dep in (("process", "adhoc"), ("kubernetes", "adhoc-k8s")):
            group = [r for r in runs if r["deployment"] == dep]
            if not group:
                continue
            states = Counter(r["state"].lower() for r in group)
            out.append([database, f"{name}: {kind} worker" if "at once" in name else name,
                        ", ".join(f"{n} {s}" for s, n in sorted(states.items())),
                        fmt(figures(group, "created")), fmt(figures(group, "to_start")), fmt(figures(group, "latency")),
                        f"{cpu:.0f} ({cpu / len(runs):.1f}/run)", f"{db_cpu:.0f}" if db_cpu else "–",
                        f"{peak:.0f}", f"{wall:.0f}"])
            if "at once" in name:
                base_runs, base_cpu, _, base_peak = alone[kind]
                at, solo = figures(group, "latency"), figures(base_runs, "latency")
                if at and solo:
                    per_run = (cpu / len(runs)) / (base_cpu / len(base_runs)) if base_cpu else float("nan")
                    ratios.append([database, f"{name}: {kind} worker", f"{at[0] / solo[0]:.2f}",
                                   f"{at[1] / solo[1]:.2f}", f"{at[2] / solo[2]:.2f}", f"{per_run:.2f}",
                                   f"{peak / base_peak:.2f}" if base_peak else "–"])
    return out, ratios


def note(database: str, phases: list[Phase]) -> str:
    total = sum(len(p.runs) for p in phases)
    done = sum(p.completed for p in phases)
    bad = [f"{n} {state.lower()}" for state, n in Counter(r["state"] for p in phases for r in p.runs
                                                           if r["state"] != "COMPLETED").items()]
    answered = Counter(e for p in phases for e in p.answered_503)
    per_phase = ", ".join(f"{p.name}: {len(p.answered_503)}" for p in phases if p.answered_503) or "none"
    text = (f"{database}: {done} of {total} runs Completed" + (f"; not completed: {', '.join(bad)}" if bad else "")
            + f". Answers 503 from the server: {sum(answered.values())} ({per_phase})")
    if answered:
        text += "; by route and error: " + "; ".join(f"{route} — `{error}` ×{n}"
                                                     for (route, error), n in answered.most_common(6))
    errors = sum((p.server_errors for p in phases), Counter())
    if errors:
        text += ". Other errors in the server log: " + "; ".join(f"`{e}` ×{n}" for e, n in errors.most_common(4))
    retries = sum(p.create_retries for p in phases)
    again = sum(p.create_again for p in phases)
    text += (f". Retries of the run creations by Prefect's client: {retries}; creations still refused after "
             f"its 5 retries and sent again: {again}. Reads by the bench that failed: "
             f"{sum(len(p.api_errors) for p in phases)}.")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__, 1)
    parser.add_argument("--runs", type=int, nargs="+", default=[20], help="runs at once, per phase (default 20)")
    parser.add_argument("--alone", type=int, default=1, help="runs alone per deployment, the baseline (default 1)")
    parser.add_argument("--timeout", type=float, default=600, help="per phase, seconds (default 600)")
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    parser.add_argument("--keep", type=Path, default=Path(f"/tmp/bench-concurrency-{time.strftime('%H%M%S')}"),
                        help="where the server, worker and pod logs are copied")
    parser.add_argument("--server-env", nargs="*", default=[], metavar="NAME=VALUE",
                        help="more settings for the stack's Prefect processes, e.g. "
                             "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE=20")
    args = parser.parse_args(argv)
    server_env = dict(item.split("=", 1) for item in args.server_env)
    # `timeout` (or Ctrl-C) must still stop the stack: its processes live in their own sessions.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="bench-conc-home-"))  # the bench's own client
    for database in args.databases:
        load = load_average()

        def done(phases: list[Phase], database: str = database, load: str = load) -> None:
            figures_rows, ratio_rows = rows(database, phases)
            report(database, figures_rows, ratio_rows, note(database, phases), argv, load, args.keep,
                   write=not args.no_write)

        if database == "postgresql" and pg_bin() is None:
            print("PostgreSQL: not measured, its binaries are not installed (scripts/install-test-deps.sh).")
            continue
        print(f"{database}:", flush=True)
        try:
            if database == "postgresql":
                with postgres() as db:
                    measure(db, args.runs, args.alone, args.timeout, args.keep, done, server_env)
            else:
                measure(Database("sqlite"), args.runs, args.alone, args.timeout, args.keep, done, server_env)
        except Exception as exc:  # noqa: BLE001 - a stack that does not come up is a result too
            print(f"{database}: the measurement stopped: {type(exc).__name__}: {exc}", flush=True)
            return 1
    return 0


def report(database: str, figures_rows: list[list[str]], ratios: list[list[str]], closing: str,
           argv: list[str] | None, load: str, keep: Path, *, write: bool) -> None:
    """Print the database's section and (unless ``write`` is false) put it in RESULTS.md under its heading."""
    body = table(["phase", "runs", "created s", "started s", "ended s = latency", "server CPU s",
                  "database CPU s", "server peak RSS MiB", "wall s"], [r[1:] for r in figures_rows])
    ratio_table = table(["phase", "latency median ×", "latency p95 ×", "latency max ×", "server CPU per run ×",
                         "server peak RSS ×"], [r[1:] for r in ratios])
    text = (f"{provenance(command_line(argv), load)}\n\n{body}\n\n"
            "Per run, seconds from the request to create it (all N requests sent together) until the server "
            "created it (503s and retries included), until the flow started (worker poll, process or pod start, "
            "pull step) and until it ended (the latency): median / p95 / max. Server CPU and peak RSS: the "
            "Prefect server's process tree over the phase (the alone rows: summed over their runs, peak of "
            "them); database CPU: PostgreSQL's own processes.\n\n"
            "Ratios, at once / alone (same invocation, same stack; > 1: each run is slower or costs more when "
            f"it shares the server):\n\n{ratio_table}\n\nLogs (server, workers, every pod): `{keep / database}`."
            f"\n\n{closing}")
    print(text, flush=True)
    if write:
        write_section(HEADINGS[database], text)


if __name__ == "__main__":
    sys.exit(main())
