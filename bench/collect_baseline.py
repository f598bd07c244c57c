"""The collect stage as it was before its memory was bounded (commit 8f871f1, cubic log loop already fixed): the
baseline of ``bench_collect_memory.py``, kept here only for the benchmark (nothing of the pipeline imports it).

It lists the whole run prefix into a list, groups it into a dict of lists, and builds one pydantic
``IndexOutputs`` with one ``OutputObject`` per object for every index, plus a pod -> key dict of saved logs. Record
only (``outputs.download`` must be off): the memory figures compare what the stage keeps, not the downloads.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from tasks.cloud.retry import call
from tasks.handles import JobReport
from tasks.render.manifests import index_prefix, run_prefix
from tasks.spec import BatchSpec, OutputsSpec
from tasks.stages.outputs import LOGS_DIR, Listed, pod_index_finder


class OldOutputObject(BaseModel):
    key: str
    size: int
    etag: str | None = None
    crc64: str | None = None
    local_path: str | None = None
    verified: bool = False
    link: str | None = None


class OldIndexOutputs(BaseModel):
    index: int
    prefix: str
    complete: bool
    problem: str | None = None
    objects: list[OldOutputObject] = Field(default_factory=list)
    log_keys: list[str] = Field(default_factory=list)


class OldOutputManifest(BaseModel):
    bucket: str
    prefix: str
    download_dir: str | None = None
    complete: bool
    missing: list[int] = Field(default_factory=list)
    indexes: list[OldIndexOutputs] = Field(default_factory=list)
    log_keys: dict[str, str] = Field(default_factory=dict)
    other_keys: list[str] = Field(default_factory=list)


def list_prefix(oss: Any, bucket: str, prefix: str, *, max_keys: int = 1000) -> list[Listed]:
    import alibabacloud_oss_v2 as o

    def listing() -> list[Listed]:
        out: list[Listed] = []
        paginator = oss.list_objects_v2_paginator(limit=max_keys)
        for page in paginator.iter_page(o.ListObjectsV2Request(bucket=bucket, prefix=prefix)):
            out += [Listed(obj.key, int(obj.size or 0), obj.etag) for obj in page.contents or []]
        return out

    return call(listing, service="OSS", operation="ListObjectsV2")


def group_by_index(listed: Iterable[Listed], outputs: OutputsSpec, prefix: str,
                   completions: int) -> tuple[dict[int, list[Listed]], list[str]]:
    by_prefix = {index_prefix(outputs, prefix, i): i for i in range(completions)}
    ordered = sorted(by_prefix)
    groups: dict[int, list[Listed]] = {i: [] for i in range(completions)}
    others: list[str] = []
    for obj in listed:
        if obj.key.startswith(prefix + LOGS_DIR):
            continue
        at = bisect.bisect_right(ordered, obj.key) - 1
        if at >= 0 and obj.key.startswith(ordered[at]):
            groups[by_prefix[ordered[at]]].append(obj)
        else:
            owner = next((i for p, i in by_prefix.items() if obj.key.startswith(p)), None)
            (others.append(obj.key) if owner is None else groups[owner].append(obj))
    return groups, others


def completeness_problem(outputs: OutputsSpec, idx_prefix: str, objects: list[Listed]) -> str | None:
    if outputs.completeness == "none":
        return None
    if outputs.completeness == "marker":
        if not any(o.key == idx_prefix + outputs.marker_name for o in objects):
            return f"no marker {outputs.marker_name!r} under {idx_prefix} ({len(objects)} object(s))"
        return None
    if len(objects) < outputs.min_objects:
        return f"{len(objects)} object(s) under {idx_prefix}, expected at least {outputs.min_objects}"
    return None


def save_pod_logs(oss: Any, bucket: str, prefix: str, log_dir: Path | None) -> dict[str, str]:
    import alibabacloud_oss_v2 as o

    saved: dict[str, str] = {}
    if not log_dir or not log_dir.is_dir():
        return saved
    for path in sorted(log_dir.glob("*.log")):
        pod = path.name.removesuffix(".log")
        key = f"{prefix}{LOGS_DIR}{pod}.log"
        call(oss.put_object, o.PutObjectRequest(bucket=bucket, key=key, body=path.read_bytes(),
                                                content_type="text/plain"), service="OSS", operation="PutObject")
        saved[pod] = key
    return saved


def collect_outputs(spec: BatchSpec, *, run_key: str, flow_run_name: str, report: JobReport, oss: Any,
                    log_dir: Path | None, max_keys: int = 1000) -> OldOutputManifest:
    """The old stage, record only (no download, no presigned links); returns the old manifest (never raises)."""
    outputs = spec.outputs
    assert not outputs.download and not outputs.presigned_links, "the baseline is record only"
    prefix = run_prefix(outputs, run_key=run_key, flow_run_name=flow_run_name)
    completions = report.job.completions
    saved_logs = save_pod_logs(oss, outputs.bucket, prefix, log_dir)
    listed = list_prefix(oss, outputs.bucket, prefix, max_keys=max_keys)
    groups, others = group_by_index(listed, outputs, prefix, completions)
    index_of = pod_index_finder(report)
    logs_of: dict[int, list[str]] = {}
    for pod, key in saved_logs.items():
        owner = index_of(pod)
        if owner is not None:
            logs_of.setdefault(owner, []).append(key)
    entries: list[OldIndexOutputs] = []
    for index in range(completions):
        idx_prefix = index_prefix(outputs, prefix, index)
        objects = groups[index]
        problem = completeness_problem(outputs, idx_prefix, objects)
        entries.append(OldIndexOutputs(
            index=index, prefix=idx_prefix, complete=problem is None, problem=problem,
            objects=[OldOutputObject(key=o.key, size=o.size, etag=o.etag) for o in objects],
            log_keys=sorted(logs_of.get(index, []))))
    missing = [e.index for e in entries if not e.complete]
    return OldOutputManifest(bucket=outputs.bucket, prefix=prefix, download_dir=None, complete=not missing,
                             missing=missing, indexes=entries, log_keys=saved_logs, other_keys=others)
