"""The layer table: one row per layer case, read by tests/test_layer_table.py (CPU checks) and
tests_cuda/test_layer_table_cuda.py (CUDA simulator == CPU). A new layer adds its rows here.

A row says how to build a fresh layer, the per-sample input shape, how to draw inputs, the torch
twin (optional) and what the checks may assume (mode, determinism, buffers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import fastnn as fnn


def float_inputs(rng, batch: int, shape: tuple[int, ...], dtype) -> np.ndarray:
    """Standard normal inputs (batch, *shape)."""
    return rng.standard_normal((batch, *shape)).astype(dtype)


def index_inputs(n: int) -> Callable:
    """Integer inputs in [0, n) (batch, *shape), e.g. token ids for an Embedding."""

    def draw(rng, batch, shape, dtype):
        return rng.integers(0, n, (batch, *shape))

    return draw


@dataclass(frozen=True)
class LayerCase:
    """One row of the layer table.

    ``torch``: ``torch.nn -> module``, the equivalent torch module (None: torch has none).
    ``torch_pairs``: ``(layer, module) -> {fastnn name: (torch tensor, transposed)}`` for every
    parameter (names of ``layer.parameter_specs()``) and float buffer; the tests copy fastnn's
    values into the module through it and compare gradients through it (Dense weights are
    (in, out), torch's (out, in): transposed=True).
    ``training``: the mode the checks run in (False: evaluation mode).
    ``deterministic``: a training-mode forward is a function of x and the parameters alone
    (False for Dropout(p > 0): its masks are random, so it gets the statistical checks instead).
    ``has_buffers``: the layer keeps non-trainable state (running statistics).
    ``batch_one_training``: a batch of one sample works in training mode (not for BatchNorm).
    """

    id: str
    make: Callable[[], fnn.layers.Layer]
    shape: tuple[int, ...]
    inputs: Callable = float_inputs
    torch: Callable | None = None
    torch_pairs: Callable | None = None
    training: bool = True
    deterministic: bool = True
    has_buffers: bool = False
    batch_one_training: bool = True


def no_pairs(layer, module) -> dict:
    return {}


def linear_pairs(linear, prefix: str = "") -> dict:
    """A torch Linear's weight (the transpose of fastnn's) and bias under fastnn's names."""
    pairs = {f"{prefix}weight": (linear.weight, True)}
    if linear.bias is not None:
        pairs[f"{prefix}bias"] = (linear.bias, False)
    return pairs


def norm_pairs(layer, module) -> dict:
    pairs = {"weight": (module.weight, False), "bias": (module.bias, False)}
    if getattr(module, "running_mean", None) is not None:
        pairs.update(running_mean=(module.running_mean, False), running_var=(module.running_var, False))
    return pairs


_TORCH_ACTIVATIONS = {  # fastnn activation name -> torch.nn -> module
    "identity": lambda nn: nn.Identity(),
    "sigmoid": lambda nn: nn.Sigmoid(),
    "tanh": lambda nn: nn.Tanh(),
    "relu": lambda nn: nn.ReLU(),
    "elu": lambda nn: nn.ELU(),
    "selu": lambda nn: nn.SELU(),
    "gelu": lambda nn: nn.GELU(),
    "gelu_tanh": lambda nn: nn.GELU(approximate="tanh"),
    "leaky_relu": lambda nn: nn.LeakyReLU(0.2),
    "softmax": lambda nn: nn.Softmax(dim=-1),
    "log_softmax": lambda nn: nn.LogSoftmax(dim=-1),
}


def _torch_dense(n_in, n_out, activation="identity", bias=True):
    return lambda nn: nn.Sequential(nn.Linear(n_in, n_out, bias=bias), _TORCH_ACTIVATIONS[activation](nn))


def _dense_pairs(layer, module):
    return linear_pairs(module[0])


def _torch_residual(block, projection=None):
    """torch.nn -> x + block(x) (or block(x) + projection(x)), for Residual."""

    def make(nn):
        class Residual(nn.Module):
            def __init__(self):
                super().__init__()
                self.block = block(nn)
                self.projection = None if projection is None else projection(nn)

            def forward(self, x):
                return self.block(x) + (x if self.projection is None else self.projection(x))

        return Residual()

    return make


def _residual_pairs(layer, module):
    pairs = {f"block.0.{k}": v for k, v in linear_pairs(module.block[0]).items()}
    if module.projection is not None:
        pairs.update(linear_pairs(module.projection, "projection."))
    return pairs


def _dense_cases():
    yield LayerCase("dense", lambda: fnn.Dense(5, 3), (5,), torch=_torch_dense(5, 3), torch_pairs=_dense_pairs)
    yield LayerCase(
        "dense-no-bias",
        lambda: fnn.Dense(5, 3, bias=False),
        (5,),
        torch=_torch_dense(5, 3, bias=False),
        torch_pairs=_dense_pairs,
    )
    for act in ("relu", "tanh", "gelu", "softmax"):  # softmax: the dense kernel, then the softmax rows
        yield LayerCase(
            f"dense-{act}",
            lambda act=act: fnn.Dense(5, 4, activation=act),
            (5,),
            torch=_torch_dense(5, 4, act),
            torch_pairs=_dense_pairs,
        )
    yield LayerCase(
        "dense-time",
        lambda: fnn.Dense(4, 3, activation="tanh"),
        (3, 4),
        torch=_torch_dense(4, 3, "tanh"),
        torch_pairs=_dense_pairs,
    )


def _activation_cases():
    layers = {
        "identity": fnn.Identity,
        "sigmoid": fnn.Sigmoid,
        "tanh": fnn.Tanh,
        "relu": fnn.ReLU,
        "leaky_relu": lambda: fnn.LeakyReLU(0.2),
        "elu": fnn.ELU,
        "selu": fnn.SELU,
        "gelu": fnn.GELU,
        "gelu_tanh": lambda: fnn.GELU(approximate="tanh"),
        "softmax": fnn.Softmax,
        "log_softmax": fnn.LogSoftmax,
    }
    for name, make in layers.items():
        yield LayerCase(name, make, (5,), torch=_TORCH_ACTIVATIONS[name], torch_pairs=no_pairs)
    yield LayerCase("softmax-time", fnn.Softmax, (2, 3), torch=_TORCH_ACTIVATIONS["softmax"], torch_pairs=no_pairs)


def _other_cases():
    yield LayerCase(
        "dropout-0",
        lambda: fnn.Dropout(0.0),
        (5,),
        torch=lambda nn: nn.Dropout(0.0),
        torch_pairs=no_pairs,
        has_buffers=True,
    )
    yield LayerCase(
        "dropout-0.3",
        lambda: fnn.Dropout(0.3),
        (5,),
        torch=lambda nn: nn.Dropout(0.3),
        torch_pairs=no_pairs,
        training=False,
        deterministic=False,
        has_buffers=True,
    )
    for training in (True, False):
        yield LayerCase(
            f"batchnorm-{'train' if training else 'eval'}",
            lambda: fnn.BatchNorm1d(4),
            (4,),
            torch=lambda nn: nn.BatchNorm1d(4),
            torch_pairs=norm_pairs,
            training=training,
            has_buffers=True,
            batch_one_training=False,
        )
    yield LayerCase(
        "layernorm", lambda: fnn.LayerNorm(4), (4,), torch=lambda nn: nn.LayerNorm(4), torch_pairs=norm_pairs
    )
    yield LayerCase(
        "layernorm-time", lambda: fnn.LayerNorm(4), (3, 4), torch=lambda nn: nn.LayerNorm(4), torch_pairs=norm_pairs
    )
    yield LayerCase(
        "residual",
        lambda: fnn.Residual([fnn.Dense(4, 4, activation="tanh")]),
        (4,),
        torch=_torch_residual(_torch_dense(4, 4, "tanh")),
        torch_pairs=_residual_pairs,
    )
    yield LayerCase(
        "residual-projection",
        lambda: fnn.Residual([fnn.Dense(4, 3, activation="relu")]),
        (4,),
        torch=_torch_residual(_torch_dense(4, 3, "relu"), lambda nn: nn.Linear(4, 3, bias=False)),
        torch_pairs=_residual_pairs,
    )


def conv_pairs(layer, module) -> dict:
    """A torch Conv's weight and bias: the same layout as fastnn's."""
    pairs = {"weight": (module.weight, False)}
    if module.bias is not None:
        pairs["bias"] = (module.bias, False)
    return pairs


def _conv_cases():
    combos = [  # (id, kwargs, per-sample shape)
        ("conv2d", dict(in_channels=2, out_channels=3, kernel_size=3), (2, 5, 6)),
        (
            "conv2d-stride-pad",
            dict(in_channels=2, out_channels=4, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0)),
            (2, 5, 5),
        ),
        (
            "conv2d-same-dilation-groups",
            dict(in_channels=4, out_channels=4, kernel_size=3, padding="same", dilation=2, groups=2),
            (4, 5, 5),
        ),
        ("conv2d-depthwise", dict(in_channels=3, out_channels=3, kernel_size=3, padding=1, groups=3), (3, 4, 4)),
        ("conv2d-no-bias", dict(in_channels=2, out_channels=2, kernel_size=2, bias=False), (2, 3, 3)),
    ]
    for name, kwargs, shape in combos:
        yield LayerCase(
            name,
            lambda kwargs=kwargs: fnn.Conv2d(**kwargs),
            shape,
            torch=lambda nn, kwargs=kwargs: nn.Conv2d(**kwargs),
            torch_pairs=conv_pairs,
        )
    yield LayerCase(
        "conv2d-relu",
        lambda: fnn.Conv2d(2, 3, 3, padding=1, activation="relu"),
        (2, 4, 4),
        torch=lambda nn: nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU()),
        torch_pairs=lambda layer, module: conv_pairs(layer, module[0]),
    )
    for name, kwargs in (
        ("conv1d", dict(in_channels=3, out_channels=4, kernel_size=3)),
        ("conv1d-stride-dilation", dict(in_channels=2, out_channels=2, kernel_size=3, stride=2, padding=2, dilation=2)),
    ):
        yield LayerCase(
            name,
            lambda kwargs=kwargs: fnn.Conv1d(**kwargs),
            (kwargs["in_channels"], 9),
            torch=lambda nn, kwargs=kwargs: nn.Conv1d(**kwargs),
            torch_pairs=conv_pairs,
        )


def _pooling_cases():
    yield LayerCase(
        "maxpool2d", lambda: fnn.MaxPool2d(2), (2, 5, 4), torch=lambda nn: nn.MaxPool2d(2), torch_pairs=no_pairs
    )
    yield LayerCase(
        "maxpool2d-stride-pad",
        lambda: fnn.MaxPool2d(3, stride=2, padding=1),
        (2, 5, 5),
        torch=lambda nn: nn.MaxPool2d(3, stride=2, padding=1),
        torch_pairs=no_pairs,
    )
    yield LayerCase(
        "avgpool2d-pad",
        lambda: fnn.AvgPool2d(2, padding=1),
        (2, 4, 5),
        torch=lambda nn: nn.AvgPool2d(2, padding=1),
        torch_pairs=no_pairs,
    )
    yield LayerCase(
        "maxpool1d", lambda: fnn.MaxPool1d(2), (3, 7), torch=lambda nn: nn.MaxPool1d(2), torch_pairs=no_pairs
    )
    yield LayerCase(
        "avgpool1d",
        lambda: fnn.AvgPool1d(3, stride=2),
        (2, 8),
        torch=lambda nn: nn.AvgPool1d(3, stride=2),
        torch_pairs=no_pairs,
    )
    yield LayerCase(
        "global-avgpool",
        fnn.GlobalAvgPool,
        (3, 4, 4),
        torch=lambda nn: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        torch_pairs=no_pairs,
    )
    yield LayerCase("flatten", fnn.Flatten, (2, 3, 2), torch=lambda nn: nn.Flatten(), torch_pairs=no_pairs)
    yield LayerCase("reshape", lambda: fnn.Reshape((3, -1)), (6, 2), torch=None)
    yield LayerCase("masking", lambda: fnn.Masking(0.0), (3, 2), torch=lambda nn: nn.Identity(), torch_pairs=no_pairs)
    # channels first, as torch's BatchNorm; one position per channel (a CNN pooled down to 1x1)
    # runs the row kernels on a (batch, C) view
    for name, kind, shape, modes in (
        ("batchnorm2d", "BatchNorm2d", (3, 3, 2), (True, False)),
        ("batchnorm2d-1x1", "BatchNorm2d", (3, 1, 1), (True, False)),
        ("batchnorm1d-length", "BatchNorm1d", (3, 4), (True,)),
        ("batchnorm1d-length-1", "BatchNorm1d", (3, 1), (True,)),
    ):
        for training in modes:
            yield LayerCase(
                name if len(modes) == 1 else f"{name}-{'train' if training else 'eval'}",
                lambda kind=kind: getattr(fnn, kind)(3),
                shape,
                torch=lambda nn, kind=kind: getattr(nn, kind)(3),
                torch_pairs=norm_pairs,
                training=training,
                has_buffers=True,
                batch_one_training=False,
            )
    # (padding_idx is left out: its row's gradient is zero by definition, not by calculus;
    # tests/test_conv_layers.py checks it against torch)
    yield LayerCase(
        "embedding",
        lambda: fnn.Embedding(11, 3),
        (4,),
        inputs=index_inputs(11),
        torch=lambda nn: nn.Embedding(11, 3),
        torch_pairs=lambda layer, module: {"weight": (module.weight, False)},
    )


def torch_recurrent(kind: str, return_sequences: bool = True, **kwargs) -> Callable:
    """torch.nn -> torch.nn.{kind}(batch_first=True, **kwargs) returning the output sequence, or the
    last layer's final hidden state(s) (h_n[-D:], concatenated) as fastnn's return_sequences=False."""

    def make(nn):
        class Recurrent(nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn = getattr(nn, kind)(batch_first=True, **kwargs)

            def forward(self, x):
                out, state = self.rnn(x)
                if return_sequences:
                    return out
                h_n = state[0] if kind == "LSTM" else state
                directions = 2 if self.rnn.bidirectional else 1
                return h_n[-directions:].transpose(0, 1).reshape(x.shape[0], -1)

        return Recurrent()

    return make


def recurrent_pairs(layer, module) -> dict:
    """torch's RNN parameters have fastnn's names and layouts."""
    return {name: (tensor, False) for name, tensor in module.rnn.named_parameters()}


def _recurrent_cases():
    combos = [  # (id, fastnn class, torch class, kwargs, return_sequences, per-sample shape)
        ("lstm", fnn.LSTM, "LSTM", dict(input_size=3, hidden_size=4), True, (5, 3)),
        (
            "lstm-2layer-bidirectional-last",
            fnn.LSTM,
            "LSTM",
            dict(input_size=3, hidden_size=2, num_layers=2, bidirectional=True),
            False,
            (4, 3),
        ),
        ("gru", fnn.GRU, "GRU", dict(input_size=3, hidden_size=4), True, (5, 3)),
        (
            "gru-bidirectional-no-bias",
            fnn.GRU,
            "GRU",
            dict(input_size=2, hidden_size=3, bidirectional=True, bias=False),
            True,
            (3, 2),
        ),
        ("gru-last", fnn.GRU, "GRU", dict(input_size=3, hidden_size=3), False, (4, 3)),
        ("rnn-tanh", fnn.RNN, "RNN", dict(input_size=3, hidden_size=4), True, (5, 3)),
        (
            "rnn-relu-2layer-last",
            fnn.RNN,
            "RNN",
            dict(input_size=3, hidden_size=3, num_layers=2, nonlinearity="relu"),
            False,
            (4, 3),
        ),
    ]
    for name, cls, kind, kwargs, sequences, shape in combos:
        yield LayerCase(
            name,
            lambda cls=cls, kwargs=kwargs, sequences=sequences: cls(**kwargs, return_sequences=sequences),
            shape,
            torch=torch_recurrent(kind, sequences, **kwargs),
            torch_pairs=recurrent_pairs,
        )


def _torch_wrapper(forward, inner=None):
    """torch.nn -> a module computing ``forward(module, x)`` (``inner(nn)``: its child ``inner``)."""

    def make(nn):
        class Wrapper(nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = None if inner is None else inner(nn)

            def forward(self, x):
                return forward(self, x)

        return Wrapper()

    return make


def _torch_attention(embed, heads, causal=False, bias=True):
    def forward(module, x):
        mask = None
        if causal:
            import torch

            mask = torch.triu(torch.ones(x.shape[1], x.shape[1], dtype=torch.bool), diagonal=1)
        return module.inner(x, x, x, need_weights=False, attn_mask=mask)[0]

    return _torch_wrapper(forward, lambda nn: nn.MultiheadAttention(embed, heads, bias=bias, batch_first=True))


def attention_pairs(mha, prefix: str = "") -> dict:
    """A torch MultiheadAttention's parameters under fastnn's names (the same layout)."""
    pairs = {
        f"{prefix}in_proj_weight": (mha.in_proj_weight, False),
        f"{prefix}out_proj_weight": (mha.out_proj.weight, False),
    }
    if mha.in_proj_bias is not None:
        pairs.update(
            {f"{prefix}in_proj_bias": (mha.in_proj_bias, False), f"{prefix}out_proj_bias": (mha.out_proj.bias, False)}
        )
    return pairs


def _torch_positional(max_len):
    def forward(module, x):
        import math

        import torch

        position = torch.arange(max_len, dtype=x.dtype).unsqueeze(1)  # the PyTorch tutorial's formula
        div_term = torch.exp(torch.arange(0, x.shape[2], 2, dtype=x.dtype) * (-math.log(10000.0) / x.shape[2]))
        pe = torch.zeros(max_len, x.shape[2], dtype=x.dtype)
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        return x + pe[: x.shape[1]]

    return _torch_wrapper(forward)


def _torch_encoder(embed, heads, ff, activation="relu", norm_first=False):
    return lambda nn: nn.TransformerEncoderLayer(
        embed, heads, ff, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
    )


def encoder_pairs(layer, module) -> dict:
    """torch.nn.TransformerEncoderLayer's parameters under TransformerEncoderBlock's names."""
    if layer.norm_first:
        names = {
            "attention.block.0.": module.norm1,
            "feedforward.block.0.": module.norm2,
            "feedforward.block.1.": module.linear1,
            "feedforward.block.3.": module.linear2,
        }
        pairs = attention_pairs(module.self_attn, "attention.block.1.")
    else:
        names = {
            "norm1.": module.norm1,
            "norm2.": module.norm2,
            "feedforward.block.0.": module.linear1,
            "feedforward.block.2.": module.linear2,
        }
        pairs = attention_pairs(module.self_attn, "attention.block.0.")
    for prefix, sub in names.items():
        pairs.update(
            linear_pairs(sub, prefix)
            if hasattr(sub, "in_features")
            else {f"{prefix}weight": (sub.weight, False), f"{prefix}bias": (sub.bias, False)}
        )
    return pairs


def _sequence_cases():
    yield LayerCase(
        "attention",
        lambda: fnn.MultiHeadSelfAttention(6, 2),
        (4, 6),
        torch=_torch_attention(6, 2),
        torch_pairs=lambda layer, module: attention_pairs(module.inner),
    )
    yield LayerCase(
        "attention-causal-no-bias",
        lambda: fnn.MultiHeadSelfAttention(4, 1, causal=True, bias=False),
        (3, 4),
        torch=_torch_attention(4, 1, causal=True, bias=False),
        torch_pairs=lambda layer, module: attention_pairs(module.inner),
    )
    yield LayerCase(
        "positional-encoding",
        lambda: fnn.PositionalEncoding(max_len=9),
        (4, 6),
        torch=_torch_positional(9),
        torch_pairs=no_pairs,
        has_buffers=True,
    )
    yield LayerCase(
        "transformer-block",
        lambda: fnn.TransformerEncoderBlock(4, 2, 6),
        (3, 4),
        torch=_torch_encoder(4, 2, 6),
        torch_pairs=encoder_pairs,
        has_buffers=True,
    )
    yield LayerCase(
        "transformer-block-prenorm-gelu",
        lambda: fnn.TransformerEncoderBlock(4, 1, 5, activation="gelu", norm_first=True),
        (3, 4),
        torch=_torch_encoder(4, 1, 5, "gelu", norm_first=True),
        torch_pairs=encoder_pairs,
        has_buffers=True,
    )
    yield LayerCase(
        "last-step", fnn.LastStep, (4, 3), torch=_torch_wrapper(lambda module, x: x[:, -1]), torch_pairs=no_pairs
    )
    yield LayerCase(
        "time-avgpool",
        lambda: fnn.GlobalAvgPool(axis="time"),
        (4, 3),
        torch=_torch_wrapper(lambda module, x: x.mean(dim=1)),
        torch_pairs=no_pairs,
    )
    yield LayerCase(
        "time-distributed-dense",
        lambda: fnn.TimeDistributed(fnn.Dense(3, 2, activation="tanh")),
        (4, 3),
        torch=_torch_dense(3, 2, "tanh"),
        torch_pairs=_dense_pairs,
    )
    yield LayerCase(
        "time-distributed-conv1d",
        lambda: fnn.TimeDistributed(fnn.Conv1d(2, 3, 2)),
        (3, 2, 5),
        torch=_torch_wrapper(
            lambda module, x: module.inner(x.reshape(-1, *x.shape[2:])).reshape(x.shape[0], x.shape[1], 3, -1),
            lambda nn: nn.Conv1d(2, 3, 2),
        ),
        torch_pairs=lambda layer, module: conv_pairs(layer, module.inner),
    )


CASES: tuple[LayerCase, ...] = (
    *_dense_cases(),
    *_activation_cases(),
    *_other_cases(),
    *_conv_cases(),
    *_pooling_cases(),
    *_recurrent_cases(),
    *_sequence_cases(),
)
