"""The sandbox's Kubernetes API server: the HTTP face of the store, spoken exactly as kubectl expects.

The unmodified official clients (kubectl 1.32/1.37, `kubernetes`, `kubernetes_asyncio`) talk to this over
real HTTPS, so every detail they depend on is reproduced, notably (the Kubernetes API
conventions: https://github.com/kubernetes/community/blob/master/contributors/devel/sig-architecture/api-conventions.md):

- legacy discovery (`/api`, `/api/v1` with `groupVersion: "v1"`, `/apis`, ...); kubectl asks for aggregated
  discovery first and falls back cleanly when answered with plain JSON;
- `/openapi/v3` for `kubectl apply`'s default validation and `kubectl explain` (openapi.py);
- lists with `kind: XList`, `apiVersion`, `metadata.resourceVersion`, `continue`, `remainingItemCount`;
- watches as chunked `application/json`, one event per line, accepting `watch=true|True|1`, with bookmarks,
  `timeoutSeconds`, `sendInitialEvents`, and 410 Expired delivered *inside* the stream as an ERROR event;
- server-side printing (`Accept: ...;as=Table;g=meta.k8s.io`) for `kubectl get` (tables.py);
- metadata-only reads (`Accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1` on a list,
  `as=PartialObjectMetadata` on a get or watch), as client-go's metadata client asks for them
  (https://github.com/kubernetes/client-go/blob/master/metadata/metadata.go): a `PartialObjectMetadataList` /
  `PartialObjectMetadata` (`apiVersion: meta.k8s.io/v1`) holding each object's `metadata` only;
- protobuf bodies from `kubectl create configmap|secret|namespace` (protobuf.py);
- `dryRun=All` on every write, four patch types (patch.py), the status subresource, pods/log (+follow),
  DeleteOptions / propagationPolicy / preconditions, and Status bodies for every error (errors.py).

Auth is a bearer token (`cluster.token`); faults (latency, 5xx/429, dropped connections, cut watches) come
from `cluster.faults`. Work per request is O(objects in the resource): lists and watches never do more
than one pass over the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import yaml
from aiohttp import web
from multidict import MultiDictProxy

from ..faults import fault_middleware
from . import errors, openapi, patch, protobuf, reviews, tables
from .resources import ALL_VERBS, BY_PLURAL, RESOURCES, ResourceType

if TYPE_CHECKING:
    from .cluster import KubeCluster

Obj = dict[str, Any]
Query = MultiDictProxy[str]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SERVER_VERSION = {
    "major": "1", "minor": "32", "gitVersion": "v1.32.4", "gitCommit": "59526cd4867447956156ae3a602fcbac10a2c335",
    "gitTreeState": "clean", "buildDate": "2025-04-22T16:02:27Z", "goVersion": "go1.23.6", "compiler": "gc",
    "platform": "linux/amd64",
}
TRUE_VALUES = ("true", "True", "1")
BOOKMARK_INTERVAL_S = 5.0  # real servers send one about every minute; shorter keeps tests quick
LOG_POLL_S = 0.1
JOB_DELETE_WARNING = ('299 - "child pods are preserved by default when jobs are deleted; set '
                      'propagationPolicy=Background to remove them or set propagationPolicy=Orphan to suppress '
                      'this warning"')
ANONYMOUS_PATHS = ("/version", "/healthz", "/readyz", "/livez")


# ------------------------------------------------------------------ responses


def json_response(body: Any, status: int = 200, warnings: list[str] | None = None) -> web.Response:
    resp = web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
    for warning in warnings or []:
        resp.headers.add("Warning", warning)
    return resp


def status_response(err: errors.ApiError) -> web.Response:
    resp = json_response(err.status(), err.code)
    if err.code == 429:
        resp.headers["Retry-After"] = "1"
    return resp


_FAULT_REASONS = {500: "InternalError", 503: "ServiceUnavailable", 429: "TooManyRequests",
                  504: "Timeout", 502: "InternalError"}


def fault_responder(request: web.Request, status: int, message: str) -> web.StreamResponse:
    """A Kubernetes Status for an injected fault (429 carries Retry-After, as API priority & fairness does)."""
    reason = _FAULT_REASONS.get(status, "InternalError")
    text = "Too many requests, please try again later." if status == 429 else message
    return status_response(errors.ApiError(status, reason, text, details={"retryAfterSeconds": 1}
                                           if status == 429 else None))


def success_status(rt: ResourceType, obj: Obj) -> Obj:
    meta = obj.get("metadata") or {}
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": meta.get("name"), "group": rt.group, "kind": rt.plural, "uid": meta.get("uid")}}


def strip_type(obj: Obj) -> Obj:
    """List items carry no kind/apiVersion on the real server."""
    obj.pop("kind", None)
    obj.pop("apiVersion", None)
    return obj


def wants_table(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "as=Table" in accept and "g=meta.k8s.io" in accept


def wants_metadata(request: web.Request, *, collection: bool) -> bool:
    """True when the client's first acceptable media type is the metadata-only form: ``as=PartialObjectMetadataList``
    for a list, ``as=PartialObjectMetadata`` for a get or a watch (``g=meta.k8s.io``, ``v=v1``), as client-go's
    metadata client sends them with a plain ``application/json`` fallback after."""
    first = request.headers.get("Accept", "").split(",")[0]
    params = {k.strip(): v.strip() for k, _, v in (p.partition("=") for p in first.split(";")[1:])}
    wanted = "PartialObjectMetadataList" if collection else "PartialObjectMetadata"
    return params.get("as") == wanted and params.get("g") == "meta.k8s.io" and params.get("v") == "v1"


def partial_metadata(obj: Obj) -> Obj:
    """``obj`` as a ``meta.k8s.io/v1`` ``PartialObjectMetadata``: its ``metadata`` only. Unlike other list items,
    those of a ``PartialObjectMetadataList`` carry their kind and apiVersion too (``asPartialObjectMetadataList``
    in https://github.com/kubernetes/apiserver/blob/master/pkg/endpoints/handlers/response.go)."""
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata") or {}}


def rfc3339_nano(ts: float) -> str:
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int((ts % 1) * 1e9):09d}Z"


# ------------------------------------------------------------------ request parsing


@dataclass
class Target:
    """What a resource URL names: a collection, an object, or an object's subresource."""

    rt: ResourceType
    namespace: str | None
    name: str | None = None
    sub: str | None = None


def parse_target(parts: list[str], group: str, version: str) -> Target:
    """Parse the path after `/api/v1` or `/apis/g/v` into a Target (404 when it names nothing we serve)."""

    def lookup(plural: str) -> ResourceType:
        rt = BY_PLURAL.get(plural)
        if rt is None or rt.group != group or rt.version != version:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        return rt

    if len(parts) >= 3 and parts[0] == "namespaces" and parts[2] in BY_PLURAL and BY_PLURAL[parts[2]].namespaced:
        rt = lookup(parts[2])
        rest, namespace = parts[3:], parts[1]
    else:
        rt = lookup(parts[0])
        rest, namespace = parts[1:], None
    if len(rest) > 2 or (len(rest) == 2 and rest[1] not in (*rt.subresources, "binding")):
        raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
    return Target(rt, namespace, rest[0] if rest else None, rest[1] if len(rest) == 2 else None)


def dry_run(q: Query, options: Obj | None = None) -> bool:
    values = q.getall("dryRun", []) + list((options or {}).get("dryRun") or [])
    for value in values:
        if value != "All":
            raise errors.bad_request(f'Invalid value: "{value}": valid values are: "All"')
    return bool(values)


async def read_object(request: web.Request, *, allow_empty: bool = False) -> Obj:
    raw = await request.read()
    if not raw.strip():
        if allow_empty:
            return {}
        raise errors.bad_request("the request body is empty")
    ctype = request.content_type
    try:
        if ctype == protobuf.PROTOBUF:
            return protobuf.decode(raw)
        body = yaml.safe_load(raw.decode()) if ctype in ("application/yaml", "text/yaml") else orjson.loads(raw)
    except errors.ApiError:
        raise
    except Exception as exc:
        raise errors.bad_request(f"couldn't decode the request body: {exc}") from exc
    if not isinstance(body, dict):
        raise errors.bad_request("the request body must be a JSON object")
    return body


def check_kind(rt: ResourceType, body: Obj) -> None:
    kind, api_version = body.get("kind"), body.get("apiVersion")
    if kind and kind != rt.kind:
        raise errors.bad_request(f"the kind in the request body ({kind}) does not match the expected kind "
                                 f"({rt.kind})")
    if api_version and api_version != rt.api_version:
        raise errors.bad_request(f"the API version in the data ({api_version}) does not match the expected API "
                                 f"version ({rt.api_version})")


def validate_fields(rt: ResourceType, obj: Obj, q: Query, *, baseline: Obj | None = None) -> list[str]:
    """fieldValidation: unknown fields are an error under Strict, else dropped with a Warning (Warn, the
    server default) or silently (Ignore). Wrong JSON types are always a 400, like Go's decoder."""
    mode = q.get("fieldValidation", "Warn")
    if mode not in ("Strict", "Warn", "Ignore"):
        raise errors.bad_request(f'fieldValidation: Unsupported value: "{mode}"')
    report = openapi.FieldReport()
    openapi.check_fields(obj, openapi.schema_for(rt), prune=True, report=report)
    prefix = f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}'
    if report.type_errors:
        raise errors.bad_request(f"{prefix}: json: {report.type_errors[0]}")
    unknown = report.unknown
    if unknown and baseline is not None:  # a patch is only blamed for fields it brought in
        old = openapi.FieldReport()
        openapi.check_fields(orjson.loads(orjson.dumps(baseline)), openapi.schema_for(rt), prune=True, report=old)
        unknown = [u for u in unknown if u not in set(old.unknown)]
    if not unknown or mode == "Ignore":
        return []
    if mode == "Strict":
        text = ", ".join(f'unknown field "{u}"' for u in unknown)
        raise errors.bad_request(f"{prefix}: strict decoding error: {text}")
    return [f'299 - "unknown field \\"{u}\\""' for u in unknown]


# ------------------------------------------------------------------ the server


class KubeApi:
    """Request handlers over one cluster's store."""

    def __init__(self, cluster: KubeCluster) -> None:
        self.cluster = cluster
        self.store = cluster.store

    # -------------------------------------------------------------- discovery

    async def version(self, request: web.Request) -> web.Response:
        return json_response(SERVER_VERSION)

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    def _api_versions(self) -> Obj:
        return {"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                                "serverAddress": f"127.0.0.1:{self.cluster.port}"}]}

    @staticmethod
    def _groups() -> list[Obj]:
        groups: dict[str, list[str]] = {}
        for rt in RESOURCES:
            if rt.group and rt.version not in groups.setdefault(rt.group, []):
                groups[rt.group].append(rt.version)
        return [{"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                 "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}}
                for g, vs in groups.items()] + reviews.discovery_groups()

    @staticmethod
    def _resource_list(group: str, version: str) -> Obj:
        entries: list[Obj] = []
        for rt in RESOURCES:
            if rt.group != group or rt.version != version:
                continue
            entry: Obj = {"name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
                          "kind": rt.kind, "verbs": list(ALL_VERBS)}
            if rt.short_names:
                entry["shortNames"] = list(rt.short_names)
            if rt.categories:
                entry["categories"] = list(rt.categories)
            entries.append(entry)
            for sub in rt.subresources:
                verbs = ["get"] if sub == "log" else ["get", "patch", "update"]
                kind = rt.kind if sub == "status" else "Pod"
                entries.append({"name": f"{rt.plural}/{sub}", "singularName": "", "namespaced": rt.namespaced,
                                "kind": kind, "verbs": verbs})
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": entries}

    async def openapi_root(self, request: web.Request) -> web.Response:
        return json_response(openapi.root_document())

    async def openapi_gv(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        for group, version in openapi.group_versions():
            if openapi.gv_path(group, version) == path:
                return web.Response(body=openapi.gv_document_bytes(group, version), content_type="application/json",
                                    headers={"Cache-Control": "public, immutable", "Etag": openapi.gv_hash(group,
                                                                                                           version)})
        raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")

    # -------------------------------------------------------------- dispatch

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if parts[0] == "api":
            if len(parts) == 1:
                return json_response(self._api_versions())
            group, version, rest = "", parts[1], parts[2:]
        else:
            if len(parts) == 1:
                return json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": self._groups()})
            group = parts[1]
            if len(parts) == 2:
                found = next((g for g in self._groups() if g["name"] == group), None)
                if found is None:
                    raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
                return json_response({"kind": "APIGroup", "apiVersion": "v1", **found})
            version, rest = parts[2], parts[3:]
        if group in reviews.REVIEW_GROUPS:
            return await self._review(request, group, version, rest)
        if not rest:
            doc = self._resource_list(group, version)
            if not doc["resources"]:
                raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
            return json_response(doc)
        target = parse_target(rest, group, version)
        return await self._route(request, target)

    async def _review(self, request: web.Request, group: str, version: str, rest: list[str]) -> web.StreamResponse:
        """authorization.k8s.io / authentication.k8s.io self reviews (reviews.py): create-only, never stored."""
        if not rest:
            resources = reviews.resource_list(group, version)
            if not resources:
                raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
            return json_response({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{version}",
                                  "resources": resources})
        if len(rest) != 1 or reviews.kind_of(group, version, rest[0]) is None:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        if request.method != "POST":
            raise errors.ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested "
                                  "resource")
        return json_response(reviews.review(group, version, rest[0], await read_object(request)), 201)

    async def _route(self, request: web.Request, t: Target) -> web.StreamResponse:
        method = request.method
        if t.name is None:
            handlers: dict[str, Callable[[web.Request, Target], Awaitable[web.StreamResponse]]] = {
                "GET": self.list_or_watch, "POST": self.create, "DELETE": self.delete_collection}
        elif t.sub == "log":
            handlers = {"GET": self.logs}
        elif t.sub == "binding":
            handlers = {"POST": self.binding}
        else:
            handlers = {"GET": self.get, "PUT": self.replace, "PATCH": self.patch, "DELETE": self.delete}
            if t.sub == "status":
                handlers.pop("DELETE")
        handler = handlers.get(method)
        if handler is None:
            raise errors.ApiError(405, "MethodNotAllowed", "the server does not allow this method on the "
                                  "requested resource")
        return await handler(request, t)

    # -------------------------------------------------------------- reads

    async def get(self, request: web.Request, t: Target) -> web.StreamResponse:
        assert t.name is not None
        obj = self.store.get(t.rt.plural, t.namespace, t.name)
        if wants_table(request):
            return json_response(tables.table(t.rt.plural, [obj], resource_version=obj["metadata"]
                                              ["resourceVersion"], include_object=request.query.get(
                                                  "includeObject", "Metadata")))
        if wants_metadata(request, collection=False):
            return json_response(partial_metadata(obj))
        return json_response(obj)

    async def list_or_watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        q = request.query
        if q.get("watch") in TRUE_VALUES:
            return await self.watch(request, t)
        limit = int(q["limit"]) if q.get("limit", "").isdigit() and int(q["limit"]) > 0 else None
        result = self.store.list(t.rt.plural, t.namespace, label_selector=q.get("labelSelector"),
                                 field_selector=q.get("fieldSelector"), limit=limit,
                                 continue_token=q.get("continue") or None)
        if wants_table(request):
            return json_response(tables.table(
                t.rt.plural, result.items, resource_version=result.resource_version,
                continue_token=result.continue_token, remaining=result.remaining,
                include_object=q.get("includeObject", "Metadata")))
        meta: Obj = {"resourceVersion": result.resource_version}
        if result.continue_token:
            meta["continue"] = result.continue_token
        if result.remaining is not None:
            meta["remainingItemCount"] = result.remaining
        if wants_metadata(request, collection=True):
            return json_response({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                                  "metadata": meta, "items": [partial_metadata(o) for o in result.items]})
        return json_response({"kind": f"{t.rt.kind}List", "apiVersion": t.rt.api_version, "metadata": meta,
                              "items": [strip_type(o) for o in result.items]})

    # -------------------------------------------------------------- watch

    async def watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        q = request.query
        watch = WatchStream(self, request, t)
        try:
            watcher = self.store.watch(
                t.rt.plural, t.namespace, resource_version=q.get("resourceVersion") or None,
                label_selector=q.get("labelSelector"), field_selector=q.get("fieldSelector"),
                send_initial=q.get("sendInitialEvents") in TRUE_VALUES or None)
        except errors.ApiError as err:
            if err.code != 410:
                raise
            await watch.start()
            await watch.send("ERROR", err.status())
            await watch.finish()
            return watch.response
        return await watch.run(watcher)

    # -------------------------------------------------------------- writes

    async def create(self, request: web.Request, t: Target) -> web.StreamResponse:
        body = await read_object(request)
        check_kind(t.rt, body)
        warnings = validate_fields(t.rt, body, request.query)
        obj = self.store.create(t.rt.plural, body, namespace=t.namespace, dry_run=dry_run(request.query))
        return json_response(obj, 201, warnings)

    async def replace(self, request: web.Request, t: Target) -> web.StreamResponse:
        assert t.name is not None
        body = await read_object(request)
        check_kind(t.rt, body)
        warnings = validate_fields(t.rt, body, request.query)
        meta = body.setdefault("metadata", {})
        if t.rt.namespaced and meta.get("namespace") and meta["namespace"] != t.namespace:
            raise errors.bad_request("the namespace of the provided object does not match the namespace sent on "
                                     "the request")
        if meta.get("name") and meta["name"] != t.name:
            raise errors.bad_request(f'the name of the object ({meta["name"]}) does not match the name on the URL '
                                     f"({t.name})")
        obj = self.store.update(t.rt.plural, body, subresource=t.sub, dry_run=dry_run(request.query),
                                namespace=t.namespace, name=t.name)
        return json_response(obj, 200, warnings)

    async def patch(self, request: web.Request, t: Target) -> web.StreamResponse:
        assert t.name is not None
        q = request.query
        ctype = request.content_type
        if ctype not in patch.PATCH_TYPES:
            raise errors.ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown "
                                  f"format - accepted media types include: {', '.join(patch.PATCH_TYPES)}")
        body = patch.parse_patch(ctype, await request.read())
        if ctype == patch.APPLY_PATCH and not q.get("fieldManager"):
            raise errors.ApiError(422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: '
                                  "Required value: is required for apply patch")
        current = self.store.peek(t.rt.plural, t.namespace, t.name)
        if current is None and ctype == patch.APPLY_PATCH and t.sub is None:
            return await self._apply_create(request, t, body)
        current = self.store.get(t.rt.plural, t.namespace, t.name)
        patched = patch.apply_patch(ctype, current, body, openapi.schema_for(t.rt))
        if not isinstance(patched, dict):
            raise errors.bad_request("the patch produced something that is not an object")
        warnings = validate_fields(t.rt, patched, q, baseline=current)
        meta = patched.setdefault("metadata", {})
        if meta.get("name") != t.name:
            raise errors.bad_request("metadata.name: the name of a patched object cannot change")
        obj = self.store.update(t.rt.plural, patched, subresource=t.sub, dry_run=dry_run(q),
                                namespace=t.namespace, name=t.name)
        return json_response(obj, 200, warnings)

    async def _apply_create(self, request: web.Request, t: Target, body: Any) -> web.StreamResponse:
        """Server-side apply of an object that does not exist yet: a create (201)."""
        if not isinstance(body, dict):
            raise errors.bad_request("apply patch must be an object")
        check_kind(t.rt, body)
        meta = body.setdefault("metadata", {})
        meta.setdefault("name", t.name)
        warnings = validate_fields(t.rt, body, request.query)
        obj = self.store.create(t.rt.plural, body, namespace=t.namespace, dry_run=dry_run(request.query))
        return json_response(obj, 201, warnings)

    async def binding(self, request: web.Request, t: Target) -> web.StreamResponse:
        """pods/binding: what a scheduler posts to put a pod on a node."""
        assert t.name is not None
        body = await read_object(request)
        node = (body.get("target") or {}).get("name")
        if not node:
            raise errors.invalid("", "Binding", t.name, [("target.name", "FieldValueRequired", "Required value")])
        bind = getattr(self.store, "bind", None)
        if bind is None:
            raise errors.ApiError(405, "MethodNotAllowed", "binding is not supported")
        if not dry_run(request.query):
            bind(t.namespace, t.name, node, uid=(body.get("metadata") or {}).get("uid"))
        return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                              "code": 201}, 201)

    # -------------------------------------------------------------- deletes

    @staticmethod
    def _delete_options(q: Query, options: Obj) -> tuple[str | None, int | None, Obj]:
        policy = q.get("propagationPolicy") or options.get("propagationPolicy")
        orphan = q.get("orphanDependents", options.get("orphanDependents"))
        if policy is None and orphan is not None:
            policy = "Orphan" if str(orphan).lower() in ("true", "1") else "Background"
        if policy not in (None, "Orphan", "Background", "Foreground"):
            raise errors.bad_request(f'propagationPolicy: Unsupported value: "{policy}": supported values: '
                                     '"Foreground", "Background", "Orphan"')
        grace_raw = q.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
        grace = int(grace_raw) if grace_raw is not None else None
        return policy, grace, options.get("preconditions") or {}

    def _delete_one(self, t: Target, name: str, q: Query, options: Obj) -> tuple[Obj, bool]:
        policy, grace, pre = self._delete_options(q, options)
        return self.store.delete(t.rt.plural, t.namespace, name, propagation_policy=policy,
                                 grace_period_seconds=grace, precondition_uid=pre.get("uid"),
                                 precondition_rv=pre.get("resourceVersion"), dry_run=dry_run(q, options))

    async def delete(self, request: web.Request, t: Target) -> web.StreamResponse:
        assert t.name is not None
        options = await read_object(request, allow_empty=True)
        policy, _, _ = self._delete_options(request.query, options)
        warnings = [JOB_DELETE_WARNING] if t.rt.plural == "jobs" and policy is None else []
        obj, finished = self._delete_one(t, t.name, request.query, options)
        if not finished or t.rt.plural == "pods":
            return json_response(obj, 200, warnings)
        return json_response(success_status(t.rt, obj), 200, warnings)

    async def delete_collection(self, request: web.Request, t: Target) -> web.StreamResponse:
        q = request.query
        options = await read_object(request, allow_empty=True)
        dry_run(q, options)
        result = self.store.list(t.rt.plural, t.namespace, label_selector=q.get("labelSelector"),
                                 field_selector=q.get("fieldSelector"))
        deleted: list[Obj] = []
        for item in result.items:
            meta = item["metadata"]
            target = Target(t.rt, meta.get("namespace"))
            with contextlib.suppress(errors.ApiError):
                obj, _ = self._delete_one(target, meta["name"], q, options)
                deleted.append(strip_type(obj))
        return json_response({"kind": f"{t.rt.kind}List", "apiVersion": t.rt.api_version,
                              "metadata": {"resourceVersion": str(self.store.rv)}, "items": deleted})

    # -------------------------------------------------------------- logs

    async def logs(self, request: web.Request, t: Target) -> web.StreamResponse:
        assert t.name is not None
        return await PodLog(self.cluster, request, t.namespace or "default", t.name).serve()


# ------------------------------------------------------------------ watch streams


#: Bytes of queued watch events sent as one chunk at most: Go's net/http buffers a response body in 2 KiB
#: (``bufferBeforeChunkingSize``) and writes each full buffer, or each larger write, as a chunk
#: (https://github.com/golang/go/blob/master/src/net/http/server.go); kube-apiserver writes one event at a time.
CHUNK_BYTES = 2048


class WatchStream:
    """One chunked watch response: JSON events, one per line, until timeout, fault deadline or close."""

    def __init__(self, api: KubeApi, request: web.Request, t: Target) -> None:
        q = request.query
        self.api, self.request, self.t = api, request, t
        self.response = web.StreamResponse(headers={"Content-Type": "application/json",
                                                    "Cache-Control": "no-cache, private"})
        self.response.enable_chunked_encoding()
        timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds") else 1800 * (1 + random.random())
        deadline = api.cluster.faults.watch_deadline()
        if deadline is not None:
            timeout = min(timeout, deadline)
        self.ends_at = time.monotonic() + timeout
        self.bookmarks = q.get("allowWatchBookmarks") in TRUE_VALUES
        self.initial_events = q.get("sendInitialEvents") in TRUE_VALUES
        self.table = wants_table(request)
        self.metadata_only = wants_metadata(request, collection=False)
        self.include_object = q.get("includeObject", "Metadata")
        self.headers_sent = False

    async def start(self) -> None:
        await self.response.prepare(self.request)

    def _encode(self, etype: str, obj: Obj) -> bytes:
        if self.table and etype in ("ADDED", "MODIFIED", "DELETED"):
            obj = tables.table(self.t.rt.plural, [obj], resource_version=obj["metadata"].get("resourceVersion", ""),
                               include_object=self.include_object, headers=not self.headers_sent)
            self.headers_sent = True
        elif self.metadata_only and etype in ("ADDED", "MODIFIED", "DELETED"):
            obj = partial_metadata(obj)
        return orjson.dumps({"type": etype, "object": obj}) + b"\n"

    async def send(self, etype: str, obj: Obj) -> None:
        await self.response.write(self._encode(etype, obj))

    def _bookmark(self, initial_end: bool = False) -> Obj:
        meta: Obj = {"resourceVersion": str(self.api.store.rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"kind": self.t.rt.kind, "apiVersion": self.t.rt.api_version, "metadata": meta}

    async def finish(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.response.write_eof()

    async def run(self, watcher: Any) -> web.StreamResponse:
        await self.start()
        queue: asyncio.Queue[Any] = watcher.queue
        initial_pending = self.initial_events and queue.qsize()
        last_bookmark = time.monotonic()
        try:
            if self.initial_events and not initial_pending:
                await self.send("BOOKMARK", self._bookmark(initial_end=True))
            while True:
                remaining = self.ends_at - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    event = await asyncio.wait_for(queue.get(), min(remaining, BOOKMARK_INTERVAL_S))
                except TimeoutError:
                    transport = self.request.transport
                    if transport is None or transport.is_closing():
                        break  # the client went away without us writing to it
                    if self.bookmarks and time.monotonic() - last_bookmark >= BOOKMARK_INTERVAL_S - 0.01:
                        await self.send("BOOKMARK", self._bookmark())
                        last_bookmark = time.monotonic()
                    continue
                if event is None:
                    break
                # Events already queued share a chunk up to CHUNK_BYTES (an event larger than that is a chunk of
                # its own), as kube-apiserver's Go HTTP server sends its 2 KiB response buffer: a client that reads
                # a chunk at a time then holds about one event at a time, however many are waiting.
                chunk = [self._encode(event.type, event.obj)]
                size = len(chunk[0])
                while not queue.empty():
                    nxt = queue.get_nowait()
                    if nxt is None:
                        watcher.closed = True
                        break
                    encoded = self._encode(nxt.type, nxt.obj)
                    if size + len(encoded) > CHUNK_BYTES:
                        await self.response.write(b"".join(chunk))
                        chunk, size = [], 0
                    chunk.append(encoded)
                    size += len(encoded)
                if chunk:
                    await self.response.write(b"".join(chunk))
                if initial_pending and queue.empty():
                    initial_pending = 0
                    await self.send("BOOKMARK", self._bookmark(initial_end=True))
                if watcher.closed:
                    break
            if self.bookmarks:
                await self.send("BOOKMARK", self._bookmark())
        except ConnectionError:
            return self.response
        finally:
            watcher.close()
        await self.finish()
        return self.response


# ------------------------------------------------------------------ pods/log


class PodLog:
    """`GET pods/{name}/log`: the file the virtual node writes, whole, tailed or followed.

    Path contract with sandbox/k8s/node/kubelet.py (`rotate_log`): `data_dir/pods/<uid>/logs/<container>.log`
    holds the latest attempt's combined stdout and stderr, `<container>.previous.log` the attempt before;
    `.id` / `.previous.id` hold their containerIDs. Which attempt a request gets is decided from the pod's
    container status exactly as the kubelet's validateContainerLogStatus does (`previous=true`: the last
    terminated attempt, else the running one, else the latest that ran), with its error messages.
    """

    def __init__(self, cluster: KubeCluster, request: web.Request, namespace: str, name: str) -> None:
        self.cluster, self.request, self.namespace, self.name = cluster, request, namespace, name
        q = request.query
        self.follow = q.get("follow") in TRUE_VALUES
        self.timestamps = q.get("timestamps") in TRUE_VALUES
        self.previous = q.get("previous") in TRUE_VALUES
        self.tail = int(q["tailLines"]) if q.get("tailLines", "").lstrip("-").isdigit() else None
        self.limit = int(q["limitBytes"]) if q.get("limitBytes", "").isdigit() else None
        pod = cluster.store.get("pods", namespace, name)
        self.uid = pod["metadata"]["uid"]
        self.container = self._pick_container(pod, q.get("container"))
        self.logs_dir = Path(cluster.data_dir) / "pods" / self.uid / "logs"
        self.container_id: str | None = None  # the attempt served (None: not known from the status yet)
        self.path = self.logs_dir / f"{self.container}.log"
        self._fh: Any = None
        self.sent = 0
        self.at_line_start = True
        self.cut_at: float | None = None

    def _pick_container(self, pod: Obj, wanted: str | None) -> str:
        spec = pod.get("spec") or {}
        names = [c.get("name") for c in spec.get("containers") or []]
        init = [c.get("name") for c in spec.get("initContainers") or []]
        if not wanted:
            if len(names) == 1:
                return names[0]
            text = f"a container name must be specified for pod {self.name}, choose one of: [{' '.join(names)}]"
            if init:
                text += f" or one of the init containers: [{' '.join(init)}]"
            raise errors.bad_request(text)
        if wanted not in names and wanted not in init:
            raise errors.bad_request(f"container {wanted} is not valid for pod {self.name}")
        return wanted

    def _status(self, pod: Obj | None) -> Obj | None:
        status = (pod or {}).get("status") or {}
        for cs in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []):
            if cs.get("name") == self.container:
                return cs
        return None

    @staticmethod
    def _latest_id(cs: Obj) -> str | None:
        """The containerID of the container's latest attempt: the running or terminated one, else the last dead."""
        state = cs.get("state") or {}
        if "running" in state:
            return cs.get("containerID")
        if (state.get("terminated") or {}).get("containerID"):
            return str(state["terminated"]["containerID"])
        return ((cs.get("lastState") or {}).get("terminated") or {}).get("containerID")

    def _wanted_id(self, cs: Obj) -> str | None:
        """kubelet validateContainerLogStatus: which attempt's log to serve, or its 400.

        None: the status names no containerID (written by someone other than the node): the latest log."""
        where = f'container "{self.container}" in pod "{self.name}"'
        state = cs.get("state") or {}
        last = (cs.get("lastState") or {}).get("terminated") or {}
        if self.previous:
            if not last.get("containerID"):
                raise errors.bad_request(f'previous terminated container "{self.container}" in pod "{self.name}" '
                                         "not found")
            return str(last["containerID"])
        if "running" in state:
            return cs.get("containerID")
        if "terminated" in state:
            cid = (state.get("terminated") or {}).get("containerID") or last.get("containerID")
            if not cid and not self.path.exists():
                raise errors.bad_request(f"{where} is terminated")
            return cid
        if last:
            if not last.get("containerID"):
                raise errors.bad_request(f"{where} is terminated")
            return str(last["containerID"])
        started = self._read_id(f"{self.container}.id")
        if started:  # an attempt has started and its status is not written yet
            return started
        reason = (state.get("waiting") or {}).get("reason") or "ContainerCreating"
        detail = {"ErrImagePull": "image can't be pulled",
                  "ImagePullBackOff": "trying and failing to pull image"}.get(reason, reason)
        raise errors.bad_request(f"{where} is waiting to start: {detail}")

    def _check_started(self) -> None:
        pod = self.cluster.store.peek("pods", self.namespace, self.name)
        cs = self._status(pod)
        if cs is None:
            if self.previous:
                raise errors.bad_request(f'previous terminated container "{self.container}" in pod "{self.name}" '
                                         "not found")
            if not self.path.exists():
                raise errors.bad_request(f'container "{self.container}" in pod "{self.name}" is waiting to start: '
                                         "ContainerCreating")
            return
        self.container_id = self._wanted_id(cs)
        if self.container_id and self._read_id(f"{self.container}.previous.id") == self.container_id:
            self.path = self.logs_dir / f"{self.container}.previous.log"

    def _read_id(self, filename: str) -> str | None:
        try:
            return (self.logs_dir / filename).read_text() or None
        except FileNotFoundError:
            return None

    def _attempt_over(self, pod: Obj | None) -> bool:
        """The attempt being followed has ended (or the pod is gone): following stops once it is drained.

        The node's `.id` file names the newest attempt even before the pod's status says so."""
        if pod is None or pod["metadata"].get("uid") != self.uid:
            return True
        cs = self._status(pod)
        state = (cs or {}).get("state") or {}
        if self.container_id is None:
            return "terminated" in state
        latest = self._read_id(f"{self.container}.id")
        if latest is not None and latest != self.container_id:
            return True
        terminated = state.get("terminated")
        if terminated is not None and not terminated.get("containerID"):
            return True
        last = ((cs or {}).get("lastState") or {}).get("terminated") or {}
        return self.container_id in ((terminated or {}).get("containerID"), last.get("containerID"))

    def _read_from(self, offset: int) -> bytes:
        # One open file per request: a restart renames the log (kubelet rotate_log), and the attempt being
        # read must stay the one read.
        try:
            if self._fh is None:
                self._fh = self.path.open("rb")
            self._fh.seek(offset)
            return bytes(self._fh.read())
        except FileNotFoundError:
            return b""

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _initial(self) -> tuple[bytes, int]:
        data = self._read_from(0)
        end = len(data)
        if self.tail is not None and self.tail >= 0:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-self.tail:]) if self.tail else b""
        return data, end

    def _stamp(self, data: bytes, ts: float) -> bytes:
        if not self.timestamps or not data:
            return data
        prefix = rfc3339_nano(ts).encode() + b" "
        out = bytearray()
        for line in data.splitlines(keepends=True):
            if self.at_line_start:
                out += prefix
            out += line
            self.at_line_start = line.endswith(b"\n")
        return bytes(out)

    def _limit(self, data: bytes) -> bytes:
        if self.limit is None:
            return data
        room = max(0, self.limit - self.sent)
        data = data[:room]
        self.sent += len(data)
        return data

    async def serve(self) -> web.StreamResponse:
        try:
            return await self._serve()
        finally:
            self.close()

    async def _serve(self) -> web.StreamResponse:
        self._check_started()
        data, offset = self._initial()
        mtime = self.path.stat().st_mtime if self.path.exists() else time.time()
        if self.follow:
            # Fault knobs log_cut_after_bytes / log_cut_after_s: the stream ends early, wherever that falls.
            cut_bytes, cut_s = self.cluster.faults.log_cut()
            if cut_bytes is not None:
                self.limit = cut_bytes if self.limit is None else min(self.limit, cut_bytes)
            self.cut_at = time.monotonic() + cut_s if cut_s is not None else None
        first = self._limit(self._stamp(data, mtime))
        if not self.follow:
            return web.Response(body=first, content_type="text/plain")
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(self.request)
        try:
            if first:
                await resp.write(first)
            await self._follow(resp, offset)
        except ConnectionError:  # the client went away (aiohttp's ClientConnectionResetError is one): nothing to end
            return resp
        with contextlib.suppress(ConnectionError, RuntimeError):
            await resp.write_eof()
        return resp

    async def _follow(self, resp: web.StreamResponse, offset: int) -> None:
        while self.limit is None or self.sent < self.limit:
            if self.cut_at is not None and time.monotonic() >= self.cut_at:
                return
            pod = self.cluster.store.peek("pods", self.namespace, self.name)
            done = self._attempt_over(pod)
            chunk = self._read_from(offset)
            if chunk:
                offset += len(chunk)
                out = self._limit(self._stamp(chunk, time.time()))
                if out:
                    await resp.write(out)
            elif done:
                return
            else:
                await asyncio.sleep(LOG_POLL_S)


# ------------------------------------------------------------------ middlewares and app


def authorized(request: web.Request, token: str) -> bool:
    """Every request but the health probes must carry the cluster's bearer token.

    The server is https-only (cluster.py), so kubectl sends its kubeconfig token too (client-go only does
    that over TLS); there is no exception for any client.
    """
    if request.path in ANONYMOUS_PATHS:
        return True
    return request.headers.get("Authorization") == f"Bearer {token}"


def _middlewares(cluster: KubeCluster) -> list[Any]:
    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        cluster.request_count += 1
        return await handler(request)

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not authorized(request, cluster.token):
            return status_response(errors.ApiError(401, "Unauthorized", "Unauthorized"))
        return await handler(request)

    @web.middleware
    async def api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except errors.ApiError as err:
            return status_response(err)
        except web.HTTPNotFound:  # no route: the real server answers a Status here too
            return status_response(errors.ApiError(404, "NotFound", "the server could not find the requested "
                                                   "resource"))
        except web.HTTPException:
            raise
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as exc:  # a bug in the emulator: answer like an apiserver panic would
            import logging

            logging.getLogger("sandbox.k8s.api").exception("internal error on %s %s", request.method, request.path)
            return status_response(errors.ApiError(500, "InternalError", f"Internal error occurred: {exc!r}"))

    return [count, auth, fault_middleware(cluster.faults, "k8s", fault_responder), api_errors]


def make_app(cluster: KubeCluster) -> web.Application:
    """The aiohttp application serving `cluster` (KubeCluster.start runs it on 127.0.0.1)."""
    api = KubeApi(cluster)
    app = web.Application(middlewares=_middlewares(cluster), client_max_size=16 * 1024 * 1024)
    app.router.add_get("/version", api.version)
    app.router.add_get("/version/", api.version)
    for path in ANONYMOUS_PATHS[1:]:
        app.router.add_get(path, api.health)
    app.router.add_get("/openapi/v3", api.openapi_root)
    app.router.add_get("/openapi/v3/{path:.+}", api.openapi_gv)
    app.router.add_route("*", "/api", api.dispatch)
    app.router.add_route("*", "/api/{tail:.*}", api.dispatch)
    app.router.add_route("*", "/apis", api.dispatch)
    app.router.add_route("*", "/apis/{tail:.*}", api.dispatch)
    return app
