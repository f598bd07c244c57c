"""NAS adapter: read file systems and mount targets (shared by the volume stage and teardown).

DescribeFileSystems has no name filter, so a file system is found by our tag ``ask-batch.io/nas=<name>`` and the
tag is re-checked client-side while paging (NAS API reference:
https://www.alibabacloud.com/help/en/nas/developer-reference/api-nas-2017-06-26-describefilesystems).
"""

from collections.abc import Callable
from typing import Any

from tasks.cloud.retry import call, call_or_none
from tasks.render.manifests import NAS_NAME_TAG, nas_describe_file_systems_request
from tasks.spec import NasOptions


def as_map(obj: Any) -> dict[str, Any]:
    """A Tea SDK model (``to_map``) or a mapping as a plain dict."""
    return obj.to_map() if hasattr(obj, "to_map") else dict(obj or {})


def nas_call(fn: Callable[..., Any], request: Any, operation: str) -> dict[str, Any]:
    """One NAS API call through the retry policy; the response body as a dict."""
    return as_map(call(fn, request, service="NAS", operation=operation).body)


def tags_of(fs: dict[str, Any]) -> dict[str, str]:
    """A DescribeFileSystems entry's tags as a dict."""
    return {t.get("Key"): t.get("Value") for t in (fs.get("Tags") or {}).get("Tag") or []}


def describe_file_system(nas: Any, file_system_id: str) -> dict[str, Any] | None:
    """The file system's DescribeFileSystems entry, or None when it does not exist."""
    from alibabacloud_nas20170626 import models as m

    req = m.DescribeFileSystemsRequest(file_system_id=file_system_id, page_number=1, page_size=10)
    response = call_or_none(nas.describe_file_systems, req, service="NAS", operation="DescribeFileSystems")
    if response is None:
        return None
    body = as_map(response.body)
    for fs in (body.get("FileSystems") or {}).get("FileSystem") or []:
        if fs.get("FileSystemId") == file_system_id:
            return fs
    return None


def find_file_systems_by_name(nas: Any, name: str) -> list[dict[str, Any]]:
    """Every file system tagged ``ask-batch.io/nas=<name>``, oldest first (tag re-checked client-side)."""
    from alibabacloud_nas20170626 import models as m

    found: list[dict[str, Any]] = []
    page = 1
    while True:
        req = m.DescribeFileSystemsRequest().from_map(
            nas_describe_file_systems_request(NasOptions(name=name), page=page))
        body = nas_call(nas.describe_file_systems, req, "DescribeFileSystems")
        rows = (body.get("FileSystems") or {}).get("FileSystem") or []
        found += [fs for fs in rows if tags_of(fs).get(NAS_NAME_TAG) == name]
        total = int(body.get("TotalCount") or 0)
        if not rows or page * int(body.get("PageSize") or 100) >= total:
            break
        page += 1
    return sorted(found, key=lambda fs: (fs.get("CreateTime") or "", fs["FileSystemId"]))


def list_mount_targets(nas: Any, fs_id: str) -> list[dict[str, Any]]:
    """All mount targets of a file system (paged)."""
    from alibabacloud_nas20170626 import models as m

    out: list[dict[str, Any]] = []
    page = 1
    while True:
        req = m.DescribeMountTargetsRequest(file_system_id=fs_id, page_number=page, page_size=100)
        body = nas_call(nas.describe_mount_targets, req, "DescribeMountTargets")
        rows = (body.get("MountTargets") or {}).get("MountTarget") or []
        out += rows
        if not rows or page * int(body.get("PageSize") or 100) >= int(body.get("TotalCount") or 0):
            return out
        page += 1
