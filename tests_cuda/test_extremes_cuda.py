"""CUDA kernels at extreme finite inputs: the same results as the CPU twins (same dtype) and the exact
mpmath reference, finite wherever the exact result is (tests/kernels/test_extremes.py on the CPU)."""

from __future__ import annotations

import numpy as np
import pytest
from numba import cuda

from fastnn.kernels import activations as cpu_act
from fastnn.kernels import batchnorm as cpu_bn
from fastnn.kernels import layernorm as cpu_ln
from fastnn.kernels import losses as cpu_loss
from fastnn.kernels.cuda import activations as gpu_act
from fastnn.kernels.cuda import batchnorm as gpu_bn
from fastnn.kernels.cuda import layernorm as gpu_ln
from fastnn.kernels.cuda import losses as gpu_loss
from tests.kernels import _extreme_reference as ref

from .conftest import host, to_device

DTYPES = [np.float32, np.float64]
TOL = {np.float32: (2e-5, 1e-6), np.float64: (1e-12, 1e-14)}
#: CUDA against the CPU twin of the same dtype (the block reductions sum in another order)
PARITY = {np.float32: (1e-5, 1e-7), np.float64: (1e-13, 1e-300)}
EPS = 1e-5


def same(gpu, cpu, dtype, what):
    """Same finiteness pattern and infinities, and close where finite."""
    gpu, cpu = np.asarray(gpu), np.asarray(cpu)
    np.testing.assert_array_equal(np.isfinite(gpu), np.isfinite(cpu), err_msg=what)
    np.testing.assert_array_equal(gpu[np.isinf(cpu)], cpu[np.isinf(cpu)], err_msg=what)
    finite = np.isfinite(cpu)
    np.testing.assert_allclose(gpu[finite], cpu[finite], rtol=PARITY[dtype][0], atol=PARITY[dtype][1], err_msg=what)


@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_at_extremes(dtype):
    for name, (code, alpha, _) in sorted(cpu_act.ACTIVATIONS.items()):
        rowwise = code >= cpu_act.ROWWISE_CODES
        x = ref.extreme_rows(dtype) if rowwise else ref.extremes(dtype)[None, :]
        grad_y = np.tile(np.array([0.5, -1.0, 2.0, 0.25], dtype), (x.shape[0], 1)) if rowwise else np.ones_like(x)
        y, grad_x = np.empty_like(x), np.empty_like(x)
        cpu_act.activation_forward(x, y, code, alpha)
        cpu_act.activation_backward(x, y, grad_y, grad_x, code, alpha)
        dx, dgy = to_device(x, grad_y)
        dy, dgx = cuda.device_array_like(x), cuda.device_array_like(x)
        gpu_act.activation_forward(dx, dy, code, alpha)
        gpu_act.activation_backward(dx, dy, dgy, dgx, code, alpha)
        same(host(dy), y, dtype, f"{name} forward")
        same(host(dgx), grad_x, dtype, f"{name} backward")
        if rowwise:
            exact_y, exact_dx = ref.softmax_rows(x, grad_y, log=name == "log_softmax")
        else:
            exact_y, exact_dx = ref.activation(name, x, alpha)
        ref.assert_matches_exact(host(dy), exact_y, dtype, f"{name} forward", TOL[dtype])
        ref.assert_matches_exact(host(dgx), exact_dx, dtype, f"{name} backward", TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_losses_at_extremes(dtype):
    logits = ref.extreme_rows(dtype)
    partials = np.zeros(cpu_loss.n_partials(logits.shape[0]))
    for pick in (np.argmax, np.argmin):
        labels = pick(logits, axis=1).astype(np.int64)
        grad = np.empty_like(logits)
        want = cpu_loss.cross_entropy_forward_backward(logits, labels, grad, partials, True, True)
        dl, dlab, dpart = to_device(logits, labels, partials)
        dgrad = cuda.device_array_like(logits)
        got = gpu_loss.cross_entropy_forward_backward(dl, dlab, dgrad, dpart, True, True)
        same(np.array([got]), np.array([want]), dtype, "cross_entropy value")
        same(host(dgrad), grad, dtype, "cross_entropy gradient")
        exact_value, exact_grad = ref.cross_entropy(logits, labels, True)
        ref.assert_matches_exact(np.array([got]), exact_value, dtype, "cross_entropy value", TOL[dtype])
        ref.assert_matches_exact(host(dgrad), exact_grad, dtype, "cross_entropy gradient", TOL[dtype])
    for name in ("mse", "mae", "huber", "binary_cross_entropy"):
        code = cpu_loss.LOSSES[name][0]
        pred, target = ref.loss_pairs(name, dtype)
        partials = np.zeros(cpu_loss.n_partials(pred.shape[0]))
        grad = np.empty_like(pred)
        want = cpu_loss.elementwise_loss(pred, target, grad, partials, code, 0.25, True, True)
        dp, dt, dpart = to_device(pred, target, partials)
        dgrad = cuda.device_array_like(pred)
        got = gpu_loss.elementwise_loss(dp, dt, dgrad, dpart, code, 0.25, True, True)
        same(np.array([got]), np.array([want]), dtype, f"{name} value")
        same(host(dgrad), grad, dtype, f"{name} gradient")
        exact_value, exact_grad = ref.elementwise_loss(name, pred, target, True, 0.25)
        ref.assert_matches_exact(host(dgrad), exact_grad, dtype, f"{name} gradient", TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_layernorm_at_extremes(dtype):
    x = ref.extreme_rows(dtype)
    m, n = x.shape
    gamma, beta = np.linspace(0.5, 2.0, n).astype(dtype), np.linspace(-1.0, 1.0, n).astype(dtype)
    out, x_hat, inv_std = np.empty_like(x), np.empty_like(x), np.empty(m, dtype)
    cpu_ln.layernorm_forward(x, gamma, beta, out, x_hat, inv_std, EPS, True)
    dx, dg, db = to_device(x, gamma, beta)
    dout, dhat, dinv = cuda.device_array_like(x), cuda.device_array_like(x), cuda.device_array(m, dtype)
    gpu_ln.layernorm_forward(dx, dg, db, dout, dhat, dinv, EPS, True)
    same(host(dinv), inv_std, dtype, "layernorm inv_std")
    same(host(dhat), x_hat, dtype, "layernorm x_hat")
    same(host(dout), out, dtype, "layernorm out")
    exact = ref.norm(x, gamma, beta, None, EPS, axis=1)
    ref.assert_matches_exact(host(dhat), exact["x_hat"], dtype, "layernorm x_hat", (TOL[dtype][0] * 5, TOL[dtype][1]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_at_extremes(dtype):
    x = ref.extreme_columns(dtype, 5)
    m, n = x.shape
    gamma, beta = np.linspace(0.5, 2.0, n).astype(dtype), np.linspace(-1.0, 1.0, n).astype(dtype)
    rm, rv = np.zeros(n, dtype), np.ones(n, dtype)
    out, x_hat, mean, inv_std = np.empty_like(x), np.empty_like(x), np.empty(n, dtype), np.empty(n, dtype)
    partials = np.zeros((2, cpu_bn.partial_rows(m), n), dtype)
    dx, dg, db, drm, drv, dpart = to_device(x, gamma, beta, rm, rv, partials)
    dout, dhat = cuda.device_array_like(x), cuda.device_array_like(x)
    dmean, dinv = cuda.device_array(n, dtype), cuda.device_array(n, dtype)
    for _ in range(2):
        cpu_bn.batchnorm_forward_train(
            x, gamma, beta, rm, rv, out, x_hat, mean, inv_std, partials, EPS, 0.5, True, True
        )
        gpu_bn.batchnorm_forward_train(dx, dg, db, drm, drv, dout, dhat, dmean, dinv, dpart, EPS, 0.5, True, True)
    for got, want, what in (
        (dmean, mean, "mean"),
        (dinv, inv_std, "inv_std"),
        (dhat, x_hat, "x_hat"),
        (dout, out, "out"),
        (drm, rm, "running_mean"),
        (drv, rv, "running_var"),
    ):
        same(host(got), want, dtype, f"batchnorm {what}")
    assert np.all(np.isfinite(host(drv)))
    evaluated = np.empty_like(x)
    cpu_bn.batchnorm_forward_eval(x, gamma, beta, rm, rv, evaluated, EPS, True)
    deval = cuda.device_array_like(x)
    gpu_bn.batchnorm_forward_eval(dx, dg, db, drm, drv, deval, EPS, True)
    same(host(deval), evaluated, dtype, "batchnorm eval")
    assert np.all(np.isfinite(evaluated))
