"""mypy passes over fastnn/ ([tool.mypy] in pyproject.toml says the strictness and what is
excluded, with the reasons); fastnn ships py.typed so type checkers read its annotations."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_py_typed_is_shipped():
    assert (ROOT / "fastnn" / "py.typed").exists()
    assert '"py.typed"' in (ROOT / "pyproject.toml").read_text()


def test_mypy_passes():
    pytest.importorskip("mypy")
    out = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr
