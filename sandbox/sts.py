"""Sandbox Security Token Service (STS, API 2015-04-01, RPC style): AssumeRoleWithOIDC, and the temporary keys.

`make_app(...)` serves what `alibabacloud_credentials`' OIDC provider sends (GET or POST `/` with the parameters in
the query or a form body): `Action=AssumeRoleWithOIDC`, `RoleArn`, `OIDCProviderArn`, `OIDCToken`,
`RoleSessionName`, `DurationSeconds`, optional `Policy`. Like the real operation it needs no signature: the OIDC
token is the credential (https://www.alibabacloud.com/help/en/ram/developer-reference/api-sts-2015-04-01-assumerolewithoidc).

Checks, in order, each failing with the code the real service documents
(https://help.aliyun.com/zh/ram/developer-reference/api-sts-2015-04-01-errorcodes):

1. parameters present (`MissingParameter`), `RoleSessionName` 2-64 of `[A-Za-z0-9.@_-]`
   (`InvalidParameter.RoleSessionName`);
2. the provider is registered (`AuthenticationFail.NoPermission` "No such OIDC Provider registered.");
3. the token: three parts (`AuthenticationFail.OIDCToken.Invalid`), signature against the provider's key
   (`...InvalidSignature`), not expired (`...Expired`, "This JsonWebToken is expired."), `aud` one of the
   provider's client ids (`...AudienceNotMatch`), `iss` the provider's issuer (`...Invalid`; the real code for a
   wrong issuer is not published);
4. the role exists in the account (`EntityNotExist.Role`), `DurationSeconds` is 900 to the role's maximum
   (`InvalidParameter.DurationSeconds`), and its trust policy lets this provider's token with
   these `oidc:iss`/`oidc:aud`/`oidc:sub` claims assume it (`AuthenticationFail.NoPermission` "There is no
   permission").

The answer is the real shape: `RequestId`, `AssumedRoleUser {Arn, AssumedRoleId}`, `OIDCTokenInfo {Subject,
Issuer, ClientIds, ExpirationTime, IssuanceTime}` and `Credentials {AccessKeyId (STS.*), AccessKeySecret,
SecurityToken, Expiration (UTC, "%Y-%m-%dT%H:%M:%SZ")}`. The temporary keys go into `TemporaryKeys`, which the
sandbox OSS consults: a request signed with one needs its security token (`x-oss-security-token`) and stops
working at `Expiration`.

Not emulated: `Policy` narrowing (accepted, not applied), the role's permission policies, AssumeRole and the
other STS actions (answered `InvalidAction.NotFound`).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from aiohttp import web

from .acs3 import gateway_error, json_response
from .faults import Faults, fault_middleware
from .nas.errors import fault_responder
from .ram import OidcProvider, RamStore, trust_allows

SESSION_NAME_RE = re.compile(r"^[A-Za-z0-9.@_-]{2,64}$")
MIN_DURATION_S = 900
_ALNUM = string.ascii_letters + string.digits


class StsError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class TemporaryKey:
    secret: str
    security_token: str
    expires_at: float
    account: str
    role_arn: str


class TemporaryKeys(Mapping[str, str]):
    """AccessKeyId -> AccessKeySecret of the STS credentials still valid (a live view: expired ones drop out)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._keys: dict[str, TemporaryKey] = {}
        self.clock = clock

    def issue(self, *, account: str, role_arn: str, duration_s: int) -> tuple[str, TemporaryKey]:
        self._forget_expired()
        key_id = "STS." + "".join(secrets.choice(_ALNUM) for _ in range(24))
        key = TemporaryKey(secret="".join(secrets.choice(_ALNUM) for _ in range(44)),
                           security_token="CAIS" + secrets.token_urlsafe(96), role_arn=role_arn,
                           expires_at=self.clock() + duration_s, account=account)
        self._keys[key_id] = key
        return key_id, key

    def get_key(self, key_id: str) -> TemporaryKey | None:
        key = self._keys.get(key_id)
        return key if key is not None and key.expires_at > self.clock() else None

    def is_temporary(self, key_id: str) -> bool:
        return key_id.startswith("STS.")

    def _forget_expired(self) -> None:
        now = self.clock()
        for key_id in [k for k, v in self._keys.items() if v.expires_at <= now]:
            del self._keys[key_id]

    def __getitem__(self, key_id: str) -> str:
        key = self.get_key(key_id)
        if key is None:
            raise KeyError(key_id)
        return key.secret

    def __iter__(self) -> Iterator[str]:
        now = self.clock()
        return iter([k for k, v in self._keys.items() if v.expires_at > now])

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def assume_role_with_oidc(params: Mapping[str, str], *, ram: RamStore,
                          providers: Callable[[str], OidcProvider | None], keys: TemporaryKeys,
                          now: float | None = None) -> dict[str, Any]:
    """The AssumeRoleWithOIDC answer for these parameters, or StsError (see module doc for the checks)."""
    now = time.time() if now is None else now
    for name in ("RoleArn", "OIDCProviderArn", "OIDCToken", "RoleSessionName"):
        if not params.get(name):
            raise StsError(400, "MissingParameter", f"The input parameter \"{name}\" that is mandatory for "
                                                    f"processing this request is not supplied.")
    if not SESSION_NAME_RE.match(params["RoleSessionName"]):
        raise StsError(400, "InvalidParameter.RoleSessionName", "The parameter RoleSessionName is wrongly formed.")
    provider = providers(params["OIDCProviderArn"])
    if provider is None:
        raise StsError(401, "AuthenticationFail.NoPermission", "No such OIDC Provider registered.")
    token = params["OIDCToken"].strip()
    if token.count(".") != 2:
        raise StsError(401, "AuthenticationFail.OIDCToken.Invalid",
                       "The number of Jwt field should be divided into 3 parts with '.' .")
    try:
        claims = jwt.decode(token, provider.public_key, algorithms=["RS256"], audience=list(provider.client_ids),
                            issuer=provider.issuer, leeway=0, options={"require": ["exp", "iss", "aud", "sub"]})
    except jwt.InvalidSignatureError:
        raise StsError(401, "AuthenticationFail.OIDCToken.InvalidSignature",
                       "OIDC token validate failed: invalid signature.") from None
    except jwt.ExpiredSignatureError:
        raise StsError(401, "AuthenticationFail.OIDCToken.Expired", "This JsonWebToken is expired.") from None
    except jwt.InvalidAudienceError:
        raise StsError(401, "AuthenticationFail.OIDCToken.AudienceNotMatch", "Invalid audience.") from None
    except jwt.InvalidIssuerError:
        raise StsError(401, "AuthenticationFail.OIDCToken.Invalid",
                       f"Invalid issuer: the token's iss is not the issuer of {provider.arn}.") from None
    except jwt.InvalidTokenError:
        raise StsError(401, "AuthenticationFail.OIDCToken.Invalid",
                       "The Jwt content is invalid that cannot be recognized.") from None
    role = ram.role(params["RoleArn"])
    if role is None:
        raise StsError(404, "EntityNotExist.Role", f"The role not exists: {params['RoleArn']}.")
    try:
        duration = int(params.get("DurationSeconds") or 3600)
    except ValueError:
        duration = -1
    if not MIN_DURATION_S <= duration <= role["max_session_s"]:
        raise StsError(400, "InvalidParameter.DurationSeconds",
                       f"The Min/Max value of DurationSeconds is {MIN_DURATION_S}/{role['max_session_s']} seconds.")
    audience = claims["aud"] if isinstance(claims["aud"], str) else next(
        a for a in claims["aud"] if a in provider.client_ids)
    claim_values = {"oidc:iss": claims["iss"], "oidc:aud": audience, "oidc:sub": claims["sub"]}
    if not trust_allows(role["trust_policy"], provider=provider.arn, claims=claim_values):
        raise StsError(401, "AuthenticationFail.NoPermission", "There is no permission")
    key_id, key = keys.issue(account=ram.account, role_arn=role["arn"], duration_s=duration)
    role_id = str(int(hashlib.sha256(role["arn"].encode()).hexdigest(), 16) % 10**18).rjust(18, "3")
    session = params["RoleSessionName"]
    return {
        "RequestId": str(uuid.uuid4()).upper(),
        "AssumedRoleUser": {"Arn": f"acs:ram::{ram.account}:assumed-role/{role['name']}/{session}",
                            "AssumedRoleId": f"{role_id}:{session}"},
        "OIDCTokenInfo": {"Subject": claims["sub"], "Issuer": claims["iss"], "ClientIds": audience,
                          "ExpirationTime": _utc(claims["exp"]), "IssuanceTime": _utc(claims.get("iat", now))},
        "Credentials": {"AccessKeyId": key_id, "AccessKeySecret": key.secret, "SecurityToken": key.security_token,
                        "Expiration": _utc(key.expires_at)},
    }


def make_app(*, ram: RamStore, providers: Callable[[str], OidcProvider | None], keys: TemporaryKeys,
             faults: Faults) -> web.Application:
    """The STS endpoint (see module doc)."""

    async def handle(request: web.Request) -> web.Response:
        params: dict[str, str] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            params.update({k: str(v) for k, v in (await request.post()).items()})
        action = params.get("Action", "")
        if action != "AssumeRoleWithOIDC":
            return gateway_error(request, 404, "InvalidAction.NotFound",
                                 f"Specified api is not found, please check your url and method. ({action!r})")
        try:
            return json_response(assume_role_with_oidc(params, ram=ram, providers=providers, keys=keys))
        except StsError as err:
            return gateway_error(request, err.status, err.code, err.message)

    app = web.Application(middlewares=[fault_middleware(faults, "sts", fault_responder)])
    app.router.add_route("GET", "/", handle)
    app.router.add_route("POST", "/", handle)
    return app
