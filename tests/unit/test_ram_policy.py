"""docs/ram-policy.md grants exactly the cloud API actions the code calls (issue 11).

The calls are found in the source: every ``cs.<m>``, ``nas.<m>`` and ``oss.<m>`` where ``<m>`` is a method of the
real SDK client class. CS and NAS actions are named after their operation; OSS actions come from the mapping below
(https://www.alibabacloud.com/help/en/oss/user-guide/ram-policy-elements): a new OSS call fails this test until it
is mapped and granted.
"""

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

OSS_ACTIONS = {
    "put_object": "oss:PutObject", "get_object": "oss:GetObject", "head_object": "oss:GetObject",
    "presign": "oss:GetObject", "list_objects_v2_paginator": "oss:ListObjects", "list_objects_v2": "oss:ListObjects",
    "get_bucket_info": "oss:GetBucketInfo", "put_bucket": "oss:PutBucket", "delete_object": "oss:DeleteObject",
    "is_bucket_exist": "oss:GetBucketAcl",
}


def _camel(method: str) -> str:
    method = re.sub(r"(_with_options)?(_async)?$", "", method)
    return "".join(part.capitalize() for part in method.split("_"))


def called_actions() -> set[str]:
    from alibabacloud_cs20151215.client import Client as CS
    from alibabacloud_nas20170626.client import Client as NAS
    from alibabacloud_oss_v2 import Client as OSS

    clients = {"cs": CS, "nas": NAS, "oss": OSS}
    found: set[str] = set()
    for path in [*REPO.glob("tasks/**/*.py"), *REPO.glob("flows/**/*.py")]:
        for service, method in re.findall(r"\b(cs|nas|oss)\.([a-z_0-9]+)\b", path.read_text()):
            if not callable(getattr(clients[service], method, None)):
                continue  # an attribute of a spec object (nas.vpc_id), not an SDK call
            if service == "oss":
                if method not in OSS_ACTIONS:
                    pytest.fail(f"{path.relative_to(REPO)} calls OSS {method}: map it to its RAM action in "
                                f"OSS_ACTIONS and grant it in docs/ram-policy.md")
                found.add(OSS_ACTIONS[method])
            else:
                found.add(f"{service}:{_camel(method)}")
    return found


def documented_actions() -> set[str]:
    text = (REPO / "docs" / "ram-policy.md").read_text()
    policy = json.loads(re.search(r"```json\n(.*?)\n```", text, re.S).group(1))
    return {a for statement in policy["Statement"] for a in statement["Action"]}


def test_the_documented_policy_matches_the_calls_the_code_makes():
    called, documented = called_actions(), documented_actions()
    assert called - documented == set(), "called but not granted in docs/ram-policy.md"
    assert documented - called == set(), "granted in docs/ram-policy.md but never called (least privilege)"
