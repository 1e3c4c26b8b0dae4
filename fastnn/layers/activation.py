"""Activation layers, one class per row of :data:`fastnn.kernels.activations.ACTIVATION_TABLE`
that names a layer (generated from the row: its name, docstring and parameter)."""

from __future__ import annotations

from inspect import Parameter, Signature
from typing import Any

from .. import _validation as V
from ..kernels.activations import ACTIVATION_TABLE, ACTIVATIONS
from .base import ActivationSetting, Layer, Workspace, rows
from .registry import register_layer

_ROWS = {row.name: row for row in ACTIVATION_TABLE}

#: each generated class's Examples section: its output for the input [[-1, 0, 2]] (float32, printed
#: with 4 digits as tests/test_doctests.py prints)
_EXAMPLE = """
    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.{layer}()], input_shape=(3,), seed=0)
    >>> model.predict(np.array([[-1.0, 0.0, 2.0]], np.float32))
    array({output}, dtype=float32)
"""
_EXAMPLE_OUTPUTS = {
    "identity": "[[-1.,  0.,  2.]]",
    "sigmoid": "[[0.2689, 0.5   , 0.8808]]",
    "tanh": "[[-0.7616,  0.    ,  0.964 ]]",
    "relu": "[[0., 0., 2.]]",
    "leaky_relu": "[[-0.01,  0.  ,  2.  ]]",
    "elu": "[[-0.6321,  0.    ,  2.    ]]",
    "selu": "[[-1.1113,  0.    ,  2.1014]]",
    "softmax": "[[0.042 , 0.1142, 0.8438]]",
    "log_softmax": "[[-3.1698, -2.1698, -0.1698]]",
}


def resolve_activation(activation, **params) -> tuple[str, int, float]:
    """(name, code, alpha) from a name, None (identity) or an :class:`Activation` instance; a
    TypeError for keywords that are not the named activation's parameter (a layer passes on the
    keywords it does not know: a misspelt argument or torch's ``padding_mode`` lands here)."""
    if activation is None or isinstance(activation, Activation):
        if params:
            raise TypeError(
                f"unexpected keyword argument(s) {sorted(params)}: without an activation by name none is "
                f"taken (an activation's parameter goes with its name, e.g. activation='leaky_relu', "
                f"negative_slope=0.1)"
            )
        if activation is None:
            return "identity", _ROWS["identity"].code, 0.0
        return activation.activation, activation.code, activation.alpha
    name = V.check_choice(activation, ACTIVATIONS, "activation")
    row = _ROWS[name]
    alpha = params.pop(row.param) if row.param is not None and row.param in params else row.default
    if params:
        raise TypeError(
            f"unexpected keyword argument(s) {sorted(params)} for activation {name!r}"
            + (f" (it takes {row.param!r})" if row.param else " (it takes none)")
        )
    if name == "elu":
        alpha = V.check_float(alpha, "alpha", low=0.0)
    elif name == "leaky_relu":
        alpha = V.check_float(alpha, "negative_slope")
    return name, row.code, float(alpha)


@register_layer
class Activation(Layer):
    """Applies an activation elementwise (softmax and log_softmax: over the last axis); the output
    has the input's shape and dtype. Each activation also has a class of its own (:class:`ReLU` ...).

    Parameters
    ----------
    activation : str, default "identity"
        A name of ``fastnn.kernels.activations.ACTIVATIONS``.
    **params
        The activation's parameter by name (``negative_slope`` for ``"leaky_relu"``, ``alpha``
        for ``"elu"``).

    Raises
    ------
    ValueError
        For an unknown activation, or a parameter value out of its range.
    TypeError
        For a keyword that is not the activation's parameter.

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.Activation("leaky_relu", negative_slope=0.1)], input_shape=(3,), seed=0)
    >>> model.predict(np.array([[-1.0, 0.0, 2.0]], np.float32))
    array([[-0.1,  0. ,  2. ]], dtype=float32)
    >>> fnn.Sequential([fnn.Softmax()], input_shape=(2,), seed=0).predict(np.zeros((1, 2), np.float32))
    array([[0.5, 0.5]], dtype=float32)
    """

    lengths_policy = "keep"
    #: the activation's name; setting it (a name or an activation layer) changes what is computed
    activation = ActivationSetting()

    def __init__(self, activation: str = "identity", **params):
        super().__init__()
        self.activation, self.code, self.alpha = resolve_activation(activation, **params)
        self._workspace: Workspace | None = None

    def build(self, input_shape, dtype):
        shape = super().build(input_shape, dtype)
        self._workspace = self.workspace(y=shape, grad_x=shape)
        return shape

    def forward_calls(self, x, ctx):
        ws = self._workspace(x.shape[0], ctx.arena)
        ctx.x = x
        width = self.input_shape[-1]  # softmax/log_softmax: over the last axis
        return [(self.K.activation_forward, (rows(x, width), rows(ws["y"], width), self.code, self.alpha))], ws["y"]

    def backward_calls(self, grad_y, ctx, need_grad_x):
        ws = self._workspace(grad_y.shape[0], ctx.arena)
        width = self.input_shape[-1]
        args = (
            rows(ctx.x, width),
            rows(ws["y"], width),
            rows(grad_y, width),
            rows(ws["grad_x"], width),
            self.code,
            self.alpha,
        )
        return [(self.K.activation_backward, args)], ws["grad_x"]

    def get_config(self):
        param = _ROWS[self.activation].param
        config = {"activation": self.activation}
        if param:
            config[param] = self.alpha
        return config


def _activation_class(name: str) -> type[Activation]:
    """The layer class of the table row ``name``: ``ReLU()``, or ``LeakyReLU(negative_slope=0.01)``
    for a row with a parameter (positional or by its name)."""
    row = _ROWS[name]
    self_param = Parameter("self", Parameter.POSITIONAL_OR_KEYWORD)
    __init__: Any
    if row.param is None:

        def __init__(self):
            Activation.__init__(self, name)

        def get_config(self):
            return {}
    else:

        def __init__(self, *args, **kwargs):
            try:
                bound = __init__.__signature__.bind(self, *args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"{row.layer}(): {exc} (it takes {row.param}={row.default})") from None
            bound.apply_defaults()
            Activation.__init__(self, name, **{row.param: bound.arguments[row.param]})

        __init__.__signature__ = Signature(
            [self_param, Parameter(row.param, Parameter.POSITIONAL_OR_KEYWORD, default=row.default)]
        )

        def get_config(self):
            return {row.param: self.alpha}

    doc = row.doc + " Any shape, kept; the input's dtype.\n"
    if row.param is not None:
        doc += (
            f"\n    Parameters\n    ----------\n    {row.param} : float, default {row.default}\n"
            f"        The ``{row.param}`` of the formula above.\n"
        )
    doc += _EXAMPLE.format(layer=row.layer, output=_EXAMPLE_OUTPUTS[name])
    for method in (__init__, get_config):
        method.__qualname__ = f"{row.layer}.{method.__name__}"
    namespace = {
        "__init__": __init__,
        "get_config": get_config,
        "__doc__": doc,
        "__module__": __name__,
        "activation_names": (name,),
    }
    return register_layer(type(str(row.layer), (Activation,), namespace))  # type: ignore[return-value]


def _gelu_row(approximate: str) -> str:
    """The table row of GELU's ``approximate`` ("none": gelu, "tanh": gelu_tanh); ValueError otherwise."""
    return "gelu" if V.check_choice(approximate, ("none", "tanh"), "approximate") == "none" else "gelu_tanh"


Identity = _activation_class("identity")
Sigmoid = _activation_class("sigmoid")
Tanh = _activation_class("tanh")
ReLU = _activation_class("relu")
LeakyReLU = _activation_class("leaky_relu")
ELU = _activation_class("elu")
SELU = _activation_class("selu")
Softmax = _activation_class("softmax")
LogSoftmax = _activation_class("log_softmax")


@register_layer
class GELU(Activation):
    __doc__ = (
        _ROWS["gelu"].doc
        + """

    Parameters
    ----------
    approximate : {"none", "tanh"}, default "none"
        ``"none"``: the erf form; ``"tanh"``: the tanh approximation (torch's names).

    Examples
    --------
    >>> import fastnn as fnn
    >>> x = np.array([[-1.0, 0.0, 2.0]], np.float32)
    >>> fnn.Sequential([fnn.GELU()], input_shape=(3,), seed=0).predict(x)
    array([[-0.1587,  0.    ,  1.9545]], dtype=float32)
    >>> fnn.Sequential([fnn.GELU("tanh")], input_shape=(3,), seed=0).predict(x)
    array([[-0.1588,  0.    ,  1.9546]], dtype=float32)
    """
    )  # the parameter picks one of two table rows (gelu, gelu_tanh)

    activation_names = ("gelu", "gelu_tanh")

    def __init__(self, approximate: str = "none"):
        super().__init__(_gelu_row(approximate))

    @property
    def approximate(self) -> str:
        """``"none"`` (the erf form) or ``"tanh"``: the row the layer computes; setting it changes
        the row.

        Examples
        --------
        >>> import fastnn as fnn
        >>> gelu = fnn.GELU()
        >>> gelu.approximate = "tanh"
        >>> gelu.activation
        'gelu_tanh'
        """
        return "tanh" if self.activation == "gelu_tanh" else "none"

    @approximate.setter
    def approximate(self, value: str) -> None:
        self.activation = _gelu_row(value)

    def get_config(self):
        return {"approximate": self.approximate}
