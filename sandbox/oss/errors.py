"""OSS errors as the real service returns them: an XML `<Error>` body plus `x-oss-request-id` and `Date`.

The official SDK builds its `ServiceError` from this body and needs a `Date` header on every error
response (it parses it for clock-skew correction and fails with a DeserializationError otherwise).
The SDK retries on status >= 500, 401, 408 and 429, so auth failures use 403, as OSS does.
"""

from __future__ import annotations

import base64
import secrets
from email.utils import formatdate
from xml.etree import ElementTree as ET

from aiohttp import web

REQUEST_ID_KEY = web.RequestKey("oss_request_id", str)


def new_request_id() -> str:
    """24 upper-case hex characters, the shape of a real `x-oss-request-id`."""
    return secrets.token_hex(12).upper()


def request_id(request: web.Request) -> str:
    rid = request.get(REQUEST_ID_KEY)
    if rid is None:
        rid = new_request_id()
        request[REQUEST_ID_KEY] = rid
    return rid


def http_date() -> str:
    return formatdate(usegmt=True)


class OssError(Exception):
    """An OSS error answer. `extra` adds elements after HostId (Key, BucketName, StringToSign, ...)."""

    def __init__(self, status: int, code: str, message: str, **extra: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


# Frequently used errors, with the messages real OSS sends.
def no_such_bucket(bucket: str) -> OssError:
    return OssError(404, "NoSuchBucket", "The specified bucket does not exist.", BucketName=bucket)


def no_such_key(key: str) -> OssError:
    return OssError(404, "NoSuchKey", "The specified key does not exist.", Key=key, EC="0026-00000001")


def no_such_upload(upload_id: str) -> OssError:
    return OssError(
        404,
        "NoSuchUpload",
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been "
        "aborted or completed.",
        UploadId=upload_id,
    )


def invalid_argument(message: str, name: str = "", value: str = "") -> OssError:
    extra = {"ArgumentName": name, "ArgumentValue": value} if name else {}
    return OssError(400, "InvalidArgument", message, **extra)


def error_response(request: web.Request, err: OssError) -> web.Response:
    root = ET.Element("Error")
    ET.SubElement(root, "Code").text = err.code
    ET.SubElement(root, "Message").text = err.message
    ET.SubElement(root, "RequestId").text = request_id(request)
    ET.SubElement(root, "HostId").text = request.host or "oss.sandbox"
    for name, value in err.extra.items():
        ET.SubElement(root, name).text = value
    body = b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8")
    headers = {
        "x-oss-request-id": request_id(request),
        "Date": http_date(),
        "Server": "AliyunOSS",
    }
    if "EC" in err.extra:
        headers["x-oss-ec"] = err.extra["EC"]
    if request.method == "HEAD":
        # HEAD answers carry no body; like real OSS, the error XML travels base64-encoded in `x-oss-err`.
        headers["x-oss-err"] = base64.b64encode(body).decode()
        return web.Response(status=err.status, headers=headers, content_type="application/xml")
    return web.Response(status=err.status, body=body, headers=headers, content_type="application/xml")


# Codes/messages for fault-injected statuses. 503 ServiceUnavailable ("Thread pool is almost full, please
# retry later") and 429 QpsLimitExceeded ("Please reduce your request rate.") come from Alibaba's OSS
# docs pages "HTTP status code 503" / "HTTP status code 429". The 500 text is the common S3/OSS wording.
_FAULTS: dict[int, tuple[str, str]] = {
    500: ("InternalError", "We encountered an internal error. Please try again."),
    503: ("ServiceUnavailable", "Thread pool is almost full, please retry later"),
    429: ("QpsLimitExceeded", "Please reduce your request rate."),
}


def fault_responder(request: web.Request, status: int, _reason: str) -> web.StreamResponse:
    """`sandbox.faults` ErrorResponder: an injected error in OSS's own shape."""
    code, message = _FAULTS.get(status, ("InternalError", f"Injected fault (status {status})."))
    return error_response(request, OssError(status, code, message))
