"""Sandbox memory without processes: one Indexed Job on an in-process KubeCluster whose node is a stand-in.

    PYTHONPATH=. .venv/bin/python bench/probe_store_scale.py COMPLETIONS PARALLELISM [POD_JSON]

The real store, API server, Job controller, GC, scheduler and the other controllers; instead of the virtual node,
`FastNode` writes for each bound pod what the virtual node writes for a pod running `true` (three status writes, the
kubelet's Pulled/Created/Started events, the final status taken from POD_JSON: a Succeeded pod of a real run, by default
bench/probe_store_scale_pod.json, one pod of a 20-completion Job of this sandbox) without starting a process. It prints
progress and peak RSS (VmHWM) every 30 s. For measuring what the store and controllers hold at sizes the real
node is too slow to reach on a shared machine; bench_sandbox_scale.py is the real measurement.
"""
import asyncio
import contextlib
import copy
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the repository's packages must be importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox.k8s.cluster import KubeCluster, NodeConfig
from sandbox.k8s.store import now_iso

N = int(sys.argv[1])
P = int(sys.argv[2])
REAL = json.loads(Path(sys.argv[3] if len(sys.argv) > 3 else Path(__file__).with_name("probe_store_scale_pod.json"))
                  .read_text())
FINAL = REAL["status"]


def hwm_mb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) // 1024
    return 0


class FastNode:
    def __init__(self, cluster: KubeCluster) -> None:
        self.cluster, self.store, self.name = cluster, cluster.store, cluster.node.name
        self.ip = 0

    async def run(self) -> None:
        watcher = self.store.watch("pods", field_selector=f"spec.nodeName={self.name}")
        async for event in watcher:
            pod = event.obj
            meta = pod["metadata"]
            status = pod.get("status") or {}
            if event.type == "DELETED" or status.get("phase") in ("Succeeded", "Failed"):
                if event.type != "DELETED" and meta.get("deletionTimestamp"):
                    self.store.finish_delete("pods", meta["namespace"], meta["name"])
                continue
            if not status.get("hostIP"):  # not taken up yet
                asyncio.get_running_loop().call_soon(self.work, meta["namespace"], meta["name"])

    def status(self, namespace: str, name: str, change: Any) -> None:
        with contextlib.suppress(Exception):
            self.store.mutate("pods", namespace, name, change, subresource="status")

    def work(self, namespace: str, name: str) -> None:
        pod = self.store.peek("pods", namespace, name)
        if pod is None:
            return
        self.ip += 1
        ip = f"10.0.{self.ip // 254}.{self.ip % 254 + 1}"

        def pending(obj: Any) -> None:
            status = obj.setdefault("status", {})
            status.update({k: copy.deepcopy(FINAL[k]) for k in ("qosClass", "hostIP", "hostIPs")})
            status.update(podIP=ip, podIPs=[{"ip": ip}], startTime=now_iso())
            obj["metadata"].setdefault("annotations", {})["k8s.aliyun.com/eci-instance-id"] = \
                "eci-" + secrets.token_hex(10)

        def running(obj: Any) -> None:
            obj["status"]["phase"] = "Running"
            obj["status"]["conditions"] = copy.deepcopy(FINAL["conditions"])

        container_id = "containerd://" + secrets.token_hex(32)

        def done(obj: Any) -> None:
            statuses = copy.deepcopy(FINAL["containerStatuses"])
            statuses[0]["containerID"] = statuses[0]["state"]["terminated"]["containerID"] = container_id
            obj["status"].update(phase="Succeeded", containerStatuses=statuses)

        self.status(namespace, name, pending)
        for reason in ("Pulled", "Created", "Started"):
            self.cluster.record_event(pod, reason, f"{reason} container c", component="kubelet")
        self.status(namespace, name, running)
        asyncio.get_running_loop().call_later(0.05, self.status, namespace, name, done)


async def main() -> None:
    real_classes = KubeCluster._controller_classes

    def classes(self: KubeCluster) -> list[type]:
        return [c for c in real_classes(self) if c.__name__ != "VirtualNode"] + [FastNode]

    KubeCluster._controller_classes = classes  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        cluster = KubeCluster("probe", Path(tmp) / "d", node=NodeConfig(pods=max(1000, P)))
        await cluster.start()
        store = cluster.store
        began = time.monotonic()
        store.create("jobs", {"metadata": {"name": "scale", "namespace": "default"}, "spec": {
            "completionMode": "Indexed", "completions": N, "parallelism": P, "backoffLimit": 0,
            "template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "c", "image": "busybox:1.36", "command": ["true"]}]}}}})
        last = 0.0
        while True:
            status = (store.peek("jobs", "default", "scale") or {}).get("status") or {}
            if any(c["type"] == "Complete" for c in status.get("conditions") or []):
                break
            if time.monotonic() - last > 30:
                last = time.monotonic()
                print(f"{time.strftime('%H:%M:%S')} t={last - began:.0f}s succeeded={status.get('succeeded', 0)} "
                      f"pods={len(store.objects['pods'])} events={len(store.objects['events'])} "
                      f"hwm={hwm_mb()}MB", flush=True)
            await asyncio.sleep(0.5)
        print(f"complete: {N} in {time.monotonic() - began:.0f}s, pods={len(store.objects['pods'])} "
              f"events={len(store.objects['events'])} history={len(store.history)} peak RSS {hwm_mb()} MB",
              flush=True)
        await cluster.stop()


if __name__ == "__main__":
    asyncio.run(main())
