"""ACS as a target, without a cluster: parameters, dry-run rendering, diagnosis and prices.

The dry runs go through ``flows.plan.plan`` (what ``--dry-run`` prints); the rendered Jobs are checked against the
Kubernetes 1.32 schema with kubernetes-validate (strict: unknown fields fail).
"""

from typing import Any

import kubernetes_validate
import pytest

from flows.plan import plan
from tasks.errors import InvalidInput, SpecError
from tasks.render.acs_cost import ACS_PRICES, estimate_acs_job
from tasks.render.compute import check_for_kind
from tasks.render.cost import estimate_job
from tasks.render.diagnose import attempt_end, diagnose_pod, is_reclaimed, is_spot
from tasks.spec import parse_spec
from tests.unit.conftest import BASE, with_changes

COMPUTE = {"qos": "preemptible", "size": "2-4Gi"}


def spec_for(mode: str, **changes: Any) -> Any:
    return parse_spec(with_changes(BASE, {"cluster.mode": mode, "job.compute": dict(COMPUTE), **changes}))


def dry_run_job(spec: Any) -> dict[str, Any]:
    docs, _ = plan(spec, run_key="acs-unit", flow_run_name="acs-unit")
    [job] = [d["body"] for d in docs if d["request"] == "Kubernetes POST Job"]
    return job


def test_dry_runs_render_the_same_compute_request_for_ask_and_acs() -> None:
    ask, acs = dry_run_job(spec_for("ask")), dry_run_job(spec_for("acs"))
    for job in (ask, acs):
        kubernetes_validate.validate(job, "1.32.0", strict=True)  # raises on a schema violation
    ask_meta, acs_meta = ask["spec"]["template"]["metadata"], acs["spec"]["template"]["metadata"]
    # ASK: ECI annotations, no ACS labels
    assert ask_meta["annotations"]["k8s.aliyun.com/eci-spot-strategy"] == "SpotAsPriceGo"
    assert ask_meta["annotations"]["k8s.aliyun.com/eci-use-specs"] == "2-4Gi"
    assert not [k for k in ask_meta["labels"] if k.startswith("alibabacloud.com/")]
    # ACS: the same request as labels (and the size annotation), and not one ECI annotation
    assert acs_meta["labels"]["alibabacloud.com/compute-qos"] == "best-effort"
    assert acs_meta["labels"]["alibabacloud.com/compute-class"] == "general-purpose"
    # (the pod-identity annotation keeps an RRSA webhook off the pods: tasks/render/rrsa.py)
    assert {k: v for k, v in acs_meta["annotations"].items() if not k.startswith("pod-identity.")} == {
        "alibabacloud.com/pod-required-spec": "2-4Gi"}
    assert not [k for k in {**acs_meta["annotations"], **acs_meta["labels"]} if k.startswith("k8s.aliyun.com/")]
    # preemptible on both: a reclaimed pod (DisruptionTarget) spends no retry budget
    for job in (ask, acs):
        assert job["spec"]["podFailurePolicy"]["rules"][0]["onPodConditions"][0]["type"] == "DisruptionTarget"


def test_dry_run_for_acs_looks_up_and_creates_with_profile_acs() -> None:
    docs, _ = plan(spec_for("acs"), run_key="acs-unit", flow_run_name="acs-unit")
    lookup = next(d for d in docs if d["request"] == "CS DescribeClustersForRegion")
    create = next(d for d in docs if d["request"] == "CS CreateCluster")
    assert lookup["body"]["profile"] == "Acs" and create["body"]["profile"] == "Acs"
    assert create["body"]["name"] == "ask-batch-acs" and create["body"]["cluster_type"] == "ManagedKubernetes"


def test_existing_cluster_declared_acs_renders_acs_pods() -> None:
    spec = parse_spec(with_changes(BASE, {"cluster.mode": "existing", "cluster.existing.kind": "acs",
                                          "cluster.existing.kubeconfig_path": __file__,
                                          "job.compute": {"class": "performance"}}))
    labels = dry_run_job(spec)["spec"]["template"]["metadata"]["labels"]
    assert labels["alibabacloud.com/compute-class"] == "performance"


@pytest.mark.parametrize(("mode", "changes", "field", "text"), [
    ("acs", {"job.eci": {"spot_strategy": "SpotAsPriceGo"}}, "job.eci", "ACS ignores"),
    ("ask", {"job.compute": {"class": "gpu"}}, "job.compute.class", "exists on ACS only"),
    ("acs", {"job.compute": {"size": "1-1Gi"}, "job.memory": "2Gi"}, "compute.size", "below the requests"),
    ("acs", {"job.compute": {"class": "gpu-hpn", "qos": "preemptible"}}, "job.compute", "no preemptible"),
    ("acs", {"job.compute": {"size": "2C4G"}}, "job.compute.size", "'<vCPU>-<GiB>Gi'"),
])
def test_invalid_compute_is_refused_naming_the_field(mode: str, changes: dict[str, Any], field: str,
                                                     text: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(with_changes(BASE, {"cluster.mode": mode, **changes}))
    # the field is the problem's path, or named in its message when the rule spans sections
    assert any((f.startswith(field) or field in msg) and text in msg for f, msg in info.value.problems), \
        info.value.problems


def test_kind_found_at_run_time_is_checked_before_rendering() -> None:
    eci = parse_spec(with_changes(BASE, {"job.eci": {"use_specs": ["2-4Gi"]}}))
    with pytest.raises(InvalidInput, match="ACS, which ignores them"):
        check_for_kind(eci.job, "acs")
    gpu = parse_spec(with_changes(BASE, {"cluster.mode": "acs", "job.compute": {"class": "gpu"}}))
    with pytest.raises(InvalidInput, match="needs an ACS cluster"):
        check_for_kind(gpu.job, "ask")


def test_the_reclaim_rules_of_job_eci_apply_on_acs_too() -> None:
    """max_reclaims and ignore_reclaims are retry rules, not ECI annotations: accepted for ACS best-effort pods."""
    spec = parse_spec(with_changes(BASE, {"cluster.mode": "acs", "job.compute": {"qos": "preemptible"},
                                          "job.backoff_limit_per_index": 1,
                                          "job.eci": {"max_reclaims": 5, "ignore_reclaims": False}}))
    check_for_kind(spec.job, "acs")
    assert spec.job.eci.max_reclaims == 5


def _pod(labels: dict[str, str], phase: str, conditions: list[dict[str, Any]], reason: str = "") -> dict[str, Any]:
    return {"metadata": {"name": "p", "labels": labels, "creationTimestamp": "2026-11-30T00:00:00Z",
                         "annotations": {"batch.kubernetes.io/job-completion-index": "3"}},
            "status": {"phase": phase, "reason": reason, "conditions": conditions}}


def test_best_effort_preemption_is_a_reclaim_not_a_fatal_failure() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 11, 30, 1, tzinfo=UTC)
    target = [{"type": "DisruptionTarget", "status": "True", "reason": "BestEffortPreempted"}]
    reclaimed = _pod({"alibabacloud.com/compute-qos": "best-effort"}, "Failed", target, "Evicted")
    assert is_reclaimed(reclaimed) and diagnose_pod(reclaimed, now=now, grace=60) is None
    on_demand = _pod({"alibabacloud.com/compute-qos": "default"}, "Failed", target, "Evicted")
    assert not is_reclaimed(on_demand)
    assert is_spot(reclaimed) and not is_spot(on_demand)  # the ledger marks best-effort attempts as spot
    assert attempt_end(reclaimed).outcome == "reclaimed" and attempt_end(on_demand).outcome == "evicted"


def test_acs_stock_out_names_the_fix() -> None:
    from datetime import UTC, datetime

    cond = [{"type": "ContainerInstanceCreated", "status": "False", "reason": "NoStock",
             "message": "Create failed because the specified instance is out of stock. cn-hangzhou-i"}]
    diag = diagnose_pod(_pod({"alibabacloud.com/compute-class": "general-purpose"}, "Pending", cond),
                        now=datetime(2026, 11, 30, 1, tzinfo=UTC), grace=60)
    assert diag.reason == "ACS NoStock" and "vSwitches in more zones" in diag.message


def test_acs_prices_by_class_and_qos_with_source() -> None:
    default = parse_spec(with_changes(BASE, {"cluster.mode": "acs", "job.cpu": "2", "job.memory": "4Gi"})).job
    best_effort = parse_spec(with_changes(BASE, {"cluster.mode": "acs", "job.cpu": "2", "job.memory": "4Gi",
                                                 "job.compute": {"qos": "preemptible"}})).job
    hour = [3600.0]
    on_demand = estimate_acs_job(default, hour, region="cn-hangzhou")
    # 2 vCPU * 0.06 CNY/h + 4 GiB * 0.03 CNY/h (ACS general-purpose, Chinese mainland)
    assert on_demand.currency == "CNY" and on_demand.amount == pytest.approx(2 * 0.0000167 * 3600
                                                                             + 4 * 0.00000833 * 3600)
    cheap = estimate_acs_job(best_effort, hour, region="cn-hangzhou")
    assert cheap.amount < on_demand.amount / 4
    assert "product-billing-rules" in cheap.source and "2026-11-30" in cheap.source
    assert estimate_acs_job(default, hour, region="ap-southeast-1").currency == "USD"
    assert estimate_job(default, hour, region="cn-hangzhou").amount != on_demand.amount  # ECI prices differ
    assert {k[2] for k in ACS_PRICES} == {"default", "best-effort"}


def test_example_acs_parameters_are_valid_and_ask_for_acs() -> None:
    import yaml

    with open("deployments/example-acs.yaml") as fh:
        spec = parse_spec(yaml.safe_load(fh))
    assert spec.cluster.mode == "acs" and spec.cluster.managed is spec.cluster.acs
    assert spec.job.compute is not None and spec.job.eci.model_dump(exclude_defaults=True) == {}
