"""Where a request points: bucket, object key and query, in both OSS address styles.

The SDK uses path style (`/<bucket>/<quoted key>`) when the endpoint host is an IP literal or
`use_path_style` is set, and virtual-hosted style (`<bucket>.<endpoint host>/<quoted key>`) otherwise.
Keys are percent-decoded from the *raw* path (aiohttp's decoded `request.path` would be ambiguous for
`%2F`), with `unquote` rather than `unquote_plus`: the SDK sends `+` as `%2B`, and a literal `+` in a
path is a plus sign.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

from aiohttp import web


@dataclass
class Target:
    bucket: str | None
    key: str | None
    # decoded query, first value wins; `?uploads` gives {"uploads": ""}
    query: dict[str, str] = field(default_factory=dict)
    # the raw (still percent-encoded) query pairs, in order, as V4 canonicalisation needs them
    raw_pairs: list[tuple[str, str]] = field(default_factory=list)
    virtual_host: bool = False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def parse_query(raw_query: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    pairs: list[tuple[str, str]] = []
    decoded: dict[str, str] = {}
    if raw_query:
        for item in raw_query.split("&"):
            if not item:
                continue
            k, _, v = item.partition("=")
            pairs.append((k, v))
            decoded.setdefault(unquote(k), unquote(v))
    return decoded, pairs


def resolve(request: web.Request, host_suffix: str | None, bucket_exists: Callable[[str], bool]) -> Target:
    raw_path, _, raw_query = request.raw_path.partition("?")
    query, pairs = parse_query(raw_query)
    host_header = (request.headers.get("Host") or "").lower()
    # "[::1]:9000" is an IPv6 literal: always path style
    host = "" if host_header.startswith("[") else host_header.rsplit(":", 1)[0]

    vhost_bucket: str | None = None
    if host and not _is_ip(host) and "." in host:
        first, _, rest = host.partition(".")
        # `<bucket>.localhost` is what the SDK builds for a `localhost` endpoint without use_path_style
        if (host_suffix and rest == host_suffix.lower()) or rest == "localhost" or bucket_exists(first):
            vhost_bucket = first

    if vhost_bucket is not None:
        key = unquote(raw_path[1:]) if len(raw_path) > 1 else None
        return Target(vhost_bucket, key or None, query, pairs, virtual_host=True)

    parts = raw_path.split("/", 2)  # "", bucket, key
    bucket = unquote(parts[1]) if len(parts) > 1 and parts[1] else None
    key = unquote(parts[2]) if len(parts) > 2 and parts[2] else None
    return Target(bucket, key, query, pairs)
