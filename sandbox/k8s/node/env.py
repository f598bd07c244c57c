"""A container's environment, as the kubelet builds it, and the mount-path rewriting of the sandbox.

Environment (same order and precedence as the kubelet): `envFrom` sources in order, then `env` entries
(later wins); `$(VAR)` in `value` refers to variables defined before it (`$$(VAR)` escapes; unknown
references stay literal); `valueFrom` supports configMapKeyRef, secretKeyRef (base64-decoded), fieldRef
and resourceFieldRef. A missing ConfigMap/Secret/key that is not `optional` raises `ConfigError` with the
kubelet's wording, which the node reports as `CreateContainerConfigError`.

Mount paths: the process runs on the host, so `/etc/cfg` in a command would mean the host's /etc/cfg.
`PathRewriter` replaces every mountPath that appears as a path prefix (the mountPath itself, or followed
by "/") in command, args, env values and workingDir with the host directory holding the volume, longest
mountPath first. See the kubelet module docstring for what this means for workloads.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import re
from collections.abc import Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .quantity import parse_quantity

if TYPE_CHECKING:
    from ..store import Store

Obj = dict[str, Any]

HOST_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_FIELD_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['([^']*)'\]$")


class ConfigError(Exception):
    """The container cannot be configured yet (CreateContainerConfigError)."""


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: defined names are substituted, `$$` stays one `$`."""

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR_REF.sub(repl, value)


def decode_secret_value(secret: Obj, key: str) -> str | None:
    data = secret.get("data") or {}
    if key in data:
        try:
            return base64.b64decode(data[key]).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            return str(data[key])
    string_data = secret.get("stringData") or {}
    return string_data.get(key)


def secret_items(secret: Obj) -> dict[str, bytes]:
    """All keys of a Secret, decoded (stringData too, should admission not have folded it in)."""
    out: dict[str, bytes] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            out[key] = base64.b64decode(value)
        except (binascii.Error, ValueError):
            out[key] = str(value).encode()
    for key, value in (secret.get("stringData") or {}).items():
        out[key] = str(value).encode()
    return out


def configmap_items(configmap: Obj) -> dict[str, bytes]:
    out = {k: str(v).encode() for k, v in (configmap.get("data") or {}).items()}
    for key, value in (configmap.get("binaryData") or {}).items():
        try:
            out[key] = base64.b64decode(value)
        except (binascii.Error, ValueError):
            out[key] = str(value).encode()
    return out


def field_value(pod: Obj, path: str) -> str:
    """A downward-API fieldRef value."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    subscript = _FIELD_SUBSCRIPT.match(path)
    if subscript:
        return str((meta.get(subscript.group(1)) or {}).get(subscript.group(2), ""))
    simple: dict[str, Any] = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "metadata.generateName": meta.get("generateName"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName") or "default",
        "status.podIP": status.get("podIP"),
        "status.hostIP": status.get("hostIP"),
        "status.podIPs": status.get("podIP"),
        "status.hostIPs": status.get("hostIP"),
    }
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    if path not in simple:
        raise ConfigError(f"unsupported fieldRef fieldPath {path!r}")
    return str(simple[path] or "")


def resource_value(pod: Obj, container_name: str | None, resource: str, divisor: Any,
                   node_allocatable: dict[str, str]) -> str:
    """A resourceFieldRef value: the limit (node allocatable when unset) or request, divided, rounded up."""
    containers = (pod.get("spec") or {}).get("containers") or []
    container = next((c for c in containers if c.get("name") == container_name), containers[0] if containers
                     else {})
    kind, _, name = resource.partition(".")
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(name)
    if raw is None and kind == "limits":
        raw = node_allocatable.get(name)
    if raw is None and kind == "requests":
        raw = (resources.get("limits") or {}).get(name, 0)
    amount = parse_quantity(raw if raw is not None else 0)
    div = parse_quantity(divisor or "1") or Decimal(1)
    return str(max(math.ceil(amount / div), 1 if name == "cpu" and amount > 0 else 0))


def _lookup(store: Store, kind: str, namespace: str, name: str) -> Obj | None:
    return store.peek("configmaps" if kind == "ConfigMap" else "secrets", namespace, name)


def _key_value(store: Store, kind: str, namespace: str, ref: Obj) -> str | None:
    name, key = ref.get("name", ""), ref.get("key", "")
    obj = _lookup(store, kind, namespace, name)
    optional = bool(ref.get("optional"))
    if obj is None:
        if optional:
            return None
        raise ConfigError(f'{kind.lower()} "{name}" not found')
    value = (obj.get("data") or {}).get(key) if kind == "ConfigMap" else decode_secret_value(obj, key)
    if value is None and kind == "ConfigMap" and key in (obj.get("binaryData") or {}):
        value = configmap_items(obj)[key].decode("utf-8", "replace")
    if value is None:
        if optional:
            return None
        raise ConfigError(f"couldn't find key {key} in {kind} {namespace}/{name}")
    return str(value)


def _env_from(store: Store, namespace: str, sources: Iterable[Obj]) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in sources:
        prefix = source.get("prefix") or ""
        for kind, field_name in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            ref = source.get(field_name)
            if not ref:
                continue
            obj = _lookup(store, kind, namespace, ref.get("name", ""))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{kind.lower()} "{ref.get("name", "")}" not found')
            items = configmap_items(obj) if kind == "ConfigMap" else secret_items(obj)
            for key, value in items.items():
                env[prefix + key] = value.decode("utf-8", "replace")
    return env


def build_env(store: Store, pod: Obj, container: Obj, *, api_port: int,
              node_allocatable: dict[str, str]) -> dict[str, str]:
    """The process environment for a container. Raises ConfigError when a reference is missing."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    namespace = meta.get("namespace") or "default"
    env: dict[str, str] = {k: os.environ[k] for k in HOST_ENV_KEYS if k in os.environ}
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("LANG", "C.UTF-8")
    env.update({
        "HOSTNAME": spec.get("hostname") or meta.get("name", ""),
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(api_port),
        "KUBERNETES_SERVICE_PORT_HTTPS": str(api_port),
        "KUBERNETES_PORT": f"tcp://127.0.0.1:{api_port}",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(_env_from(store, namespace, container.get("envFrom") or []))
    for entry in container.get("env") or []:
        name = entry.get("name", "")
        if "value" in entry or not entry.get("valueFrom"):
            env[name] = expand(str(entry.get("value") or ""), env)
            continue
        value_from = entry["valueFrom"]
        value: str | None
        if "configMapKeyRef" in value_from:
            value = _key_value(store, "ConfigMap", namespace, value_from["configMapKeyRef"])
        elif "secretKeyRef" in value_from:
            value = _key_value(store, "Secret", namespace, value_from["secretKeyRef"])
        elif "fieldRef" in value_from:
            value = field_value(pod, value_from["fieldRef"].get("fieldPath", ""))
        elif "resourceFieldRef" in value_from:
            ref = value_from["resourceFieldRef"]
            value = resource_value(pod, ref.get("containerName") or container.get("name"),
                                   ref.get("resource", ""), ref.get("divisor"), node_allocatable)
        else:
            raise ConfigError(f"unsupported valueFrom for env {name}")
        if value is not None:
            env[name] = value
    return env


class PathRewriter:
    """Maps container paths (mountPaths) to host paths inside strings; see the module docstring."""

    def __init__(self, mounts: dict[str, str]) -> None:
        # mountPath -> host path; "/" and relative paths cannot be rewritten meaningfully
        self.mounts = {m.rstrip("/"): h for m, h in mounts.items() if m.startswith("/") and m.rstrip("/")}
        ordered = sorted(self.mounts, key=len, reverse=True)
        self._pattern = (
            re.compile(r"(?<![\w.~/-])(" + "|".join(re.escape(m) for m in ordered) + r")(?=/|$|[^\w.-])")
            if ordered else None
        )

    def __call__(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(lambda m: self.mounts[m.group(1)], text)

    def host_path(self, path: str) -> str | None:
        """The host path for an absolute container path under a mount, else None."""
        rewritten = self(path)
        return rewritten if rewritten != path else None
