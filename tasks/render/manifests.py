"""Pure builders: Kubernetes objects and cloud API requests, as plain dicts.

Why pure: every object the run will create can be rendered without a network (``--dry-run``, unit tests), and
the *same* rendering is what the stages send, so the dry run cannot drift from the real run. Names come from the
run key and content hashes (``tasks.naming``), so rendering twice gives byte-equal objects and a retried flow finds
what an earlier attempt created.

Secrets: ``secret_manifest`` necessarily holds secret values (base64 is not encryption). Anything rendered for a
human goes through ``redact()`` first, which blanks Secret data and scrubs any known secret value from every string.

The pod contract (what the workload can rely on), all set as env vars on the container:

============================  ===========================================================================
``ASK_BATCH_INDEX``           this pod's shard, 0..completions-1, on the first Job *and* on a follow-up Job
                              that re-runs only the missing indexes (``job.rerun: missing``): read this one
``JOB_COMPLETION_INDEX``      set by Kubernetes for Indexed Jobs; equal to ``ASK_BATCH_INDEX`` on the first
                              Job, and set to it by ask-batch on a follow-up Job (Kubernetes keeps a
                              container's own ``JOB_COMPLETION_INDEX``: ``addCompletionIndexEnvVariable`` in
                              https://github.com/kubernetes/kubernetes/blob/master/pkg/controller/job/indexed_job_utils.go)
``ASK_BATCH_RUN_KEY``         the run key
``ASK_BATCH_CONFIG_DIR``      the ConfigMap mount (if any config files)
``ASK_BATCH_SECRET_DIR``      the Secret mount (if any secret files)
``ASK_BATCH_DATA_DIR``        the shared volume mount (if storage is not 'none')
``ASK_BATCH_OSS_*``           ENDPOINT, REGION, BUCKET of the outputs
``ASK_BATCH_OUTPUT_PREFIX``   the index's prefix, with a literal ``{index}`` field to format
``ASK_BATCH_MARKER_NAME``     name of the done-marker object (``completeness: marker``)
``OSS_ACCESS_KEY_ID/SECRET``  from the Secret (secretKeyRef), with pod credentials 'target' only
``ALIBABA_CLOUD_ROLE_ARN`` …  with pod credentials 'rrsa': the RAM role, OIDC provider, token file and STS
                              endpoint (``tasks.render.rrsa``); the SDK's OIDC provider trades the token for keys
============================  ===========================================================================
"""

import base64
import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tasks.handles import ConfigHandle, VolumeHandle
from tasks.naming import (
    INDEX_LABEL,
    config_map_name,
    content_hash,
    format_tags,
    job_name,
    run_labels,
    secret_name,
    short_hash,
)
from tasks.render.compute import (
    ON_DEMAND_ANNOTATION,
    ON_DEMAND_RULE,
    ClusterKind,
    acs_annotations,
    acs_labels,
    check_for_kind,
    eci_compute_annotations,
    is_preemptible,
    moves_reclaims_on_demand,
    on_demand_job,
)
from tasks.render.pod_patch import apply_pod_template_patch
from tasks.render.redact import REDACTED, Scrubber
from tasks.render.rrsa import RrsaIdentity, apply_rrsa, service_account_manifest
from tasks.spec import (
    AskClusterOptions,
    BatchSpec,
    EciOptions,
    JobSpec,
    NasOptions,
    OutputsSpec,
    PodSecurity,
    Target,
)

CONTAINER_NAME = "workload"
SECRET_ENV_KEY_PREFIX = "env."  # Secret keys that back env vars; kept apart from secret *files*
NAS_CSI_DRIVER = "nasplugin.csi.alibabacloud.com"
NAS_PV_LABEL = "alicloud-pvname"
ECI = "k8s.aliyun.com/"
# Mode of mounted config and secret files: readable by whatever user the image runs as. ECI does not apply
# fsGroup, so a 0400 root-owned file would be unreadable by a non-root workload; the files are visible inside
# the pod only.
READABLE_MODE = 0o444
DATA_DIR_INIT_NAME = "prepare-data-dir"

# --------------------------------------------------------------------------------------------- config objects


@dataclass(frozen=True)
class ConfigContent:
    """Resolved content for the ConfigMap and the Secret (file bytes, secret values), before rendering."""

    files: Mapping[str, bytes] = field(default_factory=dict)
    secret_files: Mapping[str, bytes] = field(default_factory=dict)
    secret_env: Mapping[str, str] = field(default_factory=dict)

    def secret_values(self) -> list[str]:
        """Every secret value as text, for ``redact(..., secrets=...)`` and log masking."""
        values = [v for v in self.secret_env.values() if v]
        values += [b.decode("utf-8", "replace") for b in self.secret_files.values() if b]
        return values


def _data_split(files: Mapping[str, bytes]) -> tuple[dict[str, str], dict[str, str]]:
    """ConfigMap ``data`` (UTF-8 text) and ``binaryData`` (base64) from file bytes."""
    data, binary = {}, {}
    for name, raw in sorted(files.items()):
        try:
            data[name] = raw.decode("utf-8")
        except UnicodeDecodeError:
            binary[name] = base64.b64encode(raw).decode()
    return data, binary


def config_map_manifest(run_key: str, files: Mapping[str, bytes], *, namespace: str) -> dict[str, Any]:
    """An immutable ConfigMap named ``askb-cfg-<run>-<content hash>``."""
    data, binary = _data_split(files)
    digest = content_hash({"data": data, "binaryData": binary})
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": config_map_name(run_key, digest), "namespace": namespace,
                     "labels": run_labels(run_key), "annotations": {"ask-batch.io/content-hash": digest}},
        "immutable": True,
        "data": data,
    }
    if binary:
        body["binaryData"] = binary
    return body


def secret_data(content: ConfigContent) -> dict[str, bytes]:
    """Secret keys -> raw bytes: files under their names, env values under ``env.<NAME>``."""
    out = {name: bytes(raw) for name, raw in content.secret_files.items()}
    out.update({SECRET_ENV_KEY_PREFIX + name: value.encode() for name, value in content.secret_env.items()})
    return out


def secret_manifest(run_key: str, content: ConfigContent, *, namespace: str) -> dict[str, Any]:
    """An immutable Opaque Secret named ``askb-sec-<run>-<hash>``.

    The hash is salted with the run key and truncated, so the name identifies the content within a run (a
    changed token gives a new object) but cannot be matched against a guessed value in another run's logs.
    """
    raw = secret_data(content)
    encoded = {k: base64.b64encode(v).decode() for k, v in sorted(raw.items())}
    digest = content_hash(encoded, salt=f"secret:{run_key}")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": secret_name(run_key, digest), "namespace": namespace, "labels": run_labels(run_key),
                     "annotations": {"ask-batch.io/content-hash": digest}},
        "immutable": True,
        "data": encoded,
    }


def render_config_objects(spec: BatchSpec, run_key: str, content: ConfigContent) -> list[dict[str, Any]]:
    """The ConfigMap and Secret to create (either may be absent when empty), and with pod credentials 'rrsa'
    the run's ServiceAccount (``tasks.render.rrsa``)."""
    ns = spec.cluster.namespace
    objects = []
    if content.files:
        objects.append(config_map_manifest(run_key, content.files, namespace=ns))
    if content.secret_files or content.secret_env:
        objects.append(secret_manifest(run_key, content, namespace=ns))
    if spec.outputs.pod_credentials == "rrsa":
        objects.append(service_account_manifest(run_key, namespace=ns, role_name=spec.outputs.rrsa_role_name))
    return objects


# --------------------------------------------------------------------------------------------- NAS volume


def nas_pv_manifest(pv_name: str, *, run_key: str, server: str, path: str, nas: NasOptions,
                    claim_namespace: str, claim_name: str) -> dict[str, Any]:
    """Static PV for the Alibaba NAS CSI driver; volumeHandle must equal the PV name.

    The PV is reserved for the run's claim (``claimRef`` namespace/name): a PV without one goes to *any* pending
    claim that fits, in any namespace, so someone else's claim could take it (and mount the run's NAS) and leave
    the run's claim Pending. Sources: https://www.alibabacloud.com/help/en/ack/serverless-kubernetes/user-guide/
    nas-volume-overview-3, https://kubernetes.io/docs/concepts/storage/persistent-volumes/
    #reserving-a-persistentvolume
    """
    labels = {**run_labels(run_key), NAS_PV_LABEL: pv_name}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": pv_name, "labels": labels},
        "spec": {
            "capacity": {"storage": f"{nas.capacity_gib}Gi"},
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "claimRef": {"namespace": claim_namespace, "name": claim_name},
            "csi": {"driver": NAS_CSI_DRIVER, "volumeHandle": pv_name,
                    "volumeAttributes": {"server": server, "path": path}},
            "mountOptions": list(nas.mount_options),
        },
    }


def nas_pvc_manifest(pvc_name: str, pv_name: str, *, run_key: str, namespace: str,
                     capacity_gib: int) -> dict[str, Any]:
    """PVC bound to exactly that PV: label selector + ``storageClassName: ""`` (no dynamic provisioning)."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": pvc_name, "namespace": namespace, "labels": run_labels(run_key)},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "volumeName": pv_name,
            "resources": {"requests": {"storage": f"{capacity_gib}Gi"}},
            "selector": {"matchLabels": {NAS_PV_LABEL: pv_name}},
        },
    }


# --------------------------------------------------------------------------------------------- OSS layout


def run_prefix(outputs: OutputsSpec, *, run_key: str, flow_run_name: str) -> str:
    """The run's OSS prefix, e.g. ``ask-batch/<run key>/``."""
    return outputs.prefix_template.format(run_key=run_key, flow_run_name=flow_run_name)


def index_prefix(outputs: OutputsSpec, prefix: str, index: int) -> str:
    """One index's OSS prefix under the run prefix."""
    return prefix + outputs.index_template.format(index=index)


def pod_oss_endpoint(outputs: OutputsSpec, target: Target) -> str:
    """The OSS endpoint the pods use: explicit, else the flow's override, else the region's internal one."""
    if outputs.pod_endpoint:
        return outputs.pod_endpoint
    if target.endpoints.oss:
        return target.endpoints.oss
    return f"https://oss-{target.region}-internal.aliyuncs.com"


def pod_oss_env(spec: BatchSpec, *, run_key: str, flow_run_name: str) -> dict[str, str]:
    """The plain (non-secret) env telling the workload where its outputs go."""
    prefix = run_prefix(spec.outputs, run_key=run_key, flow_run_name=flow_run_name)
    # The pods format {index} themselves; escape any other braces the prefix might contain.
    escaped = prefix.replace("{", "{{").replace("}", "}}")
    return {
        "ASK_BATCH_OSS_ENDPOINT": pod_oss_endpoint(spec.outputs, spec.target),
        "ASK_BATCH_OSS_REGION": spec.target.region,
        "ASK_BATCH_OSS_BUCKET": spec.outputs.bucket,
        "ASK_BATCH_OUTPUT_PREFIX": escaped + spec.outputs.index_template,
        "ASK_BATCH_MARKER_NAME": spec.outputs.marker_name,
    }


# --------------------------------------------------------------------------------------------- Job


def eci_annotations(eci: EciOptions) -> dict[str, str]:
    """ECI options as pod-template annotations; they only act at pod creation
    (https://www.alibabacloud.com/help/en/eci/user-guide/pod-annotations)."""
    ann: dict[str, str] = {}
    if eci.use_specs:
        ann[ECI + "eci-use-specs"] = ",".join(eci.use_specs)
    if eci.spot_strategy != "None":
        ann[ECI + "eci-spot-strategy"] = eci.spot_strategy
        if eci.spot_price_limit is not None:
            ann[ECI + "eci-spot-price-limit"] = f"{eci.spot_price_limit:.3f}".rstrip("0").rstrip(".")
        if eci.spot_duration_hours is not None:
            ann[ECI + "eci-spot-duration"] = str(eci.spot_duration_hours)
        if eci.spot_fallback:
            ann[ECI + "eci-spot-fallback"] = "true"
    if eci.image_snapshot_id:
        ann[ECI + "eci-image-snapshot-id"] = eci.image_snapshot_id
    elif eci.image_cache:
        ann[ECI + "eci-image-cache"] = "true"
    if eci.extra_ephemeral_storage:
        ann[ECI + "eci-extra-ephemeral-storage"] = eci.extra_ephemeral_storage
    if eci.ram_role_name:
        ann[ECI + "eci-ram-role-name"] = eci.ram_role_name
    if eci.fail_on_create_error:
        ann[ECI + "pod-fail-on-create-err"] = "true"
    ann.update(eci.extra_annotations)
    return ann


def _pod_metadata(job: JobSpec, labels: dict[str, str], kind: ClusterKind) -> dict[str, Any]:
    if kind == "acs":
        # job.labels win, so a compute class ask-batch does not list yet can be set directly (ACS admission decides)
        return {"labels": {**acs_labels(job), **labels}, "annotations": acs_annotations(job)}
    return {"labels": labels, "annotations": {**eci_annotations(job.eci), **eci_compute_annotations(job)}}


#: Without backoff_limit_per_index, ask-batch's default Job-wide budget (Kubernetes' own default is 6).
DEFAULT_BACKOFF_LIMIT = 3
#: The podFailurePolicy rule added for spot pods: a pod the cloud took away does not count against any budget.
#: https://kubernetes.io/docs/concepts/workloads/controllers/job/#pod-failure-policy (condition
#: ``DisruptionTarget``: https://kubernetes.io/docs/concepts/workloads/pods/disruptions/#pod-disruption-conditions)
MAX_POD_FAILURE_RULES = 20  # https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/job-v1/
IGNORE_DISRUPTIONS = {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}


def job_backoff_limit(job: JobSpec) -> int | None:
    """``backoffLimit`` to send: the user's; else none next to ``backoffLimitPerIndex`` (Kubernetes then defaults
    it to 2147483647, so only the per-index budget applies:
    https://kubernetes.io/docs/concepts/workloads/controllers/job/#backoff-limit-per-index); else 3."""
    if job.backoff_limit is not None:
        return job.backoff_limit
    return None if job.backoff_limit_per_index is not None else DEFAULT_BACKOFF_LIMIT


def pod_failure_policy(job: JobSpec) -> dict[str, Any] | None:
    """The user's ``podFailurePolicy``, with ``IGNORE_DISRUPTIONS`` first when the pods are spot.

    Kubernetes applies the first rule that matches, so ours goes first (a user's ``onExitCodes`` rule would
    otherwise match a reclaimed pod's exit code 137); it is left out when the user has a rule on the
    ``DisruptionTarget`` condition (theirs decides), when ``job.eci.ignore_reclaims`` is off, and with
    ``restart_policy: OnFailure`` (Kubernetes accepts a podFailurePolicy only with ``Never``).

    With ``job.eci.max_reclaims`` in force (``moves_reclaims_on_demand``), ``ON_DEMAND_RULE`` (``FailIndex`` on
    the condition ask-batch writes on a pod it moves on demand) goes before everything, room permitting (at
    most 20 rules).
    """
    rules = copy.deepcopy((job.pod_failure_policy or {}).get("rules") or [])
    own_rule = any(c.get("type") == "DisruptionTarget" for r in rules for c in r.get("onPodConditions") or [])
    if ((job.eci.spot_strategy != "None" or is_preemptible(job)) and job.eci.ignore_reclaims and not own_rule
            and job.restart_policy == "Never"):
        rules.insert(0, copy.deepcopy(IGNORE_DISRUPTIONS))
    if moves_reclaims_on_demand(job) and len(rules) < MAX_POD_FAILURE_RULES:
        rules.insert(0, copy.deepcopy(ON_DEMAND_RULE))  # first: the pod also carries DisruptionTarget at times
    return {"rules": rules} if rules else None


@dataclass(frozen=True)
class JobInputs:
    """What the earlier stages produced that the Job refers to (names only, never content)."""

    config_map: str | None = None
    secret: str | None = None
    secret_file_keys: tuple[str, ...] = ()
    secret_env_keys: tuple[str, ...] = ()  # env var names, backed by Secret keys "env.<NAME>"
    claim_name: str | None = None
    oss_env: Mapping[str, str] = field(default_factory=dict)
    rrsa: RrsaIdentity | None = None  # pod credentials 'rrsa': the ServiceAccount, role and OIDC provider


COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


def _index_env(spec: BatchSpec, index: int | None) -> list[dict[str, Any]]:
    """``ASK_BATCH_INDEX`` (and, on a follow-up Job, ``JOB_COMPLETION_INDEX``) as container env."""
    if index is not None:
        return [{"name": "ASK_BATCH_INDEX", "value": str(index)}, {"name": "JOB_COMPLETION_INDEX", "value": str(index)}]
    if spec.job.completion_mode != "Indexed":
        return []
    # The same downward-API source Kubernetes uses for JOB_COMPLETION_INDEX.
    return [{"name": "ASK_BATCH_INDEX", "valueFrom": {"fieldRef": {
        "fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}}}]


def _container_env(spec: BatchSpec, run_key: str, inputs: JobInputs, index: int | None = None) -> list[dict[str, Any]]:
    env: dict[str, str] = {"ASK_BATCH_RUN_KEY": run_key}
    if inputs.config_map:
        env["ASK_BATCH_CONFIG_DIR"] = spec.config.mount_path
    if inputs.secret and inputs.secret_file_keys:
        env["ASK_BATCH_SECRET_DIR"] = spec.config.secret_mount_path
    if inputs.claim_name:
        env["ASK_BATCH_DATA_DIR"] = spec.storage.mount_path
    env.update(inputs.oss_env)
    env.update(spec.config.env)
    env.update(spec.job.env)
    out: list[dict[str, Any]] = _index_env(spec, index) + [{"name": k, "value": v} for k, v in env.items()]
    for name in sorted(inputs.secret_env_keys):
        if not inputs.secret:
            raise ValueError(f"secret env {name!r} given without a Secret object")
        out.append({"name": name, "valueFrom": {"secretKeyRef": {
            "name": inputs.secret, "key": SECRET_ENV_KEY_PREFIX + name}}})
    return out


def _volumes(spec: BatchSpec, run_key: str, inputs: JobInputs) -> tuple[list[dict], list[dict]]:
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if inputs.config_map:
        volumes.append({"name": "config", "configMap": {"name": inputs.config_map, "defaultMode": READABLE_MODE}})
        mounts.append({"name": "config", "mountPath": spec.config.mount_path, "readOnly": True})
    if inputs.secret and inputs.secret_file_keys:
        items = [{"key": k, "path": k} for k in sorted(inputs.secret_file_keys)]
        volumes.append({"name": "secret", "secret": {"secretName": inputs.secret, "items": items,
                                                     "defaultMode": READABLE_MODE}})
        mounts.append({"name": "secret", "mountPath": spec.config.secret_mount_path, "readOnly": True})
    if inputs.claim_name:
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": inputs.claim_name}})
        mount: dict[str, Any] = {"name": "data", "mountPath": spec.storage.mount_path}
        if spec.storage.per_run_subdir:
            mount["subPath"] = run_key
        mounts.append(mount)
    return volumes, mounts


def container_security_context(security: PodSecurity) -> dict[str, Any]:
    """The workload container's ``securityContext``: only the fields ECI applies (see ``PodSecurity``)."""
    ctx: dict[str, Any] = {}
    if security.run_as_user is not None:
        ctx["runAsUser"] = security.run_as_user
    if security.run_as_group is not None:
        ctx["runAsGroup"] = security.run_as_group
    if security.run_as_non_root:
        ctx["runAsNonRoot"] = True
    return ctx


def data_dir_init_container(spec: BatchSpec, data_mount: dict[str, Any]) -> dict[str, Any] | None:
    """A root init container that gives the shared data directory to a non-root workload user, or None.

    Why: the kubelet creates a missing ``subPath`` as root with the volume root's mode
    (kubernetes pkg/kubelet/kubelet_pods.go, makeMounts), a NAS root is root-owned, and ECI does not apply
    ``fsGroup``; so a non-root workload could not write its scratch data. Runs the job image's ``chown``.
    """
    sec = spec.job.security
    if not sec.prepare_data_dir or sec.run_as_user in (None, 0):
        return None
    owner = str(sec.run_as_user) if sec.run_as_group is None else f"{sec.run_as_user}:{sec.run_as_group}"
    return {
        "name": DATA_DIR_INIT_NAME,
        "image": spec.job.image,
        "imagePullPolicy": spec.job.image_pull_policy,
        "command": ["chown", owner, data_mount["mountPath"]],
        "securityContext": {"runAsUser": 0, "runAsGroup": 0},
        "resources": {"requests": {"cpu": spec.job.cpu, "memory": spec.job.memory},
                      "limits": {"cpu": spec.job.cpu_limit or spec.job.cpu,
                                 "memory": spec.job.memory_limit or spec.job.memory}},
        "volumeMounts": [dict(data_mount)],
    }


def job_manifest(spec: BatchSpec, *, run_key: str, inputs: JobInputs, index: int | None = None,
                 kind: ClusterKind = "ask", on_demand: bool = False) -> dict[str, Any]:
    """The Indexed Job, named ``askb-<run>-<hash of everything else in it>``.

    ``kind`` is what the cluster is (``ClusterHandle.kind``): 'ask' renders ``job.eci``/``job.compute`` as ECI
    annotations, 'acs' renders ``job.compute`` as ACS labels and no ECI annotation (``tasks.render.compute``).

    Hashing the rendered body (ConfigMap/Secret names included, which carry their own content hashes) means:
    the same parameters re-render the same name (a retry adopts the running Job), and any change yields a new
    name (an old Job is never adopted for different work).

    ``index``: render the follow-up Job that re-runs only that original index (``job.rerun: missing``): one
    completion, labelled ``ask-batch.io/index``, its pod seeing ``ASK_BATCH_INDEX`` = ``JOB_COMPLETION_INDEX``
    = ``index`` (an Indexed Job cannot run an arbitrary set of indexes, and a pod template cannot give each pod
    its own env value, so each missing index gets its own one-pod Job).

    ``on_demand`` (with ``index``): that follow-up Job is the index's last try on demand after
    ``job.eci.max_reclaims`` reclaims: no preemptible choice (``on_demand_job``), and the pod template carries
    the annotation ``ask-batch.io/on-demand-try``.
    """
    if on_demand and index is None:
        raise ValueError("an on-demand try is a follow-up Job of one index: give index")
    job = on_demand_job(spec.job) if on_demand else spec.job
    check_for_kind(job, kind)
    labels = {**job.labels, **run_labels(run_key)}
    if index is not None:
        labels[INDEX_LABEL] = str(index)
    volumes, mounts = _volumes(spec, run_key, inputs)
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": job.image,
        "imagePullPolicy": job.image_pull_policy,
        "env": _container_env(spec, run_key, inputs, index),
        "resources": {
            "requests": {"cpu": job.cpu, "memory": job.memory},
            "limits": {"cpu": job.cpu_limit or job.cpu, "memory": job.memory_limit or job.memory},
        },
    }
    if job.command:
        container["command"] = list(job.command)
    if job.args:
        container["args"] = list(job.args)
    if mounts:
        container["volumeMounts"] = mounts
    security_context = container_security_context(job.security)
    if security_context:
        container["securityContext"] = security_context
    pod_spec: dict[str, Any] = {"restartPolicy": job.restart_policy, "containers": [container]}
    data_mount = next((m for m in mounts if m["name"] == "data"), None)
    init = data_dir_init_container(spec, data_mount) if data_mount else None
    if init:
        pod_spec["initContainers"] = [init]
    if volumes:
        pod_spec["volumes"] = volumes
    if job.service_account:
        pod_spec["serviceAccountName"] = job.service_account
    if job.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in job.image_pull_secrets]
    if job.node_selector:
        pod_spec["nodeSelector"] = dict(job.node_selector)
    if job.tolerations:
        pod_spec["tolerations"] = copy.deepcopy(job.tolerations)
    template = {"metadata": _pod_metadata(job, labels, kind), "spec": pod_spec}
    if inputs.rrsa is not None:
        apply_rrsa(template, inputs.rrsa, spec.target)
    job_spec: dict[str, Any] = {
        "completions": job.completions if index is None else 1,
        "parallelism": job.parallelism if index is None else 1,
        "completionMode": job.completion_mode,
        # the user's patch goes last, over everything ask-batch rendered (RRSA's volume and env included)
        "template": apply_pod_template_patch(template, job.pod_template_patch, container=CONTAINER_NAME,
                                             labels=(*run_labels(run_key), INDEX_LABEL)),
    }
    if on_demand:
        job_spec["template"]["metadata"]["annotations"][ON_DEMAND_ANNOTATION] = (
            f"last try after {spec.job.eci.max_reclaims} reclaims")
    optional = {
        "backoffLimit": job_backoff_limit(job),
        "backoffLimitPerIndex": job.backoff_limit_per_index,
        "maxFailedIndexes": job.max_failed_indexes if index is None else None,
        "activeDeadlineSeconds": job.active_deadline_seconds,
        "ttlSecondsAfterFinished": job.ttl_seconds_after_finished,
        "podFailurePolicy": pod_failure_policy(job),
    }
    job_spec.update({k: v for k, v in optional.items() if v is not None})
    body: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"namespace": spec.cluster.namespace, "labels": labels},
        "spec": job_spec,
    }
    digest = content_hash(body)
    body["metadata"] = {"name": job_name(run_key, digest), **body["metadata"],
                        "annotations": {"ask-batch.io/spec-hash": digest}}
    return body


def render_job(spec: BatchSpec, *, run_key: str, flow_run_name: str, volume: VolumeHandle | None,
               config: ConfigHandle | None, index: int | None = None, kind: str = "ask",
               on_demand: bool = False) -> dict[str, Any]:
    """The Job manifest for this run, from the handles of the earlier stages (names only, no content).

    ``kind`` is the cluster's (``ClusterHandle.kind``): pods are rendered for ASK or for ACS. ``index`` and
    ``on_demand``: a follow-up Job (see ``job_manifest``).
    """
    inputs = JobInputs(
        config_map=config.config_map if config else None,
        secret=config.secret if config else None,
        secret_file_keys=config.secret_file_keys if config else (),
        secret_env_keys=config.secret_env_keys if config else (),
        claim_name=volume.claim_name if volume else None,
        oss_env=pod_oss_env(spec, run_key=run_key, flow_run_name=flow_run_name),
        rrsa=RrsaIdentity(config.service_account, config.rrsa_role_arn, config.rrsa_oidc_provider_arn)
        if config and config.service_account and config.rrsa_role_arn and config.rrsa_oidc_provider_arn else None,
    )
    return job_manifest(spec, run_key=run_key, inputs=inputs, index=index, kind=kind,  # type: ignore[arg-type]
                        on_demand=on_demand)


# --------------------------------------------------------------------------------------------- cloud requests


def cloud_tags(run_key: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Tags for a cloud resource created by a run (shared resources keep the run that created them)."""
    return {**(extra or {}), "app.kubernetes.io/managed-by": "ask-batch", "ask-batch.io/created-by-run": run_key}


def create_cluster_body(ask: AskClusterOptions, *, region: str, run_key: str,
                        profile: str = "Serverless", rrsa: bool = False) -> dict[str, Any]:
    """CS CreateCluster body for an ASK (``profile`` Serverless) or ACS (``profile`` Acs) cluster, snake_case for
    ``CreateClusterRequest``.

    Logging off means: no ``logging_type`` and no log addon. ``load_balancer_spec`` is deprecated (CLB is
    pay-by-usage), so the smallest SLB is what the service gives.
    """
    body: dict[str, Any] = {
        "name": ask.name,
        "region_id": region,
        "cluster_type": "ManagedKubernetes",
        "profile": profile,
        "cluster_spec": ask.cluster_spec,
        "snat_entry": ask.snat_entry,
        "endpoint_public_access": ask.endpoint_public_access,
        "deletion_protection": ask.deletion_protection,
        "tags": format_tags(cloud_tags(run_key, ask.tags)),
        "client_token": "askb-" + short_hash(f"{region}/{ask.name}" + ("" if profile == "Serverless" else
                                                                         f"/{profile}"), 20),
    }
    if ask.kubernetes_version:
        body["kubernetes_version"] = ask.kubernetes_version
    if ask.vpc_id:
        body["vpcid"] = ask.vpc_id
    elif ask.zone_id:
        # Without a VPC, CS creates one in this zone and needs the zone (CreateCluster for ACK Serverless,
        # https://www.alibabacloud.com/help/doc-detail/144246.htm, where the page spells it `zoneid`; the CS SDK's
        # CreateClusterRequest, used for every cluster type, sends `zone_id`).
        body["zone_id"] = ask.zone_id
    if ask.vswitch_ids:
        body["vswitch_ids"] = list(ask.vswitch_ids)
    if ask.service_cidr:
        body["service_cidr"] = ask.service_cidr
    if rrsa:
        # RRSA for the pods' credentials (CreateClusterRequest.rrsa_config; `enable_rrsa` is its deprecated form:
        # https://www.alibabacloud.com/help/en/ack/serverless-kubernetes/developer-reference/api-cs-2015-12-15-createcluster-serverless)
        body["rrsa_config"] = {"enabled": True}
    return body


NAS_NAME_TAG = "ask-batch.io/nas"


def nas_description(nas: NasOptions) -> str:
    """NAS description: 2-128 chars, starting with a letter
    (https://www.alibabacloud.com/help/en/nas/developer-reference/api-nas-2017-06-26-createfilesystem)."""
    return f"ask-batch-{nas.name}"[:128]


def nas_create_file_system_request(nas: NasOptions, *, region: str, run_key: str) -> dict[str, Any]:
    """``CreateFileSystemRequest`` map (PascalCase); ClientToken makes a retried create idempotent."""
    tags = cloud_tags(run_key, {NAS_NAME_TAG: nas.name})
    req: dict[str, Any] = {
        "FileSystemType": "standard",
        "ProtocolType": nas.protocol_type,
        "StorageType": nas.storage_type,
        "ChargeType": "PayAsYouGo",
        "Description": nas_description(nas),
        "ClientToken": "askb-" + short_hash(f"{region}/{nas.name}", 32),
        "Tag": [{"Key": k, "Value": v} for k, v in sorted(tags.items())],
    }
    if nas.zone_id:
        req["ZoneId"] = nas.zone_id
    return req


def nas_describe_file_systems_request(nas: NasOptions, *, page: int = 1) -> dict[str, Any]:
    """``DescribeFileSystemsRequest`` map: by id if given, else by our name tag (there is no name filter)."""
    req: dict[str, Any] = {"PageNumber": page, "PageSize": 100}
    if nas.file_system_id:
        req["FileSystemId"] = nas.file_system_id
    else:
        req["Tag"] = [{"Key": NAS_NAME_TAG, "Value": nas.name}]
    return req


def nas_create_mount_target_request(file_system_id: str, *, vpc_id: str, vswitch_id: str) -> dict[str, Any]:
    """``CreateMountTargetRequest`` map in the cluster's VPC, default permission group."""
    return {"FileSystemId": file_system_id, "NetworkType": "Vpc", "VpcId": vpc_id, "VSwitchId": vswitch_id,
            "AccessGroupName": "DEFAULT_VPC_GROUP_NAME"}


# --------------------------------------------------------------------------------------------- redaction

_SENSITIVE_KEY = re.compile(r"(secret|password|passwd|token|access_?key|credential|private_?key)", re.I)
# Keys that *refer to* a secret without holding it (object names, block names, paths) stay readable.
_REFERENCE_KEY = re.compile(r"(name|_block|path|dir|mode|type)$", re.I)


def redact(obj: Any, *, secrets: Iterable[str] = ()) -> Any:
    """A deep copy of ``obj`` that is safe to print or log.

    - Secret objects: every ``data``/``stringData`` value becomes ``<redacted>`` (the keys stay, they are useful).
    - Any mapping key that looks sensitive (token, secret, password, access key...) with a scalar value.
    - Every occurrence of a known secret value (``secrets``) inside any string, in every form
      ``tasks.render.redact.Scrubber`` knows (lines of multi-line values, base64, JSON-escaped, URL-encoded).
    """
    return _redact(obj, Scrubber(secrets))


def _redact(obj: Any, needles: Scrubber) -> Any:
    if isinstance(obj, Mapping):
        is_secret = obj.get("kind") == "Secret"
        out: dict[Any, Any] = {}
        for key, value in obj.items():
            if is_secret and key in ("data", "stringData") and isinstance(value, Mapping):
                out[key] = {k: REDACTED for k in value}
            elif (isinstance(key, str) and _SENSITIVE_KEY.search(key) and not _REFERENCE_KEY.search(key)
                  and isinstance(value, str | bytes)):
                out[key] = REDACTED
            else:
                out[key] = _redact(value, needles)
        return out
    if isinstance(obj, list | tuple):
        return [_redact(v, needles) for v in obj]
    if isinstance(obj, bytes):
        return REDACTED
    if isinstance(obj, str):
        return needles(obj)
    return obj
