"""fastnn's register-blocked GEMM (kernels/microgemm.py) against the float64 reference, and the bits it
promises: an element's value does not depend on the block, the tiling or the inner-sum blocks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fastnn.kernels import blas
from fastnn.kernels.microgemm import (
    MICRO_MIN_MACS,
    MICRO_MIN_N,
    MICRO_N_MULTIPLE,
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


def _strided(rng, shape, dtype):
    """A view with a row stride wider than its rows (a block of a larger array)."""
    parent = rng.standard_normal((shape[0] + 3, shape[1] + 5)).astype(dtype)
    return parent[1 : 1 + shape[0], 2 : 2 + shape[1]]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_matches_the_reference_on_strided_views(m, n, k, trans_a, dtype):
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    a = _strided(rng, (k, m) if trans_a else (m, k), dtype)
    b = _strided(rng, (k, n), dtype)
    parent = np.full((m + 2, n + 3), np.nan, dtype)
    c = parent[1 : 1 + m, 1 : 1 + n]
    micro_gemm_block(trans_a, a, b, c, 0, m, 0, n)
    assert c.dtype == dtype
    np.testing.assert_allclose(c, ref.matmul(a, b, trans_a), **TOL[dtype])
    outside = np.ones(parent.shape, dtype=bool)
    outside[1 : 1 + m, 1 : 1 + n] = False
    assert np.isnan(parent[outside]).all()  # nothing written outside the block


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
def test_an_elements_bits_do_not_depend_on_the_blocks(trans_a, dtype):
    """Blocks cut at odd rows and columns (edge panels on a padded copy with the whole inner sum,
    whole panels in blocks of the inner sum) give the bits of one call over the whole output."""
    rng = np.random.default_rng(7)
    m, n, k = 29, 150, 333
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    whole = np.empty((m, n), dtype)
    micro_gemm_block(trans_a, a, b, whole, 0, m, 0, n)
    pieces = np.full((m, n), np.nan, dtype)
    for r0, r1 in [(0, 5), (5, 6), (6, 29)]:
        for c0, c1 in [(0, 20), (20, 84), (84, 101), (101, 150)]:
            micro_gemm_block(trans_a, a, b, pieces, r0, r1, c0, c1)
    np.testing.assert_array_equal(pieces, whole)


@pytest.mark.parametrize("dtype", DTYPES)
def test_beta_zero_overwrites(dtype):
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((20, 200)).astype(dtype), rng.standard_normal((200, 64)).astype(dtype)
    c = np.full((20, 64), np.inf, dtype)  # old contents must not leak in (the later inner blocks add to C)
    micro_gemm_block(False, a, b, c, 0, 20, 0, 64)
    np.testing.assert_allclose(c, ref.matmul(a, b), **TOL[dtype])


def test_which_products_it_takes():
    """By shape only: never batch 1, narrow outputs or small products (OpenBLAS keeps those)."""
    assert not micro_wanted(1, 256, 784)
    assert not micro_wanted(128, MICRO_MIN_N - 1, 784)
    assert not micro_wanted(8, 32, MICRO_MIN_MACS // 256 - 1)
    # a width that is not a multiple of the vectors (the digits MLP's 100 hidden units): OpenBLAS
    assert not micro_wanted(200, 100, 784) and not micro_wanted_shape(200, MICRO_N_MULTIPLE * 6 + 4, 784)
    assert micro_wanted_shape(128, 256, 784) and micro_wanted_shape(64, MICRO_N_MULTIPLE * 2, MICRO_MIN_MACS)
    assert not micro_wanted_shape(64, 64, MICRO_MIN_MACS // (64 * 64) - 1)
    wanted = micro_wanted(128, 256, 784)
    assert wanted == micro_wanted(64, 128, 784)  # the same answer for every large product
    if wanted:  # this process uses it (AVX-512, or FASTNN_MICRO_GEMM=on): blas's gemm gives its bits
        rng = np.random.default_rng(0)
        a, b = rng.standard_normal((96, 300)).astype(np.float32), rng.standard_normal((300, 64)).astype(np.float32)
        through_blas, direct = np.empty((96, 64), np.float32), np.empty((96, 64), np.float32)
        blas.gemm(False, False, 1.0, a, b, 0.0, through_blas)
        micro_gemm_block(False, a, b, direct, 0, 96, 0, 64)
        np.testing.assert_array_equal(through_blas, direct)


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
    print(microgemm.micro_wanted(70, 48, 320), np.array_equal(mine, direct))
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
        for m, n, k, trans in [(13, 37, 150, False), (7, 9, 5, True), (30, 64, 300, True)]:
            a = rng.standard_normal((k, m) if trans else (m, k)).astype(dtype)
            b = rng.standard_normal((k, n)).astype(dtype)
            c = np.empty((m, n), dtype)
            microgemm.micro_gemm_block(trans, a, b, c, 0, m, 0, n)
            exact = (a.T if trans else a).astype(np.float64) @ b.astype(np.float64)
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
