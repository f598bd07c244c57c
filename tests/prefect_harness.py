"""Prefect's temporary test server, started so that a start-up race does not fail a whole test process.

`prefect_test_harness` waits for the new server by polling `/health` and treats only `httpx.ConnectError` as "not
up yet" (`SubprocessASGIServer.start` in prefect/server/api/server.py, Prefect 3.x). When the port it picked is
taken meanwhile by another process (two pytest workers start servers at once), or the server closes a connection
while starting, the poll gets `httpx.RemoteProtocolError` and the harness raises: every test of that process then
errors at setup. Here such a start is tried again on a new port, at most three times; any other failure is raised.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx


@contextlib.contextmanager
def prefect_harness(server_startup_timeout: int = 300, attempts: int = 3) -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    for attempt in range(1, attempts + 1):
        harness = prefect_test_harness(server_startup_timeout=server_startup_timeout)
        try:
            harness.__enter__()
        except httpx.TransportError:
            if attempt == attempts:
                raise
            continue
        break
    try:
        yield
    except BaseException as exc:
        if not harness.__exit__(type(exc), exc, exc.__traceback__):
            raise
    else:
        harness.__exit__(None, None, None)
