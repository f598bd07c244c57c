"""The virtual node's image references, parsed as the kubelet parses them (sandbox/k8s/node/images.py).

Expected values follow github.com/distribution/reference (ParseNormalizedNamed) and the kubelet's messages.
"""

from __future__ import annotations

import pytest

from sandbox.k8s.node import images

SHA = "sha256:" + "a" * 64


@pytest.mark.parametrize(("image", "normalized"), [
    ("busybox", "docker.io/library/busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox:latest"),
    ("index.docker.io/team/app:v2", "docker.io/team/app:v2"),
    ("registry.cn-hangzhou.aliyuncs.com/ns/app:1.0", "registry.cn-hangzhou.aliyuncs.com/ns/app:1.0"),
    ("localhost/app", "localhost/app:latest"),
    ("localhost:5000/a/b/c:t", "localhost:5000/a/b/c:t"),
    ("[::1]:5000/app:1", "[::1]:5000/app:1"),
    (f"python@{SHA}", f"docker.io/library/python@{SHA}"),
    (f"python:3.11@{SHA}", f"docker.io/library/python:3.11@{SHA}"),
    ("my_repo/app__x-y.z", "docker.io/my_repo/app__x-y.z:latest"),
])
def test_valid_references_normalize(image: str, normalized: str) -> None:
    assert str(images.parse(image)) == normalized


@pytest.mark.parametrize(("image", "error"), [
    ("Busybox", "invalid reference format: repository name (library/Busybox) must be lowercase"),
    ("team/App:1", "invalid reference format: repository name (team/App) must be lowercase"),
    ("busybox:", "invalid reference format"),
    ("busybox:a b", "invalid reference format"),
    ("-busybox", "invalid reference format"),
    ("a//b", "invalid reference format"),
    ("busybox:" + "x" * 129, "invalid reference format"),
    ("app@sha256:abc", "invalid reference format"),
    ("app@sha256:" + "a" * 63 + "0" * 2, "invalid checksum digest length"),
    ("app@md5:" + "a" * 32, "unsupported digest algorithm"),
    ("a" * 64, "invalid repository name (" + "a" * 64 + "), cannot specify 64-byte hexadecimal strings"),
    ("r.io/" + "a" * 260, "repository name must not be more than 255 characters"),
])
def test_invalid_references_fail_with_distribution_messages(image: str, error: str) -> None:
    with pytest.raises(images.InvalidReference) as exc:
        images.parse(image)
    assert str(exc.value) == error


def test_invalid_name_message_is_the_kubelets() -> None:
    with pytest.raises(images.InvalidReference) as exc:
        images.parse("busybox:")
    assert images.invalid_name_message("busybox:", exc.value) == (
        'Failed to apply default image tag "busybox:": couldn\'t parse image name "busybox:": invalid reference format')


def test_pull_errors_never_resolve_anything() -> None:
    ref = images.parse("unreachable.invalid/app:1")
    assert images.pull_error("unreachable.invalid/app:1", ref, []) == (
        'rpc error: code = Unknown desc = failed to pull and unpack image "unreachable.invalid/app:1": failed to '
        'resolve reference "unreachable.invalid/app:1": failed to do request: Head '
        '"https://unreachable.invalid/v2/app/manifests/1": dial tcp: lookup unreachable.invalid: no such host')
    assert "lookup registry.invalid: no such host" in images.pull_error(
        "registry.invalid:5000/x", images.parse("registry.invalid:5000/x"), [])
    plausible = images.parse("registry.example.com/team/app:2")
    assert images.pull_error("registry.example.com/team/app:2", plausible, []) is None  # present: no lookup
    assert images.pull_error("registry.example.com/team/app:2", plausible, ["registry.example.com/team/*"])
    assert images.pull_error("busybox", images.parse("busybox"), ["docker.io/library/busybox:latest"])
