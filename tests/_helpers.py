"""Helpers several test modules share (one copy each): random parameters for conversion tests and
an interrupt at a chosen batch for resume tests."""

from __future__ import annotations

import numpy as np

import fastnn as fnn


def randomize(model, seed=0):
    """Parameters in U(-1, 1), float buffers (running statistics) in U(0.5, 1.5); returns ``model``."""
    rng = np.random.default_rng(seed)
    model.params[...] = rng.uniform(-1.0, 1.0, model.params.size)
    for buf in model.state_arrays().values():
        if buf.dtype.kind == "f" and not np.shares_memory(buf, model.params):
            buf[...] = rng.uniform(0.5, 1.5, buf.shape)
    return model


class InterruptAt(fnn.callbacks.Callback):
    """KeyboardInterrupt at the end of batch ``batch`` of epoch ``epoch`` (once)."""

    def __init__(self, epoch, batch):
        self.at, self.epoch = (epoch, batch), None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            self.at = None
            raise KeyboardInterrupt


def valid_rows(lengths, steps, per_step=1):
    """bool (len(lengths) * steps * per_step,): which loss rows of padded sequences are valid steps."""
    return np.repeat(np.arange(steps)[None, :] < np.asarray(lengths)[:, None], per_step, axis=1).reshape(-1)


def loss_rows(name, rng, m, k, dtype):
    """(predictions (m, k) of ``dtype``, targets) for the loss ``name``: int labels for
    cross-entropy, probabilities for binary cross-entropy, values otherwise."""
    pred = (rng.standard_normal((m, k)) * 2).astype(dtype)
    if name == "cross_entropy":
        return pred, rng.integers(0, k, m)
    if name == "binary_cross_entropy":
        return pred, rng.random((m, k)).astype(dtype)
    return pred, rng.standard_normal((m, k)).astype(dtype)
