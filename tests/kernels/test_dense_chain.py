"""kernels.dense_chain (a Dense chain's training step, its batch rows split into tasks) against the
float64 reference, finite differences, the number of tasks and of threads."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from fastnn._dense_chain import NO_ORDER
from fastnn.kernels.activations import ACTIVATIONS
from fastnn.kernels.dense_chain import dense_chain_cross_entropy, dense_chain_elementwise
from fastnn.kernels.losses import LOSSES
from fastnn.kernels.step_feed import gather_batch
from tests import _reference_core as ref
from tests._gradcheck import numeric_gradients

DTYPES = [np.float32, np.float64]
TOL = {np.float32: {"rtol": 2e-4, "atol": 2e-5}, np.float64: {"rtol": 1e-10, "atol": 1e-12}}
# (batch, layer widths, activations): batch 1 (tasks without rows), odd sizes, three layers, a long batch
CHAINS = [
    (1, (3, 5, 4), ("tanh", "identity")),
    (7, (13, 11, 5), ("relu", "identity")),
    (130, (77, 33, 9), ("gelu", "identity")),
    (65, (10, 24, 17, 3), ("leaky_relu", "sigmoid", "identity")),
    (300, (64, 100, 10), ("relu", "identity")),
]
LOSS_NAMES = ["cross_entropy", "mse", "mae", "huber", "binary_cross_entropy"]


def _problem(m, widths, activations, loss, dtype, tasks, seed=0, gather=False):
    """The chain kernel and its arguments for a random problem, and the reference's inputs; with
    ``gather`` the kernel gathers its batch (rows ``order[3:3 + m]`` of a data set of m + 5 rows)
    into buffers of NaN (labels -1)."""
    rng = np.random.default_rng(seed)
    n = m + 5 if gather else m
    x_all = rng.standard_normal((n, widths[0])).astype(dtype)
    if loss == "cross_entropy":
        y_all = rng.integers(0, widths[-1], (n, 1)).astype(np.int64)
    else:
        y_all = rng.random((n, widths[-1])).astype(dtype)
    if gather:
        order, lo = rng.permutation(n).astype(np.int64), 3
        x_ref, y_ref = x_all[order[lo : lo + m]], y_all[order[lo : lo + m]]
        x, y_rows = np.full_like(x_ref, np.nan), np.full_like(y_ref, -1 if loss == "cross_entropy" else np.nan)
        batch = (x_all, y_all, order, lo, lo + m)
    else:
        x, y_rows = x_ref, y_ref = x_all, y_all
        batch = (x, y_rows, NO_ORDER, 0, 0)
    ws = tuple((rng.standard_normal((a, b)) / np.sqrt(a)).astype(dtype) for a, b in zip(widths[:-1], widths[1:]))
    bs = tuple((0.1 * rng.standard_normal(b)).astype(dtype) for b in widths[1:])
    codes = np.array([ACTIVATIONS[name][0] for name in activations], np.int64)
    alphas = np.array([0.1 if name == "leaky_relu" else 0.0 for name in activations], np.float64)
    zs = tuple(np.full((m, b), np.nan, dtype) for b in widths[1:])
    ys = tuple(z if name == "identity" else np.full_like(z, np.nan) for z, name in zip(zs, activations))
    gys = tuple(np.full((m, b), np.nan, dtype) for b in widths[1:])
    gzs = tuple(g if name == "identity" else np.full_like(g, np.nan) for g, name in zip(gys, activations))
    # layer l's upstream gradient is layer l + 1's grad_x; layer 0's grad_x is never written
    gxs = (np.full((1, widths[0]), np.nan, dtype), *gys[:-1])
    gws = tuple(np.full_like(w, np.nan) for w in ws)
    gbs = tuple(np.full_like(b, np.nan) for b in bs)
    parts_w = tuple(np.full((tasks, *w.shape), np.nan, dtype) for w in ws)
    parts_b = tuple(np.full((tasks, *b.shape), np.nan, dtype) for b in bs)
    partials = np.full(tasks, np.nan)
    layers = (ws, bs, zs, ys, gys, gzs, gxs, gws, gbs, parts_w, parts_b, codes, alphas)
    if loss == "cross_entropy":
        head = (*batch, y_rows, x, y_rows.reshape(m), gys[-1], partials, True)
        kernel, target = dense_chain_cross_entropy, y_ref.reshape(m)
    else:
        head = (*batch, x, y_rows, gys[-1], partials, LOSSES[loss][0], 1.0, True)
        kernel, target = dense_chain_elementwise, y_ref
    return kernel, (*head, *layers), (x_ref, ws, bs, target)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("m,widths,activations", CHAINS, ids=lambda v: str(v))
@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_chain_matches_reference(m, widths, activations, loss, dtype):
    kernel, args, (x, ws, bs, target) = _problem(m, widths, activations, loss, dtype, tasks=2)
    value = kernel(*args)
    alphas = [0.1 if name == "leaky_relu" else 0.0 for name in activations]
    expected, grad_ws, grad_bs, zs, ys = ref.dense_chain_step(x, ws, bs, activations, alphas, target, loss)
    tol = TOL[dtype]
    np.testing.assert_allclose(value, expected, **tol)
    _, _, zs_out, ys_out, _, _, _, gws, gbs = args[-13:-4]
    for got, want in [*zip(gws, grad_ws), *zip(gbs, grad_bs), *zip(zs_out, zs), *zip(ys_out, ys)]:
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, **tol)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_chain_finite_differences(loss):
    """float64 gradients of the kernel's own loss against central differences of it."""
    m, widths, activations = 9, (4, 6, 3), ("tanh", "identity")
    kernel, args, (x, ws, bs, target) = _problem(m, widths, activations, loss, np.float64, tasks=2, seed=3)
    head = len(args) - 13

    def value(*params):
        trial = list(args)
        trial[head], trial[head + 1] = tuple(params[:2]), tuple(params[2:])
        return kernel(*trial)

    kernel(*args)
    analytic = [g.copy() for g in (*args[head + 7], *args[head + 8])]
    numeric = numeric_gradients(value, [*ws, *bs])
    for got, want in zip(analytic, numeric):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("gather", [False, True], ids=["batch given", "batch gathered"])
@pytest.mark.parametrize("loss", ["cross_entropy", "huber"])
def test_chain_bits_do_not_depend_on_threads(loss, gather):
    """The tasks fix the row split: 1 and 2 threads give the same bits; another task count sums
    in another order (close, not the same)."""
    results = {}
    for tasks, threads in [(2, 1), (2, 2), (3, 2)]:
        kernel, args, _ = _problem(300, (64, 100, 10), ("relu", "identity"), loss, np.float32, tasks, gather=gather)
        before = numba.get_num_threads()
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        try:
            value = kernel(*args)
        finally:
            numba.set_num_threads(before)
        results[tasks, threads] = (value, [g.copy() for g in (*args[-6], *args[-5])])
    (v1, g1), (v2, g2), (v3, g3) = results[2, 1], results[2, 2], results[3, 2]
    assert v1 == v2 and all(np.array_equal(a, b) for a, b in zip(g1, g2))
    np.testing.assert_allclose(v3, v1, rtol=1e-6)
    for a, b in zip(g1, g3):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("m,widths,activations", [CHAINS[0], CHAINS[1], CHAINS[4]], ids=lambda v: str(v))
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_gathering_chain_equals_the_gather_then_the_chain(m, widths, activations, loss, dtype):
    """Each task gathering its own rows (fit's lane: fastnn._dense_chain.gathering_call) gives the
    bits of gather_batch's copy followed by the chain on the gathered batch; batch 1 leaves a task
    without rows."""
    kernel, args, _ = _problem(m, widths, activations, loss, dtype, tasks=2, seed=5, gather=True)
    value = kernel(*args)
    x_all, y_all, order, lo, hi, *_ = args
    again, expected, _ = _problem(m, widths, activations, loss, dtype, tasks=2, seed=5, gather=True)
    x, y_rows = expected[6 if loss == "cross_entropy" else 5], expected[5 if loss == "cross_entropy" else 6]
    gather_batch(x_all, y_all, order, lo, hi, x, y_rows)
    flat = (x, y_rows, NO_ORDER, 0, 0)
    if loss == "cross_entropy":
        plain = (*flat, y_rows, x, *expected[7:])
    else:
        plain = (*flat, *expected[5:])
    assert again(*plain) == value
    assert np.array_equal(args[6 if loss == "cross_entropy" else 5], x)  # the gathered batch in the kernel's buffers
    for got, want in zip((*args[-6], *args[-5], *args[-10]), (*plain[-6], *plain[-5], *plain[-10])):
        assert np.array_equal(got, want)
