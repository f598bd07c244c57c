"""Pod credentials through RRSA, the default on ASK (issue 11): a run stores no AccessKey in the cluster, its pods
trade their service-account token for temporary keys at the sandbox's STS, and a role the pods cannot assume
fails the run with STS's own reason.
"""

import base64
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from flows.ask_batch import ask_batch
from flows.cli import build_spec
from flows.run_files import flow_parameters
from tests.e2e.conftest import EXAMPLE, example_sets, kube

SMALL = ["job.completions=2", "job.parallelism=2"]


def run(sandbox_dir: Path, workdir: Path, run_key: str, *extra: str) -> tuple[Any, Any]:
    spec = build_spec(EXAMPLE, example_sets(workdir, run_key) + SMALL + list(extra), sandbox_dir)
    return spec, ask_batch(**flow_parameters(spec), return_state=True)


def sts_requests(sandbox_dir: Path) -> int:
    control = json.loads((sandbox_dir / "endpoints.json").read_text())["control"]["endpoint"]
    stats = json.loads(urllib.request.urlopen(f"{control}/stats").read())
    return int(stats["services"].get("sts", {}).get("requests", 0))


def test_a_default_run_uploads_its_outputs_and_stores_no_access_key_in_the_cluster(
        sandbox_dir: Path, workdir: Path) -> None:
    endpoints = json.loads((sandbox_dir / "endpoints.json").read_text())
    before = sts_requests(sandbox_dir)
    # Keep the run's objects after it ends, to look at what it stored.
    spec, state = run(sandbox_dir, workdir, "e2e-rrsa", "teardown.config=never", "teardown.job=never")
    assert spec.outputs.pod_credentials == "rrsa"
    assert state.is_completed(), state.message
    assert len(list((workdir / "outputs" / "ask-batch-e2e-rrsa").glob("index-*/result.json"))) == 2
    assert sts_requests(sandbox_dir) >= before + 2  # each pod assumed the role itself

    core = client.CoreV1Api(kube(spec))
    secrets = core.list_namespaced_secret("default").items
    assert any(s.metadata.name.startswith("askb-sec-e2e-rrsa") for s in secrets)  # the demo token is there
    for secret in secrets:
        for key, value in (secret.data or {}).items():
            text = base64.b64decode(value).decode(errors="replace")
            assert endpoints["access_key_id"] not in text and endpoints["access_key_secret"] not in text, \
                (secret.metadata.name, key)
            assert not key.endswith(("OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET")), (secret.metadata.name, key)
    account = core.read_namespaced_service_account("askb-sa-e2e-rrsa", "default")
    assert account.metadata.annotations["pod-identity.alibabacloud.com/role-name"] == "ask-batch-pods"
    job = client.BatchV1Api(kube(spec)).list_namespaced_job("default", label_selector="ask-batch.io/run=e2e-rrsa")
    assert job.items[0].spec.template.spec.service_account_name == "askb-sa-e2e-rrsa"

    # teardown deletes the ServiceAccount with the ConfigMap and Secret
    from tasks.stages.teardown import teardown

    teardown(spec.model_copy(update={"teardown": spec.teardown.model_copy(update={"config": "always",
                                                                                   "job": "always"})}),
             run_key="e2e-rrsa", succeeded=True, cluster=None, volume=None, config=None, job=None,
             core_v1=core, batch_v1=client.BatchV1Api(kube(spec)), nas=None, cs=None)
    assert not core.list_namespaced_service_account("default", label_selector="ask-batch.io/run=e2e-rrsa").items


def put_role(sandbox_dir: Path, workdir: Path, name: str, subject: str) -> None:
    """A role whose trust policy lets the example cluster's RRSA provider in for `subject` only."""
    from tasks.cloud.context import cs_for
    from tasks.stages.cluster import ensure_cluster

    endpoints = json.loads((sandbox_dir / "endpoints.json").read_text())
    spec = build_spec(EXAMPLE, example_sets(workdir, "e2e-rrsa-role"), sandbox_dir)
    cluster = ensure_cluster(spec, run_key="e2e-rrsa-role", cs=cs_for(spec))
    detail = cs_for(spec).describe_cluster_detail(cluster.cluster_id).body.to_map()
    policy = {"Version": "1", "Statement": [{
        "Effect": "Allow", "Action": "sts:AssumeRole",
        "Principal": {"Federated": [detail["rrsa_config"]["oidc_arn"]]},
        "Condition": {"StringEquals": {"oidc:aud": "sts.aliyuncs.com", "oidc:sub": subject}}}]}
    request = urllib.request.Request(f"{endpoints['control']['endpoint']}/ram/roles/{name}",
                                     data=json.dumps({"trust_policy": policy}).encode(), method="PUT",
                                     headers={"Authorization": f"Bearer {endpoints['control']['token']}"})
    urllib.request.urlopen(request).read()


@pytest.mark.parametrize("role, reason, key", [
    ("no-such-role", "EntityNotExist.Role", "e2e-rrsa-norole"),
    ("trusts-someone-else", "AuthenticationFail.NoPermission", "e2e-rrsa-untrusted"),
])
def test_a_role_the_pods_cannot_assume_fails_the_run_with_sts_reason(
        sandbox_dir: Path, workdir: Path, role: str, reason: str, key: str) -> None:
    if role == "trusts-someone-else":
        put_role(sandbox_dir, workdir, role, "system:serviceaccount:default:someone-else")
    spec, state = run(sandbox_dir, workdir, key, f"outputs.rrsa_role_name={role}", "job.backoff_limit_per_index=0")
    assert state.is_failed()
    with pytest.raises(Exception) as caught:
        state.result()
    message = str(caught.value)
    assert reason in message and "exit code" in message, message
