"""The pod's user and file modes (issue 11): what a non-root image needs on ECI, which does not apply fsGroup."""

import pytest

from tasks.render.manifests import ConfigContent, JobInputs, config_map_manifest, job_manifest, secret_manifest
from tasks.spec import SpecError, parse_spec
from tests.unit.conftest import BASE, with_changes

RUN = "run-sec"


def render(**changes):
    spec = parse_spec(with_changes(BASE, {"storage.mode": "pvc", "storage.claim_name": "data", **changes}))
    content = ConfigContent(files={"settings.json": b"{}"}, secret_files={"token": b"t"})
    cm = config_map_manifest(RUN, content.files, namespace="default")
    sec = secret_manifest(RUN, content, namespace="default")
    inputs = JobInputs(config_map=cm["metadata"]["name"], secret=sec["metadata"]["name"],
                       secret_file_keys=("token",), claim_name="data")
    return job_manifest(spec, run_key=RUN, inputs=inputs)["spec"]["template"]["spec"]


def test_mounted_config_and_secret_files_are_readable_by_any_user():
    volumes = {v["name"]: v for v in render()["volumes"]}
    assert volumes["secret"]["secret"]["defaultMode"] == 0o444
    assert volumes["config"]["configMap"]["defaultMode"] == 0o444


def test_non_root_user_on_the_container_and_a_root_init_container_hands_over_the_data_dir():
    pod = render(**{"job.security": {"run_as_user": 65534, "run_as_group": 65534, "run_as_non_root": True}})
    assert pod["containers"][0]["securityContext"] == {"runAsUser": 65534, "runAsGroup": 65534,
                                                       "runAsNonRoot": True}
    assert "securityContext" not in pod  # ECI applies pod-level runAsUser only; fsGroup never
    [init] = pod["initContainers"]
    assert init["command"] == ["chown", "65534:65534", "/mnt/data"]
    assert init["securityContext"] == {"runAsUser": 0, "runAsGroup": 0}
    assert init["volumeMounts"] == [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "data"]


def test_no_init_container_for_root_or_unset_users_or_when_turned_off():
    assert "initContainers" not in render()
    assert "initContainers" not in render(**{"job.security": {"run_as_user": 0}})
    assert "initContainers" not in render(**{"job.security": {"run_as_user": 1000, "prepare_data_dir": False}})
    assert render(**{"job.security": {"run_as_user": 1000}})["initContainers"][0]["command"][1] == "1000"


def test_run_as_non_root_with_uid_0_is_rejected_naming_the_fix():
    with pytest.raises(SpecError, match="run_as_user is 0.*fix: set run_as_user"):
        parse_spec(with_changes(BASE, {"job.security": {"run_as_user": 0, "run_as_non_root": True}}))


def test_image_pull_secrets_reach_the_pod_template_and_are_validated():
    pod = render(**{"job.image_pull_secrets": ["regcred"]})
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert "imagePullSecrets" not in render()
    with pytest.raises(SpecError, match="job.image_pull_secrets"):
        parse_spec(with_changes(BASE, {"job.image_pull_secrets": ["Not_Valid"]}))
