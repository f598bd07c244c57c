"""NAS errors in the RPC shape `{"RequestId","HostId","Code","Message","Recommend"}` with the HTTP status.

Codes follow Alibaba's NAS error list where it is known (`InvalidFileSystem.NotFound` 404,
`InvalidMountTarget.NotFound` 404, `InvalidFileSystemStatus.Ordering` for a file system that is still
being created, `InvalidParam.*`), and the gateway's generic ones for missing parameters
(`Missing<Param>`: "<Param> is mandatory for this action.").
"""

from __future__ import annotations

from aiohttp import web

from ..acs3 import gateway_error
from ..cs.errors import FAULT_CODES


class NasError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def missing(param: str) -> NasError:
    return NasError(400, f"Missing{param}", f"{param} is mandatory for this action.")


def invalid(param: str, message: str) -> NasError:
    return NasError(400, f"InvalidParam.{param}", message)


def fs_not_found(fs_id: str) -> NasError:
    return NasError(404, "InvalidFileSystem.NotFound", f"The specified file system {fs_id} does not exist.")


def mt_not_found(domain: str) -> NasError:
    return NasError(404, "InvalidMountTarget.NotFound", f"The specified mount target {domain} does not exist.")


def fault_responder(request: web.Request, status: int, message: str) -> web.Response:
    code, text = FAULT_CODES.get(status, ("InternalError" if status >= 500 else "Throttling", message))
    return gateway_error(request, status, code, text)
