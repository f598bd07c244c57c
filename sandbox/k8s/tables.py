"""Server-side printing: the `meta.k8s.io/v1 Table` that `kubectl get` asks for.

kubectl sends `Accept: application/json;as=Table;v=v1;g=meta.k8s.io,...` and prints whatever columns the
server returns, so the columns (and the pod STATUS / job STATUS logic) are the real printers' from
pkg/printers/internalversion, for the kinds a batch user looks at. Other kinds get NAME and AGE.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]
Column = tuple[str, str, int]  # name, type, priority (1 = only with -o wide)


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        return f"{hours // 24 // 365}y{(hours // 24) % 365}d"
    return f"{hours // 24 // 365}y"


def age(timestamp: str | None, now: datetime | None = None) -> str:
    when = _parse_time(timestamp)
    if when is None:
        return "<unknown>"
    return human_duration(((now or datetime.now(UTC)) - when).total_seconds())


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


# ------------------------------------------------------------------ per-kind rows


def pod_status(pod: Obj) -> str:
    """The STATUS column of `kubectl get pods` (printPod)."""
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Unknown"
    init_specs = (pod.get("spec") or {}).get("initContainers") or []
    initializing = False
    for i, cs in enumerate(status.get("initContainerStatuses") or []):
        state = cs.get("state") or {}
        term, waiting = state.get("terminated"), state.get("waiting")
        if term and term.get("exitCode") == 0:
            continue
        if term:
            reason = "Init:" + (term.get("reason") or (f"Signal:{term['signal']}" if term.get("signal")
                                                       else f"ExitCode:{term.get('exitCode')}"))
        elif waiting and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = "Init:" + waiting["reason"]
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break
    if not initializing:
        has_running = False
        for cs in reversed(status.get("containerStatuses") or []):
            state = cs.get("state") or {}
            if (state.get("waiting") or {}).get("reason"):
                reason = state["waiting"]["reason"]
            elif (state.get("terminated") or {}).get("reason"):
                reason = state["terminated"]["reason"]
            elif state.get("terminated"):
                term = state["terminated"]
                reason = f"Signal:{term['signal']}" if term.get("signal") else f"ExitCode:{term.get('exitCode')}"
            elif state.get("running") and cs.get("ready"):
                has_running = True
        if reason == "Completed" and has_running:
            ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in status.get("conditions") or [])
            reason = "Running" if ready else "NotReady"
    if _meta(pod).get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    return reason


def _pod_row(pod: Obj) -> list[Any]:
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    total = len((pod.get("spec") or {}).get("containers") or [])
    ready = sum(1 for cs in statuses if cs.get("ready"))
    restarts = sum(int(cs.get("restartCount") or 0) for cs in statuses)
    node = (pod.get("spec") or {}).get("nodeName") or "<none>"
    return [_meta(pod).get("name"), f"{ready}/{total}", pod_status(pod), restarts,
            age(_meta(pod).get("creationTimestamp")), status.get("podIP") or "<none>", node,
            status.get("nominatedNodeName") or "<none>", "<none>"]


def _job_status(job: Obj) -> str:
    status = job.get("status") or {}
    true = {c.get("type") for c in status.get("conditions") or [] if c.get("status") == "True"}
    for cond in ("Failed", "Complete", "FailureTarget", "SuccessCriteriaMet", "Suspended"):
        if cond in true:
            return cond
    if _meta(job).get("deletionTimestamp"):
        return "Terminating"
    return "Running"


def _job_row(job: Obj) -> list[Any]:
    spec, status = job.get("spec") or {}, job.get("status") or {}
    completions = spec.get("completions")
    succeeded = status.get("succeeded") or 0
    if completions is not None:
        done = f"{succeeded}/{completions}"
    else:
        parallelism = spec.get("parallelism") or 0
        done = f"{succeeded}/1 of {parallelism}" if parallelism > 1 else f"{succeeded}/1"
    start, end = _parse_time(status.get("startTime")), _parse_time(status.get("completionTime"))
    duration = ""
    if start is not None:
        duration = human_duration(((end or datetime.now(UTC)) - start).total_seconds())
    pod_spec = ((spec.get("template") or {}).get("spec") or {})
    containers = pod_spec.get("containers") or []
    selector = ",".join(f"{k}={v}" for k, v in ((spec.get("selector") or {}).get("matchLabels") or {}).items())
    return [_meta(job).get("name"), _job_status(job), done, duration, age(_meta(job).get("creationTimestamp")),
            ",".join(c.get("name", "") for c in containers), ",".join(c.get("image", "") for c in containers),
            selector or "<none>"]


def _access_modes(modes: list[str] | None) -> str:
    short = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX", "ReadWriteOncePod": "RWOP"}
    return ",".join(short.get(m, m) for m in modes or [])


def _pvc_row(pvc: Obj) -> list[Any]:
    spec, status = pvc.get("spec") or {}, pvc.get("status") or {}
    phase = "Terminating" if _meta(pvc).get("deletionTimestamp") else status.get("phase", "")
    return [_meta(pvc).get("name"), phase, spec.get("volumeName", ""),
            (status.get("capacity") or {}).get("storage", ""), _access_modes(status.get("accessModes")),
            spec.get("storageClassName", ""), spec.get("volumeAttributesClassName") or "<unset>",
            age(_meta(pvc).get("creationTimestamp")), spec.get("volumeMode", "")]


def _pv_row(pv: Obj) -> list[Any]:
    spec, status = pv.get("spec") or {}, pv.get("status") or {}
    ref = spec.get("claimRef") or {}
    claim = f"{ref.get('namespace')}/{ref.get('name')}" if ref else ""
    phase = "Terminating" if _meta(pv).get("deletionTimestamp") else status.get("phase", "")
    return [_meta(pv).get("name"), (spec.get("capacity") or {}).get("storage", ""),
            _access_modes(spec.get("accessModes")), spec.get("persistentVolumeReclaimPolicy", ""), phase, claim,
            spec.get("storageClassName", ""), spec.get("volumeAttributesClassName") or "<unset>",
            status.get("reason", ""), age(_meta(pv).get("creationTimestamp")), spec.get("volumeMode", "")]


def _node_row(node: Obj) -> list[Any]:
    conds = (node.get("status") or {}).get("conditions") or []
    ready = next((c.get("status") for c in conds if c.get("type") == "Ready"), None)
    state = "Ready" if ready == "True" else "NotReady" if ready else "Unknown"
    if (node.get("spec") or {}).get("unschedulable"):
        state += ",SchedulingDisabled"
    roles = sorted(k.split("/", 1)[1] for k in (_meta(node).get("labels") or {})
                   if k.startswith("node-role.kubernetes.io/"))
    version = ((node.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", "")
    return [_meta(node).get("name"), state, ",".join(roles) or "<none>",
            age(_meta(node).get("creationTimestamp")), version]


def _event_row(ev: Obj) -> list[Any]:
    inv = ev.get("involvedObject") or {}
    last = ev.get("lastTimestamp") or ev.get("eventTime") or _meta(ev).get("creationTimestamp")
    return [age(last), ev.get("type", ""), ev.get("reason", ""),
            f"{(inv.get('kind') or '').lower()}/{inv.get('name', '')}", ev.get("message", "")]


S, INT = "string", "integer"
PRINTERS: dict[str, tuple[list[Column], Callable[[Obj], list[Any]]]] = {
    "pods": ([("Name", S, 0), ("Ready", S, 0), ("Status", S, 0), ("Restarts", INT, 0), ("Age", S, 0),
              ("IP", S, 1), ("Node", S, 1), ("Nominated Node", S, 1), ("Readiness Gates", S, 1)], _pod_row),
    "jobs": ([("Name", S, 0), ("Status", S, 0), ("Completions", S, 0), ("Duration", S, 0), ("Age", S, 0),
              ("Containers", S, 1), ("Images", S, 1), ("Selector", S, 1)], _job_row),
    "persistentvolumeclaims": ([("Name", S, 0), ("Status", S, 0), ("Volume", S, 0), ("Capacity", S, 0),
                                ("Access Modes", S, 0), ("StorageClass", S, 0), ("VolumeAttributesClass", S, 0),
                                ("Age", S, 0), ("VolumeMode", S, 1)], _pvc_row),
    "persistentvolumes": ([("Name", S, 0), ("Capacity", S, 0), ("Access Modes", S, 0), ("Reclaim Policy", S, 0),
                           ("Status", S, 0), ("Claim", S, 0), ("StorageClass", S, 0),
                           ("VolumeAttributesClass", S, 0), ("Reason", S, 0), ("Age", S, 0),
                           ("VolumeMode", S, 1)], _pv_row),
    "namespaces": ([("Name", S, 0), ("Status", S, 0), ("Age", S, 0)],
                   lambda o: [_meta(o).get("name"), (o.get("status") or {}).get("phase", ""),
                              age(_meta(o).get("creationTimestamp"))]),
    "configmaps": ([("Name", S, 0), ("Data", INT, 0), ("Age", S, 0)],
                   lambda o: [_meta(o).get("name"), len(o.get("data") or {}) + len(o.get("binaryData") or {}),
                              age(_meta(o).get("creationTimestamp"))]),
    "secrets": ([("Name", S, 0), ("Type", S, 0), ("Data", INT, 0), ("Age", S, 0)],
                lambda o: [_meta(o).get("name"), o.get("type", ""), len(o.get("data") or {}),
                           age(_meta(o).get("creationTimestamp"))]),
    "nodes": ([("Name", S, 0), ("Status", S, 0), ("Roles", S, 0), ("Age", S, 0), ("Version", S, 0)], _node_row),
    "events": ([("Last Seen", S, 0), ("Type", S, 0), ("Reason", S, 0), ("Object", S, 0), ("Message", S, 0)],
               _event_row),
    "storageclasses": ([("Name", S, 0), ("Provisioner", S, 0), ("ReclaimPolicy", S, 0),
                        ("VolumeBindingMode", S, 0), ("AllowVolumeExpansion", S, 0), ("Age", S, 0)],
                       lambda o: [_meta(o).get("name"), o.get("provisioner", ""), o.get("reclaimPolicy", ""),
                                  o.get("volumeBindingMode", ""), bool(o.get("allowVolumeExpansion")),
                                  age(_meta(o).get("creationTimestamp"))]),
}
GENERIC: tuple[list[Column], Callable[[Obj], list[Any]]] = (
    [("Name", S, 0), ("Age", S, 0)], lambda o: [_meta(o).get("name"), age(_meta(o).get("creationTimestamp"))])


def column_definitions(plural: str) -> list[dict[str, Any]]:
    columns, _ = PRINTERS.get(plural, GENERIC)
    return [{"name": name, "type": typ, "format": "name" if name == "Name" else "", "description": name,
             "priority": prio} for name, typ, prio in columns]


def row(plural: str, obj: Obj, include_object: str = "Metadata") -> dict[str, Any]:
    _, printer = PRINTERS.get(plural, GENERIC)
    out: dict[str, Any] = {"cells": printer(obj)}
    if include_object == "Object":
        out["object"] = obj
    elif include_object != "None":
        out["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                         "metadata": _meta(obj)}
    return out


def table(plural: str, items: list[Obj], *, resource_version: str = "", continue_token: str | None = None,
          remaining: int | None = None, include_object: str = "Metadata", headers: bool = True) -> Obj:
    meta: dict[str, Any] = {"resourceVersion": resource_version}
    if continue_token:
        meta["continue"] = continue_token
    if remaining is not None:
        meta["remainingItemCount"] = remaining
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": column_definitions(plural) if headers else [],
        "rows": [row(plural, o, include_object) for o in items],
    }
