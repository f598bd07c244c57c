"""OSS details that independent clients check (issue 13): the older `oss2` SDK and the v2 SDK, unmodified.

oss2 parses listing times with the exact format `%Y-%m-%dT%H:%M:%S.000Z`, signs V1 with its own sub-resource
list, reads CompleteMultipartUpload's ETag from a header and follows NextKeyMarker / NextUploadIdMarker in its
paginators, so it fails on any of those being off.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import alibabacloud_oss_v2 as oss
import oss2
import pytest
from test_oss import AK, REGION, SK, OssServer, _service_error

BUCKET = "fidelity"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OssServer]:
    with OssServer(tmp_path_factory.mktemp("oss-fidelity")) as srv:
        srv.client().put_bucket(oss.PutBucketRequest(bucket=BUCKET))
        yield srv


@pytest.fixture(scope="module")
def bucket2(server: OssServer) -> oss2.Bucket:
    return oss2.Bucket(oss2.Auth(AK, SK), server.endpoint, BUCKET)


@pytest.fixture(scope="module")
def bucket2_v4(server: OssServer) -> oss2.Bucket:
    return oss2.Bucket(oss2.ProviderAuthV4(oss2.credentials.StaticCredentialsProvider(AK, SK)), server.endpoint,
                       BUCKET, region=REGION)


def test_listing_times_have_second_precision(server: OssServer, bucket2: oss2.Bucket) -> None:
    bucket2.put_object("t/one.txt", b"1")
    date = email.utils.formatdate(usegmt=True)
    signature = base64.b64encode(hmac.new(SK.encode(), f"GET\n\n\n{date}\n/{BUCKET}/".encode(),
                                          hashlib.sha1).digest()).decode()
    request = urllib.request.Request(f"{server.endpoint}/{BUCKET}/", headers={
        "Date": date, "Authorization": f"OSS {AK}:{signature}"})
    with urllib.request.urlopen(request, timeout=10) as raw:
        times = re.findall(rb"<LastModified>([^<]+)</LastModified>", raw.read())
    assert times and all(re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z", t) for t in times)
    listed = list(oss2.ObjectIterator(bucket2, prefix="t/"))  # raises on any other time format
    assert [o.key for o in listed] == ["t/one.txt"] and listed[0].last_modified > 0
    service = oss2.Service(oss2.Auth(AK, SK), server.endpoint)
    assert BUCKET in [b.name for b in oss2.BucketIterator(service)]
    info = bucket2.get_bucket_info()
    assert info.name == BUCKET and info.creation_date.endswith(".000Z")


@pytest.mark.parametrize("auth", ["v1", "v4"])
def test_oss2_put_get_list_copy_delete(auth: str, bucket2: oss2.Bucket, bucket2_v4: oss2.Bucket) -> None:
    b = bucket2 if auth == "v1" else bucket2_v4
    key = f"{auth}/dir/obj +&.txt"
    result = b.put_object(key, b"payload", headers={"Content-Type": "text/plain", "x-oss-meta-k": "v"})
    assert result.status == 200 and result.etag
    got = b.get_object(key)
    assert got.read() == b"payload" and got.headers["x-oss-meta-k"] == "v"
    assert b.get_object(key, byte_range=(1, 3)).read() == b"ayl"
    assert b.head_object(key).content_length == 7
    b.copy_object(BUCKET, key, key + ".copy")
    listing = b.list_objects(prefix=f"{auth}/", delimiter="/")
    assert listing.prefix_list == [f"{auth}/dir/"]
    assert sorted(o.key for o in oss2.ObjectIterator(b, prefix=f"{auth}/dir/")) == [key, key + ".copy"]
    assert sorted(o.key for o in oss2.ObjectIteratorV2(b, prefix=f"{auth}/dir/")) == [key, key + ".copy"]
    b.batch_delete_objects([key, key + ".copy"])
    assert not b.object_exists(key)


def test_oss2_multipart_and_complete_etag_header(bucket2: oss2.Bucket, tmp_path: Path) -> None:
    key = "mp/big.bin"
    upload_id = bucket2.init_multipart_upload(key).upload_id
    parts = []
    for n, data in enumerate((b"a" * (100 * 1024), b"b" * 10), start=1):
        res = bucket2.upload_part(key, upload_id, n, data)
        parts.append(oss2.models.PartInfo(n, res.etag))
    assert [p.part_number for p in oss2.PartIterator(bucket2, key, upload_id)] == [1, 2]
    done = bucket2.complete_multipart_upload(key, upload_id, parts)
    assert done.etag and done.headers["ETag"].strip('"') == done.etag  # oss2 reads the header
    assert bucket2.get_object(key).read() == b"a" * (100 * 1024) + b"b" * 10
    source = tmp_path / "resumable.bin"
    source.write_bytes(b"r" * (300 * 1024))
    oss2.resumable_upload(bucket2, "mp/resumable.bin", str(source), multipart_threshold=100 * 1024,
                          part_size=100 * 1024, store=oss2.ResumableStore(root=str(tmp_path)))
    assert bucket2.head_object("mp/resumable.bin").content_length == 300 * 1024


def test_list_multipart_uploads_with_delimiter_always_advances(server: OssServer, bucket2: oss2.Bucket) -> None:
    """Pages of common prefixes only used to say IsTruncated with empty markers: paginators looped for ever."""
    ids = [bucket2.init_multipart_upload(f"up/{d}/file").upload_id for d in ("a", "b", "c")]
    ids.append(bucket2.init_multipart_upload("up/top").upload_id)
    seen = [(u.key, u.is_prefix()) for u in oss2.MultipartUploadIterator(bucket2, prefix="up/", delimiter="/",
                                                                         max_uploads=1)]
    assert seen == [("up/a/", True), ("up/b/", True), ("up/c/", True), ("up/top", False)]
    client = server.client()
    markers: list[str] = []  # the v2 SDK does not parse CommonPrefixes here; its paginator follows the markers
    for pages, page in enumerate(client.list_multipart_uploads_paginator(limit=1).iter_page(
            oss.ListMultipartUploadsRequest(bucket=BUCKET, prefix="up/", delimiter="/"))):
        assert pages < 10
        markers.append(page.next_key_marker or "")
    assert markers[:3] == ["up/a/", "up/b/", "up/c/"] and len(markers) == 4
    for key, upload_id in zip(["up/a/file", "up/b/file", "up/c/file", "up/top"], ids, strict=True):
        bucket2.abort_multipart_upload(key, upload_id)


def test_bad_content_md5_is_invalid_digest(bucket2: oss2.Bucket) -> None:
    with pytest.raises(oss2.exceptions.OssError) as exc:
        bucket2.put_object("md5", b"body", headers={"Content-MD5": "1B2M2Y8AsgTpgAmY7PhCfg=="})
    assert (exc.value.status, exc.value.code) == (400, "InvalidDigest")


def test_recreating_an_owned_bucket(server: OssServer) -> None:
    b = oss2.Bucket(oss2.Auth(AK, SK), server.endpoint, "mine")
    b.create_bucket()
    assert b.create_bucket().status == 200  # the owner's PutBucket again updates metadata
    with pytest.raises(oss2.exceptions.OssError) as exc:
        b.create_bucket(input=oss2.models.BucketCreateConfig(oss2.BUCKET_STORAGE_CLASS_IA))
    assert (exc.value.status, exc.value.code) == (409, "BucketAlreadyExists")
    b.delete_bucket()


def test_v1_documented_subresources_are_signed(bucket2: oss2.Bucket) -> None:
    bucket2.put_object("limited", b"x" * 1000)
    # x-oss-traffic-limit is a documented V1 sub-resource: signed, accepted (the limit is not enforced)
    url = bucket2.sign_url("GET", "limited", 60, params={"x-oss-traffic-limit": str(100 * 1024 * 8)})
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.read() == b"x" * 1000
    # x-oss-process is signed too; image processing is not emulated: a clean 501, not a signature error
    url = bucket2.sign_url("GET", "limited", 60, params={"x-oss-process": "image/resize,w_10"})
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(url, timeout=10)
    assert exc.value.code == 501 and b"<Code>NotImplemented</Code>" in exc.value.read()


def test_v4_presigned_url_survives_re_encoding(server: OssServer) -> None:
    client = server.client()
    client.put_object(oss.PutObjectRequest(bucket=BUCKET, key="re~enc", body=b"ok"))
    url = client.presign(oss.GetObjectRequest(bucket=BUCKET, key="re~enc", response_content_type="text/x~y")).url
    # what a proxy or browser may do to a query on the way: lower-case escapes, `~` escaped, `/` unescaped
    reencoded = re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), url).replace("x~y", "x%7Ey")
    reencoded = reencoded.replace("%2f", "/")
    assert reencoded != url
    for candidate in (url, reencoded):
        with urllib.request.urlopen(candidate, timeout=10) as resp:
            assert resp.read() == b"ok" and resp.headers["Content-Type"] == "text/x~y"
    tampered = reencoded.replace("text", "texx")
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(tampered, timeout=10)
    assert exc.value.code == 403


def test_v2_sdk_bucket_info_documented_fields(server: OssServer) -> None:
    info = server.client().get_bucket_info(oss.GetBucketInfoRequest(bucket=BUCKET)).bucket_info
    assert info.name == BUCKET and info.creation_date is not None and info.acl == "private"
    assert info.owner.id and info.sse_rule.sse_algorithm is not None and info.bucket_policy is not None
    assert not info.comment and info.block_public_access is False and info.data_redundancy_type == "LRS"
    with pytest.raises(oss.exceptions.OperationError) as exc:
        server.client().put_object(oss.PutObjectRequest(bucket=BUCKET, key="x", body=b"a",
                                                        content_md5="1B2M2Y8AsgTpgAmY7PhCfg=="))
    assert _service_error(exc.value).code == "InvalidDigest"


def test_uploads_of_one_key_page_in_upload_id_order(bucket2: oss2.Bucket) -> None:
    """oss2's own test_upload_iterator: ten uploads of one key, two per page, come back sorted by upload id."""
    ids = [bucket2.init_multipart_upload("same/key").upload_id for _ in range(10)]
    got = [u.upload_id for u in oss2.MultipartUploadIterator(bucket2, prefix="same/", delimiter="/", max_uploads=2)]
    assert got == sorted(ids)
    for upload_id in ids:
        bucket2.abort_multipart_upload("same/key", upload_id)


def test_batch_delete_of_a_key_with_a_control_character(bucket2: oss2.Bucket) -> None:
    """oss2 writes such keys into the Delete document as they are; OSS's parser takes them (oss2's test_chinese)."""
    key = "中文\x0c-2.txt"
    bucket2.put_object(key, b"x")
    assert bucket2.batch_delete_objects([key]).deleted_keys == [key]
    assert not bucket2.object_exists(key)
