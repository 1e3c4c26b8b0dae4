"""Metrics for ``compile(metrics=[...])``: streaming over batches, each epoch's value equal to
scikit-learn's on the same predictions.

Names (Keras' spellings in brackets also work; the log key is the name as given, except
``accuracy`` [acc], which the fit loop always logs as "accuracy" for classification losses),
``binary_accuracy``,
``top_k_accuracy`` [sparse_top_k_categorical_accuracy], ``precision``, ``recall``, ``f1``
[f1_score], ``auc``, ``mae`` [mean_absolute_error], ``mse`` [mean_squared_error], ``rmse``
[root_mean_squared_error], ``r2`` [r2_score]; objects such as ``F1(average="micro")`` or
``TopKAccuracy(k=3, name="top3")``; or a callable ``f(y_true, y_pred) -> float``.

Each metric reads the model's output rows (batch, k) (logits: a sequence output is one row per
position) and the checked target rows: int64 labels (batch,) for ``cross_entropy``, values
(batch, k) otherwise. Metrics are not sample-weighted (Keras' ``metrics=``; the loss is).

- Classification (``cross_entropy``: multiclass; ``binary_cross_entropy``: binary for 1 output,
  multi-label for k > 1): a class is predicted as in ``predict_classes`` (argmax, logit > 0).
  precision / recall / f1 keep per-class counts of true positives, predictions and true labels;
  ``average`` is "binary" (class 1; the default for one output), "macro" (the default
  otherwise), "micro" or "weighted" (by support), over the classes present in the labels or the
  predictions (every label of a multi-label output), 0 where a ratio is 0/0: scikit-learn's
  ``precision_score`` & co. with ``zero_division=0``. ``auc`` keeps the epoch's probabilities
  (exact, O(n) memory): ROC AUC for one output, the one-vs-rest macro mean of the per-class (or
  per-label) AUCs otherwise, ``roc_auc_score(y, predict_proba, multi_class="ovr")``; a class
  without both positive and negative samples is left out of the mean (nan if none is left).
- Regression (mse, mae, huber): per-output sums in float64 (errors, absolute errors, and the
  targets' mean and spread merged batch by batch with Chan's update); multi-output values are
  the uniform average of the per-output ones (scikit-learn's default): ``rmse`` averages per-output
  RMSEs, ``r2`` per-output R^2 (1 for a constant target predicted exactly, else 0 for a constant).
- A callable gets the whole epoch at its end: ``f(y_true, y_pred)`` with the target rows and
  the output rows (logits) stacked over the batches; its log key is its ``__name__``. Such a
  metric cannot be written to a file: ``save`` drops it with a warning (compile it again after
  ``fnn.load``); copies and pickles of the model keep it.

A training epoch's metrics are updated from the output each step already computed (no second
forward pass; nothing is done when no metric was compiled), so, like Keras', they describe the
weights as they changed during the epoch; the ``val_`` ones and ``evaluate`` use the weights at the
epoch's end. A training epoch's metric state is part of ``fit``'s position in the epoch (saved with
the model), so an epoch resumed mid-way logs the metrics of the uninterrupted epoch.

In a ``fit`` on in-memory arrays on the CPU (without ``accumulate``), the built-in metrics are
added to arrays inside each step's compiled call (:meth:`Tracker.accumulate_inside`,
:class:`Accumulator`, ``fastnn.kernels.metric_sums``): the same counts and rows as the Python
updates (the regression sums to rounding), and no batch read back in Python. A function metric is
updated in Python, one more crossing and NumPy's work per step.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any, NamedTuple, overload

import numpy as np
from numpy.typing import NDArray

from . import _validation as V
from . import backend
from . import losses as losses_mod
from .kernels import metric_sums
from .kernels.activations import SIGMOID, SOFTMAX

if TYPE_CHECKING:
    from .losses import Loss
    from .model import Sequential

MULTICLASS, BINARY, REGRESSION = "multiclass", "binary", "regression"  # binary: also multi-label outputs


def family_of(loss) -> str:
    """The kind of targets a loss trains on: labels, 0/1 values or real values.

    Parameters
    ----------
    loss : fastnn.losses.Loss
        A loss object (a :class:`fastnn.losses.SampleWeighted` one: its base loss's family).

    Returns
    -------
    str
        ``"multiclass"`` (int64 labels: ``cross_entropy``), ``"binary"`` (0/1 values, one output
        or multi-label: ``binary_cross_entropy``) or ``"regression"`` (mse, mae, huber).

    Examples
    --------
    >>> import fastnn as fnn
    >>> [fnn.metrics.family_of(fnn.losses.get(name)) for name in ("cross_entropy", "binary_cross_entropy", "mse")]
    ['multiclass', 'binary', 'regression']
    """
    loss = losses_mod.base_of(loss)
    if loss.target_spec(1, np.float64)[0] == ():
        return MULTICLASS
    return BINARY if loss.is_classification else REGRESSION


class Batch:
    """One batch of host rows as the metrics read them, each view computed once on first use.

    Parameters
    ----------
    output : ndarray of shape (m, k), float32 or float64
        The model's output rows (logits for the classification losses).
    target : ndarray
        The checked target rows: int64 labels (m,) for ``cross_entropy``, values (m, k) otherwise.
    loss : fastnn.losses.Loss
        The plain loss (not sample-weighted) that says how outputs become classes.

    Attributes
    ----------
    predicted : ndarray of int64
        Predicted classes: (m,) for multiclass and one output, (m, k) for multi-label.
    true : ndarray of int64
        True classes, the shape of ``predicted``.
    probabilities : ndarray of shape (m, k)
        The loss's probabilities of the output rows (softmax, or sigmoid per output).
    class_counts : ndarray of int64
        (n, n) confusion matrix [true, predicted] (n = max(k, 2) classes), or (3, k) counts of true
        positives, predictions and true labels per output for multi-label outputs.

    Examples
    --------
    >>> import fastnn as fnn
    >>> logits = np.array([[2.0, -1.0], [0.5, 1.5], [0.0, 3.0]])
    >>> batch = fnn.metrics.Batch(logits, np.array([0, 0, 1]), fnn.losses.get("cross_entropy"))
    >>> batch.predicted, batch.true
    (array([0, 1, 1]), array([0, 0, 1]))
    >>> batch.class_counts
    array([[1, 1],
           [0, 1]])
    """

    def __init__(self, output: np.ndarray, target: np.ndarray, loss):
        self.output, self.target, self.loss = output, target, loss

    @cached_property
    def predicted(self) -> np.ndarray:
        """int64 predicted classes: (m,) for multiclass and one output, (m, k) multi-label."""
        return self.loss.predict_classes(self.output)

    @cached_property
    def true(self) -> np.ndarray:
        """int64 true classes, the shape of :attr:`predicted`."""
        if self.target.ndim == 1:
            return self.target
        labels = (self.target > 0.5).astype(np.int64)
        return labels[:, 0] if labels.shape[1] == 1 else labels

    @cached_property
    def probabilities(self) -> np.ndarray:
        """(m, k) probabilities of the output rows (the loss's softmax or sigmoids)."""
        return self.loss.probabilities(self.output)

    @cached_property
    def class_counts(self) -> np.ndarray:
        """int64 (n, n) confusion matrix [true, predicted] (n = max(k, 2) classes), or (3, k) counts
        of true positives, predictions and true labels per output for multi-label outputs."""
        predicted, true = self.predicted, self.true
        if predicted.ndim == 2:
            return np.stack([np.sum(predicted & true, axis=0), predicted.sum(axis=0), true.sum(axis=0)])
        n = max(self.output.shape[1], 2)
        return np.bincount(true * n + predicted, minlength=n * n).reshape(n, n)


class Accumulator(NamedTuple):
    """How fit's compiled step call adds a batch to a metric (``fastnn._step_feed``): it calls
    ``kernel(output_rows, target_rows, *constants, *state)`` (``fastnn.kernels.metric_sums``; the
    target rows 2-D: (m,) labels as (m, 1)), which adds the batch to the ``state`` arrays in place.
    The metric makes them (:meth:`Metric.accumulator`), writes its state into them
    (:meth:`Metric.write_arrays`) and reads it back (:meth:`Metric.read_arrays`).

    Parameters
    ----------
    kernel : numba dispatcher
        The accumulator kernel of the metric's kind of state.
    constants : tuple
        Its scalar arguments fixed by the metric (a threshold, k, an activation code).
    state : tuple of ndarray
        The arrays it adds to (C-contiguous).
    outputs : int
        k, the outputs of a loss row.

    Examples
    --------
    >>> import fastnn as fnn
    >>> acc = fnn.metrics.MAE().accumulator("regression", 2, 10, np.float32)
    >>> acc.outputs, [a.dtype.name for a in acc.state]
    (2, ['float64', 'int64'])
    """

    kernel: Any
    constants: tuple
    state: tuple
    outputs: int


class Metric:
    """Base class of the streaming metrics: ``reset()``, ``update(batch)`` per batch, ``result()``
    at the end of the pass.

    A subclass sets ``key`` (its registry name), ``families`` (the kinds of loss it applies to:
    :func:`family_of`), ``state_fields`` and ``kept_fields`` (its state, which checkpoints keep)
    and the three methods. Callbacks infer "max" from the name (acc, auc, precision, recall, f1,
    r2), else "min": name a function metric to suit, or pass ``mode=``.

    Parameters
    ----------
    name : str, optional
        The key it logs under (default: ``key``, the registry name).

    Raises
    ------
    TypeError
        When ``name`` is not a non-empty str.

    Examples
    --------
    >>> import fastnn as fnn
    >>> mse = fnn.metrics.MSE(name="val_error")
    >>> mse.update(fnn.metrics.Batch(np.array([[1.0], [3.0]]), np.array([[0.0], [1.0]]), fnn.losses.get("mse")))
    >>> mse.name, mse.result()
    ('val_error', 2.5)
    """

    key = ""  # the registry name (get_config's "class")
    families: tuple[str, ...] = ()
    state_fields: tuple[str, ...] = ()  # the pass's state: numbers, numpy arrays or None
    kept_fields: tuple[str, ...] = ()  # lists of per-batch arrays (saved concatenated)

    def __init__(self, *, name: str | None = None):
        self.name = self.key if name is None else _check_name(name)
        self.reset()

    def reset(self) -> None:
        """Forget the batches seen: start a new pass.

        Examples
        --------
        >>> import fastnn as fnn
        >>> metric = fnn.metrics.MAE()
        >>> batch = fnn.metrics.Batch(np.array([[1.0], [3.0]]), np.array([[0.0], [1.0]]), fnn.losses.get("mse"))
        >>> metric.update(batch); metric.reset(); metric.update(batch); metric.result()
        1.5
        """
        raise NotImplementedError

    def update(self, batch: Batch) -> None:
        """Add one batch's rows to the pass.

        Parameters
        ----------
        batch : Batch
            The batch's output and target rows.

        Examples
        --------
        >>> import fastnn as fnn
        >>> metric = fnn.metrics.MAE()
        >>> batch = fnn.metrics.Batch(np.array([[1.0], [3.0]]), np.array([[0.0], [1.0]]), fnn.losses.get("mse"))
        >>> metric.update(batch); metric.update(batch); metric.result()
        1.5
        """
        raise NotImplementedError

    def result(self) -> float:
        """The metric over the batches of the pass so far.

        Returns
        -------
        float
            Its value (nan before any batch).

        Examples
        --------
        >>> import fastnn as fnn
        >>> metric = fnn.metrics.MAE()
        >>> batch = fnn.metrics.Batch(np.array([[1.0], [3.0]]), np.array([[0.0], [1.0]]), fnn.losses.get("mse"))
        >>> metric.result()
        nan
        >>> metric.update(batch); metric.result()
        1.5
        """
        raise NotImplementedError

    def params(self) -> dict:
        """The constructor's arguments besides ``name``.

        Returns
        -------
        dict
            {argument: value}, JSON-serialisable (part of :meth:`get_config`).

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.metrics.TopKAccuracy(k=3).params()
        {'k': 3}
        """
        return {}

    def state_dict(self) -> dict:
        """The state of the pass so far as plain values (numbers, numpy arrays, None): what a
        checkpoint written mid-epoch keeps (:meth:`load_state_dict` continues from it).

        Returns
        -------
        dict
            {field: value} for each of ``state_fields`` and ``kept_fields`` (the kept per-batch
            arrays concatenated, None when empty).

        Examples
        --------
        >>> import fastnn as fnn
        >>> metric = fnn.metrics.MAE()
        >>> batch = fnn.metrics.Batch(np.array([[1.0], [3.0]]), np.array([[0.0], [1.0]]), fnn.losses.get("mse"))
        >>> metric.update(batch); metric.state_dict()
        {'n': 2, 'sse': array([5.]), 'sae': array([3.]), 'mean': array([0.5]), 'm2': array([0.5])}
        """
        state = {name: _plain(getattr(self, name)) for name in self.state_fields}
        for name in self.kept_fields:
            kept = getattr(self, name)
            state[name] = np.concatenate(kept) if kept else None
        return state

    def load_state_dict(self, state: dict) -> None:
        """Continue the pass from a :meth:`state_dict`.

        Parameters
        ----------
        state : dict
            A :meth:`state_dict` of a metric of the same class.

        Examples
        --------
        >>> import fastnn as fnn
        >>> metric = fnn.metrics.MAE()
        >>> batch = fnn.metrics.Batch(np.array([[1.0], [3.0]]), np.array([[0.0], [1.0]]), fnn.losses.get("mse"))
        >>> metric.update(batch)
        >>> resumed = fnn.metrics.MAE()
        >>> resumed.load_state_dict(metric.state_dict()); resumed.result()
        1.5
        """
        for name in self.state_fields:
            setattr(self, name, _plain(state[name]))
        for name in self.kept_fields:
            setattr(self, name, [] if state[name] is None else [np.array(state[name])])

    def accumulator(self, family: str, k: int, rows: int, dtype) -> Accumulator | None:
        """Arrays holding this metric's state and the kernel that adds a batch to them inside fit's
        compiled step call, or None where the metric updates from Python only (a :class:`FunctionMetric`:
        then each step costs a crossing back to Python and NumPy's work).

        Parameters
        ----------
        family : str
            The loss's :func:`family_of`.
        k : int
            Outputs per loss row.
        rows : int
            Loss rows of a pass (the epoch's; sizes the kept-row buffers).
        dtype : numpy.dtype
            The outputs' dtype.

        Returns
        -------
        Accumulator or None
            Its arrays zeroed (:meth:`write_arrays` puts the state in).

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.metrics.MAE().accumulator("regression", 2, 10, np.float32).state
        (array([[0., 0.],
               [0., 0.],
               [0., 0.],
               [0., 0.]]), array([0]))
        """
        return None

    def write_arrays(self, accumulator: Accumulator) -> None:
        """Put the state of the pass so far into ``accumulator``'s arrays.

        Parameters
        ----------
        accumulator : Accumulator
            This metric's :meth:`accumulator`.

        Examples
        --------
        >>> import fastnn as fnn
        >>> metric = fnn.metrics.TopKAccuracy(k=2)
        >>> metric.hits, metric.count = 3, 4
        >>> accumulator = metric.accumulator("multiclass", 3, 4, np.float32)
        >>> metric.write_arrays(accumulator); accumulator.state
        (array([3, 4]),)
        """
        raise NotImplementedError

    def read_arrays(self, accumulator: Accumulator) -> None:
        """Take the state of the pass from ``accumulator``'s arrays (:meth:`result` and
        :meth:`state_dict` then read it as after Python's updates).

        Parameters
        ----------
        accumulator : Accumulator
            This metric's :meth:`accumulator`, its kernel run on the pass's batches.

        Examples
        --------
        >>> import fastnn as fnn
        >>> metric = fnn.metrics.TopKAccuracy(k=2)
        >>> accumulator = metric.accumulator("multiclass", 3, 4, np.float32)
        >>> accumulator.state[0][:] = (3, 4)
        >>> metric.read_arrays(accumulator); metric.result()
        0.75
        """
        raise NotImplementedError

    def get_config(self) -> dict:
        """What ``save`` writes of this metric (:func:`from_config` makes it again).

        Returns
        -------
        dict
            {"class": the registry name, "name": the log key, the constructor's arguments}.

        Raises
        ------
        TypeError
            For a :class:`FunctionMetric` (a Python function cannot be written to a file).

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.metrics.F1(average="micro").get_config()
        {'class': 'f1', 'name': 'f1', 'average': 'micro'}
        """
        return {"class": self.key, "name": self.name, **self.params()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in {**self.params(), "name": self.name}.items())
        return f"{type(self).__name__}({args})"


def _plain(value):
    """A copy of a state value: numpy arrays copied, numpy scalars as Python numbers."""
    if isinstance(value, np.ndarray):
        return value.copy()
    return value.item() if isinstance(value, np.generic) else value


def _check_name(name) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(f"a metric's name must be a non-empty str, got {name!r}")
    return name


def _ratio(num, den):
    """num / den elementwise, 0 where den == 0 (scikit-learn's zero_division=0)."""
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)


class _HitRate(Metric):
    """A fraction of hits over the pass: counts ``hits`` of ``count``; subclasses give ``update`` and
    the accumulator kernel with its constants (:meth:`hit_kernel`)."""

    state_fields = ("hits", "count")

    def reset(self):
        self.hits, self.count = 0, 0

    def result(self):
        return self.hits / self.count if self.count else math.nan

    def hit_kernel(self) -> tuple[Any, tuple]:
        """(kernel, constants) adding a batch's (hits, count) to a (2,) int64 array
        (``fastnn.kernels.metric_sums``).

        Returns
        -------
        kernel : numba dispatcher
            The hit-count kernel.
        constants : tuple
            Its scalar arguments.

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.metrics.TopKAccuracy(k=3).hit_kernel()[1]
        (3,)
        """
        return self._hit_kernel()

    def _hit_kernel(self) -> tuple[Any, tuple]:
        raise NotImplementedError

    def accumulator(self, family, k, rows, dtype):
        kernel, constants = self.hit_kernel()
        return Accumulator(kernel, constants, (np.zeros(2, np.int64),), k)

    def write_arrays(self, accumulator):
        accumulator.state[0][:] = (self.hits, self.count)

    def read_arrays(self, accumulator):
        self.hits, self.count = (int(v) for v in accumulator.state[0])


class BinaryAccuracy(_HitRate):
    """Fraction of the outputs' elements whose class is right: ``accuracy_score`` for one output,
    ``1 - hamming_loss`` for multi-label outputs (``binary_cross_entropy``).

    An element is predicted 1 when its probability is above ``threshold``, i.e. its logit above
    log(t / (1 - t)): 0 for 0.5, as ``predict_classes``.

    Parameters
    ----------
    threshold : float, default=0.5
        Probability above which an element is predicted 1, in (0, 1).
    name : str, optional
        The log key (default "binary_accuracy").

    Raises
    ------
    ValueError
        When ``threshold`` is not in (0, 1).

    Examples
    --------
    >>> import fastnn as fnn
    >>> metric = fnn.metrics.BinaryAccuracy(threshold=0.7)  # logit > log(0.7 / 0.3) = 0.85
    >>> logits, targets = np.array([[2.0], [0.5], [-1.0]]), np.array([[1.0], [1.0], [0.0]])
    >>> metric.update(fnn.metrics.Batch(logits, targets, fnn.losses.get("binary_cross_entropy")))
    >>> round(metric.result(), 4)
    0.6667
    """

    key, families = "binary_accuracy", (BINARY,)

    def __init__(self, threshold: float = 0.5, *, name: str | None = None):
        self.threshold = V.check_float(
            threshold, "threshold", low=0.0, high=1.0, low_inclusive=False, high_inclusive=False
        )
        self._logit_threshold = math.log(self.threshold / (1.0 - self.threshold))
        super().__init__(name=name)

    def update(self, batch):
        predicted = batch.output > self._logit_threshold  # (in the output's dtype: NumPy's weak scalar)
        self.hits += int(np.count_nonzero(predicted == (batch.target > 0.5)))
        self.count += predicted.size

    def _hit_kernel(self):
        return metric_sums.threshold_hits, (self._logit_threshold,)

    def params(self):
        return {"threshold": self.threshold}


class TopKAccuracy(_HitRate):
    """Fraction of samples whose label's score is among the ``k`` largest of its row (fewer than
    ``k`` scores strictly larger): ``top_k_accuracy_score`` (``cross_entropy``).

    Parameters
    ----------
    k : int, default=5
        How many of the largest scores count, at least 1.
    name : str, optional
        The log key (default "top_k_accuracy").

    Raises
    ------
    ValueError
        When ``k`` is below 1.

    Examples
    --------
    >>> import fastnn as fnn
    >>> metric = fnn.metrics.TopKAccuracy(k=2, name="top2")
    >>> logits = np.array([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    >>> metric.update(fnn.metrics.Batch(logits, np.array([1, 2]), fnn.losses.get("cross_entropy")))
    >>> metric.result()
    0.5
    """

    key, families = "top_k_accuracy", (MULTICLASS,)

    def __init__(self, k: int = 5, *, name: str | None = None):
        self.k = V.check_int(k, "k", minimum=1)
        super().__init__(name=name)

    def update(self, batch):
        out = batch.output
        label_score = out[np.arange(out.shape[0]), batch.target]
        self.hits += int(np.count_nonzero((out > label_score[:, None]).sum(axis=1) < self.k))
        self.count += out.shape[0]

    def _hit_kernel(self):
        return metric_sums.top_k_hits, (self.k,)

    def params(self):
        return {"k": self.k}


class _ClassCounts(Metric):
    """A confusion matrix over the epoch (per-label counts of true positives, predictions and
    true labels for multi-label outputs), and the averages over classes; subclasses give the
    per-class score from the counts.

    Parameters
    ----------
    average : {"binary", "macro", "micro", "weighted"}, optional
        How per-class scores combine: "binary" (class 1; the default for one output), "macro"
        (the mean over the classes present; the default otherwise), "micro" (from the summed
        counts) or "weighted" (by support).
    name : str, optional
        The log key (default: the registry name).

    Raises
    ------
    ValueError
        When ``average`` is not one of the four.
    """

    families = (MULTICLASS, BINARY)
    AVERAGES = ("binary", "macro", "micro", "weighted")
    state_fields = ("counts", "multilabel", "one_output")

    def __init__(self, average: str | None = None, *, name: str | None = None):
        self.average = None if average is None else V.check_choice(average, self.AVERAGES, "average")
        super().__init__(name=name)

    def reset(self):
        self.counts = None  # (n, n) confusion matrix [true, predicted], or (3, k) per-label counts
        self.multilabel = self.one_output = False

    def update(self, batch):
        self.one_output = batch.output.shape[1] == 1
        self.multilabel = batch.predicted.ndim == 2  # one binary problem per output
        counts = batch.class_counts  # computed once per batch for precision, recall and f1
        self.counts = counts.copy() if self.counts is None else self.counts + counts

    def accumulator(self, family, k, rows, dtype):
        if family == MULTICLASS:
            n = max(k, 2)
            return Accumulator(metric_sums.multiclass_counts, (), (np.zeros((n, n), np.int64),), k)
        return Accumulator(metric_sums.binary_counts, (), (np.zeros((2, 2) if k == 1 else (3, k), np.int64),), k)

    def write_arrays(self, accumulator):
        accumulator.state[0][...] = 0 if self.counts is None else self.counts

    def read_arrays(self, accumulator):
        self.counts = accumulator.state[0].copy()
        self.one_output = accumulator.outputs == 1
        self.multilabel = accumulator.kernel is metric_sums.binary_counts and accumulator.outputs > 1

    @property
    def tp(self):
        """int64 (n,) true positives of each class (or label) over the pass.

        Examples
        --------
        >>> import fastnn as fnn
        >>> metric = fnn.metrics.Recall()
        >>> logits = np.array([[2.0, -1.0], [0.5, 1.5], [0.0, 3.0]])  # predicted 0, 1, 1
        >>> metric.update(fnn.metrics.Batch(logits, np.array([0, 0, 1]), fnn.losses.get("cross_entropy")))
        >>> metric.tp, metric.pred, metric.true
        (array([1, 1]), array([1, 2]), array([2, 1]))
        """
        return self.counts[0] if self.multilabel else np.diag(self.counts)

    @property
    def pred(self):
        """int64 (n,) predictions of each class (or label) over the pass.

        Examples
        --------
        >>> import fastnn as fnn
        >>> metric = fnn.metrics.Recall()
        >>> logits = np.array([[2.0, -1.0], [0.5, 1.5], [0.0, 3.0]])  # predicted 0, 1, 1
        >>> metric.update(fnn.metrics.Batch(logits, np.array([0, 0, 1]), fnn.losses.get("cross_entropy")))
        >>> metric.pred
        array([1, 2])
        """
        return self.counts[1] if self.multilabel else self.counts.sum(axis=0)

    @property
    def true(self):
        """int64 (n,) true labels of each class (its support) over the pass.

        Examples
        --------
        >>> import fastnn as fnn
        >>> metric = fnn.metrics.Recall()
        >>> logits = np.array([[2.0, -1.0], [0.5, 1.5], [0.0, 3.0]])  # predicted 0, 1, 1
        >>> metric.update(fnn.metrics.Batch(logits, np.array([0, 0, 1]), fnn.losses.get("cross_entropy")))
        >>> metric.true
        array([2, 1])
        """
        return self.counts[2] if self.multilabel else self.counts.sum(axis=1)

    def per_class(self, tp, pred, true) -> np.ndarray:
        """The score of each class from its counts (0 where a ratio is 0/0).

        Parameters
        ----------
        tp, pred, true : ndarray of shape (n,)
            True positives, predictions and true labels of each class (:attr:`tp`, :attr:`pred`,
            :attr:`true`).

        Returns
        -------
        ndarray of shape (n,), float64
            The per-class scores.

        Examples
        --------
        >>> import fastnn as fnn
        >>> metric = fnn.metrics.Recall()
        >>> logits = np.array([[2.0, -1.0], [0.5, 1.5], [0.0, 3.0]])  # predicted 0, 1, 1
        >>> metric.update(fnn.metrics.Batch(logits, np.array([0, 0, 1]), fnn.losses.get("cross_entropy")))
        >>> metric.per_class(metric.tp, metric.pred, metric.true)
        array([0.5, 1. ])
        """
        raise NotImplementedError

    def result(self):
        if self.counts is None:
            return math.nan
        average = self.average or ("binary" if self.one_output else "macro")
        if average == "binary":
            if not self.one_output:
                raise ValueError(
                    f"{self.name}: average='binary' needs one binary output (binary_cross_entropy "
                    f"with 1 output); use average='macro', 'micro' or 'weighted'"
                )
            return float(self.per_class(self.tp, self.pred, self.true)[1])
        if average == "micro":
            return float(
                self.per_class(self.tp.sum(keepdims=True), self.pred.sum(keepdims=True), self.true.sum(keepdims=True))[
                    0
                ]
            )
        scores = self.per_class(self.tp, self.pred, self.true)
        present = np.ones_like(self.tp, bool) if self.multilabel else (self.pred + self.true) > 0
        if average == "macro":
            return float(scores[present].mean()) if present.any() else 0.0
        return float(_ratio((scores * self.true)[present].sum(), self.true[present].sum()))

    def params(self):
        return {"average": self.average}


class Precision(_ClassCounts):
    """True positives over predicted positives per class, averaged (``precision_score``).

    Parameters
    ----------
    average : {"binary", "macro", "micro", "weighted"}, optional
        How per-class scores combine: "binary" (class 1; the default for one output), "macro"
        (the mean over the classes present; the default otherwise), "micro" (from the summed
        counts) or "weighted" (by support).
    name : str, optional
        The log key (default "precision").

    Raises
    ------
    ValueError
        When ``average`` is not one of the four (at ``result``: "binary" for more than one output).

    Examples
    --------
    >>> import fastnn as fnn
    >>> metric = fnn.metrics.Precision(average="macro")
    >>> logits = np.array([[2.0, -1.0], [0.5, 1.5], [0.0, 3.0]])  # predicted 0, 1, 1
    >>> metric.update(fnn.metrics.Batch(logits, np.array([0, 0, 1]), fnn.losses.get("cross_entropy")))
    >>> round(metric.result(), 4)
    0.75
    """

    key = "precision"

    def per_class(self, tp, pred, true):
        """tp / pred of each class (0 where nothing was predicted).

        Parameters
        ----------
        tp, pred, true : ndarray of shape (n,), int64
            True positives, predictions and true labels of each class.

        Returns
        -------
        ndarray of shape (n,), float64
            The score of each class.

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.metrics.Precision().per_class(np.array([1, 1]), np.array([1, 2]), np.array([2, 1]))
        array([1. , 0.5])
        """
        return _ratio(tp, pred)


class Recall(_ClassCounts):
    """True positives over actual positives per class, averaged (``recall_score``).

    Parameters
    ----------
    average : {"binary", "macro", "micro", "weighted"}, optional
        How per-class scores combine: "binary" (class 1; the default for one output), "macro"
        (the mean over the classes present; the default otherwise), "micro" (from the summed
        counts) or "weighted" (by support).
    name : str, optional
        The log key (default "recall").

    Raises
    ------
    ValueError
        When ``average`` is not one of the four (at ``result``: "binary" for more than one output).

    Examples
    --------
    >>> import fastnn as fnn
    >>> metric = fnn.metrics.Recall(average="macro")
    >>> logits = np.array([[2.0, -1.0], [0.5, 1.5], [0.0, 3.0]])  # predicted 0, 1, 1
    >>> metric.update(fnn.metrics.Batch(logits, np.array([0, 0, 1]), fnn.losses.get("cross_entropy")))
    >>> round(metric.result(), 4)
    0.75
    """

    key = "recall"

    def per_class(self, tp, pred, true):
        """tp / true of each class (0 for a class without true labels).

        Parameters
        ----------
        tp, pred, true : ndarray of shape (n,), int64
            True positives, predictions and true labels of each class.

        Returns
        -------
        ndarray of shape (n,), float64
            The score of each class.

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.metrics.Recall().per_class(np.array([1, 1]), np.array([1, 2]), np.array([2, 1]))
        array([0.5, 1. ])
        """
        return _ratio(tp, true)


class F1(_ClassCounts):
    """Harmonic mean of precision and recall per class, 2 tp / (predicted + true), averaged
    (``f1_score``; micro: from the summed counts).

    Parameters
    ----------
    average : {"binary", "macro", "micro", "weighted"}, optional
        How per-class scores combine: "binary" (class 1; the default for one output), "macro"
        (the mean over the classes present; the default otherwise), "micro" (from the summed
        counts) or "weighted" (by support).
    name : str, optional
        The log key (default "f1").

    Raises
    ------
    ValueError
        When ``average`` is not one of the four (at ``result``: "binary" for more than one output).

    Examples
    --------
    >>> import fastnn as fnn
    >>> metric = fnn.metrics.F1(average="macro")
    >>> logits = np.array([[2.0, -1.0], [0.5, 1.5], [0.0, 3.0]])  # predicted 0, 1, 1
    >>> metric.update(fnn.metrics.Batch(logits, np.array([0, 0, 1]), fnn.losses.get("cross_entropy")))
    >>> round(metric.result(), 4)
    0.6667
    """

    key = "f1"

    def per_class(self, tp, pred, true):
        """2 tp / (pred + true) of each class (0 where both are 0).

        Parameters
        ----------
        tp, pred, true : ndarray of shape (n,), int64
            True positives, predictions and true labels of each class.

        Returns
        -------
        ndarray of shape (n,), float64
            The score of each class.

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.metrics.F1().per_class(np.array([1, 1]), np.array([1, 2]), np.array([2, 1]))
        array([0.6667, 0.6667])
        """
        return _ratio(2 * tp, pred + true)


def roc_auc(labels: NDArray[np.integer], scores: NDArray[np.floating]) -> float:
    """Exact ROC AUC of 0/1 labels against scores: the Mann-Whitney statistic with tied scores
    counted half (equal to the trapezoid area of scikit-learn's ROC curve).

    Parameters
    ----------
    labels : ndarray of shape (n,), int
        0/1 labels.
    scores : ndarray of shape (n,), float
        The scores of the samples (a higher score: more likely 1).

    Returns
    -------
    float
        The area under the ROC curve, in [0, 1]; nan without both classes.

    Examples
    --------
    >>> import fastnn as fnn
    >>> fnn.metrics.roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.75
    >>> fnn.metrics.roc_auc(np.array([1, 1]), np.array([0.1, 0.4]))
    nan
    """
    positives = int(labels.sum())
    negatives = labels.shape[0] - positives
    if positives == 0 or negatives == 0:
        return math.nan
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    first_rank = np.cumsum(counts) - counts  # ranks start at 0; a tie group shares its mean rank
    ranks = first_rank[inverse] + (counts[inverse] - 1) / 2.0
    return float((ranks[labels == 1].sum() - positives * (positives - 1) / 2.0) / (positives * negatives))


class AUC(Metric):
    """ROC AUC from the epoch's probabilities; one-vs-rest macro mean for several classes or
    labels (``roc_auc_score(..., multi_class="ovr")``). Exact: keeps every score of the epoch.

    Parameters
    ----------
    name : str, optional
        The log key (default "auc").

    Examples
    --------
    >>> import fastnn as fnn
    >>> metric = fnn.metrics.AUC()
    >>> logits, targets = np.array([[-2.0], [0.5], [0.2], [3.0]]), np.array([[0.0], [0.0], [1.0], [1.0]])
    >>> metric.update(fnn.metrics.Batch(logits, targets, fnn.losses.get("binary_cross_entropy")))
    >>> metric.result()
    0.75
    """

    key, families = "auc", (MULTICLASS, BINARY)
    kept_fields = ("scores", "labels")

    def reset(self):
        self.scores, self.labels = [], []

    def update(self, batch):  # the epoch's probabilities and classes
        self.scores.append(batch.probabilities)  # (a new array)
        self.labels.append(np.array(batch.true))

    def accumulator(self, family, k, rows, dtype):
        """The epoch's buffers: probabilities (rows, k) of ``dtype``, classes (rows, 1) or (rows, k)
        multi-label, int64, and the rows filled (1,) int64."""
        labels = np.zeros((rows, k if family == BINARY and k > 1 else 1), np.int64)
        code = SOFTMAX if family == MULTICLASS else SIGMOID  # the loss's probabilities
        return Accumulator(
            metric_sums.probability_rows, (code,), (np.zeros((rows, k), dtype), labels, np.zeros(1, np.int64)), k
        )

    def write_arrays(self, accumulator):
        scores, labels, filled = accumulator.state
        n = sum(s.shape[0] for s in self.scores)
        if n > scores.shape[0]:
            raise ValueError(f"auc: {n} rows kept, more than the epoch's {scores.shape[0]}: a state of other data")
        if n:
            scores[:n] = np.concatenate(self.scores)
            labels[:n] = np.concatenate(self.labels).reshape(n, -1)
        filled[0] = n

    def read_arrays(self, accumulator):
        scores, labels, filled = accumulator.state
        n = int(filled[0])
        self.scores = [scores[:n]] if n else []
        self.labels = [labels[:n] if labels.shape[1] > 1 else labels[:n, 0]] if n else []

    def result(self):
        if not self.scores:
            return math.nan
        scores, labels = np.concatenate(self.scores), np.concatenate(self.labels)
        if labels.ndim == 1 and scores.shape[1] > 1:  # multiclass: one-vs-rest indicator columns
            labels = (labels[:, None] == np.arange(scores.shape[1])).astype(np.int64)
        labels = labels.reshape(labels.shape[0], -1)
        aucs = [roc_auc(labels[:, j], scores[:, j]) for j in range(scores.shape[1])]
        aucs = [a for a in aucs if not math.isnan(a)]
        return float(np.mean(aucs)) if aucs else math.nan


class _Regression(Metric):
    """Per-output float64 sums over the epoch: count, squared and absolute errors, the targets'
    mean and sum of squared deviations (Chan's merge of batch statistics)."""

    families = (REGRESSION,)
    state_fields = ("n", "sse", "sae", "mean", "m2")

    def reset(self):
        self.n, self.sse, self.sae, self.mean, self.m2 = 0, 0.0, 0.0, 0.0, 0.0

    def update(self, batch):
        pred, target = batch.output.astype(np.float64), batch.target.astype(np.float64)
        error = pred - target
        m = target.shape[0]
        self.sse = self.sse + np.sum(error * error, axis=0)
        self.sae = self.sae + np.sum(np.abs(error), axis=0)
        mean_b = target.mean(axis=0)
        m2_b = np.sum((target - mean_b) ** 2, axis=0)
        total = self.n + m
        delta = mean_b - self.mean
        self.m2 = self.m2 + m2_b + delta * delta * (self.n * m / total)
        self.mean = self.mean + delta * (m / total)
        self.n = total

    def accumulator(self, family, k, rows, dtype):
        """float64 (4, k) sums: sse, sae, mean, m2; int64 (1,) rows."""
        return Accumulator(metric_sums.regression_sums, (), (np.zeros((4, k)), np.zeros(1, np.int64)), k)

    def write_arrays(self, accumulator):
        sums, count = accumulator.state
        for row, value in enumerate((self.sse, self.sae, self.mean, self.m2)):
            sums[row] = value
        count[0] = self.n

    def read_arrays(self, accumulator):
        sums, count = accumulator.state
        self.n = int(count[0])
        if self.n == 0:
            self.reset()
            return
        self.sse, self.sae, self.mean, self.m2 = (sums[row].copy() for row in range(4))

    def result(self):
        return float(np.mean(self.per_output())) if self.n else math.nan

    def per_output(self) -> np.ndarray:
        """The metric of each output over the pass (``result`` is their mean).

        Returns
        -------
        ndarray of shape (k,), float64
            One value per output column.

        Examples
        --------
        >>> import fastnn as fnn
        >>> metric = fnn.metrics.MAE()
        >>> output, target = np.array([[1.0, 0.0], [3.0, 0.5]]), np.array([[0.0, 0.0], [1.0, 1.0]])
        >>> metric.update(fnn.metrics.Batch(output, target, fnn.losses.get("mse")))
        >>> metric.per_output(), metric.result()
        (array([1.5 , 0.25]), 0.875)
        """
        raise NotImplementedError


class MAE(_Regression):
    """Mean absolute error (``mean_absolute_error``), the mean over the outputs.

    Parameters
    ----------
    name : str, optional
        The log key (default "mae").

    Examples
    --------
    >>> import fastnn as fnn
    >>> metric = fnn.metrics.MAE()
    >>> output, target = np.array([[1.0], [3.0], [2.0]]), np.array([[0.0], [3.0], [3.0]])
    >>> metric.update(fnn.metrics.Batch(output, target, fnn.losses.get("mse")))
    >>> round(metric.result(), 4)
    0.6667
    """

    key = "mae"

    def per_output(self):
        """The mean absolute error of each output.

        Returns
        -------
        ndarray of shape (k,), float64
            One value per output column.

        Examples
        --------
        >>> import fastnn as fnn
        >>> metric = fnn.metrics.MAE()
        >>> output, target = np.array([[1.0, 0.0], [3.0, 0.5]]), np.array([[0.0, 0.0], [1.0, 1.0]])
        >>> metric.update(fnn.metrics.Batch(output, target, fnn.losses.get("mse")))
        >>> metric.per_output()
        array([1.5 , 0.25])
        """
        return self.sae / self.n


class MSE(_Regression):
    """Mean squared error (``mean_squared_error``), the mean over the outputs.

    Parameters
    ----------
    name : str, optional
        The log key (default "mse").

    Examples
    --------
    >>> import fastnn as fnn
    >>> metric = fnn.metrics.MSE()
    >>> output, target = np.array([[1.0], [3.0], [2.0]]), np.array([[0.0], [3.0], [3.0]])
    >>> metric.update(fnn.metrics.Batch(output, target, fnn.losses.get("mse")))
    >>> round(metric.result(), 4)
    0.6667
    """

    key = "mse"

    def per_output(self):
        """The mean squared error of each output.

        Returns
        -------
        ndarray of shape (k,), float64
            One value per output column.

        Examples
        --------
        >>> import fastnn as fnn
        >>> metric = fnn.metrics.MSE()
        >>> output, target = np.array([[1.0, 0.0], [3.0, 0.5]]), np.array([[0.0, 0.0], [1.0, 1.0]])
        >>> metric.update(fnn.metrics.Batch(output, target, fnn.losses.get("mse")))
        >>> metric.per_output()
        array([2.5  , 0.125])
        """
        return self.sse / self.n


class RMSE(_Regression):
    """Root mean squared error per output, averaged (``root_mean_squared_error``).

    Parameters
    ----------
    name : str, optional
        The log key (default "rmse").

    Examples
    --------
    >>> import fastnn as fnn
    >>> metric = fnn.metrics.RMSE()
    >>> output, target = np.array([[1.0], [3.0], [2.0]]), np.array([[0.0], [3.0], [3.0]])
    >>> metric.update(fnn.metrics.Batch(output, target, fnn.losses.get("mse")))
    >>> round(metric.result(), 4)
    0.8165
    """

    key = "rmse"

    def per_output(self):
        """The root mean squared error of each output.

        Returns
        -------
        ndarray of shape (k,), float64
            One value per output column.

        Examples
        --------
        >>> import fastnn as fnn
        >>> metric = fnn.metrics.RMSE()
        >>> output, target = np.array([[1.0, 0.0], [3.0, 0.5]]), np.array([[0.0, 0.0], [1.0, 1.0]])
        >>> metric.update(fnn.metrics.Batch(output, target, fnn.losses.get("mse")))
        >>> metric.per_output()
        array([1.5811, 0.3536])
        """
        return np.sqrt(self.sse / self.n)


class R2(_Regression):
    """Coefficient of determination 1 - SSE / SST per output, averaged (``r2_score``): 1 for a
    constant target predicted exactly, else 0 for a constant one; nan for fewer than two rows
    (not defined, as scikit-learn).

    Parameters
    ----------
    name : str, optional
        The log key (default "r2").

    Examples
    --------
    >>> import fastnn as fnn
    >>> metric = fnn.metrics.R2()
    >>> output, target = np.array([[1.0], [3.0], [2.0]]), np.array([[0.0], [3.0], [3.0]])
    >>> metric.update(fnn.metrics.Batch(output, target, fnn.losses.get("mse")))
    >>> round(metric.result(), 4)
    0.6667
    """

    key = "r2"

    def result(self):
        return super().result() if self.n >= 2 else math.nan

    def per_output(self):
        """1 - SSE / SST of each output (for a constant target: 1 if predicted exactly, else 0).

        Returns
        -------
        ndarray of shape (k,), float64
            One value per output column.

        Examples
        --------
        >>> import fastnn as fnn
        >>> metric = fnn.metrics.R2()
        >>> output, target = np.array([[1.0, 0.0], [3.0, 0.5]]), np.array([[0.0, 0.0], [1.0, 1.0]])
        >>> metric.update(fnn.metrics.Batch(output, target, fnn.losses.get("mse")))
        >>> metric.per_output()
        array([-9. ,  0.5])
        """
        sse, sst = np.broadcast_arrays(np.asarray(self.sse, np.float64), np.asarray(self.m2, np.float64))
        constant = np.where(sse == 0, 1.0, 0.0)
        return np.where(sst == 0, constant, 1.0 - _ratio(sse, sst))


class FunctionMetric(Metric):
    """A user's ``fn(y_true, y_pred) -> float`` on the whole epoch (target rows, output rows).

    It keeps the epoch's rows and calls ``fn`` once at :meth:`Metric.result` with the target rows and
    the output rows (logits) stacked over the batches. ``save`` cannot write it (``get_config``
    raises; the model's ``save`` drops it with a warning).

    Parameters
    ----------
    fn : callable
        ``fn(y_true, y_pred) -> float``.
    name : str, optional
        The log key (default: ``fn.__name__``).

    Raises
    ------
    TypeError
        When ``fn`` is not callable, or cannot be called with two arguments.

    Examples
    --------
    >>> import fastnn as fnn
    >>> def max_error(y_true, y_pred):
    ...     return float(np.abs(y_true - y_pred).max())
    >>> metric = fnn.metrics.FunctionMetric(max_error)
    >>> metric.update(fnn.metrics.Batch(np.array([[1.0], [3.0]]), np.array([[0.0], [1.0]]), fnn.losses.get("mse")))
    >>> metric.name, metric.result()
    ('max_error', 2.0)
    """

    key, families = "function", (MULTICLASS, BINARY, REGRESSION)
    kept_fields = ("targets", "outputs")

    def __init__(self, fn, *, name: str | None = None):
        if not callable(fn):
            raise TypeError(f"a metric function must be callable, got {fn!r}")
        try:  # a wrong signature is refused here, not after an epoch of training
            inspect.signature(fn).bind(None, None)
        except TypeError as exc:
            raise TypeError(
                f"a metric function is called as fn(y_true, y_pred); {fn!r} cannot take those two arguments ({exc})"
            ) from None
        except ValueError:  # no signature to read (some builtins): called as it is
            pass
        self.fn = fn
        super().__init__(name=name or getattr(fn, "__name__", type(fn).__name__))

    def reset(self):
        self.targets, self.outputs = [], []

    def update(self, batch):
        self.targets.append(np.array(batch.target))
        self.outputs.append(np.array(batch.output))

    def result(self):
        if not self.targets:
            return math.nan
        return float(self.fn(np.concatenate(self.targets), np.concatenate(self.outputs)))

    def get_config(self):
        raise TypeError(f"metric {self.name!r} is a Python function ({self.fn!r}): it cannot be written to a file")


ACCURACY = "accuracy"
METRICS: dict[str, type] = {
    cls.key: cls for cls in (BinaryAccuracy, TopKAccuracy, Precision, Recall, F1, AUC, MAE, MSE, RMSE, R2)
}
ALIASES = {
    "acc": ACCURACY,
    "sparse_top_k_categorical_accuracy": "top_k_accuracy",
    "f1_score": "f1",
    "mean_absolute_error": "mae",
    "mean_squared_error": "mse",
    "root_mean_squared_error": "rmse",
    "r2_score": "r2",
}
FAMILY_WORDS = {
    MULTICLASS: "cross_entropy",
    BINARY: "binary_cross_entropy",
    REGRESSION: "a regression loss (mse, mae, huber)",
}


@overload
def get(spec: str) -> Metric | str: ...
@overload
def get(spec: Metric | Callable[..., Any]) -> Metric: ...
def get(spec: str | Metric | Callable[..., Any]) -> Metric | str:
    """A new Metric from a name, a Metric (copied, fresh state) or a callable.

    Parameters
    ----------
    spec : str, Metric or callable
        A metric name or alias (:mod:`fastnn.metrics` lists them), a Metric object (copied, its
        state reset) or a function ``f(y_true, y_pred) -> float`` (a :class:`FunctionMetric`).

    Returns
    -------
    Metric or str
        A fresh Metric; the string "accuracy" for "accuracy" and "acc" (the fit loop counts it
        itself for classification losses).

    Raises
    ------
    ValueError
        For an unknown name (the message suggests the nearest).
    TypeError
        For anything else.

    Examples
    --------
    >>> import fastnn as fnn
    >>> fnn.metrics.get("f1_score"), fnn.metrics.get("acc")
    (F1(average=None, name='f1_score'), 'accuracy')
    """
    if isinstance(spec, Metric):
        fresh = copy.copy(spec)
        fresh.reset()
        return fresh
    if isinstance(spec, str):
        key = ALIASES.get(spec, spec)
        if key == ACCURACY:
            return ACCURACY
        if key not in METRICS:
            known = [ACCURACY, *METRICS, *ALIASES]
            raise ValueError(
                f"Unknown metric {spec!r}.{V.suggest(spec, known)} Known: {', '.join(known)}; or pass "
                f"a metric object (fnn.metrics.F1(average='micro')) or a function f(y_true, y_pred)"
            )
        return METRICS[key](name=spec)
    if callable(spec):
        return FunctionMetric(spec)
    raise TypeError(f"a metric must be a name, a fnn.metrics.Metric or a function f(y_true, y_pred), got {spec!r}")


def check_metrics(metrics: Any, loss: Loss | None) -> list[Metric]:
    """The Metric objects of ``compile(metrics=...)`` for ``loss``.

    Parameters
    ----------
    metrics : list or tuple of (str, Metric or callable), or one of them
        The metrics asked for (see :func:`get`).
    loss : fastnn.losses.Loss or None
        The model's loss; each metric must apply to its family (:func:`family_of`). None: not
        checked.

    Returns
    -------
    list of Metric
        Fresh metrics, "accuracy" left out (the fit loop logs it for classification losses).

    Raises
    ------
    ValueError
        For a metric that does not apply to the loss, or two metrics of one name.
    TypeError
        When ``metrics`` is not a list of names, Metric objects or functions.

    Examples
    --------
    >>> import fastnn as fnn
    >>> fnn.metrics.check_metrics(["accuracy", "f1", fnn.metrics.AUC()], fnn.losses.get("cross_entropy"))
    [F1(average=None, name='f1'), AUC(name='auc')]
    >>> fnn.metrics.check_metrics(["r2"], fnn.losses.get("cross_entropy"))
    Traceback (most recent call last):
    ...
    ValueError: metric 'r2' does not apply to loss 'cross_entropy': it needs a regression loss (mse, mae, huber)
    """
    if isinstance(metrics, (str, Metric)) or callable(metrics):
        metrics = [metrics]
    if not isinstance(metrics, (list, tuple)):
        raise TypeError(f"metrics must be a list of metric names, objects or functions, got {metrics!r}")
    base = losses_mod.base_of(loss)
    family = None if base is None else family_of(base)
    result = []
    taken = {"loss", "lr"} | ({ACCURACY} if family in (MULTICLASS, BINARY) else set())  # keys fit logs anyway
    families: tuple[str, ...]
    for spec in metrics:
        metric = get(spec)
        if isinstance(metric, str):  # "accuracy": counted by the fit loop itself
            families, name = (MULTICLASS, BINARY), metric
        else:
            families, name = metric.families, metric.name
        if base is not None and family not in families:
            needs = " or ".join(FAMILY_WORDS[f] for f in families)
            raise ValueError(f"metric {name!r} does not apply to loss {base.name!r}: it needs {needs}")
        if isinstance(metric, str):
            continue
        if name in taken:
            raise ValueError(
                f"two metrics (or a metric and a key fit logs: loss, lr, accuracy) are named {name!r}: "
                f"give it another name, e.g. fnn.metrics.{type(metric).__name__}(..., name='{name}_2')"
            )
        taken.add(name)
        result.append(metric)
    return result


def to_config(metrics: list[Metric]) -> list:
    """Each metric's config, as the model's record keeps it.

    Parameters
    ----------
    metrics : list of Metric
        A model's compiled metrics.

    Returns
    -------
    list of (dict or callable)
        Each metric's :meth:`Metric.get_config`; a function metric is kept as the function itself
        (copies and pickles of the model carry it; ``save`` drops it with a warning).

    Examples
    --------
    >>> import fastnn as fnn
    >>> fnn.metrics.to_config([fnn.metrics.TopKAccuracy(k=3, name="top3"), fnn.metrics.MAE()])
    [{'class': 'top_k_accuracy', 'name': 'top3', 'k': 3}, {'class': 'mae', 'name': 'mae'}]
    """
    return [m.fn if isinstance(m, FunctionMetric) else m.get_config() for m in metrics]


def from_config(configs: list | None, loss: Loss | None) -> list[Metric]:
    """Metric objects from :func:`to_config` entries.

    Parameters
    ----------
    configs : list of (dict or callable), or None
        :func:`to_config`'s entries (None: no metrics).
    loss : fastnn.losses.Loss or None
        The model's loss (each metric must apply to it: :func:`check_metrics`).

    Returns
    -------
    list of Metric
        Fresh metrics.

    Raises
    ------
    ValueError
        For an unknown metric class, or a metric that does not apply to the loss.

    Examples
    --------
    >>> import fastnn as fnn
    >>> fnn.metrics.from_config([{"class": "top_k_accuracy", "name": "top3", "k": 3}], fnn.losses.get("cross_entropy"))
    [TopKAccuracy(k=3, name='top3')]
    """
    specs = []
    for entry in configs or []:
        if isinstance(entry, dict):
            entry = dict(entry)
            key = entry.pop("class")
            if key not in METRICS:
                raise ValueError(f"Unknown metric class {key!r} in a saved model. Known: {', '.join(METRICS)}")
            specs.append(METRICS[key](**entry))
        else:
            specs.append(entry)
    return check_metrics(specs, loss)


def _builtin_classes(loss) -> bool:
    """Whether ``loss`` (a plain loss) makes classes and probabilities as the built-in losses do
    (what the accumulator kernels compute); True for regression losses (they read the values)."""
    if family_of(loss) == REGRESSION:
        return True
    builtin = (losses_mod.CrossEntropy, losses_mod.BinaryCrossEntropy)
    return type(loss).predict_classes in [cls.predict_classes for cls in builtin] and type(loss).probabilities in [
        cls.probabilities for cls in builtin
    ]


class Tracker:
    """A model's compiled metrics over one pass (an epoch, a validation set): ``update`` with each
    batch's output and checked targets, ``results()`` at the end.

    ``update(..., commit=False)`` holds a copy of the batch until the next committed update (or
    :meth:`commit`): fit's batches count only once their optimizer update ran (``accumulate``), so
    :meth:`state_dict` always describes the batches before fit's position in the epoch.

    Parameters
    ----------
    model : fastnn.Sequential
        A compiled model (its loss reads the rows).
    metrics : list of Metric
        The metrics to track (copied, fresh state).
    weighted : bool, default=False
        The targets carry a weight column (the model's loss is a
        :class:`fastnn.losses.SampleWeighted` one).

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0).compile("mse", "sgd", metrics=["mae"])
    >>> tracker = fnn.metrics.Tracker(model, model.metrics)
    >>> tracker.update(np.array([[1.0], [3.0]], np.float32), np.array([[0.0], [1.0]], np.float32))
    >>> tracker.results()
    {'mae': 1.5}
    """

    def __init__(self, model, metrics: list[Metric], *, weighted: bool = False):
        self.model, self.weighted = model, weighted  # weighted: targets carry a weight column (SampleWeighted)
        self.metrics = [get(m) for m in metrics]
        self.pending: list[tuple[np.ndarray, np.ndarray, bool]] = []  # (output rows, target rows, added inside)
        self.arrays: dict[int, Accumulator] = {}  # {metric's index: its accumulator} (accumulate_inside)
        self.added = False  # a batch went into the arrays since the state was set (reset, load_state_dict)

    def accumulate_inside(self, rows: int) -> list[Accumulator]:
        """Keep the metrics that have an :meth:`Metric.accumulator` in its arrays, so fit's compiled
        step calls can add the batches (``update(..., inside=True)`` then reads nothing of them);
        metrics of one kind of state share its arrays (precision, recall and f1: one confusion
        matrix). A batch updated here runs the same kernels from Python.

        Parameters
        ----------
        rows : int
            Loss rows of a pass (sizes the kept-row buffers of ``auc``).

        Returns
        -------
        list of Accumulator
            The distinct accumulators, each to run once per batch (none for a loss whose classes
            or probabilities are not the built-in ones: a subclass overriding them; none for a
            model that leaves padded steps out, whose batches :meth:`update` reads).

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 3)], seed=0).compile("cross_entropy", "sgd", metrics=["f1", "recall"])
        >>> tracker = fnn.metrics.Tracker(model, model.metrics)
        >>> [a.kernel.__name__ for a in tracker.accumulate_inside(8)]
        ['multiclass_counts']
        >>> tracker.update(np.array([[2.0, 0.0, 1.0]], np.float32), np.array([0])); tracker.results()
        {'f1': 1.0, 'recall': 1.0}
        """
        base = losses_mod.base_of(self.model.loss)
        if not _builtin_classes(base) or self.model.masks_steps:  # (padded steps: left out in update)
            return []
        if losses_mod.ignore_index_of(base) is not None:  # (ignored targets: left out in update)
            return []
        family, k = family_of(base), self.model.output_shape[-1]
        shared: dict[tuple, Accumulator] = {}
        for index, metric in enumerate(self.metrics):
            made = metric.accumulator(family, k, rows, self.model.dtype)
            if made is not None:
                key = (made.kernel, made.constants, tuple(a.shape for a in made.state))
                self.arrays[index] = shared.setdefault(key, made)
                metric.write_arrays(self.arrays[index])
        return self.accumulators

    @property
    def accumulators(self) -> list[Accumulator]:
        """The distinct accumulators of :meth:`accumulate_inside` (empty before it).

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0).compile("mse", "sgd", metrics=["mae"])
        >>> fnn.metrics.Tracker(model, model.metrics).accumulators
        []
        """
        return list({id(a): a for a in self.arrays.values()}.values())

    def reset(self) -> None:
        """Start a new pass: every metric forgets its batches, held ones are dropped.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0).compile("mse", "sgd", metrics=["mae"])
        >>> tracker = fnn.metrics.Tracker(model, model.metrics)
        >>> tracker.update(np.array([[1.0]], np.float32), np.array([[0.0]], np.float32))
        >>> tracker.reset(); tracker.results()
        {'mae': nan}
        """
        self.pending = []
        for metric in self.metrics:
            metric.reset()
        self._write_arrays()

    def update(
        self, output: Any, target: Any, commit: bool = True, *, inside: bool = False, lengths: Any = None
    ) -> None:
        """Add one batch to the pass.

        For a model that leaves padded steps out (``model.masks_steps``) only the positions of
        valid steps count, as in Keras (``lengths`` required); for a loss that ignores a label
        (``CrossEntropy(ignore_index=...)``) only the targets not ignored, as Keras' ``ignore_class``.

        Parameters
        ----------
        output : ndarray of shape (m, \\*output_shape), the model's dtype
            The batch's output, on the host or the model's device.
        target : ndarray
            The checked target rows (sample-weighted targets too, with ``weighted``).
        commit : bool, default=True
            Count it now (with any held batches before it); False: hold a copy until the next
            committed update or :meth:`commit`.
        inside : bool, default=False
            The step's compiled call already added the batch to the :meth:`accumulate_inside` arrays:
            only the other metrics read it here (nothing is read when there are none).
        lengths : ndarray of shape (m,), int64, optional
            The batch's sequence lengths (``model.output_lengths(X)``), on the host: required for a
            model that masks steps, refused otherwise.

        Raises
        ------
        ValueError
            If ``lengths`` is missing for a model that masks steps, or given to one that does not.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0).compile("mse", "sgd", metrics=["mae"])
        >>> tracker = fnn.metrics.Tracker(model, model.metrics)
        >>> tracker.update(np.array([[1.0]], np.float32), np.array([[0.0]], np.float32), commit=False)
        >>> tracker.results()
        {'mae': nan}
        >>> tracker.commit(); tracker.results()
        {'mae': 1.0}
        """
        self.added = self.added or inside
        valid = valid_rows(self.model, lengths, "Tracker.update")
        if inside and commit and not self.pending and len(self.arrays) == len(self.metrics):
            return  # every metric counted inside the step's call
        output, target = backend.to_host(output), backend.to_host(target)
        output, target, _ = self.model.loss_rows(output, target)
        valid = losses_mod.counted_rows(self.model.loss, target, weighted=self.weighted, valid=valid)
        if valid is not None:  # the positions of valid steps (and targets not ignored) only
            output, target = output[valid], target[valid]
        if not commit:  # (the arrays may be a step plan's buffers, overwritten by the next step)
            self.pending.append((np.array(output), np.array(target), inside))
            return
        self.commit()
        self._add(output, target, inside)

    def commit(self) -> None:
        """Count the batches held by ``update(..., commit=False)``.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0).compile("mse", "sgd", metrics=["mae"])
        >>> tracker = fnn.metrics.Tracker(model, model.metrics)
        >>> tracker.update(np.array([[2.0]], np.float32), np.array([[0.0]], np.float32), commit=False)
        >>> tracker.commit(); tracker.results()
        {'mae': 2.0}
        """
        for output, target, inside in self.pending:
            self._add(output, target, inside)
        self.pending = []

    def _add(self, output: np.ndarray, target: np.ndarray, inside: bool) -> None:
        """Add a batch's loss rows (targets as checked, weighted ones with their weight column)."""
        if not inside and self.arrays:  # the kernels the step's call runs, run here
            rows = target.reshape(target.shape[0], -1)
            for accumulator in self.accumulators:
                accumulator.kernel(output, rows, *accumulator.constants, *accumulator.state)
            self.added = True
        if len(self.arrays) == len(self.metrics):
            return
        loss = self.model.loss
        if self.weighted:
            target = loss.split(target, output.dtype)[0]
        batch = Batch(output, target, losses_mod.base_of(loss))
        for index, metric in enumerate(self.metrics):
            if index not in self.arrays:
                metric.update(batch)

    def _read_arrays(self) -> None:
        """The accumulated metrics' state from their arrays (once a batch went in: until then the
        metrics hold the state the arrays were written from)."""
        if not self.added:
            return
        for index, accumulator in self.arrays.items():
            self.metrics[index].read_arrays(accumulator)

    def _write_arrays(self) -> None:
        """The accumulated metrics' state into their arrays."""
        self.added = False
        for index, accumulator in self.arrays.items():
            self.metrics[index].write_arrays(accumulator)

    def results(self) -> dict[str, float]:
        """Each metric's value over the committed batches.

        Returns
        -------
        dict of str to float
            {metric name: value} (nan for a metric without batches).

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0).compile("mse", "sgd", metrics=["mae"])
        >>> tracker = fnn.metrics.Tracker(model, model.metrics)
        >>> tracker.update(np.array([[1.0], [3.0]], np.float32), np.array([[0.0], [1.0]], np.float32))
        >>> tracker.results()
        {'mae': 1.5}
        """
        self._read_arrays()
        return {metric.name: metric.result() for metric in self.metrics}

    def state_dict(self) -> dict:
        """The committed batches' state, as plain values (numbers, numpy arrays, None).

        Returns
        -------
        dict
            {metric name: {"class": its class name, its :meth:`Metric.state_dict`}}.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0).compile("mse", "sgd", metrics=["mae"])
        >>> tracker = fnn.metrics.Tracker(model, model.metrics)
        >>> tracker.update(np.array([[1.0]], np.float32), np.array([[0.0]], np.float32))
        >>> tracker.state_dict()
        {'mae': {'class': 'MAE', 'n': 1, 'sse': array([1.]), 'sae': array([1.]), 'mean': array([0.]), 'm2': array([0.])}}
        """
        self._read_arrays()
        return {metric.name: {"class": type(metric).__name__, **metric.state_dict()} for metric in self.metrics}

    def load_state_dict(self, state: dict | None) -> None:
        """Continue from a :meth:`state_dict`; a metric without a saved state of its name and class
        starts afresh.

        Parameters
        ----------
        state : dict or None
            A :meth:`state_dict` (None: every metric starts afresh).

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0).compile("mse", "sgd", metrics=["mae"])
        >>> tracker = fnn.metrics.Tracker(model, model.metrics)
        >>> tracker.update(np.array([[1.0]], np.float32), np.array([[0.0]], np.float32))
        >>> resumed = fnn.metrics.Tracker(model, model.metrics)
        >>> resumed.load_state_dict(tracker.state_dict()); resumed.results()
        {'mae': 1.0}
        """
        for metric in self.metrics:
            saved = (state or {}).get(metric.name)
            if saved is not None and saved.get("class") == type(metric).__name__:
                metric.load_state_dict(saved)
        self._write_arrays()


class Evaluation:
    """Loss, accuracy and compiled metrics of a model over batches of its outputs: ``update`` per
    batch, ``results()`` at the end.

    The loss is the one of all the batches together: a mean loss averages over samples
    (sum w_i l_i / sum w_i when weighted), a "sum" loss adds up.

    Parameters
    ----------
    model : fastnn.Sequential
        A compiled model (its loss and metrics).

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0).compile("mse", "sgd", metrics=["mae"])
    >>> evaluation = fnn.metrics.Evaluation(model)
    >>> evaluation.update(np.array([[1.0]], np.float32), np.array([[0.0]], np.float32))
    >>> evaluation.update(np.array([[3.0]], np.float32), np.array([[0.0]], np.float32))
    >>> evaluation.results()
    {'loss': 5.0, 'mae': 2.0}
    """

    def __init__(self, model):
        self.model, self.loss = model, losses_mod.base_of(model.loss)
        self.tracker = Tracker(model, model.metrics) if model.metrics else None
        self.batches, self.value, self.loss_sum, self.weight, self.correct, self.rows = 0, 0.0, 0.0, 0.0, 0, 0

    def update(
        self, output: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None, lengths: Any = None
    ) -> None:
        """Add one batch.

        For a model that leaves padded steps out (``model.masks_steps``) the loss, accuracy and
        metrics are those of the valid steps' positions (``lengths`` required): the loss of all
        the batches is their mean (the sum with reduction "sum").

        Parameters
        ----------
        output : ndarray of shape (m, \\*output_shape), the model's dtype
            The batch's output, on the host.
        target : ndarray
            The checked target rows.
        weights : ndarray of shape (m,), float64, optional
            Sample weights of the loss (None: every sample counts 1); for a per-step output also
            (m, time) or (m, \\*positions), one per step or position (``fastnn.losses.row_weights``).
        lengths : ndarray of shape (m,), int64, optional
            The batch's sequence lengths (``model.output_lengths(X)``): required for a model that
            masks steps, refused otherwise.

        Raises
        ------
        ValueError
            If ``lengths`` is missing for a model that masks steps, or given to one that does not.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0).compile("mse", "sgd", metrics=["mae"])
        >>> evaluation = fnn.metrics.Evaluation(model)
        >>> evaluation.update(np.array([[1.0], [3.0]], np.float32), np.zeros((2, 1), np.float32), np.array([3.0, 1.0]))
        >>> evaluation.results()
        {'loss': 3.0, 'mae': 2.0}
        """
        valid = valid_rows(self.model, lengths, "Evaluation.update")
        rows, target_rows, _ = self.model.loss_rows(output, target)
        if weights is not None:  # one per loss row
            weights = losses_mod.row_weights(weights, tuple(self.model.output_shape[:-1])).reshape(-1)
        # (the target rows are labels: the weights come apart, whatever loss the model trains on)
        valid = losses_mod.counted_rows(self.model.loss, backend.to_host(target_rows), weighted=False, valid=valid)
        if valid is not None:  # the positions of valid steps (targets not ignored): their loss is the masked mean
            rows, target_rows = rows[valid], target_rows[valid]
            weights = None if weights is None else weights[valid]
        loss, scratch = self.loss, np.empty((1, 1), rows.dtype)
        if rows.shape[0] == 0:  # every target ignored: the batch adds nothing (its loss 0, Keras' and ours)
            self.value = 0.0
            self.batches += 1
            if self.tracker is not None:
                self.tracker.update(output, target, lengths=lengths)
            return
        if weights is None:
            self.value = loss.forward_backward(rows, target_rows, scratch, False)
            weight = rows.shape[0]
        else:
            self.value = losses_mod.SampleWeighted(loss).forward_backward(
                rows, losses_mod.weighted_targets(target_rows, weights), scratch, False
            )
            weight = float(np.sum(weights))
        weight = weight if loss.reduction == "mean" else 1.0
        self.loss_sum += self.value * weight
        self.weight += weight
        self.batches += 1
        correct = losses_mod.count_correct(loss, rows, target_rows)  # (checked by the loss's call above)
        self.correct = None if correct is None or self.correct is None else self.correct + correct
        self.rows += rows.shape[0]
        if self.tracker is not None:
            self.tracker.update(output, target, lengths=lengths)

    def results(self) -> dict:
        """The loss, accuracy and metrics over the batches so far.

        Returns
        -------
        dict
            {"loss": float, "accuracy": float (classification losses), each metric's name: float}.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0).compile("mse", "sgd", metrics=["mae"])
        >>> evaluation = fnn.metrics.Evaluation(model)
        >>> evaluation.update(np.array([[1.0]], np.float32), np.array([[0.0]], np.float32))
        >>> evaluation.results()
        {'loss': 1.0, 'mae': 1.0}
        """
        if self.batches == 1:  # one batch: its loss as computed
            value = self.value
        elif self.loss.reduction == "mean":
            value = self.loss_sum / self.weight if self.weight else 0.0
        else:
            value = self.loss_sum
        logs = {"loss": float(value)}
        if self.correct is not None:
            logs["accuracy"] = self.correct / self.rows if self.rows else 0.0  # (every target ignored: 0)
        if self.tracker is not None:
            logs.update(self.tracker.results())
        return logs


def valid_rows(model, lengths, what: str) -> np.ndarray | None:
    """The loss rows of valid steps (``model.valid_rows``) for a model that masks steps, None for
    one that does not; a ValueError naming ``what`` when ``lengths`` is missing or not wanted.

    Parameters
    ----------
    model : fastnn.Sequential
        A built model.
    lengths : ndarray of shape (m,), int64, or None
        The batch's sequence lengths (``model.output_lengths(X)``).
    what : str
        The caller, for the message.

    Returns
    -------
    ndarray of bool or None
        ``(m * positions,)``, or None.

    Raises
    ------
    ValueError
        If ``lengths`` is missing for a model that masks steps, or given to one that does not.

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.Masking(0.0), fnn.Dense(1, 2)], input_shape=(2, 1))
    >>> fnn.metrics.valid_rows(model, np.array([1, 2]), "example")
    array([ True, False,  True,  True])
    """
    model.check_lengths_argument(lengths, what)
    return None if lengths is None else model.valid_rows(backend.to_host(lengths))


def evaluate_outputs(
    model: Sequential,
    output: np.ndarray,
    target: np.ndarray,
    weights: np.ndarray | None = None,
    lengths: np.ndarray | None = None,
) -> dict:
    """The loss, accuracy and compiled metrics of a model's outputs against targets.

    Parameters
    ----------
    model : fastnn.Sequential
        A compiled model.
    output : ndarray of shape (n, \\*output_shape), the model's dtype
        Its outputs, on the host.
    target : ndarray
        The checked targets.
    weights : ndarray of shape (n,), float64, optional
        Sample weights of the loss (:class:`fastnn.losses.SampleWeighted`); (n, \\*positions) for a
        per-step output too, one per position.
    lengths : ndarray of shape (n,), int64, optional
        The sequence lengths (``model.output_lengths(X)``) of a model that leaves padded steps out
        (required there): the loss, accuracy and metrics of the valid steps' positions.

    Returns
    -------
    dict
        {"loss": float, "accuracy": float (classification losses), each metric's name: float}.

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.Dense(2, 2)], seed=0).compile("cross_entropy", "sgd", metrics=["f1"])
    >>> logits = np.array([[2.0, -1.0], [0.5, 1.5], [0.0, 3.0]], np.float32)
    >>> logs = fnn.metrics.evaluate_outputs(model, logits, np.array([0, 0, 1]))
    >>> {key: round(value, 4) for key, value in logs.items()}
    {'loss': 0.4701, 'accuracy': 0.6667, 'f1': 0.6667}
    """
    evaluation = Evaluation(model)
    evaluation.update(output, target, weights, lengths)
    return evaluation.results()
