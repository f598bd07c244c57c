"""HTTP routes of the sandbox Container Service (ROA style: the route is method + path).

DescribeClusters (`GET /clusters`) and DescribeClustersV1 (`GET /api/v1/clusters`) are answered as the
decommissioned APIs now answer: "permanently disabled and inaccessible" means the gateway no longer knows
them, so they get its 404 `InvalidAction.NotFound`, with a message naming the replacement,
DescribeClustersForRegion (`GET /regions/{region_id}/clusters`). Code that still calls them fails here
the way it will fail in production after the 2026 rollout.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ..acs3 import gateway_error, json_response, new_request_id
from . import views
from .errors import CsError, invalid
from .service import ClusterService

DELETE_RESOURCE_TYPES = ("SLB", "ALB", "SLS_Data", "SLS_ControlPlane", "PrivateZone")
SERVICE: web.AppKey[ClusterService] = web.AppKey("cs_service", ClusterService)


def _svc(request: web.Request) -> ClusterService:
    return request.app[SERVICE]


def _int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid(f"{name} must be an integer, got {raw!r}.") from None
    if not low <= value <= high:
        raise invalid(f"{name} must be between {low} and {high}.")
    return value


async def create_cluster(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        raise invalid("The request body is not valid JSON.") from None
    rec = _svc(request).create(body)
    return json_response({"cluster_id": rec["cluster_id"], "request_id": new_request_id(),
                          "task_id": rec["task_id"]})


async def describe_clusters_for_region(request: web.Request) -> web.Response:
    svc = _svc(request)
    q = request.query
    page_number = _int(request, "page_number", 1, 1, 1_000_000)
    page_size = _int(request, "page_size", 10, 1, 100)
    region = request.match_info["region_id"]
    rows = [r for r in svc.store.live() if r["region_id"] == region]
    if q.get("name"):
        rows = [r for r in rows if q["name"] in r["name"]]  # fuzzy (substring) match, as documented
    for key in ("cluster_type", "profile", "cluster_spec", "cluster_id"):
        if q.get(key):
            rows = [r for r in rows if r[key] == q[key]]
    page = rows[(page_number - 1) * page_size: page_number * page_size]
    return json_response({
        "clusters": [views.list_item(r) for r in page],
        "page_info": {"page_number": page_number, "page_size": page_size, "total_count": len(rows)},
    })


def _decommissioned(name: str, path: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        return gateway_error(
            request, 404, "InvalidAction.NotFound",
            f"Specified api is not found, please check your url and method. {name} (GET {path}) has been "
            "decommissioned; use DescribeClustersForRegion (GET /regions/{region_id}/clusters) instead.")
    return handler


async def describe_cluster_detail(request: web.Request) -> web.Response:
    svc = _svc(request)
    cid = request.match_info["cluster_id"]
    rec = svc.get(cid)
    kube = svc.kube(cid)
    return json_response(views.detail(rec, kube.url if kube is not None else None))


async def describe_task_info(request: web.Request) -> web.Response:
    task_id = request.match_info["task_id"]
    task = _svc(request).store.tasks.get(task_id)
    if task is None:
        raise CsError(404, "ErrorTaskNotFound", f"The specified task {task_id} does not exist.")
    return json_response(views.task_view(task))


async def describe_user_kubeconfig(request: web.Request) -> web.Response:
    svc = _svc(request)
    cid = request.match_info["cluster_id"]
    rec = svc.get(cid)
    private_ip = views.parse_bool(request.query.get("PrivateIpAddress"), "PrivateIpAddress", False)
    return json_response(views.kubeconfig(rec, svc.kube(cid), private_ip,
                                          request.query.get("TemporaryDurationMinutes")))


def _json_list(request: web.Request, name: str) -> list[Any]:
    raw = request.query.get(name)
    if raw in (None, ""):
        return []
    try:
        value = json.loads(raw)
    except ValueError:
        raise invalid(f"{name} must be a JSON-encoded list.") from None
    if not isinstance(value, list):
        raise invalid(f"{name} must be a JSON-encoded list.")
    return value


async def delete_cluster(request: web.Request) -> web.Response:
    delete_options = _json_list(request, "delete_options")
    for opt in delete_options:
        if (not isinstance(opt, dict) or opt.get("resource_type") not in DELETE_RESOURCE_TYPES
                or opt.get("delete_mode") not in ("delete", "retain")):
            raise invalid(f"Invalid delete_options entry {opt!r}: resource_type one of "
                          f"{', '.join(DELETE_RESOURCE_TYPES)}, delete_mode delete or retain.")
    options = {
        "retain_all_resources": views.parse_bool(request.query.get("retain_all_resources"),
                                                 "retain_all_resources", False),
        "keep_slb": views.parse_bool(request.query.get("keep_slb"), "keep_slb", False),
        "retain_resources": _json_list(request, "retain_resources"),
        "delete_options": delete_options,
    }
    cid = request.match_info["cluster_id"]
    rec = _svc(request).delete(cid, options)
    return json_response({"cluster_id": cid, "request_id": new_request_id(), "task_id": rec["delete_task_id"]},
                         status=202)


@web.middleware
async def errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    from .errors import render

    try:
        return await handler(request)
    except CsError as err:
        return render(err.status, err.code, err.message)
    except web.HTTPNotFound:
        return gateway_error(request, 404, "InvalidAction.NotFound",
                             "Specified api is not found, please check your url and method.")
    except web.HTTPMethodNotAllowed:
        return gateway_error(request, 404, "InvalidAction.NotFound",
                             "Specified api is not found, please check your url and method.")


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/clusters", create_cluster)
    r.add_get("/clusters", _decommissioned("DescribeClusters", "/clusters"))
    r.add_get("/api/v1/clusters", _decommissioned("DescribeClustersV1", "/api/v1/clusters"))
    r.add_get("/regions/{region_id}/clusters", describe_clusters_for_region)
    r.add_get("/clusters/{cluster_id}", describe_cluster_detail)
    r.add_delete("/clusters/{cluster_id}", delete_cluster)
    r.add_get("/tasks/{task_id}", describe_task_info)
    r.add_get("/k8s/{cluster_id}/user_config", describe_user_kubeconfig)
