"""Fixtures for the pipeline-through-the-sandbox tests: a Target built from the sandbox's endpoints file, the
real SDK clients made by ``tasks.cloud.clients`` (exactly what the flow uses), and a spec factory.

Nothing here mocks an SDK call: the stages talk HTTP to the session's sandbox.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tasks.cloud.clients import (
    AliCredentials,
    apply_env,
    cs_client,
    nas_client,
    oss_client,
    resolve_credentials,
    target_from_endpoints_file,
)
from tasks.spec import BatchSpec, Target, parse_spec


@dataclass
class Cloud:
    """The sandbox seen as a cloud account: target, credentials, clients, and where its files live."""

    target: Target
    creds: AliCredentials
    endpoints_file: Path
    data_dir: Path
    cs: Any
    nas: Any
    oss: Any


@pytest.fixture(scope="session")
def cloud(sandbox: Any) -> Cloud:
    data_dir = Path(sandbox.sandbox.data_dir)
    endpoints = data_dir / "endpoints.json"
    target, env = target_from_endpoints_file(endpoints)
    apply_env(env)
    creds = resolve_credentials(target.credentials)
    return Cloud(target=target, creds=creds, endpoints_file=endpoints, data_dir=data_dir,
                 cs=cs_client(target, creds), nas=nas_client(target, creds), oss=oss_client(target, creds))


@pytest.fixture
def make_spec(cloud: Cloud) -> Callable[..., BatchSpec]:
    """``make_spec({"storage": {...}})``: a valid BatchSpec on the sandbox's default cluster ('sandbox')."""

    def make(changes: dict[str, Any] | None = None) -> BatchSpec:
        data: dict[str, Any] = {
            "target": cloud.target.model_dump(mode="json"),
            "cluster": {"mode": "ask", "ask": {"name": "sandbox", "create_if_missing": False}},
            "job": {"image": "python:3.11-slim", "command": ["true"], "completions": 3, "parallelism": 3},
        }
        for key, value in (changes or {}).items():
            node = data
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = copy.deepcopy(value)
        return parse_spec(data)

    return make


@pytest.fixture
def run_key() -> str:
    return "it-" + uuid.uuid4().hex[:10]
