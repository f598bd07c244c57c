"""What every in-process controller shares: an informer over store watches and a few small helpers.

A real controller is an informer (list + watch into a local cache) feeding a work queue. Here the
"cache" is the store's own objects: a watch event carries the stored dict itself, which the store never
mutates (every write replaces the dict), so a controller may keep references to event objects as its
cache as long as it never changes them.

`Informer` opens one store watch per resource, hands the initial state (synthetic ADDED events) to the
controller synchronously before anything else runs (so a controller never sees a pod before the Job
that owns it), then pumps later events to the same callback from one task per watch and wakes the
controller's loop. The loop then does its work in one synchronous pass, which on a single event loop
means no locks and no interleaving with other writers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from ..store import Obj, Store, Watcher, WatchEvent

EventHandler = Callable[[WatchEvent], None]


class InformerController:
    """A controller whose loop runs on an `Informer`: stopping it closes the informer's watches."""

    informer: Informer | None = None

    async def stop(self) -> None:
        if self.informer is not None:
            self.informer.close()


class Informer:
    """Watches `plurals` and calls `handler` for every event; `wait()` sleeps until something happened."""

    def __init__(self, store: Store, plurals: Iterable[str], handler: EventHandler) -> None:
        self.store = store
        self.plurals = tuple(plurals)
        self.handler = handler
        self.watchers: list[Watcher] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.wake = asyncio.Event()

    def start(self) -> None:
        """Open the watches and deliver the current state, in `plurals` order, before returning."""
        self.watchers = [self.store.watch(plural) for plural in self.plurals]
        for watcher in self.watchers:
            while not watcher.queue.empty():
                event = watcher.queue.get_nowait()
                if event is not None:
                    self.handler(event)
        self.tasks = [asyncio.create_task(self._pump(w), name=f"informer-{w.plural}") for w in self.watchers]
        self.wake.set()

    async def _pump(self, watcher: Watcher) -> None:
        async for event in watcher:
            self.handler(event)
            self.wake.set()

    async def wait(self, timeout: float | None) -> None:
        """Return when an event arrived or after `timeout` seconds; re-raise a crashed pump's error."""
        for task in self.tasks:
            if task.done():
                task.result()  # raises the pump's exception; a clean end means the watch closed
                raise RuntimeError(f"watch {task.get_name()} ended")
        if timeout is None or timeout > 0:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that arrives as
            # the event fires, and the controller would then never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.wake.wait()
        self.wake.clear()

    def close(self) -> None:
        for watcher in self.watchers:
            watcher.close()
        for task in self.tasks:
            task.cancel()
        self.watchers, self.tasks = [], []


def newer(cached: Obj | None, obj: Obj) -> bool:
    """True when `obj` is a later version than `cached` (events can trail a controller's own writes)."""
    if cached is None:
        return True
    return int(obj["metadata"]["resourceVersion"]) > int(cached["metadata"]["resourceVersion"])


def parse_time(value: Any) -> float | None:
    """An RFC 3339 timestamp as epoch seconds, or None."""
    if not value or not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def iso(ts: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if ts is None else ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def key_of(obj: Obj) -> tuple[str, str]:
    meta = obj["metadata"]
    return meta.get("namespace") or "", meta["name"]
