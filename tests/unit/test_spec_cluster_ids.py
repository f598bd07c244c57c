"""Cluster and network parameters CS would refuse are refused up front, naming the field (issue 11)."""

import pytest

from tasks.render.manifests import create_cluster_body
from tasks.spec import SpecError, parse_spec
from tests.unit.conftest import BASE, with_changes


@pytest.mark.parametrize(("changes", "field", "text"), [
    ({"cluster.ask.vpc_id": "vpc_123", "cluster.ask.vswitch_ids": ["vsw-abc"]}, "cluster.ask.vpc_id", "VPC id"),
    ({"cluster.ask.vpc_id": "vpc-abc", "cluster.ask.vswitch_ids": ["sw-abc"]}, "cluster.ask.vswitch_ids",
     "vSwitch id"),
    ({"cluster.ask.vpc_id": "vpc-abc"}, "cluster.ask", "vpc_id and vswitch_ids go together"),
    ({"cluster.ask.name": "my_cluster"}, "cluster.ask.name", "refuses '_'"),
    ({"cluster.ask.zone_id": "hangzhou"}, "cluster.ask.zone_id", "zone id"),
    ({"cluster.ask.tags": {f"k{i}": "v" for i in range(19)}}, "cluster.ask.tags", "at most 18"),
    ({"job.eci.spot_strategy": "SpotAsPriceGo", "job.eci.spot_duration_hours": 3}, "job.eci.spot_duration_hours",
     ""),
])
def test_refused_with_the_field_named(changes, field, text):
    with pytest.raises(SpecError) as caught:
        parse_spec(with_changes(BASE, changes))
    assert any(f.startswith(field) and text in msg for f, msg in caught.value.problems), caught.value.problems


def test_zone_goes_into_create_cluster_only_without_a_vpc():
    spec = parse_spec(with_changes(BASE, {"cluster.ask.zone_id": "cn-hangzhou-k"}))
    body = create_cluster_body(spec.cluster.ask, region="cn-hangzhou", run_key="r")
    assert body["zone_id"] == "cn-hangzhou-k" and "vpcid" not in body
    spec = parse_spec(with_changes(BASE, {"cluster.ask.vpc_id": "vpc-bp1abc", "cluster.ask.vswitch_ids": ["vsw-x1"],
                                          "cluster.ask.zone_id": "cn-hangzhou-k"}))
    body = create_cluster_body(spec.cluster.ask, region="cn-hangzhou", run_key="r")
    assert body["vpcid"] == "vpc-bp1abc" and "zone_id" not in body
    assert len(body["tags"]) <= 20
