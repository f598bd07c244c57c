"""Output collection: N objects of S bytes collected and verified by ask-batch vs a plain parallel SDK download.

    .venv/bin/python bench/bench_collect.py [--repeat 5] [--objects 1000] [--size 1048576] [--indexes 100]
                                             [--parallel 8] [--no-write]

Once per run set, the objects are seeded into a sandbox bucket with the OSS v2 SDK (random bytes, keys
``ask-batch/<run key>/index-NNNNN/obj-MMMM.bin``, ``--indexes`` indexes sharing the objects evenly). Then, per
repetition, in alternating order, each into a fresh empty directory:

- **ask-batch**: ``tasks.stages.outputs.collect_outputs`` (no pod logs to save): list the run prefix, group by index,
  judge completeness (``min_objects: 1``), download every object to a temp name while computing its CRC-64
  (and MD5), check size and CRC against the server's ``x-oss-hash-crc64ecma``, rename into place; thread pool of
  ``outputs.max_parallel_downloads`` = ``--parallel``;
- **plain SDK**: ``list_objects_v2_paginator`` over the same prefix, then ``get_object_to_file`` for every key in
  a ``ThreadPoolExecutor(--parallel)``. The SDK checks CRC-64 on downloads by default
  (``FF_ENABLE_CRC64_CHECK_DOWNLOAD``), so the baseline verifies too — what it lacks is the per-index record,
  the atomic rename and the retry on a mismatch.

Both use the same client (``tasks.cloud.clients.oss_client``: 3 attempts, path style). Wall time is measured around
the whole call; CPU time is this process's user+system time over the same span (the sandbox's OSS server runs
in its own process and is not counted).
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Sandbox, Series, base_parser, load_average, provenance, ratio, table, write_section

HEADING = "## Output collection"
BUCKET = "bench-collect"
RUN_KEY = "collect"


def cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def seed(oss: Any, *, objects: int, size: int, indexes: int) -> list[str]:
    import alibabacloud_oss_v2 as o

    oss.put_bucket(o.PutBucketRequest(bucket=BUCKET))
    keys = [f"ask-batch/{RUN_KEY}/index-{n % indexes:05d}/obj-{n:04d}.bin" for n in range(objects)]

    def put(key: str) -> None:
        oss.put_object(o.PutObjectRequest(bucket=BUCKET, key=key, body=os.urandom(size)))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, keys))
    return keys


def make_spec(sb: Sandbox, *, indexes: int, parallel: int, download_dir: Path) -> Any:
    from tasks.cloud.clients import target_from_endpoints_file
    from tasks.spec import parse_spec

    target, _ = target_from_endpoints_file(sb.endpoints_file)
    return parse_spec({
        "target": target.model_dump(mode="json"),
        "cluster": {"mode": "existing", "existing": {"kubeconfig_path": str(sb.kubeconfig)}},
        "job": {"image": "busybox:1.36", "command": ["true"], "completions": indexes, "parallelism": 1},
        "outputs": {"bucket": BUCKET, "prefix_template": "ask-batch/{run_key}/", "index_template": "index-{index:05d}/",
                    "completeness": "min_objects", "min_objects": 1, "download": True,
                    "download_dir": str(download_dir), "max_parallel_downloads": parallel},
    })


def ours(sb: Sandbox, oss: Any, *, indexes: int, parallel: int, dest: Path, rep: int) -> tuple[int, int]:
    from tasks.handles import JobHandle, JobReport
    from tasks.stages.outputs import collect_outputs

    spec = make_spec(sb, indexes=indexes, parallel=parallel, download_dir=dest)
    report = JobReport(job=JobHandle(namespace="default", name="bench", uid="u", completions=indexes), succeeded=True)
    manifest = collect_outputs(spec, run_key=RUN_KEY, flow_run_name=f"rep{rep}", report=report, oss=oss, log_dir=None)
    assert manifest.complete
    files = list(manifest.objects())
    assert all(o.verified for o in files)
    return len(files), manifest.total_bytes


def plain(oss: Any, *, parallel: int, dest: Path) -> tuple[int, int]:
    import alibabacloud_oss_v2 as o

    prefix = f"ask-batch/{RUN_KEY}/"
    keys: list[tuple[str, int]] = []
    for page in oss.list_objects_v2_paginator().iter_page(o.ListObjectsV2Request(bucket=BUCKET, prefix=prefix)):
        keys += [(obj.key, int(obj.size)) for obj in page.contents or []]

    def get(item: tuple[str, int]) -> int:
        path = dest / item[0][len(prefix):]
        path.parent.mkdir(parents=True, exist_ok=True)
        oss.get_object_to_file(o.GetObjectRequest(bucket=BUCKET, key=item[0]), str(path))
        return path.stat().st_size

    with ThreadPoolExecutor(parallel) as pool:
        sizes = list(pool.map(get, keys))
    assert sizes == [s for _, s in keys]
    return len(sizes), sum(sizes)


def run(repeat: int, objects: int, size: int, indexes: int, parallel: int) -> dict[str, dict[str, Series]]:
    results = {name: {"wall": Series(), "cpu": Series()} for name in ("ask-batch", "plain SDK")}
    with Sandbox() as sb:
        oss = sb.oss()
        t = time.perf_counter()
        seed(oss, objects=objects, size=size, indexes=indexes)
        print(f"seeded {objects} x {size} B in {time.perf_counter() - t:.1f} s", flush=True)
        work = sb.root / "downloads"
        for rep in range(-1, repeat):  # rep -1: warm-up, not recorded
            order = ("ask-batch", "plain SDK") if rep % 2 == 0 else ("plain SDK", "ask-batch")
            for name in order:
                dest = work / name.replace(" ", "-")
                shutil.rmtree(dest, ignore_errors=True)
                dest.mkdir(parents=True)
                c0, t0 = cpu(), time.perf_counter()
                if name == "ask-batch":
                    count, total = ours(sb, oss, indexes=indexes, parallel=parallel, dest=dest, rep=rep)
                else:
                    count, total = plain(oss, parallel=parallel, dest=dest)
                wall, used = time.perf_counter() - t0, cpu() - c0
                assert count == objects and total == objects * size, (name, count, total)
                if rep >= 0:
                    results[name]["wall"].add(wall)
                    results[name]["cpu"].add(used)
                print(f"rep {rep} {name:<10} {wall:6.2f} s wall, {used:6.2f} s CPU, "
                      f"{total / wall / 1e6:6.1f} MB/s", flush=True)
                shutil.rmtree(dest, ignore_errors=True)
    return results


def render(results: dict[str, dict[str, Series]], objects: int, size: int) -> str:
    ours_, base = results["ask-batch"], results["plain SDK"]
    mb = objects * size / 1e6

    def rate(s: Series) -> Series:
        return Series([mb / v for v in s.values])

    rows = [
        ["wall time (s)", base["wall"].cell("{:.2f}"), ours_["wall"].cell("{:.2f}"),
         ratio(base["wall"], ours_["wall"])],
        ["throughput (MB/s)", rate(base["wall"]).cell("{:.0f}"), rate(ours_["wall"]).cell("{:.0f}"),
         ratio(rate(base["wall"]), rate(ours_["wall"]), higher_is_better=True)],
        ["client CPU time (s)", base["cpu"].cell("{:.2f}"), ours_["cpu"].cell("{:.2f}"),
         ratio(base["cpu"], ours_["cpu"])],
    ]
    return table(["figure", "plain SDK (baseline)", "ask-batch collect_outputs", "ratio (> 1: ask-batch better)"],
                 rows)


def main(argv: list[str] | None = None) -> dict[str, dict[str, Series]]:
    parser = base_parser(__doc__, repeat=5)
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--size", type=int, default=1 << 20, help="bytes per object")
    parser.add_argument("--indexes", type=int, default=100, help="indexes the objects are spread over")
    parser.add_argument("--parallel", type=int, default=8, help="download threads (ask-batch's default is 8)")
    args = parser.parse_args(argv)
    load = load_average()
    results = run(args.repeat, args.objects, args.size, args.indexes, args.parallel)
    body = render(results, args.objects, args.size)
    print(body)
    if not args.no_write:
        cmd = (f"python bench/bench_collect.py --repeat {args.repeat} --objects {args.objects} --size {args.size} "
               f"--indexes {args.indexes} --parallel {args.parallel}")
        definition = (
            f"{args.objects} objects of {args.size:,} B ({args.objects * args.size / 1e6:.0f} MB) over "
            f"{args.indexes} indexes in a sandbox bucket, seeded once; each repetition downloads all of them into "
            f"an empty directory, the two contenders alternating. ask-batch: `collect_outputs` (list, "
            "completeness per index, download to a temp name with CRC-64 + MD5, compare with the server's CRC-64, "
            f"rename), {args.parallel} threads. Baseline: list + `get_object_to_file` in a "
            f"`ThreadPoolExecutor({args.parallel})` (the SDK checks CRC-64 itself). Median (min–max).")
        write_section(HEADING, provenance(cmd, load) + "\n\n" + definition + "\n\n" + body + "\n\n" + notes(results))
    return results


def notes(results: dict[str, dict[str, Series]]) -> str:
    ours_, base = results["ask-batch"], results["plain SDK"]
    slower = ours_["wall"].median / base["wall"].median
    if slower > 1.02:
        verdict = f"ask-batch takes {slower:.2f}× the plain download's wall time"
    elif slower < 0.98:
        verdict = f"ask-batch is faster than the plain download ({slower:.2f}× its wall time)"
    else:
        verdict = f"ask-batch is as fast as the plain download ({slower:.2f}× its wall time)"
    return (f"{verdict} and uses {ours_['cpu'].median / max(base['cpu'].median, 1e-9):.2f}× its client CPU. "
            "Extra work on ask-batch's side: a `stat` per object (re-download check), the grouping of keys by "
            "index, and the per-object manifest records (the MD5 is computed only when the server sent no "
            "CRC-64). What wins it back: it reads the body in 1 MiB blocks where `get_object_to_file` uses the "
            "SDK's 16 KiB default, so far fewer Python-level iterations per object. Both sides are bound by the "
            "sandbox's OSS server, which shares the same 2 cores.")


if __name__ == "__main__":
    main()
