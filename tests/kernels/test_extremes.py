"""Every activation, loss and norm kernel at extreme finite inputs (+-dtype max, +-1e20, denormals).

One table per kernel family; each case runs in float32 and float64 and checks, against a
40-digit mpmath reference (tests/kernels/_extreme_reference.py):
- outputs and gradients are finite wherever the exact result is within the dtype's range
  (and an overflowing exact result comes out as an infinity of the right sign, never NaN);
- where finite, they match the reference to the dtype's tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastnn.kernels.activations import ACTIVATIONS, activation_backward, activation_forward
from fastnn.kernels.batchnorm import (
    batchnorm_backward,
    batchnorm_forward_eval,
    batchnorm_forward_train,
    partial_rows,
)
from fastnn.kernels.layernorm import layernorm_backward, layernorm_forward
from fastnn.kernels.losses import (
    CLASSES,
    LOSSES,
    cross_entropy_forward_backward,
    elementwise_loss,
    n_partials,
)
from tests.kernels import _extreme_reference as ref

DTYPES = [np.float32, np.float64]
#: (rtol, atol) against the exact reference
TOL = {np.float32: (2e-5, 1e-6), np.float64: (1e-12, 1e-14)}
#: looser where a result is an inverse standard deviation that may be a denormal
TOL_INV_STD = {np.float32: (1e-5, 0.0), np.float64: (1e-12, 0.0)}


def check(actual, exact, dtype, what, tol=None):
    ref.assert_matches_exact(actual, exact, dtype, what, tol or TOL[dtype])


# ---------------------------------------------------------------------------- activations

ELEMENTWISE = sorted(name for name in ACTIVATIONS if name not in ("softmax", "log_softmax"))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_activation_at_extremes(name, dtype):
    code, alpha, _ = ACTIVATIONS[name]
    x = ref.extremes(dtype)[None, :]
    y = np.full_like(x, np.nan)
    activation_forward(x, y, code, alpha)
    grad_y = np.ones_like(x)
    grad_x = np.full_like(x, np.nan)
    activation_backward(x, y, grad_y, grad_x, code, alpha)
    exact_y, exact_dy = ref.activation(name, x, alpha)
    check(y, exact_y, dtype, f"{name} forward")
    check(grad_x, exact_dy, dtype, f"{name} backward")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_rows_at_extremes(name, dtype):
    code = ACTIVATIONS[name][0]
    z = ref.extreme_rows(dtype)
    y = np.full_like(z, np.nan)
    activation_forward(z, y, code, 0.0)
    grad_y = np.tile(np.array([0.5, -1.0, 2.0, 0.25], dtype), (z.shape[0], 1))
    grad_z = np.full_like(z, np.nan)
    activation_backward(z, y, grad_y, grad_z, code, 0.0)
    exact_y, exact_dz = ref.softmax_rows(z, grad_y, log=name == "log_softmax")
    check(y, exact_y, dtype, f"{name} forward")
    check(grad_z, exact_dz, dtype, f"{name} backward")


# ---------------------------------------------------------------------------- losses


def _loss(name, pred, target, mean, delta=1.0):
    code, kind = LOSSES[name]
    grad = np.full_like(pred, np.nan)
    partials = np.full(n_partials(pred.shape[0]), np.nan)
    if kind == CLASSES:
        value = cross_entropy_forward_backward(pred, target, grad, partials, mean, True)
    else:
        value = elementwise_loss(pred, target, grad, partials, code, delta, mean, True)
    return value, grad


@pytest.mark.parametrize("mean", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("label", ["argmax", "argmin"])
def test_cross_entropy_at_extremes(label, dtype, mean):
    logits = ref.extreme_rows(dtype)
    labels = (np.argmax if label == "argmax" else np.argmin)(logits, axis=1).astype(np.int64)
    value, grad = _loss("cross_entropy", logits, labels, mean)
    exact_value, exact_grad = ref.cross_entropy(logits, labels, mean)
    # the loss is a float64 sum of the rows' terms: finite where that sum is (see the reference)
    check(np.array([value]), exact_value, dtype, "cross_entropy value")
    check(grad, exact_grad, dtype, "cross_entropy gradient")


@pytest.mark.parametrize("mean", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["mse", "mae", "huber", "binary_cross_entropy"])
def test_elementwise_loss_at_extremes(name, dtype, mean):
    pred, target = ref.loss_pairs(name, dtype)
    for delta in [1.0, 0.25] if name == "huber" else [1.0]:
        value, grad = _loss(name, pred, target, mean, delta)
        exact_value, exact_grad = ref.elementwise_loss(name, pred, target, mean, delta)
        check(np.array([value]), exact_value, dtype, f"{name} value delta={delta}")
        check(grad, exact_grad, dtype, f"{name} gradient delta={delta}")


# ---------------------------------------------------------------------------- norms

EPS = 1e-5


def grad_x_tol(dtype):
    """grad_x = inv_std * gamma * (g - mean(g) - ...) cancels at the scale inv_std * |gamma * g|
    (up to 1 / sqrt(EPS) * 4 here): its absolute error is a few ulps of that, at any input scale."""
    return TOL[dtype][0] * 5, 8 * np.finfo(dtype).eps * 4 / np.sqrt(EPS)


def grad_gamma_tol(dtype, rows):
    """grad_gamma = column sums of grad_out * x_hat, which cancel to ~0 here: a few ulps of rows * |grad_out|."""
    return TOL[dtype][0] * 5, 4 * rows * np.finfo(dtype).eps * 2


@pytest.mark.parametrize("dtype", DTYPES)
def test_layernorm_at_extremes(dtype):
    x = ref.extreme_rows(dtype)
    m, n = x.shape
    gamma = np.linspace(0.5, 2.0, n).astype(dtype)
    beta = np.linspace(-1.0, 1.0, n).astype(dtype)
    out, x_hat = np.full_like(x, np.nan), np.full_like(x, np.nan)
    inv_std = np.full(m, np.nan, dtype)
    layernorm_forward(x, gamma, beta, out, x_hat, inv_std, EPS, True)
    grad_out = np.tile(np.array([0.5, -1.0, 2.0, 0.25], dtype), (m, 1))
    grad_x, grad_gamma, grad_beta = np.full_like(x, np.nan), np.full(n, np.nan, dtype), np.full(n, np.nan, dtype)
    partials = np.full((2, partial_rows(m), n), np.nan, dtype)
    layernorm_backward(grad_out, x_hat, inv_std, gamma, grad_x, grad_gamma, grad_beta, partials, True)
    exact = ref.norm(x, gamma, beta, grad_out, EPS, axis=1)
    check(inv_std, exact["inv_std"], dtype, "layernorm inv_std", TOL_INV_STD[dtype])
    check(x_hat, exact["x_hat"], dtype, "layernorm x_hat", (TOL[dtype][0] * 5, TOL[dtype][1]))
    check(out, exact["out"], dtype, "layernorm out", (TOL[dtype][0] * 5, TOL[dtype][1]))
    check(grad_x, exact["grad_x"], dtype, "layernorm grad_x", grad_x_tol(dtype))
    check(grad_gamma, exact["grad_gamma"], dtype, "layernorm grad_gamma", grad_gamma_tol(dtype, m))


@pytest.mark.parametrize("rows", [5, 70])  # one row chunk, and two merged ones
@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_at_extremes(dtype, rows):
    x = ref.extreme_columns(dtype, rows)
    m, n = x.shape
    gamma = np.linspace(0.5, 2.0, n).astype(dtype)
    beta = np.linspace(-1.0, 1.0, n).astype(dtype)
    running_mean = np.zeros(n, dtype)
    running_var = np.ones(n, dtype)
    out, x_hat = np.full_like(x, np.nan), np.full_like(x, np.nan)
    mean, inv_std = np.full(n, np.nan, dtype), np.full(n, np.nan, dtype)
    partials = np.full((2, partial_rows(m), n), np.nan, dtype)
    momentum = 0.5
    for _ in range(3):  # repeated updates stay finite (clamped where the variance overflows)
        batchnorm_forward_train(
            x, gamma, beta, running_mean, running_var, out, x_hat, mean, inv_std, partials, EPS, momentum, True, True
        )
    exact = ref.norm(x, gamma, beta, None, EPS, axis=0)
    check(mean, exact["mean"], dtype, "batchnorm mean")
    check(inv_std, exact["inv_std"], dtype, "batchnorm inv_std", TOL_INV_STD[dtype])
    check(x_hat, exact["x_hat"], dtype, "batchnorm x_hat", (TOL[dtype][0] * 5, TOL[dtype][1]))
    check(out, exact["out"], dtype, "batchnorm out", (TOL[dtype][0] * 5, TOL[dtype][1]))
    assert np.all(np.isfinite(running_mean)) and np.all(np.isfinite(running_var))
    unbiased = ref.clamped_unbiased_var(x, dtype)
    # after three updates with momentum 0.5 from var 1: 1/8 + 7/8 * the (clamped) batch variance
    np.testing.assert_allclose(
        running_var, np.minimum(unbiased * 0.875 + 0.125, np.finfo(dtype).max), rtol=TOL[dtype][0] * 5
    )
    np.testing.assert_allclose(running_mean, mean.astype(np.float64) * 0.875, rtol=TOL[dtype][0] * 5)

    evaluated = np.full_like(x, np.nan)
    batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, evaluated, EPS, True)
    assert np.all(np.isfinite(evaluated))

    grad_out = np.tile(np.array([0.5, -1.0, 2.0, 0.25], dtype), (m, 1))
    grad_x, grad_gamma, grad_beta = np.full_like(x, np.nan), np.full(n, np.nan, dtype), np.full(n, np.nan, dtype)
    batchnorm_backward(grad_out, x_hat, inv_std, gamma, grad_x, grad_gamma, grad_beta, partials, True)
    exact = ref.norm(x, gamma, beta, grad_out, EPS, axis=0)
    check(grad_x, exact["grad_x"], dtype, "batchnorm grad_x", grad_x_tol(dtype))
    check(grad_gamma, exact["grad_gamma"], dtype, "batchnorm grad_gamma", grad_gamma_tol(dtype, m))
