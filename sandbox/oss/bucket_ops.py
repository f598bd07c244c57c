"""Service- and bucket-level operations: ListBuckets, Put/DeleteBucket, GetBucketInfo/Acl/Location/Stat,
ListObjects (v1) and ListObjectsV2, DeleteMultipleObjects.

ACL answers are fixed (`private`): the sandbox has no ACLs. `is_bucket_exist()` in the SDK calls
GetBucketAcl, so that one has to answer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from xml.etree import ElementTree as ET

from aiohttp import web

from .context import ACCOUNT_ID, ACCOUNT_KEY, OWNER_ID, Service, empty, expected_md5, valid_bucket_name
from .errors import OssError, invalid_argument
from .listing import list_page
from .routing import Target
from .storage import Bucket
from .xmlutil import iso_time, owner, parse_body, sub, url_encode, xml_response

MAX_DELETE_KEYS = 1000


def _max_keys(query: dict[str, str], name: str = "max-keys", default: int = 100, limit: int = 1000) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise invalid_argument(f"{name} must be an integer.", name, raw) from exc
    if value < 0 or value > limit:
        raise invalid_argument(f"{name} must be between 0 and {limit}.", name, raw)
    return value


def _endpoint(svc: Service, request: web.Request) -> str:
    return request.host or f"{svc.location}.aliyuncs.com"


# ----------------------------------------------------------------------------------------- service


async def list_buckets(svc: Service, request: web.Request, target: Target) -> web.StreamResponse:
    q = target.query
    prefix, marker = q.get("prefix", ""), q.get("marker", "")
    max_keys = _max_keys(q)
    caller = request.get(ACCOUNT_KEY) or ACCOUNT_ID
    names = sorted(n for n in svc.storage.buckets if n.startswith(prefix) and n > marker
                   and (svc.owners is None or svc.owners.get(n) == caller))  # ListBuckets: the caller's own
    page, truncated = names[:max_keys], len(names) > max_keys
    root = ET.Element("ListAllMyBucketsResult")
    sub(root, "Prefix", prefix)
    sub(root, "Marker", marker)
    sub(root, "MaxKeys", max_keys)
    sub(root, "IsTruncated", truncated)
    if truncated:
        sub(root, "NextMarker", page[-1])
    owner(root, OWNER_ID)
    buckets = sub(root, "Buckets")
    endpoint = _endpoint(svc, request)
    for name in page:
        b = svc.storage.buckets[name]
        el = sub(buckets, "Bucket")
        sub(el, "CreationDate", iso_time(b.created))
        sub(el, "ExtranetEndpoint", endpoint)
        sub(el, "IntranetEndpoint", endpoint)
        sub(el, "Location", svc.location)
        sub(el, "Name", name)
        sub(el, "Region", svc.region)
        sub(el, "StorageClass", b.storage_class)
    return xml_response(request, root)


# ------------------------------------------------------------------------------------------ bucket


async def put_bucket(svc: Service, request: web.Request, target: Target) -> web.StreamResponse:
    name = target.bucket or ""
    if not valid_bucket_name(name):
        raise OssError(400, "InvalidBucketName", "The specified bucket is not valid.", BucketName=name)
    storage_class = "Standard"
    body = await request.read()
    if body.strip():
        root = parse_body(body, "CreateBucketConfiguration")
        storage_class = (root.findtext("StorageClass") or "Standard").strip() or "Standard"
    created = svc.storage.create_bucket(name, storage_class)
    if created is not None:
        if svc.owners is not None:
            svc.owners.set(name, request.get(ACCOUNT_KEY) or ACCOUNT_ID)
    else:
        existing = svc.storage.buckets[name]
        if not owned_by_requester(svc, request, existing):
            raise OssError(
                409,
                "BucketAlreadyExists",
                "The requested bucket name is not available. The bucket namespace is shared by all users of the "
                "system. Please select a different name and try again.",
                BucketName=name,
            )
        # PutBucket again by the owner "modifies the metadata of the bucket" (200), but a storage class cannot
        # change: https://www.alibabacloud.com/help/en/oss/developer-reference/putbucket and
        # https://www.alibabacloud.com/help/en/oss/user-guide/http-status-code-409
        if body.strip() and storage_class != existing.storage_class:
            raise OssError(409, "BucketAlreadyExists", "Cannot modify existing bucket's storage class.",
                           BucketName=name)
    return empty(request, headers={"Location": f"/{name}"})


def owned_by_requester(svc: Service, request: web.Request, bucket: Bucket) -> bool:
    """Whether the signed requester's account owns `bucket` (``owners.json``; absent: the sandbox's account)."""
    if svc.owners is None:
        return True
    return svc.owners.get(bucket.name) == (request.get(ACCOUNT_KEY) or ACCOUNT_ID)


async def delete_bucket(svc: Service, request: web.Request, target: Target) -> web.StreamResponse:
    bucket = svc.bucket(target.bucket)
    if bucket.objects or svc.storage.bucket_uploads(bucket.name):
        raise OssError(409, "BucketNotEmpty", "The bucket you tried to delete is not empty.", BucketName=bucket.name)
    svc.storage.delete_bucket(bucket.name)
    return empty(request, 204)


def _acl(parent: ET.Element) -> None:
    acl = sub(parent, "AccessControlList")
    sub(acl, "Grant", "private")


async def get_bucket_info(svc: Service, request: web.Request, target: Target) -> web.StreamResponse:
    bucket = svc.bucket(target.bucket)
    root = ET.Element("BucketInfo")
    el = sub(root, "Bucket")
    endpoint = _endpoint(svc, request)
    sub(el, "AccessMonitor", "Disabled")
    sub(el, "CreationDate", iso_time(bucket.created))
    sub(el, "CrossRegionReplication", "Disabled")
    sub(el, "DataRedundancyType", "LRS")
    sub(el, "ExtranetEndpoint", endpoint)
    sub(el, "IntranetEndpoint", endpoint)
    sub(el, "Location", svc.location)
    sub(el, "Name", bucket.name)
    sub(el, "ResourceGroupId", "rg-default")
    sub(el, "StorageClass", bucket.storage_class)
    sub(el, "TransferAcceleration", "Disabled")
    sub(el, "Comment", "")
    sub(el, "Versioning", "")  # never enabled here; OSS leaves it empty until versioning is configured
    owner(el, OWNER_ID)
    _acl(el)
    sse = sub(el, "ServerSideEncryptionRule")
    sub(sse, "SSEAlgorithm", "None")
    policy = sub(el, "BucketPolicy")  # the bucket's logging configuration (none)
    sub(policy, "LogBucket", "")
    sub(policy, "LogPrefix", "")
    sub(el, "BlockPublicAccess", False)
    return xml_response(request, root)


async def list_live_channels(svc: Service, request: web.Request, target: Target) -> web.StreamResponse:
    """ListLiveChannel: always empty (RTMP ingest is not emulated; creating a channel is 501)."""
    svc.bucket(target.bucket)
    q = target.query
    root = ET.Element("ListLiveChannelResult")
    sub(root, "Prefix", q.get("prefix", ""))
    sub(root, "Marker", q.get("marker", ""))
    sub(root, "MaxKeys", q.get("max-keys", "100"))
    sub(root, "IsTruncated", False)
    sub(root, "NextMarker", "")
    return xml_response(request, root)


async def get_bucket_acl(svc: Service, request: web.Request, target: Target) -> web.StreamResponse:
    svc.bucket(target.bucket)
    root = ET.Element("AccessControlPolicy")
    owner(root, OWNER_ID)
    _acl(root)
    return xml_response(request, root)


async def get_bucket_location(svc: Service, request: web.Request, target: Target) -> web.StreamResponse:
    svc.bucket(target.bucket)
    root = ET.Element("LocationConstraint")
    root.text = svc.location
    return xml_response(request, root)


async def get_bucket_stat(svc: Service, request: web.Request, target: Target) -> web.StreamResponse:
    bucket = svc.bucket(target.bucket)
    storage = sum(m.size for m in bucket.objects.values())
    last = max((m.last_modified for m in bucket.objects.values()), default=bucket.created)
    root = ET.Element("BucketStat")
    sub(root, "Storage", storage)
    sub(root, "ObjectCount", len(bucket.objects))
    sub(root, "MultipartUploadCount", len(svc.storage.bucket_uploads(bucket.name)))
    sub(root, "LiveChannelCount", 0)
    sub(root, "LastModifiedTime", int(last))
    sub(root, "StandardStorage", storage)
    sub(root, "StandardObjectCount", len(bucket.objects))
    return xml_response(request, root)


# ----------------------------------------------------------------------------------------- listing


def _contents(root: ET.Element, bucket: Bucket, keys: list[str], encode: bool, with_owner: bool) -> None:
    for key in keys:
        m = bucket.objects[key]
        el = sub(root, "Contents")
        sub(el, "Key", url_encode(key, encode))
        sub(el, "LastModified", iso_time(m.last_modified))
        sub(el, "ETag", m.etag)
        sub(el, "Type", m.object_type)
        sub(el, "Size", m.size)
        sub(el, "StorageClass", "Standard")
        if with_owner:
            owner(el, OWNER_ID)


def _prefixes(root: ET.Element, prefixes: list[str], encode: bool) -> None:
    for p in prefixes:
        sub(sub(root, "CommonPrefixes"), "Prefix", url_encode(p, encode))


def _encoding(query: dict[str, str]) -> bool:
    enc = query.get("encoding-type")
    if enc not in (None, "", "url"):
        raise invalid_argument("The encoding-type must be url.", "encoding-type", enc or "")
    return enc == "url"


async def list_objects(svc: Service, request: web.Request, target: Target) -> web.StreamResponse:
    bucket = svc.bucket(target.bucket)
    q = target.query
    encode = _encoding(q)
    prefix, delimiter, marker = q.get("prefix", ""), q.get("delimiter", ""), q.get("marker", "")
    max_keys = _max_keys(q)
    page = list_page(bucket.keys, prefix=prefix, delimiter=delimiter, after=marker, max_items=max_keys)
    root = ET.Element("ListBucketResult")
    sub(root, "Name", bucket.name)
    sub(root, "Prefix", url_encode(prefix, encode))
    sub(root, "Marker", url_encode(marker, encode))
    sub(root, "MaxKeys", max_keys)
    sub(root, "Delimiter", url_encode(delimiter, encode))
    if encode:
        sub(root, "EncodingType", "url")
    sub(root, "IsTruncated", page.truncated)
    if page.truncated:
        sub(root, "NextMarker", url_encode(page.last, encode))
    _contents(root, bucket, page.keys, encode, with_owner=True)
    _prefixes(root, page.prefixes, encode)
    return xml_response(request, root)


def _encode_token(resume_after: str) -> str:
    return base64.urlsafe_b64encode(resume_after.encode()).decode().rstrip("=")


def _decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise invalid_argument("The continuation token provided is incorrect.", "continuation-token", token) from exc


async def list_objects_v2(svc: Service, request: web.Request, target: Target) -> web.StreamResponse:
    bucket = svc.bucket(target.bucket)
    q = target.query
    encode = _encoding(q)
    prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
    start_after, token = q.get("start-after", ""), q.get("continuation-token", "")
    max_keys = _max_keys(q)
    fetch_owner = q.get("fetch-owner", "").lower() == "true"
    after = start_after
    if token:
        after = max(after, _decode_token(token))
    page = list_page(bucket.keys, prefix=prefix, delimiter=delimiter, after=after, max_items=max_keys)
    root = ET.Element("ListBucketResult")
    sub(root, "Name", bucket.name)
    sub(root, "Prefix", url_encode(prefix, encode))
    if token:
        sub(root, "ContinuationToken", token)
    if start_after:
        sub(root, "StartAfter", url_encode(start_after, encode))
    sub(root, "MaxKeys", max_keys)
    sub(root, "Delimiter", url_encode(delimiter, encode))
    if encode:
        sub(root, "EncodingType", "url")
    sub(root, "IsTruncated", page.truncated)
    if page.truncated:
        # opaque url-safe base64: survives the SDK's unquote/quote round trip unchanged
        sub(root, "NextContinuationToken", _encode_token(page.last))
    sub(root, "KeyCount", len(page.keys) + len(page.prefixes))
    _contents(root, bucket, page.keys, encode, with_owner=fetch_owner)
    _prefixes(root, page.prefixes, encode)
    return xml_response(request, root)


# ---------------------------------------------------------------------------------- delete-multiple


async def delete_multiple_objects(svc: Service, request: web.Request, target: Target) -> web.StreamResponse:
    bucket = svc.bucket(target.bucket)
    want_md5 = expected_md5(request)
    body = await request.read()
    if want_md5 is not None and hashlib.md5(body).digest() != want_md5:
        raise OssError(400, "InvalidDigest", "The Content-MD5 you specified did not match what we received.")
    encode = _encoding(target.query)
    root_in = parse_body(body, "Delete")
    quiet = (root_in.findtext("Quiet") or "false").strip().lower() == "true"
    keys = [obj.findtext("Key") or "" for obj in root_in.findall("Object")]
    if not keys or len(keys) > MAX_DELETE_KEYS:
        raise OssError(400, "MalformedXML", f"A Delete request must name between 1 and {MAX_DELETE_KEYS} objects.")
    root = ET.Element("DeleteResult")
    if encode:
        sub(root, "EncodingType", "url")
    for key in keys:
        svc.storage.delete_object(bucket.name, key)
        if not quiet:
            sub(sub(root, "Deleted"), "Key", url_encode(key, encode))
    return xml_response(request, root)
