"""The resource types the sandbox's API server serves, as discovery describes them."""

from __future__ import annotations

from dataclasses import dataclass, field

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()  # e.g. ("status", "log")
    categories: tuple[str, ...] = ()
    # field selectors the real server accepts for this kind, beyond metadata.name/namespace
    field_labels: tuple[str, ...] = field(default=())

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


RESOURCES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "namespaces", "Namespace", False, "namespace", ("ns",), ("status",),
                 field_labels=("status.phase",)),
    ResourceType("", "v1", "configmaps", "ConfigMap", True, "configmap", ("cm",)),
    ResourceType("", "v1", "secrets", "Secret", True, "secret", (), field_labels=("type",)),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", True, "serviceaccount", ("sa",)),
    ResourceType("", "v1", "nodes", "Node", False, "node", ("no",), ("status",),
                 field_labels=("spec.unschedulable",)),
    ResourceType("", "v1", "persistentvolumes", "PersistentVolume", False, "persistentvolume", ("pv",),
                 ("status",), field_labels=("status.phase",)),
    ResourceType("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True,
                 "persistentvolumeclaim", ("pvc",), ("status",), field_labels=("status.phase",)),
    ResourceType("", "v1", "pods", "Pod", True, "pod", ("po",), ("status", "log"), ("all",),
                 field_labels=("status.phase", "spec.nodeName", "spec.restartPolicy",
                               "spec.schedulerName", "spec.serviceAccountName", "status.podIP",
                               "status.nominatedNodeName")),
    ResourceType("", "v1", "events", "Event", True, "event", ("ev",),
                 field_labels=("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                               "involvedObject.uid", "involvedObject.apiVersion",
                               "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason",
                               "reportingComponent", "source", "type")),
    ResourceType("batch", "v1", "jobs", "Job", True, "job", (), ("status",), ("all",),
                 field_labels=("status.successful",)),
    # https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/lease-v1/
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease", True, "lease"),
    ResourceType("storage.k8s.io", "v1", "storageclasses", "StorageClass", False, "storageclass", ("sc",)),
)

BY_PLURAL: dict[str, ResourceType] = {r.plural: r for r in RESOURCES}
BY_KIND: dict[str, ResourceType] = {r.kind: r for r in RESOURCES}


def lookup(group: str, version: str, plural: str) -> ResourceType | None:
    rt = BY_PLURAL.get(plural)
    if rt is None or rt.group != group or rt.version != version:
        return None
    return rt
