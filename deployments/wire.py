"""Wire the deployments to a target: one command that writes the Prefect blocks and the variable runs read.

    python -m deployments.wire --sandbox DIR                 # the sandbox whose endpoints.json is in DIR
    python -m deployments.wire --region cn-hangzhou          # real Alibaba Cloud; the key from the environment
        [--credentials env|chain] [--endpoint cs=HOST] [--endpoint oss=URL] [--endpoint nas=HOST]
        [--endpoint kubernetes=URL] [--variable NAME] [--block-prefix PREFIX] [--dry-run]

What it writes (against the Prefect server of ``PREFECT_API_URL``):

- Secret blocks ``<prefix>-access-key-id``, ``<prefix>-access-key-secret`` (and ``<prefix>-security-token`` for
  an STS token), each holding a **string**: the Prefect API masks a string Secret but not a dict one
  (observed with Prefect 3.9.1: https://docs.prefect.io/v3/develop/secrets). With ``--credentials chain`` no
  block is written and runs use the Alibaba Cloud default credential chain of the worker's host (e.g. an ECS RAM
  role).
- The variable ``ask_batch_target`` (``--variable``): a ``Target`` (region, credentials *by block name*, endpoint
  overrides) as JSON. The deployments' ``spec.target`` refers to it, and the server resolves that reference when
  it creates each run, so re-wiring takes effect with the next run and needs no redeploy.

Secrets never travel on the command line (shell history, ``ps``): the key comes from the sandbox's endpoints file
or from ``ALIBABA_CLOUD_ACCESS_KEY_ID`` / ``ALIBABA_CLOUD_ACCESS_KEY_SECRET`` (/ ``ALIBABA_CLOUD_SECURITY_TOKEN``).
"""

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from deployments.steps import TARGET_VARIABLE
from tasks.spec import CredentialsSpec, EndpointOverrides, Target

DEFAULT_BLOCK_PREFIX = "ask-batch"


@dataclass
class Wiring:
    """What to write: the target (credentials by block name) and the secret values for those blocks."""

    target: Target
    secrets: dict[str, str] = field(default_factory=dict, repr=False)  # block name -> value
    variable: str = TARGET_VARIABLE

    def describe(self) -> list[str]:
        """Human-readable lines (no secret values)."""
        lines = [f"variable {self.variable} = {json.dumps(self.target.model_dump(mode='json'), sort_keys=True)}"]
        lines += [f"secret block {name} (string, {len(value)} characters)" for name, value in self.secrets.items()]
        return lines


def _block_names(prefix: str) -> tuple[str, str, str]:
    return f"{prefix}-access-key-id", f"{prefix}-access-key-secret", f"{prefix}-security-token"


def _with_blocks(region: str, endpoints: EndpointOverrides, key_id: str, key_secret: str, token: str | None,
                 *, prefix: str, variable: str) -> Wiring:
    id_block, secret_block, token_block = _block_names(prefix)
    secrets = {id_block: key_id, secret_block: key_secret}
    if token:
        secrets[token_block] = token
    credentials = CredentialsSpec(mode="secret_blocks", access_key_id_block=id_block,
                                  access_key_secret_block=secret_block,
                                  security_token_block=token_block if token else None)
    return Wiring(Target(region=region, credentials=credentials, endpoints=endpoints), secrets, variable)


def wiring_for_sandbox(directory: str | Path, *, prefix: str = DEFAULT_BLOCK_PREFIX,
                       variable: str = TARGET_VARIABLE) -> Wiring:
    """The wiring for a sandbox: region, endpoints and AccessKey from ``DIR/endpoints.json``.

    Raises:
        FileNotFoundError: no endpoints.json in ``directory`` (the sandbox was never started there).
    """
    from tasks.cloud.clients import target_from_endpoints_file

    endpoints_file = Path(directory) / "endpoints.json"
    if not endpoints_file.is_file():
        raise FileNotFoundError(f"{endpoints_file} does not exist; fix: start the sandbox first "
                                f"(python -m sandbox serve --dir {directory}, or make up)")
    target, env = target_from_endpoints_file(endpoints_file)
    key_id = env.get("ALIBABA_CLOUD_ACCESS_KEY_ID")
    key_secret = env.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    if not (key_id and key_secret):
        raise ValueError(f"{endpoints_file} holds no access key pair")
    return _with_blocks(target.region, target.endpoints, key_id, key_secret, None, prefix=prefix,
                        variable=variable)


def wiring_for_region(region: str, *, endpoints: dict[str, str] | None = None, credentials: str = "env",
                      environ: dict[str, str] | None = None, prefix: str = DEFAULT_BLOCK_PREFIX,
                      variable: str = TARGET_VARIABLE) -> Wiring:
    """The wiring for real Alibaba Cloud (or any endpoints): region, optional overrides, key source.

    Args:
        region: region id, e.g. ``cn-hangzhou``.
        endpoints: overrides by service (``cs``, ``nas``, ``oss``, ``kubernetes``); empty means public endpoints.
        credentials: ``"env"`` copies the AccessKey from the environment into Secret blocks; ``"chain"`` writes
            no block and lets runs use the default credential chain of the worker's host.
        environ: the environment to read the key from (default ``os.environ``).

    Raises:
        ValueError: a bad region/endpoint, or ``"env"`` without the key in the environment.
    """
    overrides = EndpointOverrides(**(endpoints or {}))
    if credentials == "chain":
        return Wiring(Target(region=region, endpoints=overrides), {}, variable)
    env = os.environ if environ is None else environ
    key_id, key_secret = env.get("ALIBABA_CLOUD_ACCESS_KEY_ID"), env.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    if not (key_id and key_secret):
        raise ValueError("--credentials env needs ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET "
                         "in the environment; fix: export both, or use --credentials chain")
    return _with_blocks(region, overrides, key_id, key_secret, env.get("ALIBABA_CLOUD_SECURITY_TOKEN") or None,
                        prefix=prefix, variable=variable)


def apply(wiring: Wiring) -> None:
    """Write the Secret blocks and the variable to the Prefect server of the current settings (overwriting)."""
    from prefect.blocks.system import Secret
    from prefect.variables import Variable

    for name, value in wiring.secrets.items():
        Secret(value=value).save(name, overwrite=True)
    Variable.set(wiring.variable, wiring.target.model_dump(mode="json"), overwrite=True)


def _endpoint_pairs(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        service, sep, value = item.partition("=")
        if not sep or service not in EndpointOverrides.model_fields:
            raise SystemExit(f"--endpoint {item!r}: expected SERVICE=ENDPOINT with SERVICE one of "
                             f"{', '.join(EndpointOverrides.model_fields)}")
        out[service] = value
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m deployments.wire", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--sandbox", metavar="DIR", help="wire the sandbox whose endpoints.json is in DIR")
    where.add_argument("--region", help="wire a real region, e.g. cn-hangzhou")
    parser.add_argument("--credentials", choices=["env", "chain"], default="env",
                        help="(--region) key from the environment into Secret blocks, or the default chain")
    parser.add_argument("--endpoint", action="append", default=[], metavar="SERVICE=ENDPOINT",
                        help="(--region) endpoint override: cs, nas, oss or kubernetes")
    parser.add_argument("--variable", default=TARGET_VARIABLE, help="Prefect variable holding the target")
    parser.add_argument("--block-prefix", default=DEFAULT_BLOCK_PREFIX, help="prefix of the Secret block names")
    parser.add_argument("--dry-run", action="store_true", help="print what would be written, write nothing")
    args = parser.parse_args(argv)
    try:
        if args.sandbox:
            wiring = wiring_for_sandbox(args.sandbox, prefix=args.block_prefix, variable=args.variable)
        else:
            wiring = wiring_for_region(args.region, endpoints=_endpoint_pairs(args.endpoint),
                                       credentials=args.credentials, prefix=args.block_prefix,
                                       variable=args.variable)
    except (OSError, ValueError) as exc:
        print(f"wire: {exc}", file=sys.stderr)
        return 2
    if not args.dry_run:
        apply(wiring)
    for line in wiring.describe():
        print(("would write " if args.dry_run else "wrote ") + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
