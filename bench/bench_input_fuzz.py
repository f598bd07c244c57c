"""The door under a long fuzz: specs generated around every field's limits, counted by outcome.

    .venv/bin/python bench/bench_input_fuzz.py [--examples 5000] [--seed 0] [--derandomize] [--no-write]

The same generator and check as ``tests/unit/test_spec_properties.py`` (which runs 300 examples in ``make test``),
for many more examples and without stopping at the first failure: every generated spec is given to
``tasks.cloud.admission.admit``; an accepted one must render a Job, ConfigMap and Secret that pass the Kubernetes
1.32 strict schema (kubernetes-validate's). Outcomes:

- **accepted**: admitted, and every rendered object is schema-valid;
- **rejected**: refused with ``SpecError`` naming at least one field;
- **crashes**: anything else (another exception, or an accepted spec whose manifests fail the schema) — must be 0.
"""

from __future__ import annotations

import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import base_parser, command_line, load_average, provenance, table, write_section  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__, repeat=1)
    parser.add_argument("--examples", type=int, default=5000, help="generated specs (default 5000)")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed (default 0)")
    parser.add_argument("--derandomize", action="store_true",
                        help="the examples `make test` runs (its 'ci' profile); with --examples 300")
    args = parser.parse_args(argv)
    started_load = load_average()

    from hypothesis import HealthCheck, Phase, given, seed, settings

    from tests.unit.test_spec_properties import check, specs

    counts: collections.Counter[str] = collections.Counter()
    crashes: list[str] = []

    @seed(args.seed)
    @settings(max_examples=args.examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), derandomize=args.derandomize)
    @given(specs())
    def run(params: dict) -> None:
        counts["cases"] += 1
        try:
            counts["accepted" if check(params) else "rejected"] += 1
        except Exception as exc:  # noqa: BLE001 - counted and listed, never hidden
            counts["crashes"] += 1
            crashes.append(f"{type(exc).__name__}: {str(exc)[:200]} <- {str(params)[:300]}")

    t0 = time.perf_counter()
    run()
    seconds = time.perf_counter() - t0
    rows = [[counts["cases"], counts["accepted"], counts["rejected"], counts["crashes"], f"{seconds:.1f}"]]
    body = "\n".join([
        provenance(command_line(argv), started_load), "",
        table(["cases", "accepted", "rejected", "crashes", "seconds"], rows), "",
        *(f"- crash: `{c}`" for c in crashes[:20]),
        f"Closing note: {counts['cases']} generated specs, {counts['accepted']} accepted (every manifest "
        f"schema-valid), {counts['rejected']} rejected with SpecError, {counts['crashes']} crashes.",
    ])
    print(body)
    if not args.no_write:
        write_section("## Input fuzz: the door (bench_input_fuzz.py)", body)
    return 1 if counts["crashes"] else 0


if __name__ == "__main__":
    sys.exit(main())
