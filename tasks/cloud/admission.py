"""The one door every run goes through: parameters and input files validated once, completely, before anything exists.

The CLI, ``--dry-run``, the deployments' build step (``prefect deploy``) and the flow itself all call ``admit``, so
each path refuses the same inputs with the same words: a ``tasks.errors.SpecError`` with one line per problem
(exit 2 on the CLI, a failed flow run with that message in Prefect). It checks, in order, without any cloud call:

1. the parameters' size as Prefect measures it (``tasks.cloud.params.check_parameter_size``);
2. every field and cross-field rule of ``tasks.spec.BatchSpec`` (the limits the cloud enforces, with their sources);
3. the input files and secrets the pods get, read with bounds (``tasks.cloud.inputs``), and the 1 MiB each
   ConfigMap and Secret can hold;
4. ``job.pod_template_patch``: the patch against the Kubernetes schema, the patched pod template against the strict
   schema, and nothing ask-batch relies on changed (``tasks.render.pod_patch``; rendering the Job applies it);
5. the rendered Job against Kubernetes' object size limit (``MAX_OBJECT_BYTES``).

Prefect Secret blocks are read only when the caller passes ``load_secret`` (the flow does; the CLI and the dry run
do not, so their values are placeholders and their size is checked again when the flow publishes the Secret).
"""

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tasks.cloud.inputs import MAX_OBJECT_BYTES, collect_config_content
from tasks.cloud.params import check_parameter_size
from tasks.errors import SpecError
from tasks.render.compute import ClusterKind
from tasks.render.manifests import ConfigContent, JobInputs, job_manifest, pod_oss_env
from tasks.spec import BatchSpec, parse_spec

#: Run key used to render the Job when the real one is not known yet (the longest a run key may be: 40).
_PLACEHOLDER_RUN_KEY = "x" * 40


def placeholder_secret(name: str) -> str:
    """What the CLI and the dry run use for a Prefect Secret block's value (not fetched before the flow runs)."""
    return f"<value of Prefect Secret block {name}>"


@dataclass(frozen=True)
class Admitted:
    """A run that may start: its validated spec and the exact bytes its pods get."""

    spec: BatchSpec
    content: ConfigContent


def admit(params: Mapping[str, Any] | BatchSpec, *,
          load_secret: Callable[[str], str] = placeholder_secret) -> Admitted:
    """Validate the parameters and read the run's inputs; raise ``SpecError`` listing every problem.

    Args:
        params: the parameters (a mapping as read from a file or sent by Prefect) or a ``BatchSpec``.
        load_secret: Prefect Secret block name -> value; the default returns a placeholder (no server needed).

    Raises:
        SpecError: one ``(field, message)`` per problem; nothing was created and no cloud API was called.
    """
    if isinstance(params, BatchSpec):
        data: dict[str, Any] = params.model_dump(mode="json")
    elif isinstance(params, Mapping):
        data = dict(params)
    else:
        raise SpecError([("(spec)", f"is a {type(params).__name__}, not a mapping of BatchSpec fields; fix: pass "
                                    f"the parameters as a mapping")])
    check_parameter_size(data)
    spec = parse_spec(data)
    content = collect_config_content(spec.config, load_secret=load_secret)
    _check_job_size(spec, content)
    return Admitted(spec=spec, content=content)


def _placeholder_inputs(spec: BatchSpec, content: ConfigContent) -> JobInputs:
    """The names the Job refers to, as long as they can be, for rendering it before anything exists."""
    return JobInputs(config_map="x" * 63 if content.files else None,
                     secret="x" * 63 if content.secret_files or content.secret_env else None,
                     secret_file_keys=tuple(sorted(content.secret_files)),
                     secret_env_keys=tuple(sorted(content.secret_env)),
                     claim_name="x" * 63 if spec.storage.mode != "none" else None,
                     oss_env=pod_oss_env(spec, run_key=_PLACEHOLDER_RUN_KEY,
                                         flow_run_name=f"ask-batch-{_PLACEHOLDER_RUN_KEY}"))


def _check_job_size(spec: BatchSpec, content: ConfigContent) -> None:
    """Refuse a Job whose manifest is over 1 MiB (etcd's request limit is 1.5 MiB; the Job must also fit in it).

    Rendering the Job also applies and checks ``job.pod_template_patch`` (a ``SpecError`` naming its paths), on
    the pod template of the cluster kind the parameters name (ASK unless ``cluster.mode`` is 'acs').

    https://etcd.io/docs/v3.5/dev-guide/limit/ ("request size limit ... 1.5 MiB").
    """
    kind: ClusterKind = "acs" if spec.cluster.mode == "acs" else "ask"
    body = job_manifest(spec, run_key=_PLACEHOLDER_RUN_KEY, inputs=_placeholder_inputs(spec, content), kind=kind)
    size = len(json.dumps(body).encode())
    if size > MAX_OBJECT_BYTES:
        raise SpecError([("job", f"the Job manifest would be {size:,} bytes, over {MAX_OBJECT_BYTES:,} (1 MiB); fix: "
                                 f"move long command, args or env values into config files")])
