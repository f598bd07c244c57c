"""Stage publish_config: the run's files, secrets and env reach the pods as an immutable ConfigMap and Secret.

Why immutable and content-named: a Job that is running (or re-attached after a crash) must see exactly the config
it started with. Changing a file gives a new name, hence a new Job spec hash, hence a new Job; the old objects are
never edited under a running pod. Publishing is find-then-create: an object with the same name already has the
same content (the name *is* the content hash), so a 409 from a concurrent or earlier attempt is success.

The OSS connection the pods need travels the same way: plain settings as env (in the Job), the AccessKey (if the
pods do not use a RAM role) as secret env from this Secret.
"""

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.clients import AliCredentials, _load_prefect_secret
from tasks.handles import ClusterHandle, ConfigHandle
from tasks.manifests import ConfigContent, config_map_manifest, secret_manifest
from tasks.retry import call
from tasks.spec import BatchSpec, ConfigSpec
from tasks.stage import RETRY_DELAYS, Scrubber, credentials, kube_for, stage_logs, transient_only

log = logging.getLogger("ask_batch.config")

MAX_OBJECT_BYTES = 1_000_000  # Kubernetes rejects ConfigMaps/Secrets over 1 MiB (etcd limit), metadata included


def _read_local_files(paths: list[str]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for item in paths:
        path = Path(item).expanduser()
        entries = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        for entry in entries:
            if entry.name in files:
                raise ValueError(f"config.local_paths: two files are named {entry.name!r}; fix: rename one")
            files[entry.name] = entry.read_bytes()
    return files


def collect_config_content(config: ConfigSpec, *, load_secret: Callable[[str], str],
                           extra_secret_env: dict[str, str] | None = None) -> ConfigContent:
    """Read every file and secret the run ships to its pods (local files, Prefect Secret blocks).

    Raises ValueError naming the field when something is missing or too big, before anything is created.
    """
    files = _read_local_files(config.local_paths)
    for name, text in config.files.items():
        if name in files:
            raise ValueError(f"config.files: {name!r} is also in config.local_paths; fix: keep one")
        files[name] = text.encode()
    secret_files = {item.name: _secret_bytes(item.block, item.file, load_secret) for item in config.secret_files}
    secret_env = {item.name: _secret_bytes(item.block, item.file, load_secret).decode()
                  for item in config.secret_env}
    secret_env.update(extra_secret_env or {})
    for what, blob in (("config files", files), ("secret files and env", {**secret_files, **{
            k: v.encode() for k, v in secret_env.items()}})):
        size = sum(len(v) for v in blob.values())
        if size > MAX_OBJECT_BYTES:
            raise ValueError(f"{what} total {size} bytes, over the 1 MiB Kubernetes limit; fix: put big inputs "
                             f"on the shared volume or in OSS")
    return ConfigContent(files=files, secret_files=secret_files, secret_env=secret_env)


def _secret_bytes(block: str | None, file: str | None, load_secret: Callable[[str], str]) -> bytes:
    if block:
        return load_secret(block).encode()
    assert file is not None  # SecretItem guarantees one of the two
    return Path(file).expanduser().read_bytes()


def pod_credential_env(spec: BatchSpec, creds: AliCredentials | None) -> dict[str, str]:
    """Secret env that gives the pods the OSS AccessKey (empty when they use a RAM role)."""
    if spec.outputs.pod_credentials != "target" or creds is None:
        return {}
    env = {"OSS_ACCESS_KEY_ID": creds.access_key_id, "OSS_ACCESS_KEY_SECRET": creds.access_key_secret}
    if creds.security_token:
        env["OSS_SESSION_TOKEN"] = creds.security_token
    return env


def render_config_objects(spec: BatchSpec, run_key: str, content: ConfigContent) -> list[dict[str, Any]]:
    """The ConfigMap and Secret to create (either may be absent when empty)."""
    ns = spec.cluster.namespace
    objects = []
    if content.files:
        objects.append(config_map_manifest(run_key, content.files, namespace=ns))
    if content.secret_files or content.secret_env:
        objects.append(secret_manifest(run_key, content, namespace=ns))
    return objects


def publish_config(core_v1: Any, spec: BatchSpec, run_key: str, content: ConfigContent) -> ConfigHandle:
    """Create the ConfigMap and Secret if they do not exist yet (idempotent, concurrent-safe).

    Args:
        core_v1: a ``kubernetes.client.CoreV1Api``.
    """
    from kubernetes.client.exceptions import ApiException

    ns = spec.cluster.namespace
    names: dict[str, str] = {}
    for body in render_config_objects(spec, run_key, content):
        kind, name = body["kind"], body["metadata"]["name"]
        create = core_v1.create_namespaced_config_map if kind == "ConfigMap" else core_v1.create_namespaced_secret
        try:
            call(create, ns, body, service="Kubernetes", operation=f"create {kind} {name}")
        except Exception as exc:
            # Same name = same content (the name is its hash): an existing object is what we wanted.
            if not (isinstance(exc.__cause__, ApiException) and exc.__cause__.status == 409):
                raise
        names[kind] = name
    return ConfigHandle(
        namespace=ns,
        config_map=names.get("ConfigMap"),
        secret=names.get("Secret"),
        secret_file_keys=tuple(sorted(content.secret_files)),
        secret_env_keys=tuple(sorted(content.secret_env)),
    )


def run_secret_values(spec: BatchSpec, creds: AliCredentials | None, *,
                      load_secret: Callable[[str], str]) -> list[str]:
    """Every secret value the run handles (AccessKey, secret files and env), for scrubbing logs and errors."""
    content = collect_config_content(spec.config, load_secret=load_secret,
                                     extra_secret_env=pod_credential_env(spec, creds))
    return content.secret_values() + (creds.secret_values() if creds else [])


# --------------------------------------------------------------------------------------------- Prefect task


@task(name="publish_config", cache_policy=NO_CACHE, retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=transient_only)
def publish_config_task(spec: BatchSpec, run_key: str, cluster: ClusterHandle) -> ConfigHandle:
    """Prefect task: create the run's immutable ConfigMap and Secret (see ``publish_config``).

    The Secret's content is read here, from its sources, and never leaves this task: the handle holds names only.
    """
    from kubernetes import client

    creds = credentials(spec)
    content = collect_config_content(spec.config, load_secret=_load_prefect_secret,
                                     extra_secret_env=pod_credential_env(spec, creds))
    scrub = Scrubber(content.secret_values() + creds.secret_values())
    with stage_logs(scrub):
        api = kube_for(spec, cluster, creds)
        try:
            handle = publish_config(client.CoreV1Api(api), spec, run_key, content)
        finally:
            api.close()
        log.info("config published: ConfigMap %s, Secret %s (keys: %s)", handle.config_map, handle.secret,
                 ", ".join(handle.secret_file_keys + handle.secret_env_keys) or "none")
        return handle
