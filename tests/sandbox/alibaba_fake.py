"""A minimal stand-in for the sandbox object that `sandbox.cs.make_app` / `sandbox.nas.make_app` receive.

It implements exactly the contract the CS and NAS servers rely on (data_dir, region, credentials, faults,
settings, kube clusters, default cluster id) with real `KubeCluster`s, so these tests do not depend on the
full `sandbox.server.Sandbox` (which also needs OSS and every Kubernetes controller).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from aiohttp import web

from sandbox.faults import Faults
from sandbox.k8s.cluster import KubeCluster

for _var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_var, None)

AK = "LTAIsandboxTestKey00000"
SK = "sandboxTestSecret000000000000000"
HAVE_K8S_API = importlib.util.find_spec("sandbox.k8s.api") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def patch_kube(monkeypatch: Any) -> None:
    """Run KubeClusters without controllers; without an API module, give them a port but no server."""
    monkeypatch.setattr(KubeCluster, "_controller_classes", lambda self: [])
    if not HAVE_K8S_API:
        async def start(self: KubeCluster) -> None:
            self.port = self.port or _free_port()

        async def stop(self: KubeCluster) -> None:
            return None

        monkeypatch.setattr(KubeCluster, "start", start)
        monkeypatch.setattr(KubeCluster, "stop", stop)


class FakeSandbox:
    def __init__(self, data_dir: Path, *, default_cluster_id: str | None = None, region: str = "cn-sandbox"):
        self.data_dir = data_dir
        self.region = region
        self.credentials = {AK: SK}
        self.faults = Faults(seed=1)
        self.settings = SimpleNamespace(cluster_create_delay_s=0.3, cluster_fail_next=False,
                                        cluster_delete_delay_s=0.2, nas_ready_delay_s=0.2)
        self.kube_clusters: dict[str, KubeCluster] = {}
        self.default_cluster_id = default_cluster_id or "c" + secrets.token_hex(16)

    async def create_kube_cluster(self, cluster_id: str, flavour: str = "ask", rrsa: bool = False) -> KubeCluster:
        if cluster_id in self.kube_clusters:
            return self.kube_clusters[cluster_id]
        kc = KubeCluster(cluster_id, self.data_dir / "clusters" / cluster_id, flavour=flavour)
        await kc.start()
        self.kube_clusters[cluster_id] = kc
        return kc

    async def delete_kube_cluster(self, cluster_id: str) -> None:
        kc = self.kube_clusters.pop(cluster_id, None)
        if kc is not None:
            await kc.stop()

    async def close(self) -> None:
        for cid in list(self.kube_clusters):
            await self.delete_kube_cluster(cid)


async def serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None and server.sockets
    return runner, int(server.sockets[0].getsockname()[1])


def tea_config(port: int, *, key: str = AK, secret: str = SK) -> Any:
    from alibabacloud_tea_openapi.models import Config

    return Config(access_key_id=key, access_key_secret=secret, endpoint=f"127.0.0.1:{port}", protocol="http",
                  connect_timeout=2000, read_timeout=10000)


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    """Poll an async condition until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)
