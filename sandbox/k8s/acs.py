"""ACS (Alibaba Cloud Container Compute Service) behaviour for sandbox clusters whose CS profile is ``Acs``.

An ACS cluster is an ordinary sandbox Kubernetes plus what ACS does to pods (`KubeCluster(flavour="acs")`
wires it in; ASK clusters are untouched):

- **Compute labels are validated at admission.** ``alibabacloud.com/compute-class`` must be one of
  general-purpose, performance, gpu, gpu-hpn; ``alibabacloud.com/compute-qos`` one of default, best-effort,
  and gpu-hpn supports default only. Both are optional (ACS defaults to general-purpose / default). A bad
  value is refused at pod creation with 400 BadRequest, naming the label, the value and the valid values.
  Source: https://www.alibabacloud.com/help/en/cs/user-guide/acs-pod-instance-overview ("Compute classes",
  "Computing power QoS", "Mapping between compute types and computing power QoS").
- **The used size.** Each pod gets ``alibabacloud.com/pod-use-spec`` ("<vCPU>-<GiB>Gi", e.g. "2-4Gi"): the
  summed container requests (limits where larger) rounded up to the nearest general-purpose/performance
  specification of the same page ("Resource specifications"); 2 vCPU / 4 GiB when nothing is declared.
  Also ``alibabacloud.com/instance-id`` (``acs-…``). Source for the annotation names:
  https://help.aliyun.com/zh/ack/distributed-cloud-container-platform-for-kubernetes/user-guide/acs-pod-annotation
- **ECI annotations are not ACS's.** ``k8s.aliyun.com/eci-*`` annotations (spot strategy, use-specs, …) have
  no effect on an ACS pod (ACS sizes pods from resources and chooses compute with labels); the sandbox says
  so with one Warning event ``EciAnnotationIgnored`` per pod, listing them. The one ECI annotation ACS
  documents as compatible (``k8s.aliyun.com/eci-eip-instanceid``) is not reported.
- **Stock failures** use the ``ContainerInstanceCreated`` condition reasons and messages of
  https://help.aliyun.com/en/cs/user-guide/acs-pod-custom-condition (``NoStock``: "Create failed because the
  specified instance is out of stock. …").
- **BestEffort preemption.** With the fault knob ``spot_reclaim_after_s > 0``, a pod labelled
  ``compute-qos: best-effort`` is preempted that many seconds after its first container started: a Warning
  event ``BestEffortPreempting`` (ACS notifies about 5 minutes ahead; the sandbox preempts at once), every
  process is killed, and the pod ends phase Failed, reason ``Evicted``, with condition
  ``DisruptionTarget=True`` (reason ``BestEffortPreempted``). ECI spot annotations on an ACS pod never
  trigger ECI's ``BidFailed``.

Not verified against ACS (the public docs we could read do not name them): the exact reason strings of the
preemption notice and of the preempted pod, the admission webhook's name and message wording, and whether ACS
emits any event for ignored ECI annotations. They are the sandbox's and listed in docs/sandbox.md.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Callable
from typing import Any

from . import errors
from .node.quantity import container_requests, memory_bytes, parse_quantity

Obj = dict[str, Any]
Admission = Callable[[str, str, Obj, Obj | None], None]

ACS_PROFILE = "Acs"
COMPUTE_CLASS = "alibabacloud.com/compute-class"
COMPUTE_QOS = "alibabacloud.com/compute-qos"
USE_SPEC = "alibabacloud.com/pod-use-spec"
REQUIRED_SPEC = "alibabacloud.com/pod-required-spec"
REQUIRED_RE = re.compile(r"^(?P<cpu>\d+(\.\d+)?)-(?P<mem>\d+(\.\d+)?)Gi$")
INSTANCE_ID = "alibabacloud.com/instance-id"
CLASSES = ("general-purpose", "performance", "gpu", "gpu-hpn")
QOS = ("default", "best-effort")
QOS_BY_CLASS = {"gpu-hpn": ("default",)}
ECI_PREFIX = "k8s.aliyun.com/eci-"
ECI_COMPATIBLE = frozenset({"k8s.aliyun.com/eci-eip-instanceid"})
WEBHOOK = "acs-pod-validate.alibabacloud.com"
COMPONENT = "AcsService"  # the event source ACS's own events carry (acs-pod-custom-events page)

# BestEffort preemption: the notice event, the pod's final reason/message and its DisruptionTarget reason.
PREEMPT_NOTICE = "BestEffortPreempting"
PREEMPT_REASON = "Evicted"
PREEMPT_CONDITION_REASON = "BestEffortPreempted"
PREEMPT_MESSAGE = ("The BestEffort ACS instance of this pod was preempted: the BestEffort stock was reclaimed "
                   "(alibabacloud.com/compute-qos=best-effort)")

STOCK_MESSAGES = {
    "NoStock": "Create failed because the specified instance is out of stock. {zone}",
    "StockClose": "Create failed because current zone closed or limited without living instance. {zone}",
}


# ------------------------------------------------------------------ specifications


def _cpu_steps() -> list[float]:
    return [0.25, 0.5] + [1 + 0.5 * i for i in range(31)] + [24.0, 32.0, 48.0, 64.0]


def _memory_options(cpu: float) -> list[float]:
    """GiB sizes ACS offers with `cpu` vCPUs (general-purpose and performance tables)."""
    if cpu == 0.25:
        return [0.5, 1.0, 2.0]
    if cpu >= 24:
        return [cpu, 2 * cpu, 4 * cpu, 8 * cpu]
    return [float(g) for g in range(max(1, math.ceil(cpu)), int(8 * cpu) + 1)]


def _fmt(value: float) -> str:
    return f"{value:g}"


def pod_totals(pod: Obj) -> tuple[float, float]:
    """(vCPU, GiB) the pod declares: per container the larger of request and limit, summed; raised to the
    ``alibabacloud.com/pod-required-spec`` annotation ("<vCPU>-<GiB>Gi") when that is larger."""
    cpu = mem = 0.0
    for container in (pod.get("spec") or {}).get("containers") or []:
        limits = (container.get("resources") or {}).get("limits") or {}
        req = container_requests(container)
        cpu += max(req.cpu_m / 1000, float(parse_quantity(limits["cpu"])) if "cpu" in limits else 0.0)
        mem += max(req.memory, memory_bytes(limits["memory"]) if "memory" in limits else 0) / 2**30
    required = REQUIRED_RE.match(((pod.get("metadata") or {}).get("annotations") or {}).get(REQUIRED_SPEC, ""))
    if required:
        cpu, mem = max(cpu, float(required["cpu"])), max(mem, float(required["mem"]))
    return cpu, mem


def use_spec(pod: Obj) -> str | None:
    """The normalized "<vCPU>-<GiB>Gi" ACS bills the pod at, or None when no specification fits (>64/512)."""
    cpu, mem = pod_totals(pod)
    if cpu == 0 and mem == 0:
        return "2-4Gi"
    for step in _cpu_steps():
        if step + 1e-9 < cpu:
            continue
        for gib in _memory_options(step):
            if gib + 1e-9 >= mem:
                return f"{_fmt(step)}-{_fmt(gib)}Gi"
    return None


# ------------------------------------------------------------------ admission


def _denied(message: str) -> errors.ApiError:
    # A validating webhook's denial: the API server answers 400 with this prefix (k8s.io/apiserver
    # pkg/admission/plugin/webhook/errors ToStatusErr).
    return errors.ApiError(400, "BadRequest", f'admission webhook "{WEBHOOK}" denied the request: {message}')


def validate_pod(pod: Obj) -> None:
    """Raise a 400 webhook denial when the compute labels or the size are not ones ACS offers."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    cls = labels.get(COMPUTE_CLASS)
    if cls is not None and cls not in CLASSES:
        raise _denied(f'label {COMPUTE_CLASS}="{cls}" is not supported; valid values: {", ".join(CLASSES)}')
    qos = labels.get(COMPUTE_QOS)
    allowed = QOS_BY_CLASS.get(cls or "general-purpose", QOS)
    if qos is not None and qos not in allowed:
        raise _denied(f'label {COMPUTE_QOS}="{qos}" is not supported for compute class '
                      f'"{cls or "general-purpose"}"; valid values: {", ".join(allowed)}')
    required = ((pod.get("metadata") or {}).get("annotations") or {}).get(REQUIRED_SPEC)
    if required is not None and not REQUIRED_RE.match(required):
        raise _denied(f'annotation {REQUIRED_SPEC}="{required}" is invalid; the format is "<CPU>-<Memory>Gi", '
                      'e.g. "2-4Gi"')
    if (cls or "general-purpose") in ("general-purpose", "performance") and use_spec(pod) is None:
        cpu, mem = pod_totals(pod)
        raise _denied(f"the pod asks for {cpu:g} vCPU and {mem:g} GiB, beyond the largest ACS "
                      "specification (64 vCPU, 512 GiB)")


def wrap_admission(inner: Admission | None) -> Admission:
    """The cluster's admission followed by ACS's pod admission (validation, then the used-spec annotation)."""

    def admit(plural: str, op: str, obj: Obj, old: Obj | None) -> None:
        if inner is not None:
            inner(plural, op, obj, old)
        if plural != "pods" or op != "CREATE":
            return
        validate_pod(obj)
        cls = ((obj.get("metadata") or {}).get("labels") or {}).get(COMPUTE_CLASS, "general-purpose")
        spec = use_spec(obj) if cls in ("general-purpose", "performance") else None
        annotations = obj.setdefault("metadata", {}).setdefault("annotations", {})
        if spec is not None:
            annotations[USE_SPEC] = spec

    return admit


def ignored_eci_annotations(pod: Obj) -> list[str]:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return sorted(k for k in annotations if k.startswith(ECI_PREFIX) and k not in ECI_COMPATIBLE)


# ------------------------------------------------------------------ the virtual node's ACS side


class AcsProvider:
    """What the virtual node asks when its cluster is ACS (see the module docstring)."""

    def instance_annotations(self, pod: Obj) -> dict[str, str]:
        return {INSTANCE_ID: "acs-" + secrets.token_hex(10)}

    def create_failure_message(self, reason: str, zone: str) -> str:
        text = STOCK_MESSAGES.get(reason, f"Create failed: {reason}. {{zone}}")
        return text.format(zone=zone) + " (sandbox fault eci_create_fail_rate)"

    def reclaim_after(self, pod: Obj, after_s: float) -> float | None:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        return float(after_s) if after_s > 0 and labels.get(COMPUTE_QOS) == "best-effort" else None

    def eci_warning(self, pod: Obj) -> str | None:
        ignored = ignored_eci_annotations(pod)
        if not ignored:
            return None
        return ("ECI annotations have no effect on an ACS pod and were ignored: " + ", ".join(ignored)
                + f"; choose compute with the labels {COMPUTE_CLASS} / {COMPUTE_QOS} and size with resources")
