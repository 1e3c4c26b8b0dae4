"""Float64 NumPy references for the dropout, batch-norm and layer-norm kernels.

Plain NumPy, no numba, no fastnn. Inputs of any float dtype; computed and returned in float64.
The backward references use the step-by-step chain rule (through mean and variance), not the
closed form the kernels use, so they check the algebra too.
"""

from __future__ import annotations

import numpy as np

from ._reference_core import activation_backward, activation_forward

__all__ = [
    "batchnorm_act_backward",
    "batchnorm_act_forward",
    "batchnorm_backward",
    "batchnorm_forward_eval",
    "batchnorm_forward_train",
    "batchnorm_running_update",
    "dropout_backward",
    "dropout_forward",
    "layernorm_backward",
    "layernorm_forward",
    "unpack_mask",
]


def _f64(a):
    return np.asarray(a, dtype=np.float64)


# ---------------------------------------------------------------------------- dropout


def unpack_mask(mask_bits, features):
    """Boolean keep mask (batch, features) from the kernel's bit mask (batch, ceil(features / 8)) uint8."""
    return np.unpackbits(np.asarray(mask_bits, dtype=np.uint8), axis=1, bitorder="little")[:, :features].astype(bool)


def dropout_forward(x, keep, p):
    """Inverted dropout with a given boolean keep mask: x * keep / (1 - p)."""
    return np.where(keep, _f64(x) / (1.0 - p), 0.0)


def dropout_backward(grad_out, keep, p):
    return np.where(keep, _f64(grad_out) / (1.0 - p), 0.0)


# ---------------------------------------------------------------------------- batch norm


def batchnorm_forward_train(x, gamma, beta, eps):
    """Training batch norm over axis 0: returns (out, x_hat, mean, biased var)."""
    x = _f64(x)
    mean = x.mean(axis=0)
    var = ((x - mean) ** 2).mean(axis=0)
    x_hat = (x - mean) / np.sqrt(var + eps)
    out = x_hat if gamma is None else _f64(gamma) * x_hat + _f64(beta)
    return out, x_hat, mean, var


def batchnorm_running_update(running_mean, running_var, mean, var, batch, momentum):
    """PyTorch's update: (1 - momentum) * running + momentum * stat, with the unbiased variance."""
    new_mean = (1.0 - momentum) * _f64(running_mean) + momentum * _f64(mean)
    new_var = (1.0 - momentum) * _f64(running_var) + momentum * _f64(var) * batch / (batch - 1)
    return new_mean, new_var


def batchnorm_momentum(momentum, batches_tracked):
    """The momentum of PyTorch's running update after ``batches_tracked`` counted batches (this
    one included): ``momentum``, or for ``momentum=None`` the cumulative average 1 / batches_tracked."""
    return 1.0 / batches_tracked if momentum is None else momentum


def batchnorm_forward_eval(x, gamma, beta, running_mean, running_var, eps):
    x_hat = (_f64(x) - _f64(running_mean)) / np.sqrt(_f64(running_var) + eps)
    return x_hat if gamma is None else _f64(gamma) * x_hat + _f64(beta)


def batchnorm_backward_eval(x, grad_out, gamma, running_mean, running_var, eps):
    """Gradients of evaluation-mode batch norm (an affine map per feature): (grad_x, grad_gamma,
    grad_beta); gamma None = not affine."""
    x, g = _f64(x), _f64(grad_out)
    inv = 1.0 / np.sqrt(_f64(running_var) + eps)
    x_hat = (x - _f64(running_mean)) * inv
    grad_x = g * inv if gamma is None else g * _f64(gamma) * inv
    return grad_x, (g * x_hat).sum(axis=0), g.sum(axis=0)


def _norm_backward(x, grad_out, gamma, eps, axis):
    """Chain rule through y = gamma * (x - mean) / sqrt(var + eps) + beta, stats over ``axis``."""
    x, g = _f64(x), _f64(grad_out)
    n = x.shape[axis]
    mean = x.mean(axis=axis, keepdims=True)
    xc = x - mean
    var = (xc**2).mean(axis=axis, keepdims=True)
    inv = 1.0 / np.sqrt(var + eps)
    x_hat = xc * inv
    grad_beta = g.sum(axis=0)  # parameters are per feature in both norms: sums over rows
    grad_gamma = (g * x_hat).sum(axis=0)
    d_xhat = g if gamma is None else g * _f64(gamma)
    d_var = np.sum(d_xhat * xc, axis=axis, keepdims=True) * -0.5 * inv**3
    d_mean = -np.sum(d_xhat * inv, axis=axis, keepdims=True) + d_var * np.mean(-2.0 * xc, axis=axis, keepdims=True)
    grad_x = d_xhat * inv + d_var * 2.0 * xc / n + d_mean / n
    return grad_x, grad_gamma, grad_beta


def batchnorm_backward(x, grad_out, gamma, eps):
    """Training batch norm gradients: (grad_x, grad_gamma, grad_beta); gamma None = not affine."""
    return _norm_backward(x, grad_out, gamma, eps, axis=0)


def batchnorm_act_forward(x, gamma, beta, eps, name, alpha, keep, p):
    """Training batch norm, then activation ``name``, then dropout with the boolean ``keep`` mask
    (None: no dropout): returns (out, x_hat)."""
    z, x_hat, _, _ = batchnorm_forward_train(x, gamma, beta, eps)
    y = activation_forward(name, z, alpha)
    return (y if keep is None else dropout_forward(y, keep, p)), x_hat


def batchnorm_act_backward(x, grad_out, gamma, beta, eps, name, alpha, keep, p):
    """Gradients of :func:`batchnorm_act_forward` by the layers' chain: (grad_x, grad_gamma, grad_beta)."""
    z = batchnorm_forward_train(x, gamma, beta, eps)[0]
    g = grad_out if keep is None else dropout_backward(grad_out, keep, p)
    return batchnorm_backward(x, activation_backward(name, z, g, alpha), gamma, eps)


# ---------------------------------------------------------------------------- layer norm


def layernorm_forward(x, gamma, beta, eps):
    """Layer norm over axis 1 (features of each row): returns (out, x_hat, inv_std per row)."""
    x = _f64(x)
    mean = x.mean(axis=1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=1, keepdims=True)
    inv = 1.0 / np.sqrt(var + eps)
    x_hat = (x - mean) * inv
    out = x_hat if gamma is None else _f64(gamma) * x_hat + _f64(beta)
    return out, x_hat, inv[:, 0]


def layernorm_backward(x, grad_out, gamma, eps):
    """Layer norm gradients: (grad_x, grad_gamma, grad_beta); gamma None = not affine."""
    return _norm_backward(x, grad_out, gamma, eps, axis=1)
