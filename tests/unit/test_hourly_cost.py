"""Hourly prices of what ask-batch left behind (the cleanup command's table), against the documented rules."""

from typing import Any

from tasks.render.acs_cost import ACS_PRICES
from tasks.render.cost import PRICES
from tasks.render.hourly_cost import cluster_hourly, nas_hourly, pod_hourly


def pod(phase: str = "Running", *, cpu: str = "1", memory: str = "2Gi", annotations: dict[str, str] | None = None,
        labels: dict[str, str] | None = None, init: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "workload", "resources": {"requests": {"cpu": cpu,
                                                                                          "memory": memory}}}]}
    if init:
        spec["initContainers"] = init
    return {"metadata": {"annotations": annotations or {}, "labels": labels or {}}, "spec": spec,
            "status": {"phase": phase, "startTime": "2026-11-30T08:00:00Z"}}


def eci_hour(vcpu: float, gib: float, site: str = "cn") -> float:
    return 3600 * (vcpu * PRICES[site].vcpu_second + gib * PRICES[site].gib_second)


def test_a_running_eci_pod_costs_its_rounded_spec_per_hour() -> None:
    price = pod_hourly(pod(cpu="1", memory="3Gi"), region="cn-hangzhou")
    assert price.amount is not None and round(price.amount, 9) == round(eci_hour(1, 4), 9)  # 1-3Gi -> 1 vCPU 4 GiB
    assert price.currency == "CNY" and price.text().endswith("CNY/h")


def test_a_spot_pod_is_priced_at_two_vcpu_at_least_and_eci_use_specs_wins() -> None:
    spot = pod_hourly(pod(annotations={"k8s.aliyun.com/eci-spot-strategy": "SpotAsPriceGo"}), region="cn-hangzhou")
    assert spot.amount is not None and round(spot.amount, 9) == round(eci_hour(2, 2), 9)
    named = pod_hourly(pod(annotations={"k8s.aliyun.com/eci-use-specs": "4-8Gi,2-4Gi"}), region="cn-hangzhou",
                       site="intl")
    assert named.currency == "USD" and named.amount is not None
    assert round(named.amount, 9) == round(eci_hour(4, 8, "intl"), 9)


def test_a_larger_init_container_sets_the_size() -> None:
    init = [{"name": "prep", "resources": {"limits": {"cpu": "2", "memory": "4Gi"}}}]
    price = pod_hourly(pod(init=init), region="cn-hangzhou")
    assert price.amount is not None and round(price.amount, 9) == round(eci_hour(2, 4), 9)


def test_finished_and_not_yet_created_pods_cost_nothing() -> None:
    ended = pod_hourly(pod("Succeeded"), region="cn-hangzhou")
    assert ended.amount == 0 and ended.text() == "0 (Succeeded)"
    unstarted = pod("Pending")
    del unstarted["status"]["startTime"]
    assert pod_hourly(unstarted, region="cn-hangzhou").amount == 0


def test_an_acs_pod_is_priced_at_the_size_acs_billed_for_its_class_and_qos() -> None:
    price = pod_hourly(pod(annotations={"alibabacloud.com/pod-use-spec": "2-4Gi"},
                           labels={"alibabacloud.com/compute-class": "performance",
                                   "alibabacloud.com/compute-qos": "best-effort"}), region="cn-hangzhou", kind="acs")
    unit = ACS_PRICES[("cn", "performance", "best-effort")]
    assert price.amount is not None
    assert round(price.amount, 9) == round(3600 * (2 * unit.vcpu_second + 4 * unit.gib_second), 9)


def test_nas_is_priced_by_used_gib_per_month_where_the_price_is_published() -> None:
    price = nas_hourly(10 * 2**30, "Capacity", region="ap-southeast-1")
    assert price.currency == "USD" and price.amount is not None
    assert abs(price.amount - 10 * 0.06 / 30 / 24) < 1e-12
    unknown = nas_hourly(10 * 2**30, "Performance", region="ap-southeast-1")
    assert unknown.amount is None and unknown.text() == "unknown" and "pricing" in unknown.note


def test_clusters_have_no_management_fee_and_say_what_is_billed_elsewhere() -> None:
    price = cluster_hourly(region="cn-hangzhou")
    assert price.amount == 0 and "CLB" in price.note
