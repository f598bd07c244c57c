"""The virtual node: an ASK virtual-kubelet whose "elastic container instances" are local processes.

Every pod bound to `cluster.node.name` gets a `PodWorker` that takes it through what ASK's
virtual-kubelet + ECI would do, and really runs each container's `command` + `args` on the host.

Modelled (and how):
- **ECI instance creation.** With probability `faults.eci_create_fail_rate` creating the instance fails:
  condition `ContainerInstanceCreated=False` with reason `faults.eci_create_fail_reason` (e.g. NoStock)
  and an Alibaba-style message, plus a Warning event of that reason. The pod stays Pending and creation is
  retried with backoff (each retry rolls again), as the virtual-kubelet keeps retrying. With reason
  `ProviderFailed`, or with the pod annotation `k8s.aliyun.com/pod-fail-on-create-err: "true"`, the pod
  fails fast instead: phase Failed, reason ProviderFailed (so a Job's backoffLimit applies). Success sets
  `ContainerInstanceCreated=True` and the annotations `k8s.aliyun.com/eci-instance-id` and
  `k8s.aliyun.com/eci-instance-spec` (the first `eci-use-specs` entry, else "<cpu>-<mem>Gi" derived from
  limits/requests, 2.0-4.0Gi by default), which is where billing tools look.
- **Spot reclamation.** Pods with `k8s.aliyun.com/eci-spot-strategy` SpotAsPriceGo/SpotWithPriceLimit,
  when `faults.spot_reclaim_after_s > 0`: that many seconds after the first container started, a
  Warning event `SpotToBeReleased` (real ECI gives ~3 minutes of notice; the sandbox releases at once),
  then the instance is released: every process is SIGKILLed, the pod ends phase Failed, reason BidFailed,
  with condition `DisruptionTarget=True`. Protection periods (`eci-spot-duration`), price limits and
  `eci-spot-fallback` are not modelled.
- **Images** are never pulled and no registry is ever looked up (images.py): the container's command runs
  on the host, so the host must have the tools it calls; a Normal `Pulled` event on every pod says so.
  References are parsed as the kubelet parses them (a malformed one: `InvalidImageName`, `InspectFailed`);
  a registry host under `.invalid` or an image listed in the fault knob `missing_images` fails to pull:
  `ErrImagePull`, then `ImagePullBackOff`, retried with the kubelet's image back-off (10 s doubling to
  5 min, times `NodeConfig.backoff_scale`) for ever (the pod stays Pending). A container without `command`
  and `args` cannot run (there is no image entrypoint): the pod fails with reason StartError and a message
  saying so.
- **Configuration.** Env as the kubelet builds it (see `env.py`), plus HOSTNAME, KUBERNETES_SERVICE_HOST
  /PORT (the sandbox API on 127.0.0.1), PATH/HOME/LANG from the host and PYTHONUNBUFFERED=1. A missing
  ConfigMap/Secret/key gives `CreateContainerConfigError` (Warning event `Failed`); volumes that cannot be
  set up (missing ConfigMap, unbound PVC) keep the container in `ContainerCreating` with a `FailedMount`
  event. Both are retried as soon as a ConfigMap/Secret/PVC/PV changes (and every few seconds).
- **Mount paths: path rewriting.** The process sees each volume through *rewritten paths*, never a mount:
  every occurrence of a volumeMount's `mountPath` as a path prefix in `command`, `args`, env values and
  `workingDir` is replaced by the host directory of the volume (longest mountPath first; `subPath`
  honoured). This works for any user, root or not, on any Linux, without namespaces. What it means for
  workloads: **pass paths in through args or env** (`--out /data/out`, `OUT_DIR=/data/out`), do not
  hard-code mount paths inside scripts or files the container reads: a path computed at run time or read
  from a file is not rewritten. The same manifest works on real ASK, where the mounts are real. The
  process's cwd is the rewritten `workingDir`, or a per-pod scratch directory (`<pod dir>/root`, also
  standing in for a non-mounted `workingDir`). A private mount namespace (bwrap/unshare) was considered
  and left out: it needs root or user namespaces and per-mountPath mount points, and would make the
  sandbox behave differently from machine to machine.
- **Processes.** initContainers one after another, then containers in parallel, each in its own session, stdin
  /dev/null, stdout+stderr appended unbuffered to `<data>/pods/<uid>/logs/<container>.log` (what `kubectl logs`
  reads). At most `spawn_concurrency` (64) process starts at a time. Each start appends a JSON line to
  `<data>/node/processes.jsonl` (with the `user` it ran as). When the main process exits the rest of its session
  is killed, as a container's cgroup would be. Users as ECI applies them (see `identity.py`): the container's
  `runAsUser`/`runAsGroup` (pod level: `runAsUser` only; `fsGroup` is not applied, a Warning says so) when the
  sandbox runs as root; `runAsNonRoot` is verified (CreateContainerConfigError). restartPolicy Never: exit 0 ->
  Completed, else Error, phase Succeeded/Failed; OnFailure/Always restart the container in place with the
  kubelet's back-off (first restart at once, then CrashLoopBackOff 10 s doubling to 5 min, times
  `NodeConfig.backoff_scale`). Each attempt has its own log; the one before is kept for `kubectl logs --previous`
  (see `rotate_log`).
- **Memory limits** by sampling RSS every 100 ms (see `procs.py`): over the limit -> SIGKILL, OOMKilled,
  137. CPU limits are not enforced.
- **Deletion:** SIGTERM to every container's process group, wait min(deletionGracePeriodSeconds,
  terminationGracePeriodSeconds), SIGKILL, final status (143/137 ...), then the pod is removed
  (`Store.finish_delete`). Pods that never started are removed at once. Volumes go when the pod ends,
  the whole pod directory (logs too) when the pod object is gone.
- **activeDeadlineSeconds** on the pod: phase Failed, reason DeadlineExceeded.
- **Sandbox restart:** processes cannot be adopted. Containers recorded as running get terminated,
  exit code 137, reason Error, message "the sandbox restarted while the container ran"; phase Failed.
  Pods that had not started yet start normally.
- **Scale:** no per-pod polling; status writes are coalesced (changes within 50 ms become one write).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from .. import acs, errors
from ..store import Obj, WatchEvent, now_iso
from . import images
from .env import ConfigError, PathRewriter, build_env, expand
from .identity import Identity, NonRootViolation, ensure_traversable, resolve
from .procs import MemoryWatch, signal_group
from .quantity import container_requests, memory_bytes, parse_quantity
from .volumes import PreparedVolumes, VolumeBuilder, VolumeNotReady

if TYPE_CHECKING:
    from ..cluster import KubeCluster

log = logging.getLogger("sandbox.k8s.kubelet")

COMPONENT = "virtual-kubelet"
SPOT_STRATEGIES = ("SpotAsPriceGo", "SpotWithPriceLimit")
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
MANAGED_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready",
                      "ContainerInstanceCreated", "DisruptionTarget")
TERMINAL = ("Succeeded", "Failed")
RESTARTED_MESSAGE = "the sandbox restarted while the container ran"

ECI_MESSAGES = {
    "NoStock": "The resource is out of stock in the specified zone. Please try other types, or choose other "
               "regions and zones.",
    "ProviderFailed": "the virtual-kubelet failed to create the container instance for this pod",
}


class Stopped(Exception):
    """The pod's run was interrupted (deletion, deadline, spot release)."""


class Timings:
    """The node's waits. The kubelet's own back-offs (crash loop and image pull) are Kubernetes' values,
    multiplied by `NodeConfig.backoff_scale` when used (see `PodWorker._scaled`)."""

    backoff_initial_s = 1.0  # ECI instance creation retries
    backoff_max_s = 20.0
    crashloop_initial_s = 10.0  # kubelet: 10 s doubling to 5 min (pkg/kubelet: MaxContainerBackOff)
    crashloop_max_s = 300.0
    image_pull_initial_s = 10.0  # kubelet's image back-off: the same 10 s doubling to 5 min
    image_pull_max_s = 300.0
    err_image_pull_hold_s = 0.5  # how long ErrImagePull shows before ImagePullBackOff
    deps_fallback_s = 5.0  # retry of config/volume waits even without a change event
    flush_delay_s = 0.05


def _duration(seconds: float) -> str:
    """A back-off as Go's time.Duration prints it: 10s, 2m40s, 5m0s, 100ms."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = round(seconds, 3)
    minutes, rest = divmod(whole, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


def rotate_log(log_path: Path) -> None:
    """A restarted container's log holds only its current attempt; the one before is kept beside it.

    Path contract with `api.PodLog`: `<container>.log` is the latest attempt and `<container>.id` its
    containerID; `<container>.previous.log` / `.previous.id` the attempt before (the kubelet keeps only one
    dead container per container name, so `kubectl logs --previous` has exactly one to show).
    """
    for suffix in (".log", ".id"):
        current = log_path.with_suffix(suffix)
        if current.exists():
            os.replace(current, log_path.with_suffix(".previous" + suffix))


def write_attempt_id(log_path: Path, container_id: str) -> None:
    log_path.with_suffix(".id").write_text(container_id)


def _exit_code(returncode: int) -> int:
    return returncode if returncode >= 0 else 128 - returncode


def _container_id() -> str:
    return "containerd://" + secrets.token_hex(32)


def _eci_spec(pod: Obj) -> str:
    meta = pod.get("metadata") or {}
    wanted = (meta.get("annotations") or {}).get("k8s.aliyun.com/eci-use-specs")
    if wanted:
        return wanted.split(",")[0].strip()
    cpu = mem = 0.0
    for container in (pod.get("spec") or {}).get("containers") or []:
        limits = (container.get("resources") or {}).get("limits") or {}
        req = container_requests(container)
        cpu += float(parse_quantity(limits["cpu"])) if "cpu" in limits else req.cpu_m / 1000
        mem += (memory_bytes(limits["memory"]) if "memory" in limits else req.memory) / 2**30
    if cpu == 0 and mem == 0:
        return "2.0-4.0Gi"
    return f"{max(cpu, 0.25):.1f}-{max(mem, 0.5):.1f}Gi"


class VirtualNode:
    """Runs the pods bound to this node; see the module docstring."""

    spawn_concurrency = 64

    def __init__(self, cluster: KubeCluster) -> None:
        self.cluster = cluster
        self.store = cluster.store
        self.name = cluster.node.name
        self.pods_dir = cluster.data_dir / "pods"
        self.node_dir = cluster.data_dir / "node"
        self.timings = Timings()
        self.workers: dict[str, PodWorker] = {}
        # uids whose worker has ended: later (stale) watch events for them must not start them again
        self.finished: set[str] = set()
        self.spawn_sem = asyncio.Semaphore(self.spawn_concurrency)
        self.memory = MemoryWatch()
        self.allocatable = {"cpu": str(cluster.node.cpu), "memory": str(cluster.node.memory)}
        self._deps_event = asyncio.Event()
        self._ip_next = 1
        self._process_log: Any = None

    # -------------------------------------------------------------- main loop

    async def run(self) -> None:
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self.node_dir.mkdir(parents=True, exist_ok=True)
        if self._process_log is None:
            self._process_log = open(self.node_dir / "processes.jsonl", "ab", buffering=0)  # noqa: SIM115
        self._seed_ips()
        dep_watchers = [self.store.watch(p) for p in
                        ("configmaps", "secrets", "persistentvolumeclaims", "persistentvolumes")]
        pumps = [asyncio.create_task(self._pump_deps(w)) for w in dep_watchers]
        pods = self.store.watch("pods", field_selector=f"spec.nodeName={self.name}")
        try:
            async for event in pods:
                self.on_pod_event(event)
        finally:
            pods.close()
            for watcher in dep_watchers:
                watcher.close()
            for pump in pumps:
                pump.cancel()

    async def stop(self) -> None:
        """The sandbox is shutting down: kill every process (they cannot outlive it) and the workers."""
        for worker in list(self.workers.values()):
            worker.kill_all(signal.SIGKILL)
            worker.task.cancel()
        for worker in list(self.workers.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await worker.task
        self.workers.clear()
        await self.memory.stop()
        if self._process_log is not None:
            self._process_log.close()
            self._process_log = None

    async def _pump_deps(self, watcher: Any) -> None:
        async for _ in watcher:
            self._deps_event.set()
            self._deps_event = asyncio.Event()

    async def deps_changed(self) -> None:
        await self._deps_event.wait()

    def on_pod_event(self, event: WatchEvent) -> None:
        pod = event.obj
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
        if event.type == "DELETED":
            self.finished.discard(uid)
            if worker is not None:
                worker.on_gone()
            else:
                shutil.rmtree(self.pods_dir / uid, ignore_errors=True)
            return
        if worker is not None:
            worker.on_update(pod)
            return
        phase = (pod.get("status") or {}).get("phase")
        if phase in TERMINAL or uid in self.finished:
            if pod["metadata"].get("deletionTimestamp"):
                self.store.finish_delete("pods", pod["metadata"].get("namespace"), pod["metadata"]["name"])
            return
        self.workers[uid] = PodWorker(self, pod)

    # -------------------------------------------------------------- shared services

    def _seed_ips(self) -> None:
        highest = 0
        for pod in self.store.iter_objects("pods"):
            ip = (pod.get("status") or {}).get("podIP") or ""
            parts = ip.split(".")
            if len(parts) == 4 and parts[0] == "10" and all(p.isdigit() for p in parts):
                a, b, c = int(parts[1]), int(parts[2]), int(parts[3])
                highest = max(highest, (a * 256 + b) * 254 + (c - 1) + 1)
        self._ip_next = max(self._ip_next, highest + 1)

    def allocate_ip(self) -> str:
        n = self._ip_next
        self._ip_next += 1
        c = n % 254 + 1
        ab = n // 254
        return f"10.{(ab // 256) % 256}.{ab % 256}.{c}"

    def record_process(self, record: dict[str, Any]) -> None:
        if self._process_log is not None:
            self._process_log.write(orjson.dumps(record) + b"\n")


class ContainerRun:
    """One running process of a container."""

    def __init__(self, proc: asyncio.subprocess.Process, container_id: str, started: str) -> None:
        self.proc = proc
        self.container_id = container_id
        self.started = started


class PodWorker:
    """Takes one pod from acceptance to its end; see the module docstring for the model."""

    def __init__(self, node: VirtualNode, pod: Obj) -> None:
        self.node = node
        self.store = node.store
        self.cluster = node.cluster
        self.t = node.timings
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.namespace: str = meta.get("namespace") or "default"
        self.name: str = meta["name"]
        self.pod_dir = node.pods_dir / self.uid
        self.status: Obj = {}
        self.conditions: dict[str, Obj] = {}
        self.container_status: dict[str, Obj] = {}
        self.init_status: dict[str, Obj] = {}
        self.running: dict[str, ContainerRun] = {}
        self.stop_event = asyncio.Event()
        self.wake = asyncio.Event()
        self.stopping: str | None = None  # Deleted | DeadlineExceeded | BidFailed
        self.gone = False
        self.deleting = bool(meta.get("deletionTimestamp"))
        self.running_since: float | None = None
        self.volumes = PreparedVolumes()
        self.identities: dict[str, Identity] = {}
        self._warned_ignored = False
        self._flush_handle: asyncio.TimerHandle | None = None
        self.task = asyncio.create_task(self._main(), name=f"pod-{self.namespace}-{self.name}")

    # -------------------------------------------------------------- events from the node

    def on_update(self, pod: Obj) -> None:
        if int(pod["metadata"]["resourceVersion"]) < int(self.pod["metadata"]["resourceVersion"]):
            return  # a stale event, older than what this worker wrote itself
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp") and not self.deleting:
            self.deleting = True
            self.wake.set()

    def on_gone(self) -> None:
        """The pod object was removed (force delete): kill everything now."""
        self.gone = True
        self.kill_all(signal.SIGKILL)
        self.stopping = self.stopping or "Deleted"
        self.stop_event.set()
        self.wake.set()

    def kill_all(self, sig: int) -> None:
        for run in list(self.running.values()):
            signal_group(run.proc.pid, sig)

    # -------------------------------------------------------------- lifecycle

    async def _main(self) -> None:
        try:
            if self.deleting and not self._has_running_record():
                self._finish()
                return
            if self._has_running_record():
                self._fail_lost()
                return
            await self._supervise()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pod %s/%s: worker crashed", self.namespace, self.name)
            self._set_phase("Failed", "SandboxError", "the virtual node failed to run this pod; see the sandbox log")
            self.flush()
        finally:
            if self._flush_handle is not None:
                self._flush_handle.cancel()
            self.node.workers.pop(self.uid, None)
            if not self.gone:
                self.node.finished.add(self.uid)
            if self.gone:
                shutil.rmtree(self.pod_dir, ignore_errors=True)

    def _has_running_record(self) -> bool:
        status = self.pod.get("status") or {}
        if status.get("phase") == "Running":
            return True
        return any("running" in (cs.get("state") or {})
                   for cs in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []))

    def _fail_lost(self) -> None:
        """Processes from before a sandbox restart cannot be adopted; see the module docstring."""
        status = self.pod.get("status") or {}
        self.status = {k: v for k, v in status.items() if k not in ("conditions",)}
        for cond in status.get("conditions") or []:
            self.conditions[cond["type"]] = cond
        now = now_iso()
        for key, table in (("containerStatuses", self.container_status), ("initContainerStatuses", self.init_status)):
            for cs in status.get(key) or []:
                cs = dict(cs)
                running = (cs.get("state") or {}).get("running")
                if running is not None:
                    cs["state"] = {"terminated": {"exitCode": 137, "reason": "Error", "message": RESTARTED_MESSAGE,
                                                  "startedAt": running.get("startedAt"), "finishedAt": now,
                                                  "containerID": cs.get("containerID")}}
                    cs["ready"] = False
                    cs["started"] = False
                table[cs["name"]] = cs
        self._set_phase("Failed", "NodeLost", RESTARTED_MESSAGE)
        self._end_conditions("PodFailed")
        self.flush()
        if self.deleting:
            self._finish()

    async def _supervise(self) -> None:
        """Run the containers while watching for deletion, the pod's deadline and spot release."""
        self._accept()
        loop = asyncio.get_running_loop()
        accepted = loop.time()
        spec = self.pod.get("spec") or {}
        deadline = spec.get("activeDeadlineSeconds")
        spot_after = self._spot_after()
        run_task = asyncio.create_task(self._run())
        while not run_task.done():
            self.wake.clear()
            if self.deleting:
                await self._stop_run(run_task, "Deleted", self._grace())
                break
            timers = []
            if deadline is not None:
                timers.append(accepted + float(deadline))
            if spot_after is not None and self.running_since is not None:
                timers.append(self.running_since + spot_after)
            timeout = max(0.0, min(timers) - loop.time()) if timers else None
            waiter = asyncio.create_task(self.wake.wait())
            await asyncio.wait({run_task, waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            now = loop.time()
            if run_task.done():
                break
            if deadline is not None and now >= accepted + float(deadline):
                await self._stop_run(run_task, "DeadlineExceeded", self._grace())
            elif spot_after is not None and self.running_since is not None and now >= self.running_since + spot_after:
                if self.cluster.acs is not None:  # ACS BestEffort preemption (see ../acs.py)
                    self._event(acs.PREEMPT_NOTICE, f"{acs.PREEMPT_MESSAGE} (sandbox fault spot_reclaim_after_s="
                                f"{spot_after:g}s; ACS notifies about 5 minutes ahead)", warning=True)
                else:
                    self._event("SpotToBeReleased", f"Spot ECI will be released in 0 seconds: the spot instance of "
                                f"this pod is reclaimed (sandbox fault spot_reclaim_after_s={spot_after:g}s; real "
                                "ECI gives about 3 minutes of notice)", warning=True)
                await self._stop_run(run_task, "BidFailed", 0.0)
        with contextlib.suppress(Stopped):
            await run_task
        self._conclude()

    async def _stop_run(self, run_task: asyncio.Task[None], reason: str, grace: float) -> None:
        self.stopping = reason
        self.stop_event.set()
        if self.running and grace > 0:
            self.kill_all(signal.SIGTERM)
            with contextlib.suppress(asyncio.TimeoutError, Stopped):
                await asyncio.wait_for(asyncio.shield(run_task), grace)
        self.kill_all(signal.SIGKILL)
        with contextlib.suppress(Stopped):
            await run_task

    def _conclude(self) -> None:
        """Write the final status and, when the pod is being deleted, remove it."""
        if self.gone:
            return
        if self.stopping == "DeadlineExceeded":
            self._set_phase("Failed", "DeadlineExceeded",
                            "Pod was active on the node longer than the specified deadline")
        elif self.stopping == "BidFailed" and self.cluster.acs is not None:
            self._set_phase("Failed", acs.PREEMPT_REASON, acs.PREEMPT_MESSAGE)
            self._condition("DisruptionTarget", "True", acs.PREEMPT_CONDITION_REASON, acs.PREEMPT_MESSAGE)
        elif self.stopping == "BidFailed":
            self._set_phase("Failed", "BidFailed", "The spot instance of this pod was released: the market price "
                            "exceeded the bid or the stock ran out")
            self._condition("DisruptionTarget", "True", "BidFailed", "Spot ECI instance was released")
        elif self.status.get("phase") not in TERMINAL:
            self._set_phase(self._phase_from_exits())
        self._end_conditions("PodCompleted" if self.status.get("phase") == "Succeeded" else "PodFailed")
        self.flush()
        shutil.rmtree(self.pod_dir / "volumes", ignore_errors=True)
        shutil.rmtree(self.pod_dir / "root", ignore_errors=True)
        if self.deleting:
            self._finish()

    def _phase_from_exits(self) -> str:
        states = [cs.get("state") or {} for cs in self.container_status.values()]
        if states and all((s.get("terminated") or {}).get("exitCode") == 0 for s in states):
            return "Succeeded"
        return "Failed"

    def _finish(self) -> None:
        if not self.gone:
            self.store.finish_delete("pods", self.namespace, self.name)
            current = self.store.peek("pods", self.namespace, self.name)
            self.gone = current is None or current["metadata"]["uid"] != self.uid  # else finalizers hold it

    def _grace(self) -> float:
        meta = self.pod.get("metadata") or {}
        spec_grace = (self.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            return float(spec_grace)
        return float(min(grace, spec_grace))

    def _spot_after(self) -> float | None:
        annotations = (self.pod.get("metadata") or {}).get("annotations") or {}
        after = self.cluster.faults.spot_reclaim_after_s
        if self.cluster.acs is not None:
            return self.cluster.acs.reclaim_after(self.pod, after)
        if annotations.get("k8s.aliyun.com/eci-spot-strategy") in SPOT_STRATEGIES and after > 0:
            return float(after)
        return None

    # -------------------------------------------------------------- the run

    async def _run(self) -> None:
        if not await self._create_instance():
            return
        await self._prepare_volumes()
        spec = self.pod.get("spec") or {}
        for container in spec.get("initContainers") or []:
            code = await self._run_container(container, init=True)
            if code != 0:
                self._set_phase("Failed")
                return
        self._condition("Initialized", "True")
        self._schedule_flush()
        # wait for every container, even when one is stopped early, so the final status has them all
        results = await asyncio.gather(*(self._run_container(c, init=False) for c in spec.get("containers") or []),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _create_instance(self) -> bool:
        """ECI instance creation, with the fault knobs; False when the pod failed fast."""
        faults = self.cluster.faults
        annotations = (self.pod.get("metadata") or {}).get("annotations") or {}
        delay = self.t.backoff_initial_s
        ignored = self.cluster.acs.eci_warning(self.pod) if self.cluster.acs is not None else None
        if ignored:
            self.cluster.record_event(self.pod, "EciAnnotationIgnored", ignored, type_="Warning",
                                      component=acs.COMPONENT)
        while faults.roll(faults.eci_create_fail_rate):
            reason = faults.eci_create_fail_reason or "NoStock"
            detail = ECI_MESSAGES.get(reason, f"the instance could not be created ({reason})")
            message = (f"[eci.containergroup]create eci failed, reason: {reason}, message: {detail} "
                       f"(sandbox fault eci_create_fail_rate)")
            if self.cluster.acs is not None:
                message = self.cluster.acs.create_failure_message(reason, self.cluster.node.zone)
            self._condition("ContainerInstanceCreated", "False", reason, message)
            self._event(reason, message, warning=True)
            if reason == "ProviderFailed" or annotations.get("k8s.aliyun.com/pod-fail-on-create-err") == "true":
                self._set_phase("Failed", "ProviderFailed", message)
                self.flush()
                return False
            self.flush()
            await self._pause(delay)
            delay = min(delay * 2, self.t.backoff_max_s)
        self._condition("ContainerInstanceCreated", "True")
        instance = "eci-" + secrets.token_hex(10)
        spec_name = _eci_spec(self.pod)

        def annotate(obj: Obj) -> None:
            ann = obj["metadata"].setdefault("annotations", {})
            if self.cluster.acs is not None:
                ann.update(self.cluster.acs.instance_annotations(obj))
                return
            ann["k8s.aliyun.com/eci-instance-id"] = instance
            ann["k8s.aliyun.com/eci-instance-spec"] = spec_name

        with contextlib.suppress(errors.ApiError):
            self.pod = self.store.mutate("pods", self.namespace, self.name, annotate)
        self._schedule_flush()
        return True

    async def _prepare_volumes(self) -> None:
        builder = VolumeBuilder(self.store, self.pod, self.pod_dir, csi_resolver=self.cluster.csi_resolver,
                                token=self.cluster.token, node_allocatable=self.node.allocatable,
                                token_issuer=getattr(self.cluster, "tokens", None))
        while True:
            try:
                builder.pod = self.pod
                self.volumes = builder.prepare()
                break
            except VolumeNotReady as exc:
                message = str(exc)
                if not message.startswith("MountVolume"):
                    message = f"MountVolume.SetUp failed for volume : {message}"
                self._event("FailedMount", message, warning=True)
                await self._pause(self.t.deps_fallback_s, deps=True)
        for warning in self.volumes.warnings:
            self._event("FailedMount", warning, warning=True)
        (self.pod_dir / "logs").mkdir(parents=True, exist_ok=True)
        root = self.pod_dir / "root"
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o777)

    def _scaled(self, seconds: float) -> float:
        return seconds * max(0.0, float(getattr(self.cluster.node, "backoff_scale", 1.0)))

    async def _run_container(self, container: Obj, *, init: bool) -> int:
        """Run a container until it is done for good; returns its last exit code.

        Restarts follow the kubelet's container back-off (kuberuntime_manager doBackOff): the first restart
        is immediate and arms a 10 s back-off; each later exit within the back-off waits it out in
        `CrashLoopBackOff`, then doubles it up to 5 min; a container that ran longer than twice the maximum
        starts over from 10 s.
        """
        name = container.get("name", "")
        table = self.init_status if init else self.container_status
        policy = (self.pod.get("spec") or {}).get("restartPolicy", "Always")
        backoff: float | None = None  # None: no back-off armed yet (the next restart is immediate)
        loop = asyncio.get_running_loop()
        while True:
            self._check_stop()
            await self._pull(container, table)
            env = await self._configure(container, table)
            started = loop.time()
            code, terminated = await self._execute(container, env, table)
            if self.stopping:
                return code
            restart = (policy == "Always" and not init) or (policy != "Never" and code != 0)
            if not restart:
                return code
            if backoff is not None and loop.time() - started > 2 * self._scaled(self.t.crashloop_max_s):
                backoff = None  # the back-off entry expired while the container ran
            cs = table[name]
            cs["lastState"] = {"terminated": terminated}
            if backoff is None:
                backoff = self._scaled(self.t.crashloop_initial_s)
            else:
                cs["state"] = {"waiting": {"reason": "CrashLoopBackOff", "message":
                                           f"back-off {_duration(backoff)} restarting failed container={name} "
                                           f"pod={self.name}_{self.namespace}({self.uid})"}}
                self._event("BackOff", f"Back-off restarting failed container {name} in pod "
                            f"{self.name}_{self.namespace}({self.uid})", warning=True)
                self._schedule_flush()
                await self._pause(backoff)
                backoff = min(backoff * 2, self._scaled(self.t.crashloop_max_s))
            cs["restartCount"] = cs.get("restartCount", 0) + 1

    async def _pull(self, container: Obj, table: dict[str, Obj]) -> None:
        """The kubelet's EnsureImageExists, without pulling (images.py): InvalidImageName for a reference that
        does not parse, ErrImagePull / ImagePullBackOff for one that cannot be pulled, else a Normal event
        saying that the command runs on the host and no image was pulled."""
        name = container.get("name", "")
        delay = self._scaled(self.t.image_pull_initial_s)
        while True:
            image = self._spec_container(name, container).get("image", "")
            try:
                ref = images.parse(image)
            except images.InvalidReference as exc:
                message = images.invalid_name_message(image, exc)
                self._waiting(table, name, "InvalidImageName", message)
                self._event("InspectFailed", message, warning=True)
                self._event("Failed", "Error: InvalidImageName", warning=True)
                self.flush()
                await self._pause(self.t.deps_fallback_s)  # the next pod sync tries again
                continue
            error = images.pull_error(image, ref, list(self.cluster.faults.missing_images or []))
            if error is None:
                break
            self._event("Pulling", f'Pulling image "{image}"')
            self._waiting(table, name, "ErrImagePull", error)
            self._event("Failed", f'Failed to pull image "{image}": {error}', warning=True)
            self._event("Failed", "Error: ErrImagePull", warning=True)
            self.flush()
            await self._pause(self.t.err_image_pull_hold_s)
            self._waiting(table, name, "ImagePullBackOff", f'Back-off pulling image "{image}": ErrImagePull: {error}')
            self._event("BackOff", f'Back-off pulling image "{image}"')
            self._event("Failed", "Error: ImagePullBackOff", warning=True)
            self.flush()
            await self._pause(delay)
            delay = min(delay * 2, self._scaled(self.t.image_pull_max_s))
        self._event("Pulled", f'Container image "{image}" not pulled: the sandbox runs the container\'s command '
                    "on the host and does not pull images")

    def _spec_container(self, name: str, fallback: Obj) -> Obj:
        spec = self.pod.get("spec") or {}
        for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
            if c.get("name") == name:
                return c
        return fallback

    async def _configure(self, container: Obj, table: dict[str, Obj]) -> dict[str, str]:
        name = container.get("name", "")
        while True:
            try:
                env = build_env(self.store, self.pod, container, api_port=self.cluster.port,
                                node_allocatable=self.node.allocatable)
                self.identities[name] = resolve(self.pod, container)
                return env
            except (ConfigError, NonRootViolation) as exc:
                self._waiting(table, name, "CreateContainerConfigError", str(exc))
                self._event("Failed", f"Error: {exc}", warning=True)
                self.flush()
                await self._pause(self.t.deps_fallback_s, deps=True)

    def _mounts(self, container: Obj, env: dict[str, str]) -> dict[str, str]:
        mounts: dict[str, str] = {}
        for mount in container.get("volumeMounts") or []:
            base = self.volumes.paths.get(mount.get("name", ""))
            if base is None:
                continue
            sub = mount.get("subPath") or expand(mount.get("subPathExpr") or "", env)
            host = base / sub if sub else base
            if sub and not host.exists():
                # The kubelet creates a missing sub-path as root "with the same mode as the volume root"
                # (kubernetes pkg/kubelet/kubelet_pods.go, makeMounts): a non-root container cannot write into
                # it unless the volume root lets it.
                host.mkdir(parents=True, exist_ok=True, mode=base.stat().st_mode & 0o7777)
            mounts[mount.get("mountPath", "")] = str(host)
        return mounts

    def _argv_and_cwd(self, container: Obj, env: dict[str, str]) -> tuple[list[str], Path, dict[str, str]]:
        rewrite = PathRewriter(self._mounts(container, env))
        argv = [rewrite(expand(str(a), env)) for a in
                (container.get("command") or []) + (container.get("args") or [])]
        env = {k: rewrite(v) for k, v in env.items()}
        working_dir = container.get("workingDir") or ""
        cwd = self.pod_dir / "root"
        if working_dir:
            host = rewrite.host_path(working_dir)
            cwd = Path(host) if host else cwd / working_dir.lstrip("/")
            cwd.mkdir(parents=True, exist_ok=True)
        return argv, cwd, env

    def _identity(self, container: Obj, mounts: dict[str, str], cwd: Path, argv: list[str],
                  env: dict[str, str]) -> Identity:
        """The resolved identity (see identity.py); when switching users, make the paths it needs reachable."""
        ident = self.identities.get(container.get("name", "")) or resolve(self.pod, container)
        if ident.ignored and not self._warned_ignored:
            self._warned_ignored = True
            self._event("SecurityContextIgnored", "ECI does not apply pod securityContext field(s) "
                        f"{', '.join(ident.ignored)}; set runAsUser/runAsGroup/runAsNonRoot on the container "
                        "(https://www.alibabacloud.com/help/en/eci/user-guide/configure-a-security-context-for-an-"
                        "elastic-container-instance-or-a-container)", warning=True)
        if ident.switch:
            paths = [cwd, *map(Path, mounts.values())]
            # The host stands in for the image: its program must be reachable by the pod's user too.
            program = shutil.which(argv[0], path=env.get("PATH")) if argv else None
            if program:
                paths += [Path(program), Path(os.path.realpath(program))]
            for path in paths:
                ensure_traversable(path)
        return ident

    async def _execute(self, container: Obj, env: dict[str, str], table: dict[str, Obj]) -> tuple[int, Obj]:
        """Start the process and wait for it; returns (exit code, terminated state)."""
        name = container.get("name", "")
        argv, cwd, env = self._argv_and_cwd(container, env)
        ident = self._identity(container, self._mounts(container, env), cwd, argv, env)
        if not argv:
            return self._start_error(table, name, "the sandbox cannot run the image's entrypoint: there is no "
                                     "image; set the container's command (and args)", fatal=True)
        log_path = self.pod_dir / "logs" / f"{name}.log"
        container_id = _container_id()
        if table.get(name, {}).get("restartCount", 0) > 0:
            rotate_log(log_path)
        async with self.node.spawn_sem:
            self._check_stop()
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.STDOUT, cwd=str(cwd),
                    env=env, start_new_session=True, **ident.popen_kwargs())
            except (OSError, ValueError) as exc:
                return self._start_error(table, name, f'failed to create containerd task: exec: "{argv[0]}": '
                                         f"{exc.strerror if isinstance(exc, OSError) else exc}: unknown")
            finally:
                os.close(fd)
        started = now_iso()
        write_attempt_id(log_path, container_id)
        run = ContainerRun(proc, container_id, started)
        self.running[name] = run
        if self.stop_event.is_set():
            signal_group(proc.pid, signal.SIGKILL)  # stopped while it was being started
        self.node.record_process({
            "pod": self.name, "namespace": self.namespace, "uid": self.uid, "container": name,
            "index": ((self.pod.get("metadata") or {}).get("annotations") or {}).get(INDEX_ANNOTATION),
            "pid": proc.pid, "user": ident.uid if ident.switch else os.geteuid(),
            "started": started, "restart": table.get(name, {}).get("restartCount", 0),
        })
        self._mark_running(container, table, run)
        limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
        watch = self.node.memory.add(proc.pid, memory_bytes(limit)) if limit else None
        try:
            returncode = await proc.wait()
        finally:
            if watch is not None:
                self.node.memory.remove(proc.pid)
            signal_group(proc.pid, signal.SIGKILL)  # the container's other processes end with it
            self.running.pop(name, None)
        code = _exit_code(returncode)
        reason = "OOMKilled" if watch is not None and watch.oom_killed else "Completed" if code == 0 else "Error"
        terminated = {"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": now_iso(),
                      "containerID": container_id}
        cs = table[name]
        cs.update({"state": {"terminated": terminated}, "ready": False, "started": False})
        self._refresh_ready()
        self._schedule_flush()
        return code, terminated

    def _start_error(self, table: dict[str, Obj], name: str, message: str, *, fatal: bool = False
                     ) -> tuple[int, Obj]:
        now = now_iso()
        terminated = {"exitCode": 128, "reason": "StartError", "message": message, "startedAt": now,
                      "finishedAt": now}
        table[name] = {**table.get(name, self._blank(name)), "state": {"terminated": terminated}, "ready": False,
                       "started": False}
        self._event("Failed", f"Error: {message}", warning=True)
        if fatal:
            self._set_phase("Failed", "StartError", message)
            self.stopping = self.stopping or "StartError"
        self._schedule_flush()
        return 128, terminated

    def _mark_running(self, container: Obj, table: dict[str, Obj], run: ContainerRun) -> None:
        name = container.get("name", "")
        cs = table.setdefault(name, self._blank(name))
        cs.update({"state": {"running": {"startedAt": run.started}}, "ready": table is self.container_status,
                   "started": True, "containerID": run.container_id, "image": container.get("image", "")})
        if self.running_since is None and table is self.container_status:
            self.running_since = asyncio.get_running_loop().time()
            self.wake.set()  # the supervisor arms the spot timer
        if table is self.container_status:
            self._set_phase("Running")
        self._condition("PodReadyToStartContainers", "True")
        self._refresh_ready()
        self._event("Created", f"Created container {name}")
        self._event("Started", f"Started container {name}")
        self._schedule_flush()

    # -------------------------------------------------------------- waiting helpers

    def _check_stop(self) -> None:
        if self.stop_event.is_set():
            raise Stopped(self.stopping or "stopped")

    async def _pause(self, seconds: float, *, deps: bool = False) -> None:
        """Sleep, waking early on a stop (raises Stopped) or, with deps, when ConfigMaps/Secrets/PVCs change."""
        self._check_stop()
        waits = [asyncio.create_task(self.stop_event.wait())]
        if deps:
            waits.append(asyncio.create_task(self.node.deps_changed()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        self._check_stop()

    # -------------------------------------------------------------- status model

    def _blank(self, name: str) -> Obj:
        container = self._spec_container(name, {})
        return {"name": name, "image": container.get("image", ""), "imageID": "", "ready": False,
                "restartCount": 0, "started": False, "state": {"waiting": {"reason": "ContainerCreating"}},
                "lastState": {}}

    def _accept(self) -> None:
        """The node takes the pod: Pending, ContainerCreating, IPs, startTime."""
        spec = self.pod.get("spec") or {}
        now = now_iso()
        ip = self.node.allocate_ip()
        self.status = {"phase": "Pending", "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
                       "podIP": ip, "podIPs": [{"ip": ip}], "startTime": now,
                       "qosClass": (self.pod.get("status") or {}).get("qosClass") or self._qos()}
        for c in spec.get("initContainers") or []:
            self.init_status[c["name"]] = {**self._blank(c["name"]),
                                           "state": {"waiting": {"reason": "PodInitializing"}}}
        for c in spec.get("containers") or []:
            self.container_status[c["name"]] = self._blank(c["name"])
        self._condition("PodReadyToStartContainers", "False")
        if spec.get("initContainers"):
            self._condition("Initialized", "False", "ContainersNotInitialized",
                            f"containers with incomplete status: [{' '.join(self.init_status)}]")
        else:
            self._condition("Initialized", "True")
        self._refresh_ready()
        self._schedule_flush()

    def _qos(self) -> str:
        containers = (self.pod.get("spec") or {}).get("containers") or []
        requests_seen, guaranteed = False, bool(containers)
        for c in containers:
            res = c.get("resources") or {}
            limits, reqs = res.get("limits") or {}, res.get("requests") or {}
            if limits or reqs:
                requests_seen = True
            if not all(k in limits and reqs.get(k, limits[k]) == limits[k] for k in ("cpu", "memory")):
                guaranteed = False
        return "Guaranteed" if guaranteed else "Burstable" if requests_seen else "BestEffort"

    def _waiting(self, table: dict[str, Obj], name: str, reason: str, message: str) -> None:
        cs = table.setdefault(name, self._blank(name))
        cs["state"] = {"waiting": {"reason": reason, "message": message}}
        cs["ready"] = False

    def _condition(self, type_: str, status: str, reason: str | None = None, message: str | None = None) -> None:
        old = self.conditions.get(type_)
        cond: Obj = {"type": type_, "status": status, "lastProbeTime": None,
                     "lastTransitionTime": old["lastTransitionTime"] if old and old["status"] == status else now_iso()}
        if reason:
            cond["reason"] = reason
        if message:
            cond["message"] = message
        self.conditions[type_] = cond

    def _refresh_ready(self) -> None:
        not_ready = [n for n, cs in self.container_status.items() if not cs.get("ready")]
        if not_ready:
            message = f"containers with unready status: [{' '.join(not_ready)}]"
            self._condition("ContainersReady", "False", "ContainersNotReady", message)
            self._condition("Ready", "False", "ContainersNotReady", message)
        else:
            self._condition("ContainersReady", "True")
            self._condition("Ready", "True")

    def _end_conditions(self, reason: str) -> None:
        for type_ in ("ContainersReady", "Ready"):
            self._condition(type_, "False", reason)
        self._condition("PodReadyToStartContainers", "False")

    def _set_phase(self, phase: str, reason: str | None = None, message: str | None = None) -> None:
        self.status["phase"] = phase
        for key, value in (("reason", reason), ("message", message)):
            if value:
                self.status[key] = value
            else:
                self.status.pop(key, None)
        self._schedule_flush()

    def _event(self, reason: str, message: str, *, warning: bool = False) -> None:
        self.cluster.record_event(self.pod, reason, message, type_="Warning" if warning else "Normal",
                                  component=COMPONENT)

    def _schedule_flush(self) -> None:
        if self._flush_handle is None and not self.gone:
            self._flush_handle = asyncio.get_running_loop().call_later(self.t.flush_delay_s, self.flush)

    def flush(self) -> None:
        """Write the local status model to the pod (one write for everything changed since the last)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self.gone:
            return
        spec = self.pod.get("spec") or {}

        def ordered(table: dict[str, Obj], containers: list[Obj]) -> list[Obj]:
            return [table[c["name"]] for c in containers if c.get("name") in table]

        def apply(obj: Obj) -> None:
            status = obj.setdefault("status", {})
            kept = [c for c in status.get("conditions") or [] if c.get("type") not in MANAGED_CONDITIONS]
            status["conditions"] = kept + list(self.conditions.values())
            for key in ("reason", "message"):
                status.pop(key, None)
            status.update(self.status)
            status["containerStatuses"] = ordered(self.container_status, spec.get("containers") or [])
            if self.init_status:
                status["initContainerStatuses"] = ordered(self.init_status, spec.get("initContainers") or [])

        try:
            self.pod = self.store.mutate("pods", self.namespace, self.name, apply, subresource="status")
        except errors.ApiError as exc:
            if exc.code == 404:
                self.gone = True

