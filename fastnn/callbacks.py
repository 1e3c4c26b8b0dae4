"""Callbacks for :meth:`fastnn.Sequential.fit` and the History it returns."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from . import backend


class Callback:
    """Base class: override any hook. ``self.model`` is set before ``on_train_begin``.

    ``logs`` is a dict of metrics: per batch ``{"loss", "batch", "size"}``; per epoch the
    epoch's ``loss``, ``accuracy`` (classification), ``val_*`` and ``lr``. Set
    ``self.model.stop_training = True`` to stop training: in ``on_batch_end`` (or
    ``on_batch_begin``) the epoch ends after that batch, as in Keras 3 (its logs over the batches
    trained, validation and ``on_epoch_end`` still run, and it counts as done); in ``on_epoch_end``
    after that epoch (``fastnn.training``'s docstring says what a later fit continues with).
    Raising KeyboardInterrupt in ``on_batch_end`` or ``on_epoch_end`` interrupts ``fit`` as a Ctrl-C
    does: the later callbacks still see that end, the interrupt comes at the next step boundary, and
    a later ``fit`` resumes as if uninterrupted.

    Examples
    --------
    >>> import fastnn as fnn
    >>> class PrintLoss(fnn.callbacks.Callback):
    ...     def on_epoch_end(self, epoch, logs=None):
    ...         print(epoch, logs["loss"] > 0)
    >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0)
    >>> X, y = np.ones((8, 2), np.float32), np.ones((8, 1), np.float32)
    >>> _ = model.fit(X, y, loss="mse", optimizer="sgd", epochs=2, verbose=0, callbacks=[PrintLoss()])
    0 True
    1 True
    """

    model = None
    #: True for a callback that saves the model's whole state (ModelCheckpoint): each of its hooks
    #: runs after the other callbacks' hook, so a file holds what they updated in that epoch too
    runs_last: bool = False

    def set_model(self, model) -> None:
        """Attach the model being trained (``fit`` calls it before ``on_train_begin``).

        Parameters
        ----------
        model : Sequential
            The model; ``self.model`` from now on.

        Examples
        --------
        >>> import fastnn as fnn
        >>> class Spy(fnn.callbacks.Callback):
        ...     def set_model(self, model):
        ...         print(type(model).__name__, model.built)
        >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0)
        >>> X, y = np.ones((8, 2), np.float32), np.ones((8, 1), np.float32)
        >>> _ = model.fit(X, y, loss="mse", optimizer="sgd", epochs=1, verbose=0, callbacks=[Spy()])
        Sequential True
        """
        self.model = model

    def on_train_begin(self, logs: dict | None = None) -> None:
        """Called once when ``fit`` starts (or resumes).

        Parameters
        ----------
        logs : dict, optional
            Empty at this point.

        Examples
        --------
        >>> import fastnn as fnn
        >>> class Spy(fnn.callbacks.Callback):
        ...     def on_train_begin(self, logs=None):
        ...         print("begin", self.model.epochs_done, logs)
        >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0)
        >>> X, y = np.ones((8, 2), np.float32), np.ones((8, 1), np.float32)
        >>> _ = model.fit(X, y, loss="mse", optimizer="sgd", epochs=2, verbose=0, callbacks=[Spy()])
        begin 0 {}
        """

    def on_train_end(self, logs: dict | None = None) -> None:
        """Called once when ``fit`` ends, stopped early or not.

        Parameters
        ----------
        logs : dict, optional
            Empty (fit passes ``{}``; each epoch's metrics came to :meth:`on_epoch_end`).

        Examples
        --------
        >>> import fastnn as fnn
        >>> class Spy(fnn.callbacks.Callback):
        ...     def on_train_end(self, logs=None):
        ...         print("end", self.model.epochs_done, logs)
        >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0)
        >>> X, y = np.ones((8, 2), np.float32), np.ones((8, 1), np.float32)
        >>> _ = model.fit(X, y, loss="mse", optimizer="sgd", epochs=2, verbose=0, callbacks=[Spy()])
        end 2 {}
        """

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        """Called at the start of every epoch.

        Parameters
        ----------
        epoch : int
            The epoch index, from 0 (counting the epochs of earlier fits of the model).
        logs : dict, optional
            Empty at this point.

        Examples
        --------
        >>> import fastnn as fnn
        >>> class Spy(fnn.callbacks.Callback):
        ...     def on_epoch_begin(self, epoch, logs=None):
        ...         print("epoch", epoch)
        >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0)
        >>> X, y = np.ones((8, 2), np.float32), np.ones((8, 1), np.float32)
        >>> _ = model.fit(X, y, loss="mse", optimizer="sgd", epochs=2, verbose=0, callbacks=[Spy()])
        epoch 0
        epoch 1
        """

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Called at the end of every epoch, after validation.

        Parameters
        ----------
        epoch : int
            The epoch index, from 0.
        logs : dict, optional
            The epoch's ``loss``, ``accuracy`` (classification), ``val_*`` and ``lr``.

        Examples
        --------
        >>> import fastnn as fnn
        >>> class Spy(fnn.callbacks.Callback):
        ...     def on_epoch_end(self, epoch, logs=None):
        ...         print(epoch, round(logs["lr"], 4), logs["loss"] > 0)
        >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0)
        >>> X, y = np.ones((8, 2), np.float32), np.ones((8, 1), np.float32)
        >>> _ = model.fit(X, y, loss="mse", optimizer="sgd", epochs=2, verbose=0, callbacks=[Spy()])
        0 0.01 True
        1 0.01 True
        """

    def on_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        """Called before every training step, before the batch is read.

        Freezing or unfreezing layers here applies to this batch's step. An epoch's last batch of
        one sample that a BatchNorm cannot train on (one value per channel) is skipped without this
        call; if this call unfreezes such a BatchNorm for that batch, the batch is skipped after it
        (no step, no ``on_batch_end``; fit warns why).

        Parameters
        ----------
        batch : int
            The batch index within the epoch.
        logs : dict, optional
            Empty at this point.

        Examples
        --------
        >>> import fastnn as fnn
        >>> class Spy(fnn.callbacks.Callback):
        ...     def on_batch_begin(self, batch, logs=None):
        ...         print("batch", batch)
        >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0)
        >>> X, y = np.ones((8, 2), np.float32), np.ones((8, 1), np.float32)
        >>> _ = model.fit(X, y, loss="mse", optimizer="sgd", epochs=1, batch_size=4, verbose=0, callbacks=[Spy()])
        batch 0
        batch 1
        """

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Called after every training step.

        Parameters
        ----------
        batch : int
            The batch index within the epoch.
        logs : dict, optional
            ``{"loss", "batch", "size"}`` of the step.

        Examples
        --------
        >>> import fastnn as fnn
        >>> class Spy(fnn.callbacks.Callback):
        ...     def on_batch_end(self, batch, logs=None):
        ...         print(logs["batch"], logs["size"], logs["loss"] > 0)
        >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0)
        >>> X, y = np.ones((8, 2), np.float32), np.ones((8, 1), np.float32)
        >>> _ = model.fit(X, y, loss="mse", optimizer="sgd", epochs=1, batch_size=4, verbose=0, callbacks=[Spy()])
        0 4 True
        1 4 True
        """

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        """Keras's name of :meth:`on_batch_begin`: override either one (as in Keras, this one calls
        ``on_batch_begin`` unless overridden).

        Parameters
        ----------
        batch : int
            The batch index within the epoch.
        logs : dict, optional
            Empty at this point.

        Examples
        --------
        >>> import fastnn as fnn
        >>> class Spy(fnn.callbacks.Callback):
        ...     def on_train_batch_begin(self, batch, logs=None):
        ...         print("batch", batch)
        >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0)
        >>> X, y = np.ones((8, 2), np.float32), np.ones((8, 1), np.float32)
        >>> _ = model.fit(X, y, loss="mse", optimizer="sgd", epochs=1, batch_size=4, verbose=0, callbacks=[Spy()])
        batch 0
        batch 1
        """
        self.on_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        """Keras's name of :meth:`on_batch_end`: override either one (as in Keras, this one calls
        ``on_batch_end`` unless overridden).

        Parameters
        ----------
        batch : int
            The batch index within the epoch.
        logs : dict, optional
            ``{"loss", "batch", "size"}`` of the step.

        Examples
        --------
        >>> import fastnn as fnn
        >>> class Spy(fnn.callbacks.Callback):
        ...     def on_train_batch_end(self, batch, logs=None):
        ...         print(logs["batch"], logs["size"])
        >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0)
        >>> X, y = np.ones((8, 2), np.float32), np.ones((8, 1), np.float32)
        >>> _ = model.fit(X, y, loss="mse", optimizer="sgd", epochs=1, batch_size=4, verbose=0, callbacks=[Spy()])
        0 4
        1 4
        """
        self.on_batch_end(batch, logs)

    def state_dict(self) -> dict:
        """The state needed to resume training exactly (saved with the model).

        Returns
        -------
        dict
            JSON-able counters and best values; empty for stateless callbacks.

        Examples
        --------
        >>> import fastnn as fnn
        >>> class Counter(fnn.callbacks.Callback):
        ...     def __init__(self):
        ...         self.epochs = 0
        ...     def on_epoch_end(self, epoch, logs=None):
        ...         self.epochs += 1
        ...     def state_dict(self):
        ...         return {"epochs": self.epochs}
        >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0)
        >>> X, y = np.ones((8, 2), np.float32), np.ones((8, 1), np.float32)
        >>> counter = Counter()
        >>> _ = model.fit(X, y, loss="mse", optimizer="sgd", epochs=2, verbose=0, callbacks=[counter])
        >>> counter.state_dict()
        {'epochs': 2}
        """
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (when a saved model resumes training).

        Parameters
        ----------
        state : dict
            A :meth:`state_dict`.

        Examples
        --------
        >>> import fastnn as fnn
        >>> class Counter(fnn.callbacks.Callback):
        ...     def __init__(self):
        ...         self.epochs = 0
        ...     def state_dict(self):
        ...         return {"epochs": self.epochs}
        ...     def load_state_dict(self, state):
        ...         self.epochs = state["epochs"]
        >>> resumed = Counter()
        >>> resumed.load_state_dict({"epochs": 3})  # what a saved run's Counter returned
        >>> resumed.epochs
        3
        """


class History(Callback):
    """Per-epoch metrics: ``history.history["loss"][e]``, ``["val_loss"]``, ``["lr"]`` ...

    ``history.epoch`` lists the epoch indices recorded; ``fit`` returns its History.

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0)
    >>> X, y = np.ones((8, 2), np.float32), np.ones((8, 1), np.float32)
    >>> history = model.fit(X, y, loss="mse", optimizer="sgd", epochs=3, verbose=0)
    >>> history.epoch, len(history["loss"]), "lr" in history
    ([0, 1, 2], 3, True)
    """

    def __init__(self):
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    def __contains__(self, key: str) -> bool:
        return key in self.history

    def best(self, monitor: str = "val_loss", mode: str = "min") -> float:
        """The best value of a metric over the epochs (NaNs skipped).

        Parameters
        ----------
        monitor : str, default "val_loss"
            A recorded metric.
        mode : {"min", "max"}, default "min"
            Whether lower or higher is better.

        Returns
        -------
        float
            The best value.

        Raises
        ------
        KeyError
            When the metric was not recorded.

        Examples
        --------
        >>> import fastnn as fnn
        >>> history = fnn.callbacks.History()
        >>> for epoch, loss in enumerate([0.9, 0.4, float("nan"), 0.6]):
        ...     history.on_epoch_end(epoch, {"loss": loss})
        >>> history.best("loss"), history.best("loss", mode="max")
        (0.4, 0.9)
        """
        values = [v for v in self.history[monitor] if not math.isnan(v)]
        return min(values) if mode == "min" else max(values)

    def __repr__(self) -> str:
        keys = ", ".join(self.history)
        return f"History(epochs={len(self.epoch)}, metrics=[{keys}])"

    def state_dict(self):
        return {"history": self.history, "epoch": self.epoch}

    def load_state_dict(self, state):
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.epoch = list(state["epoch"])


class CallbackList:
    """Calls each hook on every callback that overrides it, in order (hooks nobody overrides
    cost nothing per batch); ``fit`` builds one.

    Parameters
    ----------
    callbacks : iterable of Callback
        The callbacks, in calling order.
    model : Sequential
        The model they watch (given to each by :meth:`Callback.set_model`).

    Raises
    ------
    TypeError
        When an item is not a Callback.

    Examples
    --------
    >>> import fastnn as fnn
    >>> history = fnn.callbacks.History()
    >>> calls = fnn.callbacks.CallbackList([history], model=None)
    >>> calls.on_epoch_end(0, {"loss": 0.5}); history["loss"]
    [0.5]
    """

    HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_batch_begin", "on_batch_end")
    # the hooks, set per instance (each calls the callbacks that override it)
    on_train_begin: Callable[..., None]
    on_train_end: Callable[..., None]
    on_epoch_begin: Callable[..., None]
    on_epoch_end: Callable[..., None]
    on_batch_begin: Callable[..., None]
    on_batch_end: Callable[..., None]

    #: some callback has a batch hook (``on_batch_begin``/``on_batch_end`` or Keras' names): fit
    #: runs Python between its steps (without one, an epoch may run in fit's lane)
    batch_hooks = False

    def __init__(self, callbacks, model):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(
                    f"callbacks must be fastnn.callbacks.Callback instances, got "
                    f"{type(cb).__name__}; subclass Callback and override its hooks"
                )
            cb.set_model(model)
        # callbacks that save the model's state run each hook after the others, so what they save
        # holds the others' updates of that epoch whatever the list's order (Callback.runs_last)
        ordered = [cb for cb in self.callbacks if not cb.runs_last] + [cb for cb in self.callbacks if cb.runs_last]
        for hook in self.HOOKS:
            keras = _KERAS_NAMES.get(hook)  # a batch hook: Keras's name calls fastnn's (override either)
            name = keras or hook
            methods = [getattr(cb, name) for cb in ordered if _overrides(cb, hook) or (keras and _overrides(cb, keras))]
            setattr(self, hook, self._caller(methods, finish=hook.endswith("_end")))
            if keras is not None and methods:
                self.batch_hooks = True
        for cb in self.callbacks:
            _warn_never_called(cb)

    @staticmethod
    def _caller(methods, finish: bool):
        """One hook's call. An end hook (``finish``) that one callback stops with KeyboardInterrupt
        still reaches the later callbacks, then raises it: none misses the end that happened (its
        state stays that of the uninterrupted run, as for a Ctrl-C: fastnn.training). In a begin
        hook it propagates at once: the batch or epoch has not run and begins again on resume."""
        if not methods:
            return lambda *args: None
        if not finish:

            def call(*args):
                for method in methods:
                    method(*args)

            return call

        def call_all(*args):
            stop = None
            for method in methods:
                try:
                    method(*args)
                except KeyboardInterrupt as exc:
                    stop = stop or exc  # (the first one is raised, with its traceback)
            if stop is not None:
                raise stop

        return call_all


_KERAS_NAMES = {"on_batch_begin": "on_train_batch_begin", "on_batch_end": "on_train_batch_end"}

# Keras hooks fastnn never calls: evaluate and predict run no callbacks, and fit's validation
# reaches the callbacks as the val_ entries of on_epoch_end's logs
_NEVER_CALLED = tuple(
    f"on_{stage}_{when}" for stage in ("test", "predict") for when in ("begin", "end", "batch_begin", "batch_end")
)


def _overrides(callback: Callback, hook: str) -> bool:
    return getattr(type(callback), hook) is not getattr(Callback, hook)


def _warn_never_called(callback: Callback) -> None:
    """Warn about Keras hooks a callback defines that fastnn never calls (they would be ignored)."""
    import warnings

    defined = [name for name in _NEVER_CALLED if callable(getattr(callback, name, None))]
    if defined:
        warnings.warn(
            f"{type(callback).__name__} defines {', '.join(defined)}, which fastnn never calls: evaluate and "
            f"predict run no callbacks, and fit's validation results reach on_epoch_end's logs as val_* "
            f"entries; read them there",
            UserWarning,
            stacklevel=5,  # (the caller of fit: CallbackList <- training.fit <- Sequential.fit)
        )


def _monitor_mode(monitor: str, mode: str) -> str:
    from ._validation import check_choice

    check_choice(mode, ("auto", "min", "max"), "mode")
    if mode != "auto":
        return mode
    return "max" if any(word in monitor for word in ("acc", "auc", "precision", "recall", "f1", "r2")) else "min"


class _Monitor(Callback):
    """Shared logic of callbacks that watch one metric: improvement test with min_delta and
    a clear error when the monitored metric does not exist."""

    def __init__(self, monitor: str, mode: str, min_delta: float, owner: str | None = None):
        from ._validation import check_float

        self._owner = owner  # the callback named in errors when this watches for another (ModelCheckpoint)
        if not isinstance(monitor, str) or not monitor:
            raise TypeError(f"monitor must be a metric name such as 'val_loss', got {monitor!r}")
        self.monitor = monitor
        self.mode = _monitor_mode(monitor, mode)
        self.min_delta = abs(check_float(min_delta, "min_delta"))
        self.best = math.inf if self.mode == "min" else -math.inf

    def _current(self, logs: dict) -> float:
        from ._validation import suggest

        if self.monitor not in (logs or {}):
            available = sorted(k for k, v in (logs or {}).items() if isinstance(v, float))
            hint = " (validation metrics need fit(validation_data=...))" if self.monitor.startswith("val_") else ""
            raise ValueError(
                f"{self._owner or type(self).__name__}: monitor {self.monitor!r} is not a metric of this run"
                f"{hint}.{suggest(self.monitor, available)} Available: {', '.join(available)}"
            )
        return float(logs[self.monitor])

    def _improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def state_dict(self):
        return {"best": self.best}

    def load_state_dict(self, state):
        self.best = float(state["best"])


class EarlyStopping(_Monitor):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    Parameters
    ----------
    monitor : str, default "val_loss"
        The metric watched (``"loss"``, ``"val_accuracy"`` ...).
    mode : {"auto", "min", "max"}, default "auto"
        Whether lower or higher is better; "auto": higher for accuracy-like names.
    min_delta : float, default 0.0
        The smallest change that counts as an improvement.
    patience : int, default 0
        Epochs without improvement before stopping.
    restore_best_weights : bool, default False
        Put back the weights of the best epoch at the end of training, whether it stopped
        early or ran all its epochs: every parameter and layer buffer
        (:meth:`fastnn.Sequential.state_arrays`: BatchNorm's running statistics too, as Keras
        restores its moving statistics), so the model evaluates as it did then.
    baseline : float, optional
        A value the metric must beat to count as improving at all. As in Keras, an epoch is
        restored whatever its value relative to the baseline: while none beats it,
        ``restore_best_weights`` keeps the best of those seen.
    start_from_epoch : int, default 0
        Epochs to wait before watching (warm-up).

    Raises
    ------
    ValueError
        At the first epoch's end, when ``monitor`` is not a metric of the run (the message
        lists those that are).

    Notes
    -----
    The decision to stop outlives a fit that raises after it (a later callback of the epoch fails)
    and is saved by a checkpoint of that epoch: the next fit with this callback (or its saved state)
    trains no epoch and ends the run, restoring the best weights if asked; a fit after that trains on.

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0)
    >>> X, y = np.ones((8, 2), np.float32), np.ones((8, 1), np.float32)
    >>> stop = fnn.callbacks.EarlyStopping("loss", patience=0, min_delta=10.0)
    >>> history = model.fit(X, y, loss="mse", optimizer="sgd", epochs=5, verbose=0, callbacks=[stop])
    >>> stop.stopped_epoch, len(history.epoch)    # epoch 1 does not improve by 10: stop
    (1, 2)
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        *,
        patience: int = 0,
        min_delta: float = 0.0,
        mode: str = "auto",
        restore_best_weights: bool = False,
        baseline: float | None = None,
        start_from_epoch: int = 0,
    ):
        from ._validation import check_int

        super().__init__(monitor, mode, min_delta)
        self.patience = check_int(patience, "patience", minimum=0)
        self.start_from_epoch = check_int(start_from_epoch, "start_from_epoch", minimum=0)
        self.restore_best_weights = bool(restore_best_weights)
        self.baseline = baseline
        if baseline is not None:
            self.best = float(baseline)
        self.wait = 0
        self.stopped_epoch: int | None = None
        self.best_epoch: int | None = None
        # True from the stop decision to the end of its fit: a fit that raised in between (a later
        # callback of the epoch failed) or a checkpoint written in between ends at once when resumed
        self._stop_pending = False
        # the best value of the epochs whose weights are kept while none beats the baseline
        self._best_below_baseline = math.inf if self.mode == "min" else -math.inf
        # (private: None before a best epoch, a public None would change the callback's key of
        # fastnn.training.callback_keys, by which a resumed fit finds its saved state)
        self._best_weights: dict | np.ndarray | None = None

    @property
    def best_weights(self) -> dict | np.ndarray | None:
        """The best epoch's parameters and buffers by name (``model.state_arrays()``, host copies).

        None before a best epoch was kept; a flat parameter array when loaded from a state saved
        by fastnn before buffers were kept.

        Returns
        -------
        dict of str to numpy.ndarray or None
            The kept arrays.

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.callbacks.EarlyStopping("loss", restore_best_weights=True).best_weights is None
        True
        """
        return self._best_weights

    @best_weights.setter
    def best_weights(self, value) -> None:
        self._best_weights = value

    def on_epoch_end(self, epoch, logs=None):
        value = self._current(logs)
        if epoch < self.start_from_epoch:
            return
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self._keep_weights()
            return
        if self.baseline is not None and self.restore_best_weights and self.best_epoch is None:
            if self._below_baseline_best(value):
                self._keep_weights()  # (Keras: restored even if no epoch beats the baseline)
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self._stop_pending = True
            self.model.stop_training = True

    def _keep_weights(self) -> None:
        """Keep host copies of the model's parameters and buffers as the best weights."""
        model: Any = self.model  # (set by fit before any hook)
        self.best_weights = {name: backend.host_copy(a) for name, a in model.state_arrays().items()}

    def _below_baseline_best(self, value: float) -> bool:
        """Whether ``value`` (of an epoch that does not beat the baseline) is the best of those epochs
        (the first such epoch counts, NaN or not); it becomes the new best of them."""
        seen = self._best_below_baseline
        better = not math.isnan(value) and (math.isnan(seen) or (value < seen if self.mode == "min" else value > seen))
        if self.best_weights is None or better:
            self._best_below_baseline = value
            return True
        return False

    def on_train_begin(self, logs=None):
        # the stop of a fit that did not reach its end (a callback after this one raised in that
        # epoch, or this fit resumes a checkpoint of that epoch): that run ends now, as it would have
        model: Any = self.model
        if self._stop_pending and self.stopped_epoch == model.epochs_done - 1:
            import warnings

            warnings.warn(
                f"EarlyStopping stopped this run at epoch {self.stopped_epoch + 1}, but its fit did not "
                f"reach its end (an error after the decision, or a resumed checkpoint of that epoch): "
                f"this fit ends it without training{' and restores the best weights' if self.restore_best_weights else ''}"
                f"; call fit again to train on",
                UserWarning,
                stacklevel=5,  # (the caller of fit: CallbackList <- training.fit <- Sequential.fit)
            )
            model.stop_training = True
        self._stop_pending = False

    def on_train_end(self, logs=None):
        self._stop_pending = False
        if self.restore_best_weights and self.best_weights is not None:
            self._put_back(self.best_weights)

    def _put_back(self, saved) -> None:
        """Copy the kept ``saved`` arrays into the model (a flat parameter array: a state saved by
        fastnn before buffers were kept, parameters only)."""
        model: Any = self.model  # (set by fit before any hook)
        if not isinstance(saved, dict):
            backend.copy_into(model.params, saved)
            return
        model.load_state_arrays(saved, source="EarlyStopping(restore_best_weights=True): the kept best weights")

    def state_dict(self):
        return {
            "best": self.best,
            "wait": self.wait,
            "best_epoch": self.best_epoch,
            "stopped_epoch": self.stopped_epoch,
            "stop_pending": self._stop_pending,
            "best_below_baseline": self._best_below_baseline,
        }

    def load_state_dict(self, state):
        self.best, self.wait = float(state["best"]), int(state["wait"])
        self.best_epoch, self.stopped_epoch = state["best_epoch"], state["stopped_epoch"]
        self._stop_pending = bool(state.get("stop_pending", False))  # (absent from files of before)
        self._best_below_baseline = float(state.get("best_below_baseline", self._best_below_baseline))

    def arrays(self) -> dict:
        """Arrays that are part of the state (saved as tensors, not JSON).

        Returns
        -------
        dict of str to ndarray
            ``{"best_weights.<name>": array}`` for each parameter and buffer of
            ``model.state_arrays()`` once a best epoch was kept (a checkpoint keeps BatchNorm's
            running statistics too), else empty.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0)
        >>> X, y = np.ones((8, 2), np.float32), np.ones((8, 1), np.float32)
        >>> stop = fnn.callbacks.EarlyStopping("loss", patience=5, restore_best_weights=True)
        >>> _ = model.fit(X, y, loss="mse", optimizer="sgd", epochs=2, verbose=0, callbacks=[stop])
        >>> {name: a.shape for name, a in stop.arrays().items()}  # the best epoch's arrays
        {'best_weights.0.weight': (2, 1), 'best_weights.0.bias': (1,)}
        """
        if self.best_weights is None:
            return {}
        if not isinstance(self.best_weights, dict):  # loaded from a file of before: flat parameters
            return {"best_weights": self.best_weights}
        return {f"best_weights.{name}": a for name, a in self.best_weights.items()}

    def load_arrays(self, arrays: dict) -> None:
        """Restore what :meth:`arrays` returned.

        Parameters
        ----------
        arrays : dict of str to ndarray
            An :meth:`arrays` result.

        Examples
        --------
        >>> import fastnn as fnn
        >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0)
        >>> X, y = np.ones((8, 2), np.float32), np.ones((8, 1), np.float32)
        >>> stop = fnn.callbacks.EarlyStopping("loss", patience=5, restore_best_weights=True)
        >>> _ = model.fit(X, y, loss="mse", optimizer="sgd", epochs=2, verbose=0, callbacks=[stop])
        >>> fresh = fnn.callbacks.EarlyStopping("loss", restore_best_weights=True)
        >>> fresh.load_arrays(stop.arrays())
        >>> all(np.array_equal(fresh.best_weights[k], stop.best_weights[k]) for k in stop.best_weights)
        True
        """
        prefix = "best_weights."
        kept = {k[len(prefix) :]: np.array(v) for k, v in arrays.items() if k.startswith(prefix)}
        if kept:
            self.best_weights = kept
        elif "best_weights" in arrays:  # files of before: the flat parameters only
            self.best_weights = np.array(arrays["best_weights"])


class ReduceLROnPlateau(_Monitor):
    """Multiply the learning rate by ``factor`` when ``monitor`` stalls for ``patience`` epochs.

    Parameters
    ----------
    monitor : str, default "val_loss"
        The metric watched (``"loss"``, ``"val_accuracy"`` ...).
    mode : {"auto", "min", "max"}, default "auto"
        Whether lower or higher is better; "auto": higher for accuracy-like names.
    min_delta : float, default 1e-4
        The smallest change that counts as an improvement.
    factor : float, default 0.1
        The factor, in (0, 1).
    patience : int, default 10
        Epochs without improvement before lowering the rate: it is lowered at the end of the
        ``patience + 1``-th such epoch in a row (PyTorch's ``num_bad_epochs > patience``).
    cooldown : int, default 0
        Epochs after a reduction whose lack of improvement does not count (PyTorch's cooldown:
        with patience 0 and cooldown 2 a plateau lowers the rate every 3 epochs).
    min_lr : float, default 0.0
        The rate never goes below this.
    eps : float, default 1e-8
        A reduction smaller than this is not applied (PyTorch's ``eps``: below about 1e-7 the rate
        stays where it is).
    verbose : int, default 0
        Print a line at each reduction when non-zero.

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0)
    >>> X, y = np.ones((8, 2), np.float32), np.ones((8, 1), np.float32)
    >>> plateau = fnn.callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=0, min_delta=10.0)
    >>> _ = model.fit(X, y, loss="mse", optimizer=fnn.optim.SGD(lr=0.1), epochs=3, verbose=0, callbacks=[plateau])
    >>> round(model.optimizer.lr, 4)              # halved after epochs 1 and 2
    0.025
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        *,
        factor: float = 0.1,
        patience: int = 10,
        mode: str = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
        eps: float = 1e-8,
        verbose: int = 0,
    ):
        from ._validation import check_float, check_int

        super().__init__(monitor, mode, min_delta)
        self.factor = check_float(factor, "factor", 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        self.patience = check_int(patience, "patience", minimum=0)
        self.cooldown = check_int(cooldown, "cooldown", minimum=0)
        self.min_lr = check_float(min_lr, "min_lr", low=0.0)
        self.eps = check_float(eps, "eps", low=0.0)
        self.verbose = verbose
        self.wait = 0
        self.cooldown_counter = 0

    def on_epoch_end(self, epoch, logs=None):
        # torch.optim.lr_scheduler.ReduceLROnPlateau.step, in its order: count the epoch, then an
        # epoch of the cooldown (the counter still > 0 before this one) counts no bad epochs
        value = self._current(logs)
        if self._improved(value):
            self.best, self.wait = value, 0
        else:
            self.wait += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self.wait > self.patience:
            old = float(self.model.optimizer.lr)
            new = max(old * self.factor, self.min_lr)
            if old - new > max(self.eps, 1e-12 * old):
                self.model.optimizer.lr = new
                if self.verbose:
                    print(f"Epoch {epoch + 1}: ReduceLROnPlateau lowered the learning rate to {new:.3g}")
            self.cooldown_counter = self.cooldown
            self.wait = 0

    def state_dict(self):
        return {"best": self.best, "wait": self.wait, "cooldown_counter": self.cooldown_counter}

    def load_state_dict(self, state):
        self.best, self.wait = float(state["best"]), int(state["wait"])
        self.cooldown_counter = int(state["cooldown_counter"])


class LearningRateScheduler(Callback):
    """Set the learning rate from a schedule at the start of every epoch or batch.

    Parameters
    ----------
    schedule : callable
        ``schedule(step) -> lr``: a :mod:`fastnn.schedules` schedule or any callable; or, as in
        Keras, ``schedule(step, lr) -> lr`` (a callable that takes two positional arguments is given
        the optimizer's current learning rate as the second).
    per : {"epoch", "batch"}, default "epoch"
        The step counts epochs, or optimizer steps (batches).

    Raises
    ------
    TypeError
        When ``schedule`` is not callable.
    ValueError
        When it returns a negative or non-finite rate.

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0)
    >>> X, y = np.ones((8, 2), np.float32), np.ones((8, 1), np.float32)
    >>> schedule = fnn.schedules.StepDecay(0.1, step_size=1, gamma=0.5)
    >>> history = model.fit(X, y, loss="mse", optimizer="sgd", epochs=3, verbose=0,
    ...                     callbacks=[fnn.callbacks.LearningRateScheduler(schedule)])
    >>> [round(lr, 3) for lr in history["lr"]]
    [0.1, 0.05, 0.025]
    """

    def __init__(self, schedule, *, per: str = "epoch"):
        from ._validation import check_choice

        if not callable(schedule):
            raise TypeError(
                f"schedule must be callable as schedule(step) -> lr, e.g. "
                f"fastnn.schedules.CosineAnnealing(...); got {schedule!r}"
            )
        self.schedule = schedule
        self.per = check_choice(per, ("epoch", "batch"), "per")

    def _takes_lr(self) -> bool:
        """Whether the schedule is Keras' ``schedule(epoch, lr)``: two required positional arguments."""
        try:
            params = inspect.signature(self.schedule).parameters.values()
        except (TypeError, ValueError):  # (a callable without a signature: called with the step alone)
            return False
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        required = [p for p in params if p.kind in positional and p.default is inspect.Parameter.empty]
        return len(required) >= 2

    def _set(self, step: int):
        if self.model is None:
            raise RuntimeError(
                f"{type(self).__name__} sets a model's learning rate: pass it to fit(callbacks=[...]) "
                f"(or call set_model(model) first)"
            )
        form = self.__dict__.get("_form")  # (schedule, takes_lr): the signature read once per schedule (~10 us)
        if form is None or form[0] is not self.schedule:
            form = self._form = (self.schedule, self._takes_lr())
        if form[1]:  # Keras' schedule(epoch, lr)
            lr = float(self.schedule(step, float(self.model.optimizer.lr)))
        else:
            lr = float(self.schedule(step))
        if not (lr >= 0 and math.isfinite(lr)):
            raise ValueError(f"schedule returned an invalid learning rate {lr} at step {step}")
        self.model.optimizer.lr = lr

    def on_epoch_begin(self, epoch, logs=None):
        if self.per == "epoch":
            self._set(epoch)

    def on_batch_begin(self, batch, logs=None):
        if self.per == "batch":
            self._set(self.model.optimizer.step_count)


def _format_fields(path: str) -> list[str]:
    """The names of ``path``'s ``str.format`` fields (``{val_loss:.3f}`` -> ``val_loss``; the
    name before any ``.attribute`` or ``[index]``)."""
    import re
    import string

    fields = []
    try:
        parsed = list(string.Formatter().parse(path))
    except ValueError as exc:
        raise ValueError(f"ModelCheckpoint path {path!r} is not a valid format string: {exc}") from exc
    for _, field, spec, _ in parsed:
        if field is not None:
            fields.append(re.split(r"[.\[]", field, maxsplit=1)[0])
            if spec and "{" in spec:  # nested fields of the spec ({loss:.{digits}f})
                fields += _format_fields(spec)
    return list(dict.fromkeys(fields))


class ModelCheckpoint(Callback):
    """Save the model (weights, optimizer, training state) after each epoch.

    It runs after the other callbacks of the epoch wherever it stands in the list
    (:attr:`Callback.runs_last`), so a file holds their state of that epoch: a fit resumed from it
    continues exactly.

    Parameters
    ----------
    path : str or path-like
        The file; it may contain ``{epoch}`` (from 1) and metric names, e.g.
        ``"ckpt-{epoch:02d}-{val_loss:.3f}.safetensors"``.
    monitor : str, default "val_loss"
        The metric of ``save_best_only``.
    save_best_only : bool, default False
        Save only when ``monitor`` improves.
    mode : {"auto", "min", "max"}, default "auto"
        Whether lower or higher is better.
    min_delta : float, default 0.0
        The smallest change that counts as an improvement.

    Raises
    ------
    FileNotFoundError
        When the folder of ``path`` does not exist.
    ValueError
        When ``path`` is not a format string with named fields.
    KeyError
        At an epoch's end, when ``path`` names a metric its logs do not have (``val_loss``
        without validation data): the message lists those there are (:meth:`format_path`).

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0)
    >>> X, y = np.ones((8, 2), np.float32), np.ones((8, 1), np.float32)
    >>> checkpoint = fnn.callbacks.ModelCheckpoint("ckpt-{epoch}.safetensors")
    >>> _ = model.fit(X, y, loss="mse", optimizer="sgd", epochs=2, verbose=0, callbacks=[checkpoint])
    >>> checkpoint.saved
    ['ckpt-1.safetensors', 'ckpt-2.safetensors']
    """

    runs_last = True

    def __init__(
        self,
        path,
        *,
        monitor: str = "val_loss",
        save_best_only: bool = False,
        mode: str = "auto",
        min_delta: float = 0.0,
    ):
        import os

        self.path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise FileNotFoundError(
                f"ModelCheckpoint path {self.path!r}: directory {directory!r} does not "
                f"exist; create it first (os.makedirs)"
            )
        self.save_best_only = bool(save_best_only)
        self._monitor = _Monitor(monitor, mode, min_delta, owner="ModelCheckpoint")
        self.saved: list[str] = []
        self._fields = _format_fields(self.path)
        positional = [f for f in self._fields if f == "" or f.isdigit()]
        if positional:
            raise ValueError(
                f"ModelCheckpoint path {self.path!r}: its format fields must be named ({{epoch}} or a "
                f"metric such as {{val_loss:.3f}}), not positional {{{positional[0]}}}"
            )

    def format_path(self, epoch: int, logs: dict) -> str:
        """The file of epoch ``epoch`` (0-based; ``{epoch}`` is 1-based): ``path`` formatted with the
        epoch's ``logs``.

        Parameters
        ----------
        epoch : int
            The epoch that ended.
        logs : dict
            Its logs (``loss``, ``val_loss`` ...).

        Returns
        -------
        str
            The path.

        Raises
        ------
        KeyError
            If the path names a metric the logs do not have (as Keras: "Failed to format this
            callback filepath"), naming the callback, the path and the metrics there are.
        ValueError
            If a format spec does not suit its value.

        Examples
        --------
        >>> import fastnn as fnn
        >>> fnn.callbacks.ModelCheckpoint("m-{epoch:02d}-{loss:.2f}.safetensors").format_path(2, {"loss": 0.5})
        'm-03-0.50.safetensors'
        """
        values = {**logs, "epoch": epoch + 1}
        missing = [field for field in self._fields if field not in values]
        if missing:
            hint = (
                " (validation metrics need fit(validation_data=...) or validation_split)"
                if any(field.startswith("val_") for field in missing)
                else ""
            )
            raise KeyError(
                f"ModelCheckpoint: failed to format this callback filepath: {self.path!r}: no "
                f"{', '.join(repr(f) for f in missing)} in the logs of epoch {epoch + 1}{hint}; "
                f"available: {', '.join(sorted(values))}"
            )
        try:
            return self.path.format(**values)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"ModelCheckpoint: failed to format this callback filepath: {self.path!r}: {exc}") from exc

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        previous_best = self._monitor.best
        if self.save_best_only:
            value = self._monitor._current(logs)
            if not self._monitor._improved(value):
                return
            self._monitor.best = value  # (before the save: the file holds it)
        try:
            path = self.format_path(epoch, logs)
            self.model.save(path)
        except BaseException:  # not saved (a full disk, Ctrl-C): the best is still the one on disk
            self._monitor.best = previous_best
            raise
        self.saved.append(path)

    def state_dict(self):
        return self._monitor.state_dict()

    def load_state_dict(self, state):
        self._monitor.load_state_dict(state)


class CSVLogger(Callback):
    """Append one row per epoch (epoch and every metric) to a CSV file.

    Parameters
    ----------
    path : str or path-like
        The CSV file.
    separator : str, default ","
        The column separator.
    append : bool, default False
        Add to an existing file instead of replacing it.

    Raises
    ------
    FileNotFoundError
        When the folder of ``path`` does not exist.

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0)
    >>> X, y = np.ones((8, 2), np.float32), np.ones((8, 1), np.float32)
    >>> _ = model.fit(X, y, loss="mse", optimizer="sgd", epochs=2, verbose=0,
    ...               callbacks=[fnn.callbacks.CSVLogger("log.csv")])
    >>> open("log.csv").read().splitlines()[0]
    'epoch,loss,lr'
    """

    def __init__(self, path, *, separator: str = ",", append: bool = False):
        import os

        self.path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"CSVLogger path {self.path!r}: directory {directory!r} does not exist")
        self.separator = separator
        self.append = bool(append)
        self._keys: list[str] | None = None

    def on_train_begin(self, logs=None):
        import os

        if not self.append and os.path.exists(self.path):
            os.remove(self.path)
        self._keys = None

    def on_epoch_end(self, epoch, logs=None):
        import os

        logs = logs or {}
        write_header = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
        if self._keys is None:
            self._keys = list(logs) if write_header else self._header_keys(logs)
        with open(self.path, "a", encoding="utf-8") as handle:
            if write_header:
                handle.write(self.separator.join(["epoch", *self._keys]) + "\n")
            handle.write(
                self.separator.join([str(epoch), *(repr(float(logs.get(k, math.nan))) for k in self._keys)]) + "\n"
            )

    def _header_keys(self, logs: dict) -> list[str]:
        """The metric columns of the file appended to (its header, after ``epoch``): each row is
        written in its columns, nan for a metric this fit does not log; a warning names the metrics
        it logs that the file has no column for."""
        import warnings

        with open(self.path, encoding="utf-8") as handle:
            header = handle.readline().rstrip("\r\n").split(self.separator)
        keys = header[1:] if header[:1] == ["epoch"] else list(logs)
        extra = [k for k in logs if k not in keys]
        if extra:
            warnings.warn(
                f"CSVLogger(append=True): {self.path!r} has no column for {', '.join(map(repr, extra))} (its "
                f"header: {self.separator.join(header)}); those metrics are not written. Log this fit to a "
                f"new file, or pass append=False to start the file again",
                UserWarning,
                stacklevel=7,  # (the caller of fit: on_epoch_end <- CallbackList <- _run_epochs <- fit <- fit)
            )
        return keys


__all__ = [
    "CSVLogger",
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "History",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "ReduceLROnPlateau",
]


def __getattr__(name):  # TensorBoard lives in its own module (it needs tensorboardX, an extra)
    if name == "TensorBoard":
        from .tensorboard import TensorBoard

        return TensorBoard
    raise AttributeError(f"module 'fastnn.callbacks' has no attribute {name!r}")
