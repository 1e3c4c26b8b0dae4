"""Layers that change the sequence shape: LastStep ((batch, time, F) -> (batch, F)) and
TimeDistributed (any layer applied to every step)."""

from __future__ import annotations

import numpy as np

from .base import (
    Context,
    Layer,
    normalize_shape,
    refuse_user_child,
    shape_str,
    walk_layers,
)
from .registry import register_layer

_NO_LENGTHS = np.zeros(0, np.int64)  # the kernels' "every step is valid"


def sequence_lengths(ctx: Context):
    """The sequence lengths of a call as the kernels take them (an empty array: every step valid)."""
    return _NO_LENGTHS if ctx.lengths is None else ctx.lengths


def check_sequence(layer: Layer, input_shape, rank: int | None = 2) -> tuple[int, ...]:
    """``input_shape`` (time, ...) of a sequence layer, of ``rank`` axes per sample when given."""
    shape = normalize_shape(input_shape)
    if rank is not None and len(shape) != rank:
        raise ValueError(
            f"{layer!r} takes sequences (batch, time, features), got input {shape_str(shape)}; "
            f"reshape to (batch, time, features) or put it after a layer that outputs that"
        )
    return shape


def _unmasked_batch_norm(layer: Layer) -> tuple[Layer, Layer] | None:
    """``(container, batch_norm)`` of a BatchNorm in ``layer`` that would not get the rows' sequence
    steps (``Context.step_rows``) when ``layer`` runs inside :class:`TimeDistributed` on padded
    steps, else None. They reach a BatchNorm that is ``layer`` itself or sits in containers whose
    children run on the same rows with child contexts (Residual's block and projection,
    TimeDistributed), at any depth; not one inside any other layer that holds layers."""
    from .normalization import BatchNorm1d
    from .residual import Residual

    if isinstance(layer, BatchNorm1d):
        return None
    children = [child for _, child in layer.sublayers()]
    if isinstance(layer, (Residual, TimeDistributed)):
        for child in children:
            found = _unmasked_batch_norm(child)
            if found is not None:
                return found
        return None
    for inner in walk_layers(children):
        if isinstance(inner, BatchNorm1d):
            return layer, inner
    return None


@register_layer
class LastStep(Layer):
    """Each sample's last valid step: ``(batch, time, features)`` -> ``(batch, features)``.

    With sequence lengths (after :class:`Masking` or a masking Embedding), step ``length - 1``
    of each sample, else the last one (``x[:, -1]``). The gradient goes to that step only.

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.LastStep()], input_shape=(3, 2), seed=0)
    >>> model.predict(np.arange(6, dtype=np.float32).reshape(1, 3, 2))
    array([[4., 5.]], dtype=float32)
    """

    input_argument = "input shape"
    lengths_policy = "drop"

    def build(self, input_shape, dtype):
        shape = check_sequence(self, input_shape)
        super().build(shape, dtype)
        self.output_shape = (shape[1],)
        self._workspace = self.workspace(y=self.output_shape, grad_x=shape)
        return self.output_shape

    def forward_calls(self, x, ctx):
        y = self._workspace(x.shape[0], ctx.arena)["y"]
        ctx.lengths_arg = sequence_lengths(ctx)
        return [(self.K.last_step_forward, (x, ctx.lengths_arg, y))], y

    def backward_calls(self, grad_y, ctx, need_grad_x):
        grad_x = self._workspace(grad_y.shape[0], ctx.arena)["grad_x"]
        return [(self.K.last_step_backward, (grad_y, ctx.lengths_arg, grad_x))], grad_x


@register_layer
class TimeDistributed(Layer):
    """Applies ``layer`` to every step, like Keras' TimeDistributed: ``(batch, time, *rest)`` ->
    ``(batch, time, *out)``, the inner layer built on ``rest`` and run on the batch * time rows.

    Steps are independent, so padded steps stay apart (lengths_policy "keep"; the inner layer
    sees no lengths). A BatchNorm mixes rows through its batch statistics: with lengths it takes
    them over the valid steps only (Keras 3's masked BatchNormalization; ``ctx.step_rows`` hands
    it the lengths and the rows per sample and per step), whether it is the inner layer itself or
    sits deeper, in a Residual block or a nested TimeDistributed, at any depth. A BatchNorm inside
    another layer that holds layers (a user-written container) would count the padded steps, so
    a model refuses lengths arriving at such a TimeDistributed when it is built.

    Parameters
    ----------
    layer : Layer
        The layer applied to each step.

    Raises
    ------
    TypeError
        When ``layer`` is not a Layer.
    ValueError
        When built with ``layer`` marking padded steps (Masking, a masking Embedding): those must
        be the model's first layer.

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.TimeDistributed(fnn.Conv1d(1, 2, 3))], input_shape=(5, 1, 8), seed=0)
    >>> model.predict(np.ones((2, 5, 1, 8), np.float32)).shape
    (2, 5, 2, 6)
    """

    input_argument = "input shape"

    @property
    def lengths_policy(self) -> str | None:  # type: ignore[override]
        """ "keep" (each step on its own; a BatchNorm inside takes the valid steps' statistics), or
        None when a BatchNorm inside sits in a container that would not hand it the steps' rows
        (:attr:`lengths_refusal` says which).

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.TimeDistributed(fnn.Residual([fnn.Dense(3, 3), fnn.BatchNorm1d(3)])).lengths_policy
        'keep'
        """
        return "keep" if _unmasked_batch_norm(self.layer) is None else None

    @property
    def lengths_refusal(self) -> str | None:
        """Why sequence lengths cannot reach this layer (the model's build error says it), or None.

        Returns
        -------
        str or None
            Names the BatchNorm inside that would count padded steps and the layer holding it.

        Examples
        --------
        >>> import fastnn as fnn
        >>> print(fnn.TimeDistributed(fnn.Residual([fnn.BatchNorm1d(3)])).lengths_refusal)
        None
        """
        found = _unmasked_batch_norm(self.layer)
        if found is None:
            return None
        container, norm = found
        return (
            f"{norm!r} inside {container!r} would take its batch statistics over the padded steps too "
            f"(TimeDistributed hands the valid steps to a BatchNorm that is its layer or sits in Residual "
            f"blocks and nested TimeDistributed layers only); put the BatchNorm there, or remove the masking"
        )

    def __init__(self, layer: Layer):
        super().__init__()
        if not isinstance(layer, Layer):
            raise TypeError(f"TimeDistributed wraps one fastnn layer, e.g. TimeDistributed(Conv1d(...)), got {layer!r}")
        self.layer = layer

    def expected_input_shape(self):
        return None

    def sublayers(self):
        return [("layer", self.layer)]

    def build(self, input_shape, dtype):
        shape = check_sequence(self, input_shape, rank=None)
        if len(shape) < 2:
            raise ValueError(
                f"{self!r} takes (batch, time, *step_shape), got input {shape_str(shape)}; add the "
                f"step axes (e.g. (batch, time, features))"
            )
        super().build(shape, dtype)
        refuse_user_child(self, self.layer, "its layer")
        marking = [inner for inner in walk_layers([self.layer]) if getattr(inner, "produces_lengths", False)]
        if marking:
            raise ValueError(
                f"{self!r}: {marking[0]!r} marks padded steps of the model's input and must be the "
                f"model's first layer; inside TimeDistributed its marks would be lost. Put it first, "
                f"before the TimeDistributed layer"
            )
        inner = normalize_shape(self.layer.build(shape[1:], dtype))
        self.output_shape = (shape[0], *inner)
        return self.output_shape

    def child_parameter_prefix(self, child):
        return ""  # the inner layer's parameters keep their names ("0.weight"), the sublayer is "0.layer"

    def _inner_context(self, ctx: Context, steps: int) -> Context:
        inner = ctx.child("layer")
        inner.lengths = None  # the inner layer's batch is batch * time steps
        # rows b * steps + t: a BatchNorm inside (the only layer the lengths reach there, at any
        # depth: lengths_policy) takes its statistics over the valid steps' rows
        if ctx.lengths is not None:
            inner.step_rows = (ctx.lengths, steps, 1)
        elif ctx.step_rows is not None:  # inside another TimeDistributed: each of its rows is `steps` rows here
            lengths, per_sample, per_step = ctx.step_rows
            inner.step_rows = (lengths, per_sample * steps, per_step * steps)
        else:
            inner.step_rows = None
        return inner

    def forward_calls(self, x, ctx):
        m, steps = x.shape[0], self.input_shape[0]
        calls, y = self.layer.forward_calls(
            x.reshape((m * steps, *self.input_shape[1:])), self._inner_context(ctx, steps)
        )
        return calls, y.reshape((m, *self.output_shape))

    def backward_calls(self, grad_y, ctx, need_grad_x):
        m, steps = grad_y.shape[0], self.input_shape[0]
        g = grad_y.reshape((m * steps, *self.output_shape[1:]))
        calls, grad_x = self.layer.backward_calls(g, self._inner_context(ctx, steps), need_grad_x)
        return calls, (None if grad_x is None else grad_x.reshape((m, *self.input_shape)))

    def get_config(self):
        from . import layer_to_config

        return {"layer": layer_to_config(self.layer)}

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
        >>> layer = fnn.TimeDistributed(fnn.Dense(3, 2))
        >>> fnn.TimeDistributed.from_config(layer.get_config())
        TimeDistributed(Dense(3, 2))
        """
        from . import layer_from_config

        return cls(layer_from_config(config["layer"]))

    def extra_repr(self):
        return repr(self.layer)


__all__ = ["LastStep", "TimeDistributed", "check_sequence", "sequence_lengths"]
