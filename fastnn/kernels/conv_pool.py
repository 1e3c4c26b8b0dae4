"""Convolution -> elementwise activation -> max pooling over ``kernel_h x 2`` windows that tile
the plane (stride == kernel, no padding; ``kernel_h`` 1 or 2), fused for a training step.

Forward: the convolution's products (kernels/conv.py), then per (sample, channel) plane the bias
and activation applied in place in ``zcol`` (the plane is in cache) and pooled from there, so
the convolution's full output is never written to memory or read back: only the pooled output
and its argmax (int32 flat index in the plane, as kernels/pooling.py) are stored. Backward: per
plane the pooled gradient times f' at the pooled output is stored at each argmax of a zeroed
grad_z plane (and the plane's bias sum taken by conv._run_sum, the loop conv2d_backward's sweep
uses), then the convolution's weight and input gradients as in conv2d_backward. Convolutions that
take conv.py's shifted GEMMs (conv.is_shifted_forward: 1-D, stride 1, one group) run per sample
instead: its products into an (O, OW) block of the task's own, activated and pooled from there
(forward); its grad_z planes into such a block, then its share of the weight gradient and its
input gradient from it (backward, tasks of conv._shifted_chunk's chunks of samples): zcol is not
used and nothing of the sample leaves cache between the products and the sweep (benchmarks/RESULTS.md,
session 26).

Bit for bit what conv2d_forward (with y as z), maxpool2d_forward, maxpool2d_backward and
conv2d_backward compute for activations whose derivative needs y alone (identity, relu, tanh,
sigmoid; the conv layers pass y as z for them) and finite outputs. With a NaN in the
convolution's output the pooling follows the NaN rule of kernels/pooling.py, but grad_z is 0
(not NaN) off the argmax. The batch must run as one pass of conv2d_scratch_shapes (grad_z of
the whole batch in zcol). Each plane is computed by one task: the same bits on any number of threads.
CPU only: the CUDA step plans keep the layers' own kernels.
"""

from __future__ import annotations

import numpy as np
from numba import literal_unroll, njit, prange

from .._config import JIT, JIT_INLINE, JIT_PARALLEL, PARALLEL_MIN_ELEMENTS, PARALLEL_MIN_MACS
from ._scalar import like, n_chunks, nonneg
from .activations import VECTORISED_CODES, activate, activate_grad, activate_grad_const
from .conv import (
    _backward_products,
    _chunk_samples,
    _forward_product,
    _grad_w_scratch,
    _pad_rows,
    _padded,
    _run_sum,
    _shifted_chunk,
    _shifted_grad_w_taps,
    _shifted_grad_x_taps,
    _shifted_parts,
    _shifted_taps,
    _sum_bias_partials,
    _sum_shifted_parts,
    _tap_major,
    _task_span,
    is_shifted_forward,
)
from .pooling import _has_nan, _max_pairs_run

#: windows per pooled row from which the backward writes grad_z rows in one sweep each (as
#: kernels/pooling.py's tiled backward); shorter rows: a zeroed plane and a scatter
_SWEEP_MIN_OUTPUTS = 32


@njit(**JIT)  # not inlined: one compiled body
def _max_windows_nan(zf, pf, af, xb, yb, pool_h, w, poh, pow_):
    """Max (NaN wins, first maximum) and argmax of the ``pool_h x 2`` tiling windows of the plane
    at zf[xb] (row width ``w``) into pf/af[yb + a * pow_ + b]: kernels/pooling.py's exact rule."""
    for a in range(poh):
        for b in range(pow_):
            best = zf[nonneg(xb + pool_h * a * w + 2 * b)]
            where = pool_h * a * w + 2 * b
            for i in range(pool_h):
                for j in range(2):
                    k = (pool_h * a + i) * w + 2 * b + j
                    v = zf[nonneg(xb + k)]
                    if v > best or (v != v and best == best):
                        best, where = v, k
            pf[nonneg(yb + a * pow_ + b)] = best
            af[nonneg(yb + a * pow_ + b)] = np.int32(where)


@njit(**JIT_INLINE)
def _activate_pool_plane(zf, xb, bias, pf, af, yb, oh, ow, pool_h, poh, pow_, code, alpha):
    """The (OH, OW) plane at zf[xb] (rows of OW): z + bias -> f(z) in place, then its max pooling
    into the flat pooled output and argmax at pf/af[yb]."""
    p = oh * ow
    for t in range(xb, xb + p):
        zf[nonneg(t)] = activate(code, zf[nonneg(t)] + bias, alpha)
    if _has_nan(zf, xb, xb + p):
        _max_windows_nan(zf, pf, af, xb, yb, pool_h, ow, poh, pow_)
    elif pool_h == 2:  # literal flags: the window's loads are constants in each run
        for a in range(poh):
            _max_pairs_run(zf, pf, af, xb, yb + a * pow_, 2 * a, ow, 0, pow_, 0, True)
    else:
        for a in range(poh):
            _max_pairs_run(zf, pf, af, xb, yb + a * pow_, a, ow, 0, pow_, 0, False)


@njit(**JIT_INLINE)
def _grad_z_row(gzf, pf, af, gpf, d0, k0, q0, pow_, code, alpha, const):
    """One row of a grad_z plane at gzf[d0] (flat in-plane index of its first element ``k0``)
    under pooled row q0 .. q0 + pow_: the pooled gradient times f' at the pooled output where the
    window's argmax is that element, else 0; ``const``: ``code`` is a constant of
    VECTORISED_CODES (the sweep vectorises)."""
    zero = like(0.0, gzf)
    for b in range(pow_):
        q = q0 + b
        v = pf[nonneg(q)]
        slope = activate_grad_const(code, v, v, alpha) if const else activate_grad(code, v, v, alpha)
        g, where = gpf[nonneg(q)] * slope, np.int64(af[nonneg(q)])
        for j in range(2):
            k = 2 * b + j
            gzf[nonneg(d0 + k)] = g if where == k0 + k else zero


@njit(**JIT_INLINE)
def _grad_z_plane_body(gzf, xb, pf, af, gpf, plane, oh, ow, pool_h, poh, pow_, code, alpha, const):
    """:func:`_pool_grad_z_plane` with ``const`` (``code`` a constant of VECTORISED_CODES) given.
    Rows of at least :data:`_SWEEP_MIN_OUTPUTS` windows are written in one sweep each, shorter
    ones as a zeroed plane and a scatter to the argmaxes (cheaper per row)."""
    zero = like(0.0, gzf)
    if pow_ < _SWEEP_MIN_OUTPUTS:
        for t in range(xb, xb + oh * ow):
            gzf[nonneg(t)] = zero
        for q in range(plane * poh * pow_, (plane + 1) * poh * pow_):
            v = pf[nonneg(q)]
            slope = activate_grad_const(code, v, v, alpha) if const else activate_grad(code, v, v, alpha)
            gzf[nonneg(xb + np.int64(af[nonneg(q)]))] = gpf[nonneg(q)] * slope
        return
    for r in range(oh):
        a = r // pool_h
        covered = 0
        if a < poh:
            covered = 2 * pow_
            _grad_z_row(gzf, pf, af, gpf, xb + r * ow, r * ow, (plane * poh + a) * pow_, pow_, code, alpha, const)
        for t in range(xb + r * ow + covered, xb + (r + 1) * ow):
            gzf[nonneg(t)] = zero


@njit(**JIT_INLINE)
def _pool_grad_z_plane(gzf, xb, pf, af, gpf, partial_b, s, o, c_out, oh, ow, pool_h, poh, pow_, code, alpha, const):
    """grad_z of plane (sample s, channel o) into the (OH, OW) plane at gzf[xb]: at each window's
    argmax the pooled gradient times f' at the pooled output, else 0 (the rows and columns past
    the last window too); partial_b[s, o] = its sum. ``const``: ``code`` is a constant of
    VECTORISED_CODES."""
    _grad_z_plane_body(gzf, xb, pf, af, gpf, s * c_out + o, oh, ow, pool_h, poh, pow_, code, alpha, const)
    partial_b[s, o] = _run_sum(gzf[xb : xb + oh * ow], 0, oh * ow)


@njit(**JIT)  # not inlined: literal_unroll inside a prange body would serialise it; one compiled body for both paths
def _forward_planes(zf, b, pf, af, o0, o1, s0, s1, row, sample, c_out, oh, ow, pool_h, code, alpha):
    """Planes (sample s, channel o), o0 <= o < o1, s0 <= s < s1, at zf[o * row + s * sample]:
    :func:`_activate_pool_plane`, the code a constant in each copy of the loop. The sweep's tasks
    (zcol) and the shifted GEMMs' samples (a block of their own) share this one compiled body."""
    poh, pow_ = oh // pool_h, ow // 2
    vectorised = False
    for c in literal_unroll(VECTORISED_CODES):  # the code is a constant inside each loop: it vectorises
        if code == c:
            vectorised = True
            for o in range(o0, o1):
                for s in range(s0, s1):
                    xb, yb = o * row + s * sample, (s * c_out + o) * poh * pow_
                    _activate_pool_plane(zf, xb, b[o], pf, af, yb, oh, ow, pool_h, poh, pow_, c, alpha)
    if not vectorised:
        for o in range(o0, o1):
            for s in range(s0, s1):
                xb, yb = o * row + s * sample, (s * c_out + o) * poh * pow_
                _activate_pool_plane(zf, xb, b[o], pf, af, yb, oh, ow, pool_h, poh, pow_, code, alpha)


@njit(**JIT)  # not inlined: as _forward_planes
def _grad_z_planes(zf, pf, af, gpf, partial_b, o0, o1, s0, s1, row, sample, c_out, oh, ow, pool_h, code, alpha):
    """grad_z of planes (sample s, channel o), o0 <= o < o1, s0 <= s < s1, at zf[o * row + s *
    sample] with their bias sums: :func:`_pool_grad_z_plane`, the code a constant in each copy of
    the loop (one compiled body for the sweep and the shifted GEMMs' samples)."""
    poh, pow_ = oh // pool_h, ow // 2
    vectorised = False
    for c in literal_unroll(VECTORISED_CODES):
        if code == c:
            vectorised = True
            for o in range(o0, o1):
                for s in range(s0, s1):
                    xb = o * row + s * sample
                    _pool_grad_z_plane(
                        zf, xb, pf, af, gpf, partial_b, s, o, c_out, oh, ow, pool_h, poh, pow_, c, alpha, True
                    )
    if not vectorised:
        for o in range(o0, o1):
            for s in range(s0, s1):
                xb = o * row + s * sample
                _pool_grad_z_plane(
                    zf, xb, pf, af, gpf, partial_b, s, o, c_out, oh, ow, pool_h, poh, pow_, code, alpha, False
                )


@njit(**JIT_INLINE)
def _forward_task(zf, b, pf, af, width, n, task, c_out, oh, ow, pool_h, code, alpha):
    """Forward planes of sweep task ``task`` (channel o, samples s0 .. s1: conv._task_span, one
    contiguous run of zcol's row o): :func:`_forward_planes`."""
    o, s0, s1 = _task_span(n, task, oh * ow)
    _forward_planes(zf, b, pf, af, o, o + 1, s0, s1, width, oh * ow, c_out, oh, ow, pool_h, code, alpha)


@njit(**JIT_INLINE)
def _backward_task(zf, pf, af, gpf, partial_b, width, n, task, c_out, oh, ow, pool_h, code, alpha):
    """grad_z planes of sweep task ``task`` (:func:`_forward_task`'s planes): :func:`_grad_z_planes`."""
    o, s0, s1 = _task_span(n, task, oh * ow)
    _grad_z_planes(zf, pf, af, gpf, partial_b, o, o + 1, s0, s1, width, oh * ow, c_out, oh, ow, pool_h, code, alpha)


@njit(**JIT_INLINE)
def _sweep_setup(zcol, pooled, argmax, oh, ow, alpha):
    """What both sweeps need: flat zcol, pooled and argmax, n, c_out, zcol's row width, alpha in
    zcol's dtype, the number of tasks and whether to run them in parallel. Tasks of (channel,
    sample chunk), one call each (a call per plane cost more than its work: RESULTS.md, session
    11); each plane is computed alone, so the grouping does not change a bit."""
    n, c_out = pooled.shape[0], pooled.shape[1]
    zf, pf, af = zcol.reshape(zcol.size), pooled.reshape(pooled.size), argmax.reshape(argmax.size)
    tasks = c_out * n_chunks(n, _chunk_samples(oh * ow))
    parallel = n * c_out * oh * ow >= PARALLEL_MIN_ELEMENTS
    return zf, pf, af, n, c_out, zcol.shape[1], like(alpha, zcol), tasks, parallel


# The two directions are two kernels, not one with a literal flag: Numba types and compiles both
# branches of a flag (measured: each specialisation then compiled the other direction's copies too).
@njit(**JIT_PARALLEL)
def _forward_sweep(zcol, b, pooled, argmax, oh, ow, pool_h, code, alpha):
    """Activate and pool all (sample, channel) planes of zcol into pooled and argmax."""
    zf, pf, af, n, c_out, width, a, tasks, parallel = _sweep_setup(zcol, pooled, argmax, oh, ow, alpha)
    if not parallel:
        for t in range(tasks):
            _forward_task(zf, b, pf, af, width, n, t, c_out, oh, ow, pool_h, code, a)
    else:
        for t_u in prange(tasks):
            t = np.int64(t_u)  # prange indices are uint64; int64 like the serial twin
            _forward_task(zf, b, pf, af, width, n, t, c_out, oh, ow, pool_h, code, a)


@njit(**JIT_PARALLEL)
def _backward_sweep(zcol, pooled, argmax, grad_pooled, partial_b, oh, ow, pool_h, code, alpha):
    """grad_z of all (sample, channel) planes into zcol, with the per-plane bias sums in partial_b."""
    zf, pf, af, n, c_out, width, a, tasks, parallel = _sweep_setup(zcol, pooled, argmax, oh, ow, alpha)
    if not parallel:
        for t in range(tasks):
            _backward_task(zf, pf, af, grad_pooled, partial_b, width, n, t, c_out, oh, ow, pool_h, code, a)
    else:
        for t_u in prange(tasks):
            t = np.int64(t_u)
            _backward_task(zf, pf, af, grad_pooled, partial_b, width, n, t, c_out, oh, ow, pool_h, code, a)


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _shifted_forward_sample(x, wk, xpad, b, pf, af, s, pl, dw, oh, ow, pool_h, code, alpha):
    """Sample s of :func:`_shifted_forward`: its padded rows into xpad[s], its products
    (conv._shifted_taps) into an (O, OW) block of its own, then each plane activated and pooled
    from there while it is in cache (:func:`_forward_planes`). zcol's rows of the sample lie a whole row of the batch apart (a power of two
    apart in the 1-D CNN: they share cache sets), its own block is contiguous."""
    c_out = wk.shape[1]
    xs = xpad[s]
    _pad_rows(x, xs, s, pl)
    zs = np.empty((c_out, ow), xpad.dtype)
    _shifted_taps(wk, xs, zs, dw, ow)
    first = np.int64(0)  # not a literal: the sweep's compiled _forward_planes
    _forward_planes(
        zs.reshape(zs.size), b, pf, af, first, c_out, s, s + 1, oh * ow, first, c_out, oh, ow, pool_h, code, alpha
    )


@njit(**JIT_PARALLEL)
def _shifted_forward(x, w2, col, b, pooled, argmax, pl, dw, kw, oh, ow, pool_h, code, alpha):
    """The fused forward of a convolution conv.is_shifted_forward takes (1-D, stride 1, one
    group): per sample (:func:`_shifted_forward_sample`; samples are the tasks) the shifted
    GEMMs of conv._shifted_forward and the activation and pooling, so the convolution's output
    never leaves the task's cache and zcol is not written. col holds the padded inputs, as
    conv._shifted_forward leaves it (the backward reads them)."""
    n = x.shape[0]
    wk = _tap_major(w2, kw)
    xpad = _padded(col, n, x.shape[1], ow + (kw - 1) * dw)
    pf, af = pooled.reshape(pooled.size), argmax.reshape(argmax.size)
    a = like(alpha, col)
    if w2.size * n * ow < PARALLEL_MIN_MACS:
        for s in range(n):
            _shifted_forward_sample(x, wk, xpad, b, pf, af, s, pl, dw, oh, ow, pool_h, code, a)
    else:
        for s_u in prange(n):
            _shifted_forward_sample(x, wk, xpad, b, pf, af, np.int64(s_u), pl, dw, oh, ow, pool_h, code, a)


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _shifted_backward_chunk(
    x,
    wk,
    xpad,
    pf,
    af,
    gpf,
    partial_b,
    parts,
    grad_x,
    task,
    chunk,
    pl,
    dw,
    oh,
    ow,
    pool_h,
    code,
    alpha,
    padded,
    need_grad_x,
):
    """Chunk ``task`` of :func:`_shifted_backward`'s samples (``chunk`` each), in order: each
    sample's grad_z (:func:`_grad_z_planes`) into an (O, OW) block of the task's own, its share of
    parts[task] (conv._shifted_grad_w_taps; its padded rows written first unless ``padded``) and,
    with ``need_grad_x``, its grad_x (conv._shifted_grad_x_taps, over its padded rows), all from
    that block in cache."""
    count, c_out = xpad.shape[0], wk.shape[1]
    s0 = task * chunk
    part = parts[task]
    gz = np.empty((c_out, ow), xpad.dtype)
    gzf = gz.reshape(gz.size)
    first = np.int64(0)  # not a literal: the sweep's compiled _grad_z_planes
    zt = _grad_w_scratch(c_out, xpad.shape[1], ow, xpad.dtype)
    for s in range(s0, min(count, s0 + chunk)):
        _grad_z_planes(
            gzf, pf, af, gpf, partial_b, first, c_out, s, s + 1, oh * ow, first, c_out, oh, ow, pool_h, code, alpha
        )
        xs = xpad[s]
        if not padded:
            _pad_rows(x, xs, s, pl)
        _shifted_grad_w_taps(gz, xs, part, like(0.0 if s == s0 else 1.0, gz), dw, ow, zt)
        if need_grad_x:
            _shifted_grad_x_taps(wk, gz, xs, grad_x, s, pl, dw, ow)


@njit(**JIT_PARALLEL)
def _shifted_backward(
    x,
    w2,
    gw2,
    col,
    pooled,
    argmax,
    grad_pooled,
    partial_b,
    grad_x,
    pl,
    dw,
    kw,
    oh,
    ow,
    pool_h,
    code,
    alpha,
    need_grad_x,
    padded,
):
    """The fused backward of :func:`_shifted_forward`'s convolutions: tasks of conv._shifted_chunk's
    chunks of samples (:func:`_shifted_backward_chunk`), then gw2 = the chunks' partial weight
    gradients summed in order: the same products and sums as conv2d_backward's shifted GEMMs, so
    the same bits; zcol is not used. ``padded``: col holds the forward's padded inputs."""
    count, c_in, c_out = x.shape[0], x.shape[1], w2.shape[0]
    wk = _tap_major(w2, kw)
    xpad = _padded(col, count, c_in, ow + (kw - 1) * dw)
    chunk = _shifted_chunk(count)
    chunks = n_chunks(count, chunk)
    parts = _shifted_parts(chunks, kw, c_out, c_in, ow, w2.dtype)
    pf, af = pooled.reshape(pooled.size), argmax.reshape(argmax.size)
    a = like(alpha, col)
    if w2.size * count * ow >= PARALLEL_MIN_MACS:
        for t_u in prange(chunks):
            _shifted_backward_chunk(
                x,
                wk,
                xpad,
                pf,
                af,
                grad_pooled,
                partial_b,
                parts,
                grad_x,
                np.int64(t_u),
                chunk,
                pl,
                dw,
                oh,
                ow,
                pool_h,
                code,
                a,
                padded,
                need_grad_x,
            )
    else:
        for t in range(chunks):
            _shifted_backward_chunk(
                x,
                wk,
                xpad,
                pf,
                af,
                grad_pooled,
                partial_b,
                parts,
                grad_x,
                t,
                chunk,
                pl,
                dw,
                oh,
                ow,
                pool_h,
                code,
                a,
                padded,
                need_grad_x,
            )
    _sum_shifted_parts(parts, gw2, like(0.0, col), ow)


@njit(**JIT)
def _check(x, y, col, pooled, pool_h):
    """Refuse shapes the fused kernels do not take (a silently wrong result otherwise)."""
    oh, ow = y.shape[2], y.shape[3]
    if col.shape[1] != x.shape[0] * oh * ow:
        raise ValueError("conv_pool: the batch must fit one pass of conv2d_scratch_shapes (col of the whole batch)")
    if pool_h != 1 and pool_h != 2:
        raise ValueError("conv_pool: pool_h must be 1 or 2 (windows of pool_h x 2)")
    poh, pow_ = pooled.shape[2], pooled.shape[3]
    if poh != oh // pool_h or pow_ != ow // 2 or pooled.shape[0] != y.shape[0] or pooled.shape[1] != y.shape[1]:
        raise ValueError("conv_pool: pooled must be (N, O, OH // pool_h, OW // 2) of the convolution's output y")


@njit(**JIT)
def conv2d_maxpool_forward(
    x,
    w,
    b,
    col,
    zcol,
    y,
    pooled,
    argmax,
    stride_h,
    stride_w,
    pad_top,
    pad_left,
    dilation_h,
    dilation_w,
    groups,
    code,
    alpha,
    pool_h,
):
    """pooled = maxpool(f(conv2d(x, w) + b)) over ``pool_h x 2`` windows at stride (pool_h, 2);
    argmax (int32, pooled's shape) = flat index oh * OW + ow of each maximum.

    x (N, C, H, W), w (O, C // groups, KH, KW), b (O,); y (N, O, OH, OW) gives the convolution's
    output shape and is not written; pooled, argmax (N, O, OH // pool_h, OW // 2); col, zcol:
    scratch of conv2d_scratch_shapes holding the whole batch (col keeps the im2col, or the padded
    inputs of the shifted GEMMs, for the backward; zcol ends holding f(z), or is not written by
    the shifted GEMMs' per-sample path). Geometry, groups, code and alpha as conv2d_forward's.
    """
    _check(x, y, col, pooled, pool_h)
    c_out, kh, kw = w.shape[0], w.shape[2], w.shape[3]
    w2 = w.reshape((c_out, w.shape[1] * kh * kw))
    oh, ow = y.shape[2], y.shape[3]
    if is_shifted_forward(x, w2, groups, kh, oh, ow, pad_top, stride_w, dilation_w):
        _shifted_forward(x, w2, col, b, pooled, argmax, pad_left, dilation_w, kw, oh, ow, pool_h, code, alpha)
        return
    _forward_product(
        x,
        w2,
        col,
        zcol,
        0,
        x.shape[0],
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
    _forward_sweep(zcol, b, pooled, argmax, oh, ow, pool_h, code, alpha)


@njit(**JIT)
def conv2d_maxpool_backward(
    x,
    w,
    y,
    pooled,
    argmax,
    grad_pooled,
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
    col_ready,
    pool_h,
):
    """Gradients of conv2d_maxpool_forward from grad_pooled (pooled's shape).

    Writes grad_w, grad_b and (``need_grad_x``) grad_x as conv2d_backward; x, w, y, pooled,
    argmax, col as after the forward (``col_ready``: col still holds its im2col); zcol and
    partial_b (N, O) scratch; pool_h as the forward's.
    """
    _check(x, y, col, pooled, pool_h)
    c_out, kh, kw = w.shape[0], w.shape[2], w.shape[3]
    w2 = w.reshape((c_out, w.shape[1] * kh * kw))
    gw2 = grad_w.reshape(w2.shape)
    oh, ow = y.shape[2], y.shape[3]
    if is_shifted_forward(x, w2, groups, kh, oh, ow, pad_top, stride_w, dilation_w):
        gpf = grad_pooled.reshape(grad_pooled.size)
        _shifted_backward(
            x,
            w2,
            gw2,
            col,
            pooled,
            argmax,
            gpf,
            partial_b,
            grad_x,
            pad_left,
            dilation_w,
            kw,
            oh,
            ow,
            pool_h,
            code,
            alpha,
            need_grad_x,
            col_ready,
        )
        _sum_bias_partials(partial_b, grad_b)
        return
    _backward_sweep(zcol, pooled, argmax, grad_pooled.reshape(grad_pooled.size), partial_b, oh, ow, pool_h, code, alpha)
    _backward_products(
        x,
        w2,
        gw2,
        col,
        zcol,
        grad_x,
        0,
        x.shape[0],
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


__all__ = ["conv2d_maxpool_backward", "conv2d_maxpool_forward"]
