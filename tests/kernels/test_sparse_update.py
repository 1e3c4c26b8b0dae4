"""embedding_rows, the lazy row updates (sgd_rows_update, adam_rows_update, the fused step's
adam_sparse_step) and sparse_grad_norm against float64 references, the dense kernels and thread counts."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from fastnn.kernels import step_update
from fastnn.kernels.embedding import embedding_rows
from fastnn.kernels.optim import norm_partials_size, sgd_update
from fastnn.kernels.sparse_update import adam_rows_update, norm_tasks, sgd_rows_update, sparse_grad_norm
from tests import reference as ref

DTYPES = [np.float32, np.float64]
# (vocabulary, indices, padding_idx): marks read in order (many indices) and sorted (few, large vocabulary)
ROW_CASES = [
    (1, [0], None),
    (7, [3, 1, 3, 6, 1], None),
    (7, [2, 2, 2], 2),
    (50, [49, 0, 17, 0, 49, 5, 5, 5], 5),
    (10_000, [9_999, 3, 3, 512], None),
    (10_000, list(range(0, 10_000, 7)) * 2, 14),
]


def touched(vocabulary, indices, padding_idx):
    seen = np.zeros(vocabulary, np.uint8)
    rows = np.full(vocabulary + 1, -7, np.int64)
    embedding_rows(np.asarray(indices, np.int64), -1 if padding_idx is None else padding_idx, seen, rows)
    assert not seen.any()  # the scratch is left zero for the next call
    return rows[1 : rows[0] + 1]


@pytest.mark.parametrize("case", ROW_CASES, ids=[f"case{i}" for i in range(len(ROW_CASES))])
def test_rows_are_the_sorted_distinct_indices_without_padding(case):
    vocabulary, indices, padding_idx = case
    np.testing.assert_array_equal(touched(vocabulary, indices, padding_idx), ref.embedding_rows(indices, padding_idx))


def _table(dtype, vocabulary, width, rows, seed=0, offset=3):
    """Flat buffers holding a (vocabulary, width) table after ``offset`` other parameters, its
    gradient zero outside ``rows`` (as the embedding's backward leaves it)."""
    rng = np.random.default_rng(seed)
    n = offset + vocabulary * width + 2
    params = rng.standard_normal(n).astype(dtype)
    grads = np.zeros(n, dtype)
    table = grads[offset : offset + vocabulary * width].reshape(vocabulary, width)
    table[rows] = rng.standard_normal((len(rows), width))
    counted = np.concatenate([[len(rows)], rows, np.full(vocabulary - len(rows), -1)]).astype(np.int64)
    return params, grads, counted


# (vocabulary, width, touched rows): batch 1 (one row), odd widths, the parallel size (>= 65,536 elements)
UPDATE_CASES = [(5, 3, [2]), (9, 7, [0, 4, 8]), (11, 1, list(range(11))), (4_000, 33, list(range(1, 4_000, 2)))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", UPDATE_CASES, ids=[f"case{i}" for i in range(len(UPDATE_CASES))])
def test_sgd_rows_equal_the_dense_step_bit_for_bit(case, dtype):
    vocabulary, width, rows = case
    params, grads, counted = _table(dtype, vocabulary, width, rows)
    dense = params.copy()
    sgd_update(dense, grads, dense[:0], 0.05, 0.0, 0.0, 0.0, 0, False, 1.0, True)
    sgd_rows_update(params, grads, counted, 3, width, 0.05)
    np.testing.assert_array_equal(params, dense)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", UPDATE_CASES, ids=[f"case{i}" for i in range(len(UPDATE_CASES))])
def test_adam_rows_match_sparse_adam_reference(case, dtype):
    vocabulary, width, rows = case
    params, grads, counted = _table(dtype, vocabulary, width, rows, seed=1)
    m, v = np.zeros_like(params), np.zeros_like(params)
    table = slice(3, 3 + vocabulary * width)
    want, state = params[table].astype(np.float64).reshape(vocabulary, width), {}
    before = params.copy()
    for t in (1, 2, 3):
        adam_rows_update(params, grads, m, v, counted, 3, width, 1e-2, 0.9, 0.99, 1e-8, t)
        g = grads[table].astype(np.float64).reshape(vocabulary, width)
        want = ref.sparse_adam_rows_reference(want, g, state, t, rows, lr=1e-2, betas=(0.9, 0.99))
    assert params.dtype == dtype
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-14}
    np.testing.assert_allclose(params[table].reshape(vocabulary, width), want, **tol)
    np.testing.assert_allclose(m[table].reshape(vocabulary, width), state["exp_avg"], **tol)
    untouched = np.setdiff1d(np.arange(vocabulary), rows)
    np.testing.assert_array_equal(
        params[table].reshape(vocabulary, width)[untouched], before[table].reshape(vocabulary, width)[untouched]
    )
    assert not v[table].reshape(vocabulary, width)[untouched].any()
    np.testing.assert_array_equal(params[:3], before[:3])  # outside the table: nothing
    np.testing.assert_array_equal(params[table.stop :], before[table.stop :])


def test_adam_rows_match_torch_sparse_adam():
    torch = pytest.importorskip("torch")
    vocabulary, width, rows = 9, 4, [1, 5, 8]
    params, grads, counted = _table(np.float64, vocabulary, width, rows, seed=2, offset=0)
    m, v = np.zeros_like(params), np.zeros_like(params)
    weight = torch.nn.Parameter(torch.tensor(params[: vocabulary * width].reshape(vocabulary, width)))
    opt = torch.optim.SparseAdam([weight], lr=3e-2, betas=(0.8, 0.95), eps=1e-6)
    g = torch.tensor(grads[: vocabulary * width].reshape(vocabulary, width)[rows])
    for t in (1, 2):
        adam_rows_update(params, grads, m, v, counted, 0, width, 3e-2, 0.8, 0.95, 1e-6, t)
        weight.grad = torch.sparse_coo_tensor(torch.tensor([rows]), g, (vocabulary, width), check_invariants=True)
        opt.step()
    np.testing.assert_allclose(
        params[: vocabulary * width].reshape(vocabulary, width), weight.detach().numpy(), rtol=1e-12
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_updates_are_bit_identical_on_one_and_two_threads(dtype):
    vocabulary, width, rows = UPDATE_CASES[-1]
    results = []
    saved = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            params, grads, counted = _table(dtype, vocabulary, width, rows, seed=3)
            m, v = np.zeros_like(params), np.zeros_like(params)
            adam_rows_update(params, grads, m, v, counted, 3, width, 1e-3, 0.9, 0.999, 1e-8, 1)
            sgd_rows_update(params, grads, counted, 3, width, 0.1)
            results.append((params, m, v))
    finally:
        numba.set_num_threads(saved)
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", UPDATE_CASES, ids=[f"case{i}" for i in range(len(UPDATE_CASES))])
def test_sparse_grad_norm_is_the_whole_buffers_norm(case, dtype, threads):
    vocabulary, width, rows = case
    params, grads, counted = _table(dtype, vocabulary, width, rows, seed=4, offset=70_001)
    grads[:70_001] = params[:70_001]  # gradients outside the table too (the parallel chunk sums)
    grads[-2:] = 3.0
    partials = np.zeros(norm_partials_size(grads.size))
    saved = numba.get_num_threads()
    try:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        got = sparse_grad_norm(grads, partials, 70_001, width, counted)
    finally:
        numba.set_num_threads(saved)
    assert got == pytest.approx(np.linalg.norm(grads.astype(np.float64)), rel=1e-12)


def test_sparse_grad_norm_is_bit_identical_on_one_and_two_threads():
    vocabulary, width, rows = UPDATE_CASES[-1]
    params, grads, counted = _table(np.float32, vocabulary, width, rows, seed=5, offset=70_001)
    grads[:70_001] = params[:70_001]
    norms = []
    saved = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            norms.append(sparse_grad_norm(grads, np.zeros(1), 70_001, width, counted))
            # the model's scratch (norm_tasks long) gives the same bits as the call's own
            scratch = np.full(norm_tasks(grads.size, vocabulary), np.nan)
            norms.append(sparse_grad_norm(grads, scratch, 70_001, width, counted))
    finally:
        numba.set_num_threads(saved)
    assert norms[0] == norms[1] == norms[2] == norms[3]


# (dense parameters before the table, trainable ranges or None: all but the table): the parallel
# sweep's split over the threads falls in the dense chunks, in the rows, or between them
SWEEP_CASES = [(3, None), (70_001, None), (200_003, None), (70_001, [(0, 1_000), (70_001 + 132_000, 70_001 + 132_002)])]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SWEEP_CASES, ids=[f"case{i}" for i in range(len(SWEEP_CASES))])
def test_adam_sparse_step_is_adam_step_then_adam_rows_update_bit_for_bit(case, dtype):
    offset, trainable = case
    vocabulary, width, rows = UPDATE_CASES[-1]
    params, grads, counted = _table(dtype, vocabulary, width, rows, seed=6, offset=offset)
    grads[:offset] = params[:offset] / 3  # gradients outside the table too
    grads[-2:] = 0.5
    lo, hi = offset, offset + vocabulary * width
    dense = [(0, lo), (hi, params.size)] if trainable is None else trainable
    ranges = np.array(dense, np.int64).reshape(-1, 2)
    hyper = (0.9, 0.999, 1e-8, 0.0, params.size, False, False)
    results = []
    saved = numba.get_num_threads()
    try:
        for fused, threads in ((False, 1), (True, 1), (True, 2)):
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            p, m, v = params.copy(), np.full_like(params, 0.1), np.full_like(params, 0.2)
            for step in (1, 2, 3):
                scalars = np.array([1.0, 1e-3, step, np.nan, np.nan, np.nan])
                head = (0.5, 1.0, scalars, None, ranges, np.zeros(64), p, grads, m, v, np.empty(0, dtype))
                if fused:
                    assert step_update.adam_sparse_step(*head, *hyper, counted, lo, width)
                else:
                    if step_update.adam_step(*head, *hyper):  # then the touched rows, as two calls did
                        adam_rows_update(p, grads, m, v, counted, lo, width, 1e-3, *hyper[:3], step)
            results.append((p, m, v))
            # not armed (the scalars disarmed by the last call) or a non-finite loss: nothing moves
            before = p.copy()
            assert not step_update.adam_sparse_step(*head, *hyper, counted, lo, width)
            scalars[0] = 1.0
            assert not step_update.adam_sparse_step(np.nan, *head[1:], *hyper, counted, lo, width)
            np.testing.assert_array_equal(p, before)
    finally:
        numba.set_num_threads(saved)
    assert not np.array_equal(results[0][0], params)
    for other in results[1:]:
        for one, two in zip(results[0], other):
            np.testing.assert_array_equal(one, two)
