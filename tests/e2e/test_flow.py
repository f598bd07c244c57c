"""The whole pipeline through the sandbox, as a user runs it: the flow, the CLI, a killed flow process.

Each test states one promise of issue 4 and checks it where a user would see it: the downloaded files, the
sandbox's own record of processes started, the Prefect API (logs, artifacts, states), the CLI's exit code.
"""

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from examples.workload.shard_hash import compute_shard
from flows.ask_batch import ask_batch
from flows.cli import build_spec, main
from flows.run_files import flow_parameters
from tasks.render.manifests import run_prefix
from tests.e2e.conftest import EXAMPLE, example_sets, kube


def run(sandbox_dir: Path, workdir: Path, run_key: str, *extra: str, **settings: Any) -> tuple[Any, Any]:
    spec = build_spec(EXAMPLE, example_sets(workdir, run_key, **settings) + list(extra), sandbox_dir)
    return spec, ask_batch(**flow_parameters(spec), return_state=True)


def flow_logs(flow_run_id: Any) -> list[str]:
    """Every log message of a flow run, as the Prefect API has it (after sending what is still queued)."""
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # logs travel to the API in batches; send the last batch before reading
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200)
        out = [entry.message for entry in logs]
        offset = len(logs)
        while len(logs) == 200:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200,
                                    offset=offset)
            out += [entry.message for entry in logs]
            offset += len(logs)
    return out


def flow_artifacts(flow_run_id: Any) -> list[str]:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(
            any_=[flow_run_id])))
    return [json.dumps(a.data) + (a.description or "") for a in arts]


def oss_text(spec: Any, key: str) -> str:
    """An object of the outputs bucket, read with the OSS SDK as a user would."""
    import alibabacloud_oss_v2 as o

    from tasks.cloud.clients import oss_client
    from tasks.cloud.context import credentials

    result = oss_client(spec.target, credentials(spec)).get_object(o.GetObjectRequest(bucket=spec.outputs.bucket,
                                                                                      key=key))
    return result.body.read().decode()


def test_example_run_downloads_one_verified_result_per_index(sandbox_dir: Path, workdir: Path) -> None:
    spec, state = run(sandbox_dir, workdir, "e2e-ok")
    assert state.is_completed(), state.message
    root = workdir / "outputs" / "ask-batch-e2e-ok"
    results = sorted(root.glob("index-*/result.json"))
    assert len(results) == 10
    for path in results:
        result = json.loads(path.read_text())
        expected = compute_shard("ask-batch-demo", result["index"], 1 << 20)
        assert result["sha256"] == expected["sha256"] and result["bytes"] == expected["bytes"]
        assert path.parent.name == f"index-{result['index']:05d}"
    assert len(list((root / "logs").glob("*.log"))) == 10
    logs = flow_logs(state.state_details.flow_run_id)
    assert any(line.startswith("[idx=3 pod=askb-e2e-ok-") for line in logs)
    summary = [a for a in flow_artifacts(state.state_details.flow_run_id) if "Estimated cost" in a]
    assert summary and "| 9 | succeeded | 1: succeeded (on-demand) | 0 |" in summary[0]
    # The run graph links collect_outputs to the wait whose report it reads (the report is passed ``opaque``:
    # resolved, not walked into).
    runs = task_runs(state.state_details.flow_run_id)
    [wait], [collect] = runs["wait_for_job"], runs["collect_outputs"]
    assert [getattr(i, "id", None) for i in collect.task_inputs["report"]] == [wait.id]


def task_runs(flow_run_id: Any) -> dict[str, list[Any]]:
    """The flow run's task runs by task name, as the Prefect API has them."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        found = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    by_name: dict[str, list[Any]] = {}
    for run in found:
        by_name.setdefault(run.name.rsplit("-", 1)[0], []).append(run)
    return by_name


def test_a_nas_only_workload_with_completeness_none_succeeds_and_says_what_was_not_verified(
        sandbox_dir: Path, workdir: Path) -> None:
    # Each pod writes its result to the shared NAS volume only: nothing to OSS, no marker.
    write = 'echo "done $JOB_COMPLETION_INDEX" > "$ASK_BATCH_DATA_DIR/nas-only-$JOB_COMPLETION_INDEX.txt"'
    spec, state = run(sandbox_dir, workdir, "e2e-nas-only", f"job.command=[sh, -c, '{write}']", "job.args=[]",
                      "job.completions=4", "job.parallelism=4", "outputs.completeness=none")
    assert spec.storage.mode == "nas"
    assert state.is_completed(), state.message
    written = sorted(p.name for p in sandbox_dir.rglob("nas-only-*.txt") if "e2e-nas-only" in str(p))
    assert written == [f"nas-only-{i}.txt" for i in range(4)], written
    summary = [a for a in flow_artifacts(state.state_details.flow_run_id) if "Estimated cost" in a]
    assert summary and "`outputs.completeness` is `none`" in summary[0]
    assert "no index was checked for outputs in OSS" in summary[0]


KUBECONFIG_FETCH = "DescribeClusterUserKubeconfig"  # the SDK names its action in x-acs-action


def _cs_operations(sandbox_dir: Path) -> dict[str, int]:
    import urllib.request

    base = json.loads((sandbox_dir / "endpoints.json").read_text())["control"]["endpoint"]
    with urllib.request.urlopen(base + "/stats", timeout=5) as resp:
        operations: dict[str, int] = json.loads(resp.read())["services"]["cs"]["operations"]
    return operations


def test_second_run_reuses_the_cluster_and_the_nas(sandbox_dir: Path, workdir: Path) -> None:
    from tasks.cloud.clients import nas_client
    from tasks.cloud.cluster_access import find_ask_cluster
    from tasks.cloud.context import credentials, cs_for
    from tasks.cloud.nas import find_file_systems_by_name

    fetches = []
    for key in ("e2e-again-1", "e2e-again-2"):
        before = _cs_operations(sandbox_dir)
        spec, state = run(sandbox_dir, workdir, key)
        assert state.is_completed(), state.message
        after = _cs_operations(sandbox_dir)
        fetches.append(after.get(KUBECONFIG_FETCH, 0) - before.get(KUBECONFIG_FETCH, 0))
    # The run's clients are built once (tasks.cloud.context.StageContext): one kubeconfig per run, not per stage.
    assert fetches == [1, 1]
    # find_ask_cluster raises when two clusters have the name; the NAS lookup lists every match.
    assert find_ask_cluster(cs_for(spec), region=spec.target.region, name=spec.cluster.ask.name)
    nas = nas_client(spec.target, credentials(spec))
    assert len(find_file_systems_by_name(nas, spec.storage.nas.name)) == 1


def test_failing_index_fails_the_flow_naming_index_pod_and_exit_code(sandbox_dir: Path, workdir: Path) -> None:
    from kubernetes import client

    spec, state = run(sandbox_dir, workdir, "e2e-fail", "job.backoff_limit_per_index=0", fail_indexes=[3])
    assert state.is_failed()
    with pytest.raises(Exception) as caught:
        state.result()
    message = str(caught.value)
    assert "index 3: pod askb-e2e-fail-" in message and "exit code 42" in message
    # The failed pod's whole log is kept with the run's outputs.
    logs = list((workdir / "outputs" / "ask-batch-e2e-fail" / "logs").glob("askb-e2e-fail-*-3-*.log"))
    assert logs and "failing on purpose" in logs[0].read_text()
    # ... in OSS too, under the run's prefix, as a successful run's logs are; the summary says where.
    key = f"{run_prefix(spec.outputs, run_key='e2e-fail', flow_run_name='ask-batch-e2e-fail')}logs/{logs[0].name}"
    assert oss_text(spec, key) == logs[0].read_text()
    summary = [a for a in flow_artifacts(state.state_details.flow_run_id) if "FAILED" in a]
    assert summary and f"oss://{spec.outputs.bucket}/ask-batch/e2e-fail/logs/" in summary[0]
    # Teardown ran (policy: job and config always): nothing of the run is left in the cluster.
    api = kube(spec)
    selector = "ask-batch.io/run=e2e-fail"
    assert not client.BatchV1Api(api).list_namespaced_job("default", label_selector=selector).items
    assert not client.CoreV1Api(api).list_namespaced_config_map("default", label_selector=selector).items


NOISY = """# Print many numbered lines, then do the example's work (shard_hash.py beside this file).
import os, runpy, sys
for i in range(3000):
    print(f"noise {i:05d}", flush=i % 500 == 0)
sys.stdout.flush()
sys.argv = ["shard_hash.py", "--settings", "settings.json"]
runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "shard_hash.py"), run_name="__main__")
"""


def test_logs_complete_without_duplicates_when_open_streams_are_cut_at_once(
        sandbox_dir: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Log grace 0: every stream still open when the Job finishes is cut and caught up with a plain read."""
    import dataclasses

    import tasks.stages.wait
    from tests.e2e.conftest import WORKLOAD, settings_file

    real = tasks.stages.wait.wait_options
    monkeypatch.setattr(tasks.stages.wait, "wait_options",
                        lambda *a, **k: dataclasses.replace(real(*a, **k), log_grace_seconds=0.0))
    (workdir / "noisy.py").write_text(NOISY)
    _, state = run(sandbox_dir, workdir, "e2e-cut", "job.completions=3", "job.parallelism=3",
                   f"config.local_paths=[{WORKLOAD / 'shard_hash.py'}, {settings_file(workdir)}, "
                   f"{workdir / 'noisy.py'}]",
                   "job.command=[python3, /etc/ask-batch/config/noisy.py]", "job.args=[]")
    assert state.is_completed(), state.message
    files = sorted((workdir / "outputs" / "ask-batch-e2e-cut" / "logs").glob("*.log"))
    assert len(files) == 3
    for path in files:
        lines = path.read_text().splitlines()
        assert [line for line in lines if line.startswith("noise ")] == [f"noise {i:05d}" for i in range(3000)]
        assert len(lines) == len(set(lines)), "a line was kept twice"
        assert any(line.startswith("index ") for line in lines)  # the last lines, after the noise


def test_bad_image_fails_within_the_grace_naming_pod_and_reason(sandbox_dir: Path, workdir: Path) -> None:
    started = time.monotonic()
    _, state = run(sandbox_dir, workdir, "e2e-image", "job.image=unreachable.invalid/nothing:1",
                   "wait.fail_fast_grace_seconds=3")
    elapsed = time.monotonic() - started
    assert state.is_failed()
    message = state.message or ""
    with pytest.raises(Exception) as caught:
        state.result()
    message += str(caught.value)
    assert "pod askb-e2e-image-" in message
    assert "ImagePullBackOff" in message or "ErrImagePull" in message
    assert elapsed < 45, f"took {elapsed:.0f}s for a 3s grace"


def test_known_secrets_never_reach_logs_artifacts_errors_or_dry_run(
        sandbox_dir: Path, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = "tok-" + os.urandom(12).hex()
    (workdir / "token.txt").write_text(token)
    access_secret = json.loads((sandbox_dir / "endpoints.json").read_text())["access_key_secret"]
    # A careless workload that prints its token and AccessKey secret: neither may get past the log streaming.
    leaky = ["job.completions=2", "job.parallelism=2", "job.command=[sh, -c]",
             'job.args=["cat $ASK_BATCH_SECRET_DIR/token; echo; echo key=$OSS_ACCESS_KEY_SECRET; exit 3"]',
             "job.backoff_limit_per_index=0",
             f"config.secret_files=[{{name: token, file: {workdir / 'token.txt'}}}]"]
    _, state = run(sandbox_dir, workdir, "e2e-secret", *leaky)
    assert state.is_failed()
    texts = flow_logs(state.state_details.flow_run_id) + flow_artifacts(state.state_details.flow_run_id)
    assert any("<redacted>" in t for t in texts), "the workload's secret lines should appear, redacted"
    with pytest.raises(Exception) as caught:
        state.result()
    texts += [str(caught.value), state.message or ""]
    texts += [p.read_text() for p in (workdir / "outputs").rglob("*.log")]
    capsys.readouterr()
    assert main(["--params", str(EXAMPLE), "--sandbox", str(sandbox_dir), "--dry-run",
                 *[a for s in example_sets(workdir, "e2e-secret") + leaky for a in ("--set", s)]]) == 0
    texts.append(capsys.readouterr().out)
    for secret in (token, access_secret):
        assert not [t for t in texts if secret in t]


def _requests(sandbox_dir: Path) -> int:
    import urllib.request

    base = json.loads((sandbox_dir / "endpoints.json").read_text())["control"]["endpoint"]
    with urllib.request.urlopen(base + "/stats", timeout=5) as resp:
        stats = json.loads(resp.read())
    return sum(c["requests"] for c in stats["clusters"].values())


@pytest.mark.parametrize(("change", "field"), [
    ("job.parallelism=20", "job.parallelism"),
    ("job.image=", "job.image"),
    ("cluster.ask.name=-bad", "cluster.ask.name"),
    ("target.region=China (Hangzhou)", "target.region"),
    ("config.local_paths=[does-not-exist.txt]", "config.local_paths"),
    ('job.cpu="-1"', "job.cpu"),  # quoted: an unquoted number is a YAML int, see the report
    ("job.completions=0", "job.completions"),
    ("run_key=Not_A_Label", "run_key"),
    ("job.paralelism=2", "job.paralelism"),
])
def test_cli_rejects_invalid_input_before_any_request(sandbox_dir: Path, change: str, field: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    before = _requests(sandbox_dir)
    assert main(["--params", str(EXAMPLE), "--sandbox", str(sandbox_dir), "--set", change]) == 2
    err = capsys.readouterr().err
    assert f"  - {field}:" in err, err
    assert _requests(sandbox_dir) == before
