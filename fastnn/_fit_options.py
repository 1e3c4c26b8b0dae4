"""The data options of ``fit``/``evaluate`` (Keras' semantics): ``sample_weight``, ``class_weight``,
``validation_split`` and ``validation_data=(X, y[, w])``; checked at the public boundary. Arrays get
their weights once (:func:`training_weights`), streamed batches one batch at a time
(:class:`BatchWeights`); both give the same float64 weight per loss row: per sample for an output
(batch, k); for a per-step output (batch, time, ..., k) per position, from a weight per sample
(n,), Keras' temporal weights per step (n, time), or one per position (n, time, ...), times the
class weight of each position's label."""

from __future__ import annotations

import math
import numbers

import numpy as np

from . import losses as losses_mod
from . import metrics as metrics_mod


def check_sample_weight(sample_weight, n: int, argument: str = "sample_weight", model=None) -> np.ndarray | None:
    """float64 finite non-negative weights, or None: (n,) one per sample; for a ``model`` with a
    per-step output (batch, time, ..., k) also (n, time), one per step (Keras' temporal weights), or
    (n, time, ...), one per position (:func:`fastnn.losses.row_weights` repeats them to the rows)."""
    if sample_weight is None:
        return None
    try:
        w = np.asarray(sample_weight, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{argument} must be an array of numbers, one per sample; got {type(sample_weight).__name__}"
        ) from exc
    positions = () if model is None else tuple(model.output_shape[:-1])
    if w.ndim == 2 and w.shape[1] == 1 and positions[:1] != (1,):
        w = w[:, 0]
    allowed = [(n, *positions[:d]) for d in range(len(positions) + 1)]
    if w.shape not in allowed:
        if positions:
            raise ValueError(
                f"{argument} must have shape ({n},), one weight per sample, or ({n}, {positions[0]}), one per "
                f"time step of the model's per-step output {tuple(model.output_shape)}"
                + (f", or {allowed[-1]}, one per position" if len(positions) > 1 else "")
                + f"; got shape {w.shape}"
            )
        raise ValueError(f"{argument} must have shape ({n},), one weight per sample, got shape {w.shape}")
    if not np.isfinite(w).all():
        where = _where(w, ~np.isfinite(w))
        raise ValueError(f"{argument} must be finite; {where} is {w[~np.isfinite(w)][0]}")
    if (w < 0).any():
        raise ValueError(f"{argument} must be non-negative; {_where(w, w < 0)} has weight {w[w < 0][0]}")
    return np.ascontiguousarray(w)


def _where(w: np.ndarray, bad: np.ndarray) -> str:
    """The first True entry of ``bad`` named for a message: "sample 3", or "sample 3, step 2"."""
    index = np.unravel_index(int(np.flatnonzero(bad)[0]), w.shape)
    return (
        f"sample {int(index[0])}"
        + (f", step {int(index[1])}" if w.ndim > 1 else "")
        + (f", position {tuple(int(i) for i in index[2:])}" if w.ndim > 2 else "")
    )


def row_weights(model, weights: np.ndarray | None) -> np.ndarray | None:
    """Checked weights (:func:`check_sample_weight`) as one per loss row: (n,) for an output (batch,
    k), (n, *positions) for a per-step output; None stays None."""
    if weights is None:
        return None
    return losses_mod.row_weights(weights, tuple(model.output_shape[:-1]))


def class_weight_to_sample_weight(class_weight, model, targets: np.ndarray) -> np.ndarray:
    """float64 (n,) (``(n, *positions)`` for a per-step output): ``class_weight[c]`` for each row of
    class c (1 for classes not in the dict)."""
    return class_weight_table(class_weight, model)[class_labels(model, targets)]


def class_labels(model, targets: np.ndarray) -> np.ndarray:
    """The classes of checked ``targets`` (one per loss row: (n,) or (n, *positions)): the labels
    0..k-1 of ``cross_entropy``, 0 and 1 (target > 0.5) of a one-output ``binary_cross_entropy``.
    (The labels of padded steps are 0 once checked: ``Sequential.check_data``; ignored ones,
    ``CrossEntropy(ignore_index=...)``, are taken as 0 here.)"""
    if metrics_mod.family_of(model.loss) == metrics_mod.MULTICLASS:
        ignore = losses_mod.ignore_index_of(model.loss)  # ignored targets: any class (their weight is not read)
        return targets if ignore is None else np.where(targets == ignore, 0, targets)
    return (targets[..., 0] > 0.5).astype(np.int64)


def class_weight_table(class_weight, model) -> np.ndarray:
    """float64 (classes,): ``class_weight[c]`` at c, 1 for the classes not in the dict."""
    if not isinstance(class_weight, dict):
        raise TypeError(f"class_weight must be a dict {{class: weight}}, got {type(class_weight).__name__}")
    family = metrics_mod.family_of(model.loss)
    k = model.output_shape[-1]
    if family == metrics_mod.REGRESSION or (family == metrics_mod.BINARY and k > 1):
        raise ValueError(
            f"class_weight needs single-label classes (cross_entropy, or binary_cross_entropy with "
            f"one output); this model has loss {losses_mod.base_of(model.loss).name!r} with {k} "
            f"outputs: pass sample_weight instead"
        )
    n_classes = k if family == metrics_mod.MULTICLASS else 2
    table = np.ones(n_classes)
    for cls, weight in class_weight.items():
        if isinstance(cls, bool) or not isinstance(cls, numbers.Integral) or not 0 <= cls < n_classes:  # type: ignore[operator]
            ignore = losses_mod.ignore_index_of(model.loss)  # (torch's weight= has no entry for it either)
            if ignore is not None and not isinstance(cls, bool) and cls == ignore:
                raise ValueError(
                    f"class_weight has a weight for {cls!r}, the loss's ignore_index: its targets add no loss, so "
                    f"they take no weight; leave {cls!r} out of class_weight (the classes are the integers "
                    f"0..{n_classes - 1})"
                )
            raise ValueError(
                f"class_weight has unknown class {cls!r}: the classes of this model are the integers 0..{n_classes - 1}"
            )
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"class_weight[{cls}] must be a finite non-negative number, got {weight!r}")
        table[int(cls)] = float(weight)
    return table


def training_weights(model, targets: np.ndarray, sample_weight, class_weight) -> np.ndarray | None:
    """The weights of the loss rows of (checked) ``targets``: sample_weight (repeated over the
    positions of a per-step output, :func:`row_weights`) times the class weights of the rows' labels
    (Keras multiplies them), or None when neither is given. (n,) for an output (batch, k), (n,
    *positions) for a per-step one."""
    if sample_weight is None and class_weight is None:
        return None
    n = targets.shape[0]
    weights = row_weights(model, check_sample_weight(sample_weight, n, model=model))
    if class_weight is not None:
        per_class = class_weight_to_sample_weight(class_weight, model, targets)
        weights = per_class if weights is None else weights * per_class
    return weights


class BatchWeights:
    """The weights of a streamed fit, batch by batch: ``targets(y, w)`` -> the SampleWeighted
    targets of checked ``y`` with the batch's sample weights ``w`` (checked; None: ones), repeated
    over a per-step output's positions, times the class weights of its labels."""

    def __init__(self, model, class_weight):
        self.model = model
        self.table = None if class_weight is None else class_weight_table(class_weight, model)

    def targets(self, y: np.ndarray, w: np.ndarray | None) -> np.ndarray:
        model = self.model
        weights = losses_mod.row_weights(np.ones(y.shape[0]) if w is None else w, tuple(model.output_shape[:-1]))
        if self.table is not None:
            per_class = self.table[class_labels(model, y)]
            weights = per_class if w is None else weights * per_class
        return losses_mod.weighted_targets(y, weights)


def check_validation_split(validation_split, validation_data) -> float:
    """``validation_split`` as a float in [0, 1) (0: none); refused together with validation_data."""
    if (
        isinstance(validation_split, bool)
        or not isinstance(validation_split, numbers.Real)
        or not 0 <= validation_split < 1  # type: ignore[operator]
    ):
        raise ValueError(
            f"validation_split must be a number in [0, 1), the fraction of the data held out "
            f"(the last samples), got {validation_split!r}"
        )
    if validation_split and validation_data is not None:
        raise ValueError("pass either validation_split or validation_data, not both")
    return float(validation_split)


def split_point(validation_split: float, n: int) -> int:
    """The first held-out sample of ``validation_split`` of ``n`` samples: training keeps the
    first floor(n * (1 - split)), Keras' ``split_at = int(math.floor(n * (1.0 - validation_split)))``
    (so 0.7 of 100 holds out 70 rows, though 1 - 0.7 is 0.30000000000000004; 0.25 of 10 holds
    out 3). Arrays and :class:`fastnn.data.ArrayDataset` split here alike.

    Raises
    ------
    ValueError
        If either part would be empty (the message names ``validation_split``).
    """
    at = int(math.floor(n * (1.0 - validation_split)))
    if at <= 0 or at >= n:
        at = min(max(at, 0), n)
        hint = "a smaller split" if at == 0 else f"a larger split ({1 / n:.3g} holds out one sample)"
        raise ValueError(
            f"validation_split={validation_split} of {n} samples leaves "
            f"{'no training' if at == 0 else 'no validation'} samples (the first "
            f"floor({n} * (1 - {validation_split})) = {at} train, as in Keras); use {hint}, or more data"
        )
    return at


def split_off(validation_split: float, X, y, sample_weight):
    """((X, y, w) of training, (X, y, w) of validation): the last ``validation_split`` of the
    samples held out before any shuffling (:func:`split_point`)."""
    at = split_point(validation_split, X.shape[0])
    w = (None, None) if sample_weight is None else (sample_weight[:at], sample_weight[at:])
    return (X[:at], y[:at], w[0]), (X[at:], y[at:], w[1])


VALIDATION_DATA_FORMS = (
    "validation_data must be a tuple (X_val, y_val) or (X_val, y_val, sample_weight_val), a "
    "fastnn.data.ArrayDataset, or a callable/list giving (X, y) or (X, y, w) batches anew each "
    "epoch (not a one-shot iterator)"
)


def check_validation_data(model, validation_data):
    """(X_val, y_val, w_val or None), checked, from ``(X_val, y_val)`` or ``(X_val, y_val, w_val)``."""
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
        raise ValueError(VALIDATION_DATA_FORMS)
    X_val, y_val = model.check_data(*validation_data[:2], argument="X_val")
    w_val = None
    if len(validation_data) == 3 and validation_data[2] is not None:
        w_val = check_sample_weight(validation_data[2], X_val.shape[0], "validation_data's sample_weight", model)
    return X_val, y_val, w_val
