"""Masking: marks the trailing padding of sequence input so later layers ignore it."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _validation as V
from .. import backend
from .base import Layer, normalize_shape, shape_str
from .registry import register_layer


def refuse_empty_sequences(has_valid_step: np.ndarray, argument: str, how: str) -> None:
    """ValueError naming the first sample whose every step is padding (its length would be 0);
    ``has_valid_step``: bool (samples,)."""
    empty = np.flatnonzero(~has_valid_step)
    if empty.size:
        raise ValueError(
            f"{argument}[{int(empty[0])}] is padding at every step ({how}); a sequence needs at least "
            f"one valid step: drop empty samples ({empty.size} in all) before training or predicting"
        )


@register_layer
class Masking(Layer):
    """Marks the padded steps of sequence input ``(batch, time, *features)``, like Keras' Masking:
    a step whose values all equal ``mask_value`` is padding, and each sample's valid steps are
    those before its last non-padding step (padding is trailing, as torch's packed sequences).

    The output is the input unchanged; the lengths travel with it to the following layers
    (recurrent layers and attention skip the padded steps, per-step layers keep them, LastStep
    and GlobalAvgPool(axis="time") read each sample's valid steps) and a layer that cannot honour
    them is refused when the model is built. When they reach the output (per-step outputs
    ``(batch, time, k)``), the loss, its gradient, accuracy and every metric leave the padded steps
    out, as Keras does: the mean is over the valid steps (docs/architecture.md, "Sequences").
    Unlike Keras, a padding step *inside* a sequence counts as valid (the lengths are one past the
    last non-padding step). Must be the model's first layer; for token ids use
    ``Embedding(..., padding_idx=p, mask_padding=True)`` instead.

    The comparison is in the model's dtype, on the input as the model converts it (float16 or
    integer data become float32 or float64 first), so a padding value is one that equals
    ``mask_value`` after that conversion; ``-0.0`` equals ``0.0`` (IEEE, as Keras). A
    ``mask_value`` that the model's dtype cannot hold (it would become inf, or 0 for a nonzero
    value) is refused when the model is built.

    Parameters
    ----------
    mask_value : float, default 0.0
        The value that marks a padded step (every feature of the step equals it); finite.

    Examples
    --------
    >>> import fastnn as fnn
    >>> x = np.array([[[1.0], [2.0], [0.0]], [[3.0], [0.0], [0.0]]], np.float32)   # lengths 2 and 1
    >>> model = fnn.Sequential([fnn.Masking(0.0), fnn.LastStep()], input_shape=(3, 1), seed=0)
    >>> model.predict(x)                      # each sample's last valid step
    array([[2.],
           [3.]], dtype=float32)
    """

    lengths_policy = "use"
    produces_lengths = True

    def __init__(self, mask_value: float = 0.0):
        super().__init__()
        self.mask_value = V.check_float(mask_value, "mask_value")

    def expected_input_shape(self):
        return None

    def build(self, input_shape, dtype):
        shape = normalize_shape(input_shape)
        if len(shape) < 2:
            raise ValueError(
                f"{self!r} takes sequences (batch, time, features...), got {shape_str(shape)}; "
                f"reshape the data to (samples, time, features)"
            )
        super().build(shape, dtype)
        with np.errstate(over="ignore", under="ignore"):
            typed = self.dtype.type(self.mask_value)
        if not np.isfinite(typed) or (typed == 0) != (self.mask_value == 0):
            raise ValueError(
                f"{self!r}: mask_value={self.mask_value} becomes {typed} in the model's dtype {self.dtype}, so "
                f"padding would not be recognised as given; pad with a value {self.dtype} holds "
                f"(e.g. mask_value=0.0 or -1.0), or build the model with dtype='float64'"
            )
        self._lengths = self.workspace(dtype=np.int64, lengths=())
        return shape

    def _compared(self, X) -> tuple[np.ndarray, Any]:
        """``(steps, mask_value)``: X on the host as ``(batch, time, step values)`` in the dtype the
        model's kernels compare in (the layer's once built, else X's float32 or float64, else
        float32, the default model dtype), and mask_value in it."""
        X = np.asarray(backend.to_host(X))
        dtype = self.dtype
        if dtype is None:
            dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.dtype(np.float32)
        with np.errstate(over="ignore", under="ignore"):  # (as the model's own conversion: values beyond become inf)
            steps = np.ascontiguousarray(X.reshape(X.shape[0], X.shape[1], -1), dtype=dtype)
            return steps, dtype.type(self.mask_value)

    def check_sequences(self, X: np.ndarray, argument: str = "X") -> None:
        """Refuse input in which a sample is padding at every step (the model calls it).

        Parameters
        ----------
        X : ndarray
            Checked input ``(batch, time, *features)``.
        argument : str, default "X"
            The argument's name for the message.

        Raises
        ------
        ValueError
            Naming the first sample with no valid step.

        Examples
        --------
        >>> import fastnn as fnn
        >>> x = np.array([[[1.0], [0.0]], [[0.0], [0.0]]])  # sample 1 is padding only
        >>> fnn.Masking(0.0).check_sequences(x)
        Traceback (most recent call last):
        ...
        ValueError: X[1] is padding at every step ...
        """
        steps, mask_value = self._compared(X)
        has_valid_step = (steps != mask_value).any(axis=(1, 2))
        refuse_empty_sequences(has_valid_step, argument, f"every value equals mask_value={self.mask_value}")

    def sequence_lengths(self, X) -> np.ndarray:
        """Each sample's valid steps: one past its last step that is not padding (the lengths
        the model's kernels compute in each step, here on the host).

        Parameters
        ----------
        X : ndarray
            Checked input ``(batch, time, *features)``, on the host or a device.

        Returns
        -------
        ndarray
            int64 ``(batch,)``.

        Examples
        --------
        >>> import fastnn as fnn
        >>> x = np.array([[[1.0], [2.0], [0.0]], [[3.0], [0.0], [0.0]]], np.float32)
        >>> fnn.Masking(0.0).sequence_lengths(x)
        array([2, 1])
        """
        steps, mask_value = self._compared(X)
        lengths = np.empty(steps.shape[0], np.int64)
        backend.kernels("cpu").lengths_from_values(steps, mask_value, lengths)
        return lengths

    def forward_calls(self, x, ctx):
        lengths = self._lengths(x.shape[0], ctx.arena)["lengths"]
        ctx.out_lengths = lengths
        steps = x.reshape((x.shape[0], x.shape[1], -1))
        return [(self.K.lengths_from_values, (steps, x.dtype.type(self.mask_value), lengths))], x

    def output_lengths(self, ctx):
        return ctx.out_lengths

    def backward_calls(self, grad_y, ctx, need_grad_x):
        return [], (grad_y if need_grad_x else None)

    def get_config(self):
        return {"mask_value": self.mask_value}
