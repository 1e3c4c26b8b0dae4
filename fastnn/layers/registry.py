"""The one table of layer classes: name -> class, filled by :func:`register_layer`."""

from __future__ import annotations

from .base import Layer

#: the one table of layer classes: class name -> class (saved models name their layers' classes)
LAYERS: dict[str, type[Layer]] = {}


def register_layer(layer_class: type[Layer]) -> type[Layer]:
    """Make a layer class loadable by name from saved models; a class decorator.

    fastnn's own layers are registered the same way.

    Parameters
    ----------
    layer_class : type
        A subclass of :class:`~fastnn.layers.Layer`; its ``__name__`` is the key in :data:`LAYERS`.

    Returns
    -------
    type
        ``layer_class`` itself.

    Raises
    ------
    TypeError
        When ``layer_class`` is not a Layer subclass.

    Examples
    --------
    >>> import fastnn as fnn
    >>> @fnn.register_layer
    ... class Double(fnn.layers.Layer):
    ...     def forward(self, x, training):
    ...         return 2 * x
    ...     def backward(self, grad_y, need_grad_x=True):
    ...         return 2 * grad_y
    >>> fnn.layers.LAYERS["Double"] is Double
    True
    >>> del fnn.layers.LAYERS["Double"]  # (unregistered again)
    """
    if not (isinstance(layer_class, type) and issubclass(layer_class, Layer)):
        raise TypeError(f"register_layer expects a subclass of fastnn.layers.Layer, got {layer_class!r}")
    LAYERS[layer_class.__name__] = layer_class
    return layer_class


__all__ = ["LAYERS", "register_layer"]
