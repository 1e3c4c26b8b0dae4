"""The sample-weighted losses as kernels (kernels.losses.weighted_cross_entropy,
weighted_elementwise_loss, weight_sum, weighted_accuracy_count): against the float64 reference,
finite differences and the NumPy formula they replaced (fastnn 0.x's SampleWeighted._weighted): its
gradient bit for bit (the same base kernels, NumPy's pairwise weight sum reproduced), its value within
m ulp of the weighted sum, m the rows (only the order of the dot product of the per-sample losses with
the weights differs: BLAS's ddot there, row order here; the summation-order bound is m eps)."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from fastnn._config import PARALLEL_MIN_ELEMENTS
from fastnn.kernels.losses import (
    CLASSES,
    LOSSES,
    cross_entropy_forward_backward,
    cross_entropy_rows,
    elementwise_loss,
    elementwise_loss_rows,
    n_partials,
    weight_sum,
    weighted_accuracy_count,
    weighted_cross_entropy,
    weighted_elementwise_loss,
)
from tests import _reference_core as ref

NAMES = sorted(LOSSES)
DTYPES = [np.float32, np.float64]
SHAPES = [(1, 1), (1, 4), (7, 3), (130, 5), (300, 2)]  # batch 1, odd, past one pairwise block (128)
TOL = {np.float32: {"rtol": 2e-5, "atol": 1e-6}, np.float64: {"rtol": 1e-12, "atol": 1e-14}}


def _data(name, shape, dtype, seed=0, zero_weights=False):
    rng = np.random.default_rng(seed)
    pred = (rng.standard_normal(shape) * 2).astype(dtype)
    if LOSSES[name][1] == CLASSES:
        target = rng.integers(0, shape[1], shape[0]).astype(np.int64)
    elif name == "binary_cross_entropy":
        target = rng.uniform(0, 1, shape).astype(dtype)
    else:
        target = (rng.standard_normal(shape) * 2).astype(dtype)
    weights = np.zeros(shape[0]) if zero_weights else rng.uniform(0, 3, shape[0])
    if shape[0] > 2 and not zero_weights:
        weights[1] = 0.0
    return pred, target, weights


def _weighted(target, weights):
    return np.column_stack([target.reshape(target.shape[0], -1), weights]).astype(np.float64)


def _kernel(name, pred, target, weights, mean=True, compute_grad=True, delta=1.0):
    """(loss, grad) of the weighted kernel; grad starts as NaN so unwritten entries show."""
    code, kind = LOSSES[name]
    grad = np.full_like(pred, np.nan)
    m = pred.shape[0]
    rows = np.full(m + 2, np.nan)  # scratch may be longer
    wt = _weighted(target, weights)
    if kind == CLASSES:
        labels = np.full(m + 1, -1, np.int64)
        value = weighted_cross_entropy(pred, wt, grad, labels, rows, mean, compute_grad)
    else:
        base = np.full_like(pred, np.nan)
        value = weighted_elementwise_loss(pred, wt, grad, base, rows, code, delta, mean, compute_grad)
    return value, grad


def _numpy_formula(name, pred, target, weights, mean=True, delta=1.0):
    """The NumPy formula the kernels replaced (SampleWeighted._weighted before session 9)."""
    code, kind = LOSSES[name]
    m = pred.shape[0]
    rows, grad = np.empty(m), np.empty_like(pred)
    partials = np.zeros(n_partials(m))
    w = _weighted(target, weights)[:, -1]  # a strided column, as split() gave it
    if kind == CLASSES:
        cross_entropy_rows(pred, target, rows)
        cross_entropy_forward_backward(pred, target, grad, partials, mean, True)
        per_sample = 1
    else:
        elementwise_loss_rows(pred, target, rows, code, delta)
        elementwise_loss(pred, target, grad, partials, code, delta, mean, True)
        per_sample = pred.shape[1]
    if mean:
        total = float(w.sum()) or np.inf
        factor, divisor = m / total, total * per_sample
    else:
        factor, divisor = 1.0, 1.0
    grad *= (w * factor).astype(grad.dtype)[:, None]
    return float(rows @ w) / divisor, grad


@pytest.mark.parametrize("mean", [True, False], ids=["mean", "sum"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_matches_reference(name, dtype, mean):
    for shape in SHAPES:
        for zero in (False, True):
            pred, target, weights = _data(name, shape, dtype, zero_weights=zero)
            delta = 0.5 if name == "huber" else 1.0
            value, grad = _kernel(name, pred, target, weights, mean, delta=delta)
            want_value, want_grad = ref.weighted_loss(name, pred, target, weights, "mean" if mean else "sum", delta)
            assert isinstance(value, float) and grad.dtype == pred.dtype
            np.testing.assert_allclose(value, want_value, **TOL[dtype], err_msg=f"{shape} zero={zero}")
            np.testing.assert_allclose(grad, want_grad, **TOL[dtype], err_msg=f"{shape} zero={zero}")


@pytest.mark.parametrize("mean", [True, False], ids=["mean", "sum"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_gradient_bits_equal_the_numpy_formula_and_the_value_within_m_ulp(name, dtype, mean):
    for shape in [*SHAPES, (1000, 3)]:
        pred, target, weights = _data(name, shape, dtype, seed=5)
        value, grad = _kernel(name, pred, target, weights, mean)
        want_value, want_grad = _numpy_formula(name, pred, target, weights, mean)
        np.testing.assert_array_equal(grad, want_grad, err_msg=f"{shape}")
        assert abs(value - want_value) <= max(4, shape[0]) * np.spacing(abs(want_value)), shape


@pytest.mark.parametrize("n", [*range(0, 40), 127, 128, 129, 136, 257, 1000, 4099])
def test_weight_sum_is_numpys_pairwise_sum_bit_for_bit(n):
    rng = np.random.default_rng(n)
    target = rng.standard_normal((n + 3, 3)) * 10.0 ** rng.uniform(-4, 4, (n + 3, 1))
    assert 0.0 + weight_sum(target, 2, n) == target[2 : 2 + n, -1].sum()


@pytest.mark.parametrize("mean", [True, False], ids=["mean", "sum"])
@pytest.mark.parametrize("name", NAMES)
def test_gradient_finite_differences(name, mean):
    rng = np.random.default_rng(4)
    pred, target, weights = _data(name, (4, 3), np.float64, seed=4)
    if name in ("mae", "huber"):  # away from the kinks
        target = pred + np.where(rng.uniform(size=pred.shape) < 0.5, -1.7, 1.7)
    _, grad = _kernel(name, pred, target, weights, mean)
    eps = 1e-6
    numeric = np.empty_like(pred)
    for idx in np.ndindex(pred.shape):
        plus, minus = pred.copy(), pred.copy()
        plus[idx] += eps
        minus[idx] -= eps
        numeric[idx] = (
            _kernel(name, plus, target, weights, mean)[0] - _kernel(name, minus, target, weights, mean)[0]
        ) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_compute_grad_false_leaves_grad_untouched(name):
    pred, target, weights = _data(name, (9, 4), np.float64)
    value, grad = _kernel(name, pred, target, weights, compute_grad=False)
    assert np.isnan(grad).all()
    code, kind = LOSSES[name]  # evaluation passes a placeholder gradient of another shape
    wt, rows, placeholder = _weighted(target, weights), np.zeros(9), np.zeros((1, 1))
    if kind == CLASSES:
        again = weighted_cross_entropy(pred, wt, placeholder, np.zeros(9, np.int64), rows, True, False)
    else:
        again = weighted_elementwise_loss(pred, wt, placeholder, np.zeros_like(pred), rows, code, 1.0, True, False)
    assert again == value
    assert value == _kernel(name, pred, target, weights)[0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_weighted_accuracy_count_reads_the_label_column(dtype):
    for shape in [(1, 3), (9, 4), (130, 2)]:
        pred, labels, weights = _data("cross_entropy", shape, dtype)
        assert weighted_accuracy_count(pred, _weighted(labels, weights)) == ref.accuracy_count(pred, labels)


@pytest.mark.parametrize("name", NAMES)
def test_parallel_rows_are_bit_identical_on_one_and_two_threads(name):
    shape = (1000, 70)
    assert shape[0] * shape[1] >= PARALLEL_MIN_ELEMENTS  # the prange branch
    pred, target, weights = _data(name, shape, np.float32, seed=3)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _kernel(name, pred, target, weights)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = _kernel(name, pred, target, weights)
    finally:
        numba.set_num_threads(threads)
    assert one[0] == two[0]
    np.testing.assert_array_equal(one[1], two[1])
    want_value, want_grad = _numpy_formula(name, pred, target, weights)
    # the formula's row kernels are compiled apart from the weighted kernel's inlined copies: a
    # float32 exp can round its last bit apart between the two (vectorised or not), so a few ulp
    np.testing.assert_array_max_ulp(two[1], want_grad, maxulp=4)
    # float32 logits: each row's loss is as exact as float32 (the CE row kernels inlined into
    # differently compiled callers round its last float32 bits apart), so not m float64 ulp here
    np.testing.assert_allclose(two[0], want_value, rtol=np.finfo(np.float32).eps)
