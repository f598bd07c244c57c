"""Why isn't it running / why did it fail: one classifier over pod status, knowing ECI.

Pure functions over pod dicts (``ApiClient.sanitize_for_serialization(V1Pod)`` or watch ``raw_object``), so
they are unit-tested without a cluster. ``wait_for_job`` calls ``diagnose_pod`` on every pod event and on a
timer, and fails the run on the first fatal diagnosis.

The grace rule (anchors.md pain points 1 and 2): states that may clear by themselves — an image pull failing
while a registry blips, a pod unschedulable while ECI finds stock, a Secret not yet visible — are fatal only after
``grace`` seconds since the pod was created; states that cannot clear (OOMKilled, an invalid image name, ECI
``ProviderFailed``/``BidFailed`` pods that already Failed) are fatal at once. Never wait for the Job deadline.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

AFTER_GRACE_WAITING = {"ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError", "CreateContainerError",
                       "RunContainerError", "ErrImageNeverPull"}
FATAL_WAITING = {"InvalidImageName"}
FATAL_TERMINATED = {"OOMKilled"}
FATAL_POD_REASONS = {"ProviderFailed", "BidFailed", "Evicted", "DeadlineExceeded"}
ECI_CREATED_CONDITION = "ContainerInstanceCreated"

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
    """The completion index of a pod of an Indexed Job (annotation, else label)."""
    meta = pod.get("metadata") or {}
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
    """A fatal diagnosis for this pod, or None while it may still succeed."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    name, index = meta.get("name", "?"), pod_index(pod)
    created = parse_time(meta.get("creationTimestamp")) or now
    past_grace = (now - created).total_seconds() >= grace

    def found(reason: str, message: str, code: int | None = None) -> Diagnosis:
        return Diagnosis(pod=name, index=index, reason=reason, message=(message or "").strip(), exit_code=code)

    if is_reclaimed(pod):
        return None  # a preemptible instance was reclaimed: the Job replaces the pod (counted in the ledger)
    if status.get("phase") == "Failed" and status.get("reason") in FATAL_POD_REASONS:
        return found(status["reason"], status.get("message", ""), exit_code(pod))
    for cs in container_statuses(pod):
        state = cs.get("state") or {}
        waiting, terminated = state.get("waiting") or {}, state.get("terminated") or {}
        if waiting.get("reason") in FATAL_WAITING:
            return found(waiting["reason"], waiting.get("message", ""))
        if waiting.get("reason") in AFTER_GRACE_WAITING and past_grace:
            return found(waiting["reason"], waiting.get("message", ""))
        if terminated.get("reason") in FATAL_TERMINATED:
            return found(terminated["reason"], terminated.get("message", "") or "the container ran out of memory; "
                         "fix: raise job.memory", terminated.get("exitCode"))
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
