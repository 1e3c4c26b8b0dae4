"""fastnn's register-blocked GEMM (kernels/microgemm.py) at widths that are not a multiple of its vectors:
the last vector of a panel is masked (loads and stores of its columns only). Against the float64
reference, on strided views, in every form; its bits do not depend on where the panels are cut; it
reads and writes nothing past the operands; and the transposed copy shared with blas."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fastnn.kernels import blas
from fastnn.kernels.microgemm import micro_gemm_block, micro_wanted, transpose_rows

from .. import reference as ref

DTYPES = [np.float32, np.float64]
TOL = {np.float32: {"rtol": 2e-5, "atol": 2e-5}, np.float64: {"rtol": 1e-12, "atol": 1e-12}}
FORMS = [(False, False), (True, False), (False, True), (True, True)]
# a classifier's 10 outputs, LeNet's 84 and 120, scikit-learn's 100 hidden units (its last panel 36
# wide), around the vectors (8 float64 / 16 float32 lanes) and the panels (64 float32 / 32 float64)
WIDTHS = [3, 9, 10, 17, 36, 63, 65, 84, 100, 120, 129]
# (m, k): batch 1, odd rows, an inner size of 1, several inner-sum blocks of the L1 copy
ROWS_INNER = [(1, 1), (1, 37), (5, 1), (7, 13), (13, 64), (33, 300)]


def _assert_close(c, exact, dtype):
    """Within the tolerance of a sum of rounded products, relative to the largest element (an element
    near a cancellation has a larger relative error than the sum's terms)."""
    np.testing.assert_allclose(
        c, exact, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * max(1.0, np.abs(exact).max())
    )


def _strided(rng, shape, dtype):
    """A view with a row stride wider than its rows (a block of a larger array)."""
    parent = rng.standard_normal((shape[0] + 3, shape[1] + 5)).astype(dtype)
    return parent[1 : 1 + shape[0], 2 : 2 + shape[1]]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a,trans_b", FORMS)
@pytest.mark.parametrize("n", WIDTHS)
@pytest.mark.parametrize("m,k", ROWS_INNER)
def test_partial_widths_match_the_reference(m, k, n, trans_a, trans_b, dtype):
    rng = np.random.default_rng(m * 10_000 + k * 100 + n)
    a = _strided(rng, (k, m) if trans_a else (m, k), dtype)
    b = _strided(rng, (n, k) if trans_b else (k, n), dtype)
    parent = np.full((m + 2, n + 21), np.nan, dtype)  # NaN beyond the block: a lane stored past it shows
    c = parent[1 : 1 + m, 1 : 1 + n]
    micro_gemm_block(trans_a, a, b, c, 0, m, 0, n, trans_b)
    _assert_close(c, ref.matmul(a, b.T if trans_b else b, trans_a), dtype)
    outside = np.ones(parent.shape, dtype=bool)
    outside[1 : 1 + m, 1 : 1 + n] = False
    assert np.isnan(parent[outside]).all()  # nothing written outside the block


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a,trans_b", FORMS[:3])
@pytest.mark.parametrize("m,n,k", [(200, 100, 64), (64, 100, 200), (200, 10, 100), (37, 84, 300), (9, 120, 1)])
def test_partial_panels_give_the_bits_of_any_cut(m, n, k, trans_a, trans_b, dtype):
    """Whatever the columns' cut (a masked last vector in one panel, or in another, or none), an element
    is the same chain of multiply-adds: the bits of one call over the whole output, and of the rows
    one at a time."""
    rng = np.random.default_rng(m + n + k)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    whole = np.empty((m, n), dtype)
    micro_gemm_block(trans_a, a, b, whole, 0, m, 0, n, trans_b)
    for inner in ([10], [1, 17, 36], [n // 3, n - 1]):
        cuts = [0, *sorted({c for c in inner if 0 < c < n}), n]
        pieces = np.full((m, n), np.nan, dtype)
        for r0, r1 in [(0, 1), (1, 7), (7, m)]:
            for c0, c1 in zip(cuts[:-1], cuts[1:]):
                micro_gemm_block(trans_a, a, b, pieces, r0, r1, c0, c1, trans_b)
        np.testing.assert_array_equal(pieces, whole, err_msg=str(cuts))
    _assert_close(whole, ref.matmul(a, b.T if trans_b else b, trans_a), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_b", [False, True])
def test_accumulates_over_inner_blocks_at_a_partial_width(trans_b, dtype):
    """Several blocks of the inner sum (C read back through the masked loads): old contents of C,
    even infinities, never leak in."""
    rng = np.random.default_rng(11)
    m, n, k = 20, 100, 700
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    c = np.full((m, n), np.inf, dtype)
    micro_gemm_block(False, a, b, c, 0, m, 0, n, trans_b)
    _assert_close(c, ref.matmul(a, b.T if trans_b else b), dtype)


_GUARDED = textwrap.dedent(
    """
    import ctypes, mmap
    import numpy as np
    from fastnn.kernels import microgemm

    libc = ctypes.CDLL(None)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    page = mmap.PAGESIZE

    def at_the_end(shape, dtype):
        # an array whose last element is the last before a page that cannot be read or written
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        end = -(-nbytes // page) * page
        region = mmap.mmap(-1, end + page)
        base = ctypes.addressof(ctypes.c_char.from_buffer(region))
        if libc.mprotect(base + end, page, 0) != 0:
            raise OSError("mprotect")
        arr = np.frombuffer(region, dtype=np.uint8, count=nbytes, offset=end - nbytes).view(dtype).reshape(shape)
        keep.append(region)
        return arr

    keep = []
    rng = np.random.default_rng(0)
    ok = True
    for dtype in (np.float32, np.float64):
        for m, n, k, trans_a, trans_b in [(13, 10, 20, False, False), (7, 100, 3, True, False), (9, 36, 5, False, True)]:
            a = at_the_end((k, m) if trans_a else (m, k), dtype)
            a[...] = rng.standard_normal(a.shape)
            b = at_the_end((n, k) if trans_b else (k, n), dtype)
            b[...] = rng.standard_normal(b.shape)
            c = at_the_end((m, n), dtype)
            microgemm.micro_gemm_block(trans_a, a, b, c, 0, m, 0, n, trans_b)
            exact = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
            ok = ok and np.allclose(c, exact, rtol=1e-4, atol=1e-4)
    print(ok)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mprotect through libc: Linux")
def test_nothing_past_the_operands_is_touched():
    """Operands that end at a page no access is allowed to: a masked lane read or written past the
    last column would stop the process (run apart, so that it cannot stop the test run)."""
    out = subprocess.run([sys.executable, "-c", _GUARDED], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[-2] == "True"


@pytest.mark.parametrize("dtype", DTYPES)
def test_transpose_rows(dtype):
    """The one transposed copy (microgemm's blocks of ``B.T``, blas's small ``A @ B.T``): columns from an
    offset, a row stride wider than the rows, the elements between left alone."""
    rng = np.random.default_rng(2)
    b = _strided(rng, (30, 50), dtype)
    r0, n, k0, k, ld = 3, 17, 5, 40, 24
    out = np.full(k * ld, -7.0, dtype)
    transpose_rows(b, out, r0, n, k0, k, ld)
    grid = out.reshape(k, ld)
    np.testing.assert_array_equal(grid[:, :n], b[r0 : r0 + n, k0 : k0 + k].T)
    assert (grid[:, n:] == -7.0).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a,trans_b", FORMS[:3])
@pytest.mark.parametrize("m,n,k", [(200, 100, 64), (64, 100, 200), (128, 84, 400), (256, 120, 64), (200, 10, 100)])
def test_blas_gives_the_kernels_bits_where_the_rule_says(m, n, k, trans_a, trans_b, dtype):
    """blas's gemm at the widths of scikit-learn's and LeNet's layers: the reference, and the kernel's
    bits wherever :func:`micro_wanted` gives it the product."""
    rng = np.random.default_rng(m * n + k)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    through_blas, direct = np.empty((m, n), dtype), np.empty((m, n), dtype)
    blas.gemm(trans_a, trans_b, 1.0, a, b, 0.0, through_blas)
    micro_gemm_block(trans_a, a, b, direct, 0, m, 0, n, trans_b)
    _assert_close(through_blas, ref.matmul(a, b.T if trans_b else b, trans_a), dtype)
    if micro_wanted(m, n, k, trans_b, blas.OPENBLAS_FAMILY):
        np.testing.assert_array_equal(through_blas, direct)
