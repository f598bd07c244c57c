"""The batch/v1 Job controller, behaving like Kubernetes 1.31+ (pkg/controller/job).

What it reproduces, because clients (kubectl, the Python client, our own code) look at it:

- Pods are created from the template with `generateName`, a controlling ownerReference and the
  `batch.kubernetes.io/job-tracking` finalizer. A terminated pod is *counted* into `status.succeeded` /
  `status.failed` (and `completedIndexes` / `failedIndexes`) and only then loses the finalizer, in the
  same synchronous step. So "has the finalizer" means "not counted yet": counts survive pod deletion
  (including Orphan deletes and a controller restart, which rebuilds everything from the Job status and
  the pods' finalizers) and nothing is counted twice.
- Completion modes NonIndexed and Indexed (index annotation + label, `JOB_COMPLETION_INDEX` env from a
  fieldRef, hostname `<job>-<index>`), work-queue mode (completions unset), parallelism,
  backoffLimit, backoffLimitPerIndex/maxFailedIndexes, activeDeadlineSeconds, podFailurePolicy,
  successPolicy, suspend/resume, podReplacementPolicy, restartPolicy OnFailure restart counting and
  ttlSecondsAfterFinished (the TTL-after-finished controller, which deletes with Foreground propagation).
- Terminal conditions in the 1.31 order: the interim `FailureTarget` / `SuccessCriteriaMet` first, then
  `Failed` / `Complete` (with the same reason and message) once no pod of the Job is still terminating.

Why it is shaped the way it is (scale: 10,000 completions at parallelism 500 must be quick on 2 cores):

- The store's watch events feed a per-Job index of pods keyed by uid, classified once per event into
  active / terminating / ready / still-tracked sets. A Job sync only walks its tracked pods (the ones
  with the finalizer, i.e. about `active`), never all pods of all Jobs.
- Indexed Jobs keep a min-heap of indexes that may need a pod (lazy deletion), so picking the lowest
  missing indexes costs O(log n) per pod.
- Pod events only mark their Job dirty; dirty Jobs are synced at most once per tick (50 ms), which
  batches status writes: one status update per Job per tick at most.
- The controller's own writes (pod creates, deletes, finalizer removals, status) go straight into its
  cache; the later watch events for them are recognised by resourceVersion and ignored. That replaces
  the real controller's "expectations" and makes over-creation impossible.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import errors
from ..store import Obj, WatchEvent, clone
from .base import Informer, InformerController, iso, newer, parse_time

if TYPE_CHECKING:
    from ..cluster import KubeCluster

log = logging.getLogger("sandbox.k8s.jobs")

FINALIZER = "batch.kubernetes.io/job-tracking"
INDEX_KEY = "batch.kubernetes.io/job-completion-index"
FAILURE_COUNT_KEY = "batch.kubernetes.io/job-index-failure-count"
IGNORED_COUNT_KEY = "batch.kubernetes.io/job-index-ignored-failure-count"
TICK_S = 0.05  # at most one sync (and one status write) per Job per tick
RESYNC_S = 0.5
MAX_BATCH = 500  # maxPodCreateDeleteBatch of the real controller
MAX_BACKOFF_S = 360.0
EVENTS_PER_REASON = 10  # the real recorder's aggregation/spam filter keeps per-object events few

MSG_BACKOFF = "Job has reached the specified backoff limit"
MSG_DEADLINE = "Job was active longer than specified deadline"
MSG_COMPLETIONS = "Reached expected number of succeeded pods"
MSG_MAX_FAILED_INDEXES = "Job has exceeded the specified maximal number of failed indexes"
MSG_FAILED_INDEXES = "Job has failed indexes"


# ------------------------------------------------------------------ small pure helpers

def format_intervals(indexes: Iterable[int]) -> str:
    """Sorted indexes as the API's interval string: {0,1,2,4} -> "0-2,4"."""
    out: list[str] = []
    start = prev = None
    for i in sorted(indexes):
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            out.append(str(start) if start == prev else f"{start}-{prev}")
            start = prev = i
    if start is not None:
        out.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(out)


def parse_intervals(text: str | None) -> set[int]:
    out: set[int] = set()
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        with contextlib.suppress(ValueError):
            out.update(range(int(lo), int(hi or lo) + 1))
    return out


def condition(type_: str, reason: str, message: str, status: str = "True") -> Obj:
    now = iso()
    return {"type": type_, "status": status, "lastProbeTime": now, "lastTransitionTime": now,
            "reason": reason, "message": message}


def find_condition(conditions: list[Obj], type_: str) -> Obj | None:
    for cond in conditions:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return cond
    return None


def pod_index(pod: Obj) -> int | None:
    meta = pod.get("metadata") or {}
    value = (meta.get("annotations") or {}).get(INDEX_KEY) or (meta.get("labels") or {}).get(INDEX_KEY)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def controller_uid(pod: Obj) -> str | None:
    for ref in pod.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == "Job" and ref.get("apiVersion") == "batch/v1":
            return ref.get("uid")
    return None


def has_finalizer(pod: Obj) -> bool:
    return FINALIZER in (pod["metadata"].get("finalizers") or ())


def settled_stub(pod: Obj, phase: str | None) -> Obj:
    """What the Job cache keeps of a counted, terminal pod (see JobState.classify)."""
    meta = pod["metadata"]
    stub_meta = {"name": meta["name"], "namespace": meta.get("namespace"), "uid": meta["uid"],
                 "resourceVersion": meta["resourceVersion"]}
    if meta.get("deletionTimestamp"):
        stub_meta["deletionTimestamp"] = meta["deletionTimestamp"]
    return {"metadata": stub_meta, "status": {"phase": phase}}


def is_ready(pod: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _exit_code_rule_match(rule: Obj, pod: Obj) -> tuple[Obj, int] | None:
    req = rule.get("onExitCodes") or {}
    values = set(req.get("values") or [])
    status = pod.get("status") or {}
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        term = (cs.get("state") or {}).get("terminated")
        if not term:
            continue
        if req.get("containerName") and req["containerName"] != cs.get("name"):
            continue
        code = int(term.get("exitCode", 0))
        if code == 0:
            continue  # exit code 0 never matches, for In and NotIn alike
        if (code in values) == (req.get("operator", "In") == "In"):
            return cs, code
    return None


def match_pod_failure_policy(policy: Obj, pod: Obj) -> tuple[str | None, str | None]:
    """(action, message) of the first matching rule, as matchPodFailurePolicy does; (None, None) if none."""
    meta = pod["metadata"]
    for i, rule in enumerate(policy.get("rules") or []):
        action = rule.get("action")
        if rule.get("onExitCodes"):
            hit = _exit_code_rule_match(rule, pod)
            if hit:
                cs, code = hit
                return action, (f"Container {cs.get('name')} for pod {meta.get('namespace')}/{meta['name']} "
                                f"failed with exit code {code} matching {action} rule at index {i}")
        for pattern in rule.get("onPodConditions") or []:
            want = pattern.get("status", "True")
            for cond in (pod.get("status") or {}).get("conditions") or []:
                if cond.get("type") == pattern.get("type") and cond.get("status") == want:
                    return action, (f"Pod {meta.get('namespace')}/{meta['name']} has condition "
                                    f"{cond['type']} matching {action} rule at index {i}")
    return None, None


def match_success_policy(policy: Obj | None, succeeded: set[int]) -> str | None:
    for i, rule in enumerate((policy or {}).get("rules") or []):
        wanted = parse_intervals(rule.get("succeededIndexes")) if rule.get("succeededIndexes") else None
        done = len(succeeded & wanted) if wanted is not None else len(succeeded)
        count = rule.get("succeededCount")
        if wanted is not None and count is None and wanted <= succeeded:
            return f"Matched rules at index {i}"
        if count is not None and done >= count:
            return f"Matched rules at index {i}"
    return None


# ------------------------------------------------------------------ per-Job state

@dataclass(eq=False)
class JobState:
    """Everything the controller knows about one Job: its latest object, its pods, its counts."""

    uid: str
    job: Obj
    pods: dict[str, Obj] = field(default_factory=dict)
    active: set[str] = field(default_factory=set)  # running/pending, not being deleted
    terminating: set[str] = field(default_factory=set)  # deletionTimestamp, not terminal yet
    ready: set[str] = field(default_factory=set)
    tracked: set[str] = field(default_factory=set)  # still carry the finalizer: not counted yet
    live_by_index: dict[int, set[str]] = field(default_factory=dict)  # active + terminating per index
    excused: set[str] = field(default_factory=set)  # deleted by us (suspend, scale down): not failures
    succeeded: int = 0
    failed: int = 0
    succeeded_idx: set[int] = field(default_factory=set)
    failed_idx: set[int] = field(default_factory=set)
    index_failures: dict[int, int] = field(default_factory=dict)
    index_ignored: dict[int, int] = field(default_factory=dict)
    todo: list[int] = field(default_factory=list)  # heap of indexes that may need a pod
    todo_for: int | None = None  # completions the heap was built for
    conditions: list[Obj] = field(default_factory=list)
    start_time: str | None = None
    completion_time: str | None = None
    fail_job: str | None = None  # podFailurePolicy FailJob message
    failures_since_success: int = 0
    last_failure: float = 0.0
    ttl_done: bool = False
    event_counts: dict[str, int] = field(default_factory=dict)
    completed_str: str | None = None  # cached completedIndexes string

    # ---- spec accessors (defensive: admission may be absent)

    @property
    def spec(self) -> Obj:
        return self.job.get("spec") or {}

    @property
    def name(self) -> str:
        return self.job["metadata"]["name"]

    @property
    def namespace(self) -> str:
        return self.job["metadata"].get("namespace") or "default"

    @property
    def indexed(self) -> bool:
        return self.spec.get("completionMode") == "Indexed"

    @property
    def completions(self) -> int | None:
        value = self.spec.get("completions")
        if value is None and self.spec.get("parallelism") is None:
            return 1
        return value

    @property
    def parallelism(self) -> int:
        value = self.spec.get("parallelism")
        return 1 if value is None else int(value)

    @property
    def per_index_limit(self) -> int | None:
        return self.spec.get("backoffLimitPerIndex") if self.indexed else None

    @property
    def backoff_limit(self) -> int:
        value = self.spec.get("backoffLimit")
        if value is None:
            return 2**31 - 1 if self.per_index_limit is not None else 6
        return int(value)

    @property
    def only_replace_failed(self) -> bool:
        policy = self.spec.get("podReplacementPolicy")
        return policy == "Failed" or bool(self.spec.get("podFailurePolicy"))

    @property
    def suspended(self) -> bool:
        return bool(self.spec.get("suspend"))

    @property
    def finished(self) -> bool:
        return bool(find_condition(self.conditions, "Complete") or find_condition(self.conditions, "Failed"))

    @property
    def interim(self) -> Obj | None:
        return find_condition(self.conditions, "FailureTarget") or find_condition(
            self.conditions, "SuccessCriteriaMet")

    # ---- bookkeeping

    def load_status(self) -> None:
        status = self.job.get("status") or {}
        self.succeeded = int(status.get("succeeded") or 0)
        self.failed = int(status.get("failed") or 0)
        self.succeeded_idx = parse_intervals(status.get("completedIndexes"))
        self.failed_idx = parse_intervals(status.get("failedIndexes"))
        self.conditions = [dict(c) for c in status.get("conditions") or []]
        self.start_time = status.get("startTime")
        self.completion_time = status.get("completionTime")

    def rebuild_todo(self) -> None:
        completions = self.completions or 0
        self.todo = [i for i in range(completions) if i not in self.succeeded_idx and i not in self.failed_idx]
        self.todo_for = completions

    def forget(self, uid: str) -> None:
        pod = self.pods.get(uid)
        for group in (self.active, self.terminating, self.ready, self.tracked):
            group.discard(uid)
        if pod is not None:
            idx = pod_index(pod)
            if idx is not None and idx in self.live_by_index:
                self.live_by_index[idx].discard(uid)
                if not self.live_by_index[idx]:
                    del self.live_by_index[idx]

    def classify(self, pod: Obj) -> None:
        """(Re)file one pod into the sets; O(1).

        A terminal pod that is already counted (no finalizer) is in none of the sets and nothing reads it
        again but its resourceVersion (to tell stale events), so only a stub of it is kept: a Job's
        finished pods would otherwise hold ~15 KB each in this cache (100,000 pods: 1.5 GB)."""
        uid = pod["metadata"]["uid"]
        first = uid not in self.pods
        self.forget(uid)
        phase = (pod.get("status") or {}).get("phase")
        terminal = phase in ("Succeeded", "Failed")
        tracked = has_finalizer(pod)
        self.pods[uid] = pod if tracked or not terminal else settled_stub(pod, phase)
        idx = pod_index(pod)
        if tracked:
            self.tracked.add(uid)
        if not terminal:
            if pod["metadata"].get("deletionTimestamp"):
                self.terminating.add(uid)
            else:
                self.active.add(uid)
                if is_ready(pod):
                    self.ready.add(uid)
            if idx is not None:
                self.live_by_index.setdefault(idx, set()).add(uid)
        if first and idx is not None and self.per_index_limit is not None:
            self._recover_index_failures(pod, idx, phase)

    def _recover_index_failures(self, pod: Obj, idx: int, phase: str | None) -> None:
        """After a restart, an index's failure count is the newest pod's annotation (+1 if it failed)."""
        annotations = pod["metadata"].get("annotations") or {}
        try:
            seen = int(annotations.get(FAILURE_COUNT_KEY, 0))
        except ValueError:
            seen = 0
        if phase == "Failed" and not has_finalizer(pod):
            seen += 1
        if seen > self.index_failures.get(idx, 0):
            self.index_failures[idx] = seen

    def busy(self, idx: int) -> bool:
        live = self.live_by_index.get(idx, ())
        return any(uid in self.active for uid in live) or (self.only_replace_failed and bool(live))


# ------------------------------------------------------------------ the controller

class JobController(InformerController):
    def __init__(self, cluster: KubeCluster) -> None:
        self.cluster = cluster
        self.store = cluster.store
        self.jobs: dict[str, JobState] = {}
        self.waiting_pods: dict[str, dict[str, Obj]] = {}  # owner uid (job not seen yet) -> pods
        self.orphans: dict[str, Obj] = {}  # pods with our finalizer and no live controller Job
        self.dirty: set[str] = set()
        self.timers: list[tuple[float, str]] = []
        self.armed: set[tuple[float, str]] = set()  # timers already in the heap (no duplicates)
        self.pod_owner: dict[str, str] = {}  # pod uid -> uid of the Job whose state holds it
        self.informer: Informer | None = None
        self.syncs = 0  # job syncs done (tests and benchmarks read it)
        self.status_writes = 0

    # ---------------------------------------------------------------- loop

    async def run(self) -> None:
        self.jobs.clear()
        self.waiting_pods.clear()
        self.orphans.clear()
        self.dirty.clear()
        self.timers.clear()
        self.armed.clear()
        self.pod_owner.clear()
        self.informer = Informer(self.store, ("jobs", "pods"), self._on_event)
        self.informer.start()
        last = 0.0
        try:
            while True:
                await self.informer.wait(self._timeout())
                pause = TICK_S - (time.monotonic() - last)
                if pause > 0:
                    await asyncio.sleep(pause)  # batch events into one sync per tick
                last = time.monotonic()
                self.tick()
        finally:
            self.informer.close()

    def _timeout(self) -> float:
        if self.dirty or self.orphans:
            return 0.0
        if self.timers:
            return max(0.0, min(RESYNC_S, self.timers[0][0] - time.time()))
        return RESYNC_S

    def tick(self) -> None:
        """One synchronous pass: due timers, orphan finalizers, then every dirty Job once."""
        now = time.time()
        while self.timers and self.timers[0][0] <= now:
            entry = heapq.heappop(self.timers)
            self.armed.discard(entry)
            self.dirty.add(entry[1])
        for uid, pod in list(self.orphans.items()):
            self.orphans.pop(uid, None)
            self._release(pod)
        dirty, self.dirty = self.dirty, set()
        for uid in dirty:
            state = self.jobs.get(uid)
            if state is None:
                continue
            try:
                self.sync(state)
            except errors.ApiError as exc:
                log.warning("job %s/%s: %s; retrying", state.namespace, state.name, exc.message)
                self._at(time.time() + 0.2, uid)

    def _at(self, when: float, uid: str) -> None:
        entry = (when, uid)
        if entry not in self.armed:
            self.armed.add(entry)
            heapq.heappush(self.timers, entry)

    # ---------------------------------------------------------------- cache maintenance

    def _on_event(self, event: WatchEvent) -> None:
        if event.plural == "jobs":
            self._on_job(event.type, event.obj)
        else:
            self._on_pod(event.type, event.obj)

    def _on_job(self, etype: str, job: Obj) -> None:
        uid = job["metadata"]["uid"]
        state = self.jobs.get(uid)
        if etype == "DELETED":
            if state is not None:
                del self.jobs[uid]
                for pod_uid in list(state.tracked):
                    self.orphans[pod_uid] = state.pods[pod_uid]
                for pod_uid in state.pods:
                    self.pod_owner.pop(pod_uid, None)
            return
        if state is None:
            state = JobState(uid, job)
            state.load_status()
            if state.indexed:
                state.rebuild_todo()
            self.jobs[uid] = state
            for pod in self.waiting_pods.pop(uid, {}).values():
                state.classify(pod)
                self.pod_owner[pod["metadata"]["uid"]] = uid
        elif newer(state.job, job):
            state.job = job
            if state.indexed and state.completions != state.todo_for:
                state.rebuild_todo()
        self.dirty.add(uid)

    def _on_pod(self, etype: str, pod: Obj) -> None:
        uid = pod["metadata"]["uid"]
        owner = controller_uid(pod)
        previous = self.pod_owner.get(uid)
        if previous is not None and (previous != owner or etype == "DELETED"):
            self._drop_pod(uid, previous)  # orphaned, re-owned or gone
        state = self.jobs.get(owner) if owner else None
        if state is None:
            self._on_foreign_pod(etype, pod, owner)
            return
        if etype != "DELETED" and newer(state.pods.get(uid), pod):
            state.classify(pod)
            self.pod_owner[uid] = state.uid
        self.dirty.add(state.uid)

    def _drop_pod(self, uid: str, job_uid: str) -> None:
        self.pod_owner.pop(uid, None)
        state = self.jobs.get(job_uid)
        if state is not None:
            state.forget(uid)
            state.pods.pop(uid, None)
            state.excused.discard(uid)
            self.dirty.add(job_uid)

    def _on_foreign_pod(self, etype: str, pod: Obj, owner: str | None) -> None:
        """A pod whose controller Job we do not know (yet): wait for the Job, or drop our finalizer."""
        uid = pod["metadata"]["uid"]
        if etype == "DELETED":
            self.orphans.pop(uid, None)
            if owner in self.waiting_pods:
                self.waiting_pods[owner].pop(uid, None)
            return
        if owner and self.store.exists_uid(owner):
            self.waiting_pods.setdefault(owner, {})[uid] = pod
        elif has_finalizer(pod):
            self.orphans[uid] = pod

    def _apply_own(self, state: JobState, pod: Obj) -> None:
        """Put the result of our own pod write into the cache (or drop the pod if it is gone)."""
        meta = pod["metadata"]
        current = self.store.peek("pods", meta.get("namespace"), meta["name"])
        uid = meta["uid"]
        if current is None or current["metadata"]["uid"] != uid:
            state.forget(uid)
            state.pods.pop(uid, None)
            self.pod_owner.pop(uid, None)
        elif newer(state.pods.get(uid), current):
            state.classify(current)
            self.pod_owner[uid] = state.uid

    # ---------------------------------------------------------------- sync

    def sync(self, state: JobState) -> None:
        """One pass of syncJob for one Job."""
        self.syncs += 1
        job = state.job
        if job["metadata"].get("deletionTimestamp"):
            self._release_all(state)
            return
        if state.finished:
            self._release_all(state)
            self._write_status(state)
            self._ttl(state)
            return
        to_release = self._count(state, ending=state.interim is not None)
        if state.start_time is None and not state.suspended:
            state.start_time = iso()
        if state.interim is None:
            decided = self._decide_failure(state)
            if decided is None and state.indexed and state.spec.get("successPolicy"):
                msg = match_success_policy(state.spec.get("successPolicy"), state.succeeded_idx)
                if msg:
                    decided = condition("SuccessCriteriaMet", "SuccessPolicy", msg)
            if decided is None:
                self._manage(state)
                decided = self._decide_success(state)
                if decided is None:
                    self._suspend_condition(state)
            if decided is not None:
                state.conditions.append(decided)
                self._delete_pods(state, list(state.active), excused=False)
        if state.interim is not None:
            to_release += self._count(state, ending=True)
            self._finish_if_drained(state)
        self._write_status(state)
        for pod in to_release:
            self._release(pod, state)
        if state.finished:
            self._ttl(state)
        self._schedule_deadline(state)

    # ---- counting

    def _count(self, state: JobState, *, ending: bool) -> list[Obj]:
        """Count tracked pods that are done (or all of them when the Job is ending); return them."""
        done: list[Obj] = []
        for uid in list(state.tracked):
            pod = state.pods[uid]
            phase = (pod.get("status") or {}).get("phase")
            deleting = bool(pod["metadata"].get("deletionTimestamp"))
            if phase == "Succeeded":
                self._count_success(state, pod)
            elif uid in state.excused and (deleting or phase == "Failed"):
                pass  # deleted by us for suspend / scale-down: not a failure
            elif phase == "Failed" or ending or (deleting and self._gone_enough(state, pod)):
                self._count_failure(state, pod)
            else:
                continue
            state.tracked.discard(uid)
            done.append(pod)
        return done

    @staticmethod
    def _gone_enough(state: JobState, pod: Obj) -> bool:
        """A pod being deleted counts as failed now (TerminatingOrFailed), or once nothing runs it any
        more (podReplacementPolicy Failed): never scheduled, or its kubelet already finished (grace 0)."""
        if not state.only_replace_failed:
            return True
        return not (pod.get("spec") or {}).get("nodeName") or pod["metadata"].get(
            "deletionGracePeriodSeconds") == 0

    def _count_success(self, state: JobState, pod: Obj) -> None:
        state.failures_since_success = 0
        if not state.indexed:
            state.succeeded += 1
            return
        idx = pod_index(pod)
        if idx is None or idx >= (state.completions or 0) or idx in state.succeeded_idx:
            return
        state.succeeded_idx.add(idx)
        state.succeeded = len(state.succeeded_idx)
        state.completed_str = None

    def _count_failure(self, state: JobState, pod: Obj) -> None:
        policy = state.spec.get("podFailurePolicy")
        action = None
        if policy and (pod.get("status") or {}).get("phase") == "Failed":
            action, message = match_pod_failure_policy(policy, pod)
            if action == "FailJob" and state.fail_job is None:
                state.fail_job = message
                self._event(state, "PodFailurePolicy", message or "", "Warning")
        idx = pod_index(pod) if state.indexed else None
        if action == "Ignore":
            if idx is not None:
                state.index_ignored[idx] = state.index_ignored.get(idx, 0) + 1
                heapq.heappush(state.todo, idx)
            return
        state.failed += 1
        state.failures_since_success += 1
        state.last_failure = time.time()
        if idx is None or idx >= (state.completions or 0):
            return
        if state.per_index_limit is not None:
            state.index_failures[idx] = state.index_failures.get(idx, 0) + 1
            if action == "FailIndex" or state.index_failures[idx] > state.per_index_limit:
                state.failed_idx.add(idx)
                return
        heapq.heappush(state.todo, idx)

    # ---- decisions

    def _decide_failure(self, state: JobState) -> Obj | None:
        if state.fail_job:
            return condition("FailureTarget", "PodFailurePolicy", state.fail_job)
        if state.failed > state.backoff_limit or self._past_backoff_on_failure(state):
            return condition("FailureTarget", "BackoffLimitExceeded", MSG_BACKOFF)
        if self._past_deadline(state):
            return condition("FailureTarget", "DeadlineExceeded", MSG_DEADLINE)
        if state.per_index_limit is not None:
            max_failed = state.spec.get("maxFailedIndexes")
            if max_failed is not None and len(state.failed_idx) > max_failed:
                return condition("FailureTarget", "MaxFailedIndexesExceeded", MSG_MAX_FAILED_INDEXES)
            if state.failed_idx and len(state.failed_idx) + len(state.succeeded_idx) >= (state.completions or 0):
                return condition("FailureTarget", "FailedIndexes", MSG_FAILED_INDEXES)
        return None

    def _past_backoff_on_failure(self, state: JobState) -> bool:
        template_spec = (state.spec.get("template") or {}).get("spec") or {}
        if template_spec.get("restartPolicy") != "OnFailure":
            return False
        restarts = 0
        for uid in state.active:
            status = state.pods[uid].get("status") or {}
            for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
                restarts += int(cs.get("restartCount") or 0)
        limit = state.backoff_limit
        return restarts > 0 if limit == 0 else restarts >= limit

    def _past_deadline(self, state: JobState) -> bool:
        deadline = state.spec.get("activeDeadlineSeconds")
        start = parse_time(state.start_time)
        if deadline is None or start is None or state.suspended:
            return False
        return time.time() >= start + deadline

    def _decide_success(self, state: JobState) -> Obj | None:
        completions = state.completions
        if completions is None:
            done = state.succeeded > 0 and not state.active
        else:
            done = state.succeeded >= completions and not state.active
        return condition("SuccessCriteriaMet", "CompletionsReached", MSG_COMPLETIONS) if done else None

    def _finish_if_drained(self, state: JobState) -> None:
        """Interim condition -> terminal one, once no pod of the Job is still running or terminating."""
        interim = state.interim
        if interim is None or state.active or state.terminating:
            return
        if interim["type"] == "SuccessCriteriaMet":
            state.conditions.append(condition("Complete", interim["reason"], interim["message"]))
            state.completion_time = iso()
            self._event(state, "Completed", "Job completed")
        else:
            state.conditions.append(condition("Failed", interim["reason"], interim["message"]))
            self._event(state, interim["reason"], interim["message"], "Warning")

    def _suspend_condition(self, state: JobState) -> None:
        current = next((c for c in state.conditions if c.get("type") == "Suspended"), None)
        if state.suspended:
            if current is None or current.get("status") != "True":
                if current is not None:
                    state.conditions.remove(current)
                state.conditions.append(condition("Suspended", "JobSuspended", "Job suspended"))
                self._event(state, "Suspended", "Job suspended")
        elif current is not None and current.get("status") == "True":
            state.conditions[state.conditions.index(current)] = condition(
                "Suspended", "JobResumed", "Job resumed", status="False")
            state.start_time = iso()  # the deadline counts from the resume
            self._event(state, "Resumed", "Job resumed")

    # ---- pod management (manageJob)

    def _manage(self, state: JobState) -> None:
        if state.suspended:
            self._delete_pods(state, list(state.active), excused=True)
            return
        if state.indexed:
            self._manage_indexed(state)
        else:
            self._manage_non_indexed(state)

    def _backing_off(self, state: JobState) -> bool:
        base = float(getattr(self.cluster.node, "failure_backoff_s", 0.0) or 0.0)
        if base <= 0 or state.failures_since_success == 0:
            return False
        delay = min(MAX_BACKOFF_S, base * 2 ** (state.failures_since_success - 1))
        due = state.last_failure + delay
        if time.time() < due:
            self._at(due, state.uid)
            return True
        return False

    def _occupied(self, state: JobState) -> int:
        return len(state.active) + (len(state.terminating) if state.only_replace_failed else 0)

    def _manage_non_indexed(self, state: JobState) -> None:
        completions = state.completions
        if completions is None:
            want = len(state.active) if state.succeeded > 0 else state.parallelism
        else:
            want = max(0, min(state.parallelism, completions - state.succeeded))
        excess = len(state.active) - want
        if excess > 0:
            newest = sorted(state.active, key=lambda u: state.pods[u]["metadata"].get("creationTimestamp", ""))
            self._delete_pods(state, newest[-excess:], excused=True)
            return
        missing = min(want - self._occupied(state), MAX_BATCH)
        if missing > 0 and not self._backing_off(state):
            for _ in range(missing):
                if not self._create_pod(state, None):
                    break

    def _manage_indexed(self, state: JobState) -> None:
        room = min(state.parallelism - self._occupied(state), MAX_BATCH)
        excess = len(state.active) - state.parallelism
        if excess > 0:
            highest = sorted(state.active, key=lambda u: pod_index(state.pods[u]) or 0)
            self._delete_pods(state, highest[-excess:], excused=True)
            return
        if room <= 0 or not state.todo or self._backing_off(state):
            return
        picked: list[int] = []
        skipped: list[int] = []
        seen: set[int] = set()
        while state.todo and len(picked) < room:
            idx = heapq.heappop(state.todo)
            if idx in seen or idx in state.succeeded_idx or idx in state.failed_idx:
                continue
            seen.add(idx)
            if state.busy(idx):
                skipped.append(idx)  # keep it: the pod running it may still fail
                continue
            picked.append(idx)
        for idx in skipped:
            heapq.heappush(state.todo, idx)
        for n, idx in enumerate(picked):
            if not self._create_pod(state, idx):
                for rest in picked[n:]:
                    heapq.heappush(state.todo, rest)
                break

    def _pod_for(self, state: JobState, index: int | None) -> Obj:
        """The pod the real controller would create from the template (getPodFromTemplate)."""
        job = state.job
        template = clone(state.spec.get("template") or {})
        tmeta = template.get("metadata") or {}
        labels = dict(tmeta.get("labels") or {})
        for key in ("batch.kubernetes.io/controller-uid", "controller-uid"):
            labels.setdefault(key, state.uid)
        for key in ("batch.kubernetes.io/job-name", "job-name"):
            labels.setdefault(key, state.name)
        annotations = dict(tmeta.get("annotations") or {})
        spec = template.get("spec") or {}
        generate = f"{state.name}-"
        if index is not None:
            annotations[INDEX_KEY] = labels[INDEX_KEY] = str(index)
            if state.per_index_limit is not None:
                annotations[FAILURE_COUNT_KEY] = str(state.index_failures.get(index, 0))
                if state.index_ignored.get(index):
                    annotations[IGNORED_COUNT_KEY] = str(state.index_ignored[index])
            spec["hostname"] = f"{state.name}-{index}"
            generate = f"{state.name}-{index}-"
            for kind in ("initContainers", "containers"):
                for container in spec.get(kind) or []:
                    env = container.setdefault("env", [])
                    if not any(e.get("name") == "JOB_COMPLETION_INDEX" for e in env):
                        env.append({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
                            "apiVersion": "v1", "fieldPath": f"metadata.labels['{INDEX_KEY}']"}}})
        if len(generate) > 58:
            generate = generate[:58]
        meta: Obj = {
            "generateName": generate,
            "namespace": state.namespace,
            "labels": labels,
            "finalizers": [*(tmeta.get("finalizers") or []), FINALIZER],
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"],
                                 "uid": state.uid, "controller": True, "blockOwnerDeletion": True}],
        }
        if annotations:
            meta["annotations"] = annotations
        return {"metadata": meta, "spec": spec}

    def _create_pod(self, state: JobState, index: int | None) -> bool:
        try:
            pod = self.store.create("pods", self._pod_for(state, index), namespace=state.namespace)
        except errors.ApiError as exc:
            self._event(state, "FailedCreate", f"Error creating: {exc.message}", "Warning")
            self._at(time.time() + 1.0, state.uid)
            if index is not None:
                heapq.heappush(state.todo, index)
            return False
        self._apply_own(state, pod)
        self._event(state, "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}")
        return True

    def _delete_pods(self, state: JobState, uids: list[str], *, excused: bool) -> None:
        for uid in uids:
            pod = state.pods.get(uid)
            if pod is None or pod["metadata"].get("deletionTimestamp"):
                continue
            if excused:
                state.excused.add(uid)
            meta = pod["metadata"]
            try:
                result, _ = self.store.delete("pods", meta.get("namespace"), meta["name"], precondition_uid=uid)
            except errors.ApiError:
                continue
            self._apply_own(state, result)
            self._event(state, "SuccessfulDelete", f"Deleted pod: {meta['name']}")
            if excused and state.indexed:
                idx = pod_index(pod)
                if idx is not None:
                    heapq.heappush(state.todo, idx)

    # ---- finalizers, status, events, timers

    def _release(self, pod: Obj, state: JobState | None = None) -> None:
        """Remove our finalizer from a pod (after it has been counted)."""
        meta = pod["metadata"]

        def drop(obj: Obj) -> None:
            if obj["metadata"]["uid"] != meta["uid"]:
                raise errors.not_found("", "pods", meta["name"])
            obj["metadata"]["finalizers"] = [f for f in obj["metadata"].get("finalizers") or []
                                             if f != FINALIZER]

        try:
            result = self.store.mutate("pods", meta.get("namespace"), meta["name"], drop)
        except errors.ApiError:
            return
        if state is not None:
            self._apply_own(state, result)

    def _release_all(self, state: JobState) -> None:
        for uid in list(state.tracked):
            state.tracked.discard(uid)
            self._release(state.pods[uid], state)

    def build_status(self, state: JobState) -> Obj:
        status: Obj = {}
        if state.conditions:
            status["conditions"] = state.conditions
        if state.start_time:
            status["startTime"] = state.start_time
        if state.completion_time:
            status["completionTime"] = state.completion_time
        if state.active:
            status["active"] = len(state.active)
        if state.succeeded:
            status["succeeded"] = state.succeeded
        if state.failed:
            status["failed"] = state.failed
        status["terminating"] = len(state.terminating)
        if state.indexed and state.succeeded_idx:
            if state.completed_str is None:
                state.completed_str = format_intervals(state.succeeded_idx)
            status["completedIndexes"] = state.completed_str
        if state.per_index_limit is not None:
            status["failedIndexes"] = format_intervals(state.failed_idx)
        status["uncountedTerminatedPods"] = {}
        status["ready"] = len(state.ready)
        return status

    def _write_status(self, state: JobState) -> None:
        status = self.build_status(state)
        if status == state.job.get("status"):
            return
        job = dict(state.job)
        job["status"] = status
        try:
            state.job = self.store.update("jobs", job, subresource="status",
                                          namespace=state.namespace, name=state.name)
        except errors.ApiError:
            return
        self.status_writes += 1

    def _event(self, state: JobState, reason: str, message: str, type_: str = "Normal") -> None:
        if reason in ("SuccessfulCreate", "SuccessfulDelete"):
            seen = state.event_counts.get(reason, 0)
            state.event_counts[reason] = seen + 1
            if seen >= EVENTS_PER_REASON:
                return
        self.cluster.record_event(state.job, reason, message, type_=type_, component="job-controller")

    def _schedule_deadline(self, state: JobState) -> None:
        deadline = state.spec.get("activeDeadlineSeconds")
        start = parse_time(state.start_time)
        if deadline is not None and start is not None and not state.finished and not state.suspended:
            self._at(start + deadline, state.uid)

    def _ttl(self, state: JobState) -> None:
        """ttlSecondsAfterFinished: delete the Job (Foreground, as the TTL controller does) once due."""
        ttl = state.spec.get("ttlSecondsAfterFinished")
        if ttl is None or state.ttl_done:
            return
        end = find_condition(state.conditions, "Complete") or find_condition(state.conditions, "Failed")
        finished_at = parse_time((end or {}).get("lastTransitionTime")) or time.time()
        due = finished_at + float(ttl)
        if time.time() < due:
            self._at(due, state.uid)
            return
        state.ttl_done = True
        with contextlib.suppress(errors.ApiError):
            self.store.delete("jobs", state.namespace, state.name, propagation_policy="Foreground",
                              precondition_uid=state.uid)


def job_summary(job: Obj) -> dict[str, Any]:
    """A compact view of a Job's status (for logs and tests)."""
    status = job.get("status") or {}
    return {k: status.get(k) for k in ("active", "succeeded", "failed", "terminating", "ready",
                                       "completedIndexes", "failedIndexes")} | {
        "conditions": [c["type"] for c in status.get("conditions") or []]}
