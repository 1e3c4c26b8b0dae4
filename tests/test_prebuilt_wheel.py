"""A wheel with prebuilt kernels (tools/prebuild_wheel.py), installed in a fresh virtual environment,
runs `fastnn demo` (fused steps on) without compiling anything.

The prebuild is limited to the demo's warmup recipe in float32 for one CPU target (x86-64-v3 where
this CPU runs it), to keep the test near 3 minutes; the release build compiles every recipe in both
dtypes for x86-64-v3 and generic."""

import os
import platform
import subprocess
import sys

import pytest

from fastnn import _shipped_cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTICE = "compiling fastnn's kernels for this CPU, once"
DEMO = (
    "import fastnn.cli, fastnn._compiling as c; fastnn.cli.main(['demo', '--epochs', '1', '--verbose', '0']); "
    "print('COMPILES', c.compiles(), c.compiled())"
)


def _check(command, **kwargs):
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900, **kwargs)
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64") or sys.platform == "win32",
    reason="the prebuilt targets are x86-64 ones; the venv layout is POSIX",
)
def test_wheel_with_prebuilt_kernels_runs_the_demo_without_compiling(tmp_path):
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NUMBA_CACHE_DIR", "FASTNN_CACHE_DIR")}
    _check(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            ROOT,
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
        ],
        env=clean,
    )
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    targets = [magic[1] for magic in _shipped_cache._fallback_targets("x86_64")]
    _check(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "prebuild_wheel.py"),
            str(wheel),
            "--targets",
            targets[0],
            "--dtype",
            "float32",
            "--only",
            "fastnn demo",
            "--quiet",
            "--out",
            str(tmp_path / "prebuilt"),
        ],
        env=clean,
    )
    (prebuilt,) = (tmp_path / "prebuilt").glob("*.whl")
    venv = tmp_path / "venv"
    _check([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], env=clean)
    python = str(venv / "bin" / "python")
    _check([python, "-m", "pip", "install", "--no-deps", "-q", str(prebuilt)], env=clean)
    run_env = dict(
        clean,
        NUMBA_CACHE_DIR=str(tmp_path / "user-numba"),
        FASTNN_CACHE_DIR=str(tmp_path / "user-fastnn"),
        FASTNN_FUSE="always",
    )
    for threads in ("2", "3"):  # the thread count is not part of the cache
        proc = _check([python, "-c", DEMO], env=dict(run_env, NUMBA_NUM_THREADS=threads), cwd=str(tmp_path))
        assert "test accuracy" in proc.stdout and "COMPILES 0 []" in proc.stdout, proc.stdout + proc.stderr
        assert NOTICE not in proc.stderr
    installed = _check([python, "-c", "import fastnn; print(fastnn.__file__)"], env=run_env, cwd=str(tmp_path))
    assert str(venv) in installed.stdout
