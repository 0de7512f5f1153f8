"""The dependency rule: producer -> crawlq <- workers; crawlq imports neither; only crawlq_cli sees both;
crawlq_api (the HTTP API) sees producer and crawlq, never workers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "crawlq": {"producer", "workers", "crawlq_cli", "crawlq_api"},
    "producer": {"workers", "crawlq_cli", "crawlq_api"},
    "workers": {"producer", "crawlq_cli", "crawlq_api"},
    "crawlq_api": {"workers", "crawlq_cli"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_respect_layers(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    violations = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        for name in sorted(imported_packages(path) & FORBIDDEN[package])
    ]
    assert violations == []


def test_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import workers.main\nfrom producer.submit import submit\n")
    assert imported_packages(bad) == {"workers", "producer"}
