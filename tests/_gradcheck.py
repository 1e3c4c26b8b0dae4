"""Central finite differences for gradient checks in tests."""
import numpy as np


def numeric_gradients(objective, params, h=1e-6):
    """d objective(*params) / d each param, by central differences (float64 arrays)."""
    grads = []
    for which, param in enumerate(params):
        numeric = np.empty_like(param)
        for idx in np.ndindex(param.shape):
            plus = [p.copy() for p in params]
            minus = [p.copy() for p in params]
            plus[which][idx] += h
            minus[which][idx] -= h
            numeric[idx] = (objective(*plus) - objective(*minus)) / (2 * h)
        grads.append(numeric)
    return grads
