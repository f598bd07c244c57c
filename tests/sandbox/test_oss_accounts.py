"""The sandbox's OSS knows two accounts, as the real, global bucket namespace does (issue 11).

A bucket belongs to the account that created it: another account gets 403 AccessDenied on it, cannot create a
bucket of that name (409 BucketAlreadyExists) and does not see it in ListBuckets.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import alibabacloud_oss_v2 as oss
import pytest


def client(endpoints: dict[str, Any], ak: str, sk: str) -> oss.Client:
    cfg = oss.config.load_default()
    cfg.region = endpoints["region"]
    cfg.endpoint = endpoints["oss"]["endpoint"]
    cfg.use_path_style = True
    cfg.credentials_provider = oss.credentials.StaticCredentialsProvider(ak, sk)
    return oss.Client(cfg)


@pytest.fixture(scope="module")
def clients(sandbox: Any) -> tuple[oss.Client, oss.Client]:
    endpoints = json.loads((Path(sandbox.sandbox.data_dir) / "endpoints.json").read_text())
    other = endpoints["other_account"]
    return (client(endpoints, endpoints["access_key_id"], endpoints["access_key_secret"]),
            client(endpoints, other["access_key_id"], other["access_key_secret"]))


def service_error(exc: BaseException) -> Any:
    inner = exc.unwrap() if hasattr(exc, "unwrap") else exc
    assert isinstance(inner, oss.exceptions.ServiceError), exc
    return inner


def test_a_bucket_of_another_account_is_forbidden_and_its_name_taken(clients: Any) -> None:
    mine, theirs = clients
    name = "foreign-" + uuid.uuid4().hex[:12]
    theirs.put_bucket(oss.PutBucketRequest(bucket=name))
    for attempt in (lambda: mine.get_bucket_info(oss.GetBucketInfoRequest(bucket=name)),
                    lambda: mine.put_object(oss.PutObjectRequest(bucket=name, key="k", body=b"x")),
                    lambda: mine.list_objects_v2(oss.ListObjectsV2Request(bucket=name))):
        with pytest.raises(oss.exceptions.OperationError) as caught:
            attempt()
        err = service_error(caught.value)
        assert (err.status_code, err.code) == (403, "AccessDenied")
        assert "does not belong to you" in err.message
    with pytest.raises(oss.exceptions.OperationError) as caught:
        mine.put_bucket(oss.PutBucketRequest(bucket=name))
    assert service_error(caught.value).code == "BucketAlreadyExists"
    listed = [b.name for b in mine.list_buckets(oss.ListBucketsRequest()).buckets or []]
    assert name not in listed
    assert name in [b.name for b in theirs.list_buckets(oss.ListBucketsRequest()).buckets or []]
    theirs.put_object(oss.PutObjectRequest(bucket=name, key="k", body=b"x"))  # the owner may
