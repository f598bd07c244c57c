"""Issue 3's "Done when", end to end, through `python -m sandbox serve` in a subprocess.

The official SDKs (`alibabacloud_cs20151215`, `alibabacloud_nas20170626`, `alibabacloud_oss_v2`) and the
`kubernetes` client are configured only from DIR/endpoints.json and what the services return (the
cluster's kubeconfig, the mount target's domain), as production code would be. What the per-service tests
(test_oss.py, test_cs.py, test_nas.py) already show with one SDK alone is not repeated: this file is about
the services working together — an ASK cluster whose pods share a NAS file system — and about all of it
surviving a restart of the sandbox on the same directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import alibabacloud_oss_v2 as oss
import pytest
import yaml
from alibabacloud_cs20151215 import models as cs
from alibabacloud_cs20151215.client import Client as CSClient
from alibabacloud_nas20170626 import models as nas
from alibabacloud_nas20170626.client import Client as NasClient
from alibabacloud_tea_openapi.models import Config
from kubernetes import client, config
from served import Served, start_served, stop_served, wait_for

for _var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_var, None)

NAS_DRIVER = "nasplugin.csi.alibabacloud.com"


class Cloud:
    """SDK clients built from DIR/endpoints.json only."""

    def __init__(self, endpoints_file: Path) -> None:
        ep: dict[str, Any] = json.loads(endpoints_file.read_text())
        self.ep = ep
        self.region: str = ep["region"]

        def tea(service: str) -> Config:
            return Config(access_key_id=ep["access_key_id"], access_key_secret=ep["access_key_secret"],
                          region_id=ep["region"], endpoint=ep[service]["endpoint"],
                          protocol=ep[service]["protocol"], read_timeout=10000, connect_timeout=3000)

        self.cs = CSClient(tea("cs"))
        self.nas = NasClient(tea("nas"))
        cfg = oss.config.load_default()
        cfg.region = ep["region"]
        cfg.endpoint = ep["oss"]["endpoint"]
        cfg.credentials_provider = oss.credentials.StaticCredentialsProvider(ep["access_key_id"],
                                                                              ep["access_key_secret"])
        self.oss = oss.Client(cfg)

    def cluster_state(self, cluster_id: str) -> str:
        return str(self.cs.describe_cluster_detail(cluster_id).body.state)

    def kube(self, cluster_id: str) -> client.ApiClient:
        body = self.cs.describe_cluster_user_kubeconfig(cluster_id, cs.DescribeClusterUserKubeconfigRequest()).body
        return config.new_client_from_config_dict(yaml.safe_load(body.config))

    def file_system(self, fs_id: str) -> Any:
        body = self.nas.describe_file_systems(nas.DescribeFileSystemsRequest(file_system_id=fs_id)).body
        return body.file_systems.file_system[0] if body.total_count else None

    def mount_target(self, fs_id: str, domain: str) -> Any:
        body = self.nas.describe_mount_targets(nas.DescribeMountTargetsRequest(file_system_id=fs_id,
                                                                              mount_target_domain=domain)).body
        return body.mount_targets.mount_target[0] if body.mount_targets.mount_target else None


def pod(name: str, script: str, claim: str) -> dict[str, Any]:
    return {"metadata": {"name": name},
            "spec": {"restartPolicy": "Never",
                     "containers": [{"name": "main", "image": "busybox:1.36", "command": ["sh", "-c", script],
                                     "volumeMounts": [{"name": "shared", "mountPath": "/mnt/nas"}]}],
                     "volumes": [{"name": "shared", "persistentVolumeClaim": {"claimName": claim}}]}}


def run_pod(core: client.CoreV1Api, namespace: str, manifest: dict[str, Any]) -> str:
    """Create a pod, wait for it to succeed, return its log."""
    name = manifest["metadata"]["name"]
    core.create_namespaced_pod(namespace, manifest)
    phase = wait_for(lambda: (p := core.read_namespaced_pod(name, namespace).status.phase) in ("Succeeded", "Failed")
                     and p, 30, f"pod {name} to end")
    log = str(core.read_namespaced_pod_log(name, namespace))
    assert phase == "Succeeded", log
    return log


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cloud") / "sandbox"


@pytest.fixture(scope="module")
def first_run(data_dir: Path) -> Iterator[Served]:
    served = start_served(data_dir, "--cluster-create-delay", "0.5")
    try:
        yield served
    finally:
        stop_served(served)


def test_ask_cluster_with_nas_shared_between_pods_survives_restart(first_run: Served, data_dir: Path) -> None:
    cloud = Cloud(first_run.dir / "endpoints.json")
    ep, tag = cloud.ep, uuid.uuid4().hex[:6]

    # Container Service: a serverless (ASK) cluster, running, used through its own kubeconfig
    created = cloud.cs.create_cluster(cs.CreateClusterRequest(
        name=f"batch-{tag}", region_id=cloud.region, cluster_type="ManagedKubernetes", profile="Serverless",
        vpcid=ep["vpc_id"], vswitch_ids=[ep["vswitch_id"]], endpoint_public_access=True, snat_entry=True)).body
    cluster_id = created.cluster_id
    wait_for(lambda: cloud.cluster_state(cluster_id) == "running", 20, "the cluster to be running")
    api = cloud.kube(cluster_id)
    core = client.CoreV1Api(api)
    assert {"default", "kube-system"} <= {n.metadata.name for n in core.list_namespace().items}
    assert api.configuration.host != json.loads((data_dir / "endpoints.json").read_text())["kubernetes"]["server"]
    # the sandbox also writes DIR/kubeconfig-<cluster id>, so a user reaches this cluster with kubectl
    own = data_dir / f"kubeconfig-{cluster_id}"
    assert oct(own.stat().st_mode & 0o777) == "0o600"
    own_api = config.new_client_from_config(config_file=str(own))
    assert own_api.configuration.host == api.configuration.host
    kubectl = shutil.which("kubectl") or str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "kubectl")
    if Path(kubectl).exists():
        out = subprocess.run([kubectl, "--kubeconfig", str(own), "get", "namespaces", "-o", "name"],
                             capture_output=True, text=True, timeout=30, env={**os.environ, "HOME": str(data_dir)})
        assert "namespace/kube-system" in out.stdout, out.stderr

    # NAS: a file system and a mount target, Active
    fs_id = cloud.nas.create_file_system(nas.CreateFileSystemRequest(
        protocol_type="NFS", storage_type="Capacity", file_system_type="standard", charge_type="PayAsYouGo",
        zone_id=ep["zone_id"], description=f"batch-{tag}")).body.file_system_id
    wait_for(lambda: cloud.file_system(fs_id).status == "Running", 20, "the file system to run")
    domain = cloud.nas.create_mount_target(nas.CreateMountTargetRequest(
        file_system_id=fs_id, network_type="Vpc", vpc_id=ep["vpc_id"], v_switch_id=ep["vswitch_id"],
        access_group_name="DEFAULT_VPC_GROUP_NAME")).body.mount_target_domain
    wait_for(lambda: cloud.mount_target(fs_id, domain).status == "Active", 20, "the mount target to be Active")

    # a static PV for the Alibaba NAS CSI driver + a PVC, then one pod writes and another reads
    core.create_persistent_volume({
        "metadata": {"name": f"nas-{tag}", "labels": {"alicloud-pvname": f"nas-{tag}"}},
        "spec": {"capacity": {"storage": "20Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": "nas",
                 "persistentVolumeReclaimPolicy": "Retain",
                 "csi": {"driver": NAS_DRIVER, "volumeHandle": f"nas-{tag}",
                         "volumeAttributes": {"server": domain, "path": "/shared"}}}})
    core.create_namespaced_persistent_volume_claim("default", {
        "metadata": {"name": "shared"},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "nas",
                 "resources": {"requests": {"storage": "20Gi"}},
                 "selector": {"matchLabels": {"alicloud-pvname": f"nas-{tag}"}}}})
    wait_for(lambda: core.read_namespaced_persistent_volume_claim("shared", "default").status.phase == "Bound",
             15, "the claim to bind")
    run_pod(core, "default", pod("writer", f"echo written-by-writer-{tag} > /mnt/nas/message.txt", "shared"))
    assert run_pod(core, "default", pod("reader", "cat /mnt/nas/message.txt", "shared")) == \
        f"written-by-writer-{tag}\n"

    # OSS: a bucket and an object
    bucket = f"results-{tag}"
    cloud.oss.put_bucket(oss.PutBucketRequest(bucket=bucket))
    cloud.oss.put_object(oss.PutObjectRequest(bucket=bucket, key="runs/1/out.json", body=b'{"ok": true}'))
    kubeconfig_before = cloud.cs.describe_cluster_user_kubeconfig(
        cluster_id, cs.DescribeClusterUserKubeconfigRequest()).body.config

    # restart the sandbox on the same directory
    stop_served(first_run)
    second = start_served(data_dir, "--cluster-create-delay", "0.5")
    try:
        cloud = Cloud(second.dir / "endpoints.json")
        # buckets and objects
        assert bucket in [b.name for b in cloud.oss.list_buckets(oss.ListBucketsRequest()).buckets]
        got = cloud.oss.get_object(oss.GetObjectRequest(bucket=bucket, key="runs/1/out.json"))
        assert got.body.read() == b'{"ok": true}'
        # clusters: still listed, running, and their Kubernetes answers with its objects
        listed = cloud.cs.describe_clusters_for_region(cloud.region, cs.DescribeClustersForRegionRequest(
            name=f"batch-{tag}", cluster_type="ManagedKubernetes", profile="Serverless")).body
        assert [(c.cluster_id, c.state) for c in listed.clusters] == [(cluster_id, "running")]
        old_api = config.new_client_from_config_dict(yaml.safe_load(kubeconfig_before))  # old kubeconfig still works
        core = client.CoreV1Api(old_api)
        assert core.read_persistent_volume(f"nas-{tag}").status.phase == "Bound"
        assert core.read_namespaced_persistent_volume_claim("shared", "default").status.phase == "Bound"
        pods = {p.metadata.name: p.status.phase for p in core.list_namespaced_pod("default").items}
        assert pods == {"writer": "Succeeded", "reader": "Succeeded"}
        assert core.read_namespaced_pod_log("reader", "default") == f"written-by-writer-{tag}\n"
        # file systems: still there, mount target Active, and the data is still on it for a new pod
        assert cloud.file_system(fs_id).status == "Running"
        assert cloud.mount_target(fs_id, domain).status == "Active"
        assert run_pod(core, "default", pod("reader-again", "cat /mnt/nas/message.txt", "shared")) == \
            f"written-by-writer-{tag}\n"
    finally:
        stop_served(second)
