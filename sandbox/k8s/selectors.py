"""Label and field selectors, parsed once and matched many times.

Label selector grammar as in k8s.io/apimachinery: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`,
`a`, `!a`, comma-separated (AND). Field selectors support `=`, `==`, `!=` on the fields a kind allows.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .errors import bad_request

Matcher = Callable[[dict[str, Any]], bool]

_SET_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_EQ_RE = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|=|!=)\s*([A-Za-z0-9_.-]*)\s*$")


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


def parse_label_selector(text: str | None) -> Matcher | None:
    """Return a predicate over an object's labels, or None for "everything"."""
    if not text or not text.strip():
        return None
    tests: list[Callable[[dict[str, str]], bool]] = []
    for part in _split_top_level(text):
        m = _EQ_RE.match(part)
        if m:
            key, op, value = m.groups()
            if op == "!=":
                tests.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                tests.append(lambda labels, k=key, v=value: labels.get(k) == v)
            continue
        m = _SET_RE.match(part)
        if not m:
            raise bad_request(f'unable to parse requirement: found "{part.strip()}", invalid label selector')
        neg, key, op, values = m.groups()
        if op:
            if neg:
                raise bad_request(f"unable to parse requirement: {part.strip()}")
            vals = {v.strip() for v in values.split(",") if v.strip()}
            if op == "in":
                tests.append(lambda labels, k=key, vs=vals: labels.get(k) in vs)
            else:
                tests.append(lambda labels, k=key, vs=vals: labels.get(k) not in vs)
        elif neg:
            tests.append(lambda labels, k=key: k not in labels)
        else:
            tests.append(lambda labels, k=key: k in labels)

    def match(obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(t(labels) for t in tests)

    return match


def match_labels_selector(selector: dict[str, Any] | None) -> Matcher | None:
    """A predicate for a structured LabelSelector (matchLabels + matchExpressions)."""
    if not selector:
        return None
    parts = [f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()]
    for expr in selector.get("matchExpressions") or []:
        op = expr.get("operator")
        key = expr.get("key")
        values = ",".join(expr.get("values") or [])
        if op == "In":
            parts.append(f"{key} in ({values})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({values})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return parse_label_selector(",".join(parts)) or (lambda obj: True)


def field_value(obj: dict[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    if isinstance(cur, dict):  # e.g. "source" on events
        return str(cur.get("component", ""))
    return str(cur)


def parse_field_selector(text: str | None, allowed: tuple[str, ...], kind: str) -> Matcher | None:
    if not text or not text.strip():
        return None
    tests: list[Callable[[dict[str, Any]], bool]] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.match(r"^([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*)$", part)
        if not m:
            raise bad_request(f'invalid selector: "{part}"; can\'t understand "{part}"')
        key, op, value = m.groups()
        if key not in ("metadata.name", "metadata.namespace") and key not in allowed:
            raise bad_request(f'field label not supported: {key}')
        if op == "!=":
            tests.append(lambda o, k=key, v=value: field_value(o, k) != v)
        else:
            tests.append(lambda o, k=key, v=value: field_value(o, k) == v)
    return lambda obj: all(t(obj) for t in tests)
