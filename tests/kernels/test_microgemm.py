"""fastnn's register-blocked GEMM (kernels/microgemm.py) against the float64 reference, and the bits it
promises: an element's value does not depend on the block, the tiling or the inner-sum blocks; and the
rule that gives it products, by OpenBLAS's kernel family."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fastnn.kernels import blas
from fastnn.kernels.microgemm import (
    BLAS_256,
    BLAS_512,
    MICRO_256_MIN_N,
    MICRO_256_NARROW_MIN_K,
    MICRO_256_NT_MIN_M,
    MICRO_256_NT_NARROW_MIN_K,
    MICRO_256_ROWS,
    MICRO_256_WIDE_N,
    MICRO_512_MIN_N,
    MICRO_MIN_MACS,
    blas_family,
    micro_gemm_block,
    micro_wanted,
    micro_wanted_shape,
)

from .. import reference as ref

DTYPES = [np.float32, np.float64]
TOL = {np.float32: {"rtol": 2e-5, "atol": 2e-5}, np.float64: {"rtol": 1e-12, "atol": 1e-12}}
# odd shapes, batch 1, one inner element, several inner-sum blocks (k > 128), widths around the
# vectors (16 float32 / 8 float64 lanes) and the register block (6 rows, 4 vectors)
SHAPES = [(1, 1, 1), (1, 37, 5), (2, 64, 1), (5, 17, 7), (6, 64, 3), (7, 65, 130), (13, 100, 64), (33, 48, 300)]
# one-vector panels (MR_ONE_VECTOR-row strips): a classifier's 10 outputs, 16 wide, a wide product's 16-wide last panel
SHAPES += [(29, 10, 33), (25, 16, 7), (13, 80, 20), (200, 10, 140)]


def _strided(rng, shape, dtype):
    """A view with a row stride wider than its rows (a block of a larger array)."""
    parent = rng.standard_normal((shape[0] + 3, shape[1] + 5)).astype(dtype)
    return parent[1 : 1 + shape[0], 2 : 2 + shape[1]]


def _op_b(b, trans_b):
    """op(B) for the float64 reference: ``B.T`` when ``trans_b``."""
    return b.T if trans_b else b


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_matches_the_reference_on_strided_views(m, n, k, trans_a, trans_b, dtype):
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    a = _strided(rng, (k, m) if trans_a else (m, k), dtype)
    b = _strided(rng, (n, k) if trans_b else (k, n), dtype)
    parent = np.full((m + 2, n + 3), np.nan, dtype)
    c = parent[1 : 1 + m, 1 : 1 + n]
    micro_gemm_block(trans_a, a, b, c, 0, m, 0, n, trans_b)
    assert c.dtype == dtype
    np.testing.assert_allclose(c, ref.matmul(a, _op_b(b, trans_b), trans_a), **TOL[dtype])
    outside = np.ones(parent.shape, dtype=bool)
    outside[1 : 1 + m, 1 : 1 + n] = False
    assert np.isnan(parent[outside]).all()  # nothing written outside the block


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True)])
def test_an_elements_bits_do_not_depend_on_the_blocks(trans_a, trans_b, dtype):
    """Blocks cut at odd rows and columns (edge panels on a padded copy with the whole inner sum,
    whole panels in blocks of the inner sum) give the bits of one call over the whole output."""
    rng = np.random.default_rng(7)
    m, n, k = 29, 150, 333
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    whole = np.empty((m, n), dtype)
    micro_gemm_block(trans_a, a, b, whole, 0, m, 0, n, trans_b)
    pieces = np.full((m, n), np.nan, dtype)
    for r0, r1 in [(0, 5), (5, 6), (6, 29)]:
        for c0, c1 in [(0, 20), (20, 84), (84, 96), (96, 101), (101, 150)]:  # 12 and 5 wide: one-vector panels
            micro_gemm_block(trans_a, a, b, pieces, r0, r1, c0, c1, trans_b)
    np.testing.assert_array_equal(pieces, whole)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("m,n,k", [(2, 10, 10), (7, 37, 5), (13, 100, 64), (33, 48, 300), (200, 64, 130)])
def test_b_transposed_gives_the_bits_of_its_transposed_copy(m, n, k, trans_a, dtype):
    """``A @ B.T`` sums each element in the order of ``A @ (a contiguous copy of B.T)``: the same bits
    (one multiply-add chain over k in order, whichever copy of B the kernel reads)."""
    rng = np.random.default_rng(m + n + k)
    a = _strided(rng, (k, m) if trans_a else (m, k), dtype)
    b = _strided(rng, (n, k), dtype)
    transposed, copied = np.empty((m, n), dtype), np.empty((m, n), dtype)
    micro_gemm_block(trans_a, a, b, transposed, 0, m, 0, n, True)
    micro_gemm_block(trans_a, a, np.ascontiguousarray(b.T), copied, 0, m, 0, n)
    np.testing.assert_array_equal(transposed, copied)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_b", [False, True])
def test_beta_zero_overwrites(trans_b, dtype):
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((20, 200)).astype(dtype), rng.standard_normal((200, 64)).astype(dtype)
    b = np.ascontiguousarray(b.T) if trans_b else b
    c = np.full((20, 64), np.inf, dtype)  # old contents must not leak in (the later inner blocks add to C)
    micro_gemm_block(False, a, b, c, 0, 20, 0, 64, trans_b)
    np.testing.assert_allclose(c, ref.matmul(a, _op_b(b, trans_b)), **TOL[dtype])


def test_which_products_it_takes():
    """By shape only: never batch 1, narrow outputs or small products (OpenBLAS keeps those)."""
    family = blas.OPENBLAS_FAMILY
    assert not micro_wanted(1, 256, 784, False, family)
    assert not micro_wanted(128, min(MICRO_256_MIN_N, MICRO_512_MIN_N) - 1, 784, False, family)
    assert not micro_wanted(8, 2, 4, False, family)
    assert micro_wanted_shape(128, 256, 784, False, BLAS_512) and micro_wanted_shape(128, 256, 784, False, BLAS_256)
    wanted = micro_wanted(128, 256, 784, False, family)
    assert wanted == micro_wanted(64, 128, 784, False, family)  # the same answer for every large product
    if wanted:  # this process uses it (AVX-512, or FASTNN_MICRO_GEMM=on): blas's gemm gives its bits
        rng = np.random.default_rng(0)
        a, b = rng.standard_normal((96, 300)).astype(np.float32), rng.standard_normal((300, 64)).astype(np.float32)
        through_blas, direct = np.empty((96, 64), np.float32), np.empty((96, 64), np.float32)
        blas.gemm(False, False, 1.0, a, b, 0.0, through_blas)
        micro_gemm_block(False, a, b, direct, 0, 96, 0, 64)
        np.testing.assert_array_equal(through_blas, direct)


@pytest.mark.parametrize("dtype", DTYPES)
def test_blas_gives_a_transposed_b_to_it_where_the_rule_says(dtype):
    """``A @ B.T`` through blas's gemm: the kernel's bits where :func:`micro_wanted` takes the product
    (this process's OpenBLAS family), OpenBLAS's otherwise; the reference either way."""
    rng = np.random.default_rng(5)
    m, n, k = 128, 96, 40
    a, b = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((n, k)).astype(dtype)
    through_blas, direct = np.empty((m, n), dtype), np.empty((m, n), dtype)
    blas.gemm(False, True, 1.0, a, b, 0.0, through_blas)
    micro_gemm_block(False, a, b, direct, 0, m, 0, n, True)
    np.testing.assert_allclose(through_blas, ref.matmul(a, b.T), **TOL[dtype])
    if micro_wanted(m, n, k, True, blas.OPENBLAS_FAMILY):
        np.testing.assert_array_equal(through_blas, direct)


def test_blas_family_codes():
    """OpenBLAS's 512-bit kernel families get the rule measured against them; any other, or none."""
    for name in ("SkylakeX", "skylakex", "Cooperlake", "SapphireRapids "):
        assert blas_family(name) == BLAS_512, name
    for name in ("Haswell", "Zen", "Sandybridge", "Prescott", "Neoverse N1", ""):
        assert blas_family(name) == BLAS_256, name
    assert blas.OPENBLAS_FAMILY == blas_family(blas.CORE_NAME)


def _rule_before(m, n, k):
    """Session 28's rule, measured against OpenBLAS's SkylakeX kernels (written out, not imported)."""
    return m >= 2 and n >= 32 and n % 16 == 0 and m * n * k >= 1 << 20


# every size of micro_gemm_grid's grid and the tiles dense's tiling cuts from it, the edges of each
# condition, and the small products of --small
_RULE_M = (1, 2, 3, 5, 6, 7, 8, 16, 31, 32, 33, 50, 63, 64, 100, 127, 128, 196, 200, 256, 392, 512, 784, 2048)
_RULE_N = (1, 2, 10, 15, 16, 17, 24, 31, 32, 33, 36, 48, 63, 64, 72, 100, 128, 200, 256, 512, 1024)
_RULE_K = (1, 2, 7, 8, 10, 16, 31, 32, 33, 64, 100, 128, 200, 256, 512, 784, 1024, 4096)


def _rule_512(m, n, k):
    """Session 31's rule (the last vector masked), written out: any width from 10 columns."""
    return m >= 2 and n >= 10 and m * n * k >= 1 << 20


def test_the_512_bit_rule():
    """Against OpenBLAS's SkylakeX-type kernels: every product session 28's rule took, and large ones of
    any width from 10 columns (the last vector masked: LeNet's 84 and 120, 100 hidden units, a
    classifier's 10 outputs at a large batch); ``A @ B.T`` and small products stay with OpenBLAS."""
    for m in _RULE_M:
        for n in _RULE_N:
            for k in _RULE_K:
                wanted = micro_wanted_shape(m, n, k, False, BLAS_512)
                assert wanted == _rule_512(m, n, k), (m, n, k)
                assert wanted or not _rule_before(m, n, k), (m, n, k)
                assert not micro_wanted_shape(m, n, k, True, BLAS_512), (m, n, k)
    assert micro_wanted_shape(256, 100, 512, False, BLAS_512) and micro_wanted_shape(2048, 10, 512, False, BLAS_512)
    assert not micro_wanted_shape(100, 100, 64, False, BLAS_512)  # the digits net's hidden layer (a tile)
    assert not micro_wanted_shape(200, 10, 100, False, BLAS_512)  # its output layer
    assert not micro_wanted_shape(2048, MICRO_512_MIN_N - 1, 512, False, BLAS_512)
    assert micro_wanted_shape(2, 1 << 19, 1, False, BLAS_512)
    assert not micro_wanted_shape(2, MICRO_MIN_MACS // 2 - 1, 1, False, BLAS_512)


def _rule_256(m, n, k, trans_b):
    """Session 36's rule against the AVX2 kernels, written out (not imported)."""
    if m < 2 or n < 10:
        return False
    if trans_b:
        return m >= 32 and (n >= 16 or k >= 32)
    return n >= 16 or m < 32 or k >= 10


def test_the_256_bit_rule():
    """Against OpenBLAS's AVX2 kernels: products of 2+ rows from 16 outputs wide, 10-15 wide with few
    rows or an inner size of 10+, ``A @ B.T`` from 32 rows; never one row or fewer than 10 outputs."""
    assert micro_wanted_shape(2, MICRO_256_WIDE_N, 1, False, BLAS_256)  # far below MICRO_MIN_MACS
    assert micro_wanted_shape(32, 16, 16, False, BLAS_256)  # the tiny net's 16-wide hidden layers
    assert micro_wanted_shape(128, 128, 10, False, BLAS_256)  # the mlp's output layer, its inner size 10
    assert micro_wanted_shape(200, 10, 100, False, BLAS_256)  # a classifier's 10 outputs
    assert micro_wanted_shape(MICRO_256_ROWS - 1, MICRO_256_MIN_N, 4, False, BLAS_256)
    assert not micro_wanted_shape(MICRO_256_ROWS, MICRO_256_MIN_N, MICRO_256_NARROW_MIN_K - 1, False, BLAS_256)
    assert not micro_wanted_shape(200, MICRO_256_MIN_N - 1, 100, False, BLAS_256)  # 9 outputs
    assert not micro_wanted_shape(1, 256, 784, False, BLAS_256)
    assert micro_wanted_shape(MICRO_256_NT_MIN_M, 16, 16, True, BLAS_256)  # the tiny net's input gradient
    assert not micro_wanted_shape(MICRO_256_NT_MIN_M - 1, 64, 256, True, BLAS_256)
    assert not micro_wanted_shape(200, 10, MICRO_256_NT_NARROW_MIN_K - 1, True, BLAS_256)
    assert micro_wanted_shape(200, 100, 10, True, BLAS_256)  # the digits net's input gradient
    for m in _RULE_M:
        for n in _RULE_N:
            for k in _RULE_K:
                for trans_b in (False, True):
                    assert micro_wanted_shape(m, n, k, trans_b, BLAS_256) == _rule_256(m, n, k, trans_b), (m, n, k)
                assert not micro_wanted_shape(m, n, k, True, BLAS_256) or micro_wanted_shape(m, n, k, False, BLAS_256)


_FORCED = textwrap.dedent(
    """
    import numpy as np
    from fastnn.kernels import blas, dense, microgemm
    rng = np.random.default_rng(0)
    x = rng.standard_normal((70, 320)).astype(np.float32)  # 70 x 48 x 320 >= MICRO_MIN_MACS
    w = rng.standard_normal((320, 48)).astype(np.float32)
    mine = np.empty((70, 48), np.float32)
    blas.gemm(False, False, 1.0, x, w, 0.0, mine)
    direct = np.empty_like(mine)
    microgemm.micro_gemm_block(False, x, w, direct, 0, 70, 0, 48)
    print(microgemm.micro_wanted(70, 48, 320, False, blas.OPENBLAS_FAMILY), np.array_equal(mine, direct))
    """
)


@pytest.mark.parametrize("mode,expected", [("on", "True True"), ("off", "False ")])
def test_the_environment_switch(mode, expected):
    """FASTNN_MICRO_GEMM=on takes the kernel on any CPU (blas's gemm then gives its bits), off never
    (OpenBLAS's bits may or may not match: not asserted)."""
    env = {**os.environ, "FASTNN_MICRO_GEMM": mode}
    out = subprocess.run([sys.executable, "-c", _FORCED], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[-2].startswith(expected)


_NARROW = textwrap.dedent(
    """
    import numpy as np
    from fastnn.kernels import microgemm
    from numba import njit

    @njit
    def shape(c):
        return microgemm.vector_width(c), microgemm.block_vectors()

    rng = np.random.default_rng(1)
    worst = 0.0
    for dtype in (np.float32, np.float64):
        cases = [(13, 37, 150, False, False), (7, 9, 5, True, False), (30, 64, 300, True, False), (30, 37, 150, False, True)]
        for m, n, k, trans, trans_b in cases:
            a = rng.standard_normal((k, m) if trans else (m, k)).astype(dtype)
            b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
            c = np.empty((m, n), dtype)
            microgemm.micro_gemm_block(trans, a, b, c, 0, m, 0, n, trans_b)
            exact = (a.T if trans else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
            worst = max(worst, float(np.abs(c - exact).max() / np.abs(exact).max()))
    print(shape(np.empty((1, 1), np.float32)), shape(np.empty((1, 1), np.float64)), worst < 1e-5)
    """
)


def test_the_avx2_register_shape(tmp_path):
    """Compiled for an AVX2 target (8 float32 a vector, 2 vectors a row: 12 of 16 registers) the
    kernel gives the same products: what a kernel prebuilt for x86-64-v3 runs."""
    env = {**os.environ, "NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": "", "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", _NARROW], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[-2] == "(8, 2) (4, 2) True"
