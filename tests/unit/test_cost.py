"""Cost estimate: unit prices × vCPU·s and GiB·s, one price table with its source and date."""

import pytest

from tasks.render.cost import PRICES, PodUsage, billed_size, estimate, estimate_before_run, estimate_job, price_table
from tasks.spec import parse_spec
from tests.unit.conftest import BASE, with_changes


def test_price_table_is_sourced_and_dated():
    for table in PRICES.values():
        assert table.source.startswith("https://") and table.read_on[:2] == "20"


def test_region_picks_the_site():
    assert price_table("cn-hangzhou").currency == "CNY"
    assert price_table("ap-southeast-1").currency == "USD"


def test_one_vcpu_one_gib_for_an_hour_in_china():
    cost = estimate([PodUsage(seconds=3600, vcpu=1, memory_gib=1)], region="cn-hangzhou")
    assert cost.vcpu_seconds == 3600 and cost.gib_seconds == 3600
    assert cost.amount == pytest.approx(3600 * 0.000049 + 3600 * 0.00000613)
    assert cost.currency == "CNY" and not cost.spot


def test_ten_pods_of_the_example():
    job = parse_spec(with_changes(BASE, {"job.completions": 10, "job.parallelism": 10, "job.cpu": "1",
                                         "job.memory": "2Gi"})).job
    cost = estimate_job(job, [60.0] * 10, region="cn-hangzhou")
    assert cost.vcpu_seconds == 600 and cost.gib_seconds == 1200
    assert "CNY" in cost.summary()


def test_limits_larger_than_requests_are_billed():
    job = parse_spec(with_changes(BASE, {"job.cpu": "500m", "job.cpu_limit": "2", "job.memory": "1Gi"})).job
    assert billed_size(job) == (2.0, 1.0)


def test_spot_is_noted_not_guessed():
    job = parse_spec(with_changes(BASE, {"job.eci.spot_strategy": "SpotAsPriceGo"})).job
    on_demand = parse_spec(BASE).job
    spot = estimate_before_run(job, expected_seconds_per_index=100, region="cn-beijing")
    plain = estimate_before_run(on_demand, expected_seconds_per_index=100, region="cn-beijing")
    # pay-as-you-go prices as the upper bound, at the spot size (1 vCPU spot is a 2 vCPU instance, see test_cost_rules)
    assert spot.spot and spot.vcpu_seconds == 2 * plain.vcpu_seconds and spot.gib_seconds == plain.gib_seconds
    assert any("spot" in n for n in spot.notes) and "upper bound" in spot.summary()


def test_negative_usage_is_refused():
    with pytest.raises(ValueError):
        estimate([PodUsage(seconds=-1, vcpu=1, memory_gib=1)], region="cn-hangzhou")
