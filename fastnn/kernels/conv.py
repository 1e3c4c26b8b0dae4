"""2-D convolution (1-D is height 1) as GEMMs on fastnn's own BLAS: im2col, one GEMM per group.

Layout as PyTorch: x (N, C, H, W), w (O, C // groups, KH, KW), b (O,), z and y (N, O, OH, OW);
a 1-D convolution passes (N, C, 1, L) views and (O, C // groups, 1, K) weights. One dtype,
float32 or float64, C-contiguous. Padding is zero padding: ``pad_top``/``pad_left`` are given,
the bottom/right padding is implied by the output's shape (so asymmetric "same" padding works;
see :func:`conv_output_size`).

The batch runs in passes of ``nb`` samples (``nb`` fixed by the shape, :func:`conv2d_scratch_shapes`):
  col  (C * KH * KW, nb * OH * OW)  im2col of a pass: row (c, i, j), column (sample, oh, ow)
  zcol (O, nb * OH * OW)            GEMM output; group g's rows of w, col and zcol are contiguous
Forward per pass: im2col, ``zcol_g = w_g @ col_g`` (fixed output tiles over Numba's threads,
BLAS at one thread, as kernels/dense.py; thin products, few weights per group, in direct loops
over column chunks: :data:`THIN_FORWARD_WEIGHTS`), then one sweep that moves zcol into NCHW with the bias
and the activation fused. Backward per pass: one sweep computes ``grad_z = grad_y * f'(z)`` into
zcol's layout with per-sample bias sums, then ``grad_w_g += grad_z_g @ col_g.T`` (passes in
order; col is the forward's when ``col_ready`` and the batch is one pass), and
``col_g = w_g.T @ grad_z_g`` scattered back by col2im (each (sample, channel) plane owned by one
task). im2col tasks are (col row, sample chunk): each writes one contiguous run of col.
1-D convolutions at stride 1 with one group (:func:`is_shifted_forward`; not thin) take no
im2col: each kernel tap j is one GEMM on a shifted view of the sample's zero-padded rows, held
in col's memory (forward ``zcol_s = sum_j W_j @ xpad_s[:, j * dil:]``, weight gradient
``sum_s grad_z_s @ xpad_s[:, j * dil:].T`` per tap, input gradient ``W_j.T @ grad_z_s`` added
at tap j's shift): the padded input is about 1/KW of col's bytes and each sample's products
run in cache (RESULTS.md, session 13). Every sum is in an order fixed by the shape:
bit-identical on any number of threads. Activations: the elementwise codes of kernels/activations.py (not softmax).
"""

from __future__ import annotations

import numpy as np
from numba import literal_unroll, njit, prange

from .._config import JIT, JIT_INLINE, JIT_PARALLEL, PARALLEL_MIN_ELEMENTS, PARALLEL_MIN_MACS
from ._scalar import like, n_chunks, nonneg
from .activations import IDENTITY, VECTORISED_CODES, activate, activate_grad, activate_grad_const
from .blas import gemm_block, small_kernel_form
from .dense import _block, _grid, _share, _shares, _worth_parallel

#: im2col scratch of one pass holds at most this many elements (or one sample): 16 MiB of float32
COL_MAX_ELEMENTS = 1 << 22
#: weight gradients with at most this many elements per group (O // groups * C // groups * KH * KW)
#: are direct reductions (:func:`_small_weight_grad`); measured at 1 thread against BLAS: LeNet's
#: 6 x 25 over 36864 columns 145 vs 528 us, 16 x 150 over 4096 216 vs 339, 32 x 80 over 16384
#: 1014 vs 1287, 32 x 160 over 8192 1031 vs 1232; session 11 (benchmarks/RESULTS.md): 64 x 160
#: over 8192 2843-3149 vs 3055-3639 and over 4096 1518-1547 vs 1587-1750; at 20480 and above
#: BLAS wins or ties (128 x 160 over 4096 2644-2734 vs 2961-3252)
SMALL_GRAD_W_ELEMENTS = 10240
#: columns of col per im2col/col2im task (16 KiB of float32): long enough runs, enough tasks
_TASK_ELEMENTS = 4096
#: forward products with an even number of output channels per group and at most this many weights
#: per group (O // groups * C // groups * KH * KW) are direct loops (:func:`thin_forward`), not
#: BLAS. Measured at 1 thread, us, BLAS vs direct, float32 (float64 gains 1.1-3x; four runs of
#: benchmarks/conv_thin_forward.py and its prototypes, load 2-6): LeNet's first conv 6 x 25 over
#: 36864 columns 201-229 vs 126-175, 8 x 9 over 36864 88-94 vs 54-75, 16 x 27 over 4096 44-56 vs
#: 37-53, 16 x 50 over 8192 162-183 vs 112-151; above it the direct loops win some runs and lose
#: others (16 x 150 over 4096 238-294 vs 232-296) or lose (32 x 80 over 16384 1045-1084 vs
#: 1153-1401). Odd rows per group (depthwise: 1) stay on BLAS.
THIN_FORWARD_WEIGHTS = 800
#: columns per :func:`thin_forward` task: the task's rows of zcol stay in L1 over the k loop
_THIN_COLUMNS = 1024
#: partial weight gradients (KW x O x C each, summed in order) of :func:`_shifted_backward`, one
#: per chunk of samples (fewer for a smaller batch): the tasks of conv_pool's per-sample backward,
#: which does each sample's grad_z, weight and input gradients in one task (RESULTS.md, session 26)
_SHIFTED_GRAD_W_PARTS = 8
#: the shifted GEMMs' per-tap weight gradient ``grad_z_s (O, OW) @ xs_j.T`` (A @ B.T) with more
#: outputs O x C than this runs as ``part_j.T = xs_j @ grad_z_s.T`` (A @ B) on grad_z_s transposed
#: first (:func:`_grad_w_transposed`): OpenBLAS's small-matrix kernels take A @ B up to
#: :data:`_SMALL_KERNEL_MACS` multiply-adds, but refuse A @ B.T above 1,200 outputs (its SkylakeX
#: permit). Measured at 1 thread, CPU time, 64 samples x 5 taps (RESULTS.md, session 26): 64 x 32
#: outputs over 128 columns 1818 us as A @ B.T, 965 as A @ B (the transposes ~110 more); 32 x 16
#: over 256 (under the limit) 748 vs 632 + ~110
_NT_SMALL_OUTPUTS = 1200
#: the largest GEMM (multiply-adds) of OpenBLAS's small-matrix kernels
_SMALL_KERNEL_MACS = 100**3


def conv_output_size(
    size: int, kernel: int, stride: int = 1, pad_lo: int = 0, pad_hi: int = 0, dilation: int = 1
) -> int:
    """Output length of one spatial axis (PyTorch's formula, floor mode)."""
    return (size + pad_lo + pad_hi - dilation * (kernel - 1) - 1) // stride + 1


def conv2d_scratch_shapes(
    batch: int, in_channels: int, out_channels: int, kernel_h: int, kernel_w: int, out_h: int, out_w: int
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Shapes of (col, zcol, partial_b), the scratch of conv2d_forward (col, zcol) and conv2d_backward.

    The samples per pass ``nb`` keep col under :data:`COL_MAX_ELEMENTS` (at least one sample);
    it depends on the shape only, so the order of the weight-gradient sums does too.
    """
    positions = out_h * out_w
    per_sample = in_channels * kernel_h * kernel_w * positions
    nb = max(1, min(batch, COL_MAX_ELEMENTS // max(per_sample, 1)))
    return (in_channels * kernel_h * kernel_w, nb * positions), (out_channels, nb * positions), (batch, out_channels)


@njit(**JIT_INLINE)
def _valid_range(offset, stride, size, count):
    """(lo, hi): the outputs ``t`` in [0, count) whose input ``t * stride + offset`` is in [0, size)."""
    lo = max(0, -(offset // stride))
    hi = min(count, max(0, (size - 1 - offset) // stride + 1))
    return lo, max(lo, hi)


@njit(**JIT_INLINE)
def _chunk_samples(positions):
    """Samples per im2col/col2im task: about :data:`_TASK_ELEMENTS` columns (at least one sample)."""
    return max(1, _TASK_ELEMENTS // positions)


@njit(**JIT_INLINE)
def _task_span(count, task, p):
    """(index, s0, s1) of im2col/col2im task ``task``: its col row (or channel) ``index`` and its
    chunk of samples s0 .. s1 of the pass's ``count`` (``p`` = OH * OW columns per sample)."""
    chunk = _chunk_samples(p)
    chunks = n_chunks(count, chunk)
    index = task // chunks
    s0 = (task - index * chunks) * chunk
    return index, s0, min(count, s0 + chunk)


@njit(**JIT_INLINE)
def _fill(cf, start, n, value):
    """cf[start:start + n] = value (nothing when n <= 0)."""
    for t in range(n):
        cf[nonneg(start + t)] = value


@njit(**JIT_INLINE)
def _gather_run(cf, xf, d, src, n, step):
    """cf[d + t] = xf[src + t * step] for t < n; the unit-stride loop is its own (vectorised) loop."""
    if step == 1:
        for t in range(n):
            cf[nonneg(d + t)] = xf[nonneg(src + t)]
    else:
        for t in range(n):
            cf[nonneg(d + t)] = xf[nonneg(src + t * step)]


@njit(**JIT_INLINE)
def _scatter_add_run(xf, cf, dst, d, n, step):
    """xf[dst + t * step] += cf[d + t] for t < n, in t order (unit stride: its own loop)."""
    if step == 1:
        for t in range(n):
            xf[nonneg(dst + t)] += cf[nonneg(d + t)]
    else:
        for t in range(n):
            xf[nonneg(dst + t * step)] += cf[nonneg(d + t)]


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _im2col_task(x, col, n0, count, task, sh, sw, pt, pl, dh, dw, kh, kw, oh, ow):
    """Row (c, i, j) of col over one chunk of the pass's samples: each task writes one
    contiguous run of col, reading the cache-resident input planes. Rows whose columns the
    padding does not cut (stride 1) copy in one plain loop per output row."""
    p = oh * ow
    r, s0, s1 = _task_span(count, task, p)
    c_in, h, w = x.shape[1], x.shape[2], x.shape[3]
    c = r // (kh * kw)
    i = (r // kw) % kh
    j = r % kw
    xf, cf = x.reshape(x.size), col.reshape(col.size)
    zero = like(0.0, col)
    off_h, off_w = i * dh - pt, j * dw - pl
    a_lo, a_hi = _valid_range(off_h, sh, h, oh)
    lo, hi = _valid_range(off_w, sw, w, ow)
    uncut = lo == 0 and hi == ow and sw == 1
    for s in range(s0, s1):
        cb = r * col.shape[1] + s * p
        xb = ((n0 + s) * c_in + c) * h * w + off_h * w + off_w  # + a * sh * w + t * sw: x[n, c, ih, iw]
        _fill(cf, cb, a_lo * ow, zero)
        _fill(cf, cb + a_hi * ow, p - a_hi * ow, zero)
        if uncut:
            for a in range(a_lo, a_hi):
                d, src = cb + a * ow, xb + a * sh * w
                for t in range(ow):
                    cf[nonneg(d + t)] = xf[nonneg(src + t)]
        else:
            for a in range(a_lo, a_hi):
                d = cb + a * ow
                _fill(cf, d, lo, zero)
                _gather_run(cf, xf, d + lo, xb + a * sh * w + lo * sw, hi - lo, sw)
                _fill(cf, d + hi, ow - hi, zero)


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _col2im_task(x, col, n0, count, task, sh, sw, pt, pl, dh, dw, kh, kw, oh, ow):
    """x[n0 + s, c] = the sum of its col entries, for channel ``task // chunks`` and one chunk of
    samples (x is grad_x). Each plane is owned by one task and summed in (i, j, oh, ow) order."""
    p = oh * ow
    c, s0, s1 = _task_span(count, task, p)
    c_in, h, w = x.shape[1], x.shape[2], x.shape[3]
    xf, cf = x.reshape(x.size), col.reshape(col.size)
    for s in range(s0, s1):
        _fill(xf, ((n0 + s) * c_in + c) * h * w, h * w, like(0.0, col))
    for i in range(kh):
        off_h = i * dh - pt
        a_lo, a_hi = _valid_range(off_h, sh, h, oh)
        for j in range(kw):
            r = (c * kh + i) * kw + j
            off_w = j * dw - pl
            lo, hi = _valid_range(off_w, sw, w, ow)
            for s in range(s0, s1):
                cb = r * col.shape[1] + s * p
                xb = ((n0 + s) * c_in + c) * h * w + off_h * w + off_w
                for a in range(a_lo, a_hi):
                    _scatter_add_run(xf, cf, xb + a * sh * w + lo * sw, cb + a * ow + lo, hi - lo, sw)


@njit(**JIT_PARALLEL)
def _im2col(x, col, n0, count, sh, sw, pt, pl, dh, dw, kh, kw, oh, ow, scatter):
    """im2col of samples n0 .. n0 + count into col (or, ``scatter``, col2im into x = grad_x):
    tasks of (col row, sample chunk), or of (channel, sample chunk) for the scatter."""
    chunks = n_chunks(count, _chunk_samples(oh * ow))
    tasks = (x.shape[1] if scatter else col.shape[0]) * chunks
    if col.shape[0] * count * oh * ow < PARALLEL_MIN_ELEMENTS:
        for t in range(tasks):
            if scatter:
                _col2im_task(x, col, n0, count, t, sh, sw, pt, pl, dh, dw, kh, kw, oh, ow)
            else:
                _im2col_task(x, col, n0, count, t, sh, sw, pt, pl, dh, dw, kh, kw, oh, ow)
    else:
        for t_u in prange(tasks):
            t = np.int64(t_u)  # prange indices are uint64; int64 like the serial twin
            if scatter:
                _col2im_task(x, col, n0, count, t, sh, sw, pt, pl, dh, dw, kh, kw, oh, ow)
            else:
                _im2col_task(x, col, n0, count, t, sh, sw, pt, pl, dh, dw, kh, kw, oh, ow)


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _group_gemm_tile(trans_a, trans_b, a, b, beta, c, groups, tile, grid):
    """Tile ``tile`` of ``C_g = op(A_g) @ op(B_g) + beta * C_g``; X_g is row block g of X (groups blocks)."""
    per_group = grid[2] * grid[3]
    g = tile // per_group
    ra, rb, rc = a.shape[0] // groups, b.shape[0] // groups, c.shape[0] // groups
    cg = c[g * rc : (g + 1) * rc]
    r0, r1, c0, c1 = _block(tile - g * per_group, grid[0], grid[1], grid[3], rc, c.shape[1])
    gemm_block(
        trans_a, trans_b, like(1.0, c), a[g * ra : (g + 1) * ra], b[g * rb : (g + 1) * rb], beta, cg, r0, r1, c0, c1
    )


@njit(**JIT_PARALLEL)
def _group_gemm(trans_a, trans_b, a, b, beta, c, groups):
    """Per-group GEMMs in fixed output tiles (fixed by the shape), over Numba's threads when large."""
    m = c.shape[0] // groups
    n = c.shape[1]
    k = a.shape[0] // groups if trans_a else a.shape[1]
    parallel = _worth_parallel(m * groups, n, k)
    grid = _grid(m, n, k, parallel, small_kernel_form(trans_a, trans_b))
    tiles = groups * grid[2] * grid[3]
    if parallel:
        for s_u in prange(_shares(tiles)):
            lo, hi = _share(np.int64(s_u), tiles)  # prange indices are uint64
            for t in range(lo, hi):
                _group_gemm_tile(trans_a, trans_b, a, b, beta, c, groups, t, grid)
    else:
        for t in range(tiles):
            _group_gemm_tile(trans_a, trans_b, a, b, beta, c, groups, t, grid)


@njit(**JIT_INLINE)
def _dot4(a0, a1, a2, a3, x0, x1, x2, x3):
    """a0 * x0 + a1 * x1 + a2 * x2 + a3 * x3, in that order."""
    return a0 * x0 + a1 * x1 + a2 * x2 + a3 * x3


@njit(**JIT_INLINE)
def _rows_k4(z0, z1, c0, c1, c2, c3, a, b, k, t0, t1, first):
    """z0[t] = a[k:k + 4] . (c0, c1, c2, c3)[t] (+ z0[t] unless ``first``), z1 likewise with b,
    for t in [t0, t1): two output rows share each load of col (rows z0, z1 distinct)."""
    a0, a1, a2, a3, b0, b1, b2, b3 = a[k], a[k + 1], a[k + 2], a[k + 3], b[k], b[k + 1], b[k + 2], b[k + 3]
    if first:
        for t in range(t0, t1):
            u = nonneg(t)
            x0, x1, x2, x3 = c0[u], c1[u], c2[u], c3[u]
            z0[u], z1[u] = _dot4(a0, a1, a2, a3, x0, x1, x2, x3), _dot4(b0, b1, b2, b3, x0, x1, x2, x3)
    else:
        for t in range(t0, t1):
            u = nonneg(t)
            x0, x1, x2, x3 = c0[u], c1[u], c2[u], c3[u]
            p0, p1 = z0[u], z1[u]
            z0[u], z1[u] = p0 + _dot4(a0, a1, a2, a3, x0, x1, x2, x3), p1 + _dot4(b0, b1, b2, b3, x0, x1, x2, x3)


@njit(**JIT_INLINE)
def _rows_k1(z0, z1, c0, a0, b0, t0, t1, first):
    """:func:`_rows_k4` for one k: z0[t] = a0 * c0[t] (+ z0[t] unless ``first``), z1 with b0."""
    if first:
        for t in range(t0, t1):
            u = nonneg(t)
            x0 = c0[u]
            z0[u], z1[u] = a0 * x0, b0 * x0
    else:
        for t in range(t0, t1):
            u = nonneg(t)
            x0 = c0[u]
            p0, p1 = z0[u], z1[u]
            z0[u], z1[u] = p0 + a0 * x0, p1 + b0 * x0


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _thin_forward_chunk(w2, col, zcol, columns, groups, task):
    """Columns chunk ``task`` of ``zcol_g = w2_g @ col_g`` (group g = task // chunks; an even
    number of rows per group): output rows in pairs, k in fours, vectorised over the chunk's
    columns (each output summed in k order in fours, the same on any number of threads)."""
    m, kg = w2.shape[0] // groups, w2.shape[1]
    chunks = n_chunks(columns, _THIN_COLUMNS)
    g = task // chunks
    t0 = (task - g * chunks) * _THIN_COLUMNS
    t1 = min(columns, t0 + _THIN_COLUMNS)
    k4 = kg - kg % 4
    for k in range(0, k4, 4):
        r = g * kg + k
        c0, c1, c2, c3 = col[r], col[r + 1], col[r + 2], col[r + 3]
        for o in range(g * m, (g + 1) * m, 2):
            _rows_k4(zcol[o], zcol[o + 1], c0, c1, c2, c3, w2[o], w2[o + 1], k, t0, t1, k == 0)
    for k in range(k4, kg):
        c0 = col[g * kg + k]
        for o in range(g * m, (g + 1) * m, 2):
            _rows_k1(zcol[o], zcol[o + 1], c0, w2[o, k], w2[o + 1, k], t0, t1, k == 0)


@njit(**JIT_INLINE)
def is_thin_forward(w2, groups):
    """Whether the forward product of weights w2 (O, C // groups * KH * KW) runs in :func:`thin_forward`."""
    return (w2.shape[0] // groups) % 2 == 0 and w2.size // groups <= THIN_FORWARD_WEIGHTS


@njit(**JIT_PARALLEL)
def thin_forward(w2, col, zcol, columns, groups):
    """``zcol_g[:, :columns] = w2_g @ col_g[:, :columns]`` per group, in tasks of
    :data:`_THIN_COLUMNS` columns, for the shapes :func:`is_thin_forward` accepts (it relies on an
    even number of rows per group). w2 (O, K), col (groups * K, >= columns), zcol (O, >= columns),
    one dtype, C-contiguous (whole rows: they vectorise)."""
    tasks = groups * n_chunks(columns, _THIN_COLUMNS)
    if w2.size * columns < PARALLEL_MIN_MACS:
        for t in range(tasks):
            _thin_forward_chunk(w2, col, zcol, columns, groups, t)
    else:
        for t_u in prange(tasks):
            _thin_forward_chunk(w2, col, zcol, columns, groups, np.int64(t_u))


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _weight_grad_block(gz, col, columns, beta, gw, groups, block):
    """Block ``block`` (4 x 4 of group g's outputs) of ``gw_g = gz_g[:, :columns] @
    col_g[:, :columns].T + beta * gw_g``: sixteen dot products over the columns at once, each in
    the one order of its vectorised loop. Rows/columns past the edge repeat the last one
    (computed, not stored). gz and col whole (C-contiguous rows: a column slice would not vectorise)."""
    m, n = gw.shape[0] // groups, gw.shape[1]
    row_blocks, col_blocks = n_chunks(m, 4), n_chunks(n, 4)
    g = block // (row_blocks * col_blocks)
    rest = block - g * row_blocks * col_blocks
    i0 = g * m + 4 * (rest // col_blocks)
    j0 = 4 * (rest % col_blocks)
    last = (g + 1) * m - 1
    k0 = g * n  # group g's rows of col
    a0, a1, a2, a3 = gz[i0], gz[min(i0 + 1, last)], gz[min(i0 + 2, last)], gz[min(i0 + 3, last)]
    b0, b1 = col[k0 + j0], col[k0 + min(j0 + 1, n - 1)]
    b2, b3 = col[k0 + min(j0 + 2, n - 1)], col[k0 + min(j0 + 3, n - 1)]
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = like(0.0, gw)
    s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = like(0.0, gw)
    for t in range(columns):
        x0, x1, x2, x3 = a0[t], a1[t], a2[t], a3[t]
        y0, y1, y2, y3 = b0[t], b1[t], b2[t], b3[t]
        s00 += x0 * y0
        s01 += x0 * y1
        s02 += x0 * y2
        s03 += x0 * y3
        s10 += x1 * y0
        s11 += x1 * y1
        s12 += x1 * y2
        s13 += x1 * y3
        s20 += x2 * y0
        s21 += x2 * y1
        s22 += x2 * y2
        s23 += x2 * y3
        s30 += x3 * y0
        s31 += x3 * y1
        s32 += x3 * y2
        s33 += x3 * y3
    rows, cols = min(4, last + 1 - i0), min(4, n - j0)
    _store_sums(gw[i0], j0, cols, beta, s00, s01, s02, s03)
    if rows > 1:
        _store_sums(gw[i0 + 1], j0, cols, beta, s10, s11, s12, s13)
    if rows > 2:
        _store_sums(gw[i0 + 2], j0, cols, beta, s20, s21, s22, s23)
    if rows > 3:
        _store_sums(gw[i0 + 3], j0, cols, beta, s30, s31, s32, s33)


@njit(**JIT_INLINE)
def _store_sums(row, j0, columns, beta, s0, s1, s2, s3):
    """row[j0 + j] = s_j + beta * row[j0 + j] for the first ``columns`` of the four sums."""
    sums = (s0, s1, s2, s3)
    for j in range(columns):
        row[j0 + j] = sums[j] + beta * row[j0 + j] if beta != 0 else sums[j]


@njit(**JIT_PARALLEL)
def _small_weight_grad(gz, col, columns, beta, gw, groups):
    """``gw_g = gz_g[:, :columns] @ col_g[:, :columns].T + beta * gw_g`` per group for a small gw
    (:data:`SMALL_GRAD_W_ELEMENTS`): register-blocked dot products over the long column axis, one
    task per output block (each output summed by one task in a fixed order: the same bits on any
    number of threads)."""
    m, n = gw.shape[0] // groups, gw.shape[1]
    blocks = groups * n_chunks(m, 4) * n_chunks(n, 4)
    if gz.shape[0] * gw.shape[1] * columns < PARALLEL_MIN_MACS:
        for t in range(blocks):
            _weight_grad_block(gz, col, columns, beta, gw, groups, t)
    else:
        for t_u in prange(blocks):
            _weight_grad_block(gz, col, columns, beta, gw, groups, np.int64(t_u))


@njit(**JIT_INLINE)
def _bias_activate_run(src, bias, zr, yr, code, alpha, keep_z):
    """yr[t] = f(src[t] + bias), and zr[t] = src[t] + bias when ``keep_z`` (else zr is yr: one
    store per element; two stores to one buffer through two arguments defeat LLVM's vectoriser)."""
    if keep_z:
        for t in range(src.shape[0]):
            v = src[t] + bias
            zr[t] = v
            yr[t] = activate(code, v, alpha)
    else:
        for t in range(src.shape[0]):
            yr[t] = activate(code, src[t] + bias, alpha)


@njit(**JIT_INLINE)
def _grad_z_run(z3, y3, gy3, gzcol, partial_b, n0, s, o, code, alpha, const):
    """gzcol[o, sample s's columns] = grad_y * f'(z) of (n0 + s, o); partial_b[n0 + s, o] = its
    sum. ``const``: ``code`` is a constant of VECTORISED_CODES (the loop vectorises)."""
    p = z3.shape[2]
    n = n0 + s
    dst = gzcol[o, s * p : (s + 1) * p]
    zr, yr, gr = z3[n, o], y3[n, o], gy3[n, o]
    if code == IDENTITY:
        for t in range(p):
            dst[t] = gr[t]
    elif const:
        for t in range(p):
            dst[t] = gr[t] * activate_grad_const(code, zr[t], yr[t], alpha)
    else:
        for t in range(p):
            dst[t] = gr[t] * activate_grad(code, zr[t], yr[t], alpha)
    partial_b[n, o] = _run_sum(dst, 0, p)


@njit(**JIT_INLINE)
def _plane_run(zcol, b, z3, y3, gy3, partial_b, n0, o, s0, s1, code, alpha, backward, keep_z, const):
    """Planes (n0 + s, o), s0 <= s < s1: the forward epilogue (:func:`_bias_activate_run`) or
    (``backward``) grad_z (:func:`_grad_z_run`); ``const`` as there."""
    p = z3.shape[2]
    for s in range(s0, s1):
        if backward:
            _grad_z_run(z3, y3, gy3, zcol, partial_b, n0, s, o, code, alpha, const)
        else:
            src = zcol[o, s * p : (s + 1) * p]
            _bias_activate_run(src, b[o], z3[n0 + s, o], y3[n0 + s, o], code, alpha, keep_z)


@njit(**JIT)  # not inlined: literal_unroll inside a prange body would serialise it
def _plane_task(zcol, b, z3, y3, gy3, partial_b, n0, count, task, code, alpha, backward, keep_z):
    """The planes of sweep task ``task``: channel o, samples s0 .. s1 of the pass (:func:`_task_span`:
    one contiguous run of zcol's row o). One call per task, not per plane: a call per plane (its
    array arguments, the code's dispatch) cost more than the plane's own work (RESULTS.md, session 11)."""
    o, s0, s1 = _task_span(count, task, z3.shape[2])
    vectorised = False
    for c in literal_unroll(VECTORISED_CODES):  # the code is a constant inside each loop: it vectorises
        if code == c:
            vectorised = True
            _plane_run(zcol, b, z3, y3, gy3, partial_b, n0, o, s0, s1, c, alpha, backward, keep_z, True)
    if not vectorised:
        _plane_run(zcol, b, z3, y3, gy3, partial_b, n0, o, s0, s1, code, alpha, backward, keep_z, False)


@njit(**JIT)  # not inlined: one compiled loop, so every caller sums a run in the same order (same bits)
def _run_sum(flat, start, n):
    """The sum of flat[start:start + n] (1-D, C-contiguous), in the one order of this loop."""
    total = like(0.0, flat)
    for t in range(start, start + n):
        total += flat[nonneg(t)]
    return total


@njit(**JIT_PARALLEL)
def _planes(zcol, b, z3, y3, gy3, partial_b, n0, count, code, alpha, backward, keep_z=True):
    """The sweep around the GEMMs over (sample, out channel) planes: the forward epilogue (z3
    written unless ``keep_z`` is False), or (``backward``) grad_z into zcol with per-plane bias
    sums. Tasks of (channel, sample chunk); each plane is computed alone, so any grouping gives
    the same bits."""
    tasks = z3.shape[1] * n_chunks(count, _chunk_samples(z3.shape[2]))
    if count * z3.shape[1] * z3.shape[2] < PARALLEL_MIN_ELEMENTS:
        for t in range(tasks):
            _plane_task(zcol, b, z3, y3, gy3, partial_b, n0, count, t, code, alpha, backward, keep_z)
    else:
        for t_u in prange(tasks):
            t = np.int64(t_u)  # prange indices are uint64; int64 like the serial twin
            _plane_task(zcol, b, z3, y3, gy3, partial_b, n0, count, t, code, alpha, backward, keep_z)


@njit(**JIT_INLINE)
def _as3(a):
    """(N, C, H, W) C-contiguous -> (N, C, H * W) view."""
    return a.reshape((a.shape[0], a.shape[1], a.shape[2] * a.shape[3]))


@njit(**JIT)
def conv2d_forward(
    x, w, b, col, zcol, z, y, stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w, groups, code, alpha
):
    """z = conv2d(x, w) + b and y = f(z) (elementwise activation ``code``); ``y`` may be ``z``
    (then only f(z) is stored: for activations whose gradient needs y alone, e.g. relu).

    x (N, C, H, W), w (O, C // groups, KH, KW), b (O,), z/y (N, O, OH, OW); col, zcol: scratch
    of :func:`conv2d_scratch_shapes`. Zero padding pad_top/pad_left (bottom/right implied by OH, OW).
    """
    c_out, kh, kw = w.shape[0], w.shape[2], w.shape[3]
    oh, ow = z.shape[2], z.shape[3]
    p = oh * ow
    nb = col.shape[1] // p
    w2 = w.reshape((c_out, w.shape[1] * kh * kw))
    z3, y3 = _as3(z), _as3(y)
    a = like(alpha, z)
    keep_z = z.ctypes.data != y.ctypes.data  # y is z: y = f(z) stored once
    for n0 in range(0, x.shape[0], nb):
        count = min(nb, x.shape[0] - n0)
        _forward_product(
            x,
            w2,
            col,
            zcol,
            n0,
            count,
            stride_h,
            stride_w,
            pad_top,
            pad_left,
            dilation_h,
            dilation_w,
            groups,
            kh,
            kw,
            oh,
            ow,
        )
        _planes(zcol, b, z3, y3, y3, y3[0], n0, count, code, a, False, keep_z)


@njit(**JIT_INLINE)
def is_shifted_forward(x, w2, groups, kh, oh, ow, pt, sw, dw):
    """Whether the forward product of a convolution runs as shifted GEMMs
    (:func:`_shifted_forward`): 1-D (input height, kernel height and output height 1, no top
    padding), stride 1, one group, not thin (:func:`is_thin_forward`), and OW >= dilation (its
    padded input then fits in col's memory)."""
    return (
        x.shape[2] == 1
        and kh == 1
        and oh == 1
        and pt == 0
        and sw == 1
        and groups == 1
        and ow >= dw
        and not is_thin_forward(w2, groups)
    )


@njit(**JIT_INLINE)
def _pad_rows(x, xs, n, pl):
    """xs (C, LP) = the rows of sample n of x (N, C, 1, L) with pl zeros on the left and zeros
    past the input's end."""
    length, lp = x.shape[3], xs.shape[1]
    zero = like(0.0, xs)
    left = min(pl, lp)
    stop = max(left, min(lp, pl + length))  # columns left .. stop are the input's
    for c in range(x.shape[1]):
        row, src = xs[c], x[n, c, 0]
        _fill(row, 0, left, zero)
        for u in range(left, stop):
            row[nonneg(u)] = src[nonneg(u - pl)]
        _fill(row, stop, lp - stop, zero)


@njit(**JIT_INLINE)
def _padded(col, count, c_in, lp):
    """The (count, C, LP) padded inputs of the shifted GEMMs, in col's memory (it fits:
    :func:`is_shifted_forward`)."""
    return col.reshape(col.size)[: count * c_in * lp].reshape((count, c_in, lp))


@njit(**JIT_INLINE)
def _tap_major(w2, kw):
    """(KW, O, C) copy of w2 (O, C * KW): tap j's weights W_j with unit stride."""
    c_out, c_in = w2.shape[0], w2.shape[1] // kw
    wk = np.empty((kw, c_out, c_in), w2.dtype)
    for j in range(kw):
        for o in range(c_out):
            for c in range(c_in):
                wk[j, o, c] = w2[o, c * kw + j]
    return wk


@njit(**JIT_INLINE)
def _shifted_taps(wk, xs, zs, dw, ow):
    """``zs = sum_j wk[j] @ xs[:, j * dw:j * dw + OW]``: the forward products of one sample of
    :func:`_shifted_forward`, one accumulating GEMM per kernel tap j in order. wk (KW, O, C) from
    :func:`_tap_major`, xs (C, LP) the sample's padded rows, zs (O, OW) any row-major block (the
    same bits wherever it lies)."""
    for j in range(wk.shape[0]):
        beta = like(0.0 if j == 0 else 1.0, zs)
        gemm_block(False, False, like(1.0, zs), wk[j], xs[:, j * dw : j * dw + ow], beta, zs, 0, zs.shape[0], 0, ow)


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _shifted_sample(x, wk, xpad, zcol, n0, s, pl, dw, ow):
    """Sample n0 + s of :func:`_shifted_forward`: its padded rows into xpad[s] (C, LP), then
    :func:`_shifted_taps` into ``zcol[:, s * OW:(s + 1) * OW]`` (the padded rows and the output
    stay in cache)."""
    xs = xpad[s]
    _pad_rows(x, xs, n0 + s, pl)
    _shifted_taps(wk, xs, zcol[:, s * ow : (s + 1) * ow], dw, ow)


@njit(**JIT_PARALLEL)
def _shifted_forward(x, w2, col, zcol, n0, count, pl, dw, kw, ow):
    """``zcol[:, :count * OW]`` of a convolution :func:`is_shifted_forward` takes, without im2col:
    output position t of a sample is ``sum_j W_j @ xpad[:, t + j * dw]`` with W_j (O, C) tap j
    of the weights and xpad the sample's zero-padded (C, LP = OW + (KW - 1) * dw) rows, so each
    tap is one GEMM on a strided view of xpad (RESULTS.md, session 13: the padded input is about
    1/KW of col's bytes). Samples are tasks (the same bits on any number of threads); xpad lives
    in col's memory, which then holds the padded inputs, not the im2col."""
    wk = _tap_major(w2, kw)
    xpad = _padded(col, count, x.shape[1], ow + (kw - 1) * dw)
    if w2.size * count * ow < PARALLEL_MIN_MACS:
        for s in range(count):
            _shifted_sample(x, wk, xpad, zcol, n0, s, pl, dw, ow)
    else:
        for s_u in prange(count):
            _shifted_sample(x, wk, xpad, zcol, n0, np.int64(s_u), pl, dw, ow)


@njit(**JIT_INLINE)
def _shifted_chunk(count):
    """Samples per partial weight gradient of the shifted GEMMs' backward (fixed by the shape):
    :data:`_SHIFTED_GRAD_W_PARTS` partials (fewer for a smaller batch), which are also its tasks."""
    return n_chunks(count, _SHIFTED_GRAD_W_PARTS)


@njit(**JIT_INLINE)
def _grad_w_transposed(c_out, c_in, ow):
    """Whether the shifted GEMMs' weight gradient takes the transposed form (partials (KW, C, O),
    :data:`_NT_SMALL_OUTPUTS`): fixed by the shape, so are the bits."""
    return c_out * c_in > _NT_SMALL_OUTPUTS and c_out * c_in * ow <= _SMALL_KERNEL_MACS


@njit(**JIT_INLINE)
def _grad_w_scratch(c_out, c_in, ow, dtype):
    """A task's scratch for grad_z_s transposed (OW, O) (:func:`_grad_w_transposed`), else (1, 1)."""
    if _grad_w_transposed(c_out, c_in, ow):
        return np.empty((ow, c_out), dtype)
    return np.empty((1, 1), dtype)


@njit(**JIT_INLINE)
def _shifted_parts(chunks, kw, c_out, c_in, ow, dtype):
    """The partial weight gradients of the shifted GEMMs' backward: (chunks, KW, O, C), or
    (chunks, KW, C, O) in the transposed form (:func:`_grad_w_transposed`)."""
    if _grad_w_transposed(c_out, c_in, ow):
        return np.empty((chunks, kw, c_in, c_out), dtype)
    return np.empty((chunks, kw, c_out, c_in), dtype)


@njit(**JIT_INLINE)
def _shifted_grad_w_taps(zs, xs, part, beta, dw, ow, zt):
    """``part[j] = grad_z_s @ xs[:, j * dw:j * dw + OW].T + beta * part[j]`` for every tap j:
    one sample's share of the weight gradient (part (KW, O, C), zs (O, OW) any row-major block);
    in the transposed form (:func:`_grad_w_transposed`; part (KW, C, O)) ``part[j] =
    xs[:, j * dw:j * dw + OW] @ zt + beta * part[j]`` with zt (OW, O) = zs.T written first."""
    if _grad_w_transposed(zs.shape[0], xs.shape[0], ow):
        for t in range(ow):  # contiguous stores: the faster loop order (RESULTS.md, session 26)
            for o in range(zs.shape[0]):
                zt[t, o] = zs[o, t]
        for j in range(part.shape[0]):
            gemm_block(
                False,
                False,
                like(1.0, zs),
                xs[:, j * dw : j * dw + ow],
                zt,
                beta,
                part[j],
                0,
                part.shape[1],
                0,
                part.shape[2],
            )
        return
    for j in range(part.shape[0]):
        gemm_block(
            False,
            True,
            like(1.0, zs),
            zs,
            xs[:, j * dw : j * dw + ow],
            beta,
            part[j],
            0,
            part.shape[1],
            0,
            part.shape[2],
        )


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _shifted_grad_w_chunk(x, zcol, xpad, parts, n0, task, chunk, pl, dw, ow, padded):
    """parts[task, j] = sum over the samples s of chunk ``task`` (``chunk`` samples each, in
    order) of ``grad_z_s (O, OW) @ xpad[s][:, j * dw:j * dw + OW].T`` for every tap j; the
    samples' padded rows written first unless ``padded`` (the forward's are in xpad)."""
    count = xpad.shape[0]
    s0 = task * chunk
    part = parts[task]
    zt = _grad_w_scratch(zcol.shape[0], xpad.shape[1], ow, zcol.dtype)
    for s in range(s0, min(count, s0 + chunk)):
        xs = xpad[s]
        if not padded:
            _pad_rows(x, xs, n0 + s, pl)
        beta = like(0.0 if s == s0 else 1.0, zcol)
        _shifted_grad_w_taps(zcol[:, s * ow : (s + 1) * ow], xs, part, beta, dw, ow, zt)


@njit(**JIT_INLINE)
def _shifted_grad_x_taps(wk, zs, dxs, grad_x, n, pl, dw, ow):
    """grad_x[n] from grad_z_s = zs (O, OW): ``dxs[:, j * dw:j * dw + OW] += wk[j].T @ zs`` for the
    taps j in order from zero (each element summed in tap order, as col2im sums) in dxs (C, LP:
    the sample's padded rows may be overwritten), then its unpadded columns (zeros where no
    output reads the input)."""
    zero = like(0.0, dxs)
    _fill(dxs.reshape(dxs.size), 0, dxs.size, zero)
    for j in range(wk.shape[0]):
        gemm_block(
            True,
            False,
            like(1.0, zs),
            wk[j],
            zs,
            like(1.0, zs),
            dxs[:, j * dw : j * dw + ow],
            0,
            dxs.shape[0],
            0,
            ow,
        )
    length, lp = grad_x.shape[3], dxs.shape[1]
    stop = max(0, min(length, lp - pl))  # input columns t < stop are padded column t + pl
    for c in range(grad_x.shape[1]):
        row, src = grad_x[n, c, 0], dxs[c]
        for t in range(stop):
            row[nonneg(t)] = src[nonneg(t + pl)]
        _fill(row, stop, length - stop, zero)


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _shifted_grad_x_sample(wk, zcol, xpad, grad_x, n0, s, pl, dw, ow):
    """grad_x of sample n0 + s (:func:`_shifted_grad_x_taps` of its grad_z columns of zcol), in
    xpad[s]'s memory."""
    _shifted_grad_x_taps(wk, zcol[:, s * ow : (s + 1) * ow], xpad[s], grad_x, n0 + s, pl, dw, ow)


@njit(**JIT_INLINE)
def _sum_shifted_parts(parts, gw2, beta, ow):
    """``gw2[o, c * KW + j] = sum_t parts[t, j, o, c] (in t order) + beta * gw2[o, c * KW + j]``
    (parts[t, j, c, o] in the transposed form of OW columns: :func:`_shifted_parts`)."""
    c_out, kw = gw2.shape[0], parts.shape[1]
    c_in = gw2.shape[1] // kw
    transposed = _grad_w_transposed(c_out, c_in, ow)
    for o in range(c_out):
        for c in range(c_in):
            for j in range(kw):
                total = parts[0, j, c, o] if transposed else parts[0, j, o, c]
                for t in range(1, parts.shape[0]):
                    total += parts[t, j, c, o] if transposed else parts[t, j, o, c]
                k = c * kw + j
                gw2[o, k] = total + beta * gw2[o, k] if beta != 0 else total


@njit(**JIT_PARALLEL)
def _shifted_backward(x, w2, gw2, col, zcol, grad_x, n0, count, pl, dw, kw, ow, beta, need_grad_x, padded):
    """The backward products of :func:`_shifted_forward`'s convolutions, without im2col or col2im:
    ``gw2 = sum_s sum_j grad_z_s @ xpad_s(j).T`` (tap j's columns; per chunk of samples in
    order, then the chunks in order: fixed by the shape) ``+ beta * gw2``, and with
    ``need_grad_x`` grad_x as :func:`_shifted_grad_x_sample`. ``padded``: col holds the forward's
    padded inputs of these samples."""
    c_in, c_out = x.shape[1], w2.shape[0]
    xpad = _padded(col, count, c_in, ow + (kw - 1) * dw)
    chunk = _shifted_chunk(count)
    chunks = n_chunks(count, chunk)
    parts = _shifted_parts(chunks, kw, c_out, c_in, ow, w2.dtype)
    parallel = w2.size * count * ow >= PARALLEL_MIN_MACS
    if parallel:
        for t_u in prange(chunks):
            _shifted_grad_w_chunk(x, zcol, xpad, parts, n0, np.int64(t_u), chunk, pl, dw, ow, padded)
    else:
        for t in range(chunks):
            _shifted_grad_w_chunk(x, zcol, xpad, parts, n0, t, chunk, pl, dw, ow, padded)
    _sum_shifted_parts(parts, gw2, beta, ow)
    if not need_grad_x:
        return
    wk = _tap_major(w2, kw)
    if parallel:
        for s_u in prange(count):
            _shifted_grad_x_sample(wk, zcol, xpad, grad_x, n0, np.int64(s_u), pl, dw, ow)
    else:
        for s in range(count):
            _shifted_grad_x_sample(wk, zcol, xpad, grad_x, n0, s, pl, dw, ow)


@njit(**JIT_INLINE)
def _forward_product(x, w2, col, zcol, n0, count, sh, sw, pt, pl, dh, dw, groups, kh, kw, oh, ow):
    """``zcol[:, :count * OH * OW] = w2_g @ col_g`` per group after the im2col of samples n0 ..
    n0 + count into col (or, :func:`is_shifted_forward`, the same products without the im2col):
    the forward before its epilogue. w2 (O, C // groups * KH * KW)."""
    columns = count * oh * ow
    if is_shifted_forward(x, w2, groups, kh, oh, ow, pt, sw, dw):
        _shifted_forward(x, w2, col, zcol, n0, count, pl, dw, kw, ow)
        return
    # the sweeps take the whole (C-contiguous) scratch, so their rows vectorise; GEMMs the pass's columns
    _im2col(x, col, n0, count, sh, sw, pt, pl, dh, dw, kh, kw, oh, ow, False)
    if is_thin_forward(w2, groups):
        thin_forward(w2, col, zcol, columns, groups)
    else:
        _group_gemm(False, False, w2, col[:, :columns], like(0.0, zcol), zcol[:, :columns], groups)


@njit(**JIT)
def conv2d_backward(
    x,
    w,
    z,
    y,
    grad_y,
    col,
    zcol,
    grad_x,
    grad_w,
    grad_b,
    partial_b,
    stride_h,
    stride_w,
    pad_top,
    pad_left,
    dilation_h,
    dilation_w,
    groups,
    code,
    alpha,
    need_grad_x,
    col_ready=False,
):
    """Gradients of conv2d_forward from ``grad_y`` (N, O, OH, OW).

    Writes grad_w (O, C // groups, KH, KW), grad_b (O,) and, if ``need_grad_x``, grad_x
    (N, C, H, W). col, zcol: scratch of :func:`conv2d_scratch_shapes`; partial_b (N, O) scratch
    (per-sample bias sums, added in sample order). x, w, z, y as in (and after) the forward.
    ``col_ready``: col is the one conv2d_forward filled from this x and nothing wrote it since;
    when the batch fit one pass it still holds the im2col, which is then not recomputed (the
    same products, so the same bits). With ``need_grad_x`` col is overwritten (it holds the
    gradient of the im2col afterwards).
    """
    c_out, kh, kw = w.shape[0], w.shape[2], w.shape[3]
    oh, ow = z.shape[2], z.shape[3]
    p = oh * ow
    nb = col.shape[1] // p
    w2 = w.reshape((c_out, w.shape[1] * kh * kw))
    gw2 = grad_w.reshape(w2.shape)
    z3, y3, gy3 = _as3(z), _as3(y), _as3(grad_y)
    a = like(alpha, z)
    for n0 in range(0, x.shape[0], nb):
        count = min(nb, x.shape[0] - n0)
        _planes(zcol, grad_b, z3, y3, gy3, partial_b, n0, count, code, a, True)
        _backward_products(
            x,
            w2,
            gw2,
            col,
            zcol,
            grad_x,
            n0,
            count,
            stride_h,
            stride_w,
            pad_top,
            pad_left,
            dilation_h,
            dilation_w,
            groups,
            kh,
            kw,
            oh,
            ow,
            need_grad_x,
            col_ready,
        )
    _sum_bias_partials(partial_b, grad_b)


@njit(**JIT_INLINE)
def _backward_products(
    x, w2, gw2, col, zcol, grad_x, n0, count, sh, sw, pt, pl, dh, dw, groups, kh, kw, oh, ow, need_grad_x, col_ready
):
    """The backward of one pass after its grad_z sweep (grad_z of samples n0 .. n0 + count in zcol):
    ``gw2 += grad_z_g @ col_g.T`` (``=`` for the first pass), and with ``need_grad_x`` grad_x
    of those samples by ``w2_g.T @ grad_z_g`` and col2im (the shifted GEMMs' convolutions:
    :func:`_shifted_backward`). ``col_ready``: as in :func:`conv2d_backward`."""
    columns = count * oh * ow
    beta = like(0.0 if n0 == 0 else 1.0, zcol)
    if is_shifted_forward(x, w2, groups, kh, oh, ow, pt, sw, dw):
        padded = col_ready and count == x.shape[0]  # the forward's single pass left the padded inputs in col
        _shifted_backward(x, w2, gw2, col, zcol, grad_x, n0, count, pl, dw, kw, ow, beta, need_grad_x, padded)
        return
    if not (col_ready and count == x.shape[0]):  # else the forward's single pass left it in col
        _im2col(x, col, n0, count, sh, sw, pt, pl, dh, dw, kh, kw, oh, ow, False)
    if gw2.size // groups <= SMALL_GRAD_W_ELEMENTS:
        _small_weight_grad(zcol, col, columns, beta, gw2, groups)
    else:
        _group_gemm(False, True, zcol[:, :columns], col[:, :columns], beta, gw2, groups)
    if need_grad_x:
        _group_gemm(True, False, w2, zcol[:, :columns], like(0.0, zcol), col[:, :columns], groups)
        _im2col(grad_x, col, n0, count, sh, sw, pt, pl, dh, dw, kh, kw, oh, ow, True)


@njit(**JIT_INLINE)
def _sum_bias_partials(partial_b, grad_b):
    """grad_b[o] = the sum of partial_b[:, o] (N, O) in sample order."""
    for o in range(grad_b.shape[0]):
        grad_b[o] = partial_b[0, o]
    for n in range(1, partial_b.shape[0]):
        for o in range(grad_b.shape[0]):
            grad_b[o] += partial_b[n, o]


__all__ = [
    "COL_MAX_ELEMENTS",
    "THIN_FORWARD_WEIGHTS",
    "conv2d_backward",
    "conv2d_forward",
    "conv2d_scratch_shapes",
    "conv_output_size",
    "is_shifted_forward",
    "is_thin_forward",
    "thin_forward",
]

#: the functions the object layer calls (fastnn.backend.kernels); the CUDA twin module has them too
DEVICE_API = ("conv2d_forward", "conv2d_backward", "conv2d_scratch_shapes", "conv_output_size")
