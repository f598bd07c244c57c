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


def list_pages(list_fn: Callable[..., Any], *, metadata_only: bool = False, **kwargs: Any
               ) -> Iterator[dict[str, Any]]:
    """Yield each page of ``list_fn(**kwargs)`` as a parsed JSON dict (``items``, ``metadata``), first to last,
    ``PAGE_SIZE`` objects a page (read at each call, so a test may lower it).

    Args:
        list_fn: a ``kubernetes.client`` list call (e.g. ``CoreV1Api.list_namespaced_pod``), or anything taking
            its keyword arguments and returning its raw response (``_preload_content=False`` is passed).
        metadata_only: ask for each object's ``metadata`` only (``METADATA_LIST``): for a caller that counts or
            names objects. A pod's metadata is about a quarter of the whole pod's JSON.
        kwargs: the list's own arguments (``namespace``, ``label_selector``, ...).

    Raises:
        whatever ``list_fn`` raises (e.g. ``ApiException`` 410 when a ``continue`` token has expired: the caller
        lists again from the start).
    """
    token: str | None = None
    while True:
        if metadata_only:
            kwargs["_headers"] = {"Accept": METADATA_LIST}
        resp = list_fn(**kwargs, limit=PAGE_SIZE, _continue=token, _preload_content=False)
        page: dict[str, Any] = json.loads(resp.data)
        yield page
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return
