"""Defaults a client sees on the object it just created, before any controller has touched it."""

from sandbox.k8s.admission import admit
from sandbox.k8s.store import Store


def test_a_new_job_has_an_empty_status_whatever_the_client_sent() -> None:
    # prefect-kubernetes reads job.status right after creating it; a real API server answers `status: {}`.
    store = Store(admission=admit)
    store.create("namespaces", {"metadata": {"name": "default"}})
    job = store.create("jobs", {
        "metadata": {"name": "j"},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
                                       "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}}},
        "status": {"succeeded": 5},
    }, namespace="default")
    assert job["status"] == {}
