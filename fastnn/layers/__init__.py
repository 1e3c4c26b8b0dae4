"""Layers: Dense, activation layers (and, as they land, Dropout, normalisation, Residual)."""
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
from .base import Layer, ParamSpec, Workspace
from .dense import Dense
from .dropout import Dropout
from .normalization import BatchNorm1d, LayerNorm
from .registry import LAYERS, register_layer
from .residual import Residual

# the classes of these files are registered here until they carry @register_layer themselves
for _cls in (Dense, Dropout, BatchNorm1d, LayerNorm, Residual):
    register_layer(_cls)
del _cls


def layer_to_config(layer: Layer, by_class: bool = False) -> dict:
    """{"class": name, "config": layer.get_config()}; ``by_class`` stores the class object itself
    (for pickling and copies, where a class need not be registered)."""
    return {"class": type(layer) if by_class else type(layer).__name__, "config": layer.get_config()}


def layer_from_config(entry: dict) -> Layer:
    from .._validation import check_choice

    cls = entry["class"]
    if not isinstance(cls, type):
        if cls not in LAYERS:
            raise ValueError(f"Unknown layer class {cls!r}: a custom layer must be registered before loading, with "
                             f"@fastnn.register_layer on its class (known: {', '.join(sorted(LAYERS))})")
        cls = LAYERS[check_choice(cls, LAYERS, "layer class")]
    if hasattr(cls, "from_config"):
        return cls.from_config(entry["config"])
    return cls(**entry["config"])


__all__ = [
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
