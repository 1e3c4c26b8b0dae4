"""torch.nn modules for the fastnn layers torch has no single module for (made when torch is first
needed; import them by name: ``from fastnn.interop.torch_adapters import Recurrent``)."""

from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Any

from ..kernels.attention import positional_table

ADAPTERS = (
    "Recurrent",
    "SelfAttention",
    "Residual",
    "Reshape",
    "LastStep",
    "TimeMean",
    "TimeDistributed",
    "PositionalEncoding",
    "CausalEncoderLayer",
)


def torch_module():
    try:
        import torch
    except ImportError:
        raise ImportError("PyTorch interop needs torch: pip install torch") from None
    return torch


@functools.cache
def adapters() -> SimpleNamespace:
    """The adapter modules (made once, when torch is first needed; found as attributes of this module)."""
    torch = torch_module()
    nn: Any = torch.nn  # (torch is optional: Any to mypy, whose classes cannot derive from a variable)

    def causal_mask(steps: int):
        return torch.triu(torch.ones(steps, steps, dtype=torch.bool), diagonal=1)

    class Recurrent(nn.Module):
        """An ``nn.RNN/LSTM/GRU(batch_first=True)`` giving its output sequence (return_sequences) or
        the last layer's final hidden state(s) (batch, D * hidden), from zero or learned states
        ``h0``/``c0`` (num_layers * D, hidden)."""

        def __init__(self, rnn, return_sequences: bool = True, learn_initial_state: bool = False):
            super().__init__()
            self.rnn, self.return_sequences = rnn, return_sequences
            rows = rnn.num_layers * (2 if rnn.bidirectional else 1)
            self.h0 = self.c0 = None
            if learn_initial_state:
                self.h0 = nn.Parameter(torch.zeros(rows, rnn.hidden_size))
                if isinstance(rnn, nn.LSTM):
                    self.c0 = nn.Parameter(torch.zeros(rows, rnn.hidden_size))

        def forward(self, x):
            state = None
            if self.h0 is not None:
                h0 = self.h0[:, None, :].expand(-1, x.shape[0], -1).contiguous()
                state = (h0, self.c0[:, None, :].expand(-1, x.shape[0], -1).contiguous()) if self.c0 is not None else h0
            out, final = self.rnn(x, state)
            if self.return_sequences:
                return out
            h_n = final[0] if isinstance(final, tuple) else final
            d = 2 if self.rnn.bidirectional else 1
            return h_n[-d:].transpose(0, 1).reshape(x.shape[0], -1)

    class SelfAttention(nn.Module):
        """``mha(x, x, x)`` of an ``nn.MultiheadAttention(batch_first=True)``, optionally causal."""

        def __init__(self, mha, causal: bool = False):
            super().__init__()
            self.mha, self.causal = mha, causal

        def forward(self, x):
            mask = causal_mask(x.shape[1]) if self.causal else None
            return self.mha(x, x, x, need_weights=False, attn_mask=mask)[0]

    class CausalEncoderLayer(nn.Module):
        """An ``nn.TransformerEncoderLayer(batch_first=True)`` whose queries see no later key."""

        def __init__(self, layer):
            super().__init__()
            self.layer = layer

        def forward(self, x):
            return self.layer(x, src_mask=causal_mask(x.shape[1]), is_causal=True)

    class Residual(nn.Module):
        """``block(x) + x`` (or ``+ projection(x)``, a bias-free Linear)."""

        def __init__(self, block, projection=None):
            super().__init__()
            self.block, self.projection = block, projection

        def forward(self, x):
            return self.block(x) + (x if self.projection is None else self.projection(x))

    class Reshape(nn.Module):
        """(batch, ...) -> (batch, *shape)."""

        def __init__(self, shape):
            super().__init__()
            self.shape = tuple(shape)

        def forward(self, x):
            return x.reshape(x.shape[0], *self.shape)

    class LastStep(nn.Module):
        """(batch, time, features) -> (batch, features): the last step."""

        def forward(self, x):
            return x[:, -1]

    class TimeMean(nn.Module):
        """(batch, time, features) -> (batch, features): the mean over time."""

        def forward(self, x):
            return x.mean(dim=1)

    class TimeDistributed(nn.Module):
        """``module`` applied to every step of (batch, time, ...)."""

        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, x):
            y = self.module(x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]))
            return y.reshape(x.shape[0], x.shape[1], *y.shape[1:])

    class PositionalEncoding(nn.Module):
        """x + the sinusoidal table (fastnn's PositionalEncoding), then dropout."""

        def __init__(self, max_len: int, features: int, dropout: float = 0.0):
            super().__init__()
            self.max_len, self.dropout = max_len, nn.Dropout(dropout)
            self.register_buffer("pe", torch.from_numpy(positional_table(max_len, features)), persistent=False)

        def forward(self, x):
            return self.dropout(x + self.pe[: x.shape[1]].to(x.dtype))

    found = {
        cls.__name__: cls
        for cls in (
            Recurrent,
            SelfAttention,
            CausalEncoderLayer,
            Residual,
            Reshape,
            LastStep,
            TimeMean,
            TimeDistributed,
            PositionalEncoding,
        )
    }
    for cls in found.values():  # picklable: found by name in this module (see __getattr__)
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
    return SimpleNamespace(**found)


def __getattr__(name: str):
    if name in ADAPTERS:
        return getattr(adapters(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
