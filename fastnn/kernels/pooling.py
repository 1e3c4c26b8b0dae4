"""Max, average and global-average pooling over the spatial axes of (N, C, H, W) arrays.

1-D pooling passes (N, C, 1, L) views with a kernel height of 1. Windows of ``kernel_h x
kernel_w`` move by the strides; zero padding ``pad_top``/``pad_left`` (bottom/right implied by
the output's shape, floor mode as PyTorch's default). Max pooling pads with -inf and records the
flat index ``h * W + w`` of each window's maximum (the first one, NaN wins) in ``argmax`` (int32,
the output's shape; half the memory traffic of int64, and the offsets vectorise at full width)
for the backward. Average pooling divides by ``kernel_h * kernel_w``
(``count_include_pad``, PyTorch's default) or by the window's in-bounds count.

Every kernel works on (sample, channel) planes, one plane per task: a backward plane is zeroed
and accumulated by one thread in output order, so results never depend on the thread count.
One dtype, float32 or float64, C-contiguous.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._config import JIT, JIT_EXACT, JIT_INLINE, JIT_PARALLEL, PARALLEL_MIN_ELEMENTS
from ._scalar import like, n_chunks, nonneg

MAX, AVG, AVG_EXCLUDE_PAD = 0, 1, 2
#: input elements per task (whole planes): small planes are grouped, so per-plane call costs amortise
_TASK_ELEMENTS = 4096
#: windows per output row from which the max backward writes rows of width-2 windows in one sweep
_TILED_MIN_OUTPUTS = 32


@njit(**JIT_INLINE)
def window_bounds(start, kernel, size):
    """(lo, hi): offsets of a window at ``start`` (may be negative) that fall in [0, size)."""
    return max(0, -start), min(kernel, size - start)


@njit(**JIT_INLINE)
def avg_divisor(kernel_h, kernel_w, i_lo, i_hi, j_lo, j_hi, count_include_pad):
    """Divisor of an average window: its full size, or its in-bounds count."""
    if count_include_pad:
        return kernel_h * kernel_w
    return max(1, (i_hi - i_lo) * (j_hi - j_lo))


@njit(**JIT_INLINE)
def _max_run(xf, yf, af, xb, yb, top, w, b0, b1, stride_w, left, rows, cols):
    """yf/af[yb + b] for b in [b0, b1): max and first argmax of the ``rows x cols`` windows at
    row ``top``, column ``b * stride_w + left`` of the plane at xf[xb] (row width ``w``). Plain
    ``>`` (NaN-free input). Inlined with literal sizes for the common windows: the window loops
    unroll and the loop over b vectorises."""
    for b in range(b0, b1):
        k0 = top * w + b * stride_w + left
        best, where = xf[nonneg(xb + k0)], k0
        for i in range(rows):
            for j in range(cols):
                k = k0 + i * w + j
                v = xf[nonneg(xb + k)]
                take = v > best
                best = v if take else best
                where = k if take else where
        yf[nonneg(yb + b)] = best
        af[nonneg(yb + b)] = where


@njit(**JIT_INLINE)
def _max_pairs_run(xf, yf, af, xb, yb, top, w, b0, b1, left, two_rows):
    """:func:`_max_run` for 1x2 or (``two_rows``) 2x2 windows at stride 2, as a tournament: the
    first maximum of each row's pair, then of the two rows (the same first maximum as the
    sequential scan for NaN-free input). The comparisons and selects of 32-bit offsets
    vectorise; the sequential int64 select chain of :func:`_max_run` was 1.5-3x slower."""
    one = np.int32(1)
    for b in range(b0, b1):
        k0 = top * w + 2 * b + left
        v0, v1 = xf[nonneg(xb + k0)], xf[nonneg(xb + k0 + 1)]
        best = v1 if v1 > v0 else v0
        off = one if v1 > v0 else one - one
        if two_rows:
            v2, v3 = xf[nonneg(xb + k0 + w)], xf[nonneg(xb + k0 + w + 1)]
            best2 = v3 if v3 > v2 else v2
            off2 = np.int32(w) + (one if v3 > v2 else one - one)
            off = off2 if best2 > best else off
            best = best2 if best2 > best else best
        yf[nonneg(yb + b)] = best
        af[nonneg(yb + b)] = np.int32(k0) + off


@njit(**JIT)
def _max_cut_columns(xf, yf, af, xb, yb, top, w, rows, b0, b1, kernel_w, stride_w, pad_left):
    """:func:`_max_run` for columns b0 .. b1 whose windows the padding cuts, one at a time."""
    for b in range(b0, b1):
        w0 = b * stride_w - pad_left
        j_lo, j_hi = window_bounds(w0, kernel_w, w)
        _max_run(xf, yf, af, xb, yb, top, w, b, b + 1, stride_w, j_lo - pad_left, rows, j_hi - j_lo)


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _max_plane_finite(xf, yf, af, shape, plane, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left):
    """Max pooling of one plane without NaN: plain ``>`` comparisons (the NaN rule of
    :func:`_pool_plane` blocks vectorisation: 2x2 windows 5-7x slower); same maxima and indices.
    xf, yf, af: flat x, y, argmax; shape (H, W, OH, OW). Per output row, the columns whose windows
    lie inside the plane run as one vectorised run (a tournament for 2x2 and 1x2 stride 2),
    the columns cut by the padding one by one."""
    h, w, oh, ow = shape
    xb = plane * h * w
    # interior columns: b * stride_w - pad_left >= 0 and b * stride_w - pad_left + kernel_w <= w
    b_lo = min(ow, (pad_left + stride_w - 1) // stride_w)
    b_hi = max(b_lo, min(ow, (w - kernel_w + pad_left) // stride_w + 1))
    pairs = kernel_w == 2 and stride_w == 2
    for a in range(oh):
        h0 = a * stride_h - pad_top
        i_lo, i_hi = window_bounds(h0, kernel_h, h)
        top, rows, yb = h0 + i_lo, i_hi - i_lo, (plane * oh + a) * ow
        if b_lo > 0:
            _max_cut_columns(xf, yf, af, xb, yb, top, w, rows, 0, b_lo, kernel_w, stride_w, pad_left)
        if pairs and rows == 2:
            _max_pairs_run(xf, yf, af, xb, yb, top, w, b_lo, b_hi, -pad_left, True)
        elif pairs and rows == 1:
            _max_pairs_run(xf, yf, af, xb, yb, top, w, b_lo, b_hi, -pad_left, False)
        else:
            _max_run(xf, yf, af, xb, yb, top, w, b_lo, b_hi, stride_w, -pad_left, rows, kernel_w)
        if b_hi < ow:
            _max_cut_columns(xf, yf, af, xb, yb, top, w, rows, b_hi, ow, kernel_w, stride_w, pad_left)


@njit(**JIT_INLINE)
def _has_nan(xf, start, stop):
    """Whether xf[start:stop] of the flat array xf holds a NaN (a branch-free, vectorised scan)."""
    found = False
    for t in range(start, stop):
        v = xf[nonneg(t)]
        found |= v != v
    return found


@njit(**JIT)
def _max_pairs_planes(xf, yf, af, p0, p1, h, w, oh, ow, two_rows):
    """Max pooling of planes p0 .. p1 (NaN-free) with unpadded 1x2 or (``two_rows``) 2x2
    windows at stride 2, the common case: no per-plane bounds, one run per output row."""
    for plane in range(p0, p1):
        for a in range(oh):
            if two_rows:  # literal flags: the window's loads are constants in each run
                _max_pairs_run(xf, yf, af, plane * h * w, (plane * oh + a) * ow, 2 * a, w, 0, ow, 0, True)
            else:
                _max_pairs_run(xf, yf, af, plane * h * w, (plane * oh + a) * ow, a, w, 0, ow, 0, False)


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _pool_plane(x, y, argmax, plane, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, mode):
    """Forward pooling of one (sample, channel) plane."""
    c = x.shape[1]
    n = plane // c
    ch = plane - n * c
    h, w = x.shape[2], x.shape[3]
    xp, yp, ap = x[n, ch], y[n, ch], argmax[n, ch]
    for a in range(y.shape[2]):
        h0 = a * stride_h - pad_top
        i_lo, i_hi = window_bounds(h0, kernel_h, h)
        for b in range(y.shape[3]):
            w0 = b * stride_w - pad_left
            j_lo, j_hi = window_bounds(w0, kernel_w, w)
            if mode == MAX:
                best = like(-np.inf, x)
                where = -1
                for i in range(i_lo, i_hi):
                    row = xp[h0 + i]
                    for j in range(j_lo, j_hi):
                        v = row[w0 + j]
                        if where < 0 or v > best or (v != v and best == best):
                            best = v
                            where = (h0 + i) * w + w0 + j
                yp[a, b] = best
                ap[a, b] = where
            else:
                total = like(0.0, x)
                for i in range(i_lo, i_hi):
                    row = xp[h0 + i]
                    for j in range(j_lo, j_hi):
                        total += row[w0 + j]
                yp[a, b] = total / like(avg_divisor(kernel_h, kernel_w, i_lo, i_hi, j_lo, j_hi, mode == AVG), x)


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _pool_grad_plane(grad_y, grad_x, plane, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, mode):
    """Backward average pooling of one (sample, channel) plane: grad_x zeroed, then accumulated in
    output order (max pooling: :func:`_max_grad_plane`)."""
    c = grad_x.shape[1]
    n = plane // c
    ch = plane - n * c
    h, w = grad_x.shape[2], grad_x.shape[3]
    gx, gy = grad_x[n, ch], grad_y[n, ch]
    zero = like(0.0, grad_x)
    for r in range(h):
        for q in range(w):
            gx[r, q] = zero
    for a in range(gy.shape[0]):
        h0 = a * stride_h - pad_top
        i_lo, i_hi = window_bounds(h0, kernel_h, h)
        for b in range(gy.shape[1]):
            w0 = b * stride_w - pad_left
            j_lo, j_hi = window_bounds(w0, kernel_w, w)
            g = gy[a, b] / like(avg_divisor(kernel_h, kernel_w, i_lo, i_hi, j_lo, j_hi, mode == AVG), grad_x)
            for i in range(i_lo, i_hi):
                row = gx[h0 + i]
                for j in range(j_lo, j_hi):
                    row[w0 + j] += g


@njit(**JIT_INLINE)
def _max_grad_plane(gxf, gyf, af, plane, size, out_size, overlap):
    """Plane ``plane`` of the flat grad_x (``size`` elements) zeroed, then grad_y routed to each
    window's argmax in output order (flat indices: no division per element). Without
    ``overlap`` (stride >= kernel on both axes) no input is the argmax of two windows: a store,
    not a load-add-store chain through memory."""
    zero = like(0.0, gxf)
    base = plane * size
    for t in range(base, base + size):
        gxf[nonneg(t)] = zero
    if overlap:
        for q in range(plane * out_size, (plane + 1) * out_size):
            where = np.int64(af[nonneg(q)])
            if where >= 0:
                gxf[nonneg(base + where)] += gyf[nonneg(q)]
    else:
        for q in range(plane * out_size, (plane + 1) * out_size):
            where = np.int64(af[nonneg(q)])
            if where >= 0:
                gxf[nonneg(base + where)] = gyf[nonneg(q)]


@njit(**JIT_INLINE)
def _max_grad_tiled_row(gxf, gyf, af, gx0, gy0, k0, ow, kernel_w):
    """One input row of a plane whose windows tile it (stride == kernel, no padding): grad_x at
    gxf[gx0 + t] for t < ow * kernel_w is grad_y of window t // kernel_w where that window's
    argmax (at af[gy0 + b], flat index in the plane) is k0 + t, else 0; one sequential sweep of
    stores (no fill, then scatter). Inlined with a literal ``kernel_w`` (2): it vectorises."""
    zero = like(0.0, gxf)
    for b in range(ow):
        g, where = gyf[nonneg(gy0 + b)], np.int64(af[nonneg(gy0 + b)])
        for j in range(kernel_w):
            k = b * kernel_w + j
            gxf[nonneg(gx0 + k)] = g if where == k0 + k else zero


@njit(**JIT)
def _max_grad_tiled_plane(gxf, gyf, af, plane, shape, kernel_h):
    """:func:`_max_grad_plane` for ``kernel_h x 2`` windows that tile the plane (stride ==
    kernel, no padding):
    each input row written once, left to right (the rows and columns past the last window
    zeroed); the same values as the fill and scatter. shape: (H, W, OH, OW)."""
    h, w, oh, ow = shape
    zero = like(0.0, gxf)
    for r in range(h):
        a = r // kernel_h
        gx0 = (plane * h + r) * w
        covered = 0
        if a < oh:
            covered = 2 * ow
            gy0 = (plane * oh + a) * ow
            _max_grad_tiled_row(gxf, gyf, af, gx0, gy0, r * w, ow, 2)  # literal: the sweep vectorises
        for t in range(gx0 + covered, gx0 + w):
            gxf[nonneg(t)] = zero


@njit(**JIT_INLINE)
def _planes_per_task(plane_size):
    """Planes per task of :func:`_pool`: about :data:`_TASK_ELEMENTS` input elements (at least one)."""
    return max(1, _TASK_ELEMENTS // max(1, plane_size))


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _pool_task(x, y, argmax, flat, task, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, mode, backward):
    """Planes of task ``task`` of :func:`_pool`: unpadded 2x2 / 1x2 stride-2 max pooling of
    NaN-free planes in one sweep; else each plane by the NaN-free max path when it applies,
    else by the general one. ``flat``: (x, y, argmax) as 1-D views (made once per call: a
    reshape costs a runtime call)."""
    h, w, oh, ow = x.shape[2], x.shape[3], y.shape[2], y.shape[3]
    per_task = _planes_per_task(h * w)
    p0, p1 = task * per_task, min(x.shape[0] * x.shape[1], (task + 1) * per_task)
    if (
        not backward
        and mode == MAX
        and kernel_w == 2
        and stride_w == 2
        and kernel_h == stride_h
        and kernel_h <= 2
        and pad_top == 0
        and pad_left == 0
        and oh * kernel_h <= h
        and ow * 2 <= w  # no implied bottom/right pad
        and not _has_nan(flat[0], p0 * h * w, p1 * h * w)
    ):
        _max_pairs_planes(flat[0], flat[1], flat[2], p0, p1, h, w, oh, ow, kernel_h == 2)
        return
    # width-2 windows in rows of at least _TILED_MIN_OUTPUTS: on shorter rows the per-row sweep
    # costs more than the fill and scatter (2x2 over 24 x 24 planes: 64 vs 39 us), and wider
    # windows do not vectorise (1x3 and 1x4 over 64 x 32 x 256: 2.5-4x slower)
    tiled = kernel_w == stride_w == 2 and kernel_h == stride_h and pad_top == pad_left == 0 and ow >= _TILED_MIN_OUTPUTS
    for plane in range(p0, p1):
        if backward and mode == MAX and tiled:
            _max_grad_tiled_plane(flat[0], flat[1], flat[2], plane, (h, w, oh, ow), kernel_h)
        elif backward and mode == MAX:
            _max_grad_plane(
                flat[0], flat[1], flat[2], plane, h * w, oh * ow, stride_h < kernel_h or stride_w < kernel_w
            )
        elif backward:
            _pool_grad_plane(y, x, plane, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, mode)
        elif mode == MAX and not _has_nan(flat[0], plane * h * w, (plane + 1) * h * w):
            _max_plane_finite(
                flat[0],
                flat[1],
                flat[2],
                (h, w, oh, ow),
                plane,
                kernel_h,
                kernel_w,
                stride_h,
                stride_w,
                pad_top,
                pad_left,
            )
        else:
            _pool_plane(x, y, argmax, plane, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, mode)


@njit(**JIT_PARALLEL)
def _pool(x, y, argmax, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, mode, backward):
    """Forward (x -> y) or backward (``backward``: y is grad_y, x is grad_x) over all planes, in
    tasks of whole planes (each plane written by one task)."""
    tasks = n_chunks(x.shape[0] * x.shape[1], _planes_per_task(x.shape[2] * x.shape[3]))
    flat = (x.reshape(x.size), y.reshape(y.size), argmax.reshape(argmax.size))
    if x.size + y.size < PARALLEL_MIN_ELEMENTS:
        for t in range(tasks):
            _pool_task(x, y, argmax, flat, t, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, mode, backward)
    else:
        for t_u in prange(tasks):
            t = np.int64(t_u)  # prange indices are uint64; int64 like the serial twin
            _pool_task(x, y, argmax, flat, t, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, mode, backward)


@njit(**JIT)
def maxpool2d_forward(x, y, argmax, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left):
    """y = max over each window of x; argmax (int32, y's shape) = flat index h * W + w of the max.

    x (N, C, H, W), y (N, C, OH, OW). Padding counts as -inf (PyTorch requires pad <= kernel / 2,
    so every window holds an input element).
    """
    _pool(x, y, argmax, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, MAX, False)


@njit(**JIT)
def maxpool2d_backward(argmax, grad_y, grad_x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left):
    """grad_x (N, C, H, W) = grad_y (N, C, OH, OW) routed to each window's argmax (summed on overlaps)."""
    _pool(grad_x, grad_y, argmax, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, MAX, True)


@njit(**JIT)
def avgpool2d_forward(x, y, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, count_include_pad):
    """y = mean over each window of x (N, C, H, W) -> (N, C, OH, OW); padding is zeros."""
    mode = AVG if count_include_pad else AVG_EXCLUDE_PAD
    _pool(x, y, y, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, mode, False)  # y: no argmax


@njit(**JIT)
def avgpool2d_backward(grad_y, grad_x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, count_include_pad):
    """grad_x (N, C, H, W): each window's grad_y / divisor spread over its in-bounds elements."""
    mode = AVG if count_include_pad else AVG_EXCLUDE_PAD
    _pool(
        grad_x, grad_y, grad_y, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, mode, True
    )  # grad_y stands in for the argmax that average pooling never reads


@njit(**JIT_EXACT)  # without fastmath and not inlined: no caller turns v * (1 / n) into v / n (the
# fused conv + global pool, kernels/conv_gap.py, gets the same bits)
def _scaled(v, inv):
    """v * inv, as written."""
    return v * inv


@njit(**JIT)  # not inlined: one compiled sum, so kernels/conv_gap.py's fused means get these bits
def _run_mean(x1):
    """The mean of the 1-D C-contiguous run x1 (its sum times 1 / its length)."""
    return _scaled(np.sum(x1), like(1.0, x1) / like(x1.shape[0], x1))


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _global_plane(x3, y, plane, backward):
    """y[n, c] = mean of x3[n, c] (or, ``backward``, x3[n, c, :] = y[n, c] / S: x3 is grad_x)."""
    n = plane // x3.shape[1]
    c = plane - n * x3.shape[1]
    inv = like(1.0, x3) / like(x3.shape[2], x3)
    if backward:
        x3[n, c, :] = _scaled(y[n, c], inv)
    else:
        y[n, c] = _run_mean(x3[n, c])


@njit(**JIT_PARALLEL)
def _global(x, y, backward):
    x3 = x.reshape((x.shape[0], x.shape[1], x.shape[2] * x.shape[3]))
    planes = x.shape[0] * x.shape[1]
    if x.size < PARALLEL_MIN_ELEMENTS:
        for t in range(planes):
            _global_plane(x3, y, t, backward)
    else:
        for t_u in prange(planes):
            t = np.int64(t_u)  # prange indices are uint64; int64 like the serial twin
            _global_plane(x3, y, t, backward)


@njit(**JIT)
def global_avgpool_forward(x, y):
    """y[n, c] = mean of x[n, c] over all spatial positions; x (N, C, H, W), y (N, C)."""
    _global(x, y, False)


@njit(**JIT)
def global_avgpool_backward(grad_y, grad_x):
    """grad_x[n, c, :, :] = grad_y[n, c] / (H * W); grad_y (N, C), grad_x (N, C, H, W)."""
    _global(grad_x, grad_y, True)


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

#: the functions the object layer calls (fastnn.backend.kernels); the CUDA twin module has them too
DEVICE_API = (
    "maxpool2d_forward",
    "maxpool2d_backward",
    "avgpool2d_forward",
    "avgpool2d_backward",
    "global_avgpool_forward",
    "global_avgpool_backward",
)
