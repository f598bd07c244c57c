"""Container Service errors in the CS (ROA) shape: `{"code","message","requestId","status"}`.

The SDK turns any 4xx into `ClientException(code=...)` and any 5xx into `ServerException`, reading `code`
and `message` from this body, so the codes here are what production code sees and branches on.
"""

from __future__ import annotations

from aiohttp import web

from ..acs3 import json_response, new_request_id


class CsError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def invalid(message: str) -> CsError:
    return CsError(400, "InvalidParameter", message)


def not_found(cluster_id: str) -> CsError:
    return CsError(404, "ErrorClusterNotFound", f"The specified cluster {cluster_id} does not exist.")


def render(status: int, code: str, message: str) -> web.Response:
    request_id = new_request_id()
    return json_response({"code": code, "message": message, "requestId": request_id, "status": status},
                         status=status, request_id=request_id)


# Fault-injected statuses, answered as the gateway answers overload (no `x-acs-retry-after` header: with
# it tea raises ThrottlingException, which is not a ClientException/ServerException subclass).
FAULT_CODES: dict[int, tuple[str, str]] = {
    429: ("Throttling.User", "Request was denied due to user flow control."),
    500: ("InternalError", "The request processing has failed due to some unknown error, exception or failure."),
    503: ("ServiceUnavailable", "The request has failed due to a temporary failure of the server."),
}


def fault_responder(_: web.Request, status: int, message: str) -> web.Response:
    code, text = FAULT_CODES.get(status, ("InternalError" if status >= 500 else "Throttling", message))
    return render(status, code, text)
