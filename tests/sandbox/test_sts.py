"""The sandbox's STS AssumeRoleWithOIDC (RRSA), driven by the real `alibabacloud_credentials` OIDC provider, and the
OSS that accepts the temporary keys it issues (issue 11: pods get credentials without an AccessKey in the cluster).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import alibabacloud_oss_v2 as oss
import pytest
from alibabacloud_credentials.exceptions import CredentialException
from alibabacloud_credentials.provider import OIDCRoleArnCredentialsProvider

from sandbox.oss.context import ACCOUNT_ID
from sandbox.ram import provider_arn, role_arn

ROLE = "ask-batch-pods"  # the role the sandbox account starts with (sandbox/ram.py)


@pytest.fixture(scope="module")
def endpoints(sandbox: Any) -> dict[str, Any]:
    return dict(json.loads((Path(sandbox.sandbox.data_dir) / "endpoints.json").read_text()))


def token_file(sandbox: Any, tmp_path: Path, *, service_account: str = "askb-sa-test", namespace: str = "default",
               audience: str = "sts.aliyuncs.com", now: float | None = None, expiration_s: int = 3600) -> str:
    """A token as the node writes it into a projected volume of a pod running as `service_account`."""
    tokens = sandbox.sandbox.default_cluster.tokens
    path = tmp_path / f"token-{uuid.uuid4().hex[:6]}"
    path.write_text(tokens.issue(namespace=namespace, service_account=service_account, audience=audience, now=now,
                                 expiration_s=expiration_s))
    return str(path)


def provider(sandbox: Any, endpoints: dict[str, Any], token: str, *, role: str = ROLE,
             oidc_arn: str | None = None) -> OIDCRoleArnCredentialsProvider:
    return OIDCRoleArnCredentialsProvider(
        role_arn=role_arn(ACCOUNT_ID, role),
        oidc_provider_arn=oidc_arn or provider_arn(ACCOUNT_ID, sandbox.sandbox.default_cluster_id),
        oidc_token_file_path=token, role_session_name="ask-batch-test", sts_endpoint=endpoints["sts"]["endpoint"])


def oss_client(endpoints: dict[str, Any], ak: str, sk: str, token: str | None) -> oss.Client:
    cfg = oss.config.load_default()
    cfg.region = endpoints["region"]
    cfg.endpoint = endpoints["oss"]["endpoint"]
    cfg.use_path_style = True
    cfg.credentials_provider = oss.credentials.StaticCredentialsProvider(ak, sk, token)
    cfg.retry_max_attempts = 1
    return oss.Client(cfg)


def oss_error_code(exc: BaseException) -> str:
    inner = exc.unwrap() if hasattr(exc, "unwrap") else exc
    assert isinstance(inner, oss.exceptions.ServiceError), exc
    return str(inner.code)


def sts_failure(sandbox: Any, endpoints: dict[str, Any], token: str, **kw: Any) -> str:
    with pytest.raises(CredentialException) as err:
        provider(sandbox, endpoints, token, **kw).get_credentials()
    return str(err.value)


def test_a_pod_token_buys_temporary_keys_that_oss_accepts_with_their_security_token(
        sandbox: Any, endpoints: dict[str, Any], tmp_path: Path) -> None:
    creds = provider(sandbox, endpoints, token_file(sandbox, tmp_path)).get_credentials()
    assert creds.get_access_key_id().startswith("STS.")
    bucket = f"sts-{uuid.uuid4().hex[:10]}"
    owner = oss_client(endpoints, endpoints["access_key_id"], endpoints["access_key_secret"], None)
    owner.put_bucket(oss.PutBucketRequest(bucket=bucket))
    pod = oss_client(endpoints, creds.get_access_key_id(), creds.get_access_key_secret(), creds.get_security_token())
    pod.put_object(oss.PutObjectRequest(bucket=bucket, key="index-0/_SUCCESS", body=b"ok"))
    assert owner.get_object(oss.GetObjectRequest(bucket=bucket, key="index-0/_SUCCESS")).body.read() == b"ok"

    without_token = oss_client(endpoints, creds.get_access_key_id(), creds.get_access_key_secret(), None)
    with pytest.raises(Exception) as err:
        without_token.put_object(oss.PutObjectRequest(bucket=bucket, key="x", body=b"x"))
    assert oss_error_code(err.value) == "InvalidSecurityToken"

    keys = sandbox.sandbox.temporary_keys
    sandbox.run(setattr, keys, "clock", lambda: time.time() + 2 * 3600)  # past Expiration (one hour)
    try:
        with pytest.raises(Exception) as err:
            pod.put_object(oss.PutObjectRequest(bucket=bucket, key="late", body=b"x"))
        assert oss_error_code(err.value) == "InvalidAccessKeyId"
    finally:
        sandbox.run(setattr, keys, "clock", time.time)


def test_an_expired_token_is_refused(sandbox: Any, endpoints: dict[str, Any], tmp_path: Path) -> None:
    old = token_file(sandbox, tmp_path, now=time.time() - 7200, expiration_s=600)
    assert "AuthenticationFail.OIDCToken.Expired" in sts_failure(sandbox, endpoints, old)


def test_a_token_for_another_audience_is_refused(sandbox: Any, endpoints: dict[str, Any], tmp_path: Path) -> None:
    token = token_file(sandbox, tmp_path, audience="https://kubernetes.default.svc")
    assert "AuthenticationFail.OIDCToken.AudienceNotMatch" in sts_failure(sandbox, endpoints, token)


def test_an_unknown_role_is_named(sandbox: Any, endpoints: dict[str, Any], tmp_path: Path) -> None:
    message = sts_failure(sandbox, endpoints, token_file(sandbox, tmp_path), role="no-such-role")
    assert "EntityNotExist.Role" in message and "no-such-role" in message


def test_a_role_that_does_not_trust_the_service_account_refuses_it(
        sandbox: Any, endpoints: dict[str, Any], tmp_path: Path) -> None:
    import urllib.request

    oidc = provider_arn(ACCOUNT_ID, sandbox.sandbox.default_cluster_id)
    policy = {"Version": "1", "Statement": [{
        "Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"Federated": [oidc]},
        "Condition": {"StringEquals": {"oidc:aud": "sts.aliyuncs.com",
                                       "oidc:sub": "system:serviceaccount:other:reader"}}}]}
    request = urllib.request.Request(f"{endpoints['control']['endpoint']}/ram/roles/only-other-reader",
                                     data=json.dumps({"trust_policy": policy}).encode(), method="PUT",
                                     headers={"Authorization": f"Bearer {endpoints['control']['token']}"})
    urllib.request.urlopen(request).read()
    token = token_file(sandbox, tmp_path)
    assert "AuthenticationFail.NoPermission" in sts_failure(sandbox, endpoints, token, role="only-other-reader")
    trusted = token_file(sandbox, tmp_path, namespace="other", service_account="reader")
    assert provider(sandbox, endpoints, trusted, role="only-other-reader").get_credentials().get_security_token()


def test_a_cluster_without_rrsa_is_no_provider(sandbox: Any, endpoints: dict[str, Any], tmp_path: Path) -> None:
    message = sts_failure(sandbox, endpoints, token_file(sandbox, tmp_path),
                          oidc_arn=provider_arn(ACCOUNT_ID, "c" + "0" * 32))
    assert "No such OIDC Provider registered" in message


def test_a_token_signed_by_another_key_is_refused(sandbox: Any, endpoints: dict[str, Any], tmp_path: Path) -> None:
    from sandbox.k8s.satokens import TokenIssuer

    real = sandbox.sandbox.default_cluster.tokens
    forger = TokenIssuer(tmp_path / "other.key", real.issuer)  # same issuer, another key
    path = tmp_path / "forged"
    path.write_text(forger.issue(namespace="default", service_account="askb-sa-x", audience="sts.aliyuncs.com"))
    assert "AuthenticationFail.OIDCToken.InvalidSignature" in sts_failure(sandbox, endpoints, str(path))
