"""The cluster stage and RRSA (issue 11): a cluster ask-batch creates has RRSA on, one with RRSA off is refused
with the fix, through the session sandbox's CS (DescribeClusterDetail `rrsa_config`)."""

from __future__ import annotations

from typing import Any

import pytest
from alibabacloud_cs20151215 import models as m

from tasks.errors import ClusterError
from tasks.stages.cluster import ensure_cluster


def test_a_cluster_created_for_rrsa_pods_has_rrsa_and_its_provider_is_in_the_handle(
        cloud: Any, make_spec: Any, run_key: str) -> None:
    spec = make_spec({"cluster": {"mode": "ask", "ask": {"name": "rrsa-" + run_key, "zone_id": "cn-sandbox-b"}}})
    assert spec.outputs.pod_credentials == "rrsa"
    handle = ensure_cluster(spec, run_key=run_key, cs=cloud.cs)
    detail = cloud.cs.describe_cluster_detail(handle.cluster_id).body.rrsa_config
    assert detail.enabled and detail.audience == "sts.aliyuncs.com"
    assert handle.rrsa_oidc_provider_arn == detail.oidc_arn
    assert detail.oidc_arn.endswith(f":oidc-provider/ack-rrsa-{handle.cluster_id}")
    # found again (running): the list has no rrsa_config, the stage reads the detail
    assert ensure_cluster(spec, run_key=run_key, cs=cloud.cs).rrsa_oidc_provider_arn == detail.oidc_arn


def test_an_existing_cluster_with_rrsa_off_is_refused_naming_the_fix(cloud: Any, make_spec: Any,
                                                                     run_key: str) -> None:
    name = "norrsa-" + run_key
    cloud.cs.create_cluster(m.CreateClusterRequest(name=name, region_id=cloud.target.region,
                                                   cluster_type="ManagedKubernetes", profile="Serverless",
                                                   zone_id="cn-sandbox-b"))
    spec = make_spec({"cluster": {"mode": "ask", "ask": {"name": name, "create_if_missing": False}}})
    with pytest.raises(ClusterError, match=r"has RRSA off.*fix: turn RRSA on.*or set outputs.pod_credentials "
                                           r"'target'"):
        ensure_cluster(spec, run_key=run_key, cs=cloud.cs)
    target = make_spec({"cluster": {"mode": "ask", "ask": {"name": name, "create_if_missing": False}},
                        "outputs": {"pod_credentials": "target"}})
    assert ensure_cluster(target, run_key=run_key, cs=cloud.cs).rrsa_oidc_provider_arn is None
