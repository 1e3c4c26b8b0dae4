"""CUDA losses, optimizer updates and gradient clipping against their CPU twins."""

from __future__ import annotations

import numpy as np
import pytest
from numba import cuda

from fastnn.kernels import losses as cpu_loss
from fastnn.kernels import optim as cpu_optim
from fastnn.kernels.cuda import losses as gpu_loss
from fastnn.kernels.cuda import optim as gpu_optim

from .conftest import f64, host, to_device, tol


@pytest.mark.parametrize("dtype,mean", [(np.float32, True), (np.float64, False)])
def test_cross_entropy(dtype, mean, rng):
    m, c = 11, 6
    logits = (rng.standard_normal((m, c)) * 3).astype(dtype)
    labels = rng.integers(0, c, m).astype(np.int64)
    (logits64,) = f64(logits)
    grad = np.empty_like(logits64)
    want = cpu_loss.cross_entropy_forward_backward(logits64, labels, grad, np.empty(cpu_loss.n_partials(m)), mean, True)
    dl, dlab = to_device(logits, labels)
    dgrad = cuda.device_array_like(logits)
    partials = cuda.device_array(gpu_loss.n_partials(m), np.float64)
    got = gpu_loss.cross_entropy_forward_backward(dl, dlab, dgrad, partials, mean, True)
    rtol, atol = tol(dtype)
    assert got == pytest.approx(want, rel=1e-5 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(host(dgrad), grad, rtol=rtol, atol=atol)
    assert host(dgrad).dtype == dtype
    assert gpu_loss.cross_entropy_forward_backward(dl, dlab, dgrad, partials, mean, False, sync=False) is None
    assert host(partials)[0] == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("name", ["mse", "mae", "huber", "binary_cross_entropy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elementwise_losses(name, dtype, rng):
    code = cpu_loss.LOSSES[name][0]
    m, k = 70, 3  # two row chunks of the CPU reduction
    pred = (rng.standard_normal((m, k)) * 2).astype(dtype)
    target = (
        rng.random((m, k)).astype(dtype)
        if name == "binary_cross_entropy"
        else rng.standard_normal((m, k)).astype(dtype)
    )
    pred64, target64 = f64(pred, target)
    grad = np.empty_like(pred64)
    want = cpu_loss.elementwise_loss(pred64, target64, grad, np.empty(cpu_loss.n_partials(m)), code, 0.7, True, True)
    dp, dt = to_device(pred, target)
    dgrad = cuda.device_array_like(pred)
    got = gpu_loss.elementwise_loss(dp, dt, dgrad, cuda.device_array(gpu_loss.n_partials(m)), code, 0.7, True, True)
    rtol, atol = tol(dtype)
    assert got == pytest.approx(want, rel=1e-5 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(host(dgrad), grad, rtol=rtol, atol=atol)


def test_accuracy_counts(rng):
    logits = rng.standard_normal((40, 5))
    labels = rng.integers(0, 5, 40).astype(np.int64)
    targets = (logits > 0) * 0.8 + 0.1  # all rows match but those spoiled below (exact match per row)
    targets[:7, 2] = 1 - targets[:7, 2]
    dl, dlab, dt = to_device(logits, labels, targets)
    assert gpu_loss.accuracy_count(dl, dlab) == cpu_loss.accuracy_count(logits, labels)
    assert gpu_loss.binary_accuracy_count(dl, dt) == cpu_loss.binary_accuracy_count(logits, targets) == 33


@pytest.mark.parametrize("name", ["cross_entropy", "mse", "binary_cross_entropy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_masked_losses_and_counts_equal_the_cpu(name, dtype, rng):
    """Padded steps (lengths, per_step 2) left out: the same loss, gradient (zero on padded rows)
    and counts as the CPU kernels."""
    lengths = np.array([3, 1, 2, 3, 1], np.int64)
    steps, per_step, k = 3, 2, 4
    m = len(lengths) * steps * per_step
    pred = (rng.standard_normal((m, k)) * 2).astype(dtype)
    labels = rng.integers(0, k, m).astype(np.int64)
    target = rng.random((m, k)).astype(dtype)
    grad = np.empty_like(pred)
    partials = np.empty(cpu_loss.n_partials(m))
    dgrad = cuda.device_array_like(pred)
    dpartials = cuda.device_array(gpu_loss.n_partials(m), np.float64)
    dp, dlab, dt, dlen = to_device(pred, labels, target, lengths)
    if name == "cross_entropy":
        want = cpu_loss.cross_entropy_forward_backward(pred, labels, grad, partials, True, True, lengths, per_step)
        got = gpu_loss.cross_entropy_forward_backward(dp, dlab, dgrad, dpartials, True, True, dlen, per_step)
        counts = (
            gpu_loss.accuracy_count(dp, dlab, dlen, per_step),
            cpu_loss.accuracy_count(pred, labels, lengths, per_step),
        )
    else:
        code = cpu_loss.LOSSES[name][0]
        want = cpu_loss.elementwise_loss(pred, target, grad, partials, code, 1.0, True, True, lengths, per_step)
        got = gpu_loss.elementwise_loss(dp, dt, dgrad, dpartials, code, 1.0, True, True, dlen, per_step)
        counts = (
            gpu_loss.binary_accuracy_count(dp, dt, dlen, per_step),
            cpu_loss.binary_accuracy_count(pred, target, lengths, per_step),
        )
    valid = np.repeat(np.arange(steps)[None, :] < lengths[:, None], per_step, axis=1).reshape(-1)
    rtol, atol = tol(dtype)
    assert got == pytest.approx(want, rel=1e-5 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(host(dgrad), grad, rtol=rtol, atol=atol)
    assert not host(dgrad)[~valid].any()
    assert counts[0] == counts[1] < valid.sum()  # (some valid rows are wrong: the count is not trivial)


def test_accuracy_counts_reuse_their_scratch(rng, monkeypatch):
    """A fit counts its accuracy at every step: once a thread's scratch is large enough, no
    device allocation per call (the first call of a larger batch grows it), same counts."""
    small, large = rng.standard_normal((8, 3)), rng.standard_normal((300, 3))
    labels = rng.integers(0, 3, 300).astype(np.int64)
    gpu_loss.accuracy_count(*to_device(small, labels[:8]))  # this thread's scratch exists
    allocations = []
    real = cuda.device_array
    monkeypatch.setattr(cuda, "device_array", lambda *a, **k: allocations.append(a) or real(*a, **k))
    for logits in (small, small, large, large, small):
        dl, dlab = to_device(logits, labels[: len(logits)])
        assert gpu_loss.accuracy_count(dl, dlab) == cpu_loss.accuracy_count(logits, labels[: len(logits)])
        gpu_loss.binary_accuracy_count(dl, to_device((logits > 0) * 1.0)[0])
    assert len(allocations) <= 2  # the larger batch's partials, the binary count's label stand-in: once each


N, N_DECAY = 600, 450  # more elements than the simulator's threads: the grid-stride loop is exercised

# name -> (launcher arguments after the buffers, number of state buffers, which buffers are empty)
OPTIMIZERS = {
    "sgd": ("sgd_update", 1, lambda: (0.1, 0.9, 0.1, 0.01, N_DECAY, True, 0.5, False)),
    "sgd_plain": ("sgd_update", 1, lambda: (0.1, 0.0, 0.0, 0.01, N_DECAY, False, 1.0, True)),
    "rmsprop": ("rmsprop_update", 3, lambda: (0.01, 0.99, 1e-8, 0.01, N_DECAY, 0.9, True, 0.7)),
    "rmsprop_plain": ("rmsprop_update", 3, lambda: (0.01, 0.9, 1e-8, 0.0, N_DECAY, 0.0, False, 1.0)),
    "adagrad": ("adagrad_update", 1, lambda: (0.1, 0.01, 1e-10, 0.01, N_DECAY, 3, 1.0)),
    "adam": ("adam_update", 3, lambda: (1e-3, 0.9, 0.999, 1e-8, 0.01, N_DECAY, False, False, 3, 0.8)),
    "adamw_amsgrad": ("adam_update", 3, lambda: (1e-3, 0.9, 0.999, 1e-8, 0.1, N_DECAY, True, True, 5, 1.0)),
    "lion": ("lion_update", 1, lambda: (1e-3, 0.9, 0.99, 0.1, N_DECAY, 1.0)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(OPTIMIZERS))
def test_optimizer_update(case, dtype, rng):
    fn, n_states, args = OPTIMIZERS[case]
    params = rng.standard_normal(N).astype(dtype)
    grads = rng.standard_normal(N).astype(dtype)
    states = [np.abs(rng.standard_normal(N)).astype(dtype) for _ in range(n_states)]
    if case == "sgd_plain":
        states = [np.empty(0, dtype)]
    if case == "rmsprop_plain":
        states = [states[0], np.empty(0, dtype), np.empty(0, dtype)]
    if case == "adam":
        states[2] = np.empty(0, dtype)
    d_params, d_grads, *d_states = to_device(params, grads, *states)
    cpu_p, cpu_g, *cpu_s = f64(params, grads, *states)
    getattr(cpu_optim, fn)(cpu_p, cpu_g, *cpu_s, *args())
    getattr(gpu_optim, fn)(d_params, d_grads, *d_states, *args())
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(host(d_params), cpu_p, rtol=rtol, atol=atol)
    assert host(d_params).dtype == dtype
    for d, s in zip(d_states, cpu_s):
        np.testing.assert_allclose(host(d), s, rtol=rtol, atol=atol)


def test_grad_global_norm_and_clip(rng):
    g = rng.standard_normal(1500)
    want = cpu_optim.grad_global_norm(g, np.empty(cpu_optim.norm_partials_size(g.size)))
    (dg,) = to_device(g)
    partials = cuda.device_array(gpu_optim.norm_partials_size(g.size), np.float64)
    assert gpu_optim.grad_global_norm(dg, partials) == pytest.approx(want, rel=1e-12)
    assert gpu_optim.grad_global_norm(dg, partials, sync=False) is None
    assert host(partials)[0] == pytest.approx(want, rel=1e-12)
    clipped = g.copy()
    cpu_optim.clip_by_value(clipped, 0.5)
    gpu_optim.clip_by_value(dg, 0.5)
    np.testing.assert_array_equal(host(dg), clipped)


def test_two_stage_reductions_with_gpu_block_sizes(gpu_geometry, rng):
    """Per-block float64 tree sums then finish_sum (losses, gradient norm) with a GPU's 256-thread blocks."""
    from fastnn.kernels.cuda import _common

    assert _common.BLOCK == gpu_geometry["BLOCK"] == 256
    test_cross_entropy(np.float64, True, rng)
    test_grad_global_norm_and_clip(rng)
