"""Batch normalisation and layer normalisation over (batch, features) inputs."""
from __future__ import annotations

import numpy as np

from .. import _validation as V
from .. import backend
from .base import Layer, ParamSpec


def _fill(value):
    def init(view, seed, stream):
        view[...] = value
    return init


class _Normalization(Layer):
    """Shared parts: the per-feature gain (``weight``, gamma) and shift (``bias``, beta), which
    get no weight decay by default, and the checks of the feature count and eps."""

    def __init__(self, num_features: int, eps: float, affine: bool):
        super().__init__()
        self.num_features = V.check_int(num_features, "num_features", minimum=1)
        self.in_features = self.out_features = self.num_features
        self.eps = V.check_float(eps, "eps", low=0.0, low_inclusive=False)
        self.affine = bool(affine)
        self.weight = self.bias = self.grad_weight = self.grad_bias = None

    def build(self, in_features, dtype):
        if in_features != self.num_features:
            raise ValueError(f"{self!r}: num_features={self.num_features} does not match the input width "
                             f"{in_features}; use {type(self).__name__}({in_features})")
        out = super().build(in_features, dtype)
        if not self.affine:  # the kernels read gamma/beta only when affine; keep typed placeholders
            self.weight, self.bias = backend.full(out, 1.0, dtype, self.device), self.zeros(out)
            self.grad_weight, self.grad_bias = self.zeros(out), self.zeros(out)
        self._workspace = self.workspace(y=(out,), x_hat=(out,), grad_x=(out,))
        self._partials = self.zeros((2, 1, out))
        return out

    def _scratch(self, batch):
        rows = self.K.partial_rows(batch)
        if self._partials.shape[1] < rows:
            self._partials = self.zeros((2, rows, self.num_features))
        return self._partials

    def parameter_specs(self):
        if not self.affine:
            return []
        return [ParamSpec("weight", (self.num_features,), False, _fill(1.0)),
                ParamSpec("bias", (self.num_features,), False, _fill(0.0))]

    def extra_repr(self):
        config = self.get_config()
        first = next(iter(config))
        return ", ".join([str(config.pop(first))] + [f"{k}={v!r}" for k, v in config.items()])

    def bind(self, params, grads):
        if self.affine:
            self.weight, self.bias = params["weight"], params["bias"]
            self.grad_weight, self.grad_bias = grads["weight"], grads["bias"]


class BatchNorm1d(_Normalization):
    """Batch normalisation with the conventions of torch.nn.BatchNorm1d.

    Training: normalise with the batch mean and biased variance; update
    ``running = (1 - momentum) * running + momentum * batch`` with the unbiased variance
    (``momentum=None``: cumulative average). Evaluation: use the running statistics (or batch
    statistics when ``track_running_stats=False``).
    """

    input_argument = "num_features"

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True):
        super().__init__(num_features, eps, affine)
        self.momentum = None if momentum is None else V.check_float(momentum, "momentum", 0.0, 1.0)
        self.track_running_stats = bool(track_running_stats)
        self.running_mean = self.running_var = None
        self.num_batches_tracked = np.zeros(1, np.int64)

    def build(self, in_features, dtype):
        out = super().build(in_features, dtype)
        self.running_mean = self.zeros(out)
        self.running_var = backend.full(out, 1.0, dtype, self.device)
        self._mean = self.zeros(out)
        self._inv_std = self.zeros(out)
        return out

    def buffers(self):
        if not self.track_running_stats:
            return {}
        return {"running_mean": self.running_mean, "running_var": self.running_var,
                "num_batches_tracked": self.num_batches_tracked}

    def forward_calls(self, x, training):
        ws = self._workspace(x.shape[0])
        self._batch_stats = training or not self.track_running_stats
        if not self._batch_stats:
            self._x = x
            return [(self.K.batchnorm_forward_eval, (x, self.weight, self.bias, self.running_mean, self.running_var, ws["y"],
                                              self.eps, self.affine))], ws["y"]
        if x.shape[0] < 2:
            raise ValueError(f"{self!r} needs more than 1 sample per batch in training (the batch variance "
                             f"of one sample is 0), got batch size {x.shape[0]}; use a larger batch_size, "
                             f"or eval mode")
        momentum = -1.0 if self.momentum is None else self.momentum
        args = (x, self.weight, self.bias, self.running_mean, self.running_var, ws["y"], ws["x_hat"], self._mean,
                self._inv_std, self._scratch(x.shape[0]), self.eps, momentum, self.affine,
                training and self.track_running_stats, self.num_batches_tracked)
        return [(self.K.batchnorm_forward_train_counted, args)], ws["y"]

    def backward_calls(self, grad_y, need_grad_x):
        ws = self._workspace(grad_y.shape[0])
        if self._batch_stats:
            args = (grad_y, ws["x_hat"], self._inv_std, self.weight, ws["grad_x"], self.grad_weight,
                    self.grad_bias, self._scratch(grad_y.shape[0]), self.affine)
            return [(self.K.batchnorm_backward, args)], ws["grad_x"]
        if self.device == "cpu":
            return [(self._eval_backward, (self._x, grad_y, ws["grad_x"]))], ws["grad_x"]
        args = (grad_y, self._x, self.weight, self.running_mean, self.running_var, ws["x_hat"], ws["grad_x"],
                self.grad_weight, self.grad_bias, self._scratch(grad_y.shape[0]), self.eps, self.affine)
        return [(self.K.batchnorm_backward_eval, args)], ws["grad_x"]

    def _eval_backward(self, x, grad_y, grad_x):
        """Evaluation mode is an affine map per feature (rare: backward through a frozen layer); on the
        CPU in NumPy, on "cuda" the kernel ``batchnorm_backward_eval`` (the same formulas)."""
        inv_std = 1.0 / np.sqrt(self.running_var + self.dtype.type(self.eps))
        if self.affine:
            self.grad_bias[...] = grad_y.sum(axis=0)
            self.grad_weight[...] = (grad_y * ((x - self.running_mean) * inv_std)).sum(axis=0)
        np.multiply(grad_y, self.weight * inv_std, out=grad_x)

    def get_config(self):
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum,
                "affine": self.affine, "track_running_stats": self.track_running_stats}


class LayerNorm(_Normalization):
    """Layer normalisation over the features of each sample (torch.nn.LayerNorm on the last axis)."""

    input_argument = "normalized_features"

    def __init__(self, normalized_features: int, eps: float = 1e-5, elementwise_affine: bool = True):
        super().__init__(normalized_features, eps, elementwise_affine)

    def build(self, in_features, dtype):
        out = super().build(in_features, dtype)
        self._inv_std_rows = self.workspace(inv_std=())
        return out

    def forward_calls(self, x, training):
        ws = self._workspace(x.shape[0])
        inv_std = self._inv_std_rows(x.shape[0])["inv_std"]
        return [(self.K.layernorm_forward, (x, self.weight, self.bias, ws["y"], ws["x_hat"], inv_std, self.eps,
                                     self.affine))], ws["y"]

    def backward_calls(self, grad_y, need_grad_x):
        m = grad_y.shape[0]
        ws = self._workspace(m)
        args = (grad_y, ws["x_hat"], self._inv_std_rows(m)["inv_std"], self.weight, ws["grad_x"], self.grad_weight,
                self.grad_bias, self._scratch(m), self.affine)
        return [(self.K.layernorm_backward, args)], ws["grad_x"]

    def get_config(self):
        return {"normalized_features": self.num_features, "eps": self.eps, "elementwise_affine": self.affine}
