"""The sandbox's ACS model: CS creates and lists ACS clusters; pods in an ACS cluster get ACS's admission.

CS tests drive the unmodified `alibabacloud_cs20151215` SDK; pod tests run a KubeCluster(flavour="acs") in
process with only the scheduler and the virtual node, as tests/sandbox/test_node.py does for ASK.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alibaba_fake import patch_kube, wait_for
from alibabacloud_cs20151215 import models as cs
from test_cs import Env, ask_request, start_env, state_of, stop_env
from test_node import condition, create_pod, events_for, phase_is, pod_manifest, terminated, wait_pod

from sandbox.faults import Faults
from sandbox.k8s import acs
from sandbox.k8s.cluster import KubeCluster, NodeConfig
from sandbox.k8s.errors import ApiError
from sandbox.k8s.node.kubelet import VirtualNode
from sandbox.k8s.node.scheduler import Scheduler
from sandbox.k8s.serviceaccounts import ServiceAccountController

Obj = dict[str, Any]


# ------------------------------------------------------------------ CS: ACS clusters


@pytest.fixture
async def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Env]:
    patch_kube(monkeypatch)
    e = await start_env(tmp_path)
    yield e
    await stop_env(e)


async def test_cs_creates_and_lists_acs_clusters(env: Env) -> None:
    c = env.client
    acs_id = (await c.create_cluster_async(ask_request("batch-acs", profile="Acs"))).body.cluster_id
    ask_id = (await c.create_cluster_async(ask_request("batch-ask"))).body.cluster_id

    async def both_running() -> bool:
        return [await state_of(c, acs_id), await state_of(c, ask_id)] == ["running", "running"]
    await wait_for(both_running)

    detail = (await c.describe_cluster_detail_async(acs_id)).body
    assert (detail.cluster_type, detail.profile, detail.name) == ("ManagedKubernetes", "Acs", "batch-acs")

    async def listed(profile: str | None) -> list[str]:
        req = cs.DescribeClustersForRegionRequest(name="batch", cluster_type="ManagedKubernetes", profile=profile)
        body = (await c.describe_clusters_for_region_async("cn-sandbox", req)).body
        return sorted(x.cluster_id for x in body.clusters)

    assert await listed("Acs") == [acs_id]
    assert await listed("Serverless") == [ask_id]
    assert await listed(None) == sorted([acs_id, ask_id])
    # the ACS cluster's Kubernetes behaves as ACS, the ASK one does not
    assert env.sb.kube_clusters[acs_id].acs is not None
    assert env.sb.kube_clusters[ask_id].acs is None


async def test_cs_refuses_other_profiles_naming_both_serverless_kinds(env: Env) -> None:
    from alibabacloud_tea_openapi.exceptions import ClientException

    with pytest.raises(ClientException) as info:
        await env.client.create_cluster_async(ask_request("batch-x", profile="Default"))
    assert "profile=Acs" in info.value.message and "profile=Serverless" in info.value.message


# ------------------------------------------------------------------ pods in an ACS cluster


async def start(data_dir: Path, monkeypatch: pytest.MonkeyPatch, flavour: str) -> KubeCluster:
    # The ServiceAccount controller too: every pod mounts kube-root-ca.crt through its projected token volume.
    monkeypatch.setattr(KubeCluster, "_controller_classes",
                        lambda self: [ServiceAccountController, Scheduler, VirtualNode])
    cluster = KubeCluster("acs-test", data_dir, faults=Faults(seed=3), flavour=flavour,
                          node=NodeConfig(cpu="8", memory="16Gi", pods=50))
    await cluster.start()
    cluster.controller("VirtualNode").timings.backoff_initial_s = 0.2
    return cluster


@pytest.fixture
async def acs_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[KubeCluster]:
    c = await start(tmp_path / "acs", monkeypatch, "acs")
    try:
        yield c
    finally:
        await c.stop()


def labelled(name: str, command: list[str], labels: dict[str, str], **spec: Any) -> Obj:
    pod = pod_manifest(name, command, **spec)
    pod["metadata"]["labels"] = labels
    return pod


async def test_unknown_compute_class_is_refused_naming_label_and_values(acs_cluster: KubeCluster) -> None:
    with pytest.raises(ApiError) as info:
        acs_cluster.store.create("pods", labelled("p", ["true"], {acs.COMPUTE_CLASS: "turbo"}))
    err = info.value
    assert err.code == 400 and "denied the request" in err.message
    assert 'alibabacloud.com/compute-class="turbo"' in err.message
    assert "general-purpose, performance, gpu, gpu-hpn" in err.message
    assert acs_cluster.store.peek("pods", "default", "p") is None


async def test_qos_is_validated_per_class(acs_cluster: KubeCluster) -> None:
    with pytest.raises(ApiError) as info:
        acs_cluster.store.create("pods", labelled("p", ["true"], {acs.COMPUTE_QOS: "spot"}))
    assert "compute-qos" in info.value.message and "default, best-effort" in info.value.message
    with pytest.raises(ApiError) as info:
        acs_cluster.store.create("pods", labelled(
            "q", ["true"], {acs.COMPUTE_CLASS: "gpu-hpn", acs.COMPUTE_QOS: "best-effort"}))
    assert 'for compute class "gpu-hpn"; valid values: default' in info.value.message


async def test_ask_cluster_does_not_apply_acs_admission(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ask = await start(tmp_path / "ask", monkeypatch, "ask")
    try:
        pod = ask.store.create("pods", labelled("p", ["true"], {acs.COMPUTE_CLASS: "turbo"}))
        assert acs.USE_SPEC not in (pod["metadata"].get("annotations") or {})
    finally:
        await ask.stop()


@pytest.mark.parametrize(("resources", "expected"), [
    (None, "2-4Gi"),
    ({"requests": {"cpu": "2", "memory": "3.5Gi"}}, "2-4Gi"),
    ({"requests": {"cpu": "300m", "memory": "600Mi"}}, "0.5-1Gi"),
    ({"requests": {"cpu": "1"}, "limits": {"cpu": "1", "memory": "10Gi"}}, "1.5-10Gi"),
    ({"requests": {"cpu": "20", "memory": "20Gi"}}, "24-24Gi"),
])
def test_use_spec_rounds_up_to_an_acs_specification(resources: Obj | None, expected: str) -> None:
    container: Obj = {"name": "main", "image": "x"}
    if resources:
        container["resources"] = resources
    assert acs.use_spec({"spec": {"containers": [container]}}) == expected


def test_required_spec_raises_the_size_and_must_be_well_formed(acs_cluster: KubeCluster) -> None:
    pod = {"metadata": {"annotations": {acs.REQUIRED_SPEC: "4-8Gi"}},
           "spec": {"containers": [{"name": "main", "resources": {"requests": {"cpu": "1", "memory": "2Gi"}}}]}}
    assert acs.use_spec(pod) == "4-8Gi"
    with pytest.raises(ApiError) as info:
        acs_cluster.store.create("pods", pod_manifest("bad", ["true"], annotations={acs.REQUIRED_SPEC: "4C8G"}))
    assert info.value.code == 400 and acs.REQUIRED_SPEC in info.value.message


async def test_pod_gets_used_spec_and_acs_instance_not_eci(acs_cluster: KubeCluster) -> None:
    create_pod(acs_cluster, "sized", ["true"], container={"resources": {"requests": {"cpu": "2", "memory": "3.5Gi"}}})
    pod = await wait_pod(acs_cluster, "sized", phase_is("Succeeded"))
    annotations = pod["metadata"]["annotations"]
    assert annotations[acs.USE_SPEC] == "2-4Gi"
    assert annotations[acs.INSTANCE_ID].startswith("acs-")
    assert not [k for k in annotations if k.startswith("k8s.aliyun.com/")]


async def test_eci_annotations_are_ignored_with_a_warning(acs_cluster: KubeCluster) -> None:
    acs_cluster.faults.update({"spot_reclaim_after_s": 0.3})
    create_pod(acs_cluster, "eci", ["sleep", "1"], annotations={
        "k8s.aliyun.com/eci-spot-strategy": "SpotAsPriceGo", "k8s.aliyun.com/eci-use-specs": "4-8Gi"})
    pod = await wait_pod(acs_cluster, "eci", phase_is("Succeeded", "Failed"), timeout=10)
    assert pod["status"]["phase"] == "Succeeded"  # an ECI spot annotation does not make it preemptible
    warning = events_for(acs_cluster, "eci")["EciAnnotationIgnored"][0]
    assert warning["type"] == "Warning"
    assert "k8s.aliyun.com/eci-spot-strategy" in warning["message"]
    assert "k8s.aliyun.com/eci-use-specs" in warning["message"]
    assert pod["metadata"]["annotations"][acs.USE_SPEC] == "2-4Gi"  # sized from resources, not eci-use-specs


async def test_best_effort_pod_is_preempted_with_acs_reason(acs_cluster: KubeCluster) -> None:
    acs_cluster.faults.update({"spot_reclaim_after_s": 0.5})
    acs_cluster.store.create("pods", labelled("be", ["sleep", "30"], {acs.COMPUTE_QOS: "best-effort"}))
    acs_cluster.store.create("pods", labelled("steady", ["sleep", "1.5"], {acs.COMPUTE_QOS: "default"}))
    pod = await wait_pod(acs_cluster, "be", phase_is("Failed", "Succeeded"), timeout=8)
    assert (pod["status"]["phase"], pod["status"]["reason"]) == ("Failed", acs.PREEMPT_REASON)
    target = condition(pod, "DisruptionTarget")
    assert (target["status"], target["reason"]) == ("True", acs.PREEMPT_CONDITION_REASON)
    assert terminated(pod)["exitCode"] == 137
    assert events_for(acs_cluster, "be")[acs.PREEMPT_NOTICE][0]["type"] == "Warning"
    assert "BidFailed" not in str(pod["status"])
    steady = await wait_pod(acs_cluster, "steady", phase_is("Failed", "Succeeded"), timeout=8)
    assert steady["status"]["phase"] == "Succeeded"


async def test_out_of_stock_uses_acs_condition_message(acs_cluster: KubeCluster) -> None:
    acs_cluster.faults.update({"eci_create_fail_rate": 1.0, "eci_create_fail_reason": "NoStock"})
    create_pod(acs_cluster, "nostock", ["true"])

    def stuck(p: Obj) -> bool:
        c = condition(p, "ContainerInstanceCreated")
        return c is not None and c["status"] == "False"
    pod = await wait_pod(acs_cluster, "nostock", stuck)
    cond = condition(pod, "ContainerInstanceCreated")
    assert cond["reason"] == "NoStock"
    assert cond["message"].startswith("Create failed because the specified instance is out of stock.")
    assert "[eci.containergroup]" not in cond["message"]
