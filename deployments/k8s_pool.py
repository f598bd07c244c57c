"""The Kubernetes work pool: the flow itself runs as a pod in the cluster (prefect-kubernetes worker).

    prefect work-pool create ask-batch-k8s --type kubernetes --base-job-template deployments/k8s-base-job-template.json
    kubectl apply -f deployments/k8s-namespace.yaml      # the namespace and service account the flow pods use
    prefect deploy --all --no-prompt                     # includes ask-batch/adhoc-k8s
    prefect worker start --pool ask-batch-k8s --type kubernetes

How a run gets to the flow code: the worker creates a Job from the pool's base job template whose container runs
``prefect flow-run execute`` (the worker's command) in the image built from ``deployments/Dockerfile``, which holds
this repository at ``/app`` and its requirements on ``PATH``. The deployment's pull step then changes into that
directory before Prefect imports the entrypoint. The directory is the only thing about the image the deployment
has to know, and it is decided when deploying (``image_directory`` below), so one prefect.yaml serves an image
with another layout too.

Prefect documents this pattern (an image with the code and a ``set_working_directory`` pull step):
https://docs.prefect.io/v3/how-to-guides/deployment_infra/kubernetes
"""

import os
import subprocess
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deployments.local import Stack

#: The work pool of type ``kubernetes`` (``make up`` creates it, with ``BASE_JOB_TEMPLATE``).
POOL = "ask-batch-k8s"

#: Path of the base job template, relative to the project root.
BASE_JOB_TEMPLATE = "deployments/k8s-base-job-template.json"

#: Where ``deployments/Dockerfile`` puts this repository (its ``WORKDIR``).
IMAGE_DIRECTORY = "/app"

#: Environment variable that overrides ``IMAGE_DIRECTORY`` at deploy time (an image with another layout, or a
#: node whose containers see this repository elsewhere).
IMAGE_DIRECTORY_ENV = "ASK_BATCH_IMAGE_WORKDIR"


def image_directory() -> dict[str, str]:
    """Build step: ``{"directory": ...}``, where the flow pod finds this repository, for the pull step.

    ``$ASK_BATCH_IMAGE_WORKDIR`` when set (read by ``prefect deploy``, not by the pods), else ``/app``.

    Example (prefect.yaml):
        build:
          - deployments.k8s_pool.image_directory: {id: flow_image}
        deployments:
          - name: adhoc-k8s
            pull:
              - prefect.deployments.steps.set_working_directory: {directory: "{{ flow_image.directory }}"}

    Raises:
        ValueError: the override is not an absolute path (a pod has no meaningful working directory to resolve
            a relative one against).
    """
    directory = os.environ.get(IMAGE_DIRECTORY_ENV) or IMAGE_DIRECTORY
    if not os.path.isabs(directory):
        raise ValueError(f"{IMAGE_DIRECTORY_ENV}={directory!r} is not an absolute path; fix: give the directory "
                         f"that holds this repository inside the flow's image, e.g. {IMAGE_DIRECTORY}")
    return {"directory": directory}


def start_worker(stack: "Stack", name: str, *, timeout: float = 90.0) -> subprocess.Popen:
    """Start ``prefect worker start --pool ask-batch-k8s --type kubernetes --name NAME`` for ``stack``.

    The worker is started the way the stack starts its process worker (its own session, SIGINT at its default,
    log and pid file ``<state>/<name>.log|.pid``; ``stack.stop(name)`` stops it) and this returns once it
    heartbeats in the pool. It reaches the cluster with the kubeconfig of its environment (``KUBECONFIG`` in
    ``stack.extra_env``, in-cluster config inside a pod).

    Why SIGINT matters: Prefect's worker turns its first SIGTERM into a SIGINT to itself, and a process started
    in the background of a non-interactive shell inherits SIGINT *ignored*, so that SIGTERM does nothing
    (``prefect.utilities.processutils.setup_signal_handlers_worker``, added in
    https://github.com/PrefectHQ/prefect/pull/9530). Kubernetes, systemd and Docker start it with SIGINT at its
    default, and then one SIGTERM stops it.

    Raises:
        StackError: the worker exited or did not heartbeat within ``timeout`` seconds (naming its log).
    """
    from deployments.local import BIN, http_json, wait_until

    proc = stack._spawn(name, [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "kubernetes",
                               "--name", name])

    def online() -> bool:
        workers: Any = http_json(f"{stack.api_url}/work_pools/{POOL}/workers/filter", {}) or []
        return any(w["name"] == name and w.get("last_heartbeat_time") for w in workers)

    wait_until(online, timeout=timeout, what=f"kubernetes worker (log {stack.log_file(name)})",
               alive=lambda: proc.poll() is None, interval=0.5)
    return proc
