"""Optional: the float32 CUDA kernels compile to PTX for a real GPU (cc 7.5) with no float64 instructions.

The simulator runs kernels as Python, so it cannot catch what only the CUDA compiler rejects
(NumPy ufuncs without a CUDA lowering, float64 creeping into float32 code, runtime-sized shared
arrays). This compiles the kernels in a separate process without the simulator and with no GPU
or driver (which also proves that importing fastnn.kernels.cuda needs neither). The `cuda` extra
installs the toolchain (numba-cuda[cu12]: the nvrtc / nvvm wheels); without it the check skips,
except under CI (CI=true), where a skip is a failure. The kernels compiled are the probe's table,
and the probe fails when a kernel of fastnn.kernels.cuda is missing from it.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROBE = pathlib.Path(__file__).with_name("_ptx_probe.py")

#: kernels whose float64 is deliberate -> why: compiled, not checked for .f64
F64_ALLOWED = {
    "losses.cross_entropy_rows": "accumulates the loss in float64, as the CPU",
    "losses.elementwise_elements": "accumulates the loss in float64, as the CPU",
    "losses.cross_entropy_rows_masked": "accumulates the loss in float64, as the CPU",
    "losses.elementwise_elements_masked": "accumulates the loss in float64, as the CPU",
    "optim.sum_squares": "accumulates the gradient norm in float64, as the CPU",
    "common.finish_sum": "the second stage of those float64 reductions",
    "common.finish_sums": "the second stages of a step's float64 reductions in one launch (StepScalars)",
    "losses.accuracy_rows": "counts matching rows in float64 (exact below 2**53) for finish_sum",
    "rng.fill_normal": "libdevice's own sin/cos argument reduction",
    "batchnorm.merge_moments": "rounds the count ratios 1/m and m/(m-1) from float64 as the CPU (bit parity) "
    "and rescues overflowed columns with frexp/ldexp",
}

#: kernel name -> why it cannot compile for a GPU (or is float64) yet: expected failures, strict (the
#: test fails once the kernel passes, to shrink the list). Empty: every kernel compiles and is clean.
EXPECTED_FAILURES: dict[str, str] = {}


@pytest.fixture(scope="module")
def ptx_results():
    env = dict(
        os.environ,
        NUMBA_ENABLE_CUDASIM="0",
        PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
    )
    proc = subprocess.run(
        [sys.executable, str(PROBE)], check=False, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT
    )
    assert proc.returncode == 0, (
        f"PTX probe crashed (importing fastnn.kernels.cuda without a GPU?):\n{proc.stderr[-3000:]}"
    )
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in results:
        reason = f"no NVVM toolchain to compile PTX: {results['skip']}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason}; CI installs it with the `cuda` extra (numba-cuda[cu12]): this check must run there")
        pytest.skip(reason)
    return results


def test_probe_covers_every_cuda_kernel(ptx_results):
    assert ptx_results["uncovered"] == [], "add these kernels (float32 signatures as launched) to _ptx_probe.py"


def test_float32_kernels_compile_to_ptx_without_float64(ptx_results):
    """Every kernel the probe compiled (its table covers them all: the test above) gives PTX, with
    no float64 instruction unless F64_ALLOWED says why; EXPECTED_FAILURES is strict."""
    outcomes = {name: outcome for name, outcome in ptx_results.items() if name != "uncovered"}
    assert set(F64_ALLOWED) <= set(outcomes), "F64_ALLOWED names a kernel the probe does not compile"
    failed = {}
    for name, outcome in sorted(outcomes.items()):
        expected = "ok" if name not in F64_ALLOWED else outcome
        ok = not outcome.startswith("error") and outcome == expected
        if ok == (name in EXPECTED_FAILURES):
            failed[name] = outcome if not ok else f"passes now: remove it from EXPECTED_FAILURES ({outcome})"
    assert not failed, "\n".join(f"{name}: {why}" for name, why in failed.items())
    assert len(outcomes) >= 60, f"the probe compiled only {len(outcomes)} kernels"
