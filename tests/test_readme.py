"""The README keeps its promises: every setting is documented, and the Python API example runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from crawlq.settings import Settings
from crawlq_api.settings import ApiSettings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_table() -> None:
    documented = set(re.findall(r"`(CRAWLQ_[A-Z_]+)`", README))
    expected = {f"CRAWLQ_{name.upper()}" for name in Settings.model_fields}
    expected |= {f"CRAWLQ_API_{name.upper()}" for name in ApiSettings.model_fields}
    assert expected - documented == set()
    assert {name for name in documented if name.startswith("CRAWLQ_")} - expected <= {"CRAWLQ_WORKERS"}


@pytest.mark.timeout(90)
def test_python_api_example_runs(tmp_path: Path) -> None:
    example = re.search(r"## Python API\n\n```python\n(.*?)```", README, re.S)
    assert example is not None
    script = tmp_path / "example.py"
    script.write_text(example.group(1))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=80, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "20/20 ok" in done.stdout
