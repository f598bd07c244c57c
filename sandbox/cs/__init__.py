"""Sandbox Alibaba Cloud Container Service (CS, API 2015-12-15, ROA style) for ACK Serverless clusters.

`make_app(sb)` serves the operations the pipeline uses, to the unmodified `alibabacloud_cs20151215` SDK:
CreateCluster, DescribeClustersForRegion, DescribeClusterDetail, DescribeTaskInfo,
DescribeClusterUserKubeconfig, DeleteCluster, and the decommissioned DescribeClusters/DescribeClustersV1
(answered with the gateway's "api not found" error). Requests are verified with ACS3-HMAC-SHA256 against
`sb.credentials`; fault knobs (`sb.faults`, service "cs") apply first.

Each cluster gets its own sandbox Kubernetes from `sb.create_kube_cluster(cluster_id)`. Clusters persist in
`sb.data_dir/cs/state.json`: after a restart, call `load_clusters(sb)` *before* `make_app(sb)` and
`await sb.create_kube_cluster(id)` for every id it returns (running clusters); `make_app` resumes the
creations and deletions that were in flight.

Knobs read from `sb.settings` (getattr with defaults): `cluster_create_delay_s` (2.0),
`cluster_fail_next` (False; reset after it is used), `cluster_delete_delay_s` (1.0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from .. import acs3
from ..faults import fault_middleware
from .errors import fault_responder
from .handlers import SERVICE, add_routes, errors_middleware
from .service import ClusterService
from .store import load_cluster_ids

__all__ = ["make_app", "load_clusters"]


def make_app(sb: Any) -> web.Application:
    service = ClusterService(sb)
    app = web.Application(middlewares=[
        fault_middleware(sb.faults, "cs", fault_responder),
        acs3.middleware(sb.credentials),
        errors_middleware,
    ])
    app[SERVICE] = service
    add_routes(app)

    async def on_startup(_: web.Application) -> None:
        service.resume()

    async def on_cleanup(_: web.Application) -> None:
        await service.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def load_clusters(sb: Any) -> list[str]:
    """Ids of persisted clusters whose sandbox Kubernetes must be restarted (the default one excluded)."""
    return load_cluster_ids(Path(sb.data_dir), getattr(sb, "default_cluster_id", None))
