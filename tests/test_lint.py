"""ruff's lint rules and formatting ([tool.ruff] in pyproject.toml) hold for the whole repository;
``pre-commit install`` runs the same checks before each commit (.pre-commit-config.yaml)."""

import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def ruff(*args):
    exe = shutil.which("ruff")
    if exe is None:
        pytest.skip("ruff is not installed (it is in the test extra)")
    return subprocess.run([exe, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_check():
    out = ruff("check", "--no-cache", ".")
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr


def test_ruff_format():
    out = ruff("format", "--check", "--no-cache", ".")
    assert out.returncode == 0, f"run `ruff format .` (files below would change)\n{out.stdout[-6000:]}{out.stderr}"


def test_kernel_modules_export_their_device_api():
    """Every kernel a module offers the layers (DEVICE_API) is in its __all__."""
    import importlib
    import pkgutil

    import fastnn.kernels

    for info in pkgutil.iter_modules(fastnn.kernels.__path__):
        if info.ispkg or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"fastnn.kernels.{info.name}")
        api = set(getattr(module, "DEVICE_API", ()))
        if api:
            assert api <= set(getattr(module, "__all__", ())), f"{info.name}: {sorted(api - set(module.__all__))}"
