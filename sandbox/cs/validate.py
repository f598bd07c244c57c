"""Validation of the CreateCluster body, as the Container Service checks it for a serverless cluster.

The sandbox creates the two serverless kinds: ACK Serverless (ASK), `cluster_type="ManagedKubernetes"` with
`profile="Serverless"`, and ACS (Container Compute Service), `cluster_type="ManagedKubernetes"` with
`profile="Acs"`. Any other type is refused with a message that says so, rather than silently creating
something the real service would have created differently.

Uncertain: the SDK's CreateClusterRequest documentation (alibabacloud_cs20151215 7.2.3) does not list the
`profile` values; `Acs` comes from public third-party automation that creates ACS clusters through this API
(OpenAPI scripts and Terraform `alicloud_cs_managed_kubernetes` modules with `profile = "Acs"`). ACS-only
create parameters are not modelled (docs/sandbox.md).

Parameters refused as deprecated (decided from the ACK API docs and the OpenAPI deprecation announcement
that also retires DescribeClusters/DescribeClustersV1):

- `cluster_type="Ask"` and `profile="ask.v2"`: the legacy ASK type; every such cluster was migrated to
  ManagedKubernetes/Serverless in 2024, and new ones can no longer be created;
- `nat_gateway`: deprecated in favour of `snat_entry`;
- `logging_type` with any value other than `SLS` (the only value the field ever accepted for ASK).

`load_balancer_spec` and `service_discovery_types` are documented as deprecated *without effect*, so they
are accepted and ignored, as the real service does.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import string
from typing import Any

from .errors import CsError, invalid

NAME_RE = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}$")
VERSION_RE = re.compile(r"^\d+\.\d+\.\d+-aliyun\.\d+$")
DEFAULT_VERSION = "1.32.1-aliyun.1"
DEFAULT_SERVICE_CIDR = "172.19.0.0/20"
RESERVED_TAG_PREFIXES = ("aliyun", "acs:", "http://", "https://")
_ALNUM = string.ascii_lowercase + string.digits
SERVERLESS_PROFILES = ("Serverless", "Acs")


def flavour_of(rec: dict[str, Any]) -> str:
    """The sandbox Kubernetes flavour of a cluster record: "acs" for profile Acs, else "ask"."""
    return "acs" if rec.get("profile") == "Acs" else "ask"


def _rand(prefix: str, n: int = 22) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(n))


def deprecated(field: str, value: Any, instead: str) -> CsError:
    return CsError(400, "InvalidParameter",
                   f"The parameter {field}={value!r} is deprecated and no longer supported; {instead}.")


def _bool(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(f"{key} must be a boolean, got {value!r}.")
    return value


def _tags(raw: Any) -> list[dict[str, str]]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise invalid("tags must be a list of {key, value} objects.")
    if len(raw) > 20:
        raise invalid("A cluster can have at most 20 tags.")
    tags = []
    for tag in raw:
        key, value = tag.get("key"), tag.get("value", "")
        if not isinstance(key, str) or not key or len(key) > 128:
            raise invalid(f"Invalid tag key {key!r}: 1 to 128 characters.")
        if key.lower().startswith(RESERVED_TAG_PREFIXES):
            raise invalid(f"Invalid tag key {key!r}: must not start with aliyun, acs:, http:// or https://.")
        if not isinstance(value, str) or len(value) > 128:
            raise invalid(f"Invalid tag value {value!r} for key {key!r}.")
        tags.append({"key": key, "value": value})
    return tags


def validate_create(body: Any, region: str) -> dict[str, Any]:
    """Return the normalized cluster spec, or raise `CsError` (400) naming the offending parameter."""
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise invalid("name is required.")
    if not NAME_RE.match(name):
        raise invalid(f"Invalid cluster name {name!r}: 1 to 63 characters, digits, letters and hyphens (-), "
                      "and it cannot start with a hyphen.")
    region_id = body.get("region_id")
    if not region_id:
        raise invalid("region_id is required.")
    if region_id != region:
        raise CsError(400, "InvalidParameter",
                      f"region_id {region_id!r} does not match the endpoint's region {region!r}.")
    cluster_type, profile = body.get("cluster_type"), body.get("profile")
    if cluster_type == "Ask":
        raise deprecated("cluster_type", cluster_type, "use cluster_type=ManagedKubernetes with profile=Serverless")
    if profile == "ask.v2":
        raise deprecated("profile", profile, "use cluster_type=ManagedKubernetes with profile=Serverless")
    if not cluster_type:
        raise invalid("cluster_type is required.")
    if cluster_type != "ManagedKubernetes" or profile not in SERVERLESS_PROFILES:
        raise invalid(f"Unsupported cluster_type={cluster_type!r} profile={profile!r}: this region serves ACK "
                      "Serverless (cluster_type=ManagedKubernetes, profile=Serverless) and ACS "
                      "(cluster_type=ManagedKubernetes, profile=Acs) clusters only.")
    if body.get("nat_gateway") is not None:
        raise deprecated("nat_gateway", body["nat_gateway"], "use snat_entry")
    logging_type = body.get("logging_type")
    if logging_type not in (None, "", "SLS"):
        raise deprecated("logging_type", logging_type, "omit it, or install the logging addon")
    cluster_spec = body.get("cluster_spec") or "ack.standard"
    if cluster_spec not in ("ack.standard", "ack.pro.small"):
        raise invalid(f"Invalid cluster_spec {cluster_spec!r}: ack.standard or ack.pro.small.")
    version = body.get("kubernetes_version") or DEFAULT_VERSION
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise invalid(f"Invalid kubernetes_version {version!r}, e.g. {DEFAULT_VERSION}.")
    service_cidr = body.get("service_cidr") or DEFAULT_SERVICE_CIDR
    try:
        ipaddress.ip_network(service_cidr)
    except (ValueError, TypeError):
        raise invalid(f"Invalid service_cidr {service_cidr!r}.") from None
    vpc_id, vswitch_ids = body.get("vpcid"), body.get("vswitch_ids")
    if vswitch_ids is not None and (not isinstance(vswitch_ids, list)
                                    or not all(isinstance(v, str) and v for v in vswitch_ids)):
        raise invalid("vswitch_ids must be a list of vSwitch ids.")
    if vpc_id and not vswitch_ids:
        raise invalid("vswitch_ids is required when vpcid is specified.")
    if vswitch_ids and not vpc_id:
        raise invalid("vpcid is required when vswitch_ids is specified.")
    if not vpc_id and not (body.get("zone_id") or body.get("zoneid")):
        # CreateCluster for ACK Serverless (https://www.alibabacloud.com/help/doc-detail/144246.htm): without
        # vpcid/vswitch_ids the zone is needed (the page spells it `zoneid`, the SDK sends `zone_id`; both are
        # taken). The real service answers 400; the error code is a choice, like the other validation errors here.
        raise invalid("zone_id is required when vpcid and vswitch_ids are not specified.")
    if not vpc_id:  # ASK creates the VPC and a vSwitch itself
        vpc_id, vswitch_ids = _rand("vpc-"), [_rand("vsw-")]
    addons = body.get("addons") or []
    if not isinstance(addons, list) or not all(isinstance(a, dict) and a.get("name") for a in addons):
        raise invalid("addons must be a list of objects with a name.")
    return {
        "name": name,
        "region_id": region_id,
        "cluster_type": cluster_type,
        "profile": profile,
        "cluster_spec": cluster_spec,
        "kubernetes_version": version,
        "service_cidr": service_cidr,
        "vpc_id": vpc_id,
        "vswitch_ids": list(vswitch_ids or []),
        "security_group_id": body.get("security_group_id") or _rand("sg-", 20),
        "tags": _tags(body.get("tags")),
        "deletion_protection": _bool(body, "deletion_protection", False),
        "snat_entry": _bool(body, "snat_entry", False),
        "endpoint_public_access": _bool(body, "endpoint_public_access", False),
        "timezone": body.get("timezone") or "Asia/Shanghai",
        "resource_group_id": body.get("resource_group_id") or "",
        "zone_id": body.get("zone_id") or body.get("zoneid") or f"{region}-a",
        "addons": addons,
        "logging_type": logging_type or "",
        "client_token": body.get("client_token") or "",
        "rrsa": _rrsa(body),
    }


def _rrsa(body: dict[str, Any]) -> bool:
    """RRSA requested: `rrsa_config.enabled`, or the deprecated `enable_rrsa` (CreateClusterRequest in
    alibabacloud_cs20151215 documents both; https://www.alibabacloud.com/help/en/ack/serverless-kubernetes/developer-reference/api-cs-2015-12-15-createcluster-serverless)."""
    config = body.get("rrsa_config")
    if config is not None and not isinstance(config, dict):
        raise invalid("rrsa_config must be an object like {\"enabled\": true}.")
    if config and config.get("enabled") is not None:
        return bool(config["enabled"])
    return bool(body.get("enable_rrsa", False))
