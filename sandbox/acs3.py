"""ACS3-HMAC-SHA256 request verification, shared by the sandbox's CS (ROA) and NAS (RPC) OpenAPIs.

The official tea-openapi SDKs sign every CS and NAS call with ACS3-HMAC-SHA256 (V3 signature) by default:
the canonical request is method, the path exactly as sent, the sorted query, every signed header and the
hex SHA-256 of the body. Checking it here, rather than accepting anything, means a client configured with a
wrong secret fails in the sandbox exactly as it would against Alibaba Cloud: with a `ClientException`
whose `code` is the gateway's.

Failures are answered before the service sees the request, as the API gateway (POP) does, in the gateway's
JSON shape `{"RequestId","HostId","Code","Message","Recommend"}` (the SDK reads `Code`/`code` alike):

| case                                          | HTTP | Code                          |
|-----------------------------------------------|------|-------------------------------|
| no/garbled `Authorization`, other algorithm   | 400  | IncompleteSignature           |
| unknown AccessKeyId                           | 404  | InvalidAccessKeyId.NotFound   |
| signature (or body hash) does not match       | 400  | SignatureDoesNotMatch         |
| `x-acs-date` more than 15 minutes off         | 400  | InvalidTimeStamp.Expired      |
| `x-acs-date` missing or not signed            | 400  | MissingTimestamp              |
| `x-acs-signature-nonce` missing or not signed | 400  | MissingSignatureNonce         |
| `x-acs-signature-nonce` seen in the last 15 min | 400 | SignatureNonceUsed           |

The V3 signature ("Request syntax and signature method V3",
https://www.alibabacloud.com/help/en/sdk/product-overview/v3-request-structure-and-signature) makes
`x-acs-date` and `x-acs-signature-nonce` required and signed ("every common request header but Authorization
is signed"); the nonce exists to stop replays, so a nonce is refused when seen again within the 15 minutes a
date stays valid. MissingTimestamp / MissingSignatureNonce are the gateway's codes for the same parameters of
the V2 (RPC) signature ("Timestamp is mandatory for this action."); the codes for the V3 headers could not be
confirmed and are a choice.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from aiohttp import web

ALGORITHM = "ACS3-HMAC-SHA256"
MAX_CLOCK_SKEW_S = 15 * 60
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ACCESS_KEY_ID: web.RequestKey[str] = web.RequestKey("access_key_id", str)  # the verified caller


def new_request_id() -> str:
    """A request id in Alibaba's format (upper-case UUID)."""
    return str(uuid.uuid4()).upper()


@dataclass
class AuthError(Exception):
    status: int
    code: str
    message: str


@dataclass
class NonceCache:
    """Signature nonces seen in the last 15 minutes (replay protection, as the gateway does)."""

    seen: dict[str, float] = field(default_factory=dict)

    def use(self, nonce: str, now: float) -> bool:
        """Record `nonce`; False when it was already used within the window (a replay)."""
        cutoff = now - MAX_CLOCK_SKEW_S
        if len(self.seen) > 10_000:
            self.seen = {n: t for n, t in self.seen.items() if t >= cutoff}
        last = self.seen.get(nonce)
        if last is not None and last >= cutoff:
            return False
        self.seen[nonce] = now
        return True


def _parse_authorization(value: str) -> tuple[str, str, list[str], str]:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise AuthError(400, "IncompleteSignature", "The request signature does not conform to Aliyun standards.")
    parts: dict[str, str] = {}
    for item in rest.split(","):
        key, sep, val = item.strip().partition("=")
        if sep:
            parts[key] = val
    try:
        return parts["Credential"], parts["SignedHeaders"], parts["SignedHeaders"].split(";"), parts["Signature"]
    except KeyError:
        raise AuthError(400, "IncompleteSignature",
                        "The request signature does not conform to Aliyun standards.") from None


def canonical_query(raw_query: str) -> str:
    """`k=quote(v, safe='~')` sorted by key; the SDK sends urlencode() (`+` for space), so decode first."""
    pairs = urllib.parse.parse_qsl(raw_query, keep_blank_values=True)
    return "&".join(f"{k}={urllib.parse.quote(v, safe='~')}" for k, v in sorted(pairs))


def string_to_sign(method: str, raw_path: str, headers: Mapping[str, list[str]], signed: list[str],
                   signed_headers: str, payload_hash: str) -> str:
    path, _, query = raw_path.partition("?")
    canonical_headers = "".join(f"{h}:{','.join(sorted(v.strip() for v in headers[h]))}\n" for h in signed)
    creq = f"{method}\n{path or '/'}\n{canonical_query(query)}\n{canonical_headers}\n{signed_headers}\n{payload_hash}"
    return f"{ALGORITHM}\n{hashlib.sha256(creq.encode()).hexdigest()}"


def verify(
    method: str,
    raw_path: str,
    headers: Mapping[str, list[str]],
    body: bytes,
    credentials: Mapping[str, str],
    *,
    nonces: NonceCache | None = None,
    now: float | None = None,
) -> str:
    """Check one request; return the AccessKeyId or raise `AuthError`. `headers`: lower-case name -> values."""
    auth = headers.get("authorization")
    if not auth:
        raise AuthError(400, "IncompleteSignature", "The request signature does not conform to Aliyun standards.")
    access_key_id, signed_headers, signed, signature = _parse_authorization(auth[0])
    secret = credentials.get(access_key_id)
    if secret is None:
        raise AuthError(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
    now = time.time() if now is None else now
    date = (headers.get("x-acs-date") or [""])[0]
    if not date or "x-acs-date" not in signed:
        raise AuthError(400, "MissingTimestamp", "Timestamp is mandatory for this action.")
    nonce = (headers.get("x-acs-signature-nonce") or [""])[0]
    if not nonce or "x-acs-signature-nonce" not in signed:
        raise AuthError(400, "MissingSignatureNonce", "SignatureNonce is mandatory for this action.")
    if date:
        try:
            ts = datetime.strptime(date, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
        except ValueError:
            raise AuthError(400, "InvalidTimeStamp.Format",
                            "Specified time stamp or date value is not well formatted.") from None
        if abs(now - ts) > MAX_CLOCK_SKEW_S:
            raise AuthError(400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")
    payload_hash = hashlib.sha256(body).hexdigest()
    missing = [h for h in signed if h not in headers]
    sts = string_to_sign(method, raw_path, headers, [h for h in signed if h in headers], signed_headers,
                         payload_hash)
    expected = hmac.new(secret.encode(), sts.encode(), hashlib.sha256).hexdigest()
    sent_hash = (headers.get("x-acs-content-sha256") or [payload_hash])[0]
    if missing or sent_hash != payload_hash or not hmac.compare_digest(expected, signature):
        shown = sts.replace("\n", " ")
        raise AuthError(400, "SignatureDoesNotMatch",
                        f"Specified signature does not match our calculation. server StringToSign is [{shown}]")
    if nonces is not None and not nonces.use(nonce, now):
        raise AuthError(400, "SignatureNonceUsed", "Specified signature nonce was used already.")
    return access_key_id


def gateway_error(request: web.Request, status: int, code: str, message: str) -> web.Response:
    """An error in the API gateway's own JSON shape (used for auth failures and unknown APIs)."""
    request_id = new_request_id()
    body = {
        "RequestId": request_id,
        "HostId": request.host,
        "Code": code,
        "Message": message,
        "Recommend": f"https://api.aliyun.com/troubleshoot?q={code}&requestId={request_id}",
    }
    return json_response(body, status=status, request_id=request_id)


def json_response(body: object, *, status: int = 200, request_id: str | None = None) -> web.Response:
    """Every tea response must carry a JSON body (even 202), or the SDK fails to parse it."""
    headers = {"x-acs-request-id": request_id} if request_id else None
    return web.Response(body=orjson.dumps(body), status=status, headers=headers,
                        content_type="application/json", charset="utf-8")


def middleware(credentials: Mapping[str, str]) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """aiohttp middleware verifying ACS3 signatures against `credentials` (AccessKeyId -> secret).

    The mapping is read on every request, so keys added to it later are honoured.
    """
    nonces = NonceCache()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        body = await request.read()
        headers: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        try:
            request[ACCESS_KEY_ID] = verify(request.method, request.raw_path, headers, body, credentials,
                                              nonces=nonces)
        except AuthError as err:
            return gateway_error(request, err.status, err.code, err.message)
        return await handler(request)

    return check
