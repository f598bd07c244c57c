"""collect_outputs through the sandbox's OSS with the real SDK: completeness per index, saved pod logs,
parallel verified downloads, paging, and corruption caught on the wire and on disk."""

from __future__ import annotations

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import alibabacloud_oss_v2 as oss
import pytest

from tasks.handles import Attempt, IndexRecord, JobHandle, JobReport
from tasks.stages.outputs import (
    OutputsIncomplete,
    artifact_key,
    collect_outputs,
    ensure_bucket,
    list_prefix,
    outputs_table,
)

BUCKET = "it-outputs"
JOB = "askb-it-0123456789"


def make_report(completions: int) -> JobReport:
    job = JobHandle(namespace="default", name=JOB, uid="uid-1", completions=completions)
    return JobReport(job=job, succeeded=True, indexes=[
        IndexRecord(index=i, status="succeeded", pod=f"{JOB}-{i}-ab{i}cd",
                    attempts=[Attempt(pod=f"{JOB}-{i}-ab{i}cd", outcome="succeeded")]) for i in range(completions)])


@pytest.fixture
def spec_for(make_spec: Any, tmp_path: Path) -> Any:
    def make(**outputs: Any) -> Any:
        return make_spec({"outputs": {"bucket": BUCKET, "download_dir": str(tmp_path / "out"), **outputs}})
    return make


@pytest.fixture
def put(cloud: Any) -> Any:
    def put(key: str, body: bytes) -> None:
        cloud.oss.put_object(oss.PutObjectRequest(bucket=BUCKET, key=key, body=body))
    return put


def seed_index(put: Any, run_key: str, index: int, *, marker: bool = True) -> bytes:
    prefix = f"ask-batch/{run_key}/index-{index:05d}/"
    body = json.dumps({"index": index, "run": run_key}).encode()
    put(prefix + "result.json", body)
    if marker:
        put(prefix + "_SUCCESS", b"done")
    return body


def test_ensure_bucket_creates_once_and_respects_the_switch(cloud: Any, make_spec: Any) -> None:
    spec = make_spec({"outputs": {"bucket": "it-bucket-made-here"}})
    assert ensure_bucket(spec, cloud.oss) is True
    assert ensure_bucket(spec, cloud.oss) is False
    no_create = make_spec({"outputs": {"bucket": "it-bucket-absent", "create_bucket": False}})
    with pytest.raises(ValueError, match="outputs.bucket"):
        ensure_bucket(no_create, cloud.oss)


def test_complete_outputs_are_downloaded_verified_with_logs_and_links(cloud: Any, spec_for: Any, put: Any,
                                                                      run_key: str, tmp_path: Path) -> None:
    spec = spec_for(presigned_links=True)
    ensure_bucket(spec, cloud.oss)
    bodies = {i: seed_index(put, run_key, i) for i in range(3)}
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    for i in range(3):
        (log_dir / f"{JOB}-{i}-ab{i}cd.log").write_text(f"log of index {i}\n")
    (log_dir / f"{JOB}-1-zz9zz.log").write_text("an earlier, failed attempt of index 1\n")

    manifest = collect_outputs(spec, run_key=run_key, flow_run_name="flow-a", report=make_report(3), oss=cloud.oss,
                               log_dir=log_dir)

    assert manifest.complete and manifest.missing == []
    root = tmp_path / "out" / "flow-a"
    assert manifest.download_dir == str(root)
    for i in range(3):
        entry = manifest.index(i)
        assert entry.complete and {o.key.rsplit("/", 1)[1] for o in entry.objects} == {"result.json", "_SUCCESS"}
        assert all(o.verified and o.crc64 for o in entry.objects)
        assert (root / f"index-{i:05d}" / "result.json").read_bytes() == bodies[i]
        link = next(o.link for o in entry.objects if o.key.endswith("result.json"))
        with urllib.request.urlopen(link) as resp:  # noqa: S310 - a presigned http URL on loopback
            assert resp.read() == bodies[i]
    assert manifest.index(1).log_keys == [f"ask-batch/{run_key}/logs/{JOB}-1-ab1cd.log",
                                            f"ask-batch/{run_key}/logs/{JOB}-1-zz9zz.log"]
    saved = cloud.oss.get_object(oss.GetObjectRequest(bucket=BUCKET, key=manifest.log_keys[f"{JOB}-2-ab2cd"]))
    assert saved.body.read() == b"log of index 2\n"
    assert (root / "logs" / f"{JOB}-0-ab0cd.log").is_file()
    assert not list(root.rglob("*.part"))
    rows = outputs_table(manifest)
    assert len(rows) == 6 and {"index", "key", "size", "link"} <= set(rows[0])
    assert artifact_key("outputs", "Run_Key.1") == "outputs-run-key-1"


class CountingRecords(list):  # type: ignore[type-arg]
    """The report's per-index records, counting how many times they are read through."""

    passes = 0

    def __iter__(self) -> Any:
        CountingRecords.passes += 1
        return super().__iter__()


def test_pod_logs_are_assigned_to_indexes_in_one_pass_over_the_report(cloud: Any, spec_for: Any, put: Any,
                                                                       run_key: str, tmp_path: Path) -> None:
    """Each saved log goes to its index (report pods, then the <job>-<index>-<suffix> rule), and the report's
    records are read a fixed number of times, however many pods: asking the report once per pod and per index
    read them (indexes x pods) times, minutes to hours at 1,000-10,000 pods that each print one line."""
    spec = spec_for(download=False, completeness="none")
    ensure_bucket(spec, cloud.oss)

    def passes_for(completions: int) -> tuple[int, Any]:
        log_dir = tmp_path / f"logs-{completions}"
        log_dir.mkdir()
        for i in range(completions):
            (log_dir / f"{JOB}-{i}-ab{i}cd.log").write_text(f"index {i}\n")
        (log_dir / f"{JOB}-1-zz9zz.log").write_text("an attempt the report does not know: named by the rule\n")
        (log_dir / "someone-else.log").write_text("belongs to no index\n")
        report = make_report(completions)
        report = JobReport.model_construct(**{**dict(report), "indexes": CountingRecords(report.indexes)})
        CountingRecords.passes = 0
        manifest = collect_outputs(spec, run_key=f"{run_key}-{completions}", flow_run_name=f"flow-p{completions}",
                                   report=report, oss=cloud.oss, log_dir=log_dir)
        return CountingRecords.passes, manifest

    small, _ = passes_for(3)
    large, manifest = passes_for(12)
    assert large == small <= 2, (small, large)
    logs = f"ask-batch/{run_key}-12/logs/"
    assert manifest.index(1).log_keys == [f"{logs}{JOB}-1-ab1cd.log", f"{logs}{JOB}-1-zz9zz.log"]
    assert all(manifest.index(i).log_keys == [f"{logs}{JOB}-{i}-ab{i}cd.log"] for i in (0, *range(2, 12)))
    assert manifest.log_keys["someone-else"] == f"{logs}someone-else.log" and len(manifest.log_keys) == 14


def test_a_missing_marker_names_the_index_and_the_prefix(cloud: Any, spec_for: Any, put: Any, run_key: str) -> None:
    spec = spec_for()
    ensure_bucket(spec, cloud.oss)
    seed_index(put, run_key, 0)
    seed_index(put, run_key, 1, marker=False)
    seed_index(put, run_key, 2)

    with pytest.raises(OutputsIncomplete) as caught:
        collect_outputs(spec, run_key=run_key, flow_run_name="flow-b", report=make_report(4), oss=cloud.oss,
                        log_dir=None)

    err = caught.value
    assert err.missing == [1, 3]
    assert f"oss://{BUCKET}/ask-batch/{run_key}/" in str(err)
    assert "index 1: no marker '_SUCCESS'" in str(err) and "index 3: no marker" in str(err)
    assert not err.manifest.complete
    assert err.manifest.index(0).complete and err.manifest.index(0).objects[0].verified


def test_complete_indexes_are_the_ones_a_rerun_skips(cloud: Any, spec_for: Any, put: Any, run_key: str) -> None:
    from tasks.stages.outputs import complete_indexes

    spec = spec_for()
    spec = spec.model_copy(update={"job": spec.job.model_copy(update={"completions": 4})})
    ensure_bucket(spec, cloud.oss)
    seed_index(put, run_key, 0)
    seed_index(put, run_key, 1, marker=False)  # an index cut off mid-upload is run again
    seed_index(put, run_key, 3)
    assert complete_indexes(spec, run_key=run_key, flow_run_name="flow-r", oss=cloud.oss, max_keys=2) == [0, 3]
    unchecked = spec.model_copy(update={"outputs": spec.outputs.model_copy(update={"completeness": "none"})})
    assert complete_indexes(unchecked, run_key=run_key, flow_run_name="flow-r", oss=cloud.oss) == []


def test_min_objects_mode(cloud: Any, spec_for: Any, put: Any, run_key: str) -> None:
    spec = spec_for(completeness="min_objects", min_objects=2, download=False)
    ensure_bucket(spec, cloud.oss)
    seed_index(put, run_key, 0)
    seed_index(put, run_key, 1, marker=False)
    with pytest.raises(OutputsIncomplete) as caught:
        collect_outputs(spec, run_key=run_key, flow_run_name="flow-c", report=make_report(2), oss=cloud.oss,
                        log_dir=None)
    assert caught.value.missing == [1]
    assert "1 object(s)" in str(caught.value) and "at least 2" in str(caught.value)
    assert caught.value.manifest.download_dir is None


def test_a_corrupted_local_copy_is_detected_and_replaced(cloud: Any, spec_for: Any, put: Any, run_key: str,
                                                          tmp_path: Path) -> None:
    spec = spec_for()
    ensure_bucket(spec, cloud.oss)
    body = seed_index(put, run_key, 0)
    args = dict(run_key=run_key, flow_run_name="flow-d", report=make_report(1), oss=cloud.oss, log_dir=None)
    collect_outputs(spec, **args)
    local = tmp_path / "out" / "flow-d" / "index-00000" / "result.json"
    local.write_bytes(bytes(len(body)))  # same size, wrong bytes: only the checksum can tell

    manifest = collect_outputs(spec, **args)

    assert local.read_bytes() == body
    assert manifest.complete and manifest.index(0).objects[0].verified


def test_corruption_on_the_wire_is_never_reported_complete(cloud: Any, spec_for: Any, put: Any, run_key: str,
                                                           tmp_path: Path) -> None:
    """Bit rot in the stored object: OSS still reports the CRC64 recorded at upload, the bytes no longer match."""
    spec = spec_for()
    ensure_bucket(spec, cloud.oss)
    body = seed_index(put, run_key, 0)
    stored = [p for p in (cloud.data_dir / "oss").rglob("*") if p.is_file() and p.read_bytes() == body]
    assert len(stored) == 1, "the sandbox keeps one file per object"
    stored[0].write_bytes(body[:-1] + bytes([body[-1] ^ 0xFF]))

    with pytest.raises(OutputsIncomplete) as caught:
        collect_outputs(spec, run_key=run_key, flow_run_name="flow-e", report=make_report(1), oss=cloud.oss,
                        log_dir=None)

    assert caught.value.missing == [0]
    assert "CRC64" in str(caught.value) and "result.json" in str(caught.value)
    index_dir = tmp_path / "out" / "flow-e" / "index-00000"
    assert not (index_dir / "result.json").exists() and not list(index_dir.glob("*.part"))


def test_listing_pages_through_more_than_a_thousand_objects(cloud: Any, spec_for: Any, put: Any,
                                                            run_key: str) -> None:
    spec = spec_for(completeness="min_objects", min_objects=600, download=False)
    ensure_bucket(spec, cloud.oss)
    keys = [f"ask-batch/{run_key}/index-{i % 2:05d}/part-{i:05d}" for i in range(1205)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: put(k, b"x"), keys))
    calls = []
    real = cloud.oss.list_objects_v2

    def counting(request: Any, **kwargs: Any) -> Any:
        calls.append(request.continuation_token)
        return real(request, **kwargs)

    cloud.oss.list_objects_v2 = counting
    try:
        assert len(list_prefix(cloud.oss, BUCKET, f"ask-batch/{run_key}/", max_keys=100)) == 1205
        manifest = collect_outputs(spec, run_key=run_key, flow_run_name="flow-f", report=make_report(2),
                                   oss=cloud.oss, log_dir=None, max_keys=250)
    finally:
        del cloud.oss.list_objects_v2
    assert len(calls) == 13 + 5 and calls[0] is None and all(calls[1:13])
    assert manifest.object_counts == [603, 602] and manifest.total_objects == 1205


def test_the_task_publishes_a_table_artifact_keyed_on_the_run(cloud: Any, spec_for: Any, put: Any,
                                                              run_key: str) -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client

    from tasks.stages.outputs import collect_outputs_task
    from tests.prefect_harness import prefect_harness

    spec = spec_for(download=False)
    ensure_bucket(spec, cloud.oss)
    seed_index(put, run_key, 0)

    @flow
    def collect() -> Any:
        return collect_outputs_task(spec, run_key=run_key, flow_run_name="flow-g", report=make_report(1))

    with prefect_harness(server_startup_timeout=300):
        manifest = collect()
        assert manifest.complete

        async def read() -> Any:
            async with get_client() as c:
                return await c.read_latest_artifacts()

        import asyncio

        artifacts = {a.key: a for a in asyncio.run(read())}
    table = artifacts[f"outputs-{run_key}"]
    assert f"ask-batch/{run_key}/index-00000/result.json" in str(table.data)


def test_the_manifest_file_has_every_object_and_index_and_the_table_shows_the_incomplete_first(
        cloud: Any, spec_for: Any, put: Any, run_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing lost: the in-memory manifest keeps only the first PROBLEMS_KEPT problems, the file keeps all."""
    from tasks.stages import outputs as stage

    monkeypatch.setattr(stage, "PROBLEMS_KEPT", 2)
    spec = spec_for()
    ensure_bucket(spec, cloud.oss)
    for i in range(8):
        seed_index(put, run_key, i, marker=i not in (2, 5, 6))
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    (log_dir / f"{JOB}-6-ab6cd.log").write_text("index 6\n")

    with pytest.raises(OutputsIncomplete) as caught:
        collect_outputs(spec, run_key=run_key, flow_run_name="flow-m", report=make_report(8), oss=cloud.oss,
                        log_dir=log_dir, max_keys=3)

    manifest = caught.value.manifest
    assert manifest.missing == [2, 5, 6] and sorted(manifest.problems) == [2, 5]
    assert manifest.problem_of(6) == f"incomplete (the reason is in {manifest.manifest_file})"
    assert manifest.manifest_file == str(tmp_path / "out" / "flow-m" / "manifest.jsonl")
    records = list(manifest.records())
    objects = [r for r in records if r["kind"] == "object"]
    indexes = [r for r in records if r["kind"] == "index"]
    assert len(objects) == 13 == manifest.total_objects and [r["index"] for r in indexes] == list(range(8))
    assert all(o["verified"] == (o["index"] not in (2, 5, 6)) for o in objects)
    assert indexes[6] == {"kind": "index", "index": 6, "prefix": f"ask-batch/{run_key}/index-00006/",
                          "complete": False, "objects": 1,
                          "bytes": len(json.dumps({"index": 6, "run": run_key}).encode()),
                          "problem": f"no marker '_SUCCESS' under ask-batch/{run_key}/index-00006/ (1 object(s))",
                          "log_keys": [f"ask-batch/{run_key}/logs/{JOB}-6-ab6cd.log"]}
    assert manifest.index(6).problem == indexes[6]["problem"] and not manifest.index(6).objects[0].verified
    rows = outputs_table(manifest)
    assert [r["index"] for r in rows[:3]] == [2, 5, 6] and not any(r["complete"] for r in rows[:3])
    assert len(rows) == 13 and all(r["complete"] for r in rows[3:])
    assert not list((tmp_path / "out" / "flow-m").glob(".listing-*"))
