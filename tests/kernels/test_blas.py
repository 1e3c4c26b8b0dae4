"""gemm / gemm_block on sub-blocks (row-strided views) of larger arrays, all transpose combinations."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fastnn.kernels import blas
from fastnn.kernels.blas import gemm, gemm_block, tile_grid

DTYPES = [np.float32, np.float64]
TRANSPOSES = list(itertools.product([False, True], repeat=2))
TOL = {np.float32: {"rtol": 1e-5, "atol": 1e-5}, np.float64: {"rtol": 1e-12, "atol": 1e-12}}


def _view(rng, shape, dtype, pad=(3, 5)):
    """A (shape) view with row stride > its width into a larger random array; returns (view, parent)."""
    parent = rng.standard_normal((shape[0] + pad[0], shape[1] + pad[1])).astype(dtype)
    return parent[2 : 2 + shape[0], 1 : 1 + shape[1]], parent


def _operands(rng, m, n, k, trans_a, trans_b, dtype):
    a, _ = _view(rng, (k, m) if trans_a else (m, k), dtype)
    b, _ = _view(rng, (n, k) if trans_b else (k, n), dtype)
    return a, b


def _op(a, trans):
    return a.T.astype(np.float64) if trans else a.astype(np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
def test_gemm_on_views(trans_a, trans_b, dtype):
    rng = np.random.default_rng(0)
    for m, n, k in [(1, 1, 1), (5, 7, 3), (33, 17, 65)]:
        a, b = _operands(rng, m, n, k, trans_a, trans_b, dtype)
        c, parent = _view(rng, (m, n), dtype)
        before = parent.copy()
        c0 = c.astype(np.float64)
        gemm(trans_a, trans_b, 0.5, a, b, 1.0, c)  # beta=1 accumulates
        assert c.dtype == dtype
        np.testing.assert_allclose(c, 0.5 * _op(a, trans_a) @ _op(b, trans_b) + c0, **TOL[dtype])
        outside = np.ones(parent.shape, dtype=bool)
        outside[2 : 2 + m, 1 : 1 + n] = False
        np.testing.assert_array_equal(parent[outside], before[outside])


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_beta_zero_ignores_old_contents(dtype):
    rng = np.random.default_rng(1)
    a, b = _operands(rng, 6, 4, 5, False, False, dtype)
    c, _ = _view(rng, (6, 4), dtype)
    c[...] = np.nan
    gemm(False, False, 1.0, a, b, 0.0, c)
    np.testing.assert_allclose(c, _op(a, False) @ _op(b, False), **TOL[dtype])


def test_gemm_on_contiguous_arrays():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((9, 4)), rng.standard_normal((4, 3))
    c = np.zeros((9, 3))
    gemm(False, False, 1.0, a, b, 0.0, c)
    np.testing.assert_allclose(c, a @ b, **TOL[np.float64])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
def test_gemm_block_writes_only_its_block(trans_a, trans_b, dtype):
    rng = np.random.default_rng(3)
    m, n, k = 20, 15, 9
    a, b = _operands(rng, m, n, k, trans_a, trans_b, dtype)
    c, _ = _view(rng, (m, n), dtype)
    before = c.astype(np.float64)
    full = 2.0 * _op(a, trans_a) @ _op(b, trans_b)
    r0, r1, c0, c1 = 3, 11, 4, 13
    gemm_block(trans_a, trans_b, 2.0, a, b, 1.0, c, r0, r1, c0, c1)
    expected = before.copy()
    expected[r0:r1, c0:c1] += full[r0:r1, c0:c1]
    np.testing.assert_allclose(c, expected, **TOL[dtype])
    # an empty block is a no-op
    snapshot = c.copy()
    gemm_block(trans_a, trans_b, 2.0, a, b, 1.0, c, 5, 5, 0, n)
    np.testing.assert_array_equal(c, snapshot)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tiles_cover_the_output_exactly_once(dtype):
    rng = np.random.default_rng(4)
    m, n, k = 150, 300, 7
    a, b = _operands(rng, m, n, k, False, False, dtype)
    c, _ = _view(rng, (m, n), dtype)
    tile_rows, tile_cols, _, _ = tile_grid(m, n, k, 2, 0)
    for r0 in range(0, m, tile_rows):
        for c0 in range(0, n, tile_cols):
            gemm_block(False, False, 1.0, a, b, 0.0, c, r0, min(r0 + tile_rows, m), c0, min(c0 + tile_cols, n))
    np.testing.assert_allclose(c, _op(a, False) @ _op(b, False), **TOL[dtype])


@pytest.mark.parametrize(
    ("m", "n", "k", "tiles", "small"),
    [
        (200, 100, 100, 2, 1_000_000),
        (100, 100, 200, 2, 1_000_000),
        (128, 256, 784, 2, 1_000_000),
        (150, 300, 7, 3, 0),
        (1, 40, 5, 2, 1_000_000),
        (5, 3, 1_000_000, 4, 1_000_000),
        (4096, 4096, 4096, 2, 1_000_000),
        (64, 128, 2048, 2, 1_000_000),
    ],
)
def test_tile_grid_covers_the_output_with_enough_tiles_of_the_small_kernels_size(m, n, k, tiles, small):
    tile_rows, tile_cols, row_tiles, col_tiles = tile_grid(m, n, k, tiles, small)
    assert (row_tiles - 1) * tile_rows < m <= row_tiles * tile_rows  # every row, no empty tile
    assert (col_tiles - 1) * tile_cols < n <= col_tiles * tile_cols
    assert tile_cols == n or tile_cols % 16 == 0  # column tiles start on a float32 cache line
    if m * n >= 16 * tiles and m >= tiles:
        assert row_tiles * col_tiles >= tiles
    if 0 < small and m * n * k <= 32 * small and k <= 1024 and tile_rows * tile_cols > 16:
        assert tile_rows * tile_cols * k <= small  # sized for OpenBLAS's small-matrix kernels
    if m * n * k > 32 * small or k > 1024:
        assert row_tiles * col_tiles < 2 * tiles + 2  # a large GEMM or a long inner size: the threads' share only


def test_tile_grid_splits_the_fit_benchmarks_products_evenly():
    # 200 x 100 (k 100) and 100 x 100 (k 200): two even halves of 1e6 multiply-adds, not 112 + 88
    assert tile_grid(200, 100, 100, 2, 1_000_000) == (100, 100, 2, 1)
    assert tile_grid(100, 100, 200, 2, 1_000_000) == (50, 100, 2, 1)
    assert tile_grid(200, 100, 100, 2, 0) == (100, 100, 2, 1)


SMALL_GEMM_RUN = """
import json, numpy as np, numba
from numba import njit
from fastnn.kernels.dense import dense_backward, dense_forward
from fastnn.kernels.tiling import small_gemm_macs
rng = np.random.default_rng(0)
x, w, g = (rng.standard_normal(s).astype(np.float32) for s in ((200, 100), (100, 100), (200, 100)))
def step():
    z, y = np.empty((200, 100), np.float32), np.empty((200, 100), np.float32)
    dense_forward(x, w, np.zeros(100, np.float32), z, y, 3, 0.0)  # relu
    gz, gx, gw = np.empty_like(g), np.empty_like(x), np.empty_like(w)
    dense_backward(x, w, z, y, g, gz, gx, gw, np.empty(100, np.float32), np.empty((4, 100), np.float32), 3, 0.0, True)
    return y, gw, gx
runs = []
for threads in (1, numba.config.NUMBA_NUM_THREADS):
    numba.set_num_threads(threads)
    runs.append(step())
y, gw, gx = runs[0]
z = x.astype(np.float64) @ w
gz = g * (z > 0)
print(json.dumps({
    "macs": int(njit(lambda: small_gemm_macs())()),
    "same_bits": all(np.array_equal(a, b) for a, b in zip(*runs)),
    "errors": [float(np.max(np.abs(a - b))) for a, b in ((y, np.maximum(z, 0)), (gw, x.T @ gz), (gx, gz @ w.T))],
}))
"""


@pytest.mark.parametrize("setting", ["on", "off"])
def test_fastnn_small_gemm_sets_the_small_kernel_tiling_and_keeps_results(setting):
    import json
    import os
    import subprocess
    import sys

    import llvmlite.binding as llvm

    env = dict(os.environ, FASTNN_SMALL_GEMM=setting, NUMBA_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, "-c", SMALL_GEMM_RUN], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    has_kernels = {"+avx2", "+fma"} <= set(llvm.get_host_cpu_features().flatten().split(","))
    assert out["macs"] == (1_000_000 if setting == "on" and has_kernels else 0)
    assert out["same_bits"]  # 1 and 2 threads: the tiles are fixed for the process
    assert max(out["errors"]) < 1e-3, out["errors"]


def test_fastnn_small_gemm_refuses_an_unknown_setting():
    import os
    import subprocess
    import sys

    env = dict(os.environ, FASTNN_SMALL_GEMM="fast")
    proc = subprocess.run([sys.executable, "-c", "import fastnn"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "FASTNN_SMALL_GEMM must be auto, on or off, got 'fast'" in proc.stderr


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a,trans_b", TRANSPOSES)
def test_gemm_block_of_one_row_or_one_column_away_from_the_corner(trans_a, trans_b, dtype):
    """A block of one row or one column (the tile of a parallel product with few rows or columns
    per tile) runs as a matrix-vector product: its operand strides and offsets r0, c0 > 0 on
    row-strided views of every transpose, against NumPy."""
    rng = np.random.default_rng(6)
    m, n, k = 7, 6, 5
    a, b = _operands(rng, m, n, k, trans_a, trans_b, dtype)
    full = 2.0 * _op(a, trans_a) @ _op(b, trans_b)
    for r0, r1, c0, c1 in [(3, 4, 1, 6), (2, 7, 4, 5), (5, 6, 2, 3)]:  # a row, a column, one element
        c, _ = _view(rng, (m, n), dtype)
        expected = c.astype(np.float64)
        expected[r0:r1, c0:c1] += full[r0:r1, c0:c1]
        gemm_block(trans_a, trans_b, 2.0, a, b, 1.0, c, r0, r1, c0, c1)
        np.testing.assert_allclose(c, expected, **TOL[dtype], err_msg=f"block {(r0, r1, c0, c1)}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
def test_an_outer_product_against_a_transposed_b_gives_blas_bits_in_its_block(trans_a, dtype):
    """op(A) @ B.T with inner size 1 (a Dense layer with one output: its input gradient) skips
    BLAS: on row-strided views, in a block away from the corner, over NaN (beta 0 ignores the old
    contents) it writes exactly BLAS's bits (the same product with a zero second column, which
    BLAS computes) and nothing outside the block."""
    rng = np.random.default_rng(7)
    m, n = 9, 21
    a, b = _operands(rng, m, n, 1, trans_a, True, dtype)
    a2, b2 = _operands(rng, m, n, 2, trans_a, True, dtype)
    a2[...] = 0
    b2[...] = 0
    if trans_a:
        a2[:1] = a
    else:
        a2[:, :1] = a
    b2[:, :1] = b
    blas = np.zeros((m, n), dtype)
    gemm(trans_a, True, 1.0, a2, b2, 0.0, blas)  # inner size 2: BLAS
    np.testing.assert_allclose(blas, _op(a, trans_a) @ _op(b, True), **TOL[dtype])
    for r0, r1, c0, c1 in [(0, m, 0, n), (2, 7, 3, 19)]:
        c, parent = _view(rng, (m, n), dtype)
        c[...] = np.nan
        before = parent.copy()
        gemm_block(trans_a, True, 1.0, a, b, 0.0, c, r0, r1, c0, c1)
        np.testing.assert_array_equal(c[r0:r1, c0:c1], blas[r0:r1, c0:c1])
        inside = np.zeros(parent.shape, dtype=bool)
        inside[2 + r0 : 2 + r1, 1 + c0 : 1 + c1] = True
        np.testing.assert_array_equal(parent[~inside], before[~inside])


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_small_product_against_a_transposed_b_gives_the_bits_of_the_plain_form_on_a_copy(dtype):
    """A @ B.T with a small B (under the NT_COPY_* bounds where the copy is on) runs as A @ (B's block
    copied transposed): on row-strided views, in blocks away from the corner, over NaN, it writes
    exactly what the A @ B form gives on a transposed copy of B's block, close to NumPy's, and nothing
    outside its block; larger B (k = 40, n = 70) and other alpha / beta keep the A @ B.T form, also close
    to NumPy's."""
    rng = np.random.default_rng(8)
    for m, n, k in [(32, 16, 16), (7, 5, 3), (33, 64, 15), (65, 17, 31), (40, 70, 8), (20, 16, 40)]:
        a, b = _operands(rng, m, n, k, False, True, dtype)
        for r0, r1, c0, c1 in [(0, m, 0, n), (2, m - 1, 3, n - 1)]:
            c, parent = _view(rng, (m, n), dtype)
            c[...] = np.nan
            before = parent.copy()
            gemm_block(False, True, 1.0, a, b, 0.0, c, r0, r1, c0, c1)
            width = c1 - c0
            if k * a.itemsize < blas.NT_COPY_ROW_BYTES and width <= blas.NT_COPY_MAX_N:  # copied
                plain = np.full((m, n), np.nan, dtype)
                gemm_block(False, False, 1.0, a, np.ascontiguousarray(b[c0:c1].T), 0.0, plain, r0, r1, 0, width)
                np.testing.assert_array_equal(c[r0:r1, c0:c1], plain[r0:r1, :width], err_msg=f"{(m, n, k)}")
            expected = _op(a, False) @ _op(b, True)
            np.testing.assert_allclose(c[r0:r1, c0:c1], expected[r0:r1, c0:c1], **TOL[dtype])
            inside = np.zeros(parent.shape, dtype=bool)
            inside[2 + r0 : 2 + r1, 1 + c0 : 1 + c1] = True
            np.testing.assert_array_equal(parent[~inside], before[~inside])
        c, _ = _view(rng, (m, n), dtype)
        c0 = c.astype(np.float64)
        gemm(False, True, 0.5, a, b, 1.0, c)  # alpha / beta: the A @ B.T form
        np.testing.assert_allclose(c, 0.5 * _op(a, False) @ _op(b, True) + c0, **TOL[dtype])


NT_COPY_RUN = """
import hashlib, json, numpy as np
from numba import njit
from fastnn.kernels import blas
@njit(cache=False)
def nt(a, b, c):
    blas.gemm_block(False, True, 1.0, a, b, 0.0, c, 0, c.shape[0], 0, c.shape[1])
rng = np.random.default_rng(0)
h = hashlib.sha256()
for dtype in (np.float32, np.float64):
    for _ in range(400):
        m, n, k = (int(v) for v in rng.integers(2, 65, 3))
        k = min(k, 31 if dtype == np.float32 else 15) if rng.random() < 0.7 else k
        a, b = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((n, k)).astype(dtype)
        c = np.empty((m, n), dtype)
        nt(a, b, c)
        h.update(c.tobytes())
print(json.dumps({"row_bytes": blas.NT_COPY_ROW_BYTES, "core": blas.CORE_NAME, "hash": h.hexdigest()}))
"""


def test_fastnn_nt_copy_off_keeps_the_packing_product_with_the_same_bits():
    """FASTNN_NT_COPY=off turns the transposed copy off; on or off, a small A @ B.T gives the same
    bits (random shapes up to 64, most within the copy's bounds, float32 and float64)."""
    import json
    import os
    import subprocess
    import sys

    runs = {}
    for setting in ("auto", "off"):
        env = dict(os.environ, FASTNN_NT_COPY=setting)
        proc = subprocess.run([sys.executable, "-c", NT_COPY_RUN], env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        runs[setting] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert runs["off"]["row_bytes"] == 0
    on_skylake = runs["auto"]["core"].lower() in ("skylakex", "cooperlake")
    assert runs["auto"]["row_bytes"] == (128 if on_skylake else 0)
    assert runs["auto"]["hash"] == runs["off"]["hash"]


def test_fastnn_nt_copy_refuses_an_unknown_setting():
    import os
    import subprocess
    import sys

    env = dict(os.environ, FASTNN_NT_COPY="on")
    proc = subprocess.run([sys.executable, "-c", "import fastnn"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "FASTNN_NT_COPY must be auto or off, got 'on'" in proc.stderr
