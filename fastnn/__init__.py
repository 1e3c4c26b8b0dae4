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
    AvgPool1d,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv1d,
    Conv2d,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    GlobalAvgPool,
    Identity,
    Layer,
    LayerNorm,
    LeakyReLU,
    LogSoftmax,
    MaxPool1d,
    MaxPool2d,
    ReLU,
    Reshape,
    Residual,
    Sigmoid,
    Softmax,
    Tanh,
    register_layer,
)
from .losses import register_loss
from .model import Sequential, load

__version__ = "0.1.0"

__all__ = [
    "Activation",
    "AvgPool1d",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv1d",
    "Conv2d",
    "Dense",
    "Dropout",
    "ELU",
    "Embedding",
    "Flatten",
    "GELU",
    "GlobalAvgPool",
    "Identity",
    "Layer",
    "LayerNorm",
    "LeakyReLU",
    "LogSoftmax",
    "MaxPool1d",
    "MaxPool2d",
    "ReLU",
    "Reshape",
    "Residual",
    "SELU",
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
