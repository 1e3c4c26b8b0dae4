"""CUDA twins of kernels/conv.py: a direct convolution, one thread per output element.

Same arguments as the CPU kernels (the im2col scratch ``col``, ``zcol`` and ``partial_b`` are
accepted and not used: the direct kernels need none). The backward recomputes
``grad_z = grad_y * f'(z)`` where it reads it (the activation rule is the CPU's
:func:`activate_grad`) and reduces without atomics, so results are deterministic: grad_b and
grad_w by one block per element (fixed-stride lanes, a tree sum), grad_x by one thread per input
element that gathers the outputs whose windows cover it. Shapes as on the CPU; device arrays of
one dtype, float32 or float64.
"""

from __future__ import annotations

from numba import cuda

from .._scalar import like
from ..activations import IDENTITY, activate, activate_grad
from ..conv import conv2d_scratch_shapes, conv_output_size
from ._common import BLOCK, block_sum, blocks_for, numba_type, per_dtype, typed


@cuda.jit(device=True)
def _grad_z(z, y, grad_y, n, o, a, q, code, alpha):
    """grad_y * f'(z) at (n, o, a, q)."""
    g = grad_y[n, o, a, q]
    if code == IDENTITY:
        return g
    return g * activate_grad(code, z[n, o, a, q], y[n, o, a, q], alpha)


@cuda.jit
def _forward(x, w, b, z, y, sh, sw, pt, pl, dh, dw, groups, code, alpha):
    c_out, oh, ow = z.shape[1], z.shape[2], z.shape[3]
    cg, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    h, wd = x.shape[2], x.shape[3]
    og = c_out // groups
    for e in range(cuda.grid(1), z.size, cuda.gridsize(1)):
        q = e % ow
        r = e // ow
        a = r % oh
        r //= oh
        o = r % c_out
        n = r // c_out
        c0 = (o // og) * cg
        acc = like(0.0, z)
        for c in range(cg):
            for i in range(kh):
                ih = a * sh - pt + i * dh
                if 0 <= ih < h:
                    for j in range(kw):
                        iw = q * sw - pl + j * dw
                        if 0 <= iw < wd:
                            acc += x[n, c0 + c, ih, iw] * w[o, c, i, j]
        acc += b[o]
        z[n, o, a, q] = acc
        y[n, o, a, q] = activate(code, acc, alpha)


@per_dtype
def _reductions(dtype):
    """(grad_b, grad_w) kernels for one dtype: one block per output element, a tree sum over lanes."""
    nb_type = numba_type(dtype)

    @cuda.jit
    def grad_b(z, y, grad_y, out, code, alpha):
        buf = cuda.shared.array(BLOCK, nb_type)
        tid = cuda.threadIdx.x
        n_, c_out, oh, ow = z.shape
        p = oh * ow
        for o in range(cuda.blockIdx.x, c_out, cuda.gridDim.x):
            acc = like(0.0, z)
            for e in range(tid, n_ * p, BLOCK):
                n = e // p
                t = e - n * p
                acc += _grad_z(z, y, grad_y, n, o, t // ow, t % ow, code, alpha)
            buf[tid] = acc
            total = block_sum(buf, tid)
            if tid == 0:
                out[o] = total

    @cuda.jit
    def grad_w(x, z, y, grad_y, out, sh, sw, pt, pl, dh, dw, groups, code, alpha):
        buf = cuda.shared.array(BLOCK, nb_type)
        tid = cuda.threadIdx.x
        n_, c_out, oh, ow = z.shape
        cg, kh, kw = out.shape[1], out.shape[2], out.shape[3]
        h, wd = x.shape[2], x.shape[3]
        og = c_out // groups
        p = oh * ow
        for k in range(cuda.blockIdx.x, out.size, cuda.gridDim.x):
            j = k % kw
            r = k // kw
            i = r % kh
            r //= kh
            c = r % cg
            o = r // cg
            ci = (o // og) * cg + c
            acc = like(0.0, z)
            for e in range(tid, n_ * p, BLOCK):
                n = e // p
                t = e - n * p
                a = t // ow
                q = t - a * ow
                ih = a * sh - pt + i * dh
                iw = q * sw - pl + j * dw
                if 0 <= ih < h and 0 <= iw < wd:
                    acc += _grad_z(z, y, grad_y, n, o, a, q, code, alpha) * x[n, ci, ih, iw]
            buf[tid] = acc
            total = block_sum(buf, tid)
            if tid == 0:
                out[o, c, i, j] = total

    return grad_b, grad_w


@cuda.jit(device=True)
def _taps(pos, pad, k, dilation, stride, count):
    """For input position ``pos`` and kernel offset ``k``: the output index whose window uses it, or -1."""
    num = pos + pad - k * dilation
    if num < 0 or num % stride != 0:
        return -1
    t = num // stride
    return t if t < count else -1


@cuda.jit
def _grad_x(w, z, y, grad_y, grad_x, sh, sw, pt, pl, dh, dw, groups, code, alpha):
    c_in, h, wd = grad_x.shape[1], grad_x.shape[2], grad_x.shape[3]
    c_out, oh, ow = z.shape[1], z.shape[2], z.shape[3]
    cg, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    og = c_out // groups
    for e in range(cuda.grid(1), grad_x.size, cuda.gridsize(1)):
        iw = e % wd
        r = e // wd
        ih = r % h
        r //= h
        ci = r % c_in
        n = r // c_in
        g = ci // cg
        c = ci - g * cg
        acc = like(0.0, grad_x)
        for o in range(g * og, (g + 1) * og):
            for i in range(kh):
                a = _taps(ih, pt, i, dh, sh, oh)
                if a >= 0:
                    for j in range(kw):
                        q = _taps(iw, pl, j, dw, sw, ow)
                        if q >= 0:
                            acc += _grad_z(z, y, grad_y, n, o, a, q, code, alpha) * w[o, c, i, j]
        grad_x[n, ci, ih, iw] = acc


def conv2d_forward(
    x, w, b, col, zcol, z, y, stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w, groups, code, alpha
):
    """z = conv2d(x, w) + b and y = f(z) on the device (col, zcol unused); ``y`` may be ``z``."""
    _forward[blocks_for(z.size), BLOCK](
        x, w, b, z, y, stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w, groups, code, typed(alpha, z)
    )


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
    """grad_w, grad_b and (``need_grad_x``) grad_x of conv2d_forward on the device (scratch and
    ``col_ready`` unused: no im2col here)."""
    a = typed(alpha, z)
    geometry = (stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w, groups, code, a)
    grad_b_kernel, grad_w_kernel = _reductions(z.dtype)
    grad_b_kernel[blocks_for(z.shape[1], 1), BLOCK](z, y, grad_y, grad_b, code, a)
    grad_w_kernel[blocks_for(grad_w.size, 1), BLOCK](x, z, y, grad_y, grad_w, *geometry)
    if need_grad_x:
        _grad_x[blocks_for(grad_x.size), BLOCK](w, z, y, grad_y, grad_x, *geometry)


__all__ = ["conv2d_backward", "conv2d_forward", "conv2d_scratch_shapes", "conv_output_size"]
