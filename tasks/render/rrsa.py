"""Pod credentials through RRSA (RAM Roles for Service Accounts): the ServiceAccount and what the pods get.

How RRSA works on ACK, ASK and ACS
(https://www.alibabacloud.com/help/en/ack/ack-managed-and-ack-dedicated/user-guide/use-rrsa-to-authorize-pods-to-access-different-cloud-services,
ACS: https://www.alibabacloud.com/help/en/cs/user-guide/use-rrsa-to-configure-ram-permissions-for-serviceaccount-to-implement):
the cluster's service-account issuer is registered in RAM as an OIDC identity provider (DescribeClusterDetail
``rrsa_config.oidc_arn``); a pod mounts a projected service-account token with audience ``sts.aliyuncs.com`` and
calls STS ``AssumeRoleWithOIDC`` with it, the RAM role's trust policy deciding which service accounts may. The
pod gets temporary keys that expire; nothing secret is stored in the cluster.

Why ask-batch renders the token volume and the env itself instead of relying on ack-pod-identity-webhook
(https://www.alibabacloud.com/help/en/ack/product-overview/ack-pod-identity-webhook): the webhook is an add-on a
cluster may not have, and it only acts in namespaces (or on pods) labelled
``pod-identity.alibabacloud.com/injection: 'on'``; a namespace ask-batch shares with other workloads is not its
to label. The rendered pod works the same with or without the webhook: the ServiceAccount carries the webhook's
``pod-identity.alibabacloud.com/role-name`` annotation (so ``kubectl`` and the webhook see which role it is for),
and the pod template asks the webhook to skip its containers (``pod-identity.alibabacloud.com/skip-containers``),
so an installed webhook does not inject a second token volume and env.

What the pods get (the names the webhook injects and ``alibabacloud_credentials``' OIDC provider reads):
``ALIBABA_CLOUD_ROLE_ARN`` (``acs:ram::<account>:role/<name>``), ``ALIBABA_CLOUD_OIDC_PROVIDER_ARN``,
``ALIBABA_CLOUD_OIDC_TOKEN_FILE`` (``/var/run/secrets/ack.alibabacloud.com/rrsa-tokens/token``), and the STS endpoint:
``ALIBABA_CLOUD_STS_ENDPOINT`` (``target.endpoints.sts``, else the region's VPC endpoint
``sts-vpc.<region>.aliyuncs.com`` with ``ALIBABA_CLOUD_STS_REGION`` and ``ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED``).
"""

from dataclasses import dataclass
from typing import Any

from tasks.naming import run_labels, service_account_name
from tasks.spec import Target

ROLE_NAME_ANNOTATION = "pod-identity.alibabacloud.com/role-name"
SKIP_CONTAINERS_ANNOTATION = "pod-identity.alibabacloud.com/skip-containers"
TOKEN_AUDIENCE = "sts.aliyuncs.com"
TOKEN_DIR = "/var/run/secrets/ack.alibabacloud.com/rrsa-tokens"
TOKEN_FILE = TOKEN_DIR + "/token"
#: The token's lifetime; the kubelet renews it at 80 % (webhook default 3600, range 600-43200).
TOKEN_EXPIRATION_S = 3600
VOLUME_NAME = "rrsa-oidc-token"
READABLE_MODE = 0o444  # the workload may run as any user; ECI does not apply fsGroup


@dataclass(frozen=True)
class RrsaIdentity:
    """Who the pods are to RAM: the run's ServiceAccount, the role it assumes, the cluster's OIDC provider."""

    service_account: str
    role_arn: str
    oidc_provider_arn: str


def role_arn_for(oidc_provider_arn: str, role_name: str) -> str:
    """``acs:ram::<account>:role/<role_name>``, the account taken from the provider's ARN
    (``acs:ram::<account>:oidc-provider/<name>``); raises ValueError for an ARN of another shape."""
    parts = oidc_provider_arn.split(":")
    if len(parts) != 5 or parts[:3] != ["acs", "ram", ""] or not parts[3] or not parts[4].startswith("oidc-provider/"):
        raise ValueError(f"{oidc_provider_arn!r} is not a RAM OIDC provider ARN (acs:ram::<account>:oidc-provider/...)")
    return f"acs:ram::{parts[3]}:role/{role_name}"


def service_account_manifest(run_key: str, *, namespace: str, role_name: str) -> dict[str, Any]:
    """The run's ServiceAccount, annotated with the RAM role; it mounts no API token (the pods need none)."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": service_account_name(run_key), "namespace": namespace, "labels": run_labels(run_key),
                     "annotations": {ROLE_NAME_ANNOTATION: role_name}},
        "automountServiceAccountToken": False,
    }


def rrsa_env(identity: RrsaIdentity, target: Target) -> dict[str, str]:
    """The env the pods need to assume the role (see module doc)."""
    env = {"ALIBABA_CLOUD_ROLE_ARN": identity.role_arn,
           "ALIBABA_CLOUD_OIDC_PROVIDER_ARN": identity.oidc_provider_arn,
           "ALIBABA_CLOUD_OIDC_TOKEN_FILE": TOKEN_FILE}
    if target.endpoints.sts:
        env["ALIBABA_CLOUD_STS_ENDPOINT"] = target.endpoints.sts
    else:  # pods are in the VPC: the VPC endpoint needs no NAT; the webhook (0.4.0+) injects the same three, and
        # alibabacloud_credentials builds `sts-vpc.<ALIBABA_CLOUD_STS_REGION>.aliyuncs.com` from the last two
        # (https://github.com/aliyun/credentials-python, alibabacloud_credentials/provider/oidc.py)
        env.update({"ALIBABA_CLOUD_STS_ENDPOINT": f"sts-vpc.{target.region}.aliyuncs.com",
                    "ALIBABA_CLOUD_STS_REGION": target.region, "ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED": "true"})
    return env


def apply_rrsa(template: dict[str, Any], identity: RrsaIdentity, target: Target) -> None:
    """Give a pod template the ServiceAccount, the projected OIDC token and the env (mutates ``template``)."""
    spec = template["spec"]
    spec["serviceAccountName"] = identity.service_account
    spec.setdefault("volumes", []).append({"name": VOLUME_NAME, "projected": {
        "defaultMode": READABLE_MODE,
        "sources": [{"serviceAccountToken": {"audience": TOKEN_AUDIENCE, "expirationSeconds": TOKEN_EXPIRATION_S,
                                             "path": "token"}}]}})
    env = [{"name": k, "value": v} for k, v in rrsa_env(identity, target).items()]
    for container in spec["containers"]:  # not the init containers: they reach no cloud API
        container["env"] = [*container.get("env", []), *env]
        container["volumeMounts"] = [*container.get("volumeMounts", []),
                                     {"name": VOLUME_NAME, "mountPath": TOKEN_DIR, "readOnly": True}]
    names = [c["name"] for c in spec.get("initContainers", []) + spec["containers"]]
    annotations = template.setdefault("metadata", {}).setdefault("annotations", {})
    annotations[SKIP_CONTAINERS_ANNOTATION] = ",".join(names)
