"""Float64 NumPy references for the convolution, pooling, embedding and layout kernels.

Written for clarity: explicit zero padding, one strided slice per kernel offset, np.einsum for
the channel sums. Every function computes in float64 and returns float64. Spatial arrays are
(N, C, H, W); ``pads`` = (top, bottom, left, right).
"""

from __future__ import annotations

import numpy as np

from ._reference_core import activation_derivative, activation_forward


def _f64(*arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def conv_out_size(size, kernel, stride, pad_lo, pad_hi, dilation):
    return (size + pad_lo + pad_hi - dilation * (kernel - 1) - 1) // stride + 1


def _patches_view(xp, kh, kw, stride, dilation, oh, ow):
    """(N, C, KH, KW, OH, OW): the input under each kernel offset, from the padded input xp."""
    (sh, sw), (dh, dw) = stride, dilation
    n, c = xp.shape[:2]
    out = np.empty((n, c, kh, kw, oh, ow))
    for i in range(kh):
        for j in range(kw):
            out[:, :, i, j] = xp[
                :, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw
            ]
    return out


def _pad(x, pads):
    top, bottom, left, right = pads
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))


def conv2d_forward(
    x, w, b, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1, activation="identity", alpha=0.0
):
    """(z, y): z = conv2d(x, w) + b (cross-correlation, as torch), y = f(z)."""
    x, w, b = _f64(x, w, b)
    o, cg, kh, kw = w.shape
    xp = _pad(x, pads)
    oh = conv_out_size(x.shape[2], kh, stride[0], pads[0], pads[1], dilation[0])
    ow = conv_out_size(x.shape[3], kw, stride[1], pads[2], pads[3], dilation[1])
    patches = _patches_view(xp, kh, kw, stride, dilation, oh, ow)
    og = o // groups
    z = np.empty((x.shape[0], o, oh, ow))
    for g in range(groups):
        z[:, g * og : (g + 1) * og] = np.einsum(
            "ncijpq,ocij->nopq", patches[:, g * cg : (g + 1) * cg], w[g * og : (g + 1) * og]
        )
    z += b[None, :, None, None]
    return z, activation_forward(activation, z, alpha)


def conv2d_backward(
    x, w, b, grad_y, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1, activation="identity", alpha=0.0
):
    """(grad_x, grad_w, grad_b) of sum(grad_y * y) for y from conv2d_forward."""
    x, w, b, grad_y = _f64(x, w, b, grad_y)
    z, _ = conv2d_forward(x, w, b, stride, pads, dilation, groups)
    grad_z = grad_y * activation_derivative(activation, z, alpha)
    o, cg, kh, kw = w.shape
    og = o // groups
    oh, ow = z.shape[2:]
    (sh, sw), (dh, dw) = stride, dilation
    xp = _pad(x, pads)
    patches = _patches_view(xp, kh, kw, stride, dilation, oh, ow)
    grad_w = np.empty_like(w)
    grad_patches = np.empty_like(patches)
    for g in range(groups):
        gz = grad_z[:, g * og : (g + 1) * og]
        grad_w[g * og : (g + 1) * og] = np.einsum("nopq,ncijpq->ocij", gz, patches[:, g * cg : (g + 1) * cg])
        grad_patches[:, g * cg : (g + 1) * cg] = np.einsum("nopq,ocij->ncijpq", gz, w[g * og : (g + 1) * og])
    grad_xp = np.zeros_like(xp)
    for i in range(kh):
        for j in range(kw):
            grad_xp[:, :, i * dh : i * dh + sh * (oh - 1) + 1 : sh, j * dw : j * dw + sw * (ow - 1) + 1 : sw] += (
                grad_patches[:, :, i, j]
            )
    top, left = pads[0], pads[2]
    grad_x = grad_xp[:, :, top : top + x.shape[2], left : left + x.shape[3]]
    return grad_x, grad_w, grad_z.sum(axis=(0, 2, 3))


def _pool_windows(x, kernel, stride, pads, fill):
    """(N, C, OH, OW, KH, KW) windows of x padded with ``fill``, and a same-shape in-bounds mask."""
    (kh, kw), (sh, sw) = kernel, stride
    top, bottom, left, right = pads
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=fill)
    inside = np.pad(np.ones(x.shape[2:]), ((top, bottom), (left, right)))
    oh = (xp.shape[2] - kh) // sh + 1
    ow = (xp.shape[3] - kw) // sw + 1
    win = np.empty(x.shape[:2] + (oh, ow, kh, kw))
    mask = np.empty((oh, ow, kh, kw))
    for a in range(oh):
        for c in range(ow):
            win[:, :, a, c] = xp[:, :, a * sh : a * sh + kh, c * sw : c * sw + kw]
            mask[a, c] = inside[a * sh : a * sh + kh, c * sw : c * sw + kw]
    return win, mask


def maxpool2d_forward(x, kernel, stride, pads=(0, 0, 0, 0)):
    """y (N, C, OH, OW): the max of each window (padding is -inf)."""
    (x,) = _f64(x)
    win, _ = _pool_windows(x, kernel, stride, pads, -np.inf)
    return win.max(axis=(4, 5))


def maxpool2d_backward(x, grad_y, kernel, stride, pads=(0, 0, 0, 0)):
    """grad_x: each grad_y goes to its window's (first) maximum."""
    x, grad_y = _f64(x, grad_y)
    (kh, kw), (sh, sw) = kernel, stride
    top, _, left, _ = pads
    win, _ = _pool_windows(x, kernel, stride, pads, -np.inf)
    grad_xp = np.zeros((x.shape[0], x.shape[1], x.shape[2] + pads[0] + pads[1], x.shape[3] + pads[2] + pads[3]))
    for n, c, a, b in np.ndindex(grad_y.shape):
        i, j = np.unravel_index(np.argmax(win[n, c, a, b]), (kh, kw))
        grad_xp[n, c, a * sh + i, b * sw + j] += grad_y[n, c, a, b]
    return grad_xp[:, :, top : top + x.shape[2], left : left + x.shape[3]]


def avgpool2d_forward(x, kernel, stride, pads=(0, 0, 0, 0), count_include_pad=True):
    """y (N, C, OH, OW): window sums over the window size (or over its in-bounds count)."""
    (x,) = _f64(x)
    win, mask = _pool_windows(x, kernel, stride, pads, 0.0)
    divisor = kernel[0] * kernel[1] if count_include_pad else mask.sum(axis=(2, 3))
    return win.sum(axis=(4, 5)) / divisor


def avgpool2d_backward(x, grad_y, kernel, stride, pads=(0, 0, 0, 0), count_include_pad=True):
    """grad_x of sum(grad_y * avgpool2d_forward(x))."""
    x, grad_y = _f64(x, grad_y)
    (kh, kw), (sh, sw) = kernel, stride
    top, _, left, _ = pads
    _, mask = _pool_windows(x, kernel, stride, pads, 0.0)
    divisor = kh * kw if count_include_pad else mask.sum(axis=(2, 3))
    share = grad_y / divisor
    grad_xp = np.zeros((x.shape[0], x.shape[1], x.shape[2] + pads[0] + pads[1], x.shape[3] + pads[2] + pads[3]))
    for a in range(grad_y.shape[2]):
        for b in range(grad_y.shape[3]):
            grad_xp[:, :, a * sh : a * sh + kh, b * sw : b * sw + kw] += share[:, :, a, b, None, None]
    return grad_xp[:, :, top : top + x.shape[2], left : left + x.shape[3]]


def global_avgpool_forward(x):
    """y (N, C): the mean over every spatial axis."""
    (x,) = _f64(x)
    return x.reshape(x.shape[0], x.shape[1], -1).mean(axis=2)


def global_avgpool_backward(x_shape, grad_y):
    (grad_y,) = _f64(grad_y)
    spatial = int(np.prod(x_shape[2:]))
    return np.broadcast_to((grad_y / spatial).reshape(grad_y.shape + (1,) * (len(x_shape) - 2)), x_shape).copy()


def embedding_forward(indices, weight):
    """out (*indices.shape, D) = weight[indices]."""
    (weight,) = _f64(weight)
    return weight[np.asarray(indices)]


def embedding_backward(indices, grad_out, vocabulary, padding_idx=None):
    """grad_weight (V, D): np.add.at of grad_out rows at indices; the padding_idx row is zero."""
    (grad_out,) = _f64(grad_out)
    indices = np.asarray(indices).reshape(-1)
    grad = np.zeros((vocabulary, grad_out.shape[-1]))
    np.add.at(grad, indices, grad_out.reshape(indices.size, -1))
    if padding_idx is not None:
        grad[padding_idx] = 0.0
    return grad


def embedding_rows(indices, padding_idx=None):
    """The distinct rows ``indices`` look up, sorted, ``padding_idx`` left out (int64)."""
    rows = np.unique(np.asarray(indices).reshape(-1))
    return rows[rows != padding_idx] if padding_idx is not None else rows


def nchw_to_rows(x):
    """(N, C, *spatial) -> (N * S, C)."""
    (x,) = _f64(x)
    return np.moveaxis(x.reshape(x.shape[0], x.shape[1], -1), 1, 2).reshape(-1, x.shape[1])


__all__ = [
    "avgpool2d_backward",
    "avgpool2d_forward",
    "conv2d_backward",
    "conv2d_forward",
    "conv_gap_backward",
    "conv_gap_forward",
    "conv_maxpool_backward",
    "conv_maxpool_forward",
    "conv_out_size",
    "embedding_backward",
    "embedding_forward",
    "embedding_rows",
    "global_avgpool_backward",
    "global_avgpool_forward",
    "maxpool2d_backward",
    "maxpool2d_forward",
    "nchw_to_rows",
]


def conv_maxpool_forward(x, w, b, stride, pads, dilation, groups, activation, pool_h):
    """maxpool over ``pool_h x 2`` windows at stride (pool_h, 2) of conv2d_forward's y."""
    _, y = conv2d_forward(x, w, b, stride, pads, dilation, groups, activation)
    return maxpool2d_forward(y, (pool_h, 2), (pool_h, 2))


def conv_maxpool_backward(x, w, b, grad_pooled, stride, pads, dilation, groups, activation, pool_h):
    """(grad_x, grad_w, grad_b) of sum(grad_pooled * conv_maxpool_forward(...)), by the layers' chain."""
    _, y = conv2d_forward(x, w, b, stride, pads, dilation, groups, activation)
    grad_y = maxpool2d_backward(y, grad_pooled, (pool_h, 2), (pool_h, 2))
    return conv2d_backward(x, w, b, grad_y, stride, pads, dilation, groups, activation)


def conv_gap_forward(x, w, b, stride, pads, dilation, groups, activation):
    """(N, O): the global average pool of conv2d_forward's y."""
    _, y = conv2d_forward(x, w, b, stride, pads, dilation, groups, activation)
    return global_avgpool_forward(y)


def conv_gap_backward(x, w, b, grad_mean, stride, pads, dilation, groups, activation):
    """(grad_x, grad_w, grad_b) of sum(grad_mean * conv_gap_forward(...)), by the layers' chain."""
    z, _ = conv2d_forward(x, w, b, stride, pads, dilation, groups, activation)
    grad_y = global_avgpool_backward(z.shape, grad_mean)
    return conv2d_backward(x, w, b, grad_y, stride, pads, dilation, groups, activation)
