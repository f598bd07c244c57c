"""Estimated ECI cost of a run: vCPU·seconds and GiB·seconds times the region's pay-as-you-go prices.

Why an estimate and not a bill: ECI rounds each pod up to a supported spec (or bills an ECS type at that type's
price), bills from image pull to the end of the pod, and spot prices float. We count what we can see — each pod's
running time and its requested (or limited, whichever is larger) vCPU and memory — and say what is left out:
spot discounts (noted, not guessed), the API-server CLB, NAT gateway and EIP, extra ephemeral storage, NAS.

All prices live in ONE table below, with its source and the date it was read. Change them there only.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from tasks.spec import JobSpec, cpu_cores, memory_gib


@dataclass(frozen=True)
class PriceTable:
    """ECI pay-as-you-go unit prices for one site."""

    currency: str
    vcpu_second: float
    gib_second: float
    source: str
    read_on: str


#: research/alibaba.md §5. China-site prices apply to mainland regions ("cn-*"), the international site's to the
#: others. ECI bills per second (settled hourly); charges under 0.01 are rounded away.
PRICES: dict[str, PriceTable] = {
    "cn": PriceTable(
        currency="CNY",
        vcpu_second=0.000049,
        gib_second=0.00000613,
        source="https://help.aliyun.com/zh/eci/product-overview/elastic-container-instances (ECI billing, "
        "vCPU/memory specs, pay-as-you-go)",
        read_on="2026-11-24",
    ),
    "intl": PriceTable(
        currency="USD",
        vcpu_second=0.0000077,
        gib_second=0.00000096,
        source="https://www.alibabacloud.com/help/en/eci/product-overview/virtual-node-billing",
        read_on="2026-11-24",
    ),
}

SPOT_NOTE = ("spot instances are billed at the market price, typically 30% to 90% below pay-as-you-go; "
             "the estimate uses pay-as-you-go prices as an upper bound")
NOT_INCLUDED = ("not included: API-server CLB (~0.147 CNY/h + LCU), NAT gateway and EIP if created, extra "
                "ephemeral storage, NAS capacity, OSS storage and requests")


def price_table(region: str) -> PriceTable:
    """The price table that applies to ``region``."""
    return PRICES["cn"] if region.startswith("cn-") else PRICES["intl"]


@dataclass(frozen=True)
class PodUsage:
    """One pod's billable footprint: how long it ran and the size it was billed at."""

    seconds: float
    vcpu: float
    memory_gib: float


@dataclass(frozen=True)
class CostEstimate:
    vcpu_seconds: float
    gib_seconds: float
    amount: float
    currency: str
    spot: bool
    notes: tuple[str, ...]
    source: str

    def summary(self) -> str:
        """One line for the run summary."""
        spot = " (spot: upper bound)" if self.spot else ""
        return (f"~{self.amount:.4f} {self.currency}{spot} for {self.vcpu_seconds:,.0f} vCPU·s and "
                f"{self.gib_seconds:,.0f} GiB·s")


def billed_size(job: JobSpec) -> tuple[float, float]:
    """(vCPU, GiB) a pod of this Job is billed at: the larger of request and limit."""
    vcpu = max(cpu_cores(job.cpu), cpu_cores(job.cpu_limit or job.cpu))
    mem = max(memory_gib(job.memory), memory_gib(job.memory_limit or job.memory))
    return vcpu, mem


def estimate(pods: Iterable[PodUsage], *, region: str, spot: bool = False) -> CostEstimate:
    """Cost of the given pods at the region's pay-as-you-go prices."""
    table = price_table(region)
    vcpu_s = gib_s = 0.0
    for pod in pods:
        if pod.seconds < 0 or pod.vcpu < 0 or pod.memory_gib < 0:
            raise ValueError(f"negative usage {pod!r}")
        vcpu_s += pod.seconds * pod.vcpu
        gib_s += pod.seconds * pod.memory_gib
    amount = vcpu_s * table.vcpu_second + gib_s * table.gib_second
    notes = (SPOT_NOTE, NOT_INCLUDED) if spot else (NOT_INCLUDED,)
    return CostEstimate(vcpu_s, gib_s, amount, table.currency, spot, notes, f"{table.source} (read {table.read_on})")


def estimate_job(job: JobSpec, pod_seconds: Iterable[float], *, region: str) -> CostEstimate:
    """Cost of a Job's pods given each pod's running time (seconds), sized from the spec."""
    vcpu, mem = billed_size(job)
    return estimate((PodUsage(s, vcpu, mem) for s in pod_seconds), region=region,
                    spot=job.eci.spot_strategy != "None")


def estimate_before_run(job: JobSpec, *, expected_seconds_per_index: float, region: str) -> CostEstimate:
    """Dry-run estimate: every index runs once for the expected time (retries would add to it)."""
    return estimate_job(job, [expected_seconds_per_index] * job.completions, region=region)
