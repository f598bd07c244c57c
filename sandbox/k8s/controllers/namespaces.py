"""The namespace lifecycle controller: empties a Terminating namespace, then lets it go.

Deleting a namespace only marks it (`deletionTimestamp`, `status.phase: Terminating`, the store keeps
`spec.finalizers: ["kubernetes"]`). This controller then deletes every namespaced object in it, as the
real namespaced-resources deleter does: pods gracefully (the node finishes them), everything else with
Background propagation. Objects with finalizers of their own (pods with the Job controller's tracking
finalizer, PVCs with pvc-protection) stay until their controllers let them go; once nothing is left,
`spec.finalizers` is cleared (the "finalize" step) and the store removes the namespace.

The controller watches namespaces and every namespaced resource, so a terminating namespace is
re-examined as soon as something in it disappears; a slow resync covers anything missed.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from .. import errors
from ..resources import RESOURCES
from ..store import Obj, WatchEvent
from .base import Informer, InformerController

if TYPE_CHECKING:
    from ..cluster import KubeCluster

NAMESPACED = tuple(r.plural for r in RESOURCES if r.namespaced)
TICK_S = 0.05
RESYNC_S = 1.0


class NamespaceController(InformerController):
    def __init__(self, cluster: KubeCluster) -> None:
        self.cluster = cluster
        self.store = cluster.store
        self.terminating: set[str] = set()
        self.dirty: set[str] = set()
        self.informer: Informer | None = None

    async def run(self) -> None:
        self.terminating.clear()
        self.dirty.clear()
        self.informer = Informer(self.store, ("namespaces", *NAMESPACED), self._on_event)
        self.informer.start()
        try:
            while True:
                await self.informer.wait(TICK_S if self.dirty else RESYNC_S)
                if not self.dirty:
                    self.dirty |= self.terminating
                self.tick()
        finally:
            self.informer.close()

    def _on_event(self, event: WatchEvent) -> None:
        meta = event.obj.get("metadata") or {}
        if event.plural == "namespaces":
            name = meta.get("name", "")
            if event.type == "DELETED":
                self.terminating.discard(name)
                self.dirty.discard(name)
            elif meta.get("deletionTimestamp"):
                self.terminating.add(name)
                self.dirty.add(name)
        elif meta.get("namespace") in self.terminating:
            self.dirty.add(meta["namespace"])

    def tick(self) -> None:
        dirty, self.dirty = self.dirty, set()
        for name in dirty:
            if name in self.terminating:
                self.sync(name)

    def sync(self, name: str) -> None:
        """Delete what is left in namespace `name`; finalize it when nothing is."""
        ns = self.store.peek("namespaces", None, name)
        if ns is None:
            self.terminating.discard(name)
            return
        remaining = 0
        for plural in NAMESPACED:
            for obj in list(self.store.iter_objects(plural, name)):
                remaining += 1
                if not obj["metadata"].get("deletionTimestamp"):
                    self._delete(plural, obj)
        if remaining == 0:
            self._finalize(ns)

    def _delete(self, plural: str, obj: Obj) -> None:
        meta = obj["metadata"]
        policy = None if plural == "pods" else "Background"
        with contextlib.suppress(errors.ApiError):
            self.store.delete(plural, meta.get("namespace"), meta["name"], propagation_policy=policy,
                              precondition_uid=meta["uid"])

    def _finalize(self, ns: Obj) -> None:
        name = ns["metadata"]["name"]

        def clear(obj: Obj) -> None:
            obj.setdefault("spec", {})["finalizers"] = []

        with contextlib.suppress(errors.ApiError):
            if (ns.get("spec") or {}).get("finalizers"):
                self.store.mutate("namespaces", None, name, clear)
            current = self.store.peek("namespaces", None, name)
            if current is not None and not current["metadata"].get("finalizers"):
                self.store.finish_delete("namespaces", None, name)
