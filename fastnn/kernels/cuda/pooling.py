"""CUDA twins of kernels/pooling.py: one thread per output element forward, one per input element
backward (gathering the windows that cover it, in output order: no atomics, deterministic).

The window bounds and the average divisor are the CPU module's scalar functions. Shapes and
arguments as on the CPU; device arrays, float32 or float64 (argmax int32).
"""

from __future__ import annotations

import math

from numba import cuda

from .._scalar import like
from ..pooling import AVG, AVG_EXCLUDE_PAD, MAX, avg_divisor, window_bounds
from ._common import BLOCK, blocks_for


@cuda.jit
def _forward(x, y, argmax, kh, kw, sh, sw, pt, pl, mode):
    c, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    h, w = x.shape[2], x.shape[3]
    for e in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        b = e % ow
        r = e // ow
        a = r % oh
        r //= oh
        ch = r % c
        n = r // c
        h0 = a * sh - pt
        w0 = b * sw - pl
        i_lo, i_hi = window_bounds(h0, kh, h)
        j_lo, j_hi = window_bounds(w0, kw, w)
        if mode == MAX:
            best = like(-math.inf, x)
            where = -1
            for i in range(i_lo, i_hi):
                for j in range(j_lo, j_hi):
                    v = x[n, ch, h0 + i, w0 + j]
                    if where < 0 or v > best or (v != v and best == best):
                        best = v
                        where = (h0 + i) * w + w0 + j
            y[n, ch, a, b] = best
            argmax[n, ch, a, b] = where
        else:
            total = like(0.0, x)
            for i in range(i_lo, i_hi):
                for j in range(j_lo, j_hi):
                    total += x[n, ch, h0 + i, w0 + j]
            y[n, ch, a, b] = total / like(avg_divisor(kh, kw, i_lo, i_hi, j_lo, j_hi, mode == AVG), x)


@cuda.jit(device=True)
def _covering(pos, pad, k, stride, count):
    """(lo, hi): the outputs whose windows (``k`` wide, moved by ``stride``) cover input ``pos``."""
    top = pos + pad
    lo = max(0, (top - k + stride) // stride)
    hi = min(count, top // stride + 1)
    return lo, hi


@cuda.jit
def _backward(argmax, grad_y, grad_x, kh, kw, sh, sw, pt, pl, mode):
    c, h, w = grad_x.shape[1], grad_x.shape[2], grad_x.shape[3]
    oh, ow = grad_y.shape[2], grad_y.shape[3]
    for e in range(cuda.grid(1), grad_x.size, cuda.gridsize(1)):
        iw = e % w
        r = e // w
        ih = r % h
        r //= h
        ch = r % c
        n = r // c
        a_lo, a_hi = _covering(ih, pt, kh, sh, oh)
        b_lo, b_hi = _covering(iw, pl, kw, sw, ow)
        acc = like(0.0, grad_x)
        for a in range(a_lo, a_hi):
            h0 = a * sh - pt
            i_lo, i_hi = window_bounds(h0, kh, h)
            for b in range(b_lo, b_hi):
                if mode == MAX:
                    # typed like argmax: average pooling passes grad_y there (this branch unused)
                    if argmax[n, ch, a, b] == like(ih * w + iw, argmax):
                        acc += grad_y[n, ch, a, b]
                else:
                    j_lo, j_hi = window_bounds(b * sw - pl, kw, w)
                    acc += grad_y[n, ch, a, b] / like(avg_divisor(kh, kw, i_lo, i_hi, j_lo, j_hi, mode == AVG), grad_x)
        grad_x[n, ch, ih, iw] = acc


@cuda.jit
def _global(x, y, backward):
    """y[n, c] = mean of x[n, c] (or, ``backward``, x[n, c, :, :] = y[n, c] / S: x is grad_x)."""
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    inv = like(1.0, x) / like(h * w, x)
    if backward:
        for e in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            plane = e // (h * w)
            t = e - plane * (h * w)
            x[plane // c, plane % c, t // w, t % w] = y[plane // c, plane % c] * inv
    else:
        for plane in range(cuda.grid(1), y.size, cuda.gridsize(1)):
            total = like(0.0, x)
            for i in range(h):
                for j in range(w):
                    total += x[plane // c, plane % c, i, j]
            y[plane // c, plane % c] = total * inv


def maxpool2d_forward(x, y, argmax, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left):
    """y = max of each window of x, argmax its flat index h * W + w (device arrays)."""
    _forward[blocks_for(y.size), BLOCK](x, y, argmax, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, MAX)


def maxpool2d_backward(argmax, grad_y, grad_x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left):
    """grad_x = grad_y routed to each window's argmax (device arrays)."""
    _backward[blocks_for(grad_x.size), BLOCK](
        argmax, grad_y, grad_x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, MAX
    )


def avgpool2d_forward(x, y, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, count_include_pad):
    """y = mean of each window of x (device arrays)."""
    mode = AVG if count_include_pad else AVG_EXCLUDE_PAD
    _forward[blocks_for(y.size), BLOCK](x, y, y, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, mode)


def avgpool2d_backward(grad_y, grad_x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, count_include_pad):
    """grad_x: each window's grad_y / divisor over its in-bounds elements (device arrays)."""
    mode = AVG if count_include_pad else AVG_EXCLUDE_PAD
    _backward[blocks_for(grad_x.size), BLOCK](
        grad_y, grad_y, grad_x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, mode
    )


def global_avgpool_forward(x, y):
    """y (N, C) = mean of x (N, C, H, W) over H and W (device arrays)."""
    _global[blocks_for(y.size), BLOCK](x, y, False)


def global_avgpool_backward(grad_y, grad_x):
    """grad_x (N, C, H, W) = grad_y (N, C) / (H * W) (device arrays)."""
    _global[blocks_for(grad_x.size), BLOCK](grad_x, grad_y, True)


__all__ = [
    "avg_divisor",
    "avgpool2d_backward",
    "avgpool2d_forward",
    "global_avgpool_backward",
    "global_avgpool_forward",
    "maxpool2d_backward",
    "maxpool2d_forward",
    "window_bounds",
]
