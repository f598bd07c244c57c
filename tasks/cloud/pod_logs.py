"""Lossless, bounded reading of pod logs: every byte a container wrote kept exactly once, with a few threads in all.

The Kubernetes log endpoint (``GET /api/v1/namespaces/{ns}/pods/{name}/log``,
https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#get-read-log-of-the-specified-pod)
has no byte offset: a stream that ends early (a server that cuts long requests, a dropped connection, our own cut
once the Job is over) can only be read again from the start (``sinceTime`` has one-second resolution and would
still repeat or skip lines written in the same second). So each pod's log is read as a byte stream and we count
the bytes already consumed: a new request skips exactly that many bytes, and the seam is exact.

Per container attempt (``KeptLog``):

- the bytes go, scrubbed (``tasks.render.redact.Scrubber``), to ``<log_dir>/<pod>.log`` for the container's first
  attempt and to ``<pod>.attempt-<n>.log`` for attempt n of a container restarted in place (n = its
  ``restartCount``; which request serves which attempt is decided from the pod's status at the time, see
  ``PodLogs._plan``). Every byte is kept, carriage returns
  included (a progress bar drawn with ``\\r`` is kept whole);
- lines are split in linear time (a 20 MiB line costs what 20 MiB of short lines cost); an unterminated tail is
  held back until its newline arrives or the container has ended (then it is a last line), except that more than
  ``HOLD_BYTES`` of one line are written out early, cut only where no secret form straddles the cut;
- each line is *displayed* (the run log) as a terminal would show it — what follows its last ``\\r`` — and capped
  at ``DISPLAY_BYTES``, with a note of how many bytes were left out; the kept file has all of them;
- ``<pod>.log.pos`` (JSON: raw bytes consumed, kept bytes written, complete) is written after each write, so a
  re-attach or a task retry truncates the file to what the position names and continues from there: no line twice.
  Where bytes cannot be read any more (the pod is gone), the kept log gets a marker line (``MISSING_MARKER``) and
  the caller reports it in the run summary.

``PodLogs`` bounds the work: at most ``max_streams`` live follows at once (threads in a fixed pool); pods beyond
that wait, and once their container has ended, a few reader threads read them once without follow (the node
keeps a container's log until the pod is deleted, and ask-batch deletes pods only after reading them). Nothing
per pod is kept after its log is read but a small status.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("ask_batch.logs")

Emit = Callable[[str], None]

#: A displayed line (run log) is cut after this many bytes; the kept file has the whole line.
DISPLAY_BYTES = 8192
#: More than this many bytes of one unterminated line are written to the kept file before its newline arrives.
HOLD_BYTES = 1 << 20
#: Bytes asked for per read from a log stream.
CHUNK_BYTES = 1 << 16
#: The marker line written to a kept log where bytes could not be read (the pod or its log is gone).
MISSING_MARKER = "[ask-batch: log incomplete: {what}]"


def _text(raw: bytes) -> str:
    """Bytes as text without losing any: invalid UTF-8 becomes lone surrogates, encoded back to the same bytes."""
    return raw.decode("utf-8", "surrogateescape")


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _shown(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


@dataclass
class Position:
    """What is already in a kept file: ``raw`` bytes of the container's log consumed, ``kept`` bytes written."""

    raw: int = 0
    kept: int = 0
    complete: bool = False
    missing: str | None = None  # why bytes are missing, when they are


class KeptLog:
    """One container attempt's log: fed bytes in order, keeps them (scrubbed) in a file, displays capped lines.

    Args:
        path: the kept file (``None``: nothing kept on disk, lines are only displayed).
        prefix: put before each displayed line (``[idx=N pod=NAME]``).
        emit: receives each displayed line.
        scrub: blanks secrets; applied before anything is written or displayed.
        tail_lines: how many displayed lines ``tail()`` returns (for error messages).
    """

    def __init__(self, path: Path | None, prefix: str, emit: Emit, scrub: Callable[[str], str] = str,
                 *, tail_lines: int = 20, display_bytes: int = DISPLAY_BYTES, hold_bytes: int = HOLD_BYTES):
        self.path, self.prefix, self.emit, self.scrub = path, prefix, emit, scrub
        self.display_bytes, self.hold_bytes = display_bytes, hold_bytes
        self.pos = self._load()
        self._pending = bytearray()  # consumed but not yet written: the unterminated tail
        self._scanned = 0  # bytes of _pending already searched for a newline
        self._line_written = 0  # bytes of the current line already written (a line longer than hold_bytes)
        self._line_tail = b""  # the last display_bytes of the current line, for displaying it
        self._tail: collections.deque[str] = collections.deque(maxlen=max(0, tail_lines))
        self._fh: Any = None

    # ------------------------------------------------------------------ position (re-attach, retries)

    @property
    def pos_path(self) -> Path | None:
        return self.path.with_name(self.path.name + ".pos") if self.path else None

    def _load(self) -> Position:
        if not self.path:
            return Position()
        try:
            data = json.loads(self.pos_path.read_text())  # type: ignore[union-attr]
            pos = Position(**data)
        except (OSError, ValueError, TypeError):
            pos = Position()
        # A crash between writing the file and its position leaves bytes the position does not name: drop them,
        # they are read again. No position at all: start afresh (an older run's file is replaced).
        with contextlib.suppress(FileNotFoundError), self.path.open("r+b") as fh:
            fh.truncate(pos.kept)
        return pos

    def _save(self) -> None:
        if not self.pos_path:
            return
        tmp = self.pos_path.with_name(self.pos_path.name + ".tmp")
        tmp.write_text(json.dumps(self.pos.__dict__))
        os.replace(tmp, self.pos_path)

    # ------------------------------------------------------------------ feeding

    @property
    def consumed(self) -> int:
        """Bytes of the container's log taken in so far (kept or held back): a new read skips this many."""
        return self.pos.raw + len(self._pending)

    def feed(self, data: bytes) -> None:
        """The next bytes of the container's log, in order. Complete lines are kept and displayed at once."""
        if not data or self.pos.complete:
            return
        self._pending += data
        end = self._pending.rfind(b"\n", self._scanned) + 1  # one search from where the last one stopped
        if end:
            block = bytes(self._pending[:end])
            del self._pending[:end]
            self._lines_done(block)
            self._write(block, end)
        self._scanned = len(self._pending)
        if len(self._pending) > self.hold_bytes:
            self._spill()

    def _lines_done(self, block: bytes) -> None:
        """Display the complete lines of ``block`` (it ends with a newline). Decoded and scrubbed once per block,
        split in C: the per-line work is one display call (a 20 MiB log of short lines is ~200,000 of them)."""
        if self._line_written:  # the first line continues one already partly written (an overlong line)
            first = block.index(b"\n") + 1
            self._line_done(block[:first])
            block = block[first:]
            if not block:
                return
        quick = self.display_bytes // 4  # a line this short (in characters) fits the cap in any encoding
        for line in self.scrub(_shown(block)).split("\n")[:-1]:
            if len(line) > quick or "\r" in line:
                self._show(line, len(_raw(line)))
            else:
                self._display(line)

    def finish(self, *, missing: str | None = None) -> None:
        """The container's log has ended (or can no longer be read: ``missing`` says why). Keeps the held tail."""
        if self.pos.complete:
            return
        if self._pending:
            tail = bytes(self._pending)
            self._line_done(tail)
            self._write(tail, len(tail))
            self._pending.clear()
            self._scanned = 0
        if missing:
            note = MISSING_MARKER.format(what=missing)
            self._write_text(("" if self._at_line_start() else "\n") + note + "\n")
            self._display(note)
            self.pos.missing = missing
        self.pos.complete = True
        self._save()
        self.close()

    def _at_line_start(self) -> bool:
        if not self.path or not self.pos.kept:
            return True
        self.close()
        with self.path.open("rb") as fh:
            fh.seek(self.pos.kept - 1)
            return fh.read(1) == b"\n"

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def tail(self) -> list[str]:
        return list(self._tail)

    # ------------------------------------------------------------------ internals

    def _spill(self) -> None:
        """Write most of an overlong unterminated line now, cut where no secret form straddles the cut."""
        text = _text(bytes(self._pending))
        keep_back = getattr(self.scrub, "max_form", 0)
        cut = max(0, len(text) - max(keep_back - 1, 0))
        safe_cut = getattr(self.scrub, "safe_cut", None)
        if safe_cut is not None:
            cut = safe_cut(text, cut)
        if cut <= 0:
            return
        raw = _raw(text[:cut])
        self._remember(raw)
        self._write(raw, len(raw), partial=True)
        del self._pending[:len(raw)]
        self._scanned = len(self._pending)

    def _remember(self, raw: bytes) -> None:
        self._line_tail = (self._line_tail + raw)[-self.display_bytes:]

    def _write(self, raw: bytes, consumed: int, *, partial: bool = False) -> None:
        text = self.scrub(_text(raw))
        self._write_text(text)
        self.pos.raw += consumed
        if partial:
            self._line_written += consumed
        self._save()

    def _write_text(self, text: str) -> None:
        if not self.path:
            return
        data = _raw(text)
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("ab")
        self._fh.write(data)
        self._fh.flush()
        self.pos.kept += len(data)

    def _line_done(self, raw: bytes) -> None:
        """Display one finished line (``raw`` is its unwritten part, newline included if it has one)."""
        written, self._line_tail, tail = self._line_written, b"", self._line_tail
        self._line_written = 0
        whole = (tail + raw) if written else raw
        self._show(self.scrub(_shown(whole)), written + len(raw))

    def _show(self, line: str, total: int) -> None:
        """Display ``line`` as a terminal shows it (what follows its last ``\\r``), cut to ``display_bytes``;
        ``total`` is the line's length in bytes in the kept file (said when more than is shown)."""
        body = line.rstrip("\n").rstrip("\r")
        cr = body.rfind("\r")
        shown = body[cr + 1:] if cr >= 0 else body
        raw = _raw(shown)
        if len(raw) > self.display_bytes:
            raw = raw[-self.display_bytes:] if cr >= 0 else raw[:self.display_bytes]
            shown = _shown(raw)
        left_out = total - len(raw) - (len(line) - len(line.rstrip("\n")))
        if left_out > 0 and (cr >= 0 or len(raw) >= self.display_bytes or total > len(_raw(line))):
            shown += f" [ask-batch: line cut for display, {left_out} more bytes in the kept log]"
        self._display(shown)

    def _display(self, text: str) -> None:
        self._tail.append(text)
        self.emit(f"{self.prefix} {text}")


# ---------------------------------------------------------------------------------------------- the pool


@dataclass(slots=True)
class _Pod:
    name: str
    index: int | None
    restarts: int = 0  # the container's restartCount when we last heard of it
    may_restart: bool = False  # restartPolicy is not Never: the kubelet may start the container again in place
    ended: bool = False  # the container has terminated (its log is whole on the node)
    queued: bool = False
    active: bool = False
    done_attempts: int = 0  # attempts whose log is read to its end


class PodLogs:
    """Reads every started pod's log losslessly with at most ``max_streams`` live follows and a few readers.

    Call ``seen(name, index, started=, ended=, restarts=)`` for each pod event and ``close()`` once the Job is
    over. Threads: ``max_streams`` followers and ``readers`` readers, started with the first pod, whatever the
    number of pods. A follower takes the oldest waiting pod (an ended one first) and follows its log while it
    runs; a reader takes only pods whose container has ended and reads their log once, so a few long-running pods
    that hold every follow slot never hold up the others' logs.

    Args:
        core: a ``kubernetes.client.CoreV1Api``.
        namespace, container: where the logs are.
        emit: receives each displayed line, prefixed ``[idx=N pod=NAME]``.
        log_dir: where kept files go (``None``: lines are displayed only; tails are kept in memory).
        scrub: the run's ``Scrubber``.
        max_streams: live follow streams at most (``wait.max_log_streams``).
        readers: threads that read ended containers once, without follow.
    """

    def __init__(self, core: Any, namespace: str, container: str, emit: Emit, log_dir: Path | None,
                 *, scrub: Callable[[str], str] = str, max_streams: int = 64, readers: int = 4,
                 tail_lines: int = 20):
        self.core, self.namespace, self.container, self.emit = core, namespace, container, emit
        self.log_dir, self.scrub, self.tail_lines = log_dir, scrub, tail_lines
        self._pods: dict[str, _Pod] = {}
        # Pods whose one attempt is read to its end and that cannot run again (ended, restartPolicy Never): a name
        # each, not a _Pod (~130 bytes less per pod at 100,000 pods). Later events of theirs change nothing.
        self._done: set[str] = set()
        # Pods waiting to be read, oldest first: those whose container has ended, and those still running.
        self._ended_q: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._running_q: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._active = 0
        self._finished = 0  # pods read to their end so far (progress, for close())
        self._bytes = 0  # log bytes taken in so far (progress, for close(): a long log is not a stuck one)
        self._gave_up: str | None = None  # close() gave up: why, written as the marker of what was not read
        self._lock = threading.Condition()
        self._closing = False  # the Job is over: no new follow, read what is left once
        self._cutting = False  # past the grace: open follows are cut
        self._stopped = False  # give up: workers leave
        self._responses: dict[str, Any] = {}  # open follow responses, to cut them
        self._tails: dict[str, list[str]] = {}  # displayed tails of pods with output (only when no log_dir)
        self.incomplete: dict[str, str] = {}
        # Followers are started as pods wait for one (at most max_streams), readers with the first pod; an idle
        # worker costs nothing, and stop() waits only for the busy ones.
        self._max_followers, self._readers = max(1, max_streams), max(1, readers)
        self._followers = 0  # follower threads started
        self._idle_followers = 0  # follower threads waiting for a pod
        self._busy: set[threading.Thread] = set()  # workers reading a pod now
        self._started_threads = False

    # ------------------------------------------------------------------ events

    def seen(self, name: str, index: int | None, *, started: bool, ended: bool, restarts: int = 0,
             may_restart: bool = False) -> None:
        """A pod event: ``started`` (its container runs or ran), ``ended`` (terminated now), ``restarts`` (its
        restartCount), ``may_restart`` (its restartPolicy is not ``Never``: each read then asks the pod which
        attempt the node serves, see ``_plan``)."""
        if not started:
            return
        cut = None
        with self._lock:
            if name in self._done:
                return
            if ended and name in self._responses:
                # Its container has ended: the follow would only wait for the node to notice (a kubelet checks
                # every few seconds). Cut it now; its worker reads the rest at once without follow, while the Job
                # controller is still counting the pod, so the log is whole by the time the Job's verdict comes.
                cut = self._responses.pop(name)
            pod = self._pods.get(name)
            if pod is None:
                pod = self._pods[name] = _Pod(name, index)
            changed = restarts > pod.restarts or ended != pod.ended or cut is not None
            pod.restarts = max(pod.restarts, restarts)
            pod.may_restart = pod.may_restart or may_restart
            pod.ended = ended
            if not self._started_threads:
                self._started_threads = True
                for i in range(self._readers):
                    threading.Thread(target=self._work, args=(False,), daemon=True, name=f"log-read-{i}").start()
            if pod.queued and ended and name in self._running_q:
                del self._running_q[name]
                self._ended_q[name] = None
                changed = True
            elif not pod.queued and not pod.active and pod.done_attempts <= pod.restarts:
                self._enqueue(pod)
                changed = True
            if changed:  # wake the workers only when there is something new for them (not on every event)
                self._lock.notify_all()
        if cut is not None:
            with contextlib.suppress(Exception):
                cut.shutdown()

    def _enqueue(self, pod: _Pod) -> None:
        pod.queued = True
        (self._ended_q if pod.ended else self._running_q)[pod.name] = None
        waiting = len(self._ended_q) + len(self._running_q)
        if waiting > self._idle_followers and self._followers < self._max_followers and not self._stopped:
            self._followers += 1
            self._idle_followers += 1  # counted as idle until it takes its first pod
            threading.Thread(target=self._work, args=(True,), daemon=True,
                             name=f"log-follow-{self._followers - 1}").start()

    def close(self, *, grace: float = 2.0, catch_up: float = 30.0) -> dict[str, str]:
        """The Job is over: wait up to ``grace`` s for open follows to end, then cut them and read the rest without
        follow; give up when no log got read to its end for ``catch_up`` s. Returns pod -> why its log is
        incomplete (empty: every log is whole)."""
        end = time.monotonic() + grace
        with self._lock:
            self._closing = True
            # A follow of a container that has already ended only waits for the node to notice (a kubelet checks
            # every few seconds): cut it now, its worker reads the rest at once without follow, in parallel with
            # the others. Only follows of containers still running get the grace.
            ended = [self._responses.pop(name) for name in list(self._responses) if self._pods[name].ended]
            self._lock.notify_all()
        for resp in ended:
            with contextlib.suppress(Exception):
                resp.shutdown()
        with self._lock:
            while self._responses and time.monotonic() < end:
                self._lock.wait(max(0.0, end - time.monotonic()))
            self._cutting = True
            responses = list(self._responses.values())
            self._responses.clear()
        for resp in responses:  # still open after the grace: cut; their worker reads the rest without follow
            with contextlib.suppress(Exception):
                resp.shutdown()
        with self._lock:
            seen_progress, end = (self._finished, self._bytes), time.monotonic() + catch_up
            while self._ended_q or self._running_q or self._active:
                if (self._finished, self._bytes) != seen_progress:
                    seen_progress, end = (self._finished, self._bytes), time.monotonic() + catch_up
                if time.monotonic() >= end:
                    break
                self._lock.wait(min(1.0, max(0.0, end - time.monotonic())))
            left = [*self._ended_q, *self._running_q] + [p.name for p in self._pods.values() if p.active]
            if left:
                self._gave_up = (f"not read to its end: reading stalled (no log byte arrived) for {catch_up:g} s "
                                 "after the Job ended")
            self._stopped = True
            self._lock.notify_all()
        for name in left:
            self.incomplete.setdefault(name, self._gave_up or "")
            log.warning("log of pod %s is incomplete: not read to its end in time", name)
        return dict(self.incomplete)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every reader now (the wait is over without ``close()``: it gave up or was interrupted) and wait up
        to ``timeout`` s for them to leave, so nothing writes a kept file after this returns: a new wait (a task
        retry) continues the files from their positions."""
        with self._lock:
            self._closing = self._cutting = self._stopped = True
            responses = list(self._responses.values())
            self._responses.clear()
            self._lock.notify_all()
        for resp in responses:
            with contextlib.suppress(Exception):
                resp.shutdown()
        with self._lock:
            busy = list(self._busy)  # idle workers leave without touching a file
        end = time.monotonic() + timeout
        for t in busy:
            t.join(max(0.0, end - time.monotonic()))

    def tail(self, name: str) -> list[str]:
        """The last displayed lines of a pod's latest attempt (read back from its kept file when there is one)."""
        if name in self._tails:
            return self._tails[name]
        pod = self._pods.get(name)
        path = self._path(name, pod.restarts if pod else 0)
        if path is None or not self.tail_lines:
            return []
        try:
            with path.open("rb") as fh:
                fh.seek(max(0, path.stat().st_size - 64 * 1024))
                lines = fh.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return []
        return [ln[ln.rfind("\r") + 1:][:DISPLAY_BYTES] for ln in lines[-self.tail_lines:]]

    # ------------------------------------------------------------------ workers

    def _path(self, name: str, attempt: int) -> Path | None:
        if not self.log_dir:
            return None
        return self.log_dir / (f"{name}.log" if attempt == 0 else f"{name}.attempt-{attempt}.log")

    def _take(self, follower: bool) -> _Pod | None:
        """The next pod for this worker (None: stop). A follower is counted idle while it waits here."""
        with self._lock:
            try:
                while not self._stopped:
                    queue = self._ended_q or (self._running_q if follower or self._closing else None)
                    if queue:
                        name, _ = queue.popitem(last=False)
                        pod = self._pods[name]
                        pod.queued, pod.active = False, True
                        self._active += 1
                        self._busy.add(threading.current_thread())
                        return pod
                    self._lock.wait()
            finally:
                if follower:
                    self._idle_followers -= 1
        return None

    def _work(self, follower: bool) -> None:
        while True:
            pod = self._take(follower)
            if pod is None:
                return
            try:
                self._read_pod(pod)
            except Exception as exc:  # noqa: BLE001 - one pod's log must never end the others'
                log.warning("reading the log of pod %s failed: %s", pod.name, type(exc).__name__)
                self.incomplete[pod.name] = f"reading it failed ({type(exc).__name__})"
                pod.done_attempts = pod.restarts + 1
            finally:
                with self._lock:
                    pod.active = False
                    self._active -= 1
                    self._finished += 1
                    self._busy.discard(threading.current_thread())
                    if follower:
                        self._idle_followers += 1  # about to wait in _take again
                    if pod.done_attempts <= pod.restarts and not self._stopped:
                        self._enqueue(pod)  # it restarted meanwhile: read the new attempt too
                    elif pod.ended and not pod.may_restart and pod.restarts == 0 and pod.done_attempts:
                        del self._pods[pod.name]  # read for good: its name is all that is kept
                        self._done.add(pod.name)
                    self._lock.notify_all()

    def _read_pod(self, pod: _Pod) -> None:
        prefix = f"[idx={'?' if pod.index is None else pod.index} pod={pod.name}"
        while pod.done_attempts <= pod.restarts and not self._stopped:
            attempt = pod.done_attempts
            label = f"{prefix}]" if attempt == 0 else f"{prefix} attempt={attempt}]"
            kept = KeptLog(self._path(pod.name, attempt), label, self.emit, self.scrub, tail_lines=self.tail_lines)
            try:
                if kept.pos.complete:
                    pass  # kept by an earlier try of this wait (a task retry or a re-attach)
                elif attempt < pod.restarts - 1:
                    # The kubelet keeps the current attempt and the one before only (kubectl logs --previous).
                    kept.finish(missing=f"attempt {attempt} ended before it could be read; the node keeps only "
                                "the current attempt's log and the one before")
                else:
                    self._read_attempt(pod, kept, attempt)
            finally:
                kept.close()
            if kept.pos.missing:
                self.incomplete[pod.name] = kept.pos.missing
            if not self.log_dir and kept.tail():
                self._tails[pod.name] = kept.tail()
            if not kept.pos.complete:
                if self._gave_up:  # close() gave up on it: the kept log says where it stops, and why
                    kept.finish(missing=self._gave_up)
                    kept.close()
                return  # stopped (a task retry continues from the position), or given up
            pod.done_attempts += 1

    def _read_attempt(self, pod: _Pod, kept: KeptLog, attempt: int) -> None:
        """Read one attempt to its end, following while it runs; a new request skips what is already consumed.

        A follow stream that ends is not proof that the log is whole: a proxy, a load balancer or an API server
        restart can end it early, even mid-line. So once the container has terminated, one plain read (no
        follow) finishes the attempt; while it still runs, the follow is simply opened again."""
        failures = 0
        idle = 0
        streamed_to_end = False  # the last request was a follow the server ended (not proof the log is whole)
        while not self._stopped:
            if pod.may_restart:
                try:
                    plan = self._plan(pod, attempt)
                except Exception as exc:  # noqa: BLE001 - a dropped connection: try again below
                    plan = "gone" if getattr(exc, "status", None) == 404 else "retry"
                if plan == "gone":
                    kept.finish(missing=_deleted(streamed_to_end) if pod.restarts <= attempt + 1 else
                                f"attempt {attempt} ended before it could be read; the node keeps only the current "
                                "attempt's log and the one before")
                    return
                if plan == "retry":
                    failures += 1
                    if failures > 20:
                        kept.finish(missing=f"reading its pod failed {failures} times")
                        return
                if plan in ("later", "retry"):
                    # Terminated and about to be restarted: neither request names this attempt for sure until
                    # the kubelet has moved it to lastState. Wait for the next pod event (or a second).
                    with self._lock:
                        self._lock.wait(1.0)
                    continue
                previous, follow = plan == "previous", plan == "follow"
            else:
                previous = attempt < pod.restarts  # no longer the current attempt: only ``previous=true`` has it
                follow = not previous and not self._closing and not pod.ended
            before = kept.consumed
            try:
                end = self._stream(pod, kept, follow=follow, previous=previous)
            except Exception as exc:  # noqa: BLE001 - a log stream may drop at any time
                status = getattr(exc, "status", None)
                if status == 404:
                    kept.finish(missing=_deleted(streamed_to_end))
                    return
                if status == 400 and previous:
                    kept.finish(missing=f"the node no longer has this attempt's log ({_reason(exc)})")
                    return
                failures += 1
                if failures > 20:
                    kept.finish(missing=f"reading it failed {failures} times ({type(exc).__name__})")
                    return
                time.sleep(min(5.0, 0.1 * 2 ** min(failures, 6)))
                continue
            streamed_to_end = end == "ended"
            if end == "whole":
                if not pod.may_restart and attempt < pod.restarts and not previous:
                    continue  # it restarted meanwhile: read this attempt again as ``previous`` (exact seam)
                kept.finish()
                return
            if pod.may_restart:  # the next round asks the pod again which attempt is where
                idle = 0 if kept.consumed > before else idle + 1
                if idle:
                    time.sleep(min(2.0, 0.05 * 2 ** min(idle, 6)))
                continue
            if follow and not self._closing and not pod.ended and not self._terminated(pod):
                # Ended by the server while the container runs: open it again, backing off while nothing new
                # arrives (a server that cuts every stream after a few bytes must not be hammered).
                streamed_to_end = False  # that end was not the log's
                idle = 0 if kept.consumed > before else idle + 1
                if idle:
                    time.sleep(min(2.0, 0.05 * 2 ** min(idle, 6)))
            elif follow:
                pod.ended = True  # terminated: the next round is the plain read that completes the attempt

    def _stream(self, pod: _Pod, kept: KeptLog, *, follow: bool, previous: bool) -> str:
        """One log request; skips ``kept.consumed`` bytes and feeds the rest. Returns how it ended: ``"whole"``
        (a plain read to its end: the attempt's whole log), ``"ended"`` (a follow the server ended: not proof that
        the log is whole, the caller decides what it means) or ``"cut"`` (cut by this reader, or stopped)."""
        kwargs: dict[str, Any] = {"container": self.container, "follow": follow, "_preload_content": False}
        if previous:
            kwargs["previous"] = True
        resp = self.core.read_namespaced_pod_log(pod.name, self.namespace, **kwargs)
        if follow:
            with self._lock:
                if self._cutting:
                    with contextlib.suppress(Exception):
                        resp.close()
                    return "cut"
                self._responses[pod.name] = resp
        skip = kept.consumed
        cut = False
        try:
            for chunk in _chunks(resp):
                # close() removes the response before it shuts it down: a chunk read after that may be raw TLS
                # records (SSLSocket.shutdown), so it and everything after it are dropped and read again.
                if (follow and pod.name not in self._responses) or self._stopped:
                    cut = True
                    break
                if skip:
                    if len(chunk) <= skip:
                        skip -= len(chunk)
                        continue
                    chunk, skip = chunk[skip:], 0
                kept.feed(chunk)
                self._bytes += len(chunk)
        except Exception:
            if not ((follow and pod.name not in self._responses) or self._stopped):
                raise
            cut = True  # shut down by close(): not an error
        finally:
            if follow:
                with self._lock:
                    if self._responses.pop(pod.name, None) is None:
                        cut = True
                    self._lock.notify_all()
            with contextlib.suppress(Exception):
                if cut:
                    resp.close()  # never reuse a connection that was shut down
                else:
                    resp.release_conn()
        if cut:  # a plain read stopped half-way has not the whole attempt
            return "cut"
        return "ended" if follow else "whole"

    def _plan(self, pod: _Pod, attempt: int) -> str:
        """How to read ``attempt`` of a container that may restart, from the pod's status as it is now.

        The log endpoint names no container: without ``previous`` the kubelet serves the running container, else
        the last terminated one; with ``previous=true`` the container in ``lastState.terminated``
        (``validateContainerLogStatus`` in
        https://github.com/kubernetes/kubernetes/blob/master/pkg/kubelet/kubelet_pods.go). ``restartCount`` is
        the number of the running (or latest) attempt; while the container waits to be restarted
        (CrashLoopBackOff) the attempt that just ended is in ``lastState`` with the same ``restartCount``. So:

        - running attempt N: ``follow`` (the current log) for N, ``previous`` for N-1, older ones are ``gone``;
        - waiting after attempt N: ``previous`` for N (exact even if N+1 starts meanwhile), older ones ``gone``;
        - terminated attempt N: ``current`` when it will not restart (exit code 0, or the pod is finished or being
          deleted), else ``later`` (it is about to move to ``lastState``); ``previous`` for N-1.
        Raises the client's exception (404: the pod is gone).

        What is left: the log request comes one round trip after the pod read, and nothing in the log names the
        container; a ``follow`` of running attempt N serves N+1 if N ends *and* N+1 starts within that round trip
        (a container that lives for less than a round trip), and ``previous`` for N-1 serves N if N ends in it.
        """
        obj = self.core.read_namespaced_pod(pod.name, self.namespace)
        status = obj.status
        cs = next((c for c in (status.container_statuses or []) if c.name == self.container), None) \
            if status else None
        if cs is None:
            return "later"
        count = cs.restart_count or 0
        pod.restarts = max(pod.restarts, count)
        state = cs.state
        if state is not None and state.waiting is not None:
            ended = cs.last_state.terminated if cs.last_state else None
            if ended is None:
                return "later"
            return "previous" if attempt == count else "gone" if attempt < count else "later"
        if attempt == count - 1:
            return "previous"
        if attempt < count:
            return "gone"
        if attempt > count:
            return "later"
        if state is not None and state.terminated is not None:
            final = (state.terminated.exit_code == 0 or (status.phase in ("Succeeded", "Failed"))
                     or obj.metadata.deletion_timestamp is not None)
            return "current" if final or self._closing else "later"
        return "current" if self._closing else "follow"

    def _terminated(self, pod: _Pod) -> bool:
        """Whether the attempt being followed has ended (a follow may also end on a server-side timeout)."""
        try:
            obj = self.core.read_namespaced_pod(pod.name, self.namespace)
        except Exception as exc:  # noqa: BLE001
            return getattr(exc, "status", None) == 404
        status = obj.status
        for cs in (status.container_statuses or []) if status else []:
            if cs.name == self.container:
                if (cs.restart_count or 0) > pod.restarts:
                    pod.restarts = cs.restart_count
                    return True
                if cs.state and cs.state.terminated:
                    return True
        return (status.phase if status else "") in ("Succeeded", "Failed")


def _deleted(streamed_to_end: bool) -> str:
    """Why an attempt's log stops where it does when its pod is gone (404) before a plain read confirmed its end.
    ``streamed_to_end``: the last request for it was a follow the server ended, not one this reader cut: every
    byte that stream had is kept, only the end is unconfirmed (a proxy may also end a stream early)."""
    if streamed_to_end:
        return ("the pod was deleted as this attempt ended: its log was followed to the end of the stream but could "
                "not be read again to confirm that end")
    return "the pod was deleted before its log was read to its end"


def _chunks(resp: Any) -> Iterator[bytes]:
    """The response body in chunks as they arrive. A follow cut by ``shutdown()`` must not deliver another byte
    (``shutdown`` on a TLS socket drops the TLS layer, so what is read after it can be raw TLS records): the
    caller checks whether it was cut before using each chunk."""
    yield from resp.stream(CHUNK_BYTES)


def _reason(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    with contextlib.suppress(Exception):
        return str(json.loads(body or "")["message"])
    return str(getattr(exc, "reason", "") or type(exc).__name__)
