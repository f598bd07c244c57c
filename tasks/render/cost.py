"""Estimated ECI cost of a run, before (dry run) and after (measured from the pods' own timestamps).

The ECI billing rules applied, each with its public source:

- **Spec rounding.** A pod asking for vCPU/memory is created — and billed — at the nearest supported ECI spec
  with at least that much of both (e.g. 7 vCPU 13 GiB -> 8 vCPU 14 GiB); unset resources mean 2 vCPU 4 GiB
  (``SPECS``, https://www.alibabacloud.com/help/en/eci/user-guide/specify-the-number-of-vcpus-and-memory-size-to-create-an-elastic-container-instance).
  ``eci-use-specs`` names the spec directly: its first vCPU-memory entry is what is billed (an ECS type is billed
  at that type's price, which this table does not hold: it is estimated from the rounded request and noted).
- **Spot minimum.** Preemptible (spot) instances specified by vCPU/memory start at 2 vCPU: a 1 vCPU spot pod is
  billed as 2 vCPU (https://www.alibabacloud.com/help/en/ack/serverless-kubernetes/use-cases/run-jobs-on-a-preemptible-instance-1).
- **Billed from instance creation.** ECI bills from the moment the instance is created — image pull and volume
  attach included — until the pod ends, per second (https://www.alibabacloud.com/help/doc-detail/89142.htm). The
  measured figure therefore counts from the pod's ``status.startTime`` (when the virtual node accepted it and
  the instance was created), not from the container's start.
- **Currency by site.** The China site (aliyun.com accounts) bills in CNY, the international site
  (alibabacloud.com accounts) in USD — whatever the region. ``target.billing_site`` says which; without it the
  region decides (``cn-*`` -> China site), which is wrong for an international account in a mainland region.

All prices live in ONE table below, with its source and the date it was read. Change them there only. Spot
prices float: the estimate uses pay-as-you-go prices as an upper bound and says so.
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


#: https://www.alibabacloud.com/help/en/eci/product-overview/virtual-node-billing and
#: https://www.alibabacloud.com/help/en/eci/billing-overview.
#: China-site prices apply to mainland regions ("cn-*"), the international site's to the
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


def price_table(region: str, *, site: str | None = None) -> PriceTable:
    """The price table of the account's site (``"cn"`` or ``"intl"``); without it, guessed from ``region``."""
    if site in PRICES:
        return PRICES[site]
    return PRICES["cn"] if region.startswith("cn-") else PRICES["intl"]


#: vCPU -> memory sizes (GiB) ECI offers in every region (source in the module docstring).
SPECS: dict[float, tuple[float, ...]] = {
    0.25: (0.5, 1), 0.5: (1, 2), 1: (2, 4, 8), 2: (1, 2, 4, 8, 16), 4: (2, 4, 8, 16, 32), 8: (4, 8, 16, 32, 64),
    12: (12, 24, 48, 96), 16: (16, 32, 64, 128), 24: (24, 48, 96, 192), 32: (32, 64, 128, 256),
    52: (96, 192, 384), 64: (128, 256, 512),
}
DEFAULT_SPEC = (2.0, 4.0)  # no resources at all
SPOT_MIN_VCPU = 2.0


def round_spec(vcpu: float, memory_gib: float, *, spot: bool = False) -> tuple[float, float]:
    """The ECI spec (vCPU, GiB) a pod asking for ``vcpu`` and ``memory_gib`` is created and billed at.

    The smallest supported spec with at least the vCPU and the memory asked for (fewest vCPU first, then least
    memory); spot pods at least ``SPOT_MIN_VCPU``.

    Raises:
        ValueError: nothing that large exists.
    """
    if vcpu <= 0 and memory_gib <= 0:
        vcpu, memory_gib = DEFAULT_SPEC
    floor = SPOT_MIN_VCPU if spot else 0.0
    for cores in sorted(SPECS):
        if cores < vcpu or cores < floor:
            continue
        for mem in SPECS[cores]:
            if mem >= memory_gib:
                return float(cores), float(mem)
    raise ValueError(f"no ECI spec has {vcpu} vCPU and {memory_gib} GiB; fix: ask for at most 64 vCPU / 512 GiB")


def use_spec_size(entry: str) -> tuple[float, float] | None:
    """'2-4Gi' -> (2.0, 4.0); an ECS type ('ecs.c6.large') -> None."""
    cpu, _, mem = entry.strip().partition("-")
    try:
        return float(cpu), float(mem.removesuffix("Gi"))
    except ValueError:
        return None


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
    """(vCPU, GiB) a pod of this Job is billed at: the first ``eci-use-specs`` vCPU-memory entry, else the larger
    of request and limit rounded up to an ECI spec (2 vCPU at least for spot)."""
    spot = job.eci.spot_strategy != "None"
    if job.eci.use_specs:
        named = use_spec_size(job.eci.use_specs[0])
        if named is not None:
            return named
    vcpu = max(cpu_cores(job.cpu), cpu_cores(job.cpu_limit or job.cpu))
    mem = max(memory_gib(job.memory), memory_gib(job.memory_limit or job.memory))
    return round_spec(vcpu, mem, spot=spot)


def usage_totals(pods: Iterable[PodUsage]) -> tuple[float, float]:
    """Sum of (vCPU·seconds, GiB·seconds) over the pods; raises ValueError on a negative figure."""
    vcpu_s = gib_s = 0.0
    for pod in pods:
        if pod.seconds < 0 or pod.vcpu < 0 or pod.memory_gib < 0:
            raise ValueError(f"negative usage {pod!r}")
        vcpu_s += pod.seconds * pod.vcpu
        gib_s += pod.seconds * pod.memory_gib
    return vcpu_s, gib_s


def estimate(pods: Iterable[PodUsage], *, region: str, spot: bool = False, site: str | None = None
             ) -> CostEstimate:
    """Cost of the given pods at the site's pay-as-you-go prices (``site``: see ``price_table``)."""
    table = price_table(region, site=site)
    vcpu_s, gib_s = usage_totals(pods)
    amount = vcpu_s * table.vcpu_second + gib_s * table.gib_second
    notes = (SPOT_NOTE, NOT_INCLUDED) if spot else (NOT_INCLUDED,)
    return CostEstimate(vcpu_s, gib_s, amount, table.currency, spot, notes, f"{table.source} (read {table.read_on})")


def estimate_job(job: JobSpec, pod_seconds: Iterable[float], *, region: str, site: str | None = None
                 ) -> CostEstimate:
    """Cost of a Job's pods given each pod's billed time (seconds, from instance creation), sized from the spec."""
    vcpu, mem = billed_size(job)
    return estimate((PodUsage(s, vcpu, mem) for s in pod_seconds), region=region,
                    spot=job.eci.spot_strategy != "None", site=site)


def estimate_before_run(job: JobSpec, *, expected_seconds_per_index: float, region: str) -> CostEstimate:
    """Dry-run estimate: every index runs once for the expected time (retries would add to it)."""
    return estimate_job(job, [expected_seconds_per_index] * job.completions, region=region)


def plan_lines(job: JobSpec, *, region: str, site: str | None = None) -> list[str]:
    """The estimate a dry run prints before anything is created: the billed size, the price of one index-hour,
    and the most the Job can cost (every index running until ``active_deadline_seconds``, no retries)."""
    vcpu, mem = billed_size(job)
    hour = estimate_job(job, [3600], region=region, site=site)
    lines = [f"each pod is billed as {vcpu:g} vCPU / {mem:g} GiB "
             f"({'spot, ' if hour.spot else ''}from instance creation, image pull included)",
             f"one index-hour: ~{hour.amount:.4f} {hour.currency}"]
    if job.active_deadline_seconds:
        cap = estimate_job(job, [float(job.active_deadline_seconds)] * job.completions, region=region, site=site)
        lines.append(f"at most ~{cap.amount:.2f} {cap.currency} if all {job.completions} indexes run until "
                     f"active_deadline_seconds ({job.active_deadline_seconds} s) (retries add to it)")
    return lines + list(hour.notes) + [f"prices: {hour.source}"]
