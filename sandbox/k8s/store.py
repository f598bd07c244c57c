"""The object store behind the sandbox's Kubernetes API: what etcd + the generic registry do.

One store per sandbox cluster. Everything runs on one asyncio event loop, so the store's methods are plain
synchronous functions with no locks: a method runs to completion before any other coroutine sees the store.

- Objects are kept per resource in dicts keyed by (namespace, name), each as its JSON compressed with a
  per-resource preset dictionary (`Codec`: a pod of a 100,000-pod Job is about 200 bytes instead of the
  ~15 KB of its dict form). Readers get decoded copies, so nobody can change stored state except through
  create/update/delete, which is where resourceVersions and watch events come from.
- `resourceVersion` is one global counter. Every change appends a compact `HistoryEntry` to a bounded
  history ring, which serves watches that start from an older version; a version older than the ring
  answers 410 Gone (the real watch cache is bounded too).
- Resources can have a TTL (`ttl`: events, as kube-apiserver's `--event-ttl`, default 1 h): an object not
  written for that long is deleted by `expire()` (a DELETED watch event), as etcd's lease expiry does.
- `save()` streams the objects to the state file; it runs at most about once a second and backs off so that
  saving a large store takes no more than a small share of the time.
- Watchers are queues. A change is matched against each watcher's selectors once; an object that stops
  matching (labels or fields changed) is sent as DELETED to that watcher, one that starts matching as
  ADDED, as the real watch cache does.
- Admission (defaulting and validation) is a pluggable callable, run on every create and update, so the
  in-process controllers get the same treatment as HTTP clients.
- Deletion follows Kubernetes: an object with finalizers only gets `deletionTimestamp`; a pod that is
  bound to a node is deleted gracefully (the node finishes the deletion); `propagationPolicy`
  Orphan strips ownerReferences from dependents, Foreground adds the `foregroundDeletion` finalizer and
  the garbage collector (a controller) removes dependents first.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from . import errors
from .resources import BY_PLURAL, RESOURCES, ResourceType
from .selectors import Matcher, parse_field_selector, parse_label_selector

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace or "", name)

# Admission(plural, operation, new_obj, old_obj) mutates new_obj (defaults) or raises ApiError.
Admission = Callable[[str, str, Obj, Obj | None], None]

GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def clone(obj: Any) -> Any:
    return orjson.loads(orjson.dumps(obj))


@dataclass
class WatchEvent:
    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    plural: str
    obj: Obj
    old: Obj | None = None


class HistoryEntry:
    """A watch event as the history ring keeps it: the encoded objects (shared with the store's own copy)."""

    __slots__ = ("rv", "type", "plural", "raw", "old_raw")

    def __init__(self, rv: int, type_: str, plural: str, raw: bytes, old_raw: bytes | None) -> None:
        self.rv = rv
        self.type = type_
        self.plural = plural
        self.raw = raw
        self.old_raw = old_raw


class Codec:
    """Stored objects as raw-deflate-compressed JSON with a preset dictionary per resource.

    The dictionary of a resource is the JSON of the first object of that resource encoded since start-up
    (objects of one kind, e.g. the pods of one Job, share most of their bytes). Decoding gives back exactly
    the JSON that was encoded, so every response is what it would be from plain dicts."""

    WBITS = -14  # raw deflate, 16 KiB window (a preset dictionary longer than that is cut to its tail)
    MEM_LEVEL = 5

    def __init__(self) -> None:
        self.zdicts: dict[str, bytes] = {}

    def encode_json(self, plural: str, data: bytes) -> bytes:
        zdict = self.zdicts.get(plural)
        if zdict is None:
            zdict = self.zdicts[plural] = data[-(1 << -self.WBITS):]
        comp = zlib.compressobj(6, zlib.DEFLATED, self.WBITS, self.MEM_LEVEL, zdict=zdict)
        return comp.compress(data) + comp.flush()

    def encode(self, plural: str, obj: Obj) -> bytes:
        return self.encode_json(plural, orjson.dumps(obj))

    def json(self, plural: str, raw: bytes) -> bytes:
        return zlib.decompressobj(self.WBITS, zdict=self.zdicts[plural]).decompress(raw)

    def decode(self, plural: str, raw: bytes) -> Obj:
        obj: Obj = orjson.loads(self.json(plural, raw))
        return obj


@dataclass
class ListResult:
    items: list[Obj]
    resource_version: str
    continue_token: str | None = None
    remaining: int | None = None


@dataclass(eq=False)
class Watcher:
    """One open watch. Iterate with `async for event in watcher` or call `next_event()`."""

    plural: str
    namespace: str | None
    label: Matcher | None
    field: Matcher | None
    queue: asyncio.Queue[WatchEvent | None] = field(default_factory=asyncio.Queue)
    closed: bool = False
    on_close: Callable[[Watcher], None] | None = None

    def matches(self, obj: Obj) -> bool:
        if self.namespace and obj.get("metadata", {}).get("namespace") != self.namespace:
            return False
        if self.label and not self.label(obj):
            return False
        return not (self.field and not self.field(obj))

    def offer(self, event: WatchEvent) -> None:
        """Translate a store event into what this watcher should see, if anything."""
        if self.closed or event.plural != self.plural:
            return
        now = self.matches(event.obj)
        if event.type == "MODIFIED" and event.old is not None:
            before = self.matches(event.old)
            if before and not now:
                self.queue.put_nowait(WatchEvent(event.rv, "DELETED", event.plural, event.obj))
                return
            if now and not before:
                self.queue.put_nowait(WatchEvent(event.rv, "ADDED", event.plural, event.obj))
                return
        if now:
            self.queue.put_nowait(event)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)
            if self.on_close:
                self.on_close(self)

    def __aiter__(self) -> Watcher:
        return self

    async def __anext__(self) -> WatchEvent:
        event = await self.queue.get()
        if event is None:
            raise StopAsyncIteration
        return event


class Store:
    def __init__(
        self,
        *,
        history_size: int = 50_000,
        admission: Admission | None = None,
        state_file: Path | None = None,
        ttl: dict[str, float] | None = None,
    ) -> None:
        self.rv = 0
        self.codec = Codec()
        # plural -> (namespace, name) -> the object, encoded by `codec`
        self.objects: dict[str, dict[Key, bytes]] = {r.plural: {} for r in RESOURCES}
        self.by_uid: dict[str, tuple[str, Key]] = {}
        self.dependents_of: dict[str, set[tuple[str, Key]]] = {}
        self.history: deque[HistoryEntry] = deque(maxlen=history_size)
        # A continue token expires this long after its list's first page, the earliest a real one can: kube-apiserver
        # compacts etcd every 5 minutes (--etcd-compaction-interval,
        # https://kubernetes.io/docs/reference/command-line-tools-reference/kube-apiserver/) to the revision of the
        # compaction before, so a revision goes 5 to 10 minutes after it was written.
        self.compaction_interval_s = 300.0
        # (plural, a paged list's resourceVersion) -> (history read up to, `_changed_since`'s answer)
        self._as_of: dict[tuple[str, int], tuple[int, dict[Key, bytes | None]]] = {}
        # plural -> seconds an object lives after its last write (events: kube-apiserver's --event-ttl)
        self.ttl: dict[str, float] = dict(ttl or {})
        # plural -> (deadline, key, resourceVersion written), in write order (so in deadline order); see expire()
        self._expiry: dict[str, deque[tuple[float, Key, int]]] = {plural: deque() for plural in self.ttl}
        self._next_save = 0.0
        self.clock: Callable[[], float] = time.monotonic  # for TTLs (tests replace it)
        self.watchers: set[Watcher] = set()
        self.admission = admission
        self.state_file = state_file
        self._dirty = False
        self.listeners: list[Callable[[WatchEvent], None]] = []
        if state_file and state_file.exists():
            self._load(state_file)

    # ---------------------------------------------------------------- reading

    @staticmethod
    def rtype(plural: str) -> ResourceType:
        return BY_PLURAL[plural]

    def _key(self, rt: ResourceType, namespace: str | None, name: str) -> Key:
        return (namespace or "" if rt.namespaced else "", name)

    def _decode(self, plural: str, raw: bytes) -> Obj:
        return self.codec.decode(plural, raw)

    def _load_key(self, plural: str, key: Key) -> Obj | None:
        raw = self.objects[plural].get(key)
        return None if raw is None else self._decode(plural, raw)

    def peek(self, plural: str, namespace: str | None, name: str) -> Obj | None:
        """The stored object (a decoded copy) or None."""
        rt = self.rtype(plural)
        return self._load_key(plural, self._key(rt, namespace, name))

    def get(self, plural: str, namespace: str | None, name: str) -> Obj:
        obj = self.peek(plural, namespace, name)
        if obj is None:
            rt = self.rtype(plural)
            raise errors.not_found(rt.group, plural, name)
        return obj

    def peek_uid(self, uid: str) -> tuple[str, Obj] | None:
        """(plural, object) of the stored object with this uid, or None."""
        where = self.by_uid.get(uid)
        if where is None:
            return None
        obj = self._load_key(*where)
        return (where[0], obj) if obj is not None else None

    def iter_objects(self, plural: str, namespace: str | None = None) -> Iterator[Obj]:
        """The stored objects (decoded copies), for in-process controllers."""
        for (ns, _), raw in list(self.objects[plural].items()):
            if namespace is None or ns == namespace:
                yield self._decode(plural, raw)

    def list(
        self,
        plural: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> ListResult:
        rt = self.rtype(plural)
        label = parse_label_selector(label_selector)
        fieldm = parse_field_selector(field_selector, rt.field_labels, rt.kind)
        start: Key | None = None
        list_rv, listed_at = self.rv, time.time()
        if continue_token:
            try:
                decoded = orjson.loads(base64.urlsafe_b64decode(continue_token.encode()))
                start = (decoded["ns"], decoded["name"])
                list_rv, listed_at = int(decoded["rv"]), float(decoded.get("t", listed_at))
            except Exception as exc:
                raise errors.bad_request("continue key is not valid") from exc
            if time.time() - listed_at >= self.compaction_interval_s:
                raise errors.gone("The provided continue parameter is too old to display a consistent list result. "
                                  "You can start a new list without the continue parameter.")
        # Later pages are served as of the first page's version (a paged list is one snapshot): what changed
        # since is read back from the history ring, while it reaches back that far.
        changed = self._changed_since(plural, list_rv) if continue_token and list_rv < self.rv else {}
        keys = sorted(self.objects[plural])  # in creation order, mostly sorted already: near linear
        if changed:  # and those gone since the list's version: a second sorted run, merged (not a set: re-sorted)
            keys += sorted(key for key in changed if key not in self.objects[plural])
            keys.sort()
        if start is not None:
            import bisect

            keys = keys[bisect.bisect_right(keys, start):]
        items: list[Obj] = []
        next_token = None
        remaining = None
        for i, key in enumerate(keys):
            if namespace and key[0] != namespace:
                continue
            raw = changed[key] if key in changed else self.objects[plural][key]
            if raw is None:
                continue  # created after the list's version
            obj = self._decode(plural, raw)
            if label and not label(obj):
                continue
            if fieldm and not fieldm(obj):
                continue
            if limit and len(items) >= limit:
                payload = {"ns": items[-1]["metadata"].get("namespace", ""),
                           "name": items[-1]["metadata"]["name"], "rv": list_rv, "t": listed_at}
                next_token = base64.urlsafe_b64encode(orjson.dumps(payload)).decode()
                remaining = len(keys) - i
                break
            items.append(obj)
        if next_token is None:
            self._as_of.pop((plural, list_rv), None)  # the list's last page: nothing more is read as of it
        return ListResult(items, str(list_rv), next_token, remaining)

    def _changed_since(self, plural: str, since: int) -> dict[Key, bytes | None]:
        """Each object of ``plural`` written after resourceVersion ``since``, with its encoding as of ``since``
        (None: it did not exist then), for serving a list's later pages as of its first: kube-apiserver serves
        every page from the first page's resourceVersion ("Retrieving large results sets in chunks",
        https://kubernetes.io/docs/reference/using-api/api-concepts/). Kept per list while its pages are read,
        so each history entry is decoded once per list. Empty when the history ring no longer reaches back to
        ``since``: the pages are then read as the objects are now (not faithful: etcd keeps every revision until
        it is compacted, see ``compaction_interval_s``, where the ring holds a number of changes)."""
        upto, changed = self._as_of.pop((plural, since), (since, {}))
        oldest = self.history[0].rv if self.history else self.rv + 1
        if upto < oldest - 1:
            return {}
        new = []
        for entry in reversed(self.history):
            if entry.rv <= upto:
                break
            if entry.plural == plural:
                new.append(entry)
        rt = self.rtype(plural)
        for entry in reversed(new):
            meta = self._decode(plural, entry.raw)["metadata"]
            key = self._key(rt, meta.get("namespace"), meta["name"])
            if key not in changed:  # its first change after `since` holds what it was then
                changed[key] = None if entry.type == "ADDED" else (entry.old_raw or entry.raw)
        self._as_of[(plural, since)] = (self.rv, changed)
        while len(self._as_of) > 4:  # lists whose last pages were never asked for
            self._as_of.pop(next(iter(self._as_of)))
        return changed

    # ---------------------------------------------------------------- writing

    def _next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def _emit(self, etype: str, plural: str, obj: Obj, raw: bytes, old: Obj | None = None,
              old_raw: bytes | None = None) -> None:
        """Deliver a change: `obj` (shared by every watcher: nobody may mutate it) and its encoding `raw`."""
        event = WatchEvent(int(obj["metadata"]["resourceVersion"]), etype, plural, obj, old)
        self.history.append(HistoryEntry(event.rv, etype, plural, raw, old_raw))
        self._dirty = True
        for watcher in list(self.watchers):
            watcher.offer(event)
        for listener in self.listeners:
            listener(event)

    def _admit(self, plural: str, op: str, obj: Obj, old: Obj | None) -> None:
        if self.admission:
            self.admission(plural, op, obj, old)

    def create(self, plural: str, obj: Obj, *, namespace: str | None = None, dry_run: bool = False) -> Obj:
        rt = self.rtype(plural)
        obj = clone(obj)
        meta = obj.setdefault("metadata", {})
        obj["apiVersion"] = rt.api_version
        obj["kind"] = rt.kind
        if rt.namespaced:
            ns = namespace or meta.get("namespace") or "default"
            if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = ns
            nsobj = self.peek("namespaces", None, ns)
            if nsobj is None:
                raise errors.not_found("", "namespaces", ns)
            if nsobj.get("metadata", {}).get("deletionTimestamp"):
                raise errors.ApiError(
                    403, "Forbidden",
                    f'{plural} "{meta.get("name") or meta.get("generateName", "")}" is forbidden: unable to '
                    f"create new content in namespace {ns} because it is being terminated",
                )
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            for _ in range(20):
                candidate = meta["generateName"] + "".join(random.choices(GENERATE_ALPHABET, k=5))
                if self._key(rt, meta.get("namespace"), candidate) not in self.objects[plural]:
                    meta["name"] = candidate
                    break
        meta.pop("uid", None)  # a client's uid never survives; admission may assign one (a Job's selector)
        self._admit(plural, "CREATE", obj, None)
        key = self._key(rt, meta.get("namespace"), meta["name"])
        if key in self.objects[plural]:
            raise errors.already_exists(rt.group, plural, meta["name"])
        for k in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion", "selfLink"):
            meta.pop(k, None)
        meta["uid"] = meta.get("uid") or str(uuid.uuid4())
        meta["creationTimestamp"] = now_iso()
        if rt.has_status or plural == "jobs":
            meta["generation"] = 1
        if dry_run:
            meta["resourceVersion"] = str(self.rv)
            return clone(obj)
        meta["resourceVersion"] = str(self._next_rv())
        raw = self._put(plural, key, obj, None)
        self._emit("ADDED", plural, obj, raw)
        return self._decode(plural, raw)

    def _put(self, plural: str, key: Key, obj: Obj, old: Obj | None) -> bytes:
        """Store `obj` (replacing `old`, the decoded current object, if any); returns its encoding."""
        if old is not None:
            for ref in old["metadata"].get("ownerReferences") or []:
                self.dependents_of.get(ref.get("uid"), set()).discard((plural, key))
        raw = self.codec.encode(plural, obj)
        self.objects[plural][key] = raw
        uid = obj["metadata"]["uid"]
        self.by_uid[uid] = (plural, key)
        for ref in obj["metadata"].get("ownerReferences") or []:
            self.dependents_of.setdefault(ref.get("uid"), set()).add((plural, key))
        ttl = self.ttl.get(plural)
        if ttl is not None:
            self._expiry[plural].append((self.clock() + ttl, key, int(obj["metadata"]["resourceVersion"])))
        return raw

    def _remove(self, plural: str, key: Key) -> Obj:
        obj = self._decode(plural, self.objects[plural].pop(key))
        uid = obj["metadata"]["uid"]
        self.by_uid.pop(uid, None)
        for ref in obj["metadata"].get("ownerReferences") or []:
            deps = self.dependents_of.get(ref.get("uid"))
            if deps is not None:
                deps.discard((plural, key))
                if not deps:
                    self.dependents_of.pop(ref.get("uid"), None)
        return obj

    def update(
        self,
        plural: str,
        obj: Obj,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        namespace: str | None = None,
        name: str | None = None,
    ) -> Obj:
        """Replace an object (PUT). A given resourceVersion must match the stored one (else 409).

        With `subresource="status"` only `.status` changes; on the main resource `.status` is kept
        for kinds that have a status subresource, and `generation` moves when anything else changes.
        """
        rt = self.rtype(plural)
        obj = clone(obj)
        meta = obj.setdefault("metadata", {})
        name = name or meta.get("name")
        namespace = namespace if namespace is not None else meta.get("namespace")
        key = self._key(rt, namespace, name or "")
        current_raw = self.objects[plural].get(key)
        if current_raw is None:
            raise errors.not_found(rt.group, plural, name or "")
        current = self._decode(plural, current_raw)
        if meta.get("name") and meta["name"] != name:
            raise errors.bad_request("the name of the object does not match the name on the URL")
        want_rv = meta.get("resourceVersion")
        if want_rv and want_rv != current["metadata"]["resourceVersion"]:
            raise errors.conflict(rt.group, plural, name or "")
        new = self._decode(plural, current_raw)
        if subresource == "status":
            new["status"] = obj.get("status", {})
        else:
            for k, v in obj.items():
                if k in ("metadata", "status", "apiVersion", "kind"):
                    continue
                new[k] = v
            for k in [k for k in new if k not in obj and k not in ("metadata", "status", "apiVersion", "kind")]:
                del new[k]
            if not rt.has_status and "status" in obj:
                new["status"] = obj["status"]
            cur_meta = current["metadata"]
            new_meta = new["metadata"]
            for k in ("labels", "annotations", "finalizers", "ownerReferences"):
                if meta.get(k):
                    new_meta[k] = meta[k]
                else:
                    new_meta.pop(k, None)
            # immutable fields stay as stored
            for k in ("uid", "creationTimestamp", "namespace", "name", "generateName", "deletionTimestamp",
                      "deletionGracePeriodSeconds"):
                if k in cur_meta:
                    new_meta[k] = cur_meta[k]
            self._admit(plural, "UPDATE", new, current)
            if "generation" in cur_meta:
                changed = any(new.get(k) != current.get(k) for k in set(new) | set(current)
                              if k not in ("metadata", "status"))
                new_meta["generation"] = cur_meta["generation"] + (1 if changed else 0)
        if subresource == "status":
            self._admit(plural, "UPDATE_STATUS", new, current)
        new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        if new == current:
            return current  # a no-op write keeps the resourceVersion, as the real server does
        if dry_run:
            return new
        new["metadata"]["resourceVersion"] = str(self._next_rv())
        # A finalizer list emptied on an object being deleted completes its deletion, unless a graceful
        # deletion is still running (a pod whose kubelet has not finished: grace > 0), as the real
        # registry's shouldDeleteDuringUpdate decides.
        if (new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers")
                and not current["metadata"].get("deletionGracePeriodSeconds")):
            self._put(plural, key, new, current)
            self._finish_delete(plural, key)
            return new
        raw = self._put(plural, key, new, current)
        self._emit("MODIFIED", plural, new, raw, current, current_raw)
        return self._decode(plural, raw)

    def bind(self, namespace: str | None, name: str, node_name: str, *, uid: str | None = None) -> Obj:
        """The pods/binding subresource: set `spec.nodeName` and `PodScheduled=True` in one write.

        Like the real registry it refuses a pod that is already bound (409) or being deleted."""
        key = self._key(self.rtype("pods"), namespace, name)
        current_raw = self.objects["pods"].get(key)
        current = self._decode("pods", current_raw) if current_raw is not None else None
        if current is None or current_raw is None or (uid and current["metadata"]["uid"] != uid):
            raise errors.not_found("", "pods", name)
        if (current.get("spec") or {}).get("nodeName"):
            raise errors.ApiError(409, "Conflict", f"pod {name} is already assigned to node "
                                  f"\"{current['spec']['nodeName']}\"")
        if current["metadata"].get("deletionTimestamp"):
            raise errors.ApiError(409, "Conflict", f"pod {name} is being deleted, cannot be assigned to a host")
        new = self._decode("pods", current_raw)
        new.setdefault("spec", {})["nodeName"] = node_name
        status = new.setdefault("status", {})
        status.setdefault("phase", "Pending")
        conditions = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
        conditions.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                           "lastTransitionTime": now_iso()})
        status["conditions"] = conditions
        new["metadata"]["resourceVersion"] = str(self._next_rv())
        raw = self._put("pods", key, new, current)
        self._emit("MODIFIED", "pods", new, raw, current, current_raw)
        return self._decode("pods", raw)

    def mutate(self, plural: str, namespace: str | None, name: str, fn: Callable[[Obj], None],
               *, subresource: str | None = None) -> Obj:
        """Read-modify-write for in-process controllers: fn changes a copy, which is then updated."""
        obj = self.get(plural, namespace, name)
        fn(obj)
        return self.update(plural, obj, subresource=subresource, namespace=namespace, name=name)

    def delete(
        self,
        plural: str,
        namespace: str | None,
        name: str,
        *,
        propagation_policy: str | None = None,
        grace_period_seconds: int | None = None,
        precondition_uid: str | None = None,
        precondition_rv: str | None = None,
        dry_run: bool = False,
    ) -> tuple[Obj, bool]:
        """Delete an object. Returns (object, finished): finished is False when deletion is pending
        (finalizers or a graceful pod termination), so the API answers 200 with the object, or 202."""
        rt = self.rtype(plural)
        key = self._key(rt, namespace, name)
        current_raw = self.objects[plural].get(key)
        if current_raw is None:
            raise errors.not_found(rt.group, plural, name)
        current = self._decode(plural, current_raw)
        meta = current["metadata"]
        if precondition_uid and precondition_uid != meta["uid"]:
            raise errors.ApiError(409, "Conflict", f"Precondition failed: UID in precondition: "
                                  f"{precondition_uid}, UID in object meta: {meta['uid']}")
        if precondition_rv and precondition_rv != meta["resourceVersion"]:
            raise errors.conflict(rt.group, plural, name)
        if dry_run:
            return current, True
        if propagation_policy is None:
            # Jobs (batch/v1) default to Orphan for backwards compatibility, everything else to Background.
            propagation_policy = "Orphan" if plural == "jobs" else "Background"
        if propagation_policy == "Orphan":
            self._orphan_dependents(meta["uid"])
        new = self._decode(plural, current_raw)
        nmeta = new["metadata"]
        finalizers = list(nmeta.get("finalizers") or [])
        if (propagation_policy == "Foreground" and self.dependents_of.get(meta["uid"])
                and "foregroundDeletion" not in finalizers):
            finalizers.append("foregroundDeletion")
        graceful = (
            plural == "pods"
            and (current.get("spec") or {}).get("nodeName")
            and (current.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            and grace_period_seconds != 0
        )
        if plural == "namespaces":
            # namespaces are emptied by the namespace controller before they disappear
            finalizers = finalizers or []
            new.setdefault("spec", {})["finalizers"] = ["kubernetes"]
            new.setdefault("status", {})["phase"] = "Terminating"
        if finalizers or graceful or plural == "namespaces":
            if nmeta.get("deletionTimestamp") and not graceful and nmeta.get("finalizers") == finalizers:
                return current, False
            nmeta.setdefault("deletionTimestamp", now_iso())
            if graceful:
                spec_grace = (current.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
                grace = spec_grace if grace_period_seconds is None else grace_period_seconds
                old_grace = nmeta.get("deletionGracePeriodSeconds")
                nmeta["deletionGracePeriodSeconds"] = min(grace, old_grace) if old_grace is not None else grace
            else:
                nmeta.setdefault("deletionGracePeriodSeconds", 0)
            nmeta["finalizers"] = finalizers
            if not finalizers:
                nmeta.pop("finalizers")
            if new == current:
                return current, False
            nmeta["resourceVersion"] = str(self._next_rv())
            raw = self._put(plural, key, new, current)
            self._emit("MODIFIED", plural, new, raw, current, current_raw)
            return self._decode(plural, raw), False
        self._finish_delete(plural, key)
        return current, True

    def _finish_delete(self, plural: str, key: Key) -> None:
        obj = self._remove(plural, key)
        obj["metadata"]["resourceVersion"] = str(self._next_rv())
        self._emit("DELETED", plural, obj, self.codec.encode(plural, obj))

    def finish_delete(self, plural: str, namespace: str | None, name: str) -> None:
        """End a graceful deletion (what the kubelet's final delete with grace 0 does).

        Like the real registry, an object that still has finalizers (e.g. the Job controller's
        `batch.kubernetes.io/job-tracking`) is not removed: its grace period drops to 0 and removing
        the last finalizer then removes it."""
        rt = self.rtype(plural)
        key = self._key(rt, namespace, name)
        current_raw = self.objects[plural].get(key)
        if current_raw is None:
            return
        current = self._decode(plural, current_raw)
        meta = current["metadata"]
        if not meta.get("finalizers"):
            self._finish_delete(plural, key)
            return
        if meta.get("deletionTimestamp") and meta.get("deletionGracePeriodSeconds") == 0:
            return
        new = self._decode(plural, current_raw)
        new["metadata"].setdefault("deletionTimestamp", now_iso())
        new["metadata"]["deletionGracePeriodSeconds"] = 0
        new["metadata"]["resourceVersion"] = str(self._next_rv())
        raw = self._put(plural, key, new, current)
        self._emit("MODIFIED", plural, new, raw, current, current_raw)

    def _orphan_dependents(self, owner_uid: str) -> None:
        for plural, key in list(self.dependents_of.get(owner_uid, ())):
            dep_raw = self.objects[plural].get(key)
            if dep_raw is None:
                continue
            dep = self._decode(plural, dep_raw)
            refs = [r for r in dep["metadata"].get("ownerReferences") or [] if r.get("uid") != owner_uid]
            new = self._decode(plural, dep_raw)
            if refs:
                new["metadata"]["ownerReferences"] = refs
            else:
                new["metadata"].pop("ownerReferences", None)
            new["metadata"]["resourceVersion"] = str(self._next_rv())
            raw = self._put(plural, key, new, dep)
            self._emit("MODIFIED", plural, new, raw, dep, dep_raw)

    def dependents(self, owner_uid: str) -> Iterator[tuple[str, Obj]]:
        """(plural, decoded copy) of each object that names ``owner_uid`` in its ownerReferences, decoded one at a
        time as the caller goes (a Job's 100,000 pods decoded at once would be ~1.5 GB); the set of keys is taken
        when the iteration starts, and objects deleted since are skipped."""
        for plural, key in list(self.dependents_of.get(owner_uid, ())):
            obj = self._load_key(plural, key)
            if obj is not None:
                yield plural, obj

    def expire(self, now: float | None = None) -> int:
        """Delete the objects of TTL'd resources not written for their TTL (etcd lease expiry); returns how
        many. A DELETED watch event goes out for each, as it does when etcd expires a lease."""
        now = self.clock() if now is None else now
        done = 0
        for plural, due in self._expiry.items():
            while due and due[0][0] <= now:
                _, key, rv = due.popleft()
                raw = self.objects[plural].get(key)
                if raw is None:
                    continue
                obj = self._decode(plural, raw)
                if int(obj["metadata"]["resourceVersion"]) != rv:
                    continue  # written again since: a later entry holds its deadline
                self._finish_delete(plural, key)
                done += 1
        return done

    def exists_uid(self, uid: str) -> bool:
        return uid in self.by_uid

    # ---------------------------------------------------------------- watching

    def watch(
        self,
        plural: str,
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        send_initial: bool | None = None,
    ) -> Watcher:
        """Open a watch. From `resource_version` N, replay later events; empty/"0" sends current state
        as ADDED first. Raises ApiError 410 when N is older than the history kept."""
        rt = self.rtype(plural)
        watcher = Watcher(
            plural,
            namespace if rt.namespaced else None,
            parse_label_selector(label_selector),
            parse_field_selector(field_selector, rt.field_labels, rt.kind),
        )
        watcher.on_close = self.watchers.discard
        if not resource_version or resource_version == "0" or send_initial:
            for obj in sorted(self.iter_objects(plural, watcher.namespace),
                              key=lambda o: int(o["metadata"]["resourceVersion"])):
                if watcher.matches(obj):
                    watcher.queue.put_nowait(
                        WatchEvent(int(obj["metadata"]["resourceVersion"]), "ADDED", plural, obj))
        else:
            try:
                since = int(resource_version)
            except ValueError as exc:
                raise errors.bad_request(f"invalid resource version: {resource_version}") from exc
            oldest = self.history[0].rv if self.history else self.rv + 1
            if since < oldest - 1 and since < self.rv:
                raise errors.gone(f"too old resource version: {since} ({oldest - 1})")
            for entry in self.history:
                if entry.rv > since and entry.plural == plural:
                    watcher.offer(self._replay(entry))
        self.watchers.add(watcher)
        return watcher

    def _replay(self, entry: HistoryEntry) -> WatchEvent:
        obj = self._decode(entry.plural, entry.raw)
        old = self._decode(entry.plural, entry.old_raw) if entry.old_raw is not None else None
        return WatchEvent(entry.rv, entry.type, entry.plural, obj, old)

    # ---------------------------------------------------------------- persistence

    def _snapshot_chunks(self) -> Iterable[bytes]:
        yield b'{"rv":%d,"objects":{' % self.rv
        for i, (plural, objs) in enumerate(self.objects.items()):
            yield (b"," if i else b"") + orjson.dumps(plural) + b":["
            for j, raw in enumerate(list(objs.values())):
                yield (b"," if j else b"") + self.codec.json(plural, raw)
            yield b"]"
        yield b"}}"

    def snapshot(self) -> bytes:
        return b"".join(self._snapshot_chunks())

    def save(self, *, force: bool = True) -> None:
        """Write the state file (streamed, object by object). Unforced saves (the periodic saver's) are
        spaced so that saving takes at most about a tenth of the time, however large the store grows."""
        if not self.state_file or not self._dirty:
            return
        if not force and time.monotonic() < self._next_save:
            return
        began = time.monotonic()
        tmp = self.state_file.with_suffix(".tmp")
        with open(tmp, "wb") as out:
            for chunk in self._snapshot_chunks():
                out.write(chunk)
        os.replace(tmp, self.state_file)
        self._dirty = False
        took = time.monotonic() - began
        self._next_save = time.monotonic() + 9 * took

    def _load(self, path: Path) -> None:
        data = orjson.loads(path.read_bytes())
        self.rv = int(data["rv"])
        for plural, items in data["objects"].items():
            if plural not in self.objects:
                continue
            rt = self.rtype(plural)
            for obj in items:
                meta = obj["metadata"]
                self._put(plural, self._key(rt, meta.get("namespace"), meta["name"]), obj, None)
