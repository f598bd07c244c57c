"""The cleanup command through the sandbox (issue 11): what costs money is listed with its price, and goes on "yes".

A run's leftovers are made the way a run makes them (the stages' own functions): in the sandbox's own cluster (a
cluster ask-batch did not create, as with a user's), a NAS file system with its mount target, PV and PVC, the
ConfigMap and Secret and a Job whose pod keeps running, plus a ServiceAccount and a Lease with ask-batch's labels;
and a new ASK cluster created by ask-batch (tagged). Then ``python -m flows.cleanup`` (``main``) is run as a user
runs it: the list shows each with its hourly cost; "n" deletes nothing; ``--yes`` deletes everything (checked
through the APIs); a second run finds nothing.

Its own sandbox: the command deletes everything ask-batch created in the account, which must not reach the
session sandbox's other tests.
"""

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from flows.cleanup import main
from flows.cli import build_spec
from tasks.cloud.clients import cs_client, nas_client, resolve_credentials
from tasks.cloud.cluster_access import connect
from tasks.cloud.inventory import managed_clusters, managed_file_systems
from tasks.naming import MANAGED_SELECTOR, run_labels
from tasks.render.manifests import ConfigContent
from tasks.stages.cluster import ensure_cluster
from tasks.stages.config import publish_config
from tasks.stages.job import launch_job, render_job
from tasks.stages.volume import ensure_volume

RUN = "left-behind"


@pytest.fixture(scope="module")
def own_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from sandbox.k8s.cluster import NodeConfig
    from sandbox.server import SandboxThread, Settings

    data_dir = tmp_path_factory.mktemp("cleanup-sandbox")
    settings = Settings(cluster_create_delay_s=0.2, cluster_delete_delay_s=0.2, nas_ready_delay_s=0.2,
                        node=NodeConfig(backoff_scale=0.02))
    with SandboxThread(data_dir, settings=settings):
        yield data_dir


@pytest.fixture(scope="module")
def params(own_sandbox: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cleanup-params") / "spec.yaml"
    path.write_text(yaml.safe_dump({
        "run_key": RUN,
        "cluster": {"mode": "ask", "namespace": "default", "ask": {"name": "sandbox", "create_if_missing": False}},
        "storage": {"mode": "nas", "nas": {"name": "cleanup-demo"}},
        "job": {"image": "python:3.11-slim", "command": ["sleep", "600"], "completions": 1, "parallelism": 1,
                "cpu": "1", "memory": "2Gi"},
        "teardown": {"job": "never", "config": "never", "volume": "never"},
    }))
    return path


def cleanup(params: Path, sandbox: Path, *args: str, answer: str | None = None,
            capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    if answer is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(answer))
    code = main(["--params", str(params), "--sandbox", str(sandbox), "--wait", "60", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def leave_resources_behind(spec: Any) -> tuple[Any, str]:
    """A run's leftovers, made by the stages' own functions, and a running pod. Returns (API client, fs id)."""
    creds = resolve_credentials(spec.target.credentials)
    cs, nas = cs_client(spec.target, creds), nas_client(spec.target, creds)
    created = spec.model_copy(update={"cluster": spec.cluster.model_copy(update={"ask": spec.cluster.ask.model_copy(
        update={"name": "cleanup-demo", "create_if_missing": True, "vpc_id": "vpc-demo",
                "vswitch_ids": ["vsw-demoa"]})})})
    assert ensure_cluster(created, run_key=RUN, cs=cs).created
    cluster = ensure_cluster(spec, run_key=RUN, cs=cs)
    api = connect(cluster, spec, cs=cs)
    core = client.CoreV1Api(api)
    volume = ensure_volume(spec, run_key=RUN, cluster=cluster, core_v1=core, nas=nas)
    config = publish_config(core, spec, RUN, ConfigContent(files={"settings.json": b"{}"},
                                                          secret_files={"token": b"t0ken"}),
                            rrsa_oidc_provider_arn=cluster.rrsa_oidc_provider_arn)
    launch_job(client.BatchV1Api(api), render_job(spec, run_key=RUN, flow_run_name=RUN, volume=volume,
                                                  config=config))
    meta = client.V1ObjectMeta(name=f"askb-{RUN}", labels=run_labels(RUN))
    core.create_namespaced_service_account("default", client.V1ServiceAccount(metadata=meta))
    client.CoordinationV1Api(api).create_namespaced_lease("default", client.V1Lease(
        metadata=client.V1ObjectMeta(name=f"ask-batch-lock-{RUN}", labels=run_labels(RUN)),
        spec=client.V1LeaseSpec(holder_identity="a-crashed-run", lease_duration_seconds=60)))
    deadline = time.monotonic() + 60
    while not [p for p in core.list_namespaced_pod("default", label_selector=MANAGED_SELECTOR).items
               if p.status.phase == "Running"]:
        assert time.monotonic() < deadline, "the left-behind Job's pod never ran"
        time.sleep(0.5)  # waiting for the sandbox's node to start the pod: nothing to watch for cheaper here
    assert volume.file_system_id
    return api, volume.file_system_id


def in_cluster(api: Any) -> list[str]:
    core, batch, coord = client.CoreV1Api(api), client.BatchV1Api(api), client.CoordinationV1Api(api)
    left = [f"Job/{o.metadata.name}" for o in batch.list_job_for_all_namespaces(
        label_selector=MANAGED_SELECTOR).items]
    for kind, fn in (("Pod", core.list_pod_for_all_namespaces), ("ConfigMap", core.list_config_map_for_all_namespaces),
                     ("Secret", core.list_secret_for_all_namespaces),
                     ("PersistentVolumeClaim", core.list_persistent_volume_claim_for_all_namespaces),
                     ("PersistentVolume", core.list_persistent_volume),
                     ("ServiceAccount", core.list_service_account_for_all_namespaces),
                     ("Lease", coord.list_lease_for_all_namespaces)):
        left += [f"{kind}/{o.metadata.name}" for o in fn(label_selector=MANAGED_SELECTOR).items]
    return sorted(left)


def test_cleanup_lists_with_cost_asks_and_deletes_everything(own_sandbox: Path, params: Path,
                                                             capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    spec = build_spec(params, [], own_sandbox, start_sandbox=False)
    api, fs_id = leave_resources_behind(spec)
    creds = resolve_credentials(spec.target.credentials)
    cs, nas = cs_client(spec.target, creds), nas_client(spec.target, creds)
    [cluster] = managed_clusters(cs, region=spec.target.region)  # the one ask-batch created, not 'sandbox'
    assert cluster["name"] == "cleanup-demo"
    before = in_cluster(api)
    kinds = {entry.split("/")[0] for entry in before}
    assert kinds == {"Job", "Pod", "ConfigMap", "Secret", "PersistentVolumeClaim", "PersistentVolume",
                     "ServiceAccount", "Lease"}

    # the list: every item, billed ones with a price (the running pod: 1 vCPU 2 GiB at ECI's China-site price)
    code, out = cleanup(params, own_sandbox, "--dry-run", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0, out
    for entry in before:
        kind, name = entry.split("/")
        assert any(line.startswith(kind) and name in line for line in out.splitlines()), (entry, out)
    assert any(line.startswith("Cluster ") and cluster["cluster_id"] in line for line in out.splitlines()), out
    assert any(line.startswith("NasFileSystem ") and fs_id in line for line in out.splitlines()), out
    assert any(line.startswith("NasMountTarget ") for line in out.splitlines()), out
    pod_line = next(line for line in out.splitlines() if line.startswith("Pod "))
    hourly = 3600 * (1 * 0.000049 + 2 * 0.00000613)
    assert f"{hourly:.4f} CNY/h" in pod_line
    assert "dry run: nothing deleted" in out
    assert in_cluster(api) == before

    # "n": nothing deleted
    code, out = cleanup(params, own_sandbox, answer="n\n", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0 and "Delete all" in out and "nothing deleted" in out, out
    assert in_cluster(api) == before
    assert [fs["FileSystemId"] for fs in managed_file_systems(nas)] == [fs_id]

    # --yes: everything goes (the cluster ask-batch created last; the sandbox's own cluster stays)
    code, out = cleanup(params, own_sandbox, "--yes", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0, out
    assert "failed 0" in out
    assert in_cluster(api) == []
    assert managed_file_systems(nas) == []
    deadline = time.monotonic() + 30
    while managed_clusters(cs, region=spec.target.region):
        assert time.monotonic() < deadline, "the cluster was not deleted"
        time.sleep(0.5)  # CS deletes asynchronously (state 'deleting'); DescribeClusters has no watch

    # a second run finds nothing
    code, out = cleanup(params, own_sandbox, "--yes", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0 and "nothing found" in out, out


def test_what_cannot_be_listed_is_named_and_the_exit_is_1(own_sandbox: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A cluster the command cannot read (a kubeconfig whose token the API server refuses) is not 'nothing left'."""
    import json

    endpoints = json.loads((own_sandbox / "endpoints.json").read_text())
    kubeconfig = yaml.safe_load(Path(endpoints["kubernetes"]["kubeconfig"]).read_text())
    for user in kubeconfig["users"]:
        user["user"] = {"token": "not-the-token"}
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
    params = tmp_path / "spec.yaml"
    params.write_text(yaml.safe_dump({
        "cluster": {"mode": "existing", "existing": {"kubeconfig_path": str(tmp_path / "kubeconfig")}},
        "job": {"image": "python:3.11-slim"}}))
    code, out = cleanup(params, own_sandbox, "--kubernetes-only", "--yes", capsys=capsys, monkeypatch=monkeypatch)
    assert code == 1, out
    assert "PROBLEM: could not list the Kubernetes objects of cluster existing" in out and "401" in out, out
