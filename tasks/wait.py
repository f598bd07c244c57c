"""Stage wait_for_job: watch the Job and its pods, stream every pod's log live, fail fast with a reason.

Why watches and threads: polling misses short-lived states and costs an API call per pod per tick, and the
prefect-kubernetes wait loop reads logs one pod after another (research/prefect.md §1.4; anchors.md pain 3). Here:

- one watch on the Job (field selector on its name) and one on its pods (our run label, filtered on the Job's
  uid in ownerReferences) feed a single queue; each watch lists first, then watches from that resourceVersion,
  resumes from the last seen version when the stream drops, and relists on 410 Gone (anchors.md pain 5);
- every pod gets a log thread as soon as its container starts: lines go to ``emit`` prefixed with
  ``[idx=N pod=NAME]`` and into a per-pod file, so the whole log outlives pod deletion and TTL (pain 4); a broken
  log stream reconnects and skips the lines already seen;
- the main loop wakes on events *and* on a short timer, because a grace period can run out while nothing changes,
  and asks ``tasks.diagnose`` about every pod: the first fatal diagnosis ends the wait, naming index, pod, reason,
  exit code and the last log lines.
"""

import json
import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.diagnose import Diagnosis, diagnose_pod, exit_code, job_finished, parse_time, pod_index
from tasks.handles import IndexRecord, JobHandle, JobReport
from tasks.manifests import CONTAINER_NAME
from tasks.naming import RUN_LABEL

log = logging.getLogger("ask_batch.wait")

Emit = Callable[[str], None]


@dataclass(frozen=True)
class WaitOptions:
    grace_seconds: float = 90.0
    timeout_seconds: float | None = None
    stream_logs: bool = True
    tail_lines: int = 20
    log_dir: Path | None = None
    tick_seconds: float = 2.0
    watch_seconds: int = 240  # server-side watch timeout: reconnect regularly rather than trust idle streams


class JobFailed(RuntimeError):
    """The Job failed or will not finish; ``report`` has the per-index record."""

    def __init__(self, message: str, report: JobReport):
        super().__init__(message)
        self.report = report


# --------------------------------------------------------------------------------------------- watches


def _watch_loop(list_fn: Callable[..., Any], kwargs: dict[str, Any], kind: str, out: queue.Queue,
                stop: threading.Event, timeout_s: int) -> None:
    """List, then watch from the list's resourceVersion; resume on drops, relist on 410. Runs until ``stop``."""
    from kubernetes import watch
    from kubernetes.client.exceptions import ApiException

    rv: str | None = None
    failures = 0
    while not stop.is_set():
        try:
            if rv is None:
                resp = list_fn(**kwargs, _preload_content=False)
                data = json.loads(resp.data)
                rv = data["metadata"].get("resourceVersion")
                for item in data.get("items") or []:
                    out.put((kind, "ADDED", item))
            w = watch.Watch()
            for event in w.stream(list_fn, resource_version=rv, timeout_seconds=timeout_s, **kwargs):
                if stop.is_set():
                    w.stop()
                    break
                obj = event.get("raw_object") or {}
                if event.get("type") == "ERROR":
                    if obj.get("code") == 410:
                        rv = None
                        break
                    continue
                rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                out.put((kind, event["type"], obj))
            failures = 0
        except ApiException as exc:
            if exc.status == 410:
                rv = None
                continue
            failures += 1
            log.warning("%s watch error (%s), resuming", kind, exc.status)
            stop.wait(min(10.0, 0.5 * 2**failures))
        except Exception as exc:  # noqa: BLE001 - a dropped connection must never end the wait
            failures += 1
            log.warning("%s watch dropped (%s), resuming from %s", kind, type(exc).__name__, rv)
            stop.wait(min(10.0, 0.5 * 2**failures))


# --------------------------------------------------------------------------------------------- logs


class PodLog:
    """One pod's log: streamed live to ``emit``, kept whole in memory and in a file."""

    def __init__(self, core: Any, namespace: str, pod: str, index: int | None, emit: Emit, log_dir: Path | None):
        self.core, self.namespace, self.pod, self.emit = core, namespace, pod, emit
        self.prefix = f"[idx={'?' if index is None else index} pod={pod}]"
        self.lines: list[str] = []
        self.path = (log_dir / f"{pod}.log") if log_dir else None
        self.finished = threading.Event()  # set when the container has terminated and the log is read to the end
        self.thread = threading.Thread(target=self._run, name=f"log-{pod}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def tail(self, n: int) -> list[str]:
        return self.lines[-n:] if n else []

    def _run(self) -> None:
        attempts = 0
        while attempts < 50:
            attempts += 1
            try:
                resp = self.core.read_namespaced_pod_log(self.pod, self.namespace, container=CONTAINER_NAME,
                                                         follow=True, _preload_content=False)
                seen = 0
                buffer = b""
                for chunk in resp.stream(4096):
                    buffer += chunk
                    *complete, buffer = buffer.split(b"\n")
                    for raw in complete:
                        seen += 1
                        if seen > len(self.lines):  # after a reconnect, skip what we already have
                            self._line(raw.decode("utf-8", "replace"))
                if buffer:
                    seen += 1
                    if seen > len(self.lines):
                        self._line(buffer.decode("utf-8", "replace"))
                if self._terminated():
                    break
            except Exception as exc:  # noqa: BLE001 - keep trying: a log stream may drop at any time
                if getattr(exc, "status", None) == 404:  # pod gone: what we have is all there is
                    break
                time.sleep(min(5.0, 0.2 * attempts))
        self.finished.set()

    def _line(self, text: str) -> None:
        text = text.rstrip("\r")
        self.lines.append(text)
        if self.path:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(text + "\n")
        self.emit(f"{self.prefix} {text}")

    def _terminated(self) -> bool:
        try:
            pod = self.core.read_namespaced_pod(self.pod, self.namespace)
        except Exception as exc:  # noqa: BLE001
            return getattr(exc, "status", None) == 404
        return (pod.status.phase or "") in ("Succeeded", "Failed")


def _container_started(pod: dict[str, Any]) -> bool:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        state = cs.get("state") or {}
        if state.get("running") or state.get("terminated"):
            return True
    return False


# --------------------------------------------------------------------------------------------- records


def _pod_seconds(pod: dict[str, Any], now: datetime) -> float:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        state = cs.get("state") or {}
        if state.get("terminated"):
            t = state["terminated"]
            start, end = parse_time(t.get("startedAt")), parse_time(t.get("finishedAt"))
            return max(0.0, (end - start).total_seconds()) if start and end else 0.0
        if state.get("running"):
            start = parse_time(state["running"].get("startedAt"))
            return max(0.0, (now - start).total_seconds()) if start else 0.0
    return 0.0


def build_records(pods: dict[str, dict[str, Any]], completions: int, *, now: datetime,
                  diagnoses: dict[str, Diagnosis] | None = None) -> list[IndexRecord]:
    """Per-index record from the pods seen (the last pod of an index decides its status)."""
    by_index: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for pod in pods.values():
        idx = pod_index(pod)
        if idx is not None:
            by_index[idx].append(pod)
    records = []
    for idx in range(completions):
        attempts = sorted(by_index.get(idx, []), key=lambda p: p["metadata"].get("creationTimestamp") or "")
        if not attempts:
            records.append(IndexRecord(index=idx, status="pending"))
            continue
        last = attempts[-1]
        name, status = last["metadata"]["name"], last.get("status") or {}
        phase = status.get("phase")
        state = {"Succeeded": "succeeded", "Failed": "failed", "Running": "running", "Pending": "pending"}.get(
            phase or "", "unknown")
        diag = (diagnoses or {}).get(name)
        term = {}
        for cs in status.get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or term
        records.append(IndexRecord(
            index=idx, status="failed" if diag else state, attempts=len(attempts), pod=name,
            exit_code=exit_code(last), reason=(diag.reason if diag else term.get("reason") or status.get("reason")),
            started=term.get("startedAt") or status.get("startTime"), finished=term.get("finishedAt"),
            seconds=round(sum(_pod_seconds(p, now) for p in attempts), 3)))
    return records


# --------------------------------------------------------------------------------------------- the wait


def wait_for_job(api_client: Any, job: JobHandle, *, run_key: str, options: WaitOptions, emit: Emit,
                 on_progress: Callable[[int, int], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> JobReport:
    """Block until the Job completes; raise ``JobFailed`` (with the report) when it fails or cannot progress.

    Args:
        api_client: a ``kubernetes.client.ApiClient`` for the cluster.
        job: the launched (or adopted) Job.
        run_key: selects the run's pods (label ``ask-batch.io/run``).
        options: grace, timeout, logs.
        emit: receives each prefixed log line (e.g. the Prefect run logger's ``info``).
        on_progress: called with (succeeded, completions) whenever the count changes.
    """
    from kubernetes import client

    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    if options.log_dir:
        options.log_dir.mkdir(parents=True, exist_ok=True)
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    watchers = [
        threading.Thread(target=_watch_loop, daemon=True, name="watch-job", args=(
            batch.list_namespaced_job, {"namespace": job.namespace, "field_selector": f"metadata.name={job.name}"},
            "job", events, stop, options.watch_seconds)),
        threading.Thread(target=_watch_loop, daemon=True, name="watch-pods", args=(
            core.list_namespaced_pod, {"namespace": job.namespace, "label_selector": f"{RUN_LABEL}={run_key}"},
            "pod", events, stop, options.watch_seconds)),
    ]
    for t in watchers:
        t.start()
    pods: dict[str, dict[str, Any]] = {}
    logs: dict[str, PodLog] = {}
    job_obj: dict[str, Any] = {}
    last_progress = -1
    deadline = clock() + options.timeout_seconds if options.timeout_seconds else None

    def report(succeeded: bool, reason: str | None, diags: dict[str, Diagnosis] | None = None) -> JobReport:
        now = datetime.now(UTC)
        return JobReport(job=job, succeeded=succeeded, reason=reason,
                         indexes=build_records(pods, job.completions, now=now, diagnoses=diags))

    def drain_logs(timeout: float) -> None:
        end = time.monotonic() + timeout
        for pl in logs.values():
            pl.finished.wait(max(0.0, end - time.monotonic()))

    try:
        while True:
            try:
                kind, etype, obj = events.get(timeout=options.tick_seconds)
            except queue.Empty:
                kind = None
            if kind == "job":
                job_obj = obj
            elif kind == "pod":
                owners = {o.get("uid") for o in (obj.get("metadata") or {}).get("ownerReferences") or []}
                name = obj["metadata"]["name"]
                if job.uid in owners:
                    if etype == "DELETED":
                        pods.setdefault(name, obj)
                    else:
                        pods[name] = obj
                    if options.stream_logs and name not in logs and _container_started(obj):
                        logs[name] = PodLog(core, job.namespace, name, pod_index(obj), emit, options.log_dir)
                        logs[name].start()
            succeeded = int((job_obj.get("status") or {}).get("succeeded") or 0)
            if on_progress and succeeded != last_progress:
                last_progress = succeeded
                on_progress(succeeded, job.completions)
            finished, ok, why = job_finished(job_obj)
            if finished:
                drain_logs(30.0)
                rep = report(ok, why)
                if ok:
                    return rep
                raise JobFailed(_failure_message(f"Job {job.name} failed: {why}", rep, logs, options), rep)
            now = datetime.now(UTC)
            for name, pod in pods.items():
                diag = diagnose_pod(pod, now=now, grace=options.grace_seconds)
                if diag:
                    drain_logs(5.0)
                    rep = report(False, diag.describe(), {name: diag})
                    raise JobFailed(_failure_message(f"Job {job.name} cannot finish: {diag.describe()}", rep, logs,
                                                     options, pod=name), rep)
            if deadline is not None and clock() > deadline:
                rep = report(False, "timeout")
                raise JobFailed(f"gave up waiting for Job {job.name} after {options.timeout_seconds:.0f}s "
                                f"({last_progress}/{job.completions} done); fix: raise wait.timeout_seconds", rep)
    finally:
        stop.set()


def _failure_message(head: str, rep: JobReport, logs: dict[str, PodLog], options: WaitOptions,
                     pod: str | None = None) -> str:
    """The error a user reads: which indexes failed, how, and the end of the failing pod's log."""
    lines = [head]
    failed = [r for r in rep.indexes if r.status == "failed"]
    for r in failed[:10]:
        lines.append(f"  index {r.index}: pod {r.pod}, exit code {r.exit_code}, reason {r.reason}, "
                     f"attempts {r.attempts}")
    target = pod or (failed[0].pod if failed else None)
    if target and target in logs and options.tail_lines:
        tail = logs[target].tail(options.tail_lines)
        if tail:
            lines.append(f"  last {len(tail)} log lines of {target}:")
            lines += [f"    {t}" for t in tail]
    return "\n".join(lines)
