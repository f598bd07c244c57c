"""The run log on the terminal says what was logged: no emoji codes turned into pictures.

Prefect's console handler prints each record through a Rich ``Console`` built with Rich's default ``emoji=True``
(``prefect.logging.handlers.PrefectConsoleHandler``), and Rich then replaces every ``:name:`` it knows by an
emoji, with or without markup (https://rich.readthedocs.io/en/stable/markup.html#emoji). An Alibaba Cloud ARN such
as ``acs:ram::1234:role/pods`` was printed ``acs🐏:1234:role/pods``, and a workload's line with ``:ok:`` or
``:x:`` in it came out changed. Only the terminal was affected: the API log, the kept log files and OSS get the
record's text.
"""

from __future__ import annotations

import logging

from prefect.logging.handlers import PrefectConsoleHandler


class PlainConsoleHandler(PrefectConsoleHandler):
    """``PrefectConsoleHandler`` with emoji codes left as typed; colours and highlighting unchanged."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.print(self.format(record), soft_wrap=True, emoji=False)
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - as logging.StreamHandler.emit: report through handleError, go on
            self.handleError(record)


def plain_console_logging(loggers: tuple[logging.Logger, ...] | None = None) -> int:
    """Make every Prefect console handler on ``loggers`` (default: the root and ``prefect`` loggers, where
    Prefect's logging configuration puts it) print emoji codes as typed. The handler keeps its stream, level,
    formatter and theme (its class becomes ``PlainConsoleHandler``, which adds no state). Returns how many
    handlers were changed; idempotent."""
    changed = 0
    for logger in loggers or (logging.getLogger(), logging.getLogger("prefect")):
        for handler in logger.handlers:
            if type(handler) is PrefectConsoleHandler:
                handler.__class__ = PlainConsoleHandler
                changed += 1
    return changed
