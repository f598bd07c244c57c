"""The concurrency benchmark's reading of the Prefect server's log: each 503 it answered, by route and error.

The log text is the shape Prefect 3.9 writes with ``PREFECT_SERVER_LOG_RETRYABLE_ERRORS=true`` (an excerpt of a
real run's server log, middle frames cut): a first traceback (the DB-API error), the chained one through the route,
the SQLAlchemy error with its statement, then the next log record.
"""

from bench.bench_concurrency import p95, retryable_errors

SITE = "/venv/lib/python3.11/site-packages"
ONE_503 = f"""08:49:21.210 | ERROR   | prefect.server - Encountered retryable exception in request:
Traceback (most recent call last):
  File "{SITE}/sqlalchemy/engine/base.py", line 1977, in _exec_single_context
    self.dialect.do_execute(
  File "{SITE}/aiosqlite/core.py", line 63, in _connection_worker_thread
    result = function()
sqlite3.OperationalError: database is locked

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "{SITE}/prefect/server/api/server.py", line 518, in default_content_type
    response = await call_next(request)
  File "{SITE}/prefect/server/api/deployments.py", line 983, in create_flow_run_from_deployment
    model = await models.flow_runs.create_flow_run(
  File "{SITE}/prefect/server/models/flow_runs.py", line 104, in create_flow_run
    await session.flush()
sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) database is locked
[SQL: INSERT INTO flow_run (flow_id, deployment_id, work_queue_name) VALUES (:flow_id, :deployment_id, :wq)]
[parameters: {{'flow_id': '1451cd12', 'deployment_id': 'fd2bcb17', 'wq': 'default'}}]
(Background on this error at: https://sqlalche.me/e/21/e3q8)
08:49:21.267 | ERROR   | uvicorn.error - Exception in ASGI application
Traceback (most recent call last):
  File "{SITE}/prefect/server/api/workers.py", line 1220, in worker_heartbeat
sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) database is locked
[SQL: INSERT INTO worker (name) VALUES (:name)]
"""


def test_each_503_is_read_with_its_route_error_and_statement() -> None:
    heartbeat = ONE_503.replace("deployments.py\", line 983, in create_flow_run_from_deployment",
                                "workers.py\", line 1220, in worker_heartbeat").replace("INSERT INTO flow_run",
                                                                                          "INSERT INTO worker")
    found = retryable_errors(ONE_503 + heartbeat)
    error = "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) database is locked"
    # the uvicorn record after the first block is the same failure logged again: not a second 503
    assert found == [("deployments.create_flow_run_from_deployment", f"{error} [INSERT INTO flow_run]"),
                     ("workers.worker_heartbeat", f"{error} [INSERT INTO worker]")]


def test_a_log_without_503s_reads_as_none() -> None:
    assert retryable_errors("09:13:33.687 | INFO    | prefect.server - started\n") == []


def test_p95_is_the_nearest_rank() -> None:
    assert p95([float(v) for v in range(1, 21)]) == 19.0  # of 20 values: the 19th
    assert p95([5.0]) == 5.0
    assert p95([3.0, 1.0, 2.0]) == 3.0
