"""Batch normalisation over (batch, features) and layer normalisation over the last axis."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _validation as V
from .. import backend
from .base import Layer, ParamSpec, normalize_shape, rows, shape_str, size_of
from .registry import register_layer


def _fill(value):
    def init(view, seed, stream):
        view[...] = value

    return init


class _Normalization(Layer):
    """Shared parts: the per-feature gain (``weight``, gamma) and shift (``bias``, beta), which
    get no weight decay by default, and the checks of the feature count and eps."""

    feature_axis = -1
    attribute_aliases = {"epsilon": "eps"}  # Keras

    def __init__(self, num_features: int, eps: float, affine: bool, affine_argument: str = "affine"):
        super().__init__()
        self.num_features = V.check_int(num_features, "num_features", minimum=1)
        self.in_features = self.num_features
        self.eps = V.check_float(eps, "eps", low=0.0, low_inclusive=False)
        self.affine = V.check_bool(affine, affine_argument)
        self.weight = self.bias = self.grad_weight = self.grad_bias = None

    def build(self, input_shape, dtype):
        shape = normalize_shape(input_shape)
        if shape[self.feature_axis] != self.num_features:
            raise ValueError(
                f"{self!r}: num_features={self.num_features} does not match the input shape "
                f"{shape_str(shape)}; use {type(self).__name__}({shape[self.feature_axis]})"
            )
        super().build(shape, dtype)
        out = self.num_features
        if not self.affine:  # the kernels read gamma/beta only when affine; keep typed placeholders
            self.weight, self.bias = backend.full(out, 1.0, dtype, self.device), self.zeros(out)
            self.grad_weight, self.grad_bias = self.zeros(out), self.zeros(out)
        self._workspace = self.workspace(y=shape, x_hat=shape, grad_x=shape)
        self._partials = self.zeros((2, 1, out))
        return shape

    def _scratch(self, batch):
        n = self.K.partial_rows(batch)
        if self._partials.shape[1] < n:
            self._partials = self.zeros((2, n, self.num_features))
        return self._partials

    def parameter_specs(self):
        if not self.affine:
            return []
        return [
            ParamSpec("weight", (self.num_features,), False, _fill(1.0)),
            ParamSpec("bias", (self.num_features,), False, _fill(0.0)),
        ]

    def extra_repr(self):
        config = self.get_config()
        first = next(iter(config))
        return ", ".join([str(config.pop(first))] + [f"{k}={v!r}" for k, v in config.items()])

    def bind(self, params, grads):
        if self.affine:
            self.weight, self.bias = params["weight"], params["bias"]
            self.grad_weight, self.grad_bias = grads["weight"], grads["bias"]


@register_layer
class BatchNorm1d(_Normalization):
    """Batch normalisation with the conventions of torch.nn.BatchNorm1d, over (batch, features)
    or (batch, channels, length) (statistics per channel over the batch and the length).

    Training: normalise with the batch mean and biased variance; update
    ``running = (1 - momentum) * running + momentum * batch`` with the unbiased variance
    (``momentum=None``: cumulative average). Evaluation: use the running statistics (or batch
    statistics when ``track_running_stats=False``). Output: the input's shape and dtype.

    Inside :class:`TimeDistributed` after ``Masking`` or ``Embedding(mask_padding=True)`` (input
    with sequence lengths), the batch statistics are those of the valid steps only, as Keras 3's
    BatchNormalization given a mask: the running statistics are updated from them (the variance
    unbiased over the valid positions' count), every position, padded ones included, is
    normalised with them, and the gradient is that forward's exact one (a padded position gets
    the affine part alone, ``gamma / sqrt(var + eps)`` times its upstream gradient). A batch with
    a single valid position per channel has variance 0 there (Keras's result; PyTorch would
    refuse). Evaluation with running statistics and a frozen layer are per position, unchanged.
    The same holds for a BatchNorm deeper inside the TimeDistributed (in a Residual block, a
    nested TimeDistributed), and under MPI with ``sync_batchnorm=True`` (``SyncBatchNorm``: each
    rank's sums and counts over its valid steps are added over the ranks).

    A frozen layer (``frozen``: ``trainable = False`` on it or on a layer containing it) runs
    in inference mode in training steps too, as Keras's BatchNormalization with
    ``trainable=False`` and PyTorch's fine-tuning recipe (``bn.eval(); bn.requires_grad_(False)``):
    it normalises with its running statistics and leaves them (and ``num_batches_tracked``)
    unchanged; the gradient flows through that affine map. Without running statistics
    (``track_running_stats=False``) it keeps using each batch's statistics, as PyTorch's eval
    mode does.

    Parameters
    ----------
    num_features : int
        The number of features or channels (axis 1 of the input).
    eps : float, default 1e-5
        Added to the variance before its square root.
    momentum : float or None, default 0.1
        Weight of the batch statistics in the running ones; None: a cumulative average.
    affine : bool, default True
        Learn a per-channel scale ``weight`` (ones) and shift ``bias`` (zeros).
    track_running_stats : bool, default True
        Keep running statistics for evaluation; False: batch statistics in evaluation too.

    Examples
    --------
    >>> import fastnn as fnn
    >>> bn = fnn.BatchNorm1d(2)
    >>> model = fnn.Sequential([bn], seed=0)
    >>> x = np.array([[1.0, 10.0], [3.0, 30.0]], np.float32)
    >>> bn.forward(x, training=True)          # batch statistics
    array([[-1., -1.],
           [ 1.,  1.]], dtype=float32)
    >>> bn.running_mean.shape
    (2,)
    """

    input_argument = "num_features"
    feature_axis = 0
    _ranks: tuple[int, ...] = (1, 2)
    _layout = "(batch, features) or (batch, channels, length)"

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ):
        super().__init__(num_features, eps, affine)
        self.momentum = None if momentum is None else V.check_float(momentum, "momentum", 0.0, 1.0)
        self.track_running_stats = V.check_bool(track_running_stats, "track_running_stats")
        self.running_mean = self.running_var = None
        self.num_batches_tracked = np.zeros(1, np.int64)
        self._positions = 1
        self._sync: Any = (
            None  # fastnn.distributed.SyncBatchNorm while a fit synchronises the batch statistics (private:
        )
        # a public attribute set would mark the model stale and rebuild the layer)

    @property
    def synchronizer(self) -> Any:
        """The object computing the batch statistics over all MPI ranks while a data-parallel fit
        runs (``fastnn.distributed.SyncBatchNorm``), else None.

        Examples
        --------
        >>> import fastnn as fnn
        >>> print(fnn.BatchNorm1d(4).synchronizer)
        None
        """
        return self._sync

    def set_synchronizer(self, synchronizer: Any) -> None:
        """Compute the training batch statistics through ``synchronizer``.

        Parameters
        ----------
        synchronizer : object or None
            Its ``forward_calls``/``backward_calls`` replace the layer's own in training steps
            (``fastnn.distributed.SyncBatchNorm``); None: this process's batch only. The owning
            model's recorded plans must be rebuilt after: ``model.clear_plans()``.

        Examples
        --------
        >>> import fastnn as fnn
        >>> bn = fnn.BatchNorm1d(4)
        >>> sync = object()  # stands for a fastnn.distributed.SyncBatchNorm
        >>> bn.set_synchronizer(sync)
        >>> bn.synchronizer is sync
        True
        >>> bn.set_synchronizer(None)  # back to this process's batch
        """
        self._sync = synchronizer

    @property
    def needs_batch_over_one(self) -> bool:
        """A batch of one sample with one position has no variance: fit() skips a last batch of
        one (see ``_validation.check_batch_plan``). Not for a frozen layer with running statistics
        (it trains in inference mode). Inside ``TimeDistributed`` over more than one step a sample
        is several rows of this layer's batch, so fit trains on a batch of one there
        (``fastnn.streaming.needs_two``).

        Examples
        --------
        >>> import fastnn as fnn
        >>> rows, channels_first = fnn.BatchNorm1d(4), fnn.BatchNorm1d(4)
        >>> _ = rows.build((4,), "float32"), channels_first.build((4, 5), "float32")
        >>> rows.needs_batch_over_one, channels_first.needs_batch_over_one  # 1 and 5 positions
        (True, False)
        """
        return self._positions == 1 and not (self.track_running_stats and self.frozen)

    def build(self, input_shape, dtype):
        shape = normalize_shape(input_shape)
        if len(shape) not in self._ranks:
            other = "BatchNorm2d for (batch, channels, height, width)" if len(shape) == 3 else "Flatten() first"
            raise ValueError(f"{self!r} takes {self._layout} input, got {shape_str(shape)}; use {other}")
        shape = super().build(shape, dtype)
        c = shape[0]
        self._positions = size_of(shape[1:])
        if self._positions > 1:  # channels first: batch norm runs on (batch * positions, channels) rows
            rows = (self._positions, c)
            self._rows = self.workspace(x=rows, y=rows, x_hat=rows, grad_y=rows, grad_x=rows)
        self.running_mean = self.zeros(c)
        self.running_var = backend.full(c, 1.0, dtype, self.device)
        self._stats = self.workspace(mean=(c,), inv_std=(c,))  # batch statistics, per arena
        return shape

    def buffers(self):
        if not self.track_running_stats:
            return {}
        return {
            "running_mean": self.running_mean,
            "running_var": self.running_var,
            "num_batches_tracked": self.num_batches_tracked,
        }

    def _row_views(self, m: int, arena: str) -> dict:
        c = self.num_features
        return {k: v.reshape((m * self._positions, c)) for k, v in self._rows(m, arena).items()}

    def _as_rows(self, x):
        """(batch, C) view of an array of one position per channel: (batch, C) or (batch, C, 1, ...)."""
        return x if x.ndim == 2 else x.reshape((x.shape[0], self.num_features))

    def _channels(self, x):
        """(batch, C, positions) view of a channels-first array."""
        return x.reshape((x.shape[0], self.num_features, self._positions))

    def forward_calls(self, x, ctx):
        m = x.shape[0]
        ws = self._workspace(m, ctx.arena)
        if self._positions == 1:  # (batch, C) rows, or channels first with one position: (batch, C, 1, ...)
            calls = self._row_forward(self._as_rows(x), self._as_rows(ws["y"]), self._as_rows(ws["x_hat"]), ctx)
            return calls, ws["y"]
        r = self._row_views(m, ctx.arena)
        calls = [(self.K.nchw_to_rows, (self._channels(x), r["x"]))]
        calls += self._row_forward(r["x"], r["y"], r["x_hat"], ctx)
        calls.append((self.K.rows_to_nchw, (r["y"], self._channels(ws["y"]))))
        return calls, ws["y"]

    def _one_value_message(self, training: bool, m: int) -> str:
        """The error of a batch of ``m`` < 2 values per channel normalised with its own statistics
        (in training, or in evaluation without running statistics)."""
        if training:
            return (
                f"{self!r} needs more than 1 value per channel in training (the batch variance "
                f"of one value is 0), got batch size {m}; use a larger batch_size, or eval mode"
            )
        return (
            f"{self!r} normalises with each batch's own statistics in evaluation mode too "
            f"(track_running_stats=False), so it needs more than 1 value per channel, got batch size "
            f"{m}; predict or evaluate batches of at least 2 samples (a batch_size that leaves no "
            f"last batch of one), or build it with track_running_stats=True"
        )

    def _masked_rows(self, ctx) -> tuple:
        """``(lengths, per_sample, per_step)`` of the kernels' masked statistics when this layer runs
        inside ``TimeDistributed`` on padded sequence steps (``ctx.step_rows``: the lengths buffer
        and the batch rows per sample and per step), else ``()``; each batch row is
        ``self._positions`` statistics rows."""
        step_rows = getattr(ctx, "step_rows", None)
        if step_rows is None:
            return ()
        lengths, per_sample, per_step = step_rows
        return (lengths, per_sample * self._positions, per_step * self._positions)

    def _row_forward(self, x, y, x_hat, ctx) -> list:
        """Calls normalising rows x (n, C) into y; what backward needs goes to ctx. A frozen layer
        trains in inference mode (the class docstring); batch statistics of padded sequence steps
        leave those steps out (:meth:`_masked_rows`)."""
        training = ctx.training and not (self.track_running_stats and self.frozen)
        ctx.batch_stats = training or not self.track_running_stats
        ctx.x = x
        if not ctx.batch_stats:
            return [
                (
                    self.K.batchnorm_forward_eval,
                    (x, self.weight, self.bias, self.running_mean, self.running_var, y, self.eps, self.affine),
                )
            ]
        ctx.synced = training and self._sync is not None
        ctx.masked = self._masked_rows(ctx)
        if ctx.synced:  # statistics of the global batch of all MPI ranks (their valid steps' rows)
            return self._sync.forward_calls(self, x, y, x_hat, self._stats(1, ctx.arena), *ctx.masked)
        if x.shape[0] < 2:
            raise ValueError(self._one_value_message(training, x.shape[0]))
        momentum = -1.0 if self.momentum is None else self.momentum
        stats = self._stats(1, ctx.arena)
        args = (
            x,
            self.weight,
            self.bias,
            self.running_mean,
            self.running_var,
            y,
            x_hat,
            stats["mean"][0],
            stats["inv_std"][0],
            self._scratch(x.shape[0]),
            self.eps,
            momentum,
            self.affine,
            training and self.track_running_stats,
            self.num_batches_tracked,
            *ctx.masked,
        )
        return [(self.K.batchnorm_forward_train_counted, args)]

    def backward_calls(self, grad_y, ctx, need_grad_x):
        m = grad_y.shape[0]
        ws = self._workspace(m, ctx.arena)
        if self._positions == 1:
            rows = self._as_rows(grad_y), self._as_rows(ws["grad_x"]), self._as_rows(ws["x_hat"])
            return self._row_backward(*rows, ctx), ws["grad_x"]
        r = self._row_views(m, ctx.arena)
        calls = [(self.K.nchw_to_rows, (self._channels(grad_y), r["grad_y"]))]
        calls += self._row_backward(r["grad_y"], r["grad_x"], r["x_hat"], ctx)
        calls.append((self.K.rows_to_nchw, (r["grad_x"], self._channels(ws["grad_x"]))))
        return calls, ws["grad_x"]

    def _row_backward(self, grad_y, grad_x, x_hat, ctx) -> list:
        if getattr(ctx, "synced", False):
            return self._sync.backward_calls(self, grad_y, grad_x, x_hat, self._stats(1, ctx.arena), *ctx.masked)
        if ctx.batch_stats:
            args: tuple = (
                grad_y,
                x_hat,
                self._stats(1, ctx.arena)["inv_std"][0],
                self.weight,
                grad_x,
                self.grad_weight,
                self.grad_bias,
                self._scratch(grad_y.shape[0]),
                self.affine,
                *ctx.masked,
            )
            return [(self.K.batchnorm_backward, args)]
        args = (
            grad_y,
            ctx.x,
            self.weight,
            self.running_mean,
            self.running_var,
            x_hat,
            grad_x,
            self.grad_weight,
            self.grad_bias,
            self._scratch(grad_y.shape[0]),
            self.eps,
            self.affine,
        )
        return [(self.K.batchnorm_backward_eval, args)]

    def get_config(self):
        return {
            "num_features": self.num_features,
            "eps": self.eps,
            "momentum": self.momentum,
            "affine": self.affine,
            "track_running_stats": self.track_running_stats,
        }


@register_layer
class BatchNorm2d(BatchNorm1d):
    """Batch normalisation per channel of ``(batch, channels, height, width)``, statistics over the
    batch and all positions (torch.nn.BatchNorm2d conventions; see :class:`BatchNorm1d`).

    Parameters
    ----------
    num_features : int
        The number of features or channels (axis 1 of the input).
    eps : float, default 1e-5
        Added to the variance before its square root.
    momentum : float or None, default 0.1
        Weight of the batch statistics in the running ones; None: a cumulative average.
    affine : bool, default True
        Learn a per-channel scale ``weight`` (ones) and shift ``bias`` (zeros).
    track_running_stats : bool, default True
        Keep running statistics for evaluation; False: batch statistics in evaluation too.

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.BatchNorm2d(3)], input_shape=(3, 4, 4), seed=0)
    >>> model.predict(np.ones((2, 3, 4, 4), np.float32)).shape
    (2, 3, 4, 4)
    """

    _ranks = (3,)
    _layout = "(batch, channels, height, width)"


@register_layer
class LayerNorm(_Normalization):
    """Layer normalisation over the last axis of each sample, like
    ``torch.nn.LayerNorm(normalized_features)``; input ``(batch, ..., normalized_features)``,
    output of the same shape and dtype.

    Parameters
    ----------
    normalized_features : int
        The width of the last axis.
    eps : float, default 1e-5
        Added to the variance before its square root.
    elementwise_affine : bool, default True
        Learn a scale ``weight`` (ones) and shift ``bias`` (zeros) per feature.

    Examples
    --------
    >>> import fastnn as fnn
    >>> model = fnn.Sequential([fnn.LayerNorm(4)], seed=0)
    >>> y = model.predict(np.array([[1.0, 2.0, 3.0, 4.0]], np.float32))
    >>> y.dtype, round(float(y.mean()), 6), round(float(y.std()), 3)
    (dtype('float32'), 0.0, 1.0)
    """

    input_argument = "normalized_features"
    lengths_policy = "keep"
    attribute_aliases = {"epsilon": "eps", "normalized_shape": "normalized_features"}  # Keras, PyTorch

    def __init__(self, normalized_features: int, eps: float = 1e-5, elementwise_affine: bool = True):
        super().__init__(normalized_features, eps, elementwise_affine, "elementwise_affine")

    def build(self, input_shape, dtype):
        shape = super().build(input_shape, dtype)
        self._inv_std_rows = self.workspace(inv_std=shape[:-1])
        return shape

    def forward_calls(self, x, ctx):
        ws = self._workspace(x.shape[0], ctx.arena)
        f = self.num_features
        inv_std = self._inv_std_rows(x.shape[0], ctx.arena)["inv_std"].reshape(-1)
        return [
            (
                self.K.layernorm_forward,
                (
                    rows(x, f),
                    self.weight,
                    self.bias,
                    rows(ws["y"], f),
                    rows(ws["x_hat"], f),
                    inv_std,
                    self.eps,
                    self.affine,
                ),
            )
        ], ws["y"]

    def backward_calls(self, grad_y, ctx, need_grad_x):
        m = grad_y.shape[0]
        ws = self._workspace(m, ctx.arena)
        f = self.num_features
        g = rows(grad_y, f)
        args = (
            g,
            rows(ws["x_hat"], f),
            self._inv_std_rows(m, ctx.arena)["inv_std"].reshape(-1),
            self.weight,
            rows(ws["grad_x"], f),
            self.grad_weight,
            self.grad_bias,
            self._scratch(g.shape[0]),
            self.affine,
        )
        return [(self.K.layernorm_backward, args)], ws["grad_x"]

    def get_config(self):
        return {"normalized_features": self.num_features, "eps": self.eps, "elementwise_affine": self.affine}
