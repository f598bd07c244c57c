"""The small, serialisable values the stages hand forward (design.md "What flows through the house").

Handles hold identities and names, never secrets or kubeconfig text: they are task results, may be persisted by
Prefect and shown in the UI. Whatever a later stage needs that is secret (a kubeconfig, an AccessKey) it fetches
again from its source.
"""

import bisect
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field, PrivateAttr


class ClusterHandle(BaseModel):
    mode: Literal["ask", "acs", "existing"] = Field(description="How the cluster was found.")
    kind: Literal["ask", "acs"] = Field("ask", description="What the cluster is: ASK (pods are ECI instances, "
                                        "ECI annotations) or ACS (ACS compute labels); decides the pod rendering.")
    region: str = Field(description="Region of the cluster.")
    namespace: str = Field(description="Namespace the run uses.")
    cluster_id: str | None = Field(None, description="CS cluster id (modes 'ask' and 'acs').")
    name: str | None = Field(None, description="Cluster name.")
    vpc_id: str | None = Field(None, description="VPC of the cluster, for the NAS mount target.")
    vswitch_ids: list[str] = Field(default_factory=list, description="vSwitches of the cluster.")
    created: bool = Field(False, description="True when this run created the cluster.")
    kubeconfig_source: str = Field(description="Where the kubeconfig comes from (cs:<id>, file:<path>, "
                                   "block:<name>, secret:<name>); never the kubeconfig itself.")
    rrsa_oidc_provider_arn: str | None = Field(None, description="ARN of the cluster's RRSA OIDC provider "
                                               "(DescribeClusterDetail rrsa_config.oidc_arn) when RRSA is on.")


class VolumeHandle(BaseModel):
    mode: Literal["none", "pvc", "nas"] = Field(description="Storage mode.")
    claim_name: str | None = Field(None, description="PVC mounted by the pods.")
    pv_name: str | None = Field(None, description="PV created by this run (mode 'nas').")
    file_system_id: str | None = Field(None, description="NAS file system id.")
    mount_target: str | None = Field(None, description="NAS mount target domain.")
    created_file_system: bool = Field(False, description="True when this run created the file system.")
    created_mount_target: bool = Field(False, description="True when this run created the mount target.")


class ConfigHandle(BaseModel):
    namespace: str = Field(description="Namespace of the objects.")
    config_map: str | None = Field(None, description="ConfigMap name (content-hashed, immutable).")
    secret: str | None = Field(None, description="Secret name (content-hashed, immutable).")
    secret_file_keys: tuple[str, ...] = Field((), description="Secret keys mounted as files.")
    secret_env_keys: tuple[str, ...] = Field((), description="Env vars backed by the Secret.")
    service_account: str | None = Field(None, description="The run's ServiceAccount (pod credentials 'rrsa').")
    rrsa_role_arn: str | None = Field(None, description="RAM role the pods assume (pod credentials 'rrsa').")
    rrsa_oidc_provider_arn: str | None = Field(None, description="The cluster's RRSA OIDC provider.")


class JobHandle(BaseModel):
    namespace: str = Field(description="Namespace of the Job.")
    name: str = Field(description="Job name (run key + spec hash).")
    uid: str | None = Field(description="Job uid: pods carry it in their controller-uid label. None only in the "
                            "merged report of a re-run, which names the run's whole Job as rendered.")
    adopted: bool = Field(False, description="True when an existing Job was re-attached instead of created.")
    completions: int = Field(description="Indexes the Job needs.")
    index: int | None = Field(None, description="On a follow-up Job (rerun of missing indexes): the one original "
                              "index it runs.")


class Attempt(BaseModel):
    """One pod of an index: how it ended and what it cost (the per-index ledger)."""

    pod: str = Field(description="Pod name.")
    outcome: str = Field(description="pending, running, succeeded, or how it failed: reclaimed, stock-out, "
                         "create-failed, evicted, deadline, oom, start-error, exit, moved-on-demand (ask-batch "
                         "stopped it after job.eci.max_reclaims reclaims; see tasks.render.diagnose).")
    reason: str | None = Field(None, description="In words, e.g. 'spot instance reclaimed (BidFailed)', "
                               "'exit code 3'.")
    message: str | None = Field(None, description="The pod's or container's own message (scrubbed).")
    exit_code: int | None = Field(None, description="Exit code of the container, if it ran.")
    spot: bool = Field(False, description="The pod asked ECI for a spot instance (else pay-as-you-go).")
    started: str | None = Field(None, description="RFC 3339 start of the container.")
    finished: str | None = Field(None, description="RFC 3339 end of the container.")
    seconds: float = Field(0.0, description="Container running time, seconds.")
    billed_seconds: float = Field(0.0, description="Instance lifetime ECI bills, seconds: from the pod's start "
                                  "(instance created) to its end; 0 when no instance was created.")


class IndexRecord(BaseModel):
    index: int = Field(description="Completion index.")
    status: Literal["succeeded", "failed", "pending", "running", "not_started", "unknown"] = Field(
        description="Final state; 'not_started': the Job ended before any pod of this index was created.")
    attempts: list[Attempt] = Field(default_factory=list, description="Every pod of this index, oldest first.")
    pod: str | None = Field(None, description="Last pod of this index.")
    exit_code: int | None = Field(None, description="Exit code of the last pod's container.")
    reason: str | None = Field(None, description="Why it failed, if it did.")
    started: str | None = Field(None, description="RFC 3339 start of the last attempt.")
    finished: str | None = Field(None, description="RFC 3339 end of the last attempt.")
    seconds: float = Field(0.0, description="Running time summed over attempts (for the cost estimate).")
    billed_seconds: float = Field(0.0, description="Instance time summed over attempts.")

    @property
    def reclaims(self) -> int:
        """Attempts the cloud took away (spot reclaim, disruption)."""
        return sum(1 for a in self.attempts if a.outcome == "reclaimed")


class SucceededOnce(BaseModel):
    """The indexes that succeeded on their first and only attempt with nothing more to say, column by column: one
    list per field, entry ``k`` of each list belongs to ``index[k]`` (ascending).

    Why columns: at 100,000 indexes an ``IndexRecord`` with its ``Attempt`` per index costs ~2.7 KB (267 MB),
    these lists ~0.3 KB per index. ``record(k)`` rebuilds the full ``IndexRecord`` of entry ``k``.
    """

    index: list[int] = Field(default_factory=list, description="Completion indexes, ascending.")
    pod: list[str] = Field(default_factory=list, description="The index's pod.")
    exit_code: list[int | None] = Field(default_factory=list, description="Its container's exit code.")
    spot: list[bool] = Field(default_factory=list, description="It asked ECI for a spot instance.")
    started: list[str | None] = Field(default_factory=list, description="RFC 3339 start of its container.")
    finished: list[str | None] = Field(default_factory=list, description="RFC 3339 end of its container.")
    seconds: list[float] = Field(default_factory=list, description="Container running time, seconds.")
    billed_seconds: list[float] = Field(default_factory=list, description="Instance time ECI bills, seconds.")
    _floats: dict[float, float] = PrivateAttr(default_factory=dict)

    def __len__(self) -> int:
        return len(self.index)

    @staticmethod
    def holds(record: IndexRecord) -> bool:
        """True when ``record`` is exactly what ``record(k)`` would rebuild: succeeded (reason "completed") on its
        only attempt, its fields those of that attempt."""
        if record.status != "succeeded" or len(record.attempts) != 1:
            return False
        a = record.attempts[0]
        return (a.outcome == "succeeded" and a.reason == "completed" and record.reason == a.reason
                and not a.message and record.pod == a.pod
                and record.exit_code == a.exit_code and record.started == a.started
                and record.finished == a.finished and record.seconds == a.seconds
                and record.billed_seconds == a.billed_seconds)

    def add(self, index: int, attempt: Attempt) -> None:
        """Append index ``index`` (greater than every index already held) with its one succeeded attempt. Equal
        durations share one float object (timestamps have a one-second resolution, so most are equal: 24 bytes
        less per column entry)."""
        self.index.append(index)
        self.pod.append(attempt.pod)
        self.exit_code.append(attempt.exit_code)
        self.spot.append(attempt.spot)
        self.started.append(attempt.started)
        self.finished.append(attempt.finished)
        self.seconds.append(self._floats.setdefault(attempt.seconds, attempt.seconds))
        self.billed_seconds.append(self._floats.setdefault(attempt.billed_seconds, attempt.billed_seconds))

    def record(self, k: int) -> IndexRecord:
        """The full record of entry ``k`` (not of index ``k``)."""
        attempt = Attempt(pod=self.pod[k], outcome="succeeded", reason="completed", exit_code=self.exit_code[k],
                          spot=self.spot[k], started=self.started[k], finished=self.finished[k],
                          seconds=self.seconds[k], billed_seconds=self.billed_seconds[k])
        return IndexRecord(index=self.index[k], status="succeeded", attempts=[attempt], pod=attempt.pod,
                           exit_code=attempt.exit_code, reason=attempt.reason, started=attempt.started,
                           finished=attempt.finished,
                           seconds=attempt.seconds, billed_seconds=attempt.billed_seconds)


def split_records(records: Iterable[IndexRecord]) -> tuple[list[IndexRecord], SucceededOnce]:
    """``records`` (ascending index) as ``JobReport`` keeps them: the ``SucceededOnce.holds`` ones in columns, the
    others as they are. Consumes an iterator one record at a time, so a caller that yields records never holds
    them all."""
    notable: list[IndexRecord] = []
    plain = SucceededOnce()
    for record in records:
        if SucceededOnce.holds(record) and (not plain.index or record.index > plain.index[-1]):
            plain.add(record.index, record.attempts[0])
        else:
            notable.append(record)
    return notable, plain


class JobReport(BaseModel):
    """The wait's verdict and per-index ledger. Every index is either in ``indexes`` (a full ``IndexRecord``) or
    in ``succeeded_once`` (columns); ``records()`` yields all of them in index order."""

    job: JobHandle = Field(description="The Job.")
    succeeded: bool = Field(description="The Job completed (or, when ``job_gone``, nothing said it failed).")
    reason: str | None = Field(None, description="Why it failed (Job condition or fail-fast diagnosis).")
    job_gone: bool = Field(False, description="The Job was removed (e.g. by ttlSecondsAfterFinished) before the "
                           "wait saw its verdict: the outputs decide.")
    follow_ups: list[JobHandle] = Field(default_factory=list, description="On a re-run: the follow-up Jobs that "
                                        "ran the missing indexes.")
    reused: list[int] = Field(default_factory=list, description="On a re-run: indexes whose outputs an earlier "
                              "attempt of this run key already wrote (not run again).")
    on_demand: list[int] = Field(default_factory=list, description="Indexes reclaimed job.eci.max_reclaims times "
                                 "whose last try ran on demand, in a follow-up Job (named in follow_ups).")
    indexes: list[IndexRecord] = Field(default_factory=list, description="Per-index records of the indexes not in "
                                       "``succeeded_once`` (failed, retried, pending...), ascending.")
    succeeded_once: SucceededOnce = Field(default_factory=SucceededOnce, description="Indexes that succeeded on "
                                          "their only attempt, in columns (``SucceededOnce``).")
    incomplete_logs: dict[str, str] = Field(default_factory=dict, description="Pod -> why its kept log is "
                                            "incomplete (the kept file ends with a marker line saying so).")

    @property
    def index_count(self) -> int:
        """How many indexes the report holds (both kinds)."""
        return len(self.indexes) + len(self.succeeded_once)

    def records(self) -> Iterator[IndexRecord]:
        """Every index's record, ascending index; the column entries are rebuilt one at a time."""
        plain, k = self.succeeded_once, 0
        for record in self.indexes:
            while k < len(plain) and plain.index[k] < record.index:
                yield plain.record(k)
                k += 1
            yield record
        while k < len(plain):
            yield plain.record(k)
            k += 1

    def all_seconds(self) -> list[float]:
        """Running seconds summed over attempts, one entry per index (for the cost estimate)."""
        return [r.seconds for r in self.indexes] + list(self.succeeded_once.seconds)

    def pod_index_pairs(self) -> Iterator[tuple[str, int]]:
        """(pod name, the completion index it ran) for every attempt in the report (original index, follow-up
        Jobs included), one pass, nothing held: callers keep only the pairs they need."""
        for r in self.indexes:
            for a in r.attempts:
                yield a.pod, r.index
            if r.pod:
                yield r.pod, r.index
        yield from zip(self.succeeded_once.pod, self.succeeded_once.index, strict=True)


class OutputObject(BaseModel):
    """One object under an index prefix, as written to the manifest file (one JSON line each)."""

    key: str = Field(description="OSS object key.")
    size: int = Field(description="Size in bytes, as listed.")
    etag: str | None = Field(None, description="ETag, as listed.")
    crc64: str | None = Field(None, description="CRC-64/ECMA the server reported (x-oss-hash-crc64ecma).")
    local_path: str | None = Field(None, description="Where it was saved (only when downloaded and verified).")
    verified: bool = Field(False, description="The local copy matched the size and checksum.")
    link: str | None = Field(None, description="Presigned download link, when enabled.")
    error: str | None = Field(None, description="Why its download failed (its index is then incomplete).")


class IndexOutputs(BaseModel):
    """Everything about one index's outputs: what ``OutputManifest.index`` reads back from the manifest file."""

    index: int = Field(description="Completion index.")
    prefix: str = Field(description="The index's OSS prefix.")
    complete: bool = Field(description="Complete per outputs.completeness and, if downloaded, verified.")
    problem: str | None = Field(None, description="Why it is not complete.")
    objects: list[OutputObject] = Field(default_factory=list, description="Objects under the prefix.")
    log_keys: list[str] = Field(default_factory=list, description="Saved pod logs of this index (OSS keys).")


class SavedLogs(Mapping[str, str]):
    """Pod name -> OSS key of its saved log (``<logs_prefix><pod>.log``), in about 40 bytes a pod.

    The pod names are kept as one newline-separated string (a dict of two strings a pod costs ~250 bytes: 25 MB
    at 100,000 pods); iteration yields them in the order given (collect_outputs: by index, then name); a look-up
    is a substring search, O(pods), fine for the few a caller makes.
    """

    __slots__ = ("logs_prefix", "_names", "_count")

    def __init__(self, logs_prefix: str, names: Iterable[str] = ()) -> None:
        self.logs_prefix = logs_prefix
        listed = list(names)
        self._names = "\n" + "".join(n + "\n" for n in listed)
        self._count = len(listed)

    @classmethod
    def from_blob(cls, logs_prefix: str, blob: str) -> "SavedLogs":
        """From ``blob`` as ``blob`` gives it (a manifest keeps that string)."""
        saved = cls(logs_prefix)
        saved._names = blob if blob.startswith("\n") else "\n" + blob
        saved._count = saved._names.count("\n") - 1
        return saved

    @property
    def blob(self) -> str:
        """The pod names, newline-separated (with a leading and trailing newline)."""
        return self._names

    def __getitem__(self, pod: str) -> str:
        if "\n" in pod or f"\n{pod}\n" not in self._names:
            raise KeyError(pod)
        return f"{self.logs_prefix}{pod}.log"

    def __iter__(self) -> Iterator[str]:
        start = 1
        while (end := self._names.find("\n", start)) >= 0:
            yield self._names[start:end]
            start = end + 1

    def __len__(self) -> int:
        return self._count

    def __reduce__(self) -> tuple[Any, ...]:
        return (SavedLogs.from_blob, (self.logs_prefix, self._names))

    def __repr__(self) -> str:
        return f"SavedLogs({self.logs_prefix!r}, {self._count} pod(s))"


class OutputManifest(BaseModel):
    """What collect_outputs found, in memory independent of the object count and O(1) bytes per index.

    Every object and every index in full detail is in the manifest *file* (``manifest_file``: JSON lines, see
    ``tasks.stages.outputs``); this value keeps the verdict (``complete``, ``missing``), per-index object counts,
    totals, the first ``problems`` and the saved pod logs compactly. ``index(i)``, ``objects()`` and ``records()``
    read the file back.
    """

    bucket: str = Field(description="OSS bucket.")
    prefix: str = Field(description="The run's OSS prefix.")
    download_dir: str | None = Field(None, description="Local directory holding this run's files (None: "
                                     "record only).")
    complete: bool = Field(description="Every index complete (and verified, when downloaded).")
    missing: list[int] = Field(default_factory=list, description="Indexes that are not complete (sorted).")
    completions: int = Field(0, description="Indexes checked: 0..completions-1.")
    object_counts: list[int] = Field(default_factory=list, description="Objects listed under each index's "
                                     "prefix (position = index).")
    total_objects: int = Field(0, description="Objects under all index prefixes.")
    total_bytes: int = Field(0, description="Their size in bytes, as listed.")
    problems: dict[int, str] = Field(default_factory=dict, description="Why an index is not complete, for the "
                                     "first PROBLEMS_KEPT missing indexes (all of them in the manifest file).")
    manifest_file: str | None = Field(None, description="The JSON-lines manifest: one line per object, then one "
                                      "per index (local path).")
    saved_logs: str = Field("", description="Pods whose log was saved, newline-separated (see ``log_keys``).")
    other_keys: list[str] = Field(default_factory=list, description="Objects under the run prefix that belong "
                                  "to no index (besides logs): the first OTHERS_KEPT of them.")
    other_count: int = Field(0, description="How many objects belong to no index (besides logs).")

    @property
    def log_keys(self) -> SavedLogs:
        """Pod name -> saved log key (a compact read-only mapping)."""
        return SavedLogs.from_blob(self.prefix + "logs/", self.saved_logs) if self.saved_logs else SavedLogs(
            self.prefix + "logs/")

    def is_complete(self, index: int) -> bool:
        """The index is complete (O(log missing))."""
        at = bisect.bisect_left(self.missing, index)
        return not (at < len(self.missing) and self.missing[at] == index)

    def problem_of(self, index: int) -> str | None:
        """Why ``index`` is incomplete (None when complete); past the first PROBLEMS_KEPT, a pointer to the file."""
        if self.is_complete(index):
            return None
        return self.problems.get(index) or f"incomplete (the reason is in {self.manifest_file})"

    def outputs_text(self, index: int) -> str:
        """One summary-table cell: ``2 object(s)``, or ``0 object(s) — no marker ...``."""
        count = self.object_counts[index] if index < len(self.object_counts) else 0
        problem = self.problem_of(index)
        return f"{count} object(s)" + ("" if problem is None else f" — {problem}")

    def records(self) -> Iterator[dict[str, Any]]:
        """Every line of the manifest file as a dict (``kind``: "object" or "index"), streamed; none without one."""
        if not self.manifest_file:
            return
        with open(self.manifest_file, encoding="utf-8") as fh:
            for line in fh:
                yield json.loads(line)

    def objects(self) -> Iterator[OutputObject]:
        """Every object of every index, in listing order, from the manifest file (streamed)."""
        for rec in self.records():
            if rec.get("kind") == "object":
                yield OutputObject.model_validate({k: v for k, v in rec.items() if k not in ("kind", "index")})

    def index(self, index: int) -> IndexOutputs:
        """One index in full detail, read back from the manifest file (one pass over it).

        Raises:
            KeyError: the file has no line for ``index`` (out of range, or no manifest file).
        """
        objects: list[OutputObject] = []
        for rec in self.records():
            if rec.get("index") != index:
                continue
            if rec["kind"] == "object":
                objects.append(OutputObject.model_validate({k: v for k, v in rec.items()
                                                            if k not in ("kind", "index")}))
            else:
                return IndexOutputs(index=index, prefix=rec["prefix"], complete=rec["complete"],
                                    problem=rec["problem"], objects=objects, log_keys=rec["log_keys"])
        raise KeyError(index)


class TeardownItem(BaseModel):
    kind: str = Field(description="Job, ConfigMap, Secret, PersistentVolumeClaim, PersistentVolume, "
                      "NasMountTarget, NasFileSystem, Cluster.")
    name: str = Field(description="Name or id.")
    why: str = Field(description="What happened and why (policy, already gone, the error).")
    count: int = Field(1, description="How many objects the item stands for: more than 1 when many of one kind "
                       "are reported together (``name`` then names a few and counts the rest).")


class TeardownReport(BaseModel):
    deleted: list[TeardownItem] = Field(default_factory=list, description="Deleted (or found already gone).")
    kept: list[TeardownItem] = Field(default_factory=list, description="Kept on purpose, with the reason.")
    failed: list[TeardownItem] = Field(default_factory=list, description="Could not be deleted: the error.")

    @property
    def ok(self) -> bool:
        return not self.failed

    def lines(self) -> list[str]:
        """One human line per item, for logs and summaries."""
        out = []
        for label, items in (("deleted", self.deleted), ("kept", self.kept), ("FAILED", self.failed)):
            out += [f"{label}: {i.kind} {i.name} ({i.why})" for i in items]
        return out
