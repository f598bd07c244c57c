"""The sandbox Container Service, driven by the unmodified `alibabacloud_cs20151215` SDK (async methods)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from alibaba_fake import AK, HAVE_K8S_API, FakeSandbox, patch_kube, serve, tea_config, wait_for
from alibabacloud_cs20151215 import models as cs
from alibabacloud_cs20151215.client import Client as CSClient
from alibabacloud_tea_openapi.exceptions import ClientException, ServerException

import sandbox.cs as cs_server


class Env:
    def __init__(self, sb: FakeSandbox, runner: Any, port: int) -> None:
        self.sb, self.runner, self.port = sb, runner, port
        self.client = CSClient(tea_config(port))


async def start_env(data_dir: Path, default_id: str | None = None) -> Env:
    sb = FakeSandbox(data_dir, default_cluster_id=default_id)
    await sb.create_kube_cluster(sb.default_cluster_id)
    for cid in cs_server.load_clusters(sb):
        await sb.create_kube_cluster(cid)
    runner, port = await serve(cs_server.make_app(sb))
    return Env(sb, runner, port)


async def stop_env(env: Env) -> None:
    await env.runner.cleanup()
    await env.sb.close()


@pytest.fixture
async def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Env]:
    patch_kube(monkeypatch)
    e = await start_env(tmp_path)
    yield e
    await stop_env(e)


def ask_request(name: str, **kw: Any) -> cs.CreateClusterRequest:
    args: dict[str, Any] = dict(name=name, region_id="cn-sandbox", cluster_type="ManagedKubernetes",
                                profile="Serverless", cluster_spec="ack.pro.small", snat_entry=True,
                                endpoint_public_access=True, deletion_protection=False, zone_id="cn-sandbox-b",
                                tags=[cs.Tag(key="pipeline", value=name)])
    args.update(kw)
    return cs.CreateClusterRequest(**args)



async def state_of(client: CSClient, cid: str) -> str:
    return (await client.describe_cluster_detail_async(cid)).body.state


async def wait_state(client: CSClient, cid: str, state: str) -> None:
    async def check() -> bool:
        return await state_of(client, cid) == state
    await wait_for(check)


async def expect_error(coro: Awaitable[Any], code: str, status: int = 400,
                       exc: type[Exception] = ClientException) -> Any:
    with pytest.raises(exc) as info:
        await coro
    assert info.value.code == code, info.value
    assert info.value.status_code == status
    return info.value


async def test_serverless_cluster_lifecycle(env: Env) -> None:
    c = env.client
    # Long enough to read the cluster while it is being created on a loaded machine (0.3 s was not: the task was
    # already "success" on a CI run that took 19 minutes); the test then waits for "running", it does not sleep.
    env.sb.settings.cluster_create_delay_s = 5.0
    created = (await c.create_cluster_async(ask_request("batch-one"))).body
    assert created.cluster_id.startswith("c") and len(created.cluster_id) == 33
    assert (await c.describe_task_info_async(created.task_id)).body.state == "running"
    detail = (await c.describe_cluster_detail_async(created.cluster_id)).body
    assert detail.state == "initial" and detail.master_url == ""
    await expect_error(c.describe_cluster_user_kubeconfig_async(created.cluster_id,
                                                                cs.DescribeClusterUserKubeconfigRequest()),
                       "ErrorClusterState")

    await wait_state(c, created.cluster_id, "running")
    kube = env.sb.kube_clusters[created.cluster_id]
    detail = (await c.describe_cluster_detail_async(created.cluster_id)).body
    assert (detail.cluster_type, detail.profile, detail.name) == ("ManagedKubernetes", "Serverless", "batch-one")
    assert [(t.key, t.value) for t in detail.tags] == [("pipeline", "batch-one")]
    assert detail.vpc_id.startswith("vpc-") and detail.vswitch_ids[0].startswith("vsw-")
    assert json.loads(detail.master_url) == {"api_server_endpoint": kube.url,
                                             "intranet_api_server_endpoint": kube.url}
    task = (await c.describe_task_info_async(created.task_id)).body
    assert (task.state, task.task_type, task.target.id) == ("success", "cluster_create", created.cluster_id)

    listed = (await c.describe_clusters_for_region_async(
        "cn-sandbox", cs.DescribeClustersForRegionRequest(name="batch", cluster_type="ManagedKubernetes",
                                                          profile="Serverless", page_size=50))).body
    assert [x.cluster_id for x in listed.clusters] == [created.cluster_id]
    assert listed.page_info.total_count == 1 and listed.page_info.page_size == 50

    resp = (await c.describe_cluster_user_kubeconfig_async(
        created.cluster_id, cs.DescribeClusterUserKubeconfigRequest(private_ip_address=False,
                                                                    temporary_duration_minutes=60))).body
    config = yaml.safe_load(resp.config)
    assert config["clusters"][0]["cluster"]["server"] == kube.url
    assert config["users"][0]["user"]["token"] == kube.token
    expires = datetime.strptime(resp.expiration, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    assert abs(expires - time.time() - 3600) < 60
    if HAVE_K8S_API:
        await asyncio.to_thread(_list_namespaces, config)

    deleted = await c.delete_cluster_async(created.cluster_id, cs.DeleteClusterRequest(
        retain_all_resources=False, retain_resources=["sg-1"],
        delete_options=[cs.DeleteClusterRequestDeleteOptions(resource_type="SLS_Data", delete_mode="delete")]))
    assert deleted.status_code == 202 and deleted.body.cluster_id == created.cluster_id
    assert await state_of(c, created.cluster_id) == "deleting"

    async def gone() -> bool:
        try:
            await c.describe_cluster_detail_async(created.cluster_id)
        except ClientException as exc:
            assert exc.code == "ErrorClusterNotFound" and exc.status_code == 404
            return True
        return False
    await wait_for(gone)
    assert created.cluster_id not in env.sb.kube_clusters
    assert (await c.describe_task_info_async(deleted.body.task_id)).body.state == "success"


def _list_namespaces(config: dict[str, Any]) -> None:
    from kubernetes import client
    from kubernetes import config as kconfig

    api = client.CoreV1Api(kconfig.new_client_from_config_dict(config))
    names = {ns.metadata.name for ns in api.list_namespace().items}
    assert "default" in names


async def test_default_cluster_is_listed_running_and_protected(env: Env) -> None:
    c, cid = env.client, env.sb.default_cluster_id
    listed = (await c.describe_clusters_for_region_async(
        "cn-sandbox", cs.DescribeClustersForRegionRequest(cluster_id=cid))).body
    assert [(x.name, x.state, x.profile) for x in listed.clusters] == [("sandbox", "running", "Serverless")]
    cfg = (await c.describe_cluster_user_kubeconfig_async(cid, cs.DescribeClusterUserKubeconfigRequest())).body
    assert yaml.safe_load(cfg.config)["clusters"][0]["cluster"]["server"] == env.sb.kube_clusters[cid].url
    await expect_error(c.delete_cluster_async(cid, cs.DeleteClusterRequest()), "ErrorDeletionProtection")
    other = (await c.describe_clusters_for_region_async("cn-elsewhere",
                                                        cs.DescribeClustersForRegionRequest())).body
    assert other.clusters == [] and other.page_info.total_count == 0


@pytest.mark.parametrize("kw, message", [
    (dict(name="-bad"), "cannot start with a hyphen"),
    (dict(name="x" * 64), "1 to 63"),
    (dict(region_id="cn-hangzhou"), "does not match"),
    (dict(region_id=None), "region_id is required"),
    (dict(cluster_type="Ask", profile=None), "deprecated"),
    (dict(profile="ask.v2"), "deprecated"),
    (dict(nat_gateway=True), "use snat_entry"),
    (dict(profile="Default"), "clusters only"),
    (dict(tags=[cs.Tag(key="aliyun-x", value="v")]), "must not start with"),
    (dict(zone_id=None), "zone_id is required when vpcid and vswitch_ids are not specified"),
])
async def test_create_cluster_validation(env: Env, kw: dict[str, Any], message: str) -> None:
    request = ask_request(**{"name": "valid-name", **kw})
    exc = await expect_error(env.client.create_cluster_async(request), "InvalidParameter")
    assert message in exc.message


async def test_duplicate_name_and_client_token(env: Env) -> None:
    c = env.client
    first = (await c.create_cluster_async(ask_request("dup", client_token="tok-1"))).body
    again = (await c.create_cluster_async(ask_request("dup", client_token="tok-1"))).body
    assert again.cluster_id == first.cluster_id
    await expect_error(c.create_cluster_async(ask_request("dup")), "ErrorClusterNameAlreadyExist")


async def test_private_cluster_kubeconfig(env: Env) -> None:
    c = env.client
    cid = (await c.create_cluster_async(ask_request("private", endpoint_public_access=False))).body.cluster_id
    await wait_state(c, cid, "running")
    url = env.sb.kube_clusters[cid].url
    assert json.loads((await c.describe_cluster_detail_async(cid)).body.master_url) == {
        "intranet_api_server_endpoint": url}
    exc = await expect_error(c.describe_cluster_user_kubeconfig_async(
        cid, cs.DescribeClusterUserKubeconfigRequest(private_ip_address=False)), "InvalidParameter")
    assert "PrivateIpAddress" in exc.message
    cfg = (await c.describe_cluster_user_kubeconfig_async(
        cid, cs.DescribeClusterUserKubeconfigRequest(private_ip_address=True))).body
    assert yaml.safe_load(cfg.config)["clusters"][0]["cluster"]["server"] == url
    expires = datetime.strptime(cfg.expiration, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    assert expires - time.time() > 2.9 * 365 * 86400
    for minutes in (14, 4321):
        await expect_error(c.describe_cluster_user_kubeconfig_async(
            cid, cs.DescribeClusterUserKubeconfigRequest(private_ip_address=True,
                                                         temporary_duration_minutes=minutes)),
            "InvalidParameter")


async def test_failed_creation_knob(env: Env) -> None:
    env.sb.settings.cluster_fail_next = True
    created = (await env.client.create_cluster_async(ask_request("doomed"))).body
    assert env.sb.settings.cluster_fail_next is False
    await wait_state(env.client, created.cluster_id, "failed")
    task = (await env.client.describe_task_info_async(created.task_id)).body
    assert task.state == "fail" and task.error.code
    assert created.cluster_id not in env.sb.kube_clusters
    await env.client.delete_cluster_async(created.cluster_id, cs.DeleteClusterRequest())


async def test_decommissioned_list_apis(env: Env) -> None:
    for call in (env.client.describe_clusters_v1_async(cs.DescribeClustersV1Request(name="x")),
                 env.client.describe_clusters_async(cs.DescribeClustersRequest())):
        exc = await expect_error(call, "InvalidAction.NotFound", 404)
        assert "DescribeClustersForRegion" in exc.message


async def test_signature_errors(env: Env) -> None:
    wrong = CSClient(tea_config(env.port, secret="not-the-secret"))
    exc = await expect_error(wrong.describe_cluster_detail_async(env.sb.default_cluster_id),
                             "SignatureDoesNotMatch")
    assert "StringToSign" in exc.message
    unknown = CSClient(tea_config(env.port, key="LTAInobody"))
    await expect_error(unknown.describe_cluster_detail_async(env.sb.default_cluster_id),
                       "InvalidAccessKeyId.NotFound", 404)
    assert AK in env.sb.credentials


async def test_not_found_and_task_not_found(env: Env) -> None:
    await expect_error(env.client.describe_cluster_detail_async("c" + "0" * 32), "ErrorClusterNotFound", 404)
    await expect_error(env.client.describe_task_info_async("T-nope"), "ErrorTaskNotFound", 404)


async def test_fault_injection_shapes(env: Env) -> None:
    env.sb.faults.update({"error_rate": 1.0, "error_statuses": "429"})
    await expect_error(env.client.describe_cluster_detail_async(env.sb.default_cluster_id), "Throttling.User", 429)
    env.sb.faults.update({"error_statuses": "503"})
    await expect_error(env.client.describe_cluster_detail_async(env.sb.default_cluster_id),
                       "ServiceUnavailable", 503, ServerException)


async def test_restart_keeps_clusters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    patch_kube(monkeypatch)
    env = await start_env(tmp_path)
    running = (await env.client.create_cluster_async(ask_request("keeps"))).body.cluster_id
    await wait_state(env.client, running, "running")
    env.sb.settings.cluster_create_delay_s = 0.5
    pending = (await env.client.create_cluster_async(ask_request("midway"))).body.cluster_id
    default_id = env.sb.default_cluster_id
    await stop_env(env)  # stopped while "midway" is still initial

    env = await start_env(tmp_path, default_id)
    try:
        assert running in env.sb.kube_clusters
        assert await state_of(env.client, running) == "running"
        await wait_state(env.client, pending, "running")
        cfg = (await env.client.describe_cluster_user_kubeconfig_async(
            running, cs.DescribeClusterUserKubeconfigRequest())).body
        assert yaml.safe_load(cfg.config)["clusters"][0]["cluster"]["server"] == env.sb.kube_clusters[running].url
        names = {x.name for x in (await env.client.describe_clusters_for_region_async(
            "cn-sandbox", cs.DescribeClustersForRegionRequest())).body.clusters}
        assert names == {"sandbox", "keeps", "midway"}
    finally:
        await stop_env(env)
