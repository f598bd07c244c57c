"""The repository stands alone: code and docs cite public sources, never notes it does not hold."""

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# A reference to a notes file outside the repository (e.g. "research/<name>.md §2"), which a reader cannot follow.
OUTSIDE_NOTE = re.compile(r"\bresearch/[\w-]+\.md|\b(alibaba|anchors|prefect|k8s-emulation)\.md\b|/work/shared/")


def test_no_reference_points_outside_the_repository() -> None:
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    offenders = []
    for name in files:
        path = REPO / name
        if path.suffix not in {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".json", ""} or path == Path(__file__):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        offenders += [f"{name}:{n}" for n, line in enumerate(text.splitlines(), 1) if OUTSIDE_NOTE.search(line)]
    assert not offenders, "cite a public URL instead of a note the repository does not hold: " + ", ".join(offenders)
