"""Service accounts, as kube-apiserver's ServiceAccount admission plugin and kube-controller-manager do them.

- **Controllers** (`ServiceAccountController`): every namespace gets a `default` ServiceAccount (the
  serviceaccount controller) and a `kube-root-ca.crt` ConfigMap holding the API server's CA (the
  root-ca-cert-publisher), the existing namespaces too, and both come back when deleted (the ConfigMap also
  when changed). The real controllers are asynchronous; here they run as store listeners, in the same
  step as the namespace's creation, so a client that creates a namespace and then a pod never races them
  (on a real cluster that race exists and the pod is refused until the account appears).
- **Admission** (`admit_pod`, on pod CREATE): `spec.serviceAccountName` defaults to `default`; a pod naming a
  service account that does not exist is refused with 403 Forbidden, worded as the plugin words it
  (`pods "x" is forbidden: error looking up service account ns/sa: serviceaccount "sa" not found`); unless
  `automountServiceAccountToken` is false on the pod (else on the account), the projected token volume
  `kube-api-access-<5 chars>` (token, ca.crt, namespace) is added and mounted read-only at
  /var/run/secrets/kubernetes.io/serviceaccount in every container that has no mount there; the account's
  imagePullSecrets are copied to a pod that has none. Mirror pods and enforce-mountable-secrets are not modelled.

The node writes the projected volume's files (node/volumes.py); its `token` is the cluster's bearer token.
Source: plugin/pkg/admission/serviceaccount/admission.go, pkg/controller/serviceaccount,
pkg/controller/certificates/rootcacertpublisher (kubernetes/kubernetes).
"""

from __future__ import annotations

import contextlib
import random
from typing import TYPE_CHECKING, Any

from . import errors
from .store import GENERATE_ALPHABET, WatchEvent

if TYPE_CHECKING:
    from .cluster import KubeCluster
    from .store import Store

Obj = dict[str, Any]

DEFAULT_SA = "default"
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
ROOT_CA_DESCRIPTION = ("Contains a CA bundle that can be used to verify the kube-apiserver when using internal "
                       "endpoints such as the internal service IP or kubernetes.default.svc. No other usage is "
                       "guaranteed across distributions of Kubernetes clusters.")
TOKEN_VOLUME_PREFIX = "kube-api-access-"
TOKEN_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_EXPIRATION_S = 3607  # what the plugin asks for (an hour plus the kubelet's 7 s of jitter)


def token_volume_source() -> Obj:
    """The plugin's TokenVolumeSource(): token, the cluster CA and the pod's namespace."""
    return {
        "defaultMode": 420,
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_S, "path": "token"}},
            {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1",
                                                                          "fieldPath": "metadata.namespace"}}]}},
        ],
    }


def _forbidden_name(meta: Obj) -> str:
    """admission.NewForbidden names the object by its generateName when the name was generated."""
    name, generate = str(meta.get("name") or ""), str(meta.get("generateName") or "")
    if generate and name.startswith(generate) and len(name) == len(generate) + 5:
        return generate
    return name or "Unknown"


def admit_pod(store: Store, op: str, pod: Obj) -> None:
    """ServiceAccount admission for a pod being created (mutates `pod`, or raises 403)."""
    if op != "CREATE":
        return
    meta = pod.get("metadata") or {}
    spec = pod.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    namespace = meta.get("namespace") or "default"
    account_name = spec.get("serviceAccountName") or DEFAULT_SA
    spec["serviceAccountName"] = account_name
    spec.setdefault("serviceAccount", account_name)
    account = store.peek("serviceaccounts", namespace, account_name)
    if account is None:
        name = _forbidden_name(meta)
        raise errors.ApiError(
            403, "Forbidden",
            f'pods "{name}" is forbidden: error looking up service account {namespace}/{account_name}: '
            f'serviceaccount "{account_name}" not found',
            details={"name": name, "kind": "pods"})
    if _should_automount(account, spec):
        _mount_token(spec)
    if not spec.get("imagePullSecrets") and account.get("imagePullSecrets"):
        spec["imagePullSecrets"] = [{"name": s.get("name")} for s in account["imagePullSecrets"]
                                    if isinstance(s, dict)]


def _should_automount(account: Obj, spec: Obj) -> bool:
    if spec.get("automountServiceAccountToken") is not None:
        return bool(spec["automountServiceAccountToken"])
    if account.get("automountServiceAccountToken") is not None:
        return bool(account["automountServiceAccountToken"])
    return True


def _mount_token(spec: Obj) -> None:
    volumes: list[Any] = spec["volumes"] if isinstance(spec.get("volumes"), list) else []
    existing = next((v["name"] for v in volumes if isinstance(v, dict)
                     and str(v.get("name", "")).startswith(TOKEN_VOLUME_PREFIX)), None)
    volume_name = existing or TOKEN_VOLUME_PREFIX + "".join(random.choices(GENERATE_ALPHABET, k=5))
    needed = False
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            if not isinstance(container, dict):
                continue
            mounts: list[Any] = container["volumeMounts"] if isinstance(container.get("volumeMounts"), list) else []
            if any(isinstance(m, dict) and m.get("mountPath") == TOKEN_MOUNT_PATH for m in mounts):
                continue
            container["volumeMounts"] = [*mounts, {"name": volume_name, "readOnly": True,
                                                   "mountPath": TOKEN_MOUNT_PATH}]
            needed = True
    if needed and existing is None:
        spec["volumes"] = [*volumes, {"name": volume_name, "projected": token_volume_source()}]


class ServiceAccountController:
    """The `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap in every namespace (see module doc)."""

    def __init__(self, cluster: KubeCluster) -> None:
        self.cluster = cluster
        self.store = cluster.store
        self.ca_pem = cluster.tls.ca_pem().decode()

    async def run(self) -> None:
        import asyncio

        for ns in list(self.store.iter_objects("namespaces")):
            self.ensure(ns["metadata"]["name"])
        self.store.listeners.append(self.on_event)
        try:
            await asyncio.Event().wait()
        finally:
            with contextlib.suppress(ValueError):
                self.store.listeners.remove(self.on_event)

    def on_event(self, event: WatchEvent) -> None:
        meta = event.obj.get("metadata") or {}
        if event.plural == "namespaces" and event.type != "DELETED":
            self.ensure(meta["name"])
            return
        lost_account = event.plural == "serviceaccounts" and event.type == "DELETED" and meta.get("name") == DEFAULT_SA
        changed_ca = event.plural == "configmaps" and meta.get("name") == ROOT_CA_CONFIGMAP and (
            event.type == "DELETED" or (event.obj.get("data") or {}).get("ca.crt") != self.ca_pem)
        if lost_account or changed_ca:
            self.ensure(meta.get("namespace") or "default")

    def ensure(self, namespace: str) -> None:
        ns = self.store.peek("namespaces", None, namespace)
        if ns is None or (ns.get("metadata") or {}).get("deletionTimestamp"):
            return
        with contextlib.suppress(errors.ApiError):
            if self.store.peek("serviceaccounts", namespace, DEFAULT_SA) is None:
                self.store.create("serviceaccounts", {"metadata": {"name": DEFAULT_SA}}, namespace=namespace)
        with contextlib.suppress(errors.ApiError):
            current = self.store.peek("configmaps", namespace, ROOT_CA_CONFIGMAP)
            if current is None:
                self.store.create("configmaps", self._root_ca(), namespace=namespace)
            elif (current.get("data") or {}).get("ca.crt") != self.ca_pem:
                self.store.mutate("configmaps", namespace, ROOT_CA_CONFIGMAP, self._reset_root_ca)

    def _root_ca(self) -> Obj:
        return {"metadata": {"name": ROOT_CA_CONFIGMAP, "annotations": {"kubernetes.io/description":
                                                                         ROOT_CA_DESCRIPTION}},
                "data": {"ca.crt": self.ca_pem}}

    def _reset_root_ca(self, cm: Obj) -> None:
        cm["data"] = {"ca.crt": self.ca_pem}
        cm.pop("binaryData", None)
