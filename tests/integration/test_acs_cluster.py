"""ensure_cluster on ACS through the sandbox's CS (real SDK): mode 'acs' creates then finds an ACS cluster, and a
cluster brought by kubeconfig is recognised as ACS or ASK by the CS cluster serving its API endpoint."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tasks.cloud.cluster_access import as_map
from tasks.cloud.retry import call
from tasks.spec import BatchSpec
from tasks.stages.cluster import ensure_cluster
from tests.integration.conftest import Cloud


def test_mode_acs_creates_once_then_finds(cloud: Cloud, make_spec: Callable[..., BatchSpec], run_key: str) -> None:
    spec = make_spec({"cluster": {"mode": "acs", "acs": {"name": f"acs-{run_key}", "ready_timeout_seconds": 60}}})
    first = ensure_cluster(spec, run_key=run_key, cs=cloud.cs)
    assert (first.mode, first.kind, first.created) == ("acs", "acs", True)
    detail = as_map(call(cloud.cs.describe_cluster_detail, first.cluster_id, service="CS", operation="detail").body)
    assert (detail["cluster_type"], detail["profile"]) == ("ManagedKubernetes", "Acs")
    again = ensure_cluster(spec, run_key=run_key, cs=cloud.cs)
    assert (again.cluster_id, again.kind, again.created) == (first.cluster_id, "acs", False)


def _kubeconfig_file(cloud: Cloud, cluster_id: str, path: Path) -> str:
    from alibabacloud_cs20151215 import models as m

    resp = call(cloud.cs.describe_cluster_user_kubeconfig, cluster_id, m.DescribeClusterUserKubeconfigRequest(),
                service="CS", operation="kubeconfig")
    path.write_text(as_map(resp.body)["config"])
    return str(path)


def test_existing_cluster_kind_is_recognised_from_its_api_endpoint(cloud: Cloud, make_spec: Callable[..., Any],
                                                                   run_key: str, tmp_path: Path) -> None:
    acs = ensure_cluster(make_spec({"cluster": {"mode": "acs", "acs": {"name": f"acs-{run_key}"}}}),
                         run_key=run_key, cs=cloud.cs)
    ask = ensure_cluster(make_spec(), run_key=run_key, cs=cloud.cs)  # the sandbox's default ASK cluster

    def existing(cluster_id: str, name: str, **extra: Any) -> BatchSpec:
        path = _kubeconfig_file(cloud, cluster_id, tmp_path / name)
        return make_spec({"cluster": {"mode": "existing", "existing": {"kubeconfig_path": path, **extra}}})

    assert ensure_cluster(existing(acs.cluster_id, "acs.yaml"), run_key=run_key, cs=cloud.cs).kind == "acs"
    assert ensure_cluster(existing(ask.cluster_id, "ask.yaml"), run_key=run_key, cs=cloud.cs).kind == "ask"
    # an explicit kind wins, without asking CS
    declared = existing(ask.cluster_id, "ask2.yaml", kind="acs")
    assert ensure_cluster(declared, run_key=run_key, cs=None).kind == "acs"
    # a kubeconfig no CS cluster serves: 'ask', as documented
    unknown = yaml.safe_load((tmp_path / "ask.yaml").read_text())
    unknown["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:1"
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(unknown))
    other = make_spec({"cluster": {"mode": "existing", "existing": {"kubeconfig_path": str(tmp_path / "other.yaml")}}})
    assert ensure_cluster(other, run_key=run_key, cs=cloud.cs).kind == "ask"
