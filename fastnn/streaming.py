"""``fit`` on data that is not one in-memory array (Keras-compatible):

- a :class:`fastnn.data.ArrayDataset` (in-memory or memory-mapped arrays, or a raw file mapped a
  block at a time): batches of ``batch_size`` in an order shuffled by block, ``steps_per_epoch``
  optional (at most the batches of one pass); exact resume mid-epoch, as for arrays;
- a callable returning a fresh iterator of (X, y) batches per epoch, or a re-iterable (a list of
  batches, any object whose ``iter()`` is new each time): an epoch ends when it is exhausted, or
  after ``steps_per_epoch`` batches; on resume, the batches an interrupted epoch trained on are
  skipped (exact when the callable gives the same batches again);
- an iterator or generator (``iter(g) is g``): one stream shared by all epochs, so
  ``steps_per_epoch`` is required (it may be endless); if it runs out, training stops with a
  warning (Keras does the same). On resume it continues where it stands.

``batch_size`` and ``shuffle`` apply to datasets only (batches of iterables are used as they
come). Each batch is checked at the boundary like fit's arrays; errors name the batch and epoch.
Validation data may be (X_val, y_val), an ArrayDataset or a re-iterable/callable of batches.
Callbacks, the progress bar, Ctrl-C, the training state (cursor, epochs) and ``accumulate`` work
as for arrays.
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Iterator

import numpy as np

from . import _validation as V
from ._progress import EpochProgress
from .accumulation import Stepper
from .callbacks import CallbackList, History
from .datasets import ArrayDataset, EpochOrder
from .layers.base import walk_layers

STREAM_FINGERPRINT = "stream"


def is_stream(X) -> bool:
    """True for the data this module trains on: an ArrayDataset, a callable or an iterable that
    is not an array (nor a list of numbers: a list whose first item is a 2-tuple of batches is)."""
    if isinstance(X, ArrayDataset) or (callable(X) and not hasattr(X, "__array__")):
        return True
    if isinstance(X, np.ndarray) or hasattr(X, "__array__") or isinstance(X, (str, bytes)):
        return False
    if isinstance(X, Iterator):
        return True
    if isinstance(X, (list, tuple)):
        return bool(X) and isinstance(X[0], tuple) and len(X[0]) == 2 and np.ndim(X[0][0]) >= 1
    return isinstance(X, Iterable)


def check_array_fit(y, steps_per_epoch) -> None:
    """fit on arrays: y is required, steps_per_epoch is not for them."""
    if y is None:
        raise ValueError("fit(X, y): y is missing. Pass targets with X (one per sample), or pass X as a "
                         "fastnn.data.ArrayDataset(X, y) or an iterable/callable of (X, y) batches")
    if steps_per_epoch is not None:
        raise ValueError("steps_per_epoch applies to datasets, iterables and generators; with arrays an epoch is "
                         "one pass over X: leave steps_per_epoch=None, or wrap the arrays: "
                         "fit(fastnn.data.ArrayDataset(X, y), steps_per_epoch=...)")


def _check_steps(steps_per_epoch):
    if steps_per_epoch is None:
        return None
    if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, (int, np.integer)):
        raise TypeError(f"steps_per_epoch must be a positive integer (batches per epoch) or None, got "
                        f"{type(steps_per_epoch).__name__} {steps_per_epoch!r}")
    return V.check_int(steps_per_epoch, "steps_per_epoch", minimum=1)


def _checked_batch(model, item, b: int, epoch: int):
    """The (X, y) batch ``item`` checked and converted like fit's arrays; errors name the batch."""
    where = f"batch {b} of epoch {epoch + 1}"
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise TypeError(f"{where}: each item of the training data must be a pair (X_batch, y_batch), got "
                        f"{type(item).__name__}" + (f" of length {len(item)}" if hasattr(item, "__len__") else ""))
    try:
        xb, yb = model.check_data(item[0], item[1], argument="X_batch")
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{where}: {exc}") from None
    if xb.shape[0] == 0:
        raise ValueError(f"{where} is empty (0 samples); every batch needs at least one sample")
    return xb, yb


class _DatasetBatches:
    """Batches of an ArrayDataset: positions [b * batch_size, ...) of each epoch's block order."""

    restartable = True
    exhausted = None

    def __init__(self, model, dataset: ArrayDataset, batch_size: int, shuffle: bool, steps):
        self.model, self.dataset, self.shuffle = model, dataset, shuffle
        model.check_data(*dataset.block(0))  # builds the model from the data's shape if needed
        norm = next((la for la in walk_layers(model.layers) if getattr(la, "needs_batch_over_one", False)), None)
        plan = V.check_batch_plan(len(dataset), batch_size, needs_batch_over_one=norm is not None, shuffle=shuffle,
                                  layer_name=repr(norm))
        if plan.note:
            warnings.warn(plan.note, stacklevel=4)
        self.batch_size, self.batches, self.n_used = plan.batch_size, plan.batches, plan.samples
        if steps is not None and steps > self.batches:
            raise ValueError(f"steps_per_epoch={steps} is more than the {self.batches} batches of {self.batch_size} "
                             f"in this dataset of {len(dataset)} samples; pass at most {self.batches} (or None)")
        self.steps = self.batches if steps is None else steps
        self.fingerprint = dataset.fingerprint()

    def epoch(self, epoch: int, start: int):
        """(b, xb, yb) of each batch b of ``epoch`` after the first ``start`` samples."""
        model = self.model
        order = EpochOrder(self.dataset, model.seed, epoch, self.shuffle,
                           lambda x, y: model.check_data(x, y, argument="X (dataset block)"))
        trailing, y_dtype = model.target_shape()
        for b in range(self.steps):
            lo, hi = max(b * self.batch_size, start), min(self.n_used, (b + 1) * self.batch_size)
            if lo >= hi:
                continue
            plan = model.step_plan(hi - lo) if model.device == "cpu" else None
            if plan is not None:  # gathered straight into the step's buffers
                xb, yb = plan.x, plan.y
            else:  # host rows, copied in by the step (a device model, or layers without plans)
                xb = np.empty((hi - lo, *model.input_shape), model.input_dtype)
                yb = np.empty((hi - lo, *trailing), y_dtype)
            order.gather(lo, hi, xb, yb)
            yield b, xb, yb


class _IterableBatches:
    """Batches from a callable (a fresh iterator per epoch), a re-iterable or a one-shot iterator."""

    def __init__(self, model, data, steps):
        self.model, self.data, self.steps = model, data, steps
        self.restartable = not isinstance(data, Iterator)
        if not self.restartable and steps is None:
            raise ValueError(f"X is an iterator ({type(data).__name__}): it cannot restart each epoch and may be "
                             f"endless, so fit needs steps_per_epoch=... (batches per epoch). Or pass a callable "
                             f"returning a fresh iterator per epoch, a list of (X, y) batches, or a "
                             f"fastnn.data.ArrayDataset")
        self.fingerprint = STREAM_FINGERPRINT
        self.stream = data if not self.restartable else None
        self.first = None  # the batch taken to build the model, given back as the first batch
        item = self._next(self._fresh(), 0, 0)
        if item is None:
            raise ValueError("the training data yielded no batches")
        self.first = item

    def _fresh(self):
        if self.stream is not None:
            return self.stream
        it = self.data() if callable(self.data) else iter(self.data)
        if not isinstance(it, Iterator):
            it = iter(it)
        self.iterator = it
        return it

    def _next(self, it, b, epoch):
        try:
            item = next(it)
        except StopIteration:
            return None
        return _checked_batch(self.model, item, b, epoch)

    def epoch(self, epoch: int, start: int):
        it = self.iterator if self.first is not None and self.stream is None else self._fresh()
        done, b = 0, 0
        while self.steps is None or b < self.steps:
            if self.first is not None:
                batch, self.first = self.first, None
            else:
                batch = self._next(it, b, epoch)
            if batch is None:
                if self.stream is not None or (self.steps is not None and b < self.steps):
                    self.exhausted = (epoch, b)
                return
            b += 1
            if self.restartable and done < start:  # resuming: this batch was trained on before the interrupt
                done += batch[0].shape[0]
                continue
            yield (b - 1, *batch)

    exhausted = None


def _validation(model, data):
    """A function giving the validation logs: (X_val, y_val) arrays, an ArrayDataset or a
    re-iterable/callable of batches (averaged over batches, weighted by their samples)."""
    if data is None:
        return None
    if isinstance(data, (tuple, list)) and len(data) == 2 and not is_stream(data):
        X_val, y_val = model.check_data(*data, argument="X_val")
        return lambda: model.validate(X_val, y_val)
    if isinstance(data, Iterator) or not is_stream(data):
        raise ValueError("validation_data must be a tuple (X_val, y_val), a fastnn.data.ArrayDataset, or a "
                         "callable/list giving (X, y) batches anew each epoch (not a one-shot iterator)")

    def batches():
        if isinstance(data, ArrayDataset):
            return (data.block(j) for j in range(data.blocks))
        return data() if callable(data) else iter(data)

    def run():
        sums, total = {}, 0
        for b, item in enumerate(batches()):
            xb, yb = _checked_batch(model, item, b, 0)
            logs = model.validate(xb, yb)
            for key, value in logs.items():
                sums[key] = sums.get(key, 0.0) + value * xb.shape[0]
            total += xb.shape[0]
        return {key: value / total for key, value in sums.items()}

    return run


def fit_stream(model, data, y, *, epochs, batch_size, shuffle, validation_data, callbacks, verbose, steps_per_epoch,
               accumulate) -> History:
    """fit() on a dataset or on batches (this module's docstring); the arguments are checked as in
    :func:`fastnn.training.fit`, except the data."""
    from .training import Cursor, _DeferredInterrupt

    if y is not None:
        raise ValueError(f"y must be None when X is a {type(data).__name__}: the targets come with the data "
                         f"(ArrayDataset(X, y), or (X, y) batches)")
    steps = _check_steps(steps_per_epoch)
    if isinstance(data, ArrayDataset):
        source = _DatasetBatches(model, data, batch_size, shuffle, steps)
    else:
        source = _IterableBatches(model, data, steps)
    model.prepare("fit")
    validate = _validation(model, validation_data)
    state = model.state
    if state.cursor is not None and state.cursor.data != source.fingerprint:
        state.cursor = None
    history = History()
    cbs = CallbackList([history, *callbacks], model)
    state.callbacks = callbacks
    state.restore_callbacks(callbacks)
    progress = EpochProgress(verbose, epochs, source.steps)
    was_training = model.training
    model.train()
    model.stop_training = False
    stepper = Stepper(model, accumulate)
    try:
        with model.training_session("fit"):
            model.reserve(getattr(source, "batch_size", None) or source.first[0].shape[0])
            cbs.on_train_begin({})
            with _DeferredInterrupt() as interrupt:
                _run(model, source, epochs, cbs, progress, interrupt, validate, stepper, Cursor)
    finally:
        stepper.abort()
        progress.close()
        model.train(was_training)
    cbs.on_train_end({})
    return history


def _run(model, source, epochs, cbs, progress, interrupt, validate, stepper, Cursor):
    """The epochs: the batches of each, a step per batch, an update per group of ``accumulate``."""
    state = model.state
    first_epoch = state.epochs_done
    for epoch in range(first_epoch, first_epoch + epochs):
        cbs.on_epoch_begin(epoch, {})
        progress.epoch_begin(epoch - first_epoch)
        start = time.perf_counter()
        total_loss, correct, samples = 0.0, 0, 0
        cursor = state.cursor
        if cursor is not None and cursor.epoch == epoch:
            samples, total_loss, correct = cursor.samples, cursor.loss_sum, cursor.correct
        committed = True
        batches = source.epoch(epoch, samples)
        while True:
            interrupt.critical = True
            batch = next(batches, None)
            last = batch is None
            if last:
                if not committed:  # the open group of an epoch of unknown length: its update now
                    committed = stepper.finish()
            else:
                b, xb, yb = batch
                cbs.on_batch_begin(b, {})
                batch_loss, out, committed = stepper.step(xb, yb, last=source.steps is not None and
                                                          b == source.steps - 1)
                total_loss += batch_loss * xb.shape[0]
                samples += xb.shape[0]
                count = model.correct_count(out, yb)
                correct = None if count is None or correct is None else correct + count
            if committed:
                state.cursor = Cursor(epoch, samples, total_loss, correct, source.fingerprint)
                interrupt.critical = False
                interrupt.check()
            if last:
                break
            progress.batch_end(total_loss / samples)
            cbs.on_batch_end(b, {"loss": batch_loss, "batch": b, "size": xb.shape[0]})
        interrupt.critical = False
        if source.exhausted is not None:
            warnings.warn(f"the training data ran out after {source.exhausted[1]} batches of epoch "
                          f"{source.exhausted[0] + 1}; training stops (pass steps_per_epoch at most the batches "
                          f"the data gives, or a callable returning a fresh iterator per epoch)", stacklevel=4)
            model.stop_training = True
            if samples == 0:
                state.cursor = None
                break
        if samples == 0:
            raise ValueError(f"epoch {epoch + 1} got no batches from the training data")
        logs = {"loss": total_loss / samples}
        if correct is not None:
            logs["accuracy"] = correct / (samples * model.positions)
        if validate is not None:
            logs.update({f"val_{k}": v for k, v in validate().items()})
        logs["lr"] = float(model.optimizer.lr)
        state.epochs_done = epoch + 1
        state.cursor = None
        progress.epoch_end(epoch - first_epoch, logs, time.perf_counter() - start)
        cbs.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
