"""Gradient accumulation: one optimizer update per ``k`` batches (``fit(..., accumulate=k)``).

The gradients of ``k`` consecutive batches are summed, each weighted by its sample count for a
mean loss (``reduction="mean"``: the sum is divided by the samples of the group), so the update
equals that of ONE batch of all the group's samples: the same parameters up to rounding (tested
in float64). Under sample weights (``sample_weight``, ``class_weight``: the loss is
:class:`fastnn.losses.SampleWeighted`, a batch's mean is ``sum_i w_i l_i / sum_i w_i``) a batch
counts for its sum of weights instead of its rows, and the group's sum is divided by the group's
sum of weights: the update is again the big batch's (a shuffled fit on arrays then gathers each
batch before its step, so its weights are known when the step is armed). A model that leaves
padded steps out (``model.masks_steps``: a batch's mean is over its valid steps' positions) weighs
each batch by its valid positions and divides by the group's, so the update is again the big
batch's (its batches are gathered before their steps too); so does a loss that ignores a label
(``CrossEntropy(ignore_index=...)``), by the batch's targets not ignored. With ``reduction="sum"``
the gradients are summed as they are. An epoch's last group may be shorter; it still updates.
Learning-rate schedules and ``optimizer.step_count`` count updates, not batches (as Keras'
``iterations`` and PyTorch's ``scheduler.step()`` after ``optimizer.step()``); callbacks'
``on_batch_*`` and the progress bar still see every batch.

Layers that look at the batch differ from the big batch: BatchNorm normalises each batch with its
own statistics (and updates the running statistics once per batch), and Dropout draws its masks
per step, so with them the result is that of ``k`` smaller batches' statistics, not the big one's.
A frozen BatchNorm (``fastnn.freezing``) normalises with its running statistics, so it gives the
big batch's result.

A group is one transaction: an error in any of its batches restores the running statistics and
dropout counters to the group's start and nothing is updated; ``fit`` commits its position in the
epoch (and acts on Ctrl-C) only after the group's update.
"""

from __future__ import annotations

import math

import numpy as np

from . import _validation as V
from . import backend
from . import losses as losses_mod
from .kernels import accumulate as acc_kernels


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


def _diverged(batches: int, norm: float, step: int) -> FloatingPointError:
    """The error of a group whose summed gradients' ``norm`` is not finite (nothing was updated)."""
    return FloatingPointError(
        f"Training diverged: the gradient norm summed over {batches} accumulated batches is {norm} "
        f"at step {step}; the update was not applied. Lower the learning rate or clip gradients "
        f"(clip_norm=1.0)"
    )


def batch_weight(loss, xb: np.ndarray, yb: np.ndarray, model=None, lengths=None) -> float:
    """What a batch counts for in its group's mean: its rows, or under sample weights (``loss`` a
    :class:`fastnn.losses.SampleWeighted`, whose mean is ``sum_i w_i l_i / sum_i w_i``) its sum of
    weights, the last column of its targets :func:`fastnn.losses.weighted_targets` (of its valid
    steps' positions only, for a ``model`` that leaves padded steps out), or for a ``model`` that
    leaves padded steps out (``model.masks_steps``) its valid steps' positions.

    Parameters
    ----------
    loss : fastnn.losses.Loss
        The loss trained on.
    xb : numpy.ndarray
        The batch's inputs (their rows count for an unweighted loss).
    yb : numpy.ndarray
        The batch's targets, filled (not a step plan's buffers still to be gathered into).
    model : fastnn.Sequential, optional
        The model trained (its padded steps, if it masks them, do not count).
    lengths : numpy.ndarray, optional
        The batch's ``model.output_lengths(xb)`` when the caller has them (the :class:`Stepper`
        computes them once per batch); computed here otherwise.

    Returns
    -------
    float
        The batch's weight in its group.

    Examples
    --------
    >>> import fastnn as fnn
    >>> from fastnn.accumulation import batch_weight
    >>> yb = fnn.losses.weighted_targets(np.array([0, 1, 1]), np.array([0.5, 2.0, 1.0]))
    >>> batch_weight(fnn.losses.SampleWeighted(fnn.losses.CrossEntropy()), np.zeros((3, 2)), yb)
    3.5
    >>> batch_weight(fnn.losses.CrossEntropy(), np.zeros((3, 2)), np.array([0, 1, 1]))
    3.0
    """
    if model is not None and model.masks_steps and lengths is None:
        lengths = model.output_lengths(xb)
    weighted = isinstance(loss, losses_mod.SampleWeighted)  # (its targets carry the weight column)
    valid = model.valid_rows(lengths) if model is not None and model.masks_steps else None
    kept = losses_mod.counted_rows(loss, yb, weighted=weighted, valid=valid)  # valid steps' targets not ignored
    if weighted:
        weights = losses_mod.SampleWeighted.weights(yb).reshape(-1)  # (one per loss row)
        if kept is not None:  # the counted rows' weights, as the loss sums them
            weights = weights[kept]
        return float(np.sum(weights))
    if kept is not None:
        return float(np.count_nonzero(kept))
    return float(xb.shape[0])


def _divisor(total: float) -> float:
    """The divisor of a group's weighted sum of gradients: its total weight, 1 when that is 0 (all the
    group's weights are zero: each batch's gradient is 0, and so is the group's, as a batch's)."""
    return total if total > 0 else 1.0


class GroupSum:
    """The running sum of a group's gradients, made inside each step's compiled call: the step plans
    of a model with a group sum (``Sequential.set_accumulation``) run
    :func:`~fastnn.kernels.accumulate.accumulate_gradients` after the gradient norm, and hand its
    result (the group's norm on the group's last batch) to the optimizer's step kernel. Armed per
    step by :meth:`arm` (unarmed, the call changes nothing: the plan takes plain steps).

    Parameters
    ----------
    grads : numpy.ndarray
        The model's flat gradients (n,), float32 or float64.
    partials : numpy.ndarray
        The float64 scratch of its gradient norm.
    """

    def __init__(self, grads: np.ndarray, partials: np.ndarray):
        self.grads, self.partials = grads, partials
        self.total = np.empty_like(grads)  # the group's weighted sum
        self.scalars = np.zeros(acc_kernels.N_SCALARS)  # what arm() writes, the kernel reads
        self.batches = 0  # the armed step's position in its group, 1-based (for the message)
        self._ends = False  # the armed step ends its group

    def bound_to(self, grads: np.ndarray, partials: np.ndarray) -> bool:
        """Whether this sum works on these buffers (a rebuilt model has new ones)."""
        return self.grads is grads and self.partials is partials

    def call(self, norm) -> tuple:
        """(kernel, arguments) of the sum after a step's gradient ``norm`` (a ``fastnn._fused.Result``)."""
        return acc_kernels.accumulate_gradients, (norm, self.scalars, self.grads, self.total, self.partials)

    def arm(self, position: int, ends: bool, weight: float, divisor: float) -> None:
        """Make the next step add its gradients times ``weight`` to the group (its ``position``-th
        batch, 0-based: 0 starts the sum) and, when it ``ends`` the group, put the sum divided by
        ``divisor`` in the gradients for the update."""
        s = self.scalars
        s[acc_kernels.ARMED] = 1.0
        s[acc_kernels.FIRST] = 1.0 if position == 0 else 0.0
        s[acc_kernels.LAST] = 1.0 if ends else 0.0
        s[acc_kernels.WEIGHT] = weight
        s[acc_kernels.DIVISOR] = divisor
        self.batches, self._ends = position + 1, ends

    def disarm(self) -> None:
        """Forget an armed step that did not run (it failed before its call)."""
        self.scalars[acc_kernels.ARMED] = 0.0
        self._ends = False

    def run(self, norm: float) -> None:
        """The sum's kernel from Python (a step without a plan: user layers)."""
        acc_kernels.accumulate_gradients(norm, self.scalars, self.grads, self.total, self.partials)

    def update_norm(self, norm: float, step: int) -> float:
        """The gradient norm the update of the step that just ran goes on with: the group's when
        the step ended an armed group, else the step's own ``norm``.

        Raises
        ------
        FloatingPointError
            If the group's norm is not finite (the step kernel updated nothing); ``step`` is the
            update's number, for the message.
        """
        if not self._ends:
            return norm
        self._ends = False
        group = float(self.scalars[acc_kernels.GROUP_NORM])
        if not math.isfinite(group):
            raise _diverged(self.batches, group, step)
        return group


class Stepper:
    """Runs the training steps of a fit: ``step(xb, yb, last)`` -> (loss, output, committed), where
    ``committed`` says the optimizer updated (every ``accumulate``-th batch, or ``last``). Under
    ``accumulate`` > 1 a masked model's batch weighs by its valid positions: ``lengths`` keeps the
    ``model.output_lengths(xb)`` the last step computed for that (None otherwise), for fit's counts.

    With ``accumulate`` > 1 each batch is one ``model.run_step`` whose compiled call also adds the
    batch's gradients to the group's sum (:class:`GroupSum`) and, on the group's last batch, makes
    the update on the group's gradients."""

    def __init__(self, model, accumulate: int = 1):
        self.model, self.k = model, accumulate
        self.count = 0  # batches in the open group
        self.samples = 0.0  # the open group's samples, or sum of sample weights (a weighted loss)
        self._buffers: tuple[GroupSum, backend.StateGuard] | None = None  # see _group
        self.lengths: np.ndarray | None = None  # the last step's batch lengths, if it computed them
        if accumulate == 1:
            model.set_accumulation(False)  # the plans drop the sum's call

    def _group(self) -> tuple[GroupSum, backend.StateGuard]:
        """(sum, guard) of the open group: the weighted sum of its gradients and the layers'
        buffers at its start (made by :meth:`_open`)."""
        if self._buffers is None:
            raise RuntimeError(
                "gradient accumulation has no open group: Stepper.step() opens one; finish()/abort() "
                "only apply after a step"
            )
        return self._buffers

    def step(self, xb, yb, last: bool = False) -> tuple[float, np.ndarray, bool]:
        model = self.model
        self.lengths = None
        if self.k == 1:
            loss, out = model.run_step(xb, yb)
            return loss, out, True
        if self.count == 0:
            self._open()
        group, guard = self._group()
        self.lengths = model.output_lengths(xb)  # (None unless the model leaves padded steps out)
        m = batch_weight(model.loss, xb, yb, model, self.lengths)
        ends = self.count + 1 >= self.k or last
        mean = model.loss.reduction == "mean"
        try:
            group.arm(self.count, ends, m if mean else 1, _divisor(self.samples + m) if mean else 1)
            loss, out = model.run_step(xb, yb, update=ends)
        except BaseException:
            group.disarm()
            guard.restore()
            self.count = 0
            raise
        self.count += 1
        self.samples += m
        if not ends:
            return loss, out, False
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
        group = model.set_accumulation(True)
        if self._buffers is None or self._buffers[0] is not group:
            self._buffers = (group, model.state_guard())
        self._buffers[1].save()
        self.samples = 0.0

    def _update(self) -> None:
        """The update of a group whose last batch did not know it was (a stream ended): from Python,
        as the step's call does it."""
        model = self.model
        total = self._group()[0].total
        if model.loss.reduction == "mean":
            np.divide(total, _divisor(self.samples), out=model.grads)
        else:
            np.copyto(model.grads, total)
        norm = model.grad_norm()
        if not math.isfinite(norm):
            raise _diverged(self.count, norm, model.optimizer.step_count + 1)
        model.optimizer.step(grad_norm=norm)
