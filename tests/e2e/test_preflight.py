"""Cheap checks before anything billed (issue 11): the run stops before any CS, NAS or Kubernetes request.

The sandbox counts the requests each service received (``/stats``); these tests compare them before and after.
"""

import json
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import alibabacloud_oss_v2 as oss
import pytest

from flows.cli import main
from tests.e2e.conftest import EXAMPLE, example_sets


def requests_by_service(sandbox_dir: Path) -> dict[str, int]:
    base = json.loads((sandbox_dir / "endpoints.json").read_text())["control"]["endpoint"]
    with urllib.request.urlopen(base + "/stats", timeout=5) as resp:
        stats = json.loads(resp.read())
    counts: dict[str, Any] = {name: s["requests"] for name, s in stats["services"].items()}
    counts["k8s"] = sum(c["requests"] for c in stats["clusters"].values())
    return {s: counts.get(s, 0) for s in ("cs", "nas", "k8s")}


def foreign_bucket(sandbox_dir: Path) -> str:
    endpoints = json.loads((sandbox_dir / "endpoints.json").read_text())
    cfg = oss.config.load_default()
    cfg.region, cfg.endpoint, cfg.use_path_style = endpoints["region"], endpoints["oss"]["endpoint"], True
    other = endpoints["other_account"]
    cfg.credentials_provider = oss.credentials.StaticCredentialsProvider(other["access_key_id"],
                                                                         other["access_key_secret"])
    name = "someone-elses-" + uuid.uuid4().hex[:8]
    oss.Client(cfg).put_bucket(oss.PutBucketRequest(bucket=name))
    return name


def test_a_bucket_of_another_account_fails_the_run_before_cluster_nas_or_kubernetes(
        sandbox_dir: Path, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bucket = foreign_bucket(sandbox_dir)
    argv = ["--params", str(EXAMPLE), "--sandbox", str(sandbox_dir)]
    for item in example_sets(workdir, "e2e-foreign") + [f"outputs.bucket={bucket}"]:
        argv += ["--set", item]
    before = requests_by_service(sandbox_dir)
    assert main(argv) == 1
    assert f"OSS bucket '{bucket}'" in capsys.readouterr().err
    assert requests_by_service(sandbox_dir) == before


@pytest.mark.parametrize(("change", "field"), [
    ("cluster.ask.vpc_id=vpc_bad", "cluster.ask.vpc_id"),
    ("cluster.ask.vswitch_ids=[vsw-a_b]", "cluster.ask.vswitch_ids"),
    ("cluster.ask.name=has_underscore", "cluster.ask.name"),
])
def test_malformed_network_ids_exit_2_before_any_request(sandbox_dir: Path, change: str, field: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    before = requests_by_service(sandbox_dir)
    assert main(["--params", str(EXAMPLE), "--sandbox", str(sandbox_dir), "--set", change]) == 2
    assert f"  - {field}" in capsys.readouterr().err
    assert requests_by_service(sandbox_dir) == before


def writes(sandbox_dir: Path) -> dict[str, int]:
    """Requests that create or change something, per service: CS and OSS by method, NAS by action."""
    base = json.loads((sandbox_dir / "endpoints.json").read_text())["control"]["endpoint"]
    with urllib.request.urlopen(base + "/stats", timeout=5) as resp:
        services = json.loads(resp.read())["services"]
    out = {}
    for name, service in services.items():
        ops = service.get("operations", {})
        out[name] = sum(n for op, n in ops.items()
                        if op.split(" ")[0] in ("POST", "PUT", "DELETE") or op.startswith(("Create", "Delete")))
    return out


def test_dry_run_preflight_reads_the_account_and_names_what_would_fail(
        sandbox_dir: Path, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--params", str(EXAMPLE), "--sandbox", str(sandbox_dir), "--dry-run", "--preflight"]
    sets = [a for s in example_sets(workdir, "e2e-preflight") for a in ("--set", s)]
    before = writes(sandbox_dir)
    assert main(argv + sets) == 0
    out = capsys.readouterr().out
    assert "# pre-flight (read-only; nothing was created):" in out
    assert "#   ok   credentials: resolved" in out and "#   ok   OSS bucket" in out
    assert "#   ok   ASK cluster 'sandbox'" in out or "#   ok   ASK cluster" in out

    bucket = foreign_bucket(sandbox_dir)
    before = writes(sandbox_dir)
    assert main(argv + sets + ["--set", f"outputs.bucket={bucket}",
                               "--set", "storage.nas.file_system_id=31a8e4b2c1"]) == 1
    captured = capsys.readouterr()
    assert f"#   FAIL OSS bucket '{bucket}': exists but these credentials may not use it" in captured.out
    assert "#   FAIL NAS file system '31a8e4b2c1': does not exist" in captured.out
    assert "2 check(s) failed" in captured.err
    assert writes(sandbox_dir) == before  # read-only: nothing created, written or deleted
