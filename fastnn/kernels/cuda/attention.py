"""CUDA twins of kernels/attention.py: the same names, arguments and buffers, on device arrays.

The projections are dense GEMMs (:func:`fastnn.kernels.cuda.dense.gemm`: cuBLAS through CuPy or
the tiled kernel) followed by a bias sweep; the bias gradients reuse the dense backward's fixed
row-chunk partial sums. The per-(sample, head) products are small batched kernels with one
thread per output element, each summing in the CPU's order of terms; the softmax and its
gradient run one thread per row through the CPU module's row functions (:func:`softmax_row`,
:func:`softmax_grad_row`, :func:`dropout_row`), so masks and dropout are those of the CPU.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from ..._config import REDUCTION_CHUNK_ROWS
from .._scalar import like
from ..activations import IDENTITY
from ..attention import attended_keys, dropout_row, softmax_grad_row, softmax_row
from ..dropout import keep_threshold, row_key
from ..rng import key64
from ._common import BLOCK, COLS, LANES, blocks_for, column_partials, combine_columns, typed
from .dense import _kernels as _dense_kernels
from .dense import gemm
from .sequence import device_lengths, valid_steps

# The CPU's row functions take arrays: compiled again as device functions (one formula, two targets).
softmax_row = cuda.jit(device=True)(softmax_row.py_func)
softmax_grad_row = cuda.jit(device=True)(softmax_grad_row.py_func)
dropout_row = cuda.jit(device=True)(dropout_row.py_func)


@cuda.jit
def _add_bias(y, b):
    n = y.shape[1]
    for e in range(cuda.grid(1), y.shape[0] * n, cuda.gridsize(1)):
        i = e // n
        j = e - i * n
        y[i, j] += b[j]


def linear_forward(x, w, b, y):
    """y = x @ w.T + b on the device; x (m, k), w (n, k), b (n,), y (m, n)."""
    gemm(False, True, x, w, y)
    _add_bias[blocks_for(y.size), BLOCK](y, b)


def column_sums(g, partials, out):
    """out = sum of g's rows, by fixed row chunks combined in chunk order (as the CPU)."""
    m, n = g.shape
    chunks = -(-m // REDUCTION_CHUNK_ROWS)
    grid = (blocks_for(-(-n // COLS), 1), blocks_for(chunks, 1))
    zero = typed(0.0, g)
    _dense_kernels(g.dtype)[2][grid, (COLS, LANES)](g, g, g, g, column_partials(partials, chunks, out), IDENTITY, zero)
    combine_columns(partials, chunks, out)  # (one chunk: out written by the launch above)


def linear_backward(x, w, grad_y, grad_x, grad_w, grad_b, partials, need_grad_x):
    """Gradients of y = x @ w.T + b on the device (as the CPU kernel)."""
    column_sums(grad_y, partials, grad_b)
    gemm(True, False, grad_y, x, grad_w)
    if need_grad_x:
        gemm(False, False, grad_y, w, grad_x)


@cuda.jit
def _scores(a, a0, b, b0, s, heads, d):
    """s[task, i, j] = sum_c a[rows of i, a0 + h*d + c] * b[rows of j, b0 + h*d + c]."""
    steps = s.shape[1]
    for e in range(cuda.grid(1), s.size, cuda.gridsize(1)):
        task = e // (steps * steps)
        r = e - task * steps * steps
        i = r // steps
        j = r - i * steps
        bt = task // heads
        h = task - bt * heads
        ra = bt * steps + i
        rb = bt * steps + j
        acc = a[ra, a0 + h * d] * b[rb, b0 + h * d]
        for c in range(1, d):
            acc += a[ra, a0 + h * d + c] * b[rb, b0 + h * d + c]
        s[task, i, j] = acc


@cuda.jit
def _mix(p, transposed, v, v0, out, o0, heads, d):
    """out[rows of i, o0 + h*d + c] = sum_j op(p[task])[i, j] * v[rows of j, v0 + h*d + c]."""
    steps = p.shape[1]
    batch = p.shape[0] // heads
    zero = like(0.0, out)
    for e in range(cuda.grid(1), batch * steps * heads * d, cuda.gridsize(1)):
        row = e // (heads * d)
        col = e - row * heads * d
        h = col // d
        bt = row // steps
        i = row - bt * steps
        task = bt * heads + h
        acc = zero
        for j in range(steps):
            w = p[task, j, i] if transposed else p[task, i, j]
            acc += w * v[bt * steps + j, v0 + col]
        out[row, o0 + col] = acc


@cuda.jit
def _softmax_rows(probs, probs_drop, lengths, heads, causal, scale, key, threshold, keep_scale, dropout):
    steps = probs.shape[1]
    for e in range(cuda.grid(1), probs.shape[0] * steps, cuda.gridsize(1)):
        task = e // steps
        i = e - task * steps
        n_keys = valid_steps(lengths, task // heads, steps)
        softmax_row(probs[task, i], attended_keys(n_keys, i, causal), scale)
        if dropout:
            # np.uint64(): the simulator passes uint64 scalars as Python ints
            dropout_row(
                probs[task, i],
                probs_drop[task, i],
                np.uint64(key),
                (task * steps + i) * steps,
                np.uint64(threshold),
                keep_scale,
            )


@cuda.jit
def _softmax_grad_rows(grad_scores, probs_drop, probs, scale):
    steps = grad_scores.shape[1]
    for e in range(cuda.grid(1), grad_scores.shape[0] * steps, cuda.gridsize(1)):
        task = e // steps
        i = e - task * steps
        softmax_grad_row(grad_scores[task, i], probs_drop[task, i], probs[task, i], scale)


@cuda.jit
def _mask_rows(src, lengths, steps, out):
    n = out.shape[1]
    for e in range(cuda.grid(1), out.shape[0] * n, cuda.gridsize(1)):
        r = e // n
        j = e - r * n
        b = r // steps
        out[r, j] = src[r, j] if r - b * steps < valid_steps(lengths, b, steps) else like(0.0, out)


def zero_padded_rows(src, lengths, steps, out):
    """out = src with the rows of padded steps set to 0, on the device."""
    _mask_rows[blocks_for(out.size), BLOCK](src, device_lengths(lengths), steps, out)


def _mixes(p, transposed, v, v0, out, o0, heads, d):
    batch, steps = p.shape[0] // heads, p.shape[1]
    _mix[blocks_for(batch * steps * heads * d), BLOCK](p, transposed, v, v0, out, o0, heads, d)


def attention_forward(
    x, w_in, b_in, w_out, b_out, qkv, probs, probs_drop, context, y, lengths, heads, causal, p, seed, stream, counter
):
    """Self-attention on the device; as the CPU kernel (``counter`` a host int64 (1,) array)."""
    _forward_keyed(
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
        key64(int(seed), int(stream), int(counter[0])),
    )
    if p > 0:
        counter[0] += 1


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
    """The CPU's :func:`~fastnn.kernels.attention.attention_forward_from` on the device (host counters)."""
    steps = probs.shape[1]
    key = row_key(np.uint64(key64(int(seed), int(stream), int(counter[0]))), int(first_row[0]), heads * steps * steps)
    _forward_keyed(x, w_in, b_in, w_out, b_out, qkv, probs, probs_drop, context, y, lengths, heads, causal, p, key)
    if p > 0:
        counter[0] += 1


def _forward_keyed(x, w_in, b_in, w_out, b_out, qkv, probs, probs_drop, context, y, lengths, heads, causal, p, key):
    embed = w_out.shape[0]
    d = embed // heads
    lengths = device_lengths(lengths)
    linear_forward(x, w_in, b_in, qkv)
    _scores[blocks_for(probs.size), BLOCK](qkv, 0, qkv, embed, probs, heads, d)
    scale = typed(1.0 / math.sqrt(d), probs)
    key = np.uint64(key)
    _softmax_rows[blocks_for(probs.shape[0] * probs.shape[1]), BLOCK](
        probs,
        probs_drop,
        lengths,
        heads,
        causal,
        scale,
        key,
        np.uint64(keep_threshold(p)),
        typed(1.0 / (1.0 - p), probs),
        p > 0,
    )
    _mixes(probs_drop, False, qkv, 2 * embed, context, 0, heads, d)
    linear_forward(context, w_out, b_out, y)
    if lengths.shape[0] > 0:
        zero_padded_rows(y, lengths, probs.shape[1], y)


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
    """Gradients of :func:`attention_forward` on the device; as the CPU kernel."""
    embed = w_out.shape[0]
    d = embed // heads
    steps = probs.shape[1]
    g = grad_y
    if lengths.shape[0] > 0:
        zero_padded_rows(grad_y, lengths, steps, grad_z)
        g = grad_z
    linear_backward(context, w_out, g, grad_context, grad_w_out, grad_b_out, partials[:, :embed], True)
    _mixes(probs_drop, True, grad_context, 0, grad_qkv, 2 * embed, heads, d)  # grad_v
    _scores[blocks_for(grad_scores.size), BLOCK](grad_context, 0, qkv, 2 * embed, grad_scores, heads, d)
    _softmax_grad_rows[blocks_for(probs.shape[0] * steps), BLOCK](
        grad_scores, probs_drop, probs, typed(1.0 / math.sqrt(d), probs)
    )
    _mixes(grad_scores, False, qkv, embed, grad_qkv, 0, heads, d)  # grad_q = grad_s @ k
    _mixes(grad_scores, True, qkv, 0, grad_qkv, embed, heads, d)  # grad_k = grad_s.T @ q
    linear_backward(x, w_in, grad_qkv, grad_x, grad_w_in, grad_b_in, partials, need_grad_x)


@cuda.jit
def _add_table(x, table, y):
    n = x.shape[1]
    for e in range(cuda.grid(1), x.shape[0] * n, cuda.gridsize(1)):
        i = e // n
        j = e - i * n
        y[i, j] = x[i, j] + table[j]


def add_positional(x, table, y):
    """y[i] = x[i] + table for every sample, on the device."""
    _add_table[blocks_for(x.size), BLOCK](x, table, y)


__all__ = [
    "add_positional",
    "attention_backward",
    "attention_forward",
    "attention_forward_from",
    "column_sums",
    "linear_backward",
    "linear_forward",
    "zero_padded_rows",
]
