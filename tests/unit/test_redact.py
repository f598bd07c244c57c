"""The one scrubber: every secret value in every form a workload or a library prints."""

import base64
import json
import subprocess
from urllib.parse import quote, quote_plus

from tasks.render.manifests import redact
from tasks.render.redact import REDACTED, Scrubber

PEM = ("-----BEGIN PRIVATE KEY-----\n"
       "MIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEAu1SU1LfVLPHCozMx\n"
       "H2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTK\n"
       "-----END PRIVATE KEY-----\n")
TOKEN = "tok-3f9a1c7e5b\n"


def leaks(text, values=(PEM, TOKEN)):
    """Which lines/forms of the values are still in text (empty: clean)."""
    found = []
    for v in values:
        for ln in v.splitlines():
            if len(ln.strip()) >= 8 and ln.strip() in text:
                found.append(ln)
    return found


def test_each_line_of_a_multiline_value_is_scrubbed_alone():
    s = Scrubber([PEM, TOKEN])
    for ln in PEM.splitlines():
        out = s(f"debug: {ln} (printed alone)")
        assert not leaks(out), out
    assert not leaks(s("debug: key.pem = " + PEM))


def test_base64_with_and_without_trailing_newline_and_wrapped():
    s = Scrubber([PEM, TOKEN])
    for value in (PEM, PEM.rstrip("\n"), TOKEN, TOKEN.strip()):
        encoded = base64.b64encode(value.encode()).decode()
        assert encoded not in s(f"b64: {encoded}")
    # GNU base64 wraps at 76 columns: every wrapped line is blanked
    wrapped = subprocess.run(["base64"], input=PEM.encode(), capture_output=True, check=True).stdout.decode()
    out = s(wrapped)
    for ln in wrapped.splitlines():
        if len(ln) == 76:
            assert ln not in out


def test_json_escaped_and_url_encoded():
    s = Scrubber([PEM, TOKEN])
    for value in (PEM, TOKEN):
        for form in (json.dumps(value), json.dumps({"k": value}), quote(value, safe=""), quote_plus(value)):
            out = s(form)
            assert value.strip() not in out and json.dumps(value)[1:-1] not in out, out
    assert quote(PEM, safe="") not in s("url=" + quote(PEM, safe=""))


def test_short_values_and_short_lines_are_left_alone():
    s = Scrubber(["abc", "line one is long\nab\n"])
    assert s("abc ab") == "abc ab"
    assert s("line one is long") == REDACTED


def test_safe_cut_never_splits_an_occurrence():
    s = Scrubber(["supersecretvalue"])
    text = "xxxxsupersecretvaluexxxx"
    for cut in range(len(text) + 1):
        pos = s.safe_cut(text, cut)
        assert pos <= cut
        assert REDACTED in s(text[:pos]) + s(text[pos:])


def test_manifest_redaction_uses_the_same_forms():
    doc = {"kind": "ConfigMap", "data": {"note": "key line " + PEM.splitlines()[1]}}
    assert PEM.splitlines()[1] not in json.dumps(redact(doc, secrets=[PEM]))
