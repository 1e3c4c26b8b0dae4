"""Flatten and Reshape: views of the input with another per-sample shape (no kernel, no copy)."""

from __future__ import annotations

import numpy as np

from .. import _validation as V
from .base import Layer, shape_str, size_of
from .registry import register_layer


def _target_dims(target_shape) -> tuple[int, ...]:
    """``target_shape`` (an int, or a tuple, list or 1-D array of ints) as a tuple of ints; a
    TypeError for anything else (fractional sizes, strings, bools), never a silent conversion."""
    if isinstance(target_shape, np.ndarray) and target_shape.ndim == 1:
        target_shape = target_shape.tolist()
    dims = target_shape if isinstance(target_shape, (tuple, list)) else (target_shape,)
    try:
        return tuple(V.check_int(d, "target_shape") for d in dims)
    except TypeError:
        raise TypeError(f"target_shape must be a tuple of ints, e.g. (16, 4, 4), got {target_shape!r}") from None


@register_layer
class Reshape(Layer):
    """Per-sample reshape ``(batch, *input_shape)`` -> ``(batch, *target_shape)``, a view, like
    Keras ``Reshape``.

    Parameters
    ----------
    target_shape : int or tuple of int
        The per-sample output shape; one entry may be -1 (inferred).

    Raises
    ------
    TypeError
        For sizes that are not integers (e.g. 2.5, a string or a bool).
    ValueError
        For sizes below 1 other than one -1, or when the sizes do not match (at build).

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.Reshape((2, -1))], input_shape=(6,), seed=0)
    >>> model.predict(np.arange(12, dtype=np.float32).reshape(2, 6)).shape
    (2, 2, 3)
    """

    input_argument = "target_shape"

    def __init__(self, target_shape):
        super().__init__()
        target = _target_dims(target_shape)
        if not target or sum(d == -1 for d in target) > 1 or any(d == 0 or d < -1 for d in target):
            raise ValueError(f"target_shape must be positive ints with at most one -1, got {target_shape!r}")
        self.target_shape = target

    def _resolve(self, shape) -> tuple[int, ...]:
        size, known = size_of(shape), -size_of(self.target_shape) if -1 in self.target_shape else None
        if known is not None:
            if size % known:
                raise ValueError(
                    f"{self!r} cannot reshape {shape_str(shape)} ({size} values per sample): {size} is "
                    f"not divisible by {known}"
                )
            return tuple(size // known if d == -1 else d for d in self.target_shape)
        if size_of(self.target_shape) != size:
            raise ValueError(
                f"{self!r} cannot reshape {shape_str(shape)} ({size} values per sample) to "
                f"{shape_str(self.target_shape)} ({size_of(self.target_shape)} values)"
            )
        return self.target_shape

    def build(self, input_shape, dtype):
        shape = super().build(input_shape, dtype)
        self.output_shape = self._resolve(shape)
        return self.output_shape

    def forward_calls(self, x, ctx):
        return [], x.reshape((x.shape[0], *self.output_shape))

    def backward_calls(self, grad_y, ctx, need_grad_x):
        return [], grad_y.reshape((grad_y.shape[0], *self.input_shape))

    def get_config(self):
        return {"target_shape": list(self.target_shape)}

    def extra_repr(self):
        return repr(self.target_shape)


@register_layer
class Flatten(Reshape):
    """``(batch, *shape)`` -> ``(batch, prod(shape))``, like ``torch.nn.Flatten()``; a view.

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.Flatten()], input_shape=(2, 3, 4), seed=0)
    >>> model.predict(np.zeros((5, 2, 3, 4), np.float32)).shape
    (5, 24)
    """

    def __init__(self):
        super().__init__((-1,))

    def get_config(self):
        return {}

    def extra_repr(self):
        return ""


__all__ = ["Flatten", "Reshape"]
