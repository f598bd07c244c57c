"""Deterministic names and content hashes.

Every object ask-batch creates is *named* from the run key, so that a retried flow run finds what an earlier
attempt created instead of making a second one (the whole idempotency story rests on this module being pure and
stable across Python versions and processes: no ``hash()``, no randomness, canonical JSON only).

Kubernetes limits: object names of the kinds we create must be DNS-1123 subdomains (≤253), but a Job name ends up
in the ``batch.kubernetes.io/job-name`` label of its pods (≤63) and in the pod names (``<job>-<index>-<rand>``),
so we keep every name we build to a DNS-1123 *label* and cut the Job name shorter still. When a name must be
shortened, a hash of the full text is kept at the end so two long run keys never collapse into one name.
"""

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, NewType

RunKey = NewType("RunKey", str)
"""A run key: a valid DNS-1123 label (and thus a valid label value) identifying one logical run."""

DNS1123_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_MAX = 63
JOB_NAME_MAX = 52  # pods are named "<job>-<index>-<5 random>", and the controller trims at 63
HASH_LEN = 10

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "ask-batch"
RUN_LABEL = "ask-batch.io/run"
#: On a follow-up Job (a re-run of missing indexes) and its pods: the original index it runs.
INDEX_LABEL = "ask-batch.io/index"
#: Selects every Kubernetes object ask-batch created, whatever the run (the cleanup command uses it).
MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"


def is_dns1123_label(text: str) -> bool:
    """True when ``text`` is a valid DNS-1123 label (lowercase alphanumerics and '-', ≤63, alnum at both ends)."""
    return len(text) <= LABEL_MAX and bool(DNS1123_LABEL_RE.match(text))


def short_hash(data: str | bytes, length: int = HASH_LEN) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``data``."""
    if isinstance(data, str):
        data = data.encode()
    return hashlib.sha256(data).hexdigest()[:length]


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal data gives equal text, hence equal hashes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def content_hash(obj: Any, *, salt: str = "", length: int = HASH_LEN) -> str:
    """Hash of a JSON-able object (dict of file name -> content, a rendered spec, ...).

    ``salt`` lets a caller make the hash of secret content run-specific, so a name seen in a log cannot be used
    to recognise the same secret value in another run.
    """
    return short_hash(salt + "\0" + canonical_json(obj), length)


def sanitize_label(text: str, max_len: int = LABEL_MAX) -> str:
    """Turn any text into a DNS-1123 label, keeping it readable; long or altered text gets a hash suffix.

    >>> sanitize_label("My Run_2024.10")
    'my-run-2024-10-...'  # doctest: +SKIP
    """
    if max_len < HASH_LEN + 2:
        raise ValueError(f"max_len {max_len} leaves no room for a hash suffix")
    lowered = re.sub(r"[^a-z0-9-]+", "-", text.lower())
    lowered = re.sub(r"-{2,}", "-", lowered).strip("-")
    if lowered == text and is_dns1123_label(text) and len(text) <= max_len:
        return text
    suffix = short_hash(text)
    head = lowered[: max_len - HASH_LEN - 1].strip("-")
    return f"{head}-{suffix}" if head else f"x-{suffix}"[:max_len]


def make_run_key(raw: str) -> RunKey:
    """Normalise a flow-run name/id or a user-chosen key into a run key (idempotent: f(f(x)) == f(x))."""
    if not raw:
        raise ValueError("the run key must not be empty")
    return RunKey(sanitize_label(raw, max_len=40))


def resource_name(prefix: str, run_key: RunKey | str, suffix: str = "", *, max_len: int = LABEL_MAX) -> str:
    """``<prefix>-<run key>[-<suffix>]`` as a DNS-1123 label no longer than ``max_len``.

    The prefix and suffix (typically a content hash) are kept whole; the run key is shortened (with its own
    hash) when the total would be too long, so the suffix that makes the object unique is never cut.
    """
    parts_fixed = len(prefix) + 1 + (len(suffix) + 1 if suffix else 0)
    room = max_len - parts_fixed
    key = str(run_key)
    if len(key) > room:
        key = sanitize_label(key, max_len=max(room, HASH_LEN + 2))
    name = f"{prefix}-{key}" + (f"-{suffix}" if suffix else "")
    if not is_dns1123_label(name):
        raise ValueError(f"cannot build a DNS-1123 name from prefix={prefix!r} suffix={suffix!r}: got {name!r}")
    return name


def job_name(run_key: RunKey | str, spec_hash: str) -> str:
    """The Job's name: run key + hash of its rendered spec, so a changed spec never adopts an old Job."""
    return resource_name("askb", run_key, spec_hash, max_len=JOB_NAME_MAX)


def config_map_name(run_key: RunKey | str, data_hash: str) -> str:
    return resource_name("askb-cfg", run_key, data_hash)


def secret_name(run_key: RunKey | str, data_hash: str) -> str:
    return resource_name("askb-sec", run_key, data_hash)


def service_account_name(run_key: RunKey | str) -> str:
    """The run's ServiceAccount (pod credentials 'rrsa'): ``askb-sa-<run key>``, so a RAM role's trust policy can
    match every run's with ``StringLike`` ``system:serviceaccount:<namespace>:askb-sa-*``."""
    return resource_name("askb-sa", run_key)


def volume_names(run_key: RunKey | str) -> tuple[str, str]:
    """(PV name, PVC name) for a run's static NAS volume."""
    return resource_name("askb-pv", run_key), resource_name("askb-pvc", run_key)


def run_labels(run_key: RunKey | str) -> dict[str, str]:
    """The labels every Kubernetes object we create carries (and the tags of every cloud resource)."""
    return {MANAGED_BY_LABEL: MANAGED_BY_VALUE, RUN_LABEL: str(run_key)}


def run_selector(run_key: RunKey | str) -> str:
    """Label selector matching every object of one run."""
    return ",".join(f"{k}={v}" for k, v in run_labels(run_key).items())


def format_tags(tags: Mapping[str, str]) -> list[dict[str, str]]:
    """CS-style tag list ``[{key, value}]`` from a mapping, in a stable order."""
    return [{"key": k, "value": v} for k, v in sorted(tags.items())]
