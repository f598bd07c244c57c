"""The command line: ad-hoc runs of the flow (``make run`` uses it).

    python -m flows.ask_batch --params FILE [--set a.b=value ...] [--sandbox DIR] [--dry-run]

``--sandbox DIR`` runs against the sandbox (a local Alibaba Cloud region) whose ``endpoints.json`` is in DIR,
starting one in the background if none answers there. It only swaps the ``target`` (region, endpoints, key):
the flow itself cannot tell. The sandbox's virtual node runs each pod's command as a host process with the
sandbox's PATH, so it is started with this Python's ``bin`` first on PATH: ``python3`` in a Job command then is
an interpreter that has the OSS SDK, as the example image (examples/Dockerfile) does on real ASK.
"""

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from flows.prefect_home import prefect_api, run_url_hint, use_project_home
from flows.run_files import flow_parameters, kept_logs_dir
from tasks.cloud.admission import admit
from tasks.cloud.params import apply_sets, load_params_file
from tasks.errors import InvalidInput
from tasks.spec import BatchSpec, parse_spec

REPO = Path(__file__).resolve().parents[1]


#: A problem with the params file or a ``--set`` (kept for callers; the loader raises the SpecError family).
ParamsError = InvalidInput


def load_params(path: str | Path, sets: list[str] | None = None) -> dict[str, Any]:
    """The params file (YAML/JSON, bounded: ``tasks.cloud.params``) with ``--set a.b=value`` applied."""
    return apply_sets(load_params_file(path), sets)


def ensure_sandbox(directory: Path, *, timeout: float = 90.0) -> Path:
    """The sandbox's endpoints.json in ``directory``, starting a detached sandbox there if none answers.

    Through the sandbox's one launcher (``python -m sandbox serve --detach --wait-ready``), as ``make up`` does:
    its own session, pid and log in ``directory``, this interpreter's ``bin`` first on the pods' PATH.

    Raises:
        RuntimeError: the sandbox did not start (the message names its log).
    """
    directory = directory.resolve()
    result = subprocess.run([sys.executable, "-m", "sandbox", "serve", "--dir", str(directory), "--detach",
                             "--wait-ready", str(timeout)], cwd=REPO, text=True, capture_output=True,
                            timeout=timeout + 30)
    if result.returncode != 0:
        raise RuntimeError((result.stdout + result.stderr).strip() or f"the sandbox did not start in {directory}")
    if "already running" not in result.stdout:
        print(result.stdout.strip(), file=sys.stderr)
    return directory / "endpoints.json"


def build_spec(params: str | Path, sets: list[str] | None, sandbox: str | Path | None, *,
               start_sandbox: bool = True) -> BatchSpec:
    """Validate the parameters (no network), then point ``target`` at the sandbox if asked.

    Raises ``SpecError`` (one line per problem; ``tasks.cloud.admission.admit``) before anything is contacted
    or started.
    """
    from tasks.cloud.clients import apply_env, target_from_endpoints_file

    data = load_params(params, sets)
    spec = admit(data).spec
    if sandbox is None:
        return spec
    endpoints = Path(sandbox) / "endpoints.json"
    if start_sandbox:
        endpoints = ensure_sandbox(Path(sandbox))
    elif not endpoints.exists():
        return spec
    target, env = target_from_endpoints_file(endpoints)
    apply_env(env)
    data["target"] = {**target.model_dump(mode="json"),
                      "credentials": spec.target.credentials.model_dump(mode="json")}
    return parse_spec(data)


#: After SIGINT/SIGTERM, how long teardown may take before the CLI exits anyway (the run's Lease then expires by
#: itself and running the same run key again cleans up).
TEARDOWN_GRACE_SECONDS = 8.0


@contextlib.contextmanager
def teardown_on_signals(on_give_up: Callable[[], None]) -> Iterator[list[int]]:
    """SIGINT and SIGTERM stop the run: the first raises ``KeyboardInterrupt`` in the flow (its ``finally`` tears
    down, releases the run lock and reports), later ones only say that teardown is under way. If teardown has not
    finished ``TEARDOWN_GRACE_SECONDS`` after the first signal, ``on_give_up`` runs and the process exits (130).

    Yields the list of signals received.
    """
    received: list[int] = []

    def give_up() -> None:
        print(f"teardown did not finish within {TEARDOWN_GRACE_SECONDS:.0f} s; exiting without it. Run the same "
              "run_key again to re-attach and clean up.", file=sys.stderr, flush=True)
        with contextlib.suppress(Exception):
            on_give_up()
        os._exit(130)

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)
        name = signal.Signals(signum).name
        if len(received) > 1:
            print(f"{name}: still tearing down (at most {TEARDOWN_GRACE_SECONDS:.0f} s in all) ...",
                  file=sys.stderr, flush=True)
            return
        print(f"\n{name}: stopping the run and tearing it down ...", file=sys.stderr, flush=True)
        timer = threading.Timer(TEARDOWN_GRACE_SECONDS, give_up)
        timer.daemon = True
        timers.append(timer)
        timer.start()
        raise KeyboardInterrupt(name)

    timers: list[threading.Timer] = []
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for timer in timers:  # the flow is done: teardown finished in time
            timer.cancel()
        for sig, old in previous.items():
            signal.signal(sig, old)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.ask_batch",
                                     description="Run one parallel batch Job on ASK and collect its outputs.")
    parser.add_argument("--params", required=True, help="YAML/JSON file with the BatchSpec")
    parser.add_argument("--set", action="append", default=[], metavar="A.B=VALUE",
                        help="override one field (value parsed as YAML); repeatable")
    parser.add_argument("--sandbox", metavar="DIR", help="run against the sandbox in DIR (started if not running)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print every manifest and API request as YAML (secrets redacted); change nothing")
    parser.add_argument("--preflight", action="store_true",
                        help="with --dry-run: also ask the account, read-only, what the run would find (credentials, "
                             "bucket, cluster, NAS); exit 1 when the run would fail there")
    args = parser.parse_args(argv)
    if args.preflight and not args.dry_run:
        parser.error("--preflight goes with --dry-run (a real run makes the same checks itself)")
    home = use_project_home()
    try:
        spec = build_spec(args.params, args.set, args.sandbox, start_sandbox=not args.dry_run or args.preflight)
    except InvalidInput as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if args.dry_run:
        from flows.plan import render_plan

        run_key = spec.run_key or "dry-run"
        try:
            text = render_plan(spec, run_key=run_key, flow_run_name=f"ask-batch-{run_key}")
        except InvalidInput as exc:
            print(str(exc), file=sys.stderr)
            return 2
        print(f"# ask-batch dry run: nothing is created. Run key {run_key!r}"
              f"{'' if spec.run_key else ' (a real run derives it from the flow run id)'}.")
        print(text, end="")
        return preflight_report(spec) if args.preflight else 0
    from flows.ask_batch import ask_batch

    with prefect_api(home) as api:
        try:
            with teardown_on_signals(api.stop) as received:
                state = ask_batch(**flow_parameters(spec), return_state=True)
        except KeyboardInterrupt:
            print(f"ask-batch run {spec.run_key or ''}: stopped by "
                  f"{signal.Signals(received[0]).name if received else 'SIGINT'}; torn down", file=sys.stderr)
            return 130
        code = report(spec, state, api, home)
    if args.sandbox:
        print_kubectl_hint(spec, state, Path(args.sandbox))
    return code


def preflight_report(spec: BatchSpec) -> int:
    """Print the read-only pre-flight checks (``tasks.cloud.preflight``) as YAML comments; 1 if any failed."""
    from tasks.cloud.context import stage_context
    from tasks.cloud.preflight import preflight

    with stage_context(spec) as ctx:
        checks = preflight(spec, ctx)
    print("# pre-flight (read-only; nothing was created):")
    for check in checks:
        print(f"#   {check.line()}")
    failed = [c for c in checks if not c.ok]
    if failed:
        print(f"ask-batch pre-flight: {len(failed)} check(s) failed; the run would stop there", file=sys.stderr)
    return 1 if failed else 0


def print_kubectl_hint(spec: BatchSpec, state: Any, sandbox_dir: Path) -> None:
    """Say how to reach the run's cluster with kubectl: the sandbox writes ``DIR/kubeconfig-<cluster id>`` for
    every cluster its Container Service creates (docs/sandbox.md); mode 'existing' names its kubeconfig itself."""
    result = state.result(raise_on_failure=False)
    cluster_id = result.get("cluster_id") if isinstance(result, dict) else None
    if cluster_id:
        kubeconfig = sandbox_dir.resolve() / f"kubeconfig-{cluster_id}"
    elif spec.cluster.mode == "existing" and spec.cluster.existing.kubeconfig_path:
        kubeconfig = Path(spec.cluster.existing.kubeconfig_path).expanduser().resolve()
    else:
        return
    if kubeconfig.is_file():
        print(f"  the cluster: kubectl --kubeconfig {kubeconfig} get jobs,pods -n {spec.cluster.namespace}")


def report(spec: BatchSpec, state: Any, api: Any, home: Path) -> int:
    """Print the end-of-run lines; returns the exit code (0 completed, 1 otherwise)."""
    from prefect import get_client

    result = state.result(raise_on_failure=False)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    download = Path(spec.outputs.download_dir) / run.name
    if state.is_completed():
        print(f"\nask-batch run {run.name}: succeeded")
        print(f"  outputs downloaded to {download}/" if spec.outputs.download else
              f"  outputs recorded (not downloaded) under oss://{spec.outputs.bucket}/")
    else:
        print(f"\nask-batch run {run.name}: {state.type.value.lower()}\n  {result}", file=sys.stderr)
        if kept_logs_dir(spec, run.name).is_dir():
            print(f"  pod logs kept in {kept_logs_dir(spec, run.name)}/", file=sys.stderr)
    print(f"  {run_url_hint(api, run.id, home)}")
    return 0 if state.is_completed() else 1


def run() -> None:
    """The entry point: ``main()``, then exit with its code.

    After Ctrl-C or SIGTERM (130) the run is torn down, reported and its server stopped; the process then exits at
    once (``os._exit``) instead of through the interpreter's shutdown, where Prefect's exit handlers and the
    clients' thread pools took several seconds more on a loaded machine.
    """
    code = main()
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
