"""The fit loop, its training state (epochs done, position in the epoch, callback states) and the
batch feeder. Uses only the model's engine API (step plans, ``_step``, ``validate``).

Life cycle of a step: the batch is copied in, the step plan runs (forward, loss, backward,
gradient norm), the optimizer updates, and only then does the position in the epoch advance (the
step *commits*). Any exception or KeyboardInterrupt before the commit leaves the model exactly as
after the previous step (``Sequential.run_step`` restores running statistics and dropout counters;
the optimizer has not run). Ctrl-C during ``fit`` in the main thread is deferred to the next step
boundary, so ``save`` afterwards, ``fnn.load`` and ``fit`` give the uninterrupted run bit for bit.

Resuming mid-epoch: ``fit`` continues a saved or interrupted epoch only on the *same data*: the
same shapes and dtypes of X and y, the same targets, and the same values in 256 evenly spaced rows
of X (a fingerprint kept with the position). ``fit`` on other data starts a fresh epoch position.
"""
from __future__ import annotations

import hashlib
import signal
import threading
import time
import warnings
from dataclasses import dataclass

import numpy as np

from . import _validation as V
from . import backend, distributed
from ._progress import EpochProgress
from .callbacks import Callback, CallbackList, History
from .kernels.rng import permutation
from .layers.base import walk_layers

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
    """Position inside an unfinished epoch: samples done, running loss sum and correct count."""

    epoch: int
    samples: int
    loss_sum: float
    correct: int | None
    data: str


def callback_keys(callbacks) -> list[str]:
    """A stable key per callback to match saved states: ``cb.state_key`` when set, else the class
    name and its configuration (public attributes of simple types that are not part of its
    state); equal keys are numbered in order."""
    keys, seen = [], {}
    for cb in callbacks:
        key = getattr(cb, "state_key", None)
        if key is None:
            state = set(cb.state_dict())
            config = sorted((k, v) for k, v in vars(cb).items()
                            if not k.startswith("_") and k not in state and k != "model"
                            and isinstance(v, (str, int, float, bool, type(None))))
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
        cursor = None if self.cursor is None else [self.cursor.epoch, self.cursor.samples, self.cursor.loss_sum,
                                                   self.cursor.correct, self.cursor.data]
        callbacks = {}
        for key, cb in zip(callback_keys(self.callbacks), self.callbacks):
            arrays = cb.arrays() if hasattr(cb, "arrays") else {}
            callbacks[key] = {"class": type(cb).__name__, "state": cb.state_dict(),
                              "arrays": {k: backend.host_copy(v) for k, v in arrays.items()}}
        for key, saved in self.pending_callbacks.items():  # not yet claimed by a fit: kept
            callbacks.setdefault(key, saved)
        return {"epochs_done": self.epochs_done, "cursor": cursor, "callbacks": callbacks}

    def load_record(self, record: dict) -> None:
        self.epochs_done = V.check_int(record.get("epochs_done", 0), "epochs_done", minimum=0)
        cursor = record.get("cursor")
        if cursor:
            epoch, samples, loss_sum, correct, *data = cursor
            self.cursor = Cursor(int(epoch), int(samples), float(loss_sum), None if correct is None else int(correct),
                                 data[0] if data else "")
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
        hx, hy = (a[:hi - lo] for a in self.host[k])
        if order is None:
            np.copyto(hx, self.X[lo:hi])
            np.copyto(hy, self.y[lo:hi])
        else:
            np.take(self.X, order[lo:hi], axis=0, out=hx)
            np.take(self.y, order[lo:hi], axis=0, out=hy)
        self.moved[k].wait(self.stream)  # ... and its device buffers were moved into a plan
        for dst, src in zip(self.device[k], (hx, hy)):
            backend.copy_into(dst[:hi - lo], src, self.stream)
        self.copied[k].record(self.stream)
        self.pending = ((lo, hi), k)

    def load(self, plan, lo: int, hi: int, order) -> tuple:
        """Batch rows [lo, hi) in ``plan.x``/``plan.y`` (device); starts copying the epoch's next batch."""
        if self.pending is None or self.pending[0] != (lo, hi):
            self._start(lo, hi, order)
        k = self.pending[1]
        self.pending = None
        self.copied[k].wait(0)  # the default stream runs on after the copy only
        backend.copy_into(plan.x, self.device[k][0][:hi - lo])
        backend.copy_into(plan.y, self.device[k][1][:hi - lo])
        self.moved[k].record(0)
        if self.prefetch and hi < self.n:
            self._start(hi, min(self.n, hi + self.batch_size), order)
        return plan.x, plan.y

    def close(self) -> None:
        """Wait for a copy still in flight (its pinned host buffers must outlive it)."""
        self.stream.synchronize()


def fit(model, X, y, *, loss=None, optimizer=None, epochs: int = 1, batch_size: int = 32, shuffle: bool = True,
        validation_data=None, callbacks=None, verbose: int = 1) -> History:
    """Train ``model`` on (X, y); see :meth:`fastnn.Sequential.fit` and this module's docstring."""
    if loss is not None or optimizer is not None or model.loss is None or model.optimizer is None:
        if (loss or model.loss) is None or (optimizer or model.optimizer) is None:
            model.require_compiled("fit")
        model.compile(loss if loss is not None else model.loss,
                      optimizer if optimizer is not None else model.optimizer)
    epochs = V.check_int(epochs, "epochs", minimum=0)
    batch_size = V.check_int(batch_size, "batch_size", minimum=1)
    verbose = V.check_int(verbose, "verbose", minimum=0, maximum=2)
    user_callbacks = V.check_callbacks(callbacks, Callback)
    X, y = model.check_data(X, y)
    model.prepare("fit")
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a tuple (X_val, y_val)")
        X_val, y_val = model.check_data(*validation_data, argument="X_val")
    n = X.shape[0]
    norm = next((layer for layer in walk_layers(model.layers) if getattr(layer, "needs_batch_over_one", False)), None)
    batch_plan = V.check_batch_plan(n, batch_size, needs_batch_over_one=norm is not None, shuffle=shuffle,
                                    layer_name=repr(norm))
    if batch_plan.note:
        warnings.warn(batch_plan.note, stacklevel=3)
    batch_size, batches, n_used = batch_plan.batch_size, batch_plan.batches, batch_plan.samples
    state = model.state
    fingerprint = data_fingerprint(X, y)
    dist = distributed.session(model)  # None unless this process is one of several MPI ranks
    if dist is not None:
        dist.start(X, y, batch_size, [batch_size, n_used - (batches - 1) * batch_size], shuffle, epochs, fingerprint,
                   norm is not None)
        user_callbacks, verbose = dist.callbacks(user_callbacks), verbose if dist.rank == 0 else 0
    if state.cursor is not None and state.cursor.data != fingerprint:
        state.cursor = None  # other data: a fresh epoch position
    history = History()
    cbs = CallbackList([history, *user_callbacks], model)
    state.callbacks = user_callbacks
    state.restore_callbacks(user_callbacks)
    progress = EpochProgress(verbose, epochs, batches)
    order = np.empty(n, np.int64) if shuffle else None
    feeder = None if model.device == "cpu" else BatchFeeder(model, batch_size, X, y, n_used)
    was_training = model.training
    model.train()
    model.stop_training = False
    model._step_reduce = None if dist is None else dist.reduce
    try:
        with model.training_session("fit"):
            model.reserve(batch_size)
            cbs.on_train_begin({})
            with _DeferredInterrupt() as interrupt:
                _run_epochs(model, X, y, n_used, epochs, batch_size, batches, order, feeder, cbs, progress, interrupt,
                            fingerprint, None if validation_data is None else (X_val, y_val), dist)
    finally:
        if dist is not None:
            dist.close()
        progress.close()
        model.train(was_training)
        if feeder is not None:
            feeder.close()
    cbs.on_train_end({})
    return history


def _run_epochs(model, X, y, n_used, epochs, batch_size, batches, order, feeder, cbs, progress, interrupt,
                fingerprint, validation, dist=None):
    """The epochs of one fit(): batches of ``batch_size`` over the first ``n_used`` positions of
    each epoch's order (``n_used`` < len(X) only when batch norm drops a last batch of one)."""
    state = model.state
    n = X.shape[0]
    first_epoch = state.epochs_done
    for epoch in range(first_epoch, first_epoch + epochs):
        cbs.on_epoch_begin(epoch, {})
        progress.epoch_begin(epoch - first_epoch)
        start = time.perf_counter()
        if order is not None:  # counter-based: the order of epoch e depends only on (seed, e)
            permutation(n, model.seed, _SHUFFLE_STREAM, epoch, order)
        total_loss, correct, start_sample = 0.0, 0, 0
        cursor = state.cursor
        if cursor is not None and cursor.epoch == epoch:  # resuming mid-epoch on the same data
            start_sample, total_loss, correct = cursor.samples, cursor.loss_sum, cursor.correct
        for b in range(batches):
            lo, hi = max(b * batch_size, start_sample), min(n_used, (b + 1) * batch_size)
            if lo >= hi:
                continue
            cbs.on_batch_begin(b, {})
            interrupt.critical = True
            a, z = (lo, hi) if dist is None else dist.shard(lo, hi)  # this rank's rows of the batch
            plan = model.step_plan(z - a)
            if feeder is not None:  # copied into the plan's device buffers, the next batch's copy started
                xb, yb = feeder.load(plan, a, z, order)
            elif order is None:
                xb, yb = X[a:z], y[a:z]
            elif plan is not None:  # gather the batch straight into the plan's buffers
                xb = np.take(X, order[a:z], axis=0, out=plan.x)
                yb = np.take(y, order[a:z], axis=0, out=plan.y)
            else:
                xb, yb = X[order[a:z]], y[order[a:z]]
            batch_loss, out = model.run_step(xb, yb)  # under MPI: the loss of the global batch
            total_loss += batch_loss * (hi - lo)
            count = model.correct_count(out, yb if plan is None else plan.y) if dist is None else dist.correct
            correct = None if count is None or correct is None else correct + count
            state.cursor = Cursor(epoch, hi, total_loss, correct, fingerprint)  # the step commits here
            interrupt.critical = False
            interrupt.check()
            progress.batch_end(total_loss / hi)
            cbs.on_batch_end(b, {"loss": batch_loss, "batch": b, "size": hi - lo})
        logs = {"loss": total_loss / n_used}
        if correct is not None:
            logs["accuracy"] = correct / (n_used * model.positions)
        if validation is not None:
            logs.update({f"val_{k}": v for k, v in model.validate(*validation).items()})
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
