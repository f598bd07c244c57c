"""Many runs at once: N ask-batch runs of different specs on one Prefect server, beside one run alone.

    .venv/bin/python bench/bench_concurrency.py [--runs 20] [--databases sqlite postgresql] [--timeout 1500]
                                                [--no-write]

What runs, per database (SQLite, then PostgreSQL when its binaries are installed: scripts/install-test-deps.sh):

- the stack of ``make up`` (``deployments.local.Stack``: server, sandbox wired, both pools, ``prefect deploy
  --all`` from a copy of the repository, one process worker) plus one Kubernetes worker
  (``deployments.k8s_pool.start_worker``) on the sandbox's default cluster;
- **alone**: one run of ``ask-batch/adhoc`` (process worker) and then one of ``ask-batch/adhoc-k8s`` (the flow
  as a pod), one after the other, nothing else running;
- **at once**: N runs created together through the API, alternately on the two deployments, each with its own
  spec (run key, 1–3 indexes, parallelism = indexes); every flow launches its own batch Job on the same cluster.

Every run: storage ``none``, the example workload (each index hashes its shard and uploads it to OSS), the ASK
cluster found by name (the sandbox's default cluster, where the flow pods run too), outputs downloaded.

Measured from the API: per run, the latency from creation to its end (``end_time - created``) and the part of
it spent before the flow started (``start_time - created``: worker polling, pod start, pull step); the server's
CPU seconds (utime + stime of its process tree, from /proc, over the phase) and its peak RSS (the tree's RSS
sampled every 0.5 s); "database is locked" answers in the server log (SQLite's limit under concurrent writers).
A run that does not end Completed within ``--timeout`` is reported, with its state: that is where it breaks.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
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

HEADING = "## Many runs at once"
K8S_WORKER = "k8s-worker"
IN_CLUSTER = ["cluster.ask.name=sandbox", "cluster.ask.create_if_missing=false",
              "cluster.ask.private_kubeconfig=true", "storage.mode=none"]
NOT_COPIED = (".venv", ".git", ".sandbox", ".prefect", "outputs", "__pycache__", ".pytest_cache", ".ruff_cache",
              "out", "*.pyc")
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
PAGE = 4096


# --------------------------------------------------------------------------------------------- server usage


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
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK")


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    return total / 2**20


class Usage:
    """CPU seconds and peak RSS of the server's process tree while the ``with`` block runs."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self.cpu = pid, 0.0, 0.0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, rss_mib(tree(self.pid)))

    def __enter__(self) -> Usage:
        self._cpu0 = cpu_seconds(tree(self.pid))
        self.peak = rss_mib(tree(self.pid))
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.cpu = cpu_seconds(tree(self.pid)) - self._cpu0


# --------------------------------------------------------------------------------------------- PostgreSQL


def pg_bin() -> Path | None:
    import glob

    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")
             if (Path(p).parent / "pg_ctl").exists()]
    return max(found, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0) if found else None


@contextmanager
def postgres(port: int):  # noqa: ANN201 - a context manager of the database URL
    """A throwaway PostgreSQL cluster on 127.0.0.1:``port`` (as ``postgres`` when root); yields its URL."""
    import pwd

    binary = pg_bin()
    assert binary is not None
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
        yield f"postgresql+asyncpg://prefect@127.0.0.1:{port}/prefect"
    finally:
        subprocess.run([*as_user, str(binary / "pg_ctl"), "stop", "-w", "-t", "60", "-m", "fast", "-D", str(data)],
                       capture_output=True, timeout=90)
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------------------------- runs


@dataclass
class Phase:
    name: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    cpu: float = 0.0
    peak_rss: float = 0.0
    wall: float = 0.0
    unfinished: int = 0
    api_errors: list[str] = field(default_factory=list)


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def create_runs(st: Stack, specs: list[tuple[str, list[str]]]) -> list[str | None]:
    """Create one run per spec; a creation the server refuses (after ``http_json``'s retries of 503/429) is
    ``None`` in the list and counts as a run that did not complete: that is one way the server breaks."""
    deployments = {d["name"]: d["id"] for d in http_json(f"{st.api_url}/deployments/filter", {}, timeout=60)}
    ids: list[str | None] = []
    cwd = Path.cwd()
    os.chdir(st.root)  # config.local_paths are relative to the project root
    try:
        for deployment, sets in specs:
            params = run_parameters("deployments/example.yaml", sets)
            try:
                ids.append(http_json(f"{st.api_url}/deployments/{deployments[deployment]}/create_flow_run",
                                     {"parameters": params, "state": {"type": "SCHEDULED"}}, timeout=120)["id"])
            except OSError as exc:  # urllib's HTTPError (503 "database is locked") and timeouts are OSErrors
                print(f"  creating a {deployment} run failed: {type(exc).__name__}: {exc}", flush=True)
                ids.append(None)
    finally:
        os.chdir(cwd)
    return ids


def run_phase(st: Stack, server_pid: int, name: str, specs: list[tuple[str, list[str]]], timeout: float) -> Phase:
    phase = Phase(name)
    started = time.monotonic()
    with Usage(server_pid) as usage:
        ids = create_runs(st, specs)
        deadline = started + timeout
        runs: list[dict[str, Any]] = [{"id": i, "state_type": "?" if i else "NOT CREATED", "name": "-",
                                       "created": None, "start_time": None, "end_time": None} for i in ids]
        while True:
            for k, run_id in enumerate(ids):
                if runs[k]["state_type"] in TERMINAL or run_id is None:
                    continue
                try:
                    runs[k] = http_json(f"{st.api_url}/flow_runs/{run_id}", timeout=60)
                except OSError as exc:  # a server too busy to answer in time: noted, asked again next round
                    phase.api_errors.append(f"{type(exc).__name__}: {exc}")
            if all(r["state_type"] in TERMINAL | {"NOT CREATED"} for r in runs) or time.monotonic() > deadline:
                break
            time.sleep(2)  # polling the API for end states: there is no push channel for them
    phase.wall = time.monotonic() - started
    phase.cpu, phase.peak_rss = usage.cpu, usage.peak
    for (deployment, _), run in zip(specs, runs, strict=True):
        created, start, end = _ts(run["created"]), _ts(run["start_time"]), _ts(run["end_time"])
        phase.runs.append({"deployment": deployment, "state": run["state_type"], "name": run["name"],
                           "latency": end - created if end and created else None,
                           "to_start": start - created if start and created else None})
    phase.unfinished = sum(1 for r in phase.runs if r["state"] not in TERMINAL)
    return phase


def spec_sets(i: int, run_key: str) -> list[str]:
    n = 1 + i % 3
    return [*IN_CLUSTER, f"run_key={run_key}", f"job.completions={n}", f"job.parallelism={n}"]


def measure(database: str, runs: int, timeout: float, extra_env: dict[str, str]) -> tuple[list[Phase], int]:
    base = Path(tempfile.mkdtemp(prefix=f"bench-conc-{database}-"))
    clone = base / "clone"
    shutil.copytree(REPO, clone, ignore=shutil.ignore_patterns(*NOT_COPIED))
    sandbox_dir = base / "sandbox"
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    st = Stack(root=clone, state=base / "prefect", port=port, sandbox_dir=sandbox_dir, worker_name="bench-worker",
               worker_query_seconds=2,
               extra_env={IMAGE_DIRECTORY_ENV: str(clone), "KUBECONFIG": str(sandbox_dir / "kubeconfig"),
                          **extra_env})
    try:
        st.start_server(timeout=300)  # migrations of a fresh database are slow on a busy machine
        st.up(say=lambda line: print(f"  {line}", flush=True))
        from kubernetes import config, utils

        utils.create_from_yaml(config.new_client_from_config(str(sandbox_dir / "kubeconfig")),
                               str(clone / "deployments" / "k8s-namespace.yaml"))
        start_worker(st, K8S_WORKER)
        server_pid = st.running_pid("server")
        assert server_pid is not None
        phases = []
        for deployment in ("adhoc", "adhoc-k8s"):
            print(f"  {database}: one {deployment} run alone", flush=True)
            phases.append(run_phase(st, server_pid, f"alone ({deployment})",
                                    [(deployment, spec_sets(1, f"alone-{deployment}"))], timeout))
        print(f"  {database}: {runs} runs at once", flush=True)
        specs = [("adhoc" if i % 2 == 0 else "adhoc-k8s", spec_sets(i, f"conc-{i:02d}")) for i in range(runs)]
        phases.append(run_phase(st, server_pid, f"{runs} at once", specs, timeout))
        locked = st.log_file("server").read_text(errors="replace").count("database is locked")
        return phases, locked
    finally:
        st.stop(K8S_WORKER)
        st.down(say=lambda line: None)
        shutil.rmtree(base, ignore_errors=True)


def rows(database: str, phases: list[Phase]) -> list[list[str]]:
    out = []
    for phase in phases:
        groups = {"all": phase.runs} if len(phase.runs) == 1 else {
            "process": [r for r in phase.runs if r["deployment"] == "adhoc"],
            "kubernetes": [r for r in phase.runs if r["deployment"] == "adhoc-k8s"]}
        for group, runs in groups.items():
            latency, to_start = Series(), Series()
            for r in runs:
                if r["latency"] is not None:
                    latency.add(r["latency"])
                if r["to_start"] is not None:
                    to_start.add(r["to_start"])
            states: dict[str, int] = {}
            for r in runs:
                states[r["state"]] = states.get(r["state"], 0) + 1
            out.append([database, phase.name if len(phase.runs) == 1 else f"{phase.name}: {group} worker",
                        ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())),
                        latency.cell("{:.0f}") if latency.values else "–",
                        to_start.cell("{:.0f}") if to_start.values else "–",
                        f"{phase.cpu:.0f}", f"{phase.peak_rss:.0f}", f"{phase.wall:.0f}"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__, 1)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=1500, help="per phase, seconds (default 1500)")
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    args = parser.parse_args(argv)
    # `timeout` (or Ctrl-C) must still stop the stack: its processes live in their own sessions.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load = load_average()
    all_rows: list[list[str]] = []
    notes: list[str] = []
    for database in args.databases:
        if database == "postgresql" and pg_bin() is None:
            notes.append("PostgreSQL: not measured, its binaries are not installed (scripts/install-test-deps.sh).")
            continue
        print(f"{database}:", flush=True)
        try:
            if database == "postgresql":
                import socket

                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    pg_port = s.getsockname()[1]
                with postgres(pg_port) as url:
                    phases, locked = measure(database, args.runs, args.timeout,
                                             {"PREFECT_API_DATABASE_CONNECTION_URL": url})
            else:
                phases, locked = measure(database, args.runs, args.timeout, {})
        except Exception as exc:  # noqa: BLE001 - a stack that does not come up is a result too
            notes.append(f"{database}: the measurement stopped: {type(exc).__name__}: {exc}")
            print(notes[-1], flush=True)
            report(all_rows, notes, argv, load, write=not args.no_write)
            continue
        all_rows += rows(database, phases)
        bad = [r for p in phases for r in p.runs if r["state"] != "COMPLETED"]
        total = sum(len(p.runs) for p in phases)
        failed = ", ".join(f"{r['name']} ({r['state']})" for r in bad)
        notes.append(f"{database}: {total - len(bad)} of {total} runs Completed"
                     + (f"; not completed: {failed}" if bad else "")
                     + f"; 'database is locked' in the server log: {locked}; API reads that timed out or "
                     f"failed: {sum(len(p.api_errors) for p in phases)}.")
        print(json.dumps([p.__dict__ for p in phases], default=str)[:4000], flush=True)
        report(all_rows, notes, argv, load, write=not args.no_write)  # after each database: a late stop keeps it
    report(all_rows, notes, argv, load, write=not args.no_write)
    return 0


def report(all_rows: list[list[str]], notes: list[str], argv: list[str] | None, load: str, *, write: bool) -> None:
    body = table(["database", "phase", "runs", "latency s", "to start s", "server CPU s", "server peak RSS MiB",
                  "wall s"], all_rows)
    text = (f"{provenance(command_line(argv), load)}\n\n{body}\n\n"
            "latency: creation to end of each run, median (min–max); to start: creation to the flow's start "
            "(worker poll, process or pod start, pull step). Server CPU and peak RSS: the Prefect server's process "
            "tree over the phase.\n\n" + "\n".join(f"- {n}" for n in notes))
    print(text, flush=True)
    if write:
        write_section(HEADING, text)


if __name__ == "__main__":
    sys.exit(main())
