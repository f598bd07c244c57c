"""Pod volumes materialised as host directories, as the kubelet's volume plugins would mount them.

Each volume becomes a directory the container's paths are mapped to (see `env.PathRewriter`):

- configMap / secret / downwardAPI / projected: files written under `<pod dir>/volumes/<name>`, with
  `items` (key -> path, per-item `mode`) or every key, `defaultMode` (0644 by default), secrets
  base64-decoded. A missing, non-optional source raises `VolumeNotReady` ("FailedMount"); the node
  retries when ConfigMaps/Secrets change. A projected `serviceAccountToken` with an `audience` is a JWT
  signed by the cluster (`satokens.TokenIssuer`: `aud`, `exp` from `expirationSeconds`, `sub` the pod's
  service account), as RRSA needs; one without `audience` (the `kube-api-access-*` volume) gets the
  sandbox API's bearer token, since the sandbox API server authenticates that token only.
- emptyDir: an empty directory (mode 0777, as the kubelet makes it); `medium: Memory` is not a tmpfs here.
- persistentVolumeClaim: the bound PV's `hostPath.path` or `local.path` directly, or for CSI PVs the
  directory `cluster.csi_resolver(driver, volumeHandle, volumeAttributes)` returns (e.g. NAS). Until the
  claim is Bound the pod waits (FailedMount). Data lives outside the pod dir and survives the pod.
- hostPath: the host path itself (ASK forbids it; the sandbox allows it for local experiments).
- anything else (nfs, inline csi, ...): an empty stand-in directory plus a warning, so pods still run.

`readOnly` is not enforced: the process runs on the host with the sandbox user's permissions.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..satokens import DEFAULT_EXPIRATION_S, TokenIssuer
from .env import ConfigError, configmap_items, field_value, resource_value, secret_items

if TYPE_CHECKING:
    from ..store import Store

Obj = dict[str, Any]
CsiResolver = Callable[[str, str, dict[str, str]], Path | None]


class VolumeNotReady(Exception):
    """A volume cannot be set up yet; the message is the FailedMount event text."""


@dataclass
class PreparedVolumes:
    paths: dict[str, Path] = field(default_factory=dict)  # volume name -> host directory
    warnings: list[str] = field(default_factory=list)


def _write_files(target: Path, files: dict[str, tuple[bytes, int]]) -> None:
    """Replace the directory's content with `files` (relative path -> (content, mode))."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True, mode=0o755)
    os.chmod(target, 0o755)
    for rel, (content, mode) in files.items():
        path = (target / rel).resolve()
        if not str(path).startswith(str(target.resolve()) + os.sep):
            continue  # "..": refuse to escape the volume
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        os.chmod(path, mode)


def _select(items_spec: list[Obj] | None, data: dict[str, bytes], default_mode: int, what: str,
            optional: bool) -> dict[str, tuple[bytes, int]]:
    if not items_spec:
        return {key: (value, default_mode) for key, value in data.items()}
    out: dict[str, tuple[bytes, int]] = {}
    for item in items_spec:
        key = item.get("key", "")
        if key not in data:
            if optional:
                continue
            raise VolumeNotReady(f"configmap references non-existent config key: {key}" if what == "ConfigMap"
                                 else f"references non-existent secret key: {key}")
        out[item.get("path") or key] = (data[key], int(item.get("mode", default_mode)))
    return out


class VolumeBuilder:
    """Sets up one pod's volumes under `<pod dir>/volumes`."""

    def __init__(self, store: Store, pod: Obj, pod_dir: Path, *, csi_resolver: CsiResolver | None,
                 token: str, node_allocatable: dict[str, str], token_issuer: TokenIssuer | None = None) -> None:
        self.store = store
        self.pod = pod
        self.namespace = (pod.get("metadata") or {}).get("namespace") or "default"
        self.root = pod_dir / "volumes"
        self.csi_resolver = csi_resolver
        self.token = token
        self.token_issuer = token_issuer
        self.node_allocatable = node_allocatable

    def prepare(self) -> PreparedVolumes:
        result = PreparedVolumes()
        for volume in (self.pod.get("spec") or {}).get("volumes") or []:
            name = volume.get("name", "")
            result.paths[name] = self._volume(volume, result.warnings)
        return result

    # -------------------------------------------------------------- per type

    def _volume(self, volume: Obj, warnings: list[str]) -> Path:
        name = volume.get("name", "")
        target = self.root / name
        if "configMap" in volume:
            _write_files(target, self._configmap_files(volume["configMap"]))
        elif "secret" in volume:
            _write_files(target, self._secret_files(volume["secret"]))
        elif "downwardAPI" in volume:
            _write_files(target, self._downward_files(volume["downwardAPI"]))
        elif "projected" in volume:
            _write_files(target, self._projected_files(volume["projected"]))
        elif "emptyDir" in volume:
            target.mkdir(parents=True, exist_ok=True)
            os.chmod(target, 0o777)
        elif "persistentVolumeClaim" in volume:
            return self._claim(volume["persistentVolumeClaim"].get("claimName", ""))
        elif "hostPath" in volume:
            path = Path(volume["hostPath"].get("path", "/"))
            path.mkdir(parents=True, exist_ok=True)
            return path
        else:
            kinds = [k for k in volume if k != "name"]
            warnings.append(f"volume {name!r} of type {kinds[0] if kinds else '?'} is not supported by the "
                            "sandbox; an empty directory stands in for it")
            target.mkdir(parents=True, exist_ok=True)
            os.chmod(target, 0o777)
        return target

    def _configmap_files(self, source: Obj, *, default_mode: int | None = None) -> dict[str, tuple[bytes, int]]:
        name = source.get("name", "")
        mode = int(source.get("defaultMode", default_mode if default_mode is not None else 0o644))
        obj = self.store.peek("configmaps", self.namespace, name)
        if obj is None:
            if source.get("optional"):
                return {}
            raise VolumeNotReady(f'configmap "{name}" not found')
        return _select(source.get("items"), configmap_items(obj), mode, "ConfigMap", bool(source.get("optional")))

    def _secret_files(self, source: Obj, *, default_mode: int | None = None) -> dict[str, tuple[bytes, int]]:
        name = source.get("secretName") or source.get("name", "")
        mode = int(source.get("defaultMode", default_mode if default_mode is not None else 0o644))
        obj = self.store.peek("secrets", self.namespace, name)
        if obj is None:
            if source.get("optional"):
                return {}
            raise VolumeNotReady(f'secret "{name}" not found')
        return _select(source.get("items"), secret_items(obj), mode, "Secret", bool(source.get("optional")))

    def _downward_files(self, source: Obj, *, default_mode: int | None = None) -> dict[str, tuple[bytes, int]]:
        mode = int(source.get("defaultMode", default_mode if default_mode is not None else 0o644))
        out: dict[str, tuple[bytes, int]] = {}
        for item in source.get("items") or []:
            try:
                if "fieldRef" in item:
                    value = field_value(self.pod, item["fieldRef"].get("fieldPath", ""))
                else:
                    ref = item.get("resourceFieldRef") or {}
                    value = resource_value(self.pod, ref.get("containerName"), ref.get("resource", ""),
                                           ref.get("divisor"), self.node_allocatable)
            except ConfigError as exc:
                raise VolumeNotReady(str(exc)) from exc
            out[item.get("path", "")] = (value.encode(), int(item.get("mode", mode)))
        return out

    def _projected_files(self, source: Obj) -> dict[str, tuple[bytes, int]]:
        mode = int(source.get("defaultMode", 0o644))
        out: dict[str, tuple[bytes, int]] = {}
        for part in source.get("sources") or []:
            if "configMap" in part:
                out.update(self._configmap_files(part["configMap"], default_mode=mode))
            elif "secret" in part:
                out.update(self._secret_files(part["secret"], default_mode=mode))
            elif "downwardAPI" in part:
                out.update(self._downward_files(part["downwardAPI"], default_mode=mode))
            elif "serviceAccountToken" in part:
                path = part["serviceAccountToken"].get("path") or "token"
                out[path] = (self._sa_token(part["serviceAccountToken"]).encode(), mode)
        return out

    def _sa_token(self, source: Obj) -> str:
        audience = source.get("audience")
        if not audience or self.token_issuer is None:
            return self.token
        meta, spec = self.pod.get("metadata") or {}, self.pod.get("spec") or {}
        account = spec.get("serviceAccountName") or "default"
        sa = self.store.peek("serviceaccounts", self.namespace, account) or {}
        return self.token_issuer.issue(
            namespace=self.namespace, service_account=account,
            service_account_uid=(sa.get("metadata") or {}).get("uid", ""), pod_name=meta.get("name", ""),
            pod_uid=meta.get("uid", ""), audience=str(audience),
            expiration_s=int(source.get("expirationSeconds") or DEFAULT_EXPIRATION_S))

    def _claim(self, claim_name: str) -> Path:
        pvc = self.store.peek("persistentvolumeclaims", self.namespace, claim_name)
        if pvc is None:
            raise VolumeNotReady(f'persistentvolumeclaim "{claim_name}" not found')
        volume_name = (pvc.get("spec") or {}).get("volumeName")
        if (pvc.get("status") or {}).get("phase") != "Bound" or not volume_name:
            raise VolumeNotReady(f'persistentvolumeclaim "{claim_name}" is not bound')
        pv = self.store.peek("persistentvolumes", None, volume_name)
        if pv is None:
            raise VolumeNotReady(f'persistentvolume "{volume_name}" not found')
        return self._pv_path(pv)

    def _pv_path(self, pv: Obj) -> Path:
        spec = pv.get("spec") or {}
        name = (pv.get("metadata") or {}).get("name", "")
        if "hostPath" in spec or "local" in spec:
            path = Path((spec.get("hostPath") or spec.get("local") or {}).get("path", ""))
            path.mkdir(parents=True, exist_ok=True)
            return path
        if "csi" in spec:
            csi = spec["csi"]
            resolved = None
            if self.csi_resolver is not None:
                resolved = self.csi_resolver(csi.get("driver", ""), csi.get("volumeHandle", ""),
                                             dict(csi.get("volumeAttributes") or {}))
            if resolved is None:
                raise VolumeNotReady(f'MountVolume.MountDevice failed for volume "{name}" : kubernetes.io/csi: '
                                     f"attacher.MountDevice failed to create newCsiDriverClient: driver name "
                                     f"{csi.get('driver', '')} not found in the list of registered CSI drivers")
            resolved.mkdir(parents=True, exist_ok=True)
            return resolved
        raise VolumeNotReady(f'persistentvolume "{name}" has a volume source the sandbox cannot mount '
                             "(supported: hostPath, local, csi)")
