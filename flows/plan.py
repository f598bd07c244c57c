"""``--dry-run``: every manifest and API request a run would make, rendered offline, secrets redacted.

Why offline and from the same builders: the dry run must not touch the cloud (no credentials chain that reaches
an instance metadata service, no Kubernetes server-side dry run), and it must not drift from the real run. So it
calls the very functions the stages call (``tasks.render.manifests``) and only writes down what would be sent. Names
that depend on content (ConfigMap, Secret, Job) are exact when every secret is read from a local file; a value
behind a Prefect Secret block is not fetched, so the Secret's (and so the Job's) hash suffix can differ.
"""

import os
from typing import Any

import yaml

from tasks.cloud.admission import placeholder_secret
from tasks.cloud.clients import AliCredentials
from tasks.cloud.inputs import collect_config_content, pod_credential_env
from tasks.naming import run_selector, volume_names
from tasks.render.manifests import (
    create_cluster_body,
    nas_create_file_system_request,
    nas_create_mount_target_request,
    nas_describe_file_systems_request,
    nas_pv_manifest,
    nas_pvc_manifest,
    redact,
    render_config_objects,
    run_prefix,
)
from tasks.render.redact import Scrubber
from tasks.spec import BatchSpec


def _offline_credentials(spec: BatchSpec) -> AliCredentials:
    """The AccessKey only if it is in the environment; placeholders otherwise (no chain lookup, no network)."""
    env_id = os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_ID")
    env_secret = os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    if spec.target.credentials.mode == "default_chain" and env_id and env_secret:
        return AliCredentials(env_id, env_secret, os.environ.get("ALIBABA_CLOUD_SECURITY_TOKEN") or None)
    return AliCredentials("<AccessKey id from the credential source>", "<AccessKey secret>")


def plan(spec: BatchSpec, *, run_key: str, flow_run_name: str) -> tuple[list[dict[str, Any]], list[str]]:
    """(documents, secret values): one document per request, in the order the run makes them."""
    from tasks.stages.job import render_job

    creds = _offline_credentials(spec)
    content = collect_config_content(
        spec.config, load_secret=placeholder_secret,
        extra_secret_env=pod_credential_env(spec, creds))
    secrets = content.secret_values() + creds.secret_values()
    docs: list[dict[str, Any]] = []

    def request(service: str, operation: str, body: Any = None, *, when: str | None = None) -> None:
        doc: dict[str, Any] = {"request": f"{service} {operation}"}
        if when:
            doc["when"] = when
        if body is not None:
            doc["body"] = body
        docs.append(doc)

    region, ns = spec.target.region, spec.cluster.namespace
    # ensure_cluster
    ask = spec.cluster.managed
    profile = {"ask": "Serverless", "acs": "Acs"}.get(spec.cluster.mode, "")
    if ask is not None:
        request("CS", "DescribeClustersForRegion", {"region_id": region, "cluster_type": "ManagedKubernetes",
                                                     "profile": profile, "name": ask.name})
        if ask.create_if_missing:
            request("CS", "CreateCluster", create_cluster_body(ask, region=region, run_key=run_key, profile=profile),
                    when=f"no {spec.cluster.mode.upper()} cluster named {ask.name!r} exists")
        request("CS", "DescribeClusterDetail", when="until the cluster is running")
        request("CS", "DescribeClusterUserKubeconfig", {"private_ip_address": ask.private_kubeconfig,
                                                         "temporary_duration_minutes": ask.kubeconfig_minutes})
    request("Kubernetes", "GET /version")
    # ensure_volume
    claim = spec.storage.claim_name if spec.storage.mode == "pvc" else None
    if spec.storage.mode == "pvc":
        request("Kubernetes", f"GET PersistentVolumeClaim {ns}/{claim}")
    elif spec.storage.mode == "nas":
        nas = spec.storage.nas
        pv_name, claim = volume_names(run_key)
        request("NAS", "DescribeFileSystems", nas_describe_file_systems_request(nas))
        if nas.create_if_missing and not nas.file_system_id:
            request("NAS", "CreateFileSystem", nas_create_file_system_request(nas, region=region, run_key=run_key),
                    when="no file system is found")
        request("NAS", "DescribeMountTargets", {"FileSystemId": "<file system id>"})
        request("NAS", "CreateMountTarget", nas_create_mount_target_request(
            "<file system id>", vpc_id=nas.vpc_id or "<the cluster's VPC>",
            vswitch_id=nas.vswitch_id or "<the cluster's first vSwitch>"),
            when="the file system has no mount target in that VPC")
        request("Kubernetes", "POST PersistentVolume", nas_pv_manifest(
            pv_name, run_key=run_key, server="<mount target domain>", path=nas.path, nas=nas, claim_namespace=ns,
            claim_name=claim))
        request("Kubernetes", "POST PersistentVolumeClaim", nas_pvc_manifest(
            claim, pv_name, run_key=run_key, namespace=ns, capacity_gib=nas.capacity_gib))
    # outputs bucket
    if spec.outputs.create_bucket:
        request("OSS", "PutBucket", {"bucket": spec.outputs.bucket}, when="the bucket does not exist")
    # publish_config
    for body in render_config_objects(spec, run_key, content):
        request("Kubernetes", f"POST {body['kind']}", body)
    # launch_job
    from tasks.handles import ConfigHandle, VolumeHandle

    objects = {o["kind"]: o["metadata"]["name"] for o in render_config_objects(spec, run_key, content)}
    rrsa = "ServiceAccount" in objects  # the cluster's OIDC provider is known only once it is found
    config = ConfigHandle(namespace=ns, config_map=objects.get("ConfigMap"), secret=objects.get("Secret"),
                          secret_file_keys=tuple(sorted(content.secret_files)),
                          secret_env_keys=tuple(sorted(content.secret_env)),
                          service_account=objects.get("ServiceAccount"),
                          rrsa_role_arn=f"acs:ram::<account id>:role/{spec.outputs.rrsa_role_name}" if rrsa else None,
                          rrsa_oidc_provider_arn="<the cluster's rrsa_config.oidc_arn>" if rrsa else None)
    volume = VolumeHandle(mode=spec.storage.mode, claim_name=claim)
    # pods are rendered for what the cluster is; offline, mode 'existing' with kind 'auto' is shown as ASK
    kind = spec.cluster.mode if ask is not None else spec.cluster.existing.kind.replace("auto", "ask")
    job = render_job(spec, run_key=run_key, flow_run_name=flow_run_name, volume=volume, config=config, kind=kind)
    request("Kubernetes", "POST Pod (dryRun=All): admission check of one pod of the Job",
            {"labels": job["spec"]["template"]["metadata"]["labels"]})
    request("Kubernetes", "POST Job", job)
    # wait_for_job
    name = job["metadata"]["name"]
    request("Kubernetes", f"WATCH Jobs {ns} fieldSelector=metadata.name={name}")
    request("Kubernetes", f"WATCH Pods {ns} labelSelector=ask-batch.io/run={run_key}")
    request("Kubernetes", "GET pods/log (follow) for every pod of the Job")
    # collect_outputs
    prefix = run_prefix(spec.outputs, run_key=run_key, flow_run_name=flow_run_name)
    request("OSS", "ListObjectsV2", {"bucket": spec.outputs.bucket, "prefix": prefix})
    if spec.outputs.download:
        request("OSS", "GetObject", {"each listed key": f"-> {spec.outputs.download_dir}/{flow_run_name}/"})
    # teardown
    policy = spec.teardown.effective()
    deletes = {"job": f"DELETE Job {ns}/{name} (propagationPolicy Background)",
               "config": f"DELETE ConfigMap, Secret, ServiceAccount in {ns} labelSelector={run_selector(run_key)}",
               "volume": f"DELETE PersistentVolumeClaim {ns}/{claim}, PersistentVolume" if spec.storage.mode == "nas"
               else None,
               "nas": "NAS DeleteMountTarget, DeleteFileSystem" if spec.storage.mode == "nas" else None,
               "cluster": "CS DeleteCluster" if ask is not None else None}
    for what, text in deletes.items():
        if text and policy[what] != "never":
            request("Teardown", text, when=f"teardown.{what}: {policy[what]}")
    return [redact(d, secrets=secrets) for d in docs], secrets


def render_plan(spec: BatchSpec, *, run_key: str, flow_run_name: str) -> str:
    """The plan as one YAML stream, safe to print."""
    from tasks.render.cost import plan_lines

    docs, secrets = plan(spec, run_key=run_key, flow_run_name=flow_run_name)
    cost = "".join(f"# cost: {line}\n" for line in plan_lines(spec.job, region=spec.target.region,
                                                              site=spec.target.billing_site))
    text = cost + yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False, width=120)
    # Belt and braces: nothing that redact() missed (a value split over YAML lines) may reach the terminal.
    return Scrubber(secrets)(text)
