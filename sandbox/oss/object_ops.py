"""Object operations: PutObject, GetObject (Range), HeadObject, GetObjectMeta, DeleteObject, CopyObject.

Bodies stream in both directions: uploads go chunk by chunk to a temp file (hashing as they go), and
downloads are read from the object file 256 KiB at a time. A 50 MB object is never held in memory.

Range follows OSS: without `x-oss-range-behavior: standard`, a range that is out of bounds or
unsatisfiable answers the whole object with 200. With it, an end past EOF is clamped (206), and a
start past EOF is 416 InvalidRange. Multi-range requests are not supported by OSS and get the whole
object.
"""

from __future__ import annotations

import asyncio
import re
from email.utils import parsedate_to_datetime
from urllib.parse import unquote
from xml.etree import ElementTree as ET

from aiohttp import web

from .context import (
    Service,
    base_headers,
    check_key,
    empty,
    md5_b64,
    receive_body,
    stored_headers_from,
    user_meta_from,
)
from .errors import OssError, invalid_argument, no_such_bucket, no_such_key
from .routing import Target
from .storage import ObjectMeta
from .xmlutil import iso_time, rfc1123, sub, xml_response

READ_CHUNK = 256 * 1024
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_RESPONSE_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}


def object_headers(meta: ObjectMeta) -> dict[str, str]:
    headers = {
        "Content-Type": meta.content_type,
        "ETag": meta.etag,
        "Last-Modified": rfc1123(meta.last_modified),
        "Accept-Ranges": "bytes",
        "x-oss-object-type": meta.object_type,
        "x-oss-storage-class": "Standard",
        "x-oss-hash-crc64ecma": meta.crc64,
    }
    if meta.content_md5:
        headers["Content-MD5"] = meta.content_md5
    headers.update(meta.headers)
    for k, v in meta.user_meta.items():
        headers[f"x-oss-meta-{k}"] = v
    return headers


def _lookup(svc: Service, target: Target) -> ObjectMeta:
    bucket = svc.bucket(target.bucket)
    meta = bucket.objects.get(target.key or "")
    if meta is None:
        raise no_such_key(target.key or "")
    return meta


def _etag_matches(header: str, etag: str) -> bool:
    want = etag.strip('"').upper()
    return any(t.strip() == "*" or t.strip().strip('"').upper() == want for t in header.split(","))


def _check_conditions(request: web.Request, meta: ObjectMeta) -> int | None:
    """Return 304/412 when a conditional header says so, None to go on."""
    h = request.headers
    lm = int(meta.last_modified)
    if "If-Match" in h and not _etag_matches(h["If-Match"], meta.etag):
        return 412
    if "If-Unmodified-Since" in h:
        try:
            if lm > parsedate_to_datetime(h["If-Unmodified-Since"]).timestamp():
                return 412
        except (TypeError, ValueError):
            pass
    if "If-None-Match" in h and _etag_matches(h["If-None-Match"], meta.etag):
        return 304
    if "If-Modified-Since" in h:
        try:
            if lm <= parsedate_to_datetime(h["If-Modified-Since"]).timestamp():
                return 304
        except (TypeError, ValueError):
            pass
    return None


def _conditional_answer(request: web.Request, status: int, meta: ObjectMeta) -> web.StreamResponse:
    if status == 412:
        raise OssError(412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold.")
    return empty(request, 304, {"ETag": meta.etag, "Last-Modified": rfc1123(meta.last_modified)})


def parse_range(header: str | None, size: int, standard: bool) -> tuple[int, int] | None:
    """(start, end) inclusive for a 206, or None for the whole object. Raises InvalidRange (416)."""
    if not header:
        return None
    m = _RANGE_RE.match(header.strip().replace(" ", ""))
    if not m or (not m.group(1) and not m.group(2)):
        return None  # malformed or multi-range: OSS ignores it
    first, last = m.group(1), m.group(2)
    if not first:  # suffix range: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            if standard:
                raise _invalid_range(size)
            return None
        return max(0, size - n), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        if standard:
            raise _invalid_range(size)
        return None
    if end >= size:
        if not standard and last:
            return None
        end = size - 1
    return start, end


def _invalid_range(size: int) -> OssError:
    return OssError(416, "InvalidRange", "The requested range cannot be satisfied.", ActualObjectSize=str(size))


async def get_object(svc: Service, request: web.Request, target: Target, *, head: bool = False
                     ) -> web.StreamResponse:
    meta = _lookup(svc, target)
    cond = _check_conditions(request, meta)
    if cond is not None:
        return _conditional_answer(request, cond, meta)
    standard = request.headers.get("x-oss-range-behavior", "").lower() == "standard"
    rng = None if head else parse_range(request.headers.get("Range"), meta.size, standard)
    headers = base_headers(request)
    headers.update(object_headers(meta))
    if not head:
        for param, name in _RESPONSE_OVERRIDES.items():
            if param in target.query:
                headers[name] = target.query[param]
    start, end = rng if rng else (0, meta.size - 1)
    length = end - start + 1 if meta.size else 0
    status = 200
    if rng:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{meta.size}"
    resp = web.StreamResponse(status=status, headers=headers)
    resp.content_length = length
    await resp.prepare(request)
    if head or length == 0:
        await resp.write_eof()
        return resp
    path = svc.storage.object_path(target.bucket or "", meta)
    try:
        fh = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        # replaced or deleted between lookup and open: cut the connection rather than send wrong bytes
        if request.transport is not None:
            request.transport.close()
        return resp
    with fh:
        fh.seek(start)
        remaining = length
        while remaining > 0:
            chunk = fh.read(min(READ_CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            await resp.write(chunk)
    await resp.write_eof()
    return resp


async def head_object(svc: Service, request: web.Request, target: Target) -> web.StreamResponse:
    return await get_object(svc, request, target, head=True)


async def get_object_meta(svc: Service, request: web.Request, target: Target) -> web.StreamResponse:
    meta = _lookup(svc, target)
    headers = {
        "ETag": meta.etag,
        "Last-Modified": rfc1123(meta.last_modified),
        "x-oss-last-access-time": rfc1123(meta.last_modified),
        "x-oss-hash-crc64ecma": meta.crc64,
    }
    headers.update(base_headers(request))
    resp = web.StreamResponse(status=200, headers=headers)
    resp.content_length = meta.size  # HEAD: the object's size, no body
    await resp.prepare(request)
    await resp.write_eof()
    return resp


async def put_object(svc: Service, request: web.Request, target: Target) -> web.StreamResponse:
    bucket = svc.bucket(target.bucket)
    key = target.key or ""
    check_key(key)
    forbid = request.headers.get("x-oss-forbid-overwrite", "").lower() == "true"
    if forbid and key in bucket.objects:
        raise OssError(409, "FileAlreadyExists", "The object you specified already exists and can not be overwritten.")
    written = await receive_body(svc, request)
    if svc.storage.buckets.get(bucket.name) is not bucket:  # deleted while the body streamed in
        written.path.unlink(missing_ok=True)
        raise no_such_bucket(bucket.name)
    content_md5 = md5_b64(written.md5)
    meta = svc.storage.commit_object(
        bucket.name, key, written,
        content_type=request.headers.get("Content-Type") or "application/octet-stream",
        user_meta=user_meta_from(request),
        headers=stored_headers_from(request),
        content_md5=content_md5,
    )
    return empty(request, 200, {"ETag": meta.etag, "x-oss-hash-crc64ecma": meta.crc64, "Content-MD5": content_md5})


async def delete_object(svc: Service, request: web.Request, target: Target) -> web.StreamResponse:
    bucket = svc.bucket(target.bucket)
    svc.storage.delete_object(bucket.name, target.key or "")
    return empty(request, 204)


def parse_copy_source(value: str) -> tuple[str, str]:
    source = value.split("?", 1)[0]
    if not source.startswith("/"):
        source = "/" + source
    _, bucket, key = (source.split("/", 2) + ["", ""])[:3]
    if not bucket or not key:
        raise invalid_argument("Copy Source must mention the source bucket and key: /sourcebucket/sourcekey.",
                               "x-oss-copy-source", value)
    return unquote(bucket), unquote(key)


async def copy_object(svc: Service, request: web.Request, target: Target) -> web.StreamResponse:
    dst_bucket = svc.bucket(target.bucket)
    key = target.key or ""
    check_key(key)
    src_bucket_name, src_key = parse_copy_source(request.headers["x-oss-copy-source"])
    src_bucket = svc.bucket(src_bucket_name)
    src = src_bucket.objects.get(src_key)
    if src is None:
        raise no_such_key(src_key)
    h = request.headers
    if "x-oss-copy-source-if-match" in h and not _etag_matches(h["x-oss-copy-source-if-match"], src.etag):
        raise OssError(412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold.")
    if "x-oss-copy-source-if-none-match" in h and _etag_matches(h["x-oss-copy-source-if-none-match"], src.etag):
        return empty(request, 304)
    if h.get("x-oss-forbid-overwrite", "").lower() == "true" and key in dst_bucket.objects:
        raise OssError(409, "FileAlreadyExists", "The object you specified already exists and can not be overwritten.")
    directive = h.get("x-oss-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise invalid_argument("x-oss-metadata-directive must be COPY or REPLACE.", "x-oss-metadata-directive",
                               directive)
    await request.read()  # CopyObject has no body; drain anything sent
    written = await asyncio.to_thread(svc.storage.copy_to_temp, src_bucket.name, src)
    if directive == "REPLACE":
        content_type = h.get("Content-Type") or "application/octet-stream"
        user_meta, stored = user_meta_from(request), stored_headers_from(request)
    else:
        content_type, user_meta, stored = src.content_type, src.user_meta, src.headers
    meta = svc.storage.commit_object(
        dst_bucket.name, key, written, content_type=content_type, user_meta=user_meta, headers=stored,
        object_type=src.object_type, etag=src.etag, content_md5=src.content_md5,
    )
    root = ET.Element("CopyObjectResult")
    sub(root, "ETag", meta.etag)
    sub(root, "LastModified", iso_time(meta.last_modified))
    return xml_response(request, root, headers={"x-oss-hash-crc64ecma": meta.crc64})
