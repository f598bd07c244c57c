"""Response shapes of the Container Service, copied field by field from the SDK's response models.

The tea SDK swallows shape mismatches (a dict where a list is expected makes `resp.body` None), so every
nested field here has the exact type the model's `from_map` expects: `tags` a list of {key,value},
`vswitch_ids` a list, `master_url` and `meta_data` JSON *strings*, `size` an int.
"""

from __future__ import annotations

import json
import time
from typing import Any

import yaml

from ..oss.context import ACCOUNT_ID
from ..ram import STS_AUDIENCE, provider_arn, rrsa_issuer, rrsa_provider_name
from .errors import CsError, invalid
from .store import Record, rfc3339

LIST_FIELDS = ("cluster_id", "name", "region_id", "state", "cluster_type", "profile", "cluster_spec",
               "created", "updated", "deletion_protection", "vpc_id", "vswitch_ids", "security_group_id",
               "service_cidr", "tags", "timezone", "resource_group_id")


def _common(rec: Record) -> dict[str, Any]:
    out = {k: rec[k] for k in LIST_FIELDS}
    out.update(
        current_version=rec["kubernetes_version"],
        init_version=rec["kubernetes_version"],
        next_version="",
        size=0,  # ACK Serverless has no ECS worker nodes
        container_cidr="",
        cluster_domain="cluster.local",
        proxy_mode="ipvs",
        ip_stack="ipv4",
    )
    return out


def list_item(rec: Record) -> dict[str, Any]:
    return _common(rec)


def master_url(rec: Record, kube_url: str | None) -> str:
    if rec["state"] not in ("running", "deleting") or not kube_url:
        return ""
    endpoints = {"intranet_api_server_endpoint": kube_url}
    if rec.get("endpoint_public_access"):
        endpoints["api_server_endpoint"] = kube_url
    return json.dumps(endpoints)


def detail(rec: Record, kube_url: str | None) -> dict[str, Any]:
    out = _common(rec)
    out.update(
        vswitch_id=",".join(rec["vswitch_ids"]),
        subnet_cidr="",
        zone_id=rec["zone_id"],
        network_mode="vpc",
        private_zone=False,
        docker_version="",
        external_loadbalancer_id="lb-" + rec["cluster_id"][1:21],
        worker_ram_role_name="",
        node_cidr_mask="",
        extra_sans=[],
        master_url=master_url(rec, kube_url),
        meta_data=json.dumps({
            "Addons": rec.get("addons", []),
            "KubernetesVersion": rec["kubernetes_version"],
            "SNatEntry": rec.get("snat_entry", False),
            "ServiceCIDR": rec["service_cidr"],
            "EndpointPublicAccess": rec.get("endpoint_public_access", False),
        }),
        parameters={"ServiceCIDR": rec["service_cidr"], "SNatEntry": str(rec.get("snat_entry", False))},
        maintenance_window={"enable": False, "maintenance_time": "", "duration": "", "weekly_period": "",
                            "recurrence": ""},
        operation_policy={"cluster_auto_upgrade": {"enabled": False, "channel": ""}},
        rrsa_config=rrsa_config(rec),
        auto_mode={"enable": False},
    )
    return out


def task_view(task: Record) -> dict[str, Any]:
    out = {
        "task_id": task["task_id"],
        "cluster_id": task["cluster_id"],
        "task_type": task["task_type"],
        "state": task["state"],
        "created": task["created"],
        "updated": task["updated"],
        "current_stage": "" if task["state"] != "running" else task["task_type"],
        "stages": [],
        "events": [],
        "target": {"id": task["cluster_id"], "type": "cluster"},
        "task_result": [{"data": task["cluster_id"], "status": task["state"]}],
    }
    if "error" in task:
        out["error"] = task["error"]
    return out


def parse_bool(value: str | None, name: str, default: bool) -> bool:
    """Query booleans arrive as Python's str(bool): "True"/"False" (any case accepted)."""
    if value is None or value == "":
        return default
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise invalid(f"{name} must be true or false, got {value!r}.")
    return lowered == "true"


def kubeconfig(rec: Record, kube: Any, private_ip: bool, duration_min: str | None) -> dict[str, str]:
    """DescribeClusterUserKubeconfig: a kubeconfig for the cluster's sandbox Kubernetes API server."""
    if rec["state"] != "running" or kube is None:
        raise CsError(400, "ErrorClusterState",
                      f"The cluster {rec['cluster_id']} is in state {rec['state']}; the kubeconfig is "
                      "available when the cluster is running.")
    if duration_min not in (None, ""):
        try:
            minutes = int(duration_min)
        except ValueError:
            raise invalid(f"TemporaryDurationMinutes must be an integer, got {duration_min!r}.") from None
        if not 15 <= minutes <= 4320:
            raise invalid("TemporaryDurationMinutes must be between 15 and 4320.")
        expires = time.time() + minutes * 60
    else:
        expires = time.time() + 3 * 365 * 86400  # certificates without a temporary duration last 3 years
    if not private_ip and not rec.get("endpoint_public_access"):
        raise invalid(f"The cluster {rec['cluster_id']} has no public API server endpoint "
                      "(endpoint_public_access is false); set PrivateIpAddress=true for the internal kubeconfig.")
    config = kube.kubeconfig(user=f"{rec['cluster_id']}-user", server=kube.url)
    return {"config": yaml.safe_dump(config, sort_keys=False), "expiration": rfc3339(expires)}


def rrsa_config(rec: Record) -> dict[str, Any]:
    """DescribeClusterDetail's `rrsa_config` (fields of DescribeClusterDetailResponseBodyRrsaConfig in
    alibabacloud_cs20151215): the issuer, the RAM OIDC provider and the audience when RRSA is on."""
    if not rec.get("rrsa", rec.get("default", False)):
        return {"enabled": False}
    cid, region = rec["cluster_id"], rec["region_id"]
    issuer = rrsa_issuer(region, cid)
    return {"enabled": True, "issuer": issuer, "audience": STS_AUDIENCE, "oidc_arn": provider_arn(ACCOUNT_ID, cid),
            "oidc_name": rrsa_provider_name(cid), "jwks_url": issuer + "/keys.json",
            "open_api_configuration_url": issuer + "/.well-known/openid-configuration",
            "max_oidc_token_expiration": "12h"}
