"""Service-account tokens as signed JWTs, the way kube-apiserver issues them for projected volumes.

A pod's projected `serviceAccountToken` source (`audience`, `expirationSeconds`, `path`) becomes a JWT that
the node writes into the volume: signed RS256 with the cluster's service-account key, `iss` the cluster's
service-account issuer, `sub` `system:serviceaccount:<namespace>:<name>`, `aud` the requested audience, `exp`
`expirationSeconds` after `iat`, and the `kubernetes.io` claim naming the namespace, pod and service account.
Sources: https://kubernetes.io/docs/concepts/storage/projected-volumes/#serviceaccounttoken and
https://kubernetes.io/docs/reference/access-authn-authz/service-accounts-admin/#bound-service-account-tokens
(claims as in kubernetes pkg/serviceaccount/claims.go).

On an ACK/ACS cluster with RRSA on, the issuer is the cluster's RRSA OIDC issuer, which RAM trusts as an OIDC
identity provider (https://www.alibabacloud.com/help/en/ack/ack-managed-and-ack-dedicated/user-guide/use-rrsa-to-authorize-pods-to-access-different-cloud-services);
the sandbox's STS (`sandbox/sts.py`) verifies these tokens with `public_key()`.

The key (RSA 2048) is generated once per cluster and kept in the cluster's data directory (mode 0600), so
tokens stay verifiable across restarts. Tokens are not rotated while a pod runs (a real kubelet refreshes
them at 80 % of their lifetime): a sandbox pod lives minutes, a token at least ten.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

#: The API server's own audience, for a source without `audience` (kube-apiserver's --api-audiences default).
API_AUDIENCE = "https://kubernetes.default.svc"
#: Kubernetes refuses `expirationSeconds` under 600 (validation of ServiceAccountTokenProjection); default 3600.
MIN_EXPIRATION_S, DEFAULT_EXPIRATION_S = 600, 3600


class TokenIssuer:
    """Issues service-account JWTs for one cluster (see module doc)."""

    def __init__(self, key_file: Path, issuer: str) -> None:
        self.issuer = issuer
        self._key = _load_or_create_key(key_file)
        der = self._key.public_key().public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
        # kube-apiserver's key id: base64url of the SHA-256 of the public key's DER
        # (pkg/serviceaccount/jwt.go, keyIDFromPublicKey)
        self.key_id = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")

    def public_key(self) -> rsa.RSAPublicKey:
        return self._key.public_key()

    def issue(self, *, namespace: str, service_account: str, service_account_uid: str = "", pod_name: str = "",
              pod_uid: str = "", audience: str | None = None, expiration_s: int = DEFAULT_EXPIRATION_S,
              now: float | None = None) -> str:
        """A signed token for the service account (`audience` None: the API server's)."""
        now = int(time.time() if now is None else now)
        expiration_s = max(MIN_EXPIRATION_S, int(expiration_s))
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": f"system:serviceaccount:{namespace}:{service_account}",
            "aud": [audience or API_AUDIENCE],
            "iat": now, "nbf": now, "exp": now + expiration_s,
            "kubernetes.io": {"namespace": namespace,
                              "serviceaccount": {"name": service_account, "uid": service_account_uid},
                              **({"pod": {"name": pod_name, "uid": pod_uid}} if pod_name else {})},
        }
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.key_id})


def _load_or_create_key(path: Path) -> rsa.RSAPrivateKey:
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.replace(tmp, path)
    return key
