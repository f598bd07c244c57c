"""The Kubernetes work pool's pieces that need no cluster: where the image keeps the code, and what it holds."""

import ast
import re
from pathlib import Path

import pytest
import yaml

from deployments.k8s_pool import IMAGE_DIRECTORY, IMAGE_DIRECTORY_ENV, image_directory

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deployments" / "Dockerfile"


def test_image_directory_is_the_images_workdir_unless_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(IMAGE_DIRECTORY_ENV, raising=False)
    assert image_directory() == {"directory": IMAGE_DIRECTORY}
    workdirs = re.findall(r"^WORKDIR\s+(\S+)", DOCKERFILE.read_text(), flags=re.M)
    assert workdirs[-1] == IMAGE_DIRECTORY  # the pull step and the image agree on where the code is

    monkeypatch.setenv(IMAGE_DIRECTORY_ENV, "/srv/ask-batch")
    assert image_directory() == {"directory": "/srv/ask-batch"}


def test_a_relative_image_directory_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(IMAGE_DIRECTORY_ENV, "app")
    with pytest.raises(ValueError, match=f"{IMAGE_DIRECTORY_ENV}='app' is not an absolute path"):
        image_directory()


def _copied_into_image() -> set[str]:
    """Top-level paths the Dockerfile COPYs into the image (sources of every COPY but the first, requirements)."""
    copied: set[str] = set()
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY "):
            copied |= {Path(src).parts[0] for src in line.split()[1:-1]}
    return copied


def _local_packages_imported_by(*packages: str) -> set[str]:
    local = {p.name for p in REPO.iterdir() if (p / "__init__.py").is_file()}
    found: set[str] = set()
    for package in packages:
        for source in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(source.read_text())):
                if isinstance(node, ast.Import):
                    found |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found.add(node.module.split(".")[0])
    return found & local


def test_the_flow_image_holds_every_package_a_flow_run_imports_and_the_example_files() -> None:
    copied = _copied_into_image()
    needed = _local_packages_imported_by("flows", "tasks") | {"flows", "tasks", "deployments"}
    assert needed <= copied, f"deployments/Dockerfile does not COPY {sorted(needed - copied)}"
    example = yaml.safe_load((REPO / "deployments" / "example.yaml").read_text())
    files = example["config"]["local_paths"] + [item["file"] for item in example["config"]["secret_files"]]
    assert {Path(f).parts[0] for f in files} <= copied, files
    assert "sandbox" not in copied and "tests" not in copied
