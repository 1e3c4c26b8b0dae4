"""Plain float64 NumPy references of the optimizer updates and gradient clipping.

Each ``*_step_reference`` takes the parameters ``p`` and gradient ``g`` (1-D float64), a dict
``state`` of float64 buffers (created on the first call and updated in place), the 1-based
step number ``t``, the decayed prefix length ``n_decay`` and the hyper-parameters, and returns
the new parameters. Formulas follow torch.optim (and the Lion paper), written for clarity.
"""

from __future__ import annotations

import numpy as np


def _decay_vector(size: int, n_decay: int, weight_decay: float) -> np.ndarray:
    wd = np.zeros(size)
    wd[:n_decay] = weight_decay
    return wd


def sgd_step_reference(p, g, state, t, n_decay, *, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    g = g + _decay_vector(p.size, n_decay, weight_decay) * p
    if momentum != 0:
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = g.copy()
        else:
            state["momentum_buffer"] = momentum * state["momentum_buffer"] + (1 - dampening) * g
        buf = state["momentum_buffer"]
        g = g + momentum * buf if nesterov else buf
    return p - lr * g


def rmsprop_step_reference(
    p, g, state, t, n_decay, *, lr, alpha=0.99, eps=1e-8, momentum=0.0, centered=False, weight_decay=0.0
):
    g = g + _decay_vector(p.size, n_decay, weight_decay) * p
    sq = state["square_avg"] = alpha * state.get("square_avg", np.zeros_like(p)) + (1 - alpha) * g * g
    if centered:
        ga = state["grad_avg"] = alpha * state.get("grad_avg", np.zeros_like(p)) + (1 - alpha) * g
        avg = np.sqrt(sq - ga * ga) + eps
    else:
        avg = np.sqrt(sq) + eps
    if momentum > 0:
        buf = state["momentum_buffer"] = momentum * state.get("momentum_buffer", np.zeros_like(p)) + g / avg
        return p - lr * buf
    return p - lr * g / avg


def adagrad_step_reference(
    p, g, state, t, n_decay, *, lr, lr_decay=0.0, initial_accumulator_value=0.0, eps=1e-10, weight_decay=0.0
):
    g = g + _decay_vector(p.size, n_decay, weight_decay) * p
    s = state.get("state_sum", np.full_like(p, initial_accumulator_value)) + g * g
    state["state_sum"] = s
    clr = lr / (1 + (t - 1) * lr_decay)
    return p - clr * g / (np.sqrt(s) + eps)


def adam_step_reference(
    p, g, state, t, n_decay, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled=False
):
    beta1, beta2 = betas
    wd = _decay_vector(p.size, n_decay, weight_decay)
    if decoupled:
        p = p * (1 - lr * wd)
    else:
        g = g + wd * p
    m = state["exp_avg"] = beta1 * state.get("exp_avg", np.zeros_like(p)) + (1 - beta1) * g
    v = state["exp_avg_sq"] = beta2 * state.get("exp_avg_sq", np.zeros_like(p)) + (1 - beta2) * g * g
    if amsgrad:
        v = state["max_exp_avg_sq"] = np.maximum(state.get("max_exp_avg_sq", np.zeros_like(p)), v)
    m_hat = m / (1 - beta1**t)
    v_hat = v / (1 - beta2**t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps)


def sparse_adam_rows_reference(p, g, state, t, rows, *, lr, betas=(0.9, 0.999), eps=1e-8):
    """torch.optim.SparseAdam on a (V, D) table whose rows ``rows`` were looked up: only those
    rows' moments and parameters change, bias-corrected with the step number ``t``."""
    beta1, beta2 = betas
    p = p.copy()
    m = state.setdefault("exp_avg", np.zeros_like(p))
    v = state.setdefault("exp_avg_sq", np.zeros_like(p))
    m[rows] = beta1 * m[rows] + (1 - beta1) * g[rows]
    v[rows] = beta2 * v[rows] + (1 - beta2) * g[rows] ** 2
    step_size = lr * np.sqrt(1 - beta2**t) / (1 - beta1**t)
    p[rows] -= step_size * m[rows] / (np.sqrt(v[rows]) + eps)
    return p


def adamw_step_reference(
    p, g, state, t, n_decay, *, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False
):
    return adam_step_reference(
        p, g, state, t, n_decay, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, decoupled=True
    )


def lion_step_reference(p, g, state, t, n_decay, *, lr, betas=(0.9, 0.99), weight_decay=0.0):
    beta1, beta2 = betas
    m = state.get("exp_avg", np.zeros_like(p))
    p = p * (1 - lr * _decay_vector(p.size, n_decay, weight_decay))
    p = p - lr * np.sign(beta1 * m + (1 - beta1) * g)
    state["exp_avg"] = beta2 * m + (1 - beta2) * g
    return p


def accumulated_gradient_reference(grad_seq, weights, divisor) -> np.ndarray:
    """The gradient of an accumulated group: ``sum_i weights[i] * grad_seq[i] / divisor`` in
    float64 (a mean loss: weights the batches' sample counts, divisor their sum; a sum: all 1)."""
    total = sum(w * np.asarray(g, np.float64) for w, g in zip(weights, grad_seq))
    return total / divisor


def grad_norm_reference(g) -> float:
    return float(np.sqrt(np.sum(np.asarray(g, np.float64) ** 2)))


def clip_norm_scale_reference(norm: float, max_norm: float) -> float:
    """The factor torch.nn.utils.clip_grad_norm_ multiplies the gradients by."""
    return min(1.0, max_norm / (norm + 1e-6))


OPTIMIZER_STEP_REFERENCES = {
    "sgd": sgd_step_reference,
    "rmsprop": rmsprop_step_reference,
    "adagrad": adagrad_step_reference,
    "adam": adam_step_reference,
    "adamw": adamw_step_reference,
    "lion": lion_step_reference,
}


def optimizer_trajectory_reference(name, p0, grad_seq, n_decay, hyper, *, clip_norm=None, clip_value=None):
    """Parameters after each step of optimizer ``name`` fed ``grad_seq``; also the pre-clip norms."""
    step = OPTIMIZER_STEP_REFERENCES[name]
    p = np.asarray(p0, np.float64).copy()
    state: dict = {}
    path, norms = [], []
    for t, g in enumerate(grad_seq, start=1):
        g = np.asarray(g, np.float64)
        if clip_norm is not None:
            norm = grad_norm_reference(g)
            norms.append(norm)
            g = g * clip_norm_scale_reference(norm, clip_norm)
        if clip_value is not None:
            g = np.clip(g, -clip_value, clip_value)
        p = step(p, g, state, t, n_decay, **hyper)
        path.append(p.copy())
    return path, norms
