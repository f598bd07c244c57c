"""Sandbox Alibaba Cloud NAS (API 2017-06-26, RPC style) for the unmodified `alibabacloud_nas20170626` SDK.

tea sends every NAS call as `POST /?Param=...` with an empty body; the action travels only in the
`x-acs-action` header (no `Action=` parameter) and the region only in the host name. Requests are verified
with ACS3-HMAC-SHA256 against `sb.credentials`; fault knobs (`sb.faults`, service "nas") apply first.

State persists in `sb.data_dir/nas/state.json`; each file system's files live in `sb.data_dir/nas/<id>/`.
`resolve(sb, server, path)` is how the sandbox Kubernetes mounts a NAS CSI volume
(`nasplugin.csi.alibabacloud.com`, volumeAttributes `server` + `path`): it maps an *Active* mount target
domain and a path to the host directory, creating it as the CSI plugin does.

Knob read from `sb.settings` (getattr with default): `nas_ready_delay_s` (0.5) — time a file system stays
`Pending` before `Running`, a mount target `Pending` before `Active`, and a deleted mount target `Deleting`.
"""

from __future__ import annotations

import contextlib
import weakref
from pathlib import Path
from typing import Any

from aiohttp import web

from .. import acs3
from ..faults import fault_middleware
from .errors import fault_responder
from .handlers import SERVICE, dispatch
from .service import NasService
from .store import NasStore

__all__ = ["make_app", "resolve"]

DEFAULT_READY_DELAY_S = 0.5
_services: weakref.WeakKeyDictionary[Any, NasService] = weakref.WeakKeyDictionary()


def _service(sb: Any) -> NasService:
    """One service (one in-memory store) per sandbox, shared by its app and `resolve`."""
    try:
        service = _services.get(sb)
    except TypeError:  # sb cannot be weakly referenced: fall back to a fresh view of the persisted state
        service = None
    if service is None:
        meta = getattr(sb, "meta", None) or {}
        service = NasService(
            NasStore(Path(sb.data_dir) / "nas"), sb.region,
            ready_delay_s=lambda: getattr(getattr(sb, "settings", None), "nas_ready_delay_s", DEFAULT_READY_DELAY_S),
            default_zone=meta.get("zone_id", f"{sb.region}-a"),
        )
        with contextlib.suppress(TypeError):
            _services[sb] = service
    return service


def make_app(sb: Any) -> web.Application:
    app = web.Application(middlewares=[
        fault_middleware(sb.faults, "nas", fault_responder),
        acs3.middleware(sb.credentials),
    ])
    app[SERVICE] = _service(sb)
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app


def resolve(sb: Any, server_domain: str, path: str) -> Path | None:
    """Host directory behind `server_domain:path`, or None unless that mount target exists and is Active."""
    service = _service(sb)
    store = service.store
    store.refresh()
    domain = server_domain.strip().rstrip(":").lower()
    for fs_id, fs in store.file_systems.items():
        mt = fs["mount_targets"].get(domain)
        if mt is None:
            continue
        if store.mt_status(mt) != "Active":
            return None
        root = store.data_dir(fs_id).resolve()
        parts = [p for p in (path or "/").split("/") if p not in ("", ".")]
        if ".." in parts:
            return None
        target = root.joinpath(*parts)
        if not target.resolve().is_relative_to(root):  # e.g. a symlink written by a job
            return None
        target.mkdir(parents=True, exist_ok=True)
        return target
    return None
