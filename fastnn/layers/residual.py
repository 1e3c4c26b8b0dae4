"""Residual connection: y = x + block(x)."""

from __future__ import annotations

from .. import _validation as V
from .base import (
    Layer,
    flat_rows,
    normalize_shape,
    refuse_user_child,
    shape_str,
    width_mismatch,
)
from .dense import Dense
from .registry import register_layer


@register_layer
class Residual(Layer):
    """A skip connection ``y = block(x) + x``; gradients flow through both paths.

    Parameters
    ----------
    block : list of Layer or Sequential
        The layers of the residual branch; output shape = input shape, or a different width
        on the last axis when ``projection`` is allowed.
    projection : bool, default True
        When the block changes the width: ``y = block(x) + x @ P``, P a bias-free Xavier-
        initialised Dense; False refuses a width change.

    Raises
    ------
    ValueError
        When the block's output shape cannot be added to its input.

    Examples
    --------
    >>> import fastnn as fnn
    >>> res = fnn.Residual([fnn.Dense(4, 4, activation="relu"), fnn.LayerNorm(4)])
    >>> model = fnn.Sequential([res], seed=0)
    >>> model.predict(np.ones((3, 4), np.float32)).shape
    (3, 4)
    """

    argument_attributes = {"allow_projection": "projection"}

    def __init__(self, block, *, projection: bool = True):
        super().__init__()
        layers = getattr(block, "layers", block)
        if isinstance(layers, Layer):
            layers = [layers]
        layers = list(layers)
        if not layers or not all(isinstance(layer, Layer) for layer in layers):
            raise TypeError(f"block must be a non-empty list of fastnn layers or a Sequential, got {block!r}")
        self.block = layers
        self.allow_projection = V.check_bool(projection, "projection")
        self.projection: Dense | None = None

    def expected_input_shape(self):
        return self.block[0].expected_input_shape()

    # the block's first layer receives the input: its size argument and the axis that argument
    # sizes are this layer's (so a model checks a channels-first block on the channel axis)
    @property
    def input_argument(self) -> str:  # type: ignore[override]
        """The constructor argument of the block's first layer that fixes the input size.

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.Residual([fnn.BatchNorm2d(2), fnn.ReLU()]).input_argument
        'num_features'
        """
        return self.block[0].input_argument

    @property
    def feature_axis(self) -> int:  # type: ignore[override]
        """The input axis the block's first layer sizes (-1: the last, 0: channels first).

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.Residual([fnn.BatchNorm2d(2), fnn.ReLU()]).feature_axis
        0
        """
        return self.block[0].feature_axis

    @property
    def lengths_policy(self) -> str | None:  # type: ignore[override]
        """ "keep" when every layer of the block keeps the padded steps apart, "use" when some read
        the lengths (attention ...), None when one cannot honour them."""
        policies = {layer.lengths_policy for _, layer in self.sublayers()}
        if policies <= {"keep"}:
            return "keep"
        return "use" if policies <= {"keep", "use"} else None

    @property
    def lengths_refusal(self) -> str | None:
        """Why sequence lengths cannot reach the block, as a layer inside it says (a model's build
        error gives it), or None.

        Returns
        -------
        str or None
            The first reason a layer of the block gives (``TimeDistributed.lengths_refusal``).

        Examples
        --------
        >>> import fastnn as fnn
        >>> print(fnn.Residual([fnn.TimeDistributed(fnn.BatchNorm1d(3))]).lengths_refusal)
        None
        """
        for _, layer in self.sublayers():
            why = getattr(layer, "lengths_refusal", None)
            if why:
                return f"in its block, {layer!r}: {why}"
        return None

    def sublayers(self) -> list[tuple[str, Layer]]:
        named = [(f"block.{i}", layer) for i, layer in enumerate(self.block)]
        return named + ([("projection", self.projection)] if self.projection is not None else [])

    def build(self, input_shape, dtype):
        shape = normalize_shape(input_shape)
        super().build(shape, dtype)
        out = shape
        for i, layer in enumerate(self.block):
            refuse_user_child(self, layer, f"block layer {i}")
            where = f"inside {type(self).__name__}: block layer {i} ({layer!r})"
            problem = width_mismatch(layer, out)
            if problem is not None:
                raise ValueError(f"{where} receives {shape_str(out)} but {problem}")
            try:
                out = normalize_shape(layer.build(out, dtype))
            except ValueError as exc:
                raise ValueError(f"{where} cannot take {shape_str(out)}: {exc}") from None
        if out != shape:
            if not self.allow_projection or out[:-1] != shape[:-1]:
                raise ValueError(
                    f"Residual block maps {shape_str(shape)} to {shape_str(out)}, so x + block(x) is "
                    f"undefined; allow a projection (projection=True, for a change of the last axis "
                    f"only) or make the block end with the shape {shape_str(shape)}"
                )
            if self.projection is None:  # kept when build runs again (model.to)
                self.projection = Dense(shape[-1], out[-1], init="xavier_uniform", bias=False)
            self.projection.set_device(self.device)
            self.projection.build(shape, dtype)
        self.output_shape = out
        self._workspace = self.workspace(y=out, grad_x=shape)
        return out

    def forward_calls(self, x, ctx):
        calls, h = [], x
        for i, layer in enumerate(self.block):
            more, h = layer.forward_calls(h, ctx.child(i))
            calls += more
        skip = x
        if self.projection is not None:
            more, skip = self.projection.forward_calls(x, ctx.child("projection"))
            calls += more
        y = self._workspace(x.shape[0], ctx.arena)["y"]
        return calls + [(self.K.add, (flat_rows(h), flat_rows(skip), flat_rows(y)))], y

    def backward_calls(self, grad_y, ctx, need_grad_x):
        calls, grad = [], grad_y
        for i in range(len(self.block) - 1, -1, -1):
            more, grad = self.block[i].backward_calls(grad, ctx.child(i), True)
            calls += more
        grad_skip = grad_y
        if self.projection is not None:
            more, grad_skip = self.projection.backward_calls(grad_y, ctx.child("projection"), True)
            calls += more
        grad_x = self._workspace(grad_y.shape[0], ctx.arena)["grad_x"]
        return calls + [(self.K.add, (flat_rows(grad), flat_rows(grad_skip), flat_rows(grad_x)))], grad_x

    def get_config(self):
        from . import layer_to_config

        return {"block": [layer_to_config(layer) for layer in self.block], "projection": self.allow_projection}

    @classmethod
    def from_config(cls, config):
        """A new layer from ``get_config()``'s description (its inner layers' configs included).

        Parameters
        ----------
        config : dict
            What ``get_config()`` returned.

        Returns
        -------
        Layer
            A new, unbuilt layer.

        Examples
        --------
        >>> import fastnn as fnn
        >>> res = fnn.Residual([fnn.Dense(4, 4), fnn.ReLU()])
        >>> fnn.Residual.from_config(res.get_config())
        Residual([Dense(4, 4), ReLU()])
        """
        from . import layer_from_config

        return cls([layer_from_config(entry) for entry in config["block"]], projection=config["projection"])

    def extra_repr(self):
        proj = f", projection={self.projection!r}" if self.projection is not None else ""
        return f"[{', '.join(map(repr, self.block))}]{proj}"
