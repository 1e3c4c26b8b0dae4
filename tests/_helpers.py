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
