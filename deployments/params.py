"""Turn a parameter file into the JSON ``prefect deployment run --params`` takes, aimed at the wired target.

    prefect deployment run ask-batch/adhoc --params "$(python -m deployments.params deployments/example.yaml \
        --set job.completions=3 --set job.parallelism=3)" --watch

Why: the flow takes one parameter per section of a ``BatchSpec`` (``job``, ``config``, ``outputs``, ...), and the
server merges a run's parameters into the deployment's by name, so ``--param job='{...}'`` replaces the ``job``
section and keeps the others. To send a whole parameter file instead, this prints its sections, with ``--set``
changes applied (``flows.cli.load_params``), validated, and ``target`` replaced by a reference to the wired
target variable, so the run goes where ``deployments.wire`` pointed the server.
"""

import argparse
import json
import sys

from deployments.steps import TARGET_VARIABLE, sections_of, target_reference


def run_parameters(path: str, sets: list[str] | None = None, *,
                   target_variable: str | None = TARGET_VARIABLE) -> dict[str, object]:
    """The flow's parameters for a run: the file with ``sets`` applied, validated, target -> the wired variable.

    Raises:
        ValueError: the file cannot be read, a ``--set`` is malformed, or the result is not a valid BatchSpec.
    """
    from flows.cli import load_params
    from tasks.cloud.admission import admit

    data = load_params(path, sets)
    admit(data)
    if target_variable:
        data["target"] = target_reference(target_variable)
    return {name: value for name, value in sections_of(data).items() if name in data}


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m deployments.params", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("params", help="parameter file (YAML or JSON), e.g. deployments/example.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="a.b=VALUE", help="change one field")
    parser.add_argument("--variable", default=TARGET_VARIABLE,
                        help="Prefect variable with the target ('' keeps the file's own target)")
    args = parser.parse_args(argv)
    try:
        params = run_parameters(args.params, args.set, target_variable=args.variable or None)
    except ValueError as exc:
        print(f"params: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(params, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
