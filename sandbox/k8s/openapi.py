"""The Kubernetes schema, from kubernetes-validate's bundled definitions, in the three shapes we need.

Why one module: the real API server derives three things from the same Go types, and so do we.

1. `/openapi/v3` documents. `kubectl apply` (default `--validate=strict`) downloads the root, then the
   group-version document, and looks for a PATCH operation carrying `x-kubernetes-group-version-kind`
   (an *object* on operations) with a `fieldValidation` query parameter; finding one, it leaves field
   validation to the server. `kubectl explain` reads `components.schemas`. The bundled data is JSON
   Schema 2020-12, so it is normalised to OpenAPI 3.0: `"type": [x, "null"]` becomes `"type": x` (kubectl
   explain fails on lists: "incompatible types for comparison"), `$ref`s point at `#/components/schemas`,
   and Quantity / IntOrString become the strings the real documents declare.
2. Strategic-merge-patch metadata: `x-kubernetes-patch-merge-key` / `x-kubernetes-patch-strategy` per field,
   which patch.py follows while it walks an object.
3. Field validation: unknown fields (rejected under `fieldValidation=Strict`, dropped with a warning
   otherwise, as the real server's decoder does) and JSON type mismatches (400 "cannot be handled as").

Kubernetes 1.32's data is used to match the advertised server version.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .resources import RESOURCES, ResourceType

SCHEMA_VERSION = "v1.32.0-local"
DEF_PREFIX = "#/$defs/"
V3_PREFIX = "#/components/schemas/"


def _schema_dir() -> Path:
    import kubernetes_validate

    return Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / SCHEMA_VERSION


@functools.cache
def definitions() -> dict[str, Any]:
    """The raw `$defs` (JSON Schema), keyed like `io.k8s.api.batch.v1.Job`."""
    data = orjson.loads((_schema_dir() / "_definitions.json").read_bytes())
    return data["$defs"]


@functools.cache
def definition_for_kind(group: str, version: str, kind: str) -> str | None:
    for name, schema in definitions().items():
        for gvk in schema.get("x-kubernetes-group-version-kind") or []:
            if gvk.get("group", "") == group and gvk.get("version") == version and gvk.get("kind") == kind:
                return name
    return None


def resolve(schema: dict[str, Any] | None) -> dict[str, Any]:
    """Follow a `$ref` (also one wrapped in allOf) to its definition; {} when there is none."""
    if not schema:
        return {}
    ref = schema.get("$ref")
    if ref is None and schema.get("allOf"):
        ref = schema["allOf"][0].get("$ref")
    if ref:
        return definitions().get(ref.removeprefix(DEF_PREFIX), {})
    return schema


def _types(schema: dict[str, Any]) -> set[str]:
    t = schema.get("type")
    if isinstance(t, list):
        return {x for x in t if x != "null"}
    if isinstance(t, str):
        return {t}
    if "oneOf" in schema:  # Quantity, IntOrString
        out: set[str] = set()
        for alt in schema["oneOf"]:
            out |= _types(alt)
        return out
    return set()


# ------------------------------------------------------------------ OpenAPI v3 documents


def _normalise(node: Any) -> Any:
    """JSON Schema 2020-12 (kubernetes-validate) -> the OpenAPI 3.0 dialect of the real server."""
    if isinstance(node, list):
        return [_normalise(x) for x in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "type" and isinstance(value, list):
            kinds = [x for x in value if x != "null"]
            out[key] = kinds[0] if len(kinds) == 1 else kinds
        elif key == "$ref":
            out[key] = value.replace(DEF_PREFIX, V3_PREFIX)
        elif key == "oneOf" and all(set(alt) <= {"type"} for alt in value):
            kinds = set().union(*(_types(alt) for alt in value))
            out["type"] = "string"
            if "integer" in kinds:
                out["format"] = "int-or-string"
                out["x-kubernetes-int-or-string"] = True
        elif key in ("properties", "$defs"):
            out[key] = {k: _normalise(v) for k, v in value.items()}
        else:
            out[key] = _normalise(value)
    if "$ref" in out and len(out) > 1:  # OpenAPI 3.0 ignores siblings of $ref; the real server uses allOf
        ref = out.pop("$ref")
        out["allOf"] = [{"$ref": ref}]
    return out


def _refs(node: Any, into: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(DEF_PREFIX):
            into.add(ref.removeprefix(DEF_PREFIX))
        for value in node.values():
            _refs(value, into)
    elif isinstance(node, list):
        for value in node:
            _refs(value, into)


def _closure(roots: list[str]) -> list[str]:
    defs = definitions()
    seen: set[str] = set()
    todo = [r for r in roots if r in defs]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        found: set[str] = set()
        _refs(defs[name], found)
        todo.extend(found - seen)
    return sorted(seen)


def group_versions() -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for rt in RESOURCES:
        if (rt.group, rt.version) not in seen:
            seen.append((rt.group, rt.version))
    return seen


def gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


_QUERY = {"in": "query", "schema": {"type": "string", "uniqueItems": True}}


def _param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "description": description, **_QUERY}


_PATCH_TYPES = ("application/apply-patch+yaml", "application/json-patch+json", "application/merge-patch+json",
                "application/strategic-merge-patch+json")


def _operations(rt: ResourceType, item: bool, schema_ref: str) -> dict[str, Any]:
    gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
    body = {"content": {"*/*": {"schema": {"$ref": schema_ref}}}, "required": True}
    ok = {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": schema_ref}}}}}
    common = {"x-kubernetes-group-version-kind": gvk, "responses": ok, "tags": [rt.group or "core"]}
    write_params = [_param("dryRun", "dry run"), _param("fieldManager", "field manager"),
                    _param("fieldValidation", "Strict, Warn or Ignore unknown fields")]
    if item:
        return {
            "get": {**common, "operationId": f"read{rt.kind}", "x-kubernetes-action": "get"},
            "put": {**common, "operationId": f"replace{rt.kind}", "x-kubernetes-action": "put",
                    "requestBody": body, "parameters": write_params},
            "patch": {**common, "operationId": f"patch{rt.kind}", "x-kubernetes-action": "patch",
                      "parameters": [*write_params, _param("force", "force apply")],
                      "requestBody": {"content": {t: {"schema": {"type": "object"}} for t in _PATCH_TYPES},
                                      "required": True}},
            "delete": {**common, "operationId": f"delete{rt.kind}", "x-kubernetes-action": "delete"},
        }
    return {
        "get": {**common, "operationId": f"list{rt.kind}", "x-kubernetes-action": "list"},
        "post": {**common, "operationId": f"create{rt.kind}", "x-kubernetes-action": "post",
                 "requestBody": body, "parameters": write_params},
    }


def _resource_paths(rt: ResourceType, schema_ref: str) -> dict[str, Any]:
    base = "/" + gv_path(rt.group, rt.version)
    prefix = f"{base}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{base}/{rt.plural}"
    paths = {prefix: _operations(rt, False, schema_ref),
             f"{prefix}/{{name}}": _operations(rt, True, schema_ref)}
    for sub in rt.subresources:
        if sub == "status":
            paths[f"{prefix}/{{name}}/status"] = _operations(rt, True, schema_ref)
    return paths


@functools.cache
def gv_document_bytes(group: str, version: str) -> bytes:
    """The `/openapi/v3/{api/v1|apis/g/v}` document for one group-version."""
    kinds = [rt for rt in RESOURCES if rt.group == group and rt.version == version]
    roots = [n for rt in kinds if (n := definition_for_kind(rt.group, rt.version, rt.kind))]
    roots += ["io.k8s.apimachinery.pkg.apis.meta.v1.Status", "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"]
    paths: dict[str, Any] = {}
    for rt in kinds:
        name = definition_for_kind(rt.group, rt.version, rt.kind)
        if name:
            paths.update(_resource_paths(rt, V3_PREFIX + name))
    defs = definitions()
    doc = {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.4"},
        "paths": paths,
        "components": {"schemas": {name: _normalise(defs[name]) for name in _closure(roots)}},
    }
    return orjson.dumps(doc)


@functools.cache
def gv_hash(group: str, version: str) -> str:
    return hashlib.sha512(gv_document_bytes(group, version)).hexdigest()[:64].upper()


def root_document() -> dict[str, Any]:
    """`/openapi/v3`: where each group-version document lives (with a content hash, as kubectl expects)."""
    paths = {}
    for group, version in group_versions():
        path = gv_path(group, version)
        paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={gv_hash(group, version)}"}
    return {"paths": paths}


# ------------------------------------------------------------------ strategic-merge metadata


@dataclass(frozen=True)
class FieldInfo:
    """What strategic merge patch needs to know about one field."""

    schema: dict[str, Any]  # the (resolved) schema of the value, or of list items for lists
    is_list: bool = False
    merge_key: str | None = None
    strategies: frozenset[str] = field(default_factory=frozenset)  # "merge", "retainKeys", "replace"
    is_map: bool = False  # free-form map (additionalProperties)


def field_info(parent: dict[str, Any], name: str) -> FieldInfo | None:
    """Describe the field `name` of an object whose (resolved) schema is `parent`."""
    props = parent.get("properties")
    if props and name in props:
        prop = props[name]
    elif isinstance(parent.get("additionalProperties"), dict):
        prop = parent["additionalProperties"]
    else:
        return None
    strategies = frozenset((prop.get("x-kubernetes-patch-strategy") or "").split(",")) - {""}
    if "array" in _types(prop):
        return FieldInfo(resolve(prop.get("items")), True, prop.get("x-kubernetes-patch-merge-key"), strategies)
    resolved = resolve(prop)
    return FieldInfo(resolved, False, None, strategies,
                     is_map=not resolved.get("properties") and isinstance(resolved.get("additionalProperties"),
                                                                          dict))


def schema_for(rt: ResourceType) -> dict[str, Any]:
    name = definition_for_kind(rt.group, rt.version, rt.kind)
    return definitions().get(name or "", {})


# ------------------------------------------------------------------ field validation


@dataclass
class FieldReport:
    unknown: list[str] = field(default_factory=list)  # paths like spec.template.spec.containers[0].comand
    type_errors: list[str] = field(default_factory=list)


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "object": (dict,), "array": (list,),
}


def _type_ok(value: Any, kinds: set[str]) -> bool:
    if not kinds or value is None:
        return True
    if isinstance(value, bool):
        return "boolean" in kinds
    if isinstance(value, float) and value.is_integer() and "integer" in kinds:
        return True
    return any(isinstance(value, _JSON_TYPES.get(k, ())) for k in kinds)


def _go_type(kinds: set[str]) -> str:
    order = {"string": "string", "integer": "int32", "number": "float64", "boolean": "bool",
             "object": "object", "array": "array"}
    return next((order[k] for k in order if k in kinds), "value")


def check_fields(obj: Any, schema: dict[str, Any], *, prune: bool, report: FieldReport, path: str = "") -> Any:
    """Walk `obj` along `schema`: record unknown fields (and drop them when `prune`) and type mismatches."""
    schema = resolve(schema)
    kinds = _types(schema)
    if not _type_ok(obj, kinds):
        report.type_errors.append(f"{path or '.'}: expected {_go_type(kinds)}, got {type(obj).__name__}")
        return obj
    if isinstance(obj, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if props is None and not isinstance(extra, dict):
            return obj  # free-form (RawExtension, JSON)
        for key in list(obj):
            sub = f"{path}.{key}" if path else key
            if props is not None and key in props:
                obj[key] = check_fields(obj[key], props[key], prune=prune, report=report, path=sub)
            elif isinstance(extra, dict):
                obj[key] = check_fields(obj[key], extra, prune=prune, report=report, path=sub)
            else:
                report.unknown.append(sub)
                if prune:
                    del obj[key]
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            obj[i] = check_fields(item, schema["items"], prune=prune, report=report, path=f"{path}[{i}]")
    return obj
