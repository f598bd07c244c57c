"""Example ask-batch workload: hash one deterministic shard of data per Job index.

Each pod of the Indexed Job reads its index from ``ASK_BATCH_INDEX``, generates its shard (SHA-256 in counter mode
over the seed and the index, so anyone can recompute it), writes it to the shared volume as scratch, reads it back,
hashes it, and uploads a JSON result plus a done-marker to OSS with the OSS v2 SDK.

Every path comes from the environment (or an argument), never from a constant in this file: on ASK the mounts
are where the Job spec puts them; in a local emulation the same Job runs as a host process whose mount paths are
rewritten in its env and args. The contract is the one ``tasks/render/manifests.py`` documents:

    ASK_BATCH_INDEX            this pod's index (the original one, also on a follow-up Job that re-runs only the
                               missing indexes; equal to JOB_COMPLETION_INDEX on the first Job, which is the fallback)
    ASK_BATCH_CONFIG_DIR       settings file (``settings.json`` unless --settings names another)
    ASK_BATCH_SECRET_DIR       ``token``: a secret used to sign the result (HMAC), never printed
    ASK_BATCH_DATA_DIR         shared scratch space (optional)
    ASK_BATCH_OSS_ENDPOINT / _REGION / _BUCKET, ASK_BATCH_OUTPUT_PREFIX (with ``{index}``), ASK_BATCH_MARKER_NAME
    credentials, whichever ask-batch gave (``credentials_provider``):
      RRSA (the default): ALIBABA_CLOUD_ROLE_ARN, ALIBABA_CLOUD_OIDC_PROVIDER_ARN, ALIBABA_CLOUD_OIDC_TOKEN_FILE,
                          ALIBABA_CLOUD_STS_ENDPOINT (or _STS_REGION + _VPC_ENDPOINT_ENABLED)
      a key:              OSS_ACCESS_KEY_ID / OSS_ACCESS_KEY_SECRET [/ OSS_SESSION_TOKEN]

Run it alone (no OSS): ``ASK_BATCH_INDEX=3 python3 shard_hash.py --no-upload``.
"""

import argparse
import hashlib
import hmac
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, Any] = {"seed": "ask-batch-demo", "shard_bytes": 1 << 20, "block_bytes": 1 << 16,
                            "sleep_seconds": 0, "fail_indexes": [], "fail_exit_code": 42}


def shard_blocks(seed: str, index: int, size: int, block: int):
    """The shard's bytes in blocks of ``block``: the stream SHA-256(seed|index|0) SHA-256(seed|index|1) ...

    Byte ``p`` of the shard always comes from digest number ``p // 32``, so the data does not depend on the
    block size a reader or writer happens to use.
    """
    produced = 0
    while produced < size:
        want = min(block, size - produced)
        first, offset = divmod(produced, 32)
        chunk = bytearray()
        counter = first
        while len(chunk) < offset + want:
            chunk += hashlib.sha256(f"{seed}|{index}|{counter}".encode()).digest()
            counter += 1
        yield bytes(chunk[offset:offset + want])
        produced += want


def compute_shard(seed: str, index: int, size: int, block: int = 1 << 16) -> dict[str, Any]:
    """The verifiable part of a result: recompute it anywhere to check a pod's output."""
    digest, total, byte_sum = hashlib.sha256(), 0, 0
    for chunk in shard_blocks(seed, index, size, block):
        digest.update(chunk)
        total += len(chunk)
        byte_sum += sum(chunk)
    return {"index": index, "seed": seed, "bytes": total, "sha256": digest.hexdigest(), "byte_sum": byte_sum}


def load_settings(config_dir: str | None, name: str) -> dict[str, Any]:
    settings = dict(DEFAULTS)
    if config_dir and (Path(config_dir) / name).is_file():
        settings.update(json.loads((Path(config_dir) / name).read_text()))
        print(f"settings: {name} from the config mount", flush=True)
    else:
        print("settings: defaults (no config mount)", flush=True)
    return settings


def read_token(secret_dir: str | None) -> bytes:
    if secret_dir and (Path(secret_dir) / "token").is_file():
        return (Path(secret_dir) / "token").read_bytes().strip()
    return b""


def scratch_roundtrip(data_dir: str | None, seed: str, index: int, size: int, block: int) -> dict[str, Any]:
    """Write the shard to the shared volume, read it back and hash it: proves the volume works."""
    if not data_dir:
        return compute_shard(seed, index, size, block)
    path = Path(data_dir) / f"shard-{index:05d}.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        for chunk in shard_blocks(seed, index, size, block):
            fh.write(chunk)
    digest, total, byte_sum = hashlib.sha256(), 0, 0
    with path.open("rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
            total += len(chunk)
            byte_sum += sum(chunk)
    print(f"scratch: wrote and re-read {total} bytes at {path}", flush=True)
    return {"index": index, "seed": seed, "bytes": total, "sha256": digest.hexdigest(), "byte_sum": byte_sum}


#: What RRSA gives a pod (ack-pod-identity-webhook, or ask-batch's own rendering of the same).
OIDC_ENV = ("ALIBABA_CLOUD_ROLE_ARN", "ALIBABA_CLOUD_OIDC_PROVIDER_ARN", "ALIBABA_CLOUD_OIDC_TOKEN_FILE")


def credentials_provider(env: dict[str, str]):
    """The OSS SDK's credentials for this pod, from whatever the pod was given.

    - ``OSS_ACCESS_KEY_ID``/``_SECRET`` (ask-batch's pod credentials 'target', or a scoped key of your own): used
      as they are, by the OSS SDK's environment provider;
    - else the Alibaba Cloud credentials library (``alibabacloud-credentials``,
      https://www.alibabacloud.com/help/en/sdk/developer-reference/v2-manage-python-access-credentials), wrapped
      for the OSS v2 SDK in its ``CredentialsProviderFunc``:
      with the RRSA env (``OIDC_ENV``) its OIDC provider trades the pod's service-account token for temporary keys
      through STS AssumeRoleWithOIDC and renews them before they expire; without, its default chain
      (``ALIBABA_CLOUD_ACCESS_KEY_ID``, profiles, an ECI RAM role's metadata).

    The library's OIDC provider does not read ``ALIBABA_CLOUD_STS_ENDPOINT`` (the webhook injects it; other SDKs
    honour it), so it is passed explicitly.
    """
    import alibabacloud_oss_v2 as oss

    if env.get("OSS_ACCESS_KEY_ID"):
        return oss.credentials.EnvironmentVariableCredentialsProvider()
    from alibabacloud_credentials.provider import DefaultCredentialsProvider, OIDCRoleArnCredentialsProvider

    if all(env.get(name) for name in OIDC_ENV):
        source = OIDCRoleArnCredentialsProvider(
            role_arn=env["ALIBABA_CLOUD_ROLE_ARN"], oidc_provider_arn=env["ALIBABA_CLOUD_OIDC_PROVIDER_ARN"],
            oidc_token_file_path=env["ALIBABA_CLOUD_OIDC_TOKEN_FILE"],
            role_session_name=env.get("ALIBABA_CLOUD_ROLE_SESSION_NAME") or "ask-batch-workload",
            sts_endpoint=env.get("ALIBABA_CLOUD_STS_ENDPOINT") or None)
    else:
        source = DefaultCredentialsProvider()

    def current() -> "oss.credentials.Credentials":
        cred = source.get_credentials()
        return oss.credentials.Credentials(access_key_id=cred.get_access_key_id(),
                                           access_key_secret=cred.get_access_key_secret(),
                                           security_token=cred.get_security_token())

    return oss.credentials.CredentialsProviderFunc(func=current)


def oss_client(endpoint: str, region: str, env: dict[str, str] | None = None):
    import alibabacloud_oss_v2 as oss

    cfg = oss.config.load_default()
    cfg.credentials_provider = credentials_provider(dict(os.environ) if env is None else env)
    cfg.region = region
    cfg.endpoint = endpoint
    host = endpoint.split("://", 1)[-1].split("/", 1)[0]
    if not host.split(":")[0].endswith(".aliyuncs.com"):
        cfg.use_path_style = True  # a local or custom endpoint: no bucket sub-domains
    return oss.Client(cfg)


def upload(result: dict[str, Any], env: dict[str, str], index: int) -> str:
    import alibabacloud_oss_v2 as oss

    bucket = env["ASK_BATCH_OSS_BUCKET"]
    prefix = env["ASK_BATCH_OUTPUT_PREFIX"].format(index=index)
    client = oss_client(env["ASK_BATCH_OSS_ENDPOINT"], env.get("ASK_BATCH_OSS_REGION", ""), env)
    body = json.dumps(result, indent=2, sort_keys=True).encode()
    client.put_object(oss.PutObjectRequest(bucket=bucket, key=prefix + "result.json", body=body,
                                           content_type="application/json"))
    marker = env.get("ASK_BATCH_MARKER_NAME", "_SUCCESS")
    # The marker goes last: its presence means every other object of this index is complete.
    client.put_object(oss.PutObjectRequest(bucket=bucket, key=prefix + marker,
                                           body=hashlib.sha256(body).hexdigest().encode()))
    return f"oss://{bucket}/{prefix}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="settings.json", help="settings file name in ASK_BATCH_CONFIG_DIR")
    parser.add_argument("--no-upload", action="store_true", help="print the result instead of uploading it")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    try:
        index = int(env.get("ASK_BATCH_INDEX") or env.get("JOB_COMPLETION_INDEX", ""))
    except ValueError:
        print("neither ASK_BATCH_INDEX nor JOB_COMPLETION_INDEX is set: run me as an ask-batch Job pod",
              file=sys.stderr)
        return 2
    settings = load_settings(env.get("ASK_BATCH_CONFIG_DIR"), args.settings)
    print(f"index {index}: shard of {settings['shard_bytes']} bytes, seed {settings['seed']!r}", flush=True)
    if settings["sleep_seconds"]:
        time.sleep(float(settings["sleep_seconds"]))
    if index in settings["fail_indexes"]:
        print(f"index {index}: failing on purpose (settings.fail_indexes)", file=sys.stderr, flush=True)
        return int(settings["fail_exit_code"])
    started = time.time()
    result = scratch_roundtrip(env.get("ASK_BATCH_DATA_DIR"), settings["seed"], index,
                               int(settings["shard_bytes"]), int(settings["block_bytes"]))
    token = read_token(env.get("ASK_BATCH_SECRET_DIR"))
    result["signature"] = hmac.new(token, result["sha256"].encode(), hashlib.sha256).hexdigest() if token else None
    result["seconds"] = round(time.time() - started, 3)
    result["run_key"] = env.get("ASK_BATCH_RUN_KEY")
    print(f"index {index}: sha256 {result['sha256']} bytes {result['bytes']}", flush=True)
    if args.no_upload or not env.get("ASK_BATCH_OSS_BUCKET"):
        print(json.dumps(result, sort_keys=True), flush=True)
        return 0
    where = upload(result, env, index)
    print(f"index {index}: uploaded result and marker to {where}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
