"""Stage publish_config: the run's files, secrets and env reach the pods as an immutable ConfigMap and Secret.

Why immutable and content-named: a Job that is running (or re-attached after a crash) must see exactly the config
it started with. Changing a file gives a new name, hence a new Job spec hash, hence a new Job; the old objects are
never edited under a running pod. Publishing is find-then-create: an object with the same name already has the
same content (the name *is* the content hash), so a 409 from a concurrent or earlier attempt is success.

The OSS connection the pods need travels the same way: plain settings as env (in the Job), the AccessKey (if the
pods do not use a RAM role) as secret env from this Secret.
"""

import logging
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.cloud.clients import _load_prefect_secret
from tasks.cloud.context import RETRY_DELAYS, stage_context, stage_logs, transient_only
from tasks.cloud.inputs import collect_config_content, pod_credential_env
from tasks.cloud.retry import call
from tasks.handles import ClusterHandle, ConfigHandle
from tasks.render.manifests import ConfigContent, render_config_objects
from tasks.spec import BatchSpec

log = logging.getLogger("ask_batch.config")

def publish_config(core_v1: Any, spec: BatchSpec, run_key: str, content: ConfigContent) -> ConfigHandle:
    """Create the ConfigMap and Secret if they do not exist yet (idempotent, concurrent-safe).

    Args:
        core_v1: a ``kubernetes.client.CoreV1Api``.
    """
    from kubernetes.client.exceptions import ApiException

    ns = spec.cluster.namespace
    names: dict[str, str] = {}
    for body in render_config_objects(spec, run_key, content):
        kind, name = body["kind"], body["metadata"]["name"]
        create = core_v1.create_namespaced_config_map if kind == "ConfigMap" else core_v1.create_namespaced_secret
        try:
            call(create, ns, body, service="Kubernetes", operation=f"create {kind} {name}")
        except Exception as exc:
            # Same name = same content (the name is its hash): an existing object is what we wanted.
            if not (isinstance(exc.__cause__, ApiException) and exc.__cause__.status == 409):
                raise
        names[kind] = name
    return ConfigHandle(
        namespace=ns,
        config_map=names.get("ConfigMap"),
        secret=names.get("Secret"),
        secret_file_keys=tuple(sorted(content.secret_files)),
        secret_env_keys=tuple(sorted(content.secret_env)),
    )


# --------------------------------------------------------------------------------------------- Prefect task


@task(name="publish_config", cache_policy=NO_CACHE, retries=len(RETRY_DELAYS), retry_delay_seconds=RETRY_DELAYS,
      retry_condition_fn=transient_only)
def publish_config_task(spec: BatchSpec, run_key: str, cluster: ClusterHandle) -> ConfigHandle:
    """Prefect task: create the run's immutable ConfigMap and Secret (see ``publish_config``).

    The Secret's content is read here, from its sources, and never leaves this task: the handle holds names only.
    """
    from kubernetes import client

    with stage_context(spec) as ctx, stage_logs(ctx.scrubber):
        content = collect_config_content(spec.config, load_secret=_load_prefect_secret,
                                         extra_secret_env=pod_credential_env(spec, ctx.credentials))
        handle = publish_config(client.CoreV1Api(ctx.kube(cluster)), spec, run_key, content)
        log.info("config published: ConfigMap %s, Secret %s (keys: %s)", handle.config_map, handle.secret,
                 ", ".join(handle.secret_file_keys + handle.secret_env_keys) or "none")
        return handle
