"""The run's inputs read from their sources: local config files, Prefect Secret blocks, the pods' OSS key.

This is the explicit loading step between the pure parameters (``tasks.spec``) and the stages: everything that
touches the file system or a secret store to learn *what* the run ships lives here, so the spec stays pure and the
dry run, the config stage and the log scrubber all read the same bytes the same way.
"""

from collections.abc import Callable
from pathlib import Path

from tasks.cloud.clients import AliCredentials
from tasks.cloud.local_files import decode_utf8, read_regular_file
from tasks.errors import SpecError
from tasks.render.manifests import ConfigContent
from tasks.spec import BatchSpec, ConfigSpec

#: The most bytes of data one ConfigMap or Secret may hold: Kubernetes' ``MaxSecretSize`` (1 MiB), which API
#: validation compares with the sum of the values of ``data`` and ``binaryData`` (ConfigMap) or ``data`` (Secret).
#: https://kubernetes.io/docs/concepts/configuration/configmap/ ("cannot exceed 1 MiB"),
#: https://kubernetes.io/docs/concepts/configuration/secret/#restriction-data-size ("limited to 1MiB in size").
MAX_OBJECT_BYTES = 1024 * 1024

_TOO_BIG_FIX = "put big inputs on the shared volume (storage) or in OSS, and read them from the pods"


def _read_local_files(paths: list[str], problems: list[tuple[str, str]]) -> tuple[dict[str, bytes], int]:
    """Top-level regular files of each path (a file, or a directory's files; sub-directories are skipped).

    Returns the files read and their total size; once the total is over ``MAX_OBJECT_BYTES`` the remaining files
    are only measured, not read (the run is refused anyway).
    """
    files: dict[str, bytes] = {}
    total = 0
    for i, item in enumerate(paths):
        field = f"config.local_paths.{i}"
        path = Path(item).expanduser()
        if path.is_dir():
            try:
                entries = sorted(p for p in path.iterdir() if not p.is_dir())
            except OSError as exc:
                problems.append((field, f"{item!r}: cannot list it ({exc.strerror}); fix: make it readable"))
                continue
        else:
            entries = [path]
        for entry in entries:
            if entry.name in files:
                problems.append((field, f"two files are named {entry.name!r}; fix: rename one"))
                continue
            if total > MAX_OBJECT_BYTES and entry.is_file():
                total += entry.stat().st_size
                continue
            try:
                data = read_regular_file(entry, limit=MAX_OBJECT_BYTES, field=field,
                                         fix=f"{_TOO_BIG_FIX} (a ConfigMap holds at most 1 MiB)")
            except SpecError as exc:
                problems += exc.problems
                continue
            total += len(data)
            files[entry.name] = data
    return files, total


def collect_config_content(config: ConfigSpec, *, load_secret: Callable[[str], str],
                           extra_secret_env: dict[str, str] | None = None) -> ConfigContent:
    """Read every file and secret the run ships to its pods (local files, Prefect Secret blocks), with bounds.

    Every file is read as ``tasks.cloud.local_files.read_regular_file`` does (regular files only, never more than
    the 1 MiB a ConfigMap or Secret can hold), and the totals are checked against ``MAX_OBJECT_BYTES`` the way the
    Kubernetes API server checks them, so a run that cannot publish its config stops here, before anything exists.

    Raises:
        SpecError: one line per problem (missing, special or too big files, non-UTF-8 secret env values, a
            ConfigMap or Secret over 1 MiB), each naming the field.
    """
    problems: list[tuple[str, str]] = []
    files, local_bytes = _read_local_files(config.local_paths, problems)
    for name, text in config.files.items():
        if name in files:
            problems.append((f"config.files.{name}", "is also in config.local_paths; fix: keep one"))
        files[name] = text.encode()
    secret_files: dict[str, bytes] = {}
    for i, item in enumerate(config.secret_files):
        blob = _secret_bytes(item.block, item.file, load_secret, field=f"config.secret_files.{i}", problems=problems)
        if blob is not None:
            secret_files[item.name] = blob
    secret_env: dict[str, str] = {}
    for i, item in enumerate(config.secret_env):
        field = f"config.secret_env.{i}"
        blob = _secret_bytes(item.block, item.file, load_secret, field=field, problems=problems)
        if blob is not None:
            try:
                secret_env[item.name] = decode_utf8(blob, field=field, what=f"the value of {item.name}")
            except SpecError as exc:
                problems += exc.problems
    secret_env.update(extra_secret_env or {})
    config_bytes = local_bytes + sum(len(v.encode()) for v in config.files.values())
    if config_bytes > MAX_OBJECT_BYTES:
        problems.append(("config.local_paths" if config.local_paths else "config.files",
                         f"the config files total {config_bytes:,} bytes, over the {MAX_OBJECT_BYTES:,} bytes (1 MiB) "
                         f"a Kubernetes ConfigMap holds; fix: {_TOO_BIG_FIX}"))
    secret_bytes = sum(len(v) for v in secret_files.values()) + sum(
        len(v.encode()) for v in secret_env.values())
    if secret_bytes > MAX_OBJECT_BYTES:
        problems.append(("config.secret_files", f"the secret files and env total {secret_bytes:,} bytes, over the "
                         f"{MAX_OBJECT_BYTES:,} bytes (1 MiB) a Kubernetes Secret holds; fix: {_TOO_BIG_FIX}"))
    if problems:
        raise SpecError(problems)
    return ConfigContent(files=files, secret_files=secret_files, secret_env=secret_env)


def _secret_bytes(block: str | None, file: str | None, load_secret: Callable[[str], str], *, field: str,
                  problems: list[tuple[str, str]]) -> bytes | None:
    if block:
        return load_secret(block).encode()
    assert file is not None  # SecretItem guarantees one of the two
    try:
        return read_regular_file(file, limit=MAX_OBJECT_BYTES, field=field, fix=_TOO_BIG_FIX)
    except SpecError as exc:
        problems += exc.problems
        return None


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
