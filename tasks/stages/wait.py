"""Stage wait_for_job: watch the Job and its pods, stream every pod's log live, fail fast with a reason.

Why watches and threads: polling misses short-lived states and costs an API call per pod per tick, and the
prefect-kubernetes wait loop reads logs one pod after another (``run_namespaced_job`` in
https://github.com/PrefectHQ/prefect/blob/main/src/integrations/prefect-kubernetes/prefect_kubernetes/flows.py). Here:

- one watch on the Job (field selector on its name) and one on its pods (our run label, filtered on the Job's
  uid in ownerReferences) feed a single queue; each watch lists first, then watches from that resourceVersion,
  resumes from the last seen version when the stream drops, and relists on 410 Gone
  (https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes);
- every pod's log is read by ``tasks.cloud.pod_logs.PodLogs`` as soon as its container starts (at most
  ``max_log_streams`` live follows; the others are read once when their container ends): every byte is kept once
  in a per-pod file and lines go to ``emit`` prefixed with ``[idx=N pod=NAME]``, so the whole log outlives pod
  deletion and TTL (pain 4); once the Job is finished, a stream still open after ``log_grace_seconds`` (a real
  kubelet can take ~5 s to end it) is cut and the rest of that log is read once without follow;
- the main loop wakes on events *and* on a short timer, because a grace period can run out while nothing changes,
  and asks ``tasks.render.diagnose`` about each pod: the first fatal diagnosis ends the wait, naming index, pod, reason,
  exit code and the last log lines;
- an index reclaimed ``job.eci.max_reclaims`` times is stopped on spot and, once the Job is finished, runs its last
  try on demand in a follow-up Job (``run_follow_ups``; docs/failures.md says why this way).
"""

import contextlib
import json
import logging
import queue
import sys
import threading
import time
from array import array
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.cloud.context import RETRY_DELAYS, stage_context, stage_logs, transient_only
from tasks.cloud.jobs import launch_job, stop_for_on_demand
from tasks.cloud.list_pages import list_pages
from tasks.cloud.pod_logs import PodLogs
from tasks.cloud.retry import CloudError
from tasks.errors import JobFailed
from tasks.handles import (
    Attempt,
    ClusterHandle,
    ConfigHandle,
    IndexRecord,
    JobHandle,
    JobReport,
    VolumeHandle,
    split_records,
)
from tasks.naming import INDEX_LABEL, RUN_LABEL
from tasks.render.compute import ON_DEMAND_CONDITION, moves_reclaims_on_demand
from tasks.render.diagnose import (
    AttemptEnd,
    Diagnosis,
    attempt_end,
    diagnose_pod,
    due_on_demand,
    is_spot,
    job_finished,
    parse_indexes,
    parse_time,
    pod_index,
)
from tasks.render.manifests import CONTAINER_NAME, render_job
from tasks.spec import BatchSpec

log = logging.getLogger("ask_batch.wait")

MAX_EVENTS_PER_BATCH = 500  # watch events applied before the checks run once (bounded so progress still shows)
#: Watch events parsed but not yet applied, at most. A full queue holds the watch threads back (back-pressure on
#: the streams) rather than growing: a relist of a 100,000-pod Job would otherwise queue every pod at once
#: (~17 KB each as parsed JSON; each is queued in the watch's compact form, ``watched_pod``, instead). An API
#: server ends a watch whose reader stays behind; the watch then resumes from the last version read, or relists
#: (in pages) if that is too old.
EVENT_QUEUE_SIZE = 1000
#: Once the Job is finished, how long its pods' last watch events may take to arrive before the pods are listed
#: instead (at 10,000 pods that list is 20 pages of JSON to read and parse).
FINAL_CATCH_UP_SECONDS = 1.0

Emit = Callable[[str], None]


@dataclass(frozen=True)
class WaitOptions:
    """How ``wait_for_job`` waits: fail-fast grace, overall timeout, log streaming and where logs are kept."""

    grace_seconds: float = 90.0
    timeout_seconds: float | None = None
    stream_logs: bool = True
    tail_lines: int = 20
    log_dir: Path | None = None
    tick_seconds: float = 2.0
    #: Once the Job is finished (or failing fast), how long a pod's log stream may stay open before it is cut
    #: and the rest of that log is read once without follow. A real kubelet can take ~5 s to end a stream.
    log_grace_seconds: float = 2.0
    #: How long that catch-up read (and the end of every log thread) may take in all.
    log_catch_up_seconds: float = 30.0
    watch_seconds: int = 240  # server-side watch timeout: reconnect regularly rather than trust idle streams
    scrub: Callable[[str], str] = str  # applied to every log line and error text (blanks known secret values)
    #: Live log follow streams at most; pods beyond are read once when their container ends.
    max_log_streams: int = 64
    #: An index reclaimed this many times is stopped on spot (``stop_for_on_demand``) and reported in
    #: ``JobReport.on_demand`` for its last try on demand; 0: off (the Job lacks ``ON_DEMAND_RULE``).
    max_reclaims: int = 0


# --------------------------------------------------------------------------------------------- watches


class _Watcher:
    """List, then watch from the list's resourceVersion; resume on drops, relist on 410; until ``close()``.

    We read the watch stream ourselves rather than through ``kubernetes.watch.Watch`` because a stream that waits
    for its next event cannot be interrupted from outside there: its thread would linger (and keep a connection
    open) for up to the server-side timeout after the wait is over. Here ``close()`` shuts the response down,
    which unblocks the read at once (urllib3 ``HTTPResponse.shutdown``).

    After each (re)list it puts ``(kind, "SYNCED", None)`` on the queue: the consumer must not judge the Job
    before it has seen the current pods (a re-attached, finished Job would otherwise look like it had none).
    """

    def __init__(self, list_fn: Callable[..., Any], kwargs: dict[str, Any], kind: str, out: queue.Queue,
                 timeout_s: int, shrink: Callable[[dict[str, Any]], dict[str, Any]] | None = None):
        self.list_fn, self.kwargs, self.kind, self.out, self.timeout_s = list_fn, kwargs, kind, out, timeout_s
        self.shrink = shrink  # applied to each object before it is queued (what the consumer reads, only)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._resp: Any = None
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"watch-{kind}")

    def start(self) -> None:
        self.thread.start()

    def close(self, *, wait: bool = True) -> None:
        """Stop: the thread puts nothing more on the queue after this. ``wait=False``: the open stream is shut
        down by a helper thread, so the caller does not wait for it (it ends within milliseconds)."""
        self._stop.set()
        with self._lock:
            resp = self._resp
        if resp is not None:
            if wait:
                with contextlib.suppress(Exception):
                    resp.shutdown()
            else:
                threading.Thread(target=self._shutdown, args=(resp,), daemon=True, name="watch-close").start()

    @staticmethod
    def _shutdown(resp: Any) -> None:
        with contextlib.suppress(Exception):
            resp.shutdown()

    def _run(self) -> None:
        from kubernetes.client.exceptions import ApiException

        rv: str | None = None
        failures = 0
        while not self._stop.is_set():
            try:
                if rv is None:
                    rv = self._list()
                    self._put((self.kind, "SYNCED", None))
                rv = self._stream(rv)
                failures = 0
            except ApiException as exc:
                if exc.status == 410:
                    rv = None
                    continue
                failures += 1
                if not self._stop.is_set():
                    log.warning("%s watch error (%s), resuming", self.kind, exc.status)
                self._stop.wait(min(10.0, 0.5 * 2**failures))
            except Exception as exc:  # noqa: BLE001 - a dropped connection must never end the wait
                failures += 1
                if not self._stop.is_set():
                    log.warning("%s watch dropped (%s), resuming from %s", self.kind, type(exc).__name__, rv)
                self._stop.wait(min(10.0, 0.5 * 2**failures))

    def _put(self, item: tuple[str, str, Any]) -> bool:
        """Queue one event, waiting while the queue is full; False: closed meanwhile (the event is dropped)."""
        while not self._stop.is_set():
            try:
                self.out.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def _list(self) -> str | None:
        """List in pages (``list_pages``: a re-attached wait of a 100,000-pod Job would otherwise read one
        response of hundreds of MB), every item as ADDED; returns the list's resourceVersion (that of the snapshot
        all pages come from)."""
        rv: str | None = None

        def restart() -> None:  # the snapshot expired between pages: watch from the new one's version
            nonlocal rv
            rv = None

        for page in list_pages(self.list_fn, on_restart=restart, **self.kwargs):
            rv = rv or (page.get("metadata") or {}).get("resourceVersion")
            for item in page.get("items") or []:
                if not self._put((self.kind, "ADDED", self.shrink(item) if self.shrink else item)):
                    return rv
        return rv

    def _stream(self, rv: str | None) -> str | None:
        """One watch request from ``rv``; returns the version to resume from (None: relist)."""
        from kubernetes.watch.watch import iter_resp_lines

        resp = self.list_fn(**self.kwargs, watch=True, resource_version=rv, timeout_seconds=self.timeout_s,
                            allow_watch_bookmarks=True, _preload_content=False)
        with self._lock:
            self._resp = resp
        if self._stop.is_set():  # closed while the request was being made
            resp.shutdown()
        try:
            for line in iter_resp_lines(resp):
                if self._stop.is_set():
                    break
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    if obj.get("code") == 410:
                        return None
                    continue
                rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                if event.get("type") == "BOOKMARK":
                    continue
                if not self._put((self.kind, event["type"], self.shrink(obj) if self.shrink else obj)):
                    break
        finally:
            with self._lock:
                self._resp = None
            resp.release_conn()
        return rv


# --------------------------------------------------------------------------------------------- logs


def _container(pod: dict[str, Any]) -> tuple[bool, bool, int]:
    """(started, terminated now, restartCount) of the workload container, for ``PodLogs.seen``."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") not in (None, CONTAINER_NAME):
            continue
        state = cs.get("state") or {}
        restarts = int(cs.get("restartCount") or 0)
        started = bool(state.get("running") or state.get("terminated") or restarts)
        return started, bool(state.get("terminated")), restarts
    return False, False, 0


# --------------------------------------------------------------------------------------------- records

_META_KEPT = ("name", "creationTimestamp", "deletionTimestamp", "labels", "annotations")
_STATUS_KEPT = ("phase", "reason", "message", "startTime", "conditions", "containerStatuses",
                "initContainerStatuses")
_CONTAINER_KEPT = ("name", "state", "lastState", "restartCount")


def compact_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """The part of a pod the wait keeps until the Job ends: what the ledger (``attempt_record``), the diagnosis
    (``tasks.render.diagnose``) and the billing read; spec, ownerReferences, managedFields and the container
    statuses' image and ID fields are dropped (a pod is ~5-10x smaller so, which is what keeps the flow's
    memory flat at 100,000 pods)."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    small: dict[str, Any] = {"metadata": {k: meta[k] for k in _META_KEPT if meta.get(k) is not None}}
    kept_status = {k: status[k] for k in _STATUS_KEPT if status.get(k) is not None}
    for key in ("containerStatuses", "initContainerStatuses"):
        if key in kept_status:
            kept_status[key] = [{k: cs[k] for k in _CONTAINER_KEPT if k in cs} for cs in kept_status[key]]
    if "conditions" in kept_status:
        kept_status["conditions"] = [{k: c[k] for k in ("type", "status", "reason", "message") if k in c}
                                     for c in kept_status["conditions"]]
    small["status"] = kept_status
    return small


def watched_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """What the pod watch queues for the wait: ``compact_pod`` plus the owners' UIDs and the restart policy, the
    two things ``wait_for_job`` reads on arrival and then drops. Parsed on the watch thread and queued whole, a
    pod is ~17 KB; a full queue of them (``EVENT_QUEUE_SIZE``) was tens of MB at 100,000 pods."""
    small = compact_pod(pod)
    owners = (pod.get("metadata") or {}).get("ownerReferences") or []
    small["metadata"]["ownerReferences"] = [{"uid": o.get("uid")} for o in owners]
    small["spec"] = {"restartPolicy": (pod.get("spec") or {}).get("restartPolicy")}
    return small



def _pod_seconds(pod: dict[str, Any], now: datetime) -> float:
    """Billed seconds of one pod: ECI bills from instance creation (image pull included) to the pod's end
    (https://www.alibabacloud.com/help/doc-detail/89142.htm), so from ``status.startTime`` (the virtual node took
    the pod and created the instance) — not from the container's start — to the container's finish."""
    status = pod.get("status") or {}
    created = parse_time(status.get("startTime"))
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if state.get("terminated"):
            t = state["terminated"]
            start, end = created or parse_time(t.get("startedAt")), parse_time(t.get("finishedAt"))
            return max(0.0, (end - start).total_seconds()) if start and end else 0.0
        if state.get("running"):
            start = created or parse_time(state["running"].get("startedAt"))
            return max(0.0, (now - start).total_seconds()) if start else 0.0
    if created is not None and status.get("phase") in ("Pending", "Running"):  # pulling the image: billed
        return max(0.0, (now - created).total_seconds())
    return 0.0


def _billed_seconds(pod: dict[str, Any], end: AttemptEnd | None, now: datetime) -> float:
    """The instance's lifetime: ECI bills from the instance's creation (the pod leaves Scheduling) to its end
    (https://www.alibabacloud.com/help/doc-detail/2833188.html). ``status.startTime`` is when the (virtual)
    kubelet took the pod; the end is the last container's finish, else now. No instance, nothing billed."""
    if end is not None and end.outcome in ("stock-out", "create-failed"):
        return 0.0
    status = pod.get("status") or {}
    start = parse_time(status.get("startTime"))
    if start is None:
        return 0.0
    finished = [parse_time(((cs.get("state") or {}).get("terminated") or {}).get("finishedAt"))
                for cs in status.get("containerStatuses") or []]
    ends = [f for f in finished if f is not None]
    stop = max(ends) if ends else (now if end is None else start)
    return max(0.0, (stop - start).total_seconds())


def attempt_record(pod: dict[str, Any], now: datetime) -> Attempt:
    """One pod as a ledger line."""
    status = pod.get("status") or {}
    end = attempt_end(pod)
    term: dict[str, Any] = {}
    for cs in status.get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated") or term
    started = term.get("startedAt")
    if not started:
        for cs in status.get("containerStatuses") or []:
            started = ((cs.get("state") or {}).get("running") or {}).get("startedAt") or started
    if end is not None:
        outcome, reason, message, code = end.outcome, end.reason, end.message or None, end.exit_code
    else:
        outcome = "running" if status.get("phase") == "Running" else "pending"
        reason, message, code = None, None, None
    return Attempt(pod=pod["metadata"]["name"], outcome=outcome, reason=reason, message=message, exit_code=code,
                   spot=is_spot(pod), started=started, finished=term.get("finishedAt"),
                   seconds=round(_pod_seconds(pod, now), 3), billed_seconds=round(_billed_seconds(pod, end, now), 3))


_ATTEMPT_FIELDS = tuple(Attempt.model_fields)
# A ledger row: the pod's creationTimestamp, then the Attempt fields in this order (Ledger's columns rebuild rows so)
_ROW_FIELDS = ("created", "pod", "outcome", "reason", "message", "exit_code", "spot", "started", "finished",
               "seconds", "billed_seconds")
if _ROW_FIELDS[1:] != _ATTEMPT_FIELDS:
    raise ImportError(f"tasks.stages.wait: Ledger rows assume the Attempt fields {_ROW_FIELDS[1:]}, "
                      f"not {_ATTEMPT_FIELDS}")


class Ledger:
    """The per-index ledger the wait builds as pods end: an ended pod is folded into one small row of its index at
    once and its pod object dropped, so what the wait holds grows by a row per ended pod, not by a pod object
    (``compact_pod``) per pod seen. Pods still pending or running stay whole in the caller's hands until they end.

    Memory: an index whose only pod succeeded ("completed", no message: nearly every index of a big Job) is a slot
    in eight columns indexed by completion index, 64 bytes; any other index is a tuple of the ``Attempt`` fields
    and the pod's creation time per pod (~0.3 KB; an ``Attempt`` model would be ~1.2 KB) in a dict. Pod names are
    the caller's own strings; timestamps are shared with every other pod that has the same (one-second
    resolution: pods ending together share them).
    """

    def __init__(self, base: "Ledger | None" = None) -> None:
        #: index -> (creationTimestamp, Attempt field values...), or a tuple of such rows when the index had more
        #: than one pod (one row per pod, any order); an index is here or in the columns, never both
        self._by_index: dict[int, tuple[Any, ...]] = {}
        self._base = base
        self._strings: dict[str, str] = base._strings if base is not None else {}
        # Columns of the single-success indexes (slot = completion index; pod None: not in the columns). Only the
        # ledger of ended pods has them: an overlay (``with_pods``) holds a few live pods and must not allocate
        # a slot per index up to its highest one.
        self._columnar = base is None
        self._c_pod: list[str | None] = []
        self._c_created: list[Any] = []
        self._c_exit: list[Any] = []
        self._c_spot: list[Any] = []
        self._c_started: list[Any] = []
        self._c_finished: list[Any] = []
        self._c_seconds = array("d")
        self._c_billed = array("d")

    def _rows(self, index: int) -> tuple[tuple[Any, ...], ...]:
        rows = self._by_index.get(index)
        if rows is not None:
            # One row is stored as itself (~60 bytes less per index than a 1-tuple of it).
            return rows if isinstance(rows[0], tuple) else (rows,)
        if index < len(self._c_pod) and self._c_pod[index] is not None:
            return ((self._c_created[index], self._c_pod[index], "succeeded", "completed", None,
                     self._c_exit[index], self._c_spot[index], self._c_started[index], self._c_finished[index],
                     self._c_seconds[index], self._c_billed[index]),)
        return self._base._rows(index) if self._base is not None else ()

    def _store(self, index: int, rows: tuple[tuple[Any, ...], ...]) -> None:
        row = rows[0]
        if self._columnar and len(rows) == 1 and row[2:5] == ("succeeded", "completed", None):
            if index >= len(self._c_pod):
                grow = index + 1 - len(self._c_pod)
                for column in (self._c_pod, self._c_created, self._c_exit, self._c_spot, self._c_started,
                               self._c_finished):
                    column.extend([None] * grow)
                self._c_seconds.extend([0.0] * grow)
                self._c_billed.extend([0.0] * grow)
            (self._c_created[index], self._c_pod[index], _, _, _, self._c_exit[index], self._c_spot[index],
             self._c_started[index], self._c_finished[index], self._c_seconds[index], self._c_billed[index]) = row
            self._by_index.pop(index, None)
            return
        if index < len(self._c_pod):
            self._c_pod[index] = None
        self._by_index[index] = row if len(rows) == 1 else rows

    def _shared(self, text: str | None) -> str | None:
        return self._strings.setdefault(text, text) if text else text

    def fold(self, pod: dict[str, Any], now: datetime, *, replace: bool = True) -> None:
        """Record ``pod`` (compact or whole) as an attempt of its index; a pod already recorded is replaced, or
        kept when ``replace`` is False. A pod without an index label is ignored."""
        idx = pod_index(pod)
        if idx is None:
            return
        attempt = attempt_record(pod, now)
        meta = pod.get("metadata") or {}
        values = {f: getattr(attempt, f) for f in _ATTEMPT_FIELDS}
        values["pod"] = meta.get("name") or attempt.pod  # the caller's string, not a copy of it
        values["started"], values["finished"] = self._shared(attempt.started), self._shared(attempt.finished)
        row = (self._shared(meta.get("creationTimestamp") or ""), *(values[f] for f in _ATTEMPT_FIELDS))
        rows = self._rows(idx)
        for i, known in enumerate(rows):
            if known[1] == attempt.pod:
                if replace:
                    self._store(idx, (*rows[:i], row, *rows[i + 1:]))
                return
        self._store(idx, (*rows, row))

    def has(self, name: str, index: int | None) -> bool:
        """True when pod ``name`` of ``index`` is already recorded."""
        return index is not None and any(row[1] == name for row in self._rows(index))

    def attempts(self, index: int) -> list[Attempt]:
        """The attempts of ``index``, oldest pod first."""
        return [Attempt(**dict(zip(_ATTEMPT_FIELDS, row[1:], strict=True)))
                for row in sorted(self._rows(index), key=lambda r: r[0])]

    def with_pods(self, pods: Iterable[dict[str, Any]], now: datetime) -> "Ledger":
        """A ledger that reads this one with ``pods`` (those still pending or running) folded in as they are
        ``now``; this one is not changed, nor copied."""
        overlay = Ledger(base=self)
        for pod in pods:
            overlay.fold(pod, now)
        return overlay


def ledger_records(ledger: Ledger, completions: int, *, diagnoses: dict[str, Diagnosis] | None = None,
                   failed_indexes: set[int] | None = None, finished: bool = False,
                   indexes: list[int] | None = None) -> Iterator[IndexRecord]:
    """Per-index records from the ledger, ascending index, one at a time: every attempt, oldest first; the last
    one gives the status.

    An index is ``failed`` when the Job says so (``failed_indexes``: its per-index budget is spent), when a pod of
    it was diagnosed as stuck, or when its last pod failed and nothing replaced it by the time the Job finished;
    a failed index is never shown as pending or running. Once the Job is ``finished``, an index that did not
    succeed is ``failed`` (or ``not_started`` when no pod of it was ever seen).
    """
    failed = failed_indexes or set()
    for idx in (indexes if indexes is not None else range(completions)):
        attempts = ledger.attempts(idx)
        if not attempts:
            status = "failed" if idx in failed else "not_started" if finished else "pending"
            yield IndexRecord(index=idx, status=status)
            continue
        # The last attempt decides, except that a succeeded one always wins (a late-listed older pod).
        last = next((a for a in attempts if a.outcome == "succeeded"), attempts[-1])
        diag = next((d for name, d in (diagnoses or {}).items() if name in {a.pod for a in attempts}), None)
        if last.outcome == "succeeded":
            state = "succeeded"
        elif diag or idx in failed or finished or last.outcome not in ("running", "pending"):
            state = "failed"  # a failed last pod may still be replaced by the Job: the next record says so
        else:
            state = last.outcome
        yield IndexRecord(
            index=idx, status=state, attempts=attempts, pod=last.pod, exit_code=last.exit_code,
            reason=(diag.reason if diag else last.reason),
            started=last.started, finished=last.finished,
            seconds=round(sum(a.seconds for a in attempts), 3),
            billed_seconds=round(sum(a.billed_seconds for a in attempts), 3))


def build_records(pods: dict[str, dict[str, Any]], completions: int, *, now: datetime,
                  diagnoses: dict[str, Diagnosis] | None = None,
                  failed_indexes: set[int] | None = None, finished: bool = False,
                  indexes: list[int] | None = None) -> list[IndexRecord]:
    """``ledger_records`` of a set of pods (name -> pod object), as a list."""
    ledger = Ledger().with_pods(pods.values(), now)
    return list(ledger_records(ledger, completions, diagnoses=diagnoses, failed_indexes=failed_indexes,
                               finished=finished, indexes=indexes))


# --------------------------------------------------------------------------------------------- the wait


def wait_for_job(api_client: Any, job: JobHandle, *, run_key: str, options: WaitOptions, emit: Emit,
                 on_progress: Callable[[int, int], None] | None = None,
                 on_verdict: Callable[[bool, str | None], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> JobReport:
    """Block until the Job has a verdict; raise ``JobFailed`` (with the report) when it failed or cannot progress.

    The Job decides (https://kubernetes.io/docs/concepts/workloads/controllers/job/#handling-pod-and-container-failures):
    the run fails on the Job's ``Failed`` condition, not on a pod failure the Job will retry. Pods that ended badly
    (spot reclaim, ECI stock-out, eviction, exit code, OOM) are logged as they happen and kept in the per-index
    ledger, whenever they happened (pods that failed before the first list are judged the same way). An index
    whose per-index budget is spent (``status.failedIndexes``) is logged at once; the run still waits for the
    Job's verdict, so the other indexes finish and nothing is deleted early. Only a pod that cannot end by itself
    (``diagnose_pod``: bad image, unschedulable, ECI creation stuck, past the grace) ends the wait early.

    ``options.max_reclaims`` (the first Job only): an index reclaimed that many times is stopped on spot
    (``stop_for_on_demand``: a pod condition the Job's ``FailIndex`` rule matches); a Job that then fails only
    because of such indexes is no failure: the report lists them in ``on_demand`` for their last try on demand.

    A Job that vanishes is a verdict too: deleted before it finished -> ``JobFailed`` saying so; already gone
    when the wait starts (removed by ``ttlSecondsAfterFinished`` after finishing) -> a report with
    ``job_gone=True`` and the pods seen, so the outputs decide.

    Args:
        api_client: a ``kubernetes.client.ApiClient`` for the cluster.
        job: the launched (or adopted) Job.
        run_key: selects the run's pods (label ``ask-batch.io/run``).
        options: grace, timeout, logs, and ``scrub`` applied to every log line before it goes anywhere.
        emit: receives each prefixed log line (e.g. the Prefect run logger's ``info``).
        on_progress: called with (succeeded, completions) whenever the count changes.
        on_verdict: called with (succeeded, reason) the moment the Job's verdict is known (finished, failing fast
            or deleted), before the last pod logs are drained and the pods listed once more: the verdict is
            reported first, the drain follows (it is already under way for every pod that has ended).

    Raises:
        JobFailed: the Job failed, was deleted while it ran, a pod cannot make progress (after the grace), or
            ``timeout_seconds`` passed.
    """
    from kubernetes import client

    core, batch_v1 = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    if options.log_dir:
        options.log_dir.mkdir(parents=True, exist_ok=True)
    events: queue.Queue = queue.Queue(maxsize=EVENT_QUEUE_SIZE)
    pod_selector = f"{RUN_LABEL}={run_key}" + ("" if job.index is None else f",{INDEX_LABEL}={job.index}")
    watchers = [
        _Watcher(batch_v1.list_namespaced_job, {"namespace": job.namespace,
                                             "field_selector": f"metadata.name={job.name}"},
                 "job", events, options.watch_seconds),
        _Watcher(core.list_namespaced_pod, {"namespace": job.namespace, "label_selector": pod_selector},
                 "pod", events, options.watch_seconds, shrink=watched_pod),
    ]
    for w in watchers:
        w.start()
    pods: dict[str, dict[str, Any]] = {}  # pods not yet ended (compact): the only ones a grace can still catch
    ledger = Ledger()  # ended pods, folded into one row each as they end
    just_ended: dict[str, dict[str, Any]] = {}  # pods that ended in this batch: read by its checks, then dropped
    counts = {"Succeeded": 0, "ended": 0}  # ended pods seen (a DELETED one counts as ended)
    changed: set[str] = set()  # pods seen since the last diagnosis
    logs = PodLogs(core, job.namespace, CONTAINER_NAME, emit, options.log_dir, scrub=options.scrub,
                   max_streams=options.max_log_streams, tail_lines=options.tail_lines) if options.stream_logs else None
    incomplete: dict[str, str] = {}
    job_obj: dict[str, Any] = {}
    job_deleted = False  # a DELETED event for the Job, or a deletionTimestamp on it
    ended: set[str] = set()  # pods whose end was already logged
    failed_logged: set[int] = set()  # indexes whose spent budget was already logged
    reclaims: dict[int, int] = defaultdict(int)  # index -> attempts the cloud took away
    moving: set[int] = set()  # indexes whose last try runs on demand (max_reclaims)
    stopped: set[str] = set()  # pods stopped for that (the condition written, the pod deleted)
    hand_over = options.max_reclaims > 0 and job.index is None
    synced: set[str] = set()
    last_progress = -1
    deadline = clock() + options.timeout_seconds if options.timeout_seconds else None

    def see_pod(etype: str, obj: dict[str, Any]) -> None:
        owners = {o.get("uid") for o in (obj.get("metadata") or {}).get("ownerReferences") or []}
        if job.uid not in owners:
            return
        # One string per pod name however many events name it: the ledger row and the log reader keep this one.
        name = obj["metadata"]["name"] = sys.intern(obj["metadata"]["name"])
        if hand_over and any(c.get("type") == ON_DEMAND_CONDITION and c.get("status") == "True"
                             for c in (obj.get("status") or {}).get("conditions") or []):
            stopped.add(name)  # an earlier wait of this Job (a retried task) moved this index on demand
            idx = pod_index(obj)
            if idx is not None:
                moving.add(idx)
        phase = (obj.get("status") or {}).get("phase")
        small = pods.pop(name, None) if etype == "DELETED" else None
        small = small or compact_pod(obj)
        if etype == "DELETED" or phase in ("Succeeded", "Failed"):
            # Ended: one ledger row from now on (a pod seen again, e.g. in the final list, replaces its row; a
            # deletion keeps what was known before it).
            pods.pop(name, None)
            idx = pod_index(small)
            if idx is not None and not ledger.has(name, idx):
                counts["ended"] += 1
                counts["Succeeded"] += phase == "Succeeded"
            ledger.fold(small, datetime.now(UTC), replace=etype != "DELETED")
            just_ended[name] = small
        else:
            pods[name] = small
        changed.add(name)
        if logs is not None:
            started, ended_now, restarts = _container(obj)
            logs.seen(name, pod_index(obj), started=started, ended=ended_now or etype == "DELETED",
                      restarts=restarts, may_restart=(obj.get("spec") or {}).get("restartPolicy") != "Never")

    def caught_up() -> bool:
        # The pod watch has shown every pod the Job counted as ended, and none is left running.
        status = job_obj.get("status") or {}
        done = int(status.get("succeeded") or 0)
        return bool(job_obj) and not pods and counts["Succeeded"] >= done and counts["ended"] >= done + int(
            status.get("failed") or 0)

    def final_pods() -> None:
        # The Job and pod watches are separate streams: the Job's final condition can arrive before the last
        # pod updates. Those are usually already queued or a few milliseconds away: they are applied first, for
        # up to FINAL_CATCH_UP_SECONDS. Only if the watch still has not shown every pod the Job counted does one
        # list give the pods as the Job controller saw them when it finished the Job: read as JSON (client models
        # cost seconds at 10,000 pods), a page at a time (one response for 100,000 pods would be hundreds of MB).
        end = clock() + (FINAL_CATCH_UP_SECONDS if job_obj else 0.0)
        while not caught_up() and clock() < end:
            try:
                kind, etype, obj = events.get(timeout=0.05)
            except queue.Empty:
                continue
            if kind == "pod" and obj is not None:
                see_pod(etype, obj)
        just_ended.clear()  # read by no check from here on: holding them would keep every listed pod
        if caught_up():
            return
        with contextlib.suppress(Exception):
            for page in list_pages(core.list_namespaced_pod, namespace=job.namespace, label_selector=pod_selector):
                for item in page.get("items") or []:
                    see_pod("MODIFIED", item)
                just_ended.clear()

    def report(succeeded: bool, reason: str | None, diags: dict[str, Diagnosis] | None = None, *,
               finished: bool = False, gone: bool = False) -> JobReport:
        failed = failed_indexes()
        notable, plain = split_records(ledger_records(
            ledger.with_pods(pods.values(), datetime.now(UTC)), job.completions, diagnoses=diags,
            failed_indexes=failed, finished=finished, indexes=None if job.index is None else [job.index]))
        return JobReport(job=job, succeeded=succeeded, reason=reason, job_gone=gone, indexes=notable,
                         succeeded_once=plain, incomplete_logs=dict(sorted(incomplete.items())),
                         on_demand=sorted(moving & failed) if succeeded else [])

    def failed_indexes() -> set[int]:
        # The Job's own indexes whose budget is spent, as original indexes (a follow-up Job runs one, as its 0).
        failed = parse_indexes((job_obj.get("status") or {}).get("failedIndexes"))
        return failed if job.index is None else ({job.index} if failed else set())

    def explain_ends() -> None:
        # Say, once per pod, how each attempt ended and who decides next; and once per index, that its budget
        # is spent. Scrubbed: a container message can quote anything.
        for name in sorted(changed):
            pod = pods.get(name) or just_ended.get(name)
            if pod is None or name in ended:
                continue
            end = attempt_end(pod)
            if end is None or end.outcome == "succeeded":
                continue
            ended.add(name)
            idx = pod_index(pod)
            if end.outcome == "reclaimed" and idx is not None:
                reclaims[idx] += 1
            detail = f": {end.message}" if end.message else ""
            if end.outcome == "moved-on-demand":
                log.warning("%s", options.scrub(f"index {idx}: pod {name} stopped on spot{detail}"))
                continue
            log.warning("%s", options.scrub(
                f"index {'?' if idx is None else idx}: pod {name} ended: {end.reason}{detail}; "
                f"{'not the workload' + chr(39) + 's fault: ' if end.disruption else ''}"
                f"the Job retries it within its limits (backoffLimitPerIndex / backoffLimit / podFailurePolicy)"))
        for idx in sorted(failed_indexes() - failed_logged):
            failed_logged.add(idx)
            if idx in moving:
                log.info("index %d: ended in Job %s as planned; its last try runs on demand once the Job is "
                         "finished", idx, job.name)
                continue
            log.warning("index %d failed for good: its retry budget is spent; the Job still runs the other "
                        "indexes, then fails", idx)

    def move_on_demand() -> None:
        # max_reclaims: an index reclaimed that often is stopped on spot; the Job's FailIndex rule on our
        # condition then fails it there, and its last try runs on demand after this Job (wait_for_job_task).
        status = job_obj.get("status") or {}
        settled = parse_indexes(status.get("completedIndexes")) | parse_indexes(status.get("failedIndexes"))
        for idx in due_on_demand(reclaims, max_reclaims=options.max_reclaims, settled=settled | moving):
            moving.add(idx)
            log.warning("index %d: spot instance reclaimed %d times (job.eci.max_reclaims %d): stopping it on "
                        "spot; its last try runs on demand (pay-as-you-go) in a follow-up Job", idx, reclaims[idx],
                        options.max_reclaims)
        pending = moving - settled
        if not pending:
            return
        for name in sorted(pods):
            pod = pods[name]
            if name in stopped or pod_index(pod) not in pending:
                continue
            stopped.add(name)
            try:
                stop_for_on_demand(core, job.namespace, name, reclaims=reclaims[pod_index(pod) or 0])
            except CloudError as err:
                log.warning("index %s: could not stop pod %s for its on-demand try (%s); it goes on on spot; fix: "
                            "let the kubeconfig's user patch pods/status and delete pods", pod_index(pod), name,
                            err)

    def drain_logs() -> None:
        # Streams that end by themselves within the grace are the common case; the others are cut and the rest
        # of their log is read once without follow, so a slow kubelet does not hold the run for seconds.
        if logs is not None:
            incomplete.update(logs.close(grace=options.log_grace_seconds, catch_up=options.log_catch_up_seconds))

    try:
        last_scan = clock()
        while True:
            # Apply every event already queued before checking anything: at 10,000 pods the checks run once
            # per batch of events, not once per event.
            batch = []
            with contextlib.suppress(queue.Empty):
                batch.append(events.get(timeout=options.tick_seconds))
                while len(batch) < MAX_EVENTS_PER_BATCH:
                    batch.append(events.get_nowait())
            for kind, etype, obj in batch:
                if etype == "SYNCED":
                    synced.add(kind)
                elif kind == "job":
                    job_obj = obj
                    job_deleted = job_deleted or etype == "DELETED" or bool(
                        (obj.get("metadata") or {}).get("deletionTimestamp"))
                elif kind == "pod":
                    see_pod(etype, obj)
            batch.clear()  # the parsed objects are folded: do not hold them through the checks (or the drain)
            if synced != {"job", "pod"}:
                continue
            explain_ends()
            if hand_over:
                move_on_demand()
            succeeded = int((job_obj.get("status") or {}).get("succeeded") or 0)
            if on_progress and succeeded != last_progress:
                last_progress = succeeded
                on_progress(succeeded, job.completions)
            finished, ok, why = job_finished(job_obj)
            if finished:
                just_ended.clear()
                failed_now = failed_indexes()
                # Failed only because of the indexes moved on demand: not a verdict yet, their last try is next.
                ok = ok or bool(failed_now and failed_now <= moving and (why or "").startswith("FailedIndexes"))
                if on_verdict is not None:
                    on_verdict(ok, None if ok else why)
                # The last pod list and the end of the logs are fetched side by side.
                lister = threading.Thread(target=final_pods, daemon=True, name="final-pods")
                lister.start()
                drain_logs()
                lister.join()
                rep = report(ok, why if not ok else None, finished=True)
                if ok:
                    return rep
                raise JobFailed(options.scrub(_failure_message(f"Job {job.name} failed: {why}", rep, logs,
                                                               options)), rep)
            if not job_obj:
                # The Job was gone before the first list: it finished and ttlSecondsAfterFinished removed it, or
                # someone deleted it. Nothing here can tell which: the outputs decide (collect_outputs).
                final_pods()
                drain_logs()
                log.warning("Job %s was already gone when the wait began (removed by its TTL after finishing, or "
                            "deleted): judging the run by its outputs and the %d pod(s) seen", job.name,
                            len(pods) + counts["ended"])
                return report(True, None, gone=True)
            if job_deleted:
                if on_verdict is not None:
                    on_verdict(False, "Job deleted while it ran")
                final_pods()
                drain_logs()
                rep = report(False, "Job deleted while it ran", finished=True)
                raise JobFailed(options.scrub(_failure_message(
                    f"Job {job.namespace}/{job.name} was deleted while it ran ({succeeded}/{job.completions} "
                    f"indexes done): something else deleted it (a cleanup script, kubectl delete, a colleague); "
                    f"fix: find who (kubectl get events), then run again", rep, logs, options)), rep)
            # Diagnose the pods that just changed, and once per tick the unfinished ones (a grace can run out
            # while nothing changes). Finished pods are never rescanned: that was O(pods) per event.
            suspects = set(changed)
            changed.clear()
            if clock() - last_scan >= options.tick_seconds:
                suspects |= set(pods)
                last_scan = clock()
            now = datetime.now(UTC)
            for name in sorted(suspects):
                pod = pods.get(name) or just_ended.get(name)
                diag = diagnose_pod(pod, now=now, grace=options.grace_seconds) if pod is not None else None
                if diag:
                    if on_verdict is not None:
                        on_verdict(False, diag.describe())
                    drain_logs()
                    rep = report(False, diag.describe(), {name: diag})
                    raise JobFailed(options.scrub(_failure_message(
                        f"Job {job.name} cannot finish: {diag.describe()}", rep, logs, options, pod=name)), rep)
            just_ended.clear()
            if deadline is not None and clock() > deadline:
                rep = report(False, "timeout")
                raise JobFailed(f"gave up waiting for Job {job.name} after {options.timeout_seconds:.0f}s "
                                f"({last_progress}/{job.completions} done); fix: raise wait.timeout_seconds", rep)
    finally:
        for w in watchers:
            w.close(wait=False)
        if logs is not None:
            logs.stop()  # a no-op after drain_logs(); else no reader may write on after this wait is over


def _failure_message(head: str, rep: JobReport, logs: PodLogs | None, options: WaitOptions,
                     pod: str | None = None) -> str:
    """The error a user reads: which indexes failed, how, and the end of the failing pod's log."""
    lines = [head]
    failed = [r for r in rep.indexes if r.status == "failed"]
    for r in failed[:10]:
        last = next((a for a in reversed(r.attempts) if a.pod == r.pod), None)
        message = f": {last.message}" if last and last.message else ""
        history = ", ".join(f"{a.outcome}" for a in r.attempts)
        lines.append(f"  index {r.index}: pod {r.pod}, {r.reason or 'failed'}{message} "
                     f"({len(r.attempts)} attempt(s): {history})")
    if len(failed) > 10:
        lines.append(f"  ... and {len(failed) - 10} more failed indexes (see the run summary)")
    target = pod or (failed[0].pod if failed else None)
    if target and logs is not None and options.tail_lines:
        tail = logs.tail(target)
        if tail:
            lines.append(f"  last {len(tail)} log lines of {target}:")
            lines += [f"    {t}" for t in tail]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- follow-up Jobs

#: Follow-up Jobs waited on at once at most, besides ``job.parallelism`` (each wait is three threads: two
#: watches and its pod's log stream).
MAX_FOLLOW_UP_WAITS = 16


def run_follow_ups(batch_v1: Any, indexes: list[int], render: Callable[[int], dict[str, Any]],
                   wait_one: Callable[[JobHandle], JobReport], *, parallelism: int,
                   on_done: Callable[[int], None] | None = None) -> list[tuple[JobReport, str | None]]:
    """One follow-up Job per original index, at most ``parallelism`` (and ``MAX_FOLLOW_UP_WAITS``) at once.

    A follow-up Job runs one pod, and it is created (``launch_job``: created, or adopted from an earlier attempt)
    only when a slot is free; the slot is freed when ``wait_one`` has the Job's verdict. So the run never has
    more than ``job.parallelism`` follow-up pods at once, as the first Job never has more than that.

    Args:
        batch_v1: a ``kubernetes.client.BatchV1Api``.
        indexes: original indexes, run in this order.
        render: the follow-up Job manifest of one index (``render_job(index=..., on_demand=...)``).
        wait_one: waits for one follow-up Job (``wait_for_job``); may raise ``JobFailed``.
        parallelism: ``job.parallelism``.
        on_done: called with the number of follow-ups finished so far.

    Returns:
        (report, error text or None) per index, in ``indexes`` order.

    Raises:
        CloudError: a follow-up Job could not be created (the others already running are waited for first).
    """
    if not indexes:
        return []
    lock = threading.Lock()
    finished = [0]

    def one(index: int) -> tuple[JobReport, str | None]:
        handle = launch_job(batch_v1, render(index)).model_copy(update={"index": index})
        try:
            result: tuple[JobReport, str | None] = (wait_one(handle), None)
        except JobFailed as exc:
            result = (exc.report, str(exc))
        with lock:
            finished[0] += 1
            if on_done is not None:
                on_done(finished[0])
        return result

    slots = max(1, min(parallelism, MAX_FOLLOW_UP_WAITS, len(indexes)))
    with ThreadPoolExecutor(max_workers=slots, thread_name_prefix="follow-up") as pool:
        return list(pool.map(one, indexes))


def merge_reports(whole: JobHandle, reused: list[int], reports: list[JobReport]) -> JobReport:
    """One report for a re-run: indexes an earlier attempt finished (``reused``, outputs already complete) plus
    the records of the follow-up Jobs; it succeeded when every follow-up did."""
    ran = {record.index: record for rep in reports for record in rep.records()}
    reused_set = set(reused)

    def records() -> Iterator[IndexRecord]:
        for i in range(whole.completions):
            if i in ran:
                yield ran[i]
            elif i in reused_set:
                yield IndexRecord(index=i, status="succeeded", reason="outputs from an earlier attempt")
            else:
                yield IndexRecord(index=i, status="not_started")

    notable, plain = split_records(records())
    failed = [rep for rep in reports if not rep.succeeded]
    reason = "; ".join(f"{rep.job.name} (index {rep.job.index}): {rep.reason}" for rep in failed) or None
    return JobReport(job=whole, succeeded=not failed, reason=reason, indexes=notable, succeeded_once=plain,
                     follow_ups=[rep.job for rep in reports], reused=sorted(reused),
                     incomplete_logs={k: v for rep in reports for k, v in rep.incomplete_logs.items()})


def merge_on_demand(first: JobReport, reports: list[JobReport]) -> JobReport:
    """The first Job's report with the on-demand tries (``first.on_demand``) appended to their indexes' ledgers:
    every attempt, spot then on demand; the index's status, last pod and reason are the on-demand try's. It
    succeeded when every on-demand try did."""
    tries = {rec.index: rec for rep in reports for rec in rep.records()}

    def records() -> Iterator[IndexRecord]:
        for rec in first.records():
            extra = tries.get(rec.index)
            if extra is None:
                yield rec
                continue
            attempts = rec.attempts + extra.attempts
            yield extra.model_copy(update={
                "attempts": attempts, "seconds": round(sum(a.seconds for a in attempts), 3),
                "billed_seconds": round(sum(a.billed_seconds for a in attempts), 3)})

    indexes, plain = split_records(records())
    failed = [rep for rep in reports if not rep.succeeded]
    reason = "; ".join(f"on-demand try of index {rep.job.index} ({rep.job.name}): {rep.reason}"
                       for rep in failed) or None
    return first.model_copy(update={
        "succeeded": first.succeeded and not failed, "reason": reason or first.reason, "indexes": indexes,
        "succeeded_once": plain,
        "follow_ups": first.follow_ups + [rep.job for rep in reports],
        "incomplete_logs": {**first.incomplete_logs,
                            **{k: v for rep in reports for k, v in rep.incomplete_logs.items()}}})


def _follow_ups(spec: BatchSpec, run_key: str, cluster: ClusterHandle, api: Any, indexes: list[int], *,
                flow_run_name: str, volume: VolumeHandle | None, config: ConfigHandle | None, on_demand: bool,
                options: WaitOptions, emit: Emit, what: str) -> tuple[list[JobReport], list[str]]:
    """Render, create and wait for the follow-up Jobs of ``indexes`` (``run_follow_ups``): their reports and the
    error texts of those that failed."""
    from kubernetes import client

    def render(index: int) -> dict[str, Any]:
        return render_job(spec, run_key=run_key, flow_run_name=flow_run_name, volume=volume, config=config,
                          index=index, kind=cluster.kind, on_demand=on_demand)

    def wait_one(handle: JobHandle) -> JobReport:
        # Its own connection pool (same configuration): each wait holds two watches and a log stream, and up to
        # MAX_FOLLOW_UP_WAITS run at once; sharing one pool would make urllib3 drop and reopen connections.
        with client.ApiClient(api.configuration) as own:
            return wait_for_job(own, handle, run_key=run_key, options=options, emit=emit)

    results = run_follow_ups(client.BatchV1Api(api), indexes, render, wait_one, parallelism=spec.job.parallelism,
                             on_done=lambda n: log.info("%s: %d of %d follow-up Jobs finished", what, n,
                                                        len(indexes)))
    return [rep for rep, _ in results], [err for _, err in results if err]


@task(name="wait_for_follow_ups", cache_policy=NO_CACHE, retries=len(RETRY_DELAYS),
      retry_delay_seconds=RETRY_DELAYS, retry_condition_fn=transient_only)
def wait_for_follow_ups_task(spec: BatchSpec, run_key: str, cluster: ClusterHandle, whole: JobHandle,
                             indexes: list[int], reused: list[int], log_dir: str | None, *, flow_run_name: str,
                             volume: VolumeHandle | None, config: ConfigHandle | None) -> JobReport:
    """Prefect task: run the missing ``indexes`` of a re-run as follow-up Jobs, at most ``job.parallelism`` at
    once (``run_follow_ups``), each wait ending with its Job's verdict, then one merged report. A failed
    follow-up does not stop the others.

    Raises:
        JobFailed: some follow-up Job failed (the merged report is attached), naming its index.
    """
    with stage_context(spec) as ctx, stage_logs(ctx.scrubber) as run_logger:
        scrub = ctx.scrubber
        reports, errors = _follow_ups(
            spec, run_key, cluster, ctx.kube(cluster), indexes, flow_run_name=flow_run_name, volume=volume,
            config=config, on_demand=False,
            options=wait_options(spec, log_dir=Path(log_dir) if log_dir else None, scrub=scrub),
            emit=run_logger.info, what="re-run")
    merged = merge_reports(whole, reused, reports)
    if errors:
        raise JobFailed(scrub(f"{len(errors)} of {len(indexes)} follow-up Jobs failed:\n" + "\n".join(errors)),
                        merged)
    return merged


# --------------------------------------------------------------------------------------------- Prefect task


def wait_options(spec: BatchSpec, *, log_dir: Path | None, scrub: Callable[[str], str] = str) -> WaitOptions:
    """``WaitOptions`` from the spec's ``wait`` section (timeout: the Job deadline plus 10 minutes if unset), and
    ``job.eci.max_reclaims`` when the Job carries the rule it needs (``moves_reclaims_on_demand``)."""
    timeout = spec.wait.timeout_seconds
    if timeout is None and spec.job.active_deadline_seconds:
        timeout = spec.job.active_deadline_seconds + 600
    return WaitOptions(grace_seconds=spec.wait.fail_fast_grace_seconds, timeout_seconds=timeout,
                       stream_logs=spec.wait.stream_logs, tail_lines=spec.wait.log_tail_lines, log_dir=log_dir,
                       scrub=scrub, max_log_streams=spec.wait.max_log_streams,
                       max_reclaims=spec.job.eci.max_reclaims if moves_reclaims_on_demand(spec.job) else 0)


@task(name="wait_for_job", cache_policy=NO_CACHE, retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=transient_only)
def wait_for_job_task(spec: BatchSpec, run_key: str, cluster: ClusterHandle, job: JobHandle,
                      log_dir: str | None, *, flow_run_name: str, volume: VolumeHandle | None = None,
                      config: ConfigHandle | None = None) -> JobReport:
    """Prefect task: watch the Job to its end, streaming pod logs into the run log and a progress artifact; then
    run the on-demand tries of the indexes reclaimed ``job.eci.max_reclaims`` times (follow-up Jobs without
    spot, at most ``job.parallelism`` at once) and merge them into the report.

    Each pod's log line reaches the Prefect run log as ``[idx=N pod=NAME] line``, with every known secret value
    (AccessKey, secret files and env) blanked. Whole logs are kept under ``log_dir``.

    Raises:
        JobFailed: naming index, pod, reason, exit code and the last log lines; ``.report`` has every index.
    """
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    with stage_context(spec) as ctx, stage_logs(ctx.scrubber) as run_logger:
        artifact: Any = create_progress_artifact(0.0, key=f"progress-{run_key}",
                                            description=f"Job {job.name}: indexes done of {job.completions}")

        def progress(done: int, total: int) -> None:
            update_progress_artifact(artifact, 100.0 * done / max(1, total),
                                     description=f"Job {job.name}: {done}/{total} indexes done")
            run_logger.info("progress: %d/%d indexes done", done, total)

        api = ctx.kube(cluster)
        scrub = ctx.scrubber
        options = wait_options(spec, log_dir=Path(log_dir) if log_dir else None, scrub=scrub)

        def verdict(ok: bool, why: str | None) -> None:
            outcome = "complete" if ok else f"failed: {why}"
            run_logger.info("%s", scrub(f"Job {job.name} finished: {outcome}; reading the last pod logs before "
                                        "the report"))

        report = wait_for_job(api, job, run_key=run_key, options=options, emit=run_logger.info,
                              on_progress=progress, on_verdict=verdict)
        if not report.on_demand:
            return report
        run_logger.info("on-demand tries of %d index(es) reclaimed %d times: %s", len(report.on_demand),
                        options.max_reclaims, ", ".join(map(str, report.on_demand[:20])))
        reports, errors = _follow_ups(
            spec, run_key, cluster, api, report.on_demand, flow_run_name=flow_run_name, volume=volume,
            config=config, on_demand=True, options=options, emit=run_logger.info, what="on-demand tries")
    merged = merge_on_demand(report, reports)
    if errors:
        raise JobFailed(scrub(f"{len(errors)} of {len(reports)} on-demand tries failed:\n" + "\n".join(errors)),
                        merged)
    return merged
