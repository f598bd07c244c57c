"""The parameters of one ask-batch run, as pydantic v2 models.

Why models and not a dict: the flow takes one ``BatchSpec`` parameter, Prefect turns its JSON schema into the form
in the UI (every ``Field`` here has a description for that reason), the server validates deployment parameters
against the schema, and the flow process validates the rest (cross-field rules, local files) *before any cloud API
call*. Every error names the field and says how to fix it; typos in field names are errors too
(``extra="forbid"``), because a silently ignored ``paralelism`` would run the wrong job and bill for it.

The models only describe intent. Reading local files, resolving Prefect Secret blocks and building manifests live
elsewhere (``tasks.render.manifests``, ``tasks.stages.config``), so this module stays pure and cheap to import.

No ``from __future__ import annotations`` here: Prefect builds the parameter schema of the flow from these
annotations at import time (observed with Prefect 3.9; see ``parameter_schema`` in
https://github.com/PrefectHQ/prefect/blob/main/src/prefect/utilities/callables.py).
"""

import difflib
import re
import string
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tasks.errors import SpecError
from tasks.naming import DNS1123_LABEL_RE, is_dns1123_label

# --------------------------------------------------------------------------------------------- syntax helpers

# Sources of the syntax rules below:
# - DNS-1123 subdomains and labels, label and annotation keys:
#   https://kubernetes.io/docs/concepts/overview/working-with-objects/names/ and .../labels/#syntax-and-character-set
# - CS cluster names (1-63 characters: letters, digits, Chinese characters, '_' and '-', not starting with '-'):
#   https://www.alibabacloud.com/help/en/ack/ack-managed-and-ack-dedicated/developer-reference/api-cs-2015-12-15-createcluster
# - OSS bucket names (3-63 lowercase letters, digits and '-', starting and ending with a letter or digit):
#   https://www.alibabacloud.com/help/en/oss/user-guide/bucket-naming-conventions
# - environment variable names (letters, digits, '_', '-', '.', not starting with a digit; the API server's
#   IsEnvVarName): https://kubernetes.io/docs/tasks/inject-data-application/define-environment-variable-container/
# - ConfigMap and Secret keys (at most 253 of [-._a-zA-Z0-9]):
#   https://kubernetes.io/docs/concepts/configuration/configmap/#configmap-object
# - NAS storage and protocol types of General-purpose file systems (Capacity, Performance; NFS):
#   https://www.alibabacloud.com/help/en/nas/developer-reference/api-nas-2017-06-26-createfilesystem
REGION_RE = re.compile(r"^[a-z]{2,}(-[a-z0-9]+)+$")
DNS1123_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# CS: "1 to 63 characters ... digits, Chinese characters, letters and hyphens (-), cannot start with a hyphen"
# (CreateCluster for ACK Serverless, name: https://www.alibabacloud.com/help/doc-detail/144246.htm). No '_'.
CS_CLUSTER_NAME_RE = re.compile(r"^(?!-)[-A-Za-z0-9\u4e00-\u9fa5]{1,63}$")
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
ENV_NAME_RE = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
CONFIG_KEY_RE = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
QUANTITY_RE = re.compile(r"^(?P<num>[0-9]+(\.[0-9]+)?|\.[0-9]+)(?P<suffix>m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
ACS_SIZE_RE = re.compile(r"^(?P<cpu>[0-9]+(\.[0-9]+)?)-(?P<mem>[0-9]+(\.[0-9]+)?)Gi$")
ECI_SPEC_RE = re.compile(r"^([0-9]+(\.[0-9]+)?-[0-9]+(\.[0-9]+)?Gi|ecs\.[a-z0-9][a-z0-9.-]*)$")
ENDPOINT_RE = re.compile(r"^(https?://)?[A-Za-z0-9.-]+(:[0-9]{1,5})?/?$")
ANNOTATION_KEY_RE = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")

#: Kubernetes' integer fields in seconds and counts are int32 (e.g. ``ttlSecondsAfterFinished``, ``backoffLimit``):
#: https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/job-v1/ . Larger values are refused by the
#: API server (or, for ``activeDeadlineSeconds``, an int64, outlive any wait this flow can do), so every seconds and
#: count field here stops at INT32_MAX.
INT32_MAX = 2**31 - 1
#: VPC and vSwitch ids as the VPC API writes them (``vpc-bp1...``, ``vsw-bp1...``):
#: https://www.alibabacloud.com/help/en/vpc/developer-reference/api-vpc-2016-04-28-describevpcs
VPC_ID_RE = re.compile(r"^vpc-[a-z0-9]{1,64}$")
VSWITCH_ID_RE = re.compile(r"^vsw-[a-z0-9]{1,64}$")
#: Zone ids: the region id plus a letter or digit group, e.g. 'cn-hangzhou-k'.
ZONE_ID_RE = re.compile(r"^[a-z]{2,}(-[a-z0-9]+)+$")
#: NAS file system ids: General-purpose '31a8e4****' (hex), Extreme 'extreme-...', CPFS 'cpfs-...'.
#: https://www.alibabacloud.com/help/en/nas/developer-reference/api-nas-2017-06-26-describefilesystems
NAS_FILE_SYSTEM_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{3,62}[a-z0-9]$")
#: Kubernetes versions as CS offers them, e.g. '1.32.1-aliyun.1'.
KUBERNETES_VERSION_RE = re.compile(r"^1\.[0-9]{1,3}\.[0-9]{1,3}(-aliyun\.[0-9]{1,3})?$")
#: An image reference, from the grammar of github.com/distribution/reference (reference.go, regexp.go):
#: [domain[:port]/]path-component(/path-component)*[:tag][@digest]; the name is at most 255 characters.
_IMAGE_DOMAIN = r"(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*" \
    r"[a-zA-Z0-9]))*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_IMAGE_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
IMAGE_REF_RE = re.compile(
    rf"^(?P<name>(?:{_IMAGE_DOMAIN}/)?{_IMAGE_COMPONENT}(?:/{_IMAGE_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?$")
#: ECI sizes by vCPU and memory: 0.25 to 64 vCPU, 0.5 to 512 GiB (larger needs an ECS type in eci.use_specs):
#: https://www.alibabacloud.com/help/en/eci/user-guide/specify-the-number-of-vcpus-and-memory-size-to-create-an-elastic-container-instance
ECI_MAX_CPU, ECI_MAX_MEMORY_GIB = 64.0, 512.0
#: OSS object names are 1 to 1023 bytes of UTF-8 and must not start with '/' or '\':
#: https://www.alibabacloud.com/help/en/oss/user-guide/object-naming-conventions
OSS_MAX_KEY_BYTES = 1023
#: CS tags: key and value at most 128 characters, no 'aliyun' or 'acs:' prefix, no 'http://' or 'https://':
#: https://www.alibabacloud.com/help/en/ack/ack-managed-and-ack-dedicated/developer-reference/api-cs-2015-12-15-createcluster
CS_TAG_MAX = 128
#: Kubernetes' limit on all annotations of an object together (TotalAnnotationSizeLimitB, 256 KiB):
#: https://kubernetes.io/docs/concepts/overview/working-with-objects/annotations/#syntax-and-character-set
ANNOTATIONS_MAX_BYTES = 256 * 1024
#: ``$(NAME)`` in command, args and env values is expanded by Kubernetes, and ``$$`` becomes ``$``:
#: https://kubernetes.io/docs/tasks/inject-data-application/define-interdependent-environment-variables/
_EXPANSION_RE = re.compile(r"\$(\$|\(([^)]*)\))")

#: Env vars ask-batch sets itself for the workload; users may not override them.
RESERVED_ENV_PREFIX = "ASK_BATCH_"
#: Env vars that carry the OSS credentials into the pod (read by the OSS v2 SDK's EnvironmentVariable provider).
OSS_CREDENTIAL_ENV = ("OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET", "OSS_SESSION_TOKEN")
#: Env vars of RRSA (the OIDC provider of alibabacloud-credentials reads the first three; ack-pod-identity-webhook
#: injects all of them: https://www.alibabacloud.com/help/en/ack/product-overview/ack-pod-identity-webhook).
RRSA_ENV = ("ALIBABA_CLOUD_ROLE_ARN", "ALIBABA_CLOUD_OIDC_PROVIDER_ARN", "ALIBABA_CLOUD_OIDC_TOKEN_FILE",
            "ALIBABA_CLOUD_STS_ENDPOINT", "ALIBABA_CLOUD_STS_REGION", "ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED")
#: RAM role names: 1-64 characters, letters, digits, '.' and '-' (CreateRole, RoleName:
#: https://help.aliyun.com/document_detail/2337660.html).
RAM_ROLE_NAME_RE = re.compile(r"^[A-Za-z0-9.-]{1,64}$")

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}


def parse_quantity(text: str) -> float:
    """A Kubernetes resource quantity as a float in base units ("500m" -> 0.5, "2Gi" -> 2147483648.0)."""
    m = QUANTITY_RE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    num, suffix = float(m["num"]), m["suffix"] or ""
    return num * (_BINARY.get(suffix) or _DECIMAL.get(suffix) or 1.0)


def cpu_cores(text: str) -> float:
    """CPU quantity in cores."""
    return parse_quantity(text)


def memory_gib(text: str) -> float:
    """Memory quantity in GiB."""
    return parse_quantity(text) / 2**30


def _quantity_text(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{value!r} is not a quantity; fix: write a string like '1', '500m' or '2Gi'")
    return format(value, "g") if isinstance(value, float) else str(value)


def _check_cpu(value: str) -> str:
    value = str(value).strip()
    if not QUANTITY_RE.match(value):
        raise ValueError(f"{value!r} is not a CPU quantity; fix: use cores like '1', '0.5' or millicores like '500m'")
    if parse_quantity(value) <= 0:
        raise ValueError(f"{value!r} must be more than zero; fix: use at least '250m'")
    return value


def _check_memory(value: str) -> str:
    value = str(value).strip()
    m = QUANTITY_RE.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a memory quantity; fix: use a binary suffix like '512Mi' or '2Gi'")
    if m["suffix"] == "m":
        raise ValueError(f"{value!r} means milli-bytes; fix: write 'Mi' for mebibytes, e.g. '{m['num']}Mi'")
    if parse_quantity(value) < 2**20:
        raise ValueError(f"{value!r} is less than 1Mi; fix: use a binary suffix like '512Mi' or '2Gi'")
    return value


def _check_dns_label(value: str, what: str) -> str:
    if not is_dns1123_label(value):
        raise ValueError(
            f"{value!r} is not a valid {what} (DNS-1123 label: lowercase letters, digits and '-', "
            f"starting and ending with a letter or digit, at most 63 characters); fix: e.g. "
            f"{_suggest_label(value)!r}"
        )
    return value


def _suggest_label(value: str) -> str:
    s = re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-")[:63].strip("-")
    return s or "my-name"


def _check_dns_subdomain(value: str, what: str) -> str:
    if len(value) > 253 or not DNS1123_SUBDOMAIN_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid {what} (DNS-1123 subdomain: lowercase letters, digits, '-' and '.'); "
            f"fix: e.g. {_suggest_label(value)!r}"
        )
    return value


def _check_existing_file(value: str, what: str) -> str:
    path = Path(value).expanduser()
    if not path.is_file():
        raise ValueError(f"{what} {value!r} does not exist or is not a file (relative to {Path.cwd()}); "
                         f"fix: give the path of an existing file")
    return value


def _check_no_expansion(value: str, what: str) -> str:
    """Refuse ``$(`` and ``$$`` in a value ask-batch passes to the pods as env: Kubernetes would rewrite it."""
    if _EXPANSION_RE.search(value):
        raise ValueError(f"{what} {value!r} contains '$(' or '$$', which Kubernetes rewrites in env values "
                         f"(https://kubernetes.io/docs/tasks/inject-data-application/define-interdependent-"
                         f"environment-variables/); fix: leave out the '$'")
    return value


def _check_id(value: str | None, pattern: re.Pattern[str], what: str, example: str) -> str | None:
    if not value:
        return None
    if not pattern.match(value):
        raise ValueError(f"{value!r} is not a {what}; fix: write it as the console shows it, e.g. {example!r}")
    return value


def _bad_tag_text(text: object) -> bool:
    """A CS tag key or value breaks its rules (``CS_TAG_MAX`` and its source): at most 128 characters, no 'aliyun'
    or 'acs:' prefix, no 'http(s)://'."""
    return (not isinstance(text, str) or len(text) > CS_TAG_MAX or text.startswith(("aliyun", "acs:"))
            or "http://" in text or "https://" in text)


def _check_match(value: str, pattern: re.Pattern[str], problem: str) -> str:
    if not pattern.match(value):
        raise ValueError(f"{value!r} {problem}")
    return value


# Names whose syntax the services fix, checked at the door.
RegionId = Annotated[str, AfterValidator(partial(
    _check_match, pattern=REGION_RE, problem="is not a region id; fix: use the lowercase id such as 'cn-hangzhou' "
    "(not the display name 'China (Hangzhou)')"))]
ClusterName = Annotated[str, AfterValidator(partial(
    _check_match, pattern=CS_CLUSTER_NAME_RE, problem="is not a valid cluster name; fix: 1-63 letters, digits or "
    "'-' (CS refuses '_'), not starting with '-'"))]
BucketName = Annotated[str, AfterValidator(partial(
    _check_match, pattern=BUCKET_RE, problem="is not an OSS bucket name; fix: 3-63 lowercase letters, digits and "
    "'-', starting and ending with a letter or digit"))]
RamRoleName = Annotated[str, AfterValidator(partial(
    _check_match, pattern=RAM_ROLE_NAME_RE, problem="is not a RAM role name (1-64 letters, digits, '.' or '-'); "
    "fix: the role's name as the RAM console shows it, e.g. 'ask-batch-pods' (not its ARN)"))]

# Alibaba Cloud resource ids, checked for their format at the door (an empty value means "not given").
VpcId = Annotated[str | None, AfterValidator(partial(_check_id, pattern=VPC_ID_RE, what="VPC id",
                                                     example="vpc-bp1example"))]
VSwitchId = Annotated[str | None, AfterValidator(partial(_check_id, pattern=VSWITCH_ID_RE, what="vSwitch id",
                                                         example="vsw-bp1example"))]
ZoneId = Annotated[str | None, AfterValidator(partial(_check_id, pattern=ZONE_ID_RE, what="zone id",
                                                      example="cn-hangzhou-k"))]
NasFileSystemId = Annotated[str | None, AfterValidator(partial(_check_id, pattern=NAS_FILE_SYSTEM_ID_RE,
                                                               what="NAS file system id", example="31a8e4b2c1"))]
KubernetesVersion = Annotated[str | None, AfterValidator(partial(_check_id, pattern=KUBERNETES_VERSION_RE,
                                                                 what="Kubernetes version",
                                                                 example="1.32.1-aliyun.1"))]


def _check_label(key: str, val: str, what: str) -> None:
    """Kubernetes label syntax: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#syntax-and-character-set"""
    prefix, _, name = key.rpartition("/")
    if not ANNOTATION_KEY_RE.match(key) or len(prefix) > 253 or len(name) > 63:
        raise ValueError(f"{what} key {key!r} is invalid; fix: '[prefix/]name' with a DNS prefix of at most 253 "
                         f"characters and a name of at most 63 letters, digits, '-', '_', '.'")
    if not isinstance(val, str) or (val and not re.match(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$", val)):
        raise ValueError(f"{what} value {val!r} of {key!r} is invalid; fix: at most 63 letters, digits, '-', '_', "
                         f"'.', starting and ending with a letter or digit")


def _env_references(value: str) -> list[str]:
    """The variable names ``value`` refers to as ``$(NAME)``, as Kubernetes reads them (``$$`` escapes a ``$``)."""
    return [m.group(2) for m in _EXPANSION_RE.finditer(value) if m.group(1) != "$"]


def _check_env_expansion(env: Mapping[str, str], what: str, *, earlier: frozenset[str] = frozenset()) -> None:
    """Refuse ``$(NAME)`` in an env value when ``NAME`` is set only *after* it in the container.

    Kubernetes expands an env value's ``$(NAME)`` only from variables defined before it in the list and leaves the
    text as it is otherwise (https://kubernetes.io/docs/tasks/inject-data-application/define-interdependent-
    environment-variables/); the value the workload then sees is not the one written. ask-batch lists its own
    ``ASK_BATCH_*`` variables first, then config.env, then job.env, in the order written, then secret env.
    """
    names = list(env)
    for i, (name, value) in enumerate(env.items()):
        if not isinstance(value, str):
            continue
        later = set(names[i:])
        for ref in _env_references(value):
            if ref in later and ref not in earlier and ref not in names[:i]:
                raise ValueError(f"{what}.{name} refers to $({ref}), which is set at or after it; Kubernetes "
                                 f"expands only variables set before, so the pod would see the text '$({ref})'; "
                                 f"fix: set {ref} before {name}, or write $$({ref}) for the literal text")


def _check_env_names(env: Mapping[str, str], what: str) -> None:
    for name in env:
        if not ENV_NAME_RE.match(name):
            raise ValueError(f"{what} name {name!r} is not a valid environment variable name; "
                             f"fix: use letters, digits, '_', '-' or '.', not starting with a digit")
        if name.startswith(RESERVED_ENV_PREFIX) or name in OSS_CREDENTIAL_ENV or name in RRSA_ENV:
            raise ValueError(f"{what} name {name!r} is reserved: ask-batch sets it for the workload; "
                             f"fix: rename it")


class _Model(BaseModel):
    """Base: unknown keys are errors (a typo must not be ignored), values are checked on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=False)


# --------------------------------------------------------------------------------------------- target


class CredentialsSpec(_Model):
    """Where the Alibaba Cloud AccessKey comes from. Secrets are never parameters: only block *names* are."""

    mode: Literal["default_chain", "secret_blocks"] = Field(
        "default_chain",
        description="'default_chain': the Alibaba Cloud default credential chain (env vars "
        "ALIBABA_CLOUD_ACCESS_KEY_ID/_SECRET, ~/.alibabacloud/credentials profile, ECS RAM role, OIDC). "
        "'secret_blocks': Prefect Secret blocks named below.",
    )
    access_key_id_block: str | None = Field(
        None, description="Name of the Prefect Secret block holding the AccessKey ID (mode 'secret_blocks')."
    )
    access_key_secret_block: str | None = Field(
        None, description="Name of the Prefect Secret block holding the AccessKey secret (mode 'secret_blocks')."
    )
    security_token_block: str | None = Field(
        None, description="Optional Prefect Secret block holding an STS security token (mode 'secret_blocks')."
    )

    @model_validator(mode="after")
    def _blocks_given(self) -> "CredentialsSpec":
        if self.mode == "secret_blocks" and not (self.access_key_id_block and self.access_key_secret_block):
            raise ValueError("mode 'secret_blocks' needs access_key_id_block and access_key_secret_block; "
                             "fix: name both Prefect Secret blocks, or use mode 'default_chain'")
        return self


class EndpointOverrides(_Model):
    """Endpoint overrides: VPC endpoints, a proxy, or a local emulation of the services. Empty means public."""

    cs: str | None = Field(None, description="Container Service API endpoint, e.g. 'cs-vpc.cn-hangzhou.aliyuncs.com'"
                           " or 'http://127.0.0.1:8081'. Empty: cs.<region>.aliyuncs.com.")
    nas: str | None = Field(None, description="NAS API endpoint. Empty: nas.<region>.aliyuncs.com.")
    oss: str | None = Field(None, description="OSS endpoint used by the flow, e.g. 'http://127.0.0.1:9000'. "
                            "Empty: oss-<region>.aliyuncs.com.")
    kubernetes: str | None = Field(None, description="Kubernetes API server URL replacing the one in the "
                                   "cluster's kubeconfig (e.g. through a tunnel). Empty: as in the kubeconfig.")
    sts: str | None = Field(None, description="STS endpoint the pods use for RRSA (AssumeRoleWithOIDC), e.g. "
                            "'sts-vpc.cn-hangzhou.aliyuncs.com' or 'http://127.0.0.1:9005'. Empty: the region's "
                            "VPC endpoint sts-vpc.<region>.aliyuncs.com.")

    @field_validator("cs", "nas", "oss", "kubernetes", "sts")
    @classmethod
    def _endpoint_syntax(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or value == "":
            return None
        if not ENDPOINT_RE.match(value):
            raise ValueError(f"{value!r} is not an endpoint; fix: write 'host[:port]' or 'http(s)://host[:port]'")
        return value.rstrip("/")


class Target(_Model):
    """Which Alibaba Cloud region and account to work in, and how to reach the APIs."""

    region: RegionId = Field("cn-hangzhou",
                             description="Region id, e.g. 'cn-hangzhou', 'cn-beijing', 'ap-southeast-1'.")
    billing_site: Literal["cn", "intl"] | None = Field(
        None, description="The account's site, which sets the currency of cost estimates: 'cn' (aliyun.com, CNY) "
        "or 'intl' (alibabacloud.com, USD). Empty: guessed from the region (cn-* -> 'cn').")
    credentials: CredentialsSpec = Field(default_factory=CredentialsSpec,
                                         description="Where the AccessKey comes from.")
    endpoints: EndpointOverrides = Field(default_factory=EndpointOverrides,
                                         description="Optional API endpoint overrides.")



# --------------------------------------------------------------------------------------------- cluster


class AskClusterOptions(_Model):
    """An ACK Serverless (ASK) cluster found by name, created if missing and allowed."""

    name: ClusterName = Field("ask-batch", description="Cluster name; an existing ASK cluster with exactly this name "
                      "in the region is reused.")
    create_if_missing: bool = Field(True, description="Create the cluster when none has this name. Note: "
                                    "Alibaba stopped ASK creation for new accounts in 2025 (use ACS, or "
                                    "cluster mode 'existing').")
    kubernetes_version: KubernetesVersion = Field(None, description="Kubernetes version for a new cluster, e.g. "
                                           "'1.32.1-aliyun.1'. Empty: the latest offered.")
    cluster_spec: Literal["ack.standard", "ack.pro.small"] = Field(
        "ack.standard", description="'ack.standard' (Basic, no management fee) or 'ack.pro.small' (Pro).")
    vpc_id: VpcId = Field(None, description="VPC of a new cluster, e.g. 'vpc-bp1...'.")
    vswitch_ids: list[str] = Field(default_factory=list, description="vSwitches for pods (ECI) of a new cluster; "
                                   "several zones improve spot and stock availability.")
    zone_id: ZoneId = Field(None, description="Zone of a new cluster when no vpc_id is given (CS then creates "
                                "the VPC and vSwitch there), e.g. 'cn-hangzhou-k'. Required in that case.")
    service_cidr: str | None = Field(None, description="Service CIDR; must not overlap the VPC. Empty: "
                                     "172.19.0.0/20.")
    snat_entry: bool = Field(True, description="Create a NAT gateway + SNAT so pods reach the Internet "
                             "(public image registries). The NAT gateway is billed.")
    endpoint_public_access: bool = Field(True, description="Expose the API server through an EIP so this flow "
                                         "can reach it from outside the VPC. The EIP is billed.")
    deletion_protection: bool = Field(False, description="Deletion protection for a new cluster; must stay off "
                                      "if teardown should delete the cluster.")
    tags: dict[str, str] = Field(default_factory=dict, description="Extra tags for a new cluster (ask-batch "
                                 "adds its own managed-by tag).")
    private_kubeconfig: bool = Field(False, description="Ask CS for the intranet kubeconfig (when this flow "
                                     "runs inside the VPC).")
    kubeconfig_minutes: int | None = Field(None, ge=15, le=4320, description="Validity of a temporary "
                                           "kubeconfig (15..4320 min). Empty: the long-lived user kubeconfig.")
    ready_timeout_seconds: int = Field(1800, ge=60, le=INT32_MAX,
                                       description="How long to wait for a new cluster to run.")


    @model_validator(mode="after")
    def _network(self) -> "AskClusterOptions":
        if bool(self.vpc_id) != bool(self.vswitch_ids):
            raise ValueError("vpc_id and vswitch_ids go together; fix: set both (vSwitches of that VPC) or neither")
        return self

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        # CS allows 20 tags per cluster and ask-batch adds two: managed-by and created-by-run
        if len(value) > 18:
            raise ValueError("at most 18 extra tags (CS allows 20 per cluster and ask-batch adds two: managed-by "
                             "and created-by-run); fix: drop some")
        rule = f"longer than {CS_TAG_MAX} characters or uses a reserved prefix ('aliyun', 'acs:', 'http(s)://')"
        bad_keys = [key for key in value if not key or _bad_tag_text(key)]
        if bad_keys:
            raise ValueError(f"tag key {bad_keys[0]!r} is empty, {rule}; fix: rename it")
        bad_values = [key for key, val in value.items() if _bad_tag_text(val)]
        if bad_values:
            raise ValueError(f"tag value of {bad_values[0]!r} is {rule}; fix: shorten or rename it")
        return value

    @field_validator("vswitch_ids")
    @classmethod
    def _vswitches(cls, value: list[str]) -> list[str]:
        if len(value) > 10:
            raise ValueError("at most 10 vSwitches; fix: keep one per zone")
        for item in value:
            _check_id(item, VSWITCH_ID_RE, "vSwitch id", "vsw-bp1example")
        return value

    @field_validator("service_cidr")
    @classmethod
    def _cidr(cls, value: str | None) -> str | None:
        if not value:
            return None
        import ipaddress

        try:
            net = ipaddress.ip_network(value, strict=True)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a CIDR block ({exc}); fix: e.g. '172.19.0.0/20'") from None
        if net.version != 4 or not net.is_private:
            raise ValueError(f"{value!r} must be a private IPv4 block; fix: e.g. '172.19.0.0/20'")
        return value


class AcsClusterOptions(AskClusterOptions):
    """An ACS (Container Compute Service) cluster found by name, created if missing and allowed.

    ACS is the serverless Kubernetes Alibaba Cloud offers to accounts that can no longer create ASK; its clusters are
    found and created through the same Container Service API (``cluster_type`` ManagedKubernetes, ``profile`` Acs).
    """

    name: ClusterName = Field("ask-batch-acs", description="Cluster name; an existing ACS cluster with exactly "
                              "this name in the region is reused.")
    create_if_missing: bool = Field(True, description="Create the ACS cluster when none has this name.")
    cluster_spec: Literal["ack.standard", "ack.pro.small"] = Field(
        "ack.pro.small", description="Cluster specification of a new ACS cluster ('ack.pro.small', as public ACS "
        "automation creates them; ACS charges no cluster management fee).")
    vswitch_ids: list[str] = Field(default_factory=list, description="vSwitches for the pods of a new cluster; "
                                   "several zones improve BestEffort stock availability.")


class ExistingClusterOptions(_Model):
    """A cluster ask-batch does not manage: reached through a kubeconfig file or a prefect-kubernetes block."""

    kubeconfig_path: str | None = Field(None, description="Path to a kubeconfig file on the flow's host.")
    context: str | None = Field(None, description="Kubeconfig context. Empty: the current context.")
    credentials_block: str | None = Field(None, description="Name of a prefect-kubernetes KubernetesCredentials "
                                          "block (or a Secret block holding kubeconfig YAML, see secret_block).")
    kubeconfig_secret_block: str | None = Field(None, description="Name of a Prefect Secret block holding the "
                                                "kubeconfig YAML as a string (kept masked by Prefect).")
    kind: Literal["auto", "ask", "acs"] = Field("auto", description="What the cluster is, which decides how pods "
                                                "are rendered (ECI annotations on ASK, ACS labels on ACS). 'auto': "
                                                "ask the Container Service which ASK or ACS cluster has this "
                                                "kubeconfig's API server; 'ask' when none does.")

    @field_validator("kubeconfig_path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        return None if value in (None, "") else _check_existing_file(value, "kubeconfig")


class ClusterSpec(_Model):
    """Where the Job runs."""

    mode: Literal["ask", "acs", "existing"] = Field(
        "ask", description="'ask': find or create an ASK cluster by name. 'acs': find or create an ACS cluster by "
        "name (new Alibaba Cloud accounts). 'existing': use a kubeconfig or a KubernetesCredentials block.")
    namespace: str = Field("default", description="Namespace for the Job, ConfigMap, Secret and PVC.")
    ask: AskClusterOptions = Field(default_factory=AskClusterOptions, description="Options for mode 'ask'.")
    acs: AcsClusterOptions = Field(default_factory=AcsClusterOptions, description="Options for mode 'acs'.")
    existing: ExistingClusterOptions = Field(default_factory=ExistingClusterOptions,
                                             description="Options for mode 'existing'.")

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        return _check_dns_label(value, "namespace")

    @property
    def managed(self) -> AskClusterOptions | None:
        """The options of the cluster ask-batch finds or creates through CS (mode 'ask' or 'acs'), else None."""
        return self.acs if self.mode == "acs" else self.ask if self.mode == "ask" else None

    @model_validator(mode="after")
    def _existing_source(self) -> "ClusterSpec":
        if self.mode == "existing":
            given = [x for x in (self.existing.kubeconfig_path, self.existing.credentials_block,
                                 self.existing.kubeconfig_secret_block) if x]
            if len(given) != 1:
                raise ValueError("mode 'existing' needs exactly one of existing.kubeconfig_path, "
                                 "existing.credentials_block, existing.kubeconfig_secret_block; fix: set one")
        return self


# --------------------------------------------------------------------------------------------- storage


class NasOptions(_Model):
    """A General-purpose NAS file system, found by tag or id, created if missing, mounted through a static PV."""

    name: str = Field("ask-batch", description="Logical name: tag 'ask-batch.io/nas' and description of the "
                      "file system, so a later run finds the same one.")
    file_system_id: NasFileSystemId = Field(None, description="Use this file system instead of finding one by name.")
    create_if_missing: bool = Field(True, description="Create the file system when none is found.")
    storage_type: Literal["Capacity", "Performance"] = Field("Capacity", description="'Capacity' (cheaper) or "
                                                             "'Performance' (lower latency).")
    protocol_type: Literal["NFS"] = Field("NFS", description="Only NFS is mountable from Linux pods.")
    zone_id: ZoneId = Field(None, description="Zone for a new file system; empty lets NAS choose.")
    vpc_id: VpcId = Field(None, description="VPC for the mount target. Empty: the cluster's VPC.")
    vswitch_id: VSwitchId = Field(None, description="vSwitch for the mount target. Empty: the cluster's first.")
    path: str = Field("/", description="Directory on the file system that the volume exposes.")
    capacity_gib: int = Field(100, ge=1, le=10 * 1024 * 1024,
        description="Capacity written on the PV/PVC (informational: NAS "
                              "grows on demand and bills used bytes).")
    mount_options: list[str] = Field(default_factory=lambda: ["nolock,tcp,noresvport", "vers=3"],
                                     description="NFS mount options of the PV (Alibaba recommends NFSv3).")
    ready_timeout_seconds: int = Field(600, ge=30, le=INT32_MAX,
        description="Wait for the file system to be Running and the "
                                       "mount target Active, at most this long.")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or ".." in value.split("/"):
            raise ValueError(f"{value!r} must be an absolute path without '..'; fix: e.g. '/' or '/batch'")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_dns_label(value, "NAS name")

    @field_validator("mount_options")
    @classmethod
    def _options(cls, value: list[str]) -> list[str]:
        for item in value:
            if not item or any(c.isspace() for c in item):
                raise ValueError(f"mount option {item!r} is empty or has spaces; fix: e.g. 'vers=3'")
        return value


class StorageSpec(_Model):
    """Shared storage mounted into every pod."""

    mode: Literal["none", "pvc", "nas"] = Field("none", description="'none', an existing 'pvc', or a 'nas' "
                                                "file system managed by ask-batch.")
    mount_path: str = Field("/mnt/data", description="Where the volume appears in the container; the workload "
                            "gets it as ASK_BATCH_DATA_DIR.")
    per_run_subdir: bool = Field(True, description="Mount a sub-directory named after the run key (subPath), so "
                                 "runs do not see each other's scratch data.")
    claim_name: str | None = Field(None, description="Existing PVC name (mode 'pvc').")
    nas: NasOptions = Field(default_factory=NasOptions, description="Options for mode 'nas'.")

    @field_validator("mount_path")
    @classmethod
    def _mount(cls, value: str) -> str:
        return _check_mount_path(value)

    @field_validator("claim_name")
    @classmethod
    def _claim(cls, value: str | None) -> str | None:
        return None if not value else _check_dns_subdomain(value, "PVC name")

    @model_validator(mode="after")
    def _claim_needed(self) -> "StorageSpec":
        if self.mode == "pvc" and not self.claim_name:
            raise ValueError("mode 'pvc' needs claim_name; fix: set storage.claim_name to an existing PVC")
        return self


def _check_mount_path(value: str) -> str:
    if not value.startswith("/") or value == "/" or ".." in value.split("/") or ":" in value or len(value) > 1024 \
            or any(c.isspace() or ord(c) < 32 for c in value):
        raise ValueError(f"{value!r} is not a usable mount path; fix: an absolute path like '/mnt/data'")
    return _check_no_expansion(value.rstrip("/"), "mount path")


# --------------------------------------------------------------------------------------------- config


class SecretItem(_Model):
    """One secret value: from a Prefect Secret block (preferred) or a local file. Its value never enters logs."""

    name: str = Field(..., description="File name under the secret mount (secret_files) or environment "
                      "variable name (secret_env).")
    block: str | None = Field(None, description="Name of a Prefect Secret block holding the value (a string).")
    file: str | None = Field(None, description="Path of a local file holding the value.")

    @field_validator("file")
    @classmethod
    def _file(cls, value: str | None) -> str | None:
        return None if not value else _check_existing_file(value, "secret file")

    @model_validator(mode="after")
    def _one_source(self) -> "SecretItem":
        if bool(self.block) == bool(self.file):
            raise ValueError(f"secret {self.name!r} needs exactly one of block or file; fix: name a Prefect "
                             f"Secret block, or a local file")
        return self


class ConfigSpec(_Model):
    """What the pods read: files (ConfigMap), secrets (Secret), env. Content-hashed, immutable objects."""

    files: dict[str, str] = Field(default_factory=dict, description="Inline files: name -> content, mounted "
                                  "under mount_path (ASK_BATCH_CONFIG_DIR).")
    local_paths: list[str] = Field(default_factory=list, description="Local files or directories (top-level "
                                   "files) added to the ConfigMap under their base names.")
    mount_path: str = Field("/etc/ask-batch/config", description="Where the ConfigMap is mounted.")
    env: dict[str, str] = Field(default_factory=dict, description="Plain environment variables for the "
                                "workload (not secret: they appear in the Job manifest).")
    secret_files: list[SecretItem] = Field(default_factory=list, description="Secret files mounted under "
                                           "secret_mount_path (ASK_BATCH_SECRET_DIR).")
    secret_env: list[SecretItem] = Field(default_factory=list, description="Secret environment variables "
                                         "(through secretKeyRef; values never appear in the Job manifest).")
    secret_mount_path: str = Field("/etc/ask-batch/secret", description="Where the Secret is mounted.")

    @field_validator("files")
    @classmethod
    def _file_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not CONFIG_KEY_RE.match(name) or name in (".", ".."):
                raise ValueError(f"config file name {name!r} is not a valid ConfigMap key; fix: use letters, "
                                 f"digits, '-', '_' and '.' only (no '/')")
        return value

    @field_validator("local_paths")
    @classmethod
    def _local_paths(cls, value: list[str]) -> list[str]:
        for item in value:
            path = Path(item).expanduser()
            if not path.exists():
                raise ValueError(f"local config path {item!r} does not exist (relative to {Path.cwd()}); "
                                 f"fix: give an existing file or directory")
            if path.is_file() and not CONFIG_KEY_RE.match(path.name):
                raise ValueError(f"file name {path.name!r} is not a valid ConfigMap key; fix: rename it")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        _check_env_names(value, "config.env")
        _check_env_expansion(value, "config.env")
        return value

    @field_validator("mount_path", "secret_mount_path")
    @classmethod
    def _mounts(cls, value: str) -> str:
        return _check_mount_path(value)

    @model_validator(mode="after")
    def _secret_names(self) -> "ConfigSpec":
        seen: set[str] = set()
        for item in self.secret_files:
            if not CONFIG_KEY_RE.match(item.name):
                raise ValueError(f"secret file name {item.name!r} is not a valid Secret key; fix: letters, "
                                 f"digits, '-', '_' and '.' only")
            if item.name in seen:
                raise ValueError(f"secret file {item.name!r} is listed twice; fix: keep one")
            seen.add(item.name)
        _check_env_names({i.name: "" for i in self.secret_env}, "config.secret_env")
        for item in self.secret_env:
            if item.name in self.env:
                raise ValueError(f"{item.name!r} is both in config.env and config.secret_env; fix: keep one")
        return self


# --------------------------------------------------------------------------------------------- job


class EciOptions(_Model):
    """Elastic Container Instance options, written as annotations on the pod template (ASK pods are ECIs)."""

    use_specs: list[str] = Field(default_factory=list, description="Up to 5 candidate instance specs, tried in "
                                 "order: '2-4Gi' (vCPU-memory) or ECS types like 'ecs.c6.large'. Empty: from "
                                 "the container resources.")
    spot_strategy: Literal["None", "SpotAsPriceGo", "SpotWithPriceLimit"] = Field(
        "None", description="Preemptible (spot) instances: 'None' (pay-as-you-go), 'SpotAsPriceGo' (market "
        "price), 'SpotWithPriceLimit' (capped by spot_price_limit).")
    spot_price_limit: float | None = Field(None, gt=0, le=1_000_000, allow_inf_nan=False,
        description="Max hourly price (CNY/USD per hour, ≤3 "
                                           "decimals) for 'SpotWithPriceLimit'.")
    spot_duration_hours: int | None = Field(None, ge=0, le=1, description="Spot protection period in hours: "
                                            "1 (ECI's default) or 0 (none); ECI accepts no other value "
                                            "(k8s.aliyun.com/eci-spot-duration).")
    spot_fallback: bool = Field(True, description="Fall back to pay-as-you-go when there is no spot stock.")
    ignore_reclaims: bool = Field(True, description="With spot: a reclaimed pod (condition DisruptionTarget) does "
                                  "not spend the Job's retry budget (a podFailurePolicy rule Ignore, put before "
                                  "job.pod_failure_policy's rules). Off: reclaims count as failures.")
    max_reclaims: int = Field(3, ge=0, le=1000, description="With spot (or ACS best-effort): an index reclaimed this "
                              "many times gets its last try on demand (pay-as-you-go), in a follow-up Job, so a "
                              "run finishes when spot stock is gone. Needs job.backoff_limit_per_index; 0: off.")
    image_cache: bool = Field(True, description="Let ECI match an image cache automatically (faster starts).")
    image_snapshot_id: str | None = Field(None, description="A specific image cache id ('imc-...').")
    extra_ephemeral_storage: str | None = Field(None, description="Extra temporary storage beyond the free "
                                                "30 GiB, e.g. '50Gi' (billed).")
    ram_role_name: str | None = Field(None, description="RAM role assumed by the pods (e.g. to reach OSS "
                                      "without AccessKeys).")
    fail_on_create_error: bool = Field(True, description="Mark a pod Failed when ECI cannot create it, instead "
                                       "of leaving it Pending while ECI retries.")
    extra_annotations: dict[str, str] = Field(default_factory=dict, description="Other pod annotations, e.g. "
                                              "'k8s.aliyun.com/eci-vswitch'.")

    @field_validator("use_specs")
    @classmethod
    def _specs(cls, value: list[str]) -> list[str]:
        if len(value) > 5:
            raise ValueError("at most 5 specs; fix: keep the 5 you prefer, in order")
        for spec in value:
            if not ECI_SPEC_RE.match(spec):
                raise ValueError(f"{spec!r} is not an ECI spec; fix: write '2-4Gi' or an ECS type like "
                                 f"'ecs.c6.large'")
            if not spec.startswith("ecs."):
                cpu, mem = spec.removesuffix("Gi").split("-")
                if not (0.25 <= float(cpu) <= ECI_MAX_CPU and 0.5 <= float(mem) <= ECI_MAX_MEMORY_GIB):
                    raise ValueError(f"{spec!r} is outside ECI's sizes (0.25-{ECI_MAX_CPU:g} vCPU, "
                                     f"0.5-{ECI_MAX_MEMORY_GIB:g} GiB); fix: pick a size ECI offers, e.g. '2-4Gi'")
        return value

    @field_validator("spot_price_limit")
    @classmethod
    def _price(cls, value: float | None) -> float | None:
        if value is not None and round(value, 3) != value:
            raise ValueError(f"{value} has more than 3 decimals; fix: round it, e.g. {round(value, 3)}")
        return value

    @field_validator("image_snapshot_id")
    @classmethod
    def _snapshot(cls, value: str | None) -> str | None:
        if value and not value.startswith("imc-"):
            raise ValueError(f"{value!r} is not an image cache id; fix: ids start with 'imc-'")
        return value or None

    @field_validator("extra_ephemeral_storage")
    @classmethod
    def _storage(cls, value: str | None) -> str | None:
        return None if not value else _check_memory(value)

    @field_validator("extra_annotations")
    @classmethod
    def _annotations(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            prefix, _, name = key.rpartition("/")
            if not ANNOTATION_KEY_RE.match(key) or len(prefix) > 253 or len(name) > 63:
                raise ValueError(f"annotation key {key!r} is invalid; fix: 'prefix/name' with a DNS prefix")
        size = sum(len(k.encode()) + len(v.encode()) for k, v in value.items())
        if size > ANNOTATIONS_MAX_BYTES // 2:
            raise ValueError(f"the annotations total {size:,} bytes; Kubernetes allows {ANNOTATIONS_MAX_BYTES:,} for "
                             f"all of a pod's annotations, ask-batch's included; fix: shorten them")
        return value

    @model_validator(mode="after")
    def _price_needed(self) -> "EciOptions":
        if self.spot_strategy == "SpotWithPriceLimit" and self.spot_price_limit is None:
            raise ValueError("spot_strategy 'SpotWithPriceLimit' needs spot_price_limit; fix: set the max hourly "
                             "price, or use 'SpotAsPriceGo'")
        if self.spot_strategy != "SpotWithPriceLimit" and self.spot_price_limit is not None:
            raise ValueError("spot_price_limit is only used with spot_strategy 'SpotWithPriceLimit'; fix: set "
                             "that strategy or remove the limit")
        return self


class ComputeSpec(_Model):
    """What compute each pod gets, meaning the same on ASK and ACS.

    Rendered as ECI annotations on ASK and as ACS labels/annotations on ACS (never an ECI annotation on an ACS pod):

    - ``class``: ACS compute class (``alibabacloud.com/compute-class``): general-purpose, performance, gpu, gpu-hpn.
      ECI has no compute classes, so ASK accepts general-purpose only.
    - ``qos``: 'default' or 'preemptible': ACS compute QoS best-effort (``alibabacloud.com/compute-qos``), ECI spot
      (``k8s.aliyun.com/eci-spot-strategy: SpotAsPriceGo``).
    - ``size``: '<vCPU>-<GiB>Gi', e.g. '2-4Gi': ACS ``alibabacloud.com/pod-required-spec``, ECI
      ``k8s.aliyun.com/eci-use-specs``. It must cover the container requests.

    Sources: https://www.alibabacloud.com/help/en/cs/user-guide/acs-pod-instance-overview (classes, QoS,
    pod-required-spec), https://www.alibabacloud.com/help/en/elastic-container-instance/latest/eci-pod-annotation.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    compute_class: Literal["general-purpose", "performance", "gpu", "gpu-hpn"] = Field(
        "general-purpose", alias="class", description="Compute class: 'general-purpose', 'performance', 'gpu' or "
        "'gpu-hpn' (ACS). ASK (ECI) offers general-purpose only.")
    qos: Literal["default", "preemptible"] = Field("default", description="'default' (on demand) or "
                                                   "'preemptible' (ACS best-effort, ECI spot): cheaper, may be "
                                                   "reclaimed; the Job retries reclaimed pods.")
    size: str | None = Field(None, description="Instance size '<vCPU>-<GiB>Gi', e.g. '2-4Gi'. Empty: from the "
                             "container requests.")
    gpu_model: str | None = Field(None, description="GPU model series for class 'gpu' on ACS "
                                  "(alibabacloud.com/gpu-model-series), e.g. 'T4'.")

    @field_validator("size")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value and not ACS_SIZE_RE.match(value):
            raise ValueError(f"{value!r} is not a size; fix: write '<vCPU>-<GiB>Gi', e.g. '2-4Gi'")
        return value or None

    @model_validator(mode="after")
    def _gpu(self) -> "ComputeSpec":
        if self.compute_class == "gpu-hpn" and self.qos == "preemptible":
            raise ValueError("class 'gpu-hpn' has no preemptible (best-effort) QoS on ACS; fix: use qos 'default'")
        if self.gpu_model and self.compute_class != "gpu":
            raise ValueError("gpu_model is only used with class 'gpu'; fix: set class 'gpu' or remove gpu_model")
        return self

    def size_parts(self) -> tuple[float, float] | None:
        """(vCPU, GiB) of ``size``, or None."""
        match = ACS_SIZE_RE.match(self.size or "")
        return (float(match["cpu"]), float(match["mem"])) if match else None



def _work_first(schema: dict[str, Any]) -> None:
    """Show image, command, args, completions and parallelism first in the Prefect form (JSON schema order)."""
    props = schema.get("properties", {})
    first = [name for name in ("image", "command", "args", "completions", "parallelism") if name in props]
    schema["properties"] = {name: props[name] for name in first} | {k: v for k, v in props.items() if k not in first}


class PodSecurity(_Model):
    """Who the workload runs as. Set it to the image's ``USER`` so volume permissions are planned for that user.

    ECI applies only container-level ``runAsUser`` / ``runAsGroup`` / ``runAsNonRoot`` (and pod-level
    ``runAsUser``), not ``fsGroup``
    (https://www.alibabacloud.com/help/en/eci/user-guide/configure-a-security-context-for-an-elastic-container-instance-or-a-container),
    so ask-batch makes mounted config and secret files world-readable (mode 0444, inside the pod only) and, for a
    non-root user with a shared volume, hands the run's data directory to that user with a root init container.
    """

    run_as_user: int | None = Field(None, ge=0, le=2**31 - 1, description="UID of the workload (the image's "
                                    "USER, e.g. 65534). Empty: whatever the image says.")
    run_as_group: int | None = Field(None, ge=0, le=2**31 - 1, description="GID of the workload. Empty: the "
                                     "user's primary group in the image.")
    run_as_non_root: bool = Field(False, description="Refuse to start the container as root (Kubernetes "
                                  "runAsNonRoot).")
    prepare_data_dir: bool = Field(True, description="With a non-root run_as_user and a shared volume: run an "
                                   "init container (as root, the job image, needs 'chown') that gives the data "
                                   "directory to that user, since a new NAS sub-directory belongs to root.")

    @model_validator(mode="after")
    def _consistent(self) -> "PodSecurity":
        if self.run_as_non_root and self.run_as_user == 0:
            raise ValueError("run_as_non_root is true but run_as_user is 0 (root); fix: set run_as_user to the "
                             "image's non-root user, e.g. 65534, or drop run_as_non_root")
        return self


class JobSpec(_Model):
    """The Kubernetes Job: what runs, how many times, how failures are handled."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, json_schema_extra=_work_first)

    image: str = Field(..., description="Container image, e.g. 'registry.cn-hangzhou.aliyuncs.com/me/app:1.0'.")
    image_pull_policy: Literal["IfNotPresent", "Always", "Never"] = Field("IfNotPresent",
                                                                         description="Image pull policy.")
    command: list[str] | None = Field(None, description="Container command (entrypoint). Empty: the image's.")
    args: list[str] = Field(default_factory=list, description="Container arguments.")
    env: dict[str, str] = Field(default_factory=dict, description="Environment variables of the container.")
    cpu: str = Field("1", description="CPU request per pod: cores ('1', '0.5') or millicores ('500m').")
    memory: str = Field("2Gi", description="Memory request per pod, e.g. '512Mi', '2Gi'.")
    cpu_limit: str | None = Field(None, description="CPU limit. Empty: equal to the request (ECI sizes the "
                                  "instance from it).")
    memory_limit: str | None = Field(None, description="Memory limit. Empty: equal to the request.")
    completions: int = Field(1, ge=1, le=100_000, description="How many indexes (successful pods) the Job needs.")
    parallelism: int = Field(1, ge=1, le=100_000, description="How many pods run at once (≤ completions).")
    completion_mode: Literal["Indexed", "NonIndexed"] = Field(
        "Indexed", description="'Indexed': each pod gets JOB_COMPLETION_INDEX 0..completions-1 (its shard).")
    backoff_limit: int | None = Field(None, ge=0, le=INT32_MAX,
        description="Pod failures allowed for the whole Job before it fails. Empty: 3, or with "
                    "backoff_limit_per_index not sent (only the per-index budget applies).")
    backoff_limit_per_index: int | None = Field(None, ge=0, le=INT32_MAX,
        description="Retries allowed per index (Indexed "
                                                "only); a failing index does not stop the others.")
    max_failed_indexes: int | None = Field(None, ge=0, le=INT32_MAX,
        description="With backoff_limit_per_index: fail the Job "
                                           "once this many indexes failed.")
    rerun: Literal["missing", "all"] = Field("missing", description="A retry of the flow run, or a new run "
                                             "with the same run_key: 'missing' runs only the indexes without "
                                             "complete outputs in OSS (one follow-up Job each; their pods see "
                                             "their original index as ASK_BATCH_INDEX), 'all' runs the whole "
                                             "Job again.")
    pod_failure_policy: dict[str, Any] | None = Field(None, description="Kubernetes podFailurePolicy, e.g. "
                                                      "{'rules': [{'action': 'FailJob', 'onExitCodes': "
                                                      "{'operator': 'In', 'values': [42]}}]}.")
    active_deadline_seconds: int | None = Field(3600, ge=1, le=INT32_MAX,
        description="Kill the Job after this many seconds "
                                                "(a cost cap). Empty: no deadline.")
    restart_policy: Literal["Never", "OnFailure"] = Field("Never", description="'Never': a failed container "
                                                          "makes a new pod (keeps its log and exit code).")
    ttl_seconds_after_finished: int | None = Field(3600, ge=0, le=INT32_MAX,
        description="Kubernetes deletes the finished "
                                                   "Job after this long (logs are saved before).")
    service_account: str | None = Field(None, description="Service account of the pods.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node selector (rarely needed on "
                                          "ASK).")
    tolerations: list[dict[str, Any]] = Field(default_factory=list, description="Tolerations, as Kubernetes "
                                              "objects.")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra labels on the Job and its pods.")
    eci: EciOptions = Field(default_factory=EciOptions, description="ECI options (pod annotations; ASK only).")
    compute: ComputeSpec | None = Field(None, description="Compute class, QoS (preemptible) and size, meaning the "
                                        "same on ASK and ACS. Empty: general-purpose, on demand, sized from the "
                                        "requests.")
    security: PodSecurity = Field(default_factory=PodSecurity, description="The workload's user and group (its "
                                  "securityContext).")
    image_pull_secrets: list[str] = Field(default_factory=list, description="Names of docker-registry Secrets in "
                                          "the namespace, for a private image (pod imagePullSecrets).")
    pod_template_patch: dict[str, Any] | None = Field(
        None, description="Escape hatch: a Kubernetes strategic merge patch applied onto the rendered pod template "
        "(metadata.labels/annotations and spec: affinity, tolerations, extra volumes and volumeMounts, "
        "imagePullSecrets, securityContext, ...), e.g. {'spec': {'tolerations': [...]}}. Checked against the "
        "Kubernetes schema before the run; what ask-batch relies on (the workload container's image, command, "
        "resources and env, its volumes, the selector labels, restartPolicy) cannot be changed "
        "(tasks/render/pod_patch.py).")

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("the image is missing; fix: set job.image, e.g. 'python:3.11-slim'")
        m = IMAGE_REF_RE.match(value)
        if not m or len(m["name"]) > 255:
            raise ValueError(f"{value!r} is not an image reference (github.com/distribution/reference grammar: "
                             f"lowercase repository, name at most 255 characters); fix: 'registry/repo:tag', "
                             f"e.g. 'python:3.11-slim'")
        return value

    @field_validator("command", "args")
    @classmethod
    def _argv(cls, value: list[str] | None) -> list[str] | None:
        for item in value or []:
            if "\x00" in item:
                raise ValueError("an argument contains a NUL character, which no process can receive; fix: remove "
                                 "it")
        return value

    @field_validator("cpu", "cpu_limit", mode="before")
    @classmethod
    def _cpu(cls, value: object) -> str | None:
        # numbers are fine quantities (`cpu: 2` in YAML, `--set job.cpu=2`): keep them as Kubernetes writes them
        return None if value is None else _check_cpu(_quantity_text(value))

    @field_validator("memory", "memory_limit", mode="before")
    @classmethod
    def _memory(cls, value: object) -> str | None:
        return None if value is None else _check_memory(_quantity_text(value))

    @field_validator("parallelism")
    @classmethod
    def _parallelism(cls, value: int, info: ValidationInfo) -> int:
        completions = info.data.get("completions")
        if completions is not None and value > completions:
            raise ValueError(f"parallelism {value} is more than completions {completions}: the extra pods would "
                             f"never get an index; fix: set parallelism to at most {completions}")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        _check_env_names(value, "job.env")
        return value

    @field_validator("image_pull_secrets")
    @classmethod
    def _pull_secrets(cls, value: list[str]) -> list[str]:
        return [_check_dns_subdomain(name, "image pull Secret name") for name in value]

    @field_validator("service_account")
    @classmethod
    def _sa(cls, value: str | None) -> str | None:
        return None if not value else _check_dns_subdomain(value, "service account name")

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, val in value.items():
            if key.startswith(("ask-batch.io/", "app.kubernetes.io/managed-by")):
                raise ValueError(f"label key {key!r} is reserved; fix: 'prefix/name', not ask-batch.io/")
            _check_label(key, val, "label")
        return value

    @field_validator("node_selector")
    @classmethod
    def _node_selector(cls, value: dict[str, str]) -> dict[str, str]:
        for key, val in value.items():
            _check_label(key, val, "node_selector")
        return value

    @field_validator("tolerations")
    @classmethod
    def _tolerations(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#scheduling
        known = {"key", "operator", "value", "effect", "tolerationSeconds"}
        for item in value:
            if set(item) - known:
                raise ValueError(f"toleration fields {sorted(set(item) - known)} are unknown; fix: use {sorted(known)}")
            if item.get("operator", "Equal") not in ("Equal", "Exists"):
                raise ValueError("toleration operator must be 'Equal' or 'Exists'")
            if item.get("effect") not in (None, "", "NoSchedule", "PreferNoSchedule", "NoExecute"):
                raise ValueError("toleration effect must be NoSchedule, PreferNoSchedule or NoExecute")
            for field in ("key", "value"):
                if field in item and not isinstance(item[field], str):
                    raise ValueError(f"toleration {field} must be a string")
            secs = item.get("tolerationSeconds")
            if secs is not None and (isinstance(secs, bool) or not isinstance(secs, int)
                                     or abs(secs) > 2**63 - 1):
                raise ValueError("tolerationSeconds must be an integer (int64)")
        return value

    @field_validator("pod_failure_policy")
    @classmethod
    def _pfp(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if not value:
            return None
        rules = value.get("rules")
        if not isinstance(rules, list) or not rules or set(value) != {"rules"}:
            raise ValueError("pod_failure_policy must be {'rules': [...]} with at least one rule; fix: see "
                             "kubernetes.io/docs/tasks/job/pod-failure-policy")
        # https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/job-v1/#JobSpec (podFailurePolicy)
        if len(rules) > 20:
            raise ValueError("pod_failure_policy has more than 20 rules, the Kubernetes limit; fix: merge rules")
        for rule in rules:
            if not isinstance(rule, dict) or rule.get("action") not in ("FailJob", "Ignore", "Count", "FailIndex"):
                raise ValueError("each pod_failure_policy rule needs action FailJob, Ignore, Count or FailIndex")
            if ("onExitCodes" in rule) == ("onPodConditions" in rule):
                raise ValueError("each pod_failure_policy rule needs exactly one of onExitCodes, onPodConditions")
            if set(rule) - {"action", "onExitCodes", "onPodConditions"}:
                raise ValueError("a pod_failure_policy rule has fields other than action, onExitCodes and "
                                 "onPodConditions; fix: remove them")
            codes = rule.get("onExitCodes")
            if codes is not None:
                values = codes.get("values") if isinstance(codes, dict) else None
                if (not isinstance(codes, dict) or codes.get("operator") not in ("In", "NotIn")
                        or set(codes) - {"operator", "values", "containerName"}
                        or not isinstance(values, list) or not 1 <= len(values) <= 255
                        or any(isinstance(v, bool) or not isinstance(v, int) or not -2**31 <= v < 2**31
                               for v in values)
                        or len(set(values)) != len(values)):
                    raise ValueError("onExitCodes needs operator In or NotIn and 1-255 distinct int32 values; fix: "
                                     "e.g. {'operator': 'In', 'values': [42]}")
                if codes.get("operator") == "In" and 0 in values:
                    raise ValueError("onExitCodes with operator In must not list 0; fix: remove 0")
            conditions = rule.get("onPodConditions")
            if conditions is not None and (
                    not isinstance(conditions, list) or not all(
                        isinstance(c, dict) and isinstance(c.get("type"), str) and c["type"]
                        and set(c) <= {"type", "status"} and c.get("status", "True") in ("True", "False", "Unknown")
                        for c in conditions)):
                raise ValueError("onPodConditions needs a list of {'type': ..., 'status': 'True'|'False'|'Unknown'}")
        return value

    @model_validator(mode="after")
    def _cross(self) -> "JobSpec":
        if self.backoff_limit_per_index is not None and self.completion_mode != "Indexed":
            raise ValueError("backoff_limit_per_index needs completion_mode 'Indexed'; fix: set it or remove the "
                             "per-index limit")
        if self.max_failed_indexes is not None and self.backoff_limit_per_index is None:
            raise ValueError("max_failed_indexes needs backoff_limit_per_index; fix: set both")
        uses_fail_index = any(r.get("action") == "FailIndex" for r in (self.pod_failure_policy or {}).get("rules", []))
        if uses_fail_index and self.backoff_limit_per_index is None:
            raise ValueError("pod_failure_policy action FailIndex needs backoff_limit_per_index; fix: set it")
        if (self.pod_failure_policy or self.backoff_limit_per_index is not None) and self.restart_policy != "Never":
            raise ValueError("pod_failure_policy and backoff_limit_per_index need restart_policy 'Never'")
        # only a value other than the default (3) is refused: a round trip through model_dump sets every field
        if self.eci.max_reclaims not in (0, EciOptions.model_fields["max_reclaims"].default) and (
                self.backoff_limit_per_index is None or self.max_failed_indexes is not None):
            # the on-demand try ends the index in the first Job with podFailurePolicy FailIndex
            raise ValueError(f"eci.max_reclaims {self.eci.max_reclaims} needs backoff_limit_per_index and no "
                             f"max_failed_indexes (an index moved on demand counts as failed in the first Job); "
                             f"fix: set backoff_limit_per_index (e.g. 2) and remove max_failed_indexes, or set "
                             f"eci.max_reclaims 0")
        for req, lim, what in ((self.cpu, self.cpu_limit, "cpu"), (self.memory, self.memory_limit, "memory")):
            if lim is not None and parse_quantity(lim) < parse_quantity(req):
                raise ValueError(f"{what}_limit {lim} is below the {what} request {req}; fix: raise the limit "
                                 f"or lower the request")
        if not any(s.startswith("ecs.") for s in self.eci.use_specs):
            cpu, mem = cpu_cores(self.cpu_limit or self.cpu), memory_gib(self.memory_limit or self.memory)
            if cpu > ECI_MAX_CPU or mem > ECI_MAX_MEMORY_GIB:
                raise ValueError(f"{cpu:g} vCPU / {mem:g} GiB per pod is more than ECI offers by vCPU and memory "
                                 f"({ECI_MAX_CPU:g} vCPU, {ECI_MAX_MEMORY_GIB:g} GiB); fix: lower job.cpu/memory, or "
                                 f"name an ECS instance type in job.eci.use_specs")
        _check_env_expansion(self.env, "job.env")
        compute = self.compute
        size = compute.size_parts() if compute else None
        if compute and size is not None and (size[0] < cpu_cores(self.cpu) or size[1] < memory_gib(self.memory)):
            raise ValueError(f"compute.size {compute.size} is below the requests (cpu {self.cpu}, memory "
                             f"{self.memory}); ACS refuses such pods; fix: raise compute.size or lower the "
                             f"requests")
        if size is not None and self.eci.use_specs:
            raise ValueError("compute.size and eci.use_specs both choose the instance size; fix: keep one")
        return self


#: How long the waiter may still read pod logs after the Job finished: it lets open log streams end by themselves
#: for LOG_GRACE_SECONDS, then reads each unfinished log once more for up to LOG_CATCH_UP_SECONDS, checking every
#: WAIT_TICK_SECONDS (tasks/stages/wait.py WaitOptions uses these values).
LOG_GRACE_SECONDS = 2.0
LOG_CATCH_UP_SECONDS = 30.0
WAIT_TICK_SECONDS = 2.0
#: The smallest ``job.ttl_seconds_after_finished`` with which the pods (and their logs) outlive that drain: the
#: TTL-after-finished controller deletes the Job and, with it, its pods
#: (https://kubernetes.io/docs/concepts/workloads/controllers/ttlafterfinished/).
MIN_TTL_SECONDS_AFTER_FINISHED = int(LOG_GRACE_SECONDS + LOG_CATCH_UP_SECONDS + WAIT_TICK_SECONDS)


class WaitSpec(_Model):
    """How wait_for_job watches the Job and when it gives up early."""

    fail_fast_grace_seconds: int = Field(90, ge=0, le=INT32_MAX,
        description="A pod stuck in ImagePullBackOff, Unschedulable, "
                                         "CreateContainerConfigError or ECI creation failure for this long fails "
                                         "the run (a registry can be briefly unreachable).")
    timeout_seconds: int | None = Field(None, ge=1, le=INT32_MAX,
        description="Give up waiting after this long. Empty: the "
                                        "Job's active deadline plus 10 minutes.")
    stream_logs: bool = Field(True, description="Stream every pod's log lines into the Prefect run log.")
    log_tail_lines: int = Field(20, ge=0, le=1000, description="Lines of a failed pod's log quoted in the error.")
    max_log_streams: int = Field(64, ge=1, le=1000, description="Pod logs followed live at once at most; the "
                                 "others are read once when their container ends (nothing is lost: the node "
                                 "keeps a container's log until the pod is deleted). Each follow is one "
                                 "long-lived request to the API server and the node.")


# --------------------------------------------------------------------------------------------- outputs


class OutputsSpec(_Model):
    """Where the pods put their results in OSS, what counts as complete, and what the flow does with them."""

    bucket: BucketName = Field("ask-batch-outputs", description="OSS bucket for outputs (and saved pod logs).")
    create_bucket: bool = Field(True, description="Create the bucket if it does not exist.")
    prefix_template: str = Field("ask-batch/{run_key}/", description="Prefix of one run's outputs. Fields: "
                                 "{run_key}, {flow_run_name}.")
    index_template: str = Field("index-{index:05d}/", description="Sub-prefix of one index, under the run "
                                "prefix. Must contain {index}.")
    completeness: Literal["marker", "min_objects", "none"] = Field(
        "marker", description="'marker': every index wrote marker_name; 'min_objects': every index wrote at "
        "least min_objects objects; 'none': no check of OSS outputs (a workload that writes only to the shared "
        "volume): whatever it wrote to OSS is still collected, and the summary says nothing was verified.")
    marker_name: str = Field("_SUCCESS", description="Name of the per-index done-marker object.")
    min_objects: int = Field(1, ge=1, le=INT32_MAX, description="For 'min_objects': objects each index must write.")
    download: bool = Field(True, description="Download the outputs (checksums verified); off: record only.")
    download_dir: str = Field("outputs", description="Local directory; files land in "
                              "<download_dir>/<flow-run-name>/.")
    presigned_links: bool = Field(False, description="Put presigned download links in the outputs table.")
    presign_expiry_seconds: int = Field(3600, ge=60, le=7 * 24 * 3600, description="Validity of presigned links.")
    pod_endpoint: str | None = Field(None, description="OSS endpoint the pods use. Empty: the OSS endpoint "
                                     "override if set, else the region's internal endpoint "
                                     "(oss-<region>-internal.aliyuncs.com).")
    pod_credentials: Literal["rrsa", "target", "ram_role"] | None = Field(
        None, description="How the pods get OSS credentials. 'rrsa' (the default on ASK and ACS): a RAM role "
        "for the run's service account (RRSA, outputs.rrsa_role_name); the pods trade their OIDC token for "
        "temporary keys and no AccessKey is stored in the cluster. 'target': the flow's own AccessKey reaches "
        "the pods through the Secret (env OSS_ACCESS_KEY_ID/_SECRET; the default with cluster mode "
        "'existing'). 'ram_role': ECI's RAM role, job.eci.ram_role_name (ASK only). Empty: the default for "
        "the cluster mode.")
    rrsa_role_name: RamRoleName = Field("ask-batch-pods", description="With pod_credentials 'rrsa': the RAM role "
                                        "the pods assume. Its trust policy must trust the cluster's RRSA OIDC "
                                        "provider for the run's service account (docs/ram-policy.md).")
    max_parallel_downloads: int = Field(8, ge=1, le=64, description="Parallel downloads.")


    @field_validator("prefix_template")
    @classmethod
    def _prefix(cls, value: str) -> str:
        fields = _template_fields(value, "prefix_template")
        unknown = fields - {"run_key", "flow_run_name"}
        if unknown:
            raise ValueError(f"unknown field(s) {sorted(unknown)} in prefix_template; fix: use {{run_key}} or "
                             f"{{flow_run_name}}")
        if value.startswith(("/", "\\")):
            raise ValueError("prefix_template must not start with '/' or '\\' (OSS object names cannot); fix: drop "
                             "the leading slash")
        _check_no_expansion(value, "prefix_template")
        return value if value.endswith("/") else value + "/"

    @field_validator("index_template")
    @classmethod
    def _index(cls, value: str) -> str:
        fields = _template_fields(value, "index_template")
        if fields != {"index"}:
            raise ValueError("index_template must use exactly the field {index}; fix: e.g. 'index-{index:05d}/'")
        try:
            value.format(index=0)
        except (ValueError, IndexError, TypeError, KeyError) as exc:
            raise ValueError(f"index_template cannot be formatted ({exc}); fix: e.g. 'index-{{index:05d}}/'") from None
        _check_no_expansion(value, "index_template")
        return value if value.endswith("/") else value + "/"

    @field_validator("marker_name")
    @classmethod
    def _marker(cls, value: str) -> str:
        if not value or "/" in value or "\\" in value or value in (".", "..") or any(ord(c) < 32 for c in value):
            raise ValueError(f"{value!r} is not a marker object name; fix: a plain name like '_SUCCESS'")
        return _check_no_expansion(value, "marker_name")


    @field_validator("pod_endpoint")
    @classmethod
    def _pod_endpoint(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not ENDPOINT_RE.match(value):
            raise ValueError(f"{value!r} is not an endpoint; fix: write 'host[:port]' or 'http(s)://host[:port]'")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _key_length(self) -> "OutputsSpec":
        # the longest key a pod writes: the run prefix (a run key is at most 40 characters) + an index prefix + the
        # marker; OSS_MAX_KEY_BYTES has the source
        longest = (self.prefix_template.format(run_key="x" * 40, flow_run_name="ask-batch-" + "x" * 40)
                   + self.index_template.format(index=100_000) + self.marker_name)
        if len(longest.encode()) > OSS_MAX_KEY_BYTES - 64:  # room for the workload's own file names
            raise ValueError(f"the output keys would be up to {len(longest.encode())} bytes, and OSS object names are "
                             f"at most {OSS_MAX_KEY_BYTES}; fix: shorten prefix_template, index_template or "
                             f"marker_name")
        return self


def _template_fields(template: str, what: str) -> set[str]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{what} is not a valid template ({exc}); fix: balance the braces") from exc
    return {name for _, name, _, _ in parsed if name is not None}


# --------------------------------------------------------------------------------------------- teardown

Policy = Literal["always", "on_success", "never"]


class TeardownSpec(_Model):
    """What to delete at the end (after success, failure or cancellation)."""

    job: Policy = Field("always", description="The Job and its pods (logs are saved to OSS before).")
    config: Policy = Field("always", description="The ConfigMap and Secret.")
    volume: Policy = Field("always", description="The run's PV and PVC (the data on NAS stays).")
    nas: Policy = Field("never", description="The NAS file system and its mount target (data is lost!).")
    cluster: Policy = Field("never", description="The ASK cluster (only one ask-batch created).")
    delete_everything: bool = Field(False, description="Pure pay-per-use: delete all of the above always, "
                                    "whatever the per-resource settings say.")

    def effective(self) -> dict[str, Policy]:
        """The policy per resource after applying ``delete_everything``."""
        names = ("job", "config", "volume", "nas", "cluster")
        if self.delete_everything:
            return {n: "always" for n in names}
        return {n: getattr(self, n) for n in names}


# --------------------------------------------------------------------------------------------- the whole


class BatchSpec(_Model):
    """One ask-batch run: where, what, and what to do with the results."""

    run_key: str | None = Field(None, description="Stable key naming everything this run creates, so a retry "
                                "re-attaches instead of starting again. Empty: derived from the flow run name.")
    target: Target = Field(default_factory=Target, description="Region, credentials, endpoints.")
    cluster: ClusterSpec = Field(default_factory=ClusterSpec, description="The cluster the Job runs on.")
    storage: StorageSpec = Field(default_factory=StorageSpec, description="Shared volume for the pods.")
    config: ConfigSpec = Field(default_factory=ConfigSpec, description="Files, secrets and env for the pods.")
    job: JobSpec = Field(..., description="The batch Job.")
    wait: WaitSpec = Field(default_factory=WaitSpec, description="Watching the Job.")
    outputs: OutputsSpec = Field(default_factory=OutputsSpec, description="Outputs in OSS.")
    teardown: TeardownSpec = Field(default_factory=TeardownSpec, description="Cleanup policy.")

    @field_validator("run_key")
    @classmethod
    def _run_key(cls, value: str | None) -> str | None:
        if not value:
            return None
        if len(value) > 40 or not DNS1123_LABEL_RE.match(value):
            raise ValueError(f"{value!r} is not a valid run key (DNS-1123 label of at most 40 characters); fix: "
                             f"e.g. {_suggest_label(value)[:40].strip('-')!r}")
        return value

    @model_validator(mode="after")
    def _cross(self) -> "BatchSpec":
        mounts = {"config.mount_path": self.config.mount_path,
                  "config.secret_mount_path": self.config.secret_mount_path}
        if self.storage.mode != "none":
            mounts["storage.mount_path"] = self.storage.mount_path
        items = list(mounts.items())
        for i, (name_a, a) in enumerate(items):
            for name_b, b in items[i + 1:]:
                if a == b or a.startswith(b + "/") or b.startswith(a + "/"):
                    raise ValueError(f"{name_a} {a!r} and {name_b} {b!r} overlap; fix: give them separate "
                                     f"directories")
        clash = set(self.config.env) & set(self.job.env)
        if clash:
            raise ValueError(f"{sorted(clash)} set in both config.env and job.env; fix: keep one")
        secret_names = {item.name for item in self.config.secret_env}
        for what, env in (("config.env", self.config.env), ("job.env", self.job.env)):
            for name, value in env.items():
                for ref in _env_references(value):
                    if ref in secret_names:
                        raise ValueError(f"{what}.{name} refers to $({ref}), a config.secret_env variable that "
                                         f"Kubernetes sets after the plain env, so the pod would see the text "
                                         f"'$({ref})'; fix: read {ref} in the workload itself")
        _check_env_expansion({**self.config.env, **self.job.env}, "env")
        self._resolve_pod_credentials()
        if self.outputs.pod_credentials == "ram_role" and not self.job.eci.ram_role_name:
            raise ValueError("outputs.pod_credentials 'ram_role' needs job.eci.ram_role_name; fix: set the RAM "
                             "role, or use 'target'")
        if (self.storage.mode == "nas" and self.cluster.mode == "existing"
                and not (self.storage.nas.vpc_id and self.storage.nas.vswitch_id)):
            raise ValueError("storage.nas with cluster mode 'existing' needs storage.nas.vpc_id and "
                             "storage.nas.vswitch_id (the cluster's VPC is unknown); fix: set both")
        ttl = self.job.ttl_seconds_after_finished
        if self.wait.stream_logs and ttl is not None and ttl < MIN_TTL_SECONDS_AFTER_FINISHED:
            raise ValueError(f"job.ttl_seconds_after_finished {ttl} is shorter than the "
                             f"{MIN_TTL_SECONDS_AFTER_FINISHED} s the waiter needs after the Job finishes to read "
                             f"the pods' logs (Kubernetes deletes the pods with the Job); fix: set it to at least "
                             f"{MIN_TTL_SECONDS_AFTER_FINISHED}, "
                             f"leave it empty (never), or turn off wait.stream_logs")
        if (self.cluster.mode == "ask" and self.teardown.effective()["cluster"] != "never"
                and self.cluster.ask.deletion_protection):
            raise ValueError("teardown deletes the cluster but cluster.ask.deletion_protection is on; fix: turn "
                             "one of them off")
        if (self.cluster.mode == "acs" and self.teardown.effective()["cluster"] != "never"
                and self.cluster.acs.deletion_protection):
            raise ValueError("teardown deletes the cluster but cluster.acs.deletion_protection is on; fix: turn "
                             "one of them off")
        self._cross_compute()
        return self

    def _resolve_pod_credentials(self) -> None:
        """``outputs.pod_credentials`` left empty: 'rrsa' on ASK/ACS (the cluster's RRSA provider comes from CS),
        'target' with cluster mode 'existing' (no CS cluster to read it from)."""
        outputs = self.outputs
        if outputs.pod_credentials is None:
            outputs.pod_credentials = "target" if self.cluster.mode == "existing" else "rrsa"
        if outputs.pod_credentials != "rrsa":
            return
        if self.cluster.mode == "existing":
            raise ValueError("outputs.pod_credentials 'rrsa' needs the cluster's RRSA OIDC provider, which "
                             "ask-batch reads from Container Service for cluster modes 'ask' and 'acs' only; fix: "
                             "use cluster.mode 'ask' or 'acs' with the cluster's name, or outputs.pod_credentials "
                             "'target'")
        if self.job.service_account:
            raise ValueError(f"job.service_account {self.job.service_account!r} and outputs.pod_credentials 'rrsa' "
                             f"both choose the pods' service account (rrsa uses the run's own, annotated with the "
                             f"RAM role); fix: remove job.service_account, or set outputs.pod_credentials "
                             f"'target'")

    def _cross_compute(self) -> None:
        """job.compute / job.eci against the cluster kind known from the parameters (mode 'ask' or 'acs')."""
        compute = self.job.compute
        if self.cluster.mode == "ask" and compute is not None and compute.compute_class != "general-purpose":
            raise ValueError(f"job.compute.class {compute.compute_class!r} exists on ACS only (ECI has no compute "
                             f"classes); fix: use cluster.mode 'acs', or class 'general-purpose' with "
                             f"job.eci.use_specs for an ECS type")
        if self.cluster.mode == "acs":
            # retry rules, not annotations: they apply to ACS best-effort pods too
            changed = sorted(set(self.job.eci.model_dump(exclude_defaults=True)) - {"max_reclaims", "ignore_reclaims"})
            if changed:
                raise ValueError(f"job.eci ({', '.join(changed)}) sets ECI annotations, which ACS ignores; fix: "
                                 f"remove job.eci and use job.compute (class, qos, size)")
            if self.outputs.pod_credentials == "ram_role":
                raise ValueError("outputs.pod_credentials 'ram_role' is ECI's RAM role annotation, not supported "
                                 "on ACS by ask-batch; fix: use 'rrsa' (the default) or 'target'")


# --------------------------------------------------------------------------------------------- errors


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(spec)"


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``X``, ``X | None`` or ``list[X]``, if any."""
    stack = [annotation]
    while stack:
        candidate = stack.pop()
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
        stack.extend(get_args(candidate))
    return None


def unknown_field_message(loc: tuple[Any, ...]) -> str:
    """The message for an unknown field at ``loc`` (a path in ``BatchSpec``): the closest known name, if any.

    >>> unknown_field_message(("job", "complitions"))
    "unknown field; fix: did you mean 'completions'?"
    """
    model: type[BaseModel] | None = BatchSpec
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue  # a list index: the model is the item's
        field = model.model_fields.get(str(part))
        model = _model_in(field.annotation) if field is not None else None
    if model is None:
        return "unknown field; fix: check the spelling (see the parameter form for the known fields)"
    known = list(model.model_fields)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    if close:
        return f"unknown field; fix: did you mean {close[0]!r}?"
    return f"unknown field; fix: use one of {', '.join(known)}"


def spec_error_from(exc: ValidationError, *, root: str = "") -> SpecError:
    """Turn a pydantic ValidationError into a SpecError with dotted field paths and readable messages."""
    problems = []
    for err in exc.errors(include_url=False):
        field = _loc(tuple(err["loc"]))
        if root:
            field = f"{root}.{field}" if field != "(spec)" else root
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = unknown_field_message(tuple(err["loc"])) if not root else \
                "unknown field; fix: check the spelling (see the parameter form for the known fields)"
        elif err["type"] == "missing":
            msg = "required; fix: set it"
        elif err["type"] in ("int_parsing_size", "int_from_float", "int_parsing", "int_type", "finite_number"):
            msg = f"{msg}; fix: write a whole number of at most {INT32_MAX} (Kubernetes' int32)"
        elif err["type"] in ("less_than_equal", "less_than", "greater_than_equal", "greater_than"):
            msg = f"{msg}; fix: use a value in that range (see the field's description)"
        problems.append((field, msg))
    return SpecError(problems)


def parse_spec(data: Mapping[str, Any] | BatchSpec) -> BatchSpec:
    """Validate parameters into a ``BatchSpec``; raise ``SpecError`` naming every bad field.

    Example:
        >>> parse_spec({"job": {"image": "python:3.11", "completions": 2, "parallelism": 3}})
        Traceback (most recent call last):
        tasks.spec.SpecError: invalid ask-batch parameters (1 problem(s)):
          - job.parallelism: parallelism 3 is more than completions 2: ...
    """
    if isinstance(data, BatchSpec):
        data = data.model_dump(mode="json")
    try:
        return BatchSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise spec_error_from(exc) from None
