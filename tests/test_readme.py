"""The README: its two commands (CI must run the test command verbatim) and its Python examples."""

import os
import warnings

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_commands():
    text = open(os.path.join(ROOT, "README.md")).read()
    block = text.split("```bash")[1].split("```")[0]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_starts_with_two_commands_and_ci_runs_the_second():
    demo, tests = readme_commands()
    assert "fastnn demo" in demo and "pip install" in demo
    assert "pytest" in tests and "pip install" in tests
    ci = open(os.path.join(ROOT, ".ci", "run")).read().splitlines()
    assert tests in ci


def python_example(heading: str) -> str:
    """The first ```python block after ``heading`` in the README."""
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text.split(f"\n{heading}")[1]
    return section.split("```python")[1].split("```")[0]


@pytest.mark.parametrize(
    "heading", ["## Use", "### Convolutional networks", "### Sequences", "### Training options", "### Large data"]
)
def test_readme_python_examples_run(heading, tmp_path, monkeypatch):
    """The README's examples run as written (the files they save land in a temporary folder)."""
    monkeypatch.chdir(tmp_path)
    exec(compile(python_example(heading), f"README.md {heading}", "exec"), {})


def test_readme_export_example_runs(tmp_path, monkeypatch):
    """The export example needs the optional onnxruntime and torch (skipped without them)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    test_readme_python_examples_run("## Export", tmp_path, monkeypatch)


def test_readme_scikit_learn_example_runs(tmp_path, monkeypatch):
    """The scikit-learn example (cross-validation, a grid search over a builder's parameters)."""
    pytest.importorskip("sklearn")
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # its 10-20 epochs say so, as the README notes
        test_readme_python_examples_run("## With scikit-learn", tmp_path, monkeypatch)
