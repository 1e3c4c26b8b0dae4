"""Cheap input checks used on the hot path of train_step/predict (the boundary's fast path)."""
from __future__ import annotations

from numba import njit

from .._config import JIT


@njit(**JIT)
def all_finite(x):
    """True when the 2-D array ``x`` holds no NaN or infinity (one vectorised pass)."""
    acc = x[0, 0] * 0  # a zero of x's dtype (NaN already if x[0, 0] is not finite)
    for i in range(x.shape[0]):
        row = x[i]
        for j in range(x.shape[1]):
            acc += row[j] - row[j]  # NaN for NaN and +-inf, 0 otherwise
    return acc == 0


@njit(**JIT)
def labels_in_range(y, n_classes):
    """True when every label of the int64 vector ``y`` lies in [0, n_classes)."""
    low = y[0]
    high = y[0]
    for i in range(y.shape[0]):
        low = min(low, y[i])
        high = max(high, y[i])
    return low >= 0 and high < n_classes
