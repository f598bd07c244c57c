"""The aiohttp application: middleware, authentication, and dispatch from (method, target, query) to an operation.

One catch-all route receives everything, because OSS addresses operations by sub-resource query keys
(`?uploads`, `?delete`, `?bucketInfo`, ...) on a bucket or object path rather than by URL path.
Authentication runs before any body is read, so a request with a bad signature writes nothing.
Sub-resources the sandbox does not emulate answer 501 NotImplemented instead of being mistaken for a
plain GET/PUT of the object.
"""

from __future__ import annotations

import logging
from collections import ChainMap
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from ..faults import Faults, fault_middleware
from . import bucket_ops, multipart_ops, object_ops
from .auth import V1_SUBRESOURCES, authenticate, check_security_token
from .context import ACCOUNT_KEY, BucketOwners, Service
from .errors import REQUEST_ID_KEY, OssError, error_response, fault_responder, new_request_id
from .routing import Target, resolve
from .storage import Storage

log = logging.getLogger("sandbox.oss")

Handler = Callable[[Service, web.Request, Target], Awaitable[web.StreamResponse]]
SERVICE_KEY = web.AppKey("oss_service", Service)
KEY_KEY = web.RequestKey("oss_object_key", str)

# Query keys that select an operation or modify one we implement; everything else in the sub-resource
# list (acl on objects, tagging, lifecycle, versioning, cors, ...) is a feature we do not emulate.
_HANDLED = {
    "bucketInfo", "location", "stat", "acl", "delete", "objectMeta", "uploads", "uploadId", "partNumber",
    "continuation-token", "security-token", "versionId",
    "x-oss-traffic-limit",  # a bandwidth cap: accepted (signed like any sub-resource), not enforced
    "response-content-type", "response-content-language", "response-expires", "response-cache-control",
    "response-content-disposition", "response-content-encoding",
}
_UNSUPPORTED = V1_SUBRESOURCES - _HANDLED


def _not_implemented(what: str) -> OssError:
    return OssError(501, "NotImplemented", f"{what} is not supported by the OSS sandbox.")


def _method_not_allowed(request: web.Request) -> OssError:
    return OssError(405, "MethodNotAllowed", "The specified method is not allowed against this resource.",
                    Method=request.method, ResourceType="Object" if KEY_KEY in request else "Bucket")


def _select(request: web.Request, t: Target) -> Handler:
    q = t.query
    method = request.method
    if "live" in q and method == "GET" and t.bucket is not None and t.key is None and len(q) <= 4:
        return bucket_ops.list_live_channels  # there are never any: LiveChannels are not emulated
    unsupported = sorted(k for k in q if k in _UNSUPPORTED)
    if unsupported:
        raise _not_implemented(f"The sub-resource {unsupported[0]!r}")
    if "x-oss-process" in q:
        raise _not_implemented("Data processing (x-oss-process)")
    if "versionId" in q and q["versionId"] not in ("", "null"):
        raise _not_implemented("Versioning")
    if t.bucket is None:
        if method == "GET":
            return bucket_ops.list_buckets
        raise _method_not_allowed(request)
    if t.key is None:
        match method:
            case "PUT":
                if "acl" in q:
                    raise _not_implemented("PutBucketAcl")
                return bucket_ops.put_bucket
            case "DELETE":
                return bucket_ops.delete_bucket
            case "POST" if "delete" in q:
                return bucket_ops.delete_multiple_objects
            case "GET" | "HEAD":
                if "bucketInfo" in q:
                    return bucket_ops.get_bucket_info
                if "acl" in q:
                    return bucket_ops.get_bucket_acl
                if "location" in q:
                    return bucket_ops.get_bucket_location
                if "stat" in q:
                    return bucket_ops.get_bucket_stat
                if "uploads" in q:
                    return multipart_ops.list_uploads
                if q.get("list-type") == "2":
                    return bucket_ops.list_objects_v2
                return bucket_ops.list_objects
        raise _method_not_allowed(request)
    if "acl" in q:
        raise _not_implemented("Object ACL")
    match method:
        case "PUT":
            if "uploadId" in q or "partNumber" in q:
                return multipart_ops.upload_part
            if "x-oss-copy-source" in request.headers:
                return object_ops.copy_object
            return object_ops.put_object
        case "GET":
            if "uploadId" in q:
                return multipart_ops.list_parts
            return object_ops.get_object
        case "HEAD":
            if "objectMeta" in q:
                return object_ops.get_object_meta
            return object_ops.head_object
        case "DELETE":
            if "uploadId" in q:
                return multipart_ops.abort
            return object_ops.delete_object
        case "POST":
            if "uploads" in q:
                return multipart_ops.initiate
            if "uploadId" in q:
                return multipart_ops.complete
    raise _method_not_allowed(request)


async def _dispatch(request: web.Request) -> web.StreamResponse:
    svc = request.app[SERVICE_KEY]
    target = resolve(request, svc.host_suffix, lambda name: name in svc.storage.buckets)
    if target.key is not None:
        request[KEY_KEY] = target.key
    credentials: Mapping[str, str] = svc.credentials
    if svc.temporary is not None:
        credentials = ChainMap(svc.credentials, svc.temporary)  # type: ignore[arg-type]
    access_key_id = authenticate(request, target, credentials, svc.region)
    if svc.temporary is not None and access_key_id not in svc.credentials:
        key = svc.temporary.get_key(access_key_id)
        if key is not None:
            check_security_token(request, target, key.security_token)
    handler = _select(request, target)
    if not (request.method == "PUT" and target.key is None and handler is bucket_ops.put_bucket):
        svc.check_owner(target.bucket, access_key_id)
    request[ACCOUNT_KEY] = svc.account_of(access_key_id)
    return await handler(svc, request, target)


@web.middleware
async def _oss_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
    """Outermost: give the request an id, and turn OssError (or any crash) into OSS error XML."""
    request[REQUEST_ID_KEY] = new_request_id()
    try:
        return await handler(request)
    except OssError as err:
        return error_response(request, err)
    except web.HTTPException:
        raise
    except (ConnectionResetError, OSError) as exc:
        log.debug("client went away: %s", exc)
        raise
    except Exception:
        log.exception("OSS sandbox: unhandled error in %s %s", request.method, request.path_qs)
        return error_response(request, OssError(500, "InternalError",
                                                "We encountered an internal error. Please try again."))


def make_app(
    data_dir: Path,
    *,
    credentials: dict[str, str],
    region: str,
    faults: Faults,
    host_suffix: str | None = None,
    accounts: dict[str, str] | None = None,
    temporary: Any = None,
) -> web.Application:
    """An OSS-compatible application storing its data under `data_dir`.

    `credentials` maps AccessKeyId -> AccessKeySecret; `accounts` maps AccessKeyId -> account id (absent: the
    sandbox's account). `temporary` (a `sandbox.sts.TemporaryKeys`) adds the STS keys still valid, each acting for
    its account and needing its security token. A bucket belongs to the account that created it; other accounts
    get 403 AccessDenied.
    `region` is the V4 scope region (e.g. "cn-sandbox"; the SDK's `Config.region`). `host_suffix`, e.g.
    "oss-cn-sandbox.aliyuncs.com", makes `<bucket>.<host_suffix>` virtual-hosted requests route even before the
    bucket exists. Without it, a Host whose first label names an existing bucket still routes virtual-hosted.
    """
    storage = Storage(Path(data_dir))
    svc = Service(storage=storage, credentials=dict(credentials), region=region, host_suffix=host_suffix,
                  accounts=dict(accounts or {}), owners=BucketOwners(Path(data_dir) / "owners.json"),
                  temporary=temporary)
    app = web.Application(middlewares=[_oss_errors, fault_middleware(faults, "oss", fault_responder)])
    app[SERVICE_KEY] = svc
    app.router.add_route("*", "/{tail:.*}", _dispatch)

    async def _close(_app: web.Application) -> None:
        storage.close()

    app.on_cleanup.append(_close)
    return app
