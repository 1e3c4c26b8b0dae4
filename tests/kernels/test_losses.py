"""Loss kernels (value + gradient in one pass) against float64 references, finite differences and torch."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from fastnn._config import PARALLEL_MIN_ELEMENTS
from fastnn.kernels.losses import (
    CLASSES,
    LOSSES,
    accuracy_count,
    binary_accuracy_count,
    cross_entropy_forward_backward,
    cross_entropy_rows,
    elementwise_loss,
    elementwise_loss_rows,
    n_partials,
    weighted_accuracy_count,
)
from tests import _reference_core as ref

NAMES = sorted(LOSSES)
DTYPES = [np.float32, np.float64]
SHAPES = [(1, 1), (1, 5), (7, 3), (130, 10)]
TOL = {np.float32: {"rtol": 2e-5, "atol": 1e-6}, np.float64: {"rtol": 1e-12, "atol": 1e-14}}


def _loss(name, pred, target, mean=True, compute_grad=True, delta=1.0, grad=None):
    """(loss, grad) from the kernel; grad starts as NaN so unwritten entries show."""
    code, kind = LOSSES[name]
    if grad is None:
        grad = np.full_like(pred, np.nan)
    partials = np.full(n_partials(pred.shape[0]), np.nan)
    if kind == CLASSES:
        value = cross_entropy_forward_backward(pred, target, grad, partials, mean, compute_grad)
    else:
        value = elementwise_loss(pred, target, grad, partials, code, delta, mean, compute_grad)
    return value, grad


def _reference(name, pred, target, mean=True, delta=1.0):
    reduction = "mean" if mean else "sum"
    if name == "huber":
        return ref.huber(pred, target, reduction, delta)
    return ref.LOSS_REFERENCES[name](pred, target, reduction)


def _data(name, shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    pred = (rng.standard_normal(shape) * 2).astype(dtype)
    if LOSSES[name][1] == CLASSES:
        return pred, rng.integers(0, shape[1], shape[0]).astype(np.int64)
    if name == "binary_cross_entropy":
        target = rng.uniform(0, 1, shape)
        target.flat[::3] = rng.integers(0, 2, target.flat[::3].shape)  # hard 0/1 labels too
        return pred, target.astype(dtype)
    return pred, (rng.standard_normal(shape) * 2).astype(dtype)


def test_loss_table():
    assert set(LOSSES) == {"mse", "mae", "huber", "binary_cross_entropy", "cross_entropy"}
    assert set(LOSSES) == set(ref.LOSS_REFERENCES)
    assert len({code for code, _ in LOSSES.values()}) == len(LOSSES)


@pytest.mark.parametrize("mean", [True, False], ids=["mean", "sum"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_matches_reference(name, dtype, mean):
    for delta in [1.0, 0.5] if name == "huber" else [1.0]:
        for shape in SHAPES:
            pred, target = _data(name, shape, dtype)
            value, grad = _loss(name, pred, target, mean, delta=delta)
            want_value, want_grad = _reference(name, pred, target, mean, delta)
            assert isinstance(value, float)
            assert grad.dtype == pred.dtype
            np.testing.assert_allclose(value, want_value, **TOL[dtype], err_msg=f"{shape} delta={delta}")
            np.testing.assert_allclose(grad, want_grad, **TOL[dtype], err_msg=f"{shape} delta={delta}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_rows_match_reference_per_sample(name, dtype):
    """The unreduced per-sample losses: row i equals the reference "sum" loss of row i alone."""
    code, kind = LOSSES[name]
    for shape in SHAPES:
        pred, target = _data(name, shape, dtype)
        out = np.full(shape[0], np.nan)
        if kind == CLASSES:
            cross_entropy_rows(pred, target, out)
        else:
            elementwise_loss_rows(pred, target, out, code, 0.5 if name == "huber" else 1.0)
        want = [_reference(name, pred[i : i + 1], target[i : i + 1], False, 0.5)[0] for i in range(shape[0])]
        np.testing.assert_allclose(out, want, **TOL[dtype], err_msg=f"{shape}")


@pytest.mark.parametrize("name", NAMES)
def test_compute_grad_false_leaves_grad_untouched(name):
    pred, target = _data(name, (70, 4), np.float64)
    sentinel = np.full_like(pred, 5.0)
    value, grad = _loss(name, pred, target, compute_grad=False, grad=sentinel)
    assert np.all(grad == 5.0)
    assert value == _loss(name, pred, target)[0]


@pytest.mark.parametrize("name", ["cross_entropy", "mse"])
def test_partials_buffer_may_be_longer(name):
    """Only the first n_partials(batch) entries are used (callers keep one buffer for the largest batch)."""
    pred, target = _data(name, (70, 4), np.float64)
    code, kind = LOSSES[name]
    grad = np.empty_like(pred)
    partials = np.full(n_partials(70) + 5, np.nan)
    if kind == CLASSES:
        value = cross_entropy_forward_backward(pred, target, grad, partials, True, True)
    else:
        value = elementwise_loss(pred, target, grad, partials, code, 1.0, True, True)
    assert value == _loss(name, pred, target)[0]
    assert np.all(np.isnan(partials[n_partials(70) :]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_logits_stay_finite(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]], dtype=dtype)
    labels = np.array([1, 2, 0], dtype=np.int64)
    value, grad = _loss("cross_entropy", logits, labels)
    want_value, want_grad = ref.cross_entropy(logits, labels)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(value, want_value, rtol=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-6, atol=1e-7)

    targets = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.5], [1.0, 1.0, 0.0]], dtype=dtype)
    value, grad = _loss("binary_cross_entropy", logits, targets)
    want_value, want_grad = ref.binary_cross_entropy(logits, targets)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(value, want_value, rtol=1e-6)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-6, atol=1e-7)


def _smooth_points(name, shape, seed=1):
    """Inputs away from the kinks of mae (d = 0) and huber (|d| = delta = 1)."""
    rng = np.random.default_rng(seed)
    pred, target = _data(name, shape, np.float64, seed)
    if name in ("mae", "huber"):
        d = rng.choice([0.3, 0.7, 1.4, 1.9], shape) * rng.choice([-1.0, 1.0], shape)
        target = pred - d
    return pred, target


@pytest.mark.parametrize("mean", [True, False], ids=["mean", "sum"])
@pytest.mark.parametrize("name", NAMES)
def test_gradient_finite_differences(name, mean):
    pred, target = _smooth_points(name, (3, 4))
    _, grad = _loss(name, pred, target, mean)
    eps = 1e-6
    numeric = np.empty_like(pred)
    for idx in np.ndindex(pred.shape):
        plus, minus = pred.copy(), pred.copy()
        plus[idx] += eps
        minus[idx] -= eps
        numeric[idx] = (_loss(name, plus, target, mean)[0] - _loss(name, minus, target, mean)[0]) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def _torch_loss(name, delta):
    F = pytest.importorskip("torch").nn.functional
    return {
        "cross_entropy": F.cross_entropy,
        "binary_cross_entropy": F.binary_cross_entropy_with_logits,
        "mse": F.mse_loss,
        "mae": F.l1_loss,
        "huber": lambda p, t, reduction: F.huber_loss(p, t, reduction=reduction, delta=delta),
    }[name]


@pytest.mark.parametrize("mean", [True, False], ids=["mean", "sum"])
@pytest.mark.parametrize("name", NAMES)
def test_matches_torch(name, mean):
    torch = pytest.importorskip("torch")
    delta = 0.8
    pred, target = _data(name, (9, 5), np.float64, seed=2)
    if name in ("mae", "huber"):  # torch's conventions at the kinks: d = 0 and |d| = delta
        target[0] = pred[0]
        target[1] = pred[1] - delta
        target[2] = pred[2] + delta
    value, grad = _loss(name, pred, target, mean, delta=delta)
    pt = torch.tensor(pred, requires_grad=True)
    lt = _torch_loss(name, delta)(pt, torch.tensor(target), reduction="mean" if mean else "sum")
    lt.backward()
    np.testing.assert_allclose(value, lt.item(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad, pt.grad.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", NAMES)
def test_bit_identical_on_one_and_two_threads(name):
    shape = (1000, 100)
    assert shape[0] * shape[1] >= PARALLEL_MIN_ELEMENTS
    pred, target = _data(name, shape, np.float32, seed=3)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _loss(name, pred, target)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = _loss(name, pred, target)
    finally:
        numba.set_num_threads(threads)
    assert one[0] == two[0]
    np.testing.assert_array_equal(one[1], two[1])
    want_value, want_grad = _reference(name, pred, target)
    np.testing.assert_allclose(two[0], want_value, rtol=1e-5)
    np.testing.assert_allclose(two[1], want_grad, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
def test_accuracy_counts(dtype):
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((37, 4)).astype(dtype)
    logits[0] = [1.0, 3.0, 3.0, 0.0]  # a tie: the first maximum wins, as np.argmax
    labels = rng.integers(0, 4, 37).astype(np.int64)
    labels[0] = 1
    assert accuracy_count(logits, labels) == ref.accuracy_count(logits, labels)
    assert accuracy_count(logits, np.argmax(logits, axis=1)) == 37
    targets = (logits > 0).astype(dtype)
    assert binary_accuracy_count(logits, targets) == 37
    targets[:10, 3] = 1 - targets[:10, 3]  # one wrong label spoils a row (exact match)
    targets[10:20, :] = 1 - targets[10:20, :]
    assert binary_accuracy_count(logits, targets) == ref.binary_accuracy_count(logits, targets) == 17
    assert (
        binary_accuracy_count(logits[:, :1], targets[:, :1])
        == ref.binary_accuracy_count(logits[:, :1], targets[:, :1])
        == 27
    )


def _scan_argmax(row):
    """The first maximum as a scan that moves on a strictly greater value only: NaN never wins,
    except a NaN in column 0, which stays (np.argmax gives the first NaN instead)."""
    best = 0
    for j in range(1, row.shape[0]):
        if row[j] > row[best]:
            best = j
    return best


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [1, 2, 3, 8, 10, 17])
def test_accuracy_count_takes_the_first_maximum_with_nan_ties_and_zeros(dtype, c):
    """The branch-free argmax (a maximum, then the first column equal to it) gives the scan's column
    on rows of NaN, +-inf, ties and +-0, one row at a time and over the batch (weighted too)."""
    rng = np.random.default_rng(c)
    m = 301
    x = rng.standard_normal((m, c))
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, 1.0])
    mask = rng.random((m, c)) < 0.35
    x[mask] = rng.choice(special, mask.sum())
    x[0] = np.nan
    if c > 1:
        x[1, 0], x[2, -1] = np.nan, np.nan  # NaN first (column 0 wins), NaN last (never wins)
    x = x.astype(dtype)
    want = np.array([_scan_argmax(row) for row in x])
    assert want[0] == 0
    for label in range(c):
        labels = np.full(m, label, np.int64)
        hits = [accuracy_count(x[i : i + 1], labels[i : i + 1]) for i in range(m)]
        np.testing.assert_array_equal(hits, want == label)
        assert accuracy_count(x, labels) == int((want == label).sum())
        target = np.stack([labels.astype(np.float64), np.ones(m)], axis=1)
        assert weighted_accuracy_count(x, target) == int((want == label).sum())


@pytest.mark.parametrize("config", [{"reduction": "sum"}, None, "mse"])
def test_a_loss_config_without_a_name_is_refused_clearly(config):
    """losses.from_config named the missing key only through a bare KeyError('name')."""
    from fastnn import losses

    with pytest.raises(ValueError, match="'name' key"):
        losses.from_config(config)


def test_shifted_exp_float32_within_one_ulp_of_the_rounded_exp():
    """The vectorised float32 exp of the cross-entropy rows: <= 1 ulp from exp rounded once, 0 below -104, NaN kept."""
    from numba import njit

    from fastnn.kernels.losses import shifted_exp

    @njit
    def apply(v, out):
        for i in range(v.size):
            out[i] = shifted_exp(v[i])

    v = np.concatenate([np.linspace(-110, 0, 400_001), [-np.inf, np.nan, -0.0]]).astype(np.float32)
    out = np.empty_like(v)
    apply(v, out)
    want = np.exp(v.astype(np.float64)).astype(np.float32)
    ulps = np.abs(out[:-1].view(np.int32).astype(np.int64) - want[:-1].view(np.int32).astype(np.int64))
    assert ulps.max() <= 1
    assert np.all(out[v < -104] == 0) and np.isnan(out[-2]) and out[-1] == 1
