"""The run log on the terminal shows the logged text: Rich's emoji codes are not replaced (flows/console.py)."""

from __future__ import annotations

import io
import logging

from prefect.logging.handlers import PrefectConsoleHandler

from flows.console import plain_console_logging

LINE = "pods use RRSA: ServiceAccount askb assumes RAM role acs:ram::1000000000000001:role/ask-batch-pods; :ok: :x:"


def test_an_arn_and_emoji_codes_reach_the_terminal_as_logged() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("ask-batch-test-console")
    logger.propagate, logger.level = False, logging.INFO
    handler = PrefectConsoleHandler(stream=stream, styles={"log.info_level": "cyan"})
    logger.addHandler(handler)
    try:
        assert plain_console_logging((logger,)) == 1
        assert plain_console_logging((logger,)) == 0  # already plain
        logger.info(LINE)
        assert stream.getvalue() == LINE + "\n"
        assert handler.stream is stream and handler.level == logging.NOTSET
    finally:
        logger.removeHandler(handler)
