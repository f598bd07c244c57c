"""Process-group helpers for the virtual node: signalling and memory-limit enforcement.

Every container process starts in its own session (`start_new_session=True`), so its session id and
process group id equal its pid, and everything it forks stays in that session unless it calls setsid
itself. A container is therefore "the session": signals go to the process group, and memory is the sum
of the resident set sizes of all processes in the session.

Memory limits are enforced by sampling, not by a cgroup (which would need root and cgroup v2
delegation): `MemoryWatch` reads `/proc/<pid>/stat` of every process every `interval` seconds (100 ms)
while at least one container with `resources.limits.memory` runs, sums the `rss` field per session and
SIGKILLs a session that is over its limit; the node then reports `OOMKilled`, exit code 137. A process
that allocates and frees faster than the sampling interval can exceed its limit briefly without being
killed. RLIMIT_AS is deliberately not used: it makes allocations fail (MemoryError) instead of killing,
which is not what a container runtime does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to a process group; False when the group is gone."""
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def session_rss() -> dict[int, int]:
    """Resident bytes per session id, over all readable processes."""
    totals: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                raw = fh.read()
        except OSError:
            continue
        fields = raw[raw.rfind(b")") + 2:].split()
        if len(fields) < 22:
            continue
        sid = int(fields[3])
        totals[sid] = totals.get(sid, 0) + int(fields[21]) * PAGE_SIZE
    return totals


@dataclass
class Limited:
    limit: int
    oom_killed: bool = False
    peak: int = 0


class MemoryWatch:
    """Samples memory of limited sessions and kills those over their limit (see module docstring)."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.sessions: dict[int, Limited] = {}
        self._task: asyncio.Task[None] | None = None

    def add(self, sid: int, limit: int) -> Limited:
        entry = Limited(limit)
        self.sessions[sid] = entry
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="memory-watch")
        return entry

    def remove(self, sid: int) -> None:
        self.sessions.pop(sid, None)

    def check_once(self) -> None:
        if not self.sessions:
            return
        totals = session_rss()
        for sid, entry in list(self.sessions.items()):
            used = totals.get(sid, 0)
            entry.peak = max(entry.peak, used)
            if used > entry.limit and not entry.oom_killed:
                entry.oom_killed = True
                signal_group(sid, signal.SIGKILL)

    async def _loop(self) -> None:
        while self.sessions:
            self.check_once()
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
