"""Multi-head self-attention with PyTorch's parameterisation, and the sinusoidal positional sum.

Shapes (one dtype, float32 or float64, C-contiguous; B batch, T time, E embed, H heads, d = E / H):
  x, context, y, grad_y, grad_z, grad_context, grad_x: (B * T, E)   rows (sample, step)
  qkv, grad_qkv: (B * T, 3E)   [q | k | v]; head h owns columns h*d:(h+1)*d of each third
  probs, probs_drop, grad_scores: (B * H, T, T)   task (sample, head), rows query, columns key
  w_in (3E, E), b_in (3E,), w_out (E, E), b_out (E,)   (torch's in_proj_* and out_proj.*)
  lengths: int64 (B,) valid leading steps per sample, or (0,) (every step valid)
  partials: (ceil(B * T / REDUCTION_CHUNK_ROWS), 3E) scratch of the bias gradients

Forward: qkv = x @ w_in.T + b_in (a GEMM on fixed output tiles over Numba's threads, BLAS at one
thread, as kernels/dense.py); per task, scores = q @ k.T (a GEMM), then each row in one fused
pass: scale by 1/sqrt(d), mask (keys past the sample's length; with ``causal`` keys after the
query), subtract the row maximum, exponentiate, normalise (:func:`softmax_row`); probs_drop is
probs with dropout (the counter-based hash of kernels/rng.py over the task's (query, key) index,
scaled by 1/(1-p); pass ``probs_drop`` = ``probs`` when p = 0); context = probs_drop @ v (a
GEMM); y = context @ w_out.T + b_out, with the rows of padded steps set to 0.

Backward (the same products reversed): grad_z = grad_y with padded rows zeroed, the output
projection's gradients, per task grad_v = probs_drop.T @ grad_o, grad_pd = grad_o @ v.T, the
softmax gradient per row (:func:`softmax_grad_row`: dropout folds in as grad_pd * probs_drop,
so no mask is stored), grad_q = grad_s @ k, grad_k = grad_s.T @ q, then the input projection's
gradients. Tasks run in parallel when their products are large enough (PARALLEL_MIN_MACS);
every sum has a fixed order (GEMM tiles by shape, bias sums by fixed row chunks): results are
bit-identical on any number of threads.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .._config import JIT, JIT_INLINE, JIT_PARALLEL, PARALLEL_MIN_ELEMENTS, PARALLEL_MIN_MACS, REDUCTION_CHUNK_ROWS
from ._scalar import like, n_chunks
from .blas import gemm_block, small_kernel_form
from .dense import _block, _grid, _share, _shares, _worth_parallel
from .dropout import keep_threshold, keep_unit, row_key
from .rng import hash_at, key64
from .sequence import valid_steps


# -- row functions shared with the CUDA twin ---------------------------------------------------
@njit(**JIT_INLINE)
def attended_keys(n_keys, query, causal):
    """Keys query ``query`` sees: the sample's valid keys, and with ``causal`` none after it."""
    return min(n_keys, query + 1) if causal else n_keys


@njit(**JIT_INLINE)
def softmax_row(row, n_valid, scale):
    """row[:n_valid] = softmax(scale * row[:n_valid]) (max-subtracted), row[n_valid:] = 0."""
    zero = like(0.0, row)
    if n_valid > 0:
        top = row[0]
        for j in range(1, n_valid):
            top = max(top, row[j])
        total = zero
        for j in range(n_valid):
            e = math.exp((row[j] - top) * scale)
            row[j] = e
            total += e
        inv = like(1.0, row) / total
        for j in range(n_valid):
            row[j] *= inv
    for j in range(n_valid, row.shape[0]):
        row[j] = zero


@njit(**JIT_INLINE)
def softmax_grad_row(grad, probs_drop, probs, scale):
    """grad (of probs_drop) -> gradient of the raw scores, in place:
    scale * (grad * probs_drop - probs * sum(grad * probs_drop)). Masked keys (probs 0) get 0."""
    dot = like(0.0, grad)
    for j in range(grad.shape[0]):
        g = grad[j] * probs_drop[j]
        grad[j] = g
        dot += g
    for j in range(grad.shape[0]):
        grad[j] = scale * (grad[j] - probs[j] * dot)


@njit(**JIT_INLINE)
def dropout_row(probs, probs_drop, key, base, threshold, keep_scale):
    """probs_drop = probs * keep / (1 - p), keep drawn by element index ``base + j``."""
    zero = like(0.0, probs)
    for j in range(probs.shape[0]):
        # np.uint64(): a no-op here; the CUDA simulator returns uint64 as a Python int
        kept = keep_unit(np.uint64(hash_at(key, base + j)), threshold)
        probs_drop[j] = probs[j] * keep_scale if kept else zero


# -- the projections: y = x @ w.T + b (torch's Linear layout) -----------------------------------
@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _linear_tile(x, w, b, y, tile, grid):
    r0, r1, c0, c1 = _block(tile, grid[0], grid[1], grid[3], y.shape[0], y.shape[1])
    gemm_block(False, True, like(1.0, y), x, w, like(0.0, y), y, r0, r1, c0, c1)
    for i in range(r0, r1):
        yi = y[i]
        for j in range(c0, c1):
            yi[j] += b[j]


@njit(**JIT_PARALLEL)
def linear_forward(x, w, b, y):
    """y = x @ w.T + b; x (m, k), w (n, k), b (n,), y (m, n)."""
    m, n = y.shape
    parallel = _worth_parallel(m, n, x.shape[1])
    grid = _grid(m, n, x.shape[1], parallel, small_kernel_form(False, True))  # x @ w.T
    if parallel:
        for s_u in prange(_shares(grid[2] * grid[3])):
            lo, hi = _share(np.int64(s_u), grid[2] * grid[3])  # prange indices are uint64
            for t in range(lo, hi):
                _linear_tile(x, w, b, y, t, grid)
    else:
        _linear_tile(x, w, b, y, np.int64(0), grid)  # int64 like t: one compiled tile body


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _column_chunk(g, partials, chunk):
    r0 = chunk * REDUCTION_CHUNK_ROWS
    sums = partials[chunk]
    sums[:] = 0
    for i in range(r0, min(g.shape[0], r0 + REDUCTION_CHUNK_ROWS)):
        gi = g[i]
        for j in range(g.shape[1]):
            sums[j] += gi[j]


@njit(**JIT_PARALLEL)
def column_sums(g, partials, out):
    """out = sum of g's rows, per fixed row chunk into ``partials`` then in chunk order."""
    chunks = n_chunks(g.shape[0], REDUCTION_CHUNK_ROWS)
    if g.size < PARALLEL_MIN_ELEMENTS:
        for c in range(chunks):
            _column_chunk(g, partials, c)
    else:
        for c_u in prange(chunks):
            _column_chunk(g, partials, np.int64(c_u))
    out[:] = partials[0]
    for c in range(1, chunks):
        out += partials[c]


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _linear_grad_tile(x, w, grad_y, grad_x, grad_w, tile, w_grid, x_grid):
    one = like(1.0, grad_y)
    zero = like(0.0, grad_y)
    w_tiles = w_grid[2] * w_grid[3]
    if tile < w_tiles:  # grad_w = grad_y.T @ x
        r0, r1, c0, c1 = _block(tile, w_grid[0], w_grid[1], w_grid[3], grad_w.shape[0], grad_w.shape[1])
        gemm_block(True, False, one, grad_y, x, zero, grad_w, r0, r1, c0, c1)
    else:  # grad_x = grad_y @ w
        r0, r1, c0, c1 = _block(tile - w_tiles, x_grid[0], x_grid[1], x_grid[3], grad_x.shape[0], grad_x.shape[1])
        gemm_block(False, False, one, grad_y, w, zero, grad_x, r0, r1, c0, c1)


@njit(**JIT_PARALLEL)
def linear_backward(x, w, grad_y, grad_x, grad_w, grad_b, partials, need_grad_x):
    """Gradients of y = x @ w.T + b: grad_w (n, k), grad_b (n,), and grad_x (m, k) if ``need_grad_x``."""
    m, n = grad_y.shape
    k = x.shape[1]
    column_sums(grad_y, partials, grad_b)
    parallel = _worth_parallel(m, n, k)
    w_grid = _grid(n, k, m, parallel, small_kernel_form(True, False))  # grad_y.T @ x
    x_grid = _grid(m, k, n, parallel, small_kernel_form(False, False))  # grad_y @ w
    w_tiles = w_grid[2] * w_grid[3]
    x_tiles = x_grid[2] * x_grid[3] if need_grad_x else 0
    tiles = w_tiles + x_tiles
    if parallel:
        for s_u in prange(max(_shares(w_tiles), _shares(x_tiles))):  # paired runs: see dense._share
            s = np.int64(s_u)  # prange indices are uint64
            lo, hi = _share(s, w_tiles)
            for t in range(lo, hi):
                _linear_grad_tile(x, w, grad_y, grad_x, grad_w, t, w_grid, x_grid)
            lo, hi = _share(s, x_tiles)
            for t in range(w_tiles + lo, w_tiles + hi):
                _linear_grad_tile(x, w, grad_y, grad_x, grad_w, t, w_grid, x_grid)
    else:
        for t in range(tiles):
            _linear_grad_tile(x, w, grad_y, grad_x, grad_w, t, w_grid, x_grid)


# -- the heads ----------------------------------------------------------------------------------
@njit(**JIT_INLINE)
def _head_geometry(task, heads, steps, embed):
    """(sample b, its rows r0:r1, the first columns of head h's q, k and v in qkv (= h's column in
    context), head width d) of task (b, h) = divmod(task, heads)."""
    d = embed // heads
    b = task // heads
    h = task - b * heads
    return b, b * steps, (b + 1) * steps, h * d, embed + h * d, 2 * embed + h * d, d


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _head_forward(qkv, probs, probs_drop, context, lengths, task, heads, causal, key, threshold, keep_scale):
    steps = probs.shape[1]
    b, r0, r1, cq, ck, cv, d = _head_geometry(task, heads, steps, context.shape[1])
    q, k, v = qkv[r0:r1, cq : cq + d], qkv[r0:r1, ck : ck + d], qkv[r0:r1, cv : cv + d]
    s = probs[task]
    one = like(1.0, probs)
    zero = like(0.0, probs)
    gemm_block(False, True, one, q, k, zero, s, 0, steps, 0, steps)
    n_keys = valid_steps(lengths, b, steps)
    scale = one / math.sqrt(like(d, probs))
    for i in range(steps):
        softmax_row(s[i], attended_keys(n_keys, i, causal), scale)
    pd = probs_drop[task]
    if keep_scale != one:  # dropout in training
        for i in range(steps):
            dropout_row(s[i], pd[i], key, (task * steps + i) * steps, threshold, keep_scale)
    gemm_block(False, False, one, pd, v, zero, context[r0:r1, cq : cq + d], 0, steps, 0, d)


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _head_backward(qkv, probs, probs_drop, grad_context, grad_scores, grad_qkv, task, heads):
    steps = probs.shape[1]
    _, r0, r1, cq, ck, cv, d = _head_geometry(task, heads, steps, grad_context.shape[1])
    q, k, v = qkv[r0:r1, cq : cq + d], qkv[r0:r1, ck : ck + d], qkv[r0:r1, cv : cv + d]
    go = grad_context[r0:r1, cq : cq + d]
    gs = grad_scores[task]
    one = like(1.0, probs)
    zero = like(0.0, probs)
    gemm_block(True, False, one, probs_drop[task], go, zero, grad_qkv[r0:r1, cv : cv + d], 0, steps, 0, d)
    gemm_block(False, True, one, go, v, zero, gs, 0, steps, 0, steps)
    scale = one / math.sqrt(like(d, probs))
    for i in range(steps):
        softmax_grad_row(gs[i], probs_drop[task, i], probs[task, i], scale)
    gemm_block(False, False, one, gs, k, zero, grad_qkv[r0:r1, cq : cq + d], 0, steps, 0, d)
    gemm_block(True, False, one, gs, q, zero, grad_qkv[r0:r1, ck : ck + d], 0, steps, 0, d)


@njit(**JIT_INLINE)
def _heads_parallel(tasks, steps, d):
    """Whether the tasks' products (4 T x T x d per task forward and backward) fill a parallel region."""
    return tasks > 1 and tasks * steps * steps * d * 4 >= PARALLEL_MIN_MACS


@njit(**JIT_PARALLEL)
def _heads_forward(qkv, probs, probs_drop, context, lengths, heads, causal, key, threshold, keep_scale):
    tasks, steps = probs.shape[0], probs.shape[1]
    if _heads_parallel(tasks, steps, context.shape[1] // heads):
        for t_u in prange(tasks):
            _head_forward(
                qkv, probs, probs_drop, context, lengths, np.int64(t_u), heads, causal, key, threshold, keep_scale
            )
    else:
        for t in range(tasks):
            _head_forward(qkv, probs, probs_drop, context, lengths, t, heads, causal, key, threshold, keep_scale)


@njit(**JIT_PARALLEL)
def _heads_backward(qkv, probs, probs_drop, grad_context, grad_scores, grad_qkv, heads):
    tasks, steps = probs.shape[0], probs.shape[1]
    if _heads_parallel(tasks, steps, grad_context.shape[1] // heads):
        for t_u in prange(tasks):
            _head_backward(qkv, probs, probs_drop, grad_context, grad_scores, grad_qkv, np.int64(t_u), heads)
    else:
        for t in range(tasks):
            _head_backward(qkv, probs, probs_drop, grad_context, grad_scores, grad_qkv, t, heads)


@njit(**JIT)
def zero_padded_rows(src, lengths, steps, out):
    """out = src with the rows of padded steps set to 0; src, out (batch * steps, features), may be one array."""
    zero = like(0.0, out)
    for b in range(out.shape[0] // steps):
        n = valid_steps(lengths, b, steps)
        for t in range(steps):
            r = b * steps + t
            if t < n:
                out[r, :] = src[r]
            else:
                out[r, :] = zero


# -- the layer's kernels ------------------------------------------------------------------------
@njit(**JIT)
def attention_forward(
    x, w_in, b_in, w_out, b_out, qkv, probs, probs_drop, context, y, lengths, heads, causal, p, seed, stream, counter
):
    """Self-attention of ``x`` into ``y`` (see the module docstring for shapes); writes qkv,
    probs, probs_drop (dropout with probability ``p`` at step ``counter[0]``, then
    ``counter[0] += 1``; pass p = 0 and probs_drop = probs outside training) and context."""
    key = key64(seed, stream, counter[0])
    _forward_keyed(x, w_in, b_in, w_out, b_out, qkv, probs, probs_drop, context, y, lengths, heads, causal, p, key)
    if p > 0:
        counter[0] += 1


@njit(**JIT)
def attention_forward_from(
    x,
    w_in,
    b_in,
    w_out,
    b_out,
    qkv,
    probs,
    probs_drop,
    context,
    y,
    lengths,
    heads,
    causal,
    p,
    seed,
    stream,
    counter,
    first_row,
):
    """:func:`attention_forward` with the samples numbered from ``first_row[0]`` (int64 (1,)):
    a shard of a data-parallel batch (fastnn.distributed) draws the dropout masks its samples
    get in the whole batch; ``first_row[0] = 0`` gives :func:`attention_forward`'s."""
    steps = probs.shape[1]
    key = row_key(key64(seed, stream, counter[0]), first_row[0], heads * steps * steps)
    _forward_keyed(x, w_in, b_in, w_out, b_out, qkv, probs, probs_drop, context, y, lengths, heads, causal, p, key)
    if p > 0:
        counter[0] += 1


@njit(**JIT)
def _forward_keyed(x, w_in, b_in, w_out, b_out, qkv, probs, probs_drop, context, y, lengths, heads, causal, p, key):
    linear_forward(x, w_in, b_in, qkv)
    keep_scale = like(1.0 / (1.0 - p), probs)
    _heads_forward(qkv, probs, probs_drop, context, lengths, heads, causal, key, keep_threshold(p), keep_scale)
    linear_forward(context, w_out, b_out, y)
    if lengths.shape[0] > 0:
        zero_padded_rows(y, lengths, probs.shape[1], y)


@njit(**JIT)
def attention_backward(
    x,
    w_in,
    w_out,
    qkv,
    probs,
    probs_drop,
    context,
    grad_y,
    lengths,
    grad_z,
    grad_context,
    grad_scores,
    grad_qkv,
    grad_x,
    grad_w_in,
    grad_b_in,
    grad_w_out,
    grad_b_out,
    partials,
    heads,
    need_grad_x,
):
    """Gradients of :func:`attention_forward` from ``grad_y``: grad_w_in, grad_b_in, grad_w_out,
    grad_b_out and, if ``need_grad_x``, grad_x (0 at padded steps). Scratch: grad_z (the
    upstream gradient with padded rows zeroed, unused without lengths), grad_context,
    grad_scores, grad_qkv, partials."""
    g = grad_y
    if lengths.shape[0] > 0:
        zero_padded_rows(grad_y, lengths, probs.shape[1], grad_z)
        g = grad_z
    embed = w_out.shape[0]
    linear_backward(context, w_out, g, grad_context, grad_w_out, grad_b_out, partials[:, :embed], True)
    _heads_backward(qkv, probs, probs_drop, grad_context, grad_scores, grad_qkv, heads)
    linear_backward(x, w_in, grad_qkv, grad_x, grad_w_in, grad_b_in, partials, need_grad_x)


@njit(**JIT)
def add_positional(x, table, y):
    """y[i] = x[i] + table for every sample; x, y (batch, time * features), table (time * features,)."""
    n = x.shape[1]
    for i in range(x.shape[0]):
        xi, yi = x[i], y[i]
        for j in range(n):
            yi[j] = xi[j] + table[j]


def positional_table(steps: int, features: int) -> np.ndarray:
    """The sinusoidal encoding (steps, features), float64: pe[t, 2i] = sin(t / 10000^(2i / features)),
    pe[t, 2i + 1] = cos(the same) (Vaswani et al. 2017, the PyTorch tutorial's formula)."""
    position = np.arange(steps, dtype=np.float64)[:, None]
    div = np.exp(np.arange(0, features, 2, dtype=np.float64) * (-math.log(10000.0) / features))
    table = np.zeros((steps, features))
    table[:, 0::2] = np.sin(position * div)
    table[:, 1::2] = np.cos(position * div[: features // 2])
    return table


def partials_shape(rows: int, embed: int) -> tuple[int, int]:
    """Shape of the ``partials`` scratch for ``rows`` = batch * time rows."""
    return (max(1, n_chunks(rows, REDUCTION_CHUNK_ROWS)), 3 * embed)


__all__ = [
    "add_positional",
    "attended_keys",
    "attention_backward",
    "attention_forward",
    "attention_forward_from",
    "column_sums",
    "dropout_row",
    "linear_backward",
    "linear_forward",
    "partials_shape",
    "positional_table",
    "softmax_grad_row",
    "softmax_row",
    "zero_padded_rows",
]

#: the functions the object layer calls (fastnn.backend.kernels); the CUDA twin module has them too
DEVICE_API = ("attention_forward", "attention_forward_from", "attention_backward", "add_positional")
