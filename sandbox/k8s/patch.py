"""The four PATCH flavours the API server accepts, applied to a copy of the stored object.

- `application/json-patch+json`: RFC 6902 operations, via `jsonpatch` (a failed `test` or a bad path is a
  422 / 400 as on the real server).
- `application/merge-patch+json`: RFC 7386; `null` deletes, objects merge, everything else (lists too)
  replaces.
- `application/strategic-merge-patch+json`: like merge patch, but lists that the schema marks with
  `x-kubernetes-patch-strategy: merge` are merged, by `x-kubernetes-patch-merge-key` for lists of objects
  (containers/env/volumes by name, conditions by type, ownerReferences by uid) or as a set for lists of
  scalars (finalizers). Directives: `$patch: replace|delete|merge`, `$retainKeys`,
  `$deleteFromPrimitiveList/<field>`, `$setElementOrder/<field>` (ordering only; honoured where cheap).
  kubectl's client-side `apply`, `label`, `annotate` and `patch` (default type) all send this one.
- `application/apply-patch+yaml` (server-side apply): approximated as create-or-strategic-merge. There are
  no managedFields and no conflict detection; the object ends up as the applied configuration merged
  over the live one.
"""

from __future__ import annotations

from typing import Any

import jsonpatch
import yaml

from . import errors
from .openapi import field_info

Obj = dict[str, Any]

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, APPLY_PATCH)


def parse_patch(content_type: str, body: bytes) -> Any:
    """Decode a patch body; the apply type is YAML (JSON is YAML too)."""
    try:
        if content_type == APPLY_PATCH:
            return yaml.safe_load(body.decode() or "{}")
        import orjson

        return orjson.loads(body or b"{}")
    except Exception as exc:
        raise errors.bad_request(f"error decoding patch: {exc}") from exc


def apply_patch(content_type: str, current: Obj, patch: Any, schema: dict[str, Any]) -> Obj:
    """Return the patched copy of `current` (which is not changed)."""
    if content_type == JSON_PATCH:
        return json_patch(current, patch)
    if not isinstance(patch, dict):
        raise errors.bad_request("the patch must be a JSON object")
    if content_type == MERGE_PATCH:
        return merge_patch(current, patch)
    if content_type in (STRATEGIC_PATCH, APPLY_PATCH):
        return strategic_merge(current, patch, schema)
    raise errors.ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                          f"accepted media types include: {', '.join(PATCH_TYPES)}")


def json_patch(current: Obj, ops: Any) -> Obj:
    if not isinstance(ops, list):
        raise errors.bad_request("json patch must be a list of operations")
    try:
        return jsonpatch.apply_patch(current, ops, in_place=False)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise errors.ApiError(422, "Invalid", f"the server rejected our request due to an error in our "
                              f"request: {exc}") from exc
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, KeyError, IndexError,
            TypeError) as exc:
        raise errors.ApiError(422, "Invalid", f"the server rejected our request due to an error in our "
                              f"request: {exc}") from exc


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


# ------------------------------------------------------------------ strategic merge


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items()
                if not k.startswith("$") and v is not None}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value if not (isinstance(v, dict) and v.get("$patch") == "delete")]
    return value


def strategic_merge(original: Any, patch: Any, schema: dict[str, Any]) -> Any:
    """Merge `patch` into `original` following the schema's patch strategies."""
    if not isinstance(patch, dict):
        return patch
    directive = patch.get("$patch")
    if directive == "replace":
        return _strip_directives({k: v for k, v in patch.items() if k != "$patch"})
    if directive == "delete":
        return None
    out: dict[str, Any] = dict(original) if isinstance(original, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            if isinstance(out.get(name), list):
                out[name] = [x for x in out[name] if x not in value]
            continue
        if key.startswith("$"):
            continue
        if value is None:
            out.pop(key, None)
            continue
        info = field_info(schema, key)
        if info is not None and info.is_list and isinstance(value, list):
            out[key] = _merge_list(out.get(key), value, info)
        elif isinstance(value, dict):
            sub_schema = info.schema if info is not None else {}
            merged = strategic_merge(out.get(key), value, sub_schema)
            if merged is None:
                out.pop(key, None)
            else:
                out[key] = merged
        else:
            out[key] = value
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    _apply_element_order(out, patch)
    return out


def _merge_list(original: Any, patch: list[Any], info: Any) -> list[Any]:
    current = list(original) if isinstance(original, list) else []
    if "merge" not in info.strategies:
        return _strip_directives(patch)
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return _strip_directives([p for p in patch if not (isinstance(p, dict) and p.get("$patch") == "replace")])
    if not info.merge_key:  # a set of scalars (finalizers)
        return current + [p for p in patch if p not in current]
    key = info.merge_key
    for item in patch:
        if not isinstance(item, dict):
            continue
        index = next((i for i, c in enumerate(current) if isinstance(c, dict) and c.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del current[index]
            continue
        if index is None:
            current.append(_strip_directives(item))
        else:
            current[index] = strategic_merge(current[index], item, info.schema)
    return current


def _apply_element_order(out: dict[str, Any], patch: dict[str, Any]) -> None:
    """`$setElementOrder/<field>`: reorder a merged list as the client listed it (others keep their place)."""
    for key, order in patch.items():
        if not key.startswith("$setElementOrder/") or not isinstance(order, list):
            continue
        name = key.split("/", 1)[1]
        items = out.get(name)
        if not isinstance(items, list) or not order:
            continue
        if isinstance(order[0], dict):
            mkey = next(iter(order[0]))
            rank = {o.get(mkey): i for i, o in enumerate(order)}
            listed = sorted((x for x in items if isinstance(x, dict) and x.get(mkey) in rank),
                            key=lambda x: rank[x.get(mkey)])
            rest = [x for x in items if not (isinstance(x, dict) and x.get(mkey) in rank)]
        else:
            rank = {o: i for i, o in enumerate(order)}
            listed = sorted((x for x in items if x in rank), key=lambda x: rank[x])
            rest = [x for x in items if x not in rank]
        out[name] = listed + rest
