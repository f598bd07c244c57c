"""CreateCluster as CS wants it (issue 11): zone_id without a VPC, refusals explained by their own code.

Through the session sandbox's CS, which refuses a cluster without VPC and without zone as the real service does.
"""

from __future__ import annotations

from typing import Any

import pytest

from tasks.cloud.retry import CloudError
from tasks.errors import ClusterError
from tasks.stages.cluster import CREATION_REFUSED_HINT, create_refusal_hint, ensure_cluster


def test_without_vpc_and_zone_nothing_is_sent_and_the_error_names_the_fix(cloud: Any, make_spec: Any,
                                                                          sandbox: Any, run_key: str) -> None:
    spec = make_spec({"cluster": {"mode": "ask", "ask": {"name": "nz-" + run_key, "create_if_missing": True}}})
    before = dict(sandbox.sandbox.service_requests)
    with pytest.raises(ClusterError, match=r"cluster.ask.zone_id.*fix: set zone_id"):
        ensure_cluster(spec, run_key=run_key, cs=cloud.cs)
    # only the lookup (DescribeClustersForRegion) reached CS: no CreateCluster
    assert sandbox.sandbox.service_requests.get("cs", 0) - before.get("cs", 0) == 1


def test_with_a_zone_the_cluster_is_created_in_it(cloud: Any, make_spec: Any, run_key: str) -> None:
    spec = make_spec({"cluster": {"mode": "ask", "ask": {"name": "z-" + run_key, "create_if_missing": True,
                                                         "zone_id": "cn-sandbox-b"}}})
    handle = ensure_cluster(spec, run_key=run_key, cs=cloud.cs)
    assert handle.created
    detail = cloud.cs.describe_cluster_detail(handle.cluster_id).body
    assert detail.zone_id == "cn-sandbox-b"


def refusal(code: str, message: str, status: int = 400) -> CloudError:
    return CloudError(service="CS", operation="CreateCluster", code=code, message=message, status=status)


def test_the_ask_closed_hint_only_for_its_own_refusal() -> None:
    assert "quota" in create_refusal_hint(refusal("QuotaExceeded.Cluster", "cluster quota exceeded"))
    assert "cs:CreateCluster" in create_refusal_hint(refusal("ErrorCheckAcl", "no permission", 403))
    assert "zone_id" in create_refusal_hint(refusal("InvalidParameter", "zone_id is required when vpcid ..."))
    other = create_refusal_hint(refusal("InvalidParameter", "Invalid service_cidr"))
    assert other != CREATION_REFUSED_HINT and "service's code and message" in other
    closed = refusal("Forbidden.ClusterCreate", "ACK Serverless cluster creation is not allowed for new users; "
                     "use ACS")
    assert create_refusal_hint(closed) == CREATION_REFUSED_HINT
