"""Layers: Dense, activations, Dropout, normalisation, Residual, convolutions, pooling, reshaping,
Embedding. Every class is in one table, :data:`LAYERS`, filled by :func:`register_layer`."""

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from .activation import (
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
from .base import ARENAS, Context, Layer, ParamSpec, Workspace
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

#: whether :func:`layer_to_config` stores classes rather than names: True while a copy's
#: description is made (``layer_to_config(layer, by_class=True)``), so that a container's
#: ``get_config`` (Residual, TimeDistributed, a user's container calling ``layer_to_config`` on its
#: children) describes the layers inside it by class too, at any depth
_BY_CLASS: ContextVar[bool] = ContextVar("fastnn_layer_config_by_class", default=False)


#: layer classes by name that :func:`layer_from_config` takes before the registry, while a copy of a
#: model is made (:func:`using_layer_classes`): the model's own classes, registered or not
_IN_USE: ContextVar[Mapping[str, type] | None] = ContextVar("fastnn_layer_classes_in_use", default=None)


@contextlib.contextmanager
def using_layer_classes(classes: Mapping[str, type]) -> Iterator[None]:
    """Resolve these layer class names to these classes first in :func:`layer_from_config`, meanwhile.

    A copy of a model (``copy.deepcopy``, pickle) rebuilds its layers from their descriptions;
    a user's container whose ``get_config`` names its children's classes itself (instead of
    calling :func:`layer_to_config`) names them by ``__name__``, and the copy resolves those names
    to the classes the model holds, registered or not.

    Parameters
    ----------
    classes : mapping of str to type
        ``{name: layer class}``, taken before :data:`LAYERS` (the names not in it: as registered).

    Yields
    ------
    None
        Inside the ``with`` block, :func:`layer_from_config` resolves the names.

    Examples
    --------
    >>> import fastnn as fnn
    >>> class Twice(fnn.layers.Identity):
    ...     pass
    >>> with fnn.layers.using_layer_classes({"Twice": Twice}):
    ...     layer = fnn.layers.layer_from_config({"class": "Twice", "config": {}})
    >>> type(layer) is Twice
    True
    """
    outer = _IN_USE.get()
    token = _IN_USE.set({**(outer or {}), **classes})
    try:
        yield
    finally:
        _IN_USE.reset(token)


def layer_to_config(layer: Layer, by_class: bool | None = None) -> dict:
    """A layer's description, as a saved model stores it.

    Parameters
    ----------
    layer : Layer
        Any layer.
    by_class : bool, optional
        Store the class object itself instead of its name (pickling and copies, where a class
        need not be registered), for this layer and the layers inside it (the
        ``layer_to_config`` calls of a container's ``get_config``). Default: as the description
        this call is part of (by name at the top).

    Returns
    -------
    dict
        ``{"class": name or class, "config": layer.get_config()}``, plus ``"trainable": False``
        for a frozen layer.

    Examples
    --------
    >>> import fastnn as fnn
    >>> fnn.layers.layer_to_config(fnn.Dense(4, 2, activation="relu"))["class"]
    'Dense'
    """
    if by_class is None:
        by_class = _BY_CLASS.get()
    token = _BY_CLASS.set(bool(by_class))
    try:
        config = layer.get_config()
    finally:
        _BY_CLASS.reset(token)
    entry: dict[str, Any] = {"class": type(layer) if by_class else type(layer).__name__, "config": config}
    if not layer.trainable:
        entry["trainable"] = False
    return entry


def layer_from_config(entry: dict) -> Layer:
    """A new layer from :func:`layer_to_config`'s description.

    Parameters
    ----------
    entry : dict
        ``{"class": name or class, "config": {...}}``.

    Returns
    -------
    Layer
        A new, unbuilt layer.

    Raises
    ------
    ValueError
        When the class name is not registered (:func:`register_layer`) or ``entry`` is not such a
        description.
    TypeError
        When the config misses or has an unknown argument of the class (the message names both).

    Examples
    --------
    >>> import fastnn as fnn
    >>> fnn.layers.layer_from_config({"class": "Dropout", "config": {"p": 0.25}})
    Dropout(p=0.25)
    """
    from .._validation import check_choice

    if not isinstance(entry, dict) or "class" not in entry or not isinstance(entry.get("config", {}), dict):
        raise ValueError(
            f"a layer config must be a dict {{'class': name, 'config': {{...}}}} (layer_to_config's), got {entry!r:.200}"
        )
    cls = entry["class"]
    in_use = _IN_USE.get()
    if not isinstance(cls, type) and in_use and isinstance(cls, str) and isinstance(in_use.get(cls), type):
        cls = in_use[cls]  # (a copy's: the class the model holds by that name)
    if not isinstance(cls, type):
        if cls not in LAYERS:
            raise ValueError(
                f"Unknown layer class {cls!r}: a custom layer must be registered before loading, with "
                f"@fastnn.register_layer on its class (known: {', '.join(sorted(LAYERS))})"
            )
        cls = LAYERS[check_choice(cls, LAYERS, "layer class")]
    config = entry.get("config", {})
    try:
        layer = cls.from_config(config) if hasattr(cls, "from_config") else cls(**config)
    except TypeError as exc:  # a missing or unknown argument: name the layer's config
        raise TypeError(f"the config {config!r:.200} does not make a {cls.__name__}: {exc}") from None
    layer.trainable = entry.get("trainable", True)
    return layer


__all__ = [
    "ARENAS",
    "Context",
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
    "using_layer_classes",
]
