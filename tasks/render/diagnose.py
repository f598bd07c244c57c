"""Why isn't it running / why did it fail: one classifier over pod status, knowing ECI.

Pure functions over pod dicts (``ApiClient.sanitize_for_serialization(V1Pod)`` or watch ``raw_object``), so
they are unit-tested without a cluster. ``wait_for_job`` calls ``diagnose_pod`` on every pod event and on a
timer, and ``attempt_end`` on every pod that finished.

**Kubernetes decides, we explain.** A pod that *ended* (phase Failed) is the Job's business: the Job controller
replaces it or fails the index/Job by its own rules (``backoffLimit``, ``backoffLimitPerIndex``,
``podFailurePolicy``; https://kubernetes.io/docs/concepts/workloads/controllers/job/#handling-pod-and-container-failures).
So a spot reclaim (ECI ``BidFailed``, condition ``DisruptionTarget``), an ECI stock-out (``ProviderFailed`` with
``NoStock``), an eviction, an OOM kill or a non-zero exit is never fatal here: ``attempt_end`` names it in words
for the log and the per-index ledger, and the run's verdict comes from the Job's conditions.

``diagnose_pod`` is only for pods that *cannot end by themselves*: they sit Pending while the Job waits forever.
States that may clear — an image pull failing while a registry blips, a pod unschedulable while ECI finds stock,
a Secret not yet visible — are fatal after ``grace`` seconds since the pod was created; an invalid image name is
fatal at once. Never wait for the Job deadline.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tasks.naming import INDEX_LABEL
from tasks.render.compute import ON_DEMAND_CONDITION

AFTER_GRACE_WAITING = {"ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError", "CreateContainerError",
                       "RunContainerError", "ErrImageNeverPull"}
FATAL_WAITING = {"InvalidImageName"}
ECI_CREATED_CONDITION = "ContainerInstanceCreated"
#: Pod condition the control plane (and ECI, for a spot release) adds to a pod it is about to disrupt:
#: https://kubernetes.io/docs/concepts/workloads/pods/disruptions/#pod-disruption-conditions
DISRUPTION_CONDITION = "DisruptionTarget"
#: ECI pod annotation choosing a spot instance: https://www.alibabacloud.com/help/en/eci/user-guide/use-preemptible-instances
SPOT_ANNOTATION = "k8s.aliyun.com/eci-spot-strategy"
SPOT_STRATEGIES = ("SpotAsPriceGo", "SpotWithPriceLimit")
#: Pod ``status.reason`` values of ECI and the kubelet for a pod that ended without the workload failing.
#: Each maps to (outcome, words). ``BidFailed``: the spot instance was released; ``ProviderFailed``: the
#: virtual kubelet could not create the instance (the message names the ECI reason, e.g. NoStock).
POD_REASON_OUTCOMES: dict[str, tuple[str, str]] = {
    "BidFailed": ("reclaimed", "spot instance reclaimed"),
    "ProviderFailed": ("create-failed", "ECI could not create the instance"),
    "Evicted": ("evicted", "pod evicted"),
    "DeadlineExceeded": ("deadline", "pod deadline exceeded"),
}
#: The ECI creation-failure reasons that mean "no stock right now" (the message of a ProviderFailed pod).
STOCK_OUT_REASONS = ("NoStock", "RecommendEmpty", "OperationDenied.NoStock")

INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


@dataclass(frozen=True)
class Diagnosis:
    """A pod that will not make progress: what happened, in words a user can act on."""

    pod: str
    index: int | None
    reason: str
    message: str
    exit_code: int | None = None

    def describe(self) -> str:
        idx = "?" if self.index is None else self.index
        code = f", exit code {self.exit_code}" if self.exit_code is not None else ""
        return f"index {idx} pod {self.pod}: {self.reason}{code}: {self.message}".rstrip(": ")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    if isinstance(text, datetime):
        return text if text.tzinfo else text.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(text).replace("Z", "+00:00"))


def pod_index(pod: dict[str, Any]) -> int | None:
    """The index a pod runs: the original index of a follow-up Job's pod (label ``ask-batch.io/index``), else
    the completion index of an Indexed Job's pod (annotation, else label)."""
    meta = pod.get("metadata") or {}
    original = (meta.get("labels") or {}).get(INDEX_LABEL)
    if original is not None and original.isdigit():
        return int(original)
    for source in (meta.get("annotations") or {}, meta.get("labels") or {}):
        value = source.get(INDEX_ANNOTATION)
        if value is not None:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def container_statuses(pod: dict[str, Any]) -> list[dict[str, Any]]:
    status = pod.get("status") or {}
    return list(status.get("initContainerStatuses") or []) + list(status.get("containerStatuses") or [])


def exit_code(pod: dict[str, Any]) -> int | None:
    """Exit code of the (last) terminated container, if any."""
    for cs in reversed(container_statuses(pod)):
        term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
        if term and term.get("exitCode") is not None:
            return int(term["exitCode"])
    return None


def diagnose_pod(pod: dict[str, Any], *, now: datetime, grace: float) -> Diagnosis | None:
    """A fatal diagnosis for a pod stuck before it could end, or None (it may still run, or it ended).

    A pod that ended (Failed) is never diagnosed here: the Job retries it or fails by its own rules (see the
    module docstring); ``attempt_end`` describes it.
    """
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    name, index = meta.get("name", "?"), pod_index(pod)
    created = parse_time(meta.get("creationTimestamp")) or now
    past_grace = (now - created).total_seconds() >= grace

    def found(reason: str, message: str, code: int | None = None) -> Diagnosis:
        return Diagnosis(pod=name, index=index, reason=reason, message=(message or "").strip(), exit_code=code)

    if status.get("phase") in ("Failed", "Succeeded"):
        return None
    for cs in container_statuses(pod):
        state = cs.get("state") or {}
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in FATAL_WAITING:
            return found(waiting["reason"], waiting.get("message", ""))
        if waiting.get("reason") in AFTER_GRACE_WAITING and past_grace:
            return found(waiting["reason"], waiting.get("message", ""))
    for cond in status.get("conditions") or []:
        if cond.get("status") != "False":
            continue
        if cond.get("type") == "PodScheduled" and cond.get("reason") == "Unschedulable" and past_grace:
            return found("Unschedulable", cond.get("message", ""))
        if cond.get("type") == ECI_CREATED_CONDITION and past_grace:
            if is_acs_pod(pod):
                return found(*acs_create_failure(cond))
            return found(f"ECI {cond.get('reason') or 'ContainerInstanceCreated=False'}", cond.get("message", ""))
    return None


def is_spot(pod: dict[str, Any]) -> bool:
    """The pod asked for a preemptible instance: ECI spot, or ACS's best-effort QoS (label)."""
    if ((pod.get("metadata") or {}).get("labels") or {}).get(ACS_QOS_LABEL) == "best-effort":
        return True
    return ((pod.get("metadata") or {}).get("annotations") or {}).get(SPOT_ANNOTATION) in SPOT_STRATEGIES


def _has_condition(pod: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return cond
    return None


@dataclass(frozen=True)
class AttemptEnd:
    """How one pod (one attempt of an index) ended, in words a user can act on.

    ``outcome`` is one of: ``succeeded``, ``reclaimed`` (spot release or disruption), ``stock-out`` (ECI had no
    stock), ``create-failed`` (ECI could not create the instance, other reason), ``evicted``, ``deadline``,
    ``oom``, ``start-error`` (the container could not start, e.g. the executable is missing), ``exit``
    (non-zero exit code), ``moved-on-demand`` (ask-batch stopped it after ``job.eci.max_reclaims`` reclaims).
    """

    outcome: str
    reason: str
    exit_code: int | None = None
    message: str = ""

    @property
    def disruption(self) -> bool:
        """Not the workload's fault: the cloud took the pod away or never gave it an instance."""
        return self.outcome in ("reclaimed", "stock-out", "create-failed", "evicted", "moved-on-demand")


def _terminated(pod: dict[str, Any]) -> dict[str, Any]:
    for cs in reversed(container_statuses(pod)):
        term = (cs.get("state") or {}).get("terminated")
        if term:
            return term
    return {}


def attempt_end(pod: dict[str, Any]) -> AttemptEnd | None:
    """How this pod ended, or None while it has not (phase neither Succeeded nor Failed).

    The pod's own reason comes first (``BidFailed``, ``ProviderFailed``, ``Evicted``...), then a
    ``DisruptionTarget`` condition (a reclaim or preemption the control plane announced), then the container:
    OOMKilled, StartError (exit code 128; its message is the runtime's, e.g. ``exec: "x": executable file not found
    in $PATH``) and the exit code.
    """
    status = pod.get("status") or {}
    phase = status.get("phase")
    if phase == "Succeeded":
        return AttemptEnd("succeeded", "completed", exit_code(pod) if exit_code(pod) is not None else 0)
    if phase != "Failed":
        return None
    code = exit_code(pod)
    reason, message = status.get("reason") or "", (status.get("message") or "").strip()
    moved = _has_condition(pod, ON_DEMAND_CONDITION)
    if moved:  # ask-batch stopped it: the index's last try runs on demand (wait.py, max_reclaims)
        return AttemptEnd("moved-on-demand", "stopped by ask-batch after its spot reclaims: the last try runs "
                          "on demand", code, (moved.get("message") or "").strip())
    if is_reclaimed(pod):  # ACS best-effort preemption (its reason string is not ACS-documented; see is_reclaimed)
        return AttemptEnd("reclaimed", f"ACS BestEffort instance preempted ({reason or DISRUPTION_CONDITION})",
                          code, message)
    if reason in POD_REASON_OUTCOMES:
        outcome, words = POD_REASON_OUTCOMES[reason]
        if reason == "ProviderFailed" and any(r in message for r in STOCK_OUT_REASONS):
            outcome, words = "stock-out", "ECI had no stock for the instance"
        return AttemptEnd(outcome, f"{words} ({reason})", code, message)
    disruption = _has_condition(pod, DISRUPTION_CONDITION)
    if disruption:
        why = disruption.get("reason") or DISRUPTION_CONDITION
        words = "spot instance reclaimed" if why == "BidFailed" or is_spot(pod) else "pod disrupted"
        return AttemptEnd("reclaimed", f"{words} ({why})", code, (disruption.get("message") or message).strip())
    term = _terminated(pod)
    if term.get("reason") == "OOMKilled":
        return AttemptEnd("oom", "out of memory (OOMKilled)", code,
                          "the container used more than its memory limit; fix: raise job.memory")
    if term.get("reason") in ("StartError", "ContainerCannotRun") or reason == "StartError":
        text = (term.get("message") or message).strip()
        return AttemptEnd("start-error", f"the container could not start ({term.get('reason') or reason})", code,
                          f"{text}; fix: check job.command and job.image (is the executable in the image, on "
                          f"its PATH?)" if text else "fix: check job.command and job.image")
    if code is not None:
        return AttemptEnd("exit", f"exit code {code}", code, (term.get("message") or message).strip())
    return AttemptEnd("exit", reason or "failed", code, message)


def due_on_demand(reclaims: dict[int, int], *, max_reclaims: int, settled: set[int]) -> list[int]:
    """Indexes whose last try must run on demand: reclaimed at least ``max_reclaims`` times (``reclaims``:
    index -> attempts the cloud took away) and not ``settled`` (succeeded, failed, or already moved). None when
    ``max_reclaims`` is 0 (off)."""
    if max_reclaims <= 0:
        return []
    return sorted(i for i, n in reclaims.items() if n >= max_reclaims and i not in settled)


def parse_indexes(text: str | None) -> set[int]:
    """Indexes from the Job status interval format, e.g. ``"1,3-5"`` -> {1, 3, 4, 5}
    (``status.completedIndexes``/``failedIndexes``: https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/job-v1/#JobStatus).
    """
    out: set[int] = set()
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def job_finished(job: dict[str, Any]) -> tuple[bool, bool, str | None]:
    """(finished, succeeded, reason) from the Job's conditions."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            return True, True, None
        if cond.get("type") == "Failed":
            return True, False, f"{cond.get('reason') or 'Failed'}: {cond.get('message') or ''}".rstrip(": ")
    return False, False, None


# --------------------------------------------------------------------------------------------- ACS
# Kept apart from the ECI rules above. ACS pods are recognised by their compute labels (ask-batch always sets them
# on ACS, see tasks/render/compute.py). Sources: https://www.alibabacloud.com/help/en/cs/user-guide/acs-pod-instance-overview
# (BestEffort: "forced instance preemption and eviction may occur", with an event 5 minutes before) and
# https://help.aliyun.com/en/cs/user-guide/acs-pod-custom-condition (ContainerInstanceCreated reasons).

ACS_CLASS_LABEL = "alibabacloud.com/compute-class"
ACS_QOS_LABEL = "alibabacloud.com/compute-qos"
ACS_CREATE_FAILURES = {  # ContainerInstanceCreated=False reason -> what to do
    "NoStock": "ACS has no stock for this compute class/size in the zone; fix: add vSwitches in more zones, or "
               "another job.compute.size/class",
    "StockExhaust": "ACS stock in the zone is running out; fix: add vSwitches in more zones",
    "StockClose": "the zone is closed to new ACS instances; fix: use vSwitches in other zones",
    "DiskCapacityQuotaFull": "the disk capacity quota is used up; fix: raise it in the Quota Center",
}


def is_acs_pod(pod: dict[str, Any]) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return ACS_CLASS_LABEL in labels or ACS_QOS_LABEL in labels


def is_reclaimed(pod: dict[str, Any]) -> bool:
    """A Failed ACS best-effort pod whose instance was preempted: it carries ``DisruptionTarget=True``.

    The condition, not a reason string, is what is relied on: the exact reason ACS writes on a preempted pod is not
    in its public docs (the sandbox uses ``Evicted``). ECI spot reclaims (``BidFailed``) are the ECI rules' business.
    """
    status = pod.get("status") or {}
    labels = (pod.get("metadata") or {}).get("labels") or {}
    if status.get("phase") != "Failed" or labels.get(ACS_QOS_LABEL) != "best-effort":
        return False
    return any(c.get("type") == "DisruptionTarget" and c.get("status") == "True"
               for c in status.get("conditions") or [])


def acs_create_failure(cond: dict[str, Any]) -> tuple[str, str]:
    """(reason, message) for an ACS pod whose instance cannot be created (``ContainerInstanceCreated=False``)."""
    reason = cond.get("reason") or "ContainerInstanceCreated=False"
    hint = ACS_CREATE_FAILURES.get(reason)
    message = (cond.get("message") or "").strip()
    return f"ACS {reason}", f"{message}; {hint}" if hint else message
