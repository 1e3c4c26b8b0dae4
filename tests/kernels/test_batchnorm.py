"""Batch-norm kernels against float64 references, finite differences, torch and thread counts."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from fastnn.kernels.batchnorm import (
    batchnorm_backward,
    batchnorm_backward_eval,
    batchnorm_forward_eval,
    batchnorm_forward_train,
    batchnorm_forward_train_counted,
    partial_rows,
)
from tests import _reference_norm as ref
from tests._gradcheck import numeric_gradients

TOL = {np.float32: {"rtol": 2e-4, "atol": 2e-4}, np.float64: {"rtol": 1e-10, "atol": 1e-11}}
EPS = 1e-5


def _problem(m, n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((m, n)) * rng.uniform(0.5, 3, n) + rng.uniform(-2, 2, n)).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, n).astype(dtype)
    beta = rng.standard_normal(n).astype(dtype)
    grad_out = rng.standard_normal((m, n)).astype(dtype)
    return x, gamma, beta, grad_out


def _train(x, gamma, beta, running_mean=None, running_var=None, momentum=0.1, affine=True, track=True, eps=EPS):
    m, n = x.shape
    dtype = x.dtype
    rm = np.zeros(n, dtype) if running_mean is None else running_mean
    rv = np.ones(n, dtype) if running_var is None else running_var
    out = np.full_like(x, np.nan)
    x_hat = np.full_like(x, np.nan)
    mean = np.full(n, np.nan, dtype)
    inv_std = np.full(n, np.nan, dtype)
    partials = np.full((2, partial_rows(m), n), np.nan, dtype)
    batchnorm_forward_train(x, gamma, beta, rm, rv, out, x_hat, mean, inv_std, partials, eps, momentum, affine, track)
    return out, x_hat, mean, inv_std, rm, rv


def _backward(grad_out, x_hat, inv_std, gamma, affine=True):
    m, n = grad_out.shape
    grad_x = np.full_like(grad_out, np.nan)
    grad_gamma = np.full(n, np.nan, grad_out.dtype)
    grad_beta = np.full(n, np.nan, grad_out.dtype)
    partials = np.full((2, partial_rows(m), n), np.nan, grad_out.dtype)
    batchnorm_backward(grad_out, x_hat, inv_std, gamma, grad_x, grad_gamma, grad_beta, partials, affine)
    return grad_x, grad_gamma, grad_beta


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_train_forward_backward_match_reference(dtype):
    for shape in [(2, 3), (7, 13), (130, 5), (300, 301)]:  # smallest batch, odd, chunk edges, parallel
        x, gamma, beta, grad_out = _problem(*shape, dtype)
        for affine in (True, False):
            out, x_hat, mean, inv_std, rm, rv = _train(x, gamma, beta, affine=affine)
            want_out, want_hat, want_mean, want_var = ref.batchnorm_forward_train(
                x, gamma if affine else None, beta, EPS
            )
            for got, want, label in [
                (out, want_out, "out"),
                (x_hat, want_hat, "x_hat"),
                (mean, want_mean, "mean"),
                (inv_std, 1 / np.sqrt(want_var + EPS), "inv_std"),
            ]:
                assert got.dtype == dtype
                np.testing.assert_allclose(got, want, **TOL[dtype], err_msg=f"{label} {shape} affine={affine}")
            want_rm, want_rv = ref.batchnorm_running_update(
                np.zeros(shape[1]), np.ones(shape[1]), want_mean, want_var, shape[0], 0.1
            )
            np.testing.assert_allclose(rm, want_rm, **TOL[dtype])
            np.testing.assert_allclose(rv, want_rv, **TOL[dtype])
            grads = _backward(grad_out, x_hat, inv_std, gamma, affine)
            wants = ref.batchnorm_backward(x, grad_out, gamma if affine else None, EPS)
            for got, want, label in zip(grads, wants, ("grad_x", "grad_gamma", "grad_beta")):
                assert got.dtype == dtype
                scale = 1e2 if dtype == np.float32 and label == "grad_x" else 1.0  # cancellation in float32
                np.testing.assert_allclose(
                    got,
                    want,
                    rtol=TOL[dtype]["rtol"] * scale,
                    atol=TOL[dtype]["atol"] * scale,
                    err_msg=f"{label} {shape} {affine}",
                )


def test_track_false_leaves_running_stats_and_x_hat_may_be_out():
    x, gamma, beta, _ = _problem(9, 4, np.float64)
    rm, rv = np.full(4, 3.0), np.full(4, 5.0)
    _train(x, gamma, beta, rm, rv, track=False)
    assert np.all(rm == 3.0) and np.all(rv == 5.0)
    out = np.empty_like(x)
    mean, inv_std = np.empty(4), np.empty(4)
    batchnorm_forward_train(
        x, gamma, beta, rm, rv, out, out, mean, inv_std, np.empty((2, 1, 4)), EPS, 0.1, False, False
    )
    np.testing.assert_allclose(out, ref.batchnorm_forward_train(x, None, None, EPS)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eval_matches_reference_batch_one(dtype):
    x, gamma, beta, _ = _problem(1, 11, dtype)
    rng = np.random.default_rng(1)
    rm = rng.standard_normal(11).astype(dtype)
    rv = rng.uniform(0.2, 2, 11).astype(dtype)
    for affine in (True, False):
        out = np.full_like(x, np.nan)
        batchnorm_forward_eval(x, gamma, beta, rm, rv, out, EPS, affine)
        assert out.dtype == dtype
        want = ref.batchnorm_forward_eval(x, gamma if affine else None, beta, rm, rv, EPS)
        np.testing.assert_allclose(out, want, **TOL[dtype])
    big = _problem(300, 301, dtype)[0]  # the parallel path, in place
    rm, rv = np.resize(rm, 301), np.resize(rv, 301)
    gamma, beta = np.resize(gamma, 301), np.resize(beta, 301)
    want = ref.batchnorm_forward_eval(big, gamma, beta, rm, rv, EPS)
    batchnorm_forward_eval(big, gamma, beta, rm, rv, big, EPS, True)
    np.testing.assert_allclose(big, want, **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eval_backward_matches_reference_and_finite_differences(dtype):
    """The gradients of evaluation-mode batch norm (a frozen layer's training step): the float64
    reference, central differences of batchnorm_forward_eval, grad_x in place of grad_out, and
    without affine the parameter gradients left alone (the CPU layer did this step in NumPy)."""
    for m, n in [(1, 5), (7, 13), (300, 301)]:  # batch one, odd, the parallel path
        x, gamma, beta, grad_out = _problem(m, n, dtype, seed=m)
        rng = np.random.default_rng(n)
        rm, rv = rng.standard_normal(n).astype(dtype), rng.uniform(0.2, 2, n).astype(dtype)
        for affine in (True, False):
            x_hat, grad_x = np.full_like(x, np.nan), np.full_like(x, np.nan)
            grad_gamma, grad_beta = np.full(n, np.nan, dtype), np.full(n, np.nan, dtype)
            partials = np.full((2, partial_rows(m), n), np.nan, dtype)
            args = (x, gamma, rm, rv, x_hat, grad_x, grad_gamma, grad_beta, partials, EPS, affine)
            batchnorm_backward_eval(grad_out, *args)
            want = ref.batchnorm_backward_eval(x, grad_out, gamma if affine else None, rm, rv, EPS)
            np.testing.assert_allclose(grad_x, want[0], **TOL[dtype])
            if affine:
                np.testing.assert_allclose(grad_gamma, want[1], rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * m)
                np.testing.assert_allclose(grad_beta, want[2], rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * m)
            else:
                assert np.isnan(grad_gamma).all() and np.isnan(grad_beta).all()
            in_place = grad_out.copy()
            batchnorm_backward_eval(
                in_place, x, gamma, rm, rv, x_hat, in_place, grad_gamma, grad_beta, partials, EPS, affine
            )
            np.testing.assert_array_equal(in_place, grad_x)
    x, gamma, beta, upstream = _problem(5, 3, np.float64, seed=2)
    rm, rv = np.array([0.5, -1.0, 2.0]), np.array([0.3, 1.7, 4.0])

    def objective(x_, gamma_, beta_):
        out = np.empty_like(x_)
        batchnorm_forward_eval(x_, gamma_, beta_, rm, rv, out, EPS, True)
        return np.sum(upstream * out)

    grads = np.empty_like(x), np.empty(3), np.empty(3)
    batchnorm_backward_eval(upstream, x, gamma, rm, rv, np.empty_like(x), *grads, np.empty((2, 1, 3)), EPS, True)
    numeric = numeric_gradients(objective, [x, gamma, beta])
    for name, grad, expected in zip(("x", "gamma", "beta"), grads, numeric):
        np.testing.assert_allclose(grad, expected, rtol=1e-7, atol=1e-9, err_msg=name)


def test_backward_finite_differences():
    x, gamma, beta, upstream = _problem(5, 3, np.float64, seed=2)
    _, x_hat, _, inv_std, _, _ = _train(x, gamma, beta)
    grads = _backward(upstream, x_hat, inv_std, gamma)

    def objective(x_, gamma_, beta_):
        return np.sum(upstream * _train(x_, gamma_, beta_)[0])

    numeric = numeric_gradients(objective, [x, gamma, beta])
    for name, grad, expected in zip(("x", "gamma", "beta"), grads, numeric):
        np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-8, err_msg=name)


def test_bit_identical_on_one_and_two_threads():
    x, gamma, beta, grad_out = _problem(1000, 257, np.float32, seed=3)  # 16 chunks, parallel path
    threads = numba.get_num_threads()
    results = []
    try:
        for t in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(t)
            fwd = _train(x, gamma, beta)
            results.append(fwd + _backward(grad_out, fwd[1], fwd[3], gamma))
    finally:
        numba.set_num_threads(threads)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_matches_torch_over_several_steps():
    torch = pytest.importorskip("torch")
    m, n = 37, 6
    bn = torch.nn.BatchNorm1d(n, eps=EPS, momentum=0.1).double()
    rng = np.random.default_rng(4)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(rng.uniform(0.5, 1.5, n)))
        bn.bias.copy_(torch.tensor(rng.standard_normal(n)))
    gamma, beta = bn.weight.detach().numpy().copy(), bn.bias.detach().numpy().copy()
    rm, rv = np.zeros(n), np.ones(n)
    for step in range(4):
        x, _, _, grad_out = _problem(m, n, np.float64, seed=10 + step)
        out, x_hat, _, inv_std, rm, rv = _train(x, gamma, beta, rm, rv)
        grads = _backward(grad_out, x_hat, inv_std, gamma)
        xt = torch.tensor(x, requires_grad=True)
        bn.zero_grad()
        yt = bn.train()(xt)
        yt.backward(torch.tensor(grad_out))
        np.testing.assert_allclose(out, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
        for got, want in zip(grads, (xt.grad, bn.weight.grad, bn.bias.grad)):
            np.testing.assert_allclose(got, want.numpy(), rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(rm, bn.running_mean.numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(rv, bn.running_var.numpy(), rtol=1e-12, atol=1e-14)
    x = _problem(3, n, np.float64, seed=99)[0]
    out = np.empty_like(x)
    batchnorm_forward_eval(x, gamma, beta, rm, rv, out, EPS, True)
    np.testing.assert_allclose(out, bn.eval()(torch.tensor(x)).detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("momentum", [None, 0.0, 0.3])
def test_counted_running_statistics_match_torch(momentum):
    """batchnorm_forward_train_counted over several batches: momentum < 0 (torch's momentum=None) is
    the cumulative average 1 / batches counted (this one included), momentum 0 keeps the running
    statistics, any other is used as given; the batch count as torch's num_batches_tracked."""
    torch = pytest.importorskip("torch")
    m, n = 11, 5
    bn = torch.nn.BatchNorm1d(n, eps=EPS, momentum=momentum).double().train()
    rm, rv, batches = np.zeros(n), np.ones(n), np.zeros(1, np.int64)
    want_mean, want_var = np.zeros(n), np.ones(n)
    for step in range(1, 5):
        x, gamma, beta, _ = _problem(m, n, np.float64, seed=20 + step)
        out, x_hat, mean, inv_std = np.empty_like(x), np.empty_like(x), np.empty(n), np.empty(n)
        partials = np.empty((2, partial_rows(m), n))
        kernel_momentum = -1.0 if momentum is None else momentum
        batchnorm_forward_train_counted(
            x, gamma, beta, rm, rv, out, x_hat, mean, inv_std, partials, EPS, kernel_momentum, True, True, batches
        )
        with torch.no_grad():
            bn(torch.tensor(x))
        factor = ref.batchnorm_momentum(momentum, step)
        want_mean, want_var = ref.batchnorm_running_update(want_mean, want_var, x.mean(0), x.var(0), m, factor)
        assert batches[0] == step == int(bn.num_batches_tracked)
        np.testing.assert_allclose(rm, want_mean, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(rv, want_var, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(rm, bn.running_mean.numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(rv, bn.running_var.numpy(), rtol=1e-12, atol=1e-14)
    if momentum == 0.0:
        assert np.all(rm == 0.0) and np.all(rv == 1.0)


def test_counted_forward_without_tracking_counts_no_batch():
    """track False (batch statistics in evaluation, track_running_stats=False): neither the running
    statistics nor the batch count change, with the cumulative average too."""
    x, gamma, beta, _ = _problem(9, 4, np.float64)
    rm, rv, batches = np.full(4, 3.0), np.full(4, 5.0), np.array([2], np.int64)
    out, x_hat, mean, inv_std = np.empty_like(x), np.empty_like(x), np.empty(4), np.empty(4)
    batchnorm_forward_train_counted(
        x, gamma, beta, rm, rv, out, x_hat, mean, inv_std, np.empty((2, 1, 4)), EPS, -1.0, True, False, batches
    )
    assert batches[0] == 2 and np.all(rm == 3.0) and np.all(rv == 5.0)
    np.testing.assert_allclose(out, ref.batchnorm_forward_train(x, gamma, beta, EPS)[0], rtol=1e-12, atol=1e-12)
