"""Self reviews: what `kubectl auth can-i` and `kubectl auth whoami` ask the API server.

- `authorization.k8s.io/v1` SelfSubjectAccessReview (`can-i VERB RESOURCE`) and SelfSubjectRulesReview
  (`can-i --list`);
- `authentication.k8s.io/v1` SelfSubjectReview (`auth whoami`).

They are create-only and stored nowhere, as on a real server. The sandbox has one identity per cluster (the
bearer token of its kubeconfig), which is a cluster admin: every review is allowed, with the reason the RBAC
authorizer gives a member of `system:masters`. There is no RBAC to ask about other identities, so
SubjectAccessReview / TokenReview (for other users) are not served.
"""

from __future__ import annotations

from typing import Any

from . import errors

Obj = dict[str, Any]

USERNAME = "sandbox-admin"
GROUPS = ["system:masters", "system:authenticated"]
ALLOWED_REASON = ('RBAC: allowed by ClusterRoleBinding "cluster-admin" of ClusterRole "cluster-admin" to Group '
                  '"system:masters"')

# group -> version -> [(plural, kind)]
REVIEW_GROUPS: dict[str, dict[str, list[tuple[str, str]]]] = {
    "authentication.k8s.io": {"v1": [("selfsubjectreviews", "SelfSubjectReview")]},
    "authorization.k8s.io": {"v1": [("selfsubjectaccessreviews", "SelfSubjectAccessReview"),
                                    ("selfsubjectrulesreviews", "SelfSubjectRulesReview")]},
}


def discovery_groups() -> list[Obj]:
    """APIGroup entries for `/apis`."""
    return [{"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in versions],
             "preferredVersion": {"groupVersion": f"{g}/{next(iter(versions))}", "version": next(iter(versions))}}
            for g, versions in REVIEW_GROUPS.items()]


def resource_list(group: str, version: str) -> list[Obj]:
    """APIResource entries for `/apis/<group>/<version>`."""
    return [{"name": plural, "singularName": plural[:-1], "namespaced": False, "kind": kind, "verbs": ["create"]}
            for plural, kind in REVIEW_GROUPS.get(group, {}).get(version, [])]


def kind_of(group: str, version: str, plural: str) -> str | None:
    for name, kind in REVIEW_GROUPS.get(group, {}).get(version, []):
        if name == plural:
            return kind
    return None


def review(group: str, version: str, plural: str, body: Obj) -> Obj:
    """The answer to a POST of `body` to /apis/<group>/<version>/<plural> (201)."""
    kind = kind_of(group, version, plural)
    if kind is None:
        raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
    if body.get("kind") and body["kind"] != kind:
        raise errors.bad_request(f"the kind in the request body ({body['kind']}) does not match the expected kind "
                                 f"({kind})")
    meta = dict(body.get("metadata") or {})
    meta.setdefault("creationTimestamp", None)
    out: Obj = {"kind": kind, "apiVersion": f"{group}/{version}", "metadata": meta}
    spec: Obj = body["spec"] if isinstance(body.get("spec"), dict) else {}
    if kind == "SelfSubjectReview":
        out["status"] = {"userInfo": {"username": USERNAME, "groups": list(GROUPS)}}
        return out
    out["spec"] = spec
    if kind == "SelfSubjectAccessReview":
        has_resource, has_path = bool(spec.get("resourceAttributes")), bool(spec.get("nonResourceAttributes"))
        if has_resource == has_path:
            raise errors.invalid(group, kind, "", [(
                "spec.resourceAttributes", "FieldValueInvalid",
                'Invalid value: "null": exactly one of nonResourceAttributes or resourceAttributes must be '
                "specified")])
        out["status"] = {"allowed": True, "reason": ALLOWED_REASON}
        return out
    out["status"] = {
        "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
                          {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
                           "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]}],
        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
        "incomplete": False,
    }
    return out
