"""Names: deterministic, DNS-1123, length-limited, unique through a hash when shortened."""

import pytest

from tasks.naming import (
    JOB_NAME_MAX,
    content_hash,
    is_dns1123_label,
    job_name,
    make_run_key,
    resource_name,
    run_labels,
    run_selector,
    sanitize_label,
)


@pytest.mark.parametrize("raw", ["simple", "My Flow Run", "witty-zebra", "a" * 200, "UPPER_case.dots",
                                 "-leading-and-trailing-", "中文名字", "0123"])
def test_run_key_is_a_valid_label_and_stable(raw):
    key = make_run_key(raw)
    assert is_dns1123_label(key) and len(key) <= 40
    assert make_run_key(raw) == key  # deterministic
    assert make_run_key(key) == key  # idempotent


def test_valid_keys_are_kept_as_they_are():
    assert make_run_key("nightly-2024-10-01") == "nightly-2024-10-01"


def test_long_keys_differ_when_their_tails_differ():
    a, b = "x" * 100 + "a", "x" * 100 + "b"
    assert make_run_key(a) != make_run_key(b)


def test_empty_run_key_is_refused():
    with pytest.raises(ValueError):
        make_run_key("")


def test_job_name_fits_pod_naming_and_keeps_the_hash():
    name = job_name(make_run_key("r" * 40), "0123456789")
    assert len(name) <= JOB_NAME_MAX and is_dns1123_label(name)
    assert name.endswith("-0123456789") and name.startswith("askb-")


def test_resource_name_never_cuts_the_suffix():
    name = resource_name("askb-cfg", "k" * 60, "abcdef0123")
    assert len(name) <= 63 and name.endswith("-abcdef0123")


def test_content_hash_is_order_independent_and_salted():
    assert content_hash({"a": 1, "b": 2}) == content_hash({"b": 2, "a": 1})
    assert content_hash({"a": 1}) != content_hash({"a": 2})
    assert content_hash({"a": 1}, salt="run-1") != content_hash({"a": 1}, salt="run-2")


def test_sanitize_label_handles_garbage():
    assert is_dns1123_label(sanitize_label("___"))
    assert sanitize_label("ok-name") == "ok-name"


def test_labels_and_selector():
    labels = run_labels("run-1")
    assert labels == {"app.kubernetes.io/managed-by": "ask-batch", "ask-batch.io/run": "run-1"}
    assert run_selector("run-1") == "app.kubernetes.io/managed-by=ask-batch,ask-batch.io/run=run-1"
