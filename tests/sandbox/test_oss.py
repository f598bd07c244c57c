"""The OSS sandbox against the unmodified `alibabacloud_oss_v2` SDK, configured only with endpoint + keys.

Each server runs in its own thread and event loop (the SDK is synchronous). The 5,000-object listing
test seeds objects through the storage layer directly (5,000 HTTP puts would take most of the time
budget on a shared 2-core box), then lists them only through the SDK paginator.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import alibabacloud_oss_v2 as oss
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from alibabacloud_oss_v2.signer import SignerV4
from alibabacloud_oss_v2.types import Credentials, HttpRequest, SigningContext

from sandbox.faults import Faults
from sandbox.oss import make_app
from sandbox.oss.app import SERVICE_KEY
from sandbox.oss.auth import authenticate
from sandbox.oss.errors import OssError
from sandbox.oss.routing import resolve
from sandbox.oss.storage import Storage, new_crc64

for _var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
    os.environ.pop(_var, None)

AK, SK = "LTAIsandboxKey0001", "sandboxSecretValue0001"
REGION = "cn-sandbox"
BUCKET = "bkt-test"


class OssServer:
    """make_app() served on a free 127.0.0.1 port from a background thread."""

    def __init__(self, data_dir: Path, faults: Faults | None = None) -> None:
        self.data_dir = data_dir
        self.faults = faults or Faults(seed=1)
        self.app = make_app(data_dir, credentials={AK: SK}, region=REGION, faults=self.faults)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def storage(self) -> Storage:
        return self.app[SERVICE_KEY].storage

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._runner = web.AppRunner(self.app)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

        self._loop.run_until_complete(start())
        self._ready.set()
        self._loop.run_forever()
        assert self._runner is not None
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def __enter__(self) -> OssServer:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def client(self, secret: str = SK, **cfg_kwargs: object) -> oss.Client:
        cfg = oss.config.load_default()
        cfg.region = REGION
        cfg.endpoint = self.endpoint
        cfg.credentials_provider = oss.credentials.StaticCredentialsProvider(AK, secret)
        for k, v in cfg_kwargs.items():
            setattr(cfg, k, v)
        return oss.Client(cfg)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OssServer]:
    with OssServer(tmp_path_factory.mktemp("oss")) as srv:
        srv.client().put_bucket(oss.PutBucketRequest(bucket=BUCKET))
        yield srv


@pytest.fixture(scope="module")
def client(server: OssServer) -> oss.Client:
    return server.client()


def _service_error(exc: oss.exceptions.OperationError) -> oss.exceptions.ServiceError:
    err = exc.unwrap()
    assert isinstance(err, oss.exceptions.ServiceError), err
    return err


def test_put_get_head_delete(client: oss.Client) -> None:
    data = b"hello sandbox"
    put = client.put_object(oss.PutObjectRequest(bucket=BUCKET, key="a/hello.txt", body=data,
                                                 metadata={"Owner": "me"}))
    md5 = hashlib.md5(data).hexdigest().upper()
    assert put.etag == f'"{md5}"'
    crc = new_crc64()
    crc.update(data)
    assert put.hash_crc64 == str(crc.crcValue)  # the SDK also checks it itself
    assert len(put.request_id) == 24

    got = client.get_object(oss.GetObjectRequest(bucket=BUCKET, key="a/hello.txt"))
    assert got.body.read() == data
    assert got.content_type == "text/plain"
    assert got.metadata == {"owner": "me"}
    assert got.etag == put.etag

    ranged = client.get_object(oss.GetObjectRequest(bucket=BUCKET, key="a/hello.txt", range_header="bytes=6-",
                                                    range_behavior="standard"))
    assert ranged.body.read() == b"sandbox"
    assert ranged.content_range == f"bytes 6-12/{len(data)}"

    head = client.head_object(oss.HeadObjectRequest(bucket=BUCKET, key="a/hello.txt"))
    assert head.content_length == len(data)
    assert head.object_type == "Normal"
    assert client.is_object_exist(BUCKET, "a/hello.txt")
    assert client.is_bucket_exist(BUCKET)
    assert not client.is_bucket_exist("no-such-bkt")
    meta = client.get_object_meta(oss.GetObjectMetaRequest(bucket=BUCKET, key="a/hello.txt"))
    assert meta.content_length == len(data)

    copy = client.copy_object(oss.CopyObjectRequest(bucket=BUCKET, key="a/copy.txt", source_key="a/hello.txt"))
    assert copy.etag == put.etag

    client.delete_object(oss.DeleteObjectRequest(bucket=BUCKET, key="a/hello.txt"))
    client.delete_object(oss.DeleteObjectRequest(bucket=BUCKET, key="a/hello.txt"))  # 204 again
    assert not client.is_object_exist(BUCKET, "a/hello.txt")
    with pytest.raises(oss.exceptions.OperationError) as exc:
        client.get_object(oss.GetObjectRequest(bucket=BUCKET, key="a/hello.txt"))
    err = _service_error(exc.value)
    assert (err.status_code, err.code) == (404, "NoSuchKey")

    res = client.delete_multiple_objects(oss.DeleteMultipleObjectsRequest(
        bucket=BUCKET, objects=[oss.DeleteObject(key="a/copy.txt"), oss.DeleteObject(key="a/none")]))
    assert sorted(d.key for d in res.deleted_objects) == ["a/copy.txt", "a/none"]


def test_invalid_range_standard_is_416(client: oss.Client) -> None:
    client.put_object(oss.PutObjectRequest(bucket=BUCKET, key="r.bin", body=b"0123456789"))
    with pytest.raises(oss.exceptions.OperationError) as exc:
        client.get_object(oss.GetObjectRequest(bucket=BUCKET, key="r.bin", range_header="bytes=20-30",
                                               range_behavior="standard"))
    assert _service_error(exc.value).code == "InvalidRange"
    full = client.get_object(oss.GetObjectRequest(bucket=BUCKET, key="r.bin", range_header="bytes=20-30"))
    assert full.body.read() == b"0123456789"


def test_keys_with_spaces_plus_and_unicode(client: oss.Client) -> None:
    keys = ["sp ace/a b.txt", "plus/a+b=c&d.txt", "uni/日本語 ✓.bin", "pct/100%/x?y#z"]
    for k in keys:
        client.put_object(oss.PutObjectRequest(bucket=BUCKET, key=k, body=k.encode()))
    for k in keys:
        assert client.get_object(oss.GetObjectRequest(bucket=BUCKET, key=k)).body.read() == k.encode()
    listed = []
    for prefix in ("sp ace/", "plus/", "uni/", "pct/"):
        page = client.list_objects_v2(oss.ListObjectsV2Request(bucket=BUCKET, prefix=prefix))
        listed += [o.key for o in page.contents or []]
    assert sorted(listed) == sorted(keys)
    v1 = client.list_objects(oss.ListObjectsRequest(bucket=BUCKET, prefix="plus/", encoding_type="url"))
    assert [o.key for o in v1.contents] == ["plus/a+b=c&d.txt"]


def test_large_multipart_upload_and_ranged_download(server: OssServer, client: oss.Client, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    block = os.urandom(1 << 20)
    with open(src, "wb") as fh:
        for i in range(50):
            fh.write(bytes([i]) + block[1:])
    up = client.uploader(part_size=6 * 1024 * 1024, parallel_num=3)
    result = up.upload_file(oss.PutObjectRequest(bucket=BUCKET, key="big/50mb.bin"), str(src))
    assert result.etag.endswith('-9"')  # 50 MiB / 6 MiB parts
    head = client.head_object(oss.HeadObjectRequest(bucket=BUCKET, key="big/50mb.bin"))
    assert head.content_length == 50 << 20 and head.object_type == "Multipart"
    assert not server.storage.uploads  # parts cleaned up

    dst = tmp_path / "back.bin"
    down = client.downloader(part_size=6 * 1024 * 1024, parallel_num=3)
    dres = down.download_file(oss.GetObjectRequest(bucket=BUCKET, key="big/50mb.bin"), str(dst))
    assert dres.written == 50 << 20
    assert hashlib.md5(dst.read_bytes()).digest() == hashlib.md5(src.read_bytes()).digest()


def test_multipart_low_level_errors(client: oss.Client) -> None:
    init = client.initiate_multipart_upload(oss.InitiateMultipartUploadRequest(bucket=BUCKET, key="mp/x"))
    p1 = client.upload_part(oss.UploadPartRequest(bucket=BUCKET, key="mp/x", upload_id=init.upload_id,
                                                  part_number=1, body=b"a" * 10))
    p2 = client.upload_part(oss.UploadPartRequest(bucket=BUCKET, key="mp/x", upload_id=init.upload_id,
                                                  part_number=2, body=b"b" * 10))
    parts = client.list_parts(oss.ListPartsRequest(bucket=BUCKET, key="mp/x", upload_id=init.upload_id))
    assert [p.part_number for p in parts.parts] == [1, 2]
    uploads = client.list_multipart_uploads(oss.ListMultipartUploadsRequest(bucket=BUCKET, prefix="mp/"))
    assert [u.upload_id for u in uploads.uploads] == [init.upload_id]

    def complete(*pairs: tuple[int, str]) -> oss.exceptions.ServiceError:
        with pytest.raises(oss.exceptions.OperationError) as exc:
            client.complete_multipart_upload(oss.CompleteMultipartUploadRequest(
                bucket=BUCKET, key="mp/x", upload_id=init.upload_id,
                complete_multipart_upload=oss.CompleteMultipartUpload(
                    parts=[oss.UploadPart(part_number=n, etag=e) for n, e in pairs])))
        return _service_error(exc.value)

    assert complete((2, p2.etag), (1, p1.etag)).code == "InvalidPartOrder"
    assert complete((1, p1.etag), (2, '"00000000000000000000000000000000"')).code == "InvalidPart"
    assert complete((1, p1.etag), (2, p2.etag)).code == "EntityTooSmall"
    client.abort_multipart_upload(oss.AbortMultipartUploadRequest(bucket=BUCKET, key="mp/x",
                                                                   upload_id=init.upload_id))
    with pytest.raises(oss.exceptions.OperationError) as exc:
        client.list_parts(oss.ListPartsRequest(bucket=BUCKET, key="mp/x", upload_id=init.upload_id))
    assert _service_error(exc.value).code == "NoSuchUpload"

    # x-oss-complete-all: yes, with a single (last, so small) part
    init = client.initiate_multipart_upload(oss.InitiateMultipartUploadRequest(bucket=BUCKET, key="mp/y"))
    client.upload_part(oss.UploadPartRequest(bucket=BUCKET, key="mp/y", upload_id=init.upload_id,
                                             part_number=1, body=b"only"))
    client.complete_multipart_upload(oss.CompleteMultipartUploadRequest(
        bucket=BUCKET, key="mp/y", upload_id=init.upload_id, complete_all="yes"))
    assert client.get_object(oss.GetObjectRequest(bucket=BUCKET, key="mp/y")).body.read() == b"only"


def test_list_5000_objects_with_paginator_and_delimiter(server: OssServer, client: oss.Client) -> None:
    client.put_bucket(oss.PutBucketRequest(bucket="many"))
    keys = [f"d{i % 7}/obj-{i:05d}" for i in range(5000)] + ["top-a", "top-b"]
    for k in keys:  # seeded through storage: see the module docstring
        server.storage.put_bytes("many", k, b"x")
    seen: list[str] = []
    pages = 0
    for page in client.list_objects_v2_paginator(limit=1000).iter_page(oss.ListObjectsV2Request(bucket="many")):
        pages += 1
        seen += [o.key for o in page.contents or []]
    assert pages == 6
    assert seen == sorted(keys)

    prefixes: list[str] = []
    top: list[str] = []
    for page in client.list_objects_v2_paginator(limit=3).iter_page(
            oss.ListObjectsV2Request(bucket="many", delimiter="/")):
        prefixes += [p.prefix for p in page.common_prefixes or []]
        top += [o.key for o in page.contents or []]
    assert prefixes == [f"d{i}/" for i in range(7)]
    assert top == ["top-a", "top-b"]

    with pytest.raises(oss.exceptions.OperationError) as exc:
        client.delete_bucket(oss.DeleteBucketRequest(bucket="many"))
    assert _service_error(exc.value).code == "BucketNotEmpty"


def test_presigned_get_with_urllib(client: oss.Client) -> None:
    client.put_object(oss.PutObjectRequest(bucket=BUCKET, key="pre/signed file+.txt", body=b"presigned!"))
    pre = client.presign(oss.GetObjectRequest(bucket=BUCKET, key="pre/signed file+.txt"),
                         expires=datetime.timedelta(minutes=5))
    with urllib.request.urlopen(pre.url) as resp:
        assert resp.read() == b"presigned!"
    tampered = pre.url.replace("signed%20file", "signed%20fil")
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(tampered)
    assert exc.value.code == 403 and b"SignatureDoesNotMatch" in exc.value.read()


def test_v1_signature_header_and_presigned(server: OssServer) -> None:
    v1 = server.client(signature_version="v1")
    v1.put_object(oss.PutObjectRequest(bucket=BUCKET, key="v1/obj.txt", body=b"v1 body", metadata={"k": "v"}))
    assert v1.get_object(oss.GetObjectRequest(bucket=BUCKET, key="v1/obj.txt")).body.read() == b"v1 body"
    page = v1.list_objects_v2(oss.ListObjectsV2Request(bucket=BUCKET, prefix="v1/"))
    assert [o.key for o in page.contents] == ["v1/obj.txt"]
    pre = v1.presign(oss.GetObjectRequest(bucket=BUCKET, key="v1/obj.txt"))
    assert "OSSAccessKeyId=" in pre.url
    with urllib.request.urlopen(pre.url) as resp:
        assert resp.read() == b"v1 body"


def test_wrong_secret_is_rejected_and_writes_nothing(server: OssServer) -> None:
    bad = server.client(secret="wrong-secret")
    before = sorted(p.name for p in (server.data_dir / "objects" / BUCKET).iterdir())
    with pytest.raises(oss.exceptions.OperationError) as exc:
        bad.put_object(oss.PutObjectRequest(bucket=BUCKET, key="evil.txt", body=b"nope"))
    err = _service_error(exc.value)
    assert (err.status_code, err.code) == (403, "SignatureDoesNotMatch")
    assert "StringToSign" in err.error_fileds
    assert "evil.txt" not in server.storage.buckets[BUCKET].objects
    assert sorted(p.name for p in (server.data_dir / "objects" / BUCKET).iterdir()) == before


def test_unknown_access_key(server: OssServer) -> None:
    cfg = oss.config.load_default()
    cfg.region, cfg.endpoint = REGION, server.endpoint
    cfg.credentials_provider = oss.credentials.StaticCredentialsProvider("LTAIunknown", SK)
    with pytest.raises(oss.exceptions.OperationError) as exc:
        oss.Client(cfg).list_buckets(oss.ListBucketsRequest())
    assert _service_error(exc.value).code == "InvalidAccessKeyId"


def test_injected_503_is_retried(server: OssServer) -> None:
    patient = server.client(retry_max_attempts=20)
    server.faults.update({"error_rate": 1.0, "error_statuses": "503"})
    timer = threading.Timer(0.3, lambda: server.faults.update({"error_rate": 0.0}))
    started = time.monotonic()
    timer.start()
    try:
        res = patient.put_object(oss.PutObjectRequest(bucket=BUCKET, key="retry.txt", body=b"eventually"))
    finally:
        timer.cancel()
        server.faults.update({"error_rate": 0.0})
    assert res.status_code == 200
    assert time.monotonic() - started >= 0.3  # it did get 503s first, and retried through them

    server.faults.update({"error_rate": 1.0, "error_statuses": "503"})
    try:
        with pytest.raises(oss.exceptions.OperationError) as exc:
            server.client(retryer=oss.retry.NopRetryer()).get_object(
                oss.GetObjectRequest(bucket=BUCKET, key="retry.txt"))
    finally:
        server.faults.update({"error_rate": 0.0})
    err = _service_error(exc.value)
    assert (err.status_code, err.code) == (503, "ServiceUnavailable")
    assert len(err.request_id) == 24 and err.timestamp is not None


def test_virtual_hosted_request(server: OssServer, client: oss.Client) -> None:
    """Signed by the SDK's own V4 signer for `<bucket>.<endpoint>`, sent to 127.0.0.1 with that Host."""
    client.put_object(oss.PutObjectRequest(bucket=BUCKET, key="vh/obj 1.txt", body=b"virtual"))
    host = f"{BUCKET}.oss-{REGION}.aliyuncs.com:{server.port}"
    req = HttpRequest("GET", f"http://{host}/vh/obj%201.txt")
    SignerV4().sign(SigningContext(product="oss", region=REGION, bucket=BUCKET, key="vh/obj 1.txt", request=req,
                                   credentials=Credentials(AK, SK)))
    headers = {**dict(req.headers.items()), "Host": host}
    with urllib.request.urlopen(urllib.request.Request(f"{server.endpoint}/vh/obj%201.txt", headers=headers)) as r:
        assert r.read() == b"virtual"
        assert len(r.headers["x-oss-request-id"]) == 24 and r.headers["Date"]


def test_bad_content_md5_and_unsupported_subresource(server: OssServer, client: oss.Client) -> None:
    with pytest.raises(oss.exceptions.OperationError) as exc:
        client.put_object(oss.PutObjectRequest(bucket=BUCKET, key="md5.txt", body=b"abc",
                                               content_md5="1B2M2Y8AsgTpgAmY7PhCfg=="))  # MD5 of b""
    assert _service_error(exc.value).code == "InvalidDigest"
    assert "md5.txt" not in server.storage.buckets[BUCKET].objects
    with pytest.raises(oss.exceptions.OperationError) as exc:
        server.client(retryer=oss.retry.NopRetryer()).get_bucket_versioning(
            oss.GetBucketVersioningRequest(bucket=BUCKET))
    assert _service_error(exc.value).code == "NotImplemented"


def test_list_objects_v1_markers_and_bucket_lifecycle(client: oss.Client) -> None:
    client.put_bucket(oss.PutBucketRequest(bucket="v1-list"))
    for k in ["a/1", "a/2", "b", "c/1", "d"]:
        client.put_object(oss.PutObjectRequest(bucket="v1-list", key=k, body=b"."))
    seen: list[str] = []
    marker = ""
    while True:
        page = client.list_objects(oss.ListObjectsRequest(bucket="v1-list", delimiter="/", marker=marker,
                                                          max_keys=2))
        seen += [p.prefix for p in page.common_prefixes or []] + [o.key for o in page.contents or []]
        if not page.is_truncated:
            break
        marker = page.next_marker
    assert sorted(seen) == ["a/", "b", "c/", "d"]
    info = client.get_bucket_info(oss.GetBucketInfoRequest(bucket="v1-list"))
    assert info.bucket_info.name == "v1-list" and info.bucket_info.location == f"oss-{REGION}"
    for k in ["a/1", "a/2", "b", "c/1", "d"]:
        client.delete_object(oss.DeleteObjectRequest(bucket="v1-list", key=k))
    client.delete_bucket(oss.DeleteBucketRequest(bucket="v1-list"))
    assert not client.is_bucket_exist("v1-list")


def test_restart_keeps_buckets_and_objects(tmp_path: Path) -> None:
    with OssServer(tmp_path) as srv:
        c = srv.client()
        c.put_bucket(oss.PutBucketRequest(bucket="persist"))
        c.put_object(oss.PutObjectRequest(bucket="persist", key="k/1", body=b"one"))
        etag = c.head_object(oss.HeadObjectRequest(bucket="persist", key="k/1")).etag
    with OssServer(tmp_path) as srv:
        c = srv.client()
        assert [b.name for b in c.list_buckets(oss.ListBucketsRequest()).buckets] == ["persist"]
        got = c.get_object(oss.GetObjectRequest(bucket="persist", key="k/1"))
        assert got.body.read() == b"one" and got.etag == etag
        c.put_bucket(oss.PutBucketRequest(bucket="persist"))  # the owner may put it again (its metadata)
        with pytest.raises(oss.exceptions.OperationError) as exc:
            c.put_bucket(oss.PutBucketRequest(bucket="persist", create_bucket_configuration=(
                oss.CreateBucketConfiguration(storage_class="IA"))))
        err = _service_error(exc.value)
        assert (err.code, err.message) == ("BucketAlreadyExists", "Cannot modify existing bucket's storage class.")


@pytest.mark.parametrize("version", ["v4", "v1"])
def test_expired_presigned_url_is_access_denied(server: OssServer, version: str) -> None:
    """Checked at the verifier with a clock 2 minutes ahead, so the test need not sleep."""
    pre = server.client(signature_version=version).presign(
        oss.GetObjectRequest(bucket=BUCKET, key="x.txt"), expires=datetime.timedelta(minutes=1))
    path_qs = pre.url.split(str(server.port), 1)[1]
    request = make_mocked_request("GET", path_qs, headers={"Host": f"127.0.0.1:{server.port}"})
    target = resolve(request, None, lambda _name: False)
    assert authenticate(request, target, {AK: SK}, REGION) == AK
    with pytest.raises(OssError) as exc:
        authenticate(request, target, {AK: SK}, REGION, now=time.time() + 120)
    assert (exc.value.status, exc.value.code, exc.value.message) == (403, "AccessDenied", "Request has expired.")
