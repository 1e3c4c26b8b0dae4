"""Every row of the layer table (tests/layer_cases.py) on "cuda" (the simulator) equals its CPU
twin: outputs, input gradients, parameter gradients and buffers after one forward/backward.

Tiny shapes (batch 3) and float64, so the comparison is tight; random layers (Dropout) are also
compared in training mode, since their masks come from the same counter-based generator.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import fastnn as fnn
from fastnn import backend
from tests.layer_cases import CASES

RTOL, ATOL = 1e-10, 1e-12
BATCH = 3


def _modes(case):
    """The row's mode, and training mode too for random layers (their masks must match)."""
    return [True, False] if not case.deterministic else [case.training]


PARAMS = [
    pytest.param(case, training, id=f"{case.id}-{'train' if training else 'eval'}")
    for case in CASES
    for training in _modes(case)
]


def _pair(case):
    """(cpu model, its copy on "cuda"): random parameters and float buffers."""
    cpu = fnn.Sequential([case.make()], dtype="float64", input_shape=case.shape, seed=0)
    rng = np.random.default_rng(100)
    cpu.params[...] = rng.uniform(-1.0, 1.0, cpu.params.size)
    for buf in cpu.layers[0].buffers().values():
        if buf.dtype.kind == "f":
            buf[...] = rng.uniform(0.5, 1.5, buf.shape)
    return cpu, copy.deepcopy(cpu).to("cuda")


def _state(model):
    state = {name: backend.host_copy(v) for name, v in model.state_arrays().items()}
    state["grads"] = backend.host_copy(model.grads)
    return state


@pytest.mark.parametrize(("case", "training"), PARAMS)
def test_cuda_layer_equals_cpu(case, training):
    cpu, gpu = _pair(case)
    assert gpu.device == "cuda" and not isinstance(gpu.params, np.ndarray)
    rng = np.random.default_rng(1)
    x = case.inputs(rng, BATCH, case.shape, np.float64)
    g = rng.standard_normal((BATCH, *cpu.output_shape))
    results = []
    for model in (cpu, gpu):
        out = model.forward(x, training)
        grad_x = model.backward(g)
        results.append((out, grad_x, _state(model)))
    (out_c, gx_c, state_c), (out_g, gx_g, state_g) = results
    assert isinstance(out_g, np.ndarray) and out_g.dtype == np.float64
    np.testing.assert_allclose(out_g, out_c, rtol=RTOL, atol=ATOL)
    if gx_c is None:  # integer inputs (Embedding) have no gradient
        assert gx_g is None
    else:
        np.testing.assert_allclose(gx_g, gx_c, rtol=RTOL, atol=ATOL)
    assert state_g.keys() == state_c.keys()
    for name in state_c:
        np.testing.assert_allclose(state_g[name], state_c[name], rtol=RTOL, atol=ATOL, err_msg=name)


#: rows whose kernels reduce within a block: GEMM tiles and a lanes_sum (dense), lanes_sum (batch
#: norm's column statistics), block_sum (layer norm's rows, conv's grad_b and grad_w)
GPU_GEOMETRY_ROWS = ("dense", "batchnorm-train", "layernorm", "conv2d")


@pytest.mark.parametrize(("case", "training"), [p for p in PARAMS if p.values[0].id in GPU_GEOMETRY_ROWS])
def test_cuda_layer_equals_cpu_with_gpu_block_sizes(case, training, gpu_geometry):
    """The block reductions with a GPU's 256-thread blocks (the rest of tests_cuda runs smaller ones)."""
    from fastnn.kernels.cuda import _common, dense

    assert (_common.BLOCK, _common.LANES * _common.COLS, dense.TILE**2) == (256, 256, 256)
    test_cuda_layer_equals_cpu(case, training)
