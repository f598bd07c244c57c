"""The compact output manifest (issue 10): pod logs as one string, problems capped, long index lists shortened in
what the user reads (pure functions and models; collect_outputs itself is tested through the sandbox)."""

import pickle

from flows.summary import summary_markdown
from tasks.errors import OutputsIncomplete
from tasks.handles import JobHandle, OutputManifest, SavedLogs
from tasks.spec import parse_spec
from tasks.stages.outputs import IndexTally, Listed, indexes_text, outputs_table


def test_saved_logs_is_a_mapping_of_pod_to_key_that_survives_pickling() -> None:
    saved = SavedLogs("p/logs/", ["job-0-aa", "job-1-bb", "job-10-cc"])
    assert len(saved) == 3 and list(saved) == ["job-0-aa", "job-1-bb", "job-10-cc"]
    assert saved["job-1-bb"] == "p/logs/job-1-bb.log" and "job-1" not in saved and "job-1-b" not in saved
    assert dict(pickle.loads(pickle.dumps(saved))) == dict(saved)
    assert dict(SavedLogs("p/logs/")) == {}
    manifest = OutputManifest(bucket="b", prefix="p/", complete=True, saved_logs=saved.blob)
    assert manifest.log_keys["job-10-cc"] == "p/logs/job-10-cc.log" and len(manifest.log_keys) == 3
    assert len(OutputManifest(bucket="b", prefix="p/", complete=True).log_keys) == 0


def test_the_tally_counts_per_index_and_judges_the_marker_rule() -> None:
    spec = parse_spec({"cluster": {"mode": "existing", "existing": {"kubeconfig_path": __file__}},
                       "job": {"image": "busybox", "command": ["true"], "completions": 3, "parallelism": 1}})
    tally = IndexTally(spec.outputs, "p/", 3)
    for key in ("p/index-00000/a", "p/index-00000/_SUCCESS", "p/index-00001/a", "p/logs/pod.log", "p/stray"):
        tally.add(Listed(key, 5, None))
    assert list(tally.counts) == [2, 1, 0] and list(tally.sizes) == [10, 5, 0]
    assert tally.problem(0) is None
    assert tally.problem(1) == "no marker '_SUCCESS' under p/index-00001/ (1 object(s))"
    assert tally.other_keys == ["p/stray"] and tally.other_count == 1


def test_problems_past_the_kept_ones_point_at_the_manifest_file_and_messages_stay_short() -> None:
    missing = list(range(0, 200_000, 2))
    manifest = OutputManifest(bucket="b", prefix="p/", complete=False, missing=missing, completions=200_000,
                              object_counts=[0] * 200_000, problems={0: "no marker '_SUCCESS' under p/0/"},
                              manifest_file="/tmp/x/manifest.jsonl")
    assert manifest.is_complete(1) and not manifest.is_complete(4)
    assert manifest.problem_of(0) == "no marker '_SUCCESS' under p/0/"
    assert manifest.problem_of(2) == "incomplete (the reason is in /tmp/x/manifest.jsonl)"
    assert manifest.outputs_text(1) == "0 object(s)"
    err = str(OutputsIncomplete(manifest, missing))
    assert "100000 of 200000 indexes" in err and "and 99990 more" in err and len(err) < 1500
    assert indexes_text(missing) == f"{missing[:20]} and 99,980 more"

    spec = parse_spec({"cluster": {"mode": "existing", "existing": {"kubeconfig_path": __file__}},
                       "job": {"image": "busybox", "command": ["true"], "completions": 1, "parallelism": 1}})
    job = JobHandle(namespace="default", name="askb-x", uid="u", completions=200_000)
    text = summary_markdown(spec, run_key="x", name="run-x", cluster=None, job=job, report=None, outputs=manifest,
                            teardown=None, error="outputs incomplete")
    outputs_part = text[text.index("## Outputs"):]
    assert "100000 missing indexes [0, 2, 4" in outputs_part and "and 99,980 more" in outputs_part
    assert "manifest: `/tmp/x/manifest.jsonl`" in outputs_part and len(outputs_part) < 2000


def test_a_manifest_without_a_file_still_tables_its_problems() -> None:
    manifest = OutputManifest(bucket="b", prefix="p/", complete=False, missing=[3], completions=4,
                              object_counts=[1, 1, 1, 0], problems={3: "no marker"})
    assert outputs_table(manifest) == [{"index": 3, "key": "(nothing: no marker)", "size": 0, "link": "",
                                        "complete": False}]
