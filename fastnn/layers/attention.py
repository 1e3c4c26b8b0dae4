"""Self-attention over sequences (batch, time, embed_dim): MultiHeadSelfAttention (PyTorch's
nn.MultiheadAttention parameterisation), the sinusoidal PositionalEncoding and the
TransformerEncoderBlock (torch.nn.TransformerEncoderLayer) built from them."""

from __future__ import annotations

import math

import numpy as np

from .. import _validation as V
from .. import backend
from .. import init as initializers
from ..kernels.attention import partials_shape, positional_table
from .base import (
    Layer,
    ParamSpec,
    flat_rows,
    rows,
    shape_str,
)
from .dense import Dense
from .dropout import Dropout
from .normalization import LayerNorm
from .registry import register_layer
from .residual import Residual
from .sequence import check_sequence, sequence_lengths


def _sequence_shape(layer: Layer, input_shape, features: int | None = None) -> tuple[int, ...]:
    """``input_shape`` as (time, features), checked: rank 2 and, if given, ``features`` on the last axis."""
    shape = check_sequence(layer, input_shape)
    if features is not None and shape[1] != features:
        raise ValueError(
            f"{layer!r} expects {features} features (the last axis) but receives input "
            f"{shape_str(shape)}; set embed_dim to {shape[1]} or fix the previous layer"
        )
    return shape


@register_layer
class MultiHeadSelfAttention(Layer):
    """Multi-head self-attention over (batch, time, embed_dim) -> (batch, time, embed_dim),
    equal to ``torch.nn.MultiheadAttention(embed_dim, num_heads, dropout, bias, batch_first=True)``
    called as ``mha(x, x, x, need_weights=False)``.

    Parameters have torch's names and shapes: in_proj_weight (3E, E) and in_proj_bias (3E,)
    ([q | k | v] rows), out_proj_weight (E, E) and out_proj_bias (E,); initialised as torch
    (Xavier-uniform in_proj, U(+-1/sqrt(E)) out_proj, zero biases). ``causal``: a query sees no
    later key. Sequence lengths (after Masking or a masking Embedding) mask the keys past each
    sample's length; outputs at padded steps are 0 and their inputs get no gradient.

    Parameters
    ----------
    embed_dim : int
        E, the features per step (input and output).
    num_heads : int
        Heads; E must be divisible by it.
    dropout : float, default 0.0
        Dropout of the attention weights in training (counter-based masks, as Dropout).
    causal : bool, default False
        A query sees no later key. Keyword-only, as ``bias``: torch's fourth positional argument
        is ``bias``, so ``MultiHeadSelfAttention(8, 2, 0.0, True)`` is refused, not read as causal.
    bias : bool, default True
        Whether the projections have biases.

    Raises
    ------
    ValueError
        When ``embed_dim`` is not divisible by ``num_heads`` (the message lists the counts that fit).

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.MultiHeadSelfAttention(8, 2, causal=True)], input_shape=(5, 8), seed=0)
    >>> y = model.predict(np.ones((3, 5, 8), np.float32))
    >>> y.shape, y.dtype
    ((3, 5, 8), dtype('float32'))
    """

    input_argument = "embed_dim"
    lengths_policy = "use"

    argument_attributes = {"use_bias": "bias"}

    def __init__(
        self, embed_dim: int, num_heads: int, dropout: float = 0.0, *, causal: bool = False, bias: bool = True
    ):
        super().__init__()
        self.embed_dim = V.check_int(embed_dim, "embed_dim", minimum=1)
        self.num_heads = V.check_int(num_heads, "num_heads", minimum=1)
        if self.embed_dim % self.num_heads:
            fits = [h for h in range(1, self.embed_dim + 1) if self.embed_dim % h == 0]
            raise ValueError(
                f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads}): "
                f"each head takes embed_dim / num_heads features; use num_heads in {fits}"
            )
        self.dropout = V.check_float(dropout, "dropout", 0.0, 1.0, high_inclusive=False)
        self.causal = V.check_bool(causal, "causal")
        self.use_bias = V.check_bool(bias, "bias")
        self._seed, self._stream = 0, 0
        self._step = np.zeros(1, np.int64)  # dropout masks drawn so far (saved: resuming is exact)
        self.first_row = np.zeros(1, np.int64)  # global row of the batch's row 0 (fastnn.distributed sets it)
        self.in_proj_weight = self.in_proj_bias = self.out_proj_weight = self.out_proj_bias = None

    def expected_input_shape(self):
        return None  # (time, embed_dim): the time axis is the data's

    def build(self, input_shape, dtype):
        steps, embed = _sequence_shape(self, input_shape, self.embed_dim)
        super().build((steps, embed), dtype)
        heads = (self.num_heads, steps, steps)
        scores = {"probs": heads, **({"probs_drop": heads} if self.dropout > 0 else {})}
        self._workspace = self.workspace(qkv=(steps, 3 * embed), context=(steps, embed), y=(steps, embed), **scores)
        self._grads = self.workspace(
            grad_z=(steps, embed),
            grad_context=(steps, embed),
            grad_scores=heads,
            grad_qkv=(steps, 3 * embed),
            grad_x=(steps, embed),
        )
        self._partials = self.zeros(partials_shape(steps, embed))
        if not self.use_bias:
            self.in_proj_bias, self.grad_in_proj_bias = self.zeros(3 * embed), self.zeros(3 * embed)
            self.out_proj_bias, self.grad_out_proj_bias = self.zeros(embed), self.zeros(embed)
        return self.output_shape

    def parameter_specs(self):
        e = self.embed_dim

        def init_in(view, seed, stream):
            initializers.initialize(view, "xavier_uniform", e, 3 * e, seed, stream)

        def init_out(view, seed, stream):
            bound = 1.0 / math.sqrt(e)  # torch's Linear default: kaiming_uniform(a=sqrt(5))
            initializers.uniform(view, -bound, bound, seed=seed, stream=stream)

        def init_zero(view, seed, stream):
            view[...] = 0

        specs = [
            ParamSpec("in_proj_weight", (3 * e, e), True, init_in),
            ParamSpec("out_proj_weight", (e, e), True, init_out),
        ]
        if self.use_bias:
            specs += [
                ParamSpec("in_proj_bias", (3 * e,), False, init_zero),
                ParamSpec("out_proj_bias", (e,), False, init_zero),
            ]
        return specs

    def bind(self, params, grads):
        for name in params:
            setattr(self, name, params[name])
            setattr(self, "grad_" + name, grads[name])

    def seed_rng(self, seed: int, stream: int) -> None:
        """Key this layer's dropout masks by the model's seed and its stream (the model calls it).

        Parameters
        ----------
        seed : int
            The model's seed.
        stream : int
            A number unique to this layer in the model.

        Examples
        --------
        >>> import fastnn as fnn
        >>> a, b = (fnn.MultiHeadSelfAttention(4, 2, dropout=0.5) for _ in range(2))
        >>> models = [fnn.Sequential([layer], input_shape=(3, 4), seed=0) for layer in (a, b)]
        >>> x = np.ones((1, 3, 4), np.float32)
        >>> np.array_equal(a.forward(x, training=True), b.forward(x, training=True))
        True
        >>> b.seed_rng(seed=0, stream=99)  # another stream: other masks
        >>> np.array_equal(a.forward(x, training=True), b.forward(x, training=True))
        False
        """
        self._seed, self._stream = seed, stream

    def buffers(self):
        return {"step": self._step} if self.dropout > 0 else {}

    def _partials_for(self, n_rows: int):
        shape = partials_shape(n_rows, self.embed_dim)
        if self._partials.shape[0] < shape[0]:
            self._partials = self.zeros(shape)
        return self._partials

    def _heads(self, buf):
        """(batch, H, T, T) -> (batch * H, T, T), the kernels' tasks."""
        return buf.reshape((-1, *buf.shape[2:]))

    def forward_calls(self, x, ctx):
        ws = self._workspace(x.shape[0], ctx.arena)
        e = self.embed_dim
        p = self.dropout if ctx.training else 0.0
        probs = self._heads(ws["probs"])
        ctx.x, ctx.lengths_arg = x, sequence_lengths(ctx)
        ctx.probs_drop = self._heads(ws["probs_drop"]) if p > 0 else probs
        args = (
            rows(x, e),
            self.in_proj_weight,
            self.in_proj_bias,
            self.out_proj_weight,
            self.out_proj_bias,
            rows(ws["qkv"], 3 * e),
            probs,
            ctx.probs_drop,
            rows(ws["context"], e),
            rows(ws["y"], e),
            ctx.lengths_arg,
            self.num_heads,
            self.causal,
            p,
            self._seed,
            self._stream,
            self._step,
            self.first_row,
        )
        return [(self.K.attention_forward_from, args)], ws["y"]

    def backward_calls(self, grad_y, ctx, need_grad_x):
        m = grad_y.shape[0]
        ws, gs = self._workspace(m, ctx.arena), self._grads(m, ctx.arena)
        e = self.embed_dim
        args = (
            rows(ctx.x, e),
            self.in_proj_weight,
            self.out_proj_weight,
            rows(ws["qkv"], 3 * e),
            self._heads(ws["probs"]),
            ctx.probs_drop,
            rows(ws["context"], e),
            rows(grad_y, e),
            ctx.lengths_arg,
            rows(gs["grad_z"], e),
            rows(gs["grad_context"], e),
            self._heads(gs["grad_scores"]),
            rows(gs["grad_qkv"], 3 * e),
            rows(gs["grad_x"], e),
            self.grad_in_proj_weight,
            self.grad_in_proj_bias,
            self.grad_out_proj_weight,
            self.grad_out_proj_bias,
            self._partials_for(m * self.input_shape[0]),
            self.num_heads,
            need_grad_x,
        )
        return [(self.K.attention_backward, args)], (gs["grad_x"] if need_grad_x else None)

    def get_config(self):
        return {
            "embed_dim": self.embed_dim,
            "num_heads": self.num_heads,
            "dropout": self.dropout,
            "causal": self.causal,
            "bias": self.use_bias,
        }


@register_layer
class PositionalEncoding(Layer):
    """Adds the sinusoidal position code to ``(batch, time, features)``, then dropout (the PyTorch
    tutorial's PositionalEncoding, batch first): ``pe[t, 2i] = sin(t / 10000^(2i / features))``,
    ``pe[t, 2i + 1] = cos(t / 10000^(2i / features))``. No parameters.

    Parameters
    ----------
    max_len : int, default 5000
        The longest sequence accepted.
    dropout : float, default 0.0
        Dropout after the addition (training only).

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.PositionalEncoding(max_len=10)], input_shape=(3, 4), seed=0)
    >>> model.predict(np.zeros((1, 3, 4), np.float32))[0, 1]     # the code of step 1
    array([0.8415, 0.5403, 0.01  , 0.9999], dtype=float32)
    """

    input_argument = "max_len"
    lengths_policy = "keep"

    def __init__(self, max_len: int = 5000, dropout: float = 0.0):
        super().__init__()
        self.max_len = V.check_int(max_len, "max_len", minimum=1)
        self.drop = Dropout(V.check_float(dropout, "dropout", 0.0, 1.0, high_inclusive=False))

    @property
    def dropout(self) -> float:
        """The dropout probability after the addition (training only): the inner Dropout's ``p``;
        setting it (checked as the constructor checks it) sets that ``p``.

        Examples
        --------
        >>> import fastnn as fnn
        >>> layer = fnn.PositionalEncoding(10)
        >>> layer.dropout = 0.25
        >>> layer.drop.p
        0.25
        """
        return self.drop.p

    @dropout.setter
    def dropout(self, value: float) -> None:
        self.drop.p = V.check_float(value, "dropout", 0.0, 1.0, high_inclusive=False)

    def expected_input_shape(self):
        return None

    def sublayers(self):
        return [("dropout", self.drop)]

    def seed_rng(self, seed, stream):
        """Key the random streams of the layers inside by the model's seed (the model calls it).

        Parameters
        ----------
        seed : int
            The model's seed.
        stream : int
            A number unique to this layer in the model; each child gets one derived from it.

        Examples
        --------
        >>> import fastnn as fnn
        >>> a, b = (fnn.PositionalEncoding(8, dropout=0.5) for _ in range(2))
        >>> models = [fnn.Sequential([layer], input_shape=(3, 4), seed=0) for layer in (a, b)]
        >>> x = np.ones((1, 3, 4), np.float32)
        >>> np.array_equal(a.forward(x, training=True), b.forward(x, training=True))
        True
        >>> b.seed_rng(seed=0, stream=99)  # another stream: other masks
        >>> np.array_equal(a.forward(x, training=True), b.forward(x, training=True))
        False
        """
        self.drop.seed_rng(seed, stream)

    def build(self, input_shape, dtype):
        steps, features = _sequence_shape(self, input_shape)
        if steps > self.max_len:
            raise ValueError(
                f"{self!r} encodes at most max_len={self.max_len} steps, got sequences of {steps} "
                f"steps {shape_str((steps, features))}; raise max_len to at least {steps}"
            )
        super().build((steps, features), dtype)
        table = positional_table(steps, features).astype(self.dtype).reshape(-1)
        self._table = backend.to_device(table, self.device)
        self._workspace = self.workspace(y=(steps, features))
        self.drop.build((steps, features), dtype)
        return self.output_shape

    def forward_calls(self, x, ctx):
        y = self._workspace(x.shape[0], ctx.arena)["y"]
        more, out = self.drop.forward_calls(y, ctx.child("dropout"))
        return [(self.K.add_positional, (flat_rows(x), self._table, flat_rows(y))), *more], out

    def backward_calls(self, grad_y, ctx, need_grad_x):
        return self.drop.backward_calls(grad_y, ctx.child("dropout"), True)  # d(x + pe)/dx = 1

    def get_config(self):
        return {"max_len": self.max_len, "dropout": self.dropout}


@register_layer
class TransformerEncoderBlock(Layer):
    """One Transformer encoder layer over (batch, time, embed_dim), equal to
    ``torch.nn.TransformerEncoderLayer(embed_dim, num_heads, ff_dim, dropout, activation,
    batch_first=True, norm_first=norm_first)``:

    post-norm: x = LayerNorm(x + Dropout(attention(x))); x = LayerNorm(x + Dropout(ff(x)))
    pre-norm:  x = x + Dropout(attention(LayerNorm(x))); x = x + Dropout(ff(LayerNorm(x)))

    with ff = Dense(ff_dim, activation) -> Dropout -> Dense(embed_dim), built from
    :class:`MultiHeadSelfAttention`, Residual, LayerNorm, Dense and Dropout (parameter names say
    where each lives: ``attention.block.0.in_proj_weight`` ...). Sequence lengths go to the
    attention (its lengths_policy "use").

    Parameters
    ----------
    embed_dim : int
        Features per step (input and output).
    num_heads : int
        Attention heads; ``embed_dim`` must be divisible by it.
    ff_dim : int
        The feed-forward network's hidden width.
    dropout : float, default 0.0
        Dropout of the attention weights, after the attention and in the feed-forward network.
    activation : {"relu", "gelu"}, default "relu"
        The feed-forward network's activation.
    norm_first : bool, default False
        Pre-norm instead of post-norm. Keyword-only, as ``causal``: torch's sixth positional
        argument is ``layer_norm_eps``.
    causal : bool, default False
        A query sees no later key.

    Examples
    --------
    >>> import fastnn as fnn
    >>> block = fnn.TransformerEncoderBlock(8, num_heads=2, ff_dim=16)
    >>> model = fnn.Sequential([block], input_shape=(5, 8), seed=0)
    >>> model.predict(np.ones((2, 5, 8), np.float32)).shape
    (2, 5, 8)
    """

    input_argument = "embed_dim"
    lengths_policy = "use"

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        ff_dim: int,
        dropout: float = 0.0,
        activation: str = "relu",
        *,
        norm_first: bool = False,
        causal: bool = False,
    ):
        super().__init__()
        self.embed_dim = V.check_int(embed_dim, "embed_dim", minimum=1)
        self.ff_dim = V.check_int(ff_dim, "ff_dim", minimum=1)
        self.dropout = V.check_float(dropout, "dropout", 0.0, 1.0, high_inclusive=False)
        self.activation = V.check_choice(activation, ("relu", "gelu"), "activation")  # torch's two
        self.norm_first = V.check_bool(norm_first, "norm_first")
        attention = MultiHeadSelfAttention(embed_dim, num_heads, dropout, causal=causal)
        self.num_heads, self.causal = attention.num_heads, attention.causal
        e, p = self.embed_dim, self.dropout
        ff = [Dense(e, self.ff_dim, activation=self.activation), Dropout(p), Dense(self.ff_dim, e), Dropout(p)]
        self.parts: list[tuple[str, Layer]]
        if self.norm_first:
            self.parts = [
                ("attention", Residual([LayerNorm(e), attention, Dropout(p)])),
                ("feedforward", Residual([LayerNorm(e), *ff])),
            ]
        else:
            self.parts = [
                ("attention", Residual([attention, Dropout(p)])),
                ("norm1", LayerNorm(e)),
                ("feedforward", Residual(ff)),
                ("norm2", LayerNorm(e)),
            ]

    def expected_input_shape(self):
        return None

    def sublayers(self):
        return list(self.parts)

    def build(self, input_shape, dtype):
        shape = _sequence_shape(self, input_shape, self.embed_dim)
        super().build(shape, dtype)
        for _, layer in self.parts:
            shape = layer.build(shape, dtype)
        return self.output_shape

    def forward_calls(self, x, ctx):
        calls, h = [], x
        for prefix, layer in self.parts:
            more, h = layer.forward_calls(h, ctx.child(prefix))
            calls += more
        return calls, h

    def backward_calls(self, grad_y, ctx, need_grad_x):
        calls, grad = [], grad_y
        for prefix, layer in reversed(self.parts):
            more, grad = layer.backward_calls(grad, ctx.child(prefix), True)
            calls += more
        return calls, grad

    def get_config(self):
        return {
            "embed_dim": self.embed_dim,
            "num_heads": self.num_heads,
            "ff_dim": self.ff_dim,
            "dropout": self.dropout,
            "activation": self.activation,
            "norm_first": self.norm_first,
            "causal": self.causal,
        }


__all__ = ["MultiHeadSelfAttention", "PositionalEncoding", "TransformerEncoderBlock"]
