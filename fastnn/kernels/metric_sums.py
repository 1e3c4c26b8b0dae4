"""The built-in metrics' batch accumulators, run inside fit's compiled step call
(:mod:`fastnn._step_feed`; the metrics and their state arrays: :mod:`fastnn.metrics`).

One kernel per kind of state, each ``kernel(out, target, *constants, *state)``: ``out`` (m, k) the
batch's output rows (logits for the classification losses, float32 or float64), ``target`` the
checked target rows as 2-D rows, read as the metric's Python ``update`` reads them: int64 labels
(m, 1) (the (m,) labels as a column), values (m, k) of the output's dtype, or the float64
sample-weighted rows (m, t + 1) of
:func:`fastnn.losses.weighted_targets` (the label, or the k values rounded to the output's dtype as
``SampleWeighted.split`` does them; the weight column is not read). Each adds the batch to its state
arrays in place; the classes are those of ``predict_classes`` (the first maximum; logit > 0).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .._config import JIT, JIT_INLINE
from ._scalar import like
from .activations import SOFTMAX, activation_forward
from .losses import row_argmax


@njit(**JIT_INLINE)
def _label(target, i):
    """Row ``i``'s int64 label: the first column (int64 labels, or a weighted row's float label)."""
    return np.int64(target[i, 0])


@njit(**JIT_INLINE)
def _value(target, i, j, out):
    """Target value (i, j) in the output's dtype (as ``SampleWeighted.split`` rounds weighted rows)."""
    return like(target[i, j], out)


@njit(**JIT_INLINE)
def _true(target, i, j, out):
    """Whether target value (i, j) is the positive class (> 0.5)."""
    return _value(target, i, j, out) > like(0.5, out)


@njit(**JIT)
def multiclass_counts(out, target, counts):
    """counts[true, predicted] += 1 per row: the (n, n) confusion matrix (n >= k)."""
    for i in range(out.shape[0]):
        counts[_label(target, i), row_argmax(out, i)] += 1


@njit(**JIT)
def binary_counts(out, target, counts):
    """One output: counts[true, predicted] += 1 per row, counts (2, 2). k > 1 outputs (multi-label):
    counts (3, k) += (true positives, predictions, true labels) of each output."""
    m, k = out.shape
    zero = like(0.0, out)
    for i in range(m):
        for j in range(k):
            predicted, true = out[i, j] > zero, _true(target, i, j, out)
            if k == 1:
                counts[np.int64(true), np.int64(predicted)] += 1
            else:
                counts[0, j] += np.int64(predicted and true)
                counts[1, j] += np.int64(predicted)
                counts[2, j] += np.int64(true)


@njit(**JIT)
def threshold_hits(out, target, logit_threshold, hits):
    """hits += (elements whose class, logit > ``logit_threshold`` in the output's dtype, is the
    target's; elements): ``BinaryAccuracy``. hits: (2,) int64."""
    m, k = out.shape
    threshold = like(logit_threshold, out)
    for i in range(m):
        for j in range(k):
            hits[0] += np.int64((out[i, j] > threshold) == _true(target, i, j, out))
    hits[1] += m * k


@njit(**JIT)
def top_k_hits(out, target, top, hits):
    """hits += (rows whose label's score has fewer than ``top`` scores of its row above it; rows):
    ``TopKAccuracy``. hits: (2,) int64."""
    m, k = out.shape
    for i in range(m):
        score = out[i, _label(target, i)]
        above = 0
        for j in range(k):
            above += np.int64(out[i, j] > score)
        hits[0] += np.int64(above < top)
    hits[1] += m


@njit(**JIT)
def regression_sums(out, target, sums, count):
    """Add the batch to each output's float64 sums (4, k): squared errors, absolute errors, the
    targets' mean and their sum of squared deviations, the last two merged with Chan's update as
    ``fastnn.metrics._Regression.update`` does; count (1,) int64 the rows so far."""
    m, k = out.shape
    n = count[0]
    total = n + m
    for j in range(k):
        sse, sae, target_sum = 0.0, 0.0, 0.0
        for i in range(m):
            t = np.float64(_value(target, i, j, out))
            error = np.float64(out[i, j]) - t
            sse += error * error
            sae += abs(error)
            target_sum += t
        mean_b = target_sum / m
        m2_b = 0.0
        for i in range(m):
            deviation = np.float64(_value(target, i, j, out)) - mean_b
            m2_b += deviation * deviation
        delta = mean_b - sums[2, j]
        sums[0, j] += sse
        sums[1, j] += sae
        sums[3, j] = sums[3, j] + m2_b + delta * delta * (n * m / total)
        sums[2, j] = sums[2, j] + delta * (m / total)
    count[0] = total


@njit(**JIT)
def probability_rows(out, target, code, scores, labels, filled):
    """Append the batch to the epoch's buffers at row ``filled[0]``: the probabilities of its rows
    (activation ``code``: ``SOFTMAX`` for labels, else ``SIGMOID``: the kernel ``Loss.probabilities``
    runs) into ``scores`` (rows, k) and its classes into ``labels``: (rows, 1) for a label or one
    output's 0/1, (rows, k) for multi-label outputs; ``filled`` (1,) int64 advances by m. Raises
    IndexError past the buffers' end (they hold one epoch)."""
    m, k = out.shape
    lo = filled[0]
    if lo + m > scores.shape[0]:
        raise IndexError("the epoch's AUC buffer is full: more rows than the epoch holds")
    activation_forward(out, scores[lo : lo + m], code, 0.0)
    for i in range(m):
        if code == SOFTMAX:
            labels[lo + i, 0] = _label(target, i)
        else:
            for j in range(labels.shape[1]):
                labels[lo + i, j] = _true(target, i, j, out)
    filled[0] = lo + m


__all__ = [
    "binary_counts",
    "multiclass_counts",
    "probability_rows",
    "regression_sums",
    "threshold_hits",
    "top_k_hits",
]
