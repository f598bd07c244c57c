"""Client factories: endpoint overrides applied in one place, credentials resolved without leaking."""

import json

import yaml

from tasks.cloud.clients import (
    AliCredentials,
    cs_client,
    kube_api_client,
    load_kubeconfig,
    nas_client,
    oss_client,
    resolve_credentials,
    split_endpoint,
    target_from_endpoints_file,
)
from tasks.spec import CredentialsSpec, Target

CREDS = AliCredentials("AKIDEXAMPLE", "very-secret-value", None)

KUBECONFIG = {
    "apiVersion": "v1", "kind": "Config", "current-context": "c",
    "clusters": [{"name": "k", "cluster": {"server": "https://10.0.0.1:6443", "insecure-skip-tls-verify": True}}],
    "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
    "users": [{"name": "u", "user": {"token": "t0ken"}}],
}


def test_split_endpoint():
    assert split_endpoint("http://127.0.0.1:8081") == ("127.0.0.1:8081", "http")
    assert split_endpoint("cs-vpc.cn-hangzhou.aliyuncs.com") == ("cs-vpc.cn-hangzhou.aliyuncs.com", "https")


def test_tea_clients_use_overrides_or_region():
    local = Target(region="cn-sandbox", endpoints={"cs": "http://127.0.0.1:1", "nas": "http://127.0.0.1:2"})
    assert (cs_client(local, CREDS)._endpoint, cs_client(local, CREDS)._protocol) == ("127.0.0.1:1", "http")
    assert nas_client(local, CREDS)._endpoint == "127.0.0.1:2"
    real = Target(region="cn-beijing")
    assert cs_client(real, CREDS)._endpoint == "cs.cn-beijing.aliyuncs.com"
    assert nas_client(real, CREDS)._endpoint == "nas.cn-beijing.aliyuncs.com"


def test_oss_client_path_style_for_local_hosts():
    client = oss_client(Target(region="cn-sandbox", endpoints={"oss": "http://localhost:9000"}), CREDS)
    import alibabacloud_oss_v2 as oss

    request = client.presign(oss.GetObjectRequest(bucket="bkt", key="a/b.txt"))
    assert request.url.startswith("http://localhost:9000/bkt/a/b.txt")


def test_credentials_from_secret_blocks_and_repr_hides_them():
    blocks = {"ak-id": "AKIDEXAMPLE", "ak-secret": "very-secret-value"}
    creds = resolve_credentials(CredentialsSpec(mode="secret_blocks", access_key_id_block="ak-id",
                                                access_key_secret_block="ak-secret"), load_secret=blocks.__getitem__)
    assert creds.access_key_secret == "very-secret-value"
    assert "very-secret" not in repr(creds) and "very-secret" not in str(creds)


def test_default_chain_reads_the_environment(monkeypatch):
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "envsecret")
    assert resolve_credentials(CredentialsSpec()).access_key_id == "AKIDENV"


def test_endpoints_file_becomes_a_plain_target(tmp_path):
    path = tmp_path / "endpoints.json"
    path.write_text(json.dumps({"region": "cn-sandbox", "access_key_id": "AK", "access_key_secret": "SK",
                                "kubernetes": {"server": "http://127.0.0.1:6443", "kubeconfig": "k"},
                                "oss": {"endpoint": "http://127.0.0.1:9000"}, "cs": {"endpoint": "127.0.0.1:8081"},
                                "nas": {"endpoint": "127.0.0.1:8082"}}))
    target, env = target_from_endpoints_file(path)
    assert target.region == "cn-sandbox"
    assert target.endpoints.cs == "http://127.0.0.1:8081" and target.endpoints.oss == "http://127.0.0.1:9000"
    assert target.credentials.mode == "default_chain"
    assert env == {"ALIBABA_CLOUD_ACCESS_KEY_ID": "AK", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "SK"}


def test_kube_api_client_from_text_file_or_dict(tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(KUBECONFIG))
    assert load_kubeconfig(str(path))["current-context"] == "c"
    assert load_kubeconfig(yaml.safe_dump(KUBECONFIG))["clusters"][0]["name"] == "k"
    client = kube_api_client(KUBECONFIG, server_override="http://127.0.0.1:7000")
    assert client.configuration.host == "http://127.0.0.1:7000"
    assert KUBECONFIG["clusters"][0]["cluster"]["server"] == "https://10.0.0.1:6443"  # input not mutated
