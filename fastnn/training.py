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
boundary (after the batch's ``on_batch_end`` callbacks; at an epoch's end, after its ``on_epoch_end``),
so ``save`` afterwards, ``fnn.load`` and ``fit`` give the uninterrupted run bit for bit. A callback
that raises KeyboardInterrupt to stop (PyTorch Lightning's graceful stop) is treated alike: in
``on_batch_end`` or ``on_epoch_end`` the later callbacks still see that end, and the interrupt is
raised where a Ctrl-C would be (with ``accumulate=k``, after the open group's update); raised in
``on_batch_begin`` or ``on_epoch_begin`` it stops at once, before that batch or epoch runs.

The lane (:func:`_run_lane`): an epoch whose steps need no Python between them (no callback with a
batch hook, no progress bar, no metric, no ``accumulate``, on the CPU, one process, shuffled, begun
at its first batch, no last batch of one, every plan gathering its batch inside the compiled call)
runs its steps back to back, with only the loss and sample sums between them, and commits the
position once at its end; a Ctrl-C is held to the end of the step it comes in (then committed and
raised as above), and an exception inside a step commits the steps before it. Anything else takes
the step loop. The two give the same bits (tests/test_lifecycle.py, the scikit-learn estimators).

Resuming mid-epoch: ``fit`` continues a saved or interrupted epoch only on the *same data*: the
same shapes and dtypes of X and y, the same targets, and the same values in 256 evenly spaced rows
of X (a fingerprint kept with the position). ``fit`` on other data starts a fresh epoch position.
The position includes the epoch's metric state (:meth:`fastnn.metrics.Tracker.state_dict`), so a
resumed epoch logs the metrics of the uninterrupted one.

Stopping (Keras 3's rule): ``model.stop_training = True`` set in ``on_batch_end`` (or
``on_batch_begin``) ends the epoch after that batch's ``on_batch_end``; set in ``on_epoch_end``
(EarlyStopping and the other built-in callbacks), after that epoch. A stopped epoch is finished as
any: with ``accumulate=k`` an open group makes its update with the batches it holds (as the
shorter last group of an epoch does, so no gradient is left half-applied or dropped); the epoch's
logs (loss, accuracy and metrics over the batches trained), validation, ``on_epoch_end`` and its
History entry follow, then ``fit`` ends. The stopped epoch counts as done: ``epochs_done`` is its
number + 1 and the cursor is None, so a later ``fit`` starts the next epoch at its first batch (the
rest of the stopped epoch's rows are not trained on; a one-shot iterator goes on from the batch
after the last one trained). Under MPI the stop is rank 0's and every rank stops after the same
batch (:mod:`fastnn.distributed`).
"""

from __future__ import annotations

import hashlib
import signal
import threading
import time
import warnings
import weakref
from dataclasses import dataclass

import numpy as np

from . import _fit_options as options
from . import _fused, backend, distributed, streaming
from . import _validation as V
from . import losses as losses_mod
from ._progress import EpochProgress
from ._step_feed import DeviceStepFeed, StepFeed
from .accumulation import Stepper, check_accumulate
from .callbacks import Callback, CallbackList, History
from .kernels.rng import permutation
from .metrics import Tracker

_SHUFFLE_STREAM = 1 << 40  # RNG stream of the epoch order (parameters and dropout use others)
# {model: ((specs, device), (host, device, copied, moved, stream, done, outputs))}: the last
# BatchFeeder's pinned buffers, device slots, events, stream, which slots' copies are known done and
# its pinned output buffers, kept for the model's next fit of the same batch shape (pinned
# allocations are slow; a loop of short fits made them at every call)
_FEEDER_SLOTS: weakref.WeakKeyDictionary[object, tuple] = weakref.WeakKeyDictionary()
_FINGERPRINT_ROWS = 256


def data_fingerprint(X: np.ndarray, y: np.ndarray) -> str:
    """A short hash that tells whether a later fit() gets the same data.

    It covers the shapes, dtypes, all of y and 256 evenly spaced rows of X.

    Parameters
    ----------
    X : numpy.ndarray
        (n, ...) checked inputs.
    y : numpy.ndarray
        (n, ...) checked targets.

    Returns
    -------
    str
        32 hexadecimal digits.

    Examples
    --------
    >>> from fastnn.training import data_fingerprint
    >>> X, y = np.zeros((4, 2)), np.arange(4)
    >>> same = data_fingerprint(X, y) == data_fingerprint(X.copy(), y)
    >>> other = data_fingerprint(X, y[::-1].copy()) == data_fingerprint(X, y)
    >>> same, other
    (True, False)
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((X.shape, X.dtype.str, y.shape, y.dtype.str)).encode())
    rows = np.unique(np.linspace(0, X.shape[0] - 1, min(X.shape[0], _FINGERPRINT_ROWS)).astype(np.int64))
    h.update(np.ascontiguousarray(X[rows]).tobytes())
    h.update(np.ascontiguousarray(y).tobytes())
    return h.hexdigest()


@dataclass
class Cursor:
    """The position inside an unfinished epoch, saved with the model.

    Parameters
    ----------
    epoch : int
        The epoch (0-based).
    samples : int
        Samples of the epoch done.
    loss_sum : float
        Running sum of the batches' losses (times their sizes).
    correct : int or None
        Running count of samples classified right; None for regression losses.
    data : str
        The :func:`data_fingerprint` of the data being trained on.
    metrics : Tracker, dict or None, default None
        The metrics' state: the fit's live :class:`fastnn.metrics.Tracker`, read when the state
        is saved; a plain record after a load; None without metrics.
    batches : int or None, default None
        Batches of the epoch done (a one-shot stream of batches resumes its epoch by them);
        None when not known (a file saved before they were kept).
    valid : int or None, default None
        Positions of valid steps done, the accuracy's denominator of a model that leaves padded
        steps out (``model.masks_steps``); None otherwise.

    Examples
    --------
    >>> from fastnn.training import Cursor
    >>> Cursor(epoch=1, samples=64, loss_sum=12.5, correct=40, data="ab12").metric_state() is None
    True
    """

    epoch: int
    samples: int
    loss_sum: float
    correct: int | None
    data: str
    metrics: Tracker | dict | None = None
    batches: int | None = None
    valid: int | None = None

    def metric_state(self) -> dict | None:
        """The metrics' state as a plain record, or None.

        Returns
        -------
        dict or None
            :meth:`fastnn.metrics.Tracker.state_dict` of a live tracker, the loaded record as is, or
            None without metrics.

        Examples
        --------
        >>> from fastnn.training import Cursor
        >>> Cursor(0, 8, 1.0, None, "", metrics={"f1": [1, 2]}).metric_state()
        {'f1': [1, 2]}
        """
        if isinstance(self.metrics, Tracker):
            return self.metrics.state_dict() or None
        return self.metrics


def callback_keys(callbacks) -> list[str]:
    """A stable key per callback, to match saved callback states to the callbacks of a later fit.

    The key is ``cb.state_key`` when set, else the class name and its configuration (public
    attributes of simple types that are not part of its state); equal keys are numbered in
    order.

    Parameters
    ----------
    callbacks : list of Callback
        The callbacks of a fit.

    Returns
    -------
    list of str
        One key per callback, in order.

    Examples
    --------
    >>> import fastnn as fnn
    >>> from fastnn.training import callback_keys
    >>> keys = callback_keys([fnn.callbacks.History(), fnn.callbacks.History()])
    >>> keys
    ['History()', 'History()#1']
    """
    keys: list[str] = []
    seen: dict[str, int] = {}
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
    """What the fit loop keeps between calls (``model.state``), saved with the model.

    Epochs done, the cursor of an unfinished epoch, the callbacks of the last fit (their states
    are saved) and saved callback states waiting for the next fit (matched by
    :func:`callback_keys`).

    Examples
    --------
    >>> from fastnn.training import TrainingState
    >>> state = TrainingState()
    >>> state.epochs_done = 3
    >>> record = state.to_record()
    >>> record["epochs_done"], record["cursor"]
    (3, None)
    """

    def __init__(self):
        self.epochs_done = 0
        self.cursor: Cursor | None = None
        self.callbacks: list = []
        self.pending_callbacks: dict[str, dict] = {}

    def to_record(self) -> dict:
        """The state as a plain record: JSON-able values, callback arrays as host arrays.

        Returns
        -------
        dict
            ``{"epochs_done", "cursor", "callbacks", "cursor_metrics", "cursor_batches",
            "cursor_valid"}``; :meth:`load_record` reads it back.

        Examples
        --------
        >>> from fastnn.training import TrainingState
        >>> sorted(TrainingState().to_record())
        ['callbacks', 'cursor', 'cursor_batches', 'cursor_metrics', 'cursor_valid', 'epochs_done']
        """
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
            "cursor_batches": None if self.cursor is None else self.cursor.batches,
            "cursor_valid": None if self.cursor is None else self.cursor.valid,
        }

    def load_record(self, record: dict) -> None:
        """Take the state of a :meth:`to_record` record (a loaded model's).

        The record's callback states wait for the next fit's callbacks (:meth:`restore_callbacks`).

        Parameters
        ----------
        record : dict
            A :meth:`to_record` record (also files of fastnn 0.1, callbacks by position).

        Raises
        ------
        ValueError
            If ``epochs_done`` is not an int >= 0.

        Examples
        --------
        >>> from fastnn.training import TrainingState
        >>> state = TrainingState()
        >>> state.load_record({"epochs_done": 2, "cursor": [2, 16, 3.5, 10, "ab12"]})
        >>> state.epochs_done, state.cursor.samples
        (2, 16)
        """
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
                _batches_done(record.get("cursor_batches")),
                _batches_done(record.get("cursor_valid")),
            )
        else:
            self.cursor = None
        callbacks = record.get("callbacks") or {}
        if isinstance(callbacks, list):  # files of fastnn 0.1: by position
            callbacks = {f"#{i}": entry for i, entry in enumerate(callbacks)}
        self.pending_callbacks = dict(callbacks)
        self.callbacks = []

    def restore_callbacks(self, callbacks) -> None:
        """Give each callback the saved state of the same key (and class), once.

        Parameters
        ----------
        callbacks : list of Callback
            The callbacks of the fit starting now.

        Examples
        --------
        >>> import fastnn as fnn
        >>> from fastnn.training import TrainingState
        >>> state = TrainingState()
        >>> old = fnn.callbacks.History()
        >>> old.on_epoch_end(0, {"loss": 0.5})
        >>> saved = {"class": "History", "state": old.state_dict()}
        >>> state.load_record({"callbacks": {"History()": saved}})
        >>> history = fnn.callbacks.History()
        >>> state.restore_callbacks([history])
        >>> history["loss"], state.pending_callbacks
        ([0.5], {})
        """
        for key, cb in zip(callback_keys(callbacks), callbacks):
            saved = self.pending_callbacks.pop(key, None)
            if saved is None or saved.get("class") != type(cb).__name__:
                continue
            cb.load_state_dict(saved["state"])
            if hasattr(cb, "load_arrays"):
                cb.load_arrays(saved.get("arrays", {}))


def _batches_done(value) -> int | None:
    """The cursor's batch count of a record: an int >= 0, or None (not kept, or not valid)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        return None
    return int(value)


class _DeferredInterrupt:
    """Ctrl-C (SIGINT) during a step is held until the step commits, then raised as
    KeyboardInterrupt; outside steps it is raised at once. Only in the main thread (signal
    handlers can only be set there); elsewhere a no-op."""

    def __init__(self):
        self.pending = False
        self.critical = False
        self._previous = None
        self._held: KeyboardInterrupt | None = None  # a callback's own, raised as it was

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

    def hold(self, exc: KeyboardInterrupt) -> None:
        """Hold a KeyboardInterrupt a callback raised (to stop fit) until :meth:`check`, as a Ctrl-C."""
        self.pending = True
        self._held = self._held or exc

    def check(self) -> None:
        if self.pending:
            self.pending = False
            held, self._held = self._held, None
            raise held or KeyboardInterrupt()

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        if self.pending and exc[0] is None:  # a Ctrl-C held to the end of the loop is never lost
            self.check()
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
    copies each batch when its step starts (no overlap). The host waits for a slot's last copy
    only when it is not known done: a step that read its scalars after the batch's move (a wait on
    the default stream, which waited for the copy) says so with :meth:`settled`
    (``fastnn._step_feed.DeviceStepFeed``), so a steady fit's step has that read as its one wait.

    Parameters
    ----------
    model : Sequential
        A compiled model on a device.
    batch_size : int
        Rows of a full batch.
    X : numpy.ndarray
        (n, *input_shape) checked host inputs.
    y : numpy.ndarray
        (n, ...) checked host targets.
    n : int, optional
        Positions of the epoch's order that are trained on (default: all n rows).

    Examples
    --------
    >>> from fastnn.training import BatchFeeder
    >>> feeder = BatchFeeder(cuda_model, 32, X, y)  # doctest: +SKIP
    """

    prefetch = True

    def __init__(self, model, batch_size: int, X: np.ndarray, y: np.ndarray, n: int | None = None):
        trailing, y_dtype = model.target_shape()
        specs = (((batch_size, *model.input_shape), model.input_dtype), ((batch_size, *trailing), y_dtype))
        self.X, self.y, self.batch_size = X, y, batch_size
        self.n = X.shape[0] if n is None else n  # positions of the epoch's order that are trained on
        key = (tuple((shape, np.dtype(dtype).str) for shape, dtype in specs), model.device)
        kept: tuple | None = _FEEDER_SLOTS.get(model)
        if kept is None or kept[0] != key:  # made once per model and batch shape (see close)
            kept = _FEEDER_SLOTS[model] = (
                key,
                (
                    [[backend.pinned_empty(shape, dtype) for shape, dtype in specs] for _ in range(2)],
                    [[backend.zeros(shape, dtype, model.device) for shape, dtype in specs] for _ in range(2)],
                    [backend.event(model.device) for _ in range(2)],
                    [backend.event(model.device) for _ in range(2)],
                    backend.stream(model.device, non_blocking=True),
                    [True, True],  # no copy of a slot in flight (close() waits for those of a fit)
                    {},
                ),
            )
        self.host, self.device, self.copied, self.moved, self.stream, self.done, self.outputs = kept[1]
        self.slot = 0
        self.pending: tuple[tuple[int, int], int] | None = None  # ((lo, hi), slot) of the batch being copied
        self.waited: set[int] = set()  # slots the default stream waited for since the last settled()
        #: (inputs, targets): the page-locked host rows of the last loaded batch (until the next load)
        self.host_batch: tuple | None = None

    def _start(self, lo: int, hi: int, order) -> None:
        """Gather rows [lo, hi) (positions in ``order`` when shuffling) into the next slot; copy them in."""
        k = self.slot = 1 - self.slot
        if not self.done[k]:
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
        self.done[k] = False
        self.pending = ((lo, hi), k)

    def load(self, plan, lo: int, hi: int, order) -> tuple:
        """Batch rows [lo, hi) in ``plan.x``/``plan.y`` (device); starts copying the epoch's next batch.

        Parameters
        ----------
        plan : _StepPlan
            The step plan of batch size ``hi - lo``.
        lo, hi : int
            Positions in the epoch's order.
        order : numpy.ndarray or None
            int64 (n,) the epoch's order of rows when shuffling; None: rows in order.

        Returns
        -------
        tuple of device arrays
            ``(plan.x, plan.y)``, holding the batch.

        Examples
        --------
        >>> xb, yb = feeder.load(cuda_model.step_plan(32), 0, 32, None)  # doctest: +SKIP
        """
        if self.pending is None or self.pending[0] != (lo, hi):
            self._start(lo, hi, order)
        if self.pending is None:  # _start sets it
            raise RuntimeError("the batch feeder has no batch in flight: _start did not run")
        k = self.pending[1]
        self.pending = None
        self.copied[k].wait(0)  # the default stream runs on after the copy only
        self.waited.add(k)
        backend.copy_into(plan.x, self.device[k][0][: hi - lo])
        backend.copy_into(plan.y, self.device[k][1][: hi - lo])
        self.moved[k].record(0)
        self.host_batch = tuple(a[: hi - lo] for a in self.host[k])  # (rewritten by the load after next)
        if self.prefetch and hi < self.n:
            self._start(hi, min(self.n, hi + self.batch_size), order)
        return plan.x, plan.y

    def settled(self) -> None:
        """Declare the copies of the batches loaded so far done: the host waited on the default
        stream after their loads (a step read its scalars), and that stream had waited for them.

        Examples
        --------
        >>> feeder.settled()  # doctest: +SKIP
        """
        for k in self.waited:
            self.done[k] = True
        self.waited.clear()

    def pinned_output(self, out):
        """A page-locked host array of ``out``'s shape and dtype, kept with the slots (one per
        shape: a step's outputs are copied into it with its scalars).

        Parameters
        ----------
        out : device array
            A step plan's outputs.

        Returns
        -------
        numpy.ndarray
            The buffer (its contents those of the last copy into it).

        Examples
        --------
        >>> host = feeder.pinned_output(plan.out)  # doctest: +SKIP
        """
        key = (tuple(out.shape), np.dtype(out.dtype).str)
        buffer = self.outputs.get(key)
        if buffer is None:
            buffer = self.outputs[key] = backend.pinned_empty(key[0], out.dtype)
        return buffer

    def close(self) -> None:
        """Wait for a copy still in flight, if any is not known done (its pinned host buffers must
        outlive it, and the model's next fit reuses them).

        Examples
        --------
        >>> feeder.close()  # doctest: +SKIP
        """
        if not all(self.done):
            self.stream.synchronize()
            self.done[:] = [True, True]


class ArrayBatches:
    """The batch source of in-memory arrays (X, y) for the fit loop.

    Batches of ``batch_size`` over each epoch's order (a counter-based permutation of the rows
    when shuffling), gathered into the step plan's buffers by the step's own compiled call
    (``fastnn._step_feed``), or copied to a device one batch ahead (:class:`BatchFeeder`).
    Sources give ``epoch(epoch, start)``: (b, xb, yb) per batch b after the first ``start``
    samples, and ``steps`` (batches per epoch, None: until the data ends), ``batch_size``,
    ``fingerprint``, ``weighted`` (targets carry a weight column), ``exhausted``, ``committed()``
    (the batches given so far are trained on for good) and ``close()``.

    Parameters
    ----------
    model : Sequential
        A compiled, built model.
    X : numpy.ndarray
        (n, *input_shape) checked inputs.
    y : numpy.ndarray
        (n, ...) checked targets.
    batch_size : int
        Rows of a full batch.
    shuffle : bool
        Shuffle the rows each epoch.
    weighted : bool
        The targets carry a weight column (:func:`fastnn.losses.weighted_targets`).

    Examples
    --------
    >>> from fastnn.training import ArrayBatches
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
    >>> X, y = fnn.data.make_xor(8, seed=0)
    >>> _ = model.compile(loss="cross_entropy", optimizer="sgd")
    >>> X, y = model.check_data(X, y)
    >>> source = ArrayBatches(model, X, y, batch_size=3, shuffle=False, weighted=False)
    >>> source.steps, source.batch_sizes
    (3, [3, 2])
    """

    exhausted = None
    #: shuffled batches on the CPU gathered (and counted) inside the step's compiled call
    #: (``fastnn._step_feed``); False gathers them here with ``np.take`` (same results)
    gather_inside = True
    #: the fit reads each step's outputs on the host (its metrics): on a device they are copied out
    #: with the step's scalars (``fastnn._step_feed.DeviceStepFeed``)
    outputs_read = False

    def __init__(self, model, X: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool, weighted: bool):
        plan = streaming.batch_plan(model, X.shape[0], batch_size, shuffle)
        # every batch of the epoch is offered: whether a last batch of one trains is decided right
        # before its step (streaming.skips_last_one); ``planned``: the samples the epoch's plan trains on
        self.batch_size, self.n_used, self.planned = plan.batch_size, X.shape[0], plan.samples
        self.steps, self.shuffle = -(-self.n_used // self.batch_size), shuffle
        self.model, self.X, self.y, self.weighted = model, X, y, weighted
        self.order = np.empty(X.shape[0], np.int64) if shuffle else None
        self.fingerprint = data_fingerprint(X, y)
        self.feeder: BatchFeeder | None = None
        # CPU: each batch gathered (or read in place) and counted inside its step call; a device: its
        # count (and outputs) read with the step's scalars
        self.feed: StepFeed | DeviceStepFeed | None = None
        self.shard = None  # under MPI (fastnn.distributed): (lo, hi) of the global batch -> this rank's rows
        self.tracker: Tracker | None = None  # the fit's metrics, added inside the step calls (accumulate_inside)
        self._lane: tuple | None = None  # (its steps, batches) of the last epoch's lane (ArrayBatches.lane)

    @property
    def trained_steps(self) -> int:
        """The steps of an epoch as its plan expects them: ``steps``, less a last batch of one that
        a BatchNorm cannot train on (decided again at that batch: a callback may freeze it).

        Returns
        -------
        int
            The steps the epoch's plan trains.

        Examples
        --------
        >>> from fastnn.training import ArrayBatches
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4), fnn.BatchNorm1d(4), fnn.Dense(4, 2)], seed=0)
        >>> X, y = fnn.data.make_xor(9, seed=0)
        >>> _ = model.compile(loss="cross_entropy", optimizer="sgd")
        >>> import warnings
        >>> with warnings.catch_warnings(record=True):  # (the note: the last batch of one is skipped)
        ...     source = ArrayBatches(model, *model.check_data(X, y), 4, shuffle=False, weighted=False)
        >>> source.steps, source.trained_steps
        (3, 2)
        """
        return self.steps - (self.planned < self.n_used)

    @property
    def batch_sizes(self) -> list[int]:
        """The sizes of a full batch and of the epoch's last one that trains with the layers'
        trainability now (a last batch of one that a BatchNorm cannot train on is skipped).

        Returns
        -------
        list of int
            ``[batch_size, size of the last batch trained]``.

        Examples
        --------
        >>> from fastnn.training import ArrayBatches
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> X, y = fnn.data.make_xor(8, seed=0)
        >>> _ = model.compile(loss="cross_entropy", optimizer="sgd")
        >>> X, y = model.check_data(X, y)
        >>> ArrayBatches(model, X, y, 4, shuffle=False, weighted=False).batch_sizes
        [4, 4]
        """
        last = self.n_used - (self.steps - 1) * self.batch_size
        if last == 1 and self.steps > 1 and streaming.needs_two(self.model) is not None:
            last = self.batch_size  # (skipped: the batch before it, a full one, is the last trained)
        return [self.batch_size, last]

    def epoch(self, epoch: int, start: int, batches: int | None = 0, begin=None):
        """The batches of epoch ``epoch`` after its first ``start`` samples.

        Parameters
        ----------
        epoch : int
            The epoch (0-based): with the model's seed it fixes the order when shuffling.
        start : int
            Samples of the epoch already trained on (a resumed epoch).
        batches : int or None, default 0
            Batches of the epoch already trained on (unused: ``start`` places the epoch's rows).
        begin : callable, optional
            ``begin(b)`` runs before batch ``b`` is read (fit's ``on_batch_begin``: a callback may
            freeze or unfreeze layers there). An epoch's last batch of one sample that a layer
            cannot train on is skipped (:func:`fastnn.streaming.skips_last_one`): before ``begin``
            (no call for it) and, when ``begin`` unfroze such a layer, after it.

        Yields
        ------
        tuple of (int, numpy.ndarray, numpy.ndarray)
            ``(b, xb, yb)``: the batch's index and its rows (views, or the step plan's buffers,
            valid until the next batch; shuffled on the CPU, filled by the step's call itself).

        Examples
        --------
        >>> from fastnn.training import ArrayBatches
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> X, y = fnn.data.make_xor(8, seed=0)
        >>> _ = model.compile(loss="cross_entropy", optimizer="sgd")
        >>> X, y = model.check_data(X, y)
        >>> source = ArrayBatches(model, X, y, 4, shuffle=False, weighted=False)
        >>> [(b, xb.shape) for b, xb, yb in source.epoch(0, start=4)]
        [(1, (4, 2))]
        """
        model, X, y, order, batch_size = self.model, self.X, self.y, self.order, self.batch_size
        if self.feeder is None and model.device != "cpu":  # (once the loss, hence the targets' shape, is set)
            self.feeder = BatchFeeder(model, batch_size, X, y, self.n_used)
        feeder = self.feeder
        if order is not None:  # counter-based: the order of epoch e depends only on (seed, e)
            permutation(X.shape[0], model.seed, _SHUFFLE_STREAM, epoch, order)
        n_used = self.n_used
        for b in range(self.steps):
            lo, hi = b * batch_size, (b + 1) * batch_size
            if lo < start:  # (max and min without their calls: a tiny network's step is a few us)
                lo = start
            if hi > n_used:
                hi = n_used
            if lo >= hi:
                continue
            last = b == self.steps - 1
            one = last and hi - lo == 1  # (the only batch streaming.skips_last_one may skip: asked for it only)
            if one and streaming.skips_last_one(self, epoch, b, hi - lo, last):
                continue  # (a batch skipped as planned: no on_batch_begin, no on_batch_end)
            if begin is not None:  # before the step plan is taken: a hook that freezes a layer records new plans
                begin(b)
                if one and streaming.skips_last_one(self, epoch, b, hi - lo, last):
                    continue  # (the hook unfroze a BatchNorm that cannot train on it: warned)
            if self.shard is not None:  # this rank's rows of the global batch
                lo, hi = self.shard(lo, hi)
            plan = model.step_plan(hi - lo)
            if feeder is not None:  # copied into the plan's device buffers, the next batch's copy started
                xb, yb = feeder.load(plan, lo, hi, order)
                if self.shard is None:  # its count (and outputs) read with the step's scalars
                    device_feed = self.feed
                    if not isinstance(device_feed, DeviceStepFeed):
                        device_feed = self.feed = DeviceStepFeed(model, feeder, outputs=self.outputs_read)
                    device_feed.arm(plan)
                yield b, xb, yb
            elif order is None:
                if plan is not None and self.gather_inside and self.shard is None:  # counted inside the call
                    feed = self.feed
                    if not isinstance(feed, StepFeed):
                        feed = self.feed = StepFeed(model, X, y, None, count=True, tracker=self.tracker)
                    feed.arm_count(plan)
                yield b, X[lo:hi], y[lo:hi]
            elif plan is not None and not self.gather_inside:  # gathered here into the plan's buffers
                yield b, np.take(X, order[lo:hi], axis=0, out=plan.x), np.take(y, order[lo:hi], axis=0, out=plan.y)
            elif plan is not None:  # the plan's buffers, filled by its step call (fastnn._step_feed)
                feed = self.feed
                if not isinstance(feed, StepFeed):
                    feed = self.feed = StepFeed(model, X, y, order, count=self.shard is None, tracker=self.tracker)
                feed.arm(plan, lo, hi)
                yield b, plan.x, plan.y
            else:
                yield b, X[order[lo:hi]], y[order[lo:hi]]

    def lane(self, epoch: int) -> list | None:
        """Epoch ``epoch``'s batches for fit's lane (:func:`_run_lane`), its order shuffled: per batch
        ``(m, plan, runner, args)``, ``runner(*args)`` the step of the rows the batch of
        :meth:`epoch` would gather (``StepFeed.lane_runner``); None (nothing done) when a batch needs
        the step loop: not shuffled, on a device, under MPI, metrics accumulated, a batch of one
        (a BatchNorm may skip it), a plan not in :meth:`fastnn.Sequential.lane_ready`'s terms.

        Parameters
        ----------
        epoch : int
            The epoch (0-based), begun from its start.

        Returns
        -------
        list or None
            The batches, or None.
        """
        model, order, batch_size, n_used = self.model, self.order, self.batch_size, self.n_used
        if (
            order is None
            or not self.gather_inside
            or self.shard is not None
            or self.tracker is not None
            or self.feeder is not None
            or model.device != "cpu"
        ):
            return None
        last = n_used - (self.steps - 1) * batch_size
        if last < 2:  # (a last batch of one: streaming.skips_last_one decides at its step)
            return None
        feed = self.feed
        if not isinstance(feed, StepFeed):
            feed = self.feed = StepFeed(model, self.X, self.y, order, count=True, tracker=None)
        steps = []
        for m in (batch_size, last) if last != batch_size else (batch_size,):
            plan = model.step_plan(m)
            if not model.lane_ready(plan):
                return None
            ran = feed.lane_runner(plan)
            if ran is None:
                return None
            steps.append((plan, *ran))
        permutation(self.X.shape[0], model.seed, _SHUFFLE_STREAM, epoch, order)
        cached = self._lane
        if cached is not None and len(cached[0]) == len(steps):  # the batches of the last epoch's lane
            if all(a is c for s, k in zip(steps, cached[0]) for a, c in zip(s, k)):
                return cached[1]
        x_all, y_all = feed.x_all, feed.y_all
        batches = []
        for b in range(self.steps):
            m = batch_size if b < self.steps - 1 else last
            plan, runner, extra = steps[0] if m == batch_size else steps[1]
            batches.append((m, plan, runner, (x_all, y_all, order, b * batch_size, b * batch_size + m, *extra)))
        self._lane = (steps, batches)
        return batches

    def replan(self, epoch: int) -> None:
        """The plan of epoch ``epoch`` for the layers' trainability at its start (``fit`` calls it
        after ``on_epoch_begin``): a BatchNorm a callback unfroze cannot train on a last batch of one,
        which the plan then expects to skip, as in a fit where it was trainable from the start, and
        says so once (:func:`fastnn.streaming.replan`). The batches stay: whether the last batch of
        one trains is decided right before its step (after its ``on_batch_begin``).

        Parameters
        ----------
        epoch : int
            The epoch about to start (0-based; named in the warning).

        Examples
        --------
        >>> from fastnn.training import ArrayBatches
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4), fnn.BatchNorm1d(4), fnn.Dense(4, 2)], seed=0)
        >>> X, y = fnn.data.make_xor(9, seed=0)
        >>> _ = model.compile(loss="cross_entropy", optimizer="sgd").freeze(1)
        >>> X, y = model.check_data(X, y)
        >>> source = ArrayBatches(model, X, y, batch_size=4, shuffle=False, weighted=False)
        >>> source.batch_sizes, source.trained_steps  # the frozen BatchNorm takes a last batch of one
        ([4, 1], 3)
        >>> _ = model.unfreeze()
        >>> import warnings
        >>> with warnings.catch_warnings(record=True):
        ...     source.replan(1)
        >>> source.batch_sizes, source.trained_steps
        ([4, 4], 2)
        """
        if self.batch_size > 1 and self.n_used % self.batch_size != 1:  # no last batch of one: every
            self.planned = self.n_used  # sample trains, whatever the layers' trainability (as replan says)
            return
        self.planned = streaming.replan(
            self.model, self.n_used, self.batch_size, self.shuffle, self.planned, epoch
        ).samples

    def committed(self) -> None:
        """The batches given so far were trained on for good (the step committed): nothing to do
        for arrays, whose rows are placed by the position in the epoch.

        Examples
        --------
        >>> from fastnn.training import ArrayBatches
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> X, y = fnn.data.make_xor(8, seed=0)
        >>> _ = model.compile(loss="cross_entropy", optimizer="sgd")
        >>> X, y = model.check_data(X, y)
        >>> ArrayBatches(model, X, y, 4, shuffle=False, weighted=False).committed()
        """

    def close(self) -> None:
        """Finish the source: wait for a device copy still in flight.

        Examples
        --------
        >>> from fastnn.training import ArrayBatches
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
        >>> X, y = fnn.data.make_xor(8, seed=0)
        >>> _ = model.compile(loss="cross_entropy", optimizer="sgd")
        >>> X, y = model.check_data(X, y)
        >>> ArrayBatches(model, X, y, 4, shuffle=True, weighted=False).close()
        """
        if self.feeder is not None:
            self.feeder.close()
        if self.feed is not None:
            self.feed.disarm()
            self.feed = None


def _open_arrays(
    model, X, y, *, batch_size, shuffle, steps_per_epoch, validation_split, validation_data, sample_weight, class_weight
):
    """(ArrayBatches, validation) of fit on arrays: checked, the validation split held out, the
    weights in the targets' last column (:class:`fastnn.losses.SampleWeighted`)."""
    streaming.check_array_fit(y, steps_per_epoch)
    X, y = model.check_data(X, y)
    sample_weight = options.check_sample_weight(sample_weight, X.shape[0], model=model)
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
    y=None,
    *,
    loss=None,
    optimizer=None,
    epochs: int = 1,
    batch_size: int | None = 32,
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
    """Train ``model`` on (X, y), a dataset or batches: the fit loop behind
    :meth:`fastnn.Sequential.fit`.

    See :meth:`fastnn.Sequential.fit` for the arguments and this module's docstring for
    interrupts (Ctrl-C stops at the next step boundary) and resuming mid-epoch.

    Parameters
    ----------
    model : Sequential
        The model; compiled, or given ``loss`` and ``optimizer``.
    X : array_like, ArrayDataset or iterable of batches
        The inputs, as :meth:`fastnn.Sequential.fit` takes them.
    y : array_like or None
        The targets (None for a dataset or batches).
    loss : str or Loss, optional
        Compiles with it first.
    optimizer : str or Optimizer, optional
        Compiles with it first.
    epochs : int, default 1
        Passes over the data, >= 0.
    batch_size : int or None, default 32
        Samples per step, >= 1; None: 32 (Keras' default). Batches given as an iterable or a
        generator are used as they come.
    shuffle : bool, default True
        Shuffle each epoch (a seeded, counter-based order).
    validation_data : tuple, optional
        ``(X_val, y_val)`` or ``(X_val, y_val, w_val)``.
    callbacks : list of Callback, optional
        :mod:`fastnn.callbacks` objects.
    verbose : {0, 1, 2}, default 1
        0 silent, 1 a progress bar per epoch, 2 one line per epoch.
    steps_per_epoch : int, optional
        Batches per epoch of a stream of batches.
    accumulate : int, default 1
        One update per ``accumulate`` batches.
    validation_split : float, default 0.0
        The fraction of (X, y) held out, in [0, 1).
    sample_weight : array_like, optional
        (n,) weights of the samples' loss; for a per-step output (n, time, ..., k) also (n, time),
        one per step (Keras' temporal weights), or one per position.
    class_weight : dict, optional
        ``{class: weight}``; per step label for a per-step output.

    Returns
    -------
    History
        The per-epoch logs.

    Raises
    ------
    RuntimeError
        If no loss or optimizer is set, or another thread is training the model.
    ValueError
        For invalid data or arguments.
    TypeError
        For an argument of the wrong type (``shuffle`` not a bool ...).
    FloatingPointError
        If training diverged (the failed step is not applied).

    Examples
    --------
    >>> from fastnn.training import fit
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
    >>> X, y = fnn.data.make_xor(8, seed=0)
    >>> _ = model.compile(loss="cross_entropy", optimizer="sgd")
    >>> history = fit(model, X, y, epochs=2, batch_size=4, verbose=0)
    >>> len(history["loss"]), model.epochs_done
    (2, 2)
    """
    if loss is not None or optimizer is not None or model.loss is None or model.optimizer is None:
        if (loss or model.loss) is None or (optimizer or model.optimizer) is None:
            model.require_compiled("fit")
        model.compile(loss if loss is not None else model.loss, optimizer if optimizer is not None else model.optimizer)
    epochs = V.check_int(epochs, "epochs", minimum=0)
    batch_size = 32 if batch_size is None else V.check_int(batch_size, "batch_size", minimum=1)
    verbose = V.check_int(verbose, "verbose", minimum=0, maximum=2)
    shuffle = _check_shuffle(shuffle)
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
    if dist is None and getattr(validation, "arrays", None) is not None:  # its kernels compile with the step's
        model.plan_ahead(len(validation.arrays[0]))
    if dist is not None:
        _start_distributed(dist, model, source, shuffle, epochs, accumulate)
        validation = dist.sharded(validation)  # each rank evaluates its part; the sums are reduced
        user_callbacks, verbose = dist.callbacks(user_callbacks), verbose if dist.rank == 0 else 0
    if state.cursor is not None and state.cursor.data != source.fingerprint:
        state.cursor = None  # other data: a fresh epoch position
    history = model.history = History()  # Keras' model.history: this fit's, even if it is interrupted
    cbs = CallbackList([history, *user_callbacks], model)
    state.callbacks = user_callbacks
    state.restore_callbacks(user_callbacks)
    progress = EpochProgress(verbose, epochs, source.steps)
    stepper = Stepper(model, accumulate)
    ignoring = losses_mod.ignore_index_of(model.loss) is not None
    if accumulate > 1 and isinstance(source, ArrayBatches) and (source.weighted or model.masks_steps or ignoring):
        source.gather_inside = False  # each batch's weights (valid steps) are read before its step (Stepper.step)
    tracker = Tracker(model, model.metrics, weighted=source.weighted)
    if isinstance(source, ArrayBatches):  # (on a device the step copies its outputs out with its scalars)
        source.outputs_read = bool(tracker.metrics)
    if tracker.metrics and dist is None and accumulate == 1 and isinstance(source, ArrayBatches):
        # every step commits: the step calls add the batches to the metrics' arrays (fastnn._step_feed)
        if tracker.accumulate_inside(source.X.shape[0] * model.positions):  # (n_used may grow: ArrayBatches.replan)
            source.tracker = tracker
    base_loss = model.loss
    if source.weighted:  # trains on the weighted loss; the plain one is back after fit (finally, below)
        model.compile(losses_mod.SampleWeighted(base_loss), model.optimizer)
    was_training = model.training
    model.train()
    model.stop_training = False
    model.set_gradient_reducer(None if dist is None else dist.reduce)
    try:
        with model.training_session("fit"):
            model.reserve(source.batch_size)
            cbs.on_train_begin({})
            planned = None if source.steps is None else epochs * source.steps
            with _DeferredInterrupt() as interrupt, _fused.expected_runs(planned) as budget:
                _run_epochs(model, source, epochs, cbs, progress, interrupt, validation, stepper, tracker, dist, budget)
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


def _check_shuffle(shuffle) -> bool:
    """``shuffle`` as a bool; a TypeError for anything else (Keras' "batch" gets a hint)."""
    if isinstance(shuffle, str) and shuffle == "batch":
        raise TypeError(
            "shuffle='batch' (Keras' shuffling in batch-sized chunks) is not supported: pass shuffle=True "
            "(every epoch a new order of all rows), or a fastnn.data.ArrayDataset, which shuffles by block"
        )
    return V.check_bool(shuffle, "shuffle")


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
    needs_batch_over_one = streaming.needs_two(model) is not None  # (a BatchNorm seeing one row per sample)
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
    dist.masked_source = source if model.masks_steps else None  # ... or by their valid steps' positions
    ignoring = losses_mod.ignore_index_of(model.loss) is not None
    dist.ignoring_source = source if ignoring else None  # ... or targets not ignored (either weighed alike)


def _run_lane(model, source, lane, interrupt, budget, state, epoch) -> tuple:
    """An epoch's steps in fit's lane: ``lane`` (:meth:`ArrayBatches.lane`) run step after step
    (:meth:`fastnn.Sequential.lane_step`), with only the loop's sums between them: nothing needs
    Python there (no batch hook, no progress bar, no metric, the count inside the calls). A Ctrl-C
    (held: the lane is one critical section) ends the lane after its step. Returns ``(samples, loss
    sum, batches done, correct count)``, the sums as the step loop adds them; on an exception the
    position after the steps done is committed first (``state.cursor``), as the step loop's."""
    samples, total_loss, done = 0, 0.0, 0
    feed = source.feed
    totals = feed.totals
    before = int(totals[0])
    interrupt.critical = True
    try:
        for m, plan, runner, args in lane:
            before = int(totals[0])
            batch_loss = model.lane_step(plan, runner, args)
            done += 1
            if budget is not None:
                budget.done += 1
            total_loss += batch_loss * m
            samples += m
            if interrupt.pending:
                break
    except BaseException:
        totals[0] = before  # (the failed step's count is not the epoch's)
        count = feed.take_count()
        state.cursor = Cursor(epoch, samples, total_loss, count, source.fingerprint, None, done, None)
        raise
    return samples, total_loss, done, feed.take_count()


def _run_epochs(model, source, epochs, cbs, progress, interrupt, validation, stepper, tracker, dist=None, budget=None):
    """The epochs of one fit(): a step per batch of ``source``, an optimizer update per group of
    ``accumulate`` batches; the position in the epoch (loss sum, correct count, metric state)
    commits after each update. ``stop_training`` set by a batch hook ends the epoch after that batch
    (the module docstring). Under MPI (``dist``) each rank steps on its shard of the global batch;
    the loss and the correct count are the global batch's, and a stop set in a batch hook is rank
    0's, agreed after the batch when a callback has an on_batch_begin hook (which then does not run
    again), else carried by the next step's reduction (which is then undone): Session.batch_ended."""
    state = model.state
    first_epoch = state.epochs_done
    track = bool(tracker.metrics)
    masked = model.masks_steps  # padded steps left out: accuracy over the valid steps' positions
    ignoring = losses_mod.ignore_index_of(model.loss) is not None  # ... and ignored targets too
    counting = masked or ignoring  # accuracy over the counted positions (`valid`), not samples * positions
    plain = stepper.k == 1  # every batch one run_step (Stepper.step's first branch, without its call)
    if dist is not None:  # rank 0's decision of on_train_begin everywhere
        dist.agree_stop()
    if model.stop_training:  # on_train_begin ended the run (EarlyStopping's stop of a fit that raised)
        return
    # an epoch may run in the lane (_run_lane) when nothing needs Python between its steps
    lane_open = (
        plain
        and dist is None
        and not track
        and not counting
        and isinstance(source, ArrayBatches)
        and not getattr(cbs, "batch_hooks", True)
    )
    for epoch in range(first_epoch, first_epoch + epochs):
        cbs.on_epoch_begin(epoch, {})
        source.replan(epoch)  # a BatchNorm unfrozen by a callback skips a last batch of one from now on
        if dist is not None:
            dist.check_batches(source.batch_size, source.batch_sizes, streaming.needs_two(model) is not None)
        # the steps the epoch's plan trains: an accumulated group ends on the last of them (a last
        # batch of one that a callback's freeze lets train after it is a group of its own)
        trained_steps = getattr(source, "trained_steps", source.steps)
        last_step = -1 if trained_steps is None else trained_steps - 1
        progress.batches = trained_steps
        start = time.perf_counter()
        samples, total_loss, correct, batches_done, valid = 0, 0.0, 0, 0, 0
        tracker.reset()
        cursor = state.cursor
        if cursor is not None and cursor.epoch == epoch:  # resuming mid-epoch on the same data
            samples, total_loss, correct = cursor.samples, cursor.loss_sum, cursor.correct
            batches_done, valid = cursor.batches, cursor.valid or 0
            if counting and cursor.valid is None:  # a record of before valid steps were counted:
                correct = None  # its count covered padded steps too, so this epoch logs no accuracy
            tracker.load_state_dict(cursor.metric_state())
        progress.epoch_begin(epoch - first_epoch, batches_done)  # (a resumed epoch's bar: from its batches done)
        committed, stopping = True, False
        if dist is not None:  # (a stop of the last epoch's last batch was decided at its end)
            dist.stop_after_batch = False
        # on_batch_begin runs inside the source, before it reads the batch into a step plan and
        # decides whether an epoch's last batch of one trains (with the trainability the step uses)
        lane = None
        if lane_open and samples == 0 and batches_done == 0 and progress.bar is None:
            lane = source.lane(epoch)
        if lane is not None:  # every step in a row, no Python between them but their bookkeeping
            samples, total_loss, batches_done, count = _run_lane(model, source, lane, interrupt, budget, state, epoch)
            correct = None if count is None else correct + count
            state.cursor = Cursor(epoch, samples, total_loss, correct, source.fingerprint, None, batches_done, None)
            interrupt.critical = False
            if interrupt.pending:  # a Ctrl-C during the lane: acted on after the step it came in
                interrupt.check()
            batches = iter(())
        else:
            batches = source.epoch(epoch, samples, batches_done, begin=lambda b: cbs.on_batch_begin(b, {}))
        while True:
            interrupt.critical = True
            batch = None if stopping else next(batches, None)
            if batch is None:
                if not committed:  # the open group of an epoch of unknown length, or of a stop: its update now
                    committed = stepper.finish()
                    tracker.commit()
            else:
                b, xb, yb = batch  # (its on_batch_begin ran: begin, above)
                try:
                    if plain:
                        batch_loss, out = model.run_step(xb, yb)
                        committed = True
                    else:
                        batch_loss, out, committed = stepper.step(xb, yb, last=last_step >= 0 and b >= last_step)
                except distributed.StopRequested:  # rank 0 stopped after the previous batch: this one is undone
                    model.stop_training = stopping = True
                    continue
                batches_done = b + 1
                if budget is not None:  # the fused step's tier-up weighs the steps still to come
                    budget.done += 1
                m = xb.shape[0] if dist is None else dist.batch_rows
                total_loss += batch_loss * m
                samples += m
                lengths = None
                feed = getattr(source, "feed", None)  # the feed counted inside the step call
                if masked:  # the batch's (under MPI: the global batch's) valid steps, once (accumulate's too)
                    if dist is not None:
                        lengths = dist.batch_lengths
                    elif stepper.lengths is not None:
                        lengths = stepper.lengths
                    else:  # (after the step: a fed batch's xb is filled by the step's call; a device's on the host)
                        lengths = model.output_lengths(xb if feed is None else feed.host_batch(xb, yb)[0])
                if dist is not None and counting:  # the global batch's counted positions (Session.shard)
                    valid += dist.batch_valid
                elif ignoring:  # the batch's targets not ignored (of valid steps), on the host
                    host_y = backend.to_host(yb if feed is None else feed.host_batch(xb, yb)[1])
                    kept = losses_mod.counted_rows(
                        model.loss,
                        host_y,
                        weighted=source.weighted,  # (a weighted fit's targets: label, weight)
                        valid=model.valid_rows(backend.to_host(lengths)) if masked else None,
                    )
                    valid += int(np.count_nonzero(kept))
                elif masked:
                    valid += model.valid_count(lengths)
                if dist is not None:
                    count = dist.correct
                elif feed is not None:
                    count = feed.correct_count(out, yb, lengths)
                else:  # fit's own arrays: the count without the public call's checks
                    count = model.correct_count(out, yb, lengths, checked=False)
                correct = None if count is None or correct is None else correct + count
                if track:  # under MPI: the global batch's outputs and targets (metrics may not add up)
                    inside = feed is not None and feed.metrics_added()  # the step's call added the batch
                    if dist is not None:
                        rows = dist.gathered(dist.batch_rows, out, yb)
                    elif feed is not None:  # a device's outputs copied out with the step's scalars
                        rows = (feed.host_output(out), feed.host_batch(xb, yb)[1])
                    else:
                        rows = (out, yb)
                    tracker.update(*rows, committed, inside=inside, lengths=lengths)
            if committed:  # after the optimizer's update (every `accumulate` batches): the step commits here
                state.cursor = Cursor(
                    epoch,
                    samples,
                    total_loss,
                    correct,
                    source.fingerprint,
                    tracker if track else None,
                    batches_done,
                    valid if counting else None,
                )
                source.committed()
            if batch is None:
                break
            progress.batch_end(total_loss / samples)
            try:
                cbs.on_batch_end(b, {"loss": batch_loss, "batch": b, "size": m})
            except KeyboardInterrupt as exc:  # a callback's stop (every callback saw the end): held as a Ctrl-C
                interrupt.hold(exc)
            if committed:  # Ctrl-C is acted on once every callback saw the batch's end (none misses it on resume)
                interrupt.critical = False
                if interrupt.pending:
                    interrupt.check()
            if dist is not None:  # rank 0's decision: agreed now, or with the next step's reduction
                stopping = dist.batch_ended()  # (now when some rank runs on_batch_begin hooks)
            elif model.stop_training:  # Keras: the epoch ends after this batch (an open group updates first)
                stopping = True
        # the epoch's end, up to its last on_epoch_end, is one critical section: a Ctrl-C in it is
        # acted on after every callback saw the end of the epoch that now counts as done
        interrupt.critical = True
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
            counted = valid if counting else samples * model.positions
            logs["accuracy"] = correct / counted if counted else 0.0  # (every target ignored: Keras' 0)
        logs.update(tracker.results())
        if validation is not None:
            logs.update({f"val_{k}": v for k, v in validation().items()})
        logs["lr"] = float(model.optimizer.lr)
        if dist is not None:  # rank 0's logs everywhere: callbacks decide alike
            logs = dist.agree(logs)
        state.epochs_done = epoch + 1
        state.cursor = None
        # (a stopped epoch's bar ends at the batches run; one that ran all its batches, full)
        complete = not stopping and source.exhausted is None
        progress.epoch_end(epoch - first_epoch, logs, time.perf_counter() - start, complete=complete)
        try:
            cbs.on_epoch_end(epoch, logs)
        except KeyboardInterrupt as exc:  # a callback's stop, after every callback saw the end: as a Ctrl-C
            interrupt.hold(exc)
        if dist is not None:  # rank 0's decision everywhere (a callback of rank 0 only may stop)
            dist.agree_stop()
        interrupt.critical = False
        interrupt.check()
        if model.stop_training:
            break
