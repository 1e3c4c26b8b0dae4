"""``CrossEntropy(ignore_index=...)`` on "cuda": the loss, its gradient and the accuracy count of the
device kernels equal the CPU's, and a fit (plain, weighted, masked) equals the CPU's fit."""

import numpy as np
import pytest
from numba import cuda

import fastnn as fnn
from fastnn import backend

IGNORE = -100


def _value(loss, *args):
    """The loss of device arrays through its kernel call (what fit runs; the simulator's arrays lack
    the negative shape indexing of the direct call's checks)."""
    fn, call_args = loss.call(*args)
    return fn(*call_args)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_device_loss_gradient_and_count_equal_the_cpu(dtype, reduction):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((37, 4)).astype(dtype)
    labels = rng.integers(0, 4, 37)
    labels[::3] = IGNORE
    loss = fnn.losses.CrossEntropy(reduction=reduction, ignore_index=IGNORE)
    grad = np.empty_like(logits)
    want = loss.forward_backward(logits, labels, grad)
    d_logits, d_labels = cuda.to_device(logits), cuda.to_device(labels)
    d_grad = cuda.to_device(np.full_like(logits, np.nan))
    got = _value(loss, d_logits, d_labels, d_grad)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert got == pytest.approx(want, rel=rtol)
    np.testing.assert_allclose(d_grad.copy_to_host(), grad, rtol=rtol, atol=rtol * 1e-2)
    assert not d_grad.copy_to_host()[labels == IGNORE].any()
    assert fnn.losses.count_correct(loss, d_logits, d_labels) == loss.correct_count(logits, labels)
    everything = cuda.to_device(np.full(37, IGNORE))
    assert _value(loss, d_logits, everything, d_grad) == 0.0  # all ignored: 0, not nan
    np.testing.assert_array_equal(d_grad.copy_to_host(), 0.0)


def test_device_masked_loss_with_ignored_targets_equals_the_cpu():
    rng = np.random.default_rng(1)
    lengths = np.array([3, 1, 2, 3])
    logits = rng.standard_normal((12, 3))
    labels = rng.integers(0, 3, 12)
    labels[[0, 5, 9]] = IGNORE
    loss = fnn.losses.CrossEntropy(ignore_index=IGNORE)
    grad = np.empty_like(logits)
    want = loss.forward_backward(logits, labels, grad, True, lengths, 1)
    d_grad = cuda.to_device(np.empty_like(logits))
    args = (cuda.to_device(logits), cuda.to_device(labels))
    got = _value(loss, *args, d_grad, True, cuda.to_device(lengths), 1)
    assert got == pytest.approx(want, rel=1e-12)
    np.testing.assert_allclose(d_grad.copy_to_host(), grad, rtol=1e-12, atol=1e-15)
    assert fnn.losses.count_correct(loss, *args, cuda.to_device(lengths), 1) == loss.correct_count(
        logits, labels, lengths, 1
    )


@pytest.mark.parametrize("weighted", [False, True])
def test_fit_and_evaluate_equal_the_cpu(weighted):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((20, 3))
    y = rng.integers(0, 3, 20)
    y[rng.random(20) < 0.3] = IGNORE
    w = rng.uniform(0.5, 2.0, 20) if weighted else None
    histories, params, logs = {}, {}, {}
    for device in ("cpu", "cuda"):
        model = fnn.Sequential([fnn.Dense(3, 3)], dtype="float64", seed=0, device=device)
        model.compile(fnn.losses.CrossEntropy(ignore_index=IGNORE), fnn.optim.SGD(lr=0.3), metrics=["f1"])
        histories[device] = model.fit(X, y, sample_weight=w, epochs=2, batch_size=8, shuffle=False, verbose=0).history
        params[device] = backend.to_host(model.params)
        logs[device] = model.evaluate(X, y, sample_weight=w)
    for key, values in histories["cpu"].items():
        np.testing.assert_allclose(histories["cuda"][key], values, rtol=1e-10, err_msg=key)
    np.testing.assert_allclose(params["cuda"], params["cpu"], rtol=1e-10, atol=1e-14)
    assert logs["cuda"] == pytest.approx(logs["cpu"], rel=1e-10)
