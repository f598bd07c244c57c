"""The sandbox Kubernetes API server against the unmodified official clients, over real HTTP.

One cluster (no controllers, no node: those are tested on their own) runs on its own event loop in a
background thread for the whole module; the sync `kubernetes` client, `kubernetes_asyncio` and kubectl
talk to it on 127.0.0.1. Objects under test get unique names so tests do not depend on each other.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from sandbox.k8s.cluster import KubeCluster

for _var in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
    os.environ.pop(_var, None)


class _BareCluster(KubeCluster):
    """The API server and store only: controllers and the virtual node are other tests' business."""

    def _controller_classes(self) -> list[type]:
        return []


class ApiClusterThread:
    """A cluster served from a background thread's event loop."""

    def __init__(self, data_dir: Path) -> None:
        self.cluster = _BareCluster("api-test", data_dir, token="test-token")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ApiClusterThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.cluster.start(), self.loop).result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.cluster.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the cluster's loop (the store is single-threaded)."""

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    @property
    def url(self) -> str:
        return self.cluster.url


@pytest.fixture(scope="module")
def api_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiClusterThread]:
    with ApiClusterThread(tmp_path_factory.mktemp("k8s-api")) as running:
        yield running


@pytest.fixture(scope="module")
def api_cluster_client(api_cluster: ApiClusterThread) -> Iterator[client.ApiClient]:
    config = client.Configuration(host=api_cluster.url)
    config.ssl_ca_cert = str(api_cluster.cluster.ca_file)
    config.api_key = {"authorization": "Bearer " + api_cluster.cluster.token}
    with client.ApiClient(config) as api:
        yield api


@pytest.fixture
def core(api_cluster_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_cluster_client)


@pytest.fixture
def batch(api_cluster_client: client.ApiClient) -> client.BatchV1Api:
    return client.BatchV1Api(api_cluster_client)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def http(cluster: ApiClusterThread, method: str, path: str, body: Any = None, *, token: str | None = "default",
         headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, dict[str, Any] | str, Any]:
    """A raw request; returns (status, parsed JSON or text, response headers)."""
    data = json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
    req = urllib.request.Request(cluster.url + path, data=data, method=method)
    if token == "default":
        token = cluster.cluster.token
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        req.add_header(key, value)
    context = ssl.create_default_context(cafile=str(cluster.cluster.ca_file))
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            raw, status, hdrs = resp.read(), resp.status, resp.headers
    except urllib.error.HTTPError as err:
        raw, status, hdrs = err.read(), err.code, err.headers
    text = raw.decode()
    try:
        return status, json.loads(text), hdrs
    except ValueError:
        return status, text, hdrs


def make_pod(name: str, containers: tuple[str, ...] = ("c",), labels: dict[str, str] | None = None) -> dict:
    return {"metadata": {"name": name, "labels": labels or {}},
            "spec": {"containers": [{"name": c, "image": "busybox:1.36", "command": ["true"]} for c in containers]}}


# ------------------------------------------------------------------ discovery, auth, faults


def test_discovery_version_and_openapi(api_cluster: ApiClusterThread, api_cluster_client: client.ApiClient) -> None:
    version = client.VersionApi(api_cluster_client).get_code()
    assert version.minor == "32" and version.git_version.startswith("v1.32.")
    core_resources = client.CoreV1Api(api_cluster_client).get_api_resources()
    assert core_resources.group_version == "v1"
    names = {r.name for r in core_resources.resources}
    assert {"pods", "pods/log", "pods/status", "configmaps", "namespaces"} <= names
    groups = client.ApisApi(api_cluster_client).get_api_versions()
    assert {g.name for g in groups.groups} >= {"batch", "storage.k8s.io"}
    _, root, _ = http(api_cluster, "GET", "/openapi/v3")
    url = root["paths"]["apis/batch/v1"]["serverRelativeURL"]
    _, doc, _ = http(api_cluster, "GET", url)
    patch_op = doc["paths"]["/apis/batch/v1/namespaces/{namespace}/jobs/{name}"]["patch"]
    assert patch_op["x-kubernetes-group-version-kind"] == {"group": "batch", "version": "v1", "kind": "Job"}
    assert any(p["name"] == "fieldValidation" for p in patch_op["parameters"])
    backoff = doc["components"]["schemas"]["io.k8s.api.batch.v1.JobSpec"]["properties"]["backoffLimit"]
    assert backoff["type"] == "integer"


def test_auth_and_request_count(api_cluster: ApiClusterThread) -> None:
    before = api_cluster.cluster.request_count
    status, body, _ = http(api_cluster, "GET", "/api/v1/namespaces", token=None)
    assert status == 401 and body["reason"] == "Unauthorized" and body["kind"] == "Status"
    status, _, _ = http(api_cluster, "GET", "/api/v1/namespaces", token="wrong")
    assert status == 401
    status, _, _ = http(api_cluster, "GET", "/healthz", token=None)
    assert status == 200
    assert api_cluster.cluster.request_count >= before + 3


def test_https_only_with_the_kubeconfig_ca(api_cluster: ApiClusterThread) -> None:
    cluster = api_cluster.cluster
    assert cluster.url.startswith("https://127.0.0.1:")
    cluster_entry = cluster.kubeconfig()["clusters"][0]["cluster"]
    assert base64.b64decode(cluster_entry["certificate-authority-data"]) == cluster.ca_file.read_bytes()
    assert (cluster.tls.ca_key.stat().st_mode & 0o777) == 0o600 and (cluster.tls.key.stat().st_mode & 0o777) == 0o600
    with pytest.raises(OSError):  # plain http is not spoken
        urllib.request.urlopen(f"http://127.0.0.1:{cluster.port}/healthz", timeout=5).read()
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):  # nor trusted without the CA
        urllib.request.urlopen(f"https://127.0.0.1:{cluster.port}/healthz", timeout=5,
                               context=ssl.create_default_context()).read()
    status, body, _ = http(api_cluster, "GET", "/api/v1/namespaces", token=None,
                           headers={"User-Agent": "kubectl/v1.32.0 (linux/amd64) kubernetes/abc"})
    assert status == 401  # no exception for kubectl: it sends the token over TLS


def test_injected_faults_answer_status(api_cluster: ApiClusterThread) -> None:
    faults = api_cluster.cluster.faults
    try:
        faults.update({"error_rate": 1.0, "error_statuses": "429"})
        status, body, headers = http(api_cluster, "GET", "/api/v1/namespaces/default/configmaps")
        assert status == 429 and body["reason"] == "TooManyRequests" and headers["Retry-After"] == "1"
        faults.update({"error_statuses": "503"})
        status, body, _ = http(api_cluster, "GET", "/api/v1/namespaces/default/configmaps")
        assert status == 503 and body["reason"] == "ServiceUnavailable"
    finally:
        faults.update({"error_rate": 0.0, "error_statuses": "500,503,429"})


# ------------------------------------------------------------------ CRUD and errors


def test_crud_conflicts_and_generate_name(core: client.CoreV1Api) -> None:
    name = unique("cm")
    created = core.create_namespaced_config_map("default", {"metadata": {"name": name}, "data": {"a": "1"}})
    assert created.metadata.uid and created.metadata.resource_version and created.metadata.namespace == "default"
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_config_map("default", {"metadata": {"name": name}})
    assert exc.value.status == 409 and json.loads(exc.value.body)["reason"] == "AlreadyExists"
    created.data["a"] = "2"
    updated = core.replace_namespaced_config_map(name, "default", created)
    assert updated.data == {"a": "2"}
    with pytest.raises(ApiException) as exc:  # created carries the old resourceVersion
        core.replace_namespaced_config_map(name, "default", created)
    assert exc.value.status == 409 and json.loads(exc.value.body)["reason"] == "Conflict"
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_config_map("nope", "default")
    body = json.loads(exc.value.body)
    assert exc.value.status == 404 and body["message"] == 'configmaps "nope" not found'
    generated = core.create_namespaced_config_map("default", {"metadata": {"generateName": "gen-"}})
    assert generated.metadata.name.startswith("gen-") and len(generated.metadata.name) == 9
    status = core.delete_namespaced_config_map(name, "default")
    assert status["status"] == "Success" and status["details"]["name"] == name


def test_invalid_objects_give_422_with_causes(core: client.CoreV1Api, batch: client.BatchV1Api,
                                             api_cluster: ApiClusterThread) -> None:
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_config_map("default", {"metadata": {"name": "Bad_Name"}})
    body = json.loads(exc.value.body)
    assert exc.value.status == 422 and body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    status, body, _ = http(api_cluster, "POST", "/api/v1/namespaces/default/pods",
                           {"metadata": {"name": unique("p")}, "spec": {"containers": [{}]}})
    assert status == 422
    fields = {c["field"] for c in body["details"]["causes"]}
    assert {"spec.containers[0].name", "spec.containers[0].image"} <= fields
    job = {"metadata": {"name": unique("j")},
           "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}
    with pytest.raises(ApiException) as exc:
        batch.create_namespaced_job("default", job)
    cause = json.loads(exc.value.body)["details"]["causes"][0]
    assert cause["field"] == "spec.template.spec.restartPolicy" and "Always" in cause["message"]
    with pytest.raises(ApiException) as exc:
        core.create_namespace({"metadata": {"name": "a.b"}})  # namespaces are DNS labels
    assert exc.value.status == 422


def test_immutable_configmap_and_secret_string_data(core: client.CoreV1Api) -> None:
    name = unique("imm")
    core.create_namespaced_config_map("default", {"metadata": {"name": name}, "data": {"a": "1"}, "immutable": True})
    with pytest.raises(ApiException) as exc:
        core.patch_namespaced_config_map(name, "default", {"data": {"a": "2"}})
    assert exc.value.status == 422 and "immutable" in json.loads(exc.value.body)["message"]
    core.patch_namespaced_config_map(name, "default", {"metadata": {"labels": {"ok": "yes"}}})
    secret = core.create_namespaced_secret("default", {"metadata": {"name": unique("s")},
                                                       "stringData": {"token": "hunter2"}})
    assert secret.data == {"token": base64.b64encode(b"hunter2").decode()} and secret.type == "Opaque"
    assert secret.string_data is None


def test_job_defaults_and_immutable_template(batch: client.BatchV1Api) -> None:
    name = unique("job")
    job = batch.create_namespaced_job("default", {
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
                                       "containers": [{"name": "c", "image": "busybox"}]}}}})
    spec = job.spec
    assert (spec.parallelism, spec.completions, spec.backoff_limit) == (1, 1, 6)
    assert spec.completion_mode == "NonIndexed" and spec.suspend is False
    assert spec.pod_replacement_policy == "TerminatingOrFailed"
    uid = job.metadata.uid
    assert spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": uid}
    labels = spec.template.metadata.labels
    assert labels["controller-uid"] == uid and labels["batch.kubernetes.io/job-name"] == name
    assert labels["job-name"] == name
    assert spec.template.spec.containers[0].image_pull_policy == "Always"
    per_index = batch.create_namespaced_job("default", {
        "metadata": {"name": unique("job")},
        "spec": {"completions": 2, "completionMode": "Indexed", "backoffLimitPerIndex": 1,
                 "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}})
    assert per_index.spec.backoff_limit == 2**31 - 1
    with pytest.raises(ApiException) as exc:
        batch.patch_namespaced_job(name, "default", {"spec": {"template": {"spec": {"containers": [
            {"name": "c", "image": "other"}]}}}})
    assert exc.value.status == 422
    assert json.loads(exc.value.body)["details"]["causes"][0]["field"] == "spec.template"


def test_pod_defaults(core: client.CoreV1Api) -> None:
    pod = core.create_namespaced_pod("default", make_pod(unique("pod")))
    assert pod.spec.restart_policy == "Always" and pod.spec.termination_grace_period_seconds == 30
    assert pod.spec.dns_policy == "ClusterFirst" and pod.spec.scheduler_name == "default-scheduler"
    assert pod.spec.service_account_name == "default" and pod.status.phase == "Pending"
    container = pod.spec.containers[0]
    assert container.image_pull_policy == "IfNotPresent"
    assert container.termination_message_path == "/dev/termination-log"


# ------------------------------------------------------------------ selectors, paging


def test_label_and_field_selectors(core: client.CoreV1Api) -> None:
    ns = unique("sel")
    core.create_namespace({"metadata": {"name": ns}})
    for name, labels in (("a", {"app": "web", "tier": "fe"}), ("b", {"app": "db"}), ("c", {"other": "x"})):
        core.create_namespaced_config_map(ns, {"metadata": {"name": name, "labels": labels}})

    def names(**kw: Any) -> list[str]:
        return sorted(i.metadata.name for i in core.list_namespaced_config_map(ns, **kw).items)

    assert names(label_selector="app=web") == ["a"]
    assert names(label_selector="app==db") == ["b"]
    assert names(label_selector="app!=web") == ["b", "c"]
    assert names(label_selector="app in (web,db)") == ["a", "b"]
    assert names(label_selector="app notin (web)") == ["b", "c"]
    assert names(label_selector="app") == ["a", "b"]
    assert names(label_selector="!app") == ["c"]
    assert names(label_selector="app=web,tier=fe") == ["a"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="metadata.name!=b") == ["a", "c"]
    all_ns = core.list_config_map_for_all_namespaces(field_selector=f"metadata.namespace={ns}")
    assert len(all_ns.items) == 3
    with pytest.raises(ApiException) as exc:
        core.list_namespaced_config_map(ns, field_selector="data.x=1")
    assert exc.value.status == 400 and "field label not supported" in exc.value.body
    pods = core.list_pod_for_all_namespaces(field_selector="status.phase=Pending")
    assert all(p.status.phase == "Pending" for p in pods.items)


def test_limit_and_continue(core: client.CoreV1Api, api_cluster: ApiClusterThread) -> None:
    ns = unique("page")
    core.create_namespace({"metadata": {"name": ns}})
    for i in range(7):
        core.create_namespaced_config_map(ns, {"metadata": {"name": f"cm-{i}"}})
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        page = core.list_namespaced_config_map(ns, limit=3, _continue=token)
        pages += 1
        seen += [i.metadata.name for i in page.items]
        token = page.metadata._continue
        if not token:
            break
        assert page.metadata.remaining_item_count > 0
    assert pages == 3 and seen == [f"cm-{i}" for i in range(7)]
    _, raw, _ = http(api_cluster, "GET", f"/api/v1/namespaces/{ns}/configmaps")
    assert raw["kind"] == "ConfigMapList" and raw["apiVersion"] == "v1" and raw["metadata"]["resourceVersion"]


def test_the_pages_of_a_list_are_one_snapshot(core: client.CoreV1Api) -> None:
    """Every page of a paged list is served from the first page's resourceVersion, which every page reports
    ("Retrieving large results sets in chunks", https://kubernetes.io/docs/reference/using-api/api-concepts/):
    what is created, changed or deleted between pages does not show, and a watch from that version replays it."""
    ns = unique("snap")
    core.create_namespace({"metadata": {"name": ns}})
    for i in range(6):
        core.create_namespaced_config_map(ns, {"metadata": {"name": f"cm-{i}"}, "data": {"v": "old"}})
    first = core.list_namespaced_config_map(ns, limit=2)
    rv = first.metadata.resource_version
    core.delete_namespaced_config_map("cm-3", ns)  # deleted after the first page: still listed
    core.patch_namespaced_config_map("cm-4", ns, {"data": {"v": "new"}})  # changed: listed as it was
    core.create_namespaced_config_map(ns, {"metadata": {"name": "cm-9"}})  # created: not listed
    items, token, versions = list(first.items), first.metadata._continue, [rv]
    while token:
        page = core.list_namespaced_config_map(ns, limit=2, _continue=token)
        items += page.items
        token, _ = page.metadata._continue, versions.append(page.metadata.resource_version)
    assert [i.metadata.name for i in items] == [f"cm-{i}" for i in range(6)]
    assert all(i.data == {"v": "old"} for i in items)
    assert set(versions) == {rv}
    watch = core.list_namespaced_config_map(ns, watch=True, resource_version=rv, timeout_seconds=1,
                                            _preload_content=False)
    events = [json.loads(line) for line in watch.data.splitlines() if line.strip()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("DELETED", "cm-3"), ("MODIFIED", "cm-4"), ("ADDED", "cm-9")]


# ------------------------------------------------------------------ watch


def test_watch_from_resource_version_sync(core: client.CoreV1Api) -> None:
    ns = unique("w")
    core.create_namespace({"metadata": {"name": ns}})
    start = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, {"metadata": {"name": "x"}})
    core.patch_namespaced_config_map("x", ns, {"data": {"k": "v"}})
    core.delete_namespaced_config_map("x", ns)
    events = []
    for event in watch.Watch().stream(core.list_namespaced_config_map, ns, resource_version=start,
                                      timeout_seconds=1):
        events.append((event["type"], event["object"].metadata.name))
    assert events == [("ADDED", "x"), ("MODIFIED", "x"), ("DELETED", "x")]


async def test_watch_with_kubernetes_asyncio(api_cluster: ApiClusterThread) -> None:
    from kubernetes_asyncio import client as aclient
    from kubernetes_asyncio import watch as awatch

    config = aclient.Configuration(host=api_cluster.url, api_key={"BearerToken": api_cluster.cluster.token},
                                   api_key_prefix={"BearerToken": "Bearer"})
    config.ssl_ca_cert = str(api_cluster.cluster.ca_file)
    async with aclient.ApiClient(config) as api:
        core = aclient.CoreV1Api(api)
        name = unique("aw")
        start = (await core.list_namespaced_config_map("default")).metadata.resource_version
        await core.create_namespaced_config_map("default", {"metadata": {"name": name}})
        await core.patch_namespaced_config_map(name, "default", {"data": {"a": "b"}})
        types = []
        async with awatch.Watch().stream(core.list_namespaced_config_map, "default", resource_version=start,
                                         field_selector=f"metadata.name={name}", timeout_seconds=1) as stream:
            async for event in stream:
                types.append(event["type"])
        assert types == ["ADDED", "MODIFIED"]


def test_a_continue_token_past_etcd_compaction_is_410_expired(api_cluster: ApiClusterThread,
                                                              core: client.CoreV1Api) -> None:
    """A list's later page can no longer be served once its version is compacted away (kube-apiserver compacts
    etcd every 5 minutes): 410 Expired, with the API server's message, and a new list works. Before that, pages
    come as of the first one even when the watch history no longer reaches back (not faithful there: read as
    the objects are now, see docs/sandbox.md)."""
    ns = unique("expire")
    core.create_namespace({"metadata": {"name": ns}})
    for i in range(3):
        core.create_namespaced_config_map(ns, {"metadata": {"name": f"cm-{i}"}})
    store = api_cluster.cluster.store
    saved = api_cluster.call(lambda: store.history)
    api_cluster.call(lambda: setattr(store, "history", deque(saved, maxlen=3)))
    try:
        first = core.list_namespaced_config_map(ns, limit=1)
        for i in range(5):
            core.patch_namespaced_config_map(f"cm-{i % 3}", ns, {"data": {"n": str(i)}})
        rest = core.list_namespaced_config_map(ns, limit=5, _continue=first.metadata._continue)
        assert [i.metadata.name for i in rest.items] == ["cm-1", "cm-2"]  # past the ring, still served
        api_cluster.call(lambda: setattr(store, "compaction_interval_s", 0.0))
        with pytest.raises(ApiException) as exc:
            core.list_namespaced_config_map(ns, limit=1, _continue=first.metadata._continue)
        assert exc.value.status == 410 and json.loads(exc.value.body)["reason"] == "Expired"
        assert "continue parameter is too old" in exc.value.body
        assert len(core.list_namespaced_config_map(ns).items) == 3
    finally:
        api_cluster.call(lambda: setattr(store, "compaction_interval_s", 300.0))
        api_cluster.call(lambda: setattr(store, "history", deque(store.history, maxlen=200_000)))


def test_watch_too_old_resource_version_is_410(api_cluster: ApiClusterThread, core: client.CoreV1Api) -> None:
    store = api_cluster.cluster.store
    saved = api_cluster.call(lambda: store.history)
    api_cluster.call(lambda: setattr(store, "history", deque(saved, maxlen=3)))
    try:
        start = core.list_namespaced_config_map("default").metadata.resource_version
        for _ in range(5):
            core.create_namespaced_config_map("default", {"metadata": {"generateName": "old-"}})
        with pytest.raises(ApiException) as exc:
            for _ in watch.Watch().stream(core.list_namespaced_config_map, "default", resource_version=start,
                                          timeout_seconds=1):
                pass
        assert exc.value.status == 410
        status, text, headers = http(api_cluster, "GET", f"/api/v1/configmaps?watch=1&resourceVersion={start}")
        assert status == 200 and headers["Content-Type"].startswith("application/json")
        event = json.loads(text) if isinstance(text, str) else text
        assert event["type"] == "ERROR" and event["object"]["code"] == 410
    finally:
        api_cluster.call(lambda: setattr(store, "history", deque(store.history, maxlen=200_000)))


def test_events_expire_after_the_event_ttl(api_cluster: ApiClusterThread, core: client.CoreV1Api) -> None:
    """Events live `--event-ttl` (kube-apiserver's default: 1 h) after their last write, then are deleted
    (etcd's lease expiry): gone from lists, and a DELETED event for watchers."""
    store = api_cluster.cluster.store
    assert store.ttl["events"] == 3600
    api_cluster.call(lambda: store.ttl.__setitem__("events", 0.5))
    try:
        start = core.list_namespaced_event("default").metadata.resource_version
        name = unique("ttl")
        core.create_namespaced_event("default", {
            "metadata": {"name": name}, "reason": "Tested", "message": "expires", "type": "Normal",
            "involvedObject": {"kind": "ConfigMap", "namespace": "default", "name": "x"}})
        deadline = time.monotonic() + 10
        while name in [e.metadata.name for e in core.list_namespaced_event("default").items]:
            assert time.monotonic() < deadline, "the event outlived its TTL"
            time.sleep(0.1)
        seen = [(event["type"], event["object"].metadata.name) for event in watch.Watch().stream(
            core.list_namespaced_event, "default", resource_version=start, timeout_seconds=1)]
        assert [t for t, n in seen if n == name] == ["ADDED", "DELETED"]
    finally:
        api_cluster.call(lambda: store.ttl.__setitem__("events", 3600))


def _watch_lines(cluster: ApiClusterThread, query: str) -> tuple[list[dict], float]:
    began = time.monotonic()
    status, text, _ = http(cluster, "GET", f"/api/v1/namespaces/default/configmaps?{query}")
    assert status == 200
    raw = text if isinstance(text, str) else json.dumps(text)
    return [json.loads(line) for line in raw.splitlines() if line.strip()], time.monotonic() - began


def test_watch_timeout_bookmarks_and_fault_deadline(api_cluster: ApiClusterThread, core: client.CoreV1Api) -> None:
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    events, took = _watch_lines(api_cluster, f"watch=true&resourceVersion={rv}&timeoutSeconds=1"
                                             "&allowWatchBookmarks=true")
    assert 0.8 < took < 3
    assert events[-1]["type"] == "BOOKMARK" and int(events[-1]["object"]["metadata"]["resourceVersion"]) >= int(rv)
    api_cluster.cluster.faults.update({"watch_drop_after_s": 0.3})
    try:
        _, took = _watch_lines(api_cluster, f"watch=True&resourceVersion={rv}&timeoutSeconds=30")
        assert took < 2
    finally:
        api_cluster.cluster.faults.update({"watch_drop_after_s": 0.0})
    events, _ = _watch_lines(api_cluster, "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
                                          "&allowWatchBookmarks=true&timeoutSeconds=1")
    marker = [e for e in events if e["type"] == "BOOKMARK" and e["object"]["metadata"].get("annotations")]
    assert marker and events.index(marker[0]) == len([e for e in events if e["type"] == "ADDED"])


def test_table_output(api_cluster: ApiClusterThread, core: client.CoreV1Api) -> None:
    core.create_namespaced_pod("default", make_pod(unique("tbl")))
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    status, table, _ = http(api_cluster, "GET", "/api/v1/namespaces/default/pods", headers={"Accept": accept})
    assert status == 200 and table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"] if c["priority"] == 0] == [
        "Name", "Ready", "Status", "Restarts", "Age"]
    assert table["rows"][0]["cells"][1] == "0/1" and table["rows"][0]["cells"][2] == "Pending"
    _, jobs, _ = http(api_cluster, "GET", "/apis/batch/v1/jobs", headers={"Accept": accept})
    assert [c["name"] for c in jobs["columnDefinitions"]][:5] == ["Name", "Status", "Completions", "Duration", "Age"]


def test_metadata_only_reads(api_cluster: ApiClusterThread, core: client.CoreV1Api) -> None:
    """``as=PartialObjectMetadataList`` / ``as=PartialObjectMetadata`` (client-go's metadata client): each object's
    metadata only, paged like any list, and asked for through the official client's ``_headers``."""
    prefix = unique("meta")
    for i in range(3):
        core.create_namespaced_pod("default", make_pod(f"{prefix}-{i}"))
    accept = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
    status, first, _ = http(api_cluster, "GET", "/api/v1/namespaces/default/pods?limit=2",
                            headers={"Accept": accept})
    assert status == 200 and (first["kind"], first["apiVersion"]) == ("PartialObjectMetadataList", "meta.k8s.io/v1")
    assert len(first["items"]) == 2 and first["metadata"]["continue"]
    assert all(set(item) == {"kind", "apiVersion", "metadata"} and item["kind"] == "PartialObjectMetadata"
               for item in first["items"])
    token = urllib.parse.quote(first["metadata"]["continue"])
    _, rest, _ = http(api_cluster, "GET", f"/api/v1/namespaces/default/pods?limit=500&continue={token}",
                      headers={"Accept": accept})
    names = {i["metadata"]["name"] for i in first["items"] + rest["items"]}
    assert {f"{prefix}-{i}" for i in range(3)} <= names
    _, one, _ = http(api_cluster, "GET", f"/api/v1/namespaces/default/pods/{prefix}-0", headers={
        "Accept": "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"})
    assert one["kind"] == "PartialObjectMetadata" and one["metadata"]["name"] == f"{prefix}-0" and "spec" not in one
    # Without the parameters, or with those of the other form, the whole objects as always.
    _, plain, _ = http(api_cluster, "GET", "/api/v1/namespaces/default/pods", headers={"Accept": "application/json"})
    assert plain["kind"] == "PodList" and "spec" in plain["items"][0]
    listed = core.list_namespaced_pod("default", _preload_content=False, _headers={"Accept": accept})
    assert json.loads(listed.data)["kind"] == "PartialObjectMetadataList"  # the official client's own header path


# ------------------------------------------------------------------ patch, dry run, status, delete


def test_patch_types(core: client.CoreV1Api, api_cluster: ApiClusterThread) -> None:
    name = unique("pp")
    core.create_namespaced_pod("default", make_pod(name, ("a", "b")))
    patched = core.patch_namespaced_pod(name, "default", {"spec": {"containers": [
        {"name": "b", "image": "busybox:2"}]}})  # strategic: merged into the list by name
    by_name = {c.name: c for c in patched.spec.containers}
    assert set(by_name) == {"a", "b"} and by_name["b"].image == "busybox:2" and by_name["a"].image == "busybox:1.36"
    patched = core.patch_namespaced_pod(name, "default", {"metadata": {"finalizers": ["x/y"]}})
    patched = core.patch_namespaced_pod(name, "default", {"metadata": {"finalizers": ["x/z"]}})
    assert patched.metadata.finalizers == ["x/y", "x/z"]
    status, body, _ = http(api_cluster, "PATCH", f"/api/v1/namespaces/default/pods/{name}",
                           {"metadata": {"labels": {"m": "1"}, "finalizers": None}},
                           headers={"Content-Type": "application/merge-patch+json"})
    assert status == 200 and body["metadata"]["labels"] == {"m": "1"} and "finalizers" not in body["metadata"]
    status, body, _ = http(api_cluster, "PATCH", f"/api/v1/namespaces/default/pods/{name}",
                           [{"op": "replace", "path": "/metadata/labels/m", "value": "2"}],
                           headers={"Content-Type": "application/json-patch+json"})
    assert status == 200 and body["metadata"]["labels"] == {"m": "2"}
    status, body, _ = http(api_cluster, "PATCH", f"/api/v1/namespaces/default/pods/{name}",
                           [{"op": "test", "path": "/metadata/labels/m", "value": "9"}],
                           headers={"Content-Type": "application/json-patch+json"})
    assert status == 422
    with pytest.raises(ApiException) as exc:
        core.patch_namespaced_pod(name, "default", {"spec": {"restartPolicy": "Never"}})
    assert exc.value.status == 422


def test_field_validation(api_cluster: ApiClusterThread) -> None:
    body = {"metadata": {"name": unique("fv")}, "data": {"a": "b"}, "bogus": 1}
    status, err, _ = http(api_cluster, "POST", "/api/v1/namespaces/default/configmaps?fieldValidation=Strict", body)
    assert status == 400 and 'unknown field "bogus"' in err["message"]
    status, created, headers = http(api_cluster, "POST", "/api/v1/namespaces/default/configmaps", body)
    assert status == 201 and "bogus" not in created and "unknown field" in headers["Warning"]
    status, err, _ = http(api_cluster, "POST", "/api/v1/namespaces/default/configmaps",
                          {"metadata": {"name": unique("fv")}, "data": {"a": 5}})
    assert status == 400


def test_dry_run_changes_nothing(core: client.CoreV1Api) -> None:
    name = unique("dry")
    made = core.create_namespaced_config_map("default", {"metadata": {"name": name}, "data": {"a": "1"}},
                                             dry_run="All")
    assert made.metadata.name == name
    with pytest.raises(ApiException):
        core.read_namespaced_config_map(name, "default")
    core.create_namespaced_config_map("default", {"metadata": {"name": name}, "data": {"a": "1"}})
    core.patch_namespaced_config_map(name, "default", {"data": {"a": "2"}}, dry_run="All")
    core.delete_namespaced_config_map(name, "default", dry_run="All")
    assert core.read_namespaced_config_map(name, "default").data == {"a": "1"}


def test_status_subresource(batch: client.BatchV1Api, api_cluster: ApiClusterThread) -> None:
    name = unique("st")
    batch.create_namespaced_job("default", {"metadata": {"name": name}, "spec": {"template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}})
    job = batch.patch_namespaced_job_status(name, "default", {"status": {"active": 1}})
    assert job.status.active == 1
    job = batch.patch_namespaced_job(name, "default", {"status": {"active": 5}, "metadata": {"labels": {"l": "1"}}})
    assert job.status.active == 1 and job.metadata.labels["l"] == "1"
    assert batch.read_namespaced_job_status(name, "default").status.active == 1
    job.status.succeeded = 1
    assert batch.replace_namespaced_job_status(name, "default", job).status.succeeded == 1
    status, _, _ = http(api_cluster, "GET", f"/api/v1/namespaces/default/configmaps/{name}/status")
    assert status == 404


def test_delete_orphan_and_job_warning(core: client.CoreV1Api, batch: client.BatchV1Api,
                                       api_cluster: ApiClusterThread) -> None:
    owner = core.create_namespaced_config_map("default", {"metadata": {"name": unique("owner")}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": owner.metadata.name, "uid": owner.metadata.uid}
    dep = core.create_namespaced_config_map("default", {"metadata": {"name": unique("dep"),
                                                                     "ownerReferences": [ref]}})
    core.delete_namespaced_config_map(owner.metadata.name, "default", propagation_policy="Orphan")
    assert core.read_namespaced_config_map(dep.metadata.name, "default").metadata.owner_references is None
    name = unique("dj")
    batch.create_namespaced_job("default", {"metadata": {"name": name}, "spec": {"template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}})
    status, body, headers = http(api_cluster, "DELETE", f"/apis/batch/v1/namespaces/default/jobs/{name}")
    assert status == 200 and body["status"] == "Success"
    assert "child pods are preserved by default" in headers["Warning"]
    precondition = {"preconditions": {"uid": "not-the-uid"}}
    status, body, _ = http(api_cluster, "DELETE", f"/api/v1/namespaces/default/configmaps/{dep.metadata.name}",
                           precondition)
    assert status == 409
    pod = core.create_namespaced_pod("default", make_pod(unique("dp")))
    deleted = core.delete_namespaced_pod(pod.metadata.name, "default")
    assert (deleted["kind"] if isinstance(deleted, dict) else deleted.kind) == "Pod"
    ns = unique("dc")
    core.create_namespace({"metadata": {"name": ns}})
    for i in range(3):
        core.create_namespaced_config_map(ns, {"metadata": {"name": f"x{i}", "labels": {"g": "1" if i else "0"}}})
    core.delete_collection_namespaced_config_map(ns, label_selector="g=1")
    assert [i.metadata.name for i in core.list_namespaced_config_map(ns).items] == ["x0"]


# ------------------------------------------------------------------ pods/log


def _set_container_state(cluster: ApiClusterThread, name: str, state: dict[str, Any]) -> None:
    def update() -> None:
        def fn(pod: dict[str, Any]) -> None:
            pod["status"]["containerStatuses"] = [{"name": "c", "state": state, "ready": "running" in state,
                                                   "restartCount": 0, "image": "busybox", "imageID": ""}]
        cluster.cluster.store.mutate("pods", "default", name, fn, subresource="status")

    cluster.call(update)


def test_pod_logs(api_cluster: ApiClusterThread, core: client.CoreV1Api) -> None:
    name = unique("log")
    pod = core.create_namespaced_pod("default", make_pod(name))
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_pod_log(name, "default")
    assert exc.value.status == 400
    assert json.loads(exc.value.body)["message"] == (
        f'container "c" in pod "{name}" is waiting to start: ContainerCreating')
    log_file = api_cluster.cluster.data_dir / "pods" / pod.metadata.uid / "logs" / "c.log"
    log_file.parent.mkdir(parents=True)
    log_file.write_text("one\ntwo\nthree\n")
    _set_container_state(api_cluster, name, {"running": {"startedAt": "2026-01-01T00:00:00Z"}})
    assert core.read_namespaced_pod_log(name, "default") == "one\ntwo\nthree\n"
    assert core.read_namespaced_pod_log(name, "default", tail_lines=1) == "three\n"
    assert core.read_namespaced_pod_log(name, "default", limit_bytes=5) == "one\nt"
    stamped = core.read_namespaced_pod_log(name, "default", timestamps=True).splitlines()
    assert stamped[0].endswith("Z one") and len(stamped) == 3

    def writer() -> None:
        time.sleep(0.3)
        with log_file.open("a") as fh:
            fh.write("four\n")
        time.sleep(0.3)
        _set_container_state(api_cluster, name, {"terminated": {"exitCode": 0, "reason": "Completed"}})

    threading.Thread(target=writer).start()
    resp = core.read_namespaced_pod_log(name, "default", follow=True, _preload_content=False)
    assert resp.data.decode() == "one\ntwo\nthree\nfour\n"
    multi = unique("multi")
    core.create_namespaced_pod("default", make_pod(multi, ("a", "b")))
    with pytest.raises(ApiException) as exc:
        core.read_namespaced_pod_log(multi, "default")
    assert json.loads(exc.value.body)["message"] == (
        f"a container name must be specified for pod {multi}, choose one of: [a b]")


# ------------------------------------------------------------------ kubectl


def _kubectl_binaries() -> list[str]:
    found = []
    venv_kubectl = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "kubectl"
    for candidate in (shutil.which("kubectl"), str(venv_kubectl)):
        if candidate and Path(candidate).exists() and candidate not in found:
            found.append(candidate)
    return found


@pytest.fixture(scope="module")
def api_cluster_kubeconfig(api_cluster: ApiClusterThread, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("kube") / "config"
    path.write_text(yaml.safe_dump(api_cluster.cluster.kubeconfig()))
    return path


@pytest.mark.parametrize("binary", _kubectl_binaries() or [None])
def test_kubectl(binary: str | None, api_cluster_kubeconfig: Path, tmp_path: Path) -> None:
    if binary is None:
        pytest.skip("no kubectl binary")
    env = {**os.environ, "KUBECONFIG": str(api_cluster_kubeconfig), "HOME": str(tmp_path)}

    def kubectl(*args: str, check: bool = True, timeout: float = 20) -> str:
        proc = subprocess.run([binary, *args], env=env, capture_output=True, text=True, timeout=timeout)
        if check:
            assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
        return proc.stdout + proc.stderr

    ns = unique("kc")
    assert f"namespace/{ns} created" in kubectl("create", "namespace", ns)  # protobuf body
    assert "created" in kubectl("-n", ns, "create", "configmap", "cfg", "--from-literal=k=v")
    assert "created" in kubectl("-n", ns, "create", "secret", "generic", "sec", "--from-literal=p=s3cret")
    secret = json.loads(kubectl("-n", ns, "get", "secret", "sec", "-o", "json"))
    assert base64.b64decode(secret["data"]["p"]) == b"s3cret" and secret["type"] == "Opaque"
    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump_all([
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "job1"},
         "spec": {"template": {"spec": {"restartPolicy": "Never",
                                        "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}}}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"a": "1"}}]))
    out = kubectl("-n", ns, "apply", "-f", str(manifest))
    assert "job.batch/job1 created" in out and "configmap/applied created" in out
    assert "unchanged" in kubectl("-n", ns, "apply", "-f", str(manifest))
    table = kubectl("-n", ns, "get", "jobs,configmaps")
    assert "job1" in table and "COMPLETIONS" in table and "applied" in table
    assert "labeled" in kubectl("-n", ns, "label", "configmap", "cfg", "team=a")
    assert "cfg" in kubectl("-n", ns, "get", "cm", "-l", "team in (a,b)", "-o", "name")
    assert "patched" in kubectl("-n", ns, "patch", "configmap", "cfg", "-p", '{"data":{"k":"w"}}')
    assert "patched" in kubectl("-n", ns, "patch", "configmap", "cfg", "--type=json",
                                "-p", '[{"op":"add","path":"/data/n","value":"1"}]')
    assert "condition met" in kubectl("-n", ns, "wait", "--for=jsonpath={.data.k}=w", "configmap/cfg",
                                      "--timeout=5s")
    watcher = subprocess.Popen([binary, "-n", ns, "get", "configmaps", "-w"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    kubectl("-n", ns, "patch", "configmap", "applied", "-p", '{"data":{"b":"2"}}')
    time.sleep(0.7)
    watcher.terminate()
    seen, _ = watcher.communicate(timeout=5)
    assert seen.count("applied") >= 2
    explain = kubectl("explain", "job.spec.backoffLimit")
    assert "backoffLimit" in explain and "integer" in explain
    resources = kubectl("api-resources")
    assert "configmaps" in resources and "jobs" in resources
    assert "deleted" in kubectl("-n", ns, "delete", "configmap", "cfg")
    assert "NotFound" in kubectl("-n", ns, "get", "configmap", "cfg", check=False)


def test_strategic_merge_by_schema() -> None:
    from sandbox.k8s import openapi
    from sandbox.k8s.patch import strategic_merge
    from sandbox.k8s.resources import BY_PLURAL

    schema = openapi.schema_for(BY_PLURAL["pods"])
    pod = {"metadata": {"finalizers": ["a"], "ownerReferences": [{"uid": "1", "name": "x"}]},
           "spec": {"containers": [{"name": "a", "image": "i", "env": [{"name": "X", "value": "1"}]},
                                   {"name": "b", "image": "j"}],
                    "volumes": [{"name": "v", "emptyDir": {}}]},
           "status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    patch = {"metadata": {"finalizers": ["b"], "ownerReferences": [{"uid": "1", "name": "y"}]},
             "spec": {"containers": [{"name": "a", "env": [{"name": "Y", "value": "2"}]},
                                     {"name": "b", "$patch": "delete"}],
                      "volumes": [{"$patch": "replace"}, {"name": "w", "emptyDir": {}}]},
             "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    out = strategic_merge(pod, patch, schema)
    assert out["metadata"]["finalizers"] == ["a", "b"]
    assert out["metadata"]["ownerReferences"] == [{"uid": "1", "name": "y"}]
    assert [c["name"] for c in out["spec"]["containers"]] == ["a"]
    assert [e["name"] for e in out["spec"]["containers"][0]["env"]] == ["X", "Y"]
    assert out["spec"]["volumes"] == [{"name": "w", "emptyDir": {}}]
    assert out["status"]["conditions"] == [{"type": "Ready", "status": "True"}]
    assert pod["spec"]["containers"][1]["name"] == "b"  # the original is untouched


def test_leases_create_conflict_optimistic_update_and_guarded_delete(api_cluster_client: client.ApiClient) -> None:
    """coordination.k8s.io/v1 Leases, as leader election and ask-batch's run lock use them: a second create of one
    name is 409, an update carrying a stale resourceVersion is 409 (optimistic concurrency), a delete with a stale
    resourceVersion precondition is 409 (https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/lease-v1/).
    """
    from datetime import datetime

    leases = client.CoordinationV1Api(api_cluster_client)
    name = unique("lease")
    now = datetime.now(UTC)
    body = client.V1Lease(metadata=client.V1ObjectMeta(name=name),
                          spec=client.V1LeaseSpec(holder_identity="a", lease_duration_seconds=15,
                                                  acquire_time=now, renew_time=now, lease_transitions=0))
    created = leases.create_namespaced_lease("default", body)
    assert created.spec.holder_identity == "a" and created.spec.lease_duration_seconds == 15
    assert created.spec.renew_time is not None
    with pytest.raises(ApiException) as exc:
        leases.create_namespaced_lease("default", body)
    assert exc.value.status == 409
    # Holder b takes it over on the version it read; a's update on the same, now stale, version loses.
    first = leases.read_namespaced_lease(name, "default")
    first.spec.holder_identity = "b"
    taken = leases.replace_namespaced_lease(name, "default", first)
    assert taken.spec.holder_identity == "b" and taken.metadata.resource_version != first.metadata.resource_version
    first.spec.holder_identity = "a"
    with pytest.raises(ApiException) as exc:
        leases.replace_namespaced_lease(name, "default", first)
    assert exc.value.status == 409
    assert name in [item.metadata.name for item in leases.list_namespaced_lease("default").items]
    with pytest.raises(ApiException) as exc:
        leases.delete_namespaced_lease(name, "default", body=client.V1DeleteOptions(
            preconditions=client.V1Preconditions(resource_version=first.metadata.resource_version)))
    assert exc.value.status == 409
    leases.delete_namespaced_lease(name, "default", body=client.V1DeleteOptions(
        preconditions=client.V1Preconditions(resource_version=taken.metadata.resource_version)))
    with pytest.raises(ApiException) as exc:
        leases.read_namespaced_lease(name, "default")
    assert exc.value.status == 404


def test_watch_chunks_stay_small_when_events_pile_up(api_cluster: ApiClusterThread, core: client.CoreV1Api) -> None:
    """A watch that has many events to send at once sends them in chunks of about one event, as kube-apiserver's
    Go HTTP server does (its 2 KiB response buffer goes out as one chunk; an event larger than that is a chunk of
    its own): a client reading the stream a chunk at a time (kubernetes.watch.iter_resp_lines) then holds one
    event at a time. Before, every queued event went out as one chunk (8 MB for 500 deleted pods)."""
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    filler = "x" * 1500
    for i in range(200):
        core.create_namespaced_config_map("default", {"metadata": {"name": f"chunky-{i}"}, "data": {"v": filler}})
    resp = core.list_namespaced_config_map("default", watch=True, resource_version=rv, timeout_seconds=1,
                                           _preload_content=False)
    chunks = [len(c) for c in resp.stream(amt=None, decode_content=False)]
    resp.release_conn()
    assert sum(chunks) > 200 * 1500
    assert max(chunks) <= 8192, sorted(chunks)[-3:]
    for i in range(200):
        core.delete_namespaced_config_map(f"chunky-{i}", "default")
