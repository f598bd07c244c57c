"""Small XML helpers: build OSS response documents and read request bodies.

ElementTree does the escaping, so keys holding `&`, `<` or control-free unicode come out well formed.
Times use the two formats OSS sends: ISO 8601 with `.000Z` in XML, RFC 1123 in headers.
"""

from __future__ import annotations

import re
import time
from email.utils import formatdate
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree as ET

from aiohttp import web

from .errors import OssError, http_date, request_id

XML_DECL = b'<?xml version="1.0" encoding="UTF-8"?>\n'


def iso_time(ts: float) -> str:
    """OSS's XML time: ISO 8601 at second precision with a literal `.000Z` (e.g. 2026-11-30T05:44:34.000Z).

    OSS never sends fractions of a second, and oss2 parses these with the exact format
    `%Y-%m-%dT%H:%M:%S.000Z`, so anything else makes every listing with entries raise in oss2."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + ".000Z"


def rfc1123(ts: float) -> str:
    return formatdate(ts, usegmt=True)


def url_encode(value: str, enabled: bool) -> str:
    """`encoding-type=url` values; the SDK `unquote`s them, keeping `/` readable like real OSS."""
    return quote(value, safe="/") if enabled else value


def sub(parent: ET.Element, tag: str, text: Any = None) -> ET.Element:
    el = ET.SubElement(parent, tag)
    if text is not None:
        el.text = str(text).lower() if isinstance(text, bool) else str(text)
    return el


def xml_response(request: web.Request, root: ET.Element, status: int = 200,
                 headers: dict[str, str] | None = None) -> web.Response:
    body = XML_DECL + ET.tostring(root, encoding="utf-8")
    hdrs = {"x-oss-request-id": request_id(request), "Date": http_date(), "Server": "AliyunOSS"}
    hdrs.update(headers or {})
    return web.Response(status=status, body=body, headers=hdrs, content_type="application/xml")


_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_PRIVATE_BASE = 0xF0000  # a private-use plane: stands in for control characters while the XML is parsed


def _restore_controls(root: ET.Element) -> None:
    def back(text: str | None) -> str | None:
        if text is None:
            return None
        return "".join(chr(ord(c) - _PRIVATE_BASE) if _PRIVATE_BASE <= ord(c) < _PRIVATE_BASE + 32 else c
                       for c in text)

    for el in root.iter():
        el.text, el.tail = back(el.text), back(el.tail)


def parse_body(data: bytes, expect_root: str) -> ET.Element:
    """Parse a request document. Like OSS, control characters in element text (object keys such as
    "name\x0c.txt", which oss2 writes into DeleteMultipleObjects as they are) are accepted, though XML 1.0
    does not allow them."""
    controls = bool(_CONTROL.search(data))
    if controls:
        data = _CONTROL.sub(lambda m: chr(_PRIVATE_BASE + m.group(0)[0]).encode(), data)
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise OssError(400, "MalformedXML", "The XML you provided was not well-formed or did not validate "
                                            "against our published schema.") from exc
    if controls:
        _restore_controls(root)
    if root.tag.rpartition("}")[2] != expect_root:
        raise OssError(400, "MalformedXML", f"Expected root element {expect_root}, got {root.tag}.")
    return root


def owner(parent: ET.Element, owner_id: str) -> None:
    el = sub(parent, "Owner")
    sub(el, "ID", owner_id)
    sub(el, "DisplayName", owner_id)
