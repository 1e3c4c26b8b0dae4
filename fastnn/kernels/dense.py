"""Dense (fully connected) layer: ``z = x @ w + b``, ``y = f(z)`` with the activation fused.

Shapes: x (batch, in), w (in, out), b (out,), z and y (batch, out); float32 or float64,
row-major. GEMMs go to BLAS (one thread) on fixed output tiles spread over Numba's threads;
the cheap passes around them (bias + activation after the forward GEMM, activation gradient
and bias column sums before the backward GEMMs) are fused into those same sweeps.

Elementwise activations only: the caller applies a row-wise one (softmax, log_softmax) with
``activation_forward`` / ``activation_backward`` after a call with ``IDENTITY`` (the layer does),
so these kernels do not compile the softmax rows for every model (~14% of a small fit's compile).
"""

from __future__ import annotations

import numpy as np
from numba import literal_unroll, njit, prange

from .._config import (
    JIT,
    JIT_INLINE,
    JIT_PARALLEL,
    K_SPLIT_MIN_RATIO,
    PARALLEL_MIN_ELEMENTS,
    PARALLEL_MIN_MACS,
    REDUCTION_CHUNK_ROWS,
    THREAD_MIN_MACS,
)
from ._scalar import like, n_chunks
from .activations import (
    IDENTITY,
    ROWWISE_CODES,
    ROWWISE_REFUSED,
    VECTORISED_CODES,
    activate,
    activate_const,
    activate_grad,
    activate_grad_const,
    elementwise_rows_grad,
)
from .blas import gemm_block, small_kernel_form, tile_grid
from .tiling import gemm_tiles, matvec_split_bytes, numba_threads, small_gemm_macs


@njit(**JIT)  # not inlined: literal_unroll inside a prange body would serialise it
def _bias_activate_block(z, y, b, code, alpha, r0, r1, c0, c1):
    """z[r0:r1, c0:c1] += b; y = f(z) on that block (elementwise activations only)."""
    # indexed, not through row views: a view per row costs more than a 16-wide row's arithmetic
    # (32x16 tanh block 0.22 -> 0.11 us)
    # (unsigned bounds: indices known >= 0 skip Numba's negative-index wraparound, which blocks vectorising)
    i0, i1, j0, j1 = np.uint64(r0), np.uint64(r1), np.uint64(c0), np.uint64(c1)
    if code == IDENTITY and y.ctypes.data == z.ctypes.data:
        # y is z (an identity layer's output): the bias alone, no second store to the same element,
        # which kept the loop from vectorising (32x16 0.23 -> 0.09 us)
        for i in range(i0, i1):
            for j in range(j0, j1):
                z[i, j] += b[j]
        return
    vectorised = False
    for c in literal_unroll(VECTORISED_CODES):  # the code is a constant inside each loop: it vectorises
        if code == c:
            vectorised = True
            for i in range(i0, i1):
                for j in range(j0, j1):
                    v = z[i, j] + b[j]
                    z[i, j] = v
                    y[i, j] = activate_const(c, v, alpha)
    if not vectorised:
        for i in range(i0, i1):
            for j in range(j0, j1):
                u = z[i, j] + b[j]
                z[i, j] = u
                y[i, j] = activate(code, u, alpha)


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _forward_tile(x, w, b, z, y, code, alpha, tile, grid):
    r0, r1, c0, c1 = _block(tile, grid[0], grid[1], grid[3], z.shape[0], z.shape[1])
    zero = like(0.0, z)
    gemm_block(False, False, like(1.0, z), x, w, zero, z, r0, r1, c0, c1)
    _bias_activate_block(z, y, b, code, alpha, r0, r1, c0, c1)


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _forward_k_part(x, w, z, sums, part, parts):
    """Part ``part`` of ``parts`` of x @ w: the product over rows k0:k1 of ``w`` (columns of ``x``),
    written to z (part 0) or to sums[part - 1]."""
    k = x.shape[1]
    k0, k1 = part * k // parts, (part + 1) * k // parts
    one, zero = like(1.0, z), like(0.0, z)
    m, n = z.shape
    if part == 0:
        gemm_block(False, False, one, x[:, k0:k1], w[k0:k1], zero, z, 0, m, 0, n)
    else:
        gemm_block(False, False, one, x[:, k0:k1], w[k0:k1], zero, sums[part - 1], 0, m, 0, n)


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _sum_parts_block(z, y, b, sums, code, alpha, block, blocks):
    """Rows of block ``block`` of ``blocks``: z += each of ``sums`` in part order, then the bias and
    the activation (:func:`_bias_activate_block`)."""
    m, n = z.shape
    r0, r1 = block * m // blocks, (block + 1) * m // blocks
    for p in range(sums.shape[0]):
        for i in range(r0, r1):
            for j in range(n):
                z[i, j] += sums[p, i, j]
    _bias_activate_block(z, y, b, code, alpha, r0, r1, 0, n)


@njit(**JIT_INLINE)
def _k_parts(m, n, k, parallel, w):
    """Parts of the inner size ``k`` a Dense layer's forward product is split into (1: none, the
    output tiles of :func:`_grid`): ``gemm_tiles()`` for a product run in parallel (batch > 1, as
    many multiply-adds as :func:`_threaded_product` asks) whose ``k`` is at least
    ``_config.K_SPLIT_MIN_RATIO`` times its larger output side. Shapes only, never the number of
    threads, so a result's bits do not depend on it."""
    if parallel and m > 1 and m * w.size >= THREAD_MIN_MACS and k >= K_SPLIT_MIN_RATIO * max(m, n):
        return gemm_tiles()
    return np.int64(1)


@njit(**JIT_PARALLEL)
def dense_forward(x, w, b, z, y, code, alpha):
    """z = x @ w + b and y = f(z) (elementwise activation ``code``); ``y`` may be ``z`` for identity.

    x (batch, in), w (in, out), b (out,), z/y (batch, out), one dtype. Writes z and y. Raises
    ValueError for a row-wise code (see the module docstring). A long inner size (:func:`_k_parts`)
    is split along k: each part's product, then z = the parts summed in order + b.
    """
    if code >= ROWWISE_CODES:
        raise ValueError(ROWWISE_REFUSED)
    m, n = z.shape
    a = like(alpha, z)
    parallel = _worth_parallel(m, n, x.shape[1])
    parts = _k_parts(m, n, x.shape[1], parallel, w)
    if parts > 1:
        sums = np.empty((parts - 1, m, n), z.dtype)
        if _threaded(True):
            for p_u in prange(parts):
                _forward_k_part(x, w, z, sums, np.int64(p_u), parts)  # prange indices are uint64
            for r_u in prange(parts):
                _sum_parts_block(z, y, b, sums, code, a, np.int64(r_u), parts)
        else:
            for p in range(parts):
                _forward_k_part(x, w, z, sums, p, parts)
            for r in range(parts):
                _sum_parts_block(z, y, b, sums, code, a, r, parts)
        return
    grid = _grid(m, n, x.shape[1], parallel, small_kernel_form(False, False))  # x @ w
    if _threaded_product(parallel, m, w):
        for s_u in prange(_shares(grid[2] * grid[3])):
            lo, hi = _share(np.int64(s_u), grid[2] * grid[3])  # prange indices are uint64
            for t in range(lo, hi):
                _forward_tile(x, w, b, z, y, code, a, t, grid)
    else:
        for t in range(grid[2] * grid[3]):  # the same tiles (one when not parallel), in a loop
            _forward_tile(x, w, b, z, y, code, a, t, grid)


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _grad_z_chunk(z, y, grad_y, grad_z, partial_b, code, alpha, chunk):
    """grad_z = grad_y * f'(z) on one fixed row chunk, and that chunk's bias-gradient partial."""
    r0 = chunk * REDUCTION_CHUNK_ROWS
    grad_z_rows(z, y, grad_y, grad_z, partial_b, code, alpha, chunk, r0, min(r0 + REDUCTION_CHUNK_ROWS, z.shape[0]))


@njit(**JIT_INLINE)
def grad_z_rows(z, y, grad_y, grad_z, partial_b, code, alpha, row, r0, r1):
    """grad_z = grad_y * f'(z) on rows ``[r0, r1)`` and their bias-gradient sums in row order,
    into ``partial_b[row]`` (grad_z is grad_y for identity: only the sums)."""
    n = z.shape[1]
    if code != IDENTITY and n <= NARROW_GRAD_Z:
        _narrow_grad_z(z, y, grad_y, grad_z, partial_b, code, alpha, row, r0, r1)
        return
    if code != IDENTITY:
        elementwise_rows_grad(code, z, y, grad_y, grad_z, alpha, r0, r1)
    for j in range(n):
        partial_b[row, j] = 0
    for i in range(r0, r1):  # indexed, not through row views (see _bias_activate_block)
        for j in range(n):
            partial_b[row, j] += grad_z[i, j]


#: widths up to which :func:`_grad_z_chunk` forms grad_z and its bias sums in one pass over the rows
#: (a short row's loops cost more than its arithmetic: 32x16 tanh 0.28 -> 0.14 us, 32x1 0.24 -> 0.14,
#: float32 and float64; at 64 wide float64's one pass was slower, 0.73 against 0.97 us)
NARROW_GRAD_Z = 16


@njit(**JIT)
def _narrow_grad_z(z, y, grad_y, grad_z, partial_b, code, alpha, chunk, r0, r1):
    """:func:`_grad_z_chunk`'s rows ``[r0, r1)`` in one pass: each grad_z value, then its bias sum
    (the same values and the same order of additions, row by row, as the two passes)."""
    # (unsigned bounds: no negative-index wraparound in the loops, see _bias_activate_block)
    i0, i1, n, c_u = np.uint64(r0), np.uint64(r1), np.uint64(z.shape[1]), np.uint64(chunk)
    for j in range(n):
        partial_b[c_u, j] = 0
    vectorised = False
    for c in literal_unroll(VECTORISED_CODES):  # the code is a constant inside each loop: it vectorises
        if code == c:
            vectorised = True
            for i in range(i0, i1):
                for j in range(n):
                    g = grad_y[i, j] * activate_grad_const(c, z[i, j], y[i, j], alpha)
                    grad_z[i, j] = g
                    partial_b[c_u, j] += g
    if not vectorised:
        for i in range(i0, i1):
            for j in range(n):
                g = grad_y[i, j] * activate_grad(code, z[i, j], y[i, j], alpha)
                grad_z[i, j] = g
                partial_b[c_u, j] += g


@njit(**JIT_INLINE)
def _worth_parallel(m, n, k):
    """Whether the products of an (m, k) x (k, n) layer are worth a parallel region: enough
    multiply-adds, or, at batch 1 (matrix-vector products, bound by streaming the k x n
    weights), enough weights (mlp inference at batch 1 on the AMD VM: 784x256 gemv 16.5 -> ~9 us; whether
    a batch-1 product's tiles then run in a region: :func:`_threaded_product`)."""
    return m * n * k >= PARALLEL_MIN_MACS or (m == 1 and n * k >= PARALLEL_MIN_ELEMENTS)


@njit(**JIT_INLINE)
def _threaded(parallel):
    """Whether tiles meant to run in parallel go to a ``prange`` region: not when Numba runs
    one thread, where the region costs ~1.8 us for nothing (784x256 at batch 1: 11.8 vs 10.0
    us); the same tiles then run in a loop, so results do not change."""
    return parallel and numba_threads() > 1


@njit(**JIT_INLINE)
def _threaded_product(parallel, m, w):
    """:func:`_threaded` for the products of an (m, k) x ``w`` (k, n) layer: from
    ``_config.THREAD_MIN_MACS`` multiply-adds (below, a region's start and the operands' move to the
    other core cost more than the split saves); at batch 1 (a matrix-vector product) only when ``w``
    takes more than ``_config.MATVEC_SPLIT_BYTES`` (half a core's L2, so that each thread keeps its
    share of the weights in its own L2, and at least 1 MiB); below, one core streams them about as
    fast as, or faster than, a region starts and the halves stream.
    The tiles are the same either way."""
    if m > 1:
        return _threaded(parallel and m * w.size >= THREAD_MIN_MACS)
    return _threaded(parallel) and w.size * w.itemsize > matvec_split_bytes()


@njit(**JIT_INLINE)
def _grid(m, n, k, parallel, small_form):
    """(tile_rows, tile_cols, row_tiles, col_tiles) of an m x n output with inner size k: one tile
    when serial; else :func:`~.blas.tile_grid`'s, sized for the small-matrix BLAS kernels when
    ``small_form`` (:func:`~.blas.small_kernel_form` of the product)."""
    if not parallel:
        return m, n, np.int64(1), np.int64(1)
    return tile_grid(m, n, k, gemm_tiles(), small_gemm_macs() if small_form else np.int64(0))


@njit(**JIT_INLINE)
def _shares(tiles):
    """Parallel tasks for ``tiles`` output tiles: one per GEMM_TILES thread (never more than the
    tiles). Each task runs a contiguous run of tiles (:func:`_share`), so a thread keeps to one
    region of the operands whatever the tiles' size; which thread runs a tile never changes its bits."""
    return min(tiles, gemm_tiles())


@njit(**JIT_INLINE)
def _share(task, tiles):
    """Tiles [lo, hi) of parallel task ``task``: ``tiles`` tiles in ``_shares(tiles)`` contiguous runs
    (none for a task past them). Two products in one region (a backward's weight and input
    gradients) run ``max`` of their ``_shares`` tasks, each task its run of the one, then its run
    of the other, so that each thread does a share of each product: runs of the first product,
    then of the second, had one thread compute the one product and the other thread the other
    (embed-10k's 64x2048x128 backward, 2 threads: 416 -> 370 us, same bits). With a tall weight
    (split by rows) a thread's rows of the weight gradient and its columns of the input gradient
    then read the same rows of the weights."""
    tasks = _shares(tiles)
    if task >= tasks:
        return tiles, tiles
    return task * tiles // tasks, (task + 1) * tiles // tasks


@njit(**JIT_INLINE)
def _block(tile, tile_rows, tile_cols, col_tiles, m, n):
    """(r0, r1, c0, c1) of tile number ``tile`` in a grid of ``col_tiles`` columns."""
    r0 = (tile // col_tiles) * tile_rows
    c0 = (tile % col_tiles) * tile_cols
    return r0, min(r0 + tile_rows, m), c0, min(c0 + tile_cols, n)


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _backward_tile(x, w, grad_z, grad_x, grad_w, tile, w_grid, x_grid):
    """Tile ``tile`` of grad_w = x.T @ grad_z (the first tiles) or of grad_x = grad_z @ w.T."""
    one = like(1.0, grad_z)
    zero = like(0.0, grad_z)
    w_tiles = w_grid[2] * w_grid[3]
    if tile < w_tiles:
        r0, r1, c0, c1 = _block(tile, w_grid[0], w_grid[1], w_grid[3], grad_w.shape[0], grad_w.shape[1])
        gemm_block(True, False, one, x, grad_z, zero, grad_w, r0, r1, c0, c1)
    else:
        r0, r1, c0, c1 = _block(tile - w_tiles, x_grid[0], x_grid[1], x_grid[3], grad_x.shape[0], grad_x.shape[1])
        gemm_block(False, True, one, grad_z, w, zero, grad_x, r0, r1, c0, c1)


@njit(**JIT_PARALLEL)
def dense_backward(x, w, z, y, grad_y, grad_z, grad_x, grad_w, grad_b, partial_b, code, alpha, need_grad_x):
    """Gradients of the dense layer from the upstream gradient ``grad_y`` (batch, out).

    Writes grad_z = grad_y * f'(z) (pass ``grad_z`` = ``grad_y`` for identity), grad_w (in, out),
    grad_b (out,) and, if ``need_grad_x``, grad_x (batch, in). ``partial_b`` is scratch of shape
    (ceil(batch / REDUCTION_CHUNK_ROWS), out): bias sums are per fixed row chunk, combined in
    chunk order, so the result is the same on any number of threads. Elementwise codes only,
    as :func:`dense_forward`.
    """
    if code >= ROWWISE_CODES:
        raise ValueError(ROWWISE_REFUSED)
    m, n = z.shape
    k = x.shape[1]
    a = like(alpha, z)
    chunks = n_chunks(m, REDUCTION_CHUNK_ROWS)
    if _threaded(m * n >= PARALLEL_MIN_ELEMENTS):
        for c_u in prange(chunks):
            c = np.int64(c_u)  # prange indices are uint64; int64 like the serial twin
            _grad_z_chunk(z, y, grad_y, grad_z, partial_b, code, a, c)
    else:
        for c in range(chunks):
            _grad_z_chunk(z, y, grad_y, grad_z, partial_b, code, a, c)
    for j in range(n):
        grad_b[j] = partial_b[0, j]
    for c in range(1, chunks):
        for j in range(n):
            grad_b[j] += partial_b[c, j]
    parallel = _worth_parallel(m, n, k)
    w_grid = _grid(k, n, m, parallel, small_kernel_form(True, False))  # x.T @ grad_z
    x_grid = _grid(m, k, n, parallel, small_kernel_form(False, True))  # grad_z @ w.T
    w_tiles = w_grid[2] * w_grid[3]
    x_tiles = x_grid[2] * x_grid[3] if need_grad_x else 0
    tiles = w_tiles + x_tiles
    if _threaded(parallel and m * n * k >= THREAD_MIN_MACS):  # (each product's size: _threaded_product)
        for s_u in prange(max(_shares(w_tiles), _shares(x_tiles))):
            s = np.int64(s_u)  # prange indices are uint64
            lo, hi = _share(s, w_tiles)
            for t in range(lo, hi):
                _backward_tile(x, w, grad_z, grad_x, grad_w, t, w_grid, x_grid)
            lo, hi = _share(s, x_tiles)
            for t in range(w_tiles + lo, w_tiles + hi):
                _backward_tile(x, w, grad_z, grad_x, grad_w, t, w_grid, x_grid)
    else:
        for t in range(tiles):
            _backward_tile(x, w, grad_z, grad_x, grad_w, t, w_grid, x_grid)


#: the functions the object layer calls (fastnn.backend.kernels); the CUDA twin module has them too
DEVICE_API = ("dense_forward", "dense_backward")

__all__ = ["dense_backward", "dense_forward"]
