"""The control endpoint (fault knobs, settings): token-protected writes, 400 on bad input, lists parsed."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def _call(sandbox: Any, method: str, path: str, body: Any = None, token: str | None = "ok") -> tuple[int, Any]:
    endpoints = json.loads((Path(sandbox.sandbox.data_dir) / "endpoints.json").read_text())
    data = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = "Bearer " + (endpoints["control"]["token"] if token == "ok" else token)
    request = urllib.request.Request(endpoints["control"]["endpoint"] + path, data=data, method=method,
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_token_in_private_endpoints_file(sandbox: Any) -> None:
    path = Path(sandbox.sandbox.data_dir) / "endpoints.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(json.loads(path.read_text())["control"]["token"]) == 32


def test_writes_need_the_token(sandbox: Any) -> None:
    for path in ("/faults", "/settings"):
        status, body = _call(sandbox, "PUT", path, {}, token=None)
        assert status == 401 and "control.token" in body["error"]
        assert _call(sandbox, "PUT", path, {}, token="wrong")[0] == 401
        assert _call(sandbox, "GET", path, token=None)[0] == 200  # reads stay open
    assert _call(sandbox, "PUT", "/faults", {"latency_ms": 0})[0] == 200


@pytest.mark.parametrize(("path", "body", "message"), [
    ("/faults", b"{not json", "the body must be a JSON object"),
    ("/faults", [1, 2], "the body must be a JSON object"),
    ("/faults", {"error_rate": "lots"}, "fault knob 'error_rate' expects a float, got 'lots'"),
    ("/faults", {"services": ["nas", "s3"]}, "unknown service"),
    ("/faults", {"no_such": 1}, "unknown fault knob 'no_such'"),
    ("/settings", {"cluster_create_delay_s": "soon"}, "setting 'cluster_create_delay_s' expects a float"),
    ("/settings", {"node": {}}, "unknown or read-only setting 'node'"),
    ("/settings", {"node.backoff_scale": "x"}, "setting 'backoff_scale' expects a float"),
])
def test_bad_input_is_400_with_a_clear_message(sandbox: Any, path: str, body: Any, message: str) -> None:
    before = _call(sandbox, "GET", path)[1]
    status, answer = _call(sandbox, "PUT", path, body)
    assert status == 400 and message in answer["error"]
    assert _call(sandbox, "GET", path)[1] == before  # nothing half-applied


def test_cli_parses_lists_and_node_settings(sandbox: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m sandbox faults|settings` (its main(), in process: the same code, without an interpreter start)."""
    from sandbox.__main__ import main

    data_dir = str(sandbox.sandbox.data_dir)

    def cli(*args: str) -> dict[str, Any]:
        main(list(args))
        return dict(json.loads(capsys.readouterr().out))

    before = sandbox.sandbox.settings.node.backoff_scale
    try:
        assert cli("faults", "--dir", data_dir, "services=[nas]")["services"] == ["nas"]
        assert cli("faults", "--dir", data_dir, "services=nas,oss")["services"] == ["nas", "oss"]
        assert cli("settings", "--dir", data_dir, f"node.backoff_scale={before}")["node"]["backoff_scale"] == before
    finally:
        cli("faults", "--dir", data_dir, "services=k8s,oss,cs,nas")
    with pytest.raises(SystemExit) as exc:
        main(["faults", "--dir", data_dir, "error_rate=high"])
    assert "refused it (400): fault knob 'error_rate' expects a float" in str(exc.value)


def test_python_m_sandbox_sends_the_token(sandbox: Any) -> None:
    proc = subprocess.run([sys.executable, "-m", "sandbox", "faults", "--dir", str(sandbox.sandbox.data_dir),
                           "latency_ms=0"], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and json.loads(proc.stdout)["latency_ms"] == 0, proc.stderr


def test_stats_peak_rss_is_the_sandbox_own_not_its_launcher(tmp_path: Path) -> None:
    # Launched by a process holding 400 MB (as a benchmark that has just PUT 100,000 objects), the sandbox must
    # report its own peak, not the launcher's: Linux carries the replaced address space into ru_maxrss at exec.
    from tests.sandbox.served import start_served, stop_served

    ballast = b"\x01" * (400 << 20)  # touched pages: resident in this process, and in a fork of it
    served = start_served(tmp_path / "sb")
    try:
        del ballast
        peak = served.control("GET", "/stats")["peak_rss_mb"]
        own = int(next(line for line in Path(f"/proc/{served.pid}/status").read_text().splitlines()
                       if line.startswith("VmHWM:")).split()[1]) / 1024
        assert peak < 300, f"the sandbox reported {peak:.0f} MB: its launcher's size, not its own ({own:.0f} MB)"
        assert abs(peak - own) < 20
    finally:
        stop_served(served)
