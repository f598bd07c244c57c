"""Teardown against a cloud that fails now and then (issue 11): each deletion is retried by the one retry policy,
and what still cannot be deleted fails the run instead of passing silently.

Through the session sandbox: Kubernetes and NAS answer 5xx/429 to a seeded share of requests while teardown runs.
"""

from __future__ import annotations

from typing import Any

import pytest

from tasks.errors import TeardownIncomplete
from tasks.handles import TeardownItem, TeardownReport
from tasks.stages.teardown import teardown
from tests.integration.test_teardown import _spec, kube, run_objects, start_run  # noqa: F401


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.cloud import retry

    monkeypatch.setattr(retry, "DEFAULT_POLICY", retry.RetryPolicy(base_delay=0.02, max_delay=0.2))


def test_teardown_under_faults_deletes_everything_it_should(cloud: Any, make_spec: Any, kube: Any,  # noqa: F811
                                                            sandbox: Any, run_key: str) -> None:
    handle, core, batch = kube
    spec = _spec(make_spec, run_key, nas="always")
    volume, config, job = start_run(cloud, spec, kube, run_key)
    faults = sandbox.sandbox.faults
    faults.update({"error_rate": 0.4, "error_statuses": "500,503,429", "services": "k8s,nas", "seed": 5})
    try:
        report = teardown(spec, run_key=run_key, succeeded=True, cluster=handle, volume=volume, config=config,
                          job=job, core_v1=core, batch_v1=batch, nas=cloud.nas, cs=cloud.cs)
    finally:
        faults.update({"error_rate": 0.0, "services": "k8s,oss,cs,nas"})
    assert report.ok, report.lines()
    assert set(run_objects(core, batch, handle.namespace, run_key).values()) == {0}
    assert {i.kind for i in report.deleted} >= {"Job", "PersistentVolume", "PersistentVolumeClaim",
                                                "NasFileSystem"}


def test_a_leftover_is_an_error_naming_it_and_the_fix() -> None:
    report = TeardownReport(failed=[TeardownItem(kind="PersistentVolume", name="pv-1", why="CloudError: 503")])
    err = TeardownIncomplete(report, run_key="rk")
    assert "PersistentVolume pv-1" in str(err) and "run_key=rk" in str(err)
    assert err.report is report


def test_a_counted_leftover_counts_in_the_message() -> None:
    """Teardown reports 42,513 pods still going as one item: the message must say 42,513, not 1."""
    report = TeardownReport(failed=[
        TeardownItem(kind="Pod", name="p-0, p-1, p-10, p-100, p-1000 and 42,508 more", why="still present",
                     count=42513),
        TeardownItem(kind="PersistentVolume", name="pv-1", why="CloudError: 503")])
    message = str(TeardownIncomplete(report, run_key="rk"))
    assert message.startswith("teardown left 42,514 resource(s) behind: Pod p-0, p-1, p-10, p-100, p-1000 and "
                              "42,508 more: still present; PersistentVolume pv-1: CloudError: 503; fix:")
