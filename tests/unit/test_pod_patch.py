"""``job.pod_template_patch`` (issue 11): strategic merge onto the pod template, checked at the door.

The merge rules are the Kubernetes ones, read from the schema's ``x-kubernetes-patch-strategy`` / ``-merge-key``;
the checks name ``job.pod_template_patch.<path>``, the limit and the fix; the dry run prints the patched Job.
"""

from typing import Any

import kubernetes_validate
import pytest

from flows.plan import plan
from tasks.cloud.admission import admit
from tasks.errors import SpecError
from tasks.render.pod_patch import POD_TEMPLATE, definitions, list_strategy, strategic_merge
from tests.unit.conftest import BASE, with_changes

TEMPLATE = definitions()[POD_TEMPLATE]


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    return strategic_merge(base, patch, TEMPLATE)


def spec_field(name: str) -> dict[str, Any]:
    return definitions()["io.k8s.api.core.v1.PodSpec"]["properties"][name]


def test_merge_keys_come_from_the_kubernetes_schema() -> None:
    assert list_strategy(spec_field("containers")) == (True, "name")
    assert list_strategy(spec_field("volumes")) == (True, "name")  # strategy "merge,retainKeys"
    assert list_strategy(spec_field("imagePullSecrets")) == (True, "name")
    assert list_strategy(spec_field("tolerations")) == (False, None)
    container = definitions()["io.k8s.api.core.v1.Container"]["properties"]
    assert list_strategy(container["env"]) == (True, "name")
    assert list_strategy(container["volumeMounts"]) == (True, "mountPath")
    assert list_strategy(container["args"]) == (False, None)


BASE_TEMPLATE: dict[str, Any] = {
    "metadata": {"labels": {"a": "1"}},
    "spec": {
        "restartPolicy": "Never",
        "tolerations": [{"key": "old", "operator": "Exists"}],
        "imagePullSecrets": [{"name": "one"}],
        "containers": [{"name": "workload", "image": "img", "args": ["x", "y"],
                        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                        "volumeMounts": [{"name": "config", "mountPath": "/etc/c"}]}],
        "volumes": [{"name": "config", "configMap": {"name": "cm"}}],
    },
}


def test_lists_with_a_merge_key_merge_by_it_and_other_lists_are_replaced() -> None:
    out = merge(BASE_TEMPLATE, {"spec": {
        "tolerations": [{"key": "new", "operator": "Exists", "effect": "NoSchedule"}],
        "imagePullSecrets": [{"name": "two"}],
        "containers": [{"name": "workload", "args": ["z"], "env": [{"name": "B", "value": "3"},
                                                                   {"name": "C", "value": "4"}],
                        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]},
                       {"name": "sidecar", "image": "side"}],
        "volumes": [{"name": "scratch", "emptyDir": {}}]}})
    spec = out["spec"]
    assert spec["tolerations"] == [{"key": "new", "operator": "Exists", "effect": "NoSchedule"}]  # replaced
    assert spec["imagePullSecrets"] == [{"name": "one"}, {"name": "two"}]
    workload, sidecar = spec["containers"]
    assert workload["image"] == "img" and workload["args"] == ["z"]  # maps merge, args (atomic) replaced
    assert workload["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}]
    assert [m["mountPath"] for m in workload["volumeMounts"]] == ["/etc/c", "/scratch"]
    assert sidecar == {"name": "sidecar", "image": "side"}
    assert [v["name"] for v in spec["volumes"]] == ["config", "scratch"]
    assert BASE_TEMPLATE["spec"]["tolerations"] == [{"key": "old", "operator": "Exists"}]  # input unchanged


def test_null_deletes_a_key_and_directives_delete_an_item_or_replace_a_map_or_list() -> None:
    out = merge(BASE_TEMPLATE, {"metadata": {"labels": {"a": None, "b": "2"}}, "spec": {
        "containers": [{"name": "workload", "env": [{"name": "A", "$patch": "delete"}]}],
        "imagePullSecrets": [{"$patch": "replace"}, {"name": "only"}],
        "securityContext": {"$patch": "replace", "fsGroup": 7}}})
    assert out["metadata"]["labels"] == {"b": "2"}
    assert out["spec"]["containers"][0]["env"] == [{"name": "B", "value": "2"}]
    assert out["spec"]["imagePullSecrets"] == [{"name": "only"}]
    assert out["spec"]["securityContext"] == {"fsGroup": 7}


def spec_with(patch: Any, **changes: Any) -> dict[str, Any]:
    return with_changes(BASE, {"job.pod_template_patch": patch, "storage.mode": "pvc", "storage.claim_name": "d",
                               **changes})


def problems(patch: Any, **changes: Any) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as info:
        admit(spec_with(patch, **changes))
    return info.value.problems


def test_unknown_fields_and_wrong_types_are_named_at_their_path_in_the_patch() -> None:
    found = dict(problems({"spec": {"containers": [{"name": "workload", "imagePullPolicyy": "Always"}],
                                    "nodeSelector": {"zone": 1}, "securityContext": {"fsGroup": "abc"}}}))
    unknown = found["job.pod_template_patch.spec.containers[0]"]
    assert "'imagePullPolicyy' (did you mean 'imagePullPolicy'?)" in unknown and "fix:" in unknown
    assert "is not of type 'string'" in found["job.pod_template_patch.spec.nodeSelector.zone"]
    assert "is not of type 'integer'" in found["job.pod_template_patch.spec.securityContext.fsGroup"]


def test_a_patch_outside_the_pod_template_shape_is_refused() -> None:
    found = dict(problems({"spec": {}, "kind": "Pod", "metadata": {"name": "x"}}))
    assert "only 'metadata' and 'spec'" in found["job.pod_template_patch.kind"]
    assert "only labels and annotations" in found["job.pod_template_patch.metadata.name"]
    found = dict(problems({"spec": {"volumes": [{"emptyDir": {}}]}}))
    assert "merge key 'name'" in found["job.pod_template_patch.spec.volumes[0]"]


@pytest.mark.parametrize(("patch", "where", "fix"), [
    ({"spec": {"containers": [{"name": "workload", "$patch": "delete"}]}}, "spec.containers[name=workload]",
     "keep it"),
    ({"spec": {"containers": [{"name": "workload", "env": [{"name": "ASK_BATCH_INDEX", "value": "0"}]}]}},
     "spec.containers[name=workload].env[name=ASK_BATCH_INDEX]", "job.env"),
    ({"spec": {"containers": [{"name": "workload", "image": "other:1"}]}}, "spec.containers[name=workload].image",
     "job.image"),
    ({"spec": {"containers": [{"name": "workload", "resources": {"limits": {"cpu": "8"}}}]}},
     "spec.containers[name=workload].resources", "job.cpu"),
    ({"spec": {"volumes": [{"name": "data", "emptyDir": {}, "persistentVolumeClaim": None}]}},
     "spec.volumes[name=data]", "other names"),
    ({"spec": {"containers": [{"name": "workload", "volumeMounts": [{"name": "x", "mountPath": "/mnt/data"}]}],
               "volumes": [{"name": "x", "emptyDir": {}}]}},
     "spec.containers[name=workload].volumeMounts[mountPath=/mnt/data]", "other paths"),
    ({"metadata": {"labels": {"ask-batch.io/run": "another"}}}, "metadata.labels.ask-batch.io/run", "job.labels"),
    ({"metadata": {"labels": {"app.kubernetes.io/managed-by": None}}},
     "metadata.labels.app.kubernetes.io/managed-by", "job.labels"),
    ({"spec": {"restartPolicy": "OnFailure"}}, "spec.restartPolicy", "job.restart_policy"),
], ids=["container", "index-env", "image", "resources", "volume", "mount", "run-label", "managed-label",
        "restart"])
def test_what_ask_batch_relies_on_cannot_be_patched(patch: dict[str, Any], where: str, fix: str) -> None:
    found = dict(problems(patch))
    message = found[f"job.pod_template_patch.{where}"]
    assert "set by ask-batch" in message and fix in message


def test_a_volume_without_exactly_one_source_or_a_container_without_image_is_refused() -> None:
    found = dict(problems({"spec": {"volumes": [{"name": "x", "emptyDir": {}, "hostPath": {"path": "/"}}],
                                    "containers": [{"name": "sidecar"}]}}))
    assert "exactly one source" in found["job.pod_template_patch.spec.volumes[name=x]"]
    assert "needs an image" in found["job.pod_template_patch.spec.containers[name=sidecar].image"]


PATCH = {"metadata": {"annotations": {"example.com/team": "a"}},
         "spec": {"tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists",
                                   "effect": "NoSchedule"}],
                  "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                      "nodeSelectorTerms": [{"matchExpressions": [{"key": "type", "operator": "In",
                                                                   "values": ["virtual-kubelet"]}]}]}}},
                  "securityContext": {"fsGroup": 65534},
                  "imagePullSecrets": [{"name": "acr"}],
                  "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}],
                  "containers": [{"name": "workload", "env": [{"name": "EXTRA", "value": "yes"}],
                                  "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}]}}


def test_the_dry_run_renders_the_patched_job_and_it_passes_the_strict_schema() -> None:
    spec = admit(spec_with(PATCH)).spec
    docs, _ = plan(spec, run_key="patch-unit", flow_run_name="patch-unit")
    [job] = [d["body"] for d in docs if d["request"] == "Kubernetes POST Job"]
    kubernetes_validate.validate(job, "1.32.0", strict=True)
    template = job["spec"]["template"]
    assert template["metadata"]["annotations"]["example.com/team"] == "a"
    pod = template["spec"]
    assert pod["tolerations"] == PATCH["spec"]["tolerations"]
    assert pod["securityContext"] == {"fsGroup": 65534} and pod["imagePullSecrets"] == [{"name": "acr"}]
    assert pod["affinity"] == PATCH["spec"]["affinity"]
    [container] = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["EXTRA"] == {"name": "EXTRA", "value": "yes"} and "ASK_BATCH_INDEX" in env
    # (with the RRSA token, the default pod credentials on ASK: tasks/render/rrsa.py)
    assert {m["mountPath"] for m in container["volumeMounts"]} == {
        "/mnt/data", "/scratch", "/var/run/secrets/ack.alibabacloud.com/rrsa-tokens"}
    assert {v["name"] for v in pod["volumes"]} == {"data", "scratch", "rrsa-oidc-token"}


def test_the_patch_changes_the_job_name_so_an_unpatched_job_is_never_adopted() -> None:
    def name(patch: Any) -> str:
        docs, _ = plan(admit(spec_with(patch)).spec, run_key="patch-unit", flow_run_name="patch-unit")
        [job] = [d["body"] for d in docs if d["request"] == "Kubernetes POST Job"]
        return str(job["metadata"]["name"])

    assert name(None) != name(PATCH)
    assert name(None) == name({})
