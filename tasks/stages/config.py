"""Stage publish_config: the run's files, secrets and env reach the pods as an immutable ConfigMap and Secret.

Why immutable and content-named: a Job that is running (or re-attached after a crash) must see exactly the config
it started with. Changing a file gives a new name, hence a new Job spec hash, hence a new Job; the old objects are
never edited under a running pod. Publishing is find-then-create: an object with the same name already has the
same content (the name *is* the content hash), so a 409 from a concurrent or earlier attempt is success.

The OSS connection the pods need travels the same way: plain settings as env (in the Job), and with pod
credentials 'target' the flow's AccessKey as secret env from this Secret (logged as a warning). With 'rrsa' (the
default on ASK/ACS) no key is stored: the run's ServiceAccount, annotated with the RAM role, is published here
instead (``tasks.render.rrsa``), and the Job's pods trade its OIDC token for temporary keys.
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
from tasks.render.rrsa import role_arn_for
from tasks.spec import BatchSpec

log = logging.getLogger("ask_batch.config")

def publish_config(core_v1: Any, spec: BatchSpec, run_key: str, content: ConfigContent, *,
                   rrsa_oidc_provider_arn: str | None = None) -> ConfigHandle:
    """Create the ConfigMap, Secret and ServiceAccount if they do not exist yet (idempotent, concurrent-safe).

    Args:
        core_v1: a ``kubernetes.client.CoreV1Api``.
        rrsa_oidc_provider_arn: the cluster's RRSA OIDC provider (``ClusterHandle``), with pod credentials 'rrsa'.

    Raises:
        ValueError: pod credentials 'rrsa' without the cluster's OIDC provider.
    """
    from kubernetes.client.exceptions import ApiException

    ns = spec.cluster.namespace
    names: dict[str, str] = {}
    creators = {"ConfigMap": core_v1.create_namespaced_config_map, "Secret": core_v1.create_namespaced_secret,
                "ServiceAccount": core_v1.create_namespaced_service_account}
    for body in render_config_objects(spec, run_key, content):
        kind, name = body["kind"], body["metadata"]["name"]
        try:
            call(creators[kind], ns, body, service="Kubernetes", operation=f"create {kind} {name}")
        except Exception as exc:
            if not (isinstance(exc.__cause__, ApiException) and exc.__cause__.status == 409):
                raise
            # Same name = same content for the ConfigMap and Secret (the name is their hash). The ServiceAccount's
            # name is the run's: make its role annotation the one asked for now.
            if kind == "ServiceAccount":
                call(core_v1.patch_namespaced_service_account, name, ns,
                     {"metadata": {"annotations": body["metadata"]["annotations"]}},
                     service="Kubernetes", operation=f"patch ServiceAccount {name}")
        names[kind] = name
    role_arn = None
    if "ServiceAccount" in names:
        if not rrsa_oidc_provider_arn:
            raise ValueError("pod credentials 'rrsa' need the cluster's RRSA OIDC provider ARN")
        role_arn = role_arn_for(rrsa_oidc_provider_arn, spec.outputs.rrsa_role_name)
    return ConfigHandle(
        namespace=ns,
        config_map=names.get("ConfigMap"),
        secret=names.get("Secret"),
        secret_file_keys=tuple(sorted(content.secret_files)),
        secret_env_keys=tuple(sorted(content.secret_env)),
        service_account=names.get("ServiceAccount"),
        rrsa_role_arn=role_arn,
        rrsa_oidc_provider_arn=rrsa_oidc_provider_arn if role_arn else None,
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
        handle = publish_config(client.CoreV1Api(ctx.kube(cluster)), spec, run_key, content,
                                rrsa_oidc_provider_arn=cluster.rrsa_oidc_provider_arn)
        log.info("config published: ConfigMap %s, Secret %s (keys: %s)", handle.config_map, handle.secret,
                 ", ".join(handle.secret_file_keys + handle.secret_env_keys) or "none")
        if handle.service_account:
            log.info("pods use RRSA: ServiceAccount %s assumes RAM role %s (no AccessKey stored in the cluster)",
                     handle.service_account, handle.rrsa_role_arn)
        if spec.outputs.pod_credentials == "target":
            log.warning("outputs.pod_credentials 'target': the flow's own AccessKey (which may create clusters) is "
                        "given to every pod through Secret %s; prefer 'rrsa' (cluster modes 'ask'/'acs', the "
                        "default there; docs/ram-policy.md)", handle.secret)
        return handle
