"""No secret in any form anywhere ask-batch writes: a 4-line PEM key and a token file that ends in a newline, printed
by the workload raw, base64'd (wrapped and not, with and without the newline) and JSON-escaped, in a failing and in
a succeeding run. Searched where a user or an attacker could find them: the flow's stdout/stderr, the Prefect
database file (logs, states, artifacts, events), everything under outputs/, and every object in the OSS bucket.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from flows.ask_batch import ask_batch
from flows.cli import build_spec
from flows.run_files import flow_parameters
from tests.e2e.conftest import EXAMPLE, example_sets

LEAK = r"""
d=$ASK_BATCH_SECRET_DIR
for f in key.pem token.txt; do
  echo "raw $f:"; cat "$d/$f"
  echo "one line $f: $(cat "$d/$f")"
  echo "b64 $f: $(base64 -w0 "$d/$f")"
  echo "b64 stripped $f: $(printf %s "$(cat "$d/$f")" | base64 -w0)"
  base64 "$d/$f"
  python3 -c 'import json, sys; print("json", json.dumps({"v": open(sys.argv[1]).read()}))' "$d/$f"
  python3 -c 'import sys, urllib.parse; print("url", urllib.parse.quote(open(sys.argv[1]).read()))' "$d/$f"
done
echo "index $JOB_COMPLETION_INDEX done"
[ "$EXIT_CODE" = 0 ] && python3 "$ASK_BATCH_CONFIG_DIR/mark.py"
exit "$EXIT_CODE"
"""
# The done-marker the outputs stage checks for, written as the example workload does (OSS SDK, the pod's env).
MARK = """
import os, alibabacloud_oss_v2 as oss
cfg = oss.config.load_default()
cfg.credentials_provider = oss.credentials.EnvironmentVariableCredentialsProvider()
cfg.region, cfg.endpoint = os.environ["ASK_BATCH_OSS_REGION"], os.environ["ASK_BATCH_OSS_ENDPOINT"]
cfg.use_path_style = True
prefix = os.environ["ASK_BATCH_OUTPUT_PREFIX"].format(index=int(os.environ["JOB_COMPLETION_INDEX"]))
oss.Client(cfg).put_object(oss.PutObjectRequest(bucket=os.environ["ASK_BATCH_OSS_BUCKET"], key=prefix + "_SUCCESS",
                                                body=b"ok"))
"""


def pem() -> str:
    body = base64.b64encode(os.urandom(96)).decode()
    return "-----BEGIN PRIVATE KEY-----\n" + body[:64] + "\n" + body[64:] + "\n-----END PRIVATE KEY-----\n"


def forms(value: str) -> set[str]:
    """What must not appear: each identifying line, base64 with/without the newline (whole and 76-column lines),
    JSON-escaped."""
    out = {ln for ln in value.splitlines() if len(ln) >= 8 and "PRIVATE KEY" not in ln}
    for v in (value, value.rstrip("\n")):
        encoded = base64.b64encode(v.encode()).decode()
        out.add(encoded)
        out |= {encoded[i:i + 76] for i in range(0, len(encoded) - 75, 76)}
        out.add(json.dumps(v)[1:-1])
    # URL-encoded as urllib's quote writes it by default ('/' kept), whole and line by line.
    out |= {quote(v) for v in (value, *value.splitlines()) if len(v) >= 8 and "PRIVATE KEY" not in v}
    return out


def everything_written(workdir: Path, spec: Any, capfd: pytest.CaptureFixture[str]) -> dict[str, bytes]:
    """Where to look -> its bytes."""
    import alibabacloud_oss_v2 as o
    from prefect.logging.handlers import APILogHandler
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    from tasks.cloud.clients import oss_client
    from tasks.cloud.context import credentials

    APILogHandler().flush()
    captured = capfd.readouterr()
    found = {"stdout": captured.out.encode(), "stderr": captured.err.encode()}
    db = Path(PREFECT_SERVER_DATABASE_CONNECTION_URL.value().split(":///", 1)[1])
    for path in db.parent.glob(db.name + "*"):  # the database and its write-ahead log
        found[f"prefect db {path.name}"] = path.read_bytes()
    for path in (workdir / "outputs").rglob("*"):
        if path.is_file():
            found[str(path.relative_to(workdir))] = path.read_bytes()
    oss = oss_client(spec.target, credentials(spec))
    for page in oss.list_objects_v2_paginator().iter_page(o.ListObjectsV2Request(bucket=spec.outputs.bucket)):
        for obj in page.contents or []:
            found[f"oss {obj.key}"] = oss.get_object(o.GetObjectRequest(bucket=spec.outputs.bucket,
                                                                       key=obj.key)).body.read()
    return found


@pytest.mark.parametrize("exit_code", [3, 0])
def test_no_form_of_a_secret_reaches_any_output(sandbox_dir: Path, workdir: Path, exit_code: int,
                                                capfd: pytest.CaptureFixture[str]) -> None:
    key, token = pem(), "tok-" + os.urandom(12).hex() + "\n"
    (workdir / "key.pem").write_text(key)
    (workdir / "token.txt").write_text(token)
    (workdir / "leak.sh").write_text(LEAK)
    (workdir / "mark.py").write_text(MARK)
    run_key = f"e2e-forms-{exit_code}"
    sets = example_sets(workdir, run_key) + [
        "job.completions=2", "job.parallelism=2", "job.backoff_limit_per_index=0",
        # the flow's own key in the pods' Secret (not the default): one more secret that must not leak
        "outputs.pod_credentials=target",
        f"config.local_paths=[{workdir / 'leak.sh'}, {workdir / 'mark.py'}]",
        "job.command=[sh, /etc/ask-batch/config/leak.sh]", "job.args=[]", f"job.env={{EXIT_CODE: '{exit_code}'}}",
        f"config.secret_files=[{{name: key.pem, file: {workdir / 'key.pem'}}}, "
        f"{{name: token.txt, file: {workdir / 'token.txt'}}}]",
    ]
    spec = build_spec(EXAMPLE, sets, sandbox_dir)
    state = ask_batch(**flow_parameters(spec), return_state=True)
    assert state.is_failed() if exit_code else state.is_completed(), state.message
    found = everything_written(workdir, spec, capfd)
    # This run's kept logs (the bucket and the Prefect database are shared with the session's other tests).
    kept = [name for name in found if name.endswith(".log") and "/logs/" in name and run_key in name]
    unkept = [name for name in kept if b"index " not in found[name] or b"<redacted>" not in found[name]]
    assert kept and not unkept, f"the workload's lines should be kept, with the secrets blanked: {unkept or kept}"
    leaks = [(where, form[:20]) for form in forms(key) | forms(token) for where, data in found.items()
             if form.encode() in data]
    assert not leaks, f"secret forms found (where, first characters): {leaks}"
