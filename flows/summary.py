"""The run summary: the Markdown artifact every run publishes, whatever happened."""

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flows.run_files import kept_logs_dir, ledger_path
from tasks.handles import ClusterHandle, JobHandle, JobReport
from tasks.render.acs_cost import estimate_acs_job
from tasks.render.cost import estimate_job
from tasks.render.manifests import run_prefix
from tasks.render.redact import Scrubber
from tasks.spec import BatchSpec
from tasks.stages.outputs import indexes_text

#: Index rows the summary lists at most; a larger Job lists only its indexes that did not simply succeed on their
#: first attempt (a Markdown artifact of 100,000 rows is ~10 MB, more than the Prefect UI shows well).
SUMMARY_MAX_ROWS = 1000


def attempts_text(record: Any) -> str:
    """An index's attempts in one cell: ``3: reclaimed (spot), reclaimed (spot), succeeded (on-demand)``."""
    if not record.attempts:
        return "0"
    return f"{len(record.attempts)}: " + ", ".join(
        f"{a.outcome} ({'spot' if a.spot else 'on-demand'})" for a in record.attempts)


def summary_markdown(spec: BatchSpec, *, run_key: str, name: str, cluster: ClusterHandle | None,
                     job: JobHandle | None, report: JobReport | None, outputs: Any, teardown: Any,
                     error: str | None, saved_logs: Mapping[str, str] | None = None,
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
        if report is not None and report.on_demand:
            lines.append(f"- on demand: {len(report.on_demand)} index(es) reclaimed {spec.job.eci.max_reclaims} "
                         f"times ran their last try on demand (pay-as-you-go), in follow-up Jobs: "
                         f"{', '.join(map(str, report.on_demand[:20]))}{' ...' if len(report.on_demand) > 20 else ''}")
        elif report is not None and (report.reused or report.follow_ups):
            lines.append(f"- re-run of missing indexes: {len(report.reused)} reused from an earlier attempt, "
                         f"{len(report.follow_ups)} run again as follow-up Jobs "
                         f"({', '.join(f'`{j.name}`' for j in report.follow_ups[:10])})")
    else:
        lines.append("- not launched")
    if report:
        lines += ["", "| index | status | attempts | exit code | reason | duration (s) | billed (s) | outputs |",
                  "|---|---|---|---|---|---|---|---|"]
        shown = report.records() if report.index_count <= SUMMARY_MAX_ROWS else iter(
            report.indexes[:SUMMARY_MAX_ROWS])
        for r in shown:
            out_txt = outputs.outputs_text(r.index) if outputs is not None and r.index < outputs.completions else ""
            lines.append(f"| {r.index} | {r.status} | {attempts_text(r)} | "
                         f"{'' if r.exit_code is None else r.exit_code} | {r.reason or ''} | {r.seconds:.1f} | "
                         f"{r.billed_seconds:.1f} | {out_txt} |")
        if report.index_count > SUMMARY_MAX_ROWS:
            hidden = len(report.indexes) - min(len(report.indexes), SUMMARY_MAX_ROWS)
            lines.append(f"\n_{report.index_count:,} indexes: the {min(len(report.indexes), SUMMARY_MAX_ROWS):,} "
                         f"that did not simply succeed on their first attempt are listed"
                         f"{f' (the first {SUMMARY_MAX_ROWS:,}; {hidden:,} more not shown)' if hidden else ''}; "
                         f"the other {len(report.succeeded_once):,} succeeded on their first attempt._")
        lines.append(f"\nEvery index, one JSON object per line: `{ledger_path(spec, name)}`")
        if report.job_gone:
            lines.append("\n_The Job was gone when the wait began (removed by its TTL, or deleted): the outputs "
                         "decided the verdict._")
    lines += ["", "## Outputs"]
    prefix = run_prefix(spec.outputs, run_key=run_key, flow_run_name=name)
    lines.append(f"- OSS: `oss://{spec.outputs.bucket}/{prefix}`")
    if outputs is not None:
        missing = (f"{len(outputs.missing)} missing indexes {indexes_text(outputs.missing)}" if outputs.missing
                   else "complete")
        lines.append(f"- {outputs.total_objects} object(s) of {outputs.total_bytes} bytes for {outputs.completions} "
                     f"indexes, {missing}")
        if outputs.download_dir:
            lines.append(f"- downloaded to `{outputs.download_dir}` ({outputs.total_bytes} bytes"
                         f"{', complete' if outputs.complete else ', incomplete'})")
        if outputs.manifest_file:
            lines.append(f"- manifest: `{outputs.manifest_file}` (one JSON line per object: key, size, CRC-64, "
                         f"local path, link; then one per index: complete, problem, pod log keys)")
    lines.append(f"- {verification(spec)}")
    in_oss = saved_logs if saved_logs is not None else (outputs.log_keys if outputs is not None else None)
    if in_oss:
        lines.append(f"- pod logs: {len(in_oss)} in OSS under `oss://{spec.outputs.bucket}/{prefix}logs/`, "
                     f"and copied to `{kept_logs_dir(spec, name)}/`")
    else:
        lines.append(f"- pod logs: `{kept_logs_dir(spec, name)}/`"
                     f"{f' (not uploaded to OSS: {logs_problem})' if logs_problem else ''}")
    if report and report.incomplete_logs:
        # Never a silent gap: each such kept log also ends with a marker line saying what is missing.
        lines.append(f"- **incomplete pod logs ({len(report.incomplete_logs)}):**")
        lines += [f"  - `{pod}`: {why}" for pod, why in list(report.incomplete_logs.items())[:20]]
        if len(report.incomplete_logs) > 20:
            lines.append(f"  - and {len(report.incomplete_logs) - 20} more")
    if report:
        if cluster is not None and cluster.kind == "acs":
            cost = estimate_acs_job(spec.job, report.all_seconds(), region=spec.target.region)
        else:
            cost = estimate_job(spec.job, report.all_seconds(), region=spec.target.region,
                                site=spec.target.billing_site)
        lines += ["", "## Estimated cost", f"- {cost.summary()}"]
        lines += [f"- {note}" for note in cost.notes]
        lines.append(f"- prices: {cost.source}")
    if teardown is not None:
        lines += ["", "## Teardown"] + [f"- {line}" for line in teardown.lines()]
    return "\n".join(lines) + "\n"


def write_ledger(report: JobReport, path: Path, scrub: Callable[[str], str] = str) -> Path:
    """Write every index's record (``JobReport.records()``, ascending index) to ``path`` as JSON Lines, one
    ``IndexRecord`` per line, one at a time (flat memory at 100,000 indexes), each line passed through ``scrub``
    (a pod's message can quote anything). Returns ``path``.

    Raises:
        OSError: the file cannot be written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for record in report.records():
            fh.write(scrub(record.model_dump_json()) + "\n")
    tmp.replace(path)
    return path


def run_scrubber(spec: BatchSpec) -> Scrubber:
    """The run's one scrubber (every form of every secret value it handles), for what the flow itself writes."""
    from tasks.cloud.context import stage_context

    try:
        with stage_context(spec) as ctx:
            return ctx.scrubber
    except Exception:  # noqa: BLE001 - a source that cannot be read now has nothing of it printed either
        return Scrubber()


def verification(spec: BatchSpec) -> str:
    """What the run checked of its outputs, in one line for the summary."""
    out = spec.outputs
    downloaded = "downloads checksum-verified (CRC-64 or MD5)" if out.download else "not downloaded"
    if out.completeness == "none":
        where = f" (results on the volume at `{spec.storage.mount_path}`)" if spec.storage.mode != "none" else ""
        return (f"verified: nothing per index — `outputs.completeness` is `none`{where}: no index was checked "
                f"for outputs in OSS; objects found there were collected, {downloaded}")
    rule = (f"every index wrote the marker `{out.marker_name}`" if out.completeness == "marker"
            else f"every index wrote at least {out.min_objects} object(s)")
    return f"verified: {rule}; {downloaded}"
