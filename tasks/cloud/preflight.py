"""Read-only pre-flight checks: what a run would find in the account, asked before anything is created.

``--dry-run --preflight`` runs them after printing the plan. Each check only reads (GetBucketInfo, the CS
cluster listing, DescribeFileSystems, ``GET /version``); nothing is created, written or deleted. So it cannot tell
whether these credentials may *write* to the bucket — the run itself checks that first, with a tiny object, before
anything billed (``tasks.stages.outputs.ensure_bucket``).

Sources: GetBucketInfo https://www.alibabacloud.com/help/en/oss/developer-reference/getbucketinfo,
DescribeClustersForRegion https://www.alibabacloud.com/help/en/ack/ack-managed-and-ack-dedicated/developer-reference/api-cs-2015-12-15-describeclustersforregion,
DescribeFileSystems https://www.alibabacloud.com/help/en/nas/developer-reference/api-nas-2017-06-26-describefilesystems.
"""

from collections.abc import Callable
from dataclasses import dataclass

from tasks.cloud.cluster_access import KIND_NAMES, existing_handle, find_cluster
from tasks.cloud.context import StageContext
from tasks.cloud.nas import describe_file_system, find_file_systems_by_name
from tasks.cloud.retry import CloudError, call
from tasks.spec import BatchSpec


@dataclass(frozen=True)
class Check:
    """One pre-flight finding: ``ok`` False means the run would fail there; ``detail`` says what and the fix."""

    what: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.what}: {self.detail}"


def _bucket(spec: BatchSpec, ctx: StageContext) -> Check:
    import alibabacloud_oss_v2 as o

    bucket = spec.outputs.bucket
    what = f"OSS bucket {bucket!r}"
    try:
        call(ctx.oss().get_bucket_info, o.GetBucketInfoRequest(bucket=bucket), service="OSS",
             operation="GetBucketInfo")
    except CloudError as err:
        if err.code == "NoSuchBucket":
            if spec.outputs.create_bucket:
                return Check(what, True, "does not exist; the run creates it (outputs.create_bucket)")
            return Check(what, False, "does not exist; fix: create it, or turn on outputs.create_bucket")
        if err.code == "AccessDenied" or err.status == 403:
            return Check(what, False, f"exists but these credentials may not use it ({err.code}): bucket names are "
                         "global, so it probably belongs to another account; fix: choose a name of your own")
        raise
    return Check(what, True, "exists and these credentials may read its settings (write access is checked by "
                 "the run, before anything billed)")


def _cluster(spec: BatchSpec, ctx: StageContext) -> Check:
    from kubernetes import client

    if spec.cluster.mode == "existing":
        handle = existing_handle(spec)
        what = f"cluster {handle.kubeconfig_source}"
        version = call(client.VersionApi(ctx.kube(handle)).get_code, service="Kubernetes",
                       operation="GET /version")
        return Check(what, True, f"the API server answers (Kubernetes {version.git_version})")
    opts = spec.cluster.managed
    assert opts is not None
    kind = KIND_NAMES.get(spec.cluster.mode, spec.cluster.mode)
    what = f"{kind} cluster {opts.name!r} in {spec.target.region}"
    found = find_cluster(ctx.cs(), region=spec.target.region, name=opts.name, kind=spec.cluster.mode)
    if found:
        return Check(what, True, f"exists ({found['cluster_id']}, {found.get('state')}); the run uses it")
    if opts.create_if_missing:
        return Check(what, True, "does not exist; the run creates it (billed from then on)")
    return Check(what, False, "does not exist and create_if_missing is off; fix: create it, correct the name, "
                 "or turn on create_if_missing")


def _nas(spec: BatchSpec, ctx: StageContext) -> Check | None:
    if spec.storage.mode != "nas":
        return None
    nas = spec.storage.nas
    if nas.file_system_id:
        what = f"NAS file system {nas.file_system_id!r}"
        fs = describe_file_system(ctx.nas(), nas.file_system_id)
        if fs is None:
            return Check(what, False, "does not exist in this region; fix: correct storage.nas.file_system_id")
        return Check(what, True, f"exists ({fs.get('Status')})")
    what = f"NAS file system named {nas.name!r}"
    found = find_file_systems_by_name(ctx.nas(), nas.name)
    if len(found) > 1:
        return Check(what, False, f"{len(found)} file systems have this name; fix: set storage.nas.file_system_id")
    if found:
        return Check(what, True, f"exists ({found[0]['FileSystemId']}); the run uses it")
    return Check(what, True, "does not exist; the run creates it (billed by used bytes)")


def preflight(spec: BatchSpec, ctx: StageContext) -> list[Check]:
    """Every read-only check, in the order the run meets them; a check that cannot be made is a failed check.

    Returns:
        One ``Check`` per resource: the credentials, the bucket, the cluster, the NAS file system (mode 'nas').
    """
    checks: list[Check] = []
    steps: list[tuple[str, Callable[[BatchSpec, StageContext], Check | None]]] = [
        ("OSS bucket", _bucket), ("cluster", _cluster), ("NAS file system", _nas)]
    try:
        ctx.credentials  # noqa: B018 - resolving them is the check
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return [Check("credentials", False, f"cannot be resolved ({type(exc).__name__}: {exc}); fix: see "
                      "target.credentials")]
    checks.append(Check("credentials", True, f"resolved ({spec.target.credentials.mode})"))
    for what, step in steps:
        try:
            found = step(spec, ctx)
        except Exception as exc:  # noqa: BLE001 - one failed check does not hide the others
            found = Check(what, False, ctx.scrubber(f"{type(exc).__name__}: {exc}"))
        if found is not None:
            checks.append(found)
    return checks

