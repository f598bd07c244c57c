"""The example workload: deterministic shards, settings/secret/data from env paths only."""

import json

from examples.workload import shard_hash


def test_shard_is_deterministic_and_per_index():
    a = shard_hash.compute_shard("seed", 3, 100_000, 4096)
    assert a == shard_hash.compute_shard("seed", 3, 100_000, 1000)  # block size does not change the data
    assert a["bytes"] == 100_000
    assert a["sha256"] != shard_hash.compute_shard("seed", 4, 100_000)["sha256"]


def test_runs_from_env_paths_without_upload(tmp_path, monkeypatch, capsys):
    cfg, sec, data = tmp_path / "cfg", tmp_path / "sec", tmp_path / "data"
    for d in (cfg, sec, data):
        d.mkdir()
    (cfg / "settings.json").write_text(json.dumps({"seed": "s", "shard_bytes": 5000}))
    (sec / "token").write_text("secret-token-value")
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")
    for name, path in (("CONFIG", cfg), ("SECRET", sec), ("DATA", data)):
        monkeypatch.setenv(f"ASK_BATCH_{name}_DIR", str(path))
    monkeypatch.delenv("ASK_BATCH_OSS_BUCKET", raising=False)
    assert shard_hash.main([]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["sha256"] == shard_hash.compute_shard("s", 2, 5000)["sha256"]
    assert result["signature"] and "secret-token-value" not in out
    assert (data / "shard-00002.bin").stat().st_size == 5000


def test_fails_on_purpose_with_the_configured_code(tmp_path, monkeypatch):
    (tmp_path / "settings.json").write_text(json.dumps({"fail_indexes": [1], "fail_exit_code": 7}))
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    monkeypatch.setenv("ASK_BATCH_CONFIG_DIR", str(tmp_path))
    assert shard_hash.main(["--no-upload"]) == 7


def test_refuses_to_run_without_an_index(monkeypatch):
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    assert shard_hash.main(["--no-upload"]) == 2
