"""Stage collect_outputs: check that every index wrote its outputs to OSS, save the pod logs next to them, and
bring the files home verified.

Why each step is the way it is:

- **Completeness is judged per index, for every index 0..completions-1**, from the listing of the run prefix
  (paginated: a run of 10 000 tiny files is 10+ pages). An index is complete when its done-marker exists
  (``completeness: marker``; the workload writes it last) or when it has at least ``min_objects`` objects. A
  Job that "succeeded" but whose pods silently skipped the upload is caught here, not by the user a week later.
- **Pod logs are uploaded first** to ``<run prefix>logs/<pod>.log`` from the files ``wait_for_job`` wrote, so
  they outlive pod deletion and ``ttlSecondsAfterFinished`` even when the outputs turn out incomplete. A run that
  fails before this stage uploads them the same way (``save_pod_logs_task``, called by the flow).
- **Downloads are verified**: each object streams to a temporary name while its CRC-64/ECMA is computed, and is
  renamed into place only when size and CRC match what OSS reports (``x-oss-hash-crc64ecma``; the listing has
  no CRC, so the GET response's header is used, or a HEAD for a file already on disk). A file already downloaded
  and still matching is not fetched again, so re-running the stage is cheap; a corrupted local copy is replaced.
- **Half-collected is never complete**: a missing marker, too few objects, or a download that cannot be
  verified marks the index incomplete, and the stage raises ``OutputsIncomplete`` naming the indexes and the
  prefix, with the manifest attached (what *was* collected is still useful for debugging).

Presigned links, when enabled, carry the AccessKey *id* (never the secret) and, with STS credentials, the
security token: anyone holding such a link can read that object until it expires. That is what they are for.
"""

import bisect
import hashlib
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.cloud.context import RETRY_DELAYS, stage_context, stage_logs, transient_only
from tasks.cloud.retry import CloudError, call
from tasks.errors import BucketNotUsable, ChecksumMismatch, OutputsIncomplete
from tasks.handles import IndexOutputs, JobReport, OutputManifest, OutputObject
from tasks.render.manifests import index_prefix, run_prefix
from tasks.spec import BatchSpec, OutputsSpec

log = logging.getLogger("ask_batch.outputs")

LOGS_DIR = "logs/"
CHUNK = 1 << 20
ARTIFACT_MAX_ROWS = 500


@dataclass(frozen=True)
class Listed:
    """One object from the listing."""

    key: str
    size: int
    etag: str | None


# --------------------------------------------------------------------------------------------- bucket


WRITE_CHECK_KEY = ".ask-batch/write-check-"


def ensure_bucket(spec: BatchSpec, oss: Any) -> bool:
    """Make sure the outputs bucket exists and these credentials can write to it, before anything is billed.

    GetBucketInfo decides (https://www.alibabacloud.com/help/en/oss/developer-reference/getbucketinfo):
    ``NoSuchBucket`` -> create it (if allowed); ``AccessDenied`` -> the bucket belongs to another account (bucket
    names are global) or a policy forbids it; anything transient is retried, never taken for "exists". Then a
    tiny object is written and deleted, so a bucket we may read but not write is caught now, not by every pod.

    Returns:
        True when the bucket was created.

    Raises:
        BucketNotUsable: the bucket is someone else's, or these credentials may not write to it.
        ValueError: the bucket is missing and ``outputs.create_bucket`` is off.
        CloudError: any other service error (with its code and request id).
    """
    import alibabacloud_oss_v2 as o

    bucket = spec.outputs.bucket
    created = False
    try:
        call(oss.get_bucket_info, o.GetBucketInfoRequest(bucket=bucket), service="OSS", operation="GetBucketInfo")
    except CloudError as err:
        if err.code == "AccessDenied" or err.status == 403:
            raise BucketNotUsable(
                f"OSS bucket {bucket!r} (outputs.bucket) exists but these credentials may not use it "
                f"({err.code}: {err.message}): bucket names are global, so it probably belongs to another account; "
                f"fix: choose a name of your own for outputs.bucket (e.g. with your account id in it), or grant "
                f"this RAM identity oss:GetBucketInfo, oss:PutObject, oss:GetObject, oss:ListObjects on it") from err
        if err.code != "NoSuchBucket":
            raise
        created = _create_bucket(spec, oss)
    _check_writable(oss, bucket)
    return created


def _create_bucket(spec: BatchSpec, oss: Any) -> bool:
    import alibabacloud_oss_v2 as o

    bucket = spec.outputs.bucket
    if not spec.outputs.create_bucket:
        raise ValueError(f"OSS bucket {bucket!r} (outputs.bucket) does not exist; fix: create it, or turn on "
                         f"outputs.create_bucket")
    try:
        call(oss.put_bucket, o.PutBucketRequest(bucket=bucket), service="OSS", operation="PutBucket")
    except CloudError as err:
        if err.code == "BucketAlreadyExists":  # taken meanwhile, by another account: our pods could not write
            raise BucketNotUsable(f"OSS bucket name {bucket!r} is taken by another account; fix: choose another "
                                  f"outputs.bucket") from err
        raise
    log.info("OSS bucket %s created", bucket)
    return True


def _check_writable(oss: Any, bucket: str) -> None:
    import alibabacloud_oss_v2 as o

    key = WRITE_CHECK_KEY + uuid.uuid4().hex[:12]
    try:
        call(oss.put_object, o.PutObjectRequest(bucket=bucket, key=key, body=b"ask-batch write check"),
             service="OSS", operation="PutObject")
    except CloudError as err:
        if err.status == 403:
            raise BucketNotUsable(f"OSS bucket {bucket!r} (outputs.bucket) is not writable with these credentials "
                                  f"({err.code}: {err.message}); fix: grant oss:PutObject on it, or choose another "
                                  f"bucket") from err
        raise
    call(oss.delete_object, o.DeleteObjectRequest(bucket=bucket, key=key), service="OSS", operation="DeleteObject")


# --------------------------------------------------------------------------------------------- listing


def list_prefix(oss: Any, bucket: str, prefix: str, *, max_keys: int = 1000) -> list[Listed]:
    """Every object under ``prefix`` (ListObjectsV2 paginator; retried as a whole on transient errors)."""
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
    """(index -> its objects, keys that belong to no index). Saved logs are neither."""
    by_prefix = {index_prefix(outputs, prefix, i): i for i in range(completions)}
    ordered = sorted(by_prefix)
    groups: dict[int, list[Listed]] = {i: [] for i in range(completions)}
    others: list[str] = []

    def owner_of(key: str) -> int | None:
        # An index prefix of `key` sorts at or before it: look there first (O(log n) for 100,000 indexes);
        # only odd templates whose prefixes contain one another need the full scan.
        at = bisect.bisect_right(ordered, key) - 1
        if at >= 0 and key.startswith(ordered[at]):
            return by_prefix[ordered[at]]
        return next((i for p, i in by_prefix.items() if key.startswith(p)), None)

    for obj in listed:
        if obj.key.startswith(prefix + LOGS_DIR):
            continue
        owner = owner_of(obj.key)
        if owner is None:
            others.append(obj.key)
        else:
            groups[owner].append(obj)
    return groups, others


def completeness_problem(outputs: OutputsSpec, idx_prefix: str, objects: list[Listed]) -> str | None:
    """Why an index is not complete per ``outputs.completeness`` (None: complete; always None for 'none')."""
    if outputs.completeness == "none":
        return None
    if outputs.completeness == "marker":
        if not any(o.key == idx_prefix + outputs.marker_name for o in objects):
            return f"no marker {outputs.marker_name!r} under {idx_prefix} ({len(objects)} object(s))"
        return None
    if len(objects) < outputs.min_objects:
        return f"{len(objects)} object(s) under {idx_prefix}, expected at least {outputs.min_objects}"
    return None


# --------------------------------------------------------------------------------------------- pod logs


def pod_index_finder(report: JobReport) -> Callable[[str], int | None]:
    """A function pod name -> the index that pod ran, built in one pass over the report.

    From the report (every attempt, follow-up Jobs included: ``JobReport.pod_indexes``), else from the Indexed Job
    pod name rule ``<job>-<index>-<suffix>``; None for a pod that is neither. Each look-up is O(1), so assigning
    N pods costs O(N + records), where asking the report per pod cost O(N x records).
    """
    known = report.pod_indexes()
    by_name = re.compile(rf"{re.escape(report.job.name)}-(\d+)-[a-z0-9]+")

    def index_of(pod: str) -> int | None:
        found = known.get(pod)
        if found is not None:
            return found
        m = by_name.fullmatch(pod)
        return int(m.group(1)) if m else None

    return index_of


def save_pod_logs(oss: Any, bucket: str, prefix: str, log_dir: Path | None) -> dict[str, str]:
    """Upload every ``<pod>.log`` in ``log_dir`` to ``<prefix>logs/<pod>.log``. Returns pod -> key."""
    import alibabacloud_oss_v2 as o

    saved: dict[str, str] = {}
    if not log_dir or not log_dir.is_dir():
        return saved
    for path in sorted(log_dir.glob("*.log")):
        pod = path.name.removesuffix(".log")
        key = f"{prefix}{LOGS_DIR}{pod}.log"
        call(oss.put_object, o.PutObjectRequest(bucket=bucket, key=key, body=path.read_bytes(),
                                                content_type="text/plain"),
             service="OSS", operation="PutObject")
        saved[pod] = key
    if saved:
        log.info("saved %d pod log(s) to oss://%s/%s%s", len(saved), bucket, prefix, LOGS_DIR)
    return saved


# --------------------------------------------------------------------------------------------- downloads


def crc64_of_file(path: Path) -> str:
    """CRC-64/ECMA of a file, as OSS writes it (decimal string)."""
    from alibabacloud_oss_v2.crc import Crc64

    crc = Crc64(0)
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            crc.update(chunk)
    return str(crc.sum64())


def _plain_md5(etag: str | None) -> str | None:
    """The MD5 in an ETag of a simple upload (multipart ETags are not an MD5)."""
    value = (etag or "").strip('"').lower()
    return value if re.fullmatch(r"[0-9a-f]{32}", value) else None


def local_path_for(root: Path, outputs: OutputsSpec, idx_prefix: str, index: int, key: str) -> Path:
    """``<root>/<index dir>/<key below the index prefix>``, refusing keys that would escape ``root``."""
    rel = outputs.index_template.format(index=index) + key[len(idx_prefix):]
    parts = [p for p in rel.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise ChecksumMismatch(f"object key {key!r} cannot be saved safely under {root}")
    path = root.joinpath(*parts)
    if not path.resolve().is_relative_to(root.resolve()):
        raise ChecksumMismatch(f"object key {key!r} would be saved outside {root}")
    return path


def _already_there(oss: Any, bucket: str, obj: Listed, dest: Path) -> str | None:
    """The CRC when ``dest`` already holds exactly this object (so it need not be fetched again)."""
    import alibabacloud_oss_v2 as o

    if not dest.is_file() or dest.stat().st_size != obj.size:
        return None
    head = call(oss.head_object, o.HeadObjectRequest(bucket=bucket, key=obj.key), service="OSS",
                operation="HeadObject")
    local = crc64_of_file(dest)
    if head.hash_crc64 and head.hash_crc64 == local:
        return local
    log.warning("local copy %s does not match oss://%s/%s: downloading it again", dest, bucket, obj.key)
    return None


def _fetch_verified(oss: Any, bucket: str, obj: Listed, dest: Path) -> str:
    """GET into a temp file beside ``dest``, verify size + CRC64 (or MD5), rename. Returns the CRC."""
    import alibabacloud_oss_v2 as o
    from alibabacloud_oss_v2.crc import Crc64

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        result = oss.get_object(o.GetObjectRequest(bucket=bucket, key=obj.key))
        # The CRC is always computed (it is what we report); the MD5 only when the server sent no CRC to check.
        md5 = None if result.hash_crc64 else hashlib.md5(usedforsecurity=False)
        crc, size = Crc64(0), 0
        with tmp.open("wb") as fh:
            for chunk in result.body.iter_bytes(block_size=CHUNK):
                fh.write(chunk)
                crc.update(chunk)
                if md5 is not None:
                    md5.update(chunk)
                size += len(chunk)
        result.body.close()
        got = str(crc.sum64())
        if size != obj.size:
            raise ChecksumMismatch(f"oss://{bucket}/{obj.key}: got {size} bytes, listed {obj.size}")
        if result.hash_crc64 and result.hash_crc64 != got:
            raise ChecksumMismatch(f"oss://{bucket}/{obj.key}: CRC64 {got} does not match the server's "
                                   f"{result.hash_crc64}")
        expected_md5 = _plain_md5(result.etag or obj.etag)
        if md5 is not None and expected_md5 and expected_md5 != md5.hexdigest():
            raise ChecksumMismatch(f"oss://{bucket}/{obj.key}: MD5 does not match the ETag")
        os.replace(tmp, dest)
        return got
    finally:
        tmp.unlink(missing_ok=True)


def download_object(oss: Any, bucket: str, obj: Listed, dest: Path) -> OutputObject:
    """One object, verified. GET, streaming and verification are one call of the retry policy, so a connection
    cut mid-body or damaged bytes are retried like a 503. Raises CloudError when that gives up."""
    if obj.key.endswith("/"):
        return _folder(bucket, obj, dest)
    crc = _already_there(oss, bucket, obj, dest)
    if crc is None:
        crc = call(_fetch_verified, oss, bucket, obj, dest, service="OSS", operation="GetObject")
    return OutputObject(key=obj.key, size=obj.size, etag=obj.etag, crc64=crc, local_path=str(dest), verified=True)


def _folder(bucket: str, obj: Listed, dest: Path) -> OutputObject:
    """A "folder" object (key ending in ``/``, as the OSS console and many tools write them): a directory.

    OSS has no directories; such a 0-byte object only marks one
    (https://www.alibabacloud.com/help/en/oss/user-guide/manage-directories). It becomes a local directory; one
    with content cannot be saved under a directory's name and is reported.
    """
    if obj.size:
        raise ChecksumMismatch(f"oss://{bucket}/{obj.key} ends with '/' but holds {obj.size} bytes: it cannot be "
                               f"saved as a file under a directory's name; fix: give it a key without the '/'")
    dest.mkdir(parents=True, exist_ok=True)
    return OutputObject(key=obj.key, size=0, etag=obj.etag, crc64="0", local_path=str(dest), verified=True)


def presign(oss: Any, bucket: str, key: str, *, seconds: int) -> str:
    import alibabacloud_oss_v2 as o

    return str(oss.presign(o.GetObjectRequest(bucket=bucket, key=key), expires=timedelta(seconds=seconds)).url)


# --------------------------------------------------------------------------------------------- the stage


def _download_indexes(oss: Any, spec: BatchSpec, root: Path, entries: list[IndexOutputs],
                      groups: dict[int, list[Listed]]) -> None:
    """Download the objects of every complete index in parallel; an unverifiable object fails its index."""
    outputs = spec.outputs
    jobs = [(entry, pos, groups[entry.index][pos]) for entry in entries if entry.complete
            for pos in range(len(entry.objects))]

    def one(item: tuple[IndexOutputs, int, Listed]) -> tuple[IndexOutputs, int, OutputObject | Exception]:
        entry, pos, obj = item
        try:
            dest = local_path_for(root, outputs, entry.prefix, entry.index, obj.key)
            return entry, pos, download_object(oss, outputs.bucket, obj, dest)
        except Exception as exc:  # noqa: BLE001 - recorded on the index; the stage then raises OutputsIncomplete
            return entry, pos, exc

    with ThreadPoolExecutor(max_workers=outputs.max_parallel_downloads, thread_name_prefix="download") as pool:
        for entry, pos, result in pool.map(one, jobs):
            if isinstance(result, Exception):
                entry.complete = False
                entry.problem = f"download of {entry.objects[pos].key} failed: {result}"
            else:
                result.link = entry.objects[pos].link
                entry.objects[pos] = result


def _copy_logs(log_dir: Path | None, root: Path) -> None:
    if log_dir and log_dir.is_dir():
        (root / "logs").mkdir(parents=True, exist_ok=True)
        for path in log_dir.glob("*.log"):
            target = root / "logs" / path.name
            if not (target.exists() and target.samefile(path)):  # logs may already stream into place
                shutil.copyfile(path, target)


def collect_outputs(spec: BatchSpec, *, run_key: str, flow_run_name: str, report: JobReport, oss: Any,
                    log_dir: Path | None, max_keys: int = 1000) -> OutputManifest:
    """List, check, save logs, download and verify the run's outputs.

    Args:
        spec: validated parameters (``spec.outputs``).
        run_key: the run key (part of the prefix template).
        flow_run_name: the flow run's name (prefix template, and the local directory name).
        report: from ``wait_for_job``: completions and the pods of each index.
        oss: an ``alibabacloud_oss_v2.Client``.
        log_dir: where ``wait_for_job`` wrote ``<pod>.log`` files (None: no logs to save).
        max_keys: listing page size (tests use a small one to exercise paging).

    Returns:
        The manifest; ``complete`` is True.

    Raises:
        OutputsIncomplete: some index lacks its outputs or could not be verified (the manifest is attached).

    Example:
        >>> m = collect_outputs(spec, run_key="demo", flow_run_name="demo-1", report=rep, oss=oss, log_dir=None)
        >>> m.download_dir
        'outputs/demo-1'
    """
    outputs = spec.outputs
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
    entries: list[IndexOutputs] = []
    for index in range(completions):
        idx_prefix = index_prefix(outputs, prefix, index)
        objects = groups[index]
        problem = completeness_problem(outputs, idx_prefix, objects)
        entries.append(IndexOutputs(
            index=index, prefix=idx_prefix, complete=problem is None, problem=problem,
            objects=[OutputObject(key=o.key, size=o.size, etag=o.etag,
                                  link=presign(oss, outputs.bucket, o.key, seconds=outputs.presign_expiry_seconds)
                                  if outputs.presigned_links else None) for o in objects],
            log_keys=sorted(logs_of.get(index, []))))
    root: Path | None = None
    if outputs.download:
        root = Path(outputs.download_dir).expanduser() / flow_run_name
        _download_indexes(oss, spec, root, entries, groups)
        _copy_logs(log_dir, root)
    missing = [e.index for e in entries if not e.complete]
    manifest = OutputManifest(bucket=outputs.bucket, prefix=prefix, download_dir=str(root) if root else None,
                              complete=not missing, missing=missing, indexes=entries, log_keys=saved_logs,
                              other_keys=others)
    if missing:
        raise OutputsIncomplete(manifest, missing)
    log.info("outputs complete: %d indexes, %d objects, %d bytes%s", completions, len(listed) - len(saved_logs),
             manifest.total_bytes, f", saved under {root}" if root else "")
    return manifest


# --------------------------------------------------------------------------------------------- Prefect task


def artifact_key(kind: str, run_key: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) for ``kind`` and the run."""
    text = re.sub(r"[^a-z0-9-]+", "-", f"{kind}-{run_key}".lower())
    return re.sub(r"-{2,}", "-", text).strip("-")


def outputs_table(manifest: OutputManifest) -> list[dict[str, Any]]:
    """Rows (index, key, size, link/path, complete) for the table artifact; capped for huge runs."""
    rows = [{"index": e.index, "key": o.key, "size": o.size, "link": o.link or o.local_path or "",
             "complete": e.complete}
            for e in manifest.indexes for o in e.objects]
    rows += [{"index": e.index, "key": f"(nothing: {e.problem})", "size": 0, "link": "", "complete": False}
             for e in manifest.indexes if not e.objects]
    return rows[:ARTIFACT_MAX_ROWS]


def _publish(manifest: OutputManifest, run_key: str) -> None:
    from prefect.artifacts import create_table_artifact

    total = sum(len(e.objects) for e in manifest.indexes)
    note = f" (first {ARTIFACT_MAX_ROWS} of {total})" if total > ARTIFACT_MAX_ROWS else ""
    state = "complete" if manifest.complete else f"INCOMPLETE, missing indexes {manifest.missing}"
    create_table_artifact(outputs_table(manifest), key=artifact_key("outputs", run_key),
                          description=f"Outputs in oss://{manifest.bucket}/{manifest.prefix}: {state}{note}")


@task(name="ensure_bucket", cache_policy=NO_CACHE, retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=transient_only)
def ensure_bucket_task(spec: BatchSpec) -> bool:
    """Prefect task: ``ensure_bucket`` with an OSS client built from ``spec.target``."""
    with stage_context(spec) as ctx, stage_logs(ctx.scrubber):
        return ensure_bucket(spec, ctx.oss())


@task(name="save_pod_logs", cache_policy=NO_CACHE)
def save_pod_logs_task(spec: BatchSpec, *, run_key: str, flow_run_name: str,
                       log_dir: Path | None) -> dict[str, str]:
    """Prefect task: upload the pod logs of a run that did not reach ``collect_outputs`` (it failed, or was
    cancelled) to ``<run prefix>logs/<pod>.log``, as a successful run's are. Returns pod -> key.

    The flow calls it best effort, after a failure: its own error must never hide the run's.
    """
    prefix = run_prefix(spec.outputs, run_key=run_key, flow_run_name=flow_run_name)
    with stage_context(spec) as ctx, stage_logs(ctx.scrubber):
        return save_pod_logs(ctx.oss(), spec.outputs.bucket, prefix, log_dir)


def complete_indexes(spec: BatchSpec, *, run_key: str, flow_run_name: str, oss: Any,
                     max_keys: int = 1000) -> list[int]:
    """Indexes whose outputs are already in OSS and complete per ``outputs.completeness`` (sorted).

    What a re-run of the same run key (``rerun: missing``) need not run again. The same listing and rule as
    ``collect_outputs``; nothing is downloaded (``collect_outputs`` verifies every object at the end). With
    ``completeness: none`` nothing can be told apart, so none is reported complete.
    """
    outputs = spec.outputs
    if outputs.completeness == "none":
        return []  # nothing in OSS tells a finished index from a missing one: the whole Job runs (or is re-attached)
    prefix = run_prefix(outputs, run_key=run_key, flow_run_name=flow_run_name)
    completions = spec.job.completions
    groups, _ = group_by_index(list_prefix(oss, outputs.bucket, prefix, max_keys=max_keys), outputs, prefix,
                               completions)
    return [i for i in range(completions)
            if completeness_problem(outputs, index_prefix(outputs, prefix, i), groups[i]) is None]


@task(name="complete_indexes", cache_policy=NO_CACHE, retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=transient_only)
def complete_indexes_task(spec: BatchSpec, *, run_key: str, flow_run_name: str) -> list[int]:
    """Prefect task: ``complete_indexes`` (logs how many an earlier attempt already finished)."""
    with stage_context(spec) as ctx, stage_logs(ctx.scrubber):
        done = complete_indexes(spec, run_key=run_key, flow_run_name=flow_run_name, oss=ctx.oss())
        if done:
            log.info("%d of %d indexes already have complete outputs from an earlier attempt of run key %s",
                     len(done), spec.job.completions, run_key)
        return done


@task(name="collect_outputs", cache_policy=NO_CACHE, retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=transient_only)
def collect_outputs_task(spec: BatchSpec, *, run_key: str, flow_run_name: str, report: JobReport,
                         log_dir: Path | None = None) -> OutputManifest:
    """Prefect task: ``collect_outputs``, then a table artifact ``outputs-<run key>`` (also when incomplete)."""
    with stage_context(spec) as ctx, stage_logs(ctx.scrubber):
        try:
            manifest = collect_outputs(spec, run_key=run_key, flow_run_name=flow_run_name, report=report,
                                       oss=ctx.oss(), log_dir=log_dir)
        except OutputsIncomplete as exc:
            _publish(exc.manifest, run_key)
            raise
    _publish(manifest, run_key)
    return manifest
