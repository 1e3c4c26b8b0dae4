"""Gradient accumulation: one optimizer update per ``k`` batches (``fit(..., accumulate=k)``).

The gradients of ``k`` consecutive batches are summed, each weighted by its sample count for a
mean loss (``reduction="mean"``: the sum is divided by the samples of the group), so the update
equals that of ONE batch of all the group's samples: the same parameters up to rounding (tested
in float64). With ``reduction="sum"`` the gradients are summed as they are. An epoch's last group
may be shorter; it still updates. Learning-rate schedules and ``optimizer.step_count`` count
updates, not batches (as Keras' ``iterations`` and PyTorch's ``scheduler.step()`` after
``optimizer.step()``); callbacks' ``on_batch_*`` and the progress bar still see every batch.

Layers that look at the batch differ from the big batch: BatchNorm normalises each batch with its
own statistics (and updates the running statistics once per batch), and Dropout draws its masks
per step, so with them the result is that of ``k`` smaller batches' statistics, not the big one's.

A group is one transaction: an error in any of its batches restores the running statistics and
dropout counters to the group's start and nothing is updated; ``fit`` commits its position in the
epoch (and acts on Ctrl-C) only after the group's update.
"""

from __future__ import annotations

import math

import numpy as np

from . import _validation as V
from . import backend


def check_accumulate(accumulate, device: str) -> int:
    """``accumulate`` as an int >= 1 (the CPU only for now, above 1)."""
    if isinstance(accumulate, bool) or not isinstance(accumulate, (int, np.integer)):
        raise TypeError(
            f"accumulate must be an integer >= 1 (batches per optimizer update), got "
            f"{type(accumulate).__name__} {accumulate!r}"
        )
    accumulate = V.check_int(accumulate, "accumulate", minimum=1)
    if accumulate > 1 and device != "cpu":
        raise ValueError(
            f"accumulate={accumulate} runs on the CPU only for now; the model is on {device!r}: "
            f"train with accumulate=1 (a larger batch_size) or move the model with model.to('cpu')"
        )
    return accumulate


class Stepper:
    """Runs the training steps of a fit: ``step(xb, yb, last)`` -> (loss, output, committed), where
    ``committed`` says the optimizer updated (every ``accumulate``-th batch, or ``last``)."""

    def __init__(self, model, accumulate: int = 1):
        self.model, self.k = model, accumulate
        self.count = 0  # batches in the open group
        self.samples = 0
        self._buffers: tuple[np.ndarray, backend.StateGuard] | None = None  # see _group

    def _group(self) -> tuple[np.ndarray, backend.StateGuard]:
        """(total, guard) of the open group: the weighted sum of its gradients and the layers'
        buffers at its start (made by :meth:`_open`)."""
        if self._buffers is None:
            raise RuntimeError(
                "gradient accumulation has no open group: Stepper.step() opens one; finish()/abort() "
                "only apply after a step"
            )
        return self._buffers

    def step(self, xb, yb, last: bool = False) -> tuple[float, np.ndarray, bool]:
        model = self.model
        if self.k == 1:
            loss, out = model.run_step(xb, yb)
            return loss, out, True
        if self.count == 0:
            self._open()
        guard = self._group()[1]
        try:
            loss, out = model.run_step(xb, yb, update=False)
            self._add(xb.shape[0])
            if self.count < self.k and not last:
                return loss, out, False
            self._update()
        except BaseException:
            guard.restore()
            self.count = 0
            raise
        self.count = 0
        return loss, out, True

    def finish(self) -> bool:
        """The update of an open group (an epoch of unknown length ended); True if one ran."""
        if self.count == 0:
            return False
        guard = self._group()[1]
        try:
            self._update()
        except BaseException:
            guard.restore()
            raise
        finally:
            self.count = 0
        return True

    def abort(self) -> None:
        """Drop an open group (fit is leaving on an exception or interrupt between its batches): the
        layers' buffers go back to the group's start, where fit's position in the epoch is."""
        if self.count:
            self._group()[1].restore()
            self.count = 0

    def _open(self) -> None:
        model = self.model
        if self._buffers is None or self._buffers[0].shape != model.grads.shape:
            self._buffers = (np.empty_like(model.grads), model.state_guard())
        self._buffers[1].save()
        self.samples = 0

    def _add(self, m: int) -> None:
        grads = self.model.grads
        total = self._group()[0]
        weight = m if self.model.loss.reduction == "mean" else 1
        if self.count == 0:
            np.multiply(grads, weight, out=total)
        else:
            np.multiply(grads, weight, out=grads)
            np.add(total, grads, out=total)
        self.count += 1
        self.samples += m

    def _update(self) -> None:
        model = self.model
        total = self._group()[0]
        if model.loss.reduction == "mean":
            np.divide(total, self.samples, out=model.grads)
        else:
            np.copyto(model.grads, total)
        norm = model.grad_norm()
        if not math.isfinite(norm):
            raise FloatingPointError(
                f"Training diverged: the gradient norm summed over {self.count} accumulated "
                f"batches is {norm} at step {model.optimizer.step_count + 1}; the update was "
                f"not applied. Lower the learning rate or clip gradients (clip_norm=1.0)"
            )
        model.optimizer.step(grad_norm=norm)
