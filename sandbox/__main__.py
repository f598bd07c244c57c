"""`python -m sandbox serve --dir DIR`: run the local cloud in the foreground until SIGINT/SIGTERM.

In the background (the launcher every tool uses: sandbox/launch.py):
  python -m sandbox serve --dir DIR --detach --wait-ready   # start (or reuse) one; returns once it answers
  python -m sandbox stop --dir DIR

Other commands talk to a running sandbox through its control endpoint (read from DIR/endpoints.json):
  python -m sandbox faults --dir DIR error_rate=0.1 watch_drop_after_s=5 services=nas,oss
  python -m sandbox settings --dir DIR cluster_create_delay_s=0 node.backoff_scale=0.01
Writes send control.token from endpoints.json (the control endpoint refuses writes without it).
  python -m sandbox status --dir DIR
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import shlex
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path

from . import launch
from .faults import Faults
from .k8s.cluster import EVENT_TTL_S, NodeConfig
from .server import Sandbox, Settings


def _pairs(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected key=value, got {item!r}")
        out[key] = value
    return out


def _tune_gc() -> None:
    """Collect young objects 70x less often and keep start-up objects out of collections.

    The store replaces each object with a fresh copy on every write and keeps old versions in its watch
    history, so a 10,000-pod Job allocates millions of long-lived dicts; with CPython's default thresholds
    (700, 10, 10) the cyclic GC then took ~30% of the sandbox's CPU time (bench/bench_sandbox_scale.py).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


async def _serve(args: argparse.Namespace) -> None:
    _tune_gc()
    faults = Faults()
    faults.update(_pairs(args.fault or []))
    node = NodeConfig(cpu=args.node_cpu, memory=args.node_memory, pods=args.node_pods,
                      backoff_scale=args.backoff_scale)
    settings = Settings(cluster_create_delay_s=args.cluster_create_delay, node=node, event_ttl_s=args.event_ttl)
    sandbox = Sandbox(args.dir, region=args.region, faults=faults, settings=settings)
    await sandbox.start()
    endpoints = sandbox.endpoints()
    print(f"sandbox ready: kubernetes {endpoints['kubernetes']['server']}, oss {endpoints['oss']['endpoint']}, "
          f"cs {endpoints['cs']['endpoint']}, nas {endpoints['nas']['endpoint']}", flush=True)
    print(f"  kubeconfig: {sandbox.data_dir / 'kubeconfig'}", flush=True)
    print(f"  endpoints:  {sandbox.data_dir / 'endpoints.json'}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("sandbox stopping", flush=True)
    await sandbox.stop()


def _control(args: argparse.Namespace, path: str, body: dict[str, str] | None) -> None:
    endpoints_file = Path(args.dir) / "endpoints.json"
    if not endpoints_file.exists():
        raise SystemExit(f"no sandbox at {args.dir}: {endpoints_file} is missing (start one with "
                         f"`python -m sandbox serve --dir {args.dir}`)")
    control = json.loads(endpoints_file.read_text())["control"]
    base = control["endpoint"]
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if body is not None and control.get("token"):
        headers["Authorization"] = f"Bearer {control['token']}"
    request = urllib.request.Request(base + path, data=data, method="PUT" if body is not None else "GET",
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            print(json.dumps(json.loads(response.read()), indent=2))
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("error", "")
        except ValueError:
            detail = ""
        raise SystemExit(f"the sandbox refused it ({exc.code}): {detail or exc.reason}") from exc
    except OSError as exc:
        raise SystemExit(f"the sandbox at {base} did not answer: {exc}") from exc


def _detach(args: argparse.Namespace) -> None:
    """`serve --detach [--wait-ready [S]]`: the same `serve` options, in the background (sandbox/launch.py)."""
    serve_args = ["--region", args.region, "--node-cpu", args.node_cpu, "--node-memory", args.node_memory,
                  "--node-pods", str(args.node_pods), "--cluster-create-delay", str(args.cluster_create_delay),
                  "--backoff-scale", str(args.backoff_scale), "--event-ttl", str(args.event_ttl)]
    for fault in args.fault or []:
        serve_args += ["--fault", fault]
    directory = Path(args.dir)
    try:
        pid, started = launch.start_detached(directory, serve_args, timeout=args.wait_ready or 90.0,
                                             wait_ready=args.wait_ready is not None)
    except launch.LaunchError as exc:
        raise SystemExit(str(exc)) from exc
    verb = "started" if started else "already running"
    ready = "ready" if args.wait_ready is not None or not started else "starting"
    print(f"sandbox {verb} in {directory} (pid {pid}), {ready}: kubeconfig {directory / 'kubeconfig'}, log "
          f"{directory / 'sandbox.log'}; stop it with: {this_python()} -m sandbox stop --dir "
          f"{shlex.quote(str(directory))}", flush=True)


def this_python() -> str:
    """The interpreter running this, as a shell word: relative to the working directory when below it (e.g.
    ``.venv/bin/python``, what ``make run`` uses), else absolute. A plain shell's ``python`` may lack the sandbox's
    packages, or not exist."""
    path = os.path.relpath(sys.executable)
    return shlex.quote(path if not path.startswith("..") else sys.executable)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the sandbox in the foreground")
    serve.add_argument("--dir", required=True, help="data directory (state, kubeconfig, endpoints.json)")
    serve.add_argument("--region", default="cn-sandbox")
    serve.add_argument("--fault", action="append", metavar="KEY=VALUE", help="initial fault knob")
    serve.add_argument("--node-cpu", default="64")
    serve.add_argument("--node-memory", default="256Gi")
    serve.add_argument("--node-pods", type=int, default=1000)
    serve.add_argument("--cluster-create-delay", type=float, default=2.0)
    serve.add_argument("--event-ttl", type=float, default=EVENT_TTL_S, metavar="SECONDS",
                       help="how long an Event lives after its last write (kube-apiserver --event-ttl; default 3600)")
    serve.add_argument("--backoff-scale", type=float, default=1.0,
                       help="multiply the kubelet's restart and image-pull back-offs (10 s doubling to 5 min); "
                            "e.g. 0.01 for tests")
    serve.add_argument("--detach", action="store_true",
                       help="start it in the background (own session, log DIR/sandbox.log, pid DIR/sandbox.pid) "
                            "and return; a sandbox already answering in DIR is reused")
    serve.add_argument("--wait-ready", type=float, nargs="?", const=90.0, default=None, metavar="SECONDS",
                       help="with --detach: return only once it answers (default 90 s); exit 1 if it does not")
    stop = sub.add_parser("stop", help="stop the sandbox started with --detach in DIR")
    stop.add_argument("--dir", required=True)
    for name in ("faults", "settings"):
        p = sub.add_parser(name, help=f"show or change the running sandbox's {name}")
        p.add_argument("--dir", required=True)
        p.add_argument("values", nargs="*", metavar="KEY=VALUE")
    status = sub.add_parser("status", help="request counts, objects and memory of the running sandbox")
    status.add_argument("--dir", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.command == "serve" and args.detach:
        _detach(args)
    elif args.command == "serve":
        asyncio.run(_serve(args))
    elif args.command == "stop":
        pid = launch.stop_detached(Path(args.dir))
        print(f"sandbox in {args.dir}: " + (f"stopped (pid {pid})" if pid else "not running"))
    elif args.command in ("faults", "settings"):
        _control(args, f"/{args.command}", _pairs(args.values) if args.values else None)
    else:
        _control(args, "/stats", None)


if __name__ == "__main__":
    sys.exit(main())
