"""Teardown's wait for deleted pods to go, when they go slowly: the garbage collector deletes a big Job's pods a
batch at a time (on a real cluster kube-controller-manager's GC works under its client QPS, so 100,000 pods take
many minutes). Teardown waits as long as pods keep going and gives up only when none went for its wait time; what
is left is reported once, counted, not as one item per pod.

Pods are held by a finalizer of the test's own, released one at a time, as the GC would delete them."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from kubernetes import client

from tasks.cloud.cluster_access import connect
from tasks.naming import run_selector
from tasks.stages.cluster import ensure_cluster
from tasks.stages.teardown import _Recorder, record_left, wait_gone

HOLD = "ask-batch.test/hold"


@pytest.fixture
def core(cloud: Any, make_spec: Any) -> client.CoreV1Api:
    spec = make_spec()
    handle = ensure_cluster(spec, run_key="it", cs=cloud.cs)
    return client.CoreV1Api(connect(handle, spec, cs=cloud.cs))


def held_pods(core: client.CoreV1Api, run_key: str, n: int) -> list[str]:
    """``n`` pods of the run, deleted, each still there until its finalizer is removed."""
    labels = dict(kv.split("=", 1) for kv in run_selector(run_key).split(","))
    names = [f"held-{run_key}-{i}" for i in range(n)]
    for name in names:
        core.create_namespaced_pod("default", {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels, "finalizers": [HOLD]},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox",
                                                                "command": ["true"]}]}})
    for name in names:
        core.delete_namespaced_pod(name, "default", grace_period_seconds=0)
    return names


def release(core: client.CoreV1Api, names: list[str]) -> None:
    for name in names:
        core.patch_namespaced_pod(name, "default", {"metadata": {"finalizers": None}})


def test_pods_that_keep_going_are_waited_for_past_the_wait_time(core: client.CoreV1Api, run_key: str) -> None:
    names = held_pods(core, run_key, 8)

    def gc() -> None:  # one pod every 0.5 s: 4 s in all, never 1.5 s without one going
        for name in names:
            time.sleep(0.5)
            release(core, [name])

    releaser = threading.Thread(target=gc)
    releaser.start()
    started = time.monotonic()
    try:
        left = wait_gone(core.list_namespaced_pod, stall_seconds=1.5, what="pods", namespace="default",
                         label_selector=run_selector(run_key))
    finally:
        releaser.join()
    assert left == (0, [])
    assert time.monotonic() - started >= 3.5  # it waited for the last one, well past 1.5 s


def test_pods_that_stop_going_are_reported_once_counted_with_examples(core: client.CoreV1Api,
                                                                       run_key: str) -> None:
    names = held_pods(core, run_key, 12)
    try:
        release(core, names[:2])
        count, examples = wait_gone(core.list_namespaced_pod, stall_seconds=1.0, what="pods", namespace="default",
                                    label_selector=run_selector(run_key))
        assert count == 10 and len(examples) == 5 and set(examples) <= set(names[2:])
        rec = _Recorder()
        record_left(rec, "Pod", count, examples, "none went away in the last 1s after its Job was deleted")
        [item] = rec.report.failed
        assert item.kind == "Pod" and item.name == f"{', '.join(examples)} and 5 more" and item.count == 10
        assert item.why == "none went away in the last 1s after its Job was deleted"
    finally:
        release(core, names[2:])


def test_the_wait_time_counts_from_the_end_of_a_slow_list(core: client.CoreV1Api, run_key: str, sandbox: Any,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Listing 100,000 pods from a busy API server takes minutes: the stall clock must not run while the list is
    read (it did: the first list outlasted the wait time and 42,513 pods still being deleted were called left)."""
    from tasks.cloud import list_pages

    names = held_pods(core, run_key, 8)
    monkeypatch.setattr(list_pages, "PAGE_SIZE", 2)  # 4 pages, 0.4 s each: 1.6 s to list, past the 1.2 s wait time

    def gc() -> None:
        for name in names:
            time.sleep(0.5)
            release(core, [name])

    sandbox.sandbox.faults.update({"latency_ms": 400, "services": "k8s"})
    releaser = threading.Thread(target=gc)
    releaser.start()
    try:
        left = wait_gone(core.list_namespaced_pod, stall_seconds=1.2, what="pods", namespace="default",
                         label_selector=run_selector(run_key))
    finally:
        sandbox.sandbox.faults.update({"latency_ms": 0, "services": "k8s,oss,cs,nas"})
        releaser.join()
    assert left == (0, [])


def test_a_later_list_does_not_count_against_the_wait_time(core: client.CoreV1Api, run_key: str, sandbox: Any,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Every list after the first is slow too (100,000 pods from a busy API server) and watches end early (servers
    and load balancers cut them): a list answers for the moment it began, so only the time up to then counts. Here
    each pod goes just after a list was read, so only the next watch sees it go; the wait gave up after the second
    list, with 3 pods still going, and called them left."""
    from tasks.cloud import list_pages

    names = held_pods(core, run_key, 4)
    monkeypatch.setattr(list_pages, "PAGE_SIZE", 1)  # one page a pod at 0.4 s each: each list outlasts 1 s
    to_release = list(names)

    def listing(**kwargs: Any) -> Any:
        resp = core.list_namespaced_pod(**kwargs)
        if not kwargs.get("watch") and '"continue":' not in resp.data.decode() and to_release:
            release(core, [to_release.pop(0)])  # the list is read: one pod goes, seen only by the next watch
        return resp

    sandbox.sandbox.faults.update({"latency_ms": 400, "watch_drop_after_s": 0.2, "services": "k8s"})
    try:
        left = wait_gone(listing, stall_seconds=1.0, what="pods", namespace="default",
                         label_selector=run_selector(run_key))
    finally:
        sandbox.sandbox.faults.update({"latency_ms": 0, "watch_drop_after_s": 0, "services": "k8s,oss,cs,nas"})
        release(core, to_release)
    assert left == (0, [])
    assert not to_release


def test_a_list_whose_continue_token_expires_is_read_again_from_the_start(core: client.CoreV1Api, run_key: str,
                                                                           sandbox: Any,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A list of 100,000 pods read from a busy API server can outlast etcd's compaction (every 5 minutes): the
    next page answers 410 Expired. Teardown lists again from the start, as client-go's pager does
    (``FullListIfExpired``), rather than failing."""
    from urllib.parse import urlparse

    from tasks.cloud import list_pages

    names = held_pods(core, run_key, 3)
    port = urlparse(core.api_client.configuration.host).port
    [cluster] = [c for c in sandbox.sandbox.kube_clusters.values() if c.port == port]
    monkeypatch.setattr(list_pages, "PAGE_SIZE", 1)
    pages: list[str | None] = []

    def listing(**kwargs: Any) -> Any:
        pages.append(kwargs.get("_continue"))
        if not kwargs.get("_continue") or len([p for p in pages if p]) > 1:
            return core.list_namespaced_pod(**kwargs)
        release(core, names)  # they go while the list is read, and the list's snapshot is compacted away
        sandbox.run(lambda: setattr(cluster.store, "compaction_interval_s", 0.0))
        try:
            return core.list_namespaced_pod(**kwargs)
        finally:
            sandbox.run(lambda: setattr(cluster.store, "compaction_interval_s", 300.0))

    try:
        left = wait_gone(listing, stall_seconds=2, what="pods", namespace="default",
                         label_selector=run_selector(run_key))
    finally:
        if len(pages) < 2:
            release(core, names)
    assert left == (0, [])
    assert pages[:3] == [None, pages[1], None] and pages[1]  # the second page expired: from the start again


def test_waiting_for_pods_to_go_reads_their_metadata_only(core: client.CoreV1Api, run_key: str) -> None:
    """Teardown only counts what is left and names a few: it asks for metadata-only lists and watch events
    (``PartialObjectMetadata``, as client-go's metadata client does), not whole pods. At 100,000 pods a page of
    500 whole pods is ~2 MB of JSON and ~9 MB parsed, each time; their metadata is a fraction of that."""
    import json

    names = held_pods(core, run_key, 3)
    pages: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []

    def recording(**kwargs: Any) -> Any:
        resp = core.list_namespaced_pod(**kwargs)
        if kwargs.get("watch"):
            return _Recording(resp, events)
        pages.append(json.loads(resp.data))
        return resp

    releaser = threading.Timer(0.5, release, (core, names))
    releaser.start()
    try:
        left = wait_gone(recording, stall_seconds=5, what="pods", namespace="default",
                         label_selector=run_selector(run_key))
    finally:
        releaser.join()  # every pod released, whatever happened
    assert left == (0, [])
    assert pages and all(p["kind"] == "PartialObjectMetadataList" for p in pages), [p["kind"] for p in pages]
    assert pages[0]["items"] and all(set(item) == {"kind", "apiVersion", "metadata"} for item in pages[0]["items"])
    assert {item["metadata"]["name"] for item in pages[0]["items"]} == set(names)
    assert events and all(e["object"]["kind"] == "PartialObjectMetadata" and "spec" not in e["object"]
                          for e in events if e["type"] in ("ADDED", "MODIFIED", "DELETED"))


class _Recording:
    """A watch response that records each event line as it is read (``iter_resp_lines`` reads ``stream``)."""

    def __init__(self, resp: Any, events: list[dict[str, Any]]) -> None:
        self._resp, self._events = resp, events

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        import json

        buffer = b""
        for chunk in self._resp.stream(*args, **kwargs):
            yield chunk
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            self._events += [json.loads(line) for line in lines if line.strip()]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._resp, name)
