"""Float64 NumPy references for the activation, dense and loss kernels.

Plain, obviously-correct NumPy (and scipy.special.erf): no numba, no fastnn. Every function
takes arrays of any float dtype, computes in float64 and returns float64.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _f64(a):
    return np.asarray(a, dtype=np.float64)


# ---------------------------------------------------------------------------- activations


def softmax(x):
    """Row-wise softmax of x (m, n)."""
    x = _f64(x)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(x):
    """Row-wise log-softmax of x (m, n)."""
    x = _f64(x)
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax_backward(y, grad_y):
    """Jacobian-vector product of softmax rows: J^T g = y * (g - sum(g * y)), y = softmax(x)."""
    y, grad_y = _f64(y), _f64(grad_y)
    return y * (grad_y - (grad_y * y).sum(axis=1, keepdims=True))


def log_softmax_backward(y, grad_y):
    """Jacobian-vector product of log-softmax rows: g - softmax(x) * sum(g), y = log_softmax(x)."""
    y, grad_y = _f64(y), _f64(grad_y)
    return grad_y - np.exp(y) * grad_y.sum(axis=1, keepdims=True)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _gelu_tanh_inner(x):
    return np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)


_ELEMENTWISE = {
    # name: (f(x, alpha), f'(x, alpha))
    "identity": (lambda x, a: x.copy(), lambda x, a: np.ones_like(x)),
    "sigmoid": (lambda x, a: _sigmoid(x), lambda x, a: _sigmoid(x) * (1.0 - _sigmoid(x))),
    "tanh": (lambda x, a: np.tanh(x), lambda x, a: 1.0 - np.tanh(x) ** 2),
    "relu": (lambda x, a: np.maximum(x, 0.0), lambda x, a: (x > 0).astype(np.float64)),
    "leaky_relu": (lambda x, a: np.where(x > 0, x, a * x), lambda x, a: np.where(x > 0, 1.0, a)),
    "elu": (
        lambda x, a: np.where(x > 0, x, a * np.expm1(np.minimum(x, 0.0))),
        lambda x, a: np.where(x > 0, 1.0, a * np.exp(np.minimum(x, 0.0))),
    ),
    "selu": (
        lambda x, a: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0.0))),
        lambda x, a: SELU_SCALE * np.where(x > 0, 1.0, SELU_ALPHA * np.exp(np.minimum(x, 0.0))),
    ),
    "gelu": (
        lambda x, a: 0.5 * x * (1.0 + erf(x / np.sqrt(2.0))),
        lambda x, a: 0.5 * (1.0 + erf(x / np.sqrt(2.0))) + x * np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi),
    ),
    "gelu_tanh": (
        lambda x, a: 0.5 * x * (1.0 + np.tanh(_gelu_tanh_inner(x))),
        lambda x, a: (
            0.5 * (1.0 + np.tanh(_gelu_tanh_inner(x)))
            + 0.5 * x * (1.0 - np.tanh(_gelu_tanh_inner(x)) ** 2) * np.sqrt(2.0 / np.pi) * (1.0 + 3 * 0.044715 * x * x)
        ),
    ),
}
_ROWWISE = {
    "softmax": (softmax, softmax_backward),
    "log_softmax": (log_softmax, log_softmax_backward),
}
#: names of every activation the references know
ACTIVATION_NAMES = tuple(_ELEMENTWISE) + tuple(_ROWWISE)


def activation_forward(name, x, alpha=0.0):
    """y = f(x) for the activation ``name`` (x of shape (m, n)); alpha: leaky_relu slope / elu alpha."""
    x = _f64(x)
    if name in _ROWWISE:
        return _ROWWISE[name][0](x)
    return _ELEMENTWISE[name][0](x, alpha)


def activation_derivative(name, x, alpha=0.0):
    """Elementwise f'(x) (elementwise activations only)."""
    return _ELEMENTWISE[name][1](_f64(x), alpha)


def activation_backward(name, x, grad_y, alpha=0.0):
    """grad_x = J_f(x)^T grad_y (the full Jacobian-vector product for softmax/log_softmax rows)."""
    x, grad_y = _f64(x), _f64(grad_y)
    if name in _ROWWISE:
        forward, backward = _ROWWISE[name]
        return backward(forward(x), grad_y)
    return grad_y * _ELEMENTWISE[name][1](x, alpha)


# ---------------------------------------------------------------------------- dense


def dense_forward(x, w, b, activation="identity", alpha=0.0):
    """z = x @ w + b, y = f(z); x (m, k), w (k, n), b (n,). Returns (z, y)."""
    z = _f64(x) @ _f64(w) + _f64(b)
    return z, activation_forward(activation, z, alpha)


def dense_backward(x, w, b, grad_y, activation="identity", alpha=0.0):
    """Gradients of sum(grad_y * y) for the dense layer: returns (grad_x, grad_w, grad_b)."""
    x, w = _f64(x), _f64(w)
    z, _ = dense_forward(x, w, b, activation, alpha)
    grad_z = activation_backward(activation, z, grad_y, alpha)
    return grad_z @ w.T, x.T @ grad_z, grad_z.sum(axis=0)


# ---------------------------------------------------------------------------- losses


def cross_entropy(logits, labels, reduction="mean"):
    """Softmax cross-entropy from logits (m, c) and int labels (m,): returns (loss, d loss / d logits)."""
    logits = _f64(logits)
    labels = np.asarray(labels, dtype=np.int64)
    m = logits.shape[0]
    rows = np.arange(m)
    losses = -log_softmax(logits)[rows, labels]
    grad = softmax(logits)
    grad[rows, labels] -= 1.0
    if reduction == "mean":
        return losses.sum() / m, grad / m
    return losses.sum(), grad


def _elementwise_loss(value, derivative, pred, target, reduction):
    pred, target = _f64(pred), _f64(target)
    values, grad = value(pred, target), derivative(pred, target)
    if reduction == "mean":
        return values.sum() / pred.size, grad / pred.size
    return values.sum(), grad


def mse(pred, target, reduction="mean"):
    """Squared error sum((p - t)^2) (/ p.size for mean): returns (loss, gradient)."""
    return _elementwise_loss(lambda p, t: (p - t) ** 2, lambda p, t: 2.0 * (p - t), pred, target, reduction)


def mae(pred, target, reduction="mean"):
    """Absolute error; gradient sign(p - t) with sign(0) = 0 (as torch)."""
    return _elementwise_loss(lambda p, t: np.abs(p - t), lambda p, t: np.sign(p - t), pred, target, reduction)


def huber(pred, target, reduction="mean", delta=1.0):
    """torch.nn.HuberLoss: 0.5 d^2 if |d| < delta else delta (|d| - delta / 2); gradient clip(d, -delta, delta)."""

    def value(p, t):
        d = np.abs(p - t)
        return np.where(d < delta, 0.5 * d * d, delta * (d - 0.5 * delta))

    return _elementwise_loss(value, lambda p, t: np.clip(p - t, -delta, delta), pred, target, reduction)


def binary_cross_entropy(logits, target, reduction="mean"):
    """Binary cross-entropy from logits: max(z, 0) - z t + log1p(exp(-|z|)); gradient sigmoid(z) - t."""
    return _elementwise_loss(
        lambda z, t: np.maximum(z, 0.0) - z * t + np.log1p(np.exp(-np.abs(z))),
        lambda z, t: _sigmoid(z) - t,
        logits,
        target,
        reduction,
    )


#: loss name (as in fastnn.kernels.losses.LOSSES) -> reference(pred, target, reduction) -> (loss, grad)
LOSS_REFERENCES = {
    "mse": mse,
    "mae": mae,
    "huber": huber,
    "binary_cross_entropy": binary_cross_entropy,
    "cross_entropy": cross_entropy,
}


def weighted_loss(name, pred, target, weights, reduction="mean", delta=1.0):
    """Loss ``name`` with a weight per sample: (loss, gradient). "mean": sum_i w_i l_i / sum_i w_i,
    l_i the sample's loss (over its k outputs / k for elementwise losses), 0 when every weight is 0;
    "sum": sum_i w_i l_i (l_i summed over the k outputs)."""
    pred, weights = _f64(pred), _f64(weights)
    m = pred.shape[0]
    rows, grads = np.empty(m), np.empty_like(pred)
    for i in range(m):
        if name == "huber":
            rows[i], grads[i] = huber(pred[i : i + 1], target[i : i + 1], "sum", delta)
        else:
            rows[i], grads[i] = LOSS_REFERENCES[name](pred[i : i + 1], target[i : i + 1], "sum")
    per_sample = 1 if name == "cross_entropy" else pred.shape[1]
    divisor = weights.sum() * per_sample if reduction == "mean" else 1.0
    if divisor == 0:
        return 0.0, np.zeros_like(pred)
    return float(rows @ weights) / divisor, grads * weights[:, None] / divisor


def masked_loss(name, pred, target, valid, reduction="mean", delta=1.0):
    """Loss ``name`` over the rows where ``valid`` (bool (m,)) only, Keras' masked loss: (loss, gradient).
    "mean": the sum over valid rows / their number (times k for elementwise losses), 0 without a
    valid row; "sum": the sum over valid rows. Rows that are not valid get a zero gradient."""
    pred, valid = _f64(pred), np.asarray(valid, bool)
    grad = np.zeros_like(pred)
    if not valid.any():
        return 0.0, grad
    args = (delta,) if name == "huber" else ()
    value, grad[valid] = LOSS_REFERENCES[name](pred[valid], np.asarray(target)[valid], "sum", *args)
    if reduction == "sum":
        return value, grad
    count = valid.sum() * (1 if name == "cross_entropy" else pred.shape[1])
    return value / count, grad / count


def dense_chain_step(x, ws, bs, activations, alphas, target, loss="cross_entropy", reduction="mean"):
    """A chain of dense layers and its loss (a ``LOSS_REFERENCES`` name): returns (loss, [grad_w],
    [grad_b], [z], [y]), the gradients of the loss by the layers' chain rule, in layer order."""
    inputs, zs, ys = [], [], []
    h = _f64(x)
    for w, b, name, alpha in zip(ws, bs, activations, alphas):
        inputs.append(h)
        z, h = dense_forward(h, w, b, name, alpha)
        zs.append(z)
        ys.append(h)
    value, grad = LOSS_REFERENCES[loss](h, target, reduction)
    grad_ws, grad_bs = [], []
    for inp, w, b, name, alpha in reversed(list(zip(inputs, ws, bs, activations, alphas))):
        grad, grad_w, grad_b = dense_backward(inp, w, b, grad, name, alpha)
        grad_ws.insert(0, grad_w)
        grad_bs.insert(0, grad_b)
    return value, grad_ws, grad_bs, zs, ys


def accuracy_count(logits, labels):
    """Rows whose argmax (first maximum) equals the label."""
    return int((np.argmax(_f64(logits), axis=1) == np.asarray(labels)).sum())


def binary_accuracy_count(logits, targets):
    """Rows where (logit > 0) equals (target > 0.5) in every column (multi-label exact match)."""
    return int(((_f64(logits) > 0) == (_f64(targets) > 0.5)).all(axis=1).sum())


def add(a, b):
    """a + b in float64 (the residual sum)."""
    return _f64(a) + _f64(b)


def matmul(a, b, trans_a=False):
    """op(a) @ b in float64, op(a) = a.T when ``trans_a`` (the register-blocked GEMM's product)."""
    a = _f64(a)
    return (a.T if trans_a else a) @ _f64(b)


def sequence_lengths(x, mask_value) -> np.ndarray:
    """Valid leading steps per sample: one past the last step of x (batch, time, ...) whose values
    are not all mask_value (0 when every step is padding)."""
    steps = np.asarray(x).reshape(x.shape[0], x.shape[1], -1)
    valid = (steps != mask_value).any(axis=2)
    last = x.shape[1] - np.argmax(valid[:, ::-1], axis=1)
    return np.where(valid.any(axis=1), last, 0).astype(np.int64)


__all__ = [
    "ACTIVATION_NAMES",
    "add",
    "LOSS_REFERENCES",
    "accuracy_count",
    "activation_backward",
    "activation_derivative",
    "activation_forward",
    "binary_accuracy_count",
    "binary_cross_entropy",
    "cross_entropy",
    "dense_backward",
    "dense_chain_step",
    "dense_forward",
    "huber",
    "log_softmax",
    "log_softmax_backward",
    "mae",
    "masked_loss",
    "matmul",
    "mse",
    "sequence_lengths",
    "softmax",
    "softmax_backward",
]
