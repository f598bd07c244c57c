"""What costs money and how to stop it: list everything ask-batch created, with its hourly cost; delete on request.

    python -m flows.cleanup --params FILE [--set a.b=value ...] [--sandbox DIR] [--yes | --dry-run]
    make cleanup [PARAMS=FILE] [SANDBOX=DIR] [CLEANUP_ARGS=--yes]

The parameters file says where to look (``target``: region, credentials, endpoints) and names the spec's own
cluster; everything else is found by ask-batch's tags and labels, whatever run created it
(``tasks.cloud.inventory``): CS clusters and NAS file systems (with their mount targets) tagged
``app.kubernetes.io/managed-by: ask-batch``, and in every reachable cluster the Jobs, Pods, ConfigMaps, Secrets,
PVCs, PVs, ServiceAccounts and Leases labelled ``app.kubernetes.io/managed-by=ask-batch``. It prints one line per
item with its price per hour when it is billed by itself (running pods, NAS, clusters:
``tasks.render.hourly_cost``), then asks ``Delete all of this? [y/N]`` (``--yes`` answers yes; ``--dry-run`` does
not ask and changes nothing). Deletion reuses teardown's code (``tasks.stages.teardown``: Jobs with their pods,
config, PVC before PV, mount targets before the file system, clusters last) and never deletes a cluster or a
file system without ask-batch's tag.

Exit codes: 0 nothing left or the answer was no; 1 something could not be listed or deleted (each one named);
2 invalid parameters.
"""

import argparse
import sys
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from tasks.cloud.inventory import Inventory, take_inventory
from tasks.errors import InvalidInput
from tasks.handles import TeardownReport
from tasks.spec import BatchSpec

HEADER = ("KIND", "NAME", "WHERE", "RUN", "PER HOUR")


def table(inv: Inventory) -> list[str]:
    """The inventory as aligned text lines, then the hourly total per currency and the notes."""
    rows = [HEADER] + [(f.kind, f.name, f.where, f.run_key or "-", f.hourly.text() if f.hourly else "-")
                       for f in inv.found]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    totals: dict[str, float] = defaultdict(float)
    unknown = [f for f in inv.found if f.hourly is not None and f.hourly.amount is None]
    for f in inv.found:
        if f.hourly is not None and f.hourly.amount is not None:
            totals[f.hourly.currency] += f.hourly.amount
    money = ", ".join(f"{amount:.4f} {currency}/h" for currency, amount in sorted(totals.items())) or "0"
    lines.append(f"total while these exist: {money}" + (f" + {len(unknown)} item(s) of unknown price"
                                                       if unknown else ""))
    notes = sorted({f"{f.kind}: {f.hourly.note}" for f in inv.found if f.hourly and f.hourly.note
                    and f.kind in ("Cluster", "NasFileSystem")})
    return lines + [f"  note: {n}" for n in notes]


def delete_all(inv: Inventory, *, cs: Any, nas: Any, default_namespace: str, wait_seconds: float,
               say: Callable[[str], None]) -> TeardownReport:
    """Delete what ``inv`` found, in teardown's order; returns the merged report (never raises for one item)."""
    from kubernetes import client

    from tasks.stages.teardown import delete_managed_cluster, delete_managed_file_system, delete_managed_objects

    report = TeardownReport()

    def merge(part: TeardownReport) -> None:
        for line in part.lines():
            say(f"  {line}")
        report.deleted += part.deleted
        report.kept += part.kept
        report.failed += part.failed

    for scan in inv.scans:
        namespaces = set(scan.namespaces) or ({default_namespace} if scan.has_volumes else set())
        for ns in sorted(namespaces):
            say(f"cluster {scan.key}, namespace {ns}:")
            merge(delete_managed_objects(namespace=ns, core_v1=client.CoreV1Api(scan.api),
                                         batch_v1=client.BatchV1Api(scan.api),
                                         coordination_v1=client.CoordinationV1Api(scan.api),
                                         wait_seconds=wait_seconds))
    for fs_id in inv.file_systems:
        say(f"NAS file system {fs_id}:")
        merge(delete_managed_file_system(nas, fs_id, wait_seconds=wait_seconds))
    for cluster_id in inv.clusters:
        say(f"cluster {cluster_id}:")
        merge(delete_managed_cluster(cs, cluster_id))
    return report


def confirm(prompt: str) -> bool:
    """Ask on the terminal (or read one line from standard input); only 'y' or 'yes' is yes, end of input is no."""
    print(prompt, end="", flush=True)
    line = sys.stdin.readline()
    print()
    return line.strip().lower() in ("y", "yes")


def clients(spec: BatchSpec, *, cloud: bool) -> tuple[Any | None, Any | None]:
    """(CS, NAS) clients from ``spec.target``; (None, None) with ``cloud`` off (Kubernetes only)."""
    if not cloud:
        return None, None
    from tasks.cloud.clients import cs_client, nas_client, resolve_credentials

    creds = resolve_credentials(spec.target.credentials)
    return cs_client(spec.target, creds), nas_client(spec.target, creds)


def main(argv: list[str] | None = None) -> int:
    from flows.cli import build_spec

    parser = argparse.ArgumentParser(prog="python -m flows.cleanup", description="List everything ask-batch "
                                     "created, with its hourly cost, and delete it on confirmation.")
    parser.add_argument("--params", required=True, help="YAML/JSON BatchSpec: region, credentials, endpoints and "
                        "the spec's own cluster")
    parser.add_argument("--set", action="append", default=[], metavar="A.B=VALUE", help="override one field")
    parser.add_argument("--sandbox", metavar="DIR", help="look in the sandbox in DIR (started if not running: "
                        "its state survives restarts)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--yes", action="store_true", help="delete without asking")
    mode.add_argument("--dry-run", action="store_true", help="list only; ask nothing, change nothing")
    parser.add_argument("--kubernetes-only", action="store_true", help="do not look at CS clusters and NAS (a "
                        "cluster brought by kubeconfig, no cloud credentials)")
    parser.add_argument("--wait", type=float, default=120.0, metavar="SECONDS",
                        help="how long to wait for pods, PVCs and mount targets to go (default 120)")
    args = parser.parse_args(argv)
    try:
        spec = build_spec(args.params, args.set, args.sandbox)
        cs, nas = clients(spec, cloud=not args.kubernetes_only)
    except InvalidInput as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(f"looking for what ask-batch created in {spec.target.region} ...", file=sys.stderr)
    inv = take_inventory(spec, cs=cs, nas=nas, site=spec.target.billing_site)
    for problem in inv.problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    if inv.empty():
        print("nothing found: ask-batch has nothing left here" + (" that could be listed" if inv.problems else ""))
        return 1 if inv.problems else 0
    print("\n".join(table(inv)))
    if args.dry_run:
        print("dry run: nothing deleted")
        return 1 if inv.problems else 0
    if not args.yes and not confirm(f"Delete all {len(inv.found)} of these? [y/N] "):
        print("nothing deleted")
        return 1 if inv.problems else 0
    report = delete_all(inv, cs=cs, nas=nas, default_namespace=spec.cluster.namespace, wait_seconds=args.wait,
                        say=print)
    print(f"deleted {len(report.deleted)}, kept {len(report.kept)}, failed {len(report.failed)}")
    for item in report.failed:
        print(f"NOT DELETED: {item.kind} {item.name}: {item.why}", file=sys.stderr)
    return 1 if report.failed or inv.problems else 0


if __name__ == "__main__":
    sys.exit(main())
