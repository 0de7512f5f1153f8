"""The dependency rule: producer -> crawlq <- workers; crawlq imports neither; only crawlq_cli sees both;
crawlq_api (the HTTP API) sees producer and crawlq, never workers. crawlq_local (the local harness: target site,
embedded server, local cluster) sees crawlq and producer, starts workers as processes, and nothing in the crawler
imports it. `workers/__main__.py` is the one exception: `python -m workers` is an alias of `crawlq worker`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "crawlq": {"producer", "workers", "crawlq_cli", "crawlq_api", "crawlq_local"},
    "producer": {"workers", "crawlq_cli", "crawlq_api", "crawlq_local"},
    "workers": {"producer", "crawlq_cli", "crawlq_api", "crawlq_local"},
    "crawlq_api": {"workers", "crawlq_cli", "crawlq_local"},
    "crawlq_local": {"workers", "crawlq_cli", "crawlq_api"},
}
#: command aliases, never imported: `python -m workers` runs the click command `crawlq worker`
ALIASES = {ROOT / "workers" / "__main__.py"}


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
    files = sorted(path for path in (ROOT / package).rglob("*.py") if path not in ALIASES)
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
