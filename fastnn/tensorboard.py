"""TensorBoard logging for :meth:`fastnn.Sequential.fit`, written with tensorboardX.

    tb = fastnn.callbacks.TensorBoard("runs/exp1", histogram_freq=5)
    model.fit(X, y, epochs=50, callbacks=[tb])      # then: tensorboard --logdir runs

Needs tensorboardX: ``pip install "fastnn[tensorboard]"``.
"""

from __future__ import annotations

import itertools
import math
import os

import numpy as np

from . import _validation as V
from .callbacks import Callback

_writers_opened = itertools.count()


def _unique_suffix() -> str:
    """An event file name suffix unique to this process and writer: tensorboardX names files by
    the second they are opened in and truncates an existing one, so a second fit into the same
    log_dir within that second would overwrite the first one's events."""
    return f".{os.getpid()}.{next(_writers_opened)}"


def _summary_writer():
    try:
        from tensorboardX import SummaryWriter
    except ImportError as exc:
        raise ImportError(
            "the TensorBoard callback needs tensorboardX, which is not installed: "
            'pip install "fastnn[tensorboard]" (or pip install tensorboardX)'
        ) from exc
    return SummaryWriter


class TensorBoard(Callback):
    """Write TensorBoard event files under ``log_dir``.

    Every epoch (global step = epoch index): scalars for each metric of the epoch's logs
    (``loss``, ``accuracy``, ``val_*``, ``lr``) and, with ``gradient_norms=True``, the L2 norm
    of each parameter's gradient from the epoch's last batch (with ``accumulate=k``: the
    gradient of its last update, the mean over its k batches) (``grad_norm/0.weight`` ...) plus
    their global norm (``grad_norm/global``).

    Every ``histogram_freq`` epochs (0: never): histograms of each parameter
    (``weights/0.weight``), its gradient (``gradients/0.weight``) and each layer's output
    (``activations/0.Dense``). Activations come from a forward pass in evaluation mode (as
    ``predict``: no dropout, BatchNorm's running statistics) with the epoch's final weights, on
    ``activation_data`` (an array of inputs) when given, else on the input of the epoch's last
    step. That pass changes nothing: a fit trains the same with or without this callback.

    Parameters
    ----------
    log_dir : str or path-like, default "runs"
        The folder of the event files (``tensorboard --logdir`` it).
    histogram_freq : int, default 1
        Epochs between histograms; 0: none.
    gradient_norms : bool, default True
        Log each parameter's gradient norm and the global norm every epoch.
    activation_data : array-like, optional
        ``(n, *input_shape)`` inputs whose layer outputs the activation histograms show.
    flush_secs : int, default 10
        Seconds between flushes of the event file.

    Raises
    ------
    ImportError
        When tensorboardX is not installed (the message says how to install it).

    Examples
    --------
    >>> import os
    >>> import fastnn as fnn
    >>> from fastnn.tensorboard import TensorBoard
    >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0)
    >>> X, y = np.ones((8, 2), np.float32), np.ones((8, 1), np.float32)
    >>> _ = model.fit(X, y, loss="mse", optimizer="sgd", epochs=2, verbose=0, callbacks=[TensorBoard("runs/exp1")])
    >>> any(name.startswith("events.out.tfevents") for name in os.listdir("runs/exp1"))
    True
    """

    def __init__(
        self,
        log_dir="runs",
        *,
        histogram_freq: int = 1,
        gradient_norms: bool = True,
        activation_data=None,
        flush_secs: int = 10,
    ):
        self._writer_class = _summary_writer()
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq = V.check_int(histogram_freq, "histogram_freq", minimum=0)
        self.gradient_norms = bool(gradient_norms)
        self.activation_data = None if activation_data is None else np.asarray(activation_data)
        self.flush_secs = V.check_int(flush_secs, "flush_secs", minimum=1)
        self.writer = None

    def on_train_begin(self, logs=None):
        if self.writer is None:
            self.writer = self._writer_class(
                logdir=self.log_dir, flush_secs=self.flush_secs, filename_suffix=_unique_suffix()
            )

    def on_epoch_end(self, epoch, logs=None):
        self.on_train_begin()
        writer = self.writer
        for key, value in (logs or {}).items():
            if isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool):
                writer.add_scalar(key, float(value), epoch)
        params = self.model.named_parameters()
        if self.gradient_norms:
            total = 0.0
            for name, _, grad in params:
                norm = float(np.linalg.norm(grad))
                total += norm * norm
                writer.add_scalar(f"grad_norm/{name}", norm, epoch)
            writer.add_scalar("grad_norm/global", math.sqrt(total), epoch)
        if self.histogram_freq and (epoch + 1) % self.histogram_freq == 0:
            self._histograms(epoch, params)
        writer.flush()

    def _histograms(self, epoch, params):
        writer = self.writer
        for name, value, grad in params:
            writer.add_histogram(f"weights/{name}", np.asarray(value, np.float64), epoch)
            writer.add_histogram(f"gradients/{name}", np.asarray(grad, np.float64), epoch)
        data = self.activation_data if self.activation_data is not None else self.model.last_batch()
        outputs = [] if data is None else self.model.layer_outputs(data, training=False)
        for i, (layer, out) in enumerate(zip(self.model.layers, outputs)):
            if out is not None and np.size(out) and np.isfinite(out).all():
                writer.add_histogram(f"activations/{i}.{type(layer).__name__}", np.asarray(out, np.float64), epoch)

    def on_train_end(self, logs=None):
        self.close()

    def close(self) -> None:
        """Flush and close the event file (a later fit() opens a new one in the same log_dir).

        Examples
        --------
        >>> import fastnn as fnn
        >>> from fastnn.tensorboard import TensorBoard
        >>> model = fnn.Sequential([fnn.Dense(2, 1)], seed=0)
        >>> X, y = np.ones((8, 2), np.float32), np.ones((8, 1), np.float32)
        >>> board = TensorBoard("runs/exp2", histogram_freq=0)
        >>> _ = model.fit(X, y, loss="mse", optimizer="sgd", epochs=1, verbose=0, callbacks=[board])
        >>> board.close()  # flushed: the event file is complete on disk
        >>> board.writer is None
        True
        """
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def state_dict(self):
        return {}


__all__ = ["TensorBoard"]
