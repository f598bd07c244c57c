"""Kubernetes resource quantities ("250m", "1.5", "512Mi", "1G", "1e3") and a pod's effective requests.

The scheduler and the virtual node both need them: the scheduler to fit pods on the node, the node to
enforce memory limits and to report `resourceFieldRef` values. Only cpu and memory matter here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

_SUFFIX: dict[str, Decimal] = {
    "": Decimal(1),
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": Decimal(10**3), "K": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9),
    "T": Decimal(10**12), "P": Decimal(10**15), "E": Decimal(10**18),
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40),
    "Pi": Decimal(2**50), "Ei": Decimal(2**60),
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


def parse_quantity(value: Any) -> Decimal:
    """A quantity as a Decimal in base units (cores, bytes). Raises ValueError when malformed."""
    if isinstance(value, int | float):
        return Decimal(str(value))
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError(f"quantities must match the regular expression '{_QUANTITY.pattern}': {value!r}")
    try:
        return Decimal(match.group(1)) * _SUFFIX[match.group(2)]
    except InvalidOperation as exc:
        raise ValueError(f"invalid quantity {value!r}") from exc


def cpu_millis(value: Any) -> int:
    """CPU in millicores, rounded up as the scheduler does ("0.1" -> 100, "1" -> 1000)."""
    return int((parse_quantity(value) * 1000).to_integral_value(rounding="ROUND_CEILING"))


def memory_bytes(value: Any) -> int:
    return int(parse_quantity(value).to_integral_value(rounding="ROUND_CEILING"))


@dataclass(frozen=True)
class Requests:
    cpu_m: int = 0
    memory: int = 0

    def __add__(self, other: Requests) -> Requests:
        return Requests(self.cpu_m + other.cpu_m, self.memory + other.memory)

    def __sub__(self, other: Requests) -> Requests:
        return Requests(self.cpu_m - other.cpu_m, self.memory - other.memory)

    def covers(self, other: Requests) -> bool:
        """True when every resource of `other` is at least this one's (used to skip hopeless pods)."""
        return other.cpu_m >= self.cpu_m and other.memory >= self.memory


def container_requests(container: dict[str, Any]) -> Requests:
    """A container's requests; a limit stands in for a missing request, as API defaulting does."""
    resources = container.get("resources") or {}
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    cpu = requests.get("cpu", limits.get("cpu"))
    memory = requests.get("memory", limits.get("memory"))
    return Requests(cpu_millis(cpu) if cpu is not None else 0, memory_bytes(memory) if memory is not None else 0)


def pod_requests(pod: dict[str, Any]) -> Requests:
    """Effective pod requests: max(sum over containers, largest init container), per resource."""
    spec = pod.get("spec") or {}
    total = Requests()
    for container in spec.get("containers") or []:
        total = total + container_requests(container)
    cpu, memory = total.cpu_m, total.memory
    for container in spec.get("initContainers") or []:
        req = container_requests(container)
        cpu, memory = max(cpu, req.cpu_m), max(memory, req.memory)
    overhead = spec.get("overhead") or {}
    if "cpu" in overhead:
        cpu += cpu_millis(overhead["cpu"])
    if "memory" in overhead:
        memory += memory_bytes(overhead["memory"])
    return Requests(cpu, memory)


def format_cpu(millis: int) -> str:
    return f"{millis // 1000}" if millis % 1000 == 0 else f"{millis}m"


def format_memory(value: int) -> str:
    for suffix, factor in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if value and value % factor == 0:
            return f"{value // factor}{suffix}"
    return str(value)
