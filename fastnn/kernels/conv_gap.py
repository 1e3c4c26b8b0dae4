"""Convolution -> elementwise activation -> global average pooling, fused for a training step.

Forward: the convolution's products (kernels/conv.py), then per (sample, channel) plane the bias
and activation applied in place in ``zcol`` and the plane's mean taken while it is in cache: the
convolution's output is not moved into (N, O, OH, OW) nor read back by the pool; ``zcol`` keeps
f(z) for the backward. Backward: per plane grad_z = grad_mean / (OH * OW) * f'(y), written in
place over the f(z) the forward left in ``zcol`` (the pool's (N, O, OH, OW) gradient is never
written), with the plane's bias sum by conv._run_sum; then the weight / input gradient products
of conv2d_backward.

Bit for bit what conv2d_forward (with y as z), global_avgpool_forward, global_avgpool_backward
and conv2d_backward compute, NaN and inf included (the same operations per element in the same
order), for activations whose derivative needs y alone (identity, relu, tanh, sigmoid: the conv
layers pass y as z for them). The batch must run as one pass of conv2d_scratch_shapes, and
nothing may write zcol between the forward and the backward (a training step plan's invariant,
as for the im2col kept in col). Each plane is one task: the same bits on any number of threads.
CPU only: the CUDA step plans keep the layers' own kernels.
"""

from __future__ import annotations

import numpy as np
from numba import literal_unroll, njit, prange

from .._config import JIT, JIT_PARALLEL, PARALLEL_MIN_ELEMENTS
from ._scalar import like, nonneg
from .activations import IDENTITY, VECTORISED_CODES, activate, activate_grad, activate_grad_const
from .conv import _backward_products, _forward_product, _run_sum, _sum_bias_partials
from .pooling import _run_mean, _scaled


@njit(**JIT)  # not inlined: literal_unroll inside a prange body would serialise it
def _activate_mean_plane(zf, width, b, mf, plane, c_out, p, code, alpha):
    """Plane ``plane`` (sample s, channel o) of zcol (flat ``zf``, rows of ``width``): z + b[o]
    -> f(z) in place, then mf[plane] = its mean (global_avgpool_forward's sum and scale)."""
    s = plane // c_out
    o = plane - s * c_out
    xb = o * width + s * p
    bias = b[o]
    vectorised = False
    for c in literal_unroll(VECTORISED_CODES):  # the code is a constant inside each loop: it vectorises
        if code == c:
            vectorised = True
            for t in range(xb, xb + p):
                zf[nonneg(t)] = activate(c, zf[nonneg(t)] + bias, alpha)
    if not vectorised:
        for t in range(xb, xb + p):
            zf[nonneg(t)] = activate(code, zf[nonneg(t)] + bias, alpha)
    mf[plane] = _run_mean(zf[xb : xb + p])


@njit(**JIT)  # not inlined: literal_unroll inside a prange body would serialise it
def _mean_grad_z_plane(zf, width, gmf, partial_b, plane, c_out, p, code, alpha):
    """grad_z of plane ``plane`` (sample s, channel o) in place over f(z) in zcol (flat ``zf``):
    gmf[plane] / p * f'(y); partial_b[s, o] = its sum."""
    s = plane // c_out
    o = plane - s * c_out
    xb = o * width + s * p
    g = _scaled(gmf[plane], like(1.0, zf) / like(p, zf))  # global_avgpool_backward's value
    if code == IDENTITY:
        for t in range(xb, xb + p):
            zf[nonneg(t)] = g
    else:
        vectorised = False
        for c in literal_unroll(VECTORISED_CODES):
            if code == c:
                vectorised = True
                for t in range(xb, xb + p):
                    v = zf[nonneg(t)]
                    zf[nonneg(t)] = g * activate_grad_const(c, v, v, alpha)
        if not vectorised:
            for t in range(xb, xb + p):
                v = zf[nonneg(t)]
                zf[nonneg(t)] = g * activate_grad(code, v, v, alpha)
    partial_b[s, o] = _run_sum(zf[xb : xb + p], 0, p)


@njit(**JIT_PARALLEL)
def _sweep(zcol, b, mean, grad_mean, partial_b, p, code, alpha, backward):
    """The per-plane sweep over all (sample, channel) planes: forward (activate and average) or
    (``backward``) grad_z with the per-plane bias sums."""
    c_out = mean.shape[1]
    zf, mf, gmf = zcol.reshape(zcol.size), mean.reshape(mean.size), grad_mean.reshape(grad_mean.size)
    planes = mean.size
    a = like(alpha, zcol)
    if planes * p < PARALLEL_MIN_ELEMENTS:
        for t in range(planes):
            if backward:
                _mean_grad_z_plane(zf, zcol.shape[1], gmf, partial_b, t, c_out, p, code, a)
            else:
                _activate_mean_plane(zf, zcol.shape[1], b, mf, t, c_out, p, code, a)
    else:
        for t_u in prange(planes):
            t = np.int64(t_u)  # prange indices are uint64; int64 like the serial twin
            if backward:
                _mean_grad_z_plane(zf, zcol.shape[1], gmf, partial_b, t, c_out, p, code, a)
            else:
                _activate_mean_plane(zf, zcol.shape[1], b, mf, t, c_out, p, code, a)


@njit(**JIT)
def _check(x, y, col, zcol, mean):
    """Refuse shapes the fused kernels do not take (a silently wrong result otherwise)."""
    p = y.shape[2] * y.shape[3]
    if col.shape[1] != x.shape[0] * p or zcol.shape[1] != x.shape[0] * p:
        raise ValueError("conv_gap: the batch must fit one pass of conv2d_scratch_shapes (col of the whole batch)")
    if mean.ndim != 2 or mean.shape[0] != y.shape[0] or mean.shape[1] != y.shape[1]:
        raise ValueError("conv_gap: mean must be (N, O) of the convolution's output y (N, O, OH, OW)")


@njit(**JIT)
def conv2d_gap_forward(
    x, w, b, col, zcol, y, mean, stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w, groups, code, alpha
):
    """mean (N, O) = the mean over all positions of f(conv2d(x, w) + b).

    x (N, C, H, W), w (O, C // groups, KH, KW), b (O,); y (N, O, OH, OW) gives the convolution's
    output shape and is not written; col, zcol: scratch of conv2d_scratch_shapes holding the
    whole batch (col keeps the im2col and zcol f(z), both for the backward). Geometry, groups,
    code and alpha as conv2d_forward's.
    """
    _check(x, y, col, zcol, mean)
    c_out, kh, kw = w.shape[0], w.shape[2], w.shape[3]
    w2 = w.reshape((c_out, w.shape[1] * kh * kw))
    oh, ow = y.shape[2], y.shape[3]
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
    _sweep(zcol, b, mean, mean, mean, oh * ow, code, alpha, False)


@njit(**JIT)
def conv2d_gap_backward(
    x,
    w,
    y,
    grad_mean,
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
):
    """Gradients of conv2d_gap_forward from grad_mean (N, O).

    Writes grad_w, grad_b and (``need_grad_x``) grad_x as conv2d_backward; x, w, y, col as after
    the forward (``col_ready``: col still holds its im2col); zcol must still hold the forward's
    f(z) (it ends holding grad_z); partial_b (N, O) scratch.
    """
    _check(x, y, col, zcol, grad_mean)
    c_out, kh, kw = w.shape[0], w.shape[2], w.shape[3]
    w2 = w.reshape((c_out, w.shape[1] * kh * kw))
    gw2 = grad_w.reshape(w2.shape)
    oh, ow = y.shape[2], y.shape[3]
    _sweep(zcol, grad_b, grad_mean, grad_mean, partial_b, oh * ow, code, alpha, True)
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


__all__ = ["conv2d_gap_backward", "conv2d_gap_forward"]
