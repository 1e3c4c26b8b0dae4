"""Start-up: lazy imports, the first-compile notice, a cache that ignores the thread count, warmup."""

import json
import os
import platform
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTICE = "compiling fastnn's kernels for this CPU, once"

# embedding_backward reads the GEMM tiling (kernels/tiling.py) and compiles in seconds
EMBEDDING_STEP = """
import json, numpy as np
import fastnn
from fastnn import _compiling
from fastnn.kernels.embedding import embedding_backward
from numba import njit
from fastnn.kernels.tiling import gemm_tiles
grad = np.zeros((300, 4), np.float32)
embedding_backward(np.arange(20000) % 300, np.ones((20000, 4), np.float32), grad, -1)
compiled = _compiling.compiles()
print(json.dumps({"compiles": compiled, "sum": float(grad.sum()), "tiles": njit(lambda: gemm_tiles())()}))
"""


def _run(code, tmp_path, **env):
    environment = dict(
        os.environ,
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        NUMBA_CACHE_DIR=str(tmp_path / "numba"),
        FASTNN_CACHE_DIR=str(tmp_path / "fastnn"),
        **env,
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_import_fastnn_leaves_optional_and_heavy_modules_unimported(tmp_path):
    heavy = ["matplotlib", "tensorboardX", "torch", "sklearn", "numba.cuda", "scipy.linalg", "pandas"]
    out, _ = _run(f"import json, sys, fastnn; print(json.dumps([m for m in {heavy!r} if m in sys.modules]))", tmp_path)
    assert out == []


def test_first_compile_says_so_once_and_a_warm_start_stays_silent_whatever_the_thread_count(tmp_path):
    cold, cold_err = _run(EMBEDDING_STEP, tmp_path, NUMBA_NUM_THREADS="2")
    assert cold["compiles"] > 0 and cold["sum"] == 80000.0
    assert cold_err.count(NOTICE) == 1, cold_err
    assert re.search(r"for this CPU, once, about \d+ s \(cached for the next runs", cold_err), cold_err
    # another thread count (another GEMM tiling) loads the same cache: nothing compiles, nothing is said
    warm, warm_err = _run(EMBEDDING_STEP, tmp_path, NUMBA_NUM_THREADS="3")
    assert warm == {"compiles": 0, "sum": 80000.0, "tiles": 3}
    assert NOTICE not in warm_err


def test_warmup_compiles_into_the_cache_then_finds_everything_there():
    command = [sys.executable, "-m", "fastnn.warmup", "--dtype", "float32", "--only", "classifier heads", "-q"]
    environment = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for jobs in ("2", "1"):  # worker processes, then in-process: the second finds the first's cache
        proc = subprocess.run(
            [*command, "--jobs", jobs], env=environment, capture_output=True, text=True, cwd=ROOT, timeout=600
        )
        assert proc.returncode == 0, proc.stderr
        assert "fastnn warmup:" in proc.stdout and "recompiled" not in proc.stdout, proc.stdout
    assert "fastnn warmup: 0 functions compiled" in proc.stdout, proc.stdout


def test_warmup_refuses_an_unknown_recipe():
    from fastnn import warmup

    with pytest.raises(ValueError, match="no warmup recipe's name contains 'nope'"):
        warmup.warmup(only="nope", progress=False)


def test_shipped_kernels_of_another_numba_version_are_named_as_the_reason_to_compile(tmp_path, monkeypatch):
    from fastnn import _shipped_cache

    monkeypatch.setattr(_shipped_cache, "PREBUILT", str(tmp_path))
    assert _shipped_cache.mismatch() is None  # no wheel build: nothing to explain
    (tmp_path / "build.json").write_text(json.dumps({"numba": "0.1.0", "python": "3.11"}))
    assert "prebuilt in this wheel are for Numba 0.1.0" in _shipped_cache.mismatch()


def test_first_compile_notice_estimates_seconds_from_the_kernels_still_to_compile(monkeypatch):
    from fastnn import _compiling, _shipped_cache

    assert _compiling.estimate_seconds(0, 0.6) == 1  # the one compiling now, at least 1 s
    assert _compiling.estimate_seconds(10, 0.5) == 5
    assert _compiling.estimate_seconds(10_000, 0.5) == _compiling.TYPICAL_FUNCTIONS // 2  # a model uses a share
    assert _compiling.notice(7).startswith(f"fastnn: {NOTICE}, about 7 s (cached for the next runs;")
    assert _compiling.notice(7, "another Numba").endswith("; another Numba")
    monkeypatch.setattr(_shipped_cache, "cached", lambda kernel: False)
    pending = _compiling.pending_functions()
    assert pending > 0
    monkeypatch.setattr(_shipped_cache, "cached", lambda kernel: True)
    assert _compiling.pending_functions() == 0


def test_the_first_compile_notice_counts_no_inlined_helper_and_names_a_fused_step(monkeypatch):
    from numba.core.registry import CPUDispatcher

    from fastnn import _compiling, _shipped_cache

    monkeypatch.setattr(_shipped_cache, "cached", lambda kernel: False)
    kernels = {
        id(v): v
        for name, module in list(sys.modules.items())
        if name.startswith("fastnn.kernels.") and module is not None
        for v in vars(module).values()
        if isinstance(v, CPUDispatcher) and not v.overloads
    }
    inlined = sum(1 for k in kernels.values() if k.targetoptions.get("inline") == "always")
    assert inlined > 0  # helpers compiled into their callers only: never a compile of their own
    assert _compiling.pending_functions() == len(kernels) - inlined

    # a process whose kernels all came from the cache compiles only a model's fused step: it says so
    line = _compiling.first_notice(f"{_compiling.FUSED_STEP_PREFIX}0f3a")
    assert line == _compiling.fused_step_notice()
    assert "fused step" in line and "about 3 s" in line
    assert _compiling.first_notice("fastnn.kernels.dense").startswith(f"fastnn: {NOTICE}, about ")


FILL = (
    "import sys, numpy as np, fastnn, fastnn._compiling as c, fastnn._shipped_cache as s\n"
    "if len(sys.argv) > 1: s.PREBUILT = sys.argv[1]\n"
    "from fastnn.kernels.rng import fill_uniform\n"
    "x = np.ones(100, np.float32)\n"
    "fill_uniform(x, 0, 0, 0, 2.0, 3.0)\n"
    "print('SUM', x.sum() >= 200, 'COMPILES', c.compiles())"
)


def test_a_kernel_shipped_for_x86_64_v3_serves_this_cpu_without_compiling(tmp_path):
    from fastnn import _shipped_cache

    targets = [
        magic[1] for magic in _shipped_cache._fallback_targets(platform.machine().lower().replace("amd64", "x86_64"))
    ]
    if "x86-64-v3" not in targets:
        pytest.skip("this CPU cannot run x86-64-v3 code")
    built, shipped = tmp_path / "built", tmp_path / "prebuilt"
    environment = dict(os.environ, PYTHONPATH=ROOT, FASTNN_CACHE_DIR=str(tmp_path / "fastnn"))
    build = dict(environment, NUMBA_CACHE_DIR=str(built), NUMBA_CPU_NAME="x86-64-v3", NUMBA_CPU_FEATURES="")
    proc = subprocess.run([sys.executable, "-c", FILL], env=build, capture_output=True, text=True, timeout=600)
    assert "SUM True COMPILES" in proc.stdout and "COMPILES 0" not in proc.stdout, proc.stdout + proc.stderr
    (shipped / _shipped_cache.KERNELS).mkdir(parents=True)
    for path in built.rglob("*.nb[ic]"):  # the wheel's layout: fastnn/_prebuilt/kernels/<files>
        (shipped / _shipped_cache.KERNELS / path.name).write_bytes(path.read_bytes())
    user = dict(environment, NUMBA_CACHE_DIR=str(tmp_path / "user"))  # empty: only the shipped files can serve
    proc = subprocess.run(
        [sys.executable, "-c", FILL, str(shipped)], env=user, capture_output=True, text=True, timeout=600
    )
    assert "SUM True COMPILES 0" in proc.stdout, proc.stdout + proc.stderr
    assert NOTICE not in proc.stderr


PARALLEL_CALLEE = """
import numpy as np
from numba import njit, prange

@njit(parallel=True, cache=True)
def inner(x):
    for i in prange(x.shape[0]):
        x[i] += 1.0

@njit(cache=True)
def outer(x):
    inner(x)
    return x.sum()
"""


def test_a_kernel_compiled_over_a_cached_parallel_callee_loads_first_in_a_fresh_process(tmp_path):
    """Numba 0.68 leaves "start the threading layer" out of the cache entry of a function compiled
    while its parallel callee came from the cache; loaded first in a fresh process it jumped to
    address 0 (the BatchNorm notebook's first kernel did, from a cache filled in another order).
    Importing fastnn starts the layer, so the entry loads and runs whatever order filled the cache."""
    (tmp_path / "callee_mod.py").write_text(PARALLEL_CALLEE)
    fill = "import sys, numpy as np; sys.path.insert(0, {!r}); import callee_mod; ".format(str(tmp_path))
    _run(fill + "callee_mod.inner(np.zeros(8)); print('{}')", tmp_path)  # the callee, cached alone
    # the caller compiles while its callee loads from the cache
    _run(fill + "callee_mod.inner(np.zeros(8)); print(callee_mod.outer(np.zeros(8)))", tmp_path)
    out, _ = _run(fill + "import fastnn; print(callee_mod.outer(np.zeros(100)))", tmp_path)
    assert out == 100.0
