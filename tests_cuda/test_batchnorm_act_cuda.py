"""CUDA twin of the fused BatchNorm1d -> activation -> dropout kernels against the CPU kernels."""

from __future__ import annotations

import numpy as np
import pytest

from fastnn.kernels import batchnorm_act as cpu
from fastnn.kernels.activations import ACTIVATIONS
from fastnn.kernels.batchnorm import partial_rows
from fastnn.kernels.cuda import batchnorm_act as gpu
from fastnn.kernels.dropout import mask_bytes

from .conftest import host, to_device, tol


def _run(kernels, device, x, gamma, beta, grad, code, p, affine):
    """(out, x_hat, running_var, mask, counter, grad_x, grad_gamma, grad_beta) of one forward +
    backward of ``kernels`` (the CPU module or the CUDA twin), on device arrays if ``device``."""
    m, n = x.shape
    put = to_device if device else lambda *a: a
    gx, gg, gb = put(x, gamma, beta)
    out, x_hat, grad_z, grad_x = put(*(np.zeros_like(x) for _ in range(4)))
    rm, rv, mean, inv_std, grad_gamma, grad_beta = put(
        np.zeros(n, x.dtype), np.ones(n, x.dtype), *(np.zeros(n, x.dtype) for _ in range(4))
    )
    (partials,) = put(np.zeros((2, partial_rows(m), n), x.dtype))
    (mask,) = put(np.zeros((m, mask_bytes(n)), np.uint8))
    batches, counter, first_row = np.zeros(1, np.int64), np.array([3]), np.array([2])
    dropout = p is not None
    p = p or 0.0
    kernels.batchnorm_act_forward_train(
        gx, gg, gb, rm, rv, out, x_hat, mean, inv_std, partials, mask, batches, counter, first_row,
        1e-5, 0.1, affine, True, code, 0.1, p, 9, 4, dropout,
    )  # fmt: skip
    (dgrad,) = put(grad)
    kernels.batchnorm_act_backward(
        dgrad, mask, x_hat, inv_std, gg, gb, grad_z, grad_x, grad_gamma, grad_beta, partials, affine, code, 0.1, p,
        dropout,
    )  # fmt: skip
    get = host if device else np.asarray
    return (
        *(get(a) for a in (out, x_hat, rv, mask)),
        counter.copy(),
        *(get(a) for a in (grad_x, grad_gamma, grad_beta)),
    )


@pytest.mark.parametrize(
    "dtype, name, p, affine",
    [(np.float32, "relu", 0.3, True), (np.float64, "leaky_relu", None, False), (np.float32, "tanh", 0.5, True)],
)
def test_twin_matches_the_cpu_kernels(dtype, name, p, affine, rng):
    m, n = 7, 13  # 13 columns: a partial last mask byte
    x = (rng.standard_normal((m, n)) * 2 + 1).astype(dtype)
    gamma, beta = rng.uniform(0.5, 1.5, n).astype(dtype), rng.standard_normal(n).astype(dtype)
    grad = rng.standard_normal((m, n)).astype(dtype)
    code = ACTIVATIONS[name][0]
    want = _run(cpu, False, x, gamma, beta, grad, code, p, affine)
    got = _run(gpu, True, x, gamma, beta, grad, code, p, affine)
    np.testing.assert_array_equal(got[3], want[3])  # the same dropout mask
    np.testing.assert_array_equal(got[4], want[4])  # the step counter advanced alike
    rtol, atol = tol(dtype)
    for index in (0, 1, 2, 5, 6, 7):
        np.testing.assert_allclose(got[index], want[index], rtol=10 * rtol, atol=10 * atol, err_msg=str(index))
    assert (got[0] == 0).sum() == (want[0] == 0).sum()


def _run_eval(kernels, device, x, gamma, beta, grad, code, p, affine):
    """(out, mask, counter, grad_x, grad_gamma, grad_beta) of the evaluation-mode (frozen) pair."""
    m, n = x.shape
    put = to_device if device else lambda *a: a
    rng = np.random.default_rng(1)
    rm, rv = rng.standard_normal(n).astype(x.dtype), (rng.random(n) + 0.5).astype(x.dtype)
    gx, gg, gb, drm, drv, dgrad = put(x, gamma, beta, rm, rv, grad)
    out, x_hat, grad_z, grad_x = put(*(np.zeros_like(x) for _ in range(4)))
    inv_std, scale, grad_gamma, grad_beta = put(*(np.zeros(n, x.dtype) for _ in range(4)))
    (partials,) = put(np.zeros((2, partial_rows(m), n), x.dtype))
    (mask,) = put(np.zeros((m, mask_bytes(n)), np.uint8))
    counter, first_row = np.array([3]), np.array([2])
    dropout = p is not None
    p = p or 0.0
    kernels.batchnorm_act_forward_eval(
        gx, gg, gb, drm, drv, out, inv_std, mask, counter, first_row, 1e-5, affine, code, 0.1, p, 9, 4, dropout
    )
    kernels.batchnorm_act_backward_eval(
        dgrad, mask, gx, gg, gb, drm, drv, x_hat, scale, grad_z, grad_x, grad_gamma, grad_beta, partials, 1e-5,
        affine, code, 0.1, p, dropout,
    )  # fmt: skip
    get = host if device else np.asarray
    return (get(out), get(mask), counter.copy(), get(grad_x), get(grad_gamma), get(grad_beta))


@pytest.mark.parametrize("dtype, name, p, affine", [(np.float32, "relu", 0.3, True), (np.float64, "elu", None, False)])
def test_evaluation_mode_twin_matches_the_cpu_kernels(dtype, name, p, affine, rng):
    """The frozen batch norm's fused pair (kernels.batchnorm_act.batchnorm_act_forward_eval and
    batchnorm_act_backward_eval) on the device."""
    m, n = 70, 11  # two row chunks, a partial last mask byte
    x = (rng.standard_normal((m, n)) * 2 + 1).astype(dtype)
    gamma, beta = rng.uniform(0.5, 1.5, n).astype(dtype), rng.standard_normal(n).astype(dtype)
    grad = rng.standard_normal((m, n)).astype(dtype)
    code = ACTIVATIONS[name][0]
    want = _run_eval(cpu, False, x, gamma, beta, grad, code, p, affine)
    got = _run_eval(gpu, True, x, gamma, beta, grad, code, p, affine)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[2], want[2])
    rtol, atol = tol(dtype)
    for index in (0, 3, 4, 5) if affine else (0, 3):
        np.testing.assert_allclose(got[index], want[index], rtol=10 * rtol, atol=10 * atol, err_msg=str(index))


def test_masked_statistics_twin_matches_the_cpu_kernels(rng):
    """Batch norm over padded sequence steps (``lengths``): forward, running statistics and the
    backward on the device as on the CPU, through the fused pair (a chunk without a valid row)."""
    lengths, steps = np.array([1, 140]), 140
    m, n = 2 * steps, 5
    x = rng.standard_normal((m, n)) * 2 + 1
    gamma, beta, grad = rng.uniform(0.5, 1.5, n), rng.standard_normal(n), rng.standard_normal((m, n))
    code = ACTIVATIONS["tanh"][0]
    results = []
    for kernels, device in ((cpu, False), (gpu, True)):
        put = to_device if device else lambda *a: a
        gx, gg, gb, dgrad = put(x, gamma, beta, grad)
        out, x_hat, grad_z, grad_x = put(*(np.zeros_like(x) for _ in range(4)))
        rm, rv, mean, inv_std, grad_gamma, grad_beta = put(np.zeros(n), np.ones(n), *(np.zeros(n) for _ in range(4)))
        (partials,) = put(np.zeros((2, partial_rows(m), n)))
        (dlengths,) = put(lengths)
        mask, batches, counter, first_row = np.zeros((1, 1), np.uint8), np.zeros(1, np.int64), np.zeros(1), np.zeros(1)
        counter, first_row = counter.astype(np.int64), first_row.astype(np.int64)
        kernels.batchnorm_act_forward_train(
            gx, gg, gb, rm, rv, out, x_hat, mean, inv_std, partials, mask, batches, counter, first_row,
            1e-5, 0.1, True, True, code, 0.0, 0.0, 0, 0, False, dlengths, steps, 1,
        )  # fmt: skip
        kernels.batchnorm_act_backward(
            dgrad, mask, x_hat, inv_std, gg, gb, grad_z, grad_x, grad_gamma, grad_beta, partials, True, code, 0.0,
            0.0, False, dlengths, steps, 1,
        )  # fmt: skip
        get = host if device else np.asarray
        results.append([get(a) for a in (out, mean, inv_std, rm, rv, grad_x, grad_gamma, grad_beta)])
    valid = np.arange(steps)[None, :] < lengths[:, None]
    np.testing.assert_allclose(results[0][1], x[valid.reshape(-1)].mean(0), rtol=1e-12)
    for got, want, name in zip(results[1], results[0], ("out", "mean", "inv_std", "rm", "rv", "gx", "gg", "gb")):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=name)
