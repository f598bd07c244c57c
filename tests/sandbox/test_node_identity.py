"""The virtual node runs containers as their securityContext's user, with ECI's rules (sandbox/k8s/node/identity.py).

A non-root pod must meet in the sandbox the permission errors it would meet on ASK: a root-owned Secret file with
mode 0400 is unreadable, `fsGroup` does not rescue it (ECI does not apply it), a root-owned sub-path is not
writable, `runAsNonRoot` refuses uid 0. Switching users needs root (CI runs as root); without it those tests are
skipped and only the `runAsNonRoot` checks run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandbox.k8s.cluster import KubeCluster
from sandbox.k8s.node.identity import NonRootViolation, resolve
from tests.sandbox.test_node import (
    b64,
    cluster,  # noqa: F401  (fixture)
    create_pod,
    events_for,
    log_text,
    phase_is,
    terminated,
    wait_pod,
    waiting_reason,
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox switches container users only when it "
                                "runs as root (see docs/sandbox.md); this machine runs tests as a normal user")

NOBODY = {"runAsUser": 65534, "runAsGroup": 65534}
TOKEN_MOUNT = [{"name": "secret", "mountPath": "/etc/secret", "readOnly": True}]


def secret_volume(mode: int) -> list[dict]:
    return [{"name": "secret", "secret": {"secretName": "tok", "defaultMode": mode}}]


def make_secret(c: KubeCluster) -> None:
    c.store.create("secrets", {"metadata": {"name": "tok"}, "data": {"token": b64("s3cret")}},
                   namespace="default")


@needs_root
async def test_secret_mode_0400_unreadable_by_non_root_user(cluster: KubeCluster) -> None:  # noqa: F811
    make_secret(cluster)
    create_pod(cluster, "ro", ["sh", "-c", "id -u; cat /etc/secret/token"],
               container={"securityContext": NOBODY, "volumeMounts": TOKEN_MOUNT}, volumes=secret_volume(0o400))
    pod = await wait_pod(cluster, "ro", phase_is("Succeeded", "Failed"))
    assert pod["status"]["phase"] == "Failed"
    assert terminated(pod)["exitCode"] == 1
    text = log_text(cluster, pod)
    assert text.startswith("65534\n") and "Permission denied" in text


@needs_root
async def test_secret_mode_0444_readable_by_non_root_user(cluster: KubeCluster) -> None:  # noqa: F811
    make_secret(cluster)
    create_pod(cluster, "rw", ["sh", "-c", "id -u; id -g; cat /etc/secret/token"],
               container={"securityContext": NOBODY, "volumeMounts": TOKEN_MOUNT}, volumes=secret_volume(0o444))
    pod = await wait_pod(cluster, "rw", phase_is("Succeeded", "Failed"))
    assert pod["status"]["phase"] == "Succeeded", log_text(cluster, pod)
    assert log_text(cluster, pod).split() == ["65534", "65534", "s3cret"]


@needs_root
async def test_fs_group_is_not_applied_as_on_eci(cluster: KubeCluster) -> None:  # noqa: F811
    make_secret(cluster)
    create_pod(cluster, "fsg", ["sh", "-c", "id -G; cat /etc/secret/token"],
               securityContext={"runAsUser": 65534, "fsGroup": 2000},
               container={"volumeMounts": TOKEN_MOUNT}, volumes=secret_volume(0o400))
    pod = await wait_pod(cluster, "fsg", phase_is("Succeeded", "Failed"))
    assert pod["status"]["phase"] == "Failed"
    assert "2000" not in log_text(cluster, pod).splitlines()[0].split()
    warning = events_for(cluster, "fsg")["SecurityContextIgnored"][0]
    assert warning["type"] == "Warning" and "fsGroup" in warning["message"]


@needs_root
async def test_sub_path_is_root_owned_unless_an_init_container_hands_it_over(cluster: KubeCluster,  # noqa: F811
                                                                            tmp_path: Path) -> None:
    shared = tmp_path / "nas"
    shared.mkdir(mode=0o755)
    volumes = [{"name": "data", "hostPath": {"path": str(shared)}}]
    mount = [{"name": "data", "mountPath": "/mnt/data", "subPath": "run-1"}]
    create_pod(cluster, "plain", ["sh", "-c", "echo x > /mnt/data/f"],
               container={"securityContext": NOBODY, "volumeMounts": mount}, volumes=volumes)
    pod = await wait_pod(cluster, "plain", phase_is("Succeeded", "Failed"))
    assert pod["status"]["phase"] == "Failed" and "Permission denied" in log_text(cluster, pod)
    assert (shared / "run-1").stat().st_uid == 0

    manifest_mount = [{"name": "data", "mountPath": "/mnt/data", "subPath": "run-2"}]
    create_pod(cluster, "handed", ["sh", "-c", "echo x > /mnt/data/f"],
               container={"securityContext": NOBODY, "volumeMounts": manifest_mount}, volumes=volumes,
               initContainers=[{"name": "prepare", "image": "busybox", "command": ["chown", "65534:65534",
                                                                                   "/mnt/data"],
                                "securityContext": {"runAsUser": 0}, "volumeMounts": manifest_mount}])
    pod = await wait_pod(cluster, "handed", phase_is("Succeeded", "Failed"))
    assert pod["status"]["phase"] == "Succeeded", log_text(cluster, pod)
    assert (shared / "run-2" / "f").stat().st_uid == 65534


@needs_root
async def test_a_parent_made_private_again_is_made_traversable_again(cluster: KubeCluster,  # noqa: F811
                                                                     tmp_path: Path) -> None:
    """Something else on the host (a new pytest process resets /tmp/pytest-of-<user> to 0700) may take the search
    bit back from a directory above the data dir between two pods: the next non-root pod must still reach its
    volumes."""
    make_secret(cluster)
    for name in ("before", "after"):
        os.chmod(tmp_path, 0o700)  # what pytest does to its root temp directory at every start
        create_pod(cluster, name, ["cat", "/etc/secret/token"],
                   container={"securityContext": NOBODY, "volumeMounts": TOKEN_MOUNT}, volumes=secret_volume(0o444))
        pod = await wait_pod(cluster, name, phase_is("Succeeded", "Failed"))
        assert pod["status"]["phase"] == "Succeeded", log_text(cluster, pod)


async def test_run_as_non_root_refuses_uid_0(cluster: KubeCluster) -> None:  # noqa: F811
    create_pod(cluster, "root", ["true"], container={"securityContext": {"runAsUser": 0, "runAsNonRoot": True}})
    pod = await wait_pod(cluster, "root", lambda p: waiting_reason(p) == "CreateContainerConfigError")
    message = pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    assert message.startswith("container's runAsUser breaks non-root policy (pod: \"root_default(")
    assert pod["status"]["phase"] == "Pending"


def test_run_as_non_root_without_user_checks_the_image_user() -> None:
    pod = {"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": {}}
    container = {"name": "c", "securityContext": {"runAsNonRoot": True}}
    with pytest.raises(NonRootViolation, match=r"image will run as root \(pod: \"p_ns\(u\)\", container: c\)"):
        resolve(pod, container, host_uid=0)
    assert resolve(pod, container, host_uid=1000).uid == 1000
    assert not resolve(pod, container, host_uid=1000).switch


def test_group_defaults_to_the_users_primary_group_else_0() -> None:
    pod = {"metadata": {}, "spec": {"securityContext": {"runAsUser": 65534, "runAsGroup": 7}}}
    ident = resolve(pod, {"name": "c"}, host_uid=0)
    assert (ident.uid, ident.switch) == (65534, True)
    assert ident.gid != 7 and "runAsGroup" in ident.ignored  # pod-level runAsGroup: not applied by ECI
    assert resolve({"spec": {}}, {"securityContext": {"runAsUser": 4242}}, host_uid=0).gid == 0
