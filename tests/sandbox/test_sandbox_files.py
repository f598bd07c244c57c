"""Files the sandbox writes for its user: DIR/kubeconfig-<cluster id> for every cluster CS creates."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from alibabacloud_cs20151215 import models as cs
from alibabacloud_cs20151215.client import Client as CSClient
from alibabacloud_tea_openapi.models import Config
from kubernetes import client, config


def test_kubeconfig_per_created_cluster(sandbox: Any) -> None:
    sb = sandbox.sandbox
    ep = sb.endpoints()
    cs_client = CSClient(Config(access_key_id=ep["access_key_id"], access_key_secret=ep["access_key_secret"],
                                region_id=ep["region"], endpoint=ep["cs"]["endpoint"], protocol="http"))
    created = cs_client.create_cluster(cs.CreateClusterRequest(
        name="files-test", region_id=ep["region"], cluster_type="ManagedKubernetes", profile="Serverless",
        vpcid=ep["vpc_id"], vswitch_ids=[ep["vswitch_id"]], endpoint_public_access=True, snat_entry=True,
        deletion_protection=False)).body
    cluster_id = created.cluster_id
    path = Path(sb.data_dir) / f"kubeconfig-{cluster_id}"
    deadline = time.monotonic() + 20
    while cs_client.describe_cluster_detail(cluster_id).body.state != "running":
        assert time.monotonic() < deadline, "the cluster never ran"
        time.sleep(0.2)
    assert path.stat().st_mode & 0o777 == 0o600
    doc = yaml.safe_load(path.read_text())
    assert doc["current-context"] == doc["contexts"][0]["name"]
    api = config.new_client_from_config(config_file=str(path))
    assert "kube-system" in {n.metadata.name for n in client.CoreV1Api(api).list_namespace().items}
    assert api.configuration.host == sb.kube_clusters[cluster_id].url
    cs_client.delete_cluster(cluster_id, cs.DeleteClusterRequest())
    while path.exists():
        assert time.monotonic() < deadline + 20, "the kubeconfig outlived its cluster"
        time.sleep(0.2)
