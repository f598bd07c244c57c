"""The flow when spot stock is gone (issue 9: ``job.eci.max_reclaims``) and follow-up Jobs under ``job.parallelism``.

Checked where a user sees it: the flow's state, the downloaded outputs, the summary artifact's per-index ledger, the
pods left in the cluster (their annotations), and, for parallelism, the pods as the Kubernetes API reported them
while the run went on (a watch: its events come in resourceVersion order, so the count of pods alive at once is
exact, not a matter of timing).
"""

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flows.ask_batch import ask_batch
from flows.cli import build_spec
from flows.run_files import flow_parameters
from tasks.naming import INDEX_LABEL, RUN_LABEL
from tests.e2e.conftest import EXAMPLE, example_sets, kube
from tests.e2e.test_flow import flow_artifacts


def run(sandbox_dir: Path, workdir: Path, run_key: str, *extra: str, **settings: Any) -> tuple[Any, Any]:
    spec = build_spec(EXAMPLE, example_sets(workdir, run_key, **settings) + list(extra), sandbox_dir)
    return spec, ask_batch(**flow_parameters(spec), return_state=True)


def results(workdir: Path, run_key: str) -> dict[int, dict[str, Any]]:
    root = workdir / "outputs" / f"ask-batch-{run_key}"
    return {int(p.parent.name.split("-")[1]): json.loads(p.read_text()) for p in root.glob("index-*/result.json")}


def test_spot_stock_gone_every_index_gets_its_last_try_on_demand(sandbox: Any, sandbox_dir: Path,
                                                                 workdir: Path) -> None:
    """Every spot pod is reclaimed a second after it starts; the work needs 3 s. Before max_reclaims, the Job
    replaced reclaimed pods for ever (reclaims spend no budget) and the run waited for its deadline."""
    from kubernetes import client

    key = "e2e-on-demand"
    faults = sandbox.sandbox.faults
    sandbox.run(faults.update, {"spot_reclaim_after_s": 1.0})
    try:
        spec, state = run(sandbox_dir, workdir, key, "job.completions=3", "job.parallelism=3",
                          "job.backoff_limit_per_index=2", "job.eci.spot_strategy=SpotAsPriceGo",
                          "job.eci.max_reclaims=2", "teardown.job=never", "job.active_deadline_seconds=300",
                          sleep_seconds=3)
    finally:
        sandbox.run(faults.update, {"spot_reclaim_after_s": 0.0})
    assert state.is_completed(), state.message
    assert sorted(results(workdir, key)) == [0, 1, 2]
    pods = client.CoreV1Api(kube(spec)).list_namespaced_pod("default", label_selector=f"{RUN_LABEL}={key}").items
    succeeded = [p for p in pods if p.status.phase == "Succeeded"]
    # every index ran to success once, and that was its on-demand try: no spot annotation on its pod
    assert sorted(int(p.metadata.labels[INDEX_LABEL]) for p in succeeded) == [0, 1, 2]
    for pod in succeeded:
        annotations = pod.metadata.annotations or {}
        assert annotations.get("ask-batch.io/on-demand-try") == "last try after 2 reclaims", annotations
        assert not any(k.startswith("k8s.aliyun.com/eci-spot") for k in annotations), annotations
    reclaimed = [p for p in pods if p.status.reason == "BidFailed"]
    assert len(reclaimed) >= 6  # at least two per index, each its own spot pod
    [summary] = [a for a in flow_artifacts(state.state_details.flow_run_id) if "Estimated cost" in a]
    for index in range(3):  # the ledger: the reclaims, the stopped spot pod, the on-demand success
        row = next(line for line in summary.split("\\n") if line.startswith(f"| {index} |"))
        assert row.count("reclaimed (spot)") >= 2 and "moved-on-demand (spot), succeeded (on-demand)" in row, row
        assert "| succeeded |" in row
    assert "on demand: 3 index(es) reclaimed 2 times ran their last try on demand" in summary


@contextmanager
def pods_alive_at_once(spec: Any, run_key: str, selector: str) -> Iterator[dict[str, Any]]:
    """Watch the run's pods matching ``selector`` while the block runs: ``seen`` (every pod's name) and ``most``
    (the most pods that existed at once and had not ended, from the API's own event order)."""
    from kubernetes import client, watch

    core = client.CoreV1Api(kube(spec))
    out: dict[str, Any] = {"seen": set(), "most": 0}
    alive: set[str] = set()
    stop = threading.Event()
    listed = core.list_namespaced_pod("default", label_selector=f"{RUN_LABEL}={run_key},{selector}")
    assert not listed.items, "follow-up pods before the run"

    def follow() -> None:
        w = watch.Watch()
        for event in w.stream(core.list_namespaced_pod, "default", label_selector=f"{RUN_LABEL}={run_key},{selector}",
                              resource_version=listed.metadata.resource_version, timeout_seconds=600):
            pod = event["object"]
            out["seen"].add(pod.metadata.name)
            if event["type"] == "DELETED" or pod.status.phase in ("Succeeded", "Failed"):
                alive.discard(pod.metadata.name)
            else:
                alive.add(pod.metadata.name)
            out["most"] = max(out["most"], len(alive))
            if stop.is_set() and not alive:
                w.stop()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join(30)


def test_follow_up_jobs_of_a_rerun_honour_parallelism(sandbox_dir: Path, workdir: Path) -> None:
    """Six of eight indexes fail; the re-run runs them as six follow-up Jobs with parallelism 2: never more than
    two of their pods at once. Before, every follow-up Job was created at once (six pods)."""
    key = "e2e-follow-up-parallelism"
    spec, first = run(sandbox_dir, workdir, key, "job.completions=8", "job.parallelism=8",
                      "job.backoff_limit_per_index=0", fail_indexes=[0, 1, 2, 3, 4, 5])
    assert first.is_failed()
    with pods_alive_at_once(spec, key, INDEX_LABEL) as watched:
        spec, second = run(sandbox_dir, workdir, key, "job.completions=8", "job.parallelism=2",
                           "job.backoff_limit_per_index=0", sleep_seconds=1)
    assert second.is_completed(), second.message
    assert len(watched["seen"]) == 6 and 1 <= watched["most"] <= 2, watched
    assert sorted(results(workdir, key)) == list(range(8))
