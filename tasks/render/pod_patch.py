"""``job.pod_template_patch``: a strategic merge patch applied onto the rendered pod template.

The escape hatch for what ``BatchSpec`` has no field for (affinity, extra volumes and mounts, a sidecar, a
pod-level ``securityContext``, ``dnsConfig``...). It is the patch ``kubectl patch --type strategic`` sends, applied
here, before the Job is created, so the dry run shows the result and the Job's name hashes it.

How lists merge is not guessed: every list's ``x-kubernetes-patch-strategy`` and ``x-kubernetes-patch-merge-key``
come from the Kubernetes OpenAPI schema (the copy ``kubernetes-validate`` ships, ``SCHEMA_VERSION``), which holds
the ``patchStrategy`` / ``patchMergeKey`` tags of the Go types in k8s.io/api/core/v1/types.go. For the pod
template that gives, e.g.: ``containers``, ``initContainers``, ``volumes``, ``imagePullSecrets``, ``env``: merged
by ``name``; ``volumeMounts`` by ``mountPath``; ``ports`` by ``containerPort``; ``tolerations``, ``command``,
``args``, ``envFrom``: no strategy, so replaced whole. The rules applied (https://github.com/kubernetes/community/blob/master/contributors/devel/sig-api-machinery/strategic-merge-patch.md,
https://kubernetes.io/docs/tasks/manage-kubernetes-objects/update-api-object-kubectl-patch/):

- maps merge key by key; ``null`` deletes a key;
- a list with strategy ``merge`` and a merge key: items with the same key merge, new ones are appended, an item
  ``{"<key>": ..., "$patch": "delete"}`` removes one; a list of scalars with strategy ``merge`` is a set union;
- any other list is replaced;
- ``$patch: replace`` in a map replaces that map; an item ``{"$patch": "replace"}`` in a list replaces the list.
  Other directives (``$retainKeys``, ``$setElementOrder``, ``$deleteFromPrimitiveList``) are what kubectl computes
  for itself; they are refused.

Checked before anything exists (``tasks.cloud.admission``): the patch against the schema (unknown fields, wrong
types, at the patch's own paths), the patched template against the strict schema (required fields; a volume with
exactly one source), and what ask-batch relies on unchanged (``protected_problems``): the run's selector labels
(``app.kubernetes.io/managed-by``, ``ask-batch.io/run``, ``ask-batch.io/index``), ``restartPolicy``, the workload
container (by name) with its image, imagePullPolicy, command, args, resources, every env var and volumeMount
ask-batch renders and the securityContext fields ``job.security`` sets, the config/secret/data volumes and the
data-directory init container. A patch may add anything else (env vars, mounts, volumes, containers,
tolerations). Every problem is a ``tasks.errors.SpecError`` naming ``job.pod_template_patch.<path>``.
"""

import copy
import difflib
import functools
import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

from tasks.errors import SpecError

FIELD = "job.pod_template_patch"
#: The Kubernetes schema the patch and the patched template are checked against (the version the sandbox serves
#: and the property tests use).
SCHEMA_VERSION = "v1.32.0-local-strict"
POD_TEMPLATE = "io.k8s.api.core.v1.PodTemplateSpec"
_DEF_PREFIX = "#/$defs/"
_REFERENCE = "https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/"
_DIRECTIVE = "$patch"

Problem = tuple[str, str]


class PatchError(ValueError):
    """A patch that cannot be applied: ``path`` inside the patch, and why."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path, self.message = path, message


@functools.cache
def definitions() -> dict[str, Any]:
    """The Kubernetes JSON-schema definitions (``$defs``), keyed like ``io.k8s.api.core.v1.PodSpec``."""
    path = resources.files("kubernetes_validate") / "kubernetes-json-schema" / SCHEMA_VERSION / "_definitions.json"
    return dict(json.loads(path.read_text())["$defs"])


def _resolve(schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """Follow ``$ref`` (also inside ``allOf``) to the definition; {} for none."""
    schema = dict(schema or {})
    ref = schema.get("$ref") or next((s.get("$ref") for s in schema.get("allOf") or [] if "$ref" in s), None)
    if ref and ref.startswith(_DEF_PREFIX):
        return definitions().get(ref[len(_DEF_PREFIX):], {})
    return schema


def _types(schema: Mapping[str, Any]) -> set[str]:
    kind = schema.get("type")
    return set(kind) if isinstance(kind, list) else {kind} if kind else set()


def _property(schema: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    """The schema of ``key`` in an object schema (properties, else additionalProperties), or None if unknown."""
    schema = _resolve(schema)
    props = schema.get("properties") or {}
    if key in props:
        return dict(props[key])
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        return extra
    if extra is False or props:
        return None
    return {}  # free-form


def list_strategy(schema: Mapping[str, Any]) -> tuple[bool, str | None]:
    """(merge?, merge key) of a list field, from ``x-kubernetes-patch-strategy`` / ``-merge-key``."""
    strategy = str(schema.get("x-kubernetes-patch-strategy") or "")
    return "merge" in strategy.split(","), schema.get("x-kubernetes-patch-merge-key")


def _fmt(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


# --------------------------------------------------------------------------------------------- merge


def strategic_merge(base: Any, patch: Any, schema: Mapping[str, Any], *, path: str = "") -> Any:
    """``base`` with the strategic merge ``patch`` applied (neither is changed), per ``schema`` (JSON schema).

    Raises:
        PatchError: a directive ask-batch does not apply, or a list item without its merge key.
    """
    if not isinstance(patch, Mapping) or not isinstance(base, Mapping):
        return copy.deepcopy(patch)
    directive = patch.get(_DIRECTIVE)
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != _DIRECTIVE}
    if directive not in (None, "merge"):
        raise PatchError(_fmt(path, _DIRECTIVE), f"{directive!r} is not a directive for a map here; fix: use "
                         f"'replace', or null on a key to delete it")
    out = copy.deepcopy(dict(base))
    for key, value in patch.items():
        if key == _DIRECTIVE:
            continue
        if key.startswith("$"):
            raise PatchError(_fmt(path, key), "this patch directive is not supported (kubectl computes it); fix: "
                             "write the fields as they should be, or null to delete one")
        where = _fmt(path, key)
        if value is None:
            out.pop(key, None)
            continue
        sub = _resolve(_property(schema, key) or {})
        if isinstance(value, list) and isinstance(out.get(key), list):
            out[key] = _merge_list(out[key], value, _property(schema, key) or {}, sub, path=where)
        elif isinstance(value, list):
            out[key] = _merge_list([], value, _property(schema, key) or {}, sub, path=where)
        else:
            out[key] = strategic_merge(out.get(key, {}) if isinstance(value, Mapping) else None, value, sub,
                                       path=where)
    return out


def _merge_list(base: list[Any], patch: list[Any], field: Mapping[str, Any], schema: Mapping[str, Any], *,
                path: str) -> list[Any]:
    replace = any(isinstance(i, Mapping) and i.get(_DIRECTIVE) == "replace" and len(i) == 1 for i in patch)
    patch = [i for i in patch if not (isinstance(i, Mapping) and i.get(_DIRECTIVE) == "replace" and len(i) == 1)]
    merge, key = list_strategy(field)
    item_schema = _resolve(schema.get("items") or {})
    if replace or not merge:
        for i, item in enumerate(patch):
            if isinstance(item, Mapping) and _DIRECTIVE in item:
                raise PatchError(_fmt(_fmt(path, i), _DIRECTIVE), "this list is replaced whole (no merge key in "
                                 "the Kubernetes schema), so an item cannot be deleted by directive; fix: give "
                                 "the whole list as it should be")
        return [strategic_merge({}, item, item_schema) if isinstance(item, Mapping) else copy.deepcopy(item)
                for item in patch]
    if key is None:  # a set of scalars
        return copy.deepcopy(base) + [copy.deepcopy(v) for v in patch if v not in base]
    out = copy.deepcopy(base)
    for i, item in enumerate(patch):
        where = _fmt(path, i)
        if not isinstance(item, Mapping) or key not in item:
            raise PatchError(where, f"an item of this list needs its merge key {key!r} (Kubernetes merges the "
                             f"list by it); fix: add {key!r}")
        found = next((n for n, old in enumerate(out) if isinstance(old, Mapping) and old.get(key) == item[key]),
                     None)
        if item.get(_DIRECTIVE) == "delete":
            if found is not None:
                del out[found]
            continue
        if found is None:
            out.append(strategic_merge({}, item, item_schema, path=where))
        else:
            out[found] = strategic_merge(out[found], item, item_schema, path=where)
    return out


# --------------------------------------------------------------------------------------------- schema checks


def _strip_directives(patch: Any) -> Any:
    """The patch without ``$patch`` directives and null deletions, for checking it against the schema."""
    if isinstance(patch, Mapping):
        return {k: _strip_directives(v) for k, v in patch.items() if k != _DIRECTIVE and v is not None}
    if isinstance(patch, list):
        return [_strip_directives(v) for v in patch
                if not (isinstance(v, Mapping) and v.get(_DIRECTIVE) in ("replace", "delete"))]
    return patch


def _without_required(node: Any) -> Any:
    """The schema without its ``required`` keywords (lists); a *property* named "required" (a mapping) stays."""
    if isinstance(node, Mapping):
        return {k: _without_required(v) for k, v in node.items() if not (k == "required" and isinstance(v, list))}
    if isinstance(node, list):
        return [_without_required(v) for v in node]
    return node


@functools.cache
def _validator(partial: bool) -> Any:
    """A Draft 2020-12 validator of a PodTemplateSpec; ``partial``: no required fields (a patch is partial)."""
    import jsonschema

    defs = definitions()
    if partial:
        defs = _without_required(defs)
    # every "$ref" in the definitions is local ("#/$defs/..."), so the document resolves them itself
    return jsonschema.Draft202012Validator({"$defs": defs, "$ref": _DEF_PREFIX + POD_TEMPLATE})


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out = _fmt(out, part)
    return out or "(patch)"


def _message(err: Any) -> str:
    if err.validator == "additionalProperties" and isinstance(err.instance, Mapping):
        known = sorted(err.schema.get("properties") or {})
        unknown = sorted(set(err.instance) - set(known))
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hints.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
        return (f"unknown field(s) {', '.join(hints)} in the Kubernetes schema; fix: use one of "
                f"{', '.join(known)} (see {_REFERENCE})")
    if err.validator in ("type", "oneOf", "anyOf", "format", "enum"):
        return f"{err.message}; fix: write the value as the Kubernetes schema says (see {_REFERENCE})"
    return f"{err.message}; fix: see {_REFERENCE}"


def _schema_problems(document: Any, *, partial: bool, limit: int = 20) -> list[Problem]:
    errors = sorted(_validator(partial).iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    return [(_path(err.absolute_path), _message(err)) for err in errors[:limit]]


def check_patch(patch: Any) -> list[Problem]:
    """Problems of the patch itself (shape, fields, types), each at its path inside the patch; [] when fine."""
    if not isinstance(patch, Mapping):
        return [("(patch)", "must be a mapping with 'metadata' and/or 'spec' (a PodTemplateSpec); fix: e.g. "
                 "{spec: {tolerations: [...]}}")]
    problems: list[Problem] = []
    for key in patch:
        if key not in ("metadata", "spec"):
            problems.append((str(key), "a pod template has only 'metadata' and 'spec'; fix: move it under spec"))
    meta = patch.get("metadata")
    if isinstance(meta, Mapping):
        for key in meta:
            if key not in ("labels", "annotations"):
                problems.append((f"metadata.{key}", "only labels and annotations of the pod template may be "
                                 "patched (Kubernetes names the pods); fix: remove it"))
    if problems:
        return problems
    return _schema_problems(_strip_directives(patch), partial=True)


# --------------------------------------------------------------------------------------------- protection


def _by(items: Any, key: str) -> dict[Any, Any]:
    return {i.get(key): i for i in items or [] if isinstance(i, Mapping)}


def protected_problems(base: Mapping[str, Any], patched: Mapping[str, Any], *, container: str,
                       labels: tuple[str, ...]) -> list[Problem]:
    """What the patch changed or removed that ask-batch set and relies on (module docstring); [] when nothing.

    Args:
        base, patched: the pod template before and after the patch.
        container: the name of the workload container.
        labels: the label keys the run's selectors use.
    """
    problems: list[Problem] = []

    def changed(where: str, what: str, fix: str) -> None:
        problems.append((where, f"{what} is set by ask-batch and may not be changed or removed by the patch; fix: "
                         f"{fix}"))

    base_labels = (base.get("metadata") or {}).get("labels") or {}
    new_labels = (patched.get("metadata") or {}).get("labels") or {}
    for key in labels:
        if key in base_labels and new_labels.get(key) != base_labels[key]:
            changed(f"metadata.labels.{key}", "this label (the run's selectors find its pods by it)",
                    "remove it from the patch; extra labels go in job.labels")
    spec, new_spec = base.get("spec") or {}, patched.get("spec") or {}
    if new_spec.get("restartPolicy") != spec.get("restartPolicy"):
        changed("spec.restartPolicy", "restartPolicy", "use job.restart_policy")
    ours = _by(spec.get("containers"), "name").get(container)
    theirs = _by(new_spec.get("containers"), "name").get(container)
    where = f"spec.containers[name={container}]"
    if ours is not None and theirs is None:
        changed(where, f"the workload container {container!r}", "keep it; add other containers under other names")
    elif ours is not None and theirs is not None:
        fixes = {"image": "use job.image", "imagePullPolicy": "use job.image_pull_policy",
                 "command": "use job.command", "args": "use job.args",
                 "resources": "use job.cpu, job.memory, job.cpu_limit, job.memory_limit (they size and price the "
                              "pod)"}
        for field, fix in fixes.items():
            if theirs.get(field) != ours.get(field):
                changed(f"{where}.{field}", field, fix)
        new_env = _by(theirs.get("env"), "name")
        for name, var in _by(ours.get("env"), "name").items():
            if new_env.get(name) != var:
                changed(f"{where}.env[name={name}]", f"env {name} (the index, paths and outputs the workload reads, "
                        f"or job.env / config.env)", "set env through job.env or config.env; add only new names")
        new_mounts = _by(theirs.get("volumeMounts"), "mountPath")
        for mount_path, mount in _by(ours.get("volumeMounts"), "mountPath").items():
            if new_mounts.get(mount_path) != mount:
                changed(f"{where}.volumeMounts[mountPath={mount_path}]", "this mount (config, secret or data)",
                        "mount extra volumes at other paths")
        new_ctx = theirs.get("securityContext") or {}
        for key, value in (ours.get("securityContext") or {}).items():
            if new_ctx.get(key) != value:
                changed(f"{where}.securityContext.{key}", key, "use job.security")
    for volume in new_spec.get("volumes") or []:
        sources = sorted(set(volume) - {"name"}) if isinstance(volume, Mapping) else []
        if len(sources) != 1:
            problems.append((f"spec.volumes[name={volume.get('name')}]", f"a volume needs exactly one source "
                             f"(emptyDir, configMap, secret, persistentVolumeClaim, ...), it has {len(sources)}"
                             f"{': ' + ', '.join(sources) if sources else ''}; fix: keep one (Kubernetes refuses "
                             f"the pod otherwise)"))
    for list_name in ("containers", "initContainers"):
        for item in new_spec.get(list_name) or []:
            if isinstance(item, Mapping) and not item.get("image"):
                problems.append((f"spec.{list_name}[name={item.get('name')}].image", "a container needs an image "
                                 "(Kubernetes refuses the pod without one); fix: set image"))
    for list_name, what in (("volumes", "this volume (config, secret or data)"),
                            ("initContainers", "this init container (it prepares the data directory)")):
        new_items = _by(new_spec.get(list_name), "name")
        for name, item in _by(spec.get(list_name), "name").items():
            if new_items.get(name) != item:
                changed(f"spec.{list_name}[name={name}]", what, "add items under other names")
    return problems


def apply_pod_template_patch(template: Mapping[str, Any], patch: Mapping[str, Any] | None, *, container: str,
                             labels: tuple[str, ...]) -> dict[str, Any]:
    """The pod template with ``patch`` applied, after every check (module docstring).

    Args:
        template: the rendered pod template (``metadata`` and ``spec``), not changed.
        patch: ``job.pod_template_patch``; None or {} returns a copy of ``template``.
        container: the workload container's name; labels: the selector label keys (both protected).

    Raises:
        SpecError: one ``job.pod_template_patch.<path>`` per problem, with the limit and the fix.
    """
    if not patch:
        return copy.deepcopy(dict(template))
    problems = check_patch(patch)
    patched: dict[str, Any] = {}
    if not problems:
        try:
            patched = strategic_merge(template, patch, definitions()[POD_TEMPLATE])
        except PatchError as exc:
            problems = [(exc.path, exc.message)]
    if not problems:
        problems = protected_problems(template, patched, container=container, labels=labels)
        problems += [(f"(patched template) {where}", msg) for where, msg in _schema_problems(patched, partial=False)]
    if problems:
        raise SpecError([(f"{FIELD}.{where}" if not where.startswith("(") else f"{FIELD} {where}", msg)
                         for where, msg in problems])
    return dict(patched)
