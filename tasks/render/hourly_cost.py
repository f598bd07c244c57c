"""What a resource ask-batch left behind costs per hour while it exists: for ``flows.cleanup``.

Reuses the ECI and ACS unit prices and sizing rules of ``tasks.render.cost`` and ``tasks.render.acs_cost``; adds the
two prices they do not hold, each with its source and the date it was read:

- **NAS (General-purpose, pay-as-you-go)**: billed on the file system's largest used size in each hour, at a
  price per GiB-month converted as price / 30 / 24 per GiB-hour
  (https://www.alibabacloud.com/help/en/nas/product-overview/billing-of-general-purpose-nas-file-systems).
  The used size is DescribeFileSystems' ``MeteredSize`` in bytes
  (https://www.alibabacloud.com/help/en/nas/developer-reference/api-nas-2017-06-26-describefilesystems).
  Only the Capacity price on the international site is published on that page (USD 0.06 per GiB-month); the
  others are shown as unknown with the pricing page, never guessed.
- **Clusters**: an ACK Serverless cluster has no management fee (Basic) or one that is "currently free" (Pro,
  public preview) (https://www.alibabacloud.com/help/en/ack/serverless-kubernetes/product-overview/ack-serverless-cluster-billing-instructions);
  an ACS cluster has none (``tasks.render.acs_cost``). What a cluster costs is its API server's CLB, NAT gateway
  and EIP, billed by those services and not counted here (the note says so).

A pod is billed while its instance exists: from ``status.startTime`` until it ends (``tasks.render.cost``), so only
pods in phase Pending (once started) or Running are priced; a finished pod costs nothing.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tasks.render.acs_cost import CURRENCY, acs_price
from tasks.render.acs_cost import site as acs_site
from tasks.render.cost import price_table, round_spec, use_spec_size
from tasks.spec import cpu_cores, memory_gib

NAS_PRICE_SOURCE = ("https://www.alibabacloud.com/help/en/nas/product-overview/billing-of-general-purpose-nas-file-"
                    "systems")
NAS_PRICING_PAGE = "https://www.alibabacloud.com/product/nas/pricing"
NAS_READ_ON = "2026-11-30"
#: (site, StorageType) -> price per GiB-month, pay-as-you-go (see the module docstring).
NAS_GIB_MONTH: dict[tuple[str, str], float] = {("intl", "Capacity"): 0.06}
CURRENCIES = {"cn": "CNY", "intl": "USD"}
CLUSTER_NOTE = ("no cluster management fee (ACK Serverless Basic: none, Pro: free in public preview; ACS: none); its "
                "API-server CLB, NAT gateway and EIP are billed by those services and not counted here")
ECI = "k8s.aliyun.com/"
ACS_CLASS_LABEL = "alibabacloud.com/compute-class"
ACS_QOS_LABEL = "alibabacloud.com/compute-qos"
ACS_USE_SPEC = "alibabacloud.com/pod-use-spec"
BILLED_PHASES = ("Pending", "Running")


@dataclass(frozen=True)
class Hourly:
    """A price per hour: ``amount`` None when it is not known (``note`` says where to look)."""

    amount: float | None
    currency: str
    note: str = ""
    label: str = ""  # shown instead of the amount, e.g. "0 (Succeeded)"

    def text(self) -> str:
        if self.label:
            return self.label
        if self.amount is None:
            return "unknown"
        return f"{self.amount:.4f} {self.currency}/h"


def _site(region: str, site: str | None) -> str:
    if site in CURRENCIES:
        return site
    return "cn" if region.startswith("cn-") and region != "cn-hongkong" else "intl"


def nas_hourly(metered_bytes: float, storage_type: str, *, region: str, site: str | None = None) -> Hourly:
    """The hourly price of a General-purpose NAS file system holding ``metered_bytes`` (its ``MeteredSize``)."""
    key = (_site(region, site), storage_type)
    currency = CURRENCIES[key[0]]
    price = NAS_GIB_MONTH.get(key)
    if price is None:
        return Hourly(None, currency, f"no {storage_type} NAS price on the {key[0]} site in the table; see "
                                      f"{NAS_PRICING_PAGE}")
    gib = metered_bytes / 2**30
    return Hourly(gib * price / 30 / 24, currency, f"{gib:.3f} GiB used at {price} {currency}/GiB-month "
                                                  f"({NAS_PRICE_SOURCE}, read {NAS_READ_ON})")


def _pod_resources(pod: Mapping[str, Any]) -> tuple[float, float]:
    """(vCPU, GiB) a pod asks for: per container the larger of request and limit, summed; init containers run
    before, so the largest of them counts if it is larger (Kubernetes' effective request)."""
    def size(container: Mapping[str, Any]) -> tuple[float, float]:
        res = container.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        cpu = max((cpu_cores(str(v)) for v in (req.get("cpu"), lim.get("cpu")) if v is not None), default=0.0)
        mem = max((memory_gib(str(v)) for v in (req.get("memory"), lim.get("memory")) if v is not None),
                  default=0.0)
        return cpu, mem

    spec = pod.get("spec") or {}
    main = [size(c) for c in spec.get("containers") or []]
    init = [size(c) for c in spec.get("initContainers") or []]
    cpu = max(sum(c for c, _ in main), max((c for c, _ in init), default=0.0))
    mem = max(sum(m for _, m in main), max((m for _, m in init), default=0.0))
    return cpu, mem


def pod_hourly(pod: Mapping[str, Any], *, region: str, kind: str = "ask", site: str | None = None) -> Hourly:
    """The hourly price of a pod (a Kubernetes Pod as a JSON dict) while it is billed; 0 once it has ended.

    ASK (ECI): the first vCPU-memory entry of ``k8s.aliyun.com/eci-use-specs``, else the requests rounded up to an
    ECI spec (spot: at least 2 vCPU), at the site's pay-as-you-go price (spot: an upper bound). ACS: the size ACS
    billed (``alibabacloud.com/pod-use-spec``), else the requests, at the class and QoS price.
    """
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    annotations, labels = meta.get("annotations") or {}, meta.get("labels") or {}
    if status.get("phase") not in BILLED_PHASES or not status.get("startTime"):
        phase = status.get("phase") or "unknown phase"
        return Hourly(0.0, CURRENCIES[_site(region, site)], f"{phase}: no instance billed", label=f"0 ({phase})")
    if kind == "acs":
        named = use_spec_size(str(annotations.get(ACS_USE_SPEC, "")).replace(" ", ""))
        vcpu, mem = named or _pod_resources(pod)
        qos = "best-effort" if labels.get(ACS_QOS_LABEL) == "best-effort" else "default"
        cls = labels.get(ACS_CLASS_LABEL, "general-purpose")
        price = acs_price(region, cls, qos)
        return Hourly(3600 * (vcpu * price.vcpu_second + mem * price.gib_second), CURRENCY[acs_site(region)],
                      f"ACS {cls}/{qos} {vcpu:g} vCPU / {mem:g} GiB")
    spot = annotations.get(ECI + "eci-spot-strategy", "None") not in ("", "None")
    specs = [s for s in str(annotations.get(ECI + "eci-use-specs", "")).split(",") if s.strip()]
    named = use_spec_size(specs[0]) if specs else None
    vcpu, mem = named or round_spec(*_pod_resources(pod), spot=spot)
    table = price_table(region, site=site)
    amount = 3600 * (vcpu * table.vcpu_second + mem * table.gib_second)
    return Hourly(amount, table.currency, f"ECI {vcpu:g} vCPU / {mem:g} GiB" + (" (spot: upper bound)" if spot
                                                                                 else ""))


def cluster_hourly(*, region: str, site: str | None = None) -> Hourly:
    """An ASK or ACS cluster's own hourly fee: none (``CLUSTER_NOTE``)."""
    return Hourly(0.0, CURRENCIES[_site(region, site)], CLUSTER_NOTE)
