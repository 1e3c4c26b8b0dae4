"""Inverted dropout."""
from __future__ import annotations

import numpy as np

from .. import _validation as V
from .base import Layer


class Dropout(Layer):
    """Zero each unit with probability ``p`` in training and scale the kept ones by 1/(1-p), so
    the expected activation is unchanged; the identity in evaluation.

    Masks come from the counter-based RNG keyed by (model seed, layer, step): the same seed
    gives the same masks on any number of threads, and on the CPU and a GPU. The mask is stored
    as bits for backward; the step counter stays a host array on either device.
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = V.check_float(p, "p", 0.0, 1.0, high_inclusive=False)
        self.seed, self.stream = 0, 0
        self.step = np.zeros(1, np.int64)  # masks drawn so far; saved so that resuming is exact
        self._workspace = None
        self._identity = True

    def build(self, in_features, dtype):
        out = super().build(in_features, dtype)
        self._workspace = self.workspace(y=(out,), grad_x=(out,))
        self._masks = self.workspace(np.uint8, mask=(self.K.mask_bytes(out),))
        return out

    def seed_rng(self, seed: int, stream: int) -> None:
        self.seed, self.stream = seed, stream

    def buffers(self):
        return {"step": self.step}

    def forward_calls(self, x, training):
        self._identity = not training or self.p == 0.0
        if self._identity:
            return [], x
        y = self._workspace(x.shape[0])["y"]
        mask = self._masks(x.shape[0])["mask"]
        return [(self.K.dropout_forward_counted, (x, y, mask, self.p, self.seed, self.stream, self.step))], y

    def backward_calls(self, grad_y, need_grad_x):
        if self._identity:
            return [], grad_y
        grad_x = self._workspace(grad_y.shape[0])["grad_x"]
        return [(self.K.dropout_backward, (grad_y, self._masks(grad_y.shape[0])["mask"], grad_x, self.p))], grad_x

    def get_config(self):
        return {"p": self.p}
