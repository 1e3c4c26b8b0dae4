"""Float64 NumPy references of every kernel, gathered from the per-topic modules.

Tests compare each fastnn kernel (float32 and float64) against these plain formulas.
"""
from ._reference_core import *  # noqa: F401,F403  activations, dense, losses
from ._reference_norm import *  # noqa: F401,F403  dropout, batch norm, layer norm
from ._reference_optim import *  # noqa: F401,F403  optimizers, clipping
