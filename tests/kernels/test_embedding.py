"""embedding_forward / embedding_backward (and its sparse twin embedding_backward_rows) against float64
references, torch and thread counts."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from fastnn.kernels.embedding import embedding_backward, embedding_backward_rows, embedding_forward
from tests import _reference_conv as ref
from tests._gradcheck import numeric_gradients

DTYPES = [np.float32, np.float64]
# (vocabulary, dim, indices shape, padding_idx or None); the last runs the parallel paths
CASES = [(1, 1, (1,), None), (7, 3, (4, 5), 2), (11, 5, (2, 3, 4), None), (13, 1, (9,), 0), (10_000, 32, (64, 50), 17)]


def _problem(case, dtype, seed=0):
    vocabulary, dim, shape, _ = case
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, vocabulary, size=shape, dtype=np.int64)
    if vocabulary > 1:
        indices.reshape(-1)[::3] = indices.reshape(-1)[0]  # repeated rows: the scatter-add sums them
    weight = rng.standard_normal((vocabulary, dim)).astype(dtype)
    grad_out = rng.standard_normal((*shape, dim)).astype(dtype)
    return indices, weight, grad_out


def lookup(indices, weight):
    out = np.full((indices.size, weight.shape[1]), np.nan, weight.dtype)
    embedding_forward(indices.reshape(-1), weight, out)
    return out.reshape(*indices.shape, weight.shape[1])


def grad(indices, grad_out, vocabulary, padding_idx):
    grad_weight = np.full((vocabulary, grad_out.shape[-1]), np.nan, grad_out.dtype)
    embedding_backward(
        indices.reshape(-1), grad_out.reshape(indices.size, -1), grad_weight, -1 if padding_idx is None else padding_idx
    )
    return grad_weight


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_matches_reference(case, dtype):
    indices, weight, grad_out = _problem(case, dtype)
    out = lookup(indices, weight)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, ref.embedding_forward(indices, weight))
    got = grad(indices, grad_out, case[0], case[3])
    assert got.dtype == dtype
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}
    np.testing.assert_allclose(got, ref.embedding_backward(indices, grad_out, case[0], case[3]), **tol)
    if case[3] is not None:
        assert np.all(got[case[3]] == 0)


def test_backward_finite_differences():
    case = CASES[1]
    indices, weight, upstream = _problem(case, np.float64, seed=1)

    def objective(w_):
        return np.sum(upstream * lookup(indices, w_))

    want = numeric_gradients(objective, [weight])[0]
    np.testing.assert_allclose(grad(indices, upstream, case[0], None), want, rtol=1e-6, atol=1e-8)


def test_bit_identical_on_one_and_two_threads():
    case = CASES[-1]
    indices, _, grad_out = _problem(case, np.float32, seed=2)
    indices.reshape(-1)[::2] = 5  # one heavily repeated row: its float32 sum order matters
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = grad(indices, grad_out, case[0], case[3])
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = grad(indices, grad_out, case[0], case[3])
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(one, two)


def test_matches_torch():
    torch = pytest.importorskip("torch")
    case = CASES[1]
    indices, weight, grad_out = _problem(case, np.float64, seed=3)
    wt = torch.tensor(weight, requires_grad=True)
    out = torch.nn.functional.embedding(torch.tensor(indices), wt, padding_idx=case[3])
    out.backward(torch.tensor(grad_out))
    np.testing.assert_array_equal(lookup(indices, weight), out.detach().numpy())
    np.testing.assert_allclose(grad(indices, grad_out, case[0], case[3]), wt.grad.numpy(), rtol=1e-12, atol=1e-13)


def _in_index_order(indices, grad_out, vocabulary, padding_idx):
    """The scatter-add in the kernel's own dtype, each row summed from zero in index order."""
    grad_weight = np.zeros((vocabulary, grad_out.shape[-1]), grad_out.dtype)
    np.add.at(grad_weight, indices.reshape(-1), grad_out.reshape(indices.size, -1))  # unbuffered: in order
    if padding_idx is not None:
        grad_weight[padding_idx] = 0
    return grad_weight


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [CASES[2], CASES[-1]], ids=["serial size", "parallel size"])
def test_bits_equal_the_in_order_sum_on_each_thread_count(case, dtype, threads):
    """Serial (one thread or a small problem) and parallel paths: the lookup copies rows exactly and
    the gradient equals the in-order float sum bit for bit (3200 rows: a partial last gather task)."""
    indices, weight, grad_out = _problem(case, dtype, seed=4)
    indices.reshape(-1)[1::4] = indices.reshape(-1)[1]  # a second heavily repeated row
    saved = numba.get_num_threads()
    try:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        out, got = lookup(indices, weight), grad(indices, grad_out, case[0], case[3])
    finally:
        numba.set_num_threads(saved)
    np.testing.assert_array_equal(out, weight[indices])
    np.testing.assert_array_equal(got, _in_index_order(indices, grad_out, case[0], case[3]))


def test_batch_of_one_index():
    indices, weight, grad_out = np.array([[4]]), np.arange(15.0).reshape(5, 3), np.array([[[1.0, -2.0, 0.5]]])
    np.testing.assert_array_equal(lookup(indices, weight), [[[12.0, 13.0, 14.0]]])
    want = np.zeros((5, 3))
    want[4] = [1.0, -2.0, 0.5]
    np.testing.assert_array_equal(grad(indices, grad_out, 5, None), want)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [CASES[1], CASES[-1]], ids=["serial size", "parallel size"])
def test_rows_backward_equals_the_dense_one_call_after_call(case, dtype, threads):
    """embedding_backward_rows zeroes only the rows its previous call listed (the whole table
    first, when they are not known): call after call, the same gradient bits and rows as the dense
    kernel and embedding_rows, from a gradient buffer holding garbage."""
    vocabulary, dim, shape, padding_idx = case
    padding = -1 if padding_idx is None else padding_idx
    grad_weight = np.full((vocabulary, dim), 7.0, dtype)
    seen, rows = np.zeros(vocabulary, np.uint8), np.zeros(vocabulary + 1, np.int64)
    rows[0] = -1
    saved = numba.get_num_threads()
    try:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        for seed in range(3):
            indices, _, grad_out = _problem(case, dtype, seed=10 + seed)
            flat, rows_out = indices.reshape(-1), grad_out.reshape(indices.size, -1)
            embedding_backward_rows(flat, rows_out, grad_weight, padding, seen, rows)
            np.testing.assert_array_equal(grad_weight, grad(indices, grad_out, vocabulary, padding_idx))
            np.testing.assert_array_equal(rows[1 : rows[0] + 1], ref.embedding_rows(indices, padding_idx))
    finally:
        numba.set_num_threads(saved)
    assert not seen.any()
