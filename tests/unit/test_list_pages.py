"""``list_pages``: a continue token that keeps expiring is read again from the start a bounded number of times."""

import json
from types import SimpleNamespace
from typing import Any

import pytest

from tasks.cloud import list_pages as lp


class Expired(Exception):
    status = 410


def test_an_expiring_list_starts_over_a_bounded_number_of_times_then_raises() -> None:
    calls: list[str | None] = []
    restarts: list[int] = []

    def list_fn(**kwargs: Any) -> Any:
        calls.append(kwargs["_continue"])
        if kwargs["_continue"]:
            raise Expired()
        return SimpleNamespace(data=json.dumps({"items": [{}], "metadata": {"continue": "next"}}).encode())

    pages = lp.list_pages(list_fn, on_restart=lambda: restarts.append(1))
    with pytest.raises(Expired):
        list(pages)
    assert len(restarts) == lp.EXPIRED_RESTARTS
    assert calls == [None, "next"] * (lp.EXPIRED_RESTARTS + 1)


def test_a_410_on_the_first_page_is_not_an_expired_continue_token() -> None:
    def list_fn(**kwargs: Any) -> Any:
        raise Expired()

    with pytest.raises(Expired):
        list(lp.list_pages(list_fn, on_restart=lambda: pytest.fail("restarted")))
