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
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar, overload

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.cloud.context import RETRY_DELAYS, stage_context, stage_logs, transient_only
from tasks.cloud.retry import CloudError, call
from tasks.errors import BucketNotUsable, ChecksumMismatch, OutputsIncomplete
from tasks.handles import JobReport, OutputManifest, OutputObject, SavedLogs
from tasks.render.manifests import index_prefix, run_prefix
from tasks.spec import BatchSpec, OutputsSpec

log = logging.getLogger("ask_batch.outputs")

LOGS_DIR = "logs/"
CHUNK = 1 << 20
ARTIFACT_MAX_ROWS = 500
MANIFEST_FILE = "manifest.jsonl"  # in <download_dir>/<flow run>/: every object and index in full
PROBLEMS_KEPT = 1000  # missing indexes whose problem the in-memory manifest keeps (the file has all)
OTHERS_KEPT = 100  # keys of no index the in-memory manifest keeps (it counts all)

T = TypeVar("T")
R = TypeVar("R")


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


def iter_prefix(oss: Any, bucket: str, prefix: str, *, max_keys: int = 1000) -> Iterator[Listed]:
    """Every object under ``prefix``, in key order, one ListObjectsV2 page in memory at a time.

    Each page is one call of the retry policy (a transient error repeats that page, with its continuation
    token), so a listing of 100,000 keys never holds more than ``max_keys`` of them.
    """
    import alibabacloud_oss_v2 as o

    token: str | None = None
    while True:
        page = call(oss.list_objects_v2, o.ListObjectsV2Request(bucket=bucket, prefix=prefix, max_keys=max_keys,
                                                                continuation_token=token),
                    service="OSS", operation="ListObjectsV2")
        for obj in page.contents or []:
            yield Listed(obj.key, int(obj.size or 0), obj.etag)
        token = page.next_continuation_token
        if not page.is_truncated or not token:
            return


def list_prefix(oss: Any, bucket: str, prefix: str, *, max_keys: int = 1000) -> list[Listed]:
    """Every object under ``prefix``, as a list (small prefixes only; the stage streams ``iter_prefix``)."""
    return list(iter_prefix(oss, bucket, prefix, max_keys=max_keys))


class IndexTally:
    """Per-index counts of a streamed listing, in compact columns: about 20 bytes per index, whatever the number
    of objects (object and byte counts, a marker flag; an owner array only when the template needs one).

    ``add`` each listed object; ``problem(i)`` then says whether index ``i`` is complete per
    ``outputs.completeness``. Objects under ``<prefix>logs/`` (saved pod logs) belong to nothing and are not
    counted; others that belong to no index are counted in ``other_count`` (the first ``OTHERS_KEPT`` kept).

    The index prefixes are searched in sorted order. When index order is already prefix order (the default
    ``index-{index:05d}/`` up to 99,999) they are formatted on demand, never held (~9 MB at 100,000 indexes);
    else they are sorted once and held with the index each belongs to.
    """

    def __init__(self, outputs: OutputsSpec, prefix: str, completions: int) -> None:
        self.outputs, self.prefix, self.completions = outputs, prefix, completions
        self._owner: array[int] | None = None
        self._ordered: Sequence[str] = _PrefixesInOrder(outputs, prefix, completions)
        if not _ascending(self._ordered):
            prefixes = [index_prefix(outputs, prefix, i) for i in range(completions)]
            order = sorted(range(completions), key=prefixes.__getitem__)
            self._ordered = [prefixes[i] for i in order]
            self._owner = array("l", order)
            del prefixes, order
        self.counts = array("l", [0]) * completions
        self.sizes = array("q", [0]) * completions
        self.markers = bytearray(completions)
        self.other_keys: list[str] = []
        self.other_count = 0
        self._logs = prefix + LOGS_DIR
        self._last = -1

    def owner_of(self, key: str) -> int | None:
        """The index whose prefix ``key`` starts with (the longest such prefix), or None; O(log n) per step.

        The largest prefix sorting at or before ``key`` is tried first; when it is not a prefix of ``key``, any
        shorter one must be a prefix of their common part, so the search narrows to that (templates whose
        prefixes contain one another, like ``{index}`` without a slash, take a few steps).
        """
        ordered, hi = self._ordered, len(self._ordered)
        probe = key
        at = self._near(key)
        while True:
            if at is None:
                at = bisect.bisect_right(ordered, probe, 0, hi) - 1
            if at < 0:
                return None
            candidate = ordered[at]
            if key.startswith(candidate):
                self._last = at
                return at if self._owner is None else self._owner[at]
            probe = os.path.commonprefix([candidate, probe])
            hi, at = at, None

    def _near(self, key: str) -> int | None:
        """``bisect_right(ordered, key) - 1`` when it is the position of the last match or the next one (OSS
        lists keys in order, so it nearly always is: two comparisons instead of a search), else None."""
        ordered, n = self._ordered, len(self._ordered)
        for at in (self._last, self._last + 1):
            if 0 <= at < n and ordered[at] <= key and (at + 1 == n or key < ordered[at + 1]):
                return at
        return None

    def add(self, obj: Listed) -> int | None:
        """Count one listed object; returns its index (None: a saved log, or an object of no index)."""
        if obj.key.startswith(self._logs):
            return None
        owner = self.owner_of(obj.key)
        if owner is None:
            self.other_count += 1
            if len(self.other_keys) < OTHERS_KEPT:
                self.other_keys.append(obj.key)
            return None
        self.counts[owner] += 1
        self.sizes[owner] += obj.size
        if obj.key == index_prefix(self.outputs, self.prefix, owner) + self.outputs.marker_name:
            self.markers[owner] = 1
        return owner

    def problem(self, index: int) -> str | None:
        """Why ``index`` is not complete per ``outputs.completeness`` (None: complete)."""
        return rule_problem(self.outputs, index_prefix(self.outputs, self.prefix, index), self.counts[index],
                            bool(self.markers[index]))


class _PrefixesInOrder(Sequence[str]):
    """Index ``i``'s prefix at position ``i``, formatted when asked (a read-only sequence for ``bisect``)."""

    def __init__(self, outputs: OutputsSpec, prefix: str, completions: int) -> None:
        self.completions = completions
        # The tally asks for the same few neighbours object after object: the last 16 are kept.
        self._format = functools.lru_cache(maxsize=16)(lambda i: index_prefix(outputs, prefix, i))

    def __len__(self) -> int:
        return self.completions

    @overload
    def __getitem__(self, at: int) -> str: ...
    @overload
    def __getitem__(self, at: slice) -> Sequence[str]: ...
    def __getitem__(self, at: int | slice) -> str | Sequence[str]:
        if isinstance(at, slice):
            return [self[i] for i in range(*at.indices(self.completions))]
        if not -self.completions <= at < self.completions:
            raise IndexError(at)
        return self._format(at % self.completions)


def _ascending(items: Iterable[str]) -> bool:
    """True when every item sorts strictly after the one before it (one pass, nothing held)."""
    previous: str | None = None
    for item in items:
        if previous is not None and not previous < item:
            return False
        previous = item
    return True


def group_by_index(listed: Iterable[Listed], outputs: OutputsSpec, prefix: str,
                   completions: int) -> tuple[dict[int, list[Listed]], list[str]]:
    """(index -> its objects, keys that belong to no index), for a small listing. Saved logs are neither."""
    tally = IndexTally(outputs, prefix, completions)
    groups: dict[int, list[Listed]] = {i: [] for i in range(completions)}
    others: list[str] = []
    for obj in listed:
        if obj.key.startswith(prefix + LOGS_DIR):
            continue
        owner = tally.owner_of(obj.key)
        (others.append(obj.key) if owner is None else groups[owner].append(obj))
    return groups, others


def rule_problem(outputs: OutputsSpec, idx_prefix: str, count: int, has_marker: bool) -> str | None:
    """Why an index with ``count`` objects (and the marker or not) is not complete per ``outputs.completeness``
    (None: complete; always None for 'none')."""
    if outputs.completeness == "none":
        return None
    if outputs.completeness == "marker":
        return None if has_marker else f"no marker {outputs.marker_name!r} under {idx_prefix} ({count} object(s))"
    if count < outputs.min_objects:
        return f"{count} object(s) under {idx_prefix}, expected at least {outputs.min_objects}"
    return None


def completeness_problem(outputs: OutputsSpec, idx_prefix: str, objects: list[Listed]) -> str | None:
    """``rule_problem`` for a list of one index's objects."""
    return rule_problem(outputs, idx_prefix, len(objects),
                        any(o.key == idx_prefix + outputs.marker_name for o in objects))


# --------------------------------------------------------------------------------------------- pod logs


def pod_index_finder(report: JobReport) -> Callable[[str], int | None]:
    """A function pod name -> the index that pod ran, built in one pass over the report.

    The Indexed Job pod name rule ``<job>-<index>-<suffix>`` answers for most pods; the report
    (``JobReport.pod_index_pairs``: every attempt, follow-up Jobs included) answers for the rest, and only those
    pods are kept in a dict (at 100,000 pods a dict of every name cost ~5 MB). None for a pod that is neither.
    Each look-up is O(1), so assigning N pods costs O(N + records), where asking the report per pod cost
    O(N x records).
    """
    by_name = re.compile(rf"{re.escape(report.job.name)}-(\d+)-[a-z0-9]+")

    def parsed(pod: str) -> int | None:
        m = by_name.fullmatch(pod)
        return int(m.group(1)) if m else None

    known = {pod: index for pod, index in report.pod_index_pairs() if parsed(pod) != index}

    def index_of(pod: str) -> int | None:
        found = known.get(pod)
        return found if found is not None else parsed(pod)

    return index_of


def save_pod_logs(oss: Any, bucket: str, prefix: str, log_dir: Path | None, *,
                  index_of: Callable[[str], int | None] | None = None, parallel: int = 8) -> SavedLogs:
    """Upload every ``<pod>.log`` in ``log_dir`` to ``<prefix>logs/<pod>.log``, ``parallel`` at a time.

    Args:
        index_of: pod name -> its index (``pod_index_finder``); when given, the result is ordered by index (pods
            of no index first), then name; else by name.

    Returns:
        pod -> key (``SavedLogs``: ~40 bytes a pod). Hidden files (``.name.log``) are not logs.

    Raises:
        CloudError: an upload failed after the retry policy gave up.
    """
    import alibabacloud_oss_v2 as o

    logs_prefix = f"{prefix}{LOGS_DIR}"
    if not log_dir or not log_dir.is_dir():
        return SavedLogs(logs_prefix)
    with os.scandir(log_dir) as it:
        names = [e.name[:-4] for e in it if e.name.endswith(".log") and not e.name.startswith(".") and e.is_file()]
    names.sort()
    if index_of is not None:
        # Stable: by index, then name. An int key per pod, not a (index, name) tuple (~6 MB less at 100,000).
        names.sort(key=lambda pod: -1 if (i := index_of(pod)) is None else i)

    def upload(pod: str) -> None:
        call(oss.put_object, o.PutObjectRequest(bucket=bucket, key=f"{logs_prefix}{pod}.log",
                                                body=(log_dir / f"{pod}.log").read_bytes(), content_type="text/plain"),
             service="OSS", operation="PutObject")

    for _ in _bounded_map(upload, names, parallel, "log-upload"):
        pass
    if names:
        log.info("saved %d pod log(s) to oss://%s/%s", len(names), bucket, logs_prefix)
    return SavedLogs(logs_prefix, names)


def _bounded_map(fn: Callable[[T], R], items: Iterable[T], workers: int, name: str) -> Iterator[R]:
    """``fn`` over ``items`` in ``workers`` threads, results in order, at most ``4 x workers`` items in flight
    (``Executor.map`` would take the whole iterable at once). An exception of ``fn`` is raised here."""
    window: deque[Future[R]] = deque()
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=name) as pool:
        for item in items:
            window.append(pool.submit(fn, item))
            if len(window) >= 4 * max(1, workers):
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


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


def _copy_logs(log_dir: Path | None, root: Path) -> None:
    if log_dir and log_dir.is_dir():
        (root / "logs").mkdir(parents=True, exist_ok=True)
        for path in log_dir.glob("*.log"):
            target = root / "logs" / path.name
            if not (target.exists() and target.samefile(path)):  # logs may already stream into place
                shutil.copyfile(path, target)


def collect_outputs(spec: BatchSpec, *, run_key: str, flow_run_name: str, report: JobReport, oss: Any,
                    log_dir: Path | None, max_keys: int = 1000) -> OutputManifest:
    """List, check, save logs, download and verify the run's outputs; write the manifest file.

    Memory is O(indexes) at about 30-40 bytes each, never O(objects): the listing streams page by page into
    per-index counts (``IndexTally``) and a spool file; the downloads stream from that spool, a bounded number in
    flight; every object and index in full detail goes to ``<download_dir>/<flow run>/manifest.jsonl`` (written
    also when ``outputs.download`` is off), one JSON line each:

    - ``{"kind": "object", "index", "key", "size", "etag", "crc64", "local_path", "verified", "link", "error"}``
      for every object under an index prefix, in listing order (``verified``: downloaded and checked; ``error``:
      why its download failed);
    - then ``{"kind": "index", "index", "prefix", "complete", "problem", "objects", "bytes", "log_keys"}`` for
      every index 0..completions-1, in order.

    Args:
        spec: validated parameters (``spec.outputs``).
        run_key: the run key (part of the prefix template).
        flow_run_name: the flow run's name (prefix template, and the local directory name).
        report: from ``wait_for_job``: completions (``job``) and which pod ran which index (``pod_index_pairs``).
        oss: an ``alibabacloud_oss_v2.Client``.
        log_dir: where ``wait_for_job`` wrote ``<pod>.log`` files (None: no logs to save).
        max_keys: listing page size (tests use a small one to exercise paging).

    Returns:
        The manifest; ``complete`` is True.

    Raises:
        OutputsIncomplete: some index lacks its outputs or could not be verified (the manifest is attached; its
            file has every index's problem).
        CloudError: listing or a log upload failed after the retry policy gave up.
        OSError: the manifest file could not be written.

    Example:
        >>> m = collect_outputs(spec, run_key="demo", flow_run_name="demo-1", report=rep, oss=oss, log_dir=None)
        >>> m.download_dir, m.manifest_file
        ('outputs/demo-1', 'outputs/demo-1/manifest.jsonl')
    """
    outputs = spec.outputs
    prefix = run_prefix(outputs, run_key=run_key, flow_run_name=flow_run_name)
    completions = report.job.completions
    run_dir = Path(outputs.download_dir).expanduser() / flow_run_name
    root = run_dir if outputs.download else None
    index_of = pod_index_finder(report)
    saved = save_pod_logs(oss, outputs.bucket, prefix, log_dir, index_of=index_of,
                          parallel=outputs.max_parallel_downloads)
    # Saved logs by index, for the index lines: (index, pod) in the order ``saved`` holds them (by index).
    log_owner = array("l", (-1 if (i := index_of(pod)) is None else i for pod in saved))
    tally = IndexTally(outputs, prefix, completions)
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = run_dir / MANIFEST_FILE
    # 0: complete so far; 1: fails the completeness rule; 2: a download failed.
    state = bytearray(completions)
    problems: dict[int, str] = {}
    with tempfile.TemporaryFile("w+", encoding="utf-8", dir=run_dir, prefix=".listing-") as spool:
        for obj in iter_prefix(oss, outputs.bucket, prefix, max_keys=max_keys):
            owner = tally.add(obj)
            if owner is not None:
                spool.write(json.dumps([owner, obj.key, obj.size, obj.etag]) + "\n")
        for index in range(completions):
            if (problem := tally.problem(index)) is not None:
                state[index] = 1
                if len(problems) < PROBLEMS_KEPT:
                    problems[index] = problem
        spool.seek(0)
        tmp = manifest_path.with_name(f".{MANIFEST_FILE}.{uuid.uuid4().hex[:8]}.part")
        try:
            with tmp.open("w", encoding="utf-8") as out:
                listed = (json.loads(line) for line in spool)
                for owner, record in _object_records(oss, spec, prefix, root, listed, state):
                    if record.error is not None and state[owner] != 2:
                        state[owner] = 2
                        if len(problems) < PROBLEMS_KEPT:
                            problems[owner] = f"download of {record.key} failed: {record.error}"
                    out.write(json.dumps({"kind": "object", "index": owner, **record.model_dump()}) + "\n")
                _write_index_lines(out, tally, state, problems, saved, log_owner)
            os.replace(tmp, manifest_path)
        finally:
            tmp.unlink(missing_ok=True)
    if root is not None:
        _copy_logs(log_dir, root)
    missing = [i for i in range(completions) if state[i]]
    manifest = OutputManifest(
        bucket=outputs.bucket, prefix=prefix, download_dir=str(root) if root else None, complete=not missing,
        missing=missing, completions=completions, object_counts=list(tally.counts),
        total_objects=sum(tally.counts), total_bytes=sum(tally.sizes),
        problems={i: problems[i] for i in missing if i in problems}, manifest_file=str(manifest_path),
        saved_logs=saved.blob if len(saved) else "", other_keys=tally.other_keys, other_count=tally.other_count)
    if missing:
        raise OutputsIncomplete(manifest, missing)
    log.info("outputs complete: %d indexes, %d objects, %d bytes%s; manifest %s", completions,
             manifest.total_objects, manifest.total_bytes, f", saved under {root}" if root else "", manifest_path)
    return manifest


def _object_records(oss: Any, spec: BatchSpec, prefix: str, root: Path | None, listed: Iterable[list[Any]],
                    state: bytearray) -> Iterator[tuple[int, OutputObject]]:
    """(index, record) for every spooled object ``[index, key, size, etag]``, in order: downloaded and verified
    (``root`` given, the index passes the completeness rule) in ``max_parallel_downloads`` threads with a
    bounded window, else as listed; a presigned link when enabled. A failed download gives a record with
    ``error`` (never raised: the caller marks the index incomplete)."""
    outputs = spec.outputs

    def one(item: list[Any]) -> tuple[int, OutputObject]:
        index, key, size, etag = item
        obj = Listed(key, size, etag)
        link = (presign(oss, outputs.bucket, key, seconds=outputs.presign_expiry_seconds)
                if outputs.presigned_links else None)
        if root is None or state[index] == 1:
            return index, OutputObject(key=key, size=size, etag=etag, link=link)
        try:
            dest = local_path_for(root, outputs, index_prefix(outputs, prefix, index), index, key)
            record = download_object(oss, outputs.bucket, obj, dest)
        except Exception as exc:  # noqa: BLE001 - recorded on the index; the stage then raises OutputsIncomplete
            return index, OutputObject(key=key, size=size, etag=etag, link=link, error=str(exc) or type(exc).__name__)
        record.link = link
        return index, record

    return _bounded_map(one, listed, outputs.max_parallel_downloads if root is not None else 1, "download")


def _write_index_lines(out: Any, tally: IndexTally, state: bytearray, problems: dict[int, str], saved: SavedLogs,
                       log_owner: "array[int]") -> None:
    """One ``kind: index`` line per index, in order, with its saved log keys (``saved`` is ordered by index)."""
    pods = iter(saved)
    pending: tuple[int, str] | None = None
    at = 0
    for index in range(tally.completions):
        keys: list[str] = []
        while True:
            if pending is None and at < len(log_owner):
                pending = (log_owner[at], next(pods))
                at += 1
            if pending is None or pending[0] > index:
                break
            if pending[0] == index:
                keys.append(f"{saved.logs_prefix}{pending[1]}.log")
            pending = None
        problem = None
        if state[index] == 1:
            problem = problems.get(index) or tally.problem(index)
        elif state[index] == 2:
            problem = problems.get(index) or f"a download failed (see its object line: error) in {MANIFEST_FILE}"
        out.write(json.dumps({"kind": "index", "index": index,
                              "prefix": index_prefix(tally.outputs, tally.prefix, index),
                              "complete": not state[index], "problem": problem, "objects": tally.counts[index],
                              "bytes": tally.sizes[index], "log_keys": keys}) + "\n")


# --------------------------------------------------------------------------------------------- Prefect task


def artifact_key(kind: str, run_key: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) for ``kind`` and the run."""
    text = re.sub(r"[^a-z0-9-]+", "-", f"{kind}-{run_key}".lower())
    return re.sub(r"-{2,}", "-", text).strip("-")


def outputs_table(manifest: OutputManifest) -> list[dict[str, Any]]:
    """Rows (index, key, size, link/path, complete) for the table artifact, at most ``ARTIFACT_MAX_ROWS``.

    Incomplete indexes come first (their objects, or one "(nothing: why)" row when they have none), then the
    objects of complete ones, in listing order: read from the manifest file, two passes that stop at the cap.
    """
    rows: list[dict[str, Any]] = []
    for want_complete in (False, True):
        for rec in manifest.records():
            if len(rows) >= ARTIFACT_MAX_ROWS:
                return rows
            complete = manifest.is_complete(rec["index"])
            if complete != want_complete:
                continue
            if rec["kind"] == "object":
                rows.append({"index": rec["index"], "key": rec["key"], "size": rec["size"],
                             "link": rec["link"] or rec["local_path"] or "", "complete": complete})
            elif not rec["objects"]:
                rows.append({"index": rec["index"], "key": f"(nothing: {rec['problem']})", "size": 0, "link": "",
                             "complete": complete})
    if not manifest.manifest_file:  # a manifest built by hand: its problems only
        rows += [{"index": i, "key": f"(nothing: {why})", "size": 0, "link": "", "complete": False}
                 for i, why in manifest.problems.items()]
    return rows[:ARTIFACT_MAX_ROWS]


def indexes_text(indexes: list[int], shown: int = 20) -> str:
    """``[1, 3, 7]``, or ``[1, 3, ... (20 shown)] and 99,980 more`` for a long list."""
    if len(indexes) <= shown:
        return str(indexes)
    return f"{indexes[:shown]} and {len(indexes) - shown:,} more"


def _publish(manifest: OutputManifest, run_key: str) -> None:
    from prefect.artifacts import create_table_artifact

    rows = outputs_table(manifest)
    total = manifest.total_objects + sum(1 for i in manifest.missing if not manifest.object_counts[i])
    note = f" (first {len(rows)} of {total} rows; all in {manifest.manifest_file})" if total > len(rows) else ""
    state = ("complete" if manifest.complete
             else f"INCOMPLETE, {len(manifest.missing)} missing indexes {indexes_text(manifest.missing)}")
    create_table_artifact(rows, key=artifact_key("outputs", run_key),
                          description=f"Outputs in oss://{manifest.bucket}/{manifest.prefix}: {state}{note}")


@task(name="ensure_bucket", cache_policy=NO_CACHE, retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=transient_only)
def ensure_bucket_task(spec: BatchSpec) -> bool:
    """Prefect task: ``ensure_bucket`` with an OSS client built from ``spec.target``."""
    with stage_context(spec) as ctx, stage_logs(ctx.scrubber):
        return ensure_bucket(spec, ctx.oss())


@task(name="save_pod_logs", cache_policy=NO_CACHE)
def save_pod_logs_task(spec: BatchSpec, *, run_key: str, flow_run_name: str,
                       log_dir: Path | None) -> SavedLogs:
    """Prefect task: upload the pod logs of a run that did not reach ``collect_outputs`` (it failed, or was
    cancelled) to ``<run prefix>logs/<pod>.log``, as a successful run's are. Returns pod -> key.

    The flow calls it best effort, after a failure: its own error must never hide the run's.
    """
    prefix = run_prefix(spec.outputs, run_key=run_key, flow_run_name=flow_run_name)
    with stage_context(spec) as ctx, stage_logs(ctx.scrubber):
        return save_pod_logs(ctx.oss(), spec.outputs.bucket, prefix, log_dir,
                             parallel=spec.outputs.max_parallel_downloads)


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
    tally = IndexTally(outputs, prefix, completions)
    for obj in iter_prefix(oss, outputs.bucket, prefix, max_keys=max_keys):
        tally.add(obj)
    return [i for i in range(completions) if tally.problem(i) is None]


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
