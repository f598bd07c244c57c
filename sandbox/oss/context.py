"""State and helpers shared by the OSS handlers: storage, settings, and the small checks every operation does."""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from .errors import OssError, http_date, no_such_bucket, request_id
from .storage import Bucket, Storage, Written

# Sandbox account id shown as Owner/ID (real OSS shows the account UID).
OWNER_ID = "1000000000000001"
ACCOUNT_ID = OWNER_ID
OTHER_ACCOUNT_ID = "1000000000000002"  # a second account (sandbox.server): owns buckets "someone else" made
ACCOUNT_KEY: web.RequestKey[str] = web.RequestKey("oss_account", str)  # the caller's account id
MAX_OBJECT_KEY_BYTES = 1023
MAX_PUT_SIZE = 5 * 1024**3
CHUNK = 1 << 20

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
# Standard headers OSS stores with an object and returns on GET/HEAD.
STORED_HEADERS = ("Cache-Control", "Content-Disposition", "Content-Encoding", "Content-Language", "Expires")


@dataclass
class Service:
    storage: Storage
    credentials: dict[str, str]
    region: str
    host_suffix: str | None = None
    completing: set[str] = field(default_factory=set)  # upload ids being assembled right now
    accounts: dict[str, str] = field(default_factory=dict)  # AccessKeyId -> account id (default: ACCOUNT_ID)
    owners: BucketOwners | None = None
    temporary: Any = None  # sandbox.sts.TemporaryKeys: STS keys, each acting for its account

    def account_of(self, access_key_id: str) -> str:
        key = self.temporary.get_key(access_key_id) if self.temporary is not None else None
        if key is not None:
            return str(key.account)
        return self.accounts.get(access_key_id, ACCOUNT_ID)

    def check_owner(self, bucket: str | None, access_key_id: str) -> None:
        """A bucket of another account answers 403, as a private bucket does to a stranger (no bucket policies
        or ACL grants are emulated)."""
        if not bucket or bucket not in self.storage.buckets or self.owners is None:
            return
        if self.owners.get(bucket) != self.account_of(access_key_id):
            raise OssError(403, "AccessDenied", "The bucket you access does not belong to you.", BucketName=bucket)

    @property
    def location(self) -> str:
        return f"oss-{self.region}"

    def bucket(self, name: str | None) -> Bucket:
        bucket = self.storage.buckets.get(name or "")
        if bucket is None:
            raise no_such_bucket(name or "")
        return bucket


class BucketOwners:
    """Bucket -> owning account id, kept beside the storage in ``owners.json`` (absent: the sandbox's account)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._owners: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}

    def get(self, bucket: str) -> str:
        return self._owners.get(bucket, ACCOUNT_ID)

    def set(self, bucket: str, account: str) -> None:
        self._owners[bucket] = account
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._owners))
        os.replace(tmp, self.path)


def valid_bucket_name(name: str) -> bool:
    return bool(_BUCKET_RE.match(name))


def check_key(key: str) -> None:
    if len(key.encode("utf-8")) > MAX_OBJECT_KEY_BYTES:
        raise OssError(400, "InvalidObjectName", "The length of the object name must be between 1 and 1023 bytes.")
    if key.startswith(("/", "\\")):
        raise OssError(400, "InvalidObjectName", "The object name must not start with '/' or '\\'.")


def user_meta_from(request: web.Request) -> dict[str, str]:
    return {k.lower()[len("x-oss-meta-"):]: v for k, v in request.headers.items()
            if k.lower().startswith("x-oss-meta-")}


def stored_headers_from(request: web.Request) -> dict[str, str]:
    out = {h: request.headers[h] for h in STORED_HEADERS if h in request.headers}
    out.update(sse_headers_from(request))
    return out


def sse_headers_from(request: web.Request) -> dict[str, str]:
    """Server-side encryption asked for on upload, reported back on every read as OSS does. The sandbox stores
    the bytes as they are: encryption at rest is not emulated, and a KMS key id is made up when none is named."""
    sse = request.headers.get("x-oss-server-side-encryption")
    if not sse:
        return {}
    if sse not in ("AES256", "KMS", "SM4"):
        raise OssError(400, "InvalidEncryptionAlgorithmError", "The Encryption request you specified is not valid. "
                       "Supported value: AES256/KMS/SM4", ArgumentName="x-oss-server-side-encryption",
                       ArgumentValue=sse)
    out = {"x-oss-server-side-encryption": sse}
    if sse == "KMS":
        out["x-oss-server-side-encryption-key-id"] = (request.headers.get("x-oss-server-side-encryption-key-id")
                                                      or "sandbox-kms-key-0000-0000-0000-000000000000")
        data = request.headers.get("x-oss-server-side-data-encryption")
        if data:
            out["x-oss-server-side-data-encryption"] = data
    return out


def expected_md5(request: web.Request) -> bytes | None:
    """The decoded Content-MD5 header, or None when absent. Malformed values are InvalidDigest (400)."""
    value = request.headers.get("Content-MD5")
    if value is None:
        return None
    try:
        digest = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 16:
        raise OssError(400, "InvalidDigest", "The Content-MD5 you specified is not valid.")
    return digest


async def receive_body(svc: Service, request: web.Request, max_size: int = MAX_PUT_SIZE) -> Written:
    """Stream the request body to a temp file (1 MiB at a time), verifying Content-MD5 if sent."""
    want_md5 = expected_md5(request)
    declared = request.content_length
    if declared is not None and declared > max_size:
        raise OssError(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed object size.")
    writer = svc.storage.new_writer()
    try:
        async for chunk in request.content.iter_chunked(CHUNK):
            writer.write(chunk)
            if writer.size > max_size:  # chunked bodies have no Content-Length
                raise OssError(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed object size.")
        written = writer.finish()
    except BaseException:
        writer.discard()
        raise
    if want_md5 is not None and want_md5 != written.md5:
        written.path.unlink(missing_ok=True)
        # OSS answers InvalidDigest for a Content-MD5 that does not match the body (S3's BadDigest is not an OSS
        # code): https://www.alibabacloud.com/help/en/oss/user-guide/http-status-code-400 (InvalidDigest).
        raise OssError(400, "InvalidDigest", "The Content-MD5 you specified did not match what we received.")
    return written


def md5_b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def base_headers(request: web.Request) -> dict[str, str]:
    return {"x-oss-request-id": request_id(request), "Date": http_date(), "Server": "AliyunOSS"}


def empty(request: web.Request, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    hdrs = base_headers(request)
    hdrs.update(headers or {})
    return web.Response(status=status, headers=hdrs)
