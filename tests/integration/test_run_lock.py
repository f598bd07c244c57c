"""The run lock: a Lease in the target cluster (the sandbox's), held by a flow run, taken over once it expires."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client

from tasks.cloud.cluster_access import connect
from tasks.cloud.run_lock import RunLease, lease_name, run_lock
from tasks.errors import RunLocked
from tasks.stages.cluster import ensure_cluster


@pytest.fixture
def api(cloud: Any, make_spec: Any) -> Any:
    spec = make_spec()
    handle = ensure_cluster(spec, run_key="it", cs=cloud.cs)
    api = connect(handle, spec, cs=cloud.cs)
    yield api
    api.close()


def lease_or_none(api: Any, key: str) -> Any:
    try:
        return client.CoordinationV1Api(api).read_namespaced_lease(lease_name(key), "default")
    except client.ApiException as exc:
        assert exc.status == 404
        return None


def test_a_second_run_is_refused_while_the_first_holds_and_gets_it_after_release(api: Any) -> None:
    key = "lock-" + uuid.uuid4().hex[:8]
    with run_lock(api, "default", key, holder="run-a"):
        assert lease_or_none(api, key).spec.holder_identity == "run-a"
        with pytest.raises(RunLocked) as refused, run_lock(api, "default", key, holder="run-b"):
            pass
        assert "run-a" in str(refused.value) and key in str(refused.value)
    assert lease_or_none(api, key) is None  # released: nothing left in the namespace
    with run_lock(api, "default", key, holder="run-b"):
        assert lease_or_none(api, key).spec.holder_identity == "run-b"


def test_a_dead_holders_lease_is_taken_over_once_expired_and_the_old_holder_learns_it(api: Any) -> None:
    key = "lock-" + uuid.uuid4().hex[:8]
    coordination = client.CoordinationV1Api(api)
    dead = RunLease(coordination, "default", key, "run-dead", lease_seconds=5)
    assert dead.try_acquire() is None  # acquired, and then never renewed: the holder was killed
    assert RunLease(coordination, "default", key, "run-next", lease_seconds=5).try_acquire() == "run-dead"
    later = RunLease(coordination, "default", key, "run-next", lease_seconds=5,
                     clock=lambda: datetime.now(UTC) + timedelta(seconds=6))
    assert later.try_acquire() is None
    lease = lease_or_none(api, key)
    assert lease.spec.holder_identity == "run-next" and lease.spec.lease_transitions == 1
    assert dead.renew() is False and dead.lost.is_set()
    dead.release()  # not its lease any more: must not delete it
    assert lease_or_none(api, key).spec.holder_identity == "run-next"
    later.release()
    assert lease_or_none(api, key) is None


def test_the_holder_keeps_renewing_while_it_lives(api: Any) -> None:
    key = "lock-" + uuid.uuid4().hex[:8]
    with run_lock(api, "default", key, holder="run-a", lease_seconds=3):
        first = lease_or_none(api, key).spec.renew_time
        deadline = time.monotonic() + 30
        while lease_or_none(api, key).spec.renew_time <= first:
            assert time.monotonic() < deadline, "the holder never renewed its lease"
            time.sleep(0.2)
        # renewed before expiry: a newcomer still sees a live holder
        assert RunLease(client.CoordinationV1Api(api), "default", key, "run-b").try_acquire() == "run-a"
