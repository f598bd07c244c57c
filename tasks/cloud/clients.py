"""Client factories: from a ``Target`` (region, credentials, endpoint overrides) to SDK clients.

Why one module: the pipeline must not know whether it talks to Alibaba Cloud or to a local emulation of it. The
only difference is endpoint overrides, and they are applied here and nowhere else. Stages receive clients as
arguments and never build them.

Wire facts applied here (from the SDKs' own code: https://github.com/aliyun/tea-python and
https://github.com/aliyun/alibabacloud-oss-python-sdk-v2): tea clients need ``protocol="http"`` for a plain-HTTP
endpoint override and want ``host:port`` (not a URL) as the endpoint; the OSS client only switches to path-style
addressing by itself for IP-literal hosts, so we ask for path style whenever the endpoint is overridden to a
non-Alibaba host.

Credentials are resolved once per flow run (Prefect Secret blocks or the Alibaba default chain) into an
``AliCredentials`` whose secret fields never appear in its ``repr``.
"""

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from tasks.spec import CredentialsSpec, EndpointOverrides, Target


@dataclass(frozen=True)
class AliCredentials:
    """An AccessKey (optionally STS). ``repr`` shows only the key id's first characters."""

    access_key_id: str = field(repr=False)
    access_key_secret: str = field(repr=False)
    security_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"AliCredentials(access_key_id={self.access_key_id[:4]}…, sts={self.security_token is not None})"

    def secret_values(self) -> list[str]:
        """Values to keep out of logs and artifacts."""
        return [v for v in (self.access_key_secret, self.security_token) if v]


def _load_prefect_secret(name: str) -> str:
    from prefect.blocks.system import Secret

    block: Any = Secret.load(name)  # sync in a sync context (Prefect's sync_compatible)
    value = block.get()
    if not isinstance(value, str):
        # A dict value is not masked by the Prefect API (https://docs.prefect.io/v3/develop/secrets): refuse it.
        raise ValueError(f"Prefect Secret block {name!r} must hold a string")
    return value


def resolve_credentials(spec: CredentialsSpec, *,
                        load_secret: Callable[[str], str] = _load_prefect_secret) -> AliCredentials:
    """Resolve the AccessKey: from Prefect Secret blocks, or the Alibaba Cloud default credential chain."""
    if spec.mode == "secret_blocks":
        assert spec.access_key_id_block and spec.access_key_secret_block  # guaranteed by CredentialsSpec
        token = load_secret(spec.security_token_block) if spec.security_token_block else None
        return AliCredentials(load_secret(spec.access_key_id_block), load_secret(spec.access_key_secret_block),
                              token or None)
    # The chain's first link, read here and now: alibabacloud_credentials snapshots these variables when it is
    # first imported (utils/auth_util.py), so a variable exported later in the process would be ignored.
    env_id = os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_ID")
    env_secret = os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    if env_id and env_secret:
        return AliCredentials(env_id, env_secret, os.environ.get("ALIBABA_CLOUD_SECURITY_TOKEN") or None)
    from alibabacloud_credentials.client import Client as CredentialClient

    try:
        cred = CredentialClient().get_credential()
    except Exception as exc:  # noqa: BLE001 - the chain raises various types; one clear message instead
        raise RuntimeError(
            "no Alibaba Cloud credentials found by the default chain (env ALIBABA_CLOUD_ACCESS_KEY_ID and "
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET, ~/.alibabacloud/credentials, ECS RAM role); fix: set one of them, "
            "or use target.credentials.mode 'secret_blocks'") from exc
    return AliCredentials(cred.access_key_id, cred.access_key_secret, cred.security_token or None)


# --------------------------------------------------------------------------------------------- endpoints


def split_endpoint(endpoint: str) -> tuple[str, str]:
    """``"http://127.0.0.1:8081"`` -> ``("127.0.0.1:8081", "http")``; a bare host defaults to https."""
    if "://" in endpoint:
        parts = urlsplit(endpoint)
        return parts.netloc, parts.scheme
    return endpoint.rstrip("/"), "https"


def _is_ip_host(host_port: str) -> bool:
    host = host_port.rsplit(":", 1)[0] if host_port.count(":") == 1 else host_port
    return host.replace(".", "").isdigit() or host.startswith("[")


def _tea_config(target: Target, creds: AliCredentials, endpoint: str | None) -> Any:
    from alibabacloud_tea_openapi.models import Config

    config = Config(access_key_id=creds.access_key_id, access_key_secret=creds.access_key_secret,
                    security_token=creds.security_token, region_id=target.region,
                    connect_timeout=5000, read_timeout=30000)
    if endpoint:
        config.endpoint, config.protocol = split_endpoint(endpoint)
    return config


def cs_client(target: Target, creds: AliCredentials) -> Any:
    """Container Service client (``alibabacloud_cs20151215.client.Client``)."""
    from alibabacloud_cs20151215.client import Client

    return Client(_tea_config(target, creds, target.endpoints.cs))


def nas_client(target: Target, creds: AliCredentials) -> Any:
    """NAS client (``alibabacloud_nas20170626.client.Client``)."""
    from alibabacloud_nas20170626.client import Client

    return Client(_tea_config(target, creds, target.endpoints.nas))


def oss_client(target: Target, creds: AliCredentials, *, endpoint: str | None = None) -> Any:
    """OSS v2 client for the flow (outputs, saved logs). ``endpoint`` overrides ``target.endpoints.oss``."""
    import alibabacloud_oss_v2 as oss

    endpoint = endpoint or target.endpoints.oss
    provider = oss.credentials.StaticCredentialsProvider(creds.access_key_id, creds.access_key_secret,
                                                         creds.security_token)
    config = oss.config.load_default()
    config.credentials_provider = provider
    config.region = target.region
    # No SDK retries: tasks.cloud.retry.call() is the one retry policy (retries inside the SDK multiplied with it).
    # (get_object_to_file needs >=2 SDK attempts to write anything; ask-batch uses get_object only.)
    config.retryer = oss.retry.NopRetryer()
    config.retry_max_attempts = 1
    if endpoint:
        host, scheme = split_endpoint(endpoint)
        config.endpoint = f"{scheme}://{host}"
        if not host.endswith(".aliyuncs.com") or _is_ip_host(host):
            config.use_path_style = True
    return oss.Client(config)


# --------------------------------------------------------------------------------------------- kubernetes


def load_kubeconfig(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """A kubeconfig as a dict, from YAML text, a file path, or a dict (copied)."""
    if isinstance(source, Mapping):
        return json.loads(json.dumps(source))
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source and Path(source).is_file()):
        text = Path(source).read_text()
    else:
        text = str(source)
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or "clusters" not in data:
        raise ValueError("not a kubeconfig (no 'clusters'); fix: pass the kubeconfig YAML or its file path")
    return data


def override_server(kubeconfig: dict[str, Any], server: str, *, context: str | None = None) -> dict[str, Any]:
    """Point the context's cluster at ``server`` (a tunnel, a VPC address) without touching credentials."""
    ctx_name = context or kubeconfig.get("current-context")
    contexts = {c["name"]: c["context"] for c in kubeconfig.get("contexts", [])}
    cluster_name = contexts.get(ctx_name, {}).get("cluster") if ctx_name else None
    for cluster in kubeconfig.get("clusters", []):
        if cluster_name is None or cluster["name"] == cluster_name:
            cluster["cluster"]["server"] = server
    return kubeconfig


def kube_api_client(source: str | Path | Mapping[str, Any], *, context: str | None = None,
                    server_override: str | None = None) -> Any:
    """A synchronous ``kubernetes.client.ApiClient`` for one kubeconfig, without touching global config.

    We use the sync ``kubernetes`` client rather than prefect-kubernetes' async ``get_client``: the stages run
    watches and one log stream per pod in threads, and ``get_client`` also rewrites the process-global
    kubernetes_asyncio configuration each time (``KubernetesCredentials.get_client`` in
    https://github.com/PrefectHQ/prefect/blob/main/src/integrations/prefect-kubernetes/prefect_kubernetes/credentials.py).
    """
    from kubernetes import config as kconfig

    data = load_kubeconfig(source)
    if server_override:
        override_server(data, server_override, context=context)
    return kconfig.new_client_from_config_dict(data, context=context, persist_config=False)


def kubeconfig_from_block(block_name: str) -> dict[str, Any]:
    """The kubeconfig dict held by a prefect-kubernetes ``KubernetesCredentials`` block."""
    from prefect_kubernetes.credentials import KubernetesCredentials

    creds = KubernetesCredentials.load(block_name)
    if creds.cluster_config is None:
        raise ValueError(f"KubernetesCredentials block {block_name!r} has no cluster_config; fix: save it with "
                         f"a kubeconfig (in-cluster config is not supported for a remote cluster)")
    data = load_kubeconfig(creds.cluster_config.config)
    data["current-context"] = creds.cluster_config.context_name
    return data


# --------------------------------------------------------------------------------------------- endpoints file


def target_from_endpoints_file(path: str | Path) -> tuple[Target, dict[str, str]]:
    """Read an ``endpoints.json`` (written by a local cloud such as the sandbox) into a Target.

    Returns the Target (region + endpoint overrides, credentials from the default chain) and the environment
    variables that make the default chain find the file's AccessKey. This is the ONE place that knows the
    file's shape; the pipeline only ever sees a region with endpoint overrides.
    """
    data = json.loads(Path(path).read_text())
    k8s = data.get("kubernetes") or {}

    def endpoint(service: str) -> str | None:
        # A local server listed as bare "host:port" speaks plain HTTP; Alibaba's own endpoints are https.
        value = (data.get(service) or {}).get("endpoint")
        return value if not value or "://" in value else f"http://{value}"

    endpoints = EndpointOverrides(
        cs=endpoint("cs"),
        nas=endpoint("nas"),
        oss=endpoint("oss"),
        kubernetes=None if k8s.get("kubeconfig") else k8s.get("server"),
        sts=endpoint("sts"),
    )
    env = {}
    if data.get("access_key_id"):
        env = {"ALIBABA_CLOUD_ACCESS_KEY_ID": data["access_key_id"],
               "ALIBABA_CLOUD_ACCESS_KEY_SECRET": data.get("access_key_secret", "")}
    return Target(region=data.get("region", "cn-hangzhou"), endpoints=endpoints), env


def apply_env(env: Mapping[str, str]) -> None:
    """Export ``env`` into this process (for the default credential chain)."""
    os.environ.update(env)
