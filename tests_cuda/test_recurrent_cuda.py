"""CUDA recurrent kernels (kernels/cuda/recurrent.py) against their CPU twins (float64 on the CPU):
every cell, float32 and float64, both directions, with and without sequence lengths, batch 1, one
step, one-row (broadcast) initial states, accumulated and skipped input gradients; every buffer the
forward leaves for the backward is compared too. Also the tiled GEMM's accumulate mode and the
whole recurrent pass on the (fake) cuBLAS path."""

from __future__ import annotations

import numpy as np
import pytest
from numba import cuda

import fastnn as fnn
from fastnn import backend
from fastnn.kernels import recurrent as cpu_rnn
from fastnn.kernels.cuda import dense as gpu_dense
from fastnn.kernels.cuda import recurrent as gpu_rnn

from . import _fake_cupy
from .conftest import SIMULATOR, f64, host, tol

CELLS = list(cpu_rnn.CELLS)


class Variant:
    """One kernel problem: (batch, steps, inputs, hidden), the direction, lengths, the output width
    and column (a bidirectional layer's second half writes columns [hidden, 2 * hidden)), rows of
    the initial state and its gradients (1: broadcast), and the backward's grad_x options."""

    def __init__(
        self, name, shape, reverse=False, lengths=False, column=0, state_rows=None, accumulate_x=False, need_grad_x=True
    ):
        self.name, self.shape, self.reverse, self.lengths = name, shape, reverse, lengths
        self.column, self.accumulate_x, self.need_grad_x = column, accumulate_x, need_grad_x
        self.state_rows = shape[0] if state_rows is None else state_rows


VARIANTS = [
    Variant("plain", (3, 4, 2, 3)),
    Variant("reverse-lengths-second-half", (3, 4, 3, 2), reverse=True, lengths=True, column=2, accumulate_x=True),
    Variant("lengths-broadcast-state", (3, 3, 2, 3), lengths=True, state_rows=1),
    Variant("batch1-time1", (1, 1, 2, 3)),
    Variant("batch1-reverse-no-grad-x", (1, 3, 2, 2), reverse=True, need_grad_x=False),
]


def problem(cell, variant, dtype, seed=0):
    """Host arrays of one problem (time-major) and the lengths ((0,) for none)."""
    batch, steps, inputs, hidden = variant.shape
    gh = cpu_rnn.CELLS[cell][1] * hidden
    rows = variant.state_rows
    rng = np.random.default_rng(seed)
    d = {
        "x": rng.standard_normal((steps, batch, inputs)),
        "w_ih": rng.uniform(-0.8, 0.8, (gh, inputs)),
        "w_hh": rng.uniform(-0.8, 0.8, (gh, hidden)),
        "b_ih": rng.uniform(-0.5, 0.5, gh),
        "b_hh": rng.uniform(-0.5, 0.5, gh),
        "h0": rng.uniform(-1, 1, (rows, hidden)),
        "c0": rng.uniform(-1, 1, (rows, hidden)),
        "grad_y": rng.standard_normal((steps, batch, variant.column + hidden)),
        "grad_h_n": rng.standard_normal((rows, hidden)),
        "grad_c_n": rng.standard_normal((rows, hidden)),
        "grad_x": rng.standard_normal((steps, batch, inputs)),
    }  # added to when accumulate_x
    d = {k: v.astype(dtype) for k, v in d.items()}
    lengths = np.zeros(0, np.int64)
    if variant.lengths:
        lengths = rng.integers(1, steps + 1, batch).astype(np.int64)
        lengths[0], lengths[-1] = steps, 1
    return d, lengths


def run(kernels, cell, variant, d, lengths, device):
    """Forward then backward with ``kernels`` (the CPU or CUDA module); every output as a host array.

    Outputs start as NaN, so an element the kernels should write and do not shows up."""
    code, gates = cpu_rnn.CELLS[cell]
    steps, batch, inputs = d["x"].shape
    hidden = d["w_hh"].shape[1]
    rows = d["h0"].shape[0]
    dtype = d["x"].dtype
    lstm, gru = cell == "lstm", cell == "gru"
    put = cuda.to_device if device else np.array

    def nan(*shape):
        return put(np.full(shape, np.nan, dtype))

    dummy3, dummy2 = put(np.zeros((1, 1, 1), dtype)), put(np.zeros((1, 1), dtype))
    a = {k: put(v) for k, v in d.items()}
    o = {
        "gates": nan(steps, batch, gates * hidden),
        "aux": nan(steps, batch, hidden) if gru else dummy3,
        "h_prev": nan(steps, batch, hidden),
        "c_prev": nan(steps, batch, hidden) if lstm else dummy3,
        "y": nan(steps, batch, d["grad_y"].shape[2]),
        "h_n": nan(batch, hidden),
        "c_n": nan(batch, hidden) if lstm else dummy2,
    }
    kernels.recurrent_forward(
        a["x"],
        a["w_ih"],
        a["w_hh"],
        a["b_ih"],
        a["b_hh"],
        a["h0"],
        a["c0"] if lstm else dummy2,
        lengths,
        o["gates"],
        o["aux"],
        o["h_prev"],
        o["c_prev"],
        nan(batch, gates * hidden),
        o["y"],
        o["h_n"],
        o["c_n"],
        code,
        variant.reverse,
        variant.column,
    )
    o["dgates"] = nan(steps, batch, gates * hidden)
    o["dgates_hh"] = nan(steps, batch, gates * hidden) if gru else o["dgates"]
    o["grad_x"] = a["grad_x"]
    for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
        o[f"grad_{name}"] = nan(*d[name].shape)
    o["grad_h0"] = nan(rows, hidden)
    o["grad_c0"] = nan(rows, hidden) if lstm else dummy2
    kernels.recurrent_backward(
        a["x"],
        a["w_ih"],
        a["w_hh"],
        lengths,
        o["gates"],
        o["aux"],
        o["h_prev"],
        o["c_prev"],
        a["grad_y"],
        a["grad_h_n"],
        a["grad_c_n"] if lstm else dummy2,
        o["dgates"],
        o["dgates_hh"],
        nan(batch, hidden),
        nan(batch, hidden) if lstm else dummy2,
        o["grad_x"],
        o["grad_w_ih"],
        o["grad_w_hh"],
        o["grad_b_ih"],
        o["grad_b_hh"],
        o["grad_h0"],
        o["grad_c0"],
        code,
        variant.reverse,
        variant.column,
        variant.accumulate_x,
        variant.need_grad_x,
    )
    if not lstm:
        for name in ("c_prev", "c_n", "grad_c0"):
            del o[name]
    if not gru:
        del o["aux"], o["dgates_hh"]
    return {name: host(v) if device else v for name, v in o.items()}


def check_against_cpu(cell, variant, dtype, seed=0):
    """The CUDA kernels on ``dtype`` against the CPU kernels on float64 copies; returns the CUDA results."""
    d, lengths = problem(cell, variant, dtype, seed)
    want = run(cpu_rnn, cell, variant, dict(zip(d, f64(*d.values()))), lengths, device=False)
    got = run(gpu_rnn, cell, variant, d, lengths, device=True)
    assert got.keys() == want.keys()
    rtol, atol = tol(dtype)
    for name in want:
        assert got[name].dtype == dtype, name
        np.testing.assert_allclose(got[name], want[name], rtol=rtol * 10, atol=atol * 10, err_msg=name)
    if not variant.need_grad_x:
        np.testing.assert_array_equal(got["grad_x"], d["grad_x"])  # untouched
    if variant.lengths:
        padded = np.arange(d["x"].shape[0])[:, None] >= lengths[None, :]  # (T, B)
        assert padded.any()
        assert np.all(got["y"][padded][:, variant.column :] == 0)
        assert np.all(got["dgates"][padded] == 0)
    return got


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cell", CELLS)
def test_recurrent_kernels_match_cpu(cell, dtype, variant):
    check_against_cpu(cell, variant, dtype)


def test_results_are_deterministic():
    """Two runs give bit-identical results (no atomics, fixed summation orders)."""
    variant = Variant("repeat", (5, 3, 4, 6), lengths=True)
    d, lengths = problem("lstm", variant, np.float32, seed=3)
    first, second = (run(gpu_rnn, "lstm", variant, d, lengths, device=True) for _ in range(2))
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(4, 3, 5), (1, 7, 2)])
def test_swap_leading_axes_matches_cpu(shape, dtype, rng):
    src = rng.standard_normal(shape).astype(dtype)
    want = np.empty((shape[1], shape[0], shape[2]), dtype)
    cpu_rnn.swap_leading_axes(src, want)
    dst = cuda.device_array(want.shape, dtype)
    gpu_rnn.swap_leading_axes(cuda.to_device(src), dst)
    np.testing.assert_array_equal(host(dst), want)
    np.testing.assert_array_equal(want, src.transpose(1, 0, 2))


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True)])
def test_tiled_gemm_accumulates(trans_a, trans_b, rng):
    m, k, n = 5, 19, 4
    a = rng.standard_normal((k, m) if trans_a else (m, k))
    b = rng.standard_normal((n, k) if trans_b else (k, n))
    c = rng.standard_normal((m, n))
    dc = cuda.to_device(c)
    gpu_dense.gemm(trans_a, trans_b, cuda.to_device(a), cuda.to_device(b), dc, accumulate=True)
    np.testing.assert_allclose(host(dc), c + (a.T if trans_a else a) @ (b.T if trans_b else b), rtol=1e-12)


@pytest.fixture
def fake_cublas(monkeypatch):
    """dense.py's GEMMs through a fake CuPy (see tests_cuda/test_cublas.py), as on a GPU with CuPy."""
    gpu_dense.reset_gemm_backend()
    fake = _fake_cupy.install(monkeypatch)
    monkeypatch.setattr(gpu_dense, "simulator", lambda: False)
    yield fake
    monkeypatch.undo()
    gpu_dense.reset_gemm_backend()


@pytest.mark.skipif(not SIMULATOR, reason="the fake CuPy reads simulated device memory as host memory")
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_recurrent_kernels_on_cublas_match_cpu(fake_cublas, cell):
    """Every GEMM (the accumulating ones too: dh += dgates_hh @ W_hh, grad_x +=) through cupy.matmul."""
    assert gpu_dense.gemm_backend() == "cublas"
    variant = VARIANTS[1]  # reverse, lengths, accumulated grad_x
    check_against_cpu(cell, variant, np.float64)
    steps = variant.shape[1]
    assert len(fake_cublas.calls) == 1 + steps + steps + 3  # projection, per step fwd and bwd, weights and grad_x
    assert fake_cublas.host_copies == 0


def test_training_stacked_recurrent_model_on_cuda_matches_cpu(rng):
    """Train steps of GRU (2 layers, bidirectional, dropout between them) + LSTM + Dense on "cuda"
    equal the CPU's: losses and every parameter afterwards (the dropout masks match too)."""
    X = rng.standard_normal((2, 3, 2))
    y = rng.integers(0, 2, 2)
    runs = []
    for device in ("cpu", "cuda"):
        model = fnn.Sequential(
            [
                fnn.GRU(2, 2, num_layers=2, dropout=0.5, bidirectional=True),
                fnn.LSTM(4, 3, return_sequences=False),
                fnn.Dense(3, 2),
            ],
            dtype="float64",
            input_shape=(3, 2),
            seed=4,
            device=device,
        )
        model.compile("cross_entropy", fnn.optim.Adam(lr=0.05))
        losses = [model.train_step(X, y) for _ in range(2)]
        runs.append((losses, backend.host_copy(model.params)))
    (cpu_losses, cpu_params), (gpu_losses, gpu_params) = runs
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=1e-10)
    np.testing.assert_allclose(gpu_params, cpu_params, rtol=1e-10, atol=1e-12)
