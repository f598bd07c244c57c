"""One run per spec at a time: a Kubernetes Lease in the target cluster, which cannot outlive its holder.

Why: two runs of the same spec (the same ``run_key``, or the same parameters when no run key is given) must not
launch the Job twice at once — pods are billed and the work must run once. The lock lives where the work is, as a
``coordination.k8s.io/v1`` Lease named ``ask-batch-lock-<key>`` in the run's namespace
(https://kubernetes.io/docs/concepts/architecture/leases/,
https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/lease-v1/):

- **every mode, every home**: two runs of one spec reach the same cluster whichever Prefect server, home or worker
  they report to, so they see the same Lease (a lock in a Prefect server only binds runs of that server);
- **holder** = the flow run id (``spec.holderIdentity``); the holder renews ``spec.renewTime`` every
  ``lease_seconds / 3`` from a background thread while the run lives;
- **taken over when expired**: a holder that dies (SIGKILL, OOM, a lost host) stops renewing, and once
  ``renewTime + leaseDurationSeconds`` has passed, the next run of the same key takes the Lease over (counting a
  ``leaseTransitions``) and — the run key being the same — re-attaches to the Job and cleans up;
- **no lost race**: every take-over is an update carrying the ``resourceVersion`` that was read, so of two runs
  racing for an expired Lease exactly one succeeds and the other gets 409 Conflict and reads again (optimistic
  concurrency: https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions);
- **released on exit**: the holder deletes the Lease with a ``resourceVersion`` precondition (so it never deletes
  a Lease another run has taken over), leaving nothing behind in the namespace.

Expiry compares the holder's ``renewTime`` with this host's clock, as the Lease API defines it; hosts are assumed
to keep time with NTP (a skew of a few seconds only shortens or lengthens the take-over delay by as much).

Where the flow takes it (``flows/ask_batch.py``): right after ``ensure_cluster`` (the cluster holds the lock) and
around everything after it, teardown included, so a second run cannot start while the first is still deleting.
"""

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from tasks.errors import RunLocked
from tasks.naming import content_hash

log = logging.getLogger("ask_batch.run_lock")

LEASE_PREFIX = "ask-batch-lock-"
#: ``leaseDurationSeconds``: how long after its last renewal a dead holder's Lease can be taken over.
LEASE_SECONDS = 60
_MAX_NAME = 253  # a Lease name is a DNS subdomain


def lock_key(spec: Any) -> str:
    """The lock key of a ``BatchSpec``: its ``run_key``, else a hash of all its parameters.

    Without a run key each flow run derives its own (from its id), so two runs of one spec would not collide by
    name; the content hash makes "the same spec" the same key anyway.
    """
    if getattr(spec, "run_key", None):
        return str(spec.run_key)
    return "spec-" + content_hash(spec.model_dump(mode="json", exclude={"run_key"}), length=16)


def lease_name(key: str) -> str:
    """The Lease that backs the lock of ``key`` (a DNS subdomain; hashed when the key is too long)."""
    name = f"{LEASE_PREFIX}{key}".lower()
    if len(name) > _MAX_NAME:
        name = f"{LEASE_PREFIX}{content_hash(key, length=16)}"
    return name


def _now() -> datetime:
    return datetime.now(UTC)


def _status(exc: BaseException) -> int | None:
    return getattr(exc, "status", None)


class _Retried:
    """The Lease API through the one retry policy (``tasks.cloud.retry.call``): a 503 or a reset while taking or
    renewing the lock is retried, not a failed run; 404/409 come back at once as ``CloudError`` with ``status``."""

    def __init__(self, api: Any) -> None:
        self._api = api

    def __getattr__(self, name: str) -> Any:
        from tasks.cloud.retry import call

        method = getattr(self._api, name)
        return lambda *args, **kwargs: call(method, *args, service="Kubernetes", operation=name, **kwargs)


def _expires(lease: Any) -> datetime | None:
    spec = lease.spec
    renewed = spec.renew_time or spec.acquire_time
    if not spec.holder_identity or renewed is None:
        return None
    if renewed.tzinfo is None:
        renewed = renewed.replace(tzinfo=UTC)
    return renewed + timedelta(seconds=spec.lease_duration_seconds or LEASE_SECONDS)


class RunLease:
    """The Lease of one lock key, held by one flow run.

    Args:
        coordination: a ``kubernetes.client.CoordinationV1Api`` for the target cluster.
        namespace: the run's namespace (``spec.cluster.namespace``).
        key: the lock key (``lock_key(spec)``).
        holder: the holder identity, the flow run id.
        lease_seconds: ``leaseDurationSeconds``.
        clock: returns the current UTC time (tests pass their own).
    """

    def __init__(self, coordination: Any, namespace: str, key: str, holder: str, *,
                 lease_seconds: int = LEASE_SECONDS, clock: Callable[[], datetime] = _now) -> None:
        self.api = _Retried(coordination)
        self.namespace = namespace
        self.key = key
        self.name = lease_name(key)
        self.holder = holder
        self.lease_seconds = int(lease_seconds)
        self.clock = clock
        self.version: str | None = None  # resourceVersion of our last write
        self.lost = threading.Event()

    def _body(self, *, transitions: int, acquired: datetime) -> Any:
        from kubernetes import client

        now = self.clock()
        return client.V1Lease(
            metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace,
                                         labels={"app.kubernetes.io/managed-by": "ask-batch"}),
            spec=client.V1LeaseSpec(holder_identity=self.holder, lease_duration_seconds=self.lease_seconds,
                                    acquire_time=acquired, renew_time=now, lease_transitions=transitions))

    def try_acquire(self) -> str | None:
        """Take the Lease if it is free, ours or expired; returns None when taken, else the live holder's id.

        Raises ``CloudError`` for anything but the 404/409 this protocol expects (transient errors retried first).
        """
        for _ in range(5):  # each round either wins, sees a live holder, or lost a race and reads again
            try:
                lease = self.api.read_namespaced_lease(self.name, self.namespace)
            except Exception as exc:
                if _status(exc) != 404:
                    raise
                try:
                    created = self.api.create_namespaced_lease(
                        self.namespace, self._body(transitions=0, acquired=self.clock()))
                except Exception as exc2:
                    if _status(exc2) == 409:
                        continue  # another run created it first: read who
                    raise
                self.version = created.metadata.resource_version
                return None
            current = lease.spec.holder_identity
            expires = _expires(lease)
            if current and current != self.holder and expires is not None and expires > self.clock():
                return current
            transitions = int(lease.spec.lease_transitions or 0) + (0 if current == self.holder else 1)
            body = self._body(transitions=transitions, acquired=self.clock())
            body.metadata.resource_version = lease.metadata.resource_version
            try:
                taken = self.api.replace_namespaced_lease(self.name, self.namespace, body)
            except Exception as exc:
                if _status(exc) in (404, 409):
                    continue  # changed or deleted since we read it: read again
                raise
            if current and current != self.holder:
                log.warning("run lock %s: took over the lease of %s, which expired at %s (that run stopped "
                            "renewing it: it crashed or was killed)", self.key, current,
                            expires.isoformat() if expires else "?")
            self.version = taken.metadata.resource_version
            return None
        lease = self.api.read_namespaced_lease(self.name, self.namespace)
        return str(lease.spec.holder_identity or "?")

    def renew(self) -> bool:
        """Move ``renewTime`` to now; False (and ``lost`` set) when another run has taken the Lease over."""
        lease = self.api.read_namespaced_lease(self.name, self.namespace)
        if lease.spec.holder_identity != self.holder:
            self.lost.set()
            return False
        lease.spec.renew_time = self.clock()
        self.version = self.api.replace_namespaced_lease(self.name, self.namespace, lease).metadata.resource_version
        return True

    def release(self) -> None:
        """Delete the Lease if it is still ours (a ``resourceVersion`` precondition guards a take-over)."""
        from kubernetes import client

        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity != self.holder:
                return
            self.api.delete_namespaced_lease(self.name, self.namespace, body=client.V1DeleteOptions(
                preconditions=client.V1Preconditions(resource_version=lease.metadata.resource_version)))
        except Exception as exc:  # noqa: BLE001 - a lease we cannot delete expires by itself
            if _status(exc) != 404:
                log.warning("run lock %s: could not release the lease %s/%s (%s: %s); it expires by itself "
                            "%d s after its last renewal", self.key, self.namespace, self.name,
                            type(exc).__name__, exc, self.lease_seconds)


class _Renewer(threading.Thread):
    def __init__(self, lease: RunLease) -> None:
        super().__init__(name=f"run-lock-{lease.key}", daemon=True)
        self.lease = lease
        self.stopping = threading.Event()

    def run(self) -> None:
        every = max(1.0, self.lease.lease_seconds / 3)
        while not self.stopping.wait(every):
            try:
                if not self.lease.renew():
                    log.error("run lock %s: another run took the lease over (this run did not renew it for %d s)",
                              self.lease.key, self.lease.lease_seconds)
                    return
            except Exception as exc:  # noqa: BLE001 - try again on the next tick, well before expiry
                log.warning("run lock %s: renewing the lease failed (%s: %s); retrying", self.lease.key,
                            type(exc).__name__, exc)


@contextlib.contextmanager
def run_lock(api_client: Any, namespace: str, key: str, *, holder: str, wait_seconds: float = 0.0,
             lease_seconds: int = LEASE_SECONDS) -> Iterator[RunLease]:
    """Hold the lock of ``key`` for the ``with`` block, renewing it; yields the ``RunLease``.

    Args:
        api_client: a ``kubernetes.client.ApiClient`` for the target cluster.
        namespace: where the Lease lives (the run's namespace).
        key: the lock key, normally ``lock_key(spec)``.
        holder: this run's identity, the flow run id.
        wait_seconds: how long to wait for a live holder to release; 0 refuses at once.
        lease_seconds: ``leaseDurationSeconds``: how long a dead holder keeps the lock after its last renewal.

    Raises:
        RunLocked: another live run holds the lock and did not release it within ``wait_seconds``.

    Example:
        >>> with run_lock(api, "default", "nightly-2024-10-01", holder=str(flow_run_id)):  # doctest: +SKIP
        ...     launch_and_wait()
    """
    from kubernetes import client

    lease = RunLease(client.CoordinationV1Api(api_client), namespace, key, holder, lease_seconds=lease_seconds)
    deadline = time.monotonic() + wait_seconds
    while (other := lease.try_acquire()) is not None:
        if time.monotonic() >= deadline:
            raise RunLocked(
                f"another run of the same spec (lock key {key!r}, flow run {other}) holds the Lease "
                f"{namespace}/{lease.name} in the target cluster; fix: wait for it to finish, or give this run a "
                f"different run_key. If that run crashed or was killed, its lock frees itself {lease_seconds} s "
                f"after its last renewal: then run this again and it re-attaches to the Job and cleans up")
        time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))  # polling a Lease: it has no release event
    renewer = _Renewer(lease)
    renewer.start()
    try:
        yield lease
    finally:
        renewer.stopping.set()
        renewer.join(10)
        lease.release()


@contextlib.contextmanager
def cluster_run_lock(spec: Any, cluster: Any, *, holder: str, wait_seconds: float = 0.0,
                     lease_seconds: int = LEASE_SECONDS) -> Iterator[RunLease]:
    """``run_lock`` for a ``BatchSpec`` on the cluster of a ``ClusterHandle``, in the run's namespace."""
    from tasks.cloud.context import stage_context

    with stage_context(spec) as ctx, run_lock(ctx.kube(cluster), cluster.namespace, lock_key(spec), holder=holder,
                                              wait_seconds=wait_seconds, lease_seconds=lease_seconds) as lease:
        yield lease
