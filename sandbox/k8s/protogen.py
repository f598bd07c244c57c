"""Generate `proto_schema.json`, the wire description that protobuf.py decodes Kubernetes request bodies with.

    python -m sandbox.k8s.protogen --api PATH --apimachinery PATH [--out sandbox/k8s/proto_schema.json]

PATH is a checkout (or a bare git directory, read at HEAD) of k8s.io/api and k8s.io/apimachinery. No Python
package ships the Kubernetes protobuf messages in a maintained form (the only one, `k8s-proto` 0.0.3 from
2019, has core/v1 and meta/v1 only, nothing for batch/v1), so the description is derived from the two
sources that define the wire format, and only the facts needed to decode are kept:

- `generated.proto` of each package: per message, each field's number, its proto type (scalar, message,
  `repeated`, `map<,>`), and whether the message is a list wrapper (`+protobuf.nullable=true`, JSON: a list);
- the Go types (`types.go` ...), whose struct tags are the source of generated.proto: per field number, the
  JSON name (`json:",inline"` fields are flattened into their parent, as the JSON form does) and whether Go's
  encoding/json would write the field when it holds its zero value (a pointer, or no `omitempty`). That is
  what makes `backoffLimit: 0` (a *int32) survive while the always-encoded zero of a plain int is dropped.

Only messages reachable from the kinds the sandbox serves (plus DeleteOptions, the self reviews, Binding)
are written. Re-run after a Kubernetes upgrade; the output is data, reviewed like code.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path
from typing import Any

SCALARS = {"string", "bytes", "bool", "int32", "int64", "uint32", "uint64", "sint32", "sint64", "double",
           "float", "fixed32", "fixed64", "sfixed32", "sfixed64"}
PACKAGES = {  # proto package -> (repository, directory)
    "k8s.io.api.core.v1": ("api", "core/v1"),
    "k8s.io.api.batch.v1": ("api", "batch/v1"),
    "k8s.io.api.storage.v1": ("api", "storage/v1"),
    "k8s.io.api.authorization.v1": ("api", "authorization/v1"),
    "k8s.io.api.authentication.v1": ("api", "authentication/v1"),
    "k8s.io.api.policy.v1": ("api", "policy/v1"),
    "k8s.io.api.scheduling.v1alpha3": ("api", "scheduling/v1alpha3"),
    "k8s.io.apimachinery.pkg.apis.meta.v1": ("apimachinery", "pkg/apis/meta/v1"),
    "k8s.io.apimachinery.pkg.api.resource": ("apimachinery", "pkg/api/resource"),
    "k8s.io.apimachinery.pkg.util.intstr": ("apimachinery", "pkg/util/intstr"),
    "k8s.io.apimachinery.pkg.runtime": ("apimachinery", "pkg/runtime"),
    "k8s.io.apimachinery.pkg.runtime.schema": ("apimachinery", "pkg/runtime/schema"),
}
# (apiVersion, kind) the sandbox decodes -> message
KINDS = {
    ("v1", "Namespace"): "k8s.io.api.core.v1.Namespace",
    ("v1", "ConfigMap"): "k8s.io.api.core.v1.ConfigMap",
    ("v1", "Secret"): "k8s.io.api.core.v1.Secret",
    ("v1", "ServiceAccount"): "k8s.io.api.core.v1.ServiceAccount",
    ("v1", "Node"): "k8s.io.api.core.v1.Node",
    ("v1", "PersistentVolume"): "k8s.io.api.core.v1.PersistentVolume",
    ("v1", "PersistentVolumeClaim"): "k8s.io.api.core.v1.PersistentVolumeClaim",
    ("v1", "Pod"): "k8s.io.api.core.v1.Pod",
    ("v1", "Event"): "k8s.io.api.core.v1.Event",
    ("v1", "Binding"): "k8s.io.api.core.v1.Binding",
    ("batch/v1", "Job"): "k8s.io.api.batch.v1.Job",
    ("storage.k8s.io/v1", "StorageClass"): "k8s.io.api.storage.v1.StorageClass",
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"): "k8s.io.api.authorization.v1.SelfSubjectAccessReview",
    ("authorization.k8s.io/v1", "SelfSubjectRulesReview"): "k8s.io.api.authorization.v1.SelfSubjectRulesReview",
    ("authentication.k8s.io/v1", "SelfSubjectReview"): "k8s.io.api.authentication.v1.SelfSubjectReview",
    ("meta.k8s.io/v1", "DeleteOptions"): "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions",
    ("v1", "DeleteOptions"): "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions",
}

_FIELD = re.compile(r"^\s*(optional|repeated|required)\s+(\S+)\s+(\w+)\s*=\s*(\d+)")
_MAP = re.compile(r"^\s*map<\s*(\S+)\s*,\s*(\S+)\s*>\s+(\w+)\s*=\s*(\d+)")
_GO_FIELD = re.compile(r"^\s*(?:(\w+)\s+)?(\S+)\s+`([^`]*)`")


class Source:
    """Files of one repository: a work tree, or a bare git directory read at HEAD."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bare = not (path / ".git").exists() and (path / "HEAD").exists()

    def read(self, rel: str) -> str | None:
        if not self.bare:
            f = self.path / rel
            return f.read_text() if f.exists() else None
        proc = subprocess.run(["git", "--git-dir", str(self.path), "show", f"HEAD:{rel}"], capture_output=True,
                              text=True)
        return proc.stdout if proc.returncode == 0 else None

    def list(self, rel: str) -> list[str]:
        if not self.bare:
            return sorted(p.name for p in (self.path / rel).iterdir())
        proc = subprocess.run(["git", "--git-dir", str(self.path), "ls-tree", "--name-only", f"HEAD:{rel}"],
                              capture_output=True, text=True, check=True)
        return proc.stdout.split()

    def commit(self) -> str:
        git = ["git", "--git-dir", str(self.path)] if self.bare else ["git", "-C", str(self.path)]
        return subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def parse_proto(text: str, package: str) -> dict[str, Any]:
    """message name -> {"list": bool, "fields": {number: (label, type)}} (types fully qualified)."""
    messages: dict[str, Any] = {}
    current: dict[str, Any] | None = None
    comments: list[str] = []

    def qualify(t: str) -> str:
        if t in SCALARS:
            return t
        return t[1:] if t.startswith(".") else f"{package}.{t}"

    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("//"):
            comments.append(line)
            continue
        m = re.match(r"message\s+(\w+)\s*\{", line)
        if m:
            current = {"list": any("+protobuf.nullable=true" in c for c in comments), "fields": {}}
            messages[f"{package}.{m.group(1)}"] = current
        elif line == "}":
            current = None
        elif current is not None:
            fm, mm = _FIELD.match(line), _MAP.match(line)
            if fm:
                current["fields"][int(fm.group(4))] = ("r" if fm.group(1) == "repeated" else "s",
                                                       qualify(fm.group(2)), fm.group(3))
            elif mm:
                current["fields"][int(mm.group(4))] = ("m", [qualify(mm.group(1)), qualify(mm.group(2))],
                                                       mm.group(3))
        comments = [] if line and not line.startswith("//") else comments
    return messages


def parse_go(text: str) -> dict[str, dict[int, tuple[str, bool]]]:
    """struct name -> {protobuf number: (json name, "" when inline; written when zero)}."""
    out: dict[str, dict[int, tuple[str, bool]]] = {}
    current: dict[int, tuple[str, bool]] | None = None
    for line in text.splitlines():
        m = re.match(r"^type\s+(\w+)\s+struct\s*\{", line)
        if m:
            current = out.setdefault(m.group(1), {})
            continue
        if line.startswith("}"):
            current = None
            continue
        if current is None or "protobuf:\"" not in line:
            continue
        fm = _GO_FIELD.match(line)
        if not fm:
            continue
        go_type, tags = fm.group(2), fm.group(3)
        pb = re.search(r'protobuf:"([^"]*)"', tags)
        js = re.search(r'json:"([^"]*)"', tags)
        parts = pb.group(1).split(",") if pb else []
        if len(parts) < 2 or not parts[1].isdigit():  # e.g. `protobuf:"-"`
            continue
        number = int(parts[1])
        if not js:  # no JSON form of its own (IntOrString's parts ...): keep the proto name
            name_part = next((x for x in parts if x.startswith("name=")), "name=")
            current[number] = (name_part[5:], go_type.startswith("*"))
            continue
        json_parts = js.group(1).split(",")
        name = json_parts[0]
        inline = "inline" in json_parts[1:]
        omitempty = "omitempty" in json_parts[1:]
        written_when_zero = go_type.startswith("*") or not omitempty
        current[number] = ("" if inline else name, written_when_zero)
    return out


def build(api: Source, apimachinery: Source) -> dict[str, Any]:
    sources = {"api": api, "apimachinery": apimachinery}
    protos: dict[str, Any] = {}
    go: dict[str, dict[str, dict[int, tuple[str, bool]]]] = {}
    for package, (repo, directory) in PACKAGES.items():
        src = sources[repo]
        text = src.read(f"{directory}/generated.proto")
        if text is None:
            raise SystemExit(f"{directory}/generated.proto not found in {src.path}")
        protos.update(parse_proto(text, package))
        structs: dict[str, dict[int, tuple[str, bool]]] = {}
        for name in src.list(directory):
            if name.endswith(".go") and not name.endswith("_test.go") and not name.startswith("zz_") \
                    and "generated" not in name:
                structs.update(parse_go(src.read(f"{directory}/{name}") or ""))
        go[package] = structs
    wanted: list[str] = list(dict.fromkeys(KINDS.values()))
    out: dict[str, Any] = {}
    while wanted:
        name = wanted.pop()
        if name in out:
            continue
        message = protos.get(name)
        if message is None:
            raise SystemExit(f"message {name} not found")
        package, _, short = name.rpartition(".")
        tags = go.get(package, {}).get(short, {})
        fields: dict[str, list[Any]] = {}
        for number, (label, type_, proto_name) in sorted(message["fields"].items()):
            json_name, keep_zero = tags.get(number, (proto_name, False))
            fields[str(number)] = [json_name, label, type_, keep_zero]
            for t in (type_ if isinstance(type_, list) else [type_]):
                if t not in SCALARS and t not in out:
                    wanted.append(t)
        out[name] = {"list": message["list"], "fields": fields}
    return {"messages": dict(sorted(out.items())),
            "kinds": {f"{av}/{kind}": msg for (av, kind), msg in KINDS.items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api", required=True, type=Path, help="k8s.io/api checkout or bare git dir")
    parser.add_argument("--apimachinery", required=True, type=Path, help="k8s.io/apimachinery checkout or git dir")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("proto_schema.json"))
    args = parser.parse_args(argv)
    api, machinery = Source(args.api), Source(args.apimachinery)
    schema = build(api, machinery)
    schema = {"generated_from": {"k8s.io/api": api.commit(), "k8s.io/apimachinery": machinery.commit()}, **schema}
    args.out.write_text(json.dumps(schema, separators=(",", ":"), sort_keys=False) + "\n")
    print(f"{args.out}: {len(schema['messages'])} messages")


if __name__ == "__main__":
    main()
