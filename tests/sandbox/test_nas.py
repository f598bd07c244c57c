"""The sandbox NAS, driven by the unmodified `alibabacloud_nas20170626` SDK (async methods)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest
from alibaba_fake import FakeSandbox, serve, tea_config, wait_for
from alibabacloud_nas20170626 import models as nas
from alibabacloud_nas20170626.client import Client as NasClient
from alibabacloud_tea_openapi.exceptions import ClientException, ServerException

import sandbox.nas as nas_server


class Env:
    def __init__(self, sb: FakeSandbox, runner: Any, port: int) -> None:
        self.sb, self.runner, self.port = sb, runner, port
        self.client = NasClient(tea_config(port))


async def start_env(data_dir: Path) -> Env:
    sb = FakeSandbox(data_dir)
    runner, port = await serve(nas_server.make_app(sb))
    return Env(sb, runner, port)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    e = await start_env(tmp_path)
    yield e
    await e.runner.cleanup()


def fs_request(**kw: Any) -> nas.CreateFileSystemRequest:
    args: dict[str, Any] = dict(protocol_type="NFS", storage_type="Capacity", file_system_type="standard",
                                charge_type="PayAsYouGo", description="batch-x", zone_id="cn-sandbox-a",
                                tag=[nas.CreateFileSystemRequestTag(key="pipeline-id", value="run-1")])
    args.update(kw)
    return nas.CreateFileSystemRequest(**args)



async def expect_error(coro: Awaitable[Any], code: str, status: int = 400,
                       exc: type[Exception] = ClientException) -> Any:
    with pytest.raises(exc) as info:
        await coro
    assert info.value.code == code, info.value
    assert info.value.status_code == status
    return info.value


async def describe_fs(client: NasClient, fs_id: str) -> Any:
    body = (await client.describe_file_systems_async(nas.DescribeFileSystemsRequest(file_system_id=fs_id))).body
    assert body is not None and body.total_count == 1
    return body.file_systems.file_system[0]


async def wait_running(client: NasClient, fs_id: str) -> None:
    async def check() -> bool:
        return (await describe_fs(client, fs_id)).status == "Running"
    await wait_for(check)


async def test_file_system_and_mount_target_lifecycle(env: Env) -> None:
    c = env.client
    first = (await c.create_file_system_async(fs_request(client_token="tok-1"))).body
    again = (await c.create_file_system_async(fs_request(client_token="tok-1"))).body
    fs_id = first.file_system_id
    assert re.fullmatch(r"[0-9a-f]{10}", fs_id) and again.file_system_id == fs_id and first.request_id
    listed = (await c.describe_file_systems_async(nas.DescribeFileSystemsRequest())).body
    assert listed.total_count == 1 and listed.page_size == 10 and listed.page_number == 1
    fs = listed.file_systems.file_system[0]
    assert (fs.status, fs.protocol_type, fs.storage_type, fs.region_id) == ("Pending", "NFS", "Capacity",
                                                                            "cn-sandbox")
    assert [(t.key, t.value) for t in fs.tags.tag] == [("pipeline-id", "run-1")]
    assert (env.sb.data_dir / "nas" / fs_id).is_dir()

    mt_req = nas.CreateMountTargetRequest(file_system_id=fs_id, network_type="Vpc", vpc_id="vpc-1",
                                          v_switch_id="vsw-1", access_group_name="DEFAULT_VPC_GROUP_NAME")
    await expect_error(c.create_mount_target_async(mt_req), "InvalidFileSystemStatus.Ordering", 403)
    await wait_running(c, fs_id)
    domain = (await c.create_mount_target_async(mt_req)).body.mount_target_domain
    assert re.fullmatch(rf"{fs_id}-[a-z0-9]{{5}}\.cn-sandbox\.nas\.aliyuncs\.com", domain)
    mts = (await c.describe_mount_targets_async(nas.DescribeMountTargetsRequest(file_system_id=fs_id))).body
    mt = mts.mount_targets.mount_target[0]
    assert (mt.status, mt.access_group, mt.vpc_id, mt.vsw_id) == ("Pending", "DEFAULT_VPC_GROUP_NAME",
                                                                  "vpc-1", "vsw-1")
    assert nas_server.resolve(env.sb, domain, "/batch/run-1") is None  # not Active yet

    async def active() -> bool:
        body = (await c.describe_mount_targets_async(nas.DescribeMountTargetsRequest(
            file_system_id=fs_id, mount_target_domain=domain))).body
        return body.mount_targets.mount_target[0].status == "Active"
    await wait_for(active)
    host_dir = nas_server.resolve(env.sb, domain, "/batch/run-1")
    assert host_dir == (env.sb.data_dir / "nas" / fs_id / "batch" / "run-1").resolve() and host_dir.is_dir()
    assert nas_server.resolve(env.sb, domain, "/../escape") is None
    assert nas_server.resolve(env.sb, "nope.cn-sandbox.nas.aliyuncs.com", "/") is None

    fs = await describe_fs(c, fs_id)
    assert [(m.mount_target_domain, m.access_group_name, m.status) for m in fs.mount_targets.mount_target] == [
        (domain, "DEFAULT_VPC_GROUP_NAME", "Active")]
    by_vpc = (await c.describe_file_systems_async(nas.DescribeFileSystemsRequest(vpc_id="vpc-1"))).body
    assert by_vpc.total_count == 1
    by_tag = (await c.describe_file_systems_async(nas.DescribeFileSystemsRequest(
        tag=[nas.DescribeFileSystemsRequestTag(key="pipeline-id", value="other")]))).body
    assert by_tag.total_count == 0 and by_tag.file_systems.file_system == []

    await c.create_mount_target_async(mt_req)
    await expect_error(c.create_mount_target_async(mt_req), "MountTargetLimitExceeded", 403)

    await expect_error(c.delete_file_system_async(nas.DeleteFileSystemRequest(file_system_id=fs_id)),
                       "OperationDenied.HasMountTargets", 403)
    for m in (await describe_fs(c, fs_id)).mount_targets.mount_target:
        await c.delete_mount_target_async(nas.DeleteMountTargetRequest(file_system_id=fs_id,
                                                                       mount_target_domain=m.mount_target_domain))
    assert {m.status for m in (await describe_fs(c, fs_id)).mount_targets.mount_target} == {"Deleting"}
    await expect_error(c.delete_file_system_async(nas.DeleteFileSystemRequest(file_system_id=fs_id)),
                       "OperationDenied.HasMountTargets", 403)

    async def no_mount_targets() -> bool:
        return not (await describe_fs(c, fs_id)).mount_targets.mount_target
    await wait_for(no_mount_targets)
    await expect_error(c.delete_mount_target_async(nas.DeleteMountTargetRequest(
        file_system_id=fs_id, mount_target_domain=domain)), "InvalidMountTarget.NotFound", 404)
    await c.delete_file_system_async(nas.DeleteFileSystemRequest(file_system_id=fs_id))
    await expect_error(c.describe_mount_targets_async(nas.DescribeMountTargetsRequest(file_system_id=fs_id)),
                       "InvalidFileSystem.NotFound", 404)
    assert not (env.sb.data_dir / "nas" / fs_id).exists()
    empty = (await c.describe_file_systems_async(nas.DescribeFileSystemsRequest(file_system_id=fs_id))).body
    assert empty.total_count == 0


@pytest.mark.parametrize("kw, code", [
    (dict(protocol_type=None), "MissingProtocolType"),
    (dict(storage_type="Turbo"), "InvalidParam.StorageType"),
    (dict(description="1starts-with-digit"), "InvalidParam.Description"),
    (dict(description="see http://x"), "InvalidParam.Description"),
    (dict(tag=[nas.CreateFileSystemRequestTag(key="aliyun:x", value="v")]), "InvalidParam.Tag"),
    (dict(file_system_type="extreme", storage_type="standard"), "InvalidParam.Capacity"),
    (dict(dry_run=True), "DryRunOperation"),
])
async def test_create_file_system_validation(env: Env, kw: dict[str, Any], code: str) -> None:
    await expect_error(env.client.create_file_system_async(fs_request(**kw)), code)


async def test_client_token_mismatch_and_paging(env: Env) -> None:
    c = env.client
    await c.create_file_system_async(fs_request(client_token="tok-2"))
    await expect_error(c.create_file_system_async(fs_request(client_token="tok-2", storage_type="Performance")),
                       "IdempotentParameterMismatch")
    for _ in range(2):
        await c.create_file_system_async(fs_request())
    page = (await c.describe_file_systems_async(nas.DescribeFileSystemsRequest(page_size=2, page_number=2))).body
    assert page.total_count == 3 and len(page.file_systems.file_system) == 1
    await expect_error(c.describe_file_systems_async(nas.DescribeFileSystemsRequest(page_size=101)),
                       "InvalidParam.PageSize")


async def test_errors_auth_and_faults(env: Env) -> None:
    await expect_error(env.client.describe_mount_targets_async(
        nas.DescribeMountTargetsRequest(file_system_id="0123456789")), "InvalidFileSystem.NotFound", 404)
    wrong = NasClient(tea_config(env.port, secret="wrong"))
    await expect_error(wrong.describe_file_systems_async(nas.DescribeFileSystemsRequest()), "SignatureDoesNotMatch")
    env.sb.faults.update({"error_rate": 1.0, "error_statuses": "429"})
    await expect_error(env.client.describe_file_systems_async(nas.DescribeFileSystemsRequest()),
                       "Throttling.User", 429)
    env.sb.faults.update({"error_statuses": "503"})
    await expect_error(env.client.describe_file_systems_async(nas.DescribeFileSystemsRequest()),
                       "ServiceUnavailable", 503, ServerException)


async def test_restart_keeps_file_systems(tmp_path: Path) -> None:
    env = await start_env(tmp_path)
    fs_id = (await env.client.create_file_system_async(fs_request(client_token="tok-r"))).body.file_system_id
    await wait_running(env.client, fs_id)
    domain = (await env.client.create_mount_target_async(nas.CreateMountTargetRequest(
        file_system_id=fs_id, network_type="Vpc", vpc_id="vpc-1", v_switch_id="vsw-1",
        access_group_name="DEFAULT_VPC_GROUP_NAME"))).body.mount_target_domain
    await env.runner.cleanup()

    env = await start_env(tmp_path)
    try:
        fs = await describe_fs(env.client, fs_id)
        assert fs.status == "Running" and fs.mount_targets.mount_target[0].mount_target_domain == domain
        again = (await env.client.create_file_system_async(fs_request(client_token="tok-r"))).body
        assert again.file_system_id == fs_id
        await asyncio.sleep(0.3)
        assert nas_server.resolve(env.sb, domain, "/") == (tmp_path / "nas" / fs_id).resolve()
    finally:
        await env.runner.cleanup()


async def test_metered_size_is_the_used_size_in_4_kib_units(env: Env) -> None:
    """MeteredSize (bytes) counts each file rounded up to NAS's 4 KiB unit, directories not
    (https://www.alibabacloud.com/help/doc-detail/27523.htm)."""
    fs_id = (await env.client.create_file_system_async(fs_request())).body.file_system_id
    assert (await describe_fs(env.client, fs_id)).metered_size == 0
    root = env.sb.data_dir / "nas" / fs_id
    (root / "run-1").mkdir(parents=True, exist_ok=True)
    (root / "run-1" / "small").write_bytes(b"x")
    (root / "big").write_bytes(b"y" * 5000)
    assert (await describe_fs(env.client, fs_id)).metered_size == 4096 + 8192
