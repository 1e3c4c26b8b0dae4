"""recurrent_forward / recurrent_backward (one layer, one direction) against the float64 references
of tests/_reference_recurrent.py: every cell, float32 and float64, odd sizes, batch 1, one step,
both directions, sequence lengths, broadcast initial states; finite differences; thread counts."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from fastnn.kernels.recurrent import CELLS, recurrent_backward, recurrent_forward, swap_leading_axes
from tests import _reference_recurrent as ref
from tests._gradcheck import numeric_gradients

DTYPES = [np.float32, np.float64]
CELL_NAMES = list(CELLS)
# (batch, steps, inputs, hidden)
SHAPES = [(3, 5, 4, 3), (1, 1, 2, 5), (1, 6, 3, 2), (4, 1, 5, 3), (19, 3, 4, 5)]  # 19: batch chunks 16 + 3 (2+ CPUs)


def problem(cell, shape, dtype, seed=0, lengths=False):
    batch, steps, inputs, hidden = shape
    rng = np.random.default_rng(seed)
    gh = ref.GATES[cell] * hidden
    p = {
        "w_ih": rng.uniform(-0.8, 0.8, (gh, inputs)),
        "w_hh": rng.uniform(-0.8, 0.8, (gh, hidden)),
        "b_ih": rng.uniform(-0.5, 0.5, gh),
        "b_hh": rng.uniform(-0.5, 0.5, gh),
    }
    p = {k: v.astype(dtype) for k, v in p.items()}
    x = rng.standard_normal((batch, steps, inputs)).astype(dtype)
    h0 = rng.uniform(-1, 1, (batch, hidden)).astype(dtype)
    c0 = rng.uniform(-1, 1, (batch, hidden)).astype(dtype)
    lens = rng.integers(1, steps + 1, batch) if lengths else None
    if lengths:
        lens[0] = steps
    grad_y = rng.standard_normal((batch, steps, hidden)).astype(dtype)
    grad_hn = rng.standard_normal((batch, hidden)).astype(dtype)
    grad_cn = rng.standard_normal((batch, hidden)).astype(dtype)
    return p, x, h0, c0, lens, grad_y, grad_hn, grad_cn


def run(cell, p, x, h0, c0, reverse=False, lengths=None, grad_y=None, grad_hn=None, grad_cn=None, column=0, width=None):
    """The kernels on batch-first data; returns forward (y, h_n, c_n) and, with grad_y, backward
    (grad_x, grads, grad_h0, grad_c0)."""
    code, gates = CELLS[cell]
    batch, steps, inputs = x.shape
    hidden = p["w_hh"].shape[1]
    dtype = x.dtype
    width = hidden if width is None else width
    lens = np.zeros(0, np.int64) if lengths is None else np.asarray(lengths, np.int64)
    xt = np.full((steps, batch, inputs), np.nan, dtype)
    swap_leading_axes(x, xt)
    lstm, gru = cell == "lstm", cell == "gru"
    dummy = np.zeros((1, 1, 1), dtype)
    nan = lambda *s: np.full(s, np.nan, dtype)  # noqa: E731
    gates_buf, aux = nan(steps, batch, gates * hidden), nan(steps, batch, hidden) if gru else dummy
    h_prev, c_prev = nan(steps, batch, hidden), nan(steps, batch, hidden) if lstm else dummy
    y = nan(steps, batch, width)
    h_n, c_n = nan(batch, hidden), nan(batch, hidden) if lstm else dummy[0]
    recurrent_forward(
        xt,
        p["w_ih"],
        p["w_hh"],
        p["b_ih"],
        p["b_hh"],
        h0,
        c0 if lstm else dummy[0],
        lens,
        gates_buf,
        aux,
        h_prev,
        c_prev,
        nan(batch, gates * hidden),
        y,
        h_n,
        c_n,
        code,
        reverse,
        column,
    )
    y_bf = np.empty((batch, steps, width), dtype)
    swap_leading_axes(y, y_bf)
    fwd = (y_bf[:, :, column : column + hidden], h_n, c_n if lstm else None)
    if grad_y is None:
        return fwd, None
    gy = np.zeros((steps, batch, width), dtype)
    gy_bf = np.zeros((batch, steps, width), dtype)
    gy_bf[:, :, column : column + hidden] = grad_y
    swap_leading_axes(gy_bf, gy)
    dgates = nan(steps, batch, gates * hidden)
    dgates_hh = nan(steps, batch, gates * hidden) if gru else dgates
    grads = {k: np.full_like(v, np.nan) for k, v in p.items()}
    gx = nan(steps, batch, inputs)
    g_h0 = nan(*h0.shape)
    g_c0 = nan(*h0.shape) if lstm else dummy[0]
    recurrent_backward(
        xt,
        p["w_ih"],
        p["w_hh"],
        lens,
        gates_buf,
        aux,
        h_prev,
        c_prev,
        gy,
        grad_hn,
        grad_cn if lstm else dummy[0],
        dgates,
        dgates_hh,
        nan(batch, hidden),
        nan(batch, hidden),
        gx,
        grads["w_ih"],
        grads["w_hh"],
        grads["b_ih"],
        grads["b_hh"],
        g_h0,
        g_c0,
        code,
        reverse,
        column,
        False,
        True,
    )
    gx_bf = np.empty_like(x)
    swap_leading_axes(gx, gx_bf)
    return fwd, (gx_bf, grads, g_h0, g_c0 if lstm else None)


def tolerance(dtype):
    return {"rtol": 2e-4, "atol": 2e-5} if dtype == np.float32 else {"rtol": 1e-11, "atol": 1e-12}


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"B{s[0]}T{s[1]}I{s[2]}H{s[3]}" for s in SHAPES])
@pytest.mark.parametrize("cell", CELL_NAMES)
def test_matches_reference(cell, shape, dtype, reverse):
    p, x, h0, c0, _, grad_y, grad_hn, grad_cn = problem(cell, shape, dtype)
    lstm = cell == "lstm"
    (y, h_n, c_n), (gx, grads, g_h0, g_c0) = run(cell, p, x, h0, c0, reverse, None, grad_y, grad_hn, grad_cn)
    ry, rh, rc, cache = ref.recurrent_layer_forward(
        x, p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"], h0, c0 if lstm else None, cell, reverse
    )
    tol = tolerance(dtype)
    assert y.dtype == h_n.dtype == gx.dtype == dtype
    np.testing.assert_allclose(y, ry, **tol)
    np.testing.assert_allclose(h_n, rh, **tol)
    if lstm:
        np.testing.assert_allclose(c_n, rc, **tol)
    rgx, rgrads, rgh0, rgc0 = ref.recurrent_layer_backward(cache, grad_y, grad_hn, grad_cn if lstm else None)
    np.testing.assert_allclose(gx, rgx, **tol)
    for name in rgrads:
        np.testing.assert_allclose(grads[name], rgrads[name], err_msg=name, **tol)
    np.testing.assert_allclose(g_h0, rgh0, **tol)
    if lstm:
        np.testing.assert_allclose(g_c0, rgc0, **tol)


@pytest.mark.parametrize("batch", [5, 19], ids=["B5", "B19"])  # 19: batch chunks 16 + 3 (2+ CPUs)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("cell", CELL_NAMES)
def test_lengths_match_reference_and_padding_is_inert(cell, reverse, batch):
    shape = (batch, 6, 3, 4)
    p, x, h0, c0, lens, grad_y, grad_hn, grad_cn = problem(cell, shape, np.float64, seed=3, lengths=True)
    lstm = cell == "lstm"
    (y, h_n, c_n), (gx, grads, g_h0, g_c0) = run(
        cell, p, x, h0, c0, reverse, lens, grad_y, grad_hn, grad_cn, column=4, width=9
    )
    ry, rh, rc, cache = ref.recurrent_layer_forward(
        x, p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"], h0, c0 if lstm else None, cell, reverse, lens
    )
    tol = tolerance(np.float64)
    np.testing.assert_allclose(y, ry, **tol)
    np.testing.assert_allclose(h_n, rh, **tol)
    rgx, rgrads, rgh0, rgc0 = ref.recurrent_layer_backward(cache, grad_y, grad_hn, grad_cn if lstm else None)
    np.testing.assert_allclose(gx, rgx, **tol)
    for name in rgrads:
        np.testing.assert_allclose(grads[name], rgrads[name], err_msg=name, **tol)
    np.testing.assert_allclose(g_h0, rgh0, **tol)
    padded = np.arange(shape[1])[None, :] >= lens[:, None]
    assert padded.any()
    assert np.all(y[padded] == 0) and np.all(gx[padded] == 0)
    # changing padded inputs changes nothing
    x2 = x.copy()
    x2[padded] = 1e3
    (y2, h2, _), _ = run(cell, p, x2, h0, c0, reverse, lens)
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_array_equal(h2, h_n)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_one_row_initial_state_is_broadcast_and_its_gradient_summed(cell):
    p, x, h0, c0, _, grad_y, grad_hn, grad_cn = problem(cell, (3, 4, 2, 3), np.float64, seed=5)
    lstm = cell == "lstm"
    full = run(cell, p, x, np.repeat(h0[:1], 3, 0), np.repeat(c0[:1], 3, 0), True, None, grad_y, grad_hn, grad_cn)
    row = run(cell, p, x, h0[:1], c0[:1], True, None, grad_y, grad_hn, grad_cn)
    np.testing.assert_array_equal(row[0][0], full[0][0])
    np.testing.assert_allclose(row[1][2], full[1][2].sum(0, keepdims=True), rtol=1e-12, atol=1e-14)
    if lstm:
        np.testing.assert_allclose(row[1][3], full[1][3].sum(0, keepdims=True), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_backward_matches_finite_differences(cell):
    p, x, h0, c0, lens, grad_y, grad_hn, grad_cn = problem(cell, (2, 3, 2, 2), np.float64, seed=7, lengths=True)
    lstm = cell == "lstm"
    weights = np.random.default_rng(8).standard_normal(2 * 2)

    def objective(x, w_ih, w_hh, b_ih, b_hh, h0, c0):
        (y, h_n, c_n), _ = run(cell, dict(w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh), x, h0, c0, True, lens)
        total = np.sum(y * grad_y) + np.sum(h_n * grad_hn)
        return total + (np.sum(c_n * grad_cn) if lstm else 0.0) + np.sum(h_n.reshape(-1) * weights)

    params = [x, p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"], h0, c0]
    numeric = numeric_gradients(objective, params)
    _, (gx, grads, g_h0, g_c0) = run(cell, p, x, h0, c0, True, lens, grad_y, grad_hn + weights.reshape(2, 2), grad_cn)
    analytic = [gx, grads["w_ih"], grads["w_hh"], grads["b_ih"], grads["b_hh"], g_h0, g_c0 if lstm else 0 * c0]
    for name, a, n in zip(["x", "w_ih", "w_hh", "b_ih", "b_hh", "h0", "c0"], analytic, numeric):
        np.testing.assert_allclose(a, n, rtol=1e-6, atol=1e-8, err_msg=name)


@pytest.mark.parametrize(
    "cell, shape", [("lstm", (40, 7, 48, 64)), ("gru", (40, 7, 48, 64)), ("lstm", (1, 5, 300, 256))]
)
def test_bit_identical_on_one_and_two_threads(cell, shape):
    """Sizes past the parallel thresholds (GEMM tiles, column sums), float32; batch 1 with tiled
    matrix-vector products (kernels.dense._threaded_product: a region or a loop by their weights' size)."""
    p, x, h0, c0, lens, grad_y, grad_hn, grad_cn = problem(cell, shape, np.float32, seed=9, lengths=True)
    results = []
    before = numba.get_num_threads()
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            fwd, bwd = run(cell, p, x, h0, c0, True, lens, grad_y, grad_hn, grad_cn)
            results.append((fwd, bwd))
    finally:
        numba.set_num_threads(before)
    (f1, b1), (f2, b2) = results
    for a, b in zip(f1[:2] + b1[:1] + (b1[2],), f2[:2] + b2[:1] + (b2[2],)):
        np.testing.assert_array_equal(a, b)
    for name in b1[1]:
        np.testing.assert_array_equal(b1[1][name], b2[1][name], err_msg=name)
