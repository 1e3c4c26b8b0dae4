"""The fit loop, its training state (epochs done, position in the epoch, callback states) and the
batch feeder. Uses only the model's engine API (step plans, ``run_step``, ``validate``).

One loop (:func:`_run_epochs`) trains on every kind of data: a *batch source* gives each epoch's
batches, :class:`ArrayBatches` for in-memory arrays and those of :mod:`fastnn.streaming` for
datasets and iterables of batches; metrics, weights, validation, callbacks, progress, the cursor
and ``accumulate`` are the loop's, the same for all.

Life cycle of a step: the batch is copied in, the step plan runs (forward, loss, backward,
gradient norm), the optimizer updates, and only then does the position in the epoch advance (the
step *commits*). Any exception or KeyboardInterrupt before the commit leaves the model exactly as
after the previous step (``Sequential.run_step`` restores running statistics and dropout counters;
the optimizer has not run). Ctrl-C during ``fit`` in the main thread is deferred to the next step
boundary, so ``save`` afterwards, ``fnn.load`` and ``fit`` give the uninterrupted run bit for bit.

Resuming mid-epoch: ``fit`` continues a saved or interrupted epoch only on the *same data*: the
same shapes and dtypes of X and y, the same targets, and the same values in 256 evenly spaced rows
of X (a fingerprint kept with the position). ``fit`` on other data starts a fresh epoch position.
The position includes the epoch's metric state (:meth:`fastnn.metrics.Tracker.state_dict`), so a
resumed epoch logs the metrics of the uninterrupted one.
"""

from __future__ import annotations

import hashlib
import signal
import threading
import time
import warnings
from dataclasses import dataclass

import numpy as np

from . import _fit_options as options
from . import _validation as V
from . import backend, distributed, streaming
from . import losses as losses_mod
from ._progress import EpochProgress
from .accumulation import Stepper, check_accumulate
from .callbacks import Callback, CallbackList, History
from .kernels.rng import permutation
from .layers.base import walk_layers
from .metrics import Tracker

_SHUFFLE_STREAM = 1 << 40  # RNG stream of the epoch order (parameters and dropout use others)
_FINGERPRINT_ROWS = 256


def data_fingerprint(X: np.ndarray, y: np.ndarray) -> str:
    """A short hash that tells whether a later fit() gets the same data: shapes, dtypes, all of y
    and ``_FINGERPRINT_ROWS`` evenly spaced rows of X."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((X.shape, X.dtype.str, y.shape, y.dtype.str)).encode())
    rows = np.unique(np.linspace(0, X.shape[0] - 1, min(X.shape[0], _FINGERPRINT_ROWS)).astype(np.int64))
    h.update(np.ascontiguousarray(X[rows]).tobytes())
    h.update(np.ascontiguousarray(y).tobytes())
    return h.hexdigest()


@dataclass
class Cursor:
    """Position inside an unfinished epoch: samples done, running loss sum and correct count, and
    the metrics' state (the fit's live Tracker, read when the state is saved; a plain record
    after a load; None without metrics)."""

    epoch: int
    samples: int
    loss_sum: float
    correct: int | None
    data: str
    metrics: Tracker | dict | None = None

    def metric_state(self) -> dict | None:
        """The metrics' state as a plain record (:meth:`fastnn.metrics.Tracker.state_dict`), or None."""
        if isinstance(self.metrics, Tracker):
            return self.metrics.state_dict() or None
        return self.metrics


def callback_keys(callbacks) -> list[str]:
    """A stable key per callback to match saved states: ``cb.state_key`` when set, else the class
    name and its configuration (public attributes of simple types that are not part of its
    state); equal keys are numbered in order."""
    keys, seen = [], {}
    for cb in callbacks:
        key = getattr(cb, "state_key", None)
        if key is None:
            state = set(cb.state_dict())
            config = sorted(
                (k, v)
                for k, v in vars(cb).items()
                if not k.startswith("_")
                and k not in state
                and k != "model"
                and isinstance(v, (str, int, float, bool, type(None)))
            )
            key = f"{type(cb).__qualname__}({', '.join(f'{k}={v!r}' for k, v in config)})"
        count = seen.get(key, 0)
        seen[key] = count + 1
        keys.append(key if count == 0 else f"{key}#{count}")
    return keys


class TrainingState:
    """What the fit loop keeps between calls: epochs done, the cursor of an unfinished epoch, the
    callbacks of the last fit (their states are saved) and saved callback states waiting for the
    next fit (matched by :func:`callback_keys`)."""

    def __init__(self):
        self.epochs_done = 0
        self.cursor: Cursor | None = None
        self.callbacks: list = []
        self.pending_callbacks: dict[str, dict] = {}

    def to_record(self) -> dict:
        """Plain record: JSON-able values, callback arrays as host arrays."""
        cursor = (
            None
            if self.cursor is None
            else [self.cursor.epoch, self.cursor.samples, self.cursor.loss_sum, self.cursor.correct, self.cursor.data]
        )
        callbacks = {}
        for key, cb in zip(callback_keys(self.callbacks), self.callbacks):
            arrays = cb.arrays() if hasattr(cb, "arrays") else {}
            callbacks[key] = {
                "class": type(cb).__name__,
                "state": cb.state_dict(),
                "arrays": {k: backend.host_copy(v) for k, v in arrays.items()},
            }
        for key, saved in self.pending_callbacks.items():  # not yet claimed by a fit: kept
            callbacks.setdefault(key, saved)
        return {
            "epochs_done": self.epochs_done,
            "cursor": cursor,
            "callbacks": callbacks,
            "cursor_metrics": None if self.cursor is None else self.cursor.metric_state(),
        }

    def load_record(self, record: dict) -> None:
        self.epochs_done = V.check_int(record.get("epochs_done", 0), "epochs_done", minimum=0)
        cursor = record.get("cursor")
        if cursor:
            epoch, samples, loss_sum, correct, *data = cursor
            self.cursor = Cursor(
                int(epoch),
                int(samples),
                float(loss_sum),
                None if correct is None else int(correct),
                data[0] if data else "",
                record.get("cursor_metrics"),
            )
        else:
            self.cursor = None
        callbacks = record.get("callbacks") or {}
        if isinstance(callbacks, list):  # files of fastnn 0.1: by position
            callbacks = {f"#{i}": entry for i, entry in enumerate(callbacks)}
        self.pending_callbacks = dict(callbacks)
        self.callbacks = []

    def restore_callbacks(self, callbacks) -> None:
        """Give each callback the saved state of the same key (and class)."""
        for key, cb in zip(callback_keys(callbacks), callbacks):
            saved = self.pending_callbacks.pop(key, None)
            if saved is None or saved.get("class") != type(cb).__name__:
                continue
            cb.load_state_dict(saved["state"])
            if hasattr(cb, "load_arrays"):
                cb.load_arrays(saved.get("arrays", {}))


class _DeferredInterrupt:
    """Ctrl-C (SIGINT) during a step is held until the step commits, then raised as
    KeyboardInterrupt; outside steps it is raised at once. Only in the main thread (signal
    handlers can only be set there); elsewhere a no-op."""

    def __init__(self):
        self.pending = False
        self.critical = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(signal.SIGINT, self._handler)
            except ValueError:  # not the main interpreter thread
                self._previous = None
        return self

    def _handler(self, signum, frame):
        if self.critical:
            self.pending = True
        else:
            raise KeyboardInterrupt

    def check(self) -> None:
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


class BatchFeeder:
    """Copies training batches from host arrays into a step plan's device buffers, one batch ahead.

    Two slots, each a page-locked (pinned) host pair (x, y) and a device pair of the full batch
    size. While the GPU runs step i, batch i+1 is gathered on the host into the other slot and
    copied to its device pair on a non-blocking stream of its own. At step i+1 the default stream
    (where the kernels run) waits for that copy (an event) and moves the batch into the plan's
    buffers device-to-device, after step i's kernels that still read them. A slot is refilled only
    when its last copy has finished (the host waits on its event) and was moved on (the copy stream
    waits on an event), so the results are those of synchronous copies. ``prefetch = False``
    copies each batch when its step starts (no overlap).
    """

    prefetch = True

    def __init__(self, model, batch_size: int, X: np.ndarray, y: np.ndarray, n: int | None = None):
        trailing, y_dtype = model.target_shape()
        specs = (((batch_size, *model.input_shape), model.dtype), ((batch_size, *trailing), y_dtype))
        self.X, self.y, self.batch_size = X, y, batch_size
        self.n = X.shape[0] if n is None else n  # positions of the epoch's order that are trained on
        self.host = [[backend.pinned_empty(shape, dtype) for shape, dtype in specs] for _ in range(2)]
        self.device = [[backend.zeros(shape, dtype, model.device) for shape, dtype in specs] for _ in range(2)]
        self.copied = [backend.event(model.device) for _ in range(2)]
        self.moved = [backend.event(model.device) for _ in range(2)]
        self.stream = backend.stream(model.device, non_blocking=True)
        self.slot = 0
        self.pending = None  # ((lo, hi), slot) of the batch being copied

    def _start(self, lo: int, hi: int, order) -> None:
        """Gather rows [lo, hi) (positions in ``order`` when shuffling) into the next slot; copy them in."""
        k = self.slot = 1 - self.slot
        self.copied[k].synchronize()  # the slot's previous copy has read its host buffers
        hx, hy = (a[: hi - lo] for a in self.host[k])
        if order is None:
            np.copyto(hx, self.X[lo:hi])
            np.copyto(hy, self.y[lo:hi])
        else:
            np.take(self.X, order[lo:hi], axis=0, out=hx)
            np.take(self.y, order[lo:hi], axis=0, out=hy)
        self.moved[k].wait(self.stream)  # ... and its device buffers were moved into a plan
        for dst, src in zip(self.device[k], (hx, hy)):
            backend.copy_into(dst[: hi - lo], src, self.stream)
        self.copied[k].record(self.stream)
        self.pending = ((lo, hi), k)

    def load(self, plan, lo: int, hi: int, order) -> tuple:
        """Batch rows [lo, hi) in ``plan.x``/``plan.y`` (device); starts copying the epoch's next batch."""
        if self.pending is None or self.pending[0] != (lo, hi):
            self._start(lo, hi, order)
        k = self.pending[1]
        self.pending = None
        self.copied[k].wait(0)  # the default stream runs on after the copy only
        backend.copy_into(plan.x, self.device[k][0][: hi - lo])
        backend.copy_into(plan.y, self.device[k][1][: hi - lo])
        self.moved[k].record(0)
        if self.prefetch and hi < self.n:
            self._start(hi, min(self.n, hi + self.batch_size), order)
        return plan.x, plan.y

    def close(self) -> None:
        """Wait for a copy still in flight (its pinned host buffers must outlive it)."""
        self.stream.synchronize()


class ArrayBatches:
    """The batch source of in-memory arrays (X, y): batches of ``batch_size`` over each epoch's
    order (a counter-based permutation of the rows when shuffling), gathered straight into the
    step plan's buffers, or copied to a device one batch ahead (:class:`BatchFeeder`). Sources
    give ``epoch(epoch, start)``: (b, xb, yb) per batch b after the first ``start`` samples, and
    ``steps`` (batches per epoch, None: until the data ends), ``batch_size``, ``fingerprint``,
    ``weighted`` (targets carry a weight column), ``exhausted``, ``close()``."""

    exhausted = None

    def __init__(self, model, X: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool, weighted: bool):
        plan = streaming.batch_plan(model, X.shape[0], batch_size, shuffle)
        self.batch_size, self.steps, self.n_used = plan.batch_size, plan.batches, plan.samples
        self.model, self.X, self.y, self.weighted = model, X, y, weighted
        self.order = np.empty(X.shape[0], np.int64) if shuffle else None
        self.fingerprint = data_fingerprint(X, y)
        self.feeder = None
        self.shard = None  # under MPI (fastnn.distributed): (lo, hi) of the global batch -> this rank's rows

    @property
    def batch_sizes(self) -> list[int]:
        """The sizes of a full batch and of the epoch's last one."""
        return [self.batch_size, self.n_used - (self.steps - 1) * self.batch_size]

    def epoch(self, epoch: int, start: int):
        model, X, y, order, batch_size = self.model, self.X, self.y, self.order, self.batch_size
        if self.feeder is None and model.device != "cpu":  # (once the loss, hence the targets' shape, is set)
            self.feeder = BatchFeeder(model, batch_size, X, y, self.n_used)
        feeder = self.feeder
        if order is not None:  # counter-based: the order of epoch e depends only on (seed, e)
            permutation(X.shape[0], model.seed, _SHUFFLE_STREAM, epoch, order)
        for b in range(self.steps):
            lo, hi = max(b * batch_size, start), min(self.n_used, (b + 1) * batch_size)
            if lo >= hi:
                continue
            if self.shard is not None:  # this rank's rows of the global batch
                lo, hi = self.shard(lo, hi)
            plan = model.step_plan(hi - lo)
            if feeder is not None:  # copied into the plan's device buffers, the next batch's copy started
                yield (b, *feeder.load(plan, lo, hi, order))
            elif order is None:
                yield b, X[lo:hi], y[lo:hi]
            elif plan is not None:  # gather the batch straight into the plan's buffers
                yield b, np.take(X, order[lo:hi], axis=0, out=plan.x), np.take(y, order[lo:hi], axis=0, out=plan.y)
            else:
                yield b, X[order[lo:hi]], y[order[lo:hi]]

    def close(self) -> None:
        if self.feeder is not None:
            self.feeder.close()


def _open_arrays(
    model, X, y, *, batch_size, shuffle, steps_per_epoch, validation_split, validation_data, sample_weight, class_weight
):
    """(ArrayBatches, validation) of fit on arrays: checked, the validation split held out, the
    weights in the targets' last column (:class:`fastnn.losses.SampleWeighted`)."""
    streaming.check_array_fit(y, steps_per_epoch)
    X, y = model.check_data(X, y)
    sample_weight = options.check_sample_weight(sample_weight, X.shape[0])
    validation = streaming.validation(model, validation_data)
    if validation_split:
        (X, y, sample_weight), held_out = options.split_off(validation_split, X, y, sample_weight)
        validation = streaming.validation(model, held_out)
    weights = options.training_weights(model, y, sample_weight, class_weight)
    if weights is not None:
        y = losses_mod.weighted_targets(y, weights)
    return ArrayBatches(model, X, y, batch_size, shuffle, weights is not None), validation


def fit(
    model,
    X,
    y,
    *,
    loss=None,
    optimizer=None,
    epochs: int = 1,
    batch_size: int = 32,
    shuffle: bool = True,
    validation_data=None,
    callbacks=None,
    verbose: int = 1,
    steps_per_epoch=None,
    accumulate: int = 1,
    validation_split: float = 0.0,
    sample_weight=None,
    class_weight=None,
) -> History:
    """Train ``model`` on (X, y), a dataset or batches; see :meth:`fastnn.Sequential.fit` and this
    module's docstring."""
    if loss is not None or optimizer is not None or model.loss is None or model.optimizer is None:
        if (loss or model.loss) is None or (optimizer or model.optimizer) is None:
            model.require_compiled("fit")
        model.compile(loss if loss is not None else model.loss, optimizer if optimizer is not None else model.optimizer)
    epochs = V.check_int(epochs, "epochs", minimum=0)
    batch_size = V.check_int(batch_size, "batch_size", minimum=1)
    verbose = V.check_int(verbose, "verbose", minimum=0, maximum=2)
    user_callbacks = V.check_callbacks(callbacks, Callback)
    accumulate = check_accumulate(accumulate, model.device)
    validation_split = options.check_validation_split(validation_split, validation_data)
    open_source = streaming.open_stream if streaming.is_stream(X) else _open_arrays
    source, validation = open_source(
        model,
        X,
        y,
        batch_size=batch_size,
        shuffle=shuffle,
        steps_per_epoch=steps_per_epoch,
        validation_split=validation_split,
        validation_data=validation_data,
        sample_weight=sample_weight,
        class_weight=class_weight,
    )
    model.prepare("fit")
    state = model.state
    dist = distributed.session(model)  # None unless this process is one of several MPI ranks
    if dist is not None:
        _start_distributed(dist, model, source, shuffle, epochs, accumulate)
        validation = dist.sharded(validation)  # each rank evaluates its part; the sums are reduced
        user_callbacks, verbose = dist.callbacks(user_callbacks), verbose if dist.rank == 0 else 0
    if state.cursor is not None and state.cursor.data != source.fingerprint:
        state.cursor = None  # other data: a fresh epoch position
    history = History()
    cbs = CallbackList([history, *user_callbacks], model)
    state.callbacks = user_callbacks
    state.restore_callbacks(user_callbacks)
    progress = EpochProgress(verbose, epochs, source.steps)
    stepper = Stepper(model, accumulate)
    tracker = Tracker(model, model.metrics, weighted=source.weighted)
    base_loss = model.loss
    if source.weighted:  # trains on the weighted loss; the plain one is back after fit (finally, below)
        model.compile(losses_mod.SampleWeighted(base_loss), model.optimizer)
    was_training = model.training
    model.train()
    model.stop_training = False
    model._step_reduce = None if dist is None else dist.reduce
    try:
        with model.training_session("fit"):
            model.reserve(source.batch_size)
            cbs.on_train_begin({})
            with _DeferredInterrupt() as interrupt:
                _run_epochs(model, source, epochs, cbs, progress, interrupt, validation, stepper, tracker, dist)
    finally:
        if dist is not None:
            dist.close()
        stepper.abort()
        if model.loss is not base_loss:
            model.compile(base_loss, model.optimizer)
        progress.close()
        model.train(was_training)
        source.close()
    cbs.on_train_end({})
    return history


def _start_distributed(dist, model, source, shuffle: bool, epochs: int, accumulate: int) -> None:
    """Check what a data-parallel fit supports, agree with the other ranks, take rank 0's state,
    and let ``source`` hand out this rank's shard of every global batch."""
    refused = [
        what
        for what, given in (
            ("a dataset or batches (pass arrays)", not isinstance(source, ArrayBatches)),
            ("accumulate > 1", accumulate > 1),
        )
        if given
    ]
    if refused:
        raise distributed.DistributedError(
            f"data-parallel fit (fastnn.distributed) does not support {', '.join(refused)} "
            f"yet; leave it out, or run one process (FASTNN_DISTRIBUTED=0)"
        )
    needs_batch_over_one = any(getattr(layer, "needs_batch_over_one", False) for layer in walk_layers(model.layers))
    dist.start(
        source.X,
        source.y,
        source.batch_size,
        source.batch_sizes,
        shuffle,
        epochs,
        source.fingerprint,
        needs_batch_over_one,
    )
    source.shard = dist.shard
    dist.weighted_source = source if source.weighted else None  # shards weigh by their sum of weights


def _run_epochs(model, source, epochs, cbs, progress, interrupt, validation, stepper, tracker, dist=None):
    """The epochs of one fit(): a step per batch of ``source``, an optimizer update per group of
    ``accumulate`` batches; the position in the epoch (loss sum, correct count, metric state)
    commits after each update. Under MPI (``dist``) each rank steps on its shard of the global
    batch; the loss and the correct count are the global batch's."""
    state = model.state
    first_epoch = state.epochs_done
    track = bool(tracker.metrics)
    last_step = -1 if source.steps is None else source.steps - 1
    for epoch in range(first_epoch, first_epoch + epochs):
        cbs.on_epoch_begin(epoch, {})
        progress.epoch_begin(epoch - first_epoch)
        start = time.perf_counter()
        samples, total_loss, correct = 0, 0.0, 0
        tracker.reset()
        cursor = state.cursor
        if cursor is not None and cursor.epoch == epoch:  # resuming mid-epoch on the same data
            samples, total_loss, correct = cursor.samples, cursor.loss_sum, cursor.correct
            tracker.load_state_dict(cursor.metric_state())
        committed = True
        batches = source.epoch(epoch, samples)
        while True:
            interrupt.critical = True
            batch = next(batches, None)
            if batch is None:
                if not committed:  # the open group of an epoch of unknown length: its update now
                    committed = stepper.finish()
                    tracker.commit()
            else:
                b, xb, yb = batch
                cbs.on_batch_begin(b, {})
                batch_loss, out, committed = stepper.step(xb, yb, last=b == last_step)  # under MPI: global loss
                m = xb.shape[0] if dist is None else dist.batch_rows
                total_loss += batch_loss * m
                samples += m
                count = model.correct_count(out, yb) if dist is None else dist.correct
                correct = None if count is None or correct is None else correct + count
                if track:  # under MPI: the global batch's outputs and targets (metrics may not add up)
                    tracker.update(*((out, yb) if dist is None else dist.gathered(dist.batch_rows, out, yb)), committed)
            if committed:  # after the optimizer's update (every `accumulate` batches): the step commits here
                state.cursor = Cursor(
                    epoch, samples, total_loss, correct, source.fingerprint, tracker if track else None
                )
                interrupt.critical = False
                interrupt.check()
            if batch is None:
                break
            progress.batch_end(total_loss / samples)
            cbs.on_batch_end(b, {"loss": batch_loss, "batch": b, "size": m})
        interrupt.critical = False
        if source.exhausted is not None:
            warnings.warn(
                f"the training data ran out after {source.exhausted[1]} batches of epoch "
                f"{source.exhausted[0] + 1}; training stops (pass steps_per_epoch at most the batches "
                f"the data gives, or a callable returning a fresh iterator per epoch)",
                stacklevel=4,
            )
            model.stop_training = True
            if samples == 0:
                state.cursor = None
                break
        if samples == 0:
            raise ValueError(f"epoch {epoch + 1} got no batches from the training data")
        logs = {"loss": total_loss / samples}
        if correct is not None:
            logs["accuracy"] = correct / (samples * model.positions)
        logs.update(tracker.results())
        if validation is not None:
            logs.update({f"val_{k}": v for k, v in validation().items()})
        logs["lr"] = float(model.optimizer.lr)
        if dist is not None:  # rank 0's logs everywhere: callbacks decide alike
            logs = dist.agree(logs)
        state.epochs_done = epoch + 1
        state.cursor = None
        progress.epoch_end(epoch - first_epoch, logs, time.perf_counter() - start)
        cbs.on_epoch_end(epoch, logs)
        if dist is not None:  # rank 0's decision everywhere (a callback of rank 0 only may stop)
            dist.agree_stop()
        if model.stop_training:
            break
