"""Parameter validation: every invalid input is rejected before any API call, naming the field and the fix."""

import pytest
import yaml

from tasks.spec import BatchSpec, SpecError, cpu_cores, memory_gib, parse_spec
from tests.unit.conftest import BASE, with_changes

MISSING = "/nonexistent/ask-batch/file.txt"

# (case id, dotted-path changes, field named in the error, a word of the fix)
INVALID = [
    ("parallelism>completions", {"job.completions": 2, "job.parallelism": 3}, "job.parallelism", "at most 2"),
    ("missing image", {"job.image": ""}, "job.image", "set job.image"),
    ("blank image", {"job.image": "   "}, "job.image", "set job.image"),
    ("image with space", {"job.image": "python 3"}, "job.image", "registry/repo:tag"),
    ("no job at all", {"job": None}, "job", ""),
    ("region display name", {"target.region": "China (Hangzhou)"}, "target.region", "cn-hangzhou"),
    ("region uppercase", {"target.region": "CN-HANGZHOU"}, "target.region", "cn-hangzhou"),
    ("namespace not dns", {"cluster.namespace": "Batch_Jobs"}, "cluster.namespace", "batch-jobs"),
    ("run key not dns", {"run_key": "My Run!"}, "run_key", "my-run"),
    ("run key too long", {"run_key": "a" * 41}, "run_key", "40"),
    ("cluster name bad", {"cluster.ask.name": "-bad"}, "cluster.ask.name", "not starting with '-'"),
    ("negative completions", {"job.completions": -1}, "job.completions", ""),
    ("zero parallelism", {"job.parallelism": 0}, "job.parallelism", ""),
    ("negative backoff", {"job.backoff_limit": -1}, "job.backoff_limit", ""),
    ("negative deadline", {"job.active_deadline_seconds": -5}, "job.active_deadline_seconds", ""),
    ("negative ttl", {"job.ttl_seconds_after_finished": -1}, "job.ttl_seconds_after_finished", ""),
    ("ttl shorter than the log drain", {"job.ttl_seconds_after_finished": 0}, "(spec)", "at least 34"),
    ("cpu syntax", {"job.cpu": "two"}, "job.cpu", "500m"),
    ("cpu zero", {"job.cpu": "0"}, "job.cpu", "250m"),
    ("cpu negative", {"job.cpu": "-1"}, "job.cpu", "500m"),
    ("memory milli-bytes", {"job.memory": "512m"}, "job.memory", "512Mi"),
    ("memory no unit tiny", {"job.memory": "512"}, "job.memory", "Gi"),
    ("memory syntax", {"job.memory": "2 GB"}, "job.memory", "2Gi"),
    ("limit below request", {"job.memory": "2Gi", "job.memory_limit": "1Gi"}, "job", "memory_limit"),
    ("per-index needs Indexed", {"job.completion_mode": "NonIndexed", "job.backoff_limit_per_index": 1},
     "job", "completion_mode"),
    ("FailIndex needs per-index", {"job.pod_failure_policy": {"rules": [
        {"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [1]}}]}}, "job", "backoff_limit_per_index"),
    ("pfp bad action", {"job.pod_failure_policy": {"rules": [{"action": "Retry", "onExitCodes": {}}]}},
     "job.pod_failure_policy", "FailJob"),
    ("pfp with OnFailure", {"job.restart_policy": "OnFailure", "job.pod_failure_policy": {"rules": [
        {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [3]}}]}}, "job", "Never"),
    ("unknown field (typo)", {"job.paralelism": 3}, "job.paralelism", "did you mean 'parallelism'"),
    ("unknown top-level", {"clusterr": {}}, "clusterr", "did you mean 'cluster'"),
    ("reserved env", {"job.env": {"ASK_BATCH_DATA_DIR": "/x"}}, "job.env", "reserved"),
    ("bad env name", {"job.env": {"1BAD": "x"}}, "job.env", "environment variable"),
    ("env in both", {"job.env": {"A": "1"}, "config.env": {"A": "2"}}, "(spec)", "keep one"),
    ("missing local config", {"config.local_paths": [MISSING]}, "config.local_paths", "existing"),
    ("missing secret file", {"config.secret_files": [{"name": "token", "file": MISSING}]},
     "config.secret_files.0.file", "existing file"),
    ("secret with two sources", {"config.secret_files": [{"name": "t", "block": "b", "file": __file__}]},
     "config.secret_files.0", "exactly one"),
    ("secret with no source", {"config.secret_env": [{"name": "TOKEN"}]}, "config.secret_env.0", "exactly one"),
    ("config key with slash", {"config.files": {"a/b.txt": "x"}}, "config.files", "no '/'"),
    ("mount path relative", {"config.mount_path": "etc/config"}, "config.mount_path", "absolute"),
    ("mounts overlap", {"storage.mode": "pvc", "storage.claim_name": "data",
                        "storage.mount_path": "/etc/ask-batch"}, "(spec)", "overlap"),
    ("pvc without claim", {"storage.mode": "pvc"}, "storage", "claim_name"),
    ("pvc claim not dns", {"storage.mode": "pvc", "storage.claim_name": "My_Claim"}, "storage.claim_name", "my-claim"),
    ("nas path relative", {"storage.mode": "nas", "storage.nas.path": "batch"}, "storage.nas.path", "absolute"),
    ("nas existing cluster no vpc", {"storage.mode": "nas", "cluster.mode": "existing",
                                     "cluster.existing.kubeconfig_path": __file__}, "(spec)", "vswitch_id"),
    ("existing without source", {"cluster.mode": "existing"}, "cluster", "exactly one"),
    ("missing kubeconfig file", {"cluster.mode": "existing", "cluster.existing.kubeconfig_path": MISSING},
     "cluster.existing.kubeconfig_path", "existing file"),
    ("secret blocks without names", {"target.credentials.mode": "secret_blocks"}, "target.credentials",
     "access_key_id_block"),
    ("endpoint garbage", {"target.endpoints.cs": "not an endpoint"}, "target.endpoints.cs", "host[:port]"),
    ("bucket uppercase", {"outputs.bucket": "My_Bucket"}, "outputs.bucket", "lowercase"),
    ("prefix unknown field", {"outputs.prefix_template": "x/{user}/"}, "outputs.prefix_template", "run_key"),
    ("index template no index", {"outputs.index_template": "part/"}, "outputs.index_template", "{index}"),
    ("index template broken", {"outputs.index_template": "i-{index"}, "outputs.index_template", "braces"),
    ("marker with slash", {"outputs.marker_name": "a/b"}, "outputs.marker_name", "plain name"),
    ("presign too long", {"outputs.presign_expiry_seconds": 10**7}, "outputs.presign_expiry_seconds", ""),
    ("ram role missing", {"outputs.pod_credentials": "ram_role"}, "(spec)", "ram_role_name"),
    ("spot limit missing", {"job.eci.spot_strategy": "SpotWithPriceLimit"}, "job.eci", "spot_price_limit"),
    ("spot limit without strategy", {"job.eci.spot_price_limit": 0.5}, "job.eci", "SpotWithPriceLimit"),
    ("spot limit decimals", {"job.eci.spot_strategy": "SpotWithPriceLimit", "job.eci.spot_price_limit": 0.12345},
     "job.eci.spot_price_limit", "0.123"),
    ("eci spec syntax", {"job.eci.use_specs": ["2c4g"]}, "job.eci.use_specs", "2-4Gi"),
    ("eci too many specs", {"job.eci.use_specs": ["1-2Gi"] * 6}, "job.eci.use_specs", "at most 5"),
    ("image cache id", {"job.eci.image_snapshot_id": "abc"}, "job.eci.image_snapshot_id", "imc-"),
    ("ephemeral storage", {"job.eci.extra_ephemeral_storage": "50GB"}, "job.eci.extra_ephemeral_storage", "Gi"),
    ("teardown policy", {"teardown.nas": "sometimes"}, "teardown.nas", ""),
    ("delete cluster but protected", {"teardown.delete_everything": True,
                                      "cluster.ask.deletion_protection": True}, "(spec)", "deletion_protection"),
    ("reserved tag", {"cluster.ask.tags": {"aliyun:x": "y"}}, "cluster.ask.tags", "reserved"),
    ("kubeconfig minutes", {"cluster.ask.kubeconfig_minutes": 5}, "cluster.ask.kubeconfig_minutes", ""),
    ("label reserved", {"job.labels": {"ask-batch.io/run": "x"}}, "job.labels", "reserved"),
]


@pytest.mark.parametrize(("changes", "field", "fix"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_input_is_rejected_naming_the_field(changes, field, fix):
    params = with_changes(BASE, changes)
    if changes.get("job", 0) is None:
        params.pop("job")
    with pytest.raises(SpecError) as err:
        parse_spec(params)
    fields = [f for f, _ in err.value.problems]
    assert field in fields, f"expected {field!r} among {fields}: {err.value}"
    assert fix.lower() in str(err.value).lower()


def test_validation_needs_no_network(monkeypatch, base_params):
    """Validation is pure: sockets are forbidden while parsing the whole example."""
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("validation must not touch the network")

    monkeypatch.setattr(socket, "socket", no_network)
    with pytest.raises(SpecError):
        parse_spec(with_changes(base_params, {"job.parallelism": 99}))
    with open("deployments/example.yaml") as fh:
        parse_spec(yaml.safe_load(fh))


def test_defaults_are_safe(base_params):
    spec = parse_spec(base_params)
    assert spec.job.restart_policy == "Never"
    assert spec.job.completion_mode == "Indexed"
    assert spec.job.active_deadline_seconds  # a cost cap by default
    assert spec.teardown.effective() == {"job": "always", "config": "always", "volume": "always",
                                         "nas": "never", "cluster": "never"}
    assert spec.cluster.ask.deletion_protection is False
    assert spec.storage.mode == "none"


def test_delete_everything_overrides_every_policy(base_params):
    spec = parse_spec(with_changes(base_params, {"teardown.delete_everything": True, "teardown.job": "never"}))
    assert set(spec.teardown.effective().values()) == {"always"}


def test_several_problems_are_reported_together(base_params):
    with pytest.raises(SpecError) as err:
        parse_spec(with_changes(base_params, {"job.cpu": "x", "outputs.bucket": "B", "target.region": "X"}))
    fields = {f for f, _ in err.value.problems}
    assert {"job.cpu", "outputs.bucket", "target.region"} <= fields


def test_templates_are_normalised(base_params):
    spec = parse_spec(with_changes(base_params, {"outputs.prefix_template": "runs/{run_key}",
                                                 "outputs.index_template": "i{index}"}))
    assert spec.outputs.prefix_template == "runs/{run_key}/"
    assert spec.outputs.index_template == "i{index}/"


def test_every_field_has_a_description():
    """The Prefect UI renders a form from the schema: no field without a description."""
    schema = BatchSpec.model_json_schema()
    missing = []
    for name, definition in schema.get("$defs", {}).items():
        for prop, body in definition.get("properties", {}).items():
            if not body.get("description"):
                missing.append(f"{name}.{prop}")
    for prop, body in schema["properties"].items():
        if not body.get("description"):
            missing.append(f"BatchSpec.{prop}")
    assert not missing


@pytest.mark.parametrize(("text", "cores"), [("1", 1.0), ("500m", 0.5), ("0.25", 0.25), ("2", 2.0)])
def test_cpu_quantities(text, cores):
    assert cpu_cores(text) == pytest.approx(cores)


@pytest.mark.parametrize(("text", "gib"), [("2Gi", 2.0), ("512Mi", 0.5), ("1G", 1e9 / 2**30)])
def test_memory_quantities(text, gib):
    assert memory_gib(text) == pytest.approx(gib)


def test_numeric_quantities_are_accepted_as_kubernetes_writes_them() -> None:
    from tasks.spec import JobSpec

    job = JobSpec(image="python:3.11", cpu=0.5, memory="1Gi", cpu_limit=2)
    assert (job.cpu, job.cpu_limit) == ("0.5", "2")


def test_max_reclaims_needs_a_per_index_budget_and_no_failed_index_limit():
    for changes in ({"job.eci.max_reclaims": 2},
                    {"job.eci.max_reclaims": 2, "job.backoff_limit_per_index": 2, "job.max_failed_indexes": 1}):
        with pytest.raises(SpecError) as caught:
            parse_spec(with_changes(BASE, {"job.eci.spot_strategy": "SpotAsPriceGo", **changes}))
        assert "eci.max_reclaims 2 needs backoff_limit_per_index" in str(caught.value)
    ok = parse_spec(with_changes(BASE, {"job.eci.max_reclaims": 2, "job.backoff_limit_per_index": 2}))
    assert ok.job.eci.max_reclaims == 2
    assert parse_spec(BASE).job.eci.max_reclaims == 3  # the default never fails a spec
