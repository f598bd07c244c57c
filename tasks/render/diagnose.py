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
