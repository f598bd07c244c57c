"""``job.pod_template_patch`` through the sandbox (issue 11): what the patch adds is on the pods the cluster runs.

The example run with a patch that adds a toleration, an env var and an emptyDir volume mounted in the workload
container: the run succeeds, and the pods read back from the Kubernetes API carry all three next to what ask-batch
renders itself (the index env, the data mount).
"""

import json
from pathlib import Path

from kubernetes import client

from tasks.naming import RUN_LABEL
from tests.e2e.conftest import kube
from tests.e2e.test_flow import run

PATCH = {"spec": {
    "tolerations": [{"key": "example.com/batch", "operator": "Exists", "effect": "NoSchedule"}],
    "volumes": [{"name": "scratch", "emptyDir": {}}],
    "containers": [{"name": "workload", "env": [{"name": "EXTRA_SETTING", "value": "from-the-patch"}],
                    "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}]}}


def test_a_patch_adds_a_toleration_an_env_var_and_a_mounted_empty_dir(sandbox_dir: Path, workdir: Path) -> None:
    key = "e2e-podpatch"
    spec, state = run(sandbox_dir, workdir, key, "job.completions=2", "job.parallelism=2", "teardown.job=never",
                      f"job.pod_template_patch={json.dumps(PATCH)}")
    assert state.is_completed(), state.message
    api = kube(spec)
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    try:
        pods = core.list_namespaced_pod(spec.cluster.namespace, label_selector=f"{RUN_LABEL}={key}").items
        assert len(pods) == 2 and all(p.status.phase == "Succeeded" for p in pods)
        for pod in pods:
            # (the API server's DefaultTolerationSeconds admission adds the not-ready/unreachable ones)
            assert ("example.com/batch", "Exists", "NoSchedule") in [
                (t.key, t.operator, t.effect) for t in pod.spec.tolerations or []]
            volumes = {v.name: v for v in pod.spec.volumes}
            assert volumes["scratch"].empty_dir is not None and volumes["data"].persistent_volume_claim
            [workload] = [c for c in pod.spec.containers if c.name == "workload"]
            env = {e.name: e for e in workload.env}
            assert env["EXTRA_SETTING"].value == "from-the-patch"
            assert env["ASK_BATCH_INDEX"].value_from.field_ref is not None  # ask-batch's own env is still there
            mounts = {m.mount_path: m.name for m in workload.volume_mounts}
            assert mounts["/scratch"] == "scratch" and mounts["/mnt/data"] == "data"
        assert len(sorted((workdir / "outputs").rglob("result.json"))) == 2
    finally:
        for job in batch.list_namespaced_job(spec.cluster.namespace, label_selector=f"{RUN_LABEL}={key}").items:
            batch.delete_namespaced_job(job.metadata.name, spec.cluster.namespace, propagation_policy="Background")
