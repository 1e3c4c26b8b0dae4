"""Convolutions (Conv1d, Conv2d) with PyTorch's layout and a fused bias and activation.

Input (batch, channels, length) or (batch, channels, height, width); weight (out_channels,
in_channels // groups, *kernel), bias (out_channels,), as ``torch.nn.Conv1d/Conv2d``, so weights
move over directly. Both run the kernels of :mod:`fastnn.kernels.conv` (im2col + GEMMs on
fastnn's BLAS); a 1-D convolution is the 2-D one over a height of 1.
"""

from __future__ import annotations

import math

from .. import _validation as V
from ..kernels.activations import ACTIVATIONS, IDENTITY, RELU, SIGMOID, TANH
from ..kernels.conv import conv2d_scratch_shapes, conv_output_size
from .base import Layer, WeightAndBias, non_default_arguments, normalize_shape, shape_str
from .registry import register_layer

#: activations whose derivative the backward takes from y = f(z) alone (relu: z > 0 iff y > 0):
#: the layer keeps one array, y, and the kernels store f(z) once (measured at 1 thread: the forward
#: sweep of LeNet's first conv at batch 64, 42-43 -> 31-34 us; the others within the noise)
_Y_ONLY_CODES = (IDENTITY, RELU, SIGMOID, TANH)


def int_tuple(value, n: int, argument: str, minimum: int) -> tuple[int, ...]:
    """An int or an n-tuple of ints >= minimum as an n-tuple."""
    if isinstance(value, (tuple, list)):
        if len(value) != n:
            raise ValueError(f"{argument} must be an int or a tuple of {n} ints, got {value!r}")
        return tuple(V.check_int(v, argument, minimum=minimum) for v in value)
    return (V.check_int(value, argument, minimum=minimum),) * n


class _ConvNd(WeightAndBias, Layer):
    """Shared parts of Conv1d and Conv2d; ``_dims`` spatial axes (1 or 2)."""

    _dims = 2
    input_argument = "in_channels"
    attribute_aliases = {  # Keras
        "filters": "out_channels",
        "strides": "stride",
        "dilation_rate": "dilation",
        "kernel": "weight",
        "kernel_initializer": "init",
        "bias_initializer": "bias_init",
    }
    #: False: softmax and log_softmax, which normalise rows, are refused (the activation is fused
    #: per output element)
    rowwise_activation = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        activation=None,
        *,
        init: str | None = None,
        bias_init: str = "zeros",
        **activation_params,
    ):
        super().__init__()
        n = self._dims
        self.in_channels = V.check_int(in_channels, "in_channels", minimum=1)
        self.out_channels = V.check_int(out_channels, "out_channels", minimum=1)
        self.kernel_size = int_tuple(kernel_size, n, "kernel_size", 1)
        self.stride = int_tuple(stride, n, "stride", 1)
        self.dilation = int_tuple(dilation, n, "dilation", 1)
        self.groups = V.check_int(groups, "groups", minimum=1)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"in_channels ({self.in_channels}) and out_channels ({self.out_channels}) must both be "
                f"divisible by groups ({self.groups}); e.g. groups={math.gcd(self.in_channels, self.out_channels)}"
                f" (groups=in_channels=out_channels is a depthwise convolution)"
            )
        self.padding: str | tuple[int, ...]
        if isinstance(padding, str):
            self.padding = V.check_choice(padding, ("same", "valid"), "padding")
            if self.padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError(
                    "padding='same' needs stride 1 (as in PyTorch); pass explicit padding for strided convolutions"
                )
        else:
            self.padding = int_tuple(padding, n, "padding", 0)
        self._weight_bias_options(activation, activation_params, init, bias_init, bias)

    def expected_input_shape(self):
        return None  # the spatial size comes from the data (or the model's input_shape)

    def pads(self) -> list[tuple[int, int]]:
        """The zero padding of each spatial axis ("same" and "valid" resolved).

        Returns
        -------
        list of (int, int)
            (low, high) padding per spatial axis.

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.Conv2d(1, 4, 3, padding="same").pads(), fnn.Conv1d(1, 4, 4, padding="same").pads()
        ([(1, 1), (1, 1)], [(1, 2)])
        >>> fnn.Conv1d(1, 4, 3, padding="valid").pads()
        [(0, 0)]
        """
        if not isinstance(self.padding, str):
            return [(p, p) for p in self.padding]
        if self.padding == "valid":
            return [(0, 0)] * self._dims
        total = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]  # "same"
        return [(t // 2, t - t // 2) for t in total]

    def build(self, input_shape, dtype):
        shape = normalize_shape(input_shape)
        if len(shape) != self._dims + 1:
            raise ValueError(
                f"{self!r} takes input (batch, channels, {'length' if self._dims == 1 else 'height, width'})"
                f", got {shape_str(shape)}; "
                + (
                    "use Reshape((channels, length)) first"
                    if self._dims == 1
                    else "use Reshape((channels, height, width)) first"
                )
            )
        if shape[0] != self.in_channels:
            raise ValueError(
                f"{self!r} expects {self.in_channels} input channels but receives {shape_str(shape)} "
                f"(channels first, like PyTorch); set in_channels to {shape[0]}"
            )
        spatial = shape[1:]
        out = []
        for axis, (size, k, s, d, (lo, hi)) in enumerate(
            zip(spatial, self.kernel_size, self.stride, self.dilation, self.pads())
        ):
            if size + lo + hi < d * (k - 1) + 1:
                raise ValueError(
                    f"{self!r}: the kernel (extent {d * (k - 1) + 1} with dilation) is larger than the "
                    f"padded input ({size} + padding {lo + hi}) on spatial axis {axis}; use a smaller "
                    f"kernel_size or more padding"
                )
            out.append(conv_output_size(size, k, s, lo, hi, d))
        super().build(shape, dtype)
        self.output_shape = (self.out_channels, *out)
        self._in4 = (shape[0], 1, *spatial) if self._dims == 1 else shape
        self._out4 = (self.out_channels, 1, *out) if self._dims == 1 else self.output_shape
        extra = {} if self.code in _Y_ONLY_CODES else {"y": self._out4}
        self._workspace = self.workspace(z=self._out4, **extra)
        self._grad_x = self.workspace(grad_x=self._in4)
        self._scratch: dict = {}
        if not self.use_bias:
            self.bias, self.grad_bias = self.zeros(self.out_channels), self.zeros(self.out_channels)
        return self.output_shape

    def _fans(self) -> tuple[int, int]:
        receptive = math.prod(self.kernel_size)
        return self.in_channels // self.groups * receptive, self.out_channels * receptive  # as torch computes them

    def parameter_specs(self):
        fan_in, fan_out = self._fans()
        shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        return self._weight_bias_specs(shape, fan_in, fan_out, self.out_channels)

    def _w4(self, w):
        return w.reshape((w.shape[0], w.shape[1], 1, w.shape[2])) if self._dims == 1 else w

    def _scratch_for(self, batch: int, arena: str):
        """(col, zcol, partial_b) scratch of the kernel calls at this batch size in this arena. In
        the "train" arena col carries the forward's im2col to the backward of the same step (as
        the workspace carries z and y), so the backward skips recomputing it; zcol and partial_b
        do not outlive a call."""
        key = (arena, batch)
        scratch = self._scratch.get(key)
        if scratch is None:
            c, kh_kw, o = self.in_channels, self._w4_kernel(), self.out_channels
            shapes = conv2d_scratch_shapes(batch, c, o, kh_kw[0], kh_kw[1], self._out4[1], self._out4[2])
            scratch = self._scratch[key] = tuple(self.zeros(s) for s in shapes)
        return scratch

    def _w4_kernel(self) -> tuple[int, ...]:
        return (1, self.kernel_size[0]) if self._dims == 1 else self.kernel_size

    def _geometry(self):
        pads = self.pads()
        if self._dims == 1:
            return (1, self.stride[0], 0, pads[0][0], 1, self.dilation[0])
        return (self.stride[0], self.stride[1], pads[0][0], pads[1][0], self.dilation[0], self.dilation[1])

    def forward_calls(self, x, ctx):
        m = x.shape[0]
        ws = self._workspace(m, ctx.arena)
        z = ws["z"]
        y = ws.get("y", z)
        ctx.x = x.reshape((m, *self._in4))
        col, zcol, _ = self._scratch_for(m, ctx.arena)
        args = (
            ctx.x,
            self._w4(self.weight),
            self.bias,
            col,
            zcol,
            z,
            y,
            *self._geometry(),
            self.groups,
            self.code,
            self.alpha,
        )
        return [(self.K.conv2d_forward, args)], y.reshape((m, *self.output_shape))

    def backward_calls(self, grad_y, ctx, need_grad_x):
        m = grad_y.shape[0]
        ws = self._workspace(m, ctx.arena)
        z = ws["z"]
        y = ws.get("y", z)
        col, zcol, partial_b = self._scratch_for(m, ctx.arena)
        grad_x = self._grad_x(m if need_grad_x else 1, ctx.arena)["grad_x"]
        # col reuse only in the plans' arena, where each step's forward precedes its one backward
        # (the eager API may run a backward twice, and a backward with need_grad_x overwrites col)
        args = (
            ctx.x,
            self._w4(self.weight),
            z,
            y,
            grad_y.reshape((m, *self._out4)),
            col,
            zcol,
            grad_x,
            self._w4(self.grad_weight),
            self.grad_bias,
            partial_b,
            *self._geometry(),
            self.groups,
            self.code,
            self.alpha,
            need_grad_x,
            ctx.arena == "train",
        )
        return [(self.K.conv2d_backward, args)], (grad_x.reshape((m, *self.input_shape)) if need_grad_x else None)

    def get_config(self):
        one = self._dims == 1
        config = {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": self.kernel_size[0] if one else list(self.kernel_size),
            "stride": self.stride[0] if one else list(self.stride),
            "padding": self.padding
            if isinstance(self.padding, str)
            else (self.padding[0] if one else list(self.padding)),
            "dilation": self.dilation[0] if one else list(self.dilation),
            "groups": self.groups,
            "bias": self.use_bias,
            "activation": self.activation,
            "init": self.init,
            "bias_init": self.bias_init,
        }
        param_name = ACTIVATIONS[self.activation][2]
        if param_name:
            config[param_name] = self.alpha
        return config

    def extra_repr(self):
        one = self._dims == 1
        parts = [
            str(self.in_channels),
            str(self.out_channels),
            f"kernel_size={self.kernel_size[0] if one else self.kernel_size}",
        ]
        for name, default in (("stride", 1), ("dilation", 1)):
            value = getattr(self, name)
            if any(v != default for v in value):
                parts.append(f"{name}={value[0] if one else value}")
        if self.padding not in ((0,) * self._dims, "valid"):
            parts.append(
                f"padding={self.padding!r}"
                if isinstance(self.padding, str)
                else f"padding={self.padding[0] if one else self.padding}"
            )
        if self.groups != 1:
            parts.append(f"groups={self.groups}")
        if not self.use_bias:
            parts.append("bias=False")
        if self.activation != "identity":
            parts.append(f"activation={self.activation!r}")
        shown = ("in_channels", "out_channels", "kernel_size", "stride", "dilation", "padding", "groups", "bias")
        return ", ".join(parts + non_default_arguments(self, (*shown, "activation")))


@register_layer
class Conv2d(_ConvNd):
    """2-D convolution ``(batch, in_channels, height, width)`` -> ``(batch, out_channels, OH, OW)``,
    as ``torch.nn.Conv2d``; weight ``(out_channels, in_channels // groups, KH, KW)``.

    Parameters
    ----------
    in_channels : int
        Channels of the input (axis 1).
    out_channels : int
        Channels of the output.
    kernel_size : int or tuple of int
        The window, an int or one per spatial axis.
    stride : int or tuple of int, default 1
        The step between windows.
    padding : int, tuple of int, "same" or "valid", default 0
        Zero padding on both sides of each spatial axis; "same" (stride 1 only) keeps the size,
        "valid" is none.
    dilation : int or tuple of int, default 1
        The spacing between window elements.
    groups : int, default 1
        Channel groups (``groups=in_channels``: depthwise); both channel counts divisible by it.
    bias : bool, default True
        Whether to add a bias ``(out_channels,)``.
    activation : str, Activation layer or None, default None
        Fused after the bias, as in :class:`~fastnn.layers.Dense`.
    init : str, optional
        Weight initialiser; by default He or Xavier by activation, with torch's fans
        (fan_in = in_channels // groups * prod(kernel), fan_out = out_channels * prod(kernel)).
    bias_init : str, default "zeros"
        Initialiser of the bias.
    **activation_params
        The activation's parameter by name.

    Raises
    ------
    ValueError
        For inconsistent sizes (the message names the argument and a fix), or a row-wise
        activation ("softmax", "log_softmax"), which a convolution does not fuse.

    Examples
    --------
    >>> import fastnn as fnn
    >>> conv = fnn.Conv2d(1, 8, 3, padding="same", activation="relu")
    >>> model = fnn.Sequential([conv], input_shape=(1, 6, 6), seed=0)
    >>> y = model.predict(np.ones((2, 1, 6, 6), np.float32))
    >>> y.shape, y.dtype, conv.weight.shape
    ((2, 8, 6, 6), dtype('float32'), (8, 1, 3, 3))
    """

    _dims = 2


@register_layer
class Conv1d(_ConvNd):
    """1-D convolution ``(batch, in_channels, length)`` -> ``(batch, out_channels, out_length)``,
    as ``torch.nn.Conv1d``; weight ``(out_channels, in_channels // groups, kernel_size)``.

    Parameters
    ----------
    in_channels : int
        Channels of the input (axis 1).
    out_channels : int
        Channels of the output.
    kernel_size : int or tuple of int
        The window, an int or one per spatial axis.
    stride : int or tuple of int, default 1
        The step between windows.
    padding : int, tuple of int, "same" or "valid", default 0
        Zero padding on both sides of each spatial axis; "same" (stride 1 only) keeps the size,
        "valid" is none.
    dilation : int or tuple of int, default 1
        The spacing between window elements.
    groups : int, default 1
        Channel groups (``groups=in_channels``: depthwise); both channel counts divisible by it.
    bias : bool, default True
        Whether to add a bias ``(out_channels,)``.
    activation : str, Activation layer or None, default None
        Fused after the bias, as in :class:`~fastnn.layers.Dense`.
    init : str, optional
        Weight initialiser; by default He or Xavier by activation, with torch's fans
        (fan_in = in_channels // groups * prod(kernel), fan_out = out_channels * prod(kernel)).
    bias_init : str, default "zeros"
        Initialiser of the bias.
    **activation_params
        The activation's parameter by name.

    Raises
    ------
    ValueError
        For inconsistent sizes (the message names the argument and a fix), or a row-wise
        activation ("softmax", "log_softmax"), which a convolution does not fuse.

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.Conv1d(2, 4, 3, stride=2)], input_shape=(2, 9), seed=0)
    >>> model.predict(np.ones((5, 2, 9), np.float32)).shape
    (5, 4, 4)
    """

    _dims = 1
