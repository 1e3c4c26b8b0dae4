"""The one table of layer classes: name -> class, filled by :func:`register_layer`."""
from __future__ import annotations

from .base import Layer

LAYERS: dict[str, type[Layer]] = {}


def register_layer(cls: type[Layer]) -> type[Layer]:
    """Make a layer class loadable by name from saved models; use as a class decorator
    (``@fastnn.register_layer``). fastnn's own layers are registered the same way."""
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise TypeError(f"register_layer expects a subclass of fastnn.layers.Layer, got {cls!r}")
    LAYERS[cls.__name__] = cls
    return cls


__all__ = ["LAYERS", "register_layer"]
