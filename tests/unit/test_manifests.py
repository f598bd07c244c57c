"""Manifests: hash naming, immutability, labels, Indexed Jobs, ECI annotations, and no secret in rendered output."""

import base64
import json

import pytest
import yaml

from tasks.naming import is_dns1123_label
from tasks.render.manifests import (
    ConfigContent,
    JobInputs,
    config_map_manifest,
    create_cluster_body,
    eci_annotations,
    index_prefix,
    job_manifest,
    nas_create_file_system_request,
    nas_describe_file_systems_request,
    nas_pv_manifest,
    nas_pvc_manifest,
    pod_oss_env,
    redact,
    run_prefix,
    secret_manifest,
)
from tasks.spec import parse_spec
from tests.unit.conftest import BASE, with_changes

RUN = "run-abc"
TOKEN = "tok-9f8e7d6c5b4a"
AK_SECRET = "AK-SECRET-0123456789"


@pytest.fixture
def spec():
    return parse_spec(with_changes(BASE, {"storage.mode": "pvc", "storage.claim_name": "data",
                                          "job.eci.spot_strategy": "SpotWithPriceLimit",
                                          "job.eci.spot_price_limit": 0.25,
                                          "job.eci.use_specs": ["2-4Gi", "ecs.c6.large"],
                                          "job.eci.extra_ephemeral_storage": "50Gi"}))


@pytest.fixture
def content():
    return ConfigContent(files={"settings.json": b'{"a": 1}', "blob.bin": b"\xff\x00"},
                         secret_files={"token": TOKEN.encode()},
                         secret_env={"OSS_ACCESS_KEY_ID": "AKID", "OSS_ACCESS_KEY_SECRET": AK_SECRET})


def inputs_for(content, cm, sec):
    return JobInputs(config_map=cm["metadata"]["name"], secret=sec["metadata"]["name"],
                     secret_file_keys=tuple(content.secret_files), secret_env_keys=tuple(content.secret_env),
                     claim_name="data", oss_env={"ASK_BATCH_OSS_BUCKET": "b"})


def test_config_map_is_immutable_hash_named_and_labelled(content):
    cm = config_map_manifest(RUN, content.files, namespace="ns")
    assert cm["immutable"] is True
    assert cm["metadata"]["labels"]["ask-batch.io/run"] == RUN
    assert cm["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "ask-batch"
    assert cm["data"] == {"settings.json": '{"a": 1}'}
    assert base64.b64decode(cm["binaryData"]["blob.bin"]) == b"\xff\x00"
    again = config_map_manifest(RUN, dict(reversed(list(content.files.items()))), namespace="ns")
    assert again["metadata"]["name"] == cm["metadata"]["name"]
    changed = config_map_manifest(RUN, {**content.files, "settings.json": b"{}"}, namespace="ns")
    assert changed["metadata"]["name"] != cm["metadata"]["name"]
    assert is_dns1123_label(cm["metadata"]["name"])


def test_secret_is_immutable_and_name_changes_with_content(content):
    sec = secret_manifest(RUN, content, namespace="ns")
    assert sec["immutable"] is True and sec["type"] == "Opaque"
    assert set(sec["data"]) == {"token", "env.OSS_ACCESS_KEY_ID", "env.OSS_ACCESS_KEY_SECRET"}
    other = secret_manifest(RUN, ConfigContent(secret_files={"token": b"other"}), namespace="ns")
    assert other["metadata"]["name"] != sec["metadata"]["name"]
    # the same content in another run gets an unrelated hash (salted with the run key)
    elsewhere = secret_manifest("run-xyz", content, namespace="ns")
    assert elsewhere["metadata"]["name"].rsplit("-", 1)[1] != sec["metadata"]["name"].rsplit("-", 1)[1]


def test_job_is_indexed_labelled_and_named_from_its_spec(spec, content):
    cm = config_map_manifest(RUN, content.files, namespace="default")
    sec = secret_manifest(RUN, content, namespace="default")
    job = job_manifest(spec, run_key=RUN, inputs=inputs_for(content, cm, sec))
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == 4 and job["spec"]["parallelism"] == 2
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
        assert labels["ask-batch.io/run"] == RUN and labels["app.kubernetes.io/managed-by"] == "ask-batch"
    assert job["metadata"]["name"].startswith("askb-run-abc-") and len(job["metadata"]["name"]) <= 52
    assert job_manifest(spec, run_key=RUN, inputs=inputs_for(content, cm, sec)) == job  # deterministic
    changed = parse_spec(spec.model_dump() | {"job": spec.job.model_dump() | {"image": "python:3.12"}})
    assert job_manifest(changed, run_key=RUN, inputs=inputs_for(content, cm, sec))["metadata"]["name"] != \
        job["metadata"]["name"]


def test_job_wires_mounts_env_and_secret_refs(spec, content):
    cm = config_map_manifest(RUN, content.files, namespace="default")
    sec = secret_manifest(RUN, content, namespace="default")
    job = job_manifest(spec, run_key=RUN, inputs=inputs_for(content, cm, sec))
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["ASK_BATCH_CONFIG_DIR"]["value"] == "/etc/ask-batch/config"
    assert env["ASK_BATCH_SECRET_DIR"]["value"] == "/etc/ask-batch/secret"
    assert env["ASK_BATCH_DATA_DIR"]["value"] == "/mnt/data"
    assert env["OSS_ACCESS_KEY_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": sec["metadata"]["name"], "key": "env.OSS_ACCESS_KEY_SECRET"}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["data"]["subPath"] == RUN
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["secret"]["secret"]["items"] == [{"key": "token", "path": "token"}]  # env keys not as files
    assert volumes["config"]["configMap"]["name"] == cm["metadata"]["name"]
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "data"
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}


def test_eci_annotations_on_the_pod_template(spec, content):
    job = job_manifest(spec, run_key=RUN, inputs=JobInputs())
    ann = job["spec"]["template"]["metadata"]["annotations"]
    assert ann["k8s.aliyun.com/eci-use-specs"] == "2-4Gi,ecs.c6.large"
    assert ann["k8s.aliyun.com/eci-spot-strategy"] == "SpotWithPriceLimit"
    assert ann["k8s.aliyun.com/eci-spot-price-limit"] == "0.25"
    assert ann["k8s.aliyun.com/eci-extra-ephemeral-storage"] == "50Gi"
    assert ann["k8s.aliyun.com/eci-image-cache"] == "true"
    assert ann["k8s.aliyun.com/pod-fail-on-create-err"] == "true"
    assert "annotations" not in job["metadata"] or "k8s.aliyun.com/eci-use-specs" not in job["metadata"]["annotations"]


def test_no_spot_annotations_by_default():
    ann = eci_annotations(parse_spec(BASE).job.eci)
    assert not any("spot" in k for k in ann)


def test_optional_job_fields_only_when_set():
    spec = parse_spec(with_changes(BASE, {"job.backoff_limit_per_index": 2, "job.backoff_limit": None,
                                          "job.pod_failure_policy": {"rules": [
                                              {"action": "FailIndex", "onExitCodes": {"operator": "In",
                                                                                      "values": [42]}}]}}))
    job = job_manifest(spec, run_key=RUN, inputs=JobInputs())
    assert job["spec"]["backoffLimitPerIndex"] == 2 and "backoffLimit" not in job["spec"]
    assert job["spec"]["podFailurePolicy"]["rules"][0]["action"] == "FailIndex"
    assert "volumes" not in job["spec"]["template"]["spec"]


def test_no_job_wide_backoff_limit_next_to_a_per_index_budget_unless_asked():
    per_index = job_manifest(parse_spec(with_changes(BASE, {"job.backoff_limit_per_index": 1})), run_key=RUN,
                             inputs=JobInputs())["spec"]
    assert per_index["backoffLimitPerIndex"] == 1 and "backoffLimit" not in per_index
    asked = job_manifest(parse_spec(with_changes(BASE, {"job.backoff_limit_per_index": 1, "job.backoff_limit": 5})),
                         run_key=RUN, inputs=JobInputs())["spec"]
    assert asked["backoffLimit"] == 5
    plain = job_manifest(parse_spec(BASE), run_key=RUN, inputs=JobInputs())["spec"]
    assert plain["backoffLimit"] == 3


def test_spot_pods_get_an_ignore_rule_for_disruptions_before_the_users_rules():
    user_rule = {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [137]}}
    spec = parse_spec(with_changes(BASE, {"job.eci.spot_strategy": "SpotAsPriceGo",
                                          "job.pod_failure_policy": {"rules": [user_rule]}}))
    rules = job_manifest(spec, run_key=RUN, inputs=JobInputs())["spec"]["podFailurePolicy"]["rules"]
    assert rules == [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                     user_rule]
    off = parse_spec(with_changes(BASE, {"job.eci.spot_strategy": "SpotAsPriceGo", "job.eci.ignore_reclaims": False}))
    assert "podFailurePolicy" not in job_manifest(off, run_key=RUN, inputs=JobInputs())["spec"]
    on_demand = parse_spec(BASE)
    assert "podFailurePolicy" not in job_manifest(on_demand, run_key=RUN, inputs=JobInputs())["spec"]
    own = {"action": "Count", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    theirs = parse_spec(with_changes(BASE, {"job.eci.spot_strategy": "SpotAsPriceGo",
                                            "job.pod_failure_policy": {"rules": [own]}}))
    assert job_manifest(theirs, run_key=RUN, inputs=JobInputs())["spec"]["podFailurePolicy"]["rules"] == [own]


def test_nas_pv_and_pvc_bind_to_each_other():
    nas = parse_spec(with_changes(BASE, {"storage.mode": "nas"})).storage.nas
    pv = nas_pv_manifest("askb-pv-r", run_key=RUN, server="fs-1.cn-hangzhou.nas.aliyuncs.com", path="/", nas=nas,
                         claim_namespace="ns", claim_name="askb-pvc-r")
    pvc = nas_pvc_manifest("askb-pvc-r", "askb-pv-r", run_key=RUN, namespace="ns", capacity_gib=nas.capacity_gib)
    assert pv["spec"]["csi"]["driver"] == "nasplugin.csi.alibabacloud.com"
    assert pv["spec"]["csi"]["volumeHandle"] == pv["metadata"]["name"]
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert pvc["spec"]["storageClassName"] == ""
    assert pvc["spec"]["selector"]["matchLabels"] == {"alicloud-pvname": "askb-pv-r"}
    assert pvc["spec"]["volumeName"] == "askb-pv-r"
    assert pv["spec"]["claimRef"] == {"namespace": "ns", "name": "askb-pvc-r"}  # reserved for that claim
    assert pv["metadata"]["labels"]["ask-batch.io/run"] == RUN


def test_create_cluster_body_is_ask_with_logging_off():
    ask = parse_spec(with_changes(BASE, {"cluster.ask.vpc_id": "vpc-1", "cluster.ask.vswitch_ids": ["vsw-1"],
                                         "cluster.ask.tags": {"team": "a"}})).cluster.ask
    body = create_cluster_body(ask, region="cn-hangzhou", run_key=RUN)
    assert body["cluster_type"] == "ManagedKubernetes" and body["profile"] == "Serverless"
    assert body["vpcid"] == "vpc-1" and body["vswitch_ids"] == ["vsw-1"]
    assert "logging_type" not in body and not body.get("addons")
    assert {"key": "app.kubernetes.io/managed-by", "value": "ask-batch"} in body["tags"]
    assert {"key": "team", "value": "a"} in body["tags"]
    from alibabacloud_cs20151215 import models as cs

    assert cs.CreateClusterRequest().from_map(body).to_map()["vswitch_ids"] == ["vsw-1"]


def test_nas_requests_round_trip_through_sdk_models():
    from alibabacloud_nas20170626 import models as nas_models

    nas = parse_spec(BASE).storage.nas
    create = nas_create_file_system_request(nas, region="cn-hangzhou", run_key=RUN)
    assert create["Description"][0].isalpha() and create["StorageType"] == "Capacity"
    assert nas_models.CreateFileSystemRequest().from_map(create).to_map() == create
    describe = nas_describe_file_systems_request(nas)
    assert describe["Tag"] == [{"Key": "ask-batch.io/nas", "Value": "ask-batch"}]
    assert nas_models.DescribeFileSystemsRequest().from_map(describe).to_map() == describe


def test_oss_layout_and_pod_env():
    spec = parse_spec(with_changes(BASE, {"target.endpoints.oss": "http://127.0.0.1:9000"}))
    prefix = run_prefix(spec.outputs, run_key=RUN, flow_run_name="witty-zebra")
    assert prefix == "ask-batch/run-abc/"
    assert index_prefix(spec.outputs, prefix, 7) == "ask-batch/run-abc/index-00007/"
    env = pod_oss_env(spec, run_key=RUN, flow_run_name="witty-zebra")
    assert env["ASK_BATCH_OUTPUT_PREFIX"].format(index=7) == "ask-batch/run-abc/index-00007/"
    assert env["ASK_BATCH_OSS_ENDPOINT"] == "http://127.0.0.1:9000"
    default = pod_oss_env(parse_spec(BASE), run_key=RUN, flow_run_name="x")
    assert default["ASK_BATCH_OSS_ENDPOINT"] == "https://oss-cn-hangzhou-internal.aliyuncs.com"


def test_redact_removes_every_secret_value(spec, content):
    cm = config_map_manifest(RUN, content.files, namespace="default")
    sec = secret_manifest(RUN, content, namespace="default")
    job = job_manifest(spec, run_key=RUN, inputs=inputs_for(content, cm, sec))
    request = {"kubeconfig": "apiVersion: v1\ntoken: " + TOKEN, "note": f"uses {AK_SECRET} inline",
               "access_key_secret": "whatever"}
    rendered = redact([cm, sec, job, request], secrets=content.secret_values())
    text = yaml.safe_dump(rendered) + json.dumps(rendered)
    for value in (TOKEN, AK_SECRET, base64.b64encode(TOKEN.encode()).decode(),
                  base64.b64encode(AK_SECRET.encode()).decode(), "whatever"):
        assert value not in text
    assert rendered[1]["data"] == {k: "<redacted>" for k in sec["data"]}
    assert rendered[1]["metadata"]["name"] == sec["metadata"]["name"]  # names stay readable
    # references to secrets are kept
    assert sec["metadata"]["name"] in json.dumps(rendered[2])
    assert sec["data"]["token"] != "<redacted>"  # redact() copies, never mutates


def test_pods_read_their_index_from_ask_batch_index_on_the_first_job_and_on_a_follow_up():
    spec = parse_spec(with_changes(BASE, {"job.completions": 5, "job.parallelism": 5}))
    first = job_manifest(spec, run_key=RUN, inputs=JobInputs())
    env = {e["name"]: e for e in first["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ASK_BATCH_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    follow = job_manifest(spec, run_key=RUN, inputs=JobInputs(), index=3)
    env = {e["name"]: e.get("value") for e in follow["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ASK_BATCH_INDEX"] == env["JOB_COMPLETION_INDEX"] == "3"
    assert (follow["spec"]["completions"], follow["spec"]["parallelism"]) == (1, 1)
    assert follow["spec"]["template"]["metadata"]["labels"]["ask-batch.io/index"] == "3"
    others = {job_manifest(spec, run_key=RUN, inputs=JobInputs(), index=i)["metadata"]["name"] for i in range(5)}
    assert len(others | {first["metadata"]["name"]}) == 6  # every Job its own name


def test_spot_jobs_with_a_per_index_budget_fail_an_index_ask_batch_moves_on_demand():
    spec = parse_spec(with_changes(BASE, {"job.eci.spot_strategy": "SpotAsPriceGo", "job.eci.max_reclaims": 2,
                                          "job.backoff_limit_per_index": 2}))
    rules = job_manifest(spec, run_key=RUN, inputs=JobInputs())["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "FailIndex",
                        "onPodConditions": [{"type": "ask-batch.io/RetryOnDemand", "status": "True"}]}
    assert rules[1]["action"] == "Ignore"  # the reclaims themselves still spend no budget
    # Without a per-index budget Kubernetes has no FailIndex, and past max_failed_indexes it would stop every pod.
    for changes in ({}, {"job.backoff_limit_per_index": 2, "job.max_failed_indexes": 3},
                    {"job.backoff_limit_per_index": 2, "job.eci.max_reclaims": 0}):
        other = parse_spec(with_changes(BASE, {"job.eci.spot_strategy": "SpotAsPriceGo", **changes}))
        rules = job_manifest(other, run_key=RUN, inputs=JobInputs())["spec"]["podFailurePolicy"]["rules"]
        assert all(r["action"] != "FailIndex" for r in rules), changes
    full = parse_spec(with_changes(BASE, {"job.eci.spot_strategy": "SpotAsPriceGo", "job.backoff_limit_per_index": 2,
                                          "job.pod_failure_policy": {"rules": [
                                              {"action": "Count", "onExitCodes": {"operator": "In", "values": [i]}}
                                              for i in range(1, 20)]}}))
    rules = job_manifest(full, run_key=RUN, inputs=JobInputs())["spec"]["podFailurePolicy"]["rules"]
    assert len(rules) == 20  # the Kubernetes limit: the Ignore rule fits, the FailIndex rule does not


def test_the_on_demand_try_is_a_follow_up_job_without_spot():
    spec = parse_spec(with_changes(BASE, {"job.eci.spot_strategy": "SpotWithPriceLimit",
                                          "job.eci.spot_price_limit": 0.2, "job.eci.use_specs": ["2-4Gi"],
                                          "job.backoff_limit_per_index": 2,
                                          "job.completions": 4, "job.parallelism": 2}))
    spot = job_manifest(spec, run_key=RUN, inputs=JobInputs(), index=3)
    try_ = job_manifest(spec, run_key=RUN, inputs=JobInputs(), index=3, on_demand=True)
    ann = try_["spec"]["template"]["metadata"]["annotations"]
    assert not any(k.startswith("k8s.aliyun.com/eci-spot") for k in ann), ann
    assert "k8s.aliyun.com/eci-spot-strategy" in spot["spec"]["template"]["metadata"]["annotations"]
    assert ann["k8s.aliyun.com/eci-use-specs"] == "2-4Gi"  # everything else as before
    assert ann["ask-batch.io/on-demand-try"] == "last try after 3 reclaims"
    assert "podFailurePolicy" not in try_["spec"]  # nothing left to ignore or move
    env = {e["name"]: e.get("value") for e in try_["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ASK_BATCH_INDEX"] == "3" and try_["spec"]["completions"] == 1
    assert try_["metadata"]["name"] != spot["metadata"]["name"]
    with pytest.raises(ValueError, match="give index"):
        job_manifest(spec, run_key=RUN, inputs=JobInputs(), on_demand=True)


def test_the_on_demand_try_on_acs_uses_the_default_qos():
    spec = parse_spec(with_changes(BASE, {"job.compute": {"qos": "preemptible"}, "job.backoff_limit_per_index": 1}))
    first = job_manifest(spec, run_key=RUN, inputs=JobInputs(), kind="acs")
    try_ = job_manifest(spec, run_key=RUN, inputs=JobInputs(), index=0, kind="acs", on_demand=True)
    assert first["spec"]["template"]["metadata"]["labels"]["alibabacloud.com/compute-qos"] == "best-effort"
    assert first["spec"]["podFailurePolicy"]["rules"][0]["action"] == "FailIndex"
    assert try_["spec"]["template"]["metadata"]["labels"]["alibabacloud.com/compute-qos"] == "default"
