"""NAS operations: CreateFileSystem, DescribeFileSystems, CreateMountTarget, DescribeMountTargets,
DeleteMountTarget, DeleteFileSystem — validation, rules and response bodies in the SDK's exact nesting.

`params` is the flat query-string dict the SDK sends (`Tag.1.Key`, booleans as "True"/"False").
Rules enforced as documented for General-purpose NAS: at most 2 mount targets per file system; mount
targets only on a `Running` file system; DeleteFileSystem only once all mount targets are gone; the
`ClientToken` makes CreateFileSystem idempotent (same token and parameters -> same FileSystemId).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
import time
from typing import Any

from .errors import NasError, fs_not_found, invalid, missing, mt_not_found
from .store import NasStore, Record, create_time

MAX_MOUNT_TARGETS = 2
ACCESS_GROUPS = ("DEFAULT_VPC_GROUP_NAME", "DEFAULT_CLASSIC_GROUP_NAME")
STORAGE_TYPES = {"standard": ("Performance", "Capacity", "Premium", "Agentic"), "extreme": ("standard", "advance")}
PROTOCOLS = {"standard": ("NFS", "SMB"), "extreme": ("NFS",)}
DESCRIPTION_RE = re.compile(r"^[A-Za-z\u4e00-\u9fa5][A-Za-z0-9\u4e00-\u9fa5:_\-]{1,127}$")
RESERVED_TAG_PREFIXES = ("aliyun", "acs:", "http://", "https://")
_ALNUM = string.ascii_lowercase + string.digits
Params = dict[str, str]


def _bool(params: Params, key: str) -> bool:
    return params.get(key, "").lower() == "true"


def _int(params: Params, key: str, default: int, low: int, high: int) -> int:
    raw = params.get(key)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid(key, f"{key} must be an integer.") from None
    if not low <= value <= high:
        raise invalid(key, f"{key} must be between {low} and {high}.")
    return value


def parse_tags(params: Params) -> list[dict[str, str]]:
    """Tag.N.Key / Tag.N.Value (N from 1), as tea flattens a list of tag models."""
    tags: dict[int, dict[str, str]] = {}
    for key, value in params.items():
        m = re.fullmatch(r"Tag\.(\d+)\.(Key|Value)", key)
        if m:
            tags.setdefault(int(m.group(1)), {})[m.group(2)] = value
    out = [{"Key": t.get("Key", ""), "Value": t.get("Value", "")} for _, t in sorted(tags.items())]
    if len(out) > 20:
        raise invalid("Tag", "At most 20 tags are allowed.")
    for tag in out:
        if not tag["Key"] or tag["Key"].lower().startswith(RESERVED_TAG_PREFIXES):
            raise invalid("Tag", f"Invalid tag key {tag['Key']!r}.")
    return out


def _dry_run(params: Params) -> None:
    if _bool(params, "DryRun"):
        raise NasError(400, "DryRunOperation", "Request validation has been passed with DryRun flag set.")


class NasService:
    def __init__(self, store: NasStore, region: str, *, ready_delay_s: Any, default_zone: str) -> None:
        self.store = store
        self.region = region
        self._ready_delay = ready_delay_s  # callable -> float, read per call (a live knob)
        self.default_zone = default_zone

    def _fs(self, params: Params) -> Record:
        fs_id = params.get("FileSystemId")
        if not fs_id:
            raise missing("FileSystemId")
        self.store.refresh()
        fs = self.store.file_systems.get(fs_id)
        if fs is None:
            raise fs_not_found(fs_id)
        return fs

    # ------------------------------------------------------------------ file systems

    def create_file_system(self, params: Params) -> dict[str, Any]:
        fs_type = params.get("FileSystemType") or "standard"
        if fs_type not in STORAGE_TYPES:
            raise invalid("FileSystemType", f"FileSystemType {fs_type!r} is not supported here "
                          "(standard or extreme).")
        protocol = params.get("ProtocolType")
        if not protocol:
            raise missing("ProtocolType")
        if protocol not in PROTOCOLS[fs_type]:
            raise invalid("ProtocolType", f"ProtocolType {protocol!r} is not valid for a {fs_type} file system.")
        storage = params.get("StorageType")
        if not storage:
            raise missing("StorageType")
        if storage not in STORAGE_TYPES[fs_type]:
            raise invalid("StorageType", f"StorageType {storage!r} is not valid for a {fs_type} file system: "
                          f"{', '.join(STORAGE_TYPES[fs_type])}.")
        zone = params.get("ZoneId") or ""
        if fs_type == "extreme" and not zone:
            raise missing("ZoneId")
        if zone and not zone.startswith(self.region):
            raise NasError(404, "InvalidZoneId.NotFound", f"The specified zone {zone} does not exist.")
        capacity = _int(params, "Capacity", 0, 0, 1_000_000)
        if fs_type == "extreme" and capacity < 100:
            raise invalid("Capacity", "Capacity (GiB, at least 100) is required for an extreme file system.")
        charge = params.get("ChargeType") or "PayAsYouGo"
        if charge not in ("PayAsYouGo", "Subscription"):
            raise invalid("ChargeType", f"ChargeType {charge!r} is not valid.")
        encrypt = _int(params, "EncryptType", 0, 0, 2)
        if encrypt == 2 and not params.get("KmsKeyId"):
            raise missing("KmsKeyId")
        description = params.get("Description") or ""
        if description and (not DESCRIPTION_RE.match(description) or "://" in description):
            raise invalid("Description", "Description must be 2 to 128 characters, start with a letter and "
                          "contain no http:// or https://.")
        tags = parse_tags(params)
        token = params.get("ClientToken") or ""
        if len(token) > 64 or not token.isascii():
            raise invalid("ClientToken", "ClientToken must be at most 64 ASCII characters.")
        _dry_run(params)
        fingerprint = hashlib.sha256(repr(sorted((k, v) for k, v in params.items() if k != "ClientToken"))
                                     .encode()).hexdigest()
        if token and token in self.store.client_tokens:
            seen = self.store.client_tokens[token]
            if seen["fingerprint"] != fingerprint:
                raise NasError(400, "IdempotentParameterMismatch",
                               "The request uses the same client token as a previous, but non-identical request.")
            return {"FileSystemId": seen["fs_id"]}
        fs_id = secrets.token_hex(5) if fs_type == "standard" else "extreme-" + secrets.token_hex(4)
        now = time.time()
        self.store.file_systems[fs_id] = {
            "FileSystemId": fs_id, "FileSystemType": fs_type, "ProtocolType": protocol, "StorageType": storage,
            "ZoneId": zone or self.default_zone, "ChargeType": charge, "EncryptType": encrypt,
            "KMSKeyId": params.get("KmsKeyId", ""), "Capacity": capacity, "Description": description,
            "Tags": tags, "ResourceGroupId": params.get("ResourceGroupId", ""), "CreateTime": create_time(),
            "created_ts": now, "ready_at": now + float(self._ready_delay()), "mount_targets": {},
        }
        if token:
            self.store.client_tokens[token] = {"fs_id": fs_id, "fingerprint": fingerprint}
        self.store.data_dir(fs_id).mkdir(parents=True, exist_ok=True)
        self.store.save()
        return {"FileSystemId": fs_id}

    def describe_file_systems(self, params: Params) -> dict[str, Any]:
        self.store.refresh()
        page_number = _int(params, "PageNumber", 1, 1, 1_000_000)
        page_size = _int(params, "PageSize", 10, 1, 100)
        rows = sorted(self.store.file_systems.values(), key=lambda f: f["created_ts"], reverse=True)
        if params.get("FileSystemId"):
            wanted = set(params["FileSystemId"].split(","))
            rows = [f for f in rows if f["FileSystemId"] in wanted]
        types = params.get("FileSystemType") or "all"
        if types != "all":
            rows = [f for f in rows if f["FileSystemType"] in types.split(",")]
        for tag in parse_tags(params):
            rows = [f for f in rows if tag in f["Tags"]]
        if params.get("VpcId"):
            rows = [f for f in rows if any(mt["VpcId"] == params["VpcId"] for mt in f["mount_targets"].values())]
        if params.get("ResourceGroupId"):
            rows = [f for f in rows if f["ResourceGroupId"] == params["ResourceGroupId"]]
        page = rows[(page_number - 1) * page_size: page_number * page_size]
        return {"TotalCount": len(rows), "PageSize": page_size, "PageNumber": page_number,
                "FileSystems": {"FileSystem": [self._fs_view(f) for f in page]}}

    def _fs_view(self, fs: Record) -> dict[str, Any]:
        mts = list(fs["mount_targets"].values())
        return {
            "FileSystemId": fs["FileSystemId"], "Description": fs["Description"],
            "Status": self.store.fs_status(fs), "ProtocolType": fs["ProtocolType"],
            "StorageType": fs["StorageType"], "FileSystemType": fs["FileSystemType"], "ZoneId": fs["ZoneId"],
            "RegionId": self.region, "ChargeType": fs["ChargeType"], "EncryptType": fs["EncryptType"],
            "KMSKeyId": fs["KMSKeyId"], "MeteredSize": self.store.metered_bytes(fs["FileSystemId"]),
            "MeteredIASize": 0, "MeteredArchiveSize": 0,
            "Capacity": fs["Capacity"], "Bandwidth": 0, "CreateTime": fs["CreateTime"], "ExpiredTime": "",
            "ResourceGroupId": fs["ResourceGroupId"], "Version": "", "AccessPointCount": "0",
            "VpcId": mts[0]["VpcId"] if mts else "",
            "VswIds": {"VswId": sorted({mt["VSwitchId"] for mt in mts})},
            "MountTargets": {"MountTarget": [{
                "MountTargetDomain": mt["MountTargetDomain"], "Status": self.store.mt_status(mt),
                "NetworkType": mt["NetworkType"], "VpcId": mt["VpcId"], "VswId": mt["VSwitchId"],
                "AccessGroupName": mt["AccessGroupName"], "DualStackMountTargetDomain": "",
                "Tags": {"Tag": []}, "ClientMasterNodes": {"ClientMasterNode": []},
            } for mt in mts]},
            "Tags": {"Tag": fs["Tags"]},
            "SupportedFeatures": {"SupportedFeature": []},
            "Packages": {"Package": []},
        }

    def delete_file_system(self, params: Params) -> dict[str, Any]:
        fs = self._fs(params)
        if fs["mount_targets"]:
            raise NasError(403, "OperationDenied.HasMountTargets",
                           "The file system has mount targets; delete all mount targets before deleting it.")
        if self.store.fs_status(fs) != "Running":
            raise NasError(403, "InvalidFileSystemStatus.Ordering",
                           "The filesystem is ordering now, please check it later.")
        self.store.remove_file_system(fs["FileSystemId"])
        return {}

    # ------------------------------------------------------------------ mount targets

    def create_mount_target(self, params: Params) -> dict[str, Any]:
        fs = self._fs(params)
        network = params.get("NetworkType")
        if not network:
            raise missing("NetworkType")
        if network != "Vpc":
            raise invalid("NetworkType", f"NetworkType {network!r} is not supported; use Vpc.")
        vpc_id, vsw_id = params.get("VpcId"), params.get("VSwitchId")
        if not vpc_id:
            raise missing("VpcId")
        if not vsw_id:
            raise missing("VSwitchId")
        if not vpc_id.startswith("vpc-"):
            raise NasError(404, "InvalidVpcId.NotFound", f"The specified VPC {vpc_id} does not exist.")
        if not vsw_id.startswith("vsw-"):
            raise NasError(404, "InvalidVSwitchId.NotFound", f"The specified vSwitch {vsw_id} does not exist.")
        group = params.get("AccessGroupName")
        if not group:
            raise missing("AccessGroupName")
        if group not in ACCESS_GROUPS:
            raise NasError(404, "InvalidAccessGroup.NotFound", f"The specified access group {group} does not exist.")
        if self.store.fs_status(fs) != "Running":
            raise NasError(403, "InvalidFileSystemStatus.Ordering",
                           "The filesystem is ordering now, please check it later.")
        if len(fs["mount_targets"]) >= MAX_MOUNT_TARGETS:
            raise NasError(403, "MountTargetLimitExceeded",
                           f"A file system can have at most {MAX_MOUNT_TARGETS} mount targets.")
        _dry_run(params)
        suffix = "".join(secrets.choice(_ALNUM) for _ in range(5))
        domain = f"{fs['FileSystemId']}-{suffix}.{self.region}.nas.aliyuncs.com"
        fs["mount_targets"][domain] = {
            "MountTargetDomain": domain, "NetworkType": network, "VpcId": vpc_id, "VSwitchId": vsw_id,
            "AccessGroupName": group, "ready_at": time.time() + float(self._ready_delay()),
        }
        self.store.save()
        return {"MountTargetDomain": domain, "MountTargetExtra": {"DualStackMountTargetDomain": ""}}

    def _mt(self, fs: Record, domain: str) -> Record:
        mt = fs["mount_targets"].get(domain)
        if mt is None:
            raise mt_not_found(domain)
        return mt

    def describe_mount_targets(self, params: Params) -> dict[str, Any]:
        fs = self._fs(params)
        page_number = _int(params, "PageNumber", 1, 1, 1_000_000)
        page_size = _int(params, "PageSize", 10, 1, 100)
        mts = list(fs["mount_targets"].values())
        if params.get("MountTargetDomain"):
            mts = [self._mt(fs, params["MountTargetDomain"])]
        page = mts[(page_number - 1) * page_size: page_number * page_size]
        return {"TotalCount": len(mts), "PageSize": page_size, "PageNumber": page_number,
                "MountTargets": {"MountTarget": [{
                    "MountTargetDomain": mt["MountTargetDomain"], "Status": self.store.mt_status(mt),
                    "NetworkType": mt["NetworkType"], "VpcId": mt["VpcId"], "VswId": mt["VSwitchId"],
                    "AccessGroup": mt["AccessGroupName"], "IPVersion": "ipv4", "AccessPointAccessOnly": False,
                    "DualStackMountTargetDomain": "", "Tags": {"Tag": []},
                    "ClientMasterNodes": {"ClientMasterNode": []},
                } for mt in page]}}

    def delete_mount_target(self, params: Params) -> dict[str, Any]:
        fs = self._fs(params)
        domain = params.get("MountTargetDomain")
        if not domain:
            raise missing("MountTargetDomain")
        mt = self._mt(fs, domain)
        if not mt.get("gone_at"):
            mt["gone_at"] = time.time() + float(self._ready_delay())
            self.store.save()
        return {}
