"""One run per spec at a time: a lock on the run key, held in the Prefect server, that survives a crashed holder.

Why here and how: two runs of the same spec (the same ``run_key``, or the same parameters when no run key is
given) must not launch the Job twice at once — pods are billed and the work must run once. The lock is a Prefect
**global concurrency limit** of 1 slot named ``ask-batch-run-<key>``, created on first use:

- it lives in the Prefect server that every run of every worker already talks to, so no extra service is needed;
- the slot is held under a *lease* that the holder renews in the background; a holder that dies (SIGKILL, OOM,
  a lost host) stops renewing and the server frees the slot when the lease expires (``lease_seconds``), so a
  crash never leaves the spec locked for good;
- the second run either waits up to ``wait_seconds`` for the slot or is refused with ``RunLocked``.

The ``nightly`` deployment gets the same guarantee without code: its deployment concurrency limit of 1 with
``collision_strategy: CANCEL_NEW`` (prefect.yaml) makes an overlapping scheduled run Cancelled before it starts.
This module covers every other way in (ad-hoc runs, the UI form, ``python -m flows.ask_batch``).

Where the flow calls it (``flows/ask_batch.py``): right after the run key is known and before ``ensure_cluster``,
around everything including teardown, so a second run cannot start while the first is still deleting::

    with run_lock(lock_key(spec), wait_seconds=0):
        ...  # ensure_cluster ... teardown
"""

import contextlib
from collections.abc import Iterator
from typing import Any

from tasks.errors import RunLocked
from tasks.naming import content_hash

LIMIT_PREFIX = "ask-batch-run-"
ACQUIRE_ATTEMPTS = 5  # tries when acquiring timed out although nobody held the slot (a slow server)


def lock_key(spec: Any) -> str:
    """The lock key of a ``BatchSpec``: its ``run_key``, else a hash of all its parameters.

    Without a run key each flow run derives its own (from its id), so two runs of one spec would not collide by
    name; the content hash makes "the same spec" the same key anyway.
    """
    if getattr(spec, "run_key", None):
        return str(spec.run_key)
    return "spec-" + content_hash(spec.model_dump(mode="json", exclude={"run_key"}), length=16)


def limit_name(key: str) -> str:
    """The global concurrency limit that backs the lock of ``key``."""
    return f"{LIMIT_PREFIX}{key}"


def ensure_limit(name: str) -> None:
    """Create the 1-slot global concurrency limit ``name`` unless it exists (safe to race: a 409 is fine)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return
        except ObjectNotFound:
            pass
        with contextlib.suppress(ObjectAlreadyExists):
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


def active_slots(name: str) -> int:
    """How many holders the lock ``name`` has right now (0 or 1)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return int(client.read_global_concurrency_limit_by_name(name).active_slots or 0)


@contextlib.contextmanager
def run_lock(key: str, *, wait_seconds: float = 0.0, lease_seconds: float = 300.0) -> Iterator[str]:
    """Hold the lock of ``key`` for the ``with`` block; yields the limit's name.

    Args:
        key: the lock key, normally ``lock_key(spec)``.
        wait_seconds: how long to wait for a run holding it; 0 refuses at once (after one round trip).
        lease_seconds: how long the server keeps the slot after the holder stops renewing (crash recovery).

    Raises:
        RunLocked: another run holds the lock and did not release it within ``wait_seconds``.

    Example:
        >>> with run_lock("nightly-2024-10-01"):  # doctest: +SKIP
        ...     launch_and_wait()
    """
    from prefect.concurrency.sync import concurrency

    name = limit_name(key)
    ensure_limit(name)
    held = contextlib.ExitStack()
    for attempt in range(1, ACQUIRE_ATTEMPTS + 1):
        try:
            held.enter_context(concurrency(name, occupy=1, timeout_seconds=max(wait_seconds, 1.0),
                                           lease_duration=lease_seconds, strict=True,
                                           raise_on_lease_renewal_failure=False))
            break
        except TimeoutError as exc:
            # A timeout means "busy" only if someone holds the slot: a slow server (a loaded SQLite) can also
            # run out the clock, and refusing then would be a false alarm.
            if active_slots(name) or attempt == ACQUIRE_ATTEMPTS:
                raise RunLocked(
                    f"another run of the same spec (lock key {key!r}) is running; fix: wait for it to finish "
                    f"(see the global concurrency limit {name!r} in the Prefect UI; if that run crashed, its lock "
                    f"frees itself within {lease_seconds:.0f} s), or give this run a different run_key") from exc
    with held:
        yield name
