"""Multipart upload: Initiate, UploadPart, Complete (part list or `x-oss-complete-all: yes`), Abort,
ListParts and ListMultipartUploads.

Complete concatenates the parts into one object file in a worker thread and computes the whole
object's CRC-64 on the way. The SDK's uploader checks that value against the CRC it combines from the
parts. The ETag is OSS's multipart form: upper-case MD5 of the concatenated binary part MD5s plus
`-<part count>`. Parts left out of the Complete list are dropped, as OSS does. Every part but the last
must be at least 100 KiB (EntityTooSmall).

Not emulated: UploadPartCopy (`x-oss-copy-source` on UploadPart answers NotImplemented).
"""

from __future__ import annotations

import asyncio
import hashlib
from urllib.parse import quote
from xml.etree import ElementTree as ET

from aiohttp import web

from .context import (
    Service,
    check_key,
    empty,
    md5_b64,
    receive_body,
    stored_headers_from,
    user_meta_from,
)
from .errors import OssError, invalid_argument, no_such_upload
from .routing import Target
from .storage import Part, Upload
from .xmlutil import iso_time, parse_body, sub, url_encode, xml_response

MIN_PART_SIZE = 100 * 1024
MAX_PART_NUMBER = 10000
MAX_PART_SIZE = 5 * 1024**3


def _encode(target: Target) -> bool:
    return target.query.get("encoding-type") == "url"


def _upload(svc: Service, target: Target) -> Upload:
    svc.bucket(target.bucket)
    upload_id = target.query.get("uploadId", "")
    up = svc.storage.uploads.get(upload_id)
    if up is None or up.bucket != target.bucket or up.key != (target.key or "") or upload_id in svc.completing:
        raise no_such_upload(upload_id)
    return up


async def initiate(svc: Service, request: web.Request, target: Target) -> web.StreamResponse:
    bucket = svc.bucket(target.bucket)
    key = target.key or ""
    check_key(key)
    await request.read()
    up = svc.storage.create_upload(
        bucket.name, key, request.headers.get("Content-Type") or "application/octet-stream",
        user_meta_from(request), stored_headers_from(request),
    )
    encode = _encode(target)
    root = ET.Element("InitiateMultipartUploadResult")
    sub(root, "Bucket", bucket.name)
    sub(root, "Key", url_encode(key, encode))
    sub(root, "UploadId", up.upload_id)
    if encode:
        sub(root, "EncodingType", "url")
    return xml_response(request, root)


async def upload_part(svc: Service, request: web.Request, target: Target) -> web.StreamResponse:
    if "x-oss-copy-source" in request.headers:
        raise OssError(501, "NotImplemented", "UploadPartCopy is not supported by the sandbox.")
    up = _upload(svc, target)
    raw = target.query.get("partNumber", "")
    try:
        number = int(raw)
    except ValueError as exc:
        raise invalid_argument("Part number must be an integer between 1 and 10000, inclusive.", "partNumber",
                               raw) from exc
    if not 1 <= number <= MAX_PART_NUMBER:
        raise invalid_argument("Part number must be an integer between 1 and 10000, inclusive.", "partNumber", raw)
    written = await receive_body(svc, request, MAX_PART_SIZE)
    if svc.storage.uploads.get(up.upload_id) is not up or up.upload_id in svc.completing:
        written.path.unlink(missing_ok=True)
        raise no_such_upload(up.upload_id)
    part = svc.storage.commit_part(up, number, written)
    return empty(request, 200, {"ETag": part.etag, "x-oss-hash-crc64ecma": part.crc64,
                                "Content-MD5": md5_b64(written.md5)})


def _requested_parts(up: Upload, body: bytes, complete_all: bool) -> list[Part]:
    if complete_all:
        if body.strip():
            raise invalid_argument("x-oss-complete-all: yes must come with an empty body.", "x-oss-complete-all",
                                   "yes")
        parts = [up.parts[n] for n in sorted(up.parts)]
        if not parts:
            raise OssError(400, "InvalidPart", "The upload has no parts to complete.")
        return parts
    root = parse_body(body, "CompleteMultipartUpload")
    parts: list[Part] = []
    previous = 0
    for el in root.findall("Part"):
        try:
            number = int((el.findtext("PartNumber") or "").strip())
        except ValueError as exc:
            raise OssError(400, "MalformedXML", "PartNumber must be an integer.") from exc
        etag = (el.findtext("ETag") or "").strip().strip('"').upper()
        if number <= previous:
            raise OssError(
                400, "InvalidPartOrder",
                "The list of parts was not in ascending order. Parts list must specified in order by part number.",
            )
        previous = number
        part = up.parts.get(number)
        if part is None or part.etag.strip('"') != etag:
            raise OssError(
                400, "InvalidPart",
                "One or more of the specified parts could not be found or the specified entity tag might not "
                "have matched the part's entity tag.", PartNumber=str(number), ETag=etag,
            )
        parts.append(part)
    if not parts:
        raise OssError(400, "MalformedXML", "CompleteMultipartUpload must list at least one part.")
    return parts


async def complete(svc: Service, request: web.Request, target: Target) -> web.StreamResponse:
    up = _upload(svc, target)
    body = await request.read()
    complete_all = request.headers.get("x-oss-complete-all", "").lower() == "yes"
    parts = _requested_parts(up, body, complete_all)
    for part in parts[:-1]:
        if part.size < MIN_PART_SIZE:
            raise OssError(400, "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size.",
                           PartNumber=str(part.number), MinSizeAllowed=str(MIN_PART_SIZE), ProposedSize=str(part.size))
    svc.completing.add(up.upload_id)
    try:
        written = await asyncio.to_thread(svc.storage.assemble, up, parts)
        md5s = b"".join(bytes.fromhex(p.etag.strip('"')) for p in parts)
        etag = f'"{hashlib.md5(md5s).hexdigest().upper()}-{len(parts)}"'
        svc.bucket(up.bucket)  # still there?
        meta = svc.storage.commit_object(
            up.bucket, up.key, written, content_type=up.content_type, user_meta=up.user_meta,
            headers=up.headers, object_type="Multipart", etag=etag,
        )
        svc.storage.drop_upload(up.upload_id)
    finally:
        svc.completing.discard(up.upload_id)
    encode = _encode(target)
    root = ET.Element("CompleteMultipartUploadResult")
    if encode:
        sub(root, "EncodingType", "url")
    sub(root, "Location", f"{request.scheme}://{up.bucket}.{request.host}/{quote(up.key)}")
    sub(root, "Bucket", up.bucket)
    sub(root, "Key", url_encode(up.key, encode))
    sub(root, "ETag", meta.etag)
    # CompleteMultipartUpload answers the object's ETag in a header too (oss2 reads it from there):
    # https://www.alibabacloud.com/help/en/oss/developer-reference/completemultipartupload
    return xml_response(request, root, headers={"ETag": meta.etag, "x-oss-hash-crc64ecma": meta.crc64})


async def abort(svc: Service, request: web.Request, target: Target) -> web.StreamResponse:
    up = _upload(svc, target)
    svc.storage.drop_upload(up.upload_id)
    return empty(request, 204)


def _int_param(query: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise invalid_argument(f"{name} must be an integer.", name, raw) from exc
    if not low <= value <= high:
        raise invalid_argument(f"{name} must be between {low} and {high}.", name, raw)
    return value


async def list_parts(svc: Service, request: web.Request, target: Target) -> web.StreamResponse:
    up = _upload(svc, target)
    q = target.query
    max_parts = _int_param(q, "max-parts", 1000, 1, 1000)
    marker = _int_param(q, "part-number-marker", 0, 0, MAX_PART_NUMBER)
    numbers = [n for n in sorted(up.parts) if n > marker]
    page, truncated = numbers[:max_parts], len(numbers) > max_parts
    encode = _encode(target)
    root = ET.Element("ListPartsResult")
    if encode:
        sub(root, "EncodingType", "url")
    sub(root, "Bucket", up.bucket)
    sub(root, "Key", url_encode(up.key, encode))
    sub(root, "UploadId", up.upload_id)
    sub(root, "StorageClass", "Standard")
    sub(root, "PartNumberMarker", marker)
    sub(root, "NextPartNumberMarker", page[-1] if page else marker)
    sub(root, "MaxParts", max_parts)
    sub(root, "IsTruncated", truncated)
    for n in page:
        p = up.parts[n]
        el = sub(root, "Part")
        sub(el, "PartNumber", n)
        sub(el, "LastModified", iso_time(p.last_modified))
        sub(el, "ETag", p.etag)
        sub(el, "HashCrc64ecma", p.crc64)
        sub(el, "Size", p.size)
    return xml_response(request, root)


async def list_uploads(svc: Service, request: web.Request, target: Target) -> web.StreamResponse:
    bucket = svc.bucket(target.bucket)
    q = target.query
    prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
    key_marker, id_marker = q.get("key-marker", ""), q.get("upload-id-marker", "")
    max_uploads = _int_param(q, "max-uploads", 1000, 1, 1000)
    encode = _encode(target)
    uploads: list[Upload] = []
    prefixes: list[str] = []
    truncated = False
    next_key, next_id = "", ""  # the last upload or common prefix returned: where the next page starts
    for up in svc.storage.bucket_uploads(bucket.name):
        if not up.key.startswith(prefix):
            continue
        if key_marker and (up.key < key_marker or (up.key == key_marker and (not id_marker
                                                                            or up.upload_id <= id_marker))):
            continue
        common = None
        if delimiter:
            j = up.key.find(delimiter, len(prefix))
            if j >= 0:
                common = up.key[: j + len(delimiter)]
                if common in prefixes or common == key_marker:  # a page that ended on this prefix covered it
                    continue
        if len(uploads) + len(prefixes) >= max_uploads:
            truncated = True
            break
        if common is not None:
            prefixes.append(common)
            next_key, next_id = common, ""
        else:
            uploads.append(up)
            next_key, next_id = up.key, up.upload_id
    root = ET.Element("ListMultipartUploadsResult")
    if encode:
        sub(root, "EncodingType", "url")
    sub(root, "Bucket", bucket.name)
    sub(root, "KeyMarker", url_encode(key_marker, encode))
    sub(root, "UploadIdMarker", id_marker)
    # A truncated page always names where to go on, also when it held only common prefixes (else paginators
    # that follow NextKeyMarker would ask for the same page for ever).
    sub(root, "NextKeyMarker", url_encode(next_key, encode))
    sub(root, "NextUploadIdMarker", next_id)
    sub(root, "Delimiter", url_encode(delimiter, encode))
    sub(root, "Prefix", url_encode(prefix, encode))
    sub(root, "MaxUploads", max_uploads)
    sub(root, "IsTruncated", truncated)
    for up in uploads:
        el = sub(root, "Upload")
        sub(el, "Key", url_encode(up.key, encode))
        sub(el, "UploadId", up.upload_id)
        sub(el, "StorageClass", "Standard")
        sub(el, "Initiated", iso_time(up.initiated))
    for p in prefixes:
        sub(sub(root, "CommonPrefixes"), "Prefix", url_encode(p, encode))
    return xml_response(request, root)
