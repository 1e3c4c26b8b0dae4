"""fastnn: feed-forward neural networks whose numerical core is Numba.

    import fastnn as fnn
    model = fnn.Sequential([fnn.Dense(64, 128, activation="relu"), fnn.Dense(128, 10)], seed=0)
    model.fit(X, y, loss="cross_entropy", optimizer=fnn.optim.Adam(lr=1e-3), epochs=10)
"""
from . import callbacks, data, init, losses, optim, schedules
from ._config import get_num_threads, set_num_threads
from .layers import (ELU, GELU, SELU, Activation, Dense, Identity, Layer, LeakyReLU, LogSoftmax, ReLU, Sigmoid,
                     Softmax, Tanh)
from .model import Sequential
from .serialization import load_model as load

__version__ = "0.1.0"

__all__ = ["Sequential", "Layer", "Dense", "Activation", "Identity", "Sigmoid", "Tanh", "ReLU", "LeakyReLU",
           "ELU", "SELU", "GELU", "Softmax", "LogSoftmax", "callbacks", "data", "init", "losses", "optim", "schedules",
           "load", "set_num_threads", "get_num_threads", "__version__"]
