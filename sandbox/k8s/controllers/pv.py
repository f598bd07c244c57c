"""The PersistentVolume controller: static PVC/PV binding, reclaim and the two protection finalizers.

It mirrors kube-controller-manager's persistentvolume-binder plus the pvc/pv-protection controllers,
for statically provisioned volumes (ASK's NAS/OSS PVs are created by hand or by our code, not
provisioned by a StorageClass here):

- **Binding.** A PVC is bound to the PV named in `spec.volumeName` (pre-binding), or to a PV pre-bound
  to it through `claimRef`, or else to the smallest Available PV that fits: same storage class (an unset
  class means the default StorageClass when one exists, as the DefaultStorageClass admission plugin
  would have set it, and otherwise only class-less PVs; `""` always means class-less), every requested
  access mode offered, the same volumeMode, the `spec.selector` labels, and at least the requested
  capacity. Binding writes `pv.spec.claimRef` and `pv.status.phase: Bound`, then `pvc.spec.volumeName` and
  `pvc.status {phase: Bound, accessModes, capacity}`, with the `pv.kubernetes.io/*` annotations.
  A class with `volumeBindingMode: WaitForFirstConsumer` binds only once a pod uses the claim.
- **Reclaim.** When the bound PVC disappears the PV becomes `Released` (Retain, Recycle) or is deleted
  (Delete); a claim whose PV vanished becomes `Lost`.
- **Protection.** PVCs carry `kubernetes.io/pvc-protection`, removed once a deleted PVC is not used by
  any non-terminated pod; PVs carry `kubernetes.io/pv-protection`, removed once a deleted PV is not Bound.

Volumes and claims are few, so each pass simply walks them all; passes are triggered by watch events
(PVs, PVCs, pods, StorageClasses) and a slow resync. Events are recorded once per claim state change.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING

from .. import errors
from ..node.quantity import parse_quantity
from ..selectors import match_labels_selector
from ..store import Obj, WatchEvent
from .base import Informer, InformerController

if TYPE_CHECKING:
    from ..cluster import KubeCluster

PVC_PROTECTION = "kubernetes.io/pvc-protection"
PV_PROTECTION = "kubernetes.io/pv-protection"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
TICK_S = 0.05
RESYNC_S = 2.0

MSG_NO_CLASS = "no persistent volumes available for this claim and no storage class is set"


def _spec(obj: Obj) -> Obj:
    return obj.get("spec") or {}


def _phase(obj: Obj) -> str | None:
    return (obj.get("status") or {}).get("phase")


def _quantity(value: object) -> Decimal:
    try:
        return parse_quantity(value) if value is not None else Decimal(0)
    except ValueError:
        return Decimal(0)


def pv_class(pv: Obj) -> str:
    annotations = pv["metadata"].get("annotations") or {}
    return _spec(pv).get("storageClassName") or annotations.get("volume.beta.kubernetes.io/storage-class", "")


def pvc_request(pvc: Obj) -> Decimal:
    return _quantity(((_spec(pvc).get("resources") or {}).get("requests") or {}).get("storage"))


def pv_capacity(pv: Obj) -> Decimal:
    return _quantity((_spec(pv).get("capacity") or {}).get("storage"))


def claim_names(pod: Obj) -> set[str]:
    return {v["persistentVolumeClaim"]["claimName"] for v in _spec(pod).get("volumes") or []
            if isinstance(v, dict) and (v.get("persistentVolumeClaim") or {}).get("claimName")}


def satisfies(pv: Obj, pvc: Obj, claim_class: str) -> str | None:
    """None when `pv` can serve `pvc`, else why not (checkVolumeSatisfyClaim)."""
    if pv_class(pv) != claim_class:
        return "storageClassName does not match"
    if not set(_spec(pvc).get("accessModes") or []) <= set(_spec(pv).get("accessModes") or []):
        return "incompatible accessMode"
    if (_spec(pv).get("volumeMode") or "Filesystem") != (_spec(pvc).get("volumeMode") or "Filesystem"):
        return "incompatible volumeMode"
    if pv_capacity(pv) < pvc_request(pvc):
        return "requested PV is too small"
    return None


class PersistentVolumeController(InformerController):
    def __init__(self, cluster: KubeCluster) -> None:
        self.cluster = cluster
        self.store = cluster.store
        self.dirty = True
        self.claim_users: dict[tuple[str, str], set[str]] = {}  # (ns, claim) -> non-terminal pod uids
        self.pod_claims: dict[str, set[tuple[str, str]]] = {}
        self.reported: dict[str, str] = {}  # pvc uid -> last event reason
        self.informer: Informer | None = None

    async def run(self) -> None:
        self.claim_users.clear()
        self.pod_claims.clear()
        self.informer = Informer(self.store, ("storageclasses", "persistentvolumes", "persistentvolumeclaims",
                                              "pods"), self._on_event)
        self.informer.start()
        try:
            while True:
                await self.informer.wait(TICK_S if self.dirty else RESYNC_S)
                self.dirty = False
                self.sync()
        finally:
            self.informer.close()

    # ---------------------------------------------------------------- events

    def _on_event(self, event: WatchEvent) -> None:
        if event.plural == "pods":
            if self._index_pod(event.type, event.obj):
                self.dirty = True
            return
        self.dirty = True

    def _index_pod(self, etype: str, pod: Obj) -> bool:
        """Track which claims non-terminated pods use; True when that changed."""
        uid = pod["metadata"]["uid"]
        ns = pod["metadata"].get("namespace") or ""
        live = etype != "DELETED" and _phase(pod) not in ("Succeeded", "Failed")
        claims = {(ns, c) for c in claim_names(pod)} if live else set()
        before = self.pod_claims.get(uid, set())
        if claims == before:
            return False
        for key in before - claims:
            users = self.claim_users.get(key)
            if users is not None:
                users.discard(uid)
                if not users:
                    del self.claim_users[key]
        for key in claims - before:
            self.claim_users.setdefault(key, set()).add(uid)
        if claims:
            self.pod_claims[uid] = claims
        else:
            self.pod_claims.pop(uid, None)
        return True

    # ---------------------------------------------------------------- passes

    def sync(self) -> None:
        for pv in list(self.store.iter_objects("persistentvolumes")):
            self._sync_volume(pv)
        for pvc in list(self.store.iter_objects("persistentvolumeclaims")):
            self._sync_claim(pvc)

    def _write(self, fn: Callable[[], object]) -> bool:
        try:
            fn()
        except errors.ApiError:
            return False  # changed meanwhile or refused: the next event or the resync retries
        return True

    def _mutate(self, plural: str, obj: Obj, fn: Callable[[Obj], None], *, status: bool = False) -> bool:
        meta = obj["metadata"]
        return self._write(lambda: self.store.mutate(plural, meta.get("namespace"), meta["name"], fn,
                                                     subresource="status" if status else None))

    def _set_phase(self, plural: str, obj: Obj, phase: str, extra: Obj | None = None) -> None:
        if _phase(obj) == phase and not extra:
            return

        def apply(o: Obj) -> None:
            status = o.setdefault("status", {})
            status["phase"] = phase
            status.update(extra or {})

        self._mutate(plural, obj, apply, status=True)

    @staticmethod
    def _finalizers(add: str | None = None, remove: str | None = None) -> Callable[[Obj], None]:
        def apply(o: Obj) -> None:
            current = list(o["metadata"].get("finalizers") or [])
            if add and add not in current:
                current.append(add)
            if remove:
                current = [f for f in current if f != remove]
            o["metadata"]["finalizers"] = current
        return apply

    # ---- volumes

    def _claim_of(self, pv: Obj) -> Obj | None:
        ref = _spec(pv).get("claimRef") or {}
        if not ref.get("name"):
            return None
        return self.store.peek("persistentvolumeclaims", ref.get("namespace"), ref["name"])

    def _sync_volume(self, pv: Obj) -> None:
        meta = pv["metadata"]
        finalizers = meta.get("finalizers") or []
        if not meta.get("deletionTimestamp") and PV_PROTECTION not in finalizers:
            self._mutate("persistentvolumes", pv, self._finalizers(add=PV_PROTECTION))
            return
        ref = _spec(pv).get("claimRef") or {}
        claim = self._claim_of(pv)
        if not ref:
            self._set_phase("persistentvolumes", pv, "Available")
        elif ref.get("uid") and (claim is None or claim["metadata"]["uid"] != ref["uid"]):
            self._reclaim(pv)
        elif ref.get("uid") and _spec(claim).get("volumeName") == meta["name"]:
            self._set_phase("persistentvolumes", pv, "Bound")
        elif _phase(pv) not in ("Available", "Bound"):
            self._set_phase("persistentvolumes", pv, "Available")
        current = self.store.peek("persistentvolumes", None, meta["name"])
        if (current is not None and current["metadata"].get("deletionTimestamp")
                and PV_PROTECTION in (current["metadata"].get("finalizers") or [])
                and _phase(current) != "Bound"):
            self._mutate("persistentvolumes", current, self._finalizers(remove=PV_PROTECTION))

    def _reclaim(self, pv: Obj) -> None:
        """The bound claim is gone: Released, or deleted with reclaim policy Delete."""
        policy = _spec(pv).get("persistentVolumeReclaimPolicy") or "Retain"
        if _phase(pv) != "Released":
            self._set_phase("persistentvolumes", pv, "Released")
        if policy == "Delete" and not pv["metadata"].get("deletionTimestamp"):
            self._write(lambda: self.store.delete("persistentvolumes", None, pv["metadata"]["name"]))

    # ---- claims

    def _sync_claim(self, pvc: Obj) -> None:
        meta = pvc["metadata"]
        ns, name = meta.get("namespace") or "", meta["name"]
        finalizers = meta.get("finalizers") or []
        if meta.get("deletionTimestamp"):
            if PVC_PROTECTION in finalizers and not self.claim_users.get((ns, name)):
                self._mutate("persistentvolumeclaims", pvc, self._finalizers(remove=PVC_PROTECTION))
            return
        if PVC_PROTECTION not in finalizers:
            self._mutate("persistentvolumeclaims", pvc, self._finalizers(add=PVC_PROTECTION))
            return
        volume_name = _spec(pvc).get("volumeName")
        if volume_name:
            self._sync_prebound(pvc, volume_name)
        else:
            self._sync_unbound(pvc)

    def _sync_prebound(self, pvc: Obj, volume_name: str) -> None:
        pv = self.store.peek("persistentvolumes", None, volume_name)
        uid = pvc["metadata"]["uid"]
        if pv is None:
            if _phase(pvc) == "Bound":
                self._set_phase("persistentvolumeclaims", pvc, "Lost")
                self._report(pvc, "ClaimLost", "Bound claim has lost its PersistentVolume. Data on the "
                             "volume is lost!", "Warning")
            return
        ref = _spec(pv).get("claimRef") or {}
        if ref.get("uid") == uid:
            self._claim_bound(pvc, pv)
            return
        mine = ref.get("name") == pvc["metadata"]["name"] and ref.get("namespace") == pvc["metadata"].get(
            "namespace") and not ref.get("uid")
        if ref and not mine:
            return  # the PV belongs to another claim: stay Pending, as the real binder does
        problem = satisfies(pv, pvc, self._claim_class(pvc))
        if problem:
            self._report(pvc, "VolumeMismatch", f'Cannot bind to requested volume "{volume_name}": {problem}',
                         "Warning")
            return
        self._bind(pvc, pv, chosen=False)

    def _claim_class(self, pvc: Obj) -> str:
        """The claim's class; an unset one means the default StorageClass if there is one (what the
        DefaultStorageClass admission plugin would have written), else class-less PVs only."""
        value = _spec(pvc).get("storageClassName")
        if value is None:
            default = self._default_class()
            return default["metadata"]["name"] if default is not None else ""
        return value

    def _default_class(self) -> Obj | None:
        for sc in self.store.iter_objects("storageclasses"):
            if (sc["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true":
                return sc
        return None

    def _sync_unbound(self, pvc: Obj) -> None:
        if _phase(pvc) is None:
            self._set_phase("persistentvolumeclaims", pvc, "Pending")
            return
        claim_class = self._claim_class(pvc)
        sc = self.store.peek("storageclasses", None, claim_class) if claim_class else None
        key = (pvc["metadata"].get("namespace") or "", pvc["metadata"]["name"])
        if sc is not None and sc.get("volumeBindingMode") == "WaitForFirstConsumer" and key not in self.claim_users:
            self._report(pvc, "WaitForFirstConsumer", "waiting for first consumer to be created before binding")
            return
        pv = self._best_volume(pvc, claim_class)
        if pv is not None:
            self._bind(pvc, pv, chosen=True)
        elif not claim_class:
            self._report(pvc, "FailedBinding", MSG_NO_CLASS)
        elif sc is None:
            self._report(pvc, "ProvisioningFailed", f'storageclass.storage.k8s.io "{claim_class}" not found',
                         "Warning")
        elif sc.get("provisioner") == "kubernetes.io/no-provisioner":
            self._report(pvc, "ProvisioningFailed", "no volume plugin matched name: kubernetes.io/no-provisioner",
                         "Warning")
        else:
            self._report(pvc, "ExternalProvisioning", "Waiting for a volume to be created either by the external "
                         f"provisioner '{sc.get('provisioner')}' or manually by the system administrator. If "
                         "volume creation is delayed, please verify that the provisioner is running and "
                         "correctly registered.")

    def _best_volume(self, pvc: Obj, claim_class: str) -> Obj | None:
        """The PV pre-bound to this claim, else the smallest Available PV that satisfies it."""
        meta = pvc["metadata"]
        selector = match_labels_selector(_spec(pvc).get("selector"))
        best: Obj | None = None
        for pv in self.store.iter_objects("persistentvolumes"):
            if pv["metadata"].get("deletionTimestamp"):
                continue
            ref = _spec(pv).get("claimRef") or {}
            if ref:
                if (ref.get("name") == meta["name"] and ref.get("namespace") == meta.get("namespace")
                        and ref.get("uid") in (None, "", meta["uid"])
                        and satisfies(pv, pvc, claim_class) is None):
                    return pv
                continue
            if _phase(pv) not in (None, "Pending", "Available"):
                continue
            if selector is not None and not selector(pv):
                continue
            if satisfies(pv, pvc, claim_class) is not None:
                continue
            if best is None or (pv_capacity(pv), pv["metadata"]["name"]) < (pv_capacity(best),
                                                                             best["metadata"]["name"]):
                best = pv
        return best

    def _bind(self, pvc: Obj, pv: Obj, *, chosen: bool) -> None:
        """bindVolumeToClaim, then bindClaimToVolume, each followed by its status update."""
        meta = pvc["metadata"]
        claim_ref = {"kind": "PersistentVolumeClaim", "namespace": meta.get("namespace"), "name": meta["name"],
                     "uid": meta["uid"], "apiVersion": "v1", "resourceVersion": meta["resourceVersion"]}
        pv_had_ref = bool(_spec(pv).get("claimRef"))

        def bind_volume(o: Obj) -> None:
            o.setdefault("spec", {})["claimRef"] = claim_ref
            if not pv_had_ref:
                o["metadata"].setdefault("annotations", {})["pv.kubernetes.io/bound-by-controller"] = "yes"

        if not self._mutate("persistentvolumes", pv, bind_volume):
            return
        self._set_phase("persistentvolumes", self.store.get("persistentvolumes", None, pv["metadata"]["name"]),
                        "Bound")

        def bind_claim(o: Obj) -> None:
            o.setdefault("spec", {})["volumeName"] = pv["metadata"]["name"]
            annotations = o["metadata"].setdefault("annotations", {})
            annotations["pv.kubernetes.io/bind-completed"] = "yes"
            if chosen:
                annotations["pv.kubernetes.io/bound-by-controller"] = "yes"

        if self._mutate("persistentvolumeclaims", pvc, bind_claim):
            self._claim_bound(self.store.get("persistentvolumeclaims", meta.get("namespace"), meta["name"]), pv)

    def _claim_bound(self, pvc: Obj, pv: Obj) -> None:
        status = pvc.get("status") or {}
        want = {"accessModes": _spec(pv).get("accessModes") or [], "capacity": _spec(pv).get("capacity") or {}}
        if status.get("phase") == "Bound" and all(status.get(k) == v for k, v in want.items()):
            return
        self._set_phase("persistentvolumeclaims", pvc, "Bound", want)
        self.reported.pop(pvc["metadata"]["uid"], None)

    def _report(self, pvc: Obj, reason: str, message: str, type_: str = "Normal") -> None:
        uid = pvc["metadata"]["uid"]
        if self.reported.get(uid) == reason + message:
            return
        self.reported[uid] = reason + message
        with contextlib.suppress(Exception):
            self.cluster.record_event(pvc, reason, message, type_=type_,
                                      component="persistentvolume-controller")
