"""The end of a sandbox run says how to reach the run's cluster with kubectl."""

from pathlib import Path
from typing import Any

import pytest

from flows.cli import print_kubectl_hint
from tasks.spec import parse_spec


class _State:
    def __init__(self, result: Any) -> None:
        self._result = result

    def result(self, raise_on_failure: bool = True) -> Any:
        return self._result


def _spec(**cluster: Any) -> Any:
    return parse_spec({"job": {"image": "python:3.11-slim", "command": ["true"]}, "cluster": cluster})


def test_a_created_cluster_is_reached_through_the_kubeconfig_the_sandbox_wrote(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "kubeconfig-c123").write_text("apiVersion: v1\n")
    print_kubectl_hint(_spec(mode="ask", namespace="batch"), _State({"cluster_id": "c123"}), tmp_path)
    assert capsys.readouterr().out.strip() == (
        f"the cluster: kubectl --kubeconfig {tmp_path.resolve() / 'kubeconfig-c123'} get jobs,pods -n batch")


def test_no_hint_when_the_sandbox_has_no_kubeconfig_for_the_cluster(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    print_kubectl_hint(_spec(mode="ask"), _State({"cluster_id": "gone"}), tmp_path)
    print_kubectl_hint(_spec(mode="ask"), _State(RuntimeError("failed")), tmp_path)
    assert capsys.readouterr().out == ""
