"""The cluster state machine of the sandbox Container Service.

    CreateCluster -> initial --(cluster_create_delay_s)--> running --DeleteCluster--> deleting --> (gone)
                            \\-(cluster_fail_next knob)--> failed  --DeleteCluster--> deleting --> (gone)

A new cluster gets its own empty sandbox Kubernetes (`sb.create_kube_cluster`) while `initial`, so that
`running` means its API server answers. Deletion stops that Kubernetes (`sb.delete_kube_cluster`) and the
record disappears after `cluster_delete_delay_s`, after which DescribeClusterDetail answers 404
ErrorClusterNotFound, as ACK does. Each transition is also a task for DescribeTaskInfo.

The sandbox's default cluster (`sb.default_cluster_id`) is listed as a running ACK Serverless cluster named
"sandbox" with deletion protection on, so the shared cluster cannot be deleted by accident.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from pathlib import Path
from typing import Any

from .errors import CsError, not_found
from .store import ClusterStore, Record, now_cs
from .validate import DEFAULT_SERVICE_CIDR, DEFAULT_VERSION, flavour_of, validate_create

log = logging.getLogger("sandbox.cs")

DEFAULT_CREATE_DELAY_S = 2.0
DEFAULT_DELETE_DELAY_S = 1.0


def new_cluster_id() -> str:
    return "c" + secrets.token_hex(16)


def new_task_id() -> str:
    return "T-" + secrets.token_hex(12)


class ClusterService:
    def __init__(self, sb: Any) -> None:
        self.sb = sb
        self.store = ClusterStore(Path(sb.data_dir) / "cs")
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._ensure_default()

    # ------------------------------------------------------------------ knobs

    def _setting(self, name: str, default: Any) -> Any:
        return getattr(getattr(self.sb, "settings", None), name, default)

    # ------------------------------------------------------------------ default cluster

    def _ensure_default(self) -> None:
        cid = getattr(self.sb, "default_cluster_id", None)
        if not cid or cid in self.store.clusters:
            return
        meta = getattr(self.sb, "meta", None) or {}
        now = time.time()
        self.store.clusters[cid] = {
            "cluster_id": cid, "name": "sandbox", "region_id": self.sb.region,
            "cluster_type": "ManagedKubernetes", "profile": "Serverless", "cluster_spec": "ack.pro.small",
            "kubernetes_version": DEFAULT_VERSION, "service_cidr": DEFAULT_SERVICE_CIDR,
            "vpc_id": meta.get("vpc_id", "vpc-sandbox"), "vswitch_ids": [meta.get("vswitch_id", "vsw-sandbox")],
            "security_group_id": "sg-sandbox", "tags": [], "deletion_protection": True, "snat_entry": True,
            "endpoint_public_access": True, "timezone": "Asia/Shanghai", "resource_group_id": "",
            "zone_id": meta.get("zone_id", f"{self.sb.region}-a"), "addons": [], "logging_type": "",
            "client_token": "", "state": "running", "created": now_cs(), "updated": now_cs(),
            "created_ts": now, "ready_at": now, "default": True, "rrsa": True,
        }
        self.store.save()

    # ------------------------------------------------------------------ lookups

    def get(self, cluster_id: str) -> Record:
        rec = self.store.clusters.get(cluster_id)
        if rec is None:
            raise not_found(cluster_id)
        return rec

    def kube(self, cluster_id: str) -> Any:
        return self.sb.kube_clusters.get(cluster_id)

    # ------------------------------------------------------------------ create

    def create(self, body: Any) -> Record:
        spec = validate_create(body, self.sb.region)
        token = spec["client_token"]
        for rec in self.store.clusters.values():
            if token and rec.get("client_token") == token:
                return rec  # idempotent retry of the same request
        for rec in self.store.clusters.values():
            if rec["name"] == spec["name"] and rec["state"] != "deleting":
                raise CsError(400, "ErrorClusterNameAlreadyExist",
                              f"cluster name {spec['name']} already exist in your clusters, please try another name")
        cid, task_id = new_cluster_id(), new_task_id()
        now = time.time()
        delay = float(self._setting("cluster_create_delay_s", DEFAULT_CREATE_DELAY_S))
        fail = bool(self._setting("cluster_fail_next", False))
        if fail and hasattr(self.sb, "settings"):
            self.sb.settings.cluster_fail_next = False  # the knob applies to the next creation only
        rec = {**spec, "cluster_id": cid, "state": "initial", "created": now_cs(), "updated": now_cs(),
               "created_ts": now, "ready_at": now + delay, "fail": fail, "task_id": task_id}
        self.store.clusters[cid] = rec
        self.store.new_task(task_id, cid, "cluster_create")
        self.store.save()
        self._spawn(cid, self._run_create(cid))
        return rec

    async def _run_create(self, cid: str) -> None:
        rec = self.store.clusters[cid]
        error: tuple[str, str] | None = None
        if not rec.get("fail"):
            try:
                await self.sb.create_kube_cluster(cid, flavour=flavour_of(rec), rrsa=bool(rec.get("rrsa")))
            except Exception as exc:  # a broken Kubernetes is a failed cluster, as in the real service
                log.exception("starting the Kubernetes of cluster %s failed", cid)
                error = ("ErrorCreateCluster", f"starting the cluster's Kubernetes failed: {exc}")
        else:
            error = ("ErrorCreateCluster", "Failed to create the cluster (sandbox knob cluster_fail_next).")
        await asyncio.sleep(max(0.0, rec["ready_at"] - time.time()))
        if rec["state"] != "initial":  # deleted meanwhile
            return
        rec["state"] = "failed" if error else "running"
        rec["updated"] = now_cs()
        self.store.finish_task(rec.get("task_id"), ok=error is None, error=error)
        self.store.save()

    # ------------------------------------------------------------------ delete

    def delete(self, cluster_id: str, options: dict[str, Any]) -> Record:
        rec = self.get(cluster_id)
        if rec["state"] == "deleting":
            return rec
        if rec.get("deletion_protection"):
            raise CsError(400, "ErrorDeletionProtection",
                          f"The cluster {cluster_id} has deletion protection enabled; disable it before "
                          "deleting the cluster.")
        task_id = new_task_id()
        rec.update(state="deleting", updated=now_cs(), delete_task_id=task_id, delete_options=options,
                   gone_at=time.time() + float(self._setting("cluster_delete_delay_s", DEFAULT_DELETE_DELAY_S)))
        self.store.new_task(task_id, cluster_id, "cluster_delete")
        self.store.save()
        creating = self._tasks.pop(cluster_id, None)
        self._spawn(cluster_id, self._run_delete(cluster_id, creating))
        return rec

    async def _run_delete(self, cid: str, creating: asyncio.Task[None] | None) -> None:
        if creating is not None and not creating.done():
            await asyncio.wait([creating])  # let a half-started Kubernetes finish starting, then stop it
        await self.sb.delete_kube_cluster(cid)
        rec = self.store.clusters[cid]
        await asyncio.sleep(max(0.0, rec["gone_at"] - time.time()))
        self.store.finish_task(rec.get("delete_task_id"), ok=True)
        self.store.clusters.pop(cid, None)
        self.store.save()

    # ------------------------------------------------------------------ background work

    def _spawn(self, cid: str, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"cs-{cid}")
        self._tasks[cid] = task
        task.add_done_callback(lambda t: self._tasks.pop(cid, None) if self._tasks.get(cid) is t else None)

    def resume(self) -> None:
        """Continue transitions interrupted by a restart (called once the app's loop runs)."""
        for cid, rec in list(self.store.clusters.items()):
            if rec["state"] == "initial":
                self._spawn(cid, self._run_create(cid))
            elif rec["state"] == "deleting":
                self._spawn(cid, self._run_delete(cid, None))

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self.store.save()
