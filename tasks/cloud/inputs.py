"""The run's inputs read from their sources: local config files, Prefect Secret blocks, the pods' OSS key.

This is the explicit loading step between the pure parameters (``tasks.spec``) and the stages: everything that
touches the file system or a secret store to learn *what* the run ships lives here, so the spec stays pure and the
dry run, the config stage and the log scrubber all read the same bytes the same way.
"""

from collections.abc import Callable
from pathlib import Path

from tasks.cloud.clients import AliCredentials
from tasks.render.manifests import ConfigContent
from tasks.spec import BatchSpec, ConfigSpec

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


def run_secret_values(spec: BatchSpec, creds: AliCredentials | None, *,
                      load_secret: Callable[[str], str]) -> list[str]:
    """Every secret value the run handles (AccessKey, secret files and env), for scrubbing logs and errors."""
    content = collect_config_content(spec.config, load_secret=load_secret,
                                     extra_secret_env=pod_credential_env(spec, creds))
    return content.secret_values() + (creds.secret_values() if creds else [])
