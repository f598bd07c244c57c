"""Estimated ACS cost of a run: vCPU·seconds and GiB·seconds times ACS's pay-as-you-go prices.

Kept apart from the ECI rules in ``tasks.render.cost`` (same ``CostEstimate``), because ACS prices differ by
compute class and QoS: the best-effort tier is billed at its own (lower) unit price, not at a floating market
price. ACS bills per second (settled hourly) at the normalized size it actually gave the pod (the
``alibabacloud.com/pod-use-spec`` annotation); there is no cluster management fee.

All ACS prices live in ONE table below, with its source and the date it was read. Change them there only.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from tasks.render.cost import CostEstimate, PodUsage, billed_size, usage_totals
from tasks.spec import JobSpec

ACS_SOURCE = {
    "cn": "https://help.aliyun.com/en/cs/product-overview/product-billing-rules (ACS billing, Chinese mainland, CNY)",
    "intl": "https://www.alibabacloud.com/help/en/cs/product-overview/product-billing-rules (ACS billing, Hong Kong "
            "(China) and outside China, USD)",
}
ACS_READ_ON = "2026-11-30"


@dataclass(frozen=True)
class AcsPrice:
    vcpu_second: float
    gib_second: float


#: (site, compute class, qos) -> unit prices. "cn" applies to mainland regions ("cn-*" except cn-hongkong), "intl"
#: to the others, as for ECI in tasks.render.cost.
ACS_PRICES: dict[tuple[str, str, str], AcsPrice] = {
    ("cn", "general-purpose", "default"): AcsPrice(0.0000167, 0.00000833),
    ("cn", "general-purpose", "best-effort"): AcsPrice(0.0000033, 0.00000167),
    ("cn", "performance", "default"): AcsPrice(0.0000217, 0.00001083),
    ("cn", "performance", "best-effort"): AcsPrice(0.0000043, 0.00000216),
    ("intl", "general-purpose", "default"): AcsPrice(0.00000381, 0.00000192),
    ("intl", "general-purpose", "best-effort"): AcsPrice(0.00000076, 0.00000038),
    ("intl", "performance", "default"): AcsPrice(0.00000496, 0.00000248),
    ("intl", "performance", "best-effort"): AcsPrice(0.000000992, 0.000000496),
}
CURRENCY = {"cn": "CNY", "intl": "USD"}
GPU_NOTE = ("GPU classes: the GPU cards are not included and vCPU/memory are priced as general-purpose (ACS "
            "publishes GPU prices per card model)")
NOT_INCLUDED = ("not included: API-server CLB (~0.147 CNY/h + LCU), NAT gateway and EIP if created, storage beyond "
                "the free 30 GiB, NAS capacity, OSS storage and requests")
ROUNDING_NOTE = "ACS bills the normalized size it gives each pod (pod-use-spec), which may round the request up"


def site(region: str) -> str:
    return "cn" if region.startswith("cn-") and region != "cn-hongkong" else "intl"


def acs_price(region: str, compute_class: str, qos: str) -> AcsPrice:
    """Unit prices for the class ('gpu'/'gpu-hpn' fall back to general-purpose) and ACS QoS in ``region``."""
    cls = compute_class if compute_class in ("general-purpose", "performance") else "general-purpose"
    return ACS_PRICES[(site(region), cls, qos)]


def estimate_acs(pods: Iterable[PodUsage], *, region: str, compute_class: str = "general-purpose",
                 qos: str = "default") -> CostEstimate:
    """Cost of the given pods at ACS's pay-as-you-go prices for that class and QoS ('default' | 'best-effort')."""
    price = acs_price(region, compute_class, qos)
    vcpu_s, gib_s = usage_totals(pods)
    notes = (ROUNDING_NOTE, NOT_INCLUDED) + ((GPU_NOTE,) if compute_class.startswith("gpu") else ())
    return CostEstimate(vcpu_s, gib_s, vcpu_s * price.vcpu_second + gib_s * price.gib_second,
                        CURRENCY[site(region)], False, notes, f"{ACS_SOURCE[site(region)]} (read {ACS_READ_ON})")


def estimate_acs_job(job: JobSpec, pod_seconds: Iterable[float], *, region: str) -> CostEstimate:
    """Cost of a Job's pods on ACS given each pod's running time (seconds): ``job.compute.size`` when set, else
    the larger of request and limit; class and QoS from ``job.compute``."""
    compute = job.compute
    vcpu, mem = (compute.size_parts() if compute is not None and compute.size else None) or billed_size(job)
    return estimate_acs((PodUsage(s, vcpu, mem) for s in pod_seconds), region=region,
                        compute_class=compute.compute_class if compute else "general-purpose",
                        qos="best-effort" if compute is not None and compute.qos == "preemptible" else "default")
