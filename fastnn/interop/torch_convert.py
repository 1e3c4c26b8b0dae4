"""fastnn <-> PyTorch: :func:`to_torch` turns a built model into an equal ``torch.nn.Sequential``,
:func:`from_torch` turns an ``nn.Sequential`` of supported modules into an equal fastnn model.
Weights, biases and running statistics are copied (never shared); the mode (train/eval) carries
over. A frozen fastnn BatchNorm (``Layer.frozen``) trains in inference mode, which in torch is a
BatchNorm in eval mode with ``requires_grad=False`` inside a module in train mode (the fine-tuning
recipe): each direction gives the other. torch is imported only when these run.

torch has no single module for some fastnn layers (and its recurrent and attention modules return
tuples, so they cannot sit in ``nn.Sequential``); the small adapters of
:mod:`fastnn.interop.torch_adapters` fill the gaps and :func:`from_torch` reads them back:
``Recurrent(nn.LSTM(..., batch_first=True), return_sequences)``, ``SelfAttention(nn.MultiheadAttention(...,
batch_first=True), causal)``, ``Residual``, ``Reshape``, ``LastStep``, ``TimeMean``, ``TimeDistributed``,
``PositionalEncoding`` and ``CausalEncoderLayer``. A module or layer without an equal counterpart
is refused with an error naming it.
"""

from __future__ import annotations

import numpy as np

from .. import backend
from ..kernels.activations import ACTIVATION_TABLE, ROWWISE_CODES
from ..layers import (
    GRU,
    LSTM,
    RNN,
    Activation,
    AvgPool1d,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv1d,
    Conv2d,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    GlobalAvgPool,
    LastStep,
    LayerNorm,
    MaxPool1d,
    MaxPool2d,
    MultiHeadSelfAttention,
    PositionalEncoding,
    Reshape,
    Residual,
    TimeDistributed,
    TransformerEncoderBlock,
)
from ..layers.activation import GELU
from ..layers.base import walk_layers
from ..layers.registry import LAYERS
from ._common import handler_for
from ._common import layer_parameters as _parameters
from .torch_adapters import adapters
from .torch_adapters import torch_module as _torch

#: activation name -> its layer class (the activation table's rows that name a layer)
_ACTIVATION_LAYERS = {row.name: LAYERS[row.layer] for row in ACTIVATION_TABLE if row.layer}

# -- fastnn -> torch ------------------------------------------------------------------------------------------


def _tensor(array, dtype):
    torch = _torch()
    return torch.from_numpy(np.ascontiguousarray(backend.host_copy(array))).to(dtype)


def _load(module, values: dict, dtype) -> None:
    """Copy {torch name: array} into ``module``'s parameters and buffers."""
    state = module.state_dict()
    for name, value in values.items():
        state[name] = _tensor(value, dtype).reshape(state[name].shape)
    module.load_state_dict(state)


_TORCH_ACTIVATIONS = {"identity": "Identity", "sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "ReLU", "selu": "SELU"}


def _torch_activation(nn, name: str, alpha: float) -> list:
    """[module] for fastnn's activation ``name`` (alpha: LeakyReLU's slope, ELU's alpha)."""
    if name in _TORCH_ACTIVATIONS:
        return [getattr(nn, _TORCH_ACTIVATIONS[name])()]
    made = {
        "leaky_relu": lambda: nn.LeakyReLU(alpha),
        "elu": lambda: nn.ELU(alpha),
        "gelu": lambda: nn.GELU(),
        "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
        "softmax": lambda: nn.Softmax(dim=-1),
        "log_softmax": lambda: nn.LogSoftmax(dim=-1),
    }
    return [made[name]()]


def _fused(nn, layer) -> list:
    """The activation module after a Dense or a convolution ([] for none)."""
    return [] if layer.activation == "identity" else _torch_activation(nn, layer.activation, layer.alpha)


def _values(layer) -> dict:
    """{name: array} of a layer's parameters and float buffers (running statistics)."""
    return {**_parameters(layer), **{k: v for k, v in layer.buffers().items() if not k.endswith("step")}}


def _dense_to(nn, layer, dtype):
    linear = nn.Linear(layer.in_features, layer.units, bias=layer.use_bias).to(dtype)
    values = _values(layer)
    _load(
        linear,
        {"weight": backend.host_copy(values["weight"]).T, **({"bias": values["bias"]} if layer.use_bias else {})},
        dtype,
    )
    return [linear, *_fused(nn, layer)]


def _conv_to(nn, layer, dtype):
    cls = nn.Conv1d if isinstance(layer, Conv1d) else nn.Conv2d
    padding = layer.padding if isinstance(layer.padding, str) else tuple(layer.padding)
    conv = cls(
        layer.in_channels,
        layer.out_channels,
        tuple(layer.kernel_size),
        stride=tuple(layer.stride),
        padding=padding,
        dilation=tuple(layer.dilation),
        groups=layer.groups,
        bias=layer.use_bias,
    ).to(dtype)
    _load(conv, _values(layer), dtype)
    return [conv, *_fused(nn, layer)]


def _batchnorm_to(nn, layer, dtype):
    cls = nn.BatchNorm2d if isinstance(layer, BatchNorm2d) else nn.BatchNorm1d
    bn = cls(
        layer.num_features,
        eps=layer.eps,
        momentum=layer.momentum,
        affine=layer.affine,
        track_running_stats=layer.track_running_stats,
    ).to(dtype)
    values = _values(layer)
    if "num_batches_tracked" in values:
        bn.num_batches_tracked.copy_(
            _torch().from_numpy(backend.host_copy(values.pop("num_batches_tracked")).reshape(()))
        )
    _load(bn, values, dtype)
    return [bn.train(not layer.frozen)]  # frozen: inference mode in training too (fastnn.freezing)


def _layernorm_to(nn, layer, dtype):
    norm = nn.LayerNorm(layer.num_features, eps=layer.eps, elementwise_affine=layer.affine).to(dtype)
    _load(norm, _values(layer), dtype)
    return [norm]


def _pool_to(nn, layer, dtype):
    one = layer.spatial_dims == 1
    size = (lambda t: t[0]) if one else tuple
    if layer.mode == "max":
        cls = nn.MaxPool1d if one else nn.MaxPool2d
        return [cls(size(layer.kernel_size), stride=size(layer.stride), padding=size(layer.padding))]
    cls = nn.AvgPool1d if one else nn.AvgPool2d
    return [
        cls(
            size(layer.kernel_size),
            stride=size(layer.stride),
            padding=size(layer.padding),
            count_include_pad=layer.count_include_pad,
        )
    ]


def _global_avgpool_to(nn, layer, dtype):
    if layer.axis == "time":
        return [adapters().TimeMean()]
    pool = nn.AdaptiveAvgPool1d(1) if len(layer.input_shape) == 2 else nn.AdaptiveAvgPool2d(1)
    return [pool, nn.Flatten()]


def _embedding_to(nn, layer, dtype):
    if layer.mask_padding:
        raise _refuse_layer(layer, "torch.nn.Embedding marks no padding for the layers after it")
    emb = nn.Embedding(layer.num_embeddings, layer.embedding_dim, padding_idx=layer.padding_idx, sparse=layer.sparse)
    emb = emb.to(dtype)
    _load(emb, _values(layer), dtype)
    return [emb]


def _recurrent_to(nn, layer, dtype):
    cls = {"lstm": nn.LSTM, "gru": nn.GRU}.get(layer.cell, nn.RNN)
    kwargs = {} if cls is not nn.RNN else {"nonlinearity": layer.nonlinearity}
    rnn = cls(
        layer.input_size,
        layer.hidden_size,
        num_layers=layer.num_layers,
        bias=layer.use_bias,
        dropout=layer.dropout,
        bidirectional=layer.bidirectional,
        batch_first=True,
        **kwargs,
    )
    module = adapters().Recurrent(rnn, layer.return_sequences, layer.learn_initial_state).to(dtype)
    _load(module, {(k if k in ("h0", "c0") else f"rnn.{k}"): v for k, v in _values(layer).items()}, dtype)
    return [module]


def _mha(nn, layer, dtype):
    mha = nn.MultiheadAttention(
        layer.embed_dim, layer.num_heads, dropout=layer.dropout, bias=layer.use_bias, batch_first=True
    ).to(dtype)
    _load(mha, {_MHA_NAMES[k]: v for k, v in _values(layer).items()}, dtype)
    return mha


_MHA_NAMES = {
    "in_proj_weight": "in_proj_weight",
    "in_proj_bias": "in_proj_bias",
    "out_proj_weight": "out_proj.weight",
    "out_proj_bias": "out_proj.bias",
}


def _attention_to(nn, layer, dtype):
    return [adapters().SelfAttention(_mha(nn, layer, dtype), layer.causal)]


def _positional_to(nn, layer, dtype):
    return [adapters().PositionalEncoding(layer.max_len, layer.input_shape[1], layer.dropout).to(dtype)]


def _encoder_names(norm_first: bool) -> dict:
    """fastnn's TransformerEncoderBlock parameter prefixes -> torch.nn.TransformerEncoderLayer's."""
    if norm_first:
        return {
            "attention.block.0.": "norm1.",
            "attention.block.1.": "self_attn.",
            "feedforward.block.0.": "norm2.",
            "feedforward.block.1.": "linear1.",
            "feedforward.block.3.": "linear2.",
        }
    return {
        "attention.block.0.": "self_attn.",
        "norm1.": "norm1.",
        "feedforward.block.0.": "linear1.",
        "feedforward.block.2.": "linear2.",
        "norm2.": "norm2.",
    }


def _encoder_to(nn, layer, dtype):
    torch_layer = nn.TransformerEncoderLayer(
        layer.embed_dim,
        layer.num_heads,
        layer.ff_dim,
        dropout=layer.dropout,
        activation=layer.activation,
        batch_first=True,
        norm_first=layer.norm_first,
    ).to(dtype)
    names = _encoder_names(layer.norm_first)
    values = {}
    for name, value in _parameters(layer).items():
        prefix = next(p for p in names if name.startswith(p))
        rest = name[len(prefix) :]
        if names[prefix] == "self_attn.":
            rest = _MHA_NAMES[rest]
        elif names[prefix].startswith("linear") and rest == "weight":
            value = backend.host_copy(value).T  # Dense (in, out) -> Linear (out, in)
        values[names[prefix] + rest] = value
    _load(torch_layer, values, dtype)
    return [adapters().CausalEncoderLayer(torch_layer) if layer.causal else torch_layer]


def _residual_to(nn, layer, dtype):
    block = nn.Sequential(*_modules(nn, layer.block, dtype))
    projection = None
    if layer.projection is not None:
        projection = _dense_to(nn, layer.projection, dtype)[0]
    return [adapters().Residual(block, projection)]


def _time_distributed_to(nn, layer, dtype):
    inner = _modules(nn, [layer.layer], dtype)
    return [adapters().TimeDistributed(inner[0] if len(inner) == 1 else nn.Sequential(*inner))]


def _reshape_to(nn, layer, dtype):
    if type(layer) is Flatten:
        return [nn.Flatten()]
    return [adapters().Reshape(layer.output_shape)]


def _dropout_to(nn, layer, dtype):
    return [nn.Dropout(layer.p)]


def _activation_to(nn, layer, dtype):
    return _torch_activation(nn, layer.activation, layer.alpha)


def _last_step_to(nn, layer, dtype):
    return [adapters().LastStep()]


#: fastnn layer class -> (torch.nn, layer, torch dtype) -> [modules]
TO_TORCH = {
    Dense: _dense_to,
    Activation: _activation_to,
    Dropout: _dropout_to,
    BatchNorm1d: _batchnorm_to,
    LayerNorm: _layernorm_to,
    Residual: _residual_to,
    Conv1d: _conv_to,
    Conv2d: _conv_to,
    MaxPool1d: _pool_to,
    MaxPool2d: _pool_to,
    AvgPool1d: _pool_to,
    AvgPool2d: _pool_to,
    GlobalAvgPool: _global_avgpool_to,
    Reshape: _reshape_to,
    Embedding: _embedding_to,
    LSTM: _recurrent_to,
    GRU: _recurrent_to,
    RNN: _recurrent_to,
    MultiHeadSelfAttention: _attention_to,
    PositionalEncoding: _positional_to,
    TransformerEncoderBlock: _encoder_to,
    LastStep: _last_step_to,
    TimeDistributed: _time_distributed_to,
}


def _refuse_layer(layer, why: str) -> NotImplementedError:
    return NotImplementedError(f"{layer!r} has no PyTorch counterpart: {why}")


def _modules(nn, layers, dtype) -> list:
    """The torch modules of ``layers``, in order (a layer may give several: Linear then its activation)."""
    modules = []
    for layer in layers:
        converter = handler_for(layer, TO_TORCH)
        if converter is None and getattr(layer, "produces_lengths", False):
            raise _refuse_layer(
                layer, "torch has no masking: the sequence lengths it marks change what later layers compute"
            )
        if converter is None:
            raise _refuse_layer(layer, f"{type(layer).__name__} is not a layer kind this converter knows")
        converted = converter(nn, layer, dtype)
        frozen = _frozen(layer)
        if frozen is None:
            raise _refuse_layer(
                layer,
                "some of the layers inside it are frozen (trainable=False) and others not, and its torch "
                "module carries one requires_grad for all of them; freeze or unfreeze the whole layer first",
            )
        for module in converted:
            module.requires_grad_(not frozen)
        modules += converted
    return modules


def _frozen(layer, inherited: bool = False) -> bool | None:
    """Whether every parameter of ``layer`` (those of the layers inside it included) is frozen
    (``trainable=False`` on its layer or a layer around it): True, False when none is, None when
    some are; a layer without parameters follows its ``trainable``."""
    here = inherited or not layer.trainable
    states: set[bool | None] = {here} if layer.parameter_specs() or not layer.sublayers() else set()
    for _, child in layer.sublayers():
        states.add(_frozen(child, here))
    return states.pop() if len(states) == 1 else None


def to_torch(model):
    """An equal ``torch.nn.Sequential`` of a built model (float64 models give float64 modules), in
    the model's mode; outputs equal ``model.predict`` in eval mode. A frozen layer's modules have
    ``requires_grad=False``, and a frozen BatchNorm's module is in eval mode (inference mode in
    training, as fastnn's), so training the copy trains as fastnn does; a layer frozen in part (some
    layers inside it) is refused."""
    torch = _torch()
    model.require_built("to_torch")
    dtype = torch.float64 if model.dtype == np.float64 else torch.float32
    # modules are made in train mode, a frozen BatchNorm's in eval mode (_batchnorm_to)
    module = torch.nn.Sequential(*_modules(torch.nn, model.layers, dtype))
    return module if model.training else module.eval()


# -- torch -> fastnn ------------------------------------------------------------------------------------------


def _array(tensor) -> np.ndarray:
    """A NumPy copy of a tensor (bfloat16, which NumPy lacks, as float32)."""
    tensor = tensor.detach().cpu()
    return (tensor.float() if tensor.dtype == _torch().bfloat16 else tensor).numpy()


def _refuse_module(module, why: str) -> NotImplementedError:
    return NotImplementedError(f"torch module {module!r} cannot become a fastnn layer: {why}")


def _require(module, condition: bool, why: str) -> None:
    if not condition:
        raise _refuse_module(module, why)


def _state(module, rename=None) -> dict:
    """{fastnn name: array} from the module's state_dict (``rename``: torch name -> fastnn name or None to skip)."""
    out = {}
    for name, tensor in module.state_dict().items():
        target = name if rename is None else rename(name)
        if target is not None:
            out[target] = _array(tensor)
    return out


def _from_linear(nn, m):
    values = {"weight": _array(m.weight).T, **({"bias": _array(m.bias)} if m.bias is not None else {})}
    return Dense(m.in_features, m.out_features, bias=m.bias is not None), values


#: a softmax built without dim: torch picks the axis from the input's rank (``_softmax_dim``)
_IMPLICIT_DIM = "implicit"


def _softmax_dim(ndim: int) -> int:
    """The axis torch's Softmax/LogSoftmax(dim=None) acts on for input of ``ndim`` axes, the batch
    axis included (torch.nn.functional._get_softmax_dim)."""
    return 0 if ndim in (0, 1, 3) else 1


def _from_activation(nn, m):
    name = type(m).__name__
    if name in ("Softmax", "LogSoftmax"):
        _require(m, m.dim in (-1, None) or m.dim >= 1, "fastnn's softmax acts on the last axis; use dim=-1")
        layer = _ACTIVATION_LAYERS["softmax" if name == "Softmax" else "log_softmax"]()
        if m.dim != -1:  # checked against the built shape (the last axis) in from_torch
            layer._torch_dim = (name, _IMPLICIT_DIM if m.dim is None else m.dim)
        return layer, {}
    if name == "GELU":
        return GELU(m.approximate), {}
    if name == "LeakyReLU":
        return _ACTIVATION_LAYERS["leaky_relu"](m.negative_slope), {}
    if name == "ELU":
        return _ACTIVATION_LAYERS["elu"](m.alpha), {}
    plain = {v: k for k, v in _TORCH_ACTIVATIONS.items()}
    return _ACTIVATION_LAYERS[plain[name]](), {}


def _from_dropout(nn, m):
    return Dropout(m.p), {}


def _from_batchnorm(nn, m):
    cls = BatchNorm2d if isinstance(m, nn.BatchNorm2d) else BatchNorm1d
    layer = cls(
        m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine, track_running_stats=m.track_running_stats
    )
    return layer, _state(m)


def _from_layernorm(nn, m):
    _require(m, len(m.normalized_shape) == 1, "fastnn's LayerNorm normalises the last axis only")
    _require(m, not m.elementwise_affine or m.bias is not None, "fastnn's LayerNorm has a bias when affine")
    return LayerNorm(m.normalized_shape[0], eps=m.eps, elementwise_affine=m.elementwise_affine), _state(m)


def _from_conv(nn, m):
    _require(m, m.padding_mode == "zeros", "fastnn pads with zeros only")
    cls = Conv1d if isinstance(m, nn.Conv1d) else Conv2d
    layer = cls(
        m.in_channels,
        m.out_channels,
        m.kernel_size,
        stride=m.stride,
        padding=m.padding,
        dilation=m.dilation,
        groups=m.groups,
        bias=m.bias is not None,
    )
    return layer, _state(m)


def _from_pool(nn, m):
    _require(m, not m.ceil_mode, "fastnn's pools round the output size down (ceil_mode=False)")
    if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)):
        _require(
            m,
            m.dilation in (1, (1, 1)) and not m.return_indices,
            "fastnn's max pools take no dilation and return no indices",
        )
        cls = MaxPool1d if isinstance(m, nn.MaxPool1d) else MaxPool2d
        return cls(m.kernel_size, stride=m.stride, padding=m.padding), {}
    _require(m, getattr(m, "divisor_override", None) is None, "fastnn's average pools take no divisor_override")
    cls = AvgPool1d if isinstance(m, nn.AvgPool1d) else AvgPool2d
    return cls(m.kernel_size, stride=m.stride, padding=m.padding, count_include_pad=m.count_include_pad), {}


def _from_flatten(nn, m):
    _require(m, m.start_dim == 1 and m.end_dim == -1, "fastnn's Flatten keeps the batch axis and flattens the rest")
    return Flatten(), {}


def _from_embedding(nn, m):
    _require(m, m.max_norm is None, "fastnn's Embedding does not renormalise rows (max_norm)")
    _require(m, not m.scale_grad_by_freq, "fastnn's Embedding does not scale gradients by frequency")
    return Embedding(m.num_embeddings, m.embedding_dim, padding_idx=m.padding_idx, sparse=m.sparse), _state(m)


def _from_recurrent_module(nn, m):
    raise _refuse_module(
        m,
        "torch's recurrent modules return a tuple (output, state), so they cannot sit in "
        "nn.Sequential; wrap it: fastnn.interop.torch_adapters.Recurrent(module, "
        "return_sequences=True or False)",
    )


def _from_recurrent(nn, m):
    rnn = m.rnn
    cls = {nn.LSTM: LSTM, nn.GRU: GRU, nn.RNN: RNN}.get(type(rnn))
    _require(rnn, cls is not None, "the Recurrent adapter wraps an nn.LSTM, nn.GRU or nn.RNN, not a subclass of one")
    _require(rnn, rnn.batch_first, "fastnn's recurrent layers take (batch, time, features): use batch_first=True")
    _require(rnn, getattr(rnn, "proj_size", 0) == 0, "fastnn's LSTM has no projection (proj_size)")
    kwargs = {"nonlinearity": rnn.nonlinearity} if cls is RNN else {}
    layer = cls(
        rnn.input_size,
        rnn.hidden_size,
        num_layers=rnn.num_layers,
        bias=rnn.bias,
        dropout=rnn.dropout,
        bidirectional=rnn.bidirectional,
        return_sequences=m.return_sequences,
        learn_initial_state=m.h0 is not None,
        **kwargs,
    )
    return layer, _state(m, lambda name: name[len("rnn.") :] if name.startswith("rnn.") else name)


def _mha_layer(nn, mha, causal: bool):
    _require(
        mha,
        mha.batch_first and mha._qkv_same_embed_dim and mha.bias_k is None and not mha.add_zero_attn,
        "fastnn's self-attention needs batch_first=True, equal q/k/v sizes, no bias_kv and no zero attention",
    )
    layer = MultiHeadSelfAttention(
        mha.embed_dim, mha.num_heads, dropout=mha.dropout, causal=causal, bias=mha.in_proj_bias is not None
    )
    back = {v: k for k, v in _MHA_NAMES.items()}
    return layer, _state(mha, back.get)


def _from_attention(nn, m):
    return _mha_layer(nn, m.mha, m.causal)


def _encoder_activation(nn, m) -> str:
    """ "relu" or "gelu" (exact) for the feed-forward activation ``m`` (a TransformerEncoderLayer) runs;
    a refusal for any other, as the tanh form of GELU: TransformerEncoderBlock has those two only."""
    F = nn.functional
    act = m.activation  # what the layer's forward calls: a function or a module
    if act is F.relu or type(act) is nn.ReLU:
        name, code = "relu", 1
    elif act is F.gelu or (type(act) is nn.GELU and act.approximate == "none"):
        name, code = "gelu", 2
    else:
        shown = repr(act) if isinstance(act, nn.Module) else getattr(act, "__name__", repr(act))
        raise _refuse_module(
            m,
            f"its activation={shown} is not one fastnn's encoder block computes: it takes "
            f"activation 'relu' (F.relu, nn.ReLU()) or 'gelu' (F.gelu, nn.GELU(), exact erf form)",
        )
    # torch's fast inference path runs the activation this flag names, not m.activation
    _require(
        m,
        getattr(m, "activation_relu_or_gelu", code) == code,
        f"its activation_relu_or_gelu flag ({m.activation_relu_or_gelu}) disagrees with its activation ({name})",
    )
    return name


def _from_encoder(nn, m, causal: bool = False):
    _require(m, m.self_attn.batch_first, "fastnn's encoder block takes (batch, time, features): use batch_first=True")
    activation = _encoder_activation(nn, m)
    _require(
        m,
        m.linear1.bias is not None and m.norm1.eps == 1e-5 == m.norm2.eps,
        "fastnn's encoder block has biases and LayerNorm eps=1e-5",
    )
    layer = TransformerEncoderBlock(
        m.linear1.in_features,
        m.self_attn.num_heads,
        m.linear1.out_features,
        dropout=m.dropout.p,
        activation=activation,
        norm_first=m.norm_first,
        causal=causal,
    )
    names = {v: k for k, v in _encoder_names(m.norm_first).items()}
    mha_back = {v: k for k, v in _MHA_NAMES.items()}
    values = {}
    for name, tensor in m.state_dict().items():
        prefix = next(p for p in names if name.startswith(p))
        rest, value = name[len(prefix) :], _array(tensor)
        if prefix == "self_attn.":
            rest = mha_back[rest]
        elif prefix.startswith("linear") and rest == "weight":
            value = value.T
        values[names[prefix] + rest] = value
    return layer, values


def _from_causal_encoder(nn, m):
    return _from_encoder(nn, m.layer, causal=True)


def _from_residual(nn, m):
    block, values, _ = _layers_from(nn, _flat(nn, m.block))
    layer = Residual(block, projection=m.projection is not None)
    out = {f"block.{i}.{k}": v for i, vals in enumerate(values) for k, v in vals.items()}
    if m.projection is not None:
        _require(m.projection, m.projection.bias is None, "a Residual projection has no bias")
        out["projection.weight"] = _array(m.projection.weight).T
    return layer, out


def _from_time_distributed(nn, m):
    layers, values, _ = _layers_from(nn, _flat(nn, m.module))
    fusable = (
        len(layers) == 2
        and isinstance(layers[0], (Dense, Conv1d, Conv2d))
        and layers[0].activation == "identity"
        and isinstance(layers[1], Activation)
        and (isinstance(layers[0], Dense) or layers[1].code < ROWWISE_CODES)  # a conv fuses elementwise ones only
    )
    if fusable:  # Linear/Conv then an activation: one layer with the activation fused
        fused = type(layers[0])(**{**layers[0].get_config(), "activation": layers[1]})
        if "_torch_dim" in layers[1].__dict__:  # a softmax's dim, checked on the fused layer's output
            fused._torch_dim = layers[1]._torch_dim
        layers = [fused]
    _require(
        m,
        len(layers) == 1,
        "fastnn's TimeDistributed wraps one layer (a Dense may fuse the activation after it, a convolution an "
        "elementwise one)",
    )
    return TimeDistributed(layers[0]), values[0]


def _from_adapter(nn, m):
    name = type(m).__name__
    if name == "Reshape":
        return Reshape(m.shape), {}
    if name == "LastStep":
        return LastStep(), {}
    if name == "TimeMean":
        return GlobalAvgPool(axis="time"), {}
    return PositionalEncoding(m.max_len, m.dropout.p), {}


def _from_table(nn) -> dict:
    """torch module class -> (torch.nn, module) -> (fastnn layer, {parameter or buffer name: array})."""
    a = adapters()
    table = {
        nn.Linear: _from_linear,
        nn.Dropout: _from_dropout,
        nn.LayerNorm: _from_layernorm,
        nn.Embedding: _from_embedding,
        nn.Flatten: _from_flatten,
        nn.TransformerEncoderLayer: _from_encoder,
        a.CausalEncoderLayer: _from_causal_encoder,
        a.Recurrent: _from_recurrent,
        a.SelfAttention: _from_attention,
        a.Residual: _from_residual,
        a.TimeDistributed: _from_time_distributed,
    }
    table.update(
        {
            cls: _from_activation
            for cls in (
                nn.Identity,
                nn.Sigmoid,
                nn.Tanh,
                nn.ReLU,
                nn.LeakyReLU,
                nn.ELU,
                nn.SELU,
                nn.GELU,
                nn.Softmax,
                nn.LogSoftmax,
            )
        }
    )
    table.update({cls: _from_batchnorm for cls in (nn.BatchNorm1d, nn.BatchNorm2d)})
    table.update({cls: _from_conv for cls in (nn.Conv1d, nn.Conv2d)})
    table.update({cls: _from_pool for cls in (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)})
    table.update({cls: _from_recurrent_module for cls in (nn.LSTM, nn.GRU, nn.RNN)})
    table.update({cls: _from_adapter for cls in (a.Reshape, a.LastStep, a.TimeMean, a.PositionalEncoding)})
    return table


def _global_pool(nn, modules, i) -> bool:
    """Whether modules[i:i + 2] is AdaptiveAvgPool{1,2}d(1) then Flatten(): fastnn's GlobalAvgPool."""
    m = modules[i]
    one = m.output_size in (1, (1,), (1, 1))
    nxt = modules[i + 1] if i + 1 < len(modules) else None
    return one and isinstance(nxt, nn.Flatten) and nxt.start_dim == 1 and nxt.end_dim == -1


def _flat(nn, module) -> list:
    """The modules of ``module``, nested nn.Sequential unrolled (a Linear and its activation often come as one)."""
    if not isinstance(module, nn.Sequential):
        return [module]
    _require(
        module,
        type(module).forward is nn.Sequential.forward,
        f"{type(module).__name__} subclasses nn.Sequential with its own forward, which unrolling its "
        f"modules would skip; convert an nn.Sequential of its modules if its forward only chains them",
    )
    return [leaf for child in module for leaf in _flat(nn, child)]


def _layers_from(nn, modules) -> tuple[list, list, list]:
    """The fastnn layers of torch ``modules``, each layer's state arrays by name, and each layer's
    torch modules (a GlobalAvgPool comes from two)."""
    table = _from_table(nn)
    values: list[dict]
    sources: list[list]
    layers, values, sources, i = [], [], [], 0
    while i < len(modules):
        m = modules[i]
        if isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
            _require(
                m,
                _global_pool(nn, modules, i),
                "fastnn has global average pooling only: AdaptiveAvgPool(1) followed by nn.Flatten()",
            )
            layers.append(GlobalAvgPool())
            values.append({})
            sources.append(modules[i : i + 2])
            i += 2
            continue
        convert = table.get(type(m))
        if convert is None:
            raise _refuse_module(
                m,
                f"{type(m).__name__} is not among the supported modules (Linear, activations, "
                f"Dropout, BatchNorm1d/2d, LayerNorm, Conv1d/2d, pools, Flatten, Embedding, "
                f"TransformerEncoderLayer and this module's adapters)",
            )
        layer, vals = convert(nn, m)
        layers.append(layer)
        values.append(vals)
        sources.append([m])
        i += 1
    return layers, values, sources


def from_torch(module, *, input_shape=None, dtype=None, seed: int = 0):
    """An equal fastnn model of a PyTorch module: layers built, weights and running statistics copied.

    Parameters
    ----------
    module : torch.nn.Module
        An ``nn.Sequential`` (nested ones are unrolled) or one module, of supported kinds:
        Linear, the activations, Dropout, BatchNorm1d/2d, LayerNorm, Conv1d/2d, pools, Flatten,
        Embedding, TransformerEncoderLayer (batch_first), and ``fastnn.interop.torch_adapters``
        (``Recurrent`` around nn.LSTM/GRU/RNN with batch_first=True, ``SelfAttention``, ...).
    input_shape : tuple of int, optional
        The per-sample input shape, e.g. (1, 28, 28); needed unless the first module fixes it
        (``nn.Linear``).
    dtype : {"float32", "float64"}, optional
        Default: float64 when the module's tensors are, else float32.
    seed : int, default 0
        The fastnn model's seed (dropout masks, shuffling).

    Returns
    -------
    fastnn.Sequential
        In the module's mode (train or eval); its outputs equal the module's. A module whose
        parameters all have ``requires_grad=False`` gives a frozen layer (``trainable=False``).
        In a module in train mode, a BatchNorm in eval mode with ``requires_grad=False`` on its
        parameters (torch's fine-tuning recipe) gives a frozen BatchNorm, which fastnn trains
        in inference mode as torch does.

    Raises
    ------
    NotImplementedError
        For a module or option fastnn cannot reproduce exactly, naming it (also for submodules
        left in another mode than the module's: fastnn's train/eval mode is the whole model's,
        except for a frozen BatchNorm; and for a BatchNorm frozen in train mode, or in eval mode
        with trainable parameters, in a module in train mode: a frozen fastnn BatchNorm trains
        in inference mode, a trainable one with batch statistics).
    TypeError
        When ``module`` is not a ``torch.nn.Module``.
    ValueError
        When ``input_shape`` is needed and missing.

    Examples
    --------
    >>> import torch, fastnn as fnn  # doctest: +SKIP
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))  # doctest: +SKIP
    >>> model = fnn.from_torch(net)  # doctest: +SKIP
    >>> model.output_shape  # doctest: +SKIP
    (2,)
    """
    torch = _torch()
    from ..model import Sequential

    nn = torch.nn
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"from_torch: module must be a torch.nn.Module (an nn.Sequential or one module), got "
            f"{type(module).__name__}; wrap a list of modules as nn.Sequential(*modules)"
        )
    _require_one_mode(module)
    modules = _flat(nn, module)
    if dtype is None:
        floats = [t.dtype for t in (*module.parameters(), *module.buffers()) if t.dtype.is_floating_point]
        dtype = "float64" if floats and floats[0] == torch.float64 else "float32"
    layers, values, sources = _layers_from(nn, modules)
    model = Sequential(layers, seed=seed, dtype=dtype, input_shape=input_shape)
    if not model.built:
        raise ValueError(
            f"from_torch needs input_shape (per sample, e.g. (1, 28, 28) or (time,)) when the first "
            f"module ({modules[0]!r}) does not fix it"
        )
    for layer, vals in zip(model.layers, values):
        _copy_values(layer, vals)
    _check_softmax_axes(model)
    _carry_frozen(nn, model.layers, sources, module.training)
    return model.train(module.training)


def _carry_frozen(nn, layers, sources, training: bool) -> None:
    """Freeze (``trainable=False``) each layer whose torch modules' parameters all have
    ``requires_grad=False``; refuse a module with some of each (fastnn freezes whole layers). In a
    module in train mode, a BatchNorm in eval mode must be frozen (it becomes a frozen layer, also
    without parameters) and one in train mode must not be (:func:`_check_norm_modes`)."""
    for layer, source in zip(layers, sources):
        flags = {p.requires_grad for m in source for p in m.parameters()}
        if len(flags) > 1:
            raise _refuse_module(
                source[0],
                "some of its parameters have requires_grad=False and others not, and fastnn freezes whole "
                "layers (layer.trainable = False): give all of the module's parameters the same requires_grad",
            )
        frozen = flags == {False}
        if training:
            frozen = _check_norm_modes(nn, source, frozen)
        if frozen:
            layer.trainable = False


def _check_norm_modes(nn, source: list, frozen: bool) -> bool:
    """Whether the layer made of ``source`` (its torch modules, in a module in train mode) is frozen,
    given ``frozen`` (all its parameters have requires_grad=False): a BatchNorm alone in eval mode
    is, also without parameters. Refuses what fastnn would train otherwise than torch: a frozen
    fastnn BatchNorm is in inference mode, a trainable one uses batch statistics."""
    norms = [sub for m in source for sub in m.modules() if isinstance(sub, (nn.BatchNorm1d, nn.BatchNorm2d))]
    alone = len(source) == 1 and len(norms) == 1 and norms[0] is source[0]
    for norm in norms:
        if norm.training and frozen:
            where = (
                "its parameters have requires_grad=False"
                if alone
                else f"it is inside a {type(source[0]).__name__} frozen whole"
            )
            raise _refuse_module(
                norm,
                f"it is in train mode and {where}; a frozen fastnn BatchNorm trains in inference mode with its "
                f"running statistics, as Keras and torch's fine-tuning recipe (bn.eval(); bn.requires_grad_(False)) "
                f"do: call .eval() on it to convert it frozen, or give its parameters requires_grad=True to train "
                f"it with batch statistics",
            )
        if not norm.training and not alone and not frozen:
            raise _refuse_module(
                norm,
                f"it is in eval mode inside a {type(source[0]).__name__} that trains, in a module in train mode; fastnn runs a "
                f"BatchNorm in inference mode while training only when its layer is frozen: freeze the whole "
                f"{type(source[0]).__name__} (requires_grad_(False)) or call .train() on the BatchNorm",
            )
        if not norm.training and alone and any(p.requires_grad for p in norm.parameters()):
            raise _refuse_module(
                norm,
                "it is in eval mode, in a module in train mode, with parameters that require grad; fastnn runs "
                "a BatchNorm in inference mode while training only when it is frozen (torch's fine-tuning recipe: "
                "bn.eval(); bn.requires_grad_(False)): call requires_grad_(False) on it to convert it frozen, or "
                ".train() to train it with batch statistics",
            )
    return frozen or (alone and not norms[0].training)


def _require_one_mode(module) -> None:
    """Refuse a module some of whose submodules are in the other mode (train/eval): fastnn's mode is
    the whole model's, except that a BatchNorm may be in eval mode in a module in train mode
    (:func:`_check_norm_modes` then checks that it is frozen)."""
    nn = _torch().nn
    mode = "train" if module.training else "eval"
    for name, sub in module.named_modules():
        if module.training and not sub.training and isinstance(sub, (nn.BatchNorm1d, nn.BatchNorm2d)):
            continue
        if sub.training != module.training:
            raise _refuse_module(
                module,
                f"its submodule {name!r} ({type(sub).__name__}) is in {'train' if sub.training else 'eval'} "
                f"mode and the module in {mode} mode; fastnn's mode is the whole model's: call "
                f"module.train() or module.eval() before converting",
            )


def _check_softmax_axes(model) -> None:
    """Refuse a torch softmax whose dim is not the last axis of its input, now that the shapes are
    known (the dim noted by :func:`_from_activation` on its layer, or on the layer it was fused into)."""
    for layer in walk_layers(model.layers):
        name, dim = layer.__dict__.pop("_torch_dim", (None, None))
        if dim is None:
            continue
        shape = layer.output_shape  # the softmax's input: a softmax keeps its shape; a fused one follows a Dense
        rank = len(shape) + 1
        given = f"{name}(dim={dim})"
        if dim == _IMPLICIT_DIM:  # resolved as torch does, from the rank of the input
            dim = _softmax_dim(rank)
            given = f"{name}() without dim (torch's implicit choice for {rank}-D input: dim={dim})"
        if dim != rank - 1:
            raise NotImplementedError(
                f"torch's {given} acts on an axis other than the last of its input "
                f"(batch, {', '.join(map(str, shape))}); fastnn's acts on the last: use dim=-1"
            )


def _copy_values(layer, values: dict) -> None:
    """Copy {name: array} into the layer's parameters and buffers (every name must be known)."""
    targets = {**layer.parameter_views, **layer.buffers()}
    for name, value in values.items():
        target = targets[name]
        backend.copy_into(target, np.asarray(value, dtype=target.dtype).reshape(target.shape))
