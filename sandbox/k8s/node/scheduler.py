"""The sandbox's scheduler and the Node object of its single virtual node.

On Alibaba ASK every pod lands on a virtual-kubelet node that stands for "as much ECI capacity as the
account may use". The sandbox has one such node (`cluster.node`), with a configurable capacity, so that
quota-like limits (too many pods, too much cpu) show up as real Kubernetes scheduling failures:
the pod stays Pending with `PodScheduled=False reason Unschedulable` and a `FailedScheduling` event, and
is bound as soon as capacity frees.

What it does:
- Creates (or refreshes) the Node with ASK's labels and the taint
  `virtual-kubelet.io/provider=alibabacloud:NoSchedule`. On ASK the admission webhook adds the matching
  toleration to every pod, so here that taint is treated as tolerated; any extra taints given in
  `NodeConfig.extra["taints"]` must be tolerated by the pod.
- Binds Pending pods without `spec.nodeName` in arrival order (FIFO), checking nodeSelector, required
  node affinity (loosely), taints, the pod count and cpu/memory requests (a limit counts as the request
  when the request is missing, as API defaulting does; init containers count as the max, not the sum).
- Keeps the used resources incrementally: a pod is accounted once when it is bound and released once
  when it ends (Succeeded/Failed) or disappears. So a 10,000-pod Job costs O(1) per pod, and unfit pods
  are retried only when capacity frees (event-driven, no polling).
- Binding uses `Store.bind` (the `pods/binding` subresource): `spec.nodeName` and the `PodScheduled`
  condition change in one write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from .. import errors
from ..store import Obj, WatchEvent, now_iso
from .quantity import Requests, cpu_millis, memory_bytes, pod_requests

if TYPE_CHECKING:
    from ..cluster import KubeCluster

log = logging.getLogger("sandbox.k8s.scheduler")

SCHEDULER_NAME = "default-scheduler"
PROVIDER_TAINT = {"key": "virtual-kubelet.io/provider", "value": "alibabacloud", "effect": "NoSchedule"}
KUBELET_VERSION = "v1.32.1-sandbox-vk"
TERMINAL = ("Succeeded", "Failed")


def node_labels(cluster: KubeCluster) -> dict[str, str]:
    node = cluster.node
    return {
        "type": "virtual-kubelet",
        "kubernetes.io/role": "agent",
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
        "topology.kubernetes.io/zone": node.zone,
        "topology.kubernetes.io/region": node.region,
        "failure-domain.beta.kubernetes.io/zone": node.zone,
        "failure-domain.beta.kubernetes.io/region": node.region,
        "node.kubernetes.io/instance-type": "virtual-kubelet",
        **dict(node.extra.get("labels") or {}),
    }


def node_taints(cluster: KubeCluster) -> list[dict[str, str]]:
    return [dict(PROVIDER_TAINT), *list(cluster.node.extra.get("taints") or [])]


def node_status(cluster: KubeCluster) -> Obj:
    node = cluster.node
    capacity = {"cpu": str(node.cpu), "memory": str(node.memory), "pods": str(node.pods),
                "ephemeral-storage": "30Gi"}
    ts = now_iso()

    def condition(type_: str, status: str, reason: str, message: str) -> Obj:
        return {"type": type_, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": ts, "lastTransitionTime": ts}

    return {
        "capacity": capacity,
        "allocatable": dict(capacity),
        "phase": "Running",
        "conditions": [
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("NetworkUnavailable", "False", "RouteCreated", "virtual network is ready"),
        ],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                      {"type": "Hostname", "address": node.name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": cluster.name, "systemUUID": cluster.name, "bootID": cluster.token[:16],
            "kernelVersion": platform.release(), "osImage": "ask-batch sandbox (processes on the host)",
            "containerRuntimeVersion": "eci://sandbox", "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": KUBELET_VERSION, "operatingSystem": "linux", "architecture": "amd64",
        },
    }


def ensure_node(cluster: KubeCluster) -> None:
    """Create the Node object, or refresh its labels, taints and status after a restart or config change."""
    store = cluster.store
    name = cluster.node.name
    labels = node_labels(cluster)
    if store.peek("nodes", None, name) is None:
        store.create("nodes", {"metadata": {"name": name, "labels": labels},
                               "spec": {"taints": node_taints(cluster)}})

    def refresh(obj: Obj) -> None:
        obj["metadata"]["labels"] = {**(obj["metadata"].get("labels") or {}), **labels}
        obj.setdefault("spec", {})["taints"] = node_taints(cluster)

    store.mutate("nodes", None, name, refresh)
    store.mutate("nodes", None, name, lambda obj: obj.__setitem__("status", node_status(cluster)),
                 subresource="status")


# ------------------------------------------------------------------ predicates


def tolerates(toleration: Obj, taint: Obj) -> bool:
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if toleration.get("operator") == "Exists":
        return not toleration.get("key") or toleration["key"] == taint.get("key")
    return toleration.get("key") == taint.get("key") and (toleration.get("value") or "") == (
        taint.get("value") or "")


def _expression_matches(expr: Obj, labels: dict[str, str]) -> bool:
    key, op, values = expr.get("key", ""), expr.get("operator", "In"), expr.get("values") or []
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt") and key in labels and values:
        try:
            have, want = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    return False


def affinity_matches(pod: Obj, labels: dict[str, str], node_name: str) -> bool:
    """Required node affinity: any term matches when all its expressions/fields match."""
    required = ((((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms") or []
    if not terms:
        return True
    fields = {"metadata.name": node_name}
    return any(
        all(_expression_matches(e, labels) for e in term.get("matchExpressions") or [])
        and all(_expression_matches(e, fields) for e in term.get("matchFields") or [])
        for term in terms
    )


def static_misfit(pod: Obj, labels: dict[str, str], taints: list[Obj], node_name: str) -> str | None:
    """Why the pod can never run on this node whatever the load, or None."""
    spec = pod.get("spec") or {}
    selector = spec.get("nodeSelector") or {}
    if any(labels.get(k) != v for k, v in selector.items()) or not affinity_matches(pod, labels, node_name):
        return "node(s) didn't match Pod's node affinity/selector"
    tolerations = spec.get("tolerations") or []
    for taint in taints:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if taint.get("key") == PROVIDER_TAINT["key"]:
            continue  # ASK's admission adds this toleration to every pod
        if not any(tolerates(t, taint) for t in tolerations):
            shown = f"{taint.get('key')}: {taint.get('value')}" if taint.get("value") else taint.get("key")
            return f"node(s) had untolerated taint {{{shown}}}"
    return None


# ------------------------------------------------------------------ the scheduler


class Scheduler:
    """Binds pending pods to the virtual node; see the module docstring."""

    def __init__(self, cluster: KubeCluster) -> None:
        self.cluster = cluster
        self.store = cluster.store
        self.node_name = cluster.node.name
        self.capacity = Requests(cpu_millis(cluster.node.cpu), memory_bytes(cluster.node.memory))
        self.max_pods = int(cluster.node.pods)
        self.used = Requests()
        self.accounted: dict[str, Requests] = {}  # uid -> requests, for non-terminal pods on the node
        self.queue: OrderedDict[str, tuple[str, str]] = OrderedDict()  # uid -> (ns, name), to try
        self.parked: OrderedDict[str, tuple[str, str]] = OrderedDict()  # unschedulable, wait for room
        self._kick = asyncio.Event()
        self._freed = False
        self.labels: dict[str, str] = {}
        self.taints: list[Obj] = []

    async def run(self) -> None:
        ensure_node(self.cluster)
        node = self.store.peek("nodes", None, self.node_name) or {}
        self.labels = dict((node.get("metadata") or {}).get("labels") or {})
        self.taints = list((node.get("spec") or {}).get("taints") or [])
        self.used, self.accounted = Requests(), {}
        self.queue.clear()
        self.parked.clear()
        watcher = self.store.watch("pods")
        pump = asyncio.create_task(self._pump(watcher), name="scheduler-watch")
        try:
            while True:
                await self._kick.wait()
                self._kick.clear()
                self.schedule_pass()
                if pump.done():
                    pump.result()  # re-raise a crashed pump, so the supervisor restarts us
                    return
        finally:
            pump.cancel()
            watcher.close()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump

    async def _pump(self, watcher: Any) -> None:
        try:
            async for event in watcher:
                self.on_pod_event(event)
        finally:
            self._kick.set()

    # -------------------------------------------------------------- bookkeeping

    def on_pod_event(self, event: WatchEvent) -> None:
        pod = event.obj
        meta = pod["metadata"]
        uid = meta["uid"]
        if event.type == "DELETED":
            self._forget(uid)
            self._release(uid)
            return
        spec = pod.get("spec") or {}
        phase = (pod.get("status") or {}).get("phase")
        node = spec.get("nodeName")
        if node:
            self._forget(uid)
            if node == self.node_name and phase not in TERMINAL:
                self._account(uid, pod)
            else:
                self._release(uid)
            return
        if phase in TERMINAL or meta.get("deletionTimestamp"):
            self._forget(uid)
            return
        if (spec.get("schedulerName") or SCHEDULER_NAME) != SCHEDULER_NAME:
            return
        if uid in self.parked:
            return  # an update of an unschedulable pod is retried with the next freed capacity
        if uid not in self.queue:
            self.queue[uid] = (meta.get("namespace", ""), meta["name"])
            self._kick.set()

    def _forget(self, uid: str) -> None:
        self.queue.pop(uid, None)
        self.parked.pop(uid, None)

    def _account(self, uid: str, pod: Obj) -> None:
        if uid in self.accounted:
            return
        try:
            req = pod_requests(pod)
        except ValueError:
            req = Requests()
        self.accounted[uid] = req
        self.used = self.used + req

    def _release(self, uid: str) -> None:
        req = self.accounted.pop(uid, None)
        if req is None:
            return
        self.used = self.used - req
        if self.parked:
            self._freed = True
            self._kick.set()

    # -------------------------------------------------------------- scheduling

    def schedule_pass(self) -> None:
        """Try every queued pod once, oldest first; parked pods rejoin the front after capacity frees."""
        if self._freed:
            self._freed = False
            merged = self.parked
            merged.update(self.queue)
            self.queue, self.parked = merged, OrderedDict()
        while self.queue:
            uid, (namespace, name) = self.queue.popitem(last=False)
            pod = self.store.peek("pods", namespace, name)
            if pod is None or pod["metadata"]["uid"] != uid or (pod.get("spec") or {}).get("nodeName"):
                continue
            reason = self._misfit(pod)
            if reason is None:
                self._bind(pod)
            else:
                self.parked[uid] = (namespace, name)
                self._mark_unschedulable(pod, reason)

    def _misfit(self, pod: Obj) -> str | None:
        static = static_misfit(pod, self.labels, self.taints, self.node_name)
        if static:
            return static
        try:
            req = pod_requests(pod)
        except ValueError as exc:
            return f"invalid resource requests: {exc}"
        problems = []
        if len(self.accounted) + 1 > self.max_pods:
            problems.append("Too many pods")
        if self.used.cpu_m + req.cpu_m > self.capacity.cpu_m:
            problems.append("Insufficient cpu")
        if self.used.memory + req.memory > self.capacity.memory:
            problems.append("Insufficient memory")
        return ", ".join(f"1 {p}" for p in problems) or None

    def _bind(self, pod: Obj) -> None:
        meta = pod["metadata"]
        try:
            bound = self.store.bind(meta.get("namespace"), meta["name"], self.node_name, uid=meta["uid"])
        except errors.ApiError as exc:
            log.debug("binding %s/%s failed: %s", meta.get("namespace"), meta["name"], exc)
            return
        self._account(meta["uid"], bound)
        self.cluster.record_event(bound, "Scheduled",
                                  f"Successfully assigned {meta.get('namespace')}/{meta['name']} "
                                  f"to {self.node_name}", component=SCHEDULER_NAME)

    def _mark_unschedulable(self, pod: Obj, reason: str) -> None:
        if not reason.startswith("1 "):
            reason = f"1 {reason}"
        message = f"0/1 nodes are available: {reason}."
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("message") == message:
                return  # already reported; no write, no event
        meta = pod["metadata"]

        def set_condition(obj: Obj) -> None:
            status = obj.setdefault("status", {})
            status.setdefault("phase", "Pending")
            conditions = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
            conditions.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                               "message": message, "lastProbeTime": None, "lastTransitionTime": now_iso()})
            status["conditions"] = conditions

        try:
            updated = self.store.mutate("pods", meta.get("namespace"), meta["name"], set_condition,
                                        subresource="status")
        except errors.ApiError:
            return
        self.cluster.record_event(updated, "FailedScheduling", message, type_="Warning",
                                  component=SCHEDULER_NAME)
