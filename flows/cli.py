"""The command line: ad-hoc runs of the flow (``make run`` uses it).

    python -m flows.ask_batch --params FILE [--set a.b=value ...] [--sandbox DIR] [--dry-run]

``--sandbox DIR`` runs against the sandbox (a local Alibaba Cloud region) whose ``endpoints.json`` is in DIR,
starting one in the background if none answers there. It only swaps the ``target`` (region, endpoints, key):
the flow itself cannot tell. The sandbox's virtual node runs each pod's command as a host process with the
sandbox's PATH, so it is started with this Python's ``bin`` first on PATH: ``python3`` in a Job command then is
an interpreter that has the OSS SDK, as the example image (examples/Dockerfile) does on real ASK.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from flows.run_files import kept_logs_dir
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


def _healthy(endpoints_file: Path) -> bool:
    try:
        base = json.loads(endpoints_file.read_text())["control"]["endpoint"]
        with urllib.request.urlopen(base + "/healthz", timeout=2) as resp:
            return resp.status == 200
    except (OSError, ValueError, KeyError):
        return False


def ensure_sandbox(directory: Path, *, timeout: float = 90.0) -> Path:
    """The sandbox's endpoints.json in ``directory``, starting a detached sandbox there if none answers."""
    directory = directory.resolve()
    endpoints = directory / "endpoints.json"
    if _healthy(endpoints):
        return endpoints
    directory.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    # Pods of the virtual node inherit this PATH: put the interpreter that has the OSS SDK first (module docstring).
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log_file = (directory / "sandbox.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", "serve", "--dir", str(directory)], cwd=REPO,
                            env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                            start_new_session=True)
    (directory / "sandbox.pid").write_text(f"{proc.pid}\n")
    print(f"started a sandbox in {directory} (pid {proc.pid}, log {directory / 'sandbox.log'}); it keeps running "
          f"for later runs — stop it with: kill $(cat {directory / 'sandbox.pid'})", file=sys.stderr)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the sandbox exited with code {proc.returncode}; see {directory / 'sandbox.log'}")
        if _healthy(endpoints):
            return endpoints
        time.sleep(0.2)  # polling a child we just started: nothing to watch but its control endpoint
    raise RuntimeError(f"the sandbox did not become ready in {timeout:.0f}s; see {directory / 'sandbox.log'}")


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


def _ui_hint(flow_run_id: Any) -> str:
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    if PREFECT_API_URL.value():
        ui = PREFECT_UI_URL.value() or PREFECT_API_URL.value().removesuffix("/api")
        return f"see the run in the Prefect UI: {ui}/runs/flow-run/{flow_run_id}"
    return ("this run was recorded by a temporary Prefect server that stopped with it (PREFECT_API_URL is unset).\n"
            "  To keep history and browse runs: `.venv/bin/prefect server start` in another terminal, then\n"
            "  `export PREFECT_API_URL=http://127.0.0.1:4200/api` and run again; the UI is at http://127.0.0.1:4200")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.ask_batch",
                                     description="Run one parallel batch Job on ASK and collect its outputs.")
    parser.add_argument("--params", required=True, help="YAML/JSON file with the BatchSpec")
    parser.add_argument("--set", action="append", default=[], metavar="A.B=VALUE",
                        help="override one field (value parsed as YAML); repeatable")
    parser.add_argument("--sandbox", metavar="DIR", help="run against the sandbox in DIR (started if not running)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print every manifest and API request as YAML (secrets redacted); change nothing")
    args = parser.parse_args(argv)
    try:
        spec = build_spec(args.params, args.set, args.sandbox, start_sandbox=not args.dry_run)
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
        return 0
    from flows.ask_batch import ask_batch

    state = ask_batch(spec, return_state=True)
    result = state.result(raise_on_failure=False)
    name = state.state_details.flow_run_id
    from prefect import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(name)
    download = Path(spec.outputs.download_dir) / run.name
    if state.is_completed():
        print(f"\nask-batch run {run.name}: succeeded")
        print(f"  outputs downloaded to {download}/" if spec.outputs.download else
              f"  outputs recorded (not downloaded) under oss://{spec.outputs.bucket}/")
    else:
        print(f"\nask-batch run {run.name}: {state.type.value.lower()}\n  {result}", file=sys.stderr)
        print(f"  pod logs kept in {kept_logs_dir(spec, run.name)}/", file=sys.stderr)
    print(f"  {_ui_hint(run.id)}")
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
