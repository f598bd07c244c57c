"""Decode the protobuf request bodies kubectl's typed `create` generators send.

kubectl 1.32 sends `Content-Type: application/vnd.kubernetes.protobuf` for `kubectl create configmap`,
`create secret` and `create namespace` (and `create serviceaccount`), and does not fall back to JSON on a
415. The body is the `k8s\\x00` magic followed by a `runtime.Unknown` message:
`{1: TypeMeta{1: apiVersion, 2: kind}, 2: raw (the object's own message)}`. Only the fields those commands
set are decoded here (field numbers from k8s.io/api `generated.proto`); any other kind is answered with
415, which is what `kubectl create job` would get. Use `kubectl create job ... --dry-run=client -o yaml |
kubectl apply -f -` instead.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

from . import errors

MAGIC = b"k8s\x00"
PROTOBUF = "application/vnd.kubernetes.protobuf"


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """Yield (field number, value): ints for varints, bytes for length-delimited, skip fixed types."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, value
        elif wire == 2:
            length, pos = _varint(buf, pos)
            yield number, buf[pos:pos + length]
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")


def _map_entry(buf: bytes) -> tuple[str, bytes]:
    key, value = "", b""
    for number, raw in fields(buf):
        if number == 1 and isinstance(raw, bytes):
            key = raw.decode()
        elif number == 2 and isinstance(raw, bytes):
            value = raw
    return key, value


def _object_meta(buf: bytes) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    names = {1: "name", 2: "generateName", 3: "namespace", 5: "uid", 6: "resourceVersion"}
    for number, raw in fields(buf):
        if number in names and isinstance(raw, bytes):
            if raw:  # gogo-protobuf sends unset strings as ""
                meta[names[number]] = raw.decode()
        elif number in (11, 12) and isinstance(raw, bytes):
            key, value = _map_entry(raw)
            meta.setdefault("labels" if number == 11 else "annotations", {})[key] = value.decode()
        elif number == 14 and isinstance(raw, bytes):
            meta.setdefault("finalizers", []).append(raw.decode())
    return meta


def _config_map(buf: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for number, raw in fields(buf):
        if number == 1 and isinstance(raw, bytes):
            obj["metadata"] = _object_meta(raw)
        elif number == 2 and isinstance(raw, bytes):
            key, value = _map_entry(raw)
            obj.setdefault("data", {})[key] = value.decode()
        elif number == 3 and isinstance(raw, bytes):
            key, value = _map_entry(raw)
            obj.setdefault("binaryData", {})[key] = base64.b64encode(value).decode()
        elif number == 4:
            obj["immutable"] = bool(raw)
    return obj


def _secret(buf: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for number, raw in fields(buf):
        if number == 1 and isinstance(raw, bytes):
            obj["metadata"] = _object_meta(raw)
        elif number == 2 and isinstance(raw, bytes):
            key, value = _map_entry(raw)
            obj.setdefault("data", {})[key] = base64.b64encode(value).decode()
        elif number == 3 and isinstance(raw, bytes) and raw:
            obj["type"] = raw.decode()
        elif number == 4 and isinstance(raw, bytes):
            key, value = _map_entry(raw)
            obj.setdefault("stringData", {})[key] = value.decode()
        elif number == 5:
            obj["immutable"] = bool(raw)
    return obj


def _namespace(buf: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for number, raw in fields(buf):
        if number == 1 and isinstance(raw, bytes):
            obj["metadata"] = _object_meta(raw)
        elif number == 2 and isinstance(raw, bytes):
            finalizers = [v.decode() for n, v in fields(raw) if n == 1 and isinstance(v, bytes)]
            if finalizers:
                obj["spec"] = {"finalizers": finalizers}
    return obj


def _metadata_only(buf: bytes) -> dict[str, Any]:
    for number, raw in fields(buf):
        if number == 1 and isinstance(raw, bytes):
            return {"metadata": _object_meta(raw)}
    return {}


DECODERS = {"ConfigMap": _config_map, "Secret": _secret, "Namespace": _namespace,
            "ServiceAccount": _metadata_only}


def decode(body: bytes) -> dict[str, Any]:
    """A `k8s\\x00` protobuf body -> the JSON-shaped object. 415 for kinds we cannot decode."""
    if not body.startswith(MAGIC):
        raise errors.bad_request("protobuf body without the k8s envelope")
    try:
        api_version = kind = ""
        raw = b""
        for number, value in fields(body[len(MAGIC):]):
            if number == 1 and isinstance(value, bytes):
                for n, v in fields(value):
                    if n == 1 and isinstance(v, bytes):
                        api_version = v.decode()
                    elif n == 2 and isinstance(v, bytes):
                        kind = v.decode()
            elif number == 2 and isinstance(value, bytes):
                raw = value
        decoder = DECODERS.get(kind)
        if decoder is None:
            raise errors.ApiError(
                415, "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types include: "
                f"application/json, application/yaml (protobuf is only decoded for "
                f"{', '.join(sorted(DECODERS))}, not {kind or 'this kind'})")
        obj = decoder(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.bad_request(f"unable to decode protobuf body: {exc}") from exc
    return {"apiVersion": api_version, "kind": kind, **obj}
