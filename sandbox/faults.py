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


@dataclass
class Faults:
    error_rate: float = 0.0  # share of requests answered with an error status
    error_statuses: list[int] = field(default_factory=lambda: [500, 503, 429])
    drop_rate: float = 0.0  # share of requests whose connection is closed without an answer
    latency_ms: int = 0  # added to every request
    watch_drop_after_s: float = 0.0  # >0: watch streams are cut after this many seconds
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
        known = {f.name: f for f in fields(self)}
        for key, value in values.items():
            if key not in known:
                raise ValueError(f"unknown fault knob {key!r}; known: {', '.join(sorted(known))}")
            current = getattr(self, key)
            if isinstance(current, bool):
                value = str(value).lower() in ("1", "true", "yes")
            elif isinstance(current, float):
                value = float(value)
            elif isinstance(current, int) and current is not None:
                value = int(value)
            elif isinstance(current, list) and isinstance(value, str):
                items = [v.strip() for v in value.split(",") if v.strip()]
                value = [int(v) for v in items] if key == "error_statuses" else items
            setattr(self, key, value)
        if "seed" in values:
            self._rng = random.Random(self.seed)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def roll(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate

    def pick_status(self) -> int:
        return self._rng.choice(self.error_statuses or [500])

    def watch_deadline(self) -> float | None:
        return self.watch_drop_after_s if self.watch_drop_after_s > 0 else None


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
