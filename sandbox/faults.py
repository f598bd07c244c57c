"""Fault knobs shared by every sandbox service, changeable while the sandbox runs.

One `Faults` object per sandbox. Each HTTP service wraps its aiohttp app with `fault_middleware(faults,
service, error_responder)`, which, per request and with the configured probabilities, adds latency,
answers an error in that service's own shape (Kubernetes Status, OSS XML, CS/NAS JSON), or drops the
connection without an answer. Watch streams ask `faults.watch_deadline()` how long they may live.

Knobs are changed at run time through `PUT /faults` on the control endpoint (see `sandbox.server`) or
`python -m sandbox faults --dir DIR key=value ...`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from aiohttp import web

# service name -> function(status, code) that builds that service's error response
ErrorResponder = Callable[[web.Request, int, str], web.StreamResponse]
SERVICES = ("k8s", "oss", "cs", "nas", "sts")


@dataclass
class Faults:
    error_rate: float = 0.0  # share of requests answered with an error status
    error_statuses: list[int] = field(default_factory=lambda: [500, 503, 429])
    drop_rate: float = 0.0  # share of requests whose connection is closed without an answer
    latency_ms: int = 0  # added to every request
    watch_drop_after_s: float = 0.0  # >0: watch streams are cut after this many seconds
    # >0: pods/log follow streams end after this many bytes / seconds, cleanly and mid-line if it falls there
    # (as a proxy or load balancer that limits long responses, or an API server restart, ends them)
    log_cut_after_bytes: int = 0
    log_cut_after_s: float = 0.0
    services: list[str] = field(default_factory=lambda: ["k8s", "oss", "cs", "nas"])  # where faults apply
    # ECI knobs (pods as elastic container instances)
    eci_create_fail_rate: float = 0.0  # share of pods whose instance cannot be created
    eci_create_fail_reason: str = "NoStock"  # NoStock | ProviderFailed | ...
    spot_reclaim_after_s: float = 0.0  # >0: spot pods get SpotToBeReleased and end BidFailed after this
    # images the registry does not have (exact, normalized like docker.io/library/x:1, or a shell pattern):
    # their pulls fail with ErrImagePull / ImagePullBackOff (see sandbox/k8s/node/images.py)
    missing_images: list[str] = field(default_factory=list)
    seed: int | None = None

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def update(self, values: dict[str, Any]) -> None:
        """Set knobs from JSON values or `key=value` strings; all or nothing, ValueError naming the bad one."""
        if not isinstance(values, dict):
            raise ValueError("expected a JSON object of fault knobs, e.g. {\"error_rate\": 0.1}")
        known = {f.name: f for f in fields(self) if not f.name.startswith("_")}
        converted: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                raise ValueError(f"unknown fault knob {key!r}; known: {', '.join(sorted(known))}")
            converted[key] = _convert(key, getattr(self, key), value)
        for key, value in converted.items():
            setattr(self, key, value)
        if "seed" in values:
            self._rng = random.Random(self.seed)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def roll(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate

    def pick_status(self) -> int:
        return self._rng.choice(self.error_statuses or [500])

    def log_cut(self) -> tuple[int | None, float | None]:
        """(bytes, seconds) after which a pods/log follow stream ends; None: no limit."""
        return (self.log_cut_after_bytes if self.log_cut_after_bytes > 0 else None,
                self.log_cut_after_s if self.log_cut_after_s > 0 else None)

    def watch_deadline(self) -> float | None:
        return self.watch_drop_after_s if self.watch_drop_after_s > 0 else None


class _Explained(ValueError):
    """A conversion error whose message already says what is wrong."""


def parse_list(value: Any) -> list[Any]:
    """A list knob from JSON (a list) or the command line: `nas,oss`, `[nas]`, `["nas", "oss"]`, `[]`."""
    if isinstance(value, list):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a list, got {value!r}")
    text = value.strip()
    if text.startswith("["):
        if not text.endswith("]"):
            raise ValueError(f"unbalanced brackets in {value!r}")
        text = text[1:-1]
    return [item.strip().strip("'\"") for item in text.split(",") if item.strip().strip("'\"")]


def _convert(key: str, current: Any, value: Any) -> Any:
    """`value` as the type of the knob's current value (the dataclass default's type for None seeds)."""
    try:
        if isinstance(current, bool):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ValueError
            return text in ("1", "true", "yes", "on")
        if isinstance(current, float):
            return float(value)
        if isinstance(current, int) or key == "seed":
            if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
                if key == "seed":
                    return None
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(current, list):
            items = parse_list(value)
            if key == "services" and set(map(str, items)) - set(SERVICES):
                raise _Explained(f"unknown service in {items!r}; services: {', '.join(SERVICES)}")
            return [int(v) for v in items] if key == "error_statuses" else [str(v) for v in items]
        if isinstance(current, str):
            if not isinstance(value, str | int | float):
                raise ValueError
            return str(value)
    except _Explained:
        raise
    except (TypeError, ValueError) as exc:
        kind = type(current).__name__ if current is not None else "int"
        raise ValueError(f"fault knob {key!r} expects {'a list' if kind == 'list' else 'a ' + kind}, "
                         f"got {value!r}") from exc
    return value


def fault_middleware(
    faults: Faults, service: str, respond: ErrorResponder
) -> Callable[[web.Request, Callable[[web.Request], Awaitable[web.StreamResponse]]],
              Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        if service in faults.services:
            if faults.latency_ms > 0:
                await asyncio.sleep(faults.latency_ms / 1000)
            if faults.roll(faults.drop_rate):
                transport = request.transport
                if transport is not None:
                    transport.abort()
                raise asyncio.CancelledError()
            if faults.roll(faults.error_rate):
                status = faults.pick_status()
                return respond(request, status, "injected fault")
        return await handler(request)

    return middleware
