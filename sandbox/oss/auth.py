"""Request authentication: OSS V4 (`OSS4-HMAC-SHA256`) and V1 (`OSS AK:sig`), header and presigned query.

The verifier recomputes the signature from what arrived on the wire, the same way
`alibabacloud_oss_v2/signer/v4.py` and `signer/v1.py` compute it on the client:

* V4 canonical URI is `quote("/" + bucket + "/" + key, safe="/")`. It always names the bucket, even
  for virtual-hosted requests, so the bucket comes from routing, not from the path.
* V4 canonical query is built from the query pairs as they arrived, decoded and re-encoded canonically
  (`_canonical_pairs`), sorted. Presigned requests leave out `x-oss-signature`.
* V4 signs every `x-oss-*` header, `content-type`, `content-md5` and the `AdditionalHeaders`.
* V1 signs `METHOD, Content-MD5, Content-Type, Date (or Expires for presigned URLs), x-oss-* headers`
  and the *decoded* resource `/bucket/key?sub-resources`. Only sub-resource query keys are signed.

Failures answer the way OSS does: InvalidAccessKeyId (403), SignatureDoesNotMatch (403, with the
server's StringToSign so a client can diff it), AccessDenied (403) for anonymous requests and expired
presigned URLs ("Request has expired."), RequestTimeTooSkewed (403, which the SDK retries after
correcting its clock offset).

STS temporary keys (`sandbox.sts.TemporaryKeys`) are checked by `check_security_token`: a request signed with
one must carry its security token (header `x-oss-security-token`, or the query's `x-oss-security-token` /
`security-token` of a presigned URL), else 403 InvalidSecurityToken; an expired key is unknown (403
InvalidAccessKeyId, as OSS answers: https://help.aliyun.com/document_detail/42775.html). There are no RAM
policies: every known key pair may do everything.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from calendar import timegm
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote

from aiohttp import web

from .errors import OssError
from .routing import Target

MAX_SKEW_S = 15 * 60
MAX_PRESIGN_S = 7 * 24 * 3600
_SIG_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your key and signing method."
)

# Query keys V1 includes in the canonical resource. The documented list ("Include a V1 signature in the
# Authorization header", section CanonicalizedResource:
# https://www.alibabacloud.com/help/en/oss/developer-reference/include-signatures-in-the-authorization-header),
# which oss2 2.19's `Auth._subresource_key_set` follows, plus every operation's `sub-resource` metadata in
# alibabacloud_oss_v2 1.4.1. A key outside this set is not signed by any client, so it must not be here.
V1_DOCUMENTED = frozenset(
    [
        "acl", "uploads", "location", "cors", "logging", "website", "referer", "lifecycle", "delete", "append",
        "tagging", "objectMeta", "uploadId", "partNumber", "security-token", "position", "img", "style", "styleName",
        "replication", "replicationProgress", "replicationLocation", "cname", "bucketInfo", "comp", "qos", "live",
        "status", "vod", "startTime", "endTime", "symlink", "x-oss-process", "response-content-type",
        "x-oss-traffic-limit", "response-content-language", "response-expires", "response-cache-control",
        "response-content-disposition", "response-content-encoding", "udf", "udfName", "udfImage", "udfId",
        "udfImageDesc", "udfApplication", "udfApplicationLog", "restore", "callback", "callback-var", "qosInfo",
        "policy", "stat", "encryption", "versions", "versioning", "versionId", "requestPayment",
        "x-oss-request-payer", "sequential", "inventory", "inventoryId", "continuation-token", "asyncFetch", "worm",
        "wormId", "wormExtend", "withHashContext", "x-oss-enable-md5", "x-oss-enable-sha1", "x-oss-enable-sha256",
        "x-oss-hash-ctx", "x-oss-md5-ctx", "transferAcceleration", "regionList", "cloudboxes", "x-oss-ac-source-ip",
        "x-oss-ac-subnet-mask", "x-oss-ac-vpc-id", "x-oss-ac-forward-allow", "metaQuery", "resourceGroup", "rtc",
        "x-oss-async-process", "responseHeader", "group", "link", "objectInfo", "x-oss-write-get-object-response",
        "bucketArchiveDirectRead", "httpsConfig", "redundancyTransition", "x-oss-target-redundancy-type",
        "x-oss-redundancy-transition-taskid", "accessPoint", "accessPointPolicy", "publicAccessBlock",
        "x-oss-access-point-name", "requesterQosInfo", "qosRequester", "resourcePoolInfo", "resourcePool",
        "resourcePoolBuckets",
    ]
)
V1_SUBRESOURCES = V1_DOCUMENTED | frozenset(
    [
        "acl", "bucketInfo", "location", "stat", "delete", "append", "tagging", "objectMeta", "uploads", "uploadId",
        "partNumber", "security-token", "position", "response-content-type", "response-content-language",
        "response-expires", "response-cache-control", "response-content-disposition", "response-content-encoding",
        "restore", "callback", "callback-var", "versions", "versioning", "versionId", "sequential",
        "continuation-token", "regionList", "cloudboxes", "symlink", "resourceGroup", "MetaQuery", "accessPoint",
        "accessPointPolicy", "bucketArchiveDirectRead", "cleanRestoredObject", "cname", "comp", "cors",
        "dataPipeline", "encryption", "httpsConfig", "inventory", "inventoryId", "legalHold", "lifecycle", "logging",
        "metaQuery", "metadataConfiguration", "metadataInventoryTable", "metadataJournalTable", "objectWorm",
        "overwriteConfig", "policy", "policyStatus", "publicAccessBlock", "quota", "redundancyTransition", "referer",
        "replication", "replicationLocation", "replicationProgress", "requestPayment", "retention", "rtc", "seal",
        "style", "styleName", "transferAcceleration", "userDefinedLogFieldsConfig", "website", "worm", "wormExtend",
        "wormId", "x-oss-access-point-name", "x-oss-redundancy-transition-taskid", "x-oss-target-redundancy-type"
    ]
)


def _lower_headers(request: web.Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in request.headers.items():
        out.setdefault(k.lower(), v)
    return out


def _unknown_key(ak: str) -> OssError:
    return OssError(
        403,
        "InvalidAccessKeyId",
        "The OSS Access Key Id you provided does not exist in our records.",
        OSSAccessKeyId=ak,
    )


def _mismatch(string_to_sign: str, provided: str, ak: str, canonical_request: str | None = None) -> OssError:
    extra = {"OSSAccessKeyId": ak, "SignatureProvided": provided, "StringToSign": string_to_sign}
    if canonical_request is not None:
        extra["CanonicalRequest"] = canonical_request
    return OssError(403, "SignatureDoesNotMatch", _SIG_MISMATCH, **extra)


def _expired(expires_at: float, now: float) -> OssError:
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return OssError(
        403,
        "AccessDenied",
        "Request has expired.",
        Expires=time.strftime(fmt, time.gmtime(expires_at)),
        ServerTime=time.strftime(fmt, time.gmtime(now)),
    )


def _skewed(request_time: float, now: float) -> OssError:
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return OssError(
        403,
        "RequestTimeTooSkewed",
        "The difference between the request time and the current time is too large.",
        RequestTime=time.strftime(fmt, time.gmtime(request_time)),
        ServerTime=time.strftime(fmt, time.gmtime(now)),
    )


# ----------------------------------------------------------------------------------------------- V4


def _v4_signing_key(secret: str, date: str, region: str, product: str) -> bytes:
    key = ("aliyun_v4" + secret).encode()
    for part in (date, region, product, "aliyun_v4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _v4_canonical_request(
    method: str,
    target: Target,
    headers: Mapping[str, str],
    pairs: list[tuple[str, str]],
    additional: list[str],
) -> str:
    uri = "/" + (target.bucket + "/" if target.bucket else "") + (target.key or "")
    query = "&".join(f"{k}={v}" if v else k for k, v in _canonical_pairs(pairs))
    signed = sorted(
        (k, v)
        for k, v in headers.items()
        if k.startswith("x-oss-") or k in ("content-type", "content-md5") or k in additional
    )
    canon_headers = "".join(f"{k}:{v}\n" for k, v in signed)
    payload = headers.get("x-oss-content-sha256", "UNSIGNED-PAYLOAD")
    return f"{method}\n{quote(uri, safe='/')}\n{query}\n{canon_headers}\n{';'.join(additional)}\n{payload}"


def _canonical_pairs(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """V4's canonical query: each name and value decoded from what arrived, then URI-encoded the one canonical
    way (RFC 3986 unreserved characters as they are, everything else %XX in upper case), sorted by name.

    So a presigned URL whose query a client or proxy re-encoded on the way (`%7e` for `~`, lower-case hex,
    `/` left unescaped ...) still verifies, as it does on OSS ("Include a V4 signature in a URL":
    https://www.alibabacloud.com/help/en/oss/developer-reference/add-signatures-to-urls)."""
    out = [(quote(unquote(k), safe="-_.~"), quote(unquote(v), safe="-_.~")) for k, v in pairs]
    return sorted(out)


def _parse_oss_date(value: str) -> float:
    try:
        return float(timegm(time.strptime(value, "%Y%m%dT%H%M%SZ")))
    except ValueError as exc:
        raise OssError(400, "InvalidArgument", f"Invalid x-oss-date: {value!r}.") from exc


def _v4_check(
    *,
    method: str,
    target: Target,
    headers: Mapping[str, str],
    pairs: list[tuple[str, str]],
    credential: str,
    signature: str,
    oss_date: str,
    additional: list[str],
    credentials: Mapping[str, str],
    region: str,
) -> str:
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aliyun_v4_request":
        raise OssError(400, "InvalidArgument", f"Invalid credential scope: {credential!r}.")
    ak, date, cred_region, product, _ = parts
    secret = credentials.get(ak)
    if secret is None:
        raise _unknown_key(ak)
    if product != "oss" or cred_region != region:
        # Real OSS rejects a scope for another region; the exact code it uses is not verified here.
        raise OssError(400, "InvalidArgument", f"Invalid signing region/product in credential scope {credential!r}; "
                                               f"this endpoint is region {region!r}, product 'oss'.")
    if not oss_date.startswith(date):
        raise OssError(400, "InvalidArgument", "The x-oss-date does not match the date in the credential scope.")
    creq = _v4_canonical_request(method, target, headers, pairs, additional)
    scope = f"{date}/{cred_region}/{product}/aliyun_v4_request"
    sts = "\n".join(["OSS4-HMAC-SHA256", oss_date, scope, hashlib.sha256(creq.encode()).hexdigest()])
    expected = hmac.new(_v4_signing_key(secret, date, cred_region, product), sts.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise _mismatch(sts, signature, ak, creq)
    return ak


def _verify_v4_header(
    request: web.Request, target: Target, headers: Mapping[str, str], auth: str,
    credentials: Mapping[str, str], region: str, now: float,
) -> str:
    fields: dict[str, str] = {}
    for item in auth.split(" ", 1)[1].split(","):
        k, _, v = item.strip().partition("=")
        fields[k] = v
    if "Credential" not in fields or "Signature" not in fields:
        raise OssError(400, "InvalidArgument", "Authorization header is missing Credential or Signature.")
    oss_date = headers.get("x-oss-date", "")
    if not oss_date:
        raise OssError(403, "AccessDenied", "Missing x-oss-date header for V4 signature.")
    ts = _parse_oss_date(oss_date)
    ak = fields["Credential"].split("/", 1)[0]
    if ak not in credentials:
        raise _unknown_key(ak)
    if abs(now - ts) > MAX_SKEW_S:
        raise _skewed(ts, now)
    additional = [h for h in fields.get("AdditionalHeaders", "").split(";") if h]
    return _v4_check(
        method=request.method, target=target, headers=headers, pairs=target.raw_pairs,
        credential=fields["Credential"], signature=fields["Signature"], oss_date=oss_date,
        additional=additional, credentials=credentials, region=region,
    )


def _verify_v4_query(
    request: web.Request, target: Target, headers: Mapping[str, str],
    credentials: Mapping[str, str], region: str, now: float,
) -> str:
    q = target.query
    if q.get("x-oss-signature-version") != "OSS4-HMAC-SHA256":
        raise OssError(400, "InvalidArgument", "Unsupported x-oss-signature-version.")
    for name in ("x-oss-credential", "x-oss-date", "x-oss-expires", "x-oss-signature"):
        if name not in q:
            raise OssError(403, "AccessDenied", f"Missing {name} in the presigned URL.")
    ak = q["x-oss-credential"].split("/", 1)[0]
    if ak not in credentials:
        raise _unknown_key(ak)
    ts = _parse_oss_date(q["x-oss-date"])
    try:
        expires = int(q["x-oss-expires"])
    except ValueError as exc:
        raise OssError(400, "InvalidArgument", "x-oss-expires must be an integer.") from exc
    if expires <= 0 or expires > MAX_PRESIGN_S:
        raise OssError(400, "InvalidArgument", "x-oss-expires must be between 1 and 604800 seconds.")
    if now > ts + expires:
        raise _expired(ts + expires, now)
    pairs = [(k, v) for k, v in target.raw_pairs if k != "x-oss-signature"]
    additional = [h for h in q.get("x-oss-additional-headers", "").split(";") if h]
    return _v4_check(
        method=request.method, target=target, headers=headers, pairs=pairs,
        credential=q["x-oss-credential"], signature=q["x-oss-signature"], oss_date=q["x-oss-date"],
        additional=additional, credentials=credentials, region=region,
    )


# ----------------------------------------------------------------------------------------------- V1


def _v1_string_to_sign(method: str, target: Target, headers: Mapping[str, str], date: str) -> str:
    resource = "/" + (target.bucket + "/" if target.bucket else "") + (target.key or "")
    sub = sorted(
        (unquote(k), unquote(v)) for k, v in target.raw_pairs if unquote(k) in V1_SUBRESOURCES
    )
    if sub:
        resource += "?" + "&".join(f"{k}={v}" if v else k for k, v in sub)
    oss_headers = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()) if k.startswith("x-oss-"))
    return "\n".join(
        [method, headers.get("content-md5", ""), headers.get("content-type", ""), date, oss_headers + resource]
    )


def _v1_check(sts: str, signature: str, ak: str, credentials: Mapping[str, str]) -> str:
    secret = credentials.get(ak)
    if secret is None:
        raise _unknown_key(ak)
    expected = base64.b64encode(hmac.new(secret.encode(), sts.encode(), hashlib.sha1).digest()).decode()
    if not hmac.compare_digest(expected, signature):
        raise _mismatch(sts, signature, ak)
    return ak


def _verify_v1_header(
    request: web.Request, target: Target, headers: Mapping[str, str], auth: str,
    credentials: Mapping[str, str], now: float,
) -> str:
    ak, sep, signature = auth[4:].strip().rpartition(":")
    if not sep:
        raise OssError(400, "InvalidArgument", "Authorization header is invalid.")
    if ak not in credentials:
        raise _unknown_key(ak)
    date = headers.get("x-oss-date", "") or headers.get("date", "")
    try:
        ts = parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError) as exc:
        raise OssError(403, "AccessDenied", "Missing or invalid Date header.") from exc
    if abs(now - ts) > MAX_SKEW_S:
        raise _skewed(ts, now)
    return _v1_check(_v1_string_to_sign(request.method, target, headers, date), signature, ak, credentials)


def _verify_v1_query(
    request: web.Request, target: Target, headers: Mapping[str, str],
    credentials: Mapping[str, str], now: float,
) -> str:
    q = target.query
    ak, expires, signature = q.get("OSSAccessKeyId", ""), q.get("Expires", ""), q.get("Signature", "")
    if ak not in credentials:
        raise _unknown_key(ak)
    try:
        expires_at = int(expires)
    except ValueError as exc:
        raise OssError(403, "AccessDenied", "Invalid Expires in the presigned URL.") from exc
    if now > expires_at:
        raise _expired(expires_at, now)
    return _v1_check(_v1_string_to_sign(request.method, target, headers, expires), signature, ak, credentials)


# ------------------------------------------------------------------------------------------ public


def check_security_token(request: web.Request, target: Target, expected: str) -> None:
    """403 InvalidSecurityToken unless the request carries `expected` (an STS key's security token)."""
    sent = (request.headers.get("x-oss-security-token") or target.query.get("x-oss-security-token")
            or target.query.get("security-token") or "")
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        raise OssError(403, "InvalidSecurityToken", "The security token you provided is invalid.")


def authenticate(
    request: web.Request,
    target: Target,
    credentials: Mapping[str, str],
    region: str,
    now: float | None = None,
) -> str:
    """Return the AccessKeyId the request is signed with, or raise the OssError OSS would answer."""
    now = time.time() if now is None else now
    headers = _lower_headers(request)
    auth = headers.get("authorization", "")
    if auth.startswith("OSS4-HMAC-SHA256 "):
        return _verify_v4_header(request, target, headers, auth, credentials, region, now)
    if auth.startswith("OSS "):
        return _verify_v1_header(request, target, headers, auth, credentials, now)
    if auth:
        raise OssError(400, "InvalidArgument", "Authorization header is invalid.")
    if "x-oss-signature-version" in target.query:
        return _verify_v4_query(request, target, headers, credentials, region, now)
    if "OSSAccessKeyId" in target.query:
        return _verify_v1_query(request, target, headers, credentials, now)
    raise OssError(
        403, "AccessDenied", "You have no right to access this object because of bucket acl."
        if target.key else "You have no right to access this bucket because of bucket acl."
    )
