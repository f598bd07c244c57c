"""Reading a Kubernetes list page by page, as JSON: what every large list in ask-batch goes through.

At 100,000 pods one unpaged list response is hundreds of MB, and the same list as client models gigabytes. The
API server serves a list in chunks when asked (``limit``, then ``continue`` from each page's ``metadata``); every
page comes from the same snapshot, whose ``resourceVersion`` a watch may start from
(https://kubernetes.io/docs/reference/using-api/api-concepts/#retrieving-large-results-sets-in-chunks).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

#: Objects per page (``limit``). kubectl's own default chunk size is 500 (``kubectl get --chunk-size``).
PAGE_SIZE = 500

#: ``Accept`` for a metadata-only list and for a metadata-only watch, as client-go's metadata client sends them
#: (https://github.com/kubernetes/client-go/blob/master/metadata/metadata.go), with plain JSON as the fallback: a
#: server without the metadata form sends whole objects, whose ``metadata`` is read the same way.
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
METADATA_WATCH = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"


#: How many times a list whose ``continue`` token expired is read again from the start before the error is raised.
EXPIRED_RESTARTS = 3


def list_pages(list_fn: Callable[..., Any], *, metadata_only: bool = False,
               on_restart: Callable[[], None] | None = None, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Yield each page of ``list_fn(**kwargs)`` as a parsed JSON dict (``items``, ``metadata``), first to last,
    ``PAGE_SIZE`` objects a page (read at each call, so a test may lower it).

    A ``continue`` token the API server no longer honours (410 Expired: the snapshot the pages come from was
    compacted away while they were read, e.g. 100,000 pods listed while the garbage collector deletes them) starts
    the list again from its first page, a new snapshot, up to ``EXPIRED_RESTARTS`` times. client-go's pager does
    the same with one unpaged list (``FullListIfExpired``,
    https://github.com/kubernetes/client-go/blob/master/tools/pager/pager.go); pages again keep memory flat.

    Args:
        list_fn: a ``kubernetes.client`` list call (e.g. ``CoreV1Api.list_namespaced_pod``), or anything taking
            its keyword arguments and returning its raw response (``_preload_content=False`` is passed).
        metadata_only: ask for each object's ``metadata`` only (``METADATA_LIST``): for a caller that counts or
            names objects. A pod's metadata is about a quarter of the whole pod's JSON.
        on_restart: called before the list starts again from the first page, so that a caller that counts or
            keeps the first page's ``resourceVersion`` starts over; the pages yielded before are of the old
            snapshot.
        kwargs: the list's own arguments (``namespace``, ``label_selector``, ...).

    Raises:
        whatever ``list_fn`` raises, including the 410 of a ``continue`` token that expired a
        ``EXPIRED_RESTARTS + 1``-th time (its ``status`` attribute, on ``ApiException`` and ``CloudError``).
    """
    if metadata_only:
        kwargs["_headers"] = {"Accept": METADATA_LIST}
    token: str | None = None
    restarts = 0
    while True:
        try:
            resp = list_fn(**kwargs, limit=PAGE_SIZE, _continue=token, _preload_content=False)
        except Exception as exc:
            if token is None or getattr(exc, "status", None) != 410 or restarts >= EXPIRED_RESTARTS:
                raise
            restarts += 1
            token = None
            if on_restart is not None:
                on_restart()
            continue
        page: dict[str, Any] = json.loads(resp.data)
        yield page
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return
