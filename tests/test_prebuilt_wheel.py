"""A wheel with prebuilt kernels (tools/prebuild_wheel.py), installed in a fresh virtual environment,
runs `fastnn demo` (fused steps on) without compiling anything: installed read-only (copies of the
prebuilt files are never needed), at another path, with another thread count than the build's, with
a user-set NUMBA_CACHE_DIR; under another Numba version it compiles once and says why.

One wheel build serves every case (the build is nearly all of the test's time). It is limited to the
demo's warmup recipe in float32 for this CPU (``--targets host``), and starts from the kernels the
suite's other tests compiled into the checkout's cache (``--seed``), so it compiles little more than
the fused steps; the release build compiles every recipe in both dtypes for x86-64-v3 and generic
(the fallback to an x86-64-v3 file: tests/test_startup.py)."""

import os
import stat
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTICE = "compiling fastnn's kernels for this CPU, once"
DEMO = (
    "import fastnn.cli, fastnn._compiling as c; fastnn.cli.main(['demo', '--epochs', '1', '--verbose', '0']); "
    "print('COMPILES', c.compiles(), c.compiled())"
)
# one small kernel the demo uses (its initialiser), under the Numba version named by argv[1] if any
INIT = (
    "import sys, numba\n"
    "if len(sys.argv) > 1: numba.__version__ = sys.argv[1]\n"
    "import numpy as np, fastnn, fastnn._compiling as c\n"
    "from fastnn.kernels.checks import all_finite\n"
    "print('SUM', all_finite(np.ones((4, 25), np.float32)), 'COMPILES', c.compiles())"
)
# root writes into read-only folders: for root, the run refuses writes under the package itself, as
# the operating system does for any other user
AS_ROOT = (
    "import os, tempfile\n"
    "package = os.environ['READ_ONLY_PACKAGE']\n"
    "def refusing(write):\n"
    "    def call(*args, **kwargs):\n"
    "        path = os.path.abspath(kwargs.get('dir') or (args[0] if args else '.'))\n"
    "        if path.startswith(package):\n"
    "            raise PermissionError(13, 'Permission denied', path)\n"
    "        return write(*args, **kwargs)\n"
    "    return call\n"
    "os.makedirs, os.mkdir = refusing(os.makedirs), refusing(os.mkdir)\n"
    "tempfile.TemporaryFile = refusing(tempfile.TemporaryFile)\n"
)


def _check(command, **kwargs):
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900, **kwargs)
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _read_only(folder) -> None:
    for path, _, names in os.walk(folder):
        for entry in [path, *(os.path.join(path, name) for name in names)]:
            os.chmod(entry, os.stat(entry).st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _writable(folder) -> None:
    for path, _, names in os.walk(folder):
        for entry in [path, *(os.path.join(path, name) for name in names)]:
            os.chmod(entry, os.stat(entry).st_mode | stat.S_IWUSR)


@pytest.mark.skipif(sys.platform == "win32", reason="the venv layout and file modes are POSIX ones")
def test_wheel_with_prebuilt_kernels_runs_the_demo_without_compiling(tmp_path):
    base = str(tmp_path)
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "NUMBA_CACHE_DIR", "FASTNN_CACHE_DIR", "NUMBA_NUM_THREADS", "XDG_CACHE_HOME")
    }
    dist, prebuilt_dir, venv = (os.path.join(base, name) for name in ("dist", "prebuilt", "venv"))
    _check(
        [sys.executable, "-m", "pip", "wheel", ROOT, "--no-deps", "--no-build-isolation", "-q", "-w", dist], env=clean
    )
    (wheel,) = [os.path.join(dist, name) for name in os.listdir(dist) if name.endswith(".whl")]
    prebuild = [sys.executable, os.path.join(ROOT, "tools", "prebuild_wheel.py"), wheel, "--targets", "host"]
    prebuild += ["--dtype", "float32", "--only", "fastnn demo", "--quiet", "--out", prebuilt_dir]
    seed = os.path.join(ROOT, "fastnn", "kernels", "__pycache__")  # what the suite's other tests compiled
    prebuild += ["--seed", seed] if os.path.isdir(seed) else []
    _check(prebuild, env=dict(clean, NUMBA_NUM_THREADS="2"))  # built with 2 threads, run with 3 below
    (prebuilt,) = [os.path.join(prebuilt_dir, name) for name in os.listdir(prebuilt_dir) if name.endswith(".whl")]
    # a venv without its own pip (seconds saved); this interpreter's pip installs into it
    _check([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", venv], env=clean)
    python = os.path.join(venv, "bin", "python")
    _check([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", prebuilt], env=clean)
    installed = _check([python, "-c", "import fastnn; print(fastnn.__file__)"], env=clean, cwd=base).stdout.strip()
    package = os.path.dirname(installed)
    assert installed.startswith(venv), installed

    # read-only install, no NUMBA_CACHE_DIR (the user-wide cache folder), 3 threads: nothing compiles
    home = os.path.join(base, "home")
    os.makedirs(home)
    _read_only(package)
    try:
        read_only = dict(clean, HOME=home, NUMBA_NUM_THREADS="3", FASTNN_FUSE="always", READ_ONLY_PACKAGE=package)
        code = (AS_ROOT if os.geteuid() == 0 else "") + DEMO
        proc = _check([python, "-c", code], env=dict(read_only, PYTHONDONTWRITEBYTECODE="1"), cwd=home)
        assert "test accuracy" in proc.stdout and "COMPILES 0 []" in proc.stdout, proc.stdout + proc.stderr
        assert NOTICE not in proc.stderr
        written = [os.path.join(folder, name) for folder, _, names in os.walk(package) for name in names]
        # the prebuilt files are read in place: no Numba cache files beside the sources
        assert not [path for path in written if "_prebuilt" not in path and path.endswith((".nbi", ".nbc"))]

        # a user-set NUMBA_CACHE_DIR: the prebuilt kernels still serve
        user_cache = dict(clean, NUMBA_CACHE_DIR=os.path.join(base, "numba"), FASTNN_CACHE_DIR=home)
        proc = _check([python, "-c", INIT], env=user_cache, cwd=base)
        assert "SUM True COMPILES 0" in proc.stdout and NOTICE not in proc.stderr, proc.stdout + proc.stderr

        # another Numba version: compiles once, saying why; the next run finds its own cache
        proc = _check([python, "-c", INIT, "0.0.1"], env=user_cache, cwd=base)
        assert "SUM True COMPILES 0" not in proc.stdout and "SUM True COMPILES" in proc.stdout, proc.stdout
        assert proc.stderr.count(NOTICE) == 1 and "prebuilt in this wheel are for Numba" in proc.stderr, proc.stderr
        proc = _check([python, "-c", INIT, "0.0.1"], env=user_cache, cwd=base)
        assert "SUM True COMPILES 0" in proc.stdout and NOTICE not in proc.stderr, proc.stdout + proc.stderr
    finally:
        _writable(package)
