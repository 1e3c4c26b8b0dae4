"""Tools to see inside training, the checks practitioners run before they trust a network.

==========================  =====================================================================
``gradient_norms``          L2 norm of each parameter's gradient for one batch
``layer_gradient_norms``    one gradient norm per weight-holding layer (norms across depth)
``weight_norms``            L2 norm of each parameter
``update_ratios``           ||update|| / ||weight|| of one optimizer step (healthy: ~1e-3)
``activations``             copies of every layer's output for a batch
``activation_stats``        per layer: mean, std, dead ReLU units, saturated sigmoid/tanh units
``find_nonfinite``          the first layer whose output or gradient turns NaN/inf
``overfit_one_batch``       can the model drive the loss of one batch near zero?
``gradient_check``          central differences vs ``layer.backward`` for your own layers
``lr_range_test``           exponential learning-rate sweep with a suggested learning rate
==========================  =====================================================================

Functions that train (``update_ratios``, ``overfit_one_batch``, ``lr_range_test``) put the
weights, layer buffers and optimizer state back afterwards unless told otherwise.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _validation as V
from . import backend

if TYPE_CHECKING:
    from .layers import Layer
    from .model import Sequential
    from .optim import Optimizer

#: activations whose units can die (output exactly zero for every sample)
_RELU_LIKE = ("relu",)
#: activation name -> (low, high): an output outside [low, high] counts as saturated
_SATURATION = {"sigmoid": (0.01, 0.99), "tanh": (-0.99, 0.99)}


# -------------------------------------------------------------------------------- gradients
def gradient_norms(model: Sequential, X: ArrayLike, y: ArrayLike, *, training: bool = True) -> dict[str, float]:
    """The L2 norm of each parameter's gradient for one batch.

    Runs one forward and backward pass (no update) with the compiled loss; weights unchanged.

    Parameters
    ----------
    model : Sequential
        A compiled model.
    X : array-like
        A batch of inputs ``(batch, *input_shape)``.
    y : array-like
        Its targets, as ``fit`` takes them.
    training : bool, default True
        Run the forward in training mode (dropout on, batch statistics) or evaluation mode.

    Returns
    -------
    dict of str to float
        Parameter name (``"0.weight"`` ...) -> norm.

    Examples
    --------
    >>> import fastnn as fnn
    >>> from fastnn import diagnostics
    >>> X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32); y = np.array([0, 1, 1, 0])
    >>> model = fnn.Sequential([fnn.Dense(2, 8, activation="relu"), fnn.Dense(8, 2)], seed=0)
    >>> model = model.compile(loss="cross_entropy", optimizer="adam")
    >>> sorted(diagnostics.gradient_norms(model, X, y))
    ['0.bias', '0.weight', '1.bias', '1.weight']
    """
    _, grads = model.loss_and_grads(X, y, training=training)
    return {name: float(np.linalg.norm(g)) for name, g in grads.items()}


def layer_gradient_norms(model: Sequential, X: ArrayLike, y: ArrayLike, *, training: bool = True) -> list[float]:
    """One gradient norm per layer that holds weights (matrices, convolution kernels, tables), first layer first.

    Parameters
    ----------
    model : Sequential
        A compiled model.
    X : array-like
        A batch of inputs ``(batch, *input_shape)``.
    y : array-like
        Its targets, as ``fit`` takes them.
    training : bool, default True
        Run the forward in training mode (dropout on, batch statistics) or evaluation mode.

    Returns
    -------
    list of float
        The L2 norm of the gradients of all weights (parameters of 2 or more dimensions: not
        biases or norm scales) of each such layer (a Residual's block and projection count as one
        layer).

    Examples
    --------
    >>> import fastnn as fnn
    >>> from fastnn import diagnostics
    >>> X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32); y = np.array([0, 1, 1, 0])
    >>> model = fnn.Sequential([fnn.Dense(2, 8, activation="relu"), fnn.Dense(8, 2)], seed=0)
    >>> model = model.compile(loss="cross_entropy", optimizer="adam")
    >>> len(diagnostics.layer_gradient_norms(model, X, y))
    2
    """
    gradient_norms(model, X, y, training=training)
    totals: dict[int, float] = {}
    for name, value, grad in model.named_parameters():
        if value.ndim >= 2:  # Dense and recurrent matrices, conv kernels, embedding tables
            layer = int(name.split(".")[0])
            totals[layer] = totals.get(layer, 0.0) + float(np.dot(grad.ravel(), grad.ravel()))
    return [float(np.sqrt(totals[k])) for k in sorted(totals)]


def weight_norms(model: Sequential) -> dict[str, float]:
    """The L2 norm of each parameter.

    Parameters
    ----------
    model : Sequential
        A built model.

    Returns
    -------
    dict of str to float
        Parameter name -> norm.

    Examples
    --------
    >>> import fastnn as fnn
    >>> from fastnn import diagnostics
    >>> X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32); y = np.array([0, 1, 1, 0])
    >>> model = fnn.Sequential([fnn.Dense(2, 8, activation="relu"), fnn.Dense(8, 2)], seed=0)
    >>> model = model.compile(loss="cross_entropy", optimizer="adam")
    >>> diagnostics.weight_norms(model)["0.bias"]
    0.0
    """
    return {name: float(np.linalg.norm(value)) for name, value, _ in model.named_parameters()}


# -------------------------------------------------------------------------------- snapshots
class _Snapshot:
    """The model's checkpoint record (weights, buffers, optimizer state, training state) and its
    optimizer object, put back by :meth:`restore`."""

    def __init__(self, model):
        self.model = model
        self.record = model.snapshot()
        self.optimizer = model.optimizer

    def restore(self) -> None:
        if self.optimizer is not None and self.model.optimizer is not self.optimizer:
            self.model.compile(self.model.loss, self.optimizer)
        self.model.restore(self.record)


def update_ratios(model: Sequential, X: ArrayLike, y: ArrayLike) -> dict[str, float]:
    """``||update|| / ||weight||`` per parameter for one training step; the step is undone.

    Rule of thumb: around 1e-3 is healthy, 1e-1 and above means the learning rate is too high,
    below 1e-5 too low (CS231n).

    Parameters
    ----------
    model : Sequential
        A compiled model.
    X : array-like
        A batch of inputs ``(batch, *input_shape)``.
    y : array-like
        Its targets, as ``fit`` takes them.

    Returns
    -------
    dict of str to float
        Parameter name -> ratio (NaN for a parameter that is all zeros).

    Examples
    --------
    >>> import fastnn as fnn
    >>> from fastnn import diagnostics
    >>> X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32); y = np.array([0, 1, 1, 0])
    >>> model = fnn.Sequential([fnn.Dense(2, 8, activation="relu"), fnn.Dense(8, 2)], seed=0)
    >>> model = model.compile(loss="cross_entropy", optimizer="adam")
    >>> ratios = diagnostics.update_ratios(model, X, y)
    >>> 1e-4 < ratios["0.weight"] < 1e-1
    True
    """
    X, y = model.check_data(X, y)
    snap = _Snapshot(model)
    before = {name: backend.host_copy(value) for name, value, _ in model.named_parameters()}
    try:
        model.train()
        model.train_step(X, y)
        ratios = {}
        for name, value, _ in model.named_parameters():
            norm = float(np.linalg.norm(before[name]))
            delta = float(np.linalg.norm(value.astype(np.float64) - before[name]))
            ratios[name] = delta / norm if norm > 0 else math.nan
    finally:
        snap.restore()
    return ratios


# -------------------------------------------------------------------------------- activations
def activations(model: Sequential, X: ArrayLike, *, training: bool = False) -> list[NDArray]:
    """A copy of every (top-level) layer's output for a batch, first layer first.

    Parameters
    ----------
    model : Sequential
        A built model.
    X : array-like
        Inputs ``(batch, *input_shape)``.
    training : bool, default False
        Run the forward in training mode (dropout on, batch statistics) or evaluation mode.

    Returns
    -------
    list of ndarray
        ``(batch, *output_shape)`` of each layer, the model's dtype.

    Examples
    --------
    >>> import fastnn as fnn
    >>> from fastnn import diagnostics
    >>> X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32); y = np.array([0, 1, 1, 0])
    >>> model = fnn.Sequential([fnn.Dense(2, 8, activation="relu"), fnn.Dense(8, 2)], seed=0)
    >>> model = model.compile(loss="cross_entropy", optimizer="adam")
    >>> [out.shape for out in diagnostics.activations(model, X)]
    [(4, 8), (4, 2)]
    """
    return model.layer_outputs(X, training=bool(training))


@dataclass
class ActivationStats:
    """Statistics of one layer's output over a batch.

    Parameters
    ----------
    index : int
        The layer's position in the model.
    layer : str
        Its repr.
    activation : str or None
        Its activation (fused or separate), if any.
    mean, std : float
        Of all its outputs.
    dead_fraction : float or None
        Share of units that are zero for every sample (and every position: a unit of a
        convolution's output is a channel, of a sequence's a feature); ReLU outputs only, else None.
    saturated_fraction : float or None
        Share of outputs beyond 0.99 in magnitude (tanh) or outside [0.01, 0.99] (sigmoid),
        else None.

    Examples
    --------
    >>> from fastnn.diagnostics import output_stats
    >>> output_stats(np.array([[0.0, 1.0], [0.0, 3.0]]), "relu").dead_fraction
    0.5
    """

    index: int
    layer: str
    activation: str | None
    mean: float
    std: float
    dead_fraction: float | None
    saturated_fraction: float | None


def _activation_name(layer) -> str | None:
    name = getattr(layer, "activation", None)
    return name if isinstance(name, str) else None


def output_stats(
    output: ArrayLike, activation: str | None, index: int = 0, layer: str = "", unit_axis: int = -1
) -> ActivationStats:
    """The :class:`ActivationStats` of one output.

    Parameters
    ----------
    output : array-like
        ``(batch, units)`` values, or ``(batch, *shape)`` with the units on ``unit_axis``.
    activation : str or None
        The activation that produced them.
    index : int, default 0
        The layer's position (recorded).
    layer : str, default ""
        The layer's repr (recorded).
    unit_axis : int, default -1
        The axis of the units: 1 for channels first ``(batch, channels, *spatial)``; a unit is dead
        when it is zero at every other index.

    Returns
    -------
    ActivationStats
        Mean, std, dead and saturated fractions.

    Examples
    --------
    >>> from fastnn.diagnostics import output_stats
    >>> output_stats(np.array([[0.995], [0.5]]), "sigmoid").saturated_fraction
    0.5
    """
    out = np.asarray(output, np.float64)
    dead = saturated = None
    if activation in _RELU_LIKE:
        units = np.moveaxis(out, unit_axis, -1).reshape(-1, out.shape[unit_axis])
        dead = float(np.mean(np.all(units == 0.0, axis=0)))
    if activation in _SATURATION:
        low, high = _SATURATION[activation]
        saturated = float(np.mean((out < low) | (out > high)))
    return ActivationStats(index, layer, activation, float(out.mean()), float(out.std()), dead, saturated)


def activation_stats(model: Sequential, X: ArrayLike, *, training: bool = False) -> list[ActivationStats]:
    """Per top-level layer: mean and std of its output, dead ReLU units, saturated sigmoid/tanh outputs.

    Parameters
    ----------
    model : Sequential
        A built model.
    X : array-like
        Inputs ``(batch, *input_shape)``.
    training : bool, default False
        Run the forward in training mode (dropout on, batch statistics) or evaluation mode.

    Returns
    -------
    list of ActivationStats
        One per layer, first layer first.

    Examples
    --------
    >>> import fastnn as fnn
    >>> from fastnn import diagnostics
    >>> X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32); y = np.array([0, 1, 1, 0])
    >>> model = fnn.Sequential([fnn.Dense(2, 8, activation="relu"), fnn.Dense(8, 2)], seed=0)
    >>> model = model.compile(loss="cross_entropy", optimizer="adam")
    >>> stats = diagnostics.activation_stats(model, X)
    >>> stats[0].activation, 0.0 <= stats[0].dead_fraction <= 1.0
    ('relu', True)
    """
    outputs = activations(model, X, training=training)
    stats, axis = [], -1
    for i, (layer, out) in enumerate(zip(model.layers, outputs)):
        axis = _unit_axis(layer, axis)
        stats.append(output_stats(out, _activation_name(layer), i, repr(layer), axis if out.ndim > 2 else -1))
    return stats


def _unit_axis(layer, previous: int) -> int:
    """The axis of the units of ``layer``'s output (batch axis 0): 1 after a convolution, pooling
    or batch norm over channels (channels first), the input's for elementwise layers, else the
    last (features)."""
    from .layers import AvgPool1d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv1d, Conv2d, MaxPool1d, MaxPool2d
    from .layers.activation import Activation
    from .layers.dropout import Dropout
    from .layers.residual import Residual

    if isinstance(layer, (Activation, Dropout)):
        return previous
    if isinstance(layer, Residual):
        for inner in layer.block:
            previous = _unit_axis(inner, previous)
        return previous
    channels_first = (Conv1d, Conv2d, MaxPool1d, MaxPool2d, AvgPool1d, AvgPool2d, BatchNorm2d)
    if isinstance(layer, channels_first) or (isinstance(layer, BatchNorm1d) and len(layer.input_shape or ()) == 2):
        return 1
    return -1


# -------------------------------------------------------------------------------- NaN / inf
@dataclass
class NonFiniteReport:
    """Where values first went NaN or inf (:func:`find_nonfinite`).

    Parameters
    ----------
    index : int or None
        The layer's position; None for the loss.
    layer : str
        Its repr.
    where : {"output", "loss", "gradient"}
        The forward output, the loss, or a gradient (the input gradient or a parameter's).
    detail : str, default ""
        What was non-finite (counts, parameter names).

    Examples
    --------
    >>> from fastnn.diagnostics import NonFiniteReport
    >>> str(NonFiniteReport(1, "Dense(8, 2)", "output", "3 of 8 values"))
    'layer 1 (Dense(8, 2)): non-finite output (3 of 8 values)'
    """

    index: int | None
    layer: str
    where: str
    detail: str = ""

    def __str__(self) -> str:
        if self.index is None:
            return f"non-finite {self.where}: {self.detail}"
        return f"layer {self.index} ({self.layer}): non-finite {self.where}" + (
            f" ({self.detail})" if self.detail else ""
        )


def find_nonfinite(model: Sequential, X: ArrayLike, y: ArrayLike, *, training: bool = True) -> NonFiniteReport | None:
    """Name the first layer whose output or gradient contains NaN or inf.

    Runs one forward and backward pass (the engine's ``loss_and_grads``: no update, running
    statistics unchanged, sequence lengths honoured); outputs are searched from the first
    layer, gradients from the last.

    Parameters
    ----------
    model : Sequential
        A compiled model.
    X : array-like
        A batch of inputs ``(batch, *input_shape)``.
    y : array-like
        Its targets, as ``fit`` takes them.
    training : bool, default True
        Run the forward in training mode (dropout on, batch statistics) or evaluation mode.

    Returns
    -------
    NonFiniteReport or None
        The first non-finite place; None when everything is finite.

    Examples
    --------
    >>> import fastnn as fnn
    >>> from fastnn import diagnostics
    >>> X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32); y = np.array([0, 1, 1, 0])
    >>> model = fnn.Sequential([fnn.Dense(2, 8, activation="relu"), fnn.Dense(8, 2)], seed=0)
    >>> model = model.compile(loss="cross_entropy", optimizer="adam")
    >>> print(diagnostics.find_nonfinite(model, X, y))
    None
    >>> model.layers[0].weight[...] = 3e38           # float32 overflows where both inputs are 1
    >>> print(diagnostics.find_nonfinite(model, X, y))
    layer 0 (Dense(2, 8, activation='relu')): non-finite output (8 of 32 values)
    """
    loss, _ = model.loss_and_grads(X, y, training=bool(training))  # every layer's output and gradient kept
    for i, layer in enumerate(model.layers):
        h = backend.to_host(layer.last_output)
        if not np.isfinite(h).all():
            return NonFiniteReport(i, repr(layer), "output", f"{int(np.sum(~np.isfinite(h)))} of {h.size} values")
    if not math.isfinite(loss):
        return NonFiniteReport(None, "", "loss", f"loss = {loss}")
    params_of: dict = {}
    for name, _, g in model.named_parameters():
        params_of.setdefault(int(name.split(".")[0]), []).append((name, g))
    for i in range(len(model.layers) - 1, -1, -1):
        layer = model.layers[i]
        bad = [name for name, g in params_of.get(i, []) if not np.isfinite(backend.to_host(g)).all()]
        grad = layer.last_grad_input
        if grad is not None and not np.isfinite(backend.to_host(grad)).all():
            bad.append("input gradient")
        if bad:
            return NonFiniteReport(i, repr(layer), "gradient", ", ".join(bad))
    return None


# -------------------------------------------------------------------------------- overfit one batch
@dataclass
class OverfitResult:
    """The outcome of :func:`overfit_one_batch` (true when it succeeded).

    Parameters
    ----------
    losses : list of float
        The loss of each step.
    final_loss : float
        The batch's loss after training (evaluation mode).
    tolerance : float
        The loss counted as near zero.
    success : bool
        Whether ``final_loss`` is finite and ``<= tolerance``.
    accuracy : float, optional
        The batch's accuracy after training, for classifiers.

    Examples
    --------
    >>> from fastnn.diagnostics import OverfitResult
    >>> bool(OverfitResult([1.0, 0.001], 0.001, 0.01, True))
    True
    """

    losses: list[float]
    final_loss: float
    tolerance: float
    success: bool
    accuracy: float | None = None

    def __bool__(self) -> bool:
        return self.success


def overfit_one_batch(
    model: Sequential,
    X: ArrayLike,
    y: ArrayLike,
    *,
    steps: int = 200,
    lr: float = 1e-2,
    optimizer: Optimizer | None = None,
    tolerance: float | None = None,
    restore: bool = True,
) -> OverfitResult:
    """Train on one batch and report whether its loss goes near zero.

    A network that cannot memorise a handful of samples has a bug (wrong labels, a broken
    layer, too little capacity).

    Parameters
    ----------
    model : Sequential
        A compiled model.
    X : array-like
        A batch of inputs ``(batch, *input_shape)``.
    y : array-like
        Its targets, as ``fit`` takes them.
    steps : int, default 200
        Training steps.
    lr : float, default 1e-2
        Adam's learning rate when no ``optimizer`` is given.
    optimizer : Optimizer, optional
        The optimizer to train with.
    tolerance : float, optional
        The loss counted as near zero; default 1% of the first step's loss.
    restore : bool, default True
        Put the model's weights and optimizer back afterwards.

    Returns
    -------
    OverfitResult
        Losses per step, the final loss, and whether it succeeded.

    Raises
    ------
    RuntimeError
        When the model has no loss (call ``compile`` first).

    Examples
    --------
    >>> import fastnn as fnn
    >>> from fastnn import diagnostics
    >>> X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32); y = np.array([0, 1, 1, 0])
    >>> model = fnn.Sequential([fnn.Dense(2, 8, activation="relu"), fnn.Dense(8, 2)], seed=0)
    >>> model = model.compile(loss="cross_entropy", optimizer="adam")
    >>> result = diagnostics.overfit_one_batch(model, X, y, steps=300, lr=0.05)
    >>> result.success, result.accuracy
    (True, 1.0)
    """
    from .optim import Adam

    if model.loss is None:
        raise RuntimeError("overfit_one_batch needs a loss: call model.compile(loss=...) first")
    steps = V.check_int(steps, "steps", minimum=1)
    if tolerance is not None:
        tolerance = V.check_float(tolerance, "tolerance", low=0.0)
    X, y = model.check_data(X, y)
    snap = _Snapshot(model)
    opt = optimizer if optimizer is not None else Adam(lr=V.check_float(lr, "lr", low=0.0, low_inclusive=False))
    losses: list[float] = []
    try:
        model.compile(model.loss, opt)
        model.train()
        for _ in range(steps):
            try:
                losses.append(float(model.train_step(X, y)))
            except FloatingPointError:
                losses.append(math.inf)
                break
        metrics = model.validate(X, y) if math.isfinite(losses[-1]) else {"loss": math.inf}
        final = float(metrics["loss"])
        accuracy = metrics.get("accuracy") if math.isfinite(final) else None
    finally:
        if restore:
            snap.restore()
        elif snap.optimizer is not None:
            trained = model.snapshot()
            model.compile(model.loss, snap.optimizer)
            model.restore({**trained, "optimizer": snap.record["optimizer"]})
    tol = 0.01 * losses[0] if tolerance is None else tolerance
    return OverfitResult(losses, final, tol, math.isfinite(final) and final <= tol, accuracy)


# -------------------------------------------------------------------------------- gradient check
@dataclass
class GradientCheck:
    """The outcome of :func:`gradient_check` (true when it passed).

    Errors are the largest ``|analytic - numeric| / max(|analytic|, |numeric|, floor)``.

    Parameters
    ----------
    input_error : float
        The input gradient's error.
    param_errors : dict of str to float
        Each parameter gradient's error.
    tolerance : float, default 1e-5
        The largest error that passes.

    Examples
    --------
    >>> from fastnn.diagnostics import GradientCheck
    >>> check = GradientCheck(1e-9, {"weight": 2e-8})
    >>> check.max_error, check.passed
    (2e-08, True)
    """

    input_error: float
    param_errors: dict[str, float] = field(default_factory=dict)
    tolerance: float = 1e-5

    @property
    def max_error(self) -> float:
        """The largest of the errors.

        Examples
        --------
        >>> from fastnn.diagnostics import GradientCheck
        >>> GradientCheck(1e-9, {"weight": 2e-8, "bias": 3e-10}).max_error
        2e-08
        """
        return max([self.input_error, *self.param_errors.values()])

    @property
    def passed(self) -> bool:
        """Whether every error is at most the tolerance.

        Examples
        --------
        >>> from fastnn.diagnostics import GradientCheck
        >>> GradientCheck(1e-9, {"weight": 2e-8}).passed, GradientCheck(1e-3, {}, tolerance=1e-5).passed
        (True, False)
        """
        return self.max_error <= self.tolerance

    def __bool__(self) -> bool:
        return self.passed


def _relative_error(analytic: np.ndarray, numeric: np.ndarray, floor: float) -> float:
    if analytic.size == 0:
        return 0.0
    denom = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), floor)
    return float(np.max(np.abs(analytic - numeric) / denom))


def gradient_check(
    layer: Layer,
    x: ArrayLike,
    *,
    eps: float = 1e-6,
    training: bool = False,
    seed: int = 0,
    max_checks: int = 200,
    tolerance: float = 1e-5,
    floor: float = 1e-7,
) -> GradientCheck:
    """Check a layer's ``backward`` (yours or ours) against central finite differences.

    A copy of ``layer`` is built in float64 inside a one-layer Sequential (the layer you pass
    is not touched), and the scalar ``L = sum(y * R)`` with a fixed random R is differentiated
    both ways, for the input and for every parameter.

    Parameters
    ----------
    layer : Layer
        The layer to check (unbuilt or built; it is copied).
    x : array-like
        Inputs ``(batch, *input_shape)``, converted to float64.
    eps : float, default 1e-6
        The finite-difference step.
    training : bool, default False
        The mode of the forward; it must be deterministic (dropout is random in training).
    seed : int, default 0
        Seeds R, the elements checked and the copy's weights.
    max_checks : int, default 200
        At most this many randomly chosen elements of each array are perturbed.
    tolerance : float, default 1e-5
        The largest relative error that passes.
    floor : float, default 1e-7
        The smallest denominator of the relative errors.

    Returns
    -------
    GradientCheck
        The errors; true when they all pass.

    Raises
    ------
    ValueError
        When ``x`` has fewer than 2 dimensions.

    Examples
    --------
    >>> import fastnn as fnn
    >>> from fastnn.diagnostics import gradient_check
    >>> x = np.random.default_rng(0).standard_normal((3, 4))
    >>> gradient_check(fnn.Dense(4, 2, activation="tanh"), x).passed
    True
    """
    from .model import Sequential

    x = np.array(x, dtype=np.float64)
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"x must be an array (batch, *input_shape) of at least 2 dimensions, got shape {x.shape}")
    eps = V.check_float(eps, "eps", low=0.0, low_inclusive=False)
    max_checks = V.check_int(max_checks, "max_checks", minimum=1)
    model = Sequential([copy.deepcopy(layer)], dtype="float64", seed=seed, input_shape=x.shape[1:])
    rng = np.random.default_rng(seed)
    R = rng.standard_normal((x.shape[0], *(model.output_shape or ())))

    def loss_at(inp):
        return float(np.sum(model.forward(inp, training) * R))

    model.forward(x, training)
    grad_x = np.array(model.backward(R.copy()))
    analytic_params = {name: backend.host_copy(g) for name, _, g in model.named_parameters()}

    def numeric(target: np.ndarray, flat_idx: np.ndarray, evaluate) -> np.ndarray:
        flat = target.reshape(-1)
        out = np.empty(flat_idx.size)
        for k, j in enumerate(flat_idx):
            old = flat[j]
            flat[j] = old + eps
            plus = evaluate()
            flat[j] = old - eps
            minus = evaluate()
            flat[j] = old
            out[k] = (plus - minus) / (2 * eps)
        return out

    def chosen(size):
        return np.arange(size) if size <= max_checks else rng.choice(size, max_checks, replace=False)

    idx = chosen(x.size)
    input_error = _relative_error(grad_x.reshape(-1)[idx], numeric(x, idx, lambda: loss_at(x)), floor)
    param_errors = {}
    for name, value, _ in model.named_parameters():
        idx = chosen(value.size)
        num = numeric(value, idx, lambda: loss_at(x))
        param_errors[name.split(".", 1)[1]] = _relative_error(analytic_params[name].reshape(-1)[idx], num, floor)
    return GradientCheck(input_error, param_errors, tolerance)


# -------------------------------------------------------------------------------- LR range test
@dataclass
class LRRangeResult:
    """The outcome of :func:`lr_range_test`.

    Parameters
    ----------
    lrs : list of float
        The learning rates tried.
    losses : list of float
        The exponentially smoothed loss at each.
    raw_losses : list of float
        The loss of each step.
    suggested_lr : float
        The learning rate of the lowest smoothed loss, divided by 10.
    steepest_lr : float
        Where the smoothed loss fell fastest.
    diverged : bool
        Whether the sweep stopped on a diverging loss.

    Examples
    --------
    >>> from fastnn.diagnostics import LRRangeResult
    >>> LRRangeResult([0.01, 0.1], [1.0, 0.5], [1.0, 0.4], 0.01, 0.01, False).suggested_lr
    0.01
    """

    lrs: list[float]
    losses: list[float]
    raw_losses: list[float]
    suggested_lr: float
    steepest_lr: float
    diverged: bool


def lr_range_test(
    model: Sequential,
    X: ArrayLike,
    y: ArrayLike,
    *,
    start: float = 1e-6,
    end: float = 1.0,
    steps: int = 100,
    batch_size: int = 64,
    smoothing: float = 0.9,
    diverge_factor: float = 4.0,
    seed: int = 0,
) -> LRRangeResult:
    """Leslie Smith's learning-rate range test; the weights and optimizer state are restored afterwards.

    One training step per learning rate of an exponential sweep, with the model's compiled
    optimizer, on mini-batches of X cycled in a shuffled order.

    Parameters
    ----------
    model : Sequential
        A compiled model.
    X : array-like
        Inputs ``(n, *input_shape)``.
    y : array-like
        Their targets.
    start : float, default 1e-6
        The first learning rate.
    end : float, default 1.0
        The last learning rate.
    steps : int, default 100
        Learning rates tried.
    batch_size : int, default 64
        Samples per step.
    smoothing : float, default 0.9
        The exponential smoothing of the loss, in [0, 1).
    diverge_factor : float, default 4.0
        Stop once the smoothed loss exceeds this times its best; > 1.
    seed : int, default 0
        Seeds the batch order.

    Returns
    -------
    LRRangeResult
        The learning rates, losses and suggestions.

    Raises
    ------
    RuntimeError
        When the loss is not finite even at ``start``.

    Examples
    --------
    >>> import fastnn as fnn
    >>> from fastnn import diagnostics
    >>> X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32); y = np.array([0, 1, 1, 0])
    >>> model = fnn.Sequential([fnn.Dense(2, 8, activation="relu"), fnn.Dense(8, 2)], seed=0)
    >>> model = model.compile(loss="cross_entropy", optimizer="adam")
    >>> result = diagnostics.lr_range_test(model, X, y, start=1e-4, end=1.0, steps=20, batch_size=4)
    >>> len(result.lrs) <= 20, result.suggested_lr < 1.0
    (True, True)
    """
    start = V.check_float(start, "start", low=0.0, low_inclusive=False)
    end = V.check_float(end, "end", low=start, low_inclusive=False)
    steps = V.check_int(steps, "steps", minimum=2)
    batch_size = V.check_int(batch_size, "batch_size", minimum=1)
    smoothing = V.check_float(smoothing, "smoothing", 0.0, 1.0, high_inclusive=False)
    diverge_factor = V.check_float(diverge_factor, "diverge_factor", low=1.0, low_inclusive=False)
    if model.optimizer is None:
        raise RuntimeError("lr_range_test needs an optimizer: call model.compile(loss=..., optimizer=...) first")
    optimizer = model.optimizer
    inputs, targets = model.check_data(X, y)
    n = inputs.shape[0]
    batch_size = min(batch_size, n)
    order = np.random.default_rng(seed).permutation(n)
    lrs = start * (end / start) ** (np.arange(steps) / (steps - 1))
    snap = _Snapshot(model)
    tried, raw, smooth = [], [], []
    avg, best, diverged = 0.0, math.inf, False
    try:
        model.train()
        for k, lr in enumerate(lrs):
            lo = (k * batch_size) % n
            idx = order[lo : lo + batch_size]
            optimizer.lr = float(lr)
            try:
                loss = float(model.train_step(inputs[idx], targets[idx]))
            except FloatingPointError:
                diverged = True
                break
            avg = smoothing * avg + (1 - smoothing) * loss
            value = avg / (1 - smoothing ** (k + 1))
            tried.append(float(lr))
            raw.append(loss)
            smooth.append(value)
            best = min(best, value)
            if value > diverge_factor * best:
                diverged = True
                break
    finally:
        snap.restore()
    if not smooth:
        raise RuntimeError(f"the loss was not finite even at lr={start}; lower start")
    k_min = int(np.argmin(smooth))
    slopes = np.diff(smooth) / np.diff(np.log(tried)) if len(tried) > 1 else np.zeros(1)
    k_steep = int(np.argmin(slopes[: max(k_min, 1)]))
    return LRRangeResult(tried, smooth, raw, tried[k_min] / 10, tried[k_steep], diverged)


__all__ = [
    "ActivationStats",
    "GradientCheck",
    "LRRangeResult",
    "NonFiniteReport",
    "OverfitResult",
    "activation_stats",
    "activations",
    "find_nonfinite",
    "gradient_check",
    "gradient_norms",
    "layer_gradient_norms",
    "lr_range_test",
    "output_stats",
    "overfit_one_batch",
    "update_ratios",
    "weight_norms",
]
