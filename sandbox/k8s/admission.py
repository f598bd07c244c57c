"""Defaulting and validation, as the real API server's registry strategies and defaulters do them.

The store calls `admit(plural, op, obj, old)` on CREATE, UPDATE and UPDATE_STATUS, for HTTP clients and
in-process controllers alike, so everything in the cluster sees defaulted objects (a Job's generated
selector, a pod's restartPolicy) and nothing invalid is ever stored. Errors are 422 Invalid with
`details.causes`, worded as the real server words them, because client code (and users) match on them.

Why defaulting matters here: `kubectl logs job/x` needs the Job's generated `spec.selector`; the Job
controller needs `backoffLimit`/`completions`; a pod's `status.phase` must start as Pending so watchers
see the same lifecycle as on ASK. The Job's uid is assigned here (not by the store) because the selector
and template labels are derived from it; the store keeps a uid set by admission.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from typing import Any

from . import errors
from .resources import BY_PLURAL

Obj = dict[str, Any]
Cause = tuple[str, str, str]  # field, reason, message

MAX_INT32 = 2**31 - 1
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")

DNS_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
                 "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
                 "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
DNS_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
                     "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
                     "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
# Kinds whose names must be DNS-1123 labels (the rest: subdomains).
LABEL_NAMED = {"namespaces"}


def admit(plural: str, op: str, obj: Obj, old: Obj | None) -> None:
    """Default then validate `obj` in place; raise errors.invalid (422) with causes."""
    if op == "CREATE":
        _default(plural, obj)
    causes: list[Cause] = []
    if op in ("CREATE", "UPDATE"):
        causes += _validate_meta(plural, obj.get("metadata") or {})
    validator = VALIDATORS.get(plural)
    if validator is not None:
        causes += validator(op, obj, old)
    if causes:
        rt = BY_PLURAL[plural]
        name = (obj.get("metadata") or {}).get("name") or ""
        raise errors.invalid(rt.group, rt.kind, name, causes)


# ------------------------------------------------------------------ helpers


def _invalid(path: str, value: Any, message: str) -> Cause:
    shown = f'"{value}"' if isinstance(value, str) else str(value)
    return (path, "FieldValueInvalid", f"Invalid value: {shown}: {message}")


def _required(path: str) -> Cause:
    return (path, "FieldValueRequired", "Required value")


def _immutable(path: str, value: Any = None) -> Cause:
    return (path, "FieldValueInvalid", "field is immutable" if value is None
            else f"Invalid value: {value!r}: field is immutable")


def _not_supported(path: str, value: Any, allowed: list[str]) -> Cause:
    opts = ", ".join(f'"{a}"' for a in allowed)
    return (path, "FieldValueNotSupported", f'Unsupported value: "{value}": supported values: {opts}')


def _name_causes(path: str, name: str, label: bool) -> list[Cause]:
    limit = 63 if label else 253
    pattern, msg = (_DNS_LABEL, DNS_LABEL_MSG) if label else (_DNS_SUBDOMAIN, DNS_SUBDOMAIN_MSG)
    out = []
    if len(name) > limit:
        out.append(_invalid(path, name, f"must be no more than {limit} characters"))
    if not pattern.match(name):
        out.append(_invalid(path, name, msg))
    return out


def _labels_causes(path: str, labels: Any) -> list[Cause]:
    out: list[Cause] = []
    if not isinstance(labels, dict):
        return out
    for key, value in labels.items():
        name = key.rsplit("/", 1)[-1]
        if not key or len(name) > 63 or not _QUALIFIED_NAME.match(name):
            out.append(_invalid(path, key, "name part must consist of alphanumeric characters, '-', '_' or "
                                           "'.', and must start and end with an alphanumeric character"))
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            msg = ("must be no more than 63 characters" if isinstance(value, str) and len(value) > 63 else
                   "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
                   "'.', and must start and end with an alphanumeric character")
            out.append(_invalid(path, value, msg))
    return out


def _validate_meta(plural: str, meta: Obj) -> list[Cause]:
    name = meta.get("name")
    if not name:
        return [("metadata.name", "FieldValueRequired", "Required value: name or generateName is required")]
    out = _name_causes("metadata.name", name, plural in LABEL_NAMED)
    out += _labels_causes("metadata.labels", meta.get("labels"))
    return out


def _image_pull_policy(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    tag = last.split(":", 1)[1] if ":" in last else ""
    return "Always" if tag in ("", "latest") else "IfNotPresent"


# ------------------------------------------------------------------ defaulting


def _default(plural: str, obj: Obj) -> None:
    fn = DEFAULTERS.get(plural)
    if fn is not None:
        fn(obj)


def _default_container(c: Obj) -> None:
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    if isinstance(c.get("image"), str):
        c.setdefault("imagePullPolicy", _image_pull_policy(c["image"]))
    c.setdefault("resources", {})
    for port in c.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
    for env in c.get("env") or []:
        ref = (env.get("valueFrom") or {}).get("fieldRef") if isinstance(env, dict) else None
        if isinstance(ref, dict):
            ref.setdefault("apiVersion", "v1")


def default_pod_spec(spec: Obj) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if isinstance(c, dict):
            _default_container(c)
    for vol in spec.get("volumes") or []:
        if not isinstance(vol, dict):
            continue
        for source in ("configMap", "secret"):
            if isinstance(vol.get(source), dict):
                vol[source].setdefault("defaultMode", 420)
        if not any(k != "name" for k in vol):
            vol["emptyDir"] = {}


def _qos_class(spec: Obj) -> str:
    containers = [c for c in spec.get("containers") or [] if isinstance(c, dict)]
    requests = [((c.get("resources") or {}).get("requests") or {}) for c in containers]
    limits = [((c.get("resources") or {}).get("limits") or {}) for c in containers]
    if not any(requests) and not any(limits):
        return "BestEffort"
    guaranteed = all(
        lim.get("cpu") and lim.get("memory") and req.get("cpu", lim["cpu"]) == lim["cpu"]
        and req.get("memory", lim["memory"]) == lim["memory"]
        for req, lim in zip(requests, limits, strict=True)
    )
    return "Guaranteed" if guaranteed else "Burstable"


def _default_pod(pod: Obj) -> None:
    spec = pod.setdefault("spec", {})
    default_pod_spec(spec)
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    tolerations = spec.setdefault("tolerations", [])
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not any(isinstance(t, dict) and t.get("key") == key for t in tolerations):
            tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
    status = pod.setdefault("status", {})
    status.setdefault("phase", "Pending")
    status.setdefault("qosClass", _qos_class(spec))


def _default_job(job: Obj) -> None:
    meta = job.setdefault("metadata", {})
    spec = job.setdefault("spec", {})
    meta["uid"] = meta.get("uid") or str(uuid.uuid4())
    job["status"] = {}  # status is the controller's: a create resets it, and clients read `status: {}` at once
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    spec.setdefault("parallelism", 1)
    if spec.get("backoffLimit") is None:
        spec["backoffLimit"] = MAX_INT32 if spec.get("backoffLimitPerIndex") is not None else 6
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed")
    spec.setdefault("manualSelector", False)
    template = spec.get("template")
    if isinstance(template, dict):
        default_pod_spec(template.setdefault("spec", {}))
        # SetDefaults_Job shares the template's label map with an unlabeled Job, so the Job also ends up
        # with the generated labels when its template had labels of its own.
        share_labels = bool((template.get("metadata") or {}).get("labels")) and not meta.get("labels")
        if not spec["manualSelector"]:
            _generate_job_selector(job)
        if share_labels:
            meta["labels"] = dict(template["metadata"]["labels"])


def _generate_job_selector(job: Obj) -> None:
    """batch/job strategy generateSelector: unique labels from the Job's uid and name."""
    meta, spec = job["metadata"], job["spec"]
    tmeta = spec["template"].setdefault("metadata", {})
    labels = tmeta.get("labels") if isinstance(tmeta.get("labels"), dict) else {}
    tmeta["labels"] = labels
    for key in ("batch.kubernetes.io/controller-uid", "controller-uid"):
        labels.setdefault(key, meta["uid"])
    for key in ("batch.kubernetes.io/job-name", "job-name"):
        labels.setdefault(key, meta.get("name", ""))
    selector = spec.get("selector") if isinstance(spec.get("selector"), dict) else {}
    spec["selector"] = selector
    match = selector.setdefault("matchLabels", {})
    match.setdefault("batch.kubernetes.io/controller-uid", meta["uid"])


def _default_secret(secret: Obj) -> None:
    secret.setdefault("type", "Opaque")


def _default_pv(pv: Obj) -> None:
    spec = pv.setdefault("spec", {})
    spec.setdefault("persistentVolumeReclaimPolicy", "Retain")
    spec.setdefault("volumeMode", "Filesystem")
    pv.setdefault("status", {}).setdefault("phase", "Pending")


def _default_pvc(pvc: Obj) -> None:
    pvc.setdefault("spec", {}).setdefault("volumeMode", "Filesystem")
    pvc.setdefault("status", {}).setdefault("phase", "Pending")


def _default_namespace(ns: Obj) -> None:
    ns.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    ns.setdefault("status", {}).setdefault("phase", "Active")


def _default_storage_class(sc: Obj) -> None:
    sc.setdefault("reclaimPolicy", "Delete")
    sc.setdefault("volumeBindingMode", "Immediate")


DEFAULTERS = {"pods": _default_pod, "jobs": _default_job, "secrets": _default_secret,
              "persistentvolumes": _default_pv, "persistentvolumeclaims": _default_pvc,
              "namespaces": _default_namespace, "storageclasses": _default_storage_class}


# ------------------------------------------------------------------ validation


def _secret_stringdata(secret: Obj) -> list[Cause]:
    """stringData is write-only: merged into data (base64) on every write, as the real strategy does."""
    string_data = secret.pop("stringData", None)
    if isinstance(string_data, dict):
        data = secret.get("data") if isinstance(secret.get("data"), dict) else {}
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        secret["data"] = data
    out: list[Cause] = []
    for key, value in (secret.get("data") or {}).items():
        try:
            base64.b64decode(value or "", validate=True)
        except (binascii.Error, ValueError, TypeError) as exc:
            raise errors.bad_request(f"Secret in version \"v1\" cannot be handled as a Secret: illegal base64 "
                                     f"data at input byte 0 (data[{key}])") from exc
    return out


def _config_data_causes(obj: Obj, fields: tuple[str, ...]) -> list[Cause]:
    out: list[Cause] = []
    for fname in fields:
        for key in obj.get(fname) or {}:
            if not _CONFIG_KEY.match(key):
                out.append(_invalid(f"{fname}[{key}]", key,
                                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' "
                                    "(e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation "
                                    "is '[-._a-zA-Z0-9]+')"))
    return out


def _immutable_data(obj: Obj, old: Obj | None, fields: tuple[str, ...]) -> list[Cause]:
    if old is None or not old.get("immutable"):
        return []
    out: list[Cause] = []
    if not obj.get("immutable"):
        out.append(("immutable", "FieldValueForbidden", "Forbidden: field is immutable when `immutable` is set"))
    for fname in fields:
        if (obj.get(fname) or {}) != (old.get(fname) or {}):
            out.append((fname, "FieldValueForbidden", "Forbidden: field is immutable when `immutable` is set"))
    return out


def _validate_configmap(op: str, obj: Obj, old: Obj | None) -> list[Cause]:
    fields = ("data", "binaryData")
    return _config_data_causes(obj, fields) + _immutable_data(obj, old, fields)


def _validate_secret(op: str, obj: Obj, old: Obj | None) -> list[Cause]:
    out = _secret_stringdata(obj)
    out += _config_data_causes(obj, ("data",))
    out += _immutable_data(obj, old, ("data",))
    if old is not None and obj.get("type") != old.get("type"):
        out.append(_immutable("type", obj.get("type")))
    return out


def validate_pod_spec(path: str, spec: Any, *, restart_policies: list[str] | None = None) -> list[Cause]:
    if not isinstance(spec, dict):
        return [_required(path)]
    out: list[Cause] = []
    containers = spec.get("containers")
    if not containers:
        out.append(_required(f"{path}.containers"))
    seen: set[str] = set()
    for kind in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(kind) or []):
            cpath = f"{path}.{kind}[{i}]"
            if not isinstance(c, dict):
                out.append(_required(cpath))
                continue
            name = c.get("name")
            if not name:
                out.append(_required(f"{cpath}.name"))
            else:
                out += _name_causes(f"{cpath}.name", name, True)
                if name in seen:
                    out.append((f"{cpath}.name", "FieldValueDuplicate", f'Duplicate value: "{name}"'))
                seen.add(name)
            if not c.get("image"):
                out.append(_required(f"{cpath}.image"))
    allowed = restart_policies or ["Always", "OnFailure", "Never"]
    policy = spec.get("restartPolicy")
    if policy not in allowed:
        out.append(_not_supported(f"{path}.restartPolicy", policy, allowed) if policy else
                   _required(f"{path}.restartPolicy"))
    volumes: set[str] = set()
    for i, vol in enumerate(spec.get("volumes") or []):
        vname = vol.get("name") if isinstance(vol, dict) else None
        if not vname:
            out.append(_required(f"{path}.volumes[{i}].name"))
        elif vname in volumes:
            out.append((f"{path}.volumes[{i}].name", "FieldValueDuplicate", f'Duplicate value: "{vname}"'))
        volumes.add(vname or "")
    for kind in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(kind) or []):
            for j, mount in enumerate((c.get("volumeMounts") or []) if isinstance(c, dict) else []):
                if isinstance(mount, dict) and mount.get("name") not in volumes:
                    out.append((f"{path}.{kind}[{i}].volumeMounts[{j}].name", "FieldValueNotFound",
                                f'Not found: "{mount.get("name")}"'))
    return out


# Pod spec fields a running pod may change (besides setting nodeName once, which binding does).
_POD_MUTABLE = {"activeDeadlineSeconds", "tolerations", "schedulingGates", "nodeName"}


def _validate_pod(op: str, obj: Obj, old: Obj | None) -> list[Cause]:
    if op == "UPDATE_STATUS":
        return []
    out = validate_pod_spec("spec", obj.get("spec"))
    if op == "UPDATE" and old is not None and out == []:
        out += _pod_update_causes(obj.get("spec") or {}, old.get("spec") or {})
    return out


def _pod_update_causes(new: Obj, old: Obj) -> list[Cause]:
    if old.get("nodeName") and new.get("nodeName") != old.get("nodeName"):
        return [_immutable("spec.nodeName")]

    def stripped(spec: Obj) -> Obj:
        out = {k: v for k, v in spec.items() if k not in _POD_MUTABLE}
        for kind in ("containers", "initContainers"):
            if kind in out:
                out[kind] = [{k: v for k, v in c.items() if k != "image"} for c in out[kind]]
        return out

    if stripped(new) != stripped(old):
        return [("spec", "FieldValueForbidden",
                 "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
                 "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
                 "additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set "
                 "to 1 if it was previously negative)")]
    return []


def _validate_job(op: str, obj: Obj, old: Obj | None) -> list[Cause]:
    if op == "UPDATE_STATUS":
        return []
    spec = obj.get("spec") or {}
    out: list[Cause] = []
    template = spec.get("template")
    if not isinstance(template, dict) or not template.get("spec"):
        out.append(_required("spec.template"))
    else:
        out += validate_pod_spec("spec.template.spec", template.get("spec"),
                                 restart_policies=["OnFailure", "Never"])
        out += _labels_causes("spec.template.metadata.labels", (template.get("metadata") or {}).get("labels"))
        out += _job_selector_causes(spec, template)
    for fname in ("parallelism", "completions", "backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        value = spec.get(fname)
        if isinstance(value, int) and value < 0:
            out.append(_invalid(f"spec.{fname}", value, "must be greater than or equal to 0"))
    mode = spec.get("completionMode")
    if mode not in ("NonIndexed", "Indexed"):
        out.append(_not_supported("spec.completionMode", mode, ["NonIndexed", "Indexed"]))
    if mode == "Indexed" and spec.get("completions") is None:
        out.append(_required("spec.completions"))
    if op == "UPDATE" and old is not None:
        out += _job_update_causes(spec, old.get("spec") or {})
    return out


def _job_selector_causes(spec: Obj, template: Obj) -> list[Cause]:
    selector = spec.get("selector")
    if not isinstance(selector, dict):
        return [_required("spec.selector")]
    labels = (template.get("metadata") or {}).get("labels") or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return [_invalid("spec.template.metadata.labels", labels, "`selector` does not match template "
                             "`labels`")]
    return []


def _job_update_causes(new: Obj, old: Obj) -> list[Cause]:
    out: list[Cause] = []
    if new.get("template") != old.get("template") and not old.get("suspend"):
        out.append(("spec.template", "FieldValueInvalid",
                    "Invalid value: core.PodTemplateSpec{...}: field is immutable"))
    for fname in ("selector", "completionMode", "podFailurePolicy", "manualSelector"):
        if new.get(fname) != old.get(fname):
            out.append((f"spec.{fname}", "FieldValueInvalid", "Invalid value: ...: field is immutable"))
    if new.get("completions") != old.get("completions") and new.get("completionMode") != "Indexed":
        out.append(("spec.completions", "FieldValueInvalid",
                    f"Invalid value: {new.get('completions')}: field is immutable"))
    return out


_PV_SOURCES = ("hostPath", "local", "nfs", "csi", "gcePersistentDisk", "awsElasticBlockStore", "azureDisk",
               "azureFile", "cephfs", "cinder", "fc", "flexVolume", "flocker", "glusterfs", "iscsi",
               "photonPersistentVolume", "portworxVolume", "quobyte", "rbd", "scaleIO", "storageos",
               "vsphereVolume")


def _validate_pv(op: str, obj: Obj, old: Obj | None) -> list[Cause]:
    if op == "UPDATE_STATUS":
        return []
    spec = obj.get("spec") or {}
    out: list[Cause] = []
    if not (spec.get("capacity") or {}).get("storage"):
        out.append(_required("spec.capacity"))
    if not spec.get("accessModes"):
        out.append(_required("spec.accessModes"))
    sources = [s for s in _PV_SOURCES if spec.get(s)]
    if not sources:
        out.append(("spec", "FieldValueRequired", "Required value: must specify a volume type"))
    elif len(sources) > 1:
        out.append(("spec", "FieldValueForbidden", "Forbidden: may not specify more than 1 volume type"))
    policy = spec.get("persistentVolumeReclaimPolicy")
    if policy not in ("Retain", "Delete", "Recycle"):
        out.append(_not_supported("spec.persistentVolumeReclaimPolicy", policy, ["Delete", "Recycle", "Retain"]))
    if op == "UPDATE" and old is not None:
        for src in sources:
            if spec.get(src) != (old.get("spec") or {}).get(src):
                out.append(_immutable("spec.persistentvolumesource"))
                break
    return out


def _validate_pvc(op: str, obj: Obj, old: Obj | None) -> list[Cause]:
    if op == "UPDATE_STATUS":
        return []
    spec = obj.get("spec") or {}
    out: list[Cause] = []
    if not spec.get("accessModes"):
        out.append(_required("spec.accessModes"))
    if not ((spec.get("resources") or {}).get("requests") or {}).get("storage"):
        out.append(_required("spec.resources[storage]"))
    if op == "UPDATE" and old is not None:
        before = dict(old.get("spec") or {})
        after = dict(spec)
        for soft in ("resources", "volumeAttributesClassName"):
            before.pop(soft, None)
            after.pop(soft, None)
        if not before.get("volumeName"):  # binding sets the volume name once
            before.pop("volumeName", None)
            after.pop("volumeName", None)
        if before != after:
            out.append(("spec", "FieldValueForbidden", "Forbidden: spec is immutable after creation except "
                        "resources.requests and volumeAttributesClassName for bound claims"))
    return out


def _validate_storage_class(op: str, obj: Obj, old: Obj | None) -> list[Cause]:
    out: list[Cause] = []
    if not obj.get("provisioner"):
        out.append(_required("provisioner"))
    if op == "UPDATE" and old is not None:
        for fname in ("provisioner", "parameters", "reclaimPolicy", "volumeBindingMode"):
            if obj.get(fname) != old.get(fname):
                out.append(_immutable(fname))
    return out


VALIDATORS = {"configmaps": _validate_configmap, "secrets": _validate_secret, "pods": _validate_pod,
              "jobs": _validate_job, "persistentvolumes": _validate_pv, "persistentvolumeclaims": _validate_pvc,
              "storageclasses": _validate_storage_class}
