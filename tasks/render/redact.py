"""One scrubber for everything ask-batch writes: each secret value in every form a workload or a library may print.

A secret reaches text in more shapes than its own bytes. ``Scrubber`` replaces, longest first, each of these
*forms* of every known secret value by ``<redacted>``:

- the value as given, and with surrounding whitespace stripped (a file read with or without its trailing newline);
- each line of a multi-line value (a PEM key printed line by line, or split across log lines) when the line has at
  least ``MIN_LINE`` characters after stripping, so ``-----END-----``-like short lines and blank lines are left alone
  only when they are too short to identify anything;
- base64 (RFC 4648 §4, https://www.rfc-editor.org/rfc/rfc4648#section-4) of the value with and without its
  trailing newline, whole and cut into the 76-character lines of GNU ``base64``
  (https://www.gnu.org/software/coreutils/manual/html_node/base64-invocation.html) and the 64-character lines of
  PEM (RFC 7468 §2, https://www.rfc-editor.org/rfc/rfc7468#section-2);
- JSON string escaping (RFC 8259 §7, https://www.rfc-editor.org/rfc/rfc8259#section-7), with and without
  ``ensure_ascii``, of the value and of each of its lines;
- URL encoding (RFC 3986 §2.1, https://www.rfc-editor.org/rfc/rfc3986#section-2.1), as ``quote`` and
  ``quote_plus`` produce it.

Pure: no I/O. Used by the run log forwarding, log streams, kept logs, error texts, artifacts and the dry run.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

REDACTED = "<redacted>"

#: Shortest secret value (after stripping) that is scrubbed at all: shorter ones would blank ordinary words.
MIN_VALUE = 4
#: Shortest line of a multi-line value scrubbed on its own (a PEM body line has 64 characters).
MIN_LINE = 8
#: Line widths that base64 tools wrap at: GNU coreutils ``base64`` (76) and PEM / ``openssl base64`` (64).
BASE64_WRAPS = (76, 64)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _url_forms(v: str) -> set[str]:
    """``v`` URL-encoded as ``quote``/``quote_plus`` write it, with their default ``safe="/"`` and with nothing safe."""
    return {quote(v, safe=""), quote(v), quote_plus(v, safe=""), quote_plus(v)}


def secret_forms(value: str) -> set[str]:
    """Every form of ``value`` that ``Scrubber`` blanks (see the module docstring); empty for too-short values."""
    stripped = value.strip()
    if len(stripped) < MIN_VALUE:
        return set()
    forms: set[str] = {value, stripped}
    lines = [ln.strip() for ln in stripped.splitlines()]
    if len(lines) > 1:
        forms |= {ln for ln in lines if len(ln) >= MIN_LINE}
    variants = {value, stripped, stripped + "\n", value.rstrip("\r\n"), value.rstrip("\r\n") + "\n"}
    for v in variants:
        encoded = _b64(v.encode("utf-8", "surrogateescape"))
        forms.add(encoded)
        forms.add(encoded.rstrip("="))
        for width in BASE64_WRAPS:
            if len(encoded) > width:
                # Whole wrapped lines only: the last, shorter line is found whole above if it stands alone.
                forms |= {encoded[i:i + width] for i in range(0, len(encoded) - width + 1, width)}
        for ascii_only in (True, False):
            escaped = json.dumps(v, ensure_ascii=ascii_only)[1:-1]
            forms.add(escaped)
        forms |= _url_forms(v)
    for ln in lines:
        if len(ln) >= MIN_LINE:
            for ascii_only in (True, False):
                forms.add(json.dumps(ln, ensure_ascii=ascii_only)[1:-1])
            forms |= _url_forms(ln)
    # A form that is all whitespace or too short would blank unrelated text.
    return {f for f in forms if len(f.strip()) >= MIN_VALUE}


class Scrubber:
    """Replaces every form of every known secret value in a text by ``<redacted>`` (longest form first).

    ``scrubber(text) -> str``; ``max_form`` is the length of the longest form (a stream that scrubs text in pieces
    must hold back ``max_form - 1`` characters so that no form is cut in two). Never raises on any ``str``.
    """

    def __init__(self, secrets: Iterable[str] = ()):
        self._forms: set[str] = set()
        self.needles: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Add more secret values (each expanded into its forms)."""
        for s in secrets:
            if s:
                self._forms |= secret_forms(s)
        self.needles = sorted(self._forms, key=len, reverse=True)

    @property
    def max_form(self) -> int:
        return len(self.needles[0]) if self.needles else 0

    def __bool__(self) -> bool:
        return bool(self.needles)

    def __call__(self, text: str) -> str:
        for needle in self.needles:
            if needle in text:
                text = text.replace(needle, REDACTED)
        return text

    def spans(self, text: str) -> list[tuple[int, int]]:
        """(start, end) of every occurrence of a form in ``text`` (overlaps included), for cut-point checks."""
        out = []
        for needle in self.needles:
            start = text.find(needle)
            while start >= 0:
                out.append((start, start + len(needle)))
                start = text.find(needle, start + 1)
        return out

    def safe_cut(self, text: str, cut: int) -> int:
        """The largest position <= ``cut`` that no occurrence of a form straddles (scrubbing ``text[:pos]`` and
        ``text[pos:]`` apart then blanks the same occurrences as scrubbing ``text`` whole)."""
        width = self.max_form
        moved = True
        while moved and width:
            moved = False
            base = max(0, cut - width + 1)
            for start, end in self.spans(text[base:cut + width - 1]):
                if start + base < cut < end + base:
                    cut, moved = start + base, True
                    break
        return cut


def scrub_obj(obj: object, scrub: Scrubber) -> object:
    """``obj`` (JSON-like: dicts, lists, strings) with every string scrubbed."""
    if isinstance(obj, str):
        return scrub(obj)
    if isinstance(obj, dict):
        return {k: scrub_obj(v, scrub) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [scrub_obj(v, scrub) for v in obj]
    return obj
