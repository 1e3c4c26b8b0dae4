"""Inverted dropout over inputs of any shape."""

from __future__ import annotations

import numpy as np

from .. import _validation as V
from .base import Layer, flat_rows, size_of
from .registry import register_layer


@register_layer
class Dropout(Layer):
    """Zero each unit with probability ``p`` in training and scale the kept ones by 1/(1-p), so
    the expected activation is unchanged; the identity in evaluation. Any shape, kept.

    Masks come from the counter-based RNG keyed by (model seed, layer, step): the same seed
    gives the same masks on any number of threads, and on the CPU and a GPU. The mask is stored
    as bits for backward; the step counter stays a host array on either device.

    Parameters
    ----------
    p : float, default 0.5
        The probability of zeroing a unit, in [0, 1).

    Raises
    ------
    ValueError
        When ``p`` is outside [0, 1).

    Examples
    --------
    >>> import fastnn as fnn
    >>> drop = fnn.Dropout(0.5)
    >>> model = fnn.Sequential([drop], input_shape=(1000,), seed=0)
    >>> x = np.ones((1, 1000), np.float32)
    >>> y = drop.forward(x, training=True)
    >>> sorted(set(y.ravel().tolist())), 400 < int((y == 0).sum()) < 600
    ([0.0, 2.0], True)
    >>> bool((model.predict(x) == x).all())     # evaluation: the identity
    True
    """

    lengths_policy = "keep"
    attribute_aliases = {"rate": "p"}  # Keras

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = V.check_float(p, "p", 0.0, 1.0, high_inclusive=False)
        self._seed, self._stream = 0, 0
        self._step = np.zeros(1, np.int64)  # masks drawn so far; saved so that resuming is exact
        self.first_row = np.zeros(1, np.int64)  # global row of the batch's row 0 (fastnn.distributed sets it)
        self._workspace = None

    @property
    def step(self) -> np.ndarray:
        """Masks drawn so far (a 1-element int64 array, saved with the model).

        Examples
        --------
        >>> import fastnn as fnn
        >>> drop = fnn.Dropout(0.5)
        >>> _ = drop.build((4,), "float32")
        >>> _ = drop.forward(np.ones((2, 4), np.float32), training=True)
        >>> drop.step
        array([1])
        """
        return self._step

    @property
    def p(self) -> float:
        """The probability of zeroing a unit, in [0, 1); a new value is checked as the constructor
        checks it, and a built model uses it from its next call.

        Returns
        -------
        float
            The probability.

        Examples
        --------
        >>> import fastnn as fnn
        >>> drop = fnn.Dropout(0.5)
        >>> drop.p = 0.25
        >>> drop.p
        0.25
        """
        return self.__dict__["_p"]

    @p.setter
    def p(self, value: float) -> None:
        self.__dict__["_p"] = V.check_float(value, "p", 0.0, 1.0, high_inclusive=False)

    def build(self, input_shape, dtype):
        shape = super().build(input_shape, dtype)
        self._workspace = self.workspace(y=shape, grad_x=shape)
        self._masks = self.workspace(np.uint8, mask=(self.K.mask_bytes(size_of(shape)),))
        return shape

    def seed_rng(self, seed: int, stream: int) -> None:
        """Key the masks by the model's seed and this layer's stream (the model calls it).

        Parameters
        ----------
        seed : int
            The model's seed.
        stream : int
            A number unique to this layer in the model.

        Examples
        --------
        >>> import fastnn as fnn
        >>> x = np.ones((1, 16), np.float32)
        >>> a, b, c = fnn.Dropout(0.5), fnn.Dropout(0.5), fnn.Dropout(0.5)
        >>> for layer, stream in ((a, 1), (b, 1), (c, 2)):
        ...     _ = layer.build((16,), "float32")
        ...     layer.seed_rng(seed=7, stream=stream)
        >>> ya, yb, yc = (layer.forward(x, training=True) for layer in (a, b, c))
        >>> np.array_equal(ya, yb), np.array_equal(ya, yc)  # same stream: same mask
        (True, False)
        """
        self._seed, self._stream = seed, stream

    def buffers(self):
        return {"step": self._step}

    def forward_calls(self, x, ctx):
        ctx.identity = not ctx.training or self.p == 0.0
        if ctx.identity:
            return [], x
        y = self._workspace(x.shape[0], ctx.arena)["y"]
        mask = self._masks(x.shape[0], ctx.arena)["mask"]
        args = (flat_rows(x), flat_rows(y), mask, self.p, self._seed, self._stream, self._step, self.first_row)
        return [(self.K.dropout_forward_counted_from, args)], y

    def backward_calls(self, grad_y, ctx, need_grad_x):
        if ctx.identity:
            return [], grad_y
        m = grad_y.shape[0]
        grad_x = self._workspace(m, ctx.arena)["grad_x"]
        mask = self._masks(m, ctx.arena)["mask"]
        return [(self.K.dropout_backward, (flat_rows(grad_y), mask, flat_rows(grad_x), self.p))], grad_x

    def get_config(self):
        return {"p": self.p}
