"""The limits the cloud enforces, checked up front (issue 15): each value below passed validation before and then
failed in a cloud stage, or was silently rewritten by Kubernetes. Each is now refused naming the field and the fix."""

import pytest

from tasks.spec import INT32_MAX, SpecError, parse_spec
from tests.unit.conftest import BASE, with_changes

BIG = 10**20  # the fuzzer's "1e20"

# (case id, dotted-path changes, field named in the error, a word of the fix)
LIMITS = [
    ("deadline 1e20", {"job.active_deadline_seconds": BIG}, "job.active_deadline_seconds", "2147483647"),
    ("deadline 1e20 as float", {"job.active_deadline_seconds": 1e20}, "job.active_deadline_seconds", ""),
    ("ttl over int32", {"job.ttl_seconds_after_finished": INT32_MAX + 1}, "job.ttl_seconds_after_finished", ""),
    ("backoff over int32", {"job.backoff_limit": INT32_MAX + 1}, "job.backoff_limit", ""),
    ("wait timeout 1e20", {"wait.timeout_seconds": BIG}, "wait.timeout_seconds", ""),
    ("grace 1e20", {"wait.fail_fast_grace_seconds": BIG}, "wait.fail_fast_grace_seconds", ""),
    ("cluster timeout 1e20", {"cluster.ask.ready_timeout_seconds": BIG}, "cluster.ask.ready_timeout_seconds", ""),
    ("junk vpc id", {"cluster.ask.vpc_id": "vpc_💥"}, "cluster.ask.vpc_id", "vpc-bp1example"),
    ("junk vswitch id", {"cluster.ask.vswitch_ids": ["subnet-1"]}, "cluster.ask.vswitch_ids", "vsw-"),
    ("junk nas vpc", {"storage.nas.vpc_id": "VPC-1"}, "storage.nas.vpc_id", "vpc-"),
    ("junk zone", {"storage.nas.zone_id": "Hangzhou K"}, "storage.nas.zone_id", "cn-hangzhou-k"),
    ("junk service cidr", {"cluster.ask.service_cidr": "172.19.0.1/20"}, "cluster.ask.service_cidr", "172.19"),
    ("public service cidr", {"cluster.ask.service_cidr": "8.8.0.0/16"}, "cluster.ask.service_cidr", "private"),
    ("k8s version junk", {"cluster.ask.kubernetes_version": "latest"}, "cluster.ask.kubernetes_version", "1.32"),
    ("tag key too long", {"cluster.ask.tags": {"k" * 129: "v"}}, "cluster.ask.tags", "128"),
    ("tag value http", {"cluster.ask.tags": {"k": "http://x"}}, "cluster.ask.tags", "http"),
    ("too many tags", {"cluster.ask.tags": {f"k{i}": "v" for i in range(19)}}, "cluster.ask.tags", "18"),
    ("marker with $(VAR)", {"outputs.marker_name": "$(ASK_BATCH_RUN_KEY)"}, "outputs.marker_name", "'$'"),
    ("marker with $$", {"outputs.marker_name": "a$$b"}, "outputs.marker_name", "'$'"),
    ("prefix with $(VAR)", {"outputs.prefix_template": "out/$(HOME)/{run_key}/"}, "outputs.prefix_template", "'$'"),
    ("prefix backslash", {"outputs.prefix_template": "\\x/{run_key}/"}, "outputs.prefix_template", "slash"),
    ("output key too long", {"outputs.prefix_template": "p" * 1000 + "/{run_key}/"}, "outputs", "1023"),
    ("marker is ..", {"outputs.marker_name": ".."}, "outputs.marker_name", "plain name"),
    ("env refers to later var", {"job.env": {"A": "$(B)", "B": "1"}}, "job", "set B before A"),
    ("env refers to itself", {"job.env": {"A": "x$(A)"}}, "job", "before"),
    ("env refers to secret env", {"job.env": {"A": "$(TOKEN)"},
                                  "config.secret_env": [{"name": "TOKEN", "block": "b"}]}, "(spec)", "secret_env"),
    ("spot duration 6", {"job.eci.spot_duration_hours": 6}, "job.eci.spot_duration_hours", ""),
    ("spot price inf", {"job.eci.spot_strategy": "SpotWithPriceLimit", "job.eci.spot_price_limit": float("inf")},
     "job.eci.spot_price_limit", ""),
    ("eci spec too big", {"job.eci.use_specs": ["128-1024Gi"]}, "job.eci.use_specs", "ECI's sizes"),
    ("cpu beyond ECI", {"job.cpu": "65"}, "job", "use_specs"),
    ("memory beyond ECI", {"job.memory": "600Gi"}, "job", "use_specs"),
    ("image uppercase repo", {"job.image": "Python:3.11"}, "job.image", "registry/repo:tag"),
    ("image bad tag", {"job.image": "python:3.11 slim"}, "job.image", "registry/repo:tag"),
    ("image name too long", {"job.image": "a" * 256}, "job.image", "255"),
    ("label value too long", {"job.labels": {"team": "x" * 64}}, "job.labels", "63"),
    ("label prefix too long", {"job.labels": {"a" * 254 + "/x": "v"}}, "job.labels", "253"),
    ("node selector junk", {"job.node_selector": {"bad key!": "v"}}, "job.node_selector", "prefix"),
    ("toleration unknown field", {"job.tolerations": [{"key": "k", "op": "Exists"}]}, "job.tolerations", "operator"),
    ("exit code over int32", {"job.backoff_limit_per_index": 1, "job.pod_failure_policy": {"rules": [
        {"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [2**31]}}]}}, "job.pod_failure_policy",
     "int32"),
    ("exit code 0 with In", {"job.pod_failure_policy": {"rules": [
        {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [0]}}]}}, "job.pod_failure_policy", "0"),
    ("annotations too big", {"job.eci.extra_annotations": {"a.io/x": "v" * 200_000}}, "job.eci.extra_annotations",
     "shorten"),
    ("mount path with $(", {"config.mount_path": "/etc/$(X)"}, "config.mount_path", "'$'"),
    ("NUL in args", {"job.args": ["a\x00b"]}, "job.args", "NUL"),
    ("nas capacity 1e20", {"storage.nas.capacity_gib": BIG}, "storage.nas.capacity_gib", ""),
]


@pytest.mark.parametrize(("changes", "field", "fix"), [c[1:] for c in LIMITS], ids=[c[0] for c in LIMITS])
def test_cloud_limits_are_checked_up_front(changes, field, fix):
    with pytest.raises(SpecError) as err:
        parse_spec(with_changes(BASE, changes))
    fields = [f for f, _ in err.value.problems]
    assert field in fields, f"expected {field!r} among {fields}: {err.value}"
    assert fix.lower() in str(err.value).lower(), str(err.value)


@pytest.mark.parametrize("changes", [
    {"job.active_deadline_seconds": INT32_MAX, "job.ttl_seconds_after_finished": INT32_MAX},
    {"cluster.ask.vpc_id": "vpc-bp15zckdt37pq72zvw3k1", "cluster.ask.vswitch_ids": ["vsw-bp1s5fnvk4gn2tws03624"]},
    {"job.env": {"A": "1", "B": "$(A)-$(JOB_COMPLETION_INDEX)", "C": "$$(B) stays literal", "D": "$(date +%s)"}},
    {"job.args": ["sh", "-c", "echo $(JOB_COMPLETION_INDEX) $(date)"]},
    {"config.env": {"A": "1"}, "job.env": {"B": "$(A)"}},
    {"job.image": "registry.cn-hangzhou.aliyuncs.com/me/app:1.0@sha256:" + "a" * 64},
    {"job.image": "localhost:5000/team/app"},
    {"job.eci.spot_duration_hours": 0},
    {"job.cpu": "96", "job.eci.use_specs": ["ecs.g7.24xlarge"]},
    {"cluster.ask.tags": {f"k{i}": "v" for i in range(18)}},
], ids=["int32 max", "real network ids", "env refs to earlier", "args refs", "job env refs config env",
        "image with digest", "registry with port", "spot duration 0", "big pod on an ECS type", "18 tags"])
def test_values_at_the_limits_are_accepted(changes):
    parse_spec(with_changes(BASE, changes))
