"""Activation layers, one per activation of :data:`fastnn.kernels.activations.ACTIVATIONS`."""
from __future__ import annotations

from .. import _validation as V
from ..kernels.activations import ACTIVATIONS
from .base import Layer, Workspace, rows


def resolve_activation(activation, **params) -> tuple[str, int, float]:
    """(name, code, alpha) from a name, None (identity) or an :class:`Activation` instance."""
    if activation is None:
        return "identity", ACTIVATIONS["identity"][0], 0.0
    if isinstance(activation, Activation):
        return activation.activation, activation.code, activation.alpha
    name = V.check_choice(activation, ACTIVATIONS, "activation")
    code, alpha, param_name = ACTIVATIONS[name]
    if param_name is not None and param_name in params:
        alpha = params.pop(param_name)
    if params:
        raise TypeError(f"unexpected keyword argument(s) {sorted(params)} for activation {name!r}"
                        + (f" (it takes {param_name!r})" if param_name else " (it takes none)"))
    if name == "elu":
        alpha = V.check_float(alpha, "alpha", low=0.0)
    elif name == "leaky_relu":
        alpha = V.check_float(alpha, "negative_slope")
    return name, code, float(alpha)


class Activation(Layer):
    """Applies an activation elementwise (softmax/log_softmax: per row). Shape-preserving."""

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
        args = (rows(ctx.x, width), rows(ws["y"], width), rows(grad_y, width), rows(ws["grad_x"], width), self.code,
                self.alpha)
        return [(self.K.activation_backward, args)], ws["grad_x"]

    def get_config(self):
        _, _, param_name = ACTIVATIONS[self.activation]
        config = {"activation": self.activation}
        if param_name:
            config[param_name] = self.alpha
        return config


def _activation_class(name: str, class_name: str, doc: str):
    """A parameter-free activation layer class, e.g. ReLU()."""
    def __init__(self):
        Activation.__init__(self, name)

    def get_config(self):
        return {}

    return type(class_name, (Activation,), {"__init__": __init__, "__doc__": doc, "get_config": get_config})


Identity = _activation_class("identity", "Identity", "y = x.")
Sigmoid = _activation_class("sigmoid", "Sigmoid", "y = 1 / (1 + exp(-x)).")
Tanh = _activation_class("tanh", "Tanh", "y = tanh(x).")
ReLU = _activation_class("relu", "ReLU", "y = max(x, 0).")
SELU = _activation_class("selu", "SELU", "Scaled ELU with the self-normalising constants (use lecun_normal init).")
Softmax = _activation_class("softmax", "Softmax", "Row-wise softmax (numerically stable).")
LogSoftmax = _activation_class("log_softmax", "LogSoftmax", "Row-wise log-softmax (numerically stable).")


class LeakyReLU(Activation):
    """y = x if x > 0 else negative_slope * x."""

    def __init__(self, negative_slope: float = 0.01):
        super().__init__("leaky_relu", negative_slope=negative_slope)

    def get_config(self):
        return {"negative_slope": self.alpha}


class ELU(Activation):
    """y = x if x > 0 else alpha * (exp(x) - 1)."""

    def __init__(self, alpha: float = 1.0):
        super().__init__("elu", alpha=alpha)

    def get_config(self):
        return {"alpha": self.alpha}


class GELU(Activation):
    """Gaussian error linear unit: x * Phi(x); approximate="tanh" uses the tanh form."""

    def __init__(self, approximate: str = "none"):
        V.check_choice(approximate, ("none", "tanh"), "approximate")
        super().__init__("gelu" if approximate == "none" else "gelu_tanh")
        self.approximate = approximate

    def get_config(self):
        return {"approximate": self.approximate}


ACTIVATION_LAYERS = {"identity": Identity, "sigmoid": Sigmoid, "tanh": Tanh, "relu": ReLU,
                     "leaky_relu": LeakyReLU, "elu": ELU, "selu": SELU, "gelu": GELU,
                     "softmax": Softmax, "log_softmax": LogSoftmax}
