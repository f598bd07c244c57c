"""The flow's parameters: sections in form order, the work first, and a 'did you mean' for a misspelt field."""

import pytest

from flows.ask_batch import ask_batch
from flows.run_files import SECTIONS, flow_parameters, spec_from_parameters
from tasks.spec import SpecError, parse_spec

BASE = {"job": {"image": "python:3.11-slim", "completions": 2, "parallelism": 2}}


def test_the_form_lists_the_sections_work_first_and_opens_on_image_command_completions_parallelism() -> None:
    from prefect.utilities.callables import parameter_schema

    schema = parameter_schema(ask_batch.fn).model_dump_for_openapi()
    assert list(schema["properties"]) == list(SECTIONS)
    assert SECTIONS[:8] == ("job", "config", "outputs", "storage", "cluster", "target", "teardown", "wait")
    assert schema["required"] == ["job"]
    job = schema["definitions"]["JobSpec"]["properties"]
    assert list(job)[:5] == ["image", "command", "args", "completions", "parallelism"]


def test_a_spec_goes_through_the_sections_and_back_unchanged() -> None:
    spec = parse_spec({**BASE, "run_key": "k1", "outputs": {"bucket": "my-bucket"}})
    assert spec_from_parameters(flow_parameters(spec)) == spec
    as_json = {k: (v.model_dump(mode="json") if hasattr(v, "model_dump") else v)
               for k, v in flow_parameters(spec).items()}
    assert spec_from_parameters(as_json) == spec  # what the API hands the flow


@pytest.mark.parametrize(("data", "field", "meant"), [
    ({"job": {**BASE["job"], "complitions": 3}}, "job.complitions", "completions"),
    ({**BASE, "outputs": {"bucket_name": "b"}}, "outputs.bucket_name", "bucket"),
    ({**BASE, "teardwn": {}}, "teardwn", "teardown"),
    ({**BASE, "config": {"secret_env": [{"nam": "A", "block": "b"}]}}, "config.secret_env.0.nam", "name"),
])
def test_a_misspelt_field_is_refused_with_the_name_meant(data: dict, field: str, meant: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(data)
    problems = dict(caught.value.problems)
    assert problems[field] == f"unknown field; fix: did you mean {meant!r}?"


def test_a_field_unlike_any_lists_the_known_ones() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({"job": {**BASE["job"], "xyzzy": 1}})
    message = dict(caught.value.problems)["job.xyzzy"]
    assert message.startswith("unknown field; fix: use one of image, ")
    assert {"completions", "parallelism", "eci"} <= set(message.removeprefix("unknown field; fix: use one of ")
                                                        .split(", "))
