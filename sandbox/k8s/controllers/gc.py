"""The garbage collector: ownerReferences-driven cascading deletion, as kube-controller-manager's GC.

- **Background** (and dangling references): when an owner disappears, each dependent that still points
  at it is deleted, unless another of its owners still exists, in which case only the dangling
  reference is removed (real GC: "solid" vs "dangling" owners). At startup every object whose owners are
  all gone is treated the same way, so nothing leaks across restarts.
- **Orphan** needs nothing here: the store strips the ownerReferences before the owner goes.
- **Foreground**: an owner with `deletionTimestamp` and the `foregroundDeletion` finalizer gets its
  blocking dependents (`blockOwnerDeletion: true`) deleted (Foreground again when they have dependents
  of their own); once none of them exists any more (pods included, which may take a graceful
  termination), the finalizer is removed and the store finishes the owner's deletion.

Work is event driven (store watches on every resource) and done in synchronous ticks: an owner's
dependents come from the store's reverse ownerReference index (`store.dependents(uid)`), never from
scanning all objects, except once at startup.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from .. import errors
from ..resources import RESOURCES
from ..store import Obj, WatchEvent
from .base import Informer, InformerController

if TYPE_CHECKING:
    from ..cluster import KubeCluster

FOREGROUND = "foregroundDeletion"
TICK_S = 0.05
RESYNC_S = 1.0
#: Dependents deleted per tick at most (Background cascades and Foreground deletions together); the rest wait for the
#: next tick. kube-controller-manager's GC works from a rate-limited queue with 20 workers (``--concurrent-gc-syncs``),
#: each delete an API call, so it never removes a Job's 100,000 pods in one go either; here the bound keeps every
#: watcher's queue (each DELETED event holds its object until every watcher has read it) to a batch at a time rather
#: than every pod at once.
#: https://kubernetes.io/docs/reference/command-line-tools-reference/kube-controller-manager/
BATCH = 500


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


class GarbageCollector(InformerController):
    def __init__(self, cluster: KubeCluster) -> None:
        self.cluster = cluster
        self.store = cluster.store
        self.gone: set[str] = set()  # owners that disappeared: their dependents need a look
        self.check: set[str] = set()  # objects whose owners may be gone
        self.foreground: set[str] = set()  # owners being deleted in the foreground
        self.dirty_foreground: set[str] = set()
        self.informer: Informer | None = None
        self.deleted = 0  # dependents deleted (tests read it)
        self.cascades: deque[Iterator[tuple[str, Obj]]] = deque()  # dependents of gone owners still to look at
        self.budget = BATCH  # deletions left in this tick

    async def run(self) -> None:
        self.gone.clear()
        self.check.clear()
        self.foreground.clear()
        self.dirty_foreground.clear()
        self.cascades.clear()
        self.informer = Informer(self.store, [r.plural for r in RESOURCES], self._on_event)
        self.informer.start()
        last_resync = time.monotonic()
        try:
            while True:
                busy = self.gone or self.check or self.dirty_foreground or self.cascades
                await self.informer.wait(TICK_S if busy else RESYNC_S)
                if time.monotonic() - last_resync >= RESYNC_S:
                    self.dirty_foreground |= self.foreground  # retry what an error may have left
                    last_resync = time.monotonic()
                self.tick()
        finally:
            self.informer.close()

    # ---------------------------------------------------------------- events

    def _on_event(self, event: WatchEvent) -> None:
        meta = _meta(event.obj)
        uid = meta.get("uid")
        if not uid:
            return
        if event.type == "DELETED":
            self.foreground.discard(uid)
            if uid in self.store.dependents_of:
                self.gone.add(uid)
        else:
            if meta.get("deletionTimestamp") and FOREGROUND in (meta.get("finalizers") or ()):
                self.foreground.add(uid)
                self.dirty_foreground.add(uid)
            if meta.get("ownerReferences"):
                self.check.add(uid)
        for ref in meta.get("ownerReferences") or []:
            if ref.get("uid") in self.foreground:
                self.dirty_foreground.add(ref["uid"])

    # ---------------------------------------------------------------- work

    def tick(self) -> None:
        gone, self.gone = self.gone, set()
        self.cascades.extend(self.store.dependents(owner) for owner in gone)
        self.budget = BATCH  # shared by the Background cascades and the Foreground deletions below
        while self.cascades and self.budget > 0:
            for plural, dep in self.cascades[0]:
                if self._dangling(plural, dep):
                    self.budget -= 1
                    if self.budget == 0:
                        break
            else:
                self.cascades.popleft()  # every dependent of that owner looked at
        check, self.check = self.check, set()
        for uid in check:
            found = self._lookup(uid)
            if found is not None:
                self._dangling(*found)
        dirty, self.dirty_foreground = self.dirty_foreground, set()
        for uid in dirty:
            self._foreground(uid)

    def _lookup(self, uid: str) -> tuple[str, Obj] | None:
        return self.store.peek_uid(uid)

    def _dangling(self, plural: str, obj: Obj) -> bool:
        """Delete `obj` if all its owners are gone; drop dangling references if only some are. True: it wrote."""
        meta = _meta(obj)
        refs = meta.get("ownerReferences") or []
        dead = [r for r in refs if not self.store.exists_uid(r.get("uid", ""))]
        if not dead:
            return False
        if len(dead) < len(refs):
            dead_uids = {r.get("uid") for r in dead}

            def strip(o: Obj) -> None:
                o["metadata"]["ownerReferences"] = [r for r in o["metadata"].get("ownerReferences") or []
                                                    if r.get("uid") not in dead_uids]

            self._write(lambda: self.store.mutate(plural, meta.get("namespace"), meta["name"], strip))
            return True
        if not meta.get("deletionTimestamp"):
            self._delete(plural, obj, "Background")
            return True
        return False

    def _foreground(self, uid: str) -> None:
        found = self._lookup(uid)
        if found is None:
            self.foreground.discard(uid)
            return
        plural, owner = found
        meta = _meta(owner)
        if not meta.get("deletionTimestamp") or FOREGROUND not in (meta.get("finalizers") or ()):
            self.foreground.discard(uid)
            return
        blocking = 0
        for dep_plural, dep in self.store.dependents(uid):
            if not any(r.get("uid") == uid and r.get("blockOwnerDeletion") for r in
                       _meta(dep).get("ownerReferences") or []):
                continue
            blocking += 1
            if not _meta(dep).get("deletionTimestamp"):
                if self.budget <= 0:
                    self.dirty_foreground.add(uid)  # this tick's batch is spent: the rest next tick
                    return
                self.budget -= 1
                has_own = bool(self.store.dependents_of.get(_meta(dep).get("uid", "")))
                self._delete(dep_plural, dep, "Foreground" if has_own else "Background")
        if blocking:
            return

        def drop(o: Obj) -> None:
            o["metadata"]["finalizers"] = [f for f in o["metadata"].get("finalizers") or [] if f != FOREGROUND]

        self._write(lambda: self.store.mutate(plural, meta.get("namespace"), meta["name"], drop))

    def _delete(self, plural: str, obj: Obj, policy: str) -> None:
        meta = _meta(obj)
        ok = self._write(lambda: self.store.delete(plural, meta.get("namespace"), meta["name"],
                                                   propagation_policy=policy, precondition_uid=meta["uid"]))
        if ok:
            self.deleted += 1

    @staticmethod
    def _write(fn: Callable[[], object]) -> bool:
        try:
            fn()
        except errors.ApiError:
            return False  # gone or changed meanwhile: the next event brings it back if it matters
        return True
