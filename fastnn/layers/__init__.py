"""Layers: Dense, activations, Dropout, normalisation, Residual, convolutions, pooling, reshaping,
Embedding. Every class is in one table, :data:`LAYERS`, filled by :func:`register_layer`."""
from .activation import (
    ACTIVATION_LAYERS,
    ELU,
    GELU,
    SELU,
    Activation,
    Identity,
    LeakyReLU,
    LogSoftmax,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
)
from .attention import MultiHeadSelfAttention, PositionalEncoding, TransformerEncoderBlock
from .base import Layer, ParamSpec, Workspace
from .conv import Conv1d, Conv2d
from .dense import Dense
from .dropout import Dropout
from .embedding import Embedding
from .masking import Masking
from .normalization import BatchNorm1d, BatchNorm2d, LayerNorm
from .pooling import AvgPool1d, AvgPool2d, GlobalAvgPool, MaxPool1d, MaxPool2d
from .recurrent import GRU, LSTM, RNN
from .registry import LAYERS, register_layer
from .reshape import Flatten, Reshape
from .residual import Residual
from .sequence import LastStep, TimeDistributed


def layer_to_config(layer: Layer, by_class: bool = False) -> dict:
    """{"class": name, "config": layer.get_config()}; ``by_class`` stores the class object itself
    (for pickling and copies, where a class need not be registered)."""
    entry = {"class": type(layer) if by_class else type(layer).__name__, "config": layer.get_config()}
    if not layer.trainable:
        entry["trainable"] = False
    return entry


def layer_from_config(entry: dict) -> Layer:
    from .._validation import check_choice

    cls = entry["class"]
    if not isinstance(cls, type):
        if cls not in LAYERS:
            raise ValueError(f"Unknown layer class {cls!r}: a custom layer must be registered before loading, with "
                             f"@fastnn.register_layer on its class (known: {', '.join(sorted(LAYERS))})")
        cls = LAYERS[check_choice(cls, LAYERS, "layer class")]
    layer = cls.from_config(entry["config"]) if hasattr(cls, "from_config") else cls(**entry["config"])
    layer.trainable = entry.get("trainable", True)
    return layer


__all__ = [
    "AvgPool1d",
    "AvgPool2d",
    "BatchNorm2d",
    "Conv1d",
    "Conv2d",
    "Embedding",
    "Flatten",
    "GlobalAvgPool",
    "Masking",
    "GRU",
    "LSTM",
    "MaxPool1d",
    "MaxPool2d",
    "Reshape",
    "RNN",
    "ACTIVATION_LAYERS",
    "ELU",
    "GELU",
    "LAYERS",
    "SELU",
    "Activation",
    "BatchNorm1d",
    "Dense",
    "Dropout",
    "Identity",
    "LastStep",
    "MultiHeadSelfAttention",
    "PositionalEncoding",
    "TimeDistributed",
    "TransformerEncoderBlock",
    "Layer",
    "LayerNorm",
    "LeakyReLU",
    "LogSoftmax",
    "ParamSpec",
    "ReLU",
    "Residual",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "Workspace",
    "layer_from_config",
    "layer_to_config",
    "register_layer",
]
