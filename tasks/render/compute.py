"""``job.compute`` rendered for the kind of cluster the Job runs on: ECI annotations on ASK, ACS labels on ACS.

Pure functions. The same request means the same thing on both:

============  ===========================================  ====================================================
job.compute   ASK (ECI pod annotations)                    ACS (pod labels / annotation)
============  ===========================================  ====================================================
class         general-purpose only (ECI has no classes)    label ``alibabacloud.com/compute-class``
qos           preemptible: ``eci-spot-strategy:            label ``alibabacloud.com/compute-qos``: default |
              SpotAsPriceGo``                              best-effort
size          ``k8s.aliyun.com/eci-use-specs``             annotation ``alibabacloud.com/pod-required-spec``
gpu_model     —                                            label ``alibabacloud.com/gpu-model-series``
============  ===========================================  ====================================================

An ACS pod never gets an ECI annotation (ACS does not act on them): ``job.eci`` is not rendered there, and setting
it for an ACS cluster is refused.

Sources: https://www.alibabacloud.com/help/en/cs/user-guide/acs-pod-instance-overview (compute classes, QoS,
``pod-required-spec``, GPU model label);
https://www.alibabacloud.com/help/en/elastic-container-instance/latest/eci-pod-annotation (ECI annotations).
"""

from typing import Any, Literal

from tasks.errors import InvalidInput
from tasks.spec import JobSpec

ClusterKind = Literal["ask", "acs"]

ECI = "k8s.aliyun.com/"
COMPUTE_CLASS = "alibabacloud.com/compute-class"
COMPUTE_QOS = "alibabacloud.com/compute-qos"
GPU_MODEL = "alibabacloud.com/gpu-model-series"
REQUIRED_SPEC = "alibabacloud.com/pod-required-spec"
ACS_QOS = {"default": "default", "preemptible": "best-effort"}


class ComputeError(InvalidInput):
    """``job.compute`` / ``job.eci`` cannot be rendered for this kind of cluster; the message names the fix.

    Raised when the cluster's kind is only known once found (mode 'existing'); for modes 'ask' and 'acs' the same
    checks run in the parameter validation, before any cloud call."""


def check_for_kind(job: JobSpec, kind: ClusterKind) -> None:
    """Refuse what the cluster kind cannot honour (the parameters alone cannot tell in cluster mode 'existing').

    Raises:
        ComputeError: ECI options for an ACS cluster, or an ACS-only compute class for an ASK cluster.
    """
    if kind == "acs":
        # max_reclaims and ignore_reclaims are retry rules, not annotations: they act on ACS best-effort pods too
        changed = sorted(set(job.eci.model_dump(exclude_defaults=True)) - {"max_reclaims", "ignore_reclaims"})
        if changed:
            raise ComputeError(f"job.eci ({', '.join(changed)}) sets ECI annotations, but the cluster is ACS, which "
                               f"ignores them; fix: remove job.eci and use job.compute (class, qos, size)")
    elif job.compute is not None and job.compute.compute_class != "general-purpose":
        raise ComputeError(f"job.compute.class {job.compute.compute_class!r} needs an ACS cluster, but the cluster "
                           f"is ASK (ECI has no compute classes); fix: use class 'general-purpose' with "
                           f"job.eci.use_specs, or run on ACS")


def acs_labels(job: JobSpec) -> dict[str, str]:
    """Pod-template labels choosing ACS compute (class and QoS are always explicit, so the pod says what it got)."""
    compute = job.compute
    labels = {COMPUTE_CLASS: compute.compute_class if compute else "general-purpose",
              COMPUTE_QOS: ACS_QOS[compute.qos if compute else "default"]}
    if compute is not None and compute.gpu_model:
        labels[GPU_MODEL] = compute.gpu_model
    return labels


def acs_annotations(job: JobSpec) -> dict[str, str]:
    """Pod-template annotations on ACS: only the required size, when set."""
    return {REQUIRED_SPEC: job.compute.size} if job.compute is not None and job.compute.size else {}


def eci_compute_annotations(job: JobSpec) -> dict[str, str]:
    """``job.compute`` as ECI annotations (on top of ``job.eci``'s own, which win where both speak)."""
    compute, eci = job.compute, job.eci
    out: dict[str, str] = {}
    if compute is None:
        return out
    if compute.size and not eci.use_specs:
        out[ECI + "eci-use-specs"] = compute.size
    if compute.qos == "preemptible" and eci.spot_strategy == "None":
        out[ECI + "eci-spot-strategy"] = "SpotAsPriceGo"
        if eci.spot_fallback:
            out[ECI + "eci-spot-fallback"] = "true"
    return out


def is_preemptible(job: JobSpec) -> bool:
    """Whether the pods run on a reclaimable tier (ACS best-effort or ECI spot)."""
    return (job.compute is not None and job.compute.qos == "preemptible") or job.eci.spot_strategy != "None"


# --------------------------------------------------------------------------------------------- the on-demand try

#: Pod condition ask-batch writes (pods/status) on the preemptible pod of an index reclaimed
#: ``job.eci.max_reclaims`` times, before deleting that pod: the Job's ``ON_DEMAND_RULE`` then fails that index
#: (and only it), and a follow-up Job runs its last try on demand. A custom condition type must be a qualified
#: name; the kubelet keeps conditions it does not own
#: (https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-readiness-gate).
ON_DEMAND_CONDITION = "ask-batch.io/RetryOnDemand"
#: The podFailurePolicy rule matching it: ``FailIndex`` needs ``backoffLimitPerIndex``
#: (https://kubernetes.io/docs/concepts/workloads/controllers/job/#pod-failure-policy).
ON_DEMAND_RULE: dict[str, Any] = {"action": "FailIndex",
                                  "onPodConditions": [{"type": ON_DEMAND_CONDITION, "status": "True"}]}
#: Pod-template annotation of the on-demand follow-up Job: its pod is the index's last try, on demand.
ON_DEMAND_ANNOTATION = "ask-batch.io/on-demand-try"


def moves_reclaims_on_demand(job: JobSpec) -> bool:
    """Whether an index reclaimed ``job.eci.max_reclaims`` times gets its last try on demand.

    Needs preemptible pods, ``max_reclaims`` > 0, an Indexed Job with ``restart_policy: Never`` and
    ``backoff_limit_per_index`` (Kubernetes accepts ``FailIndex`` only with it), and no ``max_failed_indexes``
    (an index moved on demand counts as failed in the first Job: past that limit Kubernetes would stop every pod).
    """
    return (is_preemptible(job) and job.eci.max_reclaims > 0 and job.backoff_limit_per_index is not None
            and job.max_failed_indexes is None and job.restart_policy == "Never"
            and job.completion_mode == "Indexed")


def on_demand_job(job: JobSpec) -> JobSpec:
    """The same Job settings with every preemptible choice off: ECI ``spot_strategy`` 'None' (no
    ``k8s.aliyun.com/eci-spot-*`` annotation) and ACS ``compute-qos`` 'default'."""
    compute = job.compute.model_copy(update={"qos": "default"}) if job.compute is not None else None
    return job.model_copy(update={"eci": job.eci.model_copy(update={"spot_strategy": "None"}), "compute": compute})
