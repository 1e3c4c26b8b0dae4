"""The gradient sum of an accumulating fit's compiled step (kernels.accumulate) against the float64
reference and, bit for bit, against the NumPy formula and norm kernel it replaced."""

from __future__ import annotations

import numpy as np
import pytest

from fastnn.kernels import accumulate as A
from fastnn.kernels import optim as K
from tests import _reference_optim as ref

DTYPES = [np.float32, np.float64]
TOL = {np.float32: {"rtol": 2e-5, "atol": 1e-6}, np.float64: {"rtol": 1e-13, "atol": 1e-14}}
SIZES = [1, 1001, 3 * K.OPTIM_CHUNK + 77]  # one element, odd, several norm chunks with a short last one


def _group(n, dtype, batches, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(dtype) for _ in range(batches)]


def _scalars(position, last, weight, divisor):
    s = np.zeros(A.N_SCALARS)
    s[[A.ARMED, A.FIRST, A.LAST, A.WEIGHT, A.DIVISOR]] = 1.0, position == 0, last, weight, divisor
    return s


def _run_kernel(seq, weights, divisor):
    """(grads after the last batch, total, returned norms, scalars) of the kernel over a group."""
    n, dtype = seq[0].size, seq[0].dtype
    grads, total, partials = np.empty(n, dtype), np.empty(n, dtype), np.zeros(K.norm_partials_size(n))
    norms, s = [], None
    for i, (g, w) in enumerate(zip(seq, weights)):
        grads[:] = g
        s = _scalars(i, i == len(seq) - 1, w, divisor)
        norms.append(A.accumulate_gradients(0.5, s, grads, total, partials))
    return grads, total, norms, s


def _run_numpy(seq, weights, divisor):
    """The replaced path: NumPy's multiply/add per batch, its divide, then the norm kernel."""
    grads, total = np.empty_like(seq[0]), np.empty_like(seq[0])
    for i, (g, w) in enumerate(zip(seq, weights)):
        grads[:] = g
        if i == 0:
            np.multiply(grads, w, out=total)
        else:
            np.multiply(grads, w, out=grads)
            np.add(total, grads, out=total)
    np.divide(total, divisor, out=grads)
    return grads, total, K.grad_global_norm(grads, np.zeros(K.norm_partials_size(grads.size)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("weights", [(7, 7, 7, 3), (1, 1, 1)], ids=["mean", "sum"])
def test_the_group_gradient_matches_the_reference_and_the_numpy_path_bit_for_bit(dtype, n, weights):
    seq = _group(n, dtype, len(weights))
    divisor = sum(weights) if weights[0] != 1 else 1
    grads, total, norms, s = _run_kernel(seq, weights, divisor)
    np.testing.assert_allclose(grads, ref.accumulated_gradient_reference(seq, weights, divisor), **TOL[dtype])
    assert norms[-1] == pytest.approx(ref.grad_norm_reference(grads), rel=1e-12)
    assert norms[:-1] == [0.5] * (len(weights) - 1)  # the batch's norm handed on until the group ends
    assert s[A.GROUP_NORM] == norms[-1] and s[A.ARMED] == 0.0  # written back; disarmed
    np_grads, np_total, np_norm = _run_numpy(seq, weights, divisor)
    assert np.array_equal(grads, np_grads) and np.array_equal(total, np_total)
    assert norms[-1] == np_norm  # the norm kernel's chunks in its order: the same bits


def test_an_unarmed_call_changes_nothing_and_a_non_finite_batch_voids_the_group():
    grads, total = np.arange(5, dtype=np.float32), np.full(5, 3.0, np.float32)
    partials = np.zeros(1)
    s = _scalars(1, True, 4, 8)
    s[A.ARMED] = 0.0
    assert A.accumulate_gradients(2.5, s, grads, total, partials) == 2.5
    assert np.array_equal(grads, np.arange(5)) and (total == 3.0).all()
    s = _scalars(1, True, 4, 8)
    grads[2] = np.inf
    assert np.isinf(A.accumulate_gradients(np.inf, s, grads, total, partials))
    assert np.isinf(s[A.GROUP_NORM])


def test_the_serial_norm_is_the_norm_kernels_bits():
    g = np.random.default_rng(1).standard_normal(2 * K.OPTIM_CHUNK + 5).astype(np.float32)
    partials = np.zeros(K.norm_partials_size(g.size))
    assert A.serial_norm(g, partials) == K.grad_global_norm(g, partials.copy())
