"""Buckets, objects and multipart uploads on local disk, surviving restarts.

Layout under the data dir:

* `oss.sqlite3`: the metadata (buckets, objects, uploads, parts). SQLite in WAL mode gives
  per-object durable updates without rewriting a whole index on every put.
* `objects/<bucket>/<file id>`: one file per object. Keys can be 1023 bytes of anything, so files are
  named by a random id, never by the key. A put writes a temp file, renames it in place, then commits the
  metadata and removes the file it replaced. A crash leaves at worst an orphan file, never a torn object.
* `uploads/<upload id>/<part number>`: multipart parts until Complete or Abort.
* `tmp/`: request bodies while they stream in (cleared at start-up).

In memory each bucket keeps a dict key -> ObjectMeta and a *sorted* key list, so listing is a bisect
plus a slice, not a directory walk or a table scan. Keys sort by code point, which is the same order as
UTF-8 bytes, the order OSS lists in.

All metadata methods are synchronous and guarded by one lock. The aiohttp handlers call them from the
event loop; tests may also call them from another thread to seed data quickly.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import json
import os
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import crcmod

# CRC-64/ECMA as OSS computes it (`x-oss-hash-crc64ecma`); equal to alibabacloud_oss_v2.crc.Crc64.
_CRC64_POLY = 0x142F0E1EBA9EA3693


def new_crc64() -> crcmod.Crc:
    return crcmod.Crc(_CRC64_POLY, initCrc=0, xorOut=0xFFFFFFFFFFFFFFFF, rev=True)


def new_upload_id() -> str:
    return secrets.token_hex(16).upper()


@dataclass
class ObjectMeta:
    key: str
    file: str
    size: int
    etag: str  # quoted, upper-case hex, e.g. '"5D41402ABC4B2A76B9719D911017C592"' or '"...-3"'
    crc64: str  # decimal string
    content_type: str
    last_modified: float
    object_type: str = "Normal"  # Normal | Multipart
    content_md5: str | None = None  # base64, simple uploads only
    user_meta: dict[str, str] = field(default_factory=dict)  # without the x-oss-meta- prefix, lower-case
    headers: dict[str, str] = field(default_factory=dict)  # Cache-Control, Content-Disposition, ...


@dataclass
class Bucket:
    name: str
    created: float
    storage_class: str = "Standard"
    objects: dict[str, ObjectMeta] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)  # sorted


@dataclass
class Part:
    number: int
    size: int
    etag: str  # quoted upper-case MD5
    crc64: str
    last_modified: float


@dataclass
class Upload:
    upload_id: str
    bucket: str
    key: str
    initiated: float
    content_type: str
    user_meta: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    parts: dict[int, Part] = field(default_factory=dict)


@dataclass
class Written:
    """A request body streamed to a temp file, with its digests."""

    path: Path
    size: int
    md5: bytes
    crc64: int


class BodyWriter:
    """Streams a body to a temp file while computing MD5 and CRC-64 in the same pass."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = open(path, "wb")  # noqa: SIM115 - closed in finish()/discard()
        self._md5 = hashlib.md5()
        self._crc = new_crc64()
        self._size = 0

    def write(self, chunk: bytes) -> None:
        self._fh.write(chunk)
        self._md5.update(chunk)
        self._crc.update(chunk)
        self._size += len(chunk)

    @property
    def size(self) -> int:
        return self._size

    def finish(self) -> Written:
        self._fh.close()
        return Written(self.path, self._size, self._md5.digest(), self._crc.crcValue)

    def discard(self) -> None:
        self._fh.close()
        self.path.unlink(missing_ok=True)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (name TEXT PRIMARY KEY, created REAL NOT NULL, storage_class TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL, key TEXT NOT NULL, file TEXT NOT NULL, size INTEGER NOT NULL, etag TEXT NOT NULL,
    crc64 TEXT NOT NULL, content_type TEXT NOT NULL, last_modified REAL NOT NULL, object_type TEXT NOT NULL,
    content_md5 TEXT, user_meta TEXT NOT NULL, headers TEXT NOT NULL, PRIMARY KEY (bucket, key));
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY, bucket TEXT NOT NULL, key TEXT NOT NULL, initiated REAL NOT NULL,
    content_type TEXT NOT NULL, user_meta TEXT NOT NULL, headers TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS parts (
    upload_id TEXT NOT NULL, number INTEGER NOT NULL, size INTEGER NOT NULL, etag TEXT NOT NULL,
    crc64 TEXT NOT NULL, last_modified REAL NOT NULL, PRIMARY KEY (upload_id, number));
"""


class Storage:
    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir)
        self.objects_dir = self.root / "objects"
        self.uploads_dir = self.root / "uploads"
        self.tmp_dir = self.root / "tmp"
        for d in (self.objects_dir, self.uploads_dir):
            d.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.root / "oss.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self.buckets: dict[str, Bucket] = {}
        self.uploads: dict[str, Upload] = {}
        self._load()

    # ------------------------------------------------------------------------------------ loading

    def _load(self) -> None:
        for name, created, sc in self._db.execute("SELECT name, created, storage_class FROM buckets"):
            self.buckets[name] = Bucket(name, created, sc)
        rows = self._db.execute(
            "SELECT bucket, key, file, size, etag, crc64, content_type, last_modified, object_type, content_md5, "
            "user_meta, headers FROM objects"
        )
        for b, key, f, size, etag, crc, ct, lm, ot, md5, um, hd in rows:
            bucket = self.buckets.get(b)
            if bucket is None:
                continue
            bucket.objects[key] = ObjectMeta(key, f, size, etag, crc, ct, lm, ot, md5, json.loads(um), json.loads(hd))
        for bucket in self.buckets.values():
            bucket.keys = sorted(bucket.objects)
        for uid, b, key, init, ct, um, hd in self._db.execute(
            "SELECT upload_id, bucket, key, initiated, content_type, user_meta, headers FROM uploads"
        ):
            self.uploads[uid] = Upload(uid, b, key, init, ct, json.loads(um), json.loads(hd))
        for uid, num, size, etag, crc, lm in self._db.execute(
            "SELECT upload_id, number, size, etag, crc64, last_modified FROM parts"
        ):
            if uid in self.uploads:
                self.uploads[uid].parts[num] = Part(num, size, etag, crc, lm)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------------------------ buckets

    def create_bucket(self, name: str, storage_class: str = "Standard") -> Bucket | None:
        """Create a bucket; None if it already exists."""
        with self._lock:
            if name in self.buckets:
                return None
            bucket = Bucket(name, time.time(), storage_class)
            self._db.execute("INSERT INTO buckets VALUES (?, ?, ?)", (name, bucket.created, storage_class))
            (self.objects_dir / name).mkdir(parents=True, exist_ok=True)
            self.buckets[name] = bucket
            return bucket

    def delete_bucket(self, name: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM buckets WHERE name = ?", (name,))
            self.buckets.pop(name, None)
            shutil.rmtree(self.objects_dir / name, ignore_errors=True)

    def bucket_uploads(self, name: str) -> list[Upload]:
        with self._lock:
            return sorted(
                (u for u in self.uploads.values() if u.bucket == name), key=lambda u: (u.key, u.upload_id)
            )

    # ------------------------------------------------------------------------------------ objects

    def new_writer(self) -> BodyWriter:
        return BodyWriter(self.tmp_dir / secrets.token_hex(16))

    def object_path(self, bucket: str, meta: ObjectMeta) -> Path:
        return self.objects_dir / bucket / meta.file

    def commit_object(
        self,
        bucket_name: str,
        key: str,
        written: Written,
        *,
        content_type: str,
        user_meta: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        object_type: str = "Normal",
        etag: str | None = None,
        content_md5: str | None = None,
    ) -> ObjectMeta:
        """Move a finished temp file into place as `key` and record it (replacing any older version)."""
        file_id = secrets.token_hex(16)
        with self._lock:
            bucket = self.buckets[bucket_name]
            os.replace(written.path, self.objects_dir / bucket_name / file_id)
            meta = ObjectMeta(
                key=key,
                file=file_id,
                size=written.size,
                etag=etag or f'"{written.md5.hex().upper()}"',
                crc64=str(written.crc64),
                content_type=content_type,
                last_modified=time.time(),
                object_type=object_type,
                content_md5=content_md5,
                user_meta=dict(user_meta or {}),
                headers=dict(headers or {}),
            )
            self._db.execute(
                "INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (bucket_name, key, meta.file, meta.size, meta.etag, meta.crc64, meta.content_type,
                 meta.last_modified, meta.object_type, meta.content_md5, json.dumps(meta.user_meta),
                 json.dumps(meta.headers)),
            )
            old = bucket.objects.get(key)
            bucket.objects[key] = meta
            if old is None:
                bisect.insort(bucket.keys, key)
            else:
                (self.objects_dir / bucket_name / old.file).unlink(missing_ok=True)
            return meta

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str = "application/octet-stream",
                  user_meta: dict[str, str] | None = None) -> ObjectMeta:
        """Convenience for seeding data without HTTP (tests, fixtures)."""
        writer = self.new_writer()
        writer.write(data)
        written = writer.finish()
        return self.commit_object(bucket, key, written, content_type=content_type, user_meta=user_meta,
                                  content_md5=base64.b64encode(written.md5).decode())

    def delete_object(self, bucket_name: str, key: str) -> bool:
        with self._lock:
            bucket = self.buckets[bucket_name]
            meta = bucket.objects.pop(key, None)
            if meta is None:
                return False
            i = bisect.bisect_left(bucket.keys, key)
            if i < len(bucket.keys) and bucket.keys[i] == key:
                del bucket.keys[i]
            self._db.execute("DELETE FROM objects WHERE bucket = ? AND key = ?", (bucket_name, key))
            (self.objects_dir / bucket_name / meta.file).unlink(missing_ok=True)
            return True

    def copy_to_temp(self, bucket: str, meta: ObjectMeta) -> Written:
        """Copy an object's bytes to a temp file (blocking; run it in a thread for big objects)."""
        dst = self.tmp_dir / secrets.token_hex(16)
        shutil.copyfile(self.object_path(bucket, meta), dst)
        md5 = bytes.fromhex(meta.etag.strip('"')) if meta.object_type == "Normal" else b""
        return Written(dst, meta.size, md5, int(meta.crc64))

    # ---------------------------------------------------------------------------------- multipart

    def create_upload(self, bucket: str, key: str, content_type: str, user_meta: dict[str, str],
                      headers: dict[str, str]) -> Upload:
        with self._lock:
            up = Upload(new_upload_id(), bucket, key, time.time(), content_type, dict(user_meta), dict(headers))
            self._db.execute(
                "INSERT INTO uploads VALUES (?, ?, ?, ?, ?, ?, ?)",
                (up.upload_id, bucket, key, up.initiated, content_type, json.dumps(user_meta), json.dumps(headers)),
            )
            (self.uploads_dir / up.upload_id).mkdir(parents=True, exist_ok=True)
            self.uploads[up.upload_id] = up
            return up

    def part_path(self, upload_id: str, number: int) -> Path:
        return self.uploads_dir / upload_id / str(number)

    def commit_part(self, upload: Upload, number: int, written: Written) -> Part:
        with self._lock:
            os.replace(written.path, self.part_path(upload.upload_id, number))
            part = Part(number, written.size, f'"{written.md5.hex().upper()}"', str(written.crc64), time.time())
            self._db.execute(
                "INSERT OR REPLACE INTO parts VALUES (?, ?, ?, ?, ?, ?)",
                (upload.upload_id, number, part.size, part.etag, part.crc64, part.last_modified),
            )
            upload.parts[number] = part
            return part

    def assemble(self, upload: Upload, parts: Iterable[Part]) -> Written:
        """Concatenate parts into a temp file, computing the whole object's CRC-64 (blocking)."""
        dst = self.tmp_dir / secrets.token_hex(16)
        crc = new_crc64()
        size = 0
        with open(dst, "wb") as out:
            for part in parts:
                with open(self.part_path(upload.upload_id, part.number), "rb") as src:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
                        crc.update(chunk)
                        size += len(chunk)
        return Written(dst, size, b"", crc.crcValue)

    def drop_upload(self, upload_id: str) -> None:
        with self._lock:
            self.uploads.pop(upload_id, None)
            self._db.execute("DELETE FROM parts WHERE upload_id = ?", (upload_id,))
            self._db.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))
            shutil.rmtree(self.uploads_dir / upload_id, ignore_errors=True)
