"""Dense (fully connected) layer with a fused activation."""
from __future__ import annotations

import numpy as np

from .. import _validation as V
from .. import init as initializers
from .._config import REDUCTION_CHUNK_ROWS
from ..kernels.activations import ACTIVATIONS, IDENTITY
from .activation import resolve_activation
from .base import Layer, ParamSpec, Workspace


class Dense(Layer):
    """``y = f(x @ weight + bias)``; weight (in_features, out_features), bias (out_features,).

    ``Dense(784, 256)`` or ``Dense(256)`` (input size taken from the previous layer).
    ``activation``: a name of :data:`ACTIVATIONS`, None (identity) or an activation layer such
    as ``LeakyReLU(0.2)``; it is fused into the layer's kernels. ``init``: a name of
    ``fastnn.init.INITIALIZERS``; the default follows the activation (He for the ReLU family,
    LeCun for SELU, Xavier/Glorot otherwise, see ``fastnn.init.default_init``).
    """

    def __init__(self, in_features: int, out_features: int | None = None, activation=None, *,
                 init: str | None = None, bias: bool = True, bias_init: str = "zeros", **activation_params):
        super().__init__()
        if out_features is None:
            in_features, out_features = None, in_features
        else:
            in_features = V.check_int(in_features, "in_features", minimum=1)
        self.in_features = in_features
        self.out_features = V.check_int(out_features, "out_features (units)", minimum=1)
        self.activation, self.code, self.alpha = resolve_activation(activation, **activation_params)
        self.init = initializers.default_init(self.activation) if init is None else \
            V.check_choice(init, initializers.INITIALIZERS, "init")
        self.bias_init = V.check_choice(bias_init, initializers.INITIALIZERS, "bias_init")
        self.use_bias = bool(bias)
        self.weight = self.bias = self.grad_weight = self.grad_bias = None
        self._workspace: Workspace | None = None
        self._x = None

    def build(self, in_features, dtype):
        if self.in_features is not None and self.in_features != in_features:
            raise ValueError(f"{self!r} expects {self.in_features} input features but receives {in_features}")
        self.in_features = in_features
        self.dtype = np.dtype(dtype)
        out = self.out_features
        # identity: y is z and grad_z is grad_y, so only z needs a buffer
        extra = {} if self.code == IDENTITY else {"y": (out,), "grad_z": (out,)}
        self._workspace = self.workspace(z=(out,), **extra)
        self._partial_b = self.zeros((1, out))
        self._grad_x = self.workspace(grad_x=(in_features,))
        if not self.use_bias:
            self.bias, self.grad_bias = self.zeros(out), self.zeros(out)
        return out

    def parameter_specs(self):
        fan_in, fan_out = self.in_features, self.out_features

        def init_weight(view, seed, stream):
            initializers.initialize(view, self.init, fan_in, fan_out, seed, stream)

        def init_bias(view, seed, stream):
            initializers.initialize(view, self.bias_init, fan_in, fan_out, seed, stream)

        specs = [ParamSpec("weight", (fan_in, fan_out), True, init_weight)]
        if self.use_bias:
            specs.append(ParamSpec("bias", (fan_out,), False, init_bias))
        return specs

    def bind(self, params, grads):
        self.weight, self.grad_weight = params["weight"], grads["weight"]
        if self.use_bias:
            self.bias, self.grad_bias = params["bias"], grads["bias"]

    def _partials(self, batch):
        chunks = (batch + REDUCTION_CHUNK_ROWS - 1) // REDUCTION_CHUNK_ROWS
        if self._partial_b.shape[0] < chunks:
            self._partial_b = self.zeros((chunks, self.out_features))
        return self._partial_b

    def forward_calls(self, x, training):
        ws = self._workspace(x.shape[0])
        self._x = x
        z = ws["z"]
        y = ws.get("y", z)
        return [(self.K.dense_forward, (x, self.weight, self.bias, z, y, self.code, self.alpha))], y

    def backward_calls(self, grad_y, need_grad_x):
        m = grad_y.shape[0]
        ws = self._workspace(m)
        z = ws["z"]
        grad_x = self._grad_x(m if need_grad_x else 1)["grad_x"]
        args = (self._x, self.weight, z, ws.get("y", z), grad_y, ws.get("grad_z", grad_y), grad_x,
                self.grad_weight, self.grad_bias, self._partials(m), self.code, self.alpha, need_grad_x)
        return [(self.K.dense_backward, args)], (grad_x if need_grad_x else None)

    def get_config(self):
        config = {"in_features": self.in_features, "out_features": self.out_features,
                  "activation": self.activation, "init": self.init, "bias": self.use_bias,
                  "bias_init": self.bias_init}
        param_name = ACTIVATIONS[self.activation][2]
        if param_name:
            config[param_name] = self.alpha
        return config

    def extra_repr(self):
        act = "" if self.activation == "identity" else f", activation={self.activation!r}"
        return f"{self.in_features}, {self.out_features}{act}"
