"""Pooling over (batch, channels, length) or (batch, channels, height, width), PyTorch's
conventions: MaxPool1d/2d, AvgPool1d/2d (``count_include_pad=True`` like torch's default) and
GlobalAvgPool (the mean over all spatial positions: (batch, channels, ...) -> (batch, channels))."""

from __future__ import annotations

import numpy as np

from .. import _validation as V
from ..kernels.conv import conv_output_size
from .base import Layer, normalize_shape, shape_str
from .conv import int_tuple
from .registry import register_layer
from .sequence import check_sequence, sequence_lengths


class _PoolNd(Layer):
    _dims = 2
    _mode = "max"
    input_argument = "input shape"
    attribute_aliases = {"pool_size": "kernel_size", "strides": "stride"}  # Keras

    @property
    def mode(self) -> str:
        """The pooling: "max" or "avg".

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.MaxPool2d(2).mode, fnn.AvgPool1d(3).mode
        ('max', 'avg')
        """
        return self._mode

    @property
    def spatial_dims(self) -> int:
        """Spatial axes of the input: 1 (``MaxPool1d``, ``AvgPool1d``) or 2.

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.MaxPool1d(2).spatial_dims, fnn.AvgPool2d(2).spatial_dims
        (1, 2)
        """
        return self._dims

    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad: bool = True):
        super().__init__()
        n = self._dims
        self.kernel_size = int_tuple(kernel_size, n, "kernel_size", 1)
        self.stride = self.kernel_size if stride is None else int_tuple(stride, n, "stride", 1)
        self.padding = int_tuple(padding, n, "padding", 0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(
                f"padding {self.padding} must be at most half of kernel_size {self.kernel_size} (as in PyTorch)"
            )
        self.count_include_pad = V.check_bool(count_include_pad, "count_include_pad")

    def build(self, input_shape, dtype):
        shape = normalize_shape(input_shape)
        if len(shape) != self._dims + 1:
            raise ValueError(
                f"{self!r} takes input (batch, channels, {'length' if self._dims == 1 else 'height, width'})"
                f", got {shape_str(shape)}"
            )
        out = []
        for axis, (size, k, s, p) in enumerate(zip(shape[1:], self.kernel_size, self.stride, self.padding)):
            if size + 2 * p < k:
                raise ValueError(
                    f"{self!r}: kernel_size {k} is larger than the padded input ({size} + 2 * {p}) on "
                    f"spatial axis {axis}; use a smaller kernel_size or more padding"
                )
            out.append(conv_output_size(size, k, s, p, p))
        super().build(shape, dtype)
        self.output_shape = (shape[0], *out)
        self._in4 = (shape[0], 1, *shape[1:]) if self._dims == 1 else shape
        self._out4 = (shape[0], 1, *out) if self._dims == 1 else self.output_shape
        self._workspace = self.workspace(y=self._out4, grad_x=self._in4)
        if self._mode == "max":
            self._argmax = self.workspace(np.int32, argmax=self._out4)
        return self.output_shape

    def _geometry(self):
        if self._dims == 1:
            return (1, self.kernel_size[0], 1, self.stride[0], 0, self.padding[0])
        return (*self.kernel_size, *self.stride, *self.padding)

    def forward_calls(self, x, ctx):
        m = x.shape[0]
        y = self._workspace(m, ctx.arena)["y"]
        x4 = x.reshape((m, *self._in4))
        if self._mode == "max":
            argmax = self._argmax(m, ctx.arena)["argmax"]
            call = (self.K.maxpool2d_forward, (x4, y, argmax, *self._geometry()))
        else:
            call = (self.K.avgpool2d_forward, (x4, y, *self._geometry(), self.count_include_pad))
        return [call], y.reshape((m, *self.output_shape))

    def backward_calls(self, grad_y, ctx, need_grad_x):
        m = grad_y.shape[0]
        grad_x = self._workspace(m, ctx.arena)["grad_x"]
        g4 = grad_y.reshape((m, *self._out4))
        if self._mode == "max":
            call = (self.K.maxpool2d_backward, (self._argmax(m, ctx.arena)["argmax"], g4, grad_x, *self._geometry()))
        else:
            call = (self.K.avgpool2d_backward, (g4, grad_x, *self._geometry(), self.count_include_pad))
        return [call], grad_x.reshape((m, *self.input_shape))

    def get_config(self):
        one = self._dims == 1
        config = {
            "kernel_size": self.kernel_size[0] if one else list(self.kernel_size),
            "stride": self.stride[0] if one else list(self.stride),
            "padding": self.padding[0] if one else list(self.padding),
        }
        if self._mode == "avg":
            config["count_include_pad"] = self.count_include_pad
        return config

    def extra_repr(self):
        one = self._dims == 1

        def fmt(v):
            return str(v[0]) if one or len(set(v)) == 1 else str(v)

        parts = [f"kernel_size={fmt(self.kernel_size)}"]
        if self.stride != self.kernel_size:
            parts.append(f"stride={fmt(self.stride)}")
        if any(self.padding):
            parts.append(f"padding={fmt(self.padding)}")
        if self._mode == "avg" and not self.count_include_pad:
            parts.append("count_include_pad=False")
        return ", ".join(parts)


@register_layer
class MaxPool2d(_PoolNd):
    """Max over windows of ``(batch, channels, height, width)``, as ``torch.nn.MaxPool2d``;
    padding is -inf (never chosen).

    Parameters
    ----------
    kernel_size : int or tuple of int
        The window (an int or one per spatial axis).
    stride : int or tuple of int, optional
        The step between windows; ``kernel_size`` by default.
    padding : int or tuple of int, default 0
        Implicit padding on both sides of each spatial axis.

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.MaxPool2d(2)], input_shape=(1, 4, 4), seed=0)
    >>> model.predict(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4))
    array([[[[ 5.,  7.],
             [13., 15.]]]], dtype=float32)
    """

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__(kernel_size, stride, padding)


@register_layer
class MaxPool1d(MaxPool2d):
    """Max over windows of ``(batch, channels, length)`` (see :class:`MaxPool2d`).

    Parameters
    ----------
    kernel_size : int or tuple of int
        The window (an int or one per spatial axis).
    stride : int or tuple of int, optional
        The step between windows; ``kernel_size`` by default.
    padding : int or tuple of int, default 0
        Implicit padding on both sides of each spatial axis.

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.MaxPool1d(2)], input_shape=(1, 4), seed=0)
    >>> model.predict(np.array([[[1.0, 3.0, 2.0, 0.0]]], np.float32))
    array([[[3., 2.]]], dtype=float32)
    """

    _dims = 1


@register_layer
class AvgPool2d(_PoolNd):
    """Mean over windows of ``(batch, channels, height, width)``, as ``torch.nn.AvgPool2d``.

    Parameters
    ----------
    kernel_size : int or tuple of int
        The window (an int or one per spatial axis).
    stride : int or tuple of int, optional
        The step between windows; ``kernel_size`` by default.
    padding : int or tuple of int, default 0
        Implicit padding on both sides of each spatial axis.
    count_include_pad : bool, default True
        Count the zero padding in each window's divisor (PyTorch's default).

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.AvgPool2d(2)], input_shape=(1, 2, 2), seed=0)
    >>> model.predict(np.array([[[[1.0, 2.0], [3.0, 6.0]]]], np.float32))
    array([[[[3.]]]], dtype=float32)
    """

    _mode = "avg"


@register_layer
class AvgPool1d(AvgPool2d):
    """Mean over windows of ``(batch, channels, length)`` (see :class:`AvgPool2d`).

    Parameters
    ----------
    kernel_size : int or tuple of int
        The window (an int or one per spatial axis).
    stride : int or tuple of int, optional
        The step between windows; ``kernel_size`` by default.
    padding : int or tuple of int, default 0
        Implicit padding on both sides of each spatial axis.
    count_include_pad : bool, default True
        Count the zero padding in each window's divisor (PyTorch's default).

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.AvgPool1d(2)], input_shape=(1, 4), seed=0)
    >>> model.predict(np.array([[[1.0, 3.0, 2.0, 0.0]]], np.float32))
    array([[[2., 1.]]], dtype=float32)
    """

    _dims = 1


@register_layer
class GlobalAvgPool(Layer):
    """Mean over all positions: ``(batch, channels, *spatial)`` -> ``(batch, channels)`` for one
    or two spatial axes (``torch.nn.AdaptiveAvgPool2d(1)`` followed by a flatten), or over time.

    Parameters
    ----------
    axis : {"spatial", "time"}, default "spatial"
        ``"time"``: the mean over time of sequences, ``(batch, time, features)`` ->
        ``(batch, features)``, over each sample's valid steps when sequence lengths come with
        the input (padded steps get no gradient).

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.GlobalAvgPool()], input_shape=(2, 3, 3), seed=0)
    >>> model.predict(np.ones((4, 2, 3, 3), np.float32)).shape
    (4, 2)
    """

    input_argument = "input shape"

    def __init__(self, axis: str = "spatial"):
        super().__init__()
        self.axis = V.check_choice(axis, ("spatial", "time"), "axis")

    @property
    def lengths_policy(self):
        return "drop" if self.axis == "time" else None

    def build(self, input_shape, dtype):
        shape = normalize_shape(input_shape)
        if self.axis == "time":
            shape = check_sequence(self, shape)
        elif len(shape) not in (2, 3):
            raise ValueError(
                f"{self!r} takes (batch, channels, length) or (batch, channels, height, width), got "
                f"{shape_str(shape)}; for sequences (batch, time, features) use axis='time'"
            )
        super().build(shape, dtype)
        self.output_shape = (shape[-1],) if self.axis == "time" else (shape[0],)
        self._in4 = shape if self.axis == "time" else (shape[0], 1, shape[1]) if len(shape) == 2 else shape
        self._workspace = self.workspace(y=self.output_shape, grad_x=self._in4)
        return self.output_shape

    def forward_calls(self, x, ctx):
        m = x.shape[0]
        y = self._workspace(m, ctx.arena)["y"]
        if self.axis == "time":
            ctx.lengths_arg = sequence_lengths(ctx)
            return [(self.K.time_mean_forward, (x, ctx.lengths_arg, y))], y
        return [(self.K.global_avgpool_forward, (x.reshape((m, *self._in4)), y))], y

    def backward_calls(self, grad_y, ctx, need_grad_x):
        m = grad_y.shape[0]
        grad_x = self._workspace(m, ctx.arena)["grad_x"]
        if self.axis == "time":
            return [(self.K.time_mean_backward, (grad_y, ctx.lengths_arg, grad_x))], grad_x
        return [(self.K.global_avgpool_backward, (grad_y, grad_x))], grad_x.reshape((m, *self.input_shape))

    def get_config(self):
        return {"axis": self.axis}

    def extra_repr(self):
        return "" if self.axis == "spatial" else "axis='time'"
