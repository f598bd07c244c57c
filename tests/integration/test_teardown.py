"""teardown through the sandbox: per-policy deletions, Background propagation (no pod left behind), partial
handles, the label sweep of a crashed run, clusters and file systems ask-batch did not create left alone."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client

from tasks.cloud.cluster_access import connect
from tasks.cloud.nas import find_file_systems_by_name, list_mount_targets
from tasks.handles import ConfigHandle, JobHandle, TeardownReport, VolumeHandle
from tasks.naming import run_selector
from tasks.render.manifests import ConfigContent, JobInputs, job_manifest
from tasks.stages.cluster import ensure_cluster
from tasks.stages.config import publish_config
from tasks.stages.job import launch_job
from tasks.stages.teardown import sweep, teardown
from tasks.stages.volume import ensure_volume


@pytest.fixture
def kube(cloud: Any, make_spec: Any) -> tuple[Any, Any, Any]:
    spec = make_spec()
    handle = ensure_cluster(spec, run_key="it", cs=cloud.cs)
    api = connect(handle, spec, cs=cloud.cs)
    return handle, client.CoreV1Api(api), client.BatchV1Api(api)


def _spec(make_spec: Any, run_key: str, **teardown: Any) -> Any:
    return make_spec({"storage": {"mode": "nas", "nas": {"name": "nas-" + run_key}},
                      "job": {"image": "busybox", "command": ["sleep", "60"], "completions": 2, "parallelism": 2},
                      "teardown": teardown})


def start_run(cloud: Any, spec: Any, kube: Any, run_key: str) -> tuple[VolumeHandle, ConfigHandle, JobHandle]:
    """What a run has created by the time it waits on its Job: volume, config, a Job with running pods."""
    handle, core, batch = kube
    volume = ensure_volume(spec, run_key=run_key, cluster=handle, core_v1=core, nas=cloud.nas)
    config = publish_config(core, spec, run_key, ConfigContent(files={"settings.json": b"{}"},
                                                               secret_env={"TOKEN": "s3cret-value"}),
                            rrsa_oidc_provider_arn=handle.rrsa_oidc_provider_arn)
    inputs = JobInputs(config_map=config.config_map, secret=config.secret, secret_env_keys=config.secret_env_keys,
                       claim_name=volume.claim_name)
    job = launch_job(batch, job_manifest(spec, run_key=run_key, inputs=inputs))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod(handle.namespace, label_selector=run_selector(run_key)).items
        if len(pods) == 2 and all(p.status.phase == "Running" for p in pods):
            break
        time.sleep(0.2)
    else:
        pytest.fail("the Job's pods did not start")
    return volume, config, job


def names(report: TeardownReport, bucket: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for item in getattr(report, bucket):
        out.setdefault(item.kind, set()).add(item.name)
    return out


def run_objects(core: Any, batch: Any, ns: str, run_key: str) -> dict[str, int]:
    sel = run_selector(run_key)
    return {"jobs": len(batch.list_namespaced_job(ns, label_selector=sel).items),
            "pods": len(core.list_namespaced_pod(ns, label_selector=sel).items),
            "configmaps": len(core.list_namespaced_config_map(ns, label_selector=sel).items),
            "secrets": len(core.list_namespaced_secret(ns, label_selector=sel).items),
            "pvcs": len(core.list_namespaced_persistent_volume_claim(ns, label_selector=sel).items),
            "pvs": len(core.list_persistent_volume(label_selector=sel).items)}


def test_default_policy_deletes_job_config_volume_and_keeps_nas_and_cluster(cloud: Any, make_spec: Any, kube: Any,
                                                                            run_key: str) -> None:
    handle, core, batch = kube
    spec = _spec(make_spec, run_key)
    volume, config, job = start_run(cloud, spec, kube, run_key)

    report = teardown(spec, run_key=run_key, succeeded=True, cluster=handle, volume=volume, config=config, job=job,
                      core_v1=core, batch_v1=batch, nas=cloud.nas, cs=cloud.cs)

    assert report.ok, report.lines()
    # Background propagation: the pods are gone too, right when teardown returns.
    assert run_objects(core, batch, handle.namespace, run_key) == dict.fromkeys(
        ("jobs", "pods", "configmaps", "secrets", "pvcs", "pvs"), 0)
    deleted = names(report, "deleted")
    assert deleted == {"Job": {job.name}, "ConfigMap": {config.config_map}, "Secret": {config.secret},
                       "ServiceAccount": {config.service_account},  # pod credentials 'rrsa', the default
                       "PersistentVolumeClaim": {volume.claim_name}, "PersistentVolume": {volume.pv_name}}
    kept = {(i.kind, i.name): i.why for i in report.kept}
    assert kept[("NasFileSystem", volume.file_system_id)] == "policy 'never'"
    assert "not created by ask-batch" in kept[("Cluster", handle.cluster_id)]
    assert list_mount_targets(cloud.nas, volume.file_system_id)
    assert "s3cret-value" not in repr(report.model_dump())

    again = teardown(spec, run_key=run_key, succeeded=True, cluster=handle, volume=volume, config=config, job=job,
                     core_v1=core, batch_v1=batch, nas=cloud.nas, cs=cloud.cs)
    assert again.ok and all("already gone" in i.why for i in again.deleted) and again.deleted


def test_sweep_finds_everything_by_label_and_tag(cloud: Any, make_spec: Any, kube: Any, run_key: str) -> None:
    handle, core, batch = kube
    spec = _spec(make_spec, run_key, delete_everything=True)
    volume, _, _ = start_run(cloud, spec, kube, run_key)

    report = sweep(spec, run_key=run_key, core_v1=core, batch_v1=batch, nas=cloud.nas, cs=cloud.cs)

    assert report.ok, report.lines()
    assert set(run_objects(core, batch, handle.namespace, run_key).values()) == {0}
    deleted = names(report, "deleted")
    assert deleted["NasMountTarget"] == {volume.mount_target}
    assert deleted["NasFileSystem"] == {volume.file_system_id}
    assert find_file_systems_by_name(cloud.nas, "nas-" + run_key) == []
    assert {"Job", "ConfigMap", "Secret", "PersistentVolumeClaim", "PersistentVolume"} <= set(deleted)


def test_on_success_keeps_a_failed_runs_job_for_inspection(cloud: Any, make_spec: Any, kube: Any,
                                                            run_key: str) -> None:
    handle, core, batch = kube
    spec = _spec(make_spec, run_key, job="on_success", config="on_success", volume="on_success")
    volume, config, job = start_run(cloud, spec, kube, run_key)

    report = teardown(spec, run_key=run_key, succeeded=False, cluster=handle, volume=volume, config=config,
                      job=job, core_v1=core, batch_v1=batch, nas=cloud.nas, cs=cloud.cs)

    kept = {(i.kind, i.name): i.why for i in report.kept}
    assert "on_success" in kept[("Job", job.name)] and "did not succeed" in kept[("Job", job.name)]
    assert ("PersistentVolumeClaim", volume.claim_name) in kept
    assert not report.deleted and report.ok
    assert run_objects(core, batch, handle.namespace, run_key)["pods"] == 2
    sweep(_spec(make_spec, run_key), run_key=run_key, core_v1=core, batch_v1=batch, nas=None, cs=None)


def test_partial_handles_and_unreachable_cluster_are_reported_not_raised(cloud: Any, make_spec: Any,
                                                                         run_key: str) -> None:
    spec = _spec(make_spec, run_key, nas="always")
    job = JobHandle(namespace="default", name="askb-gone", uid="u", completions=1)
    volume = VolumeHandle(mode="nas", claim_name="pvc-x", pv_name="pv-x", file_system_id="ffffffffff")

    report = teardown(spec, run_key=run_key, succeeded=False, cluster=None, volume=volume, config=None, job=job,
                      core_v1=None, batch_v1=None, nas=cloud.nas, cs=cloud.cs)

    assert [(i.kind, "no connection" in i.why) for i in report.failed] == [("Kubernetes", True)]
    assert not report.deleted  # the file system of the handle does not exist: nothing to do, nothing raised


def test_a_cluster_created_by_ask_batch_is_deleted_when_the_policy_says_so(cloud: Any, make_spec: Any,
                                                                          run_key: str) -> None:
    spec = make_spec({"cluster": {"mode": "ask", "ask": {"name": "it-" + run_key, "create_if_missing": True,
                                                         "zone_id": "cn-sandbox-a"}},
                      "teardown": {"cluster": "on_success"}})
    handle = ensure_cluster(spec, run_key=run_key, cs=cloud.cs)
    assert handle.created

    kept = teardown(spec, run_key=run_key, succeeded=False, cluster=handle, volume=None, config=None, job=None,
                    core_v1=None, batch_v1=None, nas=None, cs=cloud.cs)
    assert [(i.kind, i.name) for i in kept.kept] == [("Cluster", handle.cluster_id)]

    report = teardown(spec, run_key=run_key, succeeded=True, cluster=None, volume=None, config=None, job=None,
                      core_v1=None, batch_v1=None, nas=None, cs=cloud.cs)
    assert [(i.kind, i.name) for i in report.deleted] == [("Cluster", handle.cluster_id)], report.lines()


def test_the_tasks_build_their_own_clients_and_sweep_a_crashed_run(cloud: Any, make_spec: Any,
                                                                   run_key: str) -> None:
    """ensure_volume_task, then teardown_task with no handles at all (as an on_crashed hook would)."""
    from prefect import flow

    from tasks.stages.teardown import teardown_task
    from tasks.stages.volume import ensure_volume_task
    from tests.prefect_harness import prefect_harness

    spec = _spec(make_spec, run_key, delete_everything=True)

    @flow
    def crashed_then_swept() -> tuple[Any, Any]:
        cluster = ensure_cluster(spec, run_key=run_key, cs=cloud.cs)
        volume = ensure_volume_task(spec, run_key=run_key, cluster=cluster)
        return volume, teardown_task(spec, run_key=run_key, succeeded=False)

    with prefect_harness(server_startup_timeout=300):
        volume, report = crashed_then_swept()
    assert report.ok, report.lines()
    assert names(report, "deleted")["NasFileSystem"] == {volume.file_system_id}
    assert {"PersistentVolumeClaim", "PersistentVolume", "NasMountTarget"} <= set(names(report, "deleted"))
