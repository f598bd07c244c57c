"""The virtual node's image model: references parsed as the kubelet parses them, pulls that fail as they would.

The sandbox never pulls an image (a container's command runs on the host), and never looks a registry up:
there is no network, so no DNS query is ever made. What it reproduces is what a user sees when an image
cannot be had:

- **Reference grammar** (`parse`): the docker reference grammar of github.com/distribution/reference
  (ParseNormalizedNamed, which kubelet's parsers.ParseImageName calls): familiar names are completed to
  `docker.io/library/<name>`, a tag defaults to `latest`, repository names must be lowercase, digests are
  checked for algorithm and length, the name is at most 255 characters. A reference that does not parse gives
  the container `InvalidImageName` with the kubelet's message (`Failed to apply default image tag "x":
  couldn't parse image name "x": invalid reference format`) and an `InspectFailed` warning; the pod stays
  Pending, as it does on a real node.
- **Pull failures** (`pull_error`): a registry host under the `.invalid` top-level domain (RFC 2606: it can
  never resolve) fails as containerd fails on an unknown host (`dial tcp: lookup <host>: no such host`); an
  image named in the fault knob `missing_images` (exact reference, its normalized form, or a shell pattern)
  fails as a missing manifest does (`<ref>: not found`). The container then shows `ErrImagePull`, then
  `ImagePullBackOff` with the kubelet's messages and events, retried with the kubelet's image back-off.

Sources: kubernetes/pkg/kubelet/images/image_manager.go (messages, events, evalCRIPullErr),
pkg/util/parsers/parsers.go, distribution/reference regexp.go / normalize.go, containerd's resolver errors.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255

_ALPHANUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALPHANUMERIC}(?:{_SEPARATOR}{_ALPHANUMERIC})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN_AND_PORT = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN_AND_PORT}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
REFERENCE = re.compile(rf"^({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?$", re.ASCII)
ANCHORED_IDENTIFIER = re.compile(r"^[a-f0-9]{64}$")
DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


class InvalidReference(ValueError):
    """The reference does not parse; str() is distribution/reference's error text."""


@dataclass(frozen=True)
class Reference:
    domain: str
    path: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        """The normalized reference containerd resolves: name, then :tag (default latest) and/or @digest."""
        out = self.name
        if self.tag or not self.digest:
            out += ":" + (self.tag or DEFAULT_TAG)
        if self.digest:
            out += "@" + self.digest
        return out


def _split_docker_domain(name: str) -> tuple[str, str]:
    i = name.find("/")
    if i == -1 or (not any(c in name[:i] for c in ".:") and name[:i] != "localhost"
                   and name[:i].lower() == name[:i]):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = name[:i], name[i + 1:]
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def parse(image: str) -> Reference:
    """distribution/reference ParseNormalizedNamed; raises InvalidReference with its message."""
    if ANCHORED_IDENTIFIER.match(image):
        raise InvalidReference(f"invalid repository name ({image}), cannot specify 64-byte hexadecimal strings")
    domain, remainder = _split_docker_domain(image)
    remote = remainder[:remainder.index(":")] if ":" in remainder else remainder
    if remote.lower() != remote:
        raise InvalidReference(f"invalid reference format: repository name ({remote}) must be lowercase")
    full = f"{domain}/{remainder}"
    match = REFERENCE.match(full)
    if match is None:
        if full == "":
            raise InvalidReference("repository name must have at least one component")
        if REFERENCE.match(full.lower()):
            raise InvalidReference("repository name must be lowercase")
        raise InvalidReference("invalid reference format")
    name, tag, digest = match.group(1), match.group(2), match.group(3)
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidReference(f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")
    if digest:
        algorithm, _, hex_part = digest.partition(":")
        if algorithm not in DIGEST_LENGTHS:
            raise InvalidReference("unsupported digest algorithm")
        if len(hex_part) != DIGEST_LENGTHS[algorithm]:
            raise InvalidReference("invalid checksum digest length")
        if hex_part.lower() != hex_part:
            raise InvalidReference("invalid checksum digest format")
    ref_domain, _, path = name.partition("/")
    return Reference(ref_domain, path, tag, digest)


def invalid_name_message(image: str, error: InvalidReference) -> str:
    """The InvalidImageName message (kubelet applyDefaultImageTag -> parsers.ParseImageName)."""
    return f'Failed to apply default image tag "{image}": couldn\'t parse image name "{image}": {error}'


def _host(domain: str) -> str:
    if domain.startswith("["):
        return domain[:domain.index("]") + 1]
    return domain.rsplit(":", 1)[0] if ":" in domain else domain


def pull_error(image: str, ref: Reference, missing: list[str]) -> str | None:
    """The CRI error of a pull that cannot succeed, or None when the image counts as present.

    Never resolves anything: only the reserved `.invalid` domain and the knob decide."""
    host = _host(ref.domain).lower().rstrip(".")
    normalized = str(ref)
    if host == "invalid" or host.endswith(".invalid"):
        scheme_host = ref.domain
        manifest = ref.digest or ref.tag or DEFAULT_TAG
        return (f'rpc error: code = Unknown desc = failed to pull and unpack image "{normalized}": failed to resolve '
                f'reference "{normalized}": failed to do request: Head "https://{scheme_host}/v2/{ref.path}/manifests/'
                f'{manifest}": dial tcp: lookup {host}: no such host')
    for pattern in missing:
        if image == pattern or normalized == pattern or fnmatch.fnmatchcase(image, pattern) \
                or fnmatch.fnmatchcase(normalized, pattern):
            return (f'rpc error: code = NotFound desc = failed to pull and unpack image "{normalized}": failed to '
                    f'resolve reference "{normalized}": {normalized}: not found')
    return None
