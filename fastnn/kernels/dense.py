"""Dense (fully connected) layer: ``z = x @ w + b``, ``y = f(z)`` with the activation fused.

Shapes: x (batch, in), w (in, out), b (out,), z and y (batch, out); float32 or float64,
row-major. GEMMs go to BLAS (one thread) on fixed output tiles spread over Numba's threads;
the cheap passes around them (bias + activation after the forward GEMM, activation gradient
and bias column sums before the backward GEMMs) are fused into those same sweeps.
"""
from __future__ import annotations

from numba import literal_unroll, njit, prange

from .._config import (
    JIT,
    JIT_INLINE,
    JIT_PARALLEL,
    PARALLEL_MIN_ELEMENTS,
    PARALLEL_MIN_MACS,
    REDUCTION_CHUNK_ROWS,
)
from ._scalar import like, n_chunks
from .activations import (
    ELEMENTWISE_CODES,
    IDENTITY,
    ROWWISE_CODES,
    activate,
    rows_activate,
    rows_activate_grad,
)
from .blas import gemm_block, tile_shape


@njit(**JIT)  # not inlined: literal_unroll inside a prange body would serialise it
def _bias_activate_block(z, y, b, code, alpha, r0, r1, c0, c1):
    """z[r0:r1, c0:c1] += b; y = f(z) on that block (elementwise activations only)."""
    bb = b[c0:c1]
    n = c1 - c0
    for c in literal_unroll(ELEMENTWISE_CODES):  # the code is a constant inside each loop: it vectorises
        if code == c:
            for i in range(r0, r1):
                zi, yi = z[i, c0:c1], y[i, c0:c1]
                for j in range(n):
                    v = zi[j] + bb[j]
                    zi[j] = v
                    yi[j] = activate(c, v, alpha)


@njit(**JIT_INLINE)
def _forward_tile(x, w, b, z, y, code, alpha, tile, tile_rows, tile_cols, col_tiles):
    r0 = (tile // col_tiles) * tile_rows
    c0 = (tile % col_tiles) * tile_cols
    r1 = min(r0 + tile_rows, z.shape[0])
    c1 = min(c0 + tile_cols, z.shape[1])
    zero = like(0.0, z)
    gemm_block(False, False, like(1.0, z), x, w, zero, z, r0, r1, c0, c1)
    if code < ROWWISE_CODES:
        _bias_activate_block(z, y, b, code, alpha, r0, r1, c0, c1)
    else:
        _bias_activate_block(z, z, b, IDENTITY, alpha, r0, r1, c0, c1)


@njit(**JIT_PARALLEL)
def dense_forward(x, w, b, z, y, code, alpha):
    """z = x @ w + b and y = f(z) (activation ``code``); ``y`` may be ``z`` for identity.

    x (batch, in), w (in, out), b (out,), z/y (batch, out), one dtype. Writes z and y.
    """
    m, n = z.shape
    a = like(alpha, z)
    tile_rows, tile_cols = tile_shape(m, n)
    col_tiles = n_chunks(n, tile_cols)
    tiles = n_chunks(m, tile_rows) * col_tiles
    if m * n * x.shape[1] < PARALLEL_MIN_MACS:
        for t in range(tiles):
            _forward_tile(x, w, b, z, y, code, a, t, tile_rows, tile_cols, col_tiles)
    else:
        for t in prange(tiles):
            _forward_tile(x, w, b, z, y, code, a, t, tile_rows, tile_cols, col_tiles)
    if code >= ROWWISE_CODES:
        rows_activate(code, z, y, a, 0, m)


@njit(**JIT_INLINE)
def _grad_z_chunk(z, y, grad_y, grad_z, partial_b, code, alpha, chunk):
    """grad_z = grad_y * f'(z) on one fixed row chunk, and that chunk's bias-gradient partial."""
    r0 = chunk * REDUCTION_CHUNK_ROWS
    r1 = min(r0 + REDUCTION_CHUNK_ROWS, z.shape[0])
    if code != IDENTITY:
        rows_activate_grad(code, z, y, grad_y, grad_z, alpha, r0, r1)
    n = z.shape[1]
    sums = partial_b[chunk]
    for j in range(n):
        sums[j] = 0
    for i in range(r0, r1):
        gzi = grad_z[i]
        for j in range(n):
            sums[j] += gzi[j]


@njit(**JIT_INLINE)
def _backward_tile(x, w, grad_z, grad_x, grad_w, tile, w_tiles, w_tile_rows, x_tile_rows):
    """Tile ``tile`` of grad_w = x.T @ grad_z (first ``w_tiles`` tiles) or of grad_x = grad_z @ w.T."""
    one = like(1.0, grad_z)
    zero = like(0.0, grad_z)
    if tile < w_tiles:
        r0 = tile * w_tile_rows
        gemm_block(True, False, one, x, grad_z, zero, grad_w, r0, min(r0 + w_tile_rows, grad_w.shape[0]),
                   0, grad_w.shape[1])
    else:
        r0 = (tile - w_tiles) * x_tile_rows
        gemm_block(False, True, one, grad_z, w, zero, grad_x, r0, min(r0 + x_tile_rows, grad_x.shape[0]),
                   0, grad_x.shape[1])


@njit(**JIT_PARALLEL)
def dense_backward(x, w, z, y, grad_y, grad_z, grad_x, grad_w, grad_b, partial_b, code, alpha, need_grad_x):
    """Gradients of the dense layer from the upstream gradient ``grad_y`` (batch, out).

    Writes grad_z = grad_y * f'(z) (pass ``grad_z`` = ``grad_y`` for identity), grad_w (in, out),
    grad_b (out,) and, if ``need_grad_x``, grad_x (batch, in). ``partial_b`` is scratch of shape
    (ceil(batch / REDUCTION_CHUNK_ROWS), out): bias sums are per fixed row chunk, combined in
    chunk order, so the result is the same on any number of threads.
    """
    m, n = z.shape
    k = x.shape[1]
    a = like(alpha, z)
    chunks = n_chunks(m, REDUCTION_CHUNK_ROWS)
    if code >= ROWWISE_CODES:
        rows_activate_grad(code, z, y, grad_y, grad_z, a, 0, m)
        code = IDENTITY
    if m * n < PARALLEL_MIN_ELEMENTS:
        for c in range(chunks):
            _grad_z_chunk(z, y, grad_y, grad_z, partial_b, code, a, c)
    else:
        for c in prange(chunks):
            _grad_z_chunk(z, y, grad_y, grad_z, partial_b, code, a, c)
    for j in range(n):
        grad_b[j] = partial_b[0, j]
    for c in range(1, chunks):
        for j in range(n):
            grad_b[j] += partial_b[c, j]
    # grad_w is (k, n): tiles of rows; grad_x is (m, k): tiles of rows.
    w_tile_rows = tile_shape(k, n)[0] if k >= 128 else k
    x_tile_rows = tile_shape(m, k)[0] if m >= 128 else m
    w_tiles = n_chunks(k, w_tile_rows)
    x_tiles = n_chunks(m, x_tile_rows) if need_grad_x else 0
    if m * n * k < PARALLEL_MIN_MACS:
        for t in range(w_tiles + x_tiles):
            _backward_tile(x, w, grad_z, grad_x, grad_w, t, w_tiles, w_tile_rows, x_tile_rows)
    else:
        for t in prange(w_tiles + x_tiles):
            _backward_tile(x, w, grad_z, grad_x, grad_w, t, w_tiles, w_tile_rows, x_tile_rows)
