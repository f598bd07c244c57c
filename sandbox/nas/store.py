"""File systems and mount targets of the sandbox NAS, persisted in `DATA/nas/state.json`.

Status transitions are computed from wall-clock deadlines when a record is read, not by timers: a file
system is `Pending` until `ready_at`, then `Running`; a mount target `Pending` then `Active`; a deleted
mount target stays `Deleting` until `gone_at`. That survives restarts for free and mirrors the real
service's eventual consistency (DeleteFileSystem is refused until deleted mount targets are really gone).
File system contents live in `DATA/nas/<FileSystemId>/`.
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

Record = dict[str, Any]
CST = timezone(timedelta(hours=8))


def create_time() -> str:
    """NAS CreateTime format, e.g. 2024-01-01T08:00:00CST (region-local time)."""
    return datetime.now(CST).strftime("%Y-%m-%dT%H:%M:%SCST")


class NasStore:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.file = directory / "state.json"
        self.file_systems: dict[str, Record] = {}
        self.client_tokens: dict[str, dict[str, str]] = {}  # token -> {fs_id, fingerprint}
        if self.file.exists():
            data = orjson.loads(self.file.read_bytes())
            self.file_systems = data.get("file_systems", {})
            self.client_tokens = data.get("client_tokens", {})

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps({"file_systems": self.file_systems, "client_tokens": self.client_tokens},
                                     option=orjson.OPT_INDENT_2))
        os.replace(tmp, self.file)

    def data_dir(self, fs_id: str) -> Path:
        return self.dir / fs_id

    def metered_bytes(self, fs_id: str) -> int:
        """Used size as NAS meters it: every file's size rounded up to 4 KiB, directories not counted
        (https://www.alibabacloud.com/help/doc-detail/27523.htm, "Billing items": "The basic storage unit is
        4 KB"). The real ``MeteredSize`` is the largest size over the last hour; this is the current one."""
        total = 0
        for path in self.data_dir(fs_id).rglob("*"):
            try:
                if path.is_file() and not path.is_symlink():
                    total += -(-path.stat().st_size // 4096) * 4096
            except OSError:
                continue  # removed while walking
        return total

    # ------------------------------------------------------------------ lazily computed states

    def refresh(self, now: float | None = None) -> None:
        """Drop mount targets whose deletion has completed."""
        now = time.time() if now is None else now
        changed = False
        for fs in self.file_systems.values():
            mts = fs["mount_targets"]
            for domain in [d for d, mt in mts.items() if mt.get("gone_at") and mt["gone_at"] <= now]:
                del mts[domain]
                changed = True
        if changed:
            self.save()

    @staticmethod
    def fs_status(fs: Record, now: float | None = None) -> str:
        return "Running" if (time.time() if now is None else now) >= fs["ready_at"] else "Pending"

    @staticmethod
    def mt_status(mt: Record, now: float | None = None) -> str:
        now = time.time() if now is None else now
        if mt.get("gone_at"):
            return "Deleting"
        return "Active" if now >= mt["ready_at"] else "Pending"

    def remove_file_system(self, fs_id: str) -> None:
        self.file_systems.pop(fs_id, None)
        self.client_tokens = {t: v for t, v in self.client_tokens.items() if v["fs_id"] != fs_id}
        shutil.rmtree(self.data_dir(fs_id), ignore_errors=True)
        self.save()
