"""Optional: the float32 CUDA kernels compile to PTX for a real GPU (cc 7.5) with no float64 instructions.

The simulator runs kernels as Python, so it cannot catch what only the CUDA compiler rejects
(NumPy ufuncs without a CUDA lowering, float64 creeping into float32 code, runtime-sized shared
arrays). This compiles the kernels in a separate process without the simulator and with no GPU
or driver (which also proves that importing fastnn.kernels.cuda needs neither). Skipped when the
NVVM toolchain (numba-cuda's cu12 extra: nvidia-nvvm / nvrtc wheels) is not installed.
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
    "losses.elementwise_rows": "accumulates the loss in float64, as the CPU",
    "optim.sum_squares": "accumulates the gradient norm in float64, as the CPU",
    "common.finish_sum": "the second stage of those float64 reductions",
    "losses.accuracy_rows": "counts matching rows in float64 (exact below 2**53) for finish_sum",
    "rng.fill_normal": "libdevice's own sin/cos argument reduction",
    "batchnorm.merge_moments": "rounds the count ratios 1/m and m/(m-1) from float64 as the CPU (bit parity) "
    "and rescues overflowed columns with frexp/ldexp",
}

#: kernel name -> why it cannot compile for a GPU (or is float64) yet: expected failures, strict (the
#: test fails once the kernel passes, to shrink the list). Empty: every kernel compiles and is clean.
EXPECTED_FAILURES: dict[str, str] = {}

KERNELS = [
    "activations.forward_elementwise",
    "activations.backward_elementwise",
    "activations.forward_rows",
    "activations.backward_rows",
    "dense.gemm",
    "dense.bias_activate",
    "dense.grad_z_partials",
    "dropout.forward",
    "dropout.backward",
    "optim.sgd",
    "optim.rmsprop",
    "optim.adagrad",
    "optim.adam",
    "optim.lion",
    "optim.clip",
    "batchnorm.chunk_moments",
    "batchnorm.chunk_sums2",
    "batchnorm.merge_moments",
    "batchnorm.normalize",
    "batchnorm.eval",
    "batchnorm.grad_x",
    "batchnorm.eval_hat",
    "batchnorm.eval_grad_x",
    "layernorm.forward",
    "layernorm.backward_rows",
    "rng.fill_uniform",
    "rng.fill_normal",
    "losses.cross_entropy_rows",
    "losses.elementwise_rows",
    "optim.sum_squares",
    "recurrent.forward_step",
    "recurrent.backward_step",
    "recurrent.broadcast_rows",
    "recurrent.swap",
    "common.combine_rows",
    "common.finish_sum",
    "elementwise.add",
    "conv.forward",
    "conv.grad_b",
    "conv.grad_w",
    "conv.grad_x",
    "pooling.forward_max",
    "pooling.forward_avg",
    "pooling.backward_max",
    "pooling.backward_avg",
    "pooling.global",
    "embedding.forward",
    "embedding.backward",
    "layout.transpose",
    "masking.from_values",
    "masking.from_indices",
    "sequence.samples",
    "attention.add_bias",
    "attention.scores",
    "attention.mix",
    "attention.softmax_rows",
    "attention.softmax_grad_rows",
    "attention.mask_rows",
    "attention.add_table",
    "rng.permutation",
    "losses.accuracy_rows",
]


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
        pytest.skip(f"no NVVM toolchain to compile PTX: {results['skip']}")
    return results


def test_probe_covers_every_cuda_kernel(ptx_results):
    assert ptx_results["uncovered"] == [], "add these kernels (float32 signatures as launched) to _ptx_probe.py"


@pytest.mark.parametrize("name", KERNELS)
def test_float32_kernel_compiles_to_ptx_without_float64(name, ptx_results, request):
    assert set(ptx_results) - {"uncovered"} == set(KERNELS), "the probe's kernel list and this test's must agree"
    if name in EXPECTED_FAILURES:
        request.applymarker(pytest.mark.xfail(reason=EXPECTED_FAILURES[name], strict=True))
    outcome = ptx_results[name]
    assert not outcome.startswith("error"), f"{name}: {outcome}"
    if name not in F64_ALLOWED:
        assert outcome == "ok", f"{name}: float64 instructions in a float32 kernel"
