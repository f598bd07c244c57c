"""Property-based test of the door (issue 15): specs generated around every field's limits.

For any generated parameters, ``admit`` either returns or raises ``SpecError`` (never anything else), and whatever
it accepts renders a Job, ConfigMap and Secret that pass the Kubernetes schema (``kubernetes-validate``, strict:
no unknown fields). ``make test`` runs the "ci" profile (300 examples); ``python -m bench input_fuzz`` runs a longer
one and prints cases / accepted / rejected / crashes.
"""

import functools
from typing import Any

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.cloud.admission import admit
from tasks.errors import SpecError
from tasks.render.manifests import JobInputs, job_manifest, pod_oss_env, render_config_objects
from tests.unit.conftest import BASE, with_changes

K8S_VERSION = "1.32.0"
INT32 = 2**31 - 1

settings.register_profile("ci", max_examples=300, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("bench", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])

ints = st.sampled_from([-(2**63), -1, 0, 1, 2, 59, 60, 100, INT32 - 1, INT32, INT32 + 1, 10**20]) | st.integers()
floats = st.sampled_from([0.0, 0.5, 1e20, float("inf"), float("nan"), -1.0])
texts = (st.sampled_from(["", " ", "a", "A", "-a", "a-", "a" * 63, "a" * 64, "a" * 254, "$(HOME)", "$$", "x/y", "..",
                          "ü", "vpc-bp1x", "vsw-bp1x", "vpc_x", "cn-hangzhou-k", "1.32.1-aliyun.1", "172.19.0.0/20",
                          "\x00", "a\nb", "_SUCCESS", "2-4Gi", "ecs.c6.large", "500m", "2Gi", "65", "600Gi"])
         | st.text(max_size=80))
values = ints | floats | texts | st.booleans() | st.none()
labels = st.dictionaries(texts, texts, max_size=3)

def edges(*valid_and_invalid: Any) -> st.SearchStrategy[Any]:
    """A field's own values on both sides of its limits, mixed with the generic ones."""
    return st.sampled_from(valid_and_invalid) | texts


#: field -> strategy of values around its limits
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "run_key": edges("a" * 40, "a" * 41, "run-1", "Run-1", "-a"),
    "target.region": texts,
    "cluster.namespace": edges("default", "a" * 63, "a" * 64, "batch-jobs"),
    "cluster.ask.name": edges("a" * 63, "a" * 64, "名字-1", "ask_batch", "-x"),
    "cluster.ask.vpc_id": texts | st.none(),
    "cluster.ask.vswitch_ids": st.lists(texts, max_size=3),
    "cluster.ask.service_cidr": texts | st.none(),
    "cluster.ask.kubernetes_version": texts | st.none(),
    "cluster.ask.tags": labels,
    "cluster.ask.ready_timeout_seconds": ints,
    "storage.mode": st.sampled_from(["none", "pvc", "nas", "x"]),
    "storage.claim_name": texts | st.none(),
    "storage.mount_path": texts,
    "storage.nas.vpc_id": texts | st.none(),
    "storage.nas.zone_id": texts | st.none(),
    "storage.nas.capacity_gib": ints,
    "storage.nas.path": texts,
    "config.files": st.dictionaries(texts, texts, max_size=2),
    "config.env": st.dictionaries(texts, texts, max_size=3),
    "config.mount_path": texts,
    "job.image": edges("python:3.11-slim", "localhost:5000/a/b:1", "a" * 255, "a" * 256, "Python",
                       "a/b@sha256:" + "0" * 64),
    "job.command": st.lists(texts, max_size=3) | st.none(),
    "job.args": st.lists(texts, max_size=3),
    "job.env": st.dictionaries(texts, texts, max_size=3),
    "job.cpu": values,
    "job.memory": values,
    "job.cpu_limit": values,
    "job.completions": ints,
    "job.parallelism": ints,
    "job.backoff_limit": ints | st.none(),
    "job.backoff_limit_per_index": ints | st.none(),
    "job.active_deadline_seconds": ints | floats | st.none(),
    "job.ttl_seconds_after_finished": ints | floats | st.none(),
    "job.labels": labels,
    "job.node_selector": labels,
    "job.tolerations": st.lists(st.dictionaries(st.sampled_from(["key", "operator", "value", "effect",
                                                                 "tolerationSeconds", "x"]), values, max_size=3),
                                max_size=2),
    "job.pod_failure_policy": st.none() | st.fixed_dictionaries({"rules": st.lists(st.fixed_dictionaries({
        "action": st.sampled_from(["FailJob", "Ignore", "Count", "FailIndex"]),
        "onExitCodes": st.fixed_dictionaries({"operator": st.sampled_from(["In", "NotIn", "x"]),
                                              "values": st.lists(ints, max_size=3)})}), max_size=2)}),
    "job.eci.use_specs": st.lists(texts, max_size=2),
    "job.eci.spot_duration_hours": ints | st.none(),
    "job.eci.extra_annotations": labels,
    "wait.timeout_seconds": ints | st.none(),
    "outputs.bucket": edges("abc", "ab", "a" * 63, "a" * 64, "my-bucket", "-ab"),
    "outputs.prefix_template": edges("{run_key}/", "x/{flow_run_name}/", "p" * 900 + "/", "{user}/", "/{run_key}"),
    "outputs.index_template": texts | st.sampled_from(["i-{index}/", "{index:05d}", "{index!r}", "{index:>9999}"]),
    "outputs.marker_name": edges("_SUCCESS", "done.txt", "$(X)", "a/b", "ü" * 300),
}


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    chosen = draw(st.lists(st.sampled_from(sorted(FIELDS)), min_size=1, max_size=4, unique=True))
    return with_changes(BASE, {name: draw(FIELDS[name]) for name in chosen})


def check(params: dict[str, Any]) -> bool:
    """True if accepted (and its manifests are valid Kubernetes objects), False if refused with SpecError."""
    try:
        admitted = admit(params)
    except SpecError as exc:
        assert exc.problems and all(field and msg for field, msg in exc.problems)
        return False
    spec, content, run_key = admitted.spec, admitted.content, "r" * 40
    objects = render_config_objects(spec, run_key, content)
    inputs = JobInputs(config_map="cm" if content.files else None, secret="s" if len(objects) > 1 else None,
                       secret_file_keys=tuple(content.secret_files), secret_env_keys=tuple(content.secret_env),
                       claim_name="data" if spec.storage.mode != "none" else None,
                       oss_env=pod_oss_env(spec, run_key=run_key, flow_run_name="ask-batch-" + run_key))
    objects.append(job_manifest(spec, run_key=run_key, inputs=inputs))
    for obj in objects:
        validator(obj["apiVersion"], obj["kind"]).validate(obj)  # jsonschema.ValidationError names the path
    return True


@functools.cache
def validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    """kubernetes-validate's strict schema for one kind, built once (its ``validate`` re-reads it on every call)."""
    from kubernetes_validate.utils import schema_contents
    from referencing import Registry, Resource

    group = api_version.split("/")[0].split(".")[0] + "-" if "/" in api_version else ""
    name = f"{kind.lower()}-{group}{api_version.split('/')[-1]}.json"
    folder = f"kubernetes-json-schema/v{K8S_VERSION}-local-strict"
    schema = schema_contents(f"{folder}/{name}", K8S_VERSION)
    registry = Resource.from_contents(schema_contents(f"{folder}/_definitions.json", K8S_VERSION)) @ (
        Resource.from_contents(schema) @ Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


@settings(settings.get_profile("ci"))
@given(specs())
def test_the_door_raises_only_spec_errors_and_accepts_only_valid_objects(params: dict[str, Any]) -> None:
    check(params)
