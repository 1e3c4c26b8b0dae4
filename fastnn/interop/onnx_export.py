"""ONNX export of a built :class:`fastnn.Sequential`, in evaluation mode (what ``predict`` computes).

The graph takes ``input`` (batch, *model.input_shape) and gives ``output`` (batch,
*model.output_shape); the batch axis is dynamic, every other axis is the model's. Dropout is the
identity, batch norm uses its running statistics. The graph is float32 (a float64 model's
weights are rounded to float32: onnxruntime's CPU kernels for Conv, LSTM, ... are float32 only);
an Embedding model takes int64 indices. One function per layer kind writes its nodes; a layer
that ONNX cannot express faithfully (a user layer) is refused with an error naming it, never
exported approximately.

Sequence lengths (``Masking``, ``Embedding(mask_padding=True)``) are computed in the graph from
the input, as fastnn does (a sample's length: its last step holding a value other than the
mask value, plus one), and reach the layers that read them: the recurrent operators' sequence_lens,
a key mask and zeroed padded rows in attention, each sample's last valid step (LastStep) and its
mean over valid steps (GlobalAvgPool(axis="time")). fastnn refuses a sample that is padding at
every step; the graph has no way to refuse, and computes something for it.
"""

from __future__ import annotations

import math
import os

import numpy as np

from .. import backend
from .. import layers as L
from ..kernels.activations import SELU_ALPHA, SELU_SCALE
from ..kernels.attention import positional_table
from ._common import handler_for, layer_parameters

#: the opsets the exporter writes (LayerNormalization needs 17; 18 moved ReduceMean's axes to an input)
MIN_OPSET = 17
DEFAULT_OPSET = 17


def _host(array) -> np.ndarray:
    """A float32 NumPy copy of a parameter or buffer (on any device)."""
    return backend.host_copy(array).astype(np.float32)


class _Graph:
    """The nodes and initializers of the graph being written; names are unique by a counter."""

    def __init__(self, opset: int):
        from onnx import TensorProto, helper, numpy_helper

        self.helper, self.numpy_helper, self.types = helper, numpy_helper, TensorProto
        self.opset = opset
        self.lengths: str | None = None  # int64 (batch,) valid steps per sample, while sequence lengths travel
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value, hint: str = "const") -> str:
        """An initializer holding ``value`` (float arrays as float32, integers as int64)."""
        arr = np.asarray(value)
        arr = arr.astype(np.int64 if arr.dtype.kind in "iub" else np.float32)
        name = self.name(hint)
        self.initializers.append(self.numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, inputs, outputs: int = 1, **attrs):
        """Append one node; returns its output name (or the list of ``outputs`` names)."""
        names = [self.name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(self.helper.make_node(op_type, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names

    def reduce(self, op: str, x: str, axes, keepdims: bool) -> str:
        """ReduceMean/ReduceMax/ReduceSum over ``axes`` (an attribute before opset 18, 13 for ReduceSum)."""
        if self.opset >= (13 if op == "ReduceSum" else 18):
            return self.op(op, [x, self.const(list(axes))], keepdims=int(keepdims))
        return self.op(op, [x], axes=list(axes), keepdims=int(keepdims))

    def reduce_mean(self, x: str, axes, keepdims: bool) -> str:
        return self.reduce("ReduceMean", x, axes, keepdims)

    def cast(self, x: str, to: str) -> str:
        return self.op(
            "Cast", [x], to={"int64": self.types.INT64, "int32": self.types.INT32, "float": self.types.FLOAT}[to]
        )

    def valid_steps(self, steps: int, to: str = "float") -> str:
        """(batch, steps): 1 at each sample's valid steps, 0 at its padding (as ``to``: "float" or "bool")."""
        if self.lengths is None:
            raise RuntimeError("valid_steps needs the sequence lengths: call set_lengths first")
        valid = self.op("Less", [self.const(np.arange(steps)[None]), self.reshape(self.lengths, [-1, 1])])
        return valid if to == "bool" else self.cast(valid, to)

    def set_lengths(self, nonpadding: str, steps: int) -> None:
        """Sequence lengths from ``nonpadding`` (batch, steps) int64, 1 at steps holding a value:
        the last such step + 1."""
        positions = self.op("Mul", [nonpadding, self.const(np.arange(1, steps + 1))])
        self.lengths = self.reduce("ReduceMax", positions, [1], False)

    def reshape(self, x: str, shape) -> str:
        """Reshape to ``shape`` (0: that axis of x, -1: inferred)."""
        return self.op("Reshape", [x, self.const(list(shape))])

    def linear(self, x: str, weight: np.ndarray, bias: np.ndarray | None) -> str:
        """x @ weight (+ bias) over the last axis of x; weight (in, out)."""
        y = self.op("MatMul", [x, self.const(weight, "weight")])
        return y if bias is None else self.op("Add", [y, self.const(bias, "bias")])


# -- one writer per layer kind: (graph, layer, input name) -> output name ---------------------------------------


def _activation(g: _Graph, name: str, alpha: float, x: str) -> str:
    """fastnn's activation ``name`` (:data:`fastnn.kernels.activations.ACTIVATIONS`) of x."""
    simple = {"identity": "Identity", "sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu"}
    if name in simple:
        return x if name == "identity" else g.op(simple[name], [x])
    if name == "leaky_relu":
        return g.op("LeakyRelu", [x], alpha=alpha)
    if name == "elu":
        return g.op("Elu", [x], alpha=alpha)
    if name == "selu":
        return g.op("Selu", [x], alpha=SELU_ALPHA, gamma=SELU_SCALE)
    if name in ("softmax", "log_softmax"):
        return g.op("Softmax" if name == "softmax" else "LogSoftmax", [x], axis=-1)
    half = g.const(np.float32(0.5))
    if name == "gelu":  # 0.5 x (1 + erf(x / sqrt 2)), the exact form fastnn computes
        inner = g.op("Erf", [g.op("Mul", [x, g.const(np.float32(math.sqrt(0.5)))])])
    elif name == "gelu_tanh":  # 0.5 x (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3))), z = x clamped to [-10, 10]
        z = g.op("Clip", [x, g.const(np.float32(-10.0)), g.const(np.float32(10.0))])
        cube = g.op("Mul", [g.op("Mul", [z, z]), z])
        poly = g.op("Add", [z, g.op("Mul", [cube, g.const(np.float32(0.044715))])])
        inner = g.op("Tanh", [g.op("Mul", [poly, g.const(np.float32(math.sqrt(2.0 / math.pi)))])])
    else:
        raise NotImplementedError(f"activation {name!r} has no ONNX export")
    return g.op("Mul", [g.op("Mul", [x, half]), g.op("Add", [inner, g.const(np.float32(1.0))])])


def _dense(g, layer, x):
    z = g.linear(x, _host(layer.weight), _host(layer.bias) if layer.use_bias else None)
    return _activation(g, layer.activation, layer.alpha, z)


def _activation_layer(g, layer, x):
    return _activation(g, layer.activation, layer.alpha, x)


def _identity(g, layer, x):
    return x  # Dropout (evaluation), PositionalEncoding's dropout


def _batchnorm(g, layer, x):
    c = layer.num_features
    scale = _host(layer.weight) if layer.affine else np.ones(c, np.float32)
    shift = _host(layer.bias) if layer.affine else np.zeros(c, np.float32)
    if layer.track_running_stats:
        args = [
            x,
            g.const(scale),
            g.const(shift),
            g.const(_host(layer.running_mean)),
            g.const(_host(layer.running_var)),
        ]
        return g.op("BatchNormalization", args, epsilon=layer.eps)
    # no running statistics: evaluation normalises with the batch's (biased) statistics, per channel
    axes = [0, *range(2, len(layer.input_shape) + 1)]
    per_channel = (c, *([1] * (len(layer.input_shape) - 1)))
    centred = g.op("Sub", [x, g.reduce_mean(x, axes, True)])
    var = g.reduce_mean(g.op("Mul", [centred, centred]), axes, True)
    inv_std = g.op("Reciprocal", [g.op("Sqrt", [g.op("Add", [var, g.const(np.float32(layer.eps))])])])
    y = g.op("Mul", [g.op("Mul", [centred, inv_std]), g.const(scale.reshape(per_channel))])
    return g.op("Add", [y, g.const(shift.reshape(per_channel))])


def _layernorm(g, layer, x):
    f = layer.num_features
    scale = _host(layer.weight) if layer.affine else np.ones(f, np.float32)
    shift = _host(layer.bias) if layer.affine else np.zeros(f, np.float32)
    return g.op("LayerNormalization", [x, g.const(scale), g.const(shift)], axis=-1, epsilon=layer.eps)


def _residual(g, layer, x):
    h = _layers(g, layer.block, x)
    skip = x if layer.projection is None else g.linear(x, _host(layer.projection.weight), None)
    return g.op("Add", [h, skip])


def _conv(g, layer, x):
    pads = layer.pads()
    inputs = [x, g.const(_host(layer.weight), "weight")]
    if layer.use_bias:
        inputs.append(g.const(_host(layer.bias), "bias"))
    z = g.op(
        "Conv",
        inputs,
        kernel_shape=list(layer.kernel_size),
        strides=list(layer.stride),
        dilations=list(layer.dilation),
        pads=[lo for lo, _ in pads] + [hi for _, hi in pads],
        group=layer.groups,
    )
    return _activation(g, layer.activation, layer.alpha, z)


def _pool(g, layer, x):
    attrs = dict(kernel_shape=list(layer.kernel_size), strides=list(layer.stride), pads=list(layer.padding) * 2)
    if layer.mode == "max":
        return g.op("MaxPool", [x], **attrs)
    return g.op("AveragePool", [x], count_include_pad=int(layer.count_include_pad), **attrs)


def _global_avgpool(g, layer, x):
    if layer.axis == "time" and g.lengths is not None:  # the mean over each sample's valid steps
        steps = layer.input_shape[0]
        total = g.reduce("ReduceSum", g.op("Mul", [x, g.reshape(g.valid_steps(steps), [0, steps, 1])]), [1], False)
        count = g.reshape(g.cast(g.lengths, "float"), [-1, 1])
        g.lengths = None
        return g.op("Div", [total, count])
    if layer.axis == "time":
        return g.reduce_mean(x, [1], False)
    return g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)


def _reshape(g, layer, x):
    return g.reshape(x, [0, *layer.output_shape])


def _embedding(g, layer, x):
    if layer.mask_padding:
        nonpadding = g.op("Not", [g.op("Equal", [x, g.const(np.int64(layer.padding_idx))])])
        g.set_lengths(g.cast(nonpadding, "int64"), layer.input_shape[0])
    return g.op("Gather", [g.const(_host(layer.weight), "weight"), x], axis=0)


def _masking(g, layer, x):
    padding = g.op("Equal", [x, g.const(np.float32(layer.mask_value))])  # (batch, time, ...)
    per_value = g.reshape(g.cast(g.op("Not", [padding]), "int64"), [0, 0, -1])
    g.set_lengths(g.reduce("ReduceMax", per_value, [2], False), layer.input_shape[0])
    return x


_GATE_ORDER = {"lstm": [0, 3, 1, 2], "gru": [1, 0, 2]}  # ONNX's gate blocks (iofc, zrh) in torch's (ifgo, rzn)


def _recurrent(g, layer, x):
    H, D = layer.hidden_size, layer.directions
    order = _GATE_ORDER.get(layer.cell, [0])
    params = layer_parameters(layer)

    def gates(name):  # (G*H, ...) in ONNX's gate order
        w = _host(params[name])
        return np.concatenate([w[k * H : (k + 1) * H] for k in order])

    seq = g.op("Transpose", [x], perm=[1, 0, 2])  # (T, B, F): ONNX's default layout
    batch = g.op("Shape", [x], start=0, end=1)
    attrs = dict(hidden_size=H, direction="bidirectional" if D == 2 else "forward")
    if layer.cell == "gru":
        attrs["linear_before_reset"] = 1  # torch's GRU: r * (W_hn h + b_hn)
    elif layer.cell != "lstm":
        attrs["activations"] = ["Relu" if layer.nonlinearity == "relu" else "Tanh"] * D
    op = {"lstm": "LSTM", "gru": "GRU"}.get(layer.cell, "RNN")
    y_h = None
    for k in range(layer.num_layers):
        names = [layer.parameter_names(k, d) for d in range(D)]
        w = g.const(np.stack([gates(n["weight_ih"]) for n in names]), "W")
        r = g.const(np.stack([gates(n["weight_hh"]) for n in names]), "R")
        b = (
            g.const(np.stack([np.concatenate([gates(n["bias_ih"]), gates(n["bias_hh"])]) for n in names]), "B")
            if layer.use_bias
            else ""
        )
        lengths = "" if g.lengths is None else g.cast(g.lengths, "int32")
        inputs = [seq, w, r, b, lengths, *_initial_states(g, layer, k, batch)]
        y, y_h = g.op(op, inputs, outputs=2, **attrs)  # Y (T, D, B, H), Y_h (D, B, H)
        seq = g.reshape(g.op("Transpose", [y], perm=[0, 2, 1, 3]), [0, 0, D * H])
    if layer.return_sequences:
        return g.op("Transpose", [seq], perm=[1, 0, 2])
    g.lengths = None  # the time axis ends here
    return g.reshape(g.op("Transpose", [y_h], perm=[1, 0, 2]), [0, D * H])


def _initial_states(g, layer, k: int, batch: str) -> list[str]:
    """The initial_h (and initial_c) inputs of stacked layer k: the learned states broadcast over
    the batch, or none (zeros)."""
    if not layer.learn_initial_state:
        return []
    D, H = layer.directions, layer.hidden_size
    shape = g.op("Concat", [g.const([D]), batch, g.const([H])], axis=0)
    names = ["h0", "c0"] if layer.cell == "lstm" else ["h0"]
    rows = [_host(layer_parameters(layer)[n])[k * D : (k + 1) * D].reshape(D, 1, H) for n in names]
    return [g.op("Expand", [g.const(r, n), shape]) for r, n in zip(rows, names)]


def _attention(g, layer, x):
    e, heads = layer.embed_dim, layer.num_heads
    d, steps = e // heads, layer.input_shape[0]
    w_in, w_out = _host(layer.in_proj_weight), _host(layer.out_proj_weight)
    b_in, b_out = (_host(layer.in_proj_bias), _host(layer.out_proj_bias)) if layer.use_bias else (None, None)

    def project(part: int, perm):  # rows [part * e, (part + 1) * e) of in_proj: (B, heads, T, d) by perm
        rows = slice(part * e, (part + 1) * e)
        h = g.linear(x, w_in[rows].T, None if b_in is None else b_in[rows])
        return g.op("Transpose", [g.reshape(h, [0, 0, heads, d])], perm=perm)

    q, k, v = project(0, [0, 2, 1, 3]), project(1, [0, 2, 3, 1]), project(2, [0, 2, 1, 3])
    scores = g.op("Mul", [g.op("MatMul", [q, k]), g.const(np.float32(1.0 / math.sqrt(d)))])
    if layer.causal:  # a query sees no later key
        scores = g.op("Add", [scores, g.const(np.triu(np.full((steps, steps), -np.inf, np.float32), 1))])
    if g.lengths is not None:  # no query sees a padded key
        blocked = g.op("Where", [g.valid_steps(steps, "bool"), g.const(np.float32(0.0)), g.const(np.float32(-np.inf))])
        scores = g.op("Add", [scores, g.reshape(blocked, [-1, 1, 1, steps])])
    context = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])  # (B, heads, T, d)
    context = g.reshape(g.op("Transpose", [context], perm=[0, 2, 1, 3]), [0, 0, e])
    y = g.linear(context, w_out.T, b_out)
    if g.lengths is None:
        return y
    return g.op("Mul", [y, g.reshape(g.valid_steps(steps), [0, steps, 1])])  # padded steps output 0


def _positional(g, layer, x):
    table = positional_table(*layer.input_shape).astype(layer.dtype)
    return g.op("Add", [x, g.const(table, "positional")])


def _encoder_block(g, layer, x):
    return _layers(g, [part for _, part in layer.parts], x)


def _last_step(g, layer, x):
    if g.lengths is None:
        return g.op("Gather", [x, g.const(np.int64(layer.input_shape[0] - 1))], axis=1)
    features = layer.input_shape[1]  # x[b, lengths[b] - 1, :]
    last = g.reshape(g.op("Sub", [g.lengths, g.const(np.int64(1))]), [-1, 1, 1])
    shape = g.op("Concat", [g.op("Shape", [x], start=0, end=1), g.const([1, features])], axis=0)
    picked = g.op("GatherElements", [x, g.op("Expand", [last, shape])], axis=1)
    g.lengths = None
    return g.reshape(picked, [0, features])


def _time_distributed(g, layer, x):
    steps, lengths = layer.input_shape[0], g.lengths
    g.lengths = None  # the inner layer's batch is batch * time steps
    inner = _layers(g, [layer.layer], g.reshape(x, [-1, *layer.input_shape[1:]]))
    g.lengths = lengths
    return g.reshape(inner, [-1, steps, *layer.output_shape[1:]])


#: layer class -> writer (subclasses made by fastnn, e.g. ReLU of Activation, find their base's)
WRITERS = {
    L.Dense: _dense,
    L.Activation: _activation_layer,
    L.Dropout: _identity,
    L.BatchNorm1d: _batchnorm,
    L.LayerNorm: _layernorm,
    L.Residual: _residual,
    L.Conv1d: _conv,
    L.Conv2d: _conv,
    L.MaxPool1d: _pool,
    L.MaxPool2d: _pool,
    L.AvgPool1d: _pool,
    L.AvgPool2d: _pool,
    L.GlobalAvgPool: _global_avgpool,
    L.Reshape: _reshape,
    L.Embedding: _embedding,
    L.Masking: _masking,
    L.LSTM: _recurrent,
    L.GRU: _recurrent,
    L.RNN: _recurrent,
    L.MultiHeadSelfAttention: _attention,
    L.PositionalEncoding: _positional,
    L.TransformerEncoderBlock: _encoder_block,
    L.LastStep: _last_step,
    L.TimeDistributed: _time_distributed,
}


def _refuse(layer, why: str) -> NotImplementedError:
    return NotImplementedError(
        f"{layer!r} cannot be exported to ONNX: {why}. Export a model without it "
        f"(fastnn refuses rather than write a graph that computes something else)"
    )


def _writer(layer):
    writer = handler_for(layer, WRITERS)
    if writer is not None:
        return writer
    raise _refuse(
        layer,
        f"{type(layer).__name__} is not one of fastnn's layer kinds with an ONNX form "
        f"({', '.join(sorted(c.__name__ for c in WRITERS))} and the activations)",
    )


def _layers(g: _Graph, layers, x: str) -> str:
    for layer in layers:
        x = _writer(layer)(g, layer, x)
    return x


def to_onnx(model, opset: int = DEFAULT_OPSET):
    """The ONNX ``ModelProto`` of a built model (see the module doc), checked by ``onnx.checker``."""
    try:
        import onnx
    except ImportError:
        raise ImportError(
            'ONNX export needs the onnx package: pip install "fastnn[onnx]" (or pip install onnx)'
        ) from None
    from .._validation import check_int

    opset = check_int(opset, "opset", minimum=MIN_OPSET, maximum=onnx.defs.onnx_opset_version())
    model.require_built("export_onnx")
    g = _Graph(opset)
    g.nodes.append(g.helper.make_node("Identity", [_layers(g, model.layers, "input")], ["output"]))
    helper = onnx.helper
    integer = np.dtype(model.input_dtype).kind in "iu"
    graph = helper.make_graph(
        g.nodes,
        "fastnn",
        [
            helper.make_tensor_value_info(
                "input", onnx.TensorProto.INT64 if integer else onnx.TensorProto.FLOAT, ["batch", *model.input_shape]
            )
        ],
        [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, ["batch", *model.output_shape])],
        initializer=g.initializers,
    )
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(
        graph, opset_imports=opsets, producer_name="fastnn", ir_version=helper.find_min_ir_version_for(opsets)
    )
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export_onnx(model, path, *, opset: int = DEFAULT_OPSET):
    """Write ``model`` to ``path`` as an ONNX graph of its evaluation-mode forward pass.

    The graph has one input ``"input"`` ``(batch, *input_shape)`` with a dynamic batch axis, float32
    (int64 indices for an Embedding model); float64 models are exported as float32 (onnxruntime's
    CPU convolution and recurrent kernels are float32 only). Dropout is the identity, batch norm
    uses its running statistics. See this module's docstring for each layer's operators.

    Parameters
    ----------
    model : fastnn.Sequential
        A built model (any device).
    path : str or os.PathLike
        The file to write (atomically: a failed export leaves no file).
    opset : int, default 17
        ONNX opset version, at least 17.

    Returns
    -------
    onnx.ModelProto
        The exported model, as written.

    Raises
    ------
    ImportError
        When the onnx package is not installed.
    NotImplementedError
        For a layer that has no faithful ONNX form (a user-defined layer), naming it.
    RuntimeError
        For an unbuilt model (as every method that needs the model's shapes).
    ValueError
        For an opset below 17 or above the installed onnx package's.

    Examples
    --------
    >>> import fastnn as fnn, numpy as np, tempfile, os
    >>> model = fnn.Sequential([fnn.Dense(4, 3, activation="relu"), fnn.Dense(3, 2)], seed=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.onnx")
    >>> proto = fnn.export_onnx(model, path)  # doctest: +SKIP
    >>> import onnxruntime  # doctest: +SKIP
    >>> x = np.ones((5, 4), np.float32)
    >>> out = onnxruntime.InferenceSession(path).run(None, {"input": x})[0]  # doctest: +SKIP
    >>> np.allclose(out, model.predict(x), rtol=1e-5, atol=1e-6)  # doctest: +SKIP
    True
    """
    from ..io import atomic_write

    proto = to_onnx(model, opset)
    with atomic_write(os.fspath(path)) as f:
        f.write(proto.SerializeToString())
    return proto
