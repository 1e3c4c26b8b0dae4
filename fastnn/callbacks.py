"""Callbacks for :meth:`fastnn.Sequential.fit` and the History it returns."""
from __future__ import annotations

import math


class Callback:
    """Base class: override any hook. ``self.model`` is set before ``on_train_begin``.

    ``logs`` is a dict of metrics: per batch ``{"loss", "batch", "size"}``; per epoch the
    epoch's ``loss``, ``accuracy`` (classification), ``val_*`` and ``lr``. Set
    ``self.model.stop_training = True`` to stop after the current epoch.
    """

    model = None

    def set_model(self, model) -> None:
        self.model = model

    def on_train_begin(self, logs: dict | None = None) -> None: ...
    def on_train_end(self, logs: dict | None = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None: ...
    def on_batch_begin(self, batch: int, logs: dict | None = None) -> None: ...
    def on_batch_end(self, batch: int, logs: dict | None = None) -> None: ...

    def state_dict(self) -> dict:
        """JSON-able state needed to resume training exactly (counters, best values)."""
        return {}

    def load_state_dict(self, state: dict) -> None: ...


class History(Callback):
    """Per-epoch metrics: ``history.history["loss"][e]``, ``["val_loss"]``, ``["lr"]`` ...

    ``history.epoch`` lists the epoch indices recorded.
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
    """Calls each hook on every callback in order."""

    def __init__(self, callbacks, model):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be fastnn.callbacks.Callback instances, got "
                                f"{type(cb).__name__}; subclass Callback and override its hooks")
            cb.set_model(model)

    def __getattr__(self, hook):
        if not hook.startswith("on_"):
            raise AttributeError(hook)

        def call(*args):
            for cb in self.callbacks:
                getattr(cb, hook)(*args)

        return call
