"""The sandbox account's RAM roles and OIDC identity providers: what STS AssumeRoleWithOIDC consults.

- **OIDC providers.** Turning RRSA on for an ACK/ACS cluster makes ACK create an OIDC issuer for the cluster and a
  RAM OIDC identity provider named `ack-rrsa-<cluster id>` that trusts it, with client id (audience)
  `sts.aliyuncs.com`; DescribeClusterDetail shows both in `rrsa_config` (`issuer`, `oidc_arn`, `audience`)
  (https://www.alibabacloud.com/help/en/ack/ack-managed-and-ack-dedicated/user-guide/use-rrsa-to-authorize-pods-to-access-different-cloud-services).
  Here the providers are derived from the sandbox's RRSA clusters (`Sandbox.rrsa_clusters`); a token is checked
  against the cluster's service-account signing key (`k8s/satokens.py`) instead of a JWKS fetched over https.
- **Roles.** A role has a trust policy (`AssumeRolePolicyDocument`, RAM policy language version 1) and a maximum
  session duration (3600 s unless set). For RRSA the trust policy names the provider as a `Federated` principal
  and constrains the token's claims with `oidc:aud`, `oidc:iss` and `oidc:sub` conditions (`StringEquals`,
  `StringLike` with `*` and `?`): CreateRole, https://help.aliyun.com/document_detail/2337660.html,
  and the RRSA page above. Roles live in `DIR/ram/roles.json`; tests and users add or replace one through the
  control endpoint (`PUT /ram/roles/<name>` with `{"trust_policy": {...}}`).

The sandbox account starts with one role, `ask-batch-pods` (`SEEDED_ROLE`), trusting the RRSA provider of every
RRSA cluster of the sandbox for service accounts named `askb-sa-*` in any namespace: the role docs/ram-policy.md
tells a user to create. On a real account a user adds each new cluster's provider to the trust policy; the sandbox
does it when CS creates a cluster with RRSA (not faithful, listed in docs/sandbox.md).

Not emulated: the role's permission policies (temporary credentials may do whatever the account's keys may do),
`Deny` statements, condition operators other than the two above, RAM's own API.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEEDED_ROLE = "ask-batch-pods"
STS_AUDIENCE = "sts.aliyuncs.com"
DEFAULT_MAX_SESSION_S = 3600
#: RAM role names: 1-64 characters, letters, digits, '.' and '-' (CreateRole, RoleName:
#: https://help.aliyun.com/document_detail/2337660.html).
ROLE_NAME_RE = re.compile(r"^[A-Za-z0-9.-]{1,64}$")
ROLE_ARN_RE = re.compile(r"^acs:ram::(?P<account>[0-9]+):role/(?P<name>[^/]+)$")
PROVIDER_ARN_RE = re.compile(r"^acs:ram::(?P<account>[0-9]+):oidc-provider/(?P<name>[A-Za-z0-9._-]+)$")


def rrsa_issuer(region: str, cluster_id: str) -> str:
    """The OIDC issuer URL of a cluster with RRSA (the shape ACK's `rrsa_config.issuer` has)."""
    return f"https://oidc-ack-{region}.oss-{region}.aliyuncs.com/{cluster_id}"


def rrsa_provider_name(cluster_id: str) -> str:
    return f"ack-rrsa-{cluster_id}"


def provider_arn(account: str, cluster_id: str) -> str:
    return f"acs:ram::{account}:oidc-provider/{rrsa_provider_name(cluster_id)}"


def role_arn(account: str, name: str) -> str:
    return f"acs:ram::{account}:role/{name}"


@dataclass(frozen=True)
class OidcProvider:
    arn: str
    issuer: str
    client_ids: tuple[str, ...]
    public_key: Any  # what PyJWT verifies RS256 with


def _list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def trust_allows(policy: dict[str, Any], *, provider: str, claims: dict[str, str]) -> bool:
    """Whether an Allow statement of the trust policy lets the provider's token with these claims assume the
    role (`sts:AssumeRole`, `Federated` principal, every condition met)."""
    for statement in policy.get("Statement") or []:
        if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
            continue
        if "sts:AssumeRole" not in _list(statement.get("Action")):
            continue
        if provider not in _list((statement.get("Principal") or {}).get("Federated")):
            continue
        if all(_condition(op, key, values, claims)
               for op, block in (statement.get("Condition") or {}).items()
               for key, values in (block or {}).items()):
            return True
    return False


def _condition(op: str, key: str, values: Any, claims: dict[str, str]) -> bool:
    actual = claims.get(key)
    if actual is None:
        return False
    if op == "StringEquals":
        return actual in _list(values)
    if op == "StringLike":
        return any(fnmatch.fnmatchcase(actual, pattern) for pattern in _list(values))
    return False  # an operator the sandbox does not know never matches (fails closed)


class RamStore:
    """Roles of the sandbox account, persisted in `<dir>/roles.json` (see module doc)."""

    def __init__(self, directory: Path, *, account: str) -> None:
        self.file = directory / "roles.json"
        self.account = account
        self.roles: dict[str, dict[str, Any]] = {}
        if self.file.exists():
            self.roles = json.loads(self.file.read_text())

    def seed(self, providers: list[str]) -> None:
        """Create `SEEDED_ROLE` if missing, and make it trust each of `providers` (provider ARNs)."""
        role = self.roles.get(SEEDED_ROLE)
        if role is None:
            self.put_role(SEEDED_ROLE, {"Version": "1", "Statement": [{
                "Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"Federated": []},
                "Condition": {"StringEquals": {"oidc:aud": STS_AUDIENCE},
                              "StringLike": {"oidc:sub": "system:serviceaccount:*:askb-sa-*"}}}]})
            role = self.roles[SEEDED_ROLE]
        self.trust_providers(SEEDED_ROLE, providers)

    def trust_providers(self, name: str, providers: list[str]) -> None:
        role = self.roles.get(name)
        if role is None:
            return
        statement = role["trust_policy"]["Statement"][0]
        federated = _list(statement["Principal"].get("Federated"))
        statement["Principal"]["Federated"] = federated + [p for p in providers if p not in federated]
        self._save()

    def put_role(self, name: str, trust_policy: dict[str, Any], max_session_s: int = DEFAULT_MAX_SESSION_S) -> dict:
        """Create or replace a role. Raises ValueError for a bad name or policy."""
        if not ROLE_NAME_RE.match(name):
            raise ValueError(f"role name {name!r}: 1-64 letters, digits, '.' or '-'")
        if not isinstance(trust_policy, dict) or not isinstance(trust_policy.get("Statement"), list):
            raise ValueError("trust_policy must be a RAM policy document with a Statement list")
        if not 3600 <= int(max_session_s) <= 43200:
            raise ValueError("max_session_s must be 3600 to 43200")
        self.roles[name] = {"name": name, "arn": role_arn(self.account, name), "trust_policy": trust_policy,
                            "max_session_s": int(max_session_s)}
        self._save()
        return self.roles[name]

    def delete_role(self, name: str) -> bool:
        found = self.roles.pop(name, None) is not None
        self._save()
        return found

    def role(self, arn: str) -> dict[str, Any] | None:
        m = ROLE_ARN_RE.match(arn)
        if not m or m["account"] != self.account:
            return None
        return self.roles.get(m["name"])

    def _save(self) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(self.roles, indent=2))
        os.replace(tmp, self.file)
