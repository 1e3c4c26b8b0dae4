"""Recurrent layers: RNN (tanh or ReLU), LSTM and GRU over (batch, time, features), as PyTorch's
``nn.RNN/LSTM/GRU`` with ``batch_first=True``: the same gate order, parameter names and shapes
(``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``, suffix ``_reverse``
for the backward direction), so a torch ``state_dict`` copies over directly.

One base class runs all three; the cells differ in their gate count and their scalar math
(:mod:`fastnn.kernels.recurrent`). Each layer and direction is one forward and one backward
kernel call on time-major buffers; the input and output are transposed once per call.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .. import _validation as V
from .. import init as initializers
from ..kernels.recurrent import CELLS
from ..kernels.recurrent import LSTM as LSTM_CODE
from .base import (
    Context,
    Layer,
    ParamSpec,
    check_built_input,
    non_default_arguments,
    normalize_shape,
    shape_str,
)
from .registry import register_layer


class _Buffers:
    """The arrays of one (arena, batch size, steps): time-major sequences, gates, states, gradients."""

    def __init__(self, layer: _Recurrent, batch: int, steps: int):
        T, B, H, D, L = steps, batch, layer.hidden_size, layer.directions, layer.num_layers
        G = layer.gates
        zeros = layer.zeros
        lstm, gru = layer._code == LSTM_CODE, layer.cell == "gru"
        self.x = zeros((T, B, layer.input_size))
        self.seq = [zeros((T, B, D * H)) for _ in range(L)]
        self.dropped = [zeros((T, B, D * H)) if layer._drops(k) else None for k in range(L)]
        self.masks = [
            zeros((T * B, layer.K.mask_bytes(D * H)), np.uint8) if layer._drops(k) else None for k in range(L)
        ]
        dummy = layer._dummy3
        self.gates = [zeros((T, B, G * H)) for _ in range(L * D)]
        self.aux = [zeros((T, B, H)) if gru else dummy for _ in range(L * D)]
        self.h_prev = [zeros((T, B, H)) for _ in range(L * D)]
        self.c_prev = [zeros((T, B, H)) if lstm else dummy for _ in range(L * D)]
        self.hw = zeros((B, G * H))
        self.h_n = zeros((L * D, B, H))
        self.c_n = zeros((L * D, B, H)) if lstm else None
        self.y = zeros((B, T, D * H) if layer.return_sequences else (B, D * H))
        # backward
        self.dgates = zeros((T, B, G * H))
        self.dgates_hh = zeros((T, B, G * H)) if gru else self.dgates
        self.dh, self.dc = zeros((B, H)), zeros((B, H)) if lstm else layer._dummy2
        self.grad_in = [zeros((T, B, layer.input_size if k == 0 else D * H)) for k in range(L)]
        self.grad_top = zeros((T, B, D * H))  # d loss / d last layer's sequence (zero without return_sequences)
        self.grad_h_n = zeros((L * D, B, H))  # d loss / d final states (only the last layer's may be nonzero)
        self.grad_h0 = zeros((L * D, B, H))
        self.grad_c0 = zeros((L * D, B, H)) if lstm else None
        self.grad_x = zeros((B, T, layer.input_size))


class _Recurrent(Layer):
    """Shared implementation of :class:`RNN`, :class:`LSTM` and :class:`GRU` (see their docs)."""

    input_argument = "input_size"
    attribute_aliases = {"units": "hidden_size"}  # Keras
    argument_attributes = {"use_bias": "bias"}
    any_steps = True
    cell = "lstm"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        dropout: float = 0.0,
        bidirectional: bool = False,
        return_sequences: bool = True,
        learn_initial_state: bool = False,
        *,
        init: str | None = None,
        bias_init: str | None = None,
    ):
        super().__init__()
        self.input_size = V.check_int(input_size, "input_size", minimum=1)
        self.hidden_size = V.check_int(hidden_size, "hidden_size", minimum=1)
        self.num_layers = V.check_int(num_layers, "num_layers", minimum=1)
        self.use_bias = V.check_bool(bias, "bias")
        self.dropout = V.check_float(dropout, "dropout", 0.0, 1.0, high_inclusive=False)
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn(
                f"dropout={self.dropout} applies between stacked layers only; with num_layers=1 it has "
                f"no effect (as in PyTorch)",
                UserWarning,
                stacklevel=3,
            )
        self.bidirectional = V.check_bool(bidirectional, "bidirectional")
        self.return_sequences = V.check_bool(return_sequences, "return_sequences")
        self.learn_initial_state = V.check_bool(learn_initial_state, "learn_initial_state")
        self.init = None if init is None else V.check_choice(init, initializers.INITIALIZERS, "init")
        self.bias_init = (
            None if bias_init is None else V.check_choice(bias_init, initializers.INITIALIZERS, "bias_init")
        )
        self._seed, self._stream = 0, 0
        self._step = np.zeros(1, np.int64)  # dropout masks drawn so far (saved: resuming is exact)
        self.first_row = np.zeros(1, np.int64)  # global row of the batch's row 0 (fastnn.distributed sets it)
        self._params: dict = {}
        self._grads: dict = {}

    # -- description --------------------------------------------------------------------------
    @property
    def lengths_policy(self) -> str:  # type: ignore[override]
        """ "use" (the output keeps the time axis and the lengths) or "drop" (return_sequences=False)."""
        return "use" if self.return_sequences else "drop"

    @property
    def _code(self) -> int:
        return CELLS[self.cell][0]

    @property
    def gates(self) -> int:
        """Gates per hidden unit: 4 (LSTM), 3 (GRU), 1 (RNN).

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.LSTM(2, 3).gates, fnn.GRU(2, 3).gates, fnn.RNN(2, 3).gates
        (4, 3, 1)
        """
        return CELLS[self.cell][1]

    @property
    def directions(self) -> int:
        """2 when ``bidirectional``, else 1.

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.GRU(2, 3).directions, fnn.GRU(2, 3, bidirectional=True).directions
        (1, 2)
        """
        return 2 if self.bidirectional else 1

    def _drops(self, k: int) -> bool:
        """Whether dropout follows layer k (between layers, not after the last)."""
        return self.dropout > 0 and k < self.num_layers - 1

    def expected_input_shape(self):
        return None  # the number of steps comes from the data (or the model's input_shape)

    def get_config(self):
        return {
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "bias": self.use_bias,
            "dropout": self.dropout,
            "bidirectional": self.bidirectional,
            "return_sequences": self.return_sequences,
            "learn_initial_state": self.learn_initial_state,
            "init": self.init,
            "bias_init": self.bias_init,
        }

    def extra_repr(self):
        parts = [str(self.input_size), str(self.hidden_size)]
        return ", ".join(parts + non_default_arguments(self, ("input_size", "hidden_size")))

    # -- construction -------------------------------------------------------------------------
    def build(self, input_shape, dtype):
        shape = normalize_shape(input_shape)
        if len(shape) != 2:
            raise ValueError(
                f"{self!r} takes input (batch, time, features), got {shape_str(shape)}; "
                + (
                    "add a time axis, e.g. Reshape((1, features)) or X[:, None, :]"
                    if len(shape) == 1
                    else "flatten the feature axes first, e.g. Reshape((time, -1))"
                )
            )
        if shape[1] != self.input_size:
            raise ValueError(
                f"{self!r} expects {self.input_size} features per step (the last axis) but receives "
                f"{shape_str(shape)}; set input_size to {shape[1]} or fix the previous layer"
            )
        super().build(shape, dtype)
        width = self.directions * self.hidden_size
        self.output_shape = (shape[0], width) if self.return_sequences else (width,)
        self._dummy3 = self.zeros((1, 1, 1))
        self._dummy2 = self.zeros((1, 1))
        self._zero_state = self.zeros((1, self.hidden_size))
        self._no_lengths = np.zeros(0, np.int64)
        self._sets: dict = {}
        if not self.use_bias:
            self._bias_zeros = self.zeros(self.gates * self.hidden_size)
            self._bias_grad_scratch = self.zeros(self.gates * self.hidden_size)
        return self.output_shape

    def _buffers(self, batch: int, steps: int, arena: str) -> _Buffers:
        """The buffers of (arena, batch, steps): a model always passes its built number of steps, the
        eager layer API may pass others (one step at a time with a carried state)."""
        key = (arena, batch, steps)
        found = self._sets.get(key)
        if found is None:
            found = self._sets[key] = _Buffers(self, batch, steps)
        return found

    def parameter_names(self, k: int, d: int) -> dict[str, str]:
        """The parameter names of one stacked layer and direction, as torch names them.

        Parameters
        ----------
        k : int
            The stacked layer, 0 to ``num_layers - 1``.
        d : int
            The direction: 0 forward, 1 reverse (``bidirectional``).

        Returns
        -------
        dict
            {"weight_ih", "weight_hh", "bias_ih", "bias_hh"} -> e.g. "weight_ih_l0_reverse".

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.LSTM(2, 3, num_layers=2, bidirectional=True).parameter_names(1, 1)["weight_ih"]
        'weight_ih_l1_reverse'
        """
        suffix = f"_l{k}" + ("_reverse" if d else "")
        return {p: f"{p}{suffix}" for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}

    def parameter_specs(self):
        G, H = self.gates, self.hidden_size
        bound = 1.0 / math.sqrt(H)

        def filler(name, fan_in):
            def fill(view, seed, stream):
                if name is None:  # torch's default: U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)) for every tensor
                    initializers.uniform(view, -bound, bound, seed=seed, stream=stream)
                else:  # fans in fastnn's (in, out) sense
                    initializers.initialize(view, name, fan_in, G * H, seed, stream)

            return fill

        weights, biases = [], []
        for k in range(self.num_layers):
            in_k = self.input_size if k == 0 else self.directions * H
            for d in range(self.directions):
                n = self.parameter_names(k, d)
                weights.append(ParamSpec(n["weight_ih"], (G * H, in_k), True, filler(self.init, in_k)))
                weights.append(ParamSpec(n["weight_hh"], (G * H, H), True, filler(self.init, H)))
                if self.use_bias:
                    biases.append(ParamSpec(n["bias_ih"], (G * H,), False, filler(self.bias_init, in_k)))
                    biases.append(ParamSpec(n["bias_hh"], (G * H,), False, filler(self.bias_init, H)))
        states = []
        if self.learn_initial_state:
            rows = self.num_layers * self.directions
            zero = lambda view, seed, stream: view.fill(0)  # noqa: E731
            states.append(ParamSpec("h0", (rows, H), False, zero))
            if self._code == LSTM_CODE:
                states.append(ParamSpec("c0", (rows, H), False, zero))
        return weights + biases + states

    def bind(self, params, grads):
        self._params, self._grads = dict(params), dict(grads)

    @property
    def parameter_arrays(self) -> dict[str, np.ndarray]:
        """{name: array} of the parameters bound to this layer (views of the model's flat buffer).

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.GRU(2, 3)], input_shape=(4, 2), seed=0)
        >>> {name: array.shape for name, array in model.layers[0].parameter_arrays.items()}
        {'weight_ih_l0': (9, 2), 'weight_hh_l0': (9, 3), 'bias_ih_l0': (9,), 'bias_hh_l0': (9,)}
        """
        return dict(self._params)

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
        >>> a, b = (fnn.GRU(2, 8, num_layers=2, dropout=0.5) for _ in range(2))
        >>> models = [fnn.Sequential([layer], input_shape=(3, 2), seed=0) for layer in (a, b)]
        >>> x = np.ones((1, 3, 2), np.float32)
        >>> np.array_equal(a.forward(x, training=True), b.forward(x, training=True))
        True
        >>> b.seed_rng(seed=0, stream=99)  # another stream: other masks between the layers
        >>> np.array_equal(a.forward(x, training=True), b.forward(x, training=True))
        False
        """
        self._seed, self._stream = seed, stream

    def buffers(self):
        return {"step": self._step} if self.dropout > 0 and self.num_layers > 1 else {}

    def _parameter(self, name: str, grad: bool = False):
        found = (self._grads if grad else self._params).get(name)
        if found is None:  # bias=False: zeros in, a scratch gradient out
            return self._bias_grad_scratch if grad else self._bias_zeros
        return found

    def _initial_rows(self, ctx, r: int):
        """(h0, c0) rows of direction-layer r: the given initial state (B, H), the learned one or zeros (1, H)."""
        given = getattr(ctx, "initial_state", None)
        if given is not None:
            h0, c0 = given
            return h0[r], (c0[r] if c0 is not None else self._dummy2)
        if self.learn_initial_state:
            h0 = self._params["h0"][r : r + 1]
            return h0, (self._params["c0"][r : r + 1] if self._code == LSTM_CODE else self._dummy2)
        return self._zero_state, (self._zero_state if self._code == LSTM_CODE else self._dummy2)

    # -- computation ----------------------------------------------------------------------------
    def forward_calls(self, x, ctx):
        K = self.K
        m, T = x.shape[0], x.shape[1]
        buf = self._buffers(m, T, ctx.arena)
        lengths = self._no_lengths if ctx.lengths is None else ctx.lengths
        ctx.buffers, ctx.lengths_arg, ctx.dropped = buf, lengths, ctx.training and self.dropout > 0
        H, D = self.hidden_size, self.directions
        calls = [(K.swap_leading_axes, (x, buf.x))]
        inputs = [buf.x]
        for k in range(self.num_layers):
            for d in range(D):
                r = k * D + d
                n = self.parameter_names(k, d)
                h0, c0 = self._initial_rows(ctx, r)
                c_n = buf.c_n[r] if buf.c_n is not None else self._dummy2
                calls.append(
                    (
                        K.recurrent_forward,
                        (
                            inputs[k],
                            self._params[n["weight_ih"]],
                            self._params[n["weight_hh"]],
                            self._parameter(n["bias_ih"]),
                            self._parameter(n["bias_hh"]),
                            h0,
                            c0,
                            lengths,
                            buf.gates[r],
                            buf.aux[r],
                            buf.h_prev[r],
                            buf.c_prev[r],
                            buf.hw,
                            buf.seq[k],
                            buf.h_n[r],
                            c_n,
                            self._code,
                            d == 1,
                            d * H,
                        ),
                    )
                )
            if k < self.num_layers - 1:
                if ctx.dropped:
                    calls.append(
                        (
                            K.dropout_forward_steps_from,
                            (
                                buf.seq[k],
                                buf.dropped[k],
                                buf.masks[k],
                                self.dropout,
                                self._seed,
                                self._stream,
                                self._step,
                                self.first_row,
                            ),
                        )
                    )
                    inputs.append(buf.dropped[k])
                else:
                    inputs.append(buf.seq[k])
        ctx.inputs = inputs
        ctx.final_state = (buf.h_n, buf.c_n)
        if self.return_sequences:
            calls.append((K.swap_leading_axes, (buf.seq[-1], buf.y)))
        else:
            calls.append((K.swap_leading_axes, (buf.h_n[(self.num_layers - 1) * D :], buf.y.reshape((m, D, H)))))
        return calls, buf.y

    def backward_calls(self, grad_y, ctx, need_grad_x):
        K = self.K
        buf = ctx.buffers
        m, T = grad_y.shape[0], buf.x.shape[0]
        H, D, L = self.hidden_size, self.directions, self.num_layers
        lstm = self._code == LSTM_CODE
        if self.return_sequences:
            calls = [(K.swap_leading_axes, (grad_y, buf.grad_top))]
        else:
            calls = [(K.swap_leading_axes, (grad_y.reshape((m, D, H)), buf.grad_h_n[(L - 1) * D :]))]
        grad_seq = buf.grad_top
        learned = self.learn_initial_state and getattr(ctx, "initial_state", None) is None
        for k in range(L - 1, -1, -1):
            wanted = need_grad_x or k > 0
            for d in range(D):
                r = k * D + d
                n = self.parameter_names(k, d)
                if learned:
                    g_h0 = self._grads["h0"][r : r + 1]
                    g_c0 = self._grads["c0"][r : r + 1] if lstm else self._dummy2
                else:
                    g_h0, g_c0 = buf.grad_h0[r], (buf.grad_c0[r] if lstm else self._dummy2)
                # the cell state's final gradient is zero: only h_n leaves the layer
                g_c_n = self._zero_state if lstm else self._dummy2
                calls.append(
                    (
                        K.recurrent_backward,
                        (
                            ctx.inputs[k],
                            self._params[n["weight_ih"]],
                            self._params[n["weight_hh"]],
                            ctx.lengths_arg,
                            buf.gates[r],
                            buf.aux[r],
                            buf.h_prev[r],
                            buf.c_prev[r],
                            grad_seq,
                            buf.grad_h_n[r],
                            g_c_n,
                            buf.dgates,
                            buf.dgates_hh,
                            buf.dh,
                            buf.dc,
                            buf.grad_in[k],
                            self._grads[n["weight_ih"]],
                            self._grads[n["weight_hh"]],
                            self._parameter(n["bias_ih"], True),
                            self._parameter(n["bias_hh"], True),
                            g_h0,
                            g_c0,
                            self._code,
                            d == 1,
                            d * H,
                            d == 1,
                            wanted,
                        ),
                    )
                )
            if k > 0:
                grad_seq = buf.grad_in[k]
                if ctx.dropped:
                    rows = grad_seq.reshape((T * m, D * H))
                    calls.append((K.dropout_backward, (rows, buf.masks[k - 1], rows, self.dropout)))
        ctx.grad_initial_state = None if learned else (buf.grad_h0, buf.grad_c0)
        if not need_grad_x:
            return calls, None
        calls.append((K.swap_leading_axes, (buf.grad_in[0], buf.grad_x)))
        return calls, buf.grad_x

    # -- the eager API with an initial state ---------------------------------------------------
    def plannable(self) -> bool:
        return True  # forward() only adds the eager initial_state option to forward_calls

    def forward(self, x, training: bool, initial_state=None):
        """Eager forward of this layer alone; ``initial_state``: None (zeros, or the learned state),
        ``h0`` (RNN, GRU) or ``(h0, c0)`` (LSTM), arrays (num_layers * directions, batch, hidden_size)
        as torch's. Afterwards :attr:`final_state` holds (h_n, c_n), and after :meth:`backward`,
        :attr:`grad_initial_state` the gradients of (h0, c0)."""
        x = check_built_input(self, x)
        ctx = Context(training, "eager")
        if initial_state is not None:
            ctx.initial_state = self._check_initial_state(initial_state, x.shape[0])  # type: ignore[attr-defined]
        return self._run_eager(x, ctx)

    def _check_initial_state(self, state, batch: int):
        lstm = self._code == LSTM_CODE
        if lstm and not (isinstance(state, (tuple, list)) and len(state) == 2):
            raise TypeError(f"initial_state of {self!r} must be a pair (h0, c0), got {type(state).__name__}")
        parts = tuple(state) if lstm else (state,)
        want = (self.num_layers * self.directions, batch, self.hidden_size)
        checked = []
        for name, part in zip(("h0", "c0"), parts):
            arr = np.ascontiguousarray(part, dtype=self.dtype)
            if arr.shape != want:
                raise ValueError(
                    f"initial_state's {name} must have shape (num_layers * directions, batch, "
                    f"hidden_size) = {want}, got {arr.shape}"
                )
            checked.append(arr)
        return checked[0], (checked[1] if lstm else None)

    def _eager(self, attribute: str):
        ctx = self._eager_ctx
        value = None if ctx is None else getattr(ctx, attribute, None)
        if value is None:
            return None
        h, c = value
        return (h, c) if self._code == LSTM_CODE else h

    @property
    def final_state(self):
        """h_n (RNN, GRU) or (h_n, c_n) (LSTM), (num_layers * directions, batch, hidden_size), of the
        last eager ``forward()`` (each sample's state at its last valid step).

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.LSTM(2, 3, num_layers=2)], input_shape=(4, 2), seed=0)
        >>> lstm = model.layers[0]
        >>> _ = lstm.forward(np.ones((5, 4, 2), np.float32), training=False)
        >>> h_n, c_n = lstm.final_state
        >>> h_n.shape, c_n.shape
        ((2, 5, 3), (2, 5, 3))
        """
        return self._eager("final_state")

    @property
    def grad_initial_state(self):
        """d loss / d h0 (or (d h0, d c0) for LSTM) of the last eager ``backward()``, shaped like
        the initial state; None when the state is learned (its gradient is then the parameter's).

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.GRU(2, 3)], input_shape=(4, 2), seed=0)
        >>> gru = model.layers[0]
        >>> y = gru.forward(np.ones((5, 4, 2), np.float32), training=True)
        >>> _ = gru.backward(np.ones_like(y))
        >>> gru.grad_initial_state.shape
        (1, 5, 3)
        """
        return self._eager("grad_initial_state")


_DOC = """{what} over ``(batch, time, input_size)``, as ``torch.nn.{torch}(..., batch_first=True)``.

    {math}
    Parameters ``weight_ih_l{{k}}`` (G*H, in), ``weight_hh_l{{k}}`` (G*H, H), ``bias_ih_l{{k}}``,
    ``bias_hh_l{{k}}`` (G*H,) (``_reverse`` for the backward direction) have torch's names and
    shapes. Sequence lengths on the context (after :class:`~fastnn.layers.Masking` or a masking
    Embedding) are honoured as torch's packed sequences: padded steps output 0, final states are
    each sample's last valid one. The eager ``forward(x, training, initial_state=...)`` takes a
    torch-shaped initial state.

    Parameters
    ----------
    input_size : int
        Features per step of the input.
    hidden_size : int
        H, the state width.{extra}
    num_layers : int, default 1
        Stacked layers.
    bias : bool, default True
        Whether the layers have biases.
    dropout : float, default 0.0
        Dropout between stacked layers (training only).
    bidirectional : bool, default False
        Also run each layer backwards in time (D = 2), the two halves concatenated.
    return_sequences : bool, default True
        Output ``(batch, time, D * hidden_size)``; False: ``(batch, D * hidden_size)``, the last
        layer's final state (torch's ``h_n[-D:]``).
    learn_initial_state : bool, default False
        Learn the initial state (parameters ``h0``{c0} of shape (num_layers * D, H)); else zeros.
    init : str, optional
        Initialiser of the weights; by default U(-1/sqrt(H), 1/sqrt(H)) as torch.
    bias_init : str, optional
        Initialiser of the biases; by default as torch.

    Raises
    ------
    ValueError
        For non-positive sizes or a dropout outside [0, 1).

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.{torch}(3, 5, bidirectional=True)], input_shape=(7, 3), seed=0)
    >>> y = model.predict(np.ones((2, 7, 3), np.float32))
    >>> y.shape, y.dtype
    ((2, 7, 10), dtype('float32'))
    """


@register_layer
class LSTM(_Recurrent):
    __doc__ = _DOC.format(
        what="Long short-term memory",
        torch="LSTM",
        c0=" and ``c0``",
        math="Gates i, f, g, o (G = 4): c' = f * c + i * g, h' = o * tanh(c').",
        extra="",
    )
    cell = "lstm"


@register_layer
class GRU(_Recurrent):
    __doc__ = _DOC.format(
        what="Gated recurrent unit",
        torch="GRU",
        c0="",
        math="Gates r, z, n (G = 3): n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) * n + z * h.",
        extra="",
    )
    cell = "gru"


@register_layer
class RNN(_Recurrent):
    __doc__ = _DOC.format(
        what="Elman recurrent network",
        torch="RNN",
        c0="",
        math="h' = tanh(W_ih x + b_ih + W_hh h + b_hh) (or relu: ``nonlinearity``; G = 1).",
        extra="\n    nonlinearity : {'tanh', 'relu'}, default 'tanh'\n        The cell's activation.",
    )

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        dropout: float = 0.0,
        bidirectional: bool = False,
        return_sequences: bool = True,
        learn_initial_state: bool = False,
        *,
        init: str | None = None,
        bias_init: str | None = None,
    ):
        self.nonlinearity = V.check_choice(nonlinearity, ("tanh", "relu"), "nonlinearity")
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            dropout,
            bidirectional,
            return_sequences,
            learn_initial_state,
            init=init,
            bias_init=bias_init,
        )

    @property
    def cell(self) -> str:  # type: ignore[override]
        return f"rnn_{self.nonlinearity}"

    def get_config(self):
        return {**super().get_config(), "nonlinearity": self.nonlinearity}


__all__ = ["GRU", "LSTM", "RNN"]
