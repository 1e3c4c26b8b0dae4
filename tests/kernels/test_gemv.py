"""fastnn's row-times-matrix kernel (kernels/gemv.py) against the float64 reference, the bits it
promises (a column's value does not depend on the block of columns nor on where the matrix lies in
memory), and the batch-1 products of kernels.blas that take it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numba import njit

from fastnn.kernels import blas
from fastnn.kernels.gemv import MULTI_PASS_BYTES, ONE_PASS_BYTES, gemv_wanted, row_times_matrix

from .. import reference as ref

DTYPES = [np.float32, np.float64]
TOL = {np.float32: {"rtol": 2e-5, "atol": 2e-5}, np.float64: {"rtol": 1e-12, "atol": 1e-12}}
# inner sizes from 1; widths around the vectors (16 float32 / 8 float64 lanes) and the register block
# (16 vectors, plus one for a block starting inside a vector: 257, 300 take two blocks)
SHAPES = [(1, 1), (1, 17), (2, 7), (7, 1), (17, 100), (64, 257), (100, 7), (33, 300), (5, 600)]


@njit
def _row(x, x_off, incx, w, w_off, ldw, c, c_off, k, n):
    row_times_matrix(x, x_off, incx, w, w_off, ldw, c, c_off, k, n)


def _view(rng, shape, dtype, lead=0):
    """A block of a NaN-framed parent: rows wider than the block, starting ``lead`` elements into a
    row (NaN read from outside the block would show in the result)."""
    parent = np.full((shape[0] + 2, shape[1] + lead + 5), np.nan, dtype)
    block = parent[1 : 1 + shape[0], lead : lead + shape[1]]
    block[...] = rng.standard_normal(shape)
    return parent, block


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("k,n", SHAPES)
def test_one_row_through_blas_matches_the_reference_on_strided_views(k, n, trans_a, dtype):
    """``C[r0] = op(A)[r0] @ B`` by blas.gemm_block (alpha 1, beta 0): non-contiguous views of A, B
    and C; nothing written outside C's row, nothing read outside A's row and B's block."""
    rng = np.random.default_rng(k * 1000 + n)
    m = 3
    _, a = _view(rng, (k, m) if trans_a else (m, k), dtype, lead=1)
    _, b = _view(rng, (k, n), dtype, lead=3)
    parent = np.full((m + 2, n + 3), np.nan, dtype)
    c = parent[1 : 1 + m, 1 : 1 + n]
    blas.gemm_block(trans_a, False, 1.0, a, b, 0.0, c, 1, 2, 0, n)  # row 1 of C only
    expected = ref.matmul(a, b, trans_a)[1]
    np.testing.assert_allclose(c[1], expected, **TOL[dtype])
    outside = np.ones(parent.shape, dtype=bool)
    outside[2, 1 : 1 + n] = False
    assert np.isnan(parent[outside]).all()  # nothing written outside the row


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,n", SHAPES)
def test_the_kernel_matches_the_reference_at_every_offset(k, n, dtype):
    """The matrix at each offset within a vector (aligned reads, first and last vectors masked) and with
    rows of a length that is not a multiple of the vector (unaligned reads): the same bits everywhere,
    the reference's values, nothing read or written outside."""
    rng = np.random.default_rng(k + 7 * n)
    x = rng.standard_normal(k).astype(dtype)
    values = rng.standard_normal((k, n)).astype(dtype)
    expected = ref.matmul(x[None, :], values)[0]
    first = None
    for ldw in (n, n + 16 - n % 16, n + 3):
        for lead in range(17):
            flat = np.full(k * ldw + lead + 40, np.nan, dtype)
            flat[lead : lead + k * ldw].reshape(k, ldw)[:, :n] = values
            out = np.full(n + 40, np.nan, dtype)
            _row(x, 0, 1, flat, lead, ldw, out, lead + 3, k, n)
            np.testing.assert_allclose(out[lead + 3 : lead + 3 + n], expected, **TOL[dtype])
            assert np.isnan(out[: lead + 3]).all() and np.isnan(out[lead + 3 + n :]).all()
            first = out[lead + 3 : lead + 3 + n].copy() if first is None else first
            np.testing.assert_array_equal(out[lead + 3 : lead + 3 + n], first)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_columns_bits_do_not_depend_on_the_block(dtype):
    """Blocks of columns cut at odd places (through blas.gemm_block, as a Dense layer's column tiles
    call it) give the bits of one call over the whole row; a strided row of A (``A.T``) the same."""
    rng = np.random.default_rng(11)
    k, n = 301, 250
    x, w = rng.standard_normal((1, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
    whole = np.empty((1, n), dtype)
    blas.gemm_block(False, False, 1.0, x, w, 0.0, whole, 0, 1, 0, n)
    pieces = np.full((1, n), np.nan, dtype)
    for c0, c1 in [(0, 1), (1, 20), (20, 129), (129, 250)]:
        blas.gemm_block(False, False, 1.0, x, w, 0.0, pieces, 0, 1, c0, c1)
    np.testing.assert_array_equal(pieces, whole)
    column = np.asfortranarray(np.repeat(x.T, 2, axis=1))  # (k, 2): its row 0 of A.T has stride 2
    through_trans = np.empty((2, n), dtype)
    blas.gemm_block(True, False, 1.0, np.ascontiguousarray(column), w, 0.0, through_trans, 0, 1, 0, n)
    np.testing.assert_array_equal(through_trans[:1], whole)


def test_beta_zero_overwrites_and_the_other_forms_stay_with_openblas():
    """C's old contents (inf) never leak in; alpha != 1, beta != 0 and ``B.T`` keep OpenBLAS's gemv
    (still right)."""
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((1, 40)).astype(np.float32), rng.standard_normal((40, 30)).astype(np.float32)
    c = np.full((1, 30), np.inf, np.float32)
    blas.gemm(False, False, 1.0, x, w, 0.0, c)
    np.testing.assert_allclose(c, ref.matmul(x, w), **TOL[np.float32])
    c2 = np.ones((1, 30), np.float32)
    blas.gemm(False, False, 2.0, x, w, 0.5, c2)
    np.testing.assert_allclose(c2, 2 * ref.matmul(x, w) + 0.5, rtol=1e-5, atol=1e-5)
    wt = np.ascontiguousarray(w.T)
    c3 = np.empty((1, 30), np.float32)
    blas.gemm(False, True, 1.0, x, wt, 0.0, c3)
    np.testing.assert_allclose(c3, ref.matmul(x, w), **TOL[np.float32])


def test_which_products_it_takes():
    """By shape only: one pass over the matrix (an output row of at most ONE_PASS_BYTES), or a
    matrix of at most MULTI_PASS_BYTES; wanted, blas's batch-1 product gives its bits."""
    wanted = gemv_wanted(784, 256, 4)
    assert wanted == gemv_wanted(1, 1, 8) == gemv_wanted(4096, ONE_PASS_BYTES // 4, 4)
    assert not gemv_wanted(MULTI_PASS_BYTES // 4096 + 1, ONE_PASS_BYTES // 4 * 4, 4)  # 1024 columns, > 1 MiB
    assert not gemv_wanted(1024, 1024, 4)
    if wanted:  # this process uses it (AVX-512, or FASTNN_MICRO_GEMM=on)
        rng = np.random.default_rng(0)
        x, w = rng.standard_normal((1, 784)).astype(np.float32), rng.standard_normal((784, 256)).astype(np.float32)
        through_blas, direct = np.empty((1, 256), np.float32), np.empty(256, np.float32)
        blas.gemm(False, False, 1.0, x, w, 0.0, through_blas)
        _row(x, 0, 1, w, 0, 256, direct, 0, 784, 256)
        np.testing.assert_array_equal(through_blas[0], direct)


_FORCED = textwrap.dedent(
    """
    import numpy as np
    from fastnn.kernels import blas, gemv
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 90)).astype(np.float32), rng.standard_normal((90, 48)).astype(np.float32)
    y = np.empty((1, 48), np.float32)
    blas.gemm(False, False, 1.0, x, w, 0.0, y)
    print(gemv.gemv_wanted(90, 48, 4), np.abs(y - x.astype(np.float64) @ w).max() < 1e-4)
    """
)


@pytest.mark.parametrize("mode,expected", [("on", "True True"), ("off", "False True")])
def test_the_environment_switch(mode, expected):
    """FASTNN_MICRO_GEMM (shared with microgemm): on takes the kernel on any CPU, off never."""
    env = {**os.environ, "FASTNN_MICRO_GEMM": mode}
    out = subprocess.run([sys.executable, "-c", _FORCED], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[-2] == expected


_NARROW = textwrap.dedent(
    """
    import numpy as np
    from numba import njit
    from fastnn.kernels import gemv, microgemm

    @njit
    def run(x, w, ldw, lead, c, k, n):
        gemv.row_times_matrix(x, 0, 1, w, lead, ldw, c, 0, k, n)
        return microgemm.vector_width(c), gemv.row_vectors()

    rng = np.random.default_rng(1)
    worst, shapes = 0.0, set()
    for dtype in (np.float32, np.float64):
        for k, n in [(1, 1), (7, 17), (150, 77), (40, 130)]:
            for ldw, lead in [(n, 0), (n + 16 - n % 16, 3), (n + 1, 5)]:
                x = rng.standard_normal(k).astype(dtype)
                flat = rng.standard_normal(k * ldw + lead).astype(dtype)
                w = flat[lead:].reshape(k, ldw)[:, :n]
                c = np.full(n + 9, np.nan, dtype)
                shapes.add(run(x, flat, ldw, lead, c, k, n))
                exact = x.astype(np.float64) @ w.astype(np.float64)
                worst = max(worst, float(np.abs(c[:n] - exact).max() / np.abs(exact).max()))
                assert np.isnan(c[n:]).all()
    print(sorted(shapes), worst < 1e-5)
    """
)


def test_the_avx2_register_shape(tmp_path):
    """Compiled for an AVX2 target (8 float32 a vector, 9 vectors of accumulators of 16 registers)
    the kernel gives the same products: what a kernel prebuilt for x86-64-v3 runs."""
    env = {**os.environ, "NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": "", "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", _NARROW], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[-2] == "[(4, 9), (8, 9)] True"
