"""One sandbox Kubernetes cluster: a store, its API server, its controllers and its virtual node.

The controllers and the node talk to the store through its public methods (create/update/delete/watch),
the same operations the HTTP API exposes, with the same admission and the same watch events; they never
change stored dicts behind its back. They are in-process rather than HTTP clients only to keep a
10,000-pod Job fast on a 2-core machine.

The API server speaks https only (as ASK's does), with a certificate from the CA in `tls_dir` (see
`tls.py`; a sandbox shares one CA between all its clusters); kubeconfigs carry that CA as
`certificate-authority-data` and a bearer token, which every request must present.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from ..faults import Faults
from .satokens import API_AUDIENCE, TokenIssuer
from .store import Obj, Store, now_iso
from .tls import ServerTLS, ensure_server_tls

log = logging.getLogger("sandbox.k8s")

EVENT_TTL_S = 3600.0  # kube-apiserver's --event-ttl default (1h)


def _acs_provider() -> Any:
    from .acs import AcsProvider

    return AcsProvider()


@dataclass
class NodeConfig:
    """The virtual node's capacity (like ASK's virtual-kubelet node)."""

    name: str = "virtual-kubelet-cn-sandbox-a"
    cpu: str = "64"
    memory: str = "256Gi"
    pods: int = 1000
    zone: str = "cn-sandbox-a"
    region: str = "cn-sandbox"
    # seconds of pod-failure backoff before the Job controller replaces a failed pod (real: 10s doubling)
    failure_backoff_s: float = 0.0
    # multiplies the kubelet's back-offs (container restarts of restartPolicy OnFailure/Always, image pulls):
    # 1.0 is Kubernetes' own 10 s doubling to 5 min; tests set e.g. 0.01. Read at each back-off, so
    # `PUT /settings {"node.backoff_scale": ...}` applies to the running sandbox.
    backoff_scale: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)


class Controller(Protocol):
    """A control loop. Constructed with the cluster; `run()` works until cancelled."""

    def __init__(self, cluster: KubeCluster) -> None: ...

    async def run(self) -> None: ...


class KubeCluster:
    def __init__(
        self,
        name: str,
        data_dir: Path,
        *,
        faults: Faults | None = None,
        node: NodeConfig | None = None,
        token: str | None = None,
        port: int = 0,
        tls_dir: Path | None = None,
        flavour: str = "ask",
        sa_issuer: str | None = None,
        event_ttl: float = EVENT_TTL_S,
    ) -> None:
        self.name = name
        # "acs": ACS pod admission and virtual node (see acs.py); None on ASK clusters
        self.acs = _acs_provider() if flavour == "acs" else None
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.faults = faults or Faults()
        self.node = node or NodeConfig()
        self.token = token or secrets.token_hex(16)
        self.port = port
        # the CA + server certificate (created on first use; shared when several clusters get the same dir)
        self.tls: ServerTLS = ensure_server_tls(tls_dir if tls_dir is not None else data_dir / "tls")
        # Events expire `event_ttl` seconds after their last write, as with kube-apiserver's --event-ttl
        self.store = Store(state_file=data_dir / "state.json", admission=self._admission(),
                           ttl={"events": event_ttl})
        # signs projected service-account tokens (satokens.py); the sandbox gives each cluster its RRSA issuer
        self.tokens = TokenIssuer(data_dir / "sa-signing.key", sa_issuer or API_AUDIENCE)
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self.controllers: list[Any] = []
        self.request_count = 0  # API requests served (benchmarks read it)
        # Resolves a CSI PersistentVolume to a host directory: (driver, volumeHandle, volumeAttributes)
        # -> Path, or None when the driver is unknown. The sandbox plugs NAS in here (part 2).
        self.csi_resolver: Callable[[str, str, dict[str, str]], Path | None] | None = None
        # (involved uid, reason, message) -> event name, so repeats bump `count` (the recorder's aggregation)
        self._event_names: dict[tuple[Any, str, str], str] = {}
        self._last_event_nanos = 0

    # -------------------------------------------------------------- wiring

    def _admission(self) -> Any:
        try:
            from .admission import admit
        except ImportError:  # pragma: no cover - during bring-up
            return None
        from .serviceaccounts import admit_pod as admit_service_account

        def admission(plural: str, op: str, obj: Obj, old: Obj | None) -> None:
            admit(plural, op, obj, old)
            if plural == "pods":  # the ServiceAccount admission plugin (needs the store: serviceaccounts.py)
                admit_service_account(self.store, op, obj)

        if self.acs is not None:
            from .acs import wrap_admission

            return wrap_admission(admission)
        return admission

    def _controller_classes(self) -> list[type]:
        from .controllers.gc import GarbageCollector
        from .controllers.jobs import JobController
        from .controllers.namespaces import NamespaceController
        from .controllers.pv import PersistentVolumeController
        from .node.kubelet import VirtualNode
        from .node.scheduler import Scheduler
        from .serviceaccounts import ServiceAccountController

        return [NamespaceController, ServiceAccountController, GarbageCollector, JobController,
                PersistentVolumeController, Scheduler, VirtualNode]

    def _bootstrap(self) -> None:
        """Objects every cluster starts with."""
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            if self.store.peek("namespaces", None, ns) is None:
                self.store.create("namespaces", {"metadata": {"name": ns}})
            if self.store.peek("serviceaccounts", ns, "default") is None:
                self.store.create("serviceaccounts", {"metadata": {"name": "default"}}, namespace=ns)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path:
        """The CA certificate that signed this API server's certificate (PEM)."""
        return self.tls.ca_cert

    async def start(self) -> None:
        from .api import make_app

        self._bootstrap()
        app = make_app(self)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None,
                                     shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True,
                           ssl_context=self.tls.ssl_context())
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]
        for cls in self._controller_classes():
            controller = cls(self)
            self.controllers.append(controller)
            self._tasks.append(asyncio.create_task(self._supervise(controller), name=cls.__name__))
        self._tasks.append(asyncio.create_task(self._saver(), name="saver"))

    async def _supervise(self, controller: Any) -> None:
        """Keep a controller running: a crash is logged and the loop restarts, as a real one would."""
        while True:
            try:
                await controller.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("controller %s crashed; restarting", type(controller).__name__)
                await asyncio.sleep(0.2)

    async def _saver(self) -> None:
        """Once a second: expire events past their TTL, and save the state (spaced out when it is large)."""
        while True:
            await asyncio.sleep(1.0)
            self.store.expire()
            self.store.save(force=False)

    async def stop(self) -> None:
        for controller in self.controllers:
            stop = getattr(controller, "stop", None)
            if stop is not None:
                with contextlib.suppress(Exception):
                    await stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            # Cancel until it is done: a cancellation can be lost (asyncio.wait_for on 3.11 swallows one that
            # races with its inner future), and stop() must not hang on a loop that missed it.
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for watcher in list(self.store.watchers):
            watcher.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.store.save()

    # -------------------------------------------------------------- helpers for controllers

    def kubeconfig(self, *, user: str = "sandbox-admin", server: str | None = None) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": self.name, "cluster": {
                "server": server or self.url,
                "certificate-authority-data": base64.b64encode(self.tls.ca_pem()).decode(),
            }}],
            "users": [{"name": user, "user": {"token": self.token}}],
            "contexts": [{"name": self.name, "context": {"cluster": self.name, "user": user,
                                                         "namespace": "default"}}],
            "current-context": self.name,
            "preferences": {},
        }

    def record_event(
        self,
        obj: Obj,
        reason: str,
        message: str,
        *,
        type_: str = "Normal",
        component: str = "sandbox",
    ) -> None:
        """Write a core/v1 Event about `obj`, merging repeats as the real event recorder does."""
        meta = obj.get("metadata", {})
        namespace = meta.get("namespace") or "default"
        if self.store.peek("namespaces", None, namespace) is None:
            return
        # Named as client-go's recorder names them, `<object>.<unix nanos in hex>`, so one object's events
        # list in the order they happened (lists are in name order, as etcd's keys are).
        key = (meta.get("uid"), reason, message)
        name = self._event_names.get(key)
        existing = self.store.peek("events", namespace, name) if name else None
        if existing is None:
            nanos = max(time.time_ns(), self._last_event_nanos + 1)
            self._last_event_nanos = nanos
            name = f"{meta.get('name', 'x')}.{nanos:x}"
            if len(self._event_names) > 100_000:
                self._event_names.clear()
            self._event_names[key] = name
        ts = now_iso()
        if existing is not None and name:
            def bump(ev: Obj) -> None:
                ev["count"] = ev.get("count", 1) + 1
                ev["lastTimestamp"] = ts
            with contextlib.suppress(Exception):
                self.store.mutate("events", namespace, name, bump)
            return
        event = {
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {
                "kind": obj.get("kind"),
                "apiVersion": obj.get("apiVersion"),
                "namespace": meta.get("namespace"),
                "name": meta.get("name"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": component},
            "reportingComponent": component,
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "count": 1,
        }
        with contextlib.suppress(Exception):
            self.store.create("events", event, namespace=namespace)

    def controller(self, cls_name: str) -> Any:
        for c in self.controllers:
            if type(c).__name__ == cls_name:
                return c
        raise KeyError(cls_name)
