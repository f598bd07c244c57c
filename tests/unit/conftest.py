"""Shared fixtures for the unit tests: a minimal valid parameter set to mutate."""

import copy
from typing import Any

import pytest

BASE: dict[str, Any] = {"job": {"image": "python:3.11-slim", "completions": 4, "parallelism": 2}}


@pytest.fixture
def base_params() -> dict[str, Any]:
    return copy.deepcopy(BASE)


def with_changes(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Apply dotted-path changes ({"job.cpu": "x"}) to a copy of ``base``."""
    out = copy.deepcopy(base)
    for dotted, value in changes.items():
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out
