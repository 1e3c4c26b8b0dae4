"""The README's two commands: CI must run the test command verbatim."""
import os

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
