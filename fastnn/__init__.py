"""fastnn: feed-forward neural networks whose numerical core is Numba.

    import fastnn as fnn
    model = fnn.Sequential([fnn.Dense(64, 128, activation="relu"), fnn.Dense(128, 10)], seed=0)
    model.fit(X, y, loss="cross_entropy", optimizer=fnn.optim.Adam(lr=1e-3), epochs=10)
"""
from . import callbacks, data, diagnostics, init, losses, optim, schedules
from ._config import get_num_threads, set_num_threads
from .layers import (
                     ELU,
                     GELU,
                     SELU,
                     Activation,
                     BatchNorm1d,
                     Dense,
                     Dropout,
                     Identity,
                     Layer,
                     LayerNorm,
                     LeakyReLU,
                     LogSoftmax,
                     ReLU,
                     Residual,
                     Sigmoid,
                     Softmax,
                     Tanh,
                     register_layer,
)
from .losses import register_loss
from .model import Sequential
from .serialization import load_model as load

__version__ = "0.1.0"

__all__ = [
                     "ELU",
                     "GELU",
                     "SELU",
                     "Activation",
                     "BatchNorm1d",
                     "Dense",
                     "Dropout",
                     "Identity",
                     "Layer",
                     "LayerNorm",
                     "LeakyReLU",
                     "LogSoftmax",
                     "ReLU",
                     "Residual",
                     "Sequential",
                     "Sigmoid",
                     "Softmax",
                     "Tanh",
                     "__version__",
                     "callbacks",
                     "data",
                     "diagnostics",
                     "get_num_threads",
                     "init",
                     "load",
                     "losses",
                     "optim",
                     "register_layer",
                     "register_loss",
                     "schedules",
                     "set_num_threads",
]
