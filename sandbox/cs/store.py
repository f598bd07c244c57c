"""Cluster and task records of the sandbox Container Service, persisted in `DATA/cs/state.json`.

Records are plain JSON dicts (the API's own snake_case field names) so that the file is readable and the
views are straight copies. The state machine's deadlines (`ready_at`, `gone_at`) are wall-clock epoch
seconds, so a restarted sandbox resumes a creation or deletion where it stopped.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

Record = dict[str, Any]

# Alibaba returns cluster timestamps in the region's local time (China Standard Time for cn-*).
CST = timezone(timedelta(hours=8))

# States in which a cluster owns a running sandbox Kubernetes.
KUBE_STATES = ("initial", "running")


def now_cs() -> str:
    return datetime.now(CST).isoformat(timespec="seconds")


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ClusterStore:
    def __init__(self, directory: Path) -> None:
        self.file = directory / "state.json"
        self.clusters: dict[str, Record] = {}
        self.tasks: dict[str, Record] = {}
        if self.file.exists():
            data = orjson.loads(self.file.read_bytes())
            self.clusters = data.get("clusters", {})
            self.tasks = data.get("tasks", {})

    def save(self) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps({"clusters": self.clusters, "tasks": self.tasks}, option=orjson.OPT_INDENT_2))
        os.replace(tmp, self.file)

    def live(self) -> list[Record]:
        """Clusters that still exist (every state until the record is removed), newest first."""
        return sorted(self.clusters.values(), key=lambda r: r["created_ts"], reverse=True)

    def new_task(self, task_id: str, cluster_id: str, task_type: str) -> Record:
        now = now_cs()
        task = {"task_id": task_id, "cluster_id": cluster_id, "task_type": task_type, "state": "running",
                "created": now, "updated": now}
        self.tasks[task_id] = task
        return task

    def finish_task(self, task_id: str | None, *, ok: bool, error: tuple[str, str] | None = None) -> None:
        task = self.tasks.get(task_id or "")
        if task is None:
            return
        task["state"] = "success" if ok else "fail"
        task["updated"] = now_cs()
        if error:
            task["error"] = {"code": error[0], "message": error[1]}


def load_cluster_ids(data_dir: Path, default_cluster_id: str | None) -> list[str]:
    """Ids of persisted clusters whose Kubernetes must be (re)started, without the default cluster."""
    store = ClusterStore(data_dir / "cs")
    return [r["cluster_id"] for r in store.live()
            if r["state"] in KUBE_STATES and not r.get("fail") and r["cluster_id"] != default_cluster_id]
