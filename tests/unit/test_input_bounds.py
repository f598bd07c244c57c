"""Reading input is bounded (issue 15): params files by size, depth and alias expansion; config files must be
regular files under a size cap; non-UTF-8 is a clear error. Every case ends in SpecError (exit 2), never a
traceback, a hang or a MemoryError."""

import json
import os
from pathlib import Path

import pytest

from tasks.cloud.admission import admit
from tasks.cloud.params import apply_sets, load_params_file
from tasks.errors import SpecError
from tests.unit.conftest import BASE, with_changes


def anchor_bomb(levels: int = 9, fanout: int = 10) -> str:
    """The 'billion laughs': each level is a list of `fanout` aliases of the one before (3 KB -> fanout**levels)."""
    lines = ['a0: &a0 "' + "x" * 8 + '"']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fanout) + "]")
    return "\n".join(lines) + "\njob: {image: python:3.11-slim}\n"


def flow_bomb(levels: int = 9, fanout: int = 10) -> str:
    """The same bomb on one line, as a shell user could pass it to --set."""
    parts = ["&a0 x"] + [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * fanout) + "]" for i in range(1, levels + 1)]
    return "[" + ", ".join(parts) + "]"


def problems(exc: pytest.ExceptionInfo[SpecError]) -> list[tuple[str, str]]:
    return exc.value.problems


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("content", "words"), [
    (anchor_bomb(), "aliases"),                                       # 90 aliases
    (anchor_bomb(levels=6, fanout=8), "expands to more than"),        # 48 aliases, 262,144 values
    ("job: " + "[" * 200 + "]" * 200 + "\n", "levels deep"),
    ("a: &a [*a]\n", "recursive"),
    ("job: {image: [unclosed\n", "not valid YAML"),
    ("job: {completions: " + "9" * 5000 + "}\n", "cannot be read"),
    ("- just\n- a list\n", "not a mapping"),
], ids=["billion laughs", "wide bomb under the alias cap", "deep nesting", "recursive alias", "bad yaml",
        "5000-digit int", "not a mapping"])
def test_params_files_are_bounded(tmp_path: Path, content: str, words: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(content)
    with pytest.raises(SpecError) as err:
        load_params_file(path)
    assert len(problems(err)) == 1
    field, msg = problems(err)[0]
    assert field == f"--params {path}" and words in msg, msg


def test_non_utf8_params_file_names_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_bytes(b"job: {image: caf\xe9}\n")
    with pytest.raises(SpecError) as err:
        load_params_file(path)
    assert "not UTF-8" in str(err.value) and "0xe9 at offset 16" in str(err.value)


@pytest.mark.timeout(20)
def test_params_file_that_is_a_fifo_or_device_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "params.fifo"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "FIFO"), (Path("/dev/zero"), "character device"), (tmp_path, "directory")):
        with pytest.raises(SpecError) as err:
            load_params_file(path)
        assert kind in str(err.value)


def test_params_file_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("job: {image: python:3.11-slim}\n# " + "x" * (2 * 1024 * 1024) + "\n")
    with pytest.raises(SpecError, match="over the limit of 1,048,576"):
        load_params_file(path)


def test_parameters_over_prefects_limit_are_refused() -> None:
    """Prefect stores at most 524,288 bytes of parameters (PREFECT_SERVER_API_MAX_PARAMETER_SIZE)."""
    params = with_changes(BASE, {"config.files": {f"f{i}.txt": "x" * 1000 for i in range(600)}})
    with pytest.raises(SpecError) as err:
        admit(params)
    assert problems(err)[0][0] == "(spec)" and "PREFECT_SERVER_API_MAX_PARAMETER_SIZE" in problems(err)[0][1]


def test_set_values_are_bounded_and_malformed_sets_are_named() -> None:
    with pytest.raises(SpecError) as err:
        apply_sets({}, ["job.args=" + flow_bomb(), "nodots", "a..b=1"])
    fields = [f for f, _ in problems(err)]
    assert fields == ["--set job.args", "--set 'nodots'", "--set 'a..b=1'"], fields
    assert apply_sets({}, ["job.cpu=500m", "job.args=[a, b]", "job.image=a: b: c"]) == {
        "job": {"cpu": "500m", "args": ["a", "b"], "image": "a: b: c"}}


# ------------------------------------------------------------------ input files (config.local_paths, secrets)


@pytest.mark.timeout(20)
def test_dev_zero_and_a_fifo_in_local_paths_are_refused_without_reading(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(SpecError) as err:
        admit(with_changes(BASE, {"config.local_paths": ["/dev/zero", str(fifo)]}))
    assert [f for f, _ in problems(err)] == ["config.local_paths.0", "config.local_paths.1"]
    assert "character device" in problems(err)[0][1] and "FIFO" in problems(err)[1][1]


@pytest.mark.timeout(20)
def test_a_fifo_inside_a_config_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ok.txt").write_text("ok")
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(SpecError, match="FIFO"):
        admit(with_changes(BASE, {"config.local_paths": [str(tmp_path)]}))


def test_config_over_one_mib_is_refused_naming_the_size(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * (1024 * 1024 + 1))
    with pytest.raises(SpecError) as err:
        admit(with_changes(BASE, {"config.local_paths": [str(big)]}))
    assert problems(err) == [("config.local_paths.0", f"{str(big)!r}: is 1,048,577 bytes, over the limit of "
                              "1,048,576; fix: put big inputs on the shared volume (storage) or in OSS, and read "
                              "them from the pods (a ConfigMap holds at most 1 MiB)")]


def test_config_files_adding_up_to_over_one_mib_are_refused(tmp_path: Path) -> None:
    for name in ("a.bin", "b.bin", "c.bin"):
        (tmp_path / name).write_bytes(b"\0" * 400_000)
    with pytest.raises(SpecError) as err:
        admit(with_changes(BASE, {"config.local_paths": [str(tmp_path)]}))
    assert "1,200,000 bytes" in str(err.value) and "ConfigMap" in str(err.value)
    (tmp_path / "c.bin").unlink()
    assert len(admit(with_changes(BASE, {"config.local_paths": [str(tmp_path)]})).content.files) == 2


def test_secret_env_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_bytes(b"\xff\xfe")
    with pytest.raises(SpecError) as err:
        admit(with_changes(BASE, {"config.secret_env": [{"name": "TOKEN", "file": str(token)}]}))
    assert problems(err)[0][0] == "config.secret_env.0" and "not UTF-8" in problems(err)[0][1]


def test_admit_returns_the_bytes_the_pods_get(tmp_path: Path) -> None:
    (tmp_path / "settings.json").write_text(json.dumps({"a": 1}))
    admitted = admit(with_changes(BASE, {"config.local_paths": [str(tmp_path / "settings.json")],
                                         "config.secret_files": [{"name": "t", "block": "tok"}]}))
    assert admitted.content.files == {"settings.json": b'{"a": 1}'}
    assert admitted.content.secret_files == {"t": b"<value of Prefect Secret block tok>"}


def test_admit_refuses_what_is_not_a_mapping() -> None:
    with pytest.raises(SpecError, match="not a mapping"):
        admit(["job"])  # type: ignore[arg-type]


def test_the_deployments_build_step_uses_the_same_door(tmp_path: Path) -> None:
    """`prefect deploy` runs deployments.steps.load_spec_file: a bad file fails the deploy, as the CLI would."""
    from deployments.steps import load_spec_file

    path = tmp_path / "params.yaml"
    path.write_text(anchor_bomb())
    with pytest.raises(SpecError, match="aliases"):
        load_spec_file(path)
    path.write_text("job: {image: python:3.11-slim}\nconfig: {local_paths: [/dev/zero]}\n")
    with pytest.raises(SpecError) as err:
        load_spec_file(path)
    assert problems(err) == [("config.local_paths.0", "'/dev/zero': is a character device, not a regular file; "
                                                      "fix: give a regular file")]
