"""The tests' own port chooser (``tests/ports.py``): no port another worker or the kernel can hand out."""

import socket

import pytest

from tests.ports import ephemeral_low, free_port


def test_ports_are_outside_the_kernel_ephemeral_range_and_apart_per_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = {}
    for worker in ("gw0", "gw1", "gw2"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        chosen[worker] = {free_port() for _ in range(20)}
    every = set().union(*chosen.values())
    assert len(every) == 60  # no port twice, within a worker or across workers
    assert max(every) < ephemeral_low()


def test_a_port_something_listens_on_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    port = free_port()
    with socket.socket() as other:
        other.bind(("127.0.0.1", port + 1))
        other.listen()
        assert free_port() not in (port, port + 1)
