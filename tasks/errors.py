"""One exception family for everything ask-batch raises on purpose.

Why one family: the CLI maps it to exit codes (2 for invalid input, 1 for a failed run), the task retry rule asks
one attribute (``transient``) instead of guessing from class names, and a caller can catch ``AskBatchError`` to
tell "ask-batch said no, with a reason" from a bug. Every message says what happened, where, and what to do.

```
AskBatchError
├── InvalidInput            bad parameters or input files (before any cloud call)  -> exit 2
│   └── SpecError           one line per problem, each naming the field
├── CloudError              a cloud / Kubernetes API call failed (``transient`` says whether a retry may help)
├── ClusterError            the cluster cannot be found, created or reached
├── VolumeError             the NAS file system, mount target, PV or PVC cannot be made ready
├── JobConflict             a Job with the run's name exists but was rendered from another spec
├── PodRejected             the cluster's admission refuses the Job's pods (dry run before the Job)
├── JobFailed               the Job failed or cannot finish (``report`` has the per-index record)
├── OutputsIncomplete       indexes without verifiable outputs (``manifest`` has what was found)
├── ChecksumMismatch        downloaded bytes differ from what OSS reported (transient)
├── BucketNotUsable         the outputs bucket is another account's or not writable with these credentials
├── TeardownIncomplete      teardown could not delete something it should have (``report``)
└── RunLocked               another run of the same spec holds the run lock
```
"""

from typing import Any

from tasks.handles import JobReport, OutputManifest


class AskBatchError(Exception):
    """Base of every error ask-batch raises on purpose. ``transient``: a retry of the same call may succeed."""

    transient: bool = False


class InvalidInput(AskBatchError, ValueError):
    """The input cannot run as given; nothing was created. The CLI exits 2."""


class SpecError(InvalidInput):
    """Invalid parameters: one line per problem, each naming the field (dotted path) and the fix.

    Args:
        problems: ``(field, message)`` pairs; ``field`` is a dotted path such as ``job.parallelism``.
    """

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        lines = "\n".join(f"  - {field}: {msg}" for field, msg in problems)
        super().__init__(f"invalid ask-batch parameters ({len(problems)} problem(s)):\n{lines}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problems,))


class CloudError(AskBatchError, RuntimeError):
    """A failed cloud/Kubernetes API call, with the service's code and message.

    Attributes:
        service: "CS", "NAS", "OSS" or "Kubernetes".
        operation: the API operation (e.g. "CreateCluster", "GET /version").
        code, message: the service's error code and message.
        status: the HTTP status, when there was an answer.
        request_id: the service's request id (quote it to Alibaba Cloud support).
        transient: a retry may succeed (5xx, 429, throttling, a dropped connection).
    """

    def __init__(self, *, service: str, operation: str, code: str | None, message: str | None,
                 status: int | None = None, request_id: str | None = None, transient: bool = False):
        self.service, self.operation, self.code, self.message = service, operation, code, message
        self.status, self.request_id, self.transient = status, request_id, transient
        status_txt = f" (HTTP {status})" if status else ""
        rid = f" [request id {request_id}]" if request_id else ""
        super().__init__(f"{service} {operation} failed: {code or 'error'}{status_txt}: {message or ''}{rid}".strip())

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_cloud_error, (dict(service=self.service, operation=self.operation, code=self.code,
                                            message=self.message, status=self.status, request_id=self.request_id,
                                            transient=self.transient),))


def _rebuild_cloud_error(kwargs: dict[str, Any]) -> "CloudError":
    return CloudError(**kwargs)


class ClusterError(AskBatchError, RuntimeError):
    """The cluster cannot be found, created or reached; the message says what to change."""


class VolumeError(AskBatchError, RuntimeError):
    """The NAS file system, mount target, PV or PVC cannot be made ready; the message says what to change."""


class JobConflict(AskBatchError, RuntimeError):
    """A Job with our name exists but was not rendered from the same spec."""


class PodRejected(AskBatchError, RuntimeError):
    """The cluster's admission refuses the Job's pods (e.g. ACS: an unknown compute class): no pod would ever start,
    so the run stops before creating the Job."""


class JobFailed(AskBatchError, RuntimeError):
    """The Job failed or will not finish; ``report`` has the per-index record."""

    def __init__(self, message: str, report: JobReport):
        super().__init__(message)
        self.report = report

    def __reduce__(self) -> tuple[Any, ...]:  # Prefect may copy or pickle task exceptions
        return (type(self), (str(self), self.report))


class OutputsIncomplete(AskBatchError, RuntimeError):
    """Some indexes did not produce (verifiable) outputs; ``manifest`` has everything that was found."""

    def __init__(self, manifest: OutputManifest, missing: list[int]):
        self.manifest, self.missing = manifest, missing
        shown = "; ".join(f"index {i}: {manifest.problem_of(i) or 'incomplete'}" for i in missing[:10])
        more = f"; and {len(missing) - 10} more" if len(missing) > 10 else ""
        where = f" (every index in {manifest.manifest_file})" if manifest.manifest_file else ""
        super().__init__(f"outputs incomplete: {len(missing)} of {manifest.completions} indexes under "
                         f"oss://{manifest.bucket}/{manifest.prefix}: {shown}{more}{where}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.manifest, self.missing))


class ChecksumMismatch(AskBatchError, RuntimeError):
    """The bytes received do not match the size or checksum OSS reported (transient: fetched again)."""

    transient = True


class BucketNotUsable(AskBatchError, RuntimeError):
    """The outputs bucket cannot be used with these credentials: another account's, or access denied."""


class TeardownIncomplete(AskBatchError, RuntimeError):
    """Something the teardown policy said to delete is still there: the run fails (it may still be billed).

    ``report`` is the whole ``TeardownReport``; the message names each leftover and how to delete it.
    """

    def __init__(self, report: Any, *, run_key: str):
        self.report, self.run_key = report, run_key
        left = "; ".join(f"{i.kind} {i.name}: {i.why}" for i in report.failed[:10])
        more = f"; and {len(report.failed) - 10} more" if len(report.failed) > 10 else ""
        total = sum(i.count for i in report.failed)
        super().__init__(f"teardown left {total:,} resource(s) behind: {left}{more}; fix: run the "
                         f"same spec again with run_key={run_key} (its teardown deletes them), or delete them "
                         f"by hand (labels/tags ask-batch.io/run={run_key})")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_teardown_incomplete, (self.report, self.run_key))


def _rebuild_teardown_incomplete(report: Any, run_key: str) -> "TeardownIncomplete":
    return TeardownIncomplete(report, run_key=run_key)


class RunLocked(AskBatchError, RuntimeError):
    """Another run of the same spec holds the lock (the message says which key and what to do)."""
