"""RPC dispatch for the sandbox NAS: one route, the action from the `x-acs-action` header."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..acs3 import gateway_error, json_response, new_request_id
from .errors import NasError
from .service import NasService

VERSION = "2017-06-26"
SERVICE: web.AppKey[NasService] = web.AppKey("nas_service", NasService)

ACTIONS: dict[str, Callable[[NasService, dict[str, str]], dict[str, Any]]] = {
    "CreateFileSystem": NasService.create_file_system,
    "DescribeFileSystems": NasService.describe_file_systems,
    "DeleteFileSystem": NasService.delete_file_system,
    "CreateMountTarget": NasService.create_mount_target,
    "DescribeMountTargets": NasService.describe_mount_targets,
    "DeleteMountTarget": NasService.delete_mount_target,
}


async def dispatch(request: web.Request) -> web.Response:
    action = request.headers.get("x-acs-action", "")
    operation = ACTIONS.get(action)
    if request.method not in ("POST", "GET") or request.path != "/" or operation is None:
        return gateway_error(request, 404, "InvalidAction.NotFound",
                             "Specified api is not found, please check your url and method.")
    if request.headers.get("x-acs-version", VERSION) != VERSION:
        return gateway_error(request, 400, "InvalidVersion", "Specified parameter Version is not valid.")
    params = dict(request.query)
    try:
        body = operation(request.app[SERVICE], params)
    except NasError as err:
        return gateway_error(request, err.status, err.code, err.message)
    request_id = new_request_id()
    return json_response({**body, "RequestId": request_id}, request_id=request_id)
