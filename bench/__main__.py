"""`python -m bench` (`make bench`): run every benchmark and rewrite bench/RESULTS.md.

    .venv/bin/python -m bench [--only detect collect ...] [--quick] [--full]

Each benchmark runs as its own process (a script under bench/, runnable alone) and replaces its own section of
RESULTS.md; this runner then rewrites the file's head: machine, date, how to reproduce, and a summary quoting each
section's closing note.

- default: the figures of record (5+ repetitions each; quiet waiting scaled to 20 s vs 100 s Jobs; sandbox scale
  and whole-flow scale 3 repetitions at 10,000 completions) — about 25 minutes on 2 cores, plus the whole-flow
  scale: about 2 minutes at 1,000 completions and up to 3 x 8 minutes at 10,000 (a run is killed after 480 s
  and the size then given up), plus many runs at once (20 ask-batch runs on one server, SQLite and PostgreSQL:
  up to about 30 minutes on a busy 2-core machine, each phase cut at 10 minutes);
- ``--quick``: 1–2 repetitions, smaller sizes, to check that everything runs (RESULTS.md is still rewritten:
  the commands recorded in it say what ran);
- ``--full``: quiet waiting with the real 2 and 10 minute Jobs (about 45 minutes more at 5 repetitions).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from bench.common import RESULTS, load_average, machine  # noqa: E402

BENCHES: dict[str, tuple[str, list[str], list[str]]] = {
    # name: (script, default args, --quick args)
    "detect": ("bench_detect.py", ["--repeat", "7"], ["--repeat", "2"]),
    "collect": ("bench_collect.py", ["--repeat", "5"], ["--repeat", "1", "--objects", "200"]),
    "overhead": ("bench_overhead.py", ["--repeat", "5"], ["--repeat", "1"]),
    "quiet": ("bench_quiet.py", ["--repeat", "5", "--short"], ["--repeat", "1", "--durations", "10", "30"]),
    "scale": ("bench_sandbox_scale.py", ["--repeat", "3"], ["--repeat", "1", "--completions", "2000"]),
    "input-fuzz": ("bench_input_fuzz.py", ["--examples", "5000"], ["--examples", "500"]),
    "paged-list": ("bench_paged_list.py", ["--repeat", "3"], ["--repeat", "1", "--pods", "10000"]),
    "flow-scale": ("bench_flow_scale.py", ["--repeat", "3", "--baseline-repeat", "5"],
                   ["--repeat", "1", "--baseline-repeat", "1", "--completions", "2000", "--no-smoke"]),
    # 20 runs at once on one server (SQLite, PostgreSQL when installed) beside one run alone: up to ~30 minutes
    "concurrency": ("bench_concurrency.py", ["--runs", "20"], ["--runs", "4", "--databases", "sqlite"]),
}
ORDER = ["detect", "collect", "overhead", "quiet", "scale", "input-fuzz", "paged-list", "flow-scale", "concurrency"]

HEAD = """# Benchmark results

Written by `make bench` (`python -m bench`); every section names the command that produced it, so any one can be
re-run alone (`.venv/bin/python bench/<script> --help`). Every figure is measured on the local sandbox
(`python -m sandbox serve`), baseline and ask-batch in the same process run, interleaved. Cells are
median (min–max) over the repetitions; a ratio is baseline / ask-batch for lower-is-better figures, so a ratio
above 1 means ask-batch is better, below 1 that it loses.

Machine: {machine}. This head rewritten {date} (load average 1/5/15 min: {load}); each section states the
command, date and load of its own run. The 2 cores are shared with other agents working on this machine at the same
time, so absolute times are noisy; the ratios, measured side by side, are the figures to quote.
"""


def sections(text: str) -> list[tuple[str, str]]:
    out = []
    parts = text.split("\n## ")
    for part in parts[1:]:
        title, _, body = part.partition("\n")
        out.append((title.strip(), body.strip()))
    return out


def rewrite_head(started: str, load: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else ""
    body = [(t, b) for t, b in sections(text) if t != "Summary"]
    summary = []
    for title, content in body:
        last = content.split("\n\n")[-1].strip()
        if last.startswith("|") or last.startswith("`"):
            continue  # a section without a closing note (its table is the last thing)
        summary.append(f"- **{title}.** {last}")
    out = HEAD.format(machine=machine(), date=started, load=load)
    if summary:
        out += "\n## Summary\n\n" + "\n".join(summary) + "\n"
    for title, content in body:
        out += f"\n## {title}\n\n{content}\n"
    RESULTS.write_text(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=ORDER, help="run these only")
    parser.add_argument("--quick", action="store_true", help="few repetitions, small sizes (a smoke run)")
    parser.add_argument("--full", action="store_true", help="quiet waiting with 2 and 10 minute Jobs")
    parser.add_argument("--no-write", action="store_true", help="leave RESULTS.md alone (print the tables only)")
    parser.add_argument("--head-only", action="store_true", help="run nothing; rewrite RESULTS.md's head and summary")
    args = parser.parse_args(argv)
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    load = load_average()
    failed = []
    for name in [] if args.head_only else args.only or ORDER:
        script, default, quick = BENCHES[name]
        extra = quick if args.quick else default
        if name == "quiet" and args.full:
            extra = ["--repeat", "5", "--full"]
        cmd = [sys.executable, str(HERE / script), *extra, *(["--no-write"] if args.no_write else [])]
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.monotonic()
        rc = subprocess.call(cmd, cwd=REPO)
        print(f"=== {name}: exit {rc} after {time.monotonic() - t0:.0f} s", flush=True)
        if rc:
            failed.append(name)
    if not args.no_write:
        rewrite_head(started, load)
        print(f"\nwritten {RESULTS}")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
