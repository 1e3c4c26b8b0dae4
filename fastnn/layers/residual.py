"""Residual connection: y = x + block(x)."""
from __future__ import annotations

import numpy as np

from .base import Layer, ParamSpec
from .dense import Dense


class Residual(Layer):
    """``y = block(x) + x``, or ``block(x) + x @ P`` when the block changes the width and
    ``projection`` is allowed (P is a bias-free Dense, Xavier-initialised). Gradients flow
    through both paths. ``block``: a list of layers or a Sequential."""

    def __init__(self, block, *, projection: bool = True):
        super().__init__()
        layers = getattr(block, "layers", block)
        if isinstance(layers, Layer):
            layers = [layers]
        layers = list(layers)
        if not layers or not all(isinstance(layer, Layer) for layer in layers):
            raise TypeError("block must be a non-empty list of fastnn layers or a Sequential, got "
                            f"{block!r}")
        self.block = layers
        self.allow_projection = bool(projection)
        self.projection: Dense | None = None
        self.in_features = layers[0].in_features

    def _children(self) -> list[tuple[str, Layer]]:
        named = [(f"block.{i}", layer) for i, layer in enumerate(self.block)]
        return named + ([("projection", self.projection)] if self.projection is not None else [])

    def build(self, in_features, dtype):
        self.in_features = in_features
        self.dtype = np.dtype(dtype)
        width = in_features
        for i, layer in enumerate(self.block):
            if layer.in_features is not None and layer.in_features != width:
                raise ValueError(f"inside {type(self).__name__}: block layer {i} ({layer!r}) expects "
                                 f"{layer.in_features} features but receives {width}")
            width = layer.build(width, dtype)
        if width != in_features:
            if not self.allow_projection:
                raise ValueError(f"Residual block maps {in_features} features to {width}, so x + block(x) is "
                                 f"undefined; allow a projection (projection=True) or make the block end with "
                                 f"{in_features} features")
            if self.projection is None:  # kept when build runs again (model.to)
                self.projection = Dense(in_features, width, init="xavier_uniform", bias=False)
            self.projection.set_device(self.device)
            self.projection.build(in_features, dtype)
        self.out_features = width
        self._workspace = self.workspace(y=(width,), grad_x=(in_features,))
        return width

    def set_device(self, device):
        super().set_device(device)
        for _, layer in self._children():
            layer.set_device(device)

    def seed_rng(self, seed, stream):
        for k, (_, layer) in enumerate(self._children()):
            if hasattr(layer, "seed_rng"):
                layer.seed_rng(seed, stream * 1000 + k + 1)

    def parameter_specs(self):
        return [ParamSpec(f"{prefix}.{spec.name}", spec.shape, spec.decay, spec.init)
                for prefix, layer in self._children() for spec in layer.parameter_specs()]

    def bind(self, params, grads):
        for prefix, layer in self._children():
            names = [spec.name for spec in layer.parameter_specs()]
            layer.bind({n: params[f"{prefix}.{n}"] for n in names}, {n: grads[f"{prefix}.{n}"] for n in names})

    def buffers(self):
        return {f"{prefix}.{name}": buf for prefix, layer in self._children() for name, buf in layer.buffers().items()}

    def plannable(self):
        return super().plannable() and all(layer.plannable() for _, layer in self._children())

    def forward_calls(self, x, training):
        calls, h = [], x
        for layer in self.block:
            more, h = layer.forward_calls(h, training)
            calls += more
        skip = x
        if self.projection is not None:
            more, skip = self.projection.forward_calls(x, training)
            calls += more
        y = self._workspace(x.shape[0])["y"]
        return calls + [(self.K.add, (h, skip, y))], y

    def backward_calls(self, grad_y, need_grad_x):
        calls, grad = [], grad_y
        for layer in reversed(self.block):
            more, grad = layer.backward_calls(grad, True)
            calls += more
        grad_skip = grad_y
        if self.projection is not None:
            more, grad_skip = self.projection.backward_calls(grad_y, True)
            calls += more
        grad_x = self._workspace(grad_y.shape[0])["grad_x"]
        return calls + [(self.K.add, (grad, grad_skip, grad_x))], grad_x

    def get_config(self):
        from . import layer_to_config

        return {"block": [layer_to_config(layer) for layer in self.block], "projection": self.allow_projection}

    @classmethod
    def from_config(cls, config):
        from . import layer_from_config

        return cls([layer_from_config(entry) for entry in config["block"]], projection=config["projection"])

    def extra_repr(self):
        proj = f", projection={self.projection!r}" if self.projection is not None else ""
        return f"[{', '.join(map(repr, self.block))}]{proj}"
