"""Layer-norm kernels against float64 references, finite differences, torch and thread counts."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from fastnn.kernels.layernorm import layernorm_backward, layernorm_forward, partial_rows
from tests import _reference_norm as ref
from tests._gradcheck import numeric_gradients

TOL = {np.float32: {"rtol": 2e-4, "atol": 2e-4}, np.float64: {"rtol": 1e-10, "atol": 1e-11}}
EPS = 1e-5


def _problem(m, n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((m, n)) * rng.uniform(0.5, 3, (m, 1)) + rng.uniform(-2, 2, (m, 1))).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, n).astype(dtype)
    beta = rng.standard_normal(n).astype(dtype)
    grad_out = rng.standard_normal((m, n)).astype(dtype)
    return x, gamma, beta, grad_out


def _forward(x, gamma, beta, affine=True, eps=EPS):
    out = np.full_like(x, np.nan)
    x_hat = np.full_like(x, np.nan)
    inv_std = np.full(x.shape[0], np.nan, x.dtype)
    layernorm_forward(x, gamma, beta, out, x_hat, inv_std, eps, affine)
    return out, x_hat, inv_std


def _backward(grad_out, x_hat, inv_std, gamma, affine=True):
    m, n = grad_out.shape
    grad_x = np.full_like(grad_out, np.nan)
    grad_gamma = np.full(n, np.nan, grad_out.dtype)
    grad_beta = np.full(n, np.nan, grad_out.dtype)
    partials = np.full((2, partial_rows(m), n), np.nan, grad_out.dtype)
    layernorm_backward(grad_out, x_hat, inv_std, gamma, grad_x, grad_gamma, grad_beta, partials, affine)
    return grad_x, grad_gamma, grad_beta


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_backward_match_reference(dtype):
    for shape in [(1, 2), (1, 9), (7, 13), (130, 5), (300, 301)]:  # batch 1, odd, chunk edges, parallel path
        x, gamma, beta, grad_out = _problem(*shape, dtype)
        for affine in (True, False):
            out, x_hat, inv_std = _forward(x, gamma, beta, affine)
            wants = ref.layernorm_forward(x, gamma if affine else None, beta, EPS)
            for got, want, label in zip((out, x_hat, inv_std), wants, ("out", "x_hat", "inv_std")):
                assert got.dtype == dtype
                np.testing.assert_allclose(got, want, **TOL[dtype], err_msg=f"{label} {shape} affine={affine}")
            grads = _backward(grad_out, x_hat, inv_std, gamma, affine)
            wants = ref.layernorm_backward(x, grad_out, gamma if affine else None, EPS)
            labels = ("grad_x", "grad_gamma", "grad_beta") if affine else ("grad_x",)
            for got, want, label in zip(grads, wants, labels):
                assert got.dtype == dtype
                scale = 1e2 if dtype == np.float32 and label == "grad_x" else 1.0  # cancellation in float32
                np.testing.assert_allclose(
                    got,
                    want,
                    rtol=TOL[dtype]["rtol"] * scale,
                    atol=TOL[dtype]["atol"] * scale,
                    err_msg=f"{label} {shape} {affine}",
                )
            if not affine:
                assert np.isnan(grads[1]).all() and np.isnan(grads[2]).all()  # untouched


def test_backward_finite_differences():
    x, gamma, beta, upstream = _problem(3, 5, np.float64, seed=2)
    _, x_hat, inv_std = _forward(x, gamma, beta)
    grads = _backward(upstream, x_hat, inv_std, gamma)

    def objective(x_, gamma_, beta_):
        return np.sum(upstream * _forward(x_, gamma_, beta_)[0])

    numeric = numeric_gradients(objective, [x, gamma, beta])
    for name, grad, expected in zip(("x", "gamma", "beta"), grads, numeric):
        np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-8, err_msg=name)


def test_in_place_backward():
    x, gamma, beta, grad_out = _problem(6, 7, np.float64, seed=5)
    _, x_hat, inv_std = _forward(x, gamma, beta)
    want = _backward(grad_out, x_hat, inv_std, gamma)
    g = grad_out.copy()
    gg, gb = np.empty(7), np.empty(7)
    layernorm_backward(g, x_hat, inv_std, gamma, g, gg, gb, np.empty((2, 1, 7)), True)
    for got, w in zip((g, gg, gb), want):
        np.testing.assert_array_equal(got, w)


def test_bit_identical_on_one_and_two_threads():
    x, gamma, beta, grad_out = _problem(1000, 257, np.float32, seed=3)
    threads = numba.get_num_threads()
    results = []
    try:
        for t in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(t)
            fwd = _forward(x, gamma, beta)
            results.append(fwd + _backward(grad_out, fwd[1], fwd[2], gamma))
    finally:
        numba.set_num_threads(threads)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_matches_torch():
    torch = pytest.importorskip("torch")
    m, n = 9, 6
    x, gamma, beta, grad_out = _problem(m, n, np.float64, seed=4)
    ln = torch.nn.LayerNorm(n, eps=EPS).double()
    with torch.no_grad():
        ln.weight.copy_(torch.tensor(gamma))
        ln.bias.copy_(torch.tensor(beta))
    xt = torch.tensor(x, requires_grad=True)
    yt = ln(xt)
    yt.backward(torch.tensor(grad_out))
    out, x_hat, inv_std = _forward(x, gamma, beta)
    np.testing.assert_allclose(out, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    for got, want in zip(_backward(grad_out, x_hat, inv_std, gamma), (xt.grad, ln.weight.grad, ln.bias.grad)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-9, atol=1e-11)
