"""Who a container runs as, as ASK's ECI + the kubelet decide it, and the checks that come with it.

Real pods run as the user their ``securityContext`` names, else as the image's ``USER``. The sandbox has no
image: a container without ``runAsUser`` runs as the sandbox's own user (the stand-in for "the image's user").
When the sandbox runs as root (as CI does) it switches every container that names a user to that uid/gid, so a
non-root pod meets the same file permissions it would on ECI: a Secret file with mode 0400 owned by root cannot be
read, a root-owned sub-path of a volume cannot be written. When it does not run as root it cannot switch users;
the container runs as the sandbox user and only the ``runAsNonRoot`` check below applies (docs/sandbox.md).

What ECI honours (https://www.alibabacloud.com/help/en/eci/user-guide/configure-a-security-context-for-an-elastic-container-instance-or-a-container,
"pod security context: sysctls, runAsUser; container security context: runAsUser, runAsGroup, runAsNonRoot,
privileged, capabilities"): at pod level only ``runAsUser``; ``fsGroup``, ``supplementalGroups``, pod-level
``runAsGroup`` and ``runAsNonRoot`` are not applied. The sandbox follows ECI, so a spec that relies on ``fsGroup``
to make a Secret readable fails here as it would on ASK; it records a Warning event naming what it ignored.

Without ``runAsGroup`` the primary group is the image's for that user (its ``/etc/passwd``), else 0 — as
containerd does for a numeric uid. The host's user database stands in for the image's.

``runAsNonRoot`` is verified before the container starts, with the kubelet's messages
(kubernetes/kubernetes pkg/kubelet/kuberuntime/security_context_others.go, ``verifyRunAsNonRoot``); a failure is a
``CreateContainerConfigError`` that keeps the pod Pending, as on a real node.
"""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Obj = dict[str, Any]

# Pod-level fields ECI does not apply (see the module docstring for the source).
ECI_IGNORED_POD_FIELDS = ("fsGroup", "fsGroupChangePolicy", "supplementalGroups", "runAsGroup", "runAsNonRoot")


class NonRootViolation(Exception):
    """``runAsNonRoot`` cannot be satisfied; the message is the kubelet's."""


@dataclass(frozen=True)
class Identity:
    """The uid/gid a container process gets; ``switch`` False when it runs as the sandbox user."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()
    switch: bool = False
    ignored: tuple[str, ...] = field(default=())

    def popen_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``asyncio.create_subprocess_exec``; {} when no switch is possible or needed."""
        if not self.switch:
            return {}
        # extra_groups must always be given: without it the child keeps root's supplementary groups.
        return {"user": self.uid, "group": self.gid, "extra_groups": list(self.groups)}


def _primary_gid(uid: int) -> int:
    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return 0


def resolve(pod: Obj, container: Obj, *, host_uid: int | None = None) -> Identity:
    """The identity of ``container`` in ``pod`` on this node.

    Raises:
        NonRootViolation: ``runAsNonRoot`` is true and the container would run as uid 0.
    """
    host_uid = os.geteuid() if host_uid is None else host_uid
    spec = pod.get("spec") or {}
    pod_ctx = spec.get("securityContext") or {}
    ctx = container.get("securityContext") or {}
    ignored = tuple(k for k in ECI_IGNORED_POD_FIELDS if k in pod_ctx)
    run_as_user = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
    if ctx.get("runAsNonRoot"):
        where = (f'(pod: "{(pod.get("metadata") or {}).get("name", "")}_'
                 f'{(pod.get("metadata") or {}).get("namespace", "")}'
                 f'({(pod.get("metadata") or {}).get("uid", "")})", container: {container.get("name", "")})')
        if run_as_user is not None and int(run_as_user) == 0:
            raise NonRootViolation(f"container's runAsUser breaks non-root policy {where}")
        if run_as_user is None and host_uid == 0:
            raise NonRootViolation(f"container has runAsNonRoot and image will run as root {where}")
    if run_as_user is None:
        uid = host_uid
        gid = int(ctx["runAsGroup"]) if "runAsGroup" in ctx else os.getegid()
    else:
        uid = int(run_as_user)
        gid = int(ctx["runAsGroup"]) if "runAsGroup" in ctx else _primary_gid(uid)
    switch = host_uid == 0 and (uid != host_uid or gid != os.getegid())
    return Identity(uid=uid, gid=gid, switch=switch, ignored=ignored)


def ensure_traversable(path: Path) -> None:
    """Give every directory from ``path`` up to ``/`` the search bit for others (o+x), nothing more.

    A real container reaches its volumes through mounts; a sandbox process reaches them through the host path
    (see ``env.PathRewriter``), so a process switched to another user must be able to traverse the sandbox's
    data directory and its parents (pytest's temporary directories are 0700). Only the search bit is added:
    listing and reading stay governed by each directory's own mode, as they are on a real node.

    Checked again at every container start (a ``stat`` per directory), never cached: something else on the host
    may take the bit back meanwhile — every new pytest process resets ``/tmp/pytest-of-<user>`` to 0700.
    """
    current = path if path.is_dir() else path.parent
    for directory in (current, *current.parents):
        try:
            mode = directory.stat().st_mode
            if not mode & stat.S_IXOTH:
                os.chmod(directory, stat.S_IMODE(mode) | stat.S_IXOTH)
        except OSError:
            pass
