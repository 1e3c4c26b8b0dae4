"""Fused BatchNorm1d -> activation -> dropout kernels (kernels.batchnorm_act): the float64
reference, the unfused kernels' results and masks, odd and parallel shapes, finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from fastnn.kernels.activations import ACTIVATIONS, activation_backward, activation_forward
from fastnn.kernels.batchnorm import batchnorm_backward, batchnorm_forward_train, partial_rows
from fastnn.kernels.batchnorm_act import batchnorm_act_backward, batchnorm_act_forward_train
from fastnn.kernels.dropout import dropout_backward, dropout_forward_counted_from, mask_bytes
from tests import reference as ref
from tests._gradcheck import numeric_gradients

EPS, MOMENTUM, SEED, STREAM = 1e-5, 0.1, 5, 3


class Fused:
    """Buffers of one fused forward + backward on x (batch, features) of x's dtype."""

    def __init__(self, x, gamma, beta, name="relu", alpha=0.0, p=0.3, step=2, first_row=0, affine=True):
        m, n = x.shape
        self.x, self.gamma, self.beta, self.affine = x, gamma, beta, affine
        self.code = ACTIVATIONS[name][0]
        self.alpha, self.p, self.dropout = alpha, p, p is not None
        self.out, self.x_hat = np.full_like(x, np.nan), np.full_like(x, np.nan)
        self.mean, self.inv_std = np.full(n, np.nan, x.dtype), np.full(n, np.nan, x.dtype)
        self.running_mean, self.running_var = np.zeros(n, x.dtype), np.ones(n, x.dtype)
        self.partials = np.full((2, partial_rows(m), n), np.nan, x.dtype)
        self.mask = np.full((m, mask_bytes(n)), 0xAA, np.uint8)
        self.batches = np.zeros(1, np.int64)
        self.counter, self.first_row = np.array([step]), np.array([first_row])

    def forward(self):
        batchnorm_act_forward_train(
            self.x,
            self.gamma,
            self.beta,
            self.running_mean,
            self.running_var,
            self.out,
            self.x_hat,
            self.mean,
            self.inv_std,
            self.partials,
            self.mask,
            self.batches,
            self.counter,
            self.first_row,
            EPS,
            MOMENTUM,
            self.affine,
            True,
            self.code,
            self.alpha,
            self.p or 0.0,
            SEED,
            STREAM,
            self.dropout,
        )
        return self.out

    def backward(self, grad_out):
        grad_z, grad_x = np.full_like(grad_out, np.nan), np.full_like(grad_out, np.nan)
        grad_gamma = np.full_like(self.gamma, np.nan)
        grad_beta = np.full_like(self.gamma, np.nan)
        batchnorm_act_backward(
            grad_out,
            self.mask,
            self.x_hat,
            self.inv_std,
            self.gamma,
            self.beta,
            grad_z,
            grad_x,
            grad_gamma,
            grad_beta,
            self.partials,
            self.affine,
            self.code,
            self.alpha,
            self.p or 0.0,
            self.dropout,
        )
        return grad_x, grad_gamma, grad_beta

    def keep(self):
        return ref.unpack_mask(self.mask, self.x.shape[1]) if self.dropout else None


def _inputs(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, shape[1]).astype(dtype)
    beta = rng.standard_normal(shape[1]).astype(dtype)
    return x, gamma, beta, rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape, name, alpha, p",
    [
        ((2, 1), "relu", 0.0, 0.5),  # the smallest training batch
        ((7, 13), "tanh", 0.0, 0.3),  # odd: 13 columns end in a partial mask byte
        ((33, 9), "leaky_relu", 0.1, None),  # no dropout
        ((5, 17), "elu", 1.0, 0.2),  # an activation without a vectorised copy
        ((300, 257), "relu", 0.0, 0.3),  # the parallel path, 5 reduction chunks
    ],
)
def test_matches_the_reference(shape, name, alpha, p, dtype):
    x, gamma, beta, grad = _inputs(shape, dtype)
    fused = Fused(x, gamma, beta, name, alpha, p)
    out = fused.forward()
    keep = fused.keep()
    want, want_hat = ref.batchnorm_act_forward(x, gamma, beta, EPS, name, alpha, keep, p)
    rtol, atol = (1e-5, 1e-5) if dtype == np.float32 else (1e-12, 1e-12)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, want, rtol=rtol, atol=atol)
    np.testing.assert_allclose(fused.x_hat, want_hat, rtol=rtol, atol=atol)
    mean, var = x.astype(np.float64).mean(0), x.astype(np.float64).var(0)
    run_mean, run_var = ref.batchnorm_running_update(
        np.zeros(shape[1]), np.ones(shape[1]), mean, var, shape[0], MOMENTUM
    )
    np.testing.assert_allclose(fused.running_mean, run_mean, rtol=rtol, atol=atol)
    np.testing.assert_allclose(fused.running_var, run_var, rtol=rtol, atol=atol)
    assert fused.batches[0] == 1 and fused.counter[0] == (3 if p is not None else 2)
    grads = fused.backward(grad)
    for got, expected in zip(grads, ref.batchnorm_act_backward(x, grad, gamma, beta, EPS, name, alpha, keep, p)):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, expected, rtol=10 * rtol, atol=10 * atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine", [True, False])
def test_equals_the_unfused_kernels(affine, dtype):
    """The mask bit for bit, the outputs and gradients within rounding, of batch norm, the
    activation and dropout kernels run one after the other (rows numbered from first_row)."""
    x, gamma, beta, grad = _inputs((11, 21), dtype, seed=1)
    fused = Fused(x, gamma, beta, "tanh", p=0.4, step=7, first_row=4, affine=affine)
    fused.forward()
    z, x_hat = np.empty_like(x), np.empty_like(x)
    mean, inv_std = np.empty(21, dtype), np.empty(21, dtype)
    partials = np.empty((2, partial_rows(11), 21), dtype)
    rm, rv = np.zeros(21, dtype), np.ones(21, dtype)
    batchnorm_forward_train(x, gamma, beta, rm, rv, z, x_hat, mean, inv_std, partials, EPS, MOMENTUM, affine, True)
    y = np.empty_like(x)
    activation_forward(z, y, ACTIVATIONS["tanh"][0], 0.0)
    out, mask = np.empty_like(x), np.empty_like(fused.mask)
    dropout_forward_counted_from(y, out, mask, 0.4, SEED, STREAM, np.array([7]), np.array([4]))
    np.testing.assert_array_equal(fused.mask, mask)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(fused.out, out, rtol=tol, atol=tol)
    np.testing.assert_allclose(fused.running_var, rv, rtol=tol)
    g_drop, g_act = np.empty_like(x), np.empty_like(x)
    dropout_backward(grad, mask, g_drop, 0.4)
    activation_backward(z, y, g_drop, g_act, ACTIVATIONS["tanh"][0], 0.0)
    grad_x, grad_gamma, grad_beta = np.empty_like(x), np.empty(21, dtype), np.empty(21, dtype)
    batchnorm_backward(g_act, x_hat, inv_std, gamma, grad_x, grad_gamma, grad_beta, partials, affine)
    for got, expected in zip(fused.backward(grad), (grad_x, grad_gamma, grad_beta)):
        np.testing.assert_allclose(got, expected, rtol=10 * tol, atol=10 * tol)


@pytest.mark.parametrize("name, alpha, p", [("gelu", 0.0, 0.3), ("sigmoid", 0.0, None)])
def test_gradients_match_finite_differences(name, alpha, p):
    """float64: d sum(out * G) / d (x, gamma, beta), every probe with the same dropout mask."""
    x, gamma, beta, weights = _inputs((6, 5), np.float64, seed=2)

    def objective(x, gamma, beta):
        return float((Fused(x, gamma, beta, name, alpha, p).forward() * weights).sum())

    fused = Fused(x, gamma, beta, name, alpha, p)
    fused.forward()
    for got, numeric in zip(fused.backward(weights), numeric_gradients(objective, [x, gamma, beta])):
        np.testing.assert_allclose(got, numeric, rtol=1e-5, atol=1e-7)
