"""Tools to see inside training: per-layer gradient norms (more in later releases)."""
from __future__ import annotations

import numpy as np


def gradient_norms(model, X, y, *, training: bool = True) -> dict[str, float]:
    """L2 norm of each parameter's gradient ("0.weight" -> norm) for one batch (X, y).

    Runs one forward and backward pass (no update) with the compiled loss; weights unchanged.
    """
    model._require_compiled("gradient_norms")
    X, y = model._check_xy(X, y)
    out = model._forward(X, training)
    grad = np.empty_like(out)
    model.loss.forward_backward(out, y, grad, True)
    model._backward(grad, False)
    return {name: float(np.linalg.norm(g)) for name, _, g in model.named_parameters()}


def layer_gradient_norms(model, X, y, *, training: bool = True) -> list[float]:
    """One number per layer that holds weight matrices, first layer first: the L2 norm of the
    gradients of all its 2-D weights (a Residual's block and projection count as one layer)."""
    gradient_norms(model, X, y, training=training)
    totals: dict[int, float] = {}
    for name, value, grad in model.named_parameters():
        if value.ndim == 2:
            layer = int(name.split(".")[0])
            totals[layer] = totals.get(layer, 0.0) + float(np.dot(grad.ravel(), grad.ravel()))
    return [float(np.sqrt(totals[k])) for k in sorted(totals)]
