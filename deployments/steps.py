"""Build steps that ``prefect deploy`` runs (``build:`` in prefect.yaml), so the deployments work from any clone.

Why build steps and not literal values in prefect.yaml:

- **The working directory.** A process worker runs the flow wherever the deployment's pull step points it. A
  literal path in prefect.yaml only works on the machine that wrote it, and leaving ``pull:`` out makes
  ``prefect deploy`` bake in *its* current directory (the ``pull`` section:
  https://docs.prefect.io/v3/deploy/infrastructure-concepts/prefect-yaml). ``project_directory`` returns the
  directory of the clone that holds this file, whatever the current directory, and the pull step uses it as
  ``{{ project.directory }}``.
- **The parameters.** prefect.yaml cannot include another file, and a spec copied into it drifts from the files
  in ``deployments/`` that ``make run`` and the tests use. ``spec_parameters`` reads such a file, validates it
  as a ``BatchSpec`` (an invalid parameter file fails ``prefect deploy``, not the 02:00 run), and hands its
  sections to the deployment as ``{{ <step id>.job }}``, ``{{ <step id>.config }}``, ... (the flow takes one
  parameter per section, ``flows.run_files.SECTIONS``).
- **The target.** Where a run goes (region, credentials by Secret block name, endpoint overrides) is not part of
  the job: ``python -m deployments.wire`` writes it once per Prefect server into the variable ``ask_batch_target``,
  and prefect.yaml hands it to ``spec_parameters`` as ``target: "{{ prefect.variables.ask_batch_target }}"``
  (``prefect deploy`` resolves that before the step runs). It has to be resolved at deploy time: the server
  validates a deployment's default parameters against the flow's schema *as given*, so a run-time reference
  (``{"__prefect_kind": "workspace_variable", ...}``) is refused there (``additionalProperties``). In the
  parameters of a *run* such a reference is fine: the server resolves it before it validates, which is what
  ``python -m deployments.params`` emits. Re-wiring thus takes effect at once for runs started that way, and for
  the deployments' defaults (the nightly schedule) after the next ``prefect deploy --all`` (``make up`` does both).
"""

import os
from pathlib import Path
from typing import Any

#: The clone this module belongs to (deployments/ sits at the project root).
PROJECT_ROOT = Path(__file__).resolve().parents[1]

#: The Prefect variable that ``deployments.wire`` writes and deployment parameters refer to.
TARGET_VARIABLE = "ask_batch_target"


def target_reference(variable: str = TARGET_VARIABLE) -> dict[str, str]:
    """A parameter value the Prefect server replaces by the JSON value of ``variable`` when it creates a run."""
    return {"__prefect_kind": "workspace_variable", "variable_name": variable}


def project_directory() -> dict[str, str]:
    """Build step: ``{"directory": <absolute path of this clone>}`` for the ``set_working_directory`` pull step.

    Example (prefect.yaml):
        build:
          - deployments.steps.project_directory: {id: project}
        pull:
          - prefect.deployments.steps.set_working_directory: {directory: "{{ project.directory }}"}
    """
    return {"directory": str(PROJECT_ROOT)}


def load_spec_file(path: str | Path) -> dict[str, Any]:
    """A parameter file (YAML or JSON) as a dict, validated as a ``BatchSpec``; relative paths are from the clone.

    Raises:
        SpecError (a ValueError): the file is missing, too big, not a mapping, or not a valid BatchSpec, or its input
            files cannot be shipped (naming every bad field).
    """
    from tasks.cloud.admission import admit
    from tasks.cloud.params import load_params_file

    file = Path(path)
    if not file.is_absolute():
        file = PROJECT_ROOT / file
    data = load_params_file(file)  # bounded: size, depth, aliases, UTF-8 (a SpecError names the file)
    admit(data)  # the CLI's door: every field, the input files, the 1 MiB objects; one line per problem
    return data


def spec_parameters(path: str, target: dict[str, Any] | str | None = None) -> dict[str, Any]:
    """Build step: the parameter file's sections, validated, with ``target`` replaced by the wired one.

    Args:
        path: the parameter file, relative to the project root (e.g. ``deployments/nightly.yaml``).
        target: the wired target, normally ``"{{ prefect.variables.ask_batch_target }}"`` in prefect.yaml. An
            empty string is what Prefect makes of a variable that does not exist: an error that says to wire.
            ``None`` keeps the file's own ``target``.

    Returns:
        ``{"job": dict, "config": dict, ..., "run_key": str}`` (every name in ``flows.run_files.SECTIONS``; a
        section the file leaves out is ``{}``, its defaults): use them as
        ``parameters: {job: "{{ <step id>.job }}", config: "{{ <step id>.config }}", ...}``.

    Raises:
        ValueError: no target is wired, or the file (with the target) is not a valid BatchSpec; ``prefect
            deploy`` then fails naming the field and the fix.
    """
    from tasks.cloud.admission import admit
    from tasks.spec import Target

    if target is not None:
        if not isinstance(target, dict):
            raise ValueError(f"no target is wired (the Prefect variable {TARGET_VARIABLE!r} is missing or not a "
                             f"JSON object); fix: run `python -m deployments.wire --sandbox DIR` or "
                             f"`python -m deployments.wire --region REGION` first")
        target = Target.model_validate(target).model_dump(mode="json")
    # Local paths in a spec (config.local_paths, secret files) are relative to the working directory of the run,
    # which the pull step sets to the project root; validate them from there too.
    cwd = Path.cwd()
    os.chdir(PROJECT_ROOT)
    try:
        data = load_spec_file(path)
        if target is not None:
            data["target"] = target
            admit(data)
    finally:
        os.chdir(cwd)
    return sections_of(data)


def sections_of(data: dict[str, Any]) -> dict[str, Any]:
    """A ``BatchSpec`` mapping as the flow's parameters: one entry per section, ``{}`` (or ``""``) when absent."""
    from flows.run_files import SECTIONS

    return {name: data.get(name) or ("" if name == "run_key" else {}) for name in SECTIONS}

