"""ACS3-HMAC-SHA256 replay protection on the sandbox's CS and NAS endpoints (sandbox/acs3.py).

A request signed by the unmodified tea SDK is captured on its way out (a one-shot local listener stands in
for the endpoint), then sent to the session sandbox as it was: once it works, twice it is a replay. Requests
without the signed date or nonce are refused.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest
from aiohttp import web
from alibabacloud_cs20151215 import models as cs
from alibabacloud_cs20151215.client import Client as CSClient
from alibabacloud_tea_openapi.models import Config

from sandbox.acs3 import MAX_CLOCK_SKEW_S, NonceCache


def _capture_signed_request(endpoints: dict[str, Any]) -> dict[str, Any]:
    """One DescribeClustersForRegion call, signed by the SDK, recorded instead of answered."""
    captured: dict[str, Any] = {}
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    port_box: list[int] = []

    async def record(request: web.Request) -> web.Response:
        captured.update(method=request.method, path=request.raw_path, headers=dict(request.headers),
                        body=await request.read())
        return web.json_response({"Code": "Captured", "Message": "captured"}, status=400)

    async def start() -> web.AppRunner:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_box.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        return runner

    def serve() -> None:
        runner = loop.run_until_complete(start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    client = CSClient(Config(access_key_id=endpoints["access_key_id"], access_key_secret=endpoints[
        "access_key_secret"], region_id=endpoints["region"], endpoint=f"127.0.0.1:{port_box[0]}", protocol="http",
        read_timeout=5000, connect_timeout=3000))
    with pytest.raises(Exception, match="Captured"):
        client.describe_clusters_for_region(endpoints["region"], cs.DescribeClustersForRegionRequest())
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    return captured


def _send(endpoint: str, captured: dict[str, Any], drop: tuple[str, ...] = ()) -> tuple[int, dict[str, Any]]:
    headers = {k: v for k, v in captured["headers"].items()
               if k.lower() not in ("content-length", "connection", "accept-encoding") + drop}
    request = urllib.request.Request(f"http://{endpoint}{captured['path']}", data=captured["body"] or None,
                                     method=captured["method"], headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_signed_request_replayed_is_refused(sandbox: Any) -> None:
    endpoints = sandbox.sandbox.endpoints()
    captured = _capture_signed_request(endpoints)
    assert "x-acs-signature-nonce" in {k.lower() for k in captured["headers"]}
    status, body = _send(endpoints["cs"]["endpoint"], captured)
    assert status == 200 and "clusters" in body
    status, body = _send(endpoints["cs"]["endpoint"], captured)
    assert (status, body["Code"]) == (400, "SignatureNonceUsed")
    status, body = _send(endpoints["cs"]["endpoint"], captured, drop=("x-acs-signature-nonce",))
    assert (status, body["Code"]) == (400, "MissingSignatureNonce")
    status, body = _send(endpoints["cs"]["endpoint"], captured, drop=("x-acs-date",))
    assert (status, body["Code"]) == (400, "MissingTimestamp")


def test_nonce_window() -> None:
    cache = NonceCache()
    assert cache.use("n1", 1000.0)
    assert not cache.use("n1", 1000.0 + MAX_CLOCK_SKEW_S - 1)  # within the window: a replay
    assert cache.use("n1", 1000.0 + MAX_CLOCK_SKEW_S + 1)  # the date check refuses such old requests anyway
