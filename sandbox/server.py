"""The sandbox: a local Alibaba Cloud region on 127.0.0.1.

One `Sandbox` serves, on one asyncio loop:
- one Kubernetes API server per cluster (`KubeCluster`), the default cluster ready from the start and
  more created through the Container Service API;
- OSS, the Container Service (CS) and NAS OpenAPIs, each on its own port;
- STS (AssumeRoleWithOIDC, sts.py) for pods that use RRSA, against the account's RAM roles (ram.py);
- a control endpoint (`/healthz`, `/faults`, `/settings`, `/stats`, `/ram/roles`) to change fault knobs and
  RAM roles while running.

State lives in the data directory, so a restarted sandbox keeps its objects, buckets, clusters and file
systems; ports are remembered too and reused when free, so kubeconfigs keep working across restarts.
The Kubernetes API servers speak https with certificates from one CA kept in `DIR/tls/` (see k8s/tls.py).
Once ready it writes `DIR/kubeconfig` (the default cluster), `DIR/kubeconfig-<cluster id>` for every cluster
created through CS, and `DIR/endpoints.json` (every endpoint, the region, the sandbox's access key pair and the
control endpoint's token; mode 0600).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import string
import threading
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from aiohttp import web

from .faults import Faults
from .k8s.cluster import EVENT_TTL_S, KubeCluster, NodeConfig
from .oss.context import ACCOUNT_ID, OTHER_ACCOUNT_ID
from .ram import PROVIDER_ARN_RE, STS_AUDIENCE, OidcProvider, RamStore, provider_arn, rrsa_issuer
from .sts import TemporaryKeys

log = logging.getLogger("sandbox")
T = TypeVar("T")

NAS_CSI_DRIVER = "nasplugin.csi.alibabacloud.com"


@dataclass
class Settings:
    """Behaviour knobs of the simulated cloud (not faults): changeable through `PUT /settings`."""

    cluster_create_delay_s: float = 2.0  # time a new ASK cluster stays `initial` before `running`
    cluster_fail_next: bool = False  # the next CreateCluster ends `failed`
    cluster_delete_delay_s: float = 1.0  # time a deleted cluster stays `deleting` before it is gone
    nas_ready_delay_s: float = 0.5  # file system Pending -> Running, mount target Pending -> Active
    # seconds an Event lives after its last write (kube-apiserver --event-ttl, 1h); for clusters started later
    event_ttl_s: float = EVENT_TTL_S
    node: NodeConfig = field(default_factory=NodeConfig)


def own_peak_rss_mb() -> float:
    """This process's own peak resident set size in MB: ``VmHWM`` of ``/proc/self/status`` (proc(5),
    https://man7.org/linux/man-pages/man5/proc.5.html). Not ``getrusage``'s ``ru_maxrss``: Linux folds the address
    space an ``exec`` replaces into it (``exec_mmap`` in https://github.com/torvalds/linux/blob/master/fs/exec.c),
    so a sandbox started by a big process (a benchmark holding 100,000 objects) would report that process's size.
    NaN where ``/proc`` has no such field."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _free_port(preferred: int | None) -> int:
    if preferred:
        with socket.socket() as s:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _random_id(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


class Sandbox:
    def __init__(
        self,
        data_dir: Path | str,
        *,
        region: str = "cn-sandbox",
        faults: Faults | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.region = region
        self.faults = faults or Faults()
        self.settings = settings or Settings()
        self.kube_clusters: dict[str, KubeCluster] = {}
        self._meta_file = self.data_dir / "sandbox.json"
        self.meta = self._load_meta()
        self.credentials: dict[str, str] = {self.meta["access_key_id"]: self.meta["access_key_secret"]}
        # OSS knows a second account, so "a bucket that belongs to someone else" happens here as it does in the
        # real, global bucket namespace. (CS and NAS know the sandbox's own account only.)
        other = self.meta["other_account"]
        self.oss_credentials: dict[str, str] = {**self.credentials, other["access_key_id"]: other["access_key_secret"]}
        self.accounts: dict[str, str] = {self.meta["access_key_id"]: ACCOUNT_ID,
                                         self.meta["other_account"]["access_key_id"]: OTHER_ACCOUNT_ID}
        self.default_cluster_id: str = self.meta["default_cluster_id"]
        self._runners: list[web.AppRunner] = []
        self.ports: dict[str, int] = dict(self.meta.get("ports", {}))
        #: requests served per cloud service ("oss", "cs", "nas", "sts"), for /stats (tests assert none was made)
        self.service_requests: dict[str, int] = {}
        self.service_routes: dict[str, dict[str, int]] = {}
        #: RAM roles of the sandbox account and the STS credentials issued for them (ram.py, sts.py)
        self.ram = RamStore(self.data_dir / "ram", account=ACCOUNT_ID)
        self.temporary_keys = TemporaryKeys()

    # ------------------------------------------------------------------ identity

    def _load_meta(self) -> dict[str, Any]:
        if self._meta_file.exists():
            meta = dict(json.loads(self._meta_file.read_text()))
            if "other_account" not in meta:  # a data dir from before the second account
                meta["other_account"] = self._new_account()
                self._write_private(self._meta_file, json.dumps(meta, indent=2))
            return meta
        meta = {
            "access_key_id": "LTAI" + _random_id(string.ascii_letters + string.digits, 20),
            "access_key_secret": _random_id(string.ascii_letters + string.digits, 30),
            "default_cluster_id": "c" + secrets.token_hex(16),
            "vpc_id": "vpc-" + _random_id(string.ascii_lowercase + string.digits, 22),
            "vswitch_id": "vsw-" + _random_id(string.ascii_lowercase + string.digits, 22),
            "zone_id": f"{self.region}-a",
            "ports": {},
            "other_account": self._new_account(),
        }
        self._write_private(self._meta_file, json.dumps(meta, indent=2))
        return meta

    @staticmethod
    def _new_account() -> dict[str, str]:
        return {"access_key_id": "LTAI" + _random_id(string.ascii_letters + string.digits, 20),
                "access_key_secret": _random_id(string.ascii_letters + string.digits, 30)}

    def _save_meta(self) -> None:
        self.meta["ports"] = self.ports
        self._write_private(self._meta_file, json.dumps(self.meta, indent=2))

    @staticmethod
    def _write_private(path: Path, text: str) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)

    @property
    def access_key_id(self) -> str:
        return str(self.meta["access_key_id"])

    @property
    def access_key_secret(self) -> str:
        return str(self.meta["access_key_secret"])

    # ------------------------------------------------------------------ kubernetes clusters

    async def create_kube_cluster(self, cluster_id: str, flavour: str | None = None,
                                  rrsa: bool | None = None) -> KubeCluster:
        """Start (or restart) the Kubernetes of one sandbox cluster; its state lives under clusters/<id>.

        `flavour` "acs" gives the cluster ACS's pod behaviour (sandbox/k8s/acs.py); `rrsa` registers the cluster's
        service-account issuer as a RAM OIDC provider (ram.py; the default cluster has RRSA on). Both are
        remembered, so a restart brings the cluster back the same.
        """
        if cluster_id in self.kube_clusters:
            return self.kube_clusters[cluster_id]
        flavours = self.meta.setdefault("cluster_flavours", {})
        flavour = flavours.setdefault(cluster_id, flavour or "ask")
        rrsa_flags = self.meta.setdefault("cluster_rrsa", {})
        rrsa = rrsa_flags.setdefault(cluster_id, bool(rrsa) or cluster_id == self.default_cluster_id)
        port = _free_port(self.ports.get(f"k8s:{cluster_id}"))
        tokens = self.meta.setdefault("cluster_tokens", {})
        token = tokens.setdefault(cluster_id, secrets.token_hex(16))
        name = "sandbox" if cluster_id == self.default_cluster_id else cluster_id
        cluster = KubeCluster(
            name,
            self.data_dir / "clusters" / cluster_id,
            faults=self.faults,
            node=self.settings.node,
            token=token,
            port=port,
            tls_dir=self.data_dir / "tls",
            flavour=flavour,
            sa_issuer=rrsa_issuer(self.region, cluster_id),
            event_ttl=self.settings.event_ttl_s,
        )
        cluster.csi_resolver = self._csi_resolver
        await cluster.start()
        self.kube_clusters[cluster_id] = cluster
        self.ports[f"k8s:{cluster_id}"] = cluster.port
        if rrsa:
            self.ram.seed([provider_arn(ACCOUNT_ID, cluster_id)])
        self._save_meta()
        if cluster_id != self.default_cluster_id:
            self._write_private(self.cluster_kubeconfig_path(cluster_id),
                                yaml.safe_dump(cluster.kubeconfig(), sort_keys=False))
        return cluster

    def cluster_kubeconfig_path(self, cluster_id: str) -> Path:
        """`DIR/kubeconfig-<cluster id>`: written for every cluster CS creates (mode 0600), removed with it, so a
        user reaches the cluster a run created with `kubectl --kubeconfig DIR/kubeconfig-<id>`."""
        return self.data_dir / f"kubeconfig-{cluster_id}"

    async def delete_kube_cluster(self, cluster_id: str) -> None:
        cluster = self.kube_clusters.pop(cluster_id, None)
        if cluster is not None:
            await cluster.stop()
        self.ports.pop(f"k8s:{cluster_id}", None)
        self.meta.get("cluster_tokens", {}).pop(cluster_id, None)
        self.meta.get("cluster_flavours", {}).pop(cluster_id, None)
        self.meta.get("cluster_rrsa", {}).pop(cluster_id, None)
        self._save_meta()
        self.cluster_kubeconfig_path(cluster_id).unlink(missing_ok=True)
        import shutil

        shutil.rmtree(self.data_dir / "clusters" / cluster_id, ignore_errors=True)

    def oidc_provider(self, arn: str) -> OidcProvider | None:
        """The RAM OIDC provider of an RRSA cluster of the sandbox, by ARN (`acs:ram::<account>:oidc-provider/
        ack-rrsa-<cluster id>`), or None when no running cluster with RRSA has it."""
        m = PROVIDER_ARN_RE.match(arn)
        if not m or m["account"] != ACCOUNT_ID or not m["name"].startswith("ack-rrsa-"):
            return None
        cluster_id = m["name"].removeprefix("ack-rrsa-")
        cluster = self.kube_clusters.get(cluster_id)
        if cluster is None or not self.meta.get("cluster_rrsa", {}).get(cluster_id):
            return None
        return OidcProvider(arn=arn, issuer=cluster.tokens.issuer, client_ids=(STS_AUDIENCE,),
                            public_key=cluster.tokens.public_key())

    @property
    def default_cluster(self) -> KubeCluster:
        return self.kube_clusters[self.default_cluster_id]

    def _csi_resolver(self, driver: str, handle: str, attributes: dict[str, str]) -> Path | None:
        if driver != NAS_CSI_DRIVER:
            return None
        from . import nas

        return nas.resolve(self, attributes.get("server", ""), attributes.get("path", "/"))

    # ------------------------------------------------------------------ services

    async def _serve(self, key: str, app: web.Application) -> int:
        if key != "control":
            self.service_requests.setdefault(key, 0)

            routes = self.service_routes.setdefault(key, {})

            @web.middleware
            async def count(request: web.Request, handler: Any) -> web.StreamResponse:
                self.service_requests[key] += 1
                # Per operation too: the RPC action (the Action parameter, or the x-acs-action header of the V3
                # signature's requests), else the route pattern (ROA, e.g. "GET /k8s/{cluster_id}/user_config"),
                # so a test can tell how often one API was called.
                resource = request.match_info.route.resource
                action = request.query.get("Action") or request.headers.get("x-acs-action")
                name = action or f"{request.method} {resource.canonical if resource is not None else request.path}"
                routes[name] = routes.get(name, 0) + 1
                return await handler(request)

            app.middlewares.insert(0, count)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        port = _free_port(self.ports.get(key))
        site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        self._runners.append(runner)
        self.ports[key] = port
        return port

    async def start(self) -> None:
        from . import cs, nas, oss, sts

        await self.create_kube_cluster(self.default_cluster_id)
        for cluster_id in cs.load_clusters(self):
            if cluster_id != self.default_cluster_id:
                await self.create_kube_cluster(cluster_id)
        await self._serve("oss", oss.make_app(self.data_dir / "oss", credentials=self.oss_credentials,
                                              accounts=self.accounts, temporary=self.temporary_keys,
                                              region=self.region, faults=self.faults))
        await self._serve("sts", sts.make_app(ram=self.ram, providers=self.oidc_provider,
                                              keys=self.temporary_keys, faults=self.faults))
        await self._serve("cs", cs.make_app(self))
        await self._serve("nas", nas.make_app(self))
        await self._serve("control", self._control_app())
        self._save_meta()
        self.write_files()

    async def stop(self) -> None:
        for runner in reversed(self._runners):
            with contextlib.suppress(Exception):
                await runner.cleanup()
        self._runners.clear()
        for cluster_id in list(self.kube_clusters):
            cluster = self.kube_clusters.pop(cluster_id)
            await cluster.stop()

    # ------------------------------------------------------------------ files for clients

    def endpoints(self) -> dict[str, Any]:
        cluster = self.default_cluster
        return {
            "region": self.region,
            "access_key_id": self.access_key_id,
            "access_key_secret": self.access_key_secret,
            "zone_id": self.meta["zone_id"],
            "vpc_id": self.meta["vpc_id"],
            "vswitch_id": self.meta["vswitch_id"],
            "kubernetes": {
                "server": cluster.url,
                "certificate_authority": str(cluster.ca_file),
                "token": cluster.token,
                "kubeconfig": str(self.data_dir / "kubeconfig"),
                "cluster_id": self.default_cluster_id,
                "cluster_name": cluster.name,
            },
            "oss": {"endpoint": f"http://127.0.0.1:{self.ports['oss']}"},
            "cs": {"endpoint": f"127.0.0.1:{self.ports['cs']}", "protocol": "http"},
            "nas": {"endpoint": f"127.0.0.1:{self.ports['nas']}", "protocol": "http"},
            # STS (AssumeRoleWithOIDC, for pods using RRSA): plain http, so the scheme is part of the endpoint
            "sts": {"endpoint": f"http://127.0.0.1:{self.ports['sts']}"},
            "control": {"endpoint": f"http://127.0.0.1:{self.ports['control']}", "token": self.control_token},
            # Another account's key pair (tests: buckets owned by someone else). Not used by the pipeline.
            "other_account": {**self.meta["other_account"], "account_id": OTHER_ACCOUNT_ID},
        }

    def write_files(self) -> None:
        self._write_private(self.data_dir / "kubeconfig",
                            yaml.safe_dump(self.default_cluster.kubeconfig(), sort_keys=False))
        self._write_private(self.data_dir / "endpoints.json", json.dumps(self.endpoints(), indent=2))

    # ------------------------------------------------------------------ control endpoint

    @property
    def control_token(self) -> str:
        """The bearer token for writes to the control endpoint (in endpoints.json, mode 0600)."""
        token = self.meta.get("control_token")
        if not token:
            token = self.meta["control_token"] = secrets.token_hex(16)
            self._save_meta()
        return str(token)

    def _check_control_token(self, request: web.Request) -> web.Response | None:
        """Writes need `Authorization: Bearer <control.token>`: whoever can read endpoints.json may change knobs,
        other local users may not."""
        sent = request.headers.get("Authorization", "")
        if secrets.compare_digest(sent.encode(), f"Bearer {self.control_token}".encode()):
            return None
        return web.json_response({"error": "writes to the control endpoint need the header 'Authorization: Bearer "
                                           "<token>', the token being control.token in endpoints.json"}, status=401)

    def stats(self) -> dict[str, Any]:
        return {
            "peak_rss_mb": own_peak_rss_mb(),
            "services": {name: {"requests": n, "operations": dict(sorted(self.service_routes.get(name, {}).items()))}
                         for name, n in sorted(self.service_requests.items())},
            "clusters": {
                cid: {"url": c.url, "requests": c.request_count,
                      "objects": {p: len(objs) for p, objs in c.store.objects.items() if objs}}
                for cid, c in self.kube_clusters.items()
            },
        }

    def _control_app(self) -> web.Application:
        app = web.Application()

        async def healthz(_: web.Request) -> web.Response:
            return web.json_response({"status": "ok"})

        async def get_faults(_: web.Request) -> web.Response:
            return web.json_response({k: v for k, v in self.faults.as_dict().items() if not k.startswith("_")})

        async def put_faults(request: web.Request) -> web.Response:
            denied = self._check_control_token(request)
            if denied is not None:
                return denied
            try:
                self.faults.update(await _json_object(request))
            except (ValueError, TypeError) as exc:
                return web.json_response({"error": str(exc)}, status=400)
            return await get_faults(request)

        async def get_settings(_: web.Request) -> web.Response:
            return web.json_response(asdict(self.settings))

        async def put_settings(request: web.Request) -> web.Response:
            denied = self._check_control_token(request)
            if denied is not None:
                return denied
            try:
                apply_settings(self.settings, await _json_object(request))
            except (ValueError, TypeError) as exc:
                return web.json_response({"error": str(exc)}, status=400)
            return await get_settings(request)

        async def stats(_: web.Request) -> web.Response:
            return web.json_response(self.stats())

        app.router.add_get("/healthz", healthz)
        app.router.add_get("/faults", get_faults)
        app.router.add_put("/faults", put_faults)
        app.router.add_get("/settings", get_settings)
        app.router.add_put("/settings", put_settings)
        app.router.add_get("/stats", stats)

        async def get_roles(_: web.Request) -> web.Response:
            return web.json_response(self.ram.roles)

        async def put_role(request: web.Request) -> web.Response:
            denied = self._check_control_token(request)
            if denied is not None:
                return denied
            try:
                body = await _json_object(request)
                role = self.ram.put_role(request.match_info["name"], body.get("trust_policy"),
                                         int(body.get("max_session_s", 3600)))
            except (ValueError, TypeError) as exc:
                return web.json_response({"error": str(exc)}, status=400)
            return web.json_response(role)

        async def delete_role(request: web.Request) -> web.Response:
            denied = self._check_control_token(request)
            if denied is not None:
                return denied
            found = self.ram.delete_role(request.match_info["name"])
            return web.json_response({"deleted": found}, status=200 if found else 404)

        app.router.add_get("/ram/roles", get_roles)
        app.router.add_put("/ram/roles/{name}", put_role)
        app.router.add_delete("/ram/roles/{name}", delete_role)
        return app


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as exc:
        raise ValueError(f"the body must be a JSON object: {exc}") from exc
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object, e.g. {\"cluster_create_delay_s\": 0}")
    return body


def apply_settings(settings: Settings, values: dict[str, Any]) -> None:
    """Change settings from JSON values; `node.<field>` reaches the virtual node's scalar knobs (e.g.
    `node.backoff_scale`). All or nothing: ValueError naming the first bad key or value."""
    from .faults import _convert

    changes: list[tuple[Any, str, Any]] = []
    for key, value in values.items():
        target: Any = settings
        name = key
        if key.startswith("node."):
            target, name = settings.node, key[len("node."):]
        if name in ("node", "extra", "name") or name.startswith("_") or not hasattr(target, name):
            known = [f"{k}" for k in asdict(settings) if k != "node"] + [
                f"node.{k}" for k in asdict(settings.node) if k not in ("extra", "name")]
            raise ValueError(f"unknown or read-only setting {key!r}; known: {', '.join(known)}")
        try:
            changes.append((target, name, _convert(name, getattr(target, name), value)))
        except ValueError as exc:
            raise ValueError(str(exc).replace("fault knob", "setting")) from exc
    for target, name, value in changes:
        setattr(target, name, value)


class SandboxThread:
    """Run a Sandbox on its own event loop in a background thread (for tests and scripts).

    >>> with SandboxThread(tmp_path) as sb:
    ...     endpoints = sb.endpoints()
    """

    def __init__(self, data_dir: Path | str, **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="sandbox", daemon=True)
        self._kwargs = kwargs
        self._data_dir = data_dir
        self.sandbox: Sandbox | None = None

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run(self, fn: Any, *args: Any) -> Any:
        """Run a plain function on the sandbox's loop (the store is not thread-safe)."""
        async def wrapper() -> Any:
            return fn(*args)
        return self.call(wrapper())

    def __enter__(self) -> Sandbox:
        self._thread.start()

        async def make() -> Sandbox:
            sb = Sandbox(self._data_dir, **self._kwargs)
            await sb.start()
            return sb

        self.sandbox = self.call(make())
        return self.sandbox

    def __exit__(self, *exc: object) -> None:
        if self.sandbox is not None:
            self.call(self.sandbox.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()
