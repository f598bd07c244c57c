"""The run summary: the Markdown artifact every run publishes, whatever happened."""

from typing import Any

from flows.run_files import kept_logs_dir
from tasks.handles import ClusterHandle, JobHandle, JobReport
from tasks.render.acs_cost import estimate_acs_job
from tasks.render.cost import estimate_job
from tasks.render.manifests import run_prefix
from tasks.spec import BatchSpec


def summary_markdown(spec: BatchSpec, *, run_key: str, name: str, cluster: ClusterHandle | None,
                     job: JobHandle | None, report: JobReport | None, outputs: Any, teardown: Any,
                     error: str | None, saved_logs: dict[str, str] | None = None,
                     logs_problem: str | None = None) -> str:
    """The run summary artifact: cluster, job, per-index record, outputs, pod logs, cost, teardown.

    ``saved_logs`` (pod -> OSS key) are the logs a failed run uploaded itself (a successful run's are in
    ``outputs.log_keys``); ``logs_problem`` says why that upload did not happen.
    """
    lines = [f"# ask-batch run `{name}`", ""]
    lines.append(f"**Result:** {'succeeded' if error is None else 'FAILED'}")
    if error:
        lines += ["", "```", error, "```"]
    lines += ["", "## Cluster"]
    if cluster:
        lines.append(f"- {cluster.mode} cluster `{cluster.name or cluster.kubeconfig_source}` ({cluster.kind.upper()})"
                     f"{f' (`{cluster.cluster_id}`)' if cluster.cluster_id else ''}, region `{cluster.region}`, "
                     f"namespace `{cluster.namespace}`{', created by this run' if cluster.created else ''}")
    else:
        lines.append("- not reached")
    lines += ["", "## Job"]
    if job:
        lines.append(f"- `{job.namespace}/{job.name}` ({job.completions} indexes, parallelism "
                     f"{spec.job.parallelism}, image `{spec.job.image}`)"
                     f"{' — re-attached to an existing Job' if job.adopted else ''}")
    else:
        lines.append("- not launched")
    per_index = {}
    if outputs is not None:
        per_index = {i.index: i for i in outputs.indexes}
    if report:
        lines += ["", "| index | status | attempts | exit code | reason | duration (s) | outputs |",
                  "|---|---|---|---|---|---|---|"]
        for r in report.indexes:
            out = per_index.get(r.index)
            out_txt = (f"{len(out.objects)} object(s){'' if out.complete else ' — ' + (out.problem or 'incomplete')}"
                       if out else "")
            lines.append(f"| {r.index} | {r.status} | {r.attempts} | {'' if r.exit_code is None else r.exit_code} "
                         f"| {r.reason or ''}{f' ({r.reclaims} reclaimed)' if r.reclaims else ''} | {r.seconds:.1f} "
                         f"| {out_txt} |")
    lines += ["", "## Outputs"]
    prefix = run_prefix(spec.outputs, run_key=run_key, flow_run_name=name)
    lines.append(f"- OSS: `oss://{spec.outputs.bucket}/{prefix}`")
    if outputs is not None and outputs.download_dir:
        lines.append(f"- downloaded to `{outputs.download_dir}` ({outputs.total_bytes} bytes"
                     f"{', complete' if outputs.complete else f', missing indexes {outputs.missing}'})")
    in_oss = saved_logs if saved_logs is not None else (outputs.log_keys if outputs is not None else None)
    if in_oss:
        lines.append(f"- pod logs: {len(in_oss)} in OSS under `oss://{spec.outputs.bucket}/{prefix}logs/`, "
                     f"and copied to `{kept_logs_dir(spec, name)}/`")
    else:
        lines.append(f"- pod logs: `{kept_logs_dir(spec, name)}/`"
                     f"{f' (not uploaded to OSS: {logs_problem})' if logs_problem else ''}")
    if report:
        estimator = estimate_acs_job if cluster is not None and cluster.kind == "acs" else estimate_job
        cost = estimator(spec.job, [r.seconds for r in report.indexes], region=spec.target.region)
        lines += ["", "## Estimated cost", f"- {cost.summary()}"]
        lines += [f"- {note}" for note in cost.notes]
        lines.append(f"- prices: {cost.source}")
    if teardown is not None:
        lines += ["", "## Teardown"] + [f"- {line}" for line in teardown.lines()]
    return "\n".join(lines) + "\n"

