"""Reading a parameter file (YAML or JSON) and ``--set a.b=value`` changes, with bounds on everything.

Why bounded: a parameter file is small, but nothing stops it from being large, deeply nested or a "billion laughs"
(a few KB of YAML anchors and aliases that expand to 10^7 nodes and gigabytes in ``yaml.safe_load``). This loader

- reads at most ``MAX_PARAMS_FILE_BYTES`` from a regular file (``tasks.cloud.local_files``), as UTF-8;
- composes the YAML with PyYAML's safe loader while counting nesting depth (``MAX_DEPTH``) and aliases
  (``MAX_ALIASES``), and before constructing any Python object walks the composed graph to count the nodes the
  aliases would expand to (``MAX_NODES``) — recursive aliases are refused;
- refuses parameters that Prefect would refuse anyway: more than ``PREFECT_SERVER_API_MAX_PARAMETER_SIZE`` bytes
  of JSON (524,288 by default; https://docs.prefect.io/v3/api-ref/settings-ref#max-parameter-size).

Every failure is a ``tasks.errors.SpecError`` (exit 2 on the CLI), one line per problem, naming the file or ``--set``.
"""

import json
from pathlib import Path
from typing import Any

import yaml

from tasks.cloud.local_files import decode_utf8, read_regular_file
from tasks.errors import SpecError

#: The largest parameter file read (Prefect stores at most 512 KiB of parameters; comments and YAML take room).
MAX_PARAMS_FILE_BYTES = 1024 * 1024
#: The deepest nesting accepted (a BatchSpec is 5 levels deep; pod_failure_policy adds a few).
MAX_DEPTH = 32
#: The most aliases (``*name``) in one document.
MAX_ALIASES = 64
#: The most nodes after expanding every alias (a BatchSpec with 100 env vars is well under 1,000).
MAX_NODES = 50_000
#: Prefect's default ``server.api.max_parameter_size``, used when the setting cannot be read.
PREFECT_DEFAULT_MAX_PARAMETER_SIZE = 524_288


class _Refused(yaml.YAMLError):
    """The document is over one of the bounds (depth, aliases, expanded size)."""


class BoundedSafeLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader with bounds on nesting depth, aliases and the expanded node count."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: D102 - PyYAML's hook
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Refused(f"more than {MAX_ALIASES} aliases (*name); fix: write the values out")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Refused(f"nested more than {MAX_DEPTH} levels deep; fix: flatten it")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_data(self) -> Any:  # noqa: D102 - PyYAML's hook
        node = self.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return self.construct_document(node)


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a node graph that expands to more than MAX_NODES nodes or MAX_DEPTH levels, or that is recursive."""
    memo: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, levels below it)
    active: set[int] = set()

    def walk(node: yaml.Node, level: int) -> tuple[int, int]:
        key = id(node)
        if key in memo:
            if level + memo[key][1] > MAX_DEPTH:
                raise _Refused(f"nested more than {MAX_DEPTH} levels deep once aliases are expanded; fix: flatten "
                               f"it")
            return memo[key]
        if key in active:
            raise _Refused("an alias refers to the node that contains it (a recursive structure); fix: remove it")
        if level > MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep once aliases are expanded; fix: flatten it")
        active.add(key)
        count, depth = 1, 0
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        for child in children:
            n, d = walk(child, level + 1)
            count, depth = count + n, max(depth, d + 1)
            if count > MAX_NODES:
                raise _Refused(f"expands to more than {MAX_NODES:,} values (YAML aliases repeat what they refer "
                               f"to); fix: write the values out, without anchors")
        active.discard(key)
        memo[key] = (count, depth)
        return count, depth

    walk(root, 1)


def _parse(text: str) -> Any:
    loader = BoundedSafeLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _problem(exc: Exception) -> str:
    if isinstance(exc, _Refused):
        return f"not accepted: {exc}"
    if isinstance(exc, yaml.YAMLError):
        return f"not valid YAML ({(str(exc).splitlines() or [type(exc).__name__])[0]}); fix: correct the syntax"
    return f"holds a value that cannot be read ({exc}); fix: shorten it"  # e.g. an int of over 4,300 digits


def load_yaml(text: str, *, field: str) -> Any:
    """One YAML (or JSON) document, bounded as the module docstring says; ``SpecError`` naming ``field``."""
    try:
        return _parse(text)
    except (yaml.YAMLError, ValueError, OverflowError) as exc:
        raise SpecError([(field, _problem(exc))]) from None


def load_params_file(path: str | Path) -> dict[str, Any]:
    """The parameter file as a dict (bounded read, UTF-8, bounded YAML).

    Raises:
        SpecError: one problem naming ``--params <path>``: unreadable, too big, not UTF-8, not YAML, over a bound,
            or not a mapping.
    """
    field = f"--params {path}"
    data = read_regular_file(path, limit=MAX_PARAMS_FILE_BYTES, field=field,
                             fix="parameters are small; put data in config.local_paths or on the shared volume")
    value = load_yaml(decode_utf8(data, field=field, what="the file"), field=field)
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise SpecError([(field, f"is a {type(value).__name__}, not a mapping of BatchSpec fields; fix: start "
                                 f"with 'job:'")])
    return value


def apply_sets(data: dict[str, Any], sets: list[str] | None) -> dict[str, Any]:
    """``data`` with each ``a.b=value`` applied in place (the value read as bounded YAML; a bad one stays text).

    Raises:
        SpecError: one problem per malformed ``--set``.
    """
    problems: list[tuple[str, str]] = []
    for item in sets or []:
        dotted, sep, raw = item.partition("=")
        parts = dotted.split(".")
        if not sep or not all(parts):
            problems.append((f"--set {item!r}", "expected a.b=value; fix: e.g. --set job.completions=4"))
            continue
        try:
            value = _parse(raw) if raw else ""
        except _Refused as exc:
            problems.append((f"--set {dotted}", _problem(exc)))
            continue
        except (yaml.YAMLError, ValueError, OverflowError):
            value = raw  # not YAML: the text itself, as a shell user means it
        node = data
        *parents, leaf = parts
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[leaf] = value
    if problems:
        raise SpecError(problems)
    return data


def max_parameter_size() -> int:
    """The Prefect server's parameter limit in bytes (``PREFECT_SERVER_API_MAX_PARAMETER_SIZE``; 0 = none)."""
    try:
        from prefect.settings import get_current_settings

        return int(get_current_settings().server.api.max_parameter_size)
    except Exception:  # noqa: BLE001 - an unreadable setting falls back to Prefect's documented default
        return PREFECT_DEFAULT_MAX_PARAMETER_SIZE


def check_parameter_size(params: dict[str, Any]) -> None:
    """Refuse parameters Prefect would refuse: ``{"spec": params}`` as compact JSON over ``max_parameter_size``.

    Prefect measures ``json.dumps(parameters, separators=(",", ":"))`` in bytes (prefect/_internal/schemas/
    validators.py, ``validate_parameter_size``); this does the same, so the answer is the server's.
    """
    limit = max_parameter_size()
    if limit <= 0:
        return
    try:
        size = len(json.dumps({"spec": params}, separators=(",", ":"), default=str).encode())
    except (TypeError, ValueError) as exc:
        raise SpecError([("(spec)", f"cannot be sent as JSON ({exc}); fix: use plain YAML values")]) from None
    if size > limit:
        raise SpecError([("(spec)", f"the parameters are {size:,} bytes as JSON, over Prefect's limit of "
                                    f"{limit:,} (PREFECT_SERVER_API_MAX_PARAMETER_SIZE); fix: move big values "
                                    f"into files listed in config.local_paths")])
