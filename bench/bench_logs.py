"""Pod logs: a 20 MiB newline-free log (a progress bar redrawn with ``\\r``) against a normal 20 MiB log.

    .venv/bin/python bench/bench_logs.py [--repeat 3] [--mib 20] [--no-write]

Two parts, each side by side in the same run:

- **whole flow**: ``python -m flows.ask_batch`` (subprocess, Prefect server started once by this script, fresh
  sandbox per run, cluster mode ``existing``, storage ``none``) on a 1-index Job whose pod writes MIB mebibytes
  either as ``\\r``-redrawn progress-bar frames with no newline, then two lines (``bar``), or as 100-byte lines
  (``lines``), in a rotating order. Measured: flow wall time (spawn to exit) and whether the kept log in the
  download directory holds every byte (compared with what the pod wrote, regenerated here byte for byte).
  The done-marker is put by this script before the flow starts (not timed), as in bench_flow_scale.py.
- **splitting** (in process, no cluster): ``tasks.cloud.pod_logs.KeptLog`` fed the same bytes in 64 KiB chunks,
  against the line splitting ask-batch used before (``buffer += chunk; buffer.split(b"\\n")`` per chunk, which
  is quadratic on a line that never ends). Median of ``--repeat`` runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, Sandbox, Series, base_parser, load_average, provenance, table, write_section

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

HEADING = "## Pod logs: newline-free vs normal"
BUCKET = "bench-logs"

# The pod's program: deterministic bytes, so the bench can regenerate them and compare with the kept log.
WRITER = r"""
import sys
kind, total = sys.argv[1], int(sys.argv[2]) << 20
out = sys.stdout.buffer
n = 0
if kind == "bar":
    while n < total:
        frag = ("\r%3d%%|%-20s| %d/%d" % (n * 100 // total, "#" * (n * 20 // total), n, total)).encode()
        out.write(frag)
        n += len(frag)
    out.write(b"\ntraining done\nsaved\n")
else:
    i = 0
    while n < total:
        line = ("line %08d " % i).encode() + b"x" * 85 + b"\n"
        out.write(line)
        n += len(line)
        i += 1
out.flush()
"""


def expected(kind: str, mib: int) -> bytes:
    """Exactly what WRITER prints (the same program, run here)."""
    return subprocess.run([sys.executable, "-c", WRITER, kind, str(mib)], capture_output=True, check=True).stdout


def params(sb: Sandbox, work: Path, *, run_key: str, kind: str, mib: int) -> Path:
    writer = work / "writer.py"
    writer.write_text(WRITER)
    data = {
        "run_key": run_key,
        "cluster": {"mode": "existing", "namespace": "default", "existing": {"kubeconfig_path": str(sb.kubeconfig)}},
        "storage": {"mode": "none"},
        "config": {"local_paths": [str(writer)]},
        "job": {"image": "python:3.11-slim", "command": ["sh", "-c", f'python3 "$ASK_BATCH_CONFIG_DIR/writer.py" '
                                                                    f"{kind} {mib}"],
                "args": [], "cpu": "0.5", "memory": "0.5Gi", "completions": 1, "parallelism": 1,
                "backoff_limit": 0, "rerun": "all"},  # the marker is already there: run anyway
        "outputs": {"bucket": BUCKET, "prefix_template": "ask-batch/{run_key}/", "marker_name": "_SUCCESS",
                    "download": False, "download_dir": str(work / "outputs")},
    }
    path = work / "params.json"
    path.write_text(json.dumps(data))
    return path


def put_marker(sb: Sandbox, run_key: str) -> None:
    import alibabacloud_oss_v2 as oss

    client = sb.oss()
    try:
        client.put_bucket(oss.PutBucketRequest(bucket=BUCKET))
    except Exception as exc:  # noqa: BLE001 - already there
        if "BucketAlreadyExists" not in str(exc) and "AlreadyOwned" not in str(exc):
            raise
    client.put_object(oss.PutObjectRequest(bucket=BUCKET, key=f"ask-batch/{run_key}/index-00000/_SUCCESS", body=b""))


def flow_run(api_url: str, *, kind: str, mib: int, run_key: str, want: bytes) -> dict[str, Any]:
    with Sandbox() as sb:
        work = sb.root / run_key
        work.mkdir()
        put_marker(sb, run_key)
        pfile = params(sb, work, run_key=run_key, kind=kind, mib=mib)
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "flows.ask_batch", "--params", str(pfile), "--sandbox",
                               str(sb.dir)], cwd=REPO, env=dict(os.environ, PREFECT_API_URL=api_url),
                              capture_output=True, timeout=900)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"{kind}: flow exited {done.returncode}: {done.stdout[-2000:]!r} "
                               f"{done.stderr[-3000:]!r}")
        # <download_dir>/<run>/logs/ when the outputs are downloaded, else the staging copy the wait wrote
        logs = list((work / "outputs").rglob("*.log"))
        kept = logs[0].read_bytes() if logs else b""
        return {"wall": wall, "kept": len(kept), "whole": kept == want}


def old_split(data: bytes, chunk: int) -> int:
    """The splitting ask-batch used before (per chunk: append, split the whole buffer): lines found."""
    lines, buffer = 0, b""
    for i in range(0, len(data), chunk):
        buffer += data[i:i + chunk]
        *complete, buffer = buffer.split(b"\n")
        lines += len(complete)
    return lines + (1 if buffer else 0)


def new_split(data: bytes, chunk: int) -> int:
    from tasks.cloud.pod_logs import KeptLog

    shown: list[str] = []
    kept = KeptLog(None, "[p]", shown.append)
    for i in range(0, len(data), chunk):
        kept.feed(data[i:i + chunk])
    kept.finish()
    return len(shown)


def main(argv: list[str] | None = None) -> None:
    parser = base_parser(__doc__, repeat=3)
    parser.add_argument("--mib", type=int, default=20)
    parser.add_argument("--split-only", action="store_true", help="only the in-process splitting part")
    args = parser.parse_args(argv)
    load = load_average()
    data = {kind: expected(kind, args.mib) for kind in ("bar", "lines")}
    split: dict[str, dict[str, Series]] = {k: {"old": Series(), "new": Series()} for k in data}
    for _ in range(args.repeat):
        for kind, raw in data.items():
            for name, fn in (("new", new_split), ("old", old_split)):
                if name == "old" and kind == "bar" and args.mib > 8:
                    continue  # quadratic: minutes at 20 MiB; measured at 8 MiB below instead
                t0 = time.perf_counter()
                fn(raw, 65536)
                split[kind][name].add(time.perf_counter() - t0)
    bar8 = expected("bar", 8)
    old8, new8 = Series(), Series()
    for _ in range(args.repeat):
        for series, fn in ((old8, old_split), (new8, new_split)):
            t0 = time.perf_counter()
            fn(bar8, 65536)
            series.add(time.perf_counter() - t0)
    rows = [[f"{args.mib} MiB, `\\r` bar, no newline", split["bar"]["new"].cell("{:.2f}"), "(not run: quadratic)"],
            [f"{args.mib} MiB, 100-byte lines", split["lines"]["new"].cell("{:.2f}"),
             split["lines"]["old"].cell("{:.2f}")],
            ["8 MiB, `\\r` bar, no newline", new8.cell("{:.2f}"), old8.cell("{:.2f}")]]
    split_table = table(["input (64 KiB chunks)", "KeptLog (s)", "before: split per chunk (s)"], rows)
    print(split_table, flush=True)
    flow_table, note = "", ""
    if not args.split_only:
        from prefect.settings import PREFECT_API_URL
        from prefect.testing.utilities import prefect_test_harness

        flows: dict[str, Series] = {k: Series() for k in data}
        whole: dict[str, list[str]] = {k: [] for k in data}
        with prefect_test_harness(server_startup_timeout=300):
            api_url = str(PREFECT_API_URL.value())
            for rep in range(args.repeat):
                order = ["bar", "lines"] if rep % 2 == 0 else ["lines", "bar"]
                for kind in order:
                    r = flow_run(api_url, kind=kind, mib=args.mib, run_key=f"bl-{kind}-{rep}", want=data[kind])
                    print(f"{kind}: {r}", flush=True)
                    flows[kind].add(r["wall"])
                    whole[kind].append(f"{r['kept']:,} B{'' if r['whole'] else ' (NOT whole)'}")
        flow_table = table(["pod writes", "flow wall time (s)", "kept log (bytes; whole = every byte written)"],
                           [[f"{args.mib} MiB `\\r` bar, no newline, then 2 lines", flows["bar"].cell("{:.1f}"),
                             ", ".join(whole["bar"])],
                            [f"{args.mib} MiB of 100-byte lines", flows["lines"].cell("{:.1f}"),
                             ", ".join(whole["lines"])]])
        note = (f"Newline-free / normal flow wall time: ×{flows['bar'].median / flows['lines'].median:.2f} "
                "(target: at most 1.5).")
        print(flow_table, note, sep="\n\n")
    if not args.no_write:
        cmd = f"python bench/bench_logs.py --repeat {args.repeat} --mib {args.mib}" + (
            " --split-only" if args.split_only else "")
        definition = ("Splitting: `KeptLog` (kept file off) fed 64 KiB chunks, against the splitting used before "
                      "(`buffer += chunk; buffer.split(b'\\n')` per chunk; it only splits, while KeptLog also "
                      "decodes, scrubs and formats every displayed line, so short lines cost it more). "
                      "Whole flow: `python -m flows.ask_batch`, "
                      "a 1-index Job whose pod writes the bytes, fresh sandbox per run, Prefect server already up; "
                      "wall = spawn to exit; the kept log in the download directory is compared byte for byte with "
                      "what the pod wrote. Median (min–max).")
        parts = [provenance(cmd, load), definition, split_table]
        if flow_table:
            parts += [flow_table, note]
        write_section(HEADING, "\n\n".join(parts))


if __name__ == "__main__":
    main()
