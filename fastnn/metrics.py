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
weights as they changed during the epoch; the "val_" ones and ``evaluate`` use the weights at the
epoch's end. A training epoch's metric state is part of ``fit``'s position in the epoch (saved with
the model), so an epoch resumed mid-way logs the metrics of the uninterrupted epoch.
"""

from __future__ import annotations

import copy
import math
from functools import cached_property

import numpy as np

from . import _validation as V
from . import backend
from . import losses as losses_mod

MULTICLASS, BINARY, REGRESSION = "multiclass", "binary", "regression"  # binary: also multi-label outputs


def family_of(loss) -> str:
    """The kind of targets a loss trains on: labels (multiclass), 0/1 values (binary, multi-label)
    or values (regression)."""
    loss = losses_mod.base_of(loss)
    if loss.target_spec(1, np.float64)[0] == ():
        return MULTICLASS
    return BINARY if loss.is_classification else REGRESSION


class Batch:
    """One batch of host rows as the metrics read them, each view computed once on first use."""

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


class Metric:
    """Base class: ``reset()``, ``update(batch)`` per batch, ``result()`` at the epoch's end.
    ``families``: the kinds of loss it applies to (:func:`family_of`). Callbacks infer "max" from
    the name (acc, auc, precision, recall, f1, r2), else "min": name a function metric to suit, or
    pass ``mode=``."""

    key = ""  # the registry name (get_config's "class")
    families: tuple[str, ...] = ()
    state_fields: tuple[str, ...] = ()  # the pass's state: numbers, numpy arrays or None
    kept_fields: tuple[str, ...] = ()  # lists of per-batch arrays (saved concatenated)

    def __init__(self, *, name: str | None = None):
        self.name = self.key if name is None else _check_name(name)
        self.reset()

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, batch: Batch) -> None:
        raise NotImplementedError

    def result(self) -> float:
        raise NotImplementedError

    def params(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        """The state of the pass so far as plain values (numbers, numpy arrays, None): what a
        checkpoint written mid-epoch keeps (:meth:`load_state_dict` continues from it)."""
        state = {name: _plain(getattr(self, name)) for name in self.state_fields}
        for name in self.kept_fields:
            kept = getattr(self, name)
            state[name] = np.concatenate(kept) if kept else None
        return state

    def load_state_dict(self, state: dict) -> None:
        for name in self.state_fields:
            setattr(self, name, _plain(state[name]))
        for name in self.kept_fields:
            setattr(self, name, [] if state[name] is None else [np.array(state[name])])

    def get_config(self) -> dict:
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


class BinaryAccuracy(Metric):
    """Fraction of the outputs' elements whose class (probability > ``threshold``, i.e. logit >
    log(t / (1 - t)): 0 for 0.5, as ``predict_classes``) is right: ``accuracy_score`` for one
    output, ``1 - hamming_loss`` for multi-label outputs."""

    key, families = "binary_accuracy", (BINARY,)
    state_fields = ("hits", "count")

    def __init__(self, threshold: float = 0.5, *, name: str | None = None):
        self.threshold = V.check_float(
            threshold, "threshold", low=0.0, high=1.0, low_inclusive=False, high_inclusive=False
        )
        self._logit_threshold = math.log(self.threshold / (1.0 - self.threshold))
        super().__init__(name=name)

    def reset(self):
        self.hits, self.count = 0, 0

    def update(self, batch):
        predicted = batch.output > self._logit_threshold
        self.hits += int(np.count_nonzero(predicted == (batch.target > 0.5)))
        self.count += predicted.size

    def result(self):
        return self.hits / self.count if self.count else math.nan

    def params(self):
        return {"threshold": self.threshold}


class TopKAccuracy(Metric):
    """Fraction of samples whose label's score is among the ``k`` largest of its row (fewer than
    ``k`` scores strictly larger): ``top_k_accuracy_score``."""

    key, families = "top_k_accuracy", (MULTICLASS,)
    state_fields = ("hits", "count")

    def __init__(self, k: int = 5, *, name: str | None = None):
        self.k = V.check_int(k, "k", minimum=1)
        super().__init__(name=name)

    def reset(self):
        self.hits, self.count = 0, 0

    def update(self, batch):
        out = batch.output
        label_score = out[np.arange(out.shape[0]), batch.target]
        self.hits += int(np.count_nonzero((out > label_score[:, None]).sum(axis=1) < self.k))
        self.count += out.shape[0]

    def result(self):
        return self.hits / self.count if self.count else math.nan

    def params(self):
        return {"k": self.k}


class _ClassCounts(Metric):
    """A confusion matrix over the epoch (per-label counts of true positives, predictions and
    true labels for multi-label outputs), and the averages over classes; subclasses give the
    per-class score from the counts."""

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

    @property
    def tp(self):
        return self.counts[0] if self.multilabel else np.diag(self.counts)

    @property
    def pred(self):
        return self.counts[1] if self.multilabel else self.counts.sum(axis=0)

    @property
    def true(self):
        return self.counts[2] if self.multilabel else self.counts.sum(axis=1)

    def per_class(self, tp, pred, true) -> np.ndarray:
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
    """True positives over predicted positives per class, averaged (``precision_score``)."""

    key = "precision"

    def per_class(self, tp, pred, true):
        return _ratio(tp, pred)


class Recall(_ClassCounts):
    """True positives over actual positives per class, averaged (``recall_score``)."""

    key = "recall"

    def per_class(self, tp, pred, true):
        return _ratio(tp, true)


class F1(_ClassCounts):
    """Harmonic mean of precision and recall per class, 2 tp / (predicted + true), averaged
    (``f1_score``; micro: from the summed counts)."""

    key = "f1"

    def per_class(self, tp, pred, true):
        return _ratio(2 * tp, pred + true)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC of 0/1 ``labels`` (n,) against ``scores`` (n,): the Mann-Whitney statistic
    with tied scores counted half (equal to the trapezoid area of scikit-learn's ROC curve);
    nan without both classes."""
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
    labels (``roc_auc_score(..., multi_class="ovr")``). Exact: keeps every score of the epoch."""

    key, families = "auc", (MULTICLASS, BINARY)
    kept_fields = ("scores", "labels")

    def reset(self):
        self.scores, self.labels = [], []

    def update(self, batch):  # the epoch's probabilities and classes
        self.scores.append(batch.probabilities)  # (a new array)
        self.labels.append(np.array(batch.true))

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

    def result(self):
        return float(np.mean(self.per_output())) if self.n else math.nan

    def per_output(self) -> np.ndarray:
        raise NotImplementedError


class MAE(_Regression):
    """Mean absolute error (``mean_absolute_error``)."""

    key = "mae"

    def per_output(self):
        return self.sae / self.n


class MSE(_Regression):
    """Mean squared error (``mean_squared_error``)."""

    key = "mse"

    def per_output(self):
        return self.sse / self.n


class RMSE(_Regression):
    """Root mean squared error per output, averaged (``root_mean_squared_error``)."""

    key = "rmse"

    def per_output(self):
        return np.sqrt(self.sse / self.n)


class R2(_Regression):
    """Coefficient of determination 1 - SSE / SST per output, averaged (``r2_score``)."""

    key = "r2"

    def per_output(self):
        sse, sst = np.broadcast_arrays(np.asarray(self.sse, np.float64), np.asarray(self.m2, np.float64))
        constant = np.where(sse == 0, 1.0, 0.0)
        return np.where(sst == 0, constant, 1.0 - _ratio(sse, sst))


class FunctionMetric(Metric):
    """A user's ``fn(y_true, y_pred) -> float`` on the whole epoch (target rows, output rows)."""

    key, families = "function", (MULTICLASS, BINARY, REGRESSION)
    kept_fields = ("targets", "outputs")

    def __init__(self, fn, *, name: str | None = None):
        if not callable(fn):
            raise TypeError(f"a metric function must be callable, got {fn!r}")
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


def get(spec) -> Metric | str:
    """A new Metric from a name, a Metric (copied, fresh state) or a callable; "accuracy" stays the
    string (the fit loop always counts it for classification losses)."""
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


def check_metrics(metrics, loss) -> list[Metric]:
    """The Metric objects of ``compile(metrics=...)`` for ``loss``: a list or tuple of names,
    Metric objects or callables; each must apply to the loss, names must be distinct."""
    if isinstance(metrics, (str, Metric)) or callable(metrics):
        metrics = [metrics]
    if not isinstance(metrics, (list, tuple)):
        raise TypeError(f"metrics must be a list of metric names, objects or functions, got {metrics!r}")
    family = None if loss is None else family_of(loss)
    result = []
    taken = {"loss", "lr"} | ({ACCURACY} if family in (MULTICLASS, BINARY) else set())  # keys fit logs anyway
    for spec in metrics:
        metric = get(spec)
        builtin = isinstance(metric, str)  # "accuracy": counted by the fit loop itself
        families = (MULTICLASS, BINARY) if builtin else metric.families
        name = metric if builtin else metric.name
        if family is not None and family not in families:
            needs = " or ".join(FAMILY_WORDS[f] for f in families)
            raise ValueError(
                f"metric {name!r} does not apply to loss {losses_mod.base_of(loss).name!r}: it needs {needs}"
            )
        if builtin:
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
    """Each metric's config; a function metric is kept as the function itself (copies and pickles
    of the model carry it; ``save`` drops it with a warning: see fastnn.serialization)."""
    return [m.fn if isinstance(m, FunctionMetric) else m.get_config() for m in metrics]


def from_config(configs, loss) -> list[Metric]:
    """Metric objects from :func:`to_config` entries (configs, or functions)."""
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


class Tracker:
    """A model's compiled metrics over one pass (an epoch, a validation set): ``update`` with each
    batch's output and checked targets, ``results()`` at the end.

    ``update(..., commit=False)`` holds a copy of the batch until the next committed update (or
    :meth:`commit`): fit's batches count only once their optimizer update ran (``accumulate``), so
    :meth:`state_dict` always describes the batches before fit's position in the epoch."""

    def __init__(self, model, metrics: list[Metric], *, weighted: bool = False):
        self.model, self.weighted = model, weighted  # weighted: targets carry a weight column (SampleWeighted)
        self.metrics = [get(m) for m in metrics]
        self.pending: list[Batch] = []

    def reset(self) -> None:
        self.pending = []
        for metric in self.metrics:
            metric.reset()

    def update(self, output, target, commit: bool = True) -> None:
        """``output`` (batch, *output_shape) and checked ``target`` (sample-weighted targets too),
        on the host or the model's device."""
        output, target = backend.to_host(output), backend.to_host(target)
        output, target, _ = self.model.loss_rows(output, target)
        loss = self.model.loss
        if self.weighted:
            target = loss.split(target, output.dtype)[0]
        if not commit:  # (the arrays may be a step plan's buffers, overwritten by the next step)
            self.pending.append(Batch(np.array(output), np.array(target), losses_mod.base_of(loss)))
            return
        self.commit()
        self._add(Batch(output, target, losses_mod.base_of(loss)))

    def commit(self) -> None:
        """Count the batches held by ``update(..., commit=False)``."""
        for batch in self.pending:
            self._add(batch)
        self.pending = []

    def _add(self, batch: Batch) -> None:
        for metric in self.metrics:
            metric.update(batch)

    def results(self) -> dict[str, float]:
        return {metric.name: metric.result() for metric in self.metrics}

    def state_dict(self) -> dict:
        """{metric name: {"class": its class name, its state}} of the committed batches (plain values)."""
        return {metric.name: {"class": type(metric).__name__, **metric.state_dict()} for metric in self.metrics}

    def load_state_dict(self, state: dict | None) -> None:
        """Continue from a :meth:`state_dict`; a metric without a saved state of its name and class
        starts afresh."""
        for metric in self.metrics:
            saved = (state or {}).get(metric.name)
            if saved is not None and saved.get("class") == type(metric).__name__:
                metric.load_state_dict(saved)


class Evaluation:
    """Loss, accuracy and compiled metrics of a model over batches of its outputs: ``update(output,
    target, weights)`` per batch (host output (m, *output_shape), checked target, optional (m,)
    float64 sample weights of the loss), ``results()`` at the end. The loss is the one of all the
    batches together: a mean loss averages over samples (sum w_i l_i / sum w_i when weighted), a
    "sum" loss adds up."""

    def __init__(self, model):
        self.model, self.loss = model, losses_mod.base_of(model.loss)
        self.tracker = Tracker(model, model.metrics) if model.metrics else None
        self.batches, self.value, self.loss_sum, self.weight, self.correct, self.rows = 0, 0.0, 0.0, 0.0, 0, 0

    def update(self, output: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None) -> None:
        rows, target_rows, _ = self.model.loss_rows(output, target)
        loss, scratch = self.loss, np.empty((1, 1), rows.dtype)
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
        correct = loss.correct_count(rows, target_rows)
        self.correct = None if correct is None or self.correct is None else self.correct + correct
        self.rows += rows.shape[0]
        if self.tracker is not None:
            self.tracker.update(output, target)

    def results(self) -> dict:
        if self.batches == 1:  # one batch: its loss as computed
            value = self.value
        elif self.loss.reduction == "mean":
            value = self.loss_sum / self.weight if self.weight else 0.0
        else:
            value = self.loss_sum
        logs = {"loss": float(value)}
        if self.correct is not None:
            logs["accuracy"] = self.correct / self.rows
        if self.tracker is not None:
            logs.update(self.tracker.results())
        return logs


def evaluate_outputs(model, output: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None) -> dict:
    """{"loss", "accuracy" (classification losses), each compiled metric} of host ``output``
    (n, *output_shape) against checked ``target``; the loss weighted by ``weights`` (n,) float64
    when given (:class:`fastnn.losses.SampleWeighted`)."""
    evaluation = Evaluation(model)
    evaluation.update(output, target, weights)
    return evaluation.results()
