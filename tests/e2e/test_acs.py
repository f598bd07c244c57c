"""The whole pipeline on an ACS cluster of the sandbox, with deployments/example-acs.yaml, as a new account runs it.

The first run creates the ACS cluster through CS (profile Acs), the second finds it again. Pods carry ACS compute
labels and never an ECI annotation; the sandbox's ACS admission and BestEffort preemption are exercised through
the flow: a refused compute class fails the run before any Job exists, and reclaimed best-effort pods are retried
by the Job and counted in the ledger.
"""

import json
import threading
import time
from pathlib import Path
from typing import Any

from examples.workload.shard_hash import compute_shard
from flows.ask_batch import ask_batch
from flows.cli import build_spec
from tests.e2e.conftest import REPO, example_sets
from tests.e2e.test_flow import flow_artifacts, flow_logs

EXAMPLE_ACS = REPO / "deployments" / "example-acs.yaml"


def run_acs(sandbox_dir: Path, workdir: Path, run_key: str, *extra: str, **settings: Any) -> tuple[Any, Any]:
    spec = build_spec(EXAMPLE_ACS, example_sets(workdir, run_key, **settings) + list(extra), sandbox_dir)
    return spec, ask_batch(spec, return_state=True)


def acs_clusters(spec: Any) -> list[dict[str, Any]]:
    from tasks.cloud.cluster_access import list_clusters
    from tasks.cloud.context import cs_for

    return [c for c in list_clusters(cs_for(spec), region=spec.target.region, name=spec.cluster.acs.name)
            if c["name"] == spec.cluster.acs.name and c["profile"] == "Acs"]


def job_pods(spec: Any, run_key: str) -> list[dict[str, Any]]:
    from kubernetes import client

    from tasks.cloud.cluster_access import connect, locate_cluster
    from tasks.cloud.context import cs_for

    api = connect(locate_cluster(spec, cs=cs_for(spec)), spec, cs=cs_for(spec))
    try:
        pods = client.CoreV1Api(api).list_namespaced_pod(spec.cluster.namespace,
                                                         label_selector=f"ask-batch.io/run={run_key}")
        return [api.sanitize_for_serialization(p) for p in pods.items]
    finally:
        api.close()


def test_example_acs_creates_the_acs_cluster_then_finds_it_again(sandbox: Any, sandbox_dir: Path,
                                                                 workdir: Path) -> None:
    spec = build_spec(EXAMPLE_ACS, example_sets(workdir, "e2e-acs-1"), sandbox_dir)
    assert acs_clusters(spec) == []

    spec, first = run_acs(sandbox_dir, workdir, "e2e-acs-1")
    assert first.is_completed(), first.message
    logs = flow_logs(first.state_details.flow_run_id)
    assert any("ACS cluster ask-batch-acs-demo not found: creating it" in line for line in logs)
    [cluster] = acs_clusters(spec)
    assert sandbox.sandbox.kube_clusters[cluster["cluster_id"]].acs is not None  # the sandbox made it an ACS one
    results = sorted((workdir / "outputs" / "ask-batch-e2e-acs-1").glob("index-*/result.json"))
    assert len(results) == 10
    for path in results:
        result = json.loads(path.read_text())
        assert result["sha256"] == compute_shard("ask-batch-demo", result["index"], 1 << 20)["sha256"]
    [summary] = [a for a in flow_artifacts(first.state_details.flow_run_id) if "Estimated cost" in a]
    assert "(ACS)" in summary and "cs/product-overview/product-billing-rules" in summary

    # second run, Job kept so its pods can be read: the cluster is found, not created again
    spec, second = run_acs(sandbox_dir, workdir, "e2e-acs-2", "teardown.job=never")
    assert second.is_completed(), second.message
    logs = flow_logs(second.state_details.flow_run_id)
    assert any(f"ACS cluster ask-batch-acs-demo found: {cluster['cluster_id']}" in line for line in logs)
    assert not any("creating it" in line for line in logs)
    assert [c["cluster_id"] for c in acs_clusters(spec)] == [cluster["cluster_id"]]
    pods = job_pods(spec, "e2e-acs-2")
    assert len(pods) == 10
    for pod in pods:
        labels, annotations = pod["metadata"]["labels"], pod["metadata"].get("annotations") or {}
        assert labels["alibabacloud.com/compute-class"] == "general-purpose"
        assert labels["alibabacloud.com/compute-qos"] == "default"
        assert annotations["alibabacloud.com/pod-required-spec"] == "1-2Gi"
        assert annotations["alibabacloud.com/pod-use-spec"] == "1-2Gi"  # what ACS billed it at
        assert not [k for k in annotations if k.startswith("k8s.aliyun.com/")]


def test_pod_refused_by_acs_admission_fails_the_run_before_any_job(sandbox_dir: Path, workdir: Path) -> None:
    started = time.monotonic()
    spec, state = run_acs(sandbox_dir, workdir, "e2e-acs-refused",
                          "job.labels={alibabacloud.com/compute-class: turbo}")
    assert state.is_failed()
    message = state.message or ""
    logs = "\n".join(flow_logs(state.state_details.flow_run_id))
    text = message + logs
    assert 'alibabacloud.com/compute-class="turbo"' in text
    assert "general-purpose, performance, gpu, gpu-hpn" in text
    assert time.monotonic() - started < spec.job.active_deadline_seconds
    assert job_pods(spec, "e2e-acs-refused") == []


def test_best_effort_reclaims_are_retried_and_counted_in_the_ledger(sandbox: Any, sandbox_dir: Path,
                                                                   workdir: Path) -> None:
    """BestEffort pods preempted by the sandbox knob: the Job replaces them, the run succeeds, the ledger counts.

    The Job-wide backoff_limit is raised so that it does not cap the per-index budget (reclaims not spending the
    code-failure budget is issue 9's podFailurePolicy work).
    """
    faults = sandbox.sandbox.faults
    preempted: list[str] = []

    def reclaim_first_wave() -> None:
        # preempt pods until the first preemption is seen, then stop (replacements run to the end)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not preempted:
            preempted.extend(sandbox.run(preemption_events))  # the store lives on the sandbox's loop
            time.sleep(0.05)
        sandbox.run(faults.update, {"spot_reclaim_after_s": 0.0})

    def preemption_events() -> list[str]:
        return [ev["involvedObject"]["name"] for cluster in sandbox.sandbox.kube_clusters.values()
                for ev in cluster.store.iter_objects("events")
                if ev["reason"] == "BestEffortPreempting" and "e2e-acs-be" in ev["involvedObject"]["name"]]

    sandbox.run(faults.update, {"spot_reclaim_after_s": 1.0})
    watcher = threading.Thread(target=reclaim_first_wave, daemon=True)
    watcher.start()
    try:
        spec, state = run_acs(sandbox_dir, workdir, "e2e-acs-be", "job.compute.qos=preemptible",
                              "job.backoff_limit_per_index=3", "job.backoff_limit=40",
                              sleep_seconds=3)
    finally:
        watcher.join(timeout=130)
        sandbox.run(faults.update, {"spot_reclaim_after_s": 0.0})
    assert preempted, "the sandbox preempted no best-effort pod"
    assert state.is_completed(), state.message
    assert len(list((workdir / "outputs" / "ask-batch-e2e-acs-be").glob("index-*/result.json"))) == 10
    [summary] = [a for a in flow_artifacts(state.state_details.flow_run_id) if "Estimated cost" in a]
    assert "reclaimed (spot)" in summary  # the per-index record shows the reclaimed attempts
