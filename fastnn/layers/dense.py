"""Dense (fully connected) layer with a fused activation."""

from __future__ import annotations

from .. import _validation as V
from .._config import REDUCTION_CHUNK_ROWS
from ..kernels.activations import ACTIVATIONS, IDENTITY, ROWWISE_CODES
from .base import Layer, WeightAndBias, non_default_arguments, normalize_shape, rows, shape_str
from .registry import register_layer


@register_layer
class Dense(WeightAndBias, Layer):
    """Fully connected layer ``y = f(x @ weight + bias)`` on the last axis, like ``torch.nn.Linear``.

    Input ``(batch, ..., in_features)`` -> output ``(batch, ..., out_features)``, the model's
    dtype; ``weight`` is ``(in_features, out_features)`` (the transpose of torch's), ``bias``
    ``(out_features,)``.

    Parameters
    ----------
    in_features : int or None
        The input width; ``Dense(256)`` (one argument) or None takes it from the previous layer.
    out_features : int, optional
        The output width (the number of units).
    activation : str, Activation layer or None, default None
        Fused into the layer's kernels: a name of ``fastnn.kernels.activations.ACTIVATIONS``
        (``"relu"``, ``"tanh"`` ...), an activation layer such as ``LeakyReLU(0.2)``, or None
        (identity).
    init : str, optional
        A name of :data:`fastnn.init.INITIALIZERS` for the weight; by default it follows the
        activation (:func:`fastnn.init.default_init`: He for the ReLU family, LeCun for SELU,
        Xavier otherwise).
    bias : bool, default True
        Whether to add a bias.
    bias_init : str, default "zeros"
        Initialiser of the bias.
    **activation_params
        The activation's parameter by name (``negative_slope=0.2`` with ``"leaky_relu"``).

    Raises
    ------
    ValueError
        For a non-positive width, an unknown activation or initialiser.

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.Dense(4, 3, activation="relu")], seed=0)
    >>> y = model.predict(np.ones((2, 4), np.float32))
    >>> y.shape, y.dtype, bool((y >= 0).all())
    ((2, 3), dtype('float32'), True)
    >>> model.layers[0].weight.shape
    (4, 3)
    """

    lengths_policy = "keep"
    attribute_aliases = {"kernel": "weight", "kernel_initializer": "init", "bias_initializer": "bias_init"}  # Keras
    argument_attributes = {"use_bias": "bias", "units": "out_features"}

    def __init__(
        self,
        in_features: int | None,
        out_features: int | None = None,
        activation=None,
        *,
        init: str | None = None,
        bias: bool = True,
        bias_init: str = "zeros",
        **activation_params,
    ):
        super().__init__()
        if out_features is None:
            in_features, out_features = None, in_features
        elif in_features is not None:  # Dense(None, 6): the input size comes from the previous layer
            in_features = V.check_int(in_features, "in_features", minimum=1)
        self.in_features = in_features
        self.units = V.check_int(out_features, "out_features (units)", minimum=1)
        self._weight_bias_options(activation, activation_params, init, bias_init, bias)

    @property  # type: ignore[misc]  # read-only: units fixes it
    def out_features(self) -> int:
        return self.units

    def build(self, input_shape, dtype):
        shape = normalize_shape(input_shape)
        fixed = self.__dict__.get("_in_features")
        if fixed is not None and fixed != shape[-1]:
            raise ValueError(
                f"{self!r} expects {fixed} input features (the last axis) but receives input of shape "
                f"{shape_str(shape)}; set in_features to {shape[-1]} or fix the previous layer"
            )
        super().build(shape, dtype)
        out = self.units
        self.output_shape = (*shape[:-1], out)
        lead = shape[:-1]
        # identity: y is z and grad_z is grad_y, so only z needs a buffer
        extra = {} if self.code == IDENTITY else {"y": (*lead, out), "grad_z": (*lead, out)}
        self._workspace = self.workspace(z=(*lead, out), **extra)
        self._partial_b = self.zeros((1, out))
        self._grad_x = self.workspace(grad_x=shape)
        if not self.use_bias:
            self.bias, self.grad_bias = self.zeros(out), self.zeros(out)
        return self.output_shape

    def parameter_specs(self):
        fan_in, fan_out = self.in_features, self.units
        return self._weight_bias_specs((fan_in, fan_out), fan_in, fan_out, fan_out)

    def _partials(self, n_rows):
        chunks = (n_rows + REDUCTION_CHUNK_ROWS - 1) // REDUCTION_CHUNK_ROWS
        if self._partial_b.shape[0] < chunks:
            self._partial_b = self.zeros((chunks, self.units))
        return self._partial_b

    def _buffers(self, batch: int, arena: str):
        ws = self._workspace(batch, arena)
        z = rows(ws["z"], self.units)
        y = rows(ws["y"], self.units) if "y" in ws else z
        grad_z = rows(ws["grad_z"], self.units) if "grad_z" in ws else None
        return ws, z, y, grad_z

    def preactivation_rows(self, batch: int, arena: str):
        """The layer's pre-activation buffer in one arena (scratch between calls).

        Parameters
        ----------
        batch : int
            Samples in the batch.
        arena : str
            "train", "infer", "eager" or "probe" (see :class:`fastnn.layers.Workspace`).

        Returns
        -------
        numpy.ndarray
            (batch * positions, units) view, of the layer's dtype; ``fastnn._inference`` writes
            its fused outputs there.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(3, 2, activation="relu")], input_shape=(3,), seed=0)
        >>> z = model.layers[0].preactivation_rows(4, "infer")
        >>> z.shape, z.dtype
        ((4, 2), dtype('float32'))
        """
        return self._buffers(batch, arena)[1]

    def forward_calls(self, x, ctx):
        ws, z, y, _ = self._buffers(x.shape[0], ctx.arena)
        ctx.x = x
        x_rows = rows(x, self.in_features)
        if self.code < ROWWISE_CODES:
            calls = [(self.K.dense_forward, (x_rows, self.weight, self.bias, z, y, self.code, self.alpha))]
        else:  # softmax rows after the GEMM: the dense kernels compile the elementwise epilogue only
            calls = [
                (self.K.dense_forward, (x_rows, self.weight, self.bias, z, z, IDENTITY, self.alpha)),
                (self.K.activation_forward, (z, y, self.code, self.alpha)),
            ]
        return calls, ws.get("y", ws["z"])

    def backward_calls(self, grad_y, ctx, need_grad_x):
        m = grad_y.shape[0]
        _, z, y, grad_z = self._buffers(m, ctx.arena)
        g = rows(grad_y, self.units)
        grad_x = self._grad_x(m if need_grad_x else 1, ctx.arena)["grad_x"]
        gx = rows(grad_x, self.in_features)
        code, calls = self.code, []
        if code >= ROWWISE_CODES:  # the softmax rows' gradient first, then the dense kernel as identity
            calls.append((self.K.activation_backward, (z, y, g, grad_z, code, self.alpha)))
            g, code = grad_z, IDENTITY
        args = (
            rows(ctx.x, self.in_features),
            self.weight,
            z,
            y,
            g,
            g if grad_z is None else grad_z,
            gx,
            self.grad_weight,
            self.grad_bias,
            self._partials(g.shape[0]),
            code,
            self.alpha,
            need_grad_x,
        )
        calls.append((self.K.dense_backward, args))
        return calls, (grad_x if need_grad_x else None)

    def get_config(self):
        config = {
            "in_features": self.in_features,
            "out_features": self.units,
            "activation": self.activation,
            "init": self.init,
            "bias": self.use_bias,
            "bias_init": self.bias_init,
        }
        param_name = ACTIVATIONS[self.activation][2]
        if param_name:
            config[param_name] = self.alpha
        return config

    def extra_repr(self):
        parts = [str(self.in_features), str(self.units)]
        if self.activation != "identity":
            parts.append(f"activation={self.activation!r}")
        shown = ("in_features", "out_features", "activation")
        return ", ".join(parts + non_default_arguments(self, shown))
