"""ECI billing rules in the cost figures (issue 11): spec rounding, the 2-vCPU spot minimum, billing from
instance creation (image pull included), eci-use-specs, currency by the account's site."""

from datetime import UTC, datetime

import pytest

from tasks.render.cost import billed_size, estimate_job, price_table, round_spec
from tasks.spec import parse_spec
from tasks.stages.wait import _pod_seconds
from tests.unit.conftest import BASE, with_changes


def job(**changes):
    return parse_spec(with_changes(BASE, changes)).job


@pytest.mark.parametrize(("asked", "spot", "billed"), [
    ((1, 2), False, (1, 2)),
    ((1, 2), True, (2, 2)),          # spot: 1 vCPU is billed as 2
    ((0.5, 1), True, (2, 1)),
    ((1.5, 3), False, (2, 4)),       # rounded up to a supported spec
    ((7, 13), False, (8, 16)),       # the docs' example, with the specs offered in every region
    ((0, 0), False, (2, 4)),         # nothing asked: the 2 vCPU 4 GiB default
])
def test_specs_round_up_and_spot_starts_at_2_vcpu(asked, spot, billed):
    assert round_spec(*asked, spot=spot) == billed


def test_a_too_large_request_is_refused():
    with pytest.raises(ValueError, match="no ECI spec"):
        round_spec(65, 1)


def test_billed_size_uses_limits_rounding_and_use_specs():
    assert billed_size(job(**{"job.cpu": "1", "job.memory": "2Gi"})) == (1.0, 2.0)
    assert billed_size(job(**{"job.cpu": "1", "job.memory": "2Gi", "job.eci.spot_strategy": "SpotAsPriceGo"})) == \
        (2.0, 2.0)
    assert billed_size(job(**{"job.cpu": "1", "job.memory": "2Gi", "job.eci.use_specs": ["4-8Gi"]})) == (4.0, 8.0)


def test_measured_time_counts_from_instance_creation_including_the_image_pull():
    pod = {"status": {"phase": "Succeeded", "startTime": "2026-11-30T10:00:00Z", "containerStatuses": [
        {"state": {"terminated": {"startedAt": "2026-11-30T10:01:30Z", "finishedAt": "2026-11-30T10:02:00Z"}}}]}}
    now = datetime(2026, 11, 30, 11, tzinfo=UTC)
    assert _pod_seconds(pod, now) == 120.0  # 90 s pulling the image + 30 s running
    pulling = {"status": {"phase": "Pending", "startTime": "2026-11-30T10:59:00Z", "containerStatuses": [
        {"state": {"waiting": {"reason": "ContainerCreating"}}}]}}
    assert _pod_seconds(pulling, now) == 60.0


def test_a_spot_job_costs_at_least_two_vcpu_per_pod():
    spot = estimate_job(job(**{"job.cpu": "1", "job.memory": "2Gi", "job.eci.spot_strategy": "SpotAsPriceGo"}),
                        [3600], region="cn-hangzhou")
    assert spot.vcpu_seconds == 7200 and spot.gib_seconds == 7200


def test_currency_follows_the_site_not_the_region():
    assert price_table("cn-hangzhou").currency == "CNY"
    assert price_table("cn-hangzhou", site="intl").currency == "USD"
    assert price_table("ap-southeast-1", site="cn").currency == "CNY"
    est = estimate_job(job(), [60], region="cn-shanghai", site="intl")
    assert est.currency == "USD"


def test_the_dry_run_estimate_names_size_hourly_price_and_cap():
    from tasks.render.cost import plan_lines

    lines = plan_lines(job(**{"job.cpu": "1", "job.memory": "2Gi", "job.completions": 10, "job.parallelism": 10,
                              "job.active_deadline_seconds": 3600, "job.eci.spot_strategy": "SpotAsPriceGo"}),
                       region="cn-hangzhou")
    assert lines[0].startswith("each pod is billed as 2 vCPU / 2 GiB (spot")
    hourly = 2 * 3600 * 0.000049 + 2 * 3600 * 0.00000613
    assert f"~{hourly:.4f} CNY" in lines[1]
    assert f"~{10 * hourly:.2f} CNY if all 10 indexes" in lines[2]
