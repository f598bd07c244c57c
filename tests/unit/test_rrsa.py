"""Pod credentials through RRSA (issue 11): the parameters, the ServiceAccount and the pod template."""

import kubernetes_validate
import pytest

from tasks.cloud.clients import AliCredentials
from tasks.cloud.inputs import pod_credential_env
from tasks.render.manifests import ConfigContent, JobInputs, create_cluster_body, job_manifest, render_config_objects
from tasks.render.rrsa import RrsaIdentity, role_arn_for
from tasks.spec import SpecError, parse_spec
from tests.unit.conftest import BASE, with_changes

PROVIDER = "acs:ram::1234567890123456:oidc-provider/ack-rrsa-c0123456789abcdef"
IDENTITY = RrsaIdentity("askb-sa-run-1", "acs:ram::1234567890123456:role/ask-batch-pods", PROVIDER)
EXISTING = {"cluster.mode": "existing", "cluster.existing.credentials_block": "my-cluster"}


def spec_with(**changes):
    return parse_spec(with_changes(BASE, changes))


def problems(**changes) -> str:
    with pytest.raises(SpecError) as err:
        spec_with(**changes)
    return str(err.value)


def test_rrsa_is_the_default_on_ask_and_acs_and_target_with_an_existing_cluster():
    assert spec_with().outputs.pod_credentials == "rrsa"
    assert spec_with(**{"cluster.mode": "acs"}).outputs.pod_credentials == "rrsa"
    assert spec_with(**EXISTING).outputs.pod_credentials == "target"
    assert spec_with(**{"outputs.pod_credentials": "target"}).outputs.pod_credentials == "target"


def test_bad_combinations_are_refused_naming_the_field_and_the_fix():
    text = problems(**EXISTING, **{"outputs.pod_credentials": "rrsa"})
    assert "outputs.pod_credentials 'rrsa'" in text and "fix:" in text and "'target'" in text
    text = problems(**{"job.service_account": "mine"})
    assert "job.service_account 'mine'" in text and "fix: remove job.service_account" in text
    assert "reserved" in problems(**{"job.env": {"ALIBABA_CLOUD_ROLE_ARN": "x"}})


@pytest.mark.parametrize("name", ["acs:ram::1:role/x", "a" * 65, "my_role", ""])
def test_rrsa_role_names_follow_ram_rules(name):
    text = problems(**{"outputs.rrsa_role_name": name})
    assert "outputs.rrsa_role_name" in text and "1-64 letters, digits, '.' or '-'" in text


def test_role_names_at_the_limits_are_accepted():
    assert spec_with(**{"outputs.rrsa_role_name": "a" * 64}).outputs.rrsa_role_name == "a" * 64
    assert spec_with(**{"outputs.rrsa_role_name": "Pods.v2-x"}).outputs.rrsa_role_name == "Pods.v2-x"


def test_no_access_key_reaches_the_secret_in_rrsa_mode_and_the_service_account_names_the_role():
    key = AliCredentials(access_key_id="LTAIexample", access_key_secret="secret-example")
    assert pod_credential_env(spec_with(), key) == {}
    assert set(pod_credential_env(spec_with(**{"outputs.pod_credentials": "target"}), key)) == {
        "OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET"}
    objects = render_config_objects(spec_with(**{"outputs.rrsa_role_name": "my-pods"}), "run-1",
                                    ConfigContent(files={"a": b"1"}))
    assert [o["kind"] for o in objects] == ["ConfigMap", "ServiceAccount"]
    account = objects[1]
    assert account["metadata"]["name"] == "askb-sa-run-1"
    assert account["metadata"]["annotations"] == {"pod-identity.alibabacloud.com/role-name": "my-pods"}
    assert account["metadata"]["labels"]["ask-batch.io/run"] == "run-1"
    kubernetes_validate.validate(account, "1.32.0", strict=True)


def test_the_pod_template_carries_the_service_account_token_volume_and_sts_env():
    spec = spec_with(**{"target.region": "cn-beijing"})
    job = job_manifest(spec, run_key="run-1", inputs=JobInputs(rrsa=IDENTITY))
    kubernetes_validate.validate(job, "1.32.0", strict=True)
    pod = job["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == "askb-sa-run-1"
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "rrsa-oidc-token")
    assert volume["projected"]["sources"] == [{"serviceAccountToken": {
        "audience": "sts.aliyuncs.com", "expirationSeconds": 3600, "path": "token"}}]
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ALIBABA_CLOUD_ROLE_ARN"] == IDENTITY.role_arn
    assert env["ALIBABA_CLOUD_OIDC_PROVIDER_ARN"] == PROVIDER
    assert env["ALIBABA_CLOUD_OIDC_TOKEN_FILE"] == "/var/run/secrets/ack.alibabacloud.com/rrsa-tokens/token"
    assert env["ALIBABA_CLOUD_STS_ENDPOINT"] == "sts-vpc.cn-beijing.aliyuncs.com"
    assert env["ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED"] == "true"
    assert not [k for k in env if k.startswith("OSS_ACCESS_KEY")]
    assert {"name": "rrsa-oidc-token", "mountPath": "/var/run/secrets/ack.alibabacloud.com/rrsa-tokens",
            "readOnly": True} in container["volumeMounts"]
    assert pod["metadata"]["annotations"]["pod-identity.alibabacloud.com/skip-containers"] == "workload"


def test_an_sts_endpoint_override_is_what_the_pods_call():
    spec = spec_with(**{"target.endpoints.sts": "http://127.0.0.1:9005"})
    env = {e["name"]: e.get("value") for e in job_manifest(spec, run_key="r", inputs=JobInputs(rrsa=IDENTITY))[
        "spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ALIBABA_CLOUD_STS_ENDPOINT"] == "http://127.0.0.1:9005"
    assert "ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED" not in env


def test_the_role_arn_takes_the_account_from_the_provider():
    assert role_arn_for(PROVIDER, "ask-batch-pods") == "acs:ram::1234567890123456:role/ask-batch-pods"
    with pytest.raises(ValueError):
        role_arn_for("acs:ram::123:role/not-a-provider", "x")


def test_a_new_cluster_is_created_with_rrsa_when_the_pods_use_it():
    spec = spec_with(**{"cluster.ask.zone_id": "cn-hangzhou-k"})
    body = create_cluster_body(spec.cluster.ask, region="cn-hangzhou", run_key="r", rrsa=True)
    assert body["rrsa_config"] == {"enabled": True}
    assert "rrsa_config" not in create_cluster_body(spec.cluster.ask, region="cn-hangzhou", run_key="r")
