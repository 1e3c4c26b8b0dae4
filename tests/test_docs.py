"""The documentation site (docs/): it builds with warnings as errors, every public name has a
numpydoc docstring, and the getting-started page gives the README's two commands.

Build it yourself with ``python -m sphinx -W --keep-going -b html docs docs/_build/html``.
"""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docs"))

import apidoc  # noqa: E402

from tests.test_readme import readme_commands  # noqa: E402


def test_every_public_name_has_a_numpydoc_docstring():
    """Every name the API reference lists (and each method and property it documents) has a
    docstring with Parameters for what it takes and Returns for what it gives back."""
    pytest.importorskip("numpydoc")
    problems = apidoc.docstring_problems()
    assert not problems, "docstrings to complete (numpydoc sections):\n" + "\n".join(problems)


def test_the_check_catches_an_undocumented_name_and_a_missing_section(monkeypatch):
    pytest.importorskip("numpydoc")
    import fastnn.io

    def undocumented(path):
        return path

    def no_returns(path):
        """Open nothing.

        Parameters
        ----------
        path : str
            A path.
        """
        return path

    for function in (undocumented, no_returns):
        function.__module__, function.__qualname__ = "fastnn.io", function.__name__
        monkeypatch.setattr(fastnn.io, function.__name__, function, raising=False)
    monkeypatch.setattr(fastnn.io, "__all__", [*fastnn.io.__all__, "undocumented", "no_returns"])
    problems = apidoc.docstring_problems(["fastnn.io"])
    assert any(p.startswith("fastnn.io.undocumented: GL08") for p in problems), problems
    assert any(p.startswith("fastnn.io.no_returns: RT01") for p in problems), problems


def test_every_public_module_has_a_page():
    documented = {name for name, _ in apidoc.MODULES}
    modules = {f"fastnn.{p.stem}" for p in (ROOT / "fastnn").glob("*.py") if not p.stem.startswith("_")}
    modules |= {"fastnn", "fastnn.layers"}
    # the command line, the benchmark harness and the checkpoint format are not a Python API; nor are
    # fit's machinery (streamed batches, accumulation, freezing: documented on Sequential.fit/freeze)
    # and the warmup command
    assert modules - documented == {
        "fastnn.cli",
        "fastnn.bench",
        "fastnn.serialization",
        "fastnn.model",
        "fastnn.training",
        "fastnn.streaming",
        "fastnn.accumulation",
        "fastnn.freezing",
        "fastnn.warmup",
    }


def test_getting_started_gives_the_readme_commands():
    page = (ROOT / "docs" / "getting_started.md").read_text()
    for command in readme_commands():
        assert command in page


def test_docs_build_without_warnings(tmp_path):
    """The whole site, from a fresh environment, warnings as errors (notebooks are rendered from
    their stored outputs, not executed: tests/test_notebooks.py runs them)."""
    for module in ("sphinx", "numpydoc", "myst_nb", "pydata_sphinx_theme"):
        pytest.importorskip(module)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("FASTNN_DOCS_INTERSPHINX", None)  # no network in CI
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-E",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            "docs",
            str(tmp_path / "html"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-6000:]
    assert (tmp_path / "html" / "api" / "generated" / "fastnn.layers.Dense.html").exists()
    assert (tmp_path / "html" / "notebooks" / "15_cnn_vs_mlp.html").exists()
