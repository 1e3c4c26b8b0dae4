"""CUDA dropout, random fills, batch norm and layer norm against their CPU twins."""

from __future__ import annotations

import numpy as np
import pytest
from numba import cuda

from fastnn.kernels import batchnorm as cpu_bn
from fastnn.kernels import dropout as cpu_drop
from fastnn.kernels import layernorm as cpu_ln
from fastnn.kernels import rng as cpu_rng
from fastnn.kernels.cuda import batchnorm as gpu_bn
from fastnn.kernels.cuda import dropout as gpu_drop
from fastnn.kernels.cuda import layernorm as gpu_ln
from fastnn.kernels.cuda import rng as gpu_rng

from .conftest import f64, host, to_device, tol


@pytest.mark.parametrize("dtype,p", [(np.float32, 0.3), (np.float64, 0.0)])
def test_dropout_same_mask_as_cpu(dtype, p, rng):
    m, n = 9, 21  # 21 columns: a partial last mask byte
    x = rng.standard_normal((m, n)).astype(dtype)
    (x64,) = f64(x)
    out = np.empty_like(x64)
    mask = np.empty((m, cpu_drop.mask_bytes(n)), np.uint8)
    cpu_drop.dropout_forward(x64, out, mask, p, 7, 3, 11)
    (dx,) = to_device(x)
    dout = cuda.device_array_like(x)
    dmask = cuda.device_array_like(mask)
    gpu_drop.dropout_forward(dx, dout, dmask, p, 7, 3, 11)
    np.testing.assert_array_equal(host(dmask), mask)  # bit-identical masks: same hash, same threshold
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(host(dout), out, rtol=rtol, atol=atol)
    assert (host(dout) == 0).sum() == (out == 0).sum()
    g = rng.standard_normal((m, n)).astype(dtype)
    (g64,) = f64(g)
    gin = np.empty_like(g64)
    cpu_drop.dropout_backward(g64, mask, gin, p)
    (dg,) = to_device(g)
    gpu_drop.dropout_backward(dg, dmask, dg, p)  # in place, as allowed
    np.testing.assert_allclose(host(dg), gin, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_fills_match_cpu(dtype):
    n = 601  # odd: the last normal pair writes one value
    for fill, args in ((cpu_rng.fill_uniform, (-2.0, 3.0)), (cpu_rng.fill_normal, (0.5, 2.0))):
        want = np.empty(n, dtype)
        fill(want, 42, 5, 2, *args)
        got = cuda.device_array(n, dtype)
        getattr(gpu_rng, fill.__name__)(got, 42, 5, 2, *args)
        rtol, atol = tol(dtype)
        np.testing.assert_allclose(host(got), want, rtol=rtol * 10, atol=atol * 10)


def test_permutation_matches_cpu():
    want = np.empty(50, np.int64)
    cpu_rng.permutation(50, 3, 1, 4, want)
    got = cuda.device_array(50, np.int64)
    gpu_rng.permutation(50, 3, 1, 4, got)
    np.testing.assert_array_equal(host(got), want)


@pytest.mark.parametrize("dtype,m,affine", [(np.float32, 70, True), (np.float64, 5, False)])
def test_batchnorm(dtype, m, affine, rng):
    n = 6
    x = (rng.standard_normal((m, n)) * 3 + 1).astype(dtype)
    gamma, beta = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    rm, rv = np.zeros(n, dtype), np.ones(n, dtype)
    partials = np.empty((2, cpu_bn.partial_rows(m), n), dtype)
    d = dict(zip(["x", "gamma", "beta", "rm", "rv", "partials"], to_device(x, gamma, beta, rm, rv, partials)))
    x, gamma, beta, rm, rv, partials = f64(x, gamma, beta, rm, rv, partials)
    out, x_hat = np.empty_like(x), np.empty_like(x)
    mean, inv_std = np.empty(n), np.empty(n)
    cpu_bn.batchnorm_forward_train(x, gamma, beta, rm, rv, out, x_hat, mean, inv_std, partials, 1e-5, 0.1, affine, True)
    dout, dxh = cuda.device_array_like(x), cuda.device_array_like(x)
    dmean, dinv = cuda.device_array(n, dtype), cuda.device_array(n, dtype)
    gpu_bn.batchnorm_forward_train(
        d["x"], d["gamma"], d["beta"], d["rm"], d["rv"], dout, dxh, dmean, dinv, d["partials"], 1e-5, 0.1, affine, True
    )
    rtol, atol = tol(dtype)
    for got, want in ((dout, out), (dxh, x_hat), (dmean, mean), (dinv, inv_std), (d["rm"], rm), (d["rv"], rv)):
        np.testing.assert_allclose(host(got), want, rtol=rtol * 5, atol=atol * 5)

    ev = np.empty_like(x)
    cpu_bn.batchnorm_forward_eval(x, gamma, beta, rm, rv, ev, 1e-5, affine)
    dev = cuda.device_array_like(x)
    gpu_bn.batchnorm_forward_eval(d["x"], d["gamma"], d["beta"], d["rm"], d["rv"], dev, 1e-5, affine)
    np.testing.assert_allclose(host(dev), ev, rtol=rtol * 5, atol=atol * 5)

    g = rng.standard_normal((m, n)).astype(dtype)
    (dg,) = to_device(g)
    (g,) = f64(g)
    gx, gg, gb = np.empty_like(g), np.empty(n), np.empty(n)
    cpu_bn.batchnorm_backward(g, x_hat, inv_std, gamma, gx, gg, gb, partials, affine)
    dgx, dgg, dgb = cuda.device_array_like(g), cuda.device_array(n, dtype), cuda.device_array(n, dtype)
    gpu_bn.batchnorm_backward(dg, dxh, dinv, d["gamma"], dgx, dgg, dgb, d["partials"], affine)
    for got, want in ((dgx, gx), (dgg, gg), (dgb, gb)):
        np.testing.assert_allclose(host(got), want, rtol=rtol * 10, atol=atol * 10)


@pytest.mark.parametrize("dtype,m,affine", [(np.float32, 70, True), (np.float64, 5, False), (np.float32, 1, True)])
def test_batchnorm_backward_eval(dtype, m, affine, rng):
    """Backward through frozen running statistics (a frozen layer's training step, or an eval-mode
    forward): the float64 formulas, as the CPU kernel's."""
    n = 6
    x = (rng.standard_normal((m, n)) * 3 + 1).astype(dtype)
    g = rng.standard_normal((m, n)).astype(dtype)
    gamma = rng.standard_normal(n).astype(dtype) if affine else np.ones(n, dtype)
    rm, rv = rng.standard_normal(n).astype(dtype), rng.uniform(0.5, 2.0, n).astype(dtype)
    d = to_device(
        g,
        x,
        gamma,
        rm,
        rv,
        np.empty((m, n), dtype),
        np.zeros(n, dtype),
        np.zeros(n, dtype),
        np.empty((2, cpu_bn.partial_rows(m), n), dtype),
    )
    grad_out = d[0] if dtype == np.float64 else cuda.device_array((m, n), dtype)  # float64: grad_x is grad_out
    gpu_bn.batchnorm_backward_eval(*d[:5], d[5], grad_out, *d[6:], 1e-5, affine)
    g, x, gamma, rm, rv = f64(g, x, gamma, rm, rv)
    inv_std = 1.0 / np.sqrt(rv + 1e-5)
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(host(grad_out), g * gamma * inv_std, rtol=rtol * 10, atol=atol * 10)
    want = ((g * ((x - rm) * inv_std)).sum(axis=0), g.sum(axis=0)) if affine else (np.zeros(n), np.zeros(n))
    for got, w in zip((d[6], d[7]), want):  # without affine the parameter gradients are not touched
        np.testing.assert_allclose(host(got), w, rtol=rtol * 10, atol=atol * 10)


@pytest.mark.parametrize("dtype,affine", [(np.float32, True), (np.float64, False)])
def test_layernorm(dtype, affine, rng):
    m, n = 3, 300  # more features than threads per block: the row loops stride
    x = (rng.standard_normal((m, n)) * 2 - 1).astype(dtype)
    gamma, beta = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    dx, dgamma, dbeta = to_device(x, gamma, beta)
    x, gamma, beta = f64(x, gamma, beta)
    out, x_hat, inv_std = np.empty_like(x), np.empty_like(x), np.empty(m)
    cpu_ln.layernorm_forward(x, gamma, beta, out, x_hat, inv_std, 1e-5, affine)
    dout, dxh, dinv = cuda.device_array_like(x), cuda.device_array_like(x), cuda.device_array(m, dtype)
    gpu_ln.layernorm_forward(dx, dgamma, dbeta, dout, dxh, dinv, 1e-5, affine)
    rtol, atol = tol(dtype)
    for got, want in ((dout, out), (dxh, x_hat), (dinv, inv_std)):
        np.testing.assert_allclose(host(got), want, rtol=rtol * 5, atol=atol * 5)
    g = rng.standard_normal((m, n)).astype(dtype)
    partials = np.empty((2, cpu_ln.partial_rows(m), n), dtype)
    dg, dgg, dgb, dpart = to_device(g, np.zeros(n, dtype), np.zeros(n, dtype), partials)
    g, partials = f64(g, partials)
    gx, gg, gb = np.empty_like(g), np.zeros(n), np.zeros(n)
    cpu_ln.layernorm_backward(g, x_hat, inv_std, gamma, gx, gg, gb, partials, affine)
    gpu_ln.layernorm_backward(dg, dxh, dinv, dgamma, dg, dgg, dgb, dpart, affine)  # grad_x = grad_out
    for got, want in ((dg, gx), (dgg, gg), (dgb, gb)):
        np.testing.assert_allclose(host(got), want, rtol=rtol * 10, atol=atol * 10)


def test_counted_variants(rng):
    """The step-counting wrappers (skipped while the CPU side does not have them)."""
    if not hasattr(cpu_drop, "dropout_forward_counted") or not hasattr(cpu_bn, "batchnorm_forward_train_counted"):
        pytest.skip("CPU counted kernels not present")
    x = rng.standard_normal((4, 10))
    mask, out = np.empty((4, 2), np.uint8), np.empty_like(x)
    counter = np.array([5], np.int64)
    cpu_drop.dropout_forward_counted(x, out, mask, 0.5, 1, 2, counter)
    dmask, dout = cuda.device_array_like(mask), cuda.device_array_like(x)
    gpu_counter = np.array([5], np.int64)
    gpu_drop.dropout_forward_counted(cuda.to_device(x), dout, dmask, 0.5, 1, 2, gpu_counter)
    np.testing.assert_array_equal(host(dmask), mask)
    assert gpu_counter[0] == counter[0] == 6

    n = 3
    rm, rv = np.zeros(n), np.ones(n)
    args = (np.ones(n), np.zeros(n))
    batches = np.array([2], np.int64)
    cpu_bn.batchnorm_forward_train_counted(
        x[:, :n].copy(),
        *args,
        rm,
        rv,
        np.empty((4, n)),
        np.empty((4, n)),
        np.empty(n),
        np.empty(n),
        np.empty((2, 1, n)),
        1e-5,
        -1.0,
        True,
        True,
        batches,
    )
    drm, drv = to_device(np.zeros(n), np.ones(n))
    gpu_batches = np.array([2], np.int64)
    gpu_bn.batchnorm_forward_train_counted(
        cuda.to_device(x[:, :n].copy()),
        *to_device(*args),
        drm,
        drv,
        cuda.device_array((4, n)),
        cuda.device_array((4, n)),
        cuda.device_array(n),
        cuda.device_array(n),
        cuda.device_array((2, 1, n)),
        1e-5,
        -1.0,
        True,
        True,
        gpu_batches,
    )
    assert gpu_batches[0] == batches[0] == 3
    np.testing.assert_allclose(host(drm), rm, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(host(drv), rv, rtol=1e-12, atol=1e-13)


def test_dropout_counted_from_matches_cpu():
    """Rows numbered from first_row (fastnn.distributed's shards) give the CPU's masks on the device."""
    x = np.random.default_rng(2).standard_normal((6, 19)).astype(np.float32)
    first_row = np.array([11], np.int64)
    out, mask = np.empty_like(x), np.empty((6, cpu_drop.mask_bytes(19)), np.uint8)
    counter, gpu_counter = np.array([4], np.int64), np.array([4], np.int64)
    cpu_drop.dropout_forward_counted_from(x, out, mask, 0.4, 1, 2, counter, first_row)
    dout, dmask = cuda.device_array_like(out), cuda.device_array_like(mask)
    gpu_drop.dropout_forward_counted_from(cuda.to_device(x), dout, dmask, 0.4, 1, 2, gpu_counter, first_row)
    np.testing.assert_array_equal(dmask.copy_to_host(), mask)
    np.testing.assert_array_equal(dout.copy_to_host(), out)
    assert counter[0] == gpu_counter[0] == 5


def test_dropout_steps_from_matches_cpu():
    """Time-major sequences with samples numbered from first_row (the recurrent layers' dropout
    under fastnn.distributed) give the CPU's masks on the device."""
    x = np.random.default_rng(3).standard_normal((3, 5, 11))
    first_row = np.array([7], np.int64)
    out, mask = np.empty_like(x), np.empty((15, cpu_drop.mask_bytes(11)), np.uint8)
    counter, gpu_counter = np.array([2], np.int64), np.array([2], np.int64)
    cpu_drop.dropout_forward_steps_from(x, out, mask, 0.4, 1, 2, counter, first_row)
    dout, dmask = cuda.device_array_like(out), cuda.device_array_like(mask)
    gpu_drop.dropout_forward_steps_from(cuda.to_device(x), dout, dmask, 0.4, 1, 2, gpu_counter, first_row)
    np.testing.assert_array_equal(dmask.copy_to_host(), mask)
    np.testing.assert_array_equal(dout.copy_to_host(), out)
    assert counter[0] == gpu_counter[0] == 3 and 0 < (out == 0).mean() < 0.8
