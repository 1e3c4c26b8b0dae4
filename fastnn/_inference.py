"""Inference plans: ``predict``, ``evaluate`` and the validation pass of ``fit`` as recorded
kernel calls at every batch size (CPU models whose layers are all plannable).

A plan is the evaluation-mode forward of ``rows`` samples, recorded once on fixed buffers and
run through :class:`fastnn._fused.CallRunner` (one compiled call once it has tiered up). At
plan time:

- a Dense layer, the eval-mode BatchNorm1d after it and an activation layer after that become
  one :func:`~fastnn.kernels.inference.dense_infer` call: the normalisation is a per-column
  scale and shift applied in the GEMM tiles' epilogue with the activation, output written once.
  The scale and shift are computed from the live weights and running statistics inside the
  plan, at every call (O(features)), so a plan is never stale after a training step, a load or
  a direct write into the parameters;
- a convolution followed by eval-mode batch norm runs with the scale folded into a copy of its
  weights, refolded at every call the same way (a convolution's weights are small next to its work);
- a convolution and the max or global average pooling after it run as the training step's fused
  forward where :mod:`fastnn._conv_pool_fusion` takes the pair (the convolution's full output is
  never stored; the layers' bits);
- layers that do nothing in evaluation mode (Dropout) are skipped;
- the input rows are the caller's array and the last Dense layer writes into the returned
  array (no copies), through the runner's ``slots``.

Large inputs run in chunks of :data:`CHUNK_ROWS` rows (every layer over one chunk, then the
next), so a chunk's activations stay in cache between layers.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from . import _conv_pool_fusion, _parallel_compile
from ._fused import CallRunner, rebindable
from .kernels import inference as K
from .kernels.activations import IDENTITY, ROWWISE_CODES, activation_forward
from .kernels.checks import all_finite
from .layers.activation import Activation
from .layers.base import Context, flat_rows, rows, walk_layers
from .layers.conv import Conv1d, Conv2d
from .layers.dense import Dense
from .layers.dropout import Dropout
from .layers.normalization import BatchNorm1d
from .layers.pooling import GlobalAvgPool, MaxPool2d

#: pooling layers that may fuse with the convolution before them (:meth:`_Recorder._conv_pool`)
_POOLS = (MaxPool2d, GlobalAvgPool)
#: rows per chunk of a large prediction (see the module docstring; benchmarks/RESULTS.md)
CHUNK_ROWS = 256
_MAX_PLANS = 4  # per model, beside its training plans (a chunk size and a remainder or two)
#: plans of at most this many rows of float inputs check that the rows are finite inside their
#: compiled call, so that a small prediction crosses into compiled code once, not twice; larger
#: plans leave it to the caller's check (the general path's, made once for all chunks)
CHECKED_ROWS = 16


def _transparent(layer) -> bool:
    """Whether ``layer`` does nothing in evaluation mode (Dropout: no calls, its input out)."""
    return isinstance(layer, Dropout)


class _Recorder:
    """Builds the calls of one plan: a walk over the layers that folds the patterns above."""

    def __init__(self, model, m: int, x: np.ndarray, out: np.ndarray):
        self.model, self.layers, self.m, self.out = model, list(model.layers), m, out
        self.calls: list = []
        self.h, self.lengths = x, None
        self._unit_scale: np.ndarray | None = None

    def _ones(self, n: int, dtype) -> np.ndarray:
        """n ones: a view of one buffer per plan (one argument fewer per layer in the fused call)."""
        widest = max((layer.units for layer in self.layers if isinstance(layer, Dense)), default=n)
        if self._unit_scale is None or self._unit_scale.dtype != dtype:
            self._unit_scale = np.ones(max(widest, n), dtype)
        return self._unit_scale[:n]

    def _next(self, i: int) -> int:
        """Index of the first layer from ``i`` that is not transparent at the current input."""
        while i < len(self.layers) and _transparent(self.layers[i]):
            i += 1
        return i

    def _batchnorm_after(self, i: int, shape) -> BatchNorm1d | None:
        layer = self.layers[i] if i < len(self.layers) else None
        if (
            isinstance(layer, BatchNorm1d)
            and layer.track_running_stats
            and layer.input_shape == shape
            and layer.device == "cpu"
        ):
            return layer
        return None

    def _activation_after(self, i: int, code: int, rowwise_ok: bool):
        layer = self.layers[i] if i < len(self.layers) else None
        if code == IDENTITY and isinstance(layer, Activation) and (rowwise_ok or layer.code < ROWWISE_CODES):
            return layer
        return None

    def record(self) -> np.ndarray:
        i = self._next(0)
        while i < len(self.layers):
            layer = self.layers[i]
            if isinstance(layer, Dense):
                i = self._dense(i)
            elif (
                isinstance(layer, (Conv1d, Conv2d))
                and layer.code == IDENTITY
                and self._batchnorm_after(self._next(i + 1), layer.output_shape)
            ):
                i = self._conv_batchnorm(i)
            elif isinstance(layer, (Conv1d, Conv2d)) and isinstance(self._layer(self._next(i + 1)), _POOLS):
                i = self._conv_pool(i)
            else:
                self.calls += self._forward(i)
                i += 1
            i = self._next(i)
        return self.h

    def _layer(self, i: int):
        """Layer ``i``, or None past the last."""
        return self.layers[i] if i < len(self.layers) else None

    def _forward(self, i: int) -> list:
        """Layer i's own forward calls at the current input (self.h and self.lengths move past it)."""
        ctx = Context(False, "infer", self.lengths)
        calls, self.h = self.layers[i].forward_calls(self.h, ctx)
        self.lengths = self.layers[i].output_lengths(ctx)
        return calls

    def _conv_pool(self, i: int) -> int:
        """A convolution and the max or global average pooling after it: one fused call where
        :mod:`fastnn._conv_pool_fusion` takes the pair (the training step's kernels; the
        convolution's output pooled from cache, never stored: RESULTS.md, session 13), else the
        two layers' own calls. Returns the index after the pooling layer."""
        j = self._next(i + 1)
        per_layer = [self._forward(i), self._forward(j)]
        for calls in _conv_pool_fusion.fuse_forward(per_layer, _conv_pool_fusion.find_pairs(per_layer)):
            self.calls += calls
        return j + 1

    def _fold_scale_shift(self, bias, bn):
        """(scale, shift) buffers and the call that fills them from ``bias`` and ``bn``'s live state."""
        scale, shift = (np.empty(bias.shape[0], bias.dtype) for _ in range(2))
        self.calls.append(
            (K.batchnorm_fold, (bias, bn.weight, bn.bias, bn.running_mean, bn.running_var, scale, shift, bn.eps))
        )
        return scale, shift

    def _dense(self, i: int) -> int:
        """Dense [BatchNorm1d] [activation] as one dense_infer call; returns the next layer's index."""
        dense = self.layers[i]
        j = self._next(i + 1)
        bn = self._batchnorm_after(j, dense.output_shape) if len(dense.output_shape) == 1 else None
        if bn is not None and dense.code == IDENTITY:
            scale, shift = self._fold_scale_shift(dense.bias, bn)
            j = self._next(j + 1)
        else:
            scale, shift = self._ones(dense.units, dense.bias.dtype), dense.bias
        code, alpha = dense.code, dense.alpha
        act = self._activation_after(j, code, True)
        if act is not None:
            code, alpha = act.code, act.alpha
            j += 1
        last = self._next(j) == len(self.layers)
        shape = (self.m, *dense.output_shape)
        y = self.out if last and self.out.shape == shape else dense.preactivation_rows(self.m, "infer").reshape(shape)
        y_rows, rowwise = rows(y, dense.units), code >= ROWWISE_CODES
        epilogue = IDENTITY if rowwise else code
        self.calls.append(
            (K.dense_infer, (rows(self.h, dense.in_features), dense.weight, scale, shift, y_rows, epilogue, alpha))
        )
        if rowwise:  # softmax rows after the GEMM (dense_infer compiles the elementwise epilogue only)
            self.calls.append((activation_forward, (y_rows, y_rows, code, alpha)))
        self.h = y
        return j

    def _conv_batchnorm(self, i: int) -> int:
        """A convolution without activation, the batch norm after it and an elementwise activation
        after that: the convolution's own kernel on weights and bias with the normalisation folded in."""
        conv = self.layers[i]
        j = self._next(i + 1)
        bn = self._batchnorm_after(j, conv.output_shape)
        j = self._next(j + 1)
        code, alpha = IDENTITY, 0.0
        act = self._activation_after(j, code, False)
        if act is not None:
            code, alpha = act.code, act.alpha
            j += 1
        ((fn, args),) = conv.forward_calls(self.h, Context(False, "infer", self.lengths))[0]
        scale, shift = self._fold_scale_shift(conv.bias, bn)
        w = conv.weight.reshape((conv.weight.shape[0], -1))
        folded = np.empty_like(w)
        self.calls.append((K.scale_rows, (w, scale, folded)))
        # conv2d_forward(x, w, b, col, zcol, z, y, *geometry, groups, code, alpha)
        self.calls.append((fn, (args[0], folded.reshape(args[1].shape), shift, *args[3:-2], code, alpha)))
        self.h = args[6].reshape((self.m, *conv.output_shape))
        return j


class InferencePlan:
    """The evaluation-mode forward of ``m`` rows: ``run(X, out)`` writes the outputs of rows X
    (m, *input_shape) into out (m, *output_shape)."""

    def __init__(self, model, m: int):
        self.x = np.empty((m, *model.input_shape), model.input_dtype)
        self.out = np.empty((m, *model.output_shape), model.dtype)
        # read by outputs() at every call (plain attributes: one lookup each)
        self._x_shape, self._x_dtype = self.x.shape, self.x.dtype
        self._out_shape, self._out_dtype = self.out.shape, self.out.dtype
        first = model.layers[0]
        # inputs that predict_small may take unchanged: float rows with no per-layer checks (indices, lengths)
        self.plain_input = (
            model.input_dtype == model.dtype
            and getattr(first, "check_indices", None) is None
            and getattr(first, "check_sequences", None) is None
        )
        recorder = _Recorder(model, m, self.x, self.out)
        h = recorder.record()
        calls = recorder.calls
        self.checks_input = self.plain_input and m <= CHECKED_ROWS
        if self.checks_input:  # call 0, whose result the run returns
            calls = [(all_finite, (flat_rows(self.x),)), *calls]
        # the last output is copied only when no Dense layer could write it into ``out``
        self._copy_from = None if h is self.out else h
        self._x_slot = rebindable(calls, self.x) and (self._copy_from is None or not np.shares_memory(h, self.x))
        slots: tuple[np.ndarray, ...] = (self.x,) if self._x_slot else ()
        self._out_slot = self._copy_from is None
        if self._out_slot:
            slots += (self.out,)
        self.runner = CallRunner(calls, returns=0 if self.checks_input else None, slots=slots)
        # outputs() may hand X and a new output array straight to the fused function
        self._lean = self.checks_input and self._x_slot and self._out_slot
        self._direct: Callable | None = None  # the runner's fused function, bound (FusedCalls.slot_caller), once fused
        # ... and its compiled version called without Numba's dispatch (FusedCalls.typed_slot_caller),
        # for outputs()' lean call only: X of the plan's shape and dtype with flags.carray, a new output
        self._typed: Callable | None = None

    def outputs(self, X: np.ndarray) -> np.ndarray | None:
        """A new array of the outputs of the ndarray ``X`` when X is rows this plan runs as they are
        (its input shape and dtype, C-contiguous, finite), else None. The caller holds the model's lock."""
        flags, dtype = X.flags, X.dtype  # (each a new object at every read: read once)
        if not (X.shape == self._x_shape and (dtype is self._x_dtype or dtype == self._x_dtype) and flags.c_contiguous):
            return None
        typed = self._typed
        if typed is not None and flags.carray:
            # the serving loop's call: the fused function on X itself, its finite check inside
            out = np.empty(self._out_shape, self._out_dtype)
            return out if typed(X, out) else None
        if not (self.checks_input or all_finite(flat_rows(X))):
            return None
        out = np.empty(self._out_shape, self._out_dtype)
        return out if self.run(X, out) else None

    def run(self, X: np.ndarray, out: np.ndarray) -> bool:
        """Write the outputs of rows ``X`` into ``out``. Returns False when the plan checks its
        input (:attr:`checks_input`) and X holds NaN or infinity (``out`` is then meaningless), else True."""
        flags = X.flags
        if self._x_slot and flags.c_contiguous and flags.writeable and X.dtype == self.x.dtype:
            arrays: tuple[np.ndarray, ...] = (X,)
        else:
            self.x[...] = X
            arrays = (self.x,) if self._x_slot else ()
        if self._out_slot:
            arrays += (out,)
        call = self._direct
        if call is None:  # the compiled function itself once the runner has fused (nothing in between)
            call = self._direct = self.runner.slot_caller() if arrays else None
            if call is not None and self._lean:
                self._typed = self.runner.typed_slot_caller()
        finite = (self.runner if call is None else call)(*arrays) is not False
        if self._copy_from is not None:
            out[...] = self._copy_from
        return finite


def supported(model) -> bool:
    """Whether :func:`predict` can run ``model`` (a CPU model of plannable layers)."""
    return model.device == "cpu" and model.plannable


def plan(model, m: int) -> InferencePlan:
    """The model's inference plan for ``m`` rows (built once; kept among the model's plans, so a
    rebuild of the model's buffers drops it)."""
    return model.cached_plan(("fused-infer", m), lambda: InferencePlan(model, m), _MAX_PLANS)


def predict_small(model, X, batch_size) -> np.ndarray | None:
    """Outputs of ``X`` when it is a repeated small call (the serving loop's batch 1), else None.

    The call qualifies when the plan for its rows exists already and ``X`` passes, cheapest
    first, the checks of the general path's fast lane (:func:`fastnn._validation.check_input`):
    an ndarray of the plan's input shape and dtype, C-contiguous, all finite (checked inside the
    plan's call when it has few rows: :data:`CHECKED_ROWS`), of at most ``batch_size`` rows, on an
    up-to-date CPU model. Otherwise the caller takes the general path, which converts the input or
    raises its validation error. Takes the model's lock.
    """
    if type(X) is not np.ndarray or type(batch_size) is not int or X.ndim < 2 or not model.built:
        return None
    m = X.shape[0]
    found = model.recorded_plan(("fused-infer", m)) if model.device == "cpu" else None
    if found is None or not found.plain_input or m > batch_size:
        return None
    lock = model.lock  # acquire/release: a ``with`` block costs ~0.1 us more
    lock.acquire()
    try:
        return found.outputs(X)  # None (not finite, say): the general path raises the error
    finally:
        lock.release()


def expect(model, n: int, batch_size: int) -> None:
    """Record now the first plan :func:`predict` runs on ``n`` rows, and have its kernels compile
    with the next first run of a step's calls (``fastnn._parallel_compile.expect``)."""
    if supported(model) and n >= 1:
        _parallel_compile.expect(plan(model, min(n, _chunk_rows(model, batch_size))).runner.calls)


def _batch_statistics(model) -> bool:
    """Whether a layer of ``model`` normalises with its batch's statistics in evaluation mode
    (BatchNorm with ``track_running_stats=False``): its outputs depend on the rows passed together."""
    return any(isinstance(layer, BatchNorm1d) and not layer.track_running_stats for layer in walk_layers(model.layers))


def _chunk_rows(model, batch_size: int) -> int:
    """The rows of :func:`predict`'s chunks for ``batch_size`` (>= 1): at most :data:`CHUNK_ROWS`,
    except for a model with batch statistics in evaluation, whose passes are ``batch_size`` rows, as asked."""
    return batch_size if batch_size < CHUNK_ROWS or _batch_statistics(model) else CHUNK_ROWS


def predict(model, X: np.ndarray, batch_size: int) -> np.ndarray:
    """Outputs (n, *output_shape) of checked rows X, in evaluation mode, in chunks of at most
    ``min(batch_size, CHUNK_ROWS)`` rows. The caller holds the model's lock."""
    n = X.shape[0]
    out = np.empty((n, *model.output_shape), model.dtype)
    chunk = _chunk_rows(model, batch_size)  # batch_size >= 1 (checked by the caller)
    if n <= chunk:
        plan(model, n).run(X, out)
        return out
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        plan(model, hi - lo).run(X[lo:hi], out[lo:hi])
    return out


__all__ = ["CHECKED_ROWS", "CHUNK_ROWS", "InferencePlan", "expect", "plan", "predict", "predict_small", "supported"]
