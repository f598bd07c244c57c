"""Ports for the servers the tests start as other programs (a Prefect server, PostgreSQL), which take a port
number, not a socket.

A port found by binding port 0 and closing the probe is free only for a moment: every other bind to port 0 and
every outgoing connection draws from the same ephemeral range (``/proc/sys/net/ipv4/ip_local_port_range``,
https://www.kernel.org/doc/html/latest/networking/ip-sysctl.html), so under parallel tests another server took one
before the Prefect server bound it ("address already in use"). These ports come from below that range, where the
kernel hands out none, each pytest-xdist worker from a block of its own (``PYTEST_XDIST_WORKER``:
https://pytest-xdist.readthedocs.io/en/stable/how-to.html#identifying-the-worker-process-during-a-test).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from deployments.local import port_free

FIRST = 20000  # above the well-known and most registered ports in common use on a test machine
BLOCK = 200  # ports per worker
_next = itertools.count()


def ephemeral_low() -> int:
    """The lowest port the kernel hands out by itself (32768 when the file cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def worker_index() -> int:
    """0 for ``gw0`` or no xdist, 1 for ``gw1``, …"""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(name.removeprefix("gw")) if name.removeprefix("gw").isdigit() else 0


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on, that no other xdist worker of this run is given and that the
    kernel does not hand out to port-0 binds or outgoing connections. Raises RuntimeError when this worker's
    block is used up or would reach into the ephemeral range."""
    base = FIRST + worker_index() * BLOCK
    if base + BLOCK > ephemeral_low():
        raise RuntimeError(f"worker {worker_index()}: ports {base}-{base + BLOCK - 1} reach into the kernel's "
                           f"ephemeral range (from {ephemeral_low()}); run fewer xdist workers")
    for _ in range(BLOCK):
        port = base + next(_next) % BLOCK
        if port_free(port):
            return port
    raise RuntimeError(f"no free port in {base}-{base + BLOCK - 1}")
