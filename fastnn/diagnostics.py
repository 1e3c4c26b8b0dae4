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

import numpy as np

from . import _validation as V
from . import backend

#: activations whose units can die (output exactly zero for every sample)
_RELU_LIKE = ("relu",)
#: activation name -> (low, high): an output outside [low, high] counts as saturated
_SATURATION = {"sigmoid": (0.01, 0.99), "tanh": (-0.99, 0.99)}


# -------------------------------------------------------------------------------- gradients
def gradient_norms(model, X, y, *, training: bool = True) -> dict[str, float]:
    """L2 norm of each parameter's gradient ("0.weight" -> norm) for one batch (X, y).

    Runs one forward and backward pass (no update) with the compiled loss; weights unchanged.
    """
    _, grads = model.loss_and_grads(X, y, training=training)
    return {name: float(np.linalg.norm(g)) for name, g in grads.items()}


def layer_gradient_norms(model, X, y, *, training: bool = True) -> list[float]:
    """One number per layer that holds weight matrices, first layer first: the L2 norm of the
    gradients of all its 2-D weights (a Residual's block and projection count as one layer)."""
    gradient_norms(model, X, y, training=training)
    totals: dict[int, float] = {}
    for name, value, grad in model.named_parameters():
        if value.ndim == 2:
            layer = int(name.split(".")[0])
            totals[layer] = totals.get(layer, 0.0) + float(np.dot(grad.ravel(), grad.ravel()))
    return [float(np.sqrt(totals[k])) for k in sorted(totals)]


def weight_norms(model) -> dict[str, float]:
    """L2 norm of each parameter ("0.weight" -> norm)."""
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


def update_ratios(model, X, y) -> dict[str, float]:
    """||delta|| / ||weight|| per parameter for one ``train_step`` on (X, y) with the compiled
    optimizer; the step is undone afterwards (NaN for a parameter that is all zeros). Rule of thumb: around 1e-3 is healthy, 1e-1 and
    above means the learning rate is too high, below 1e-5 too low (CS231n)."""
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
def activations(model, X, *, training: bool = False) -> list[np.ndarray]:
    """A copy of every (top-level) layer's output for input X, first layer first."""
    return model.layer_outputs(X, training=bool(training))


@dataclass
class ActivationStats:
    """Statistics of one layer's output over a batch.

    ``dead_fraction``: share of units that are zero for every sample (ReLU outputs only, else
    None). ``saturated_fraction``: share of outputs beyond 0.99 in magnitude (tanh) or outside
    [0.01, 0.99] (sigmoid), else None.
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


def output_stats(output: np.ndarray, activation: str | None, index: int = 0, layer: str = "") -> ActivationStats:
    """:class:`ActivationStats` of one (batch, units) output produced by ``activation``."""
    out = np.asarray(output, np.float64)
    dead = saturated = None
    if activation in _RELU_LIKE:
        dead = float(np.mean(np.all(out == 0.0, axis=0)))
    if activation in _SATURATION:
        low, high = _SATURATION[activation]
        saturated = float(np.mean((out < low) | (out > high)))
    return ActivationStats(index, layer, activation, float(out.mean()), float(out.std()), dead, saturated)


def activation_stats(model, X, *, training: bool = False) -> list[ActivationStats]:
    """Per top-level layer: mean and std of its output on X, dead ReLU units and saturated
    sigmoid/tanh outputs (for layers whose activation is one of those, fused or separate)."""
    outputs = activations(model, X, training=training)
    return [output_stats(out, _activation_name(layer), i, repr(layer))
            for i, (layer, out) in enumerate(zip(model.layers, outputs))]


# -------------------------------------------------------------------------------- NaN / inf
@dataclass
class NonFiniteReport:
    """Where values first went NaN/inf: layer ``index`` and its repr, ``where`` is "output"
    (forward), "loss" or "gradient" (backward: the input gradient or a parameter gradient)."""

    index: int | None
    layer: str
    where: str
    detail: str = ""

    def __str__(self) -> str:
        if self.index is None:
            return f"non-finite {self.where}: {self.detail}"
        return f"layer {self.index} ({self.layer}): non-finite {self.where}" + (f" ({self.detail})" if self.detail else "")


def find_nonfinite(model, X, y, *, training: bool = True) -> NonFiniteReport | None:
    """Run one forward and backward pass (the engine's :meth:`~fastnn.Sequential.loss_and_grads`:
    no update, running statistics unchanged, sequence lengths honoured) and name the first layer
    whose output (forward) or gradient (backward, walking from the last layer) contains NaN or
    inf; None when everything is finite."""
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
    """``losses`` per step; ``success`` when the final loss fell to ``tolerance`` or below."""

    losses: list[float]
    final_loss: float
    tolerance: float
    success: bool
    accuracy: float | None = None

    def __bool__(self) -> bool:
        return self.success


def overfit_one_batch(model, X, y, *, steps: int = 200, lr: float = 1e-2, optimizer=None,
                      tolerance: float | None = None, restore: bool = True) -> OverfitResult:
    """Train on the single batch (X, y) for ``steps`` steps (Adam at ``lr`` unless an optimizer
    instance is given) and report whether its loss goes near zero: a network that cannot
    memorise a handful of samples has a bug (wrong labels, a broken layer, too little capacity).

    ``tolerance``: the loss counted as "near zero"; default 1% of the first step's loss.
    The model's weights and optimizer come back afterwards unless ``restore=False``.
    """
    from .optim import Adam

    if model.loss is None:
        raise RuntimeError("overfit_one_batch needs a loss: call model.compile(loss=...) first")
    steps = V.check_int(steps, "steps", minimum=1)
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
    tol = 0.01 * losses[0] if tolerance is None else V.check_float(tolerance, "tolerance", low=0.0)
    return OverfitResult(losses, final, tol, bool(final <= tol), accuracy)


# -------------------------------------------------------------------------------- gradient check
@dataclass
class GradientCheck:
    """Max relative error |analytic - numeric| / max(|analytic|, |numeric|, floor) of the input
    gradient and of each parameter's gradient; ``passed`` when all are below ``tolerance``."""

    input_error: float
    param_errors: dict[str, float] = field(default_factory=dict)
    tolerance: float = 1e-5

    @property
    def max_error(self) -> float:
        return max([self.input_error, *self.param_errors.values()])

    @property
    def passed(self) -> bool:
        return self.max_error <= self.tolerance

    def __bool__(self) -> bool:
        return self.passed


def _relative_error(analytic: np.ndarray, numeric: np.ndarray, floor: float) -> float:
    if analytic.size == 0:
        return 0.0
    denom = np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), floor)
    return float(np.max(np.abs(analytic - numeric) / denom))


def gradient_check(layer, x, *, eps: float = 1e-6, training: bool = False, seed: int = 0,
                   max_checks: int = 200, tolerance: float = 1e-5, floor: float = 1e-7) -> GradientCheck:
    """Check a layer's ``backward`` (yours or ours) against central finite differences.

    A copy of ``layer`` is built in float64 inside a one-layer Sequential (the layer you pass
    is not touched), fed ``x`` (batch, in_features), and the scalar ``L = sum(y * R)`` with a
    fixed random R is differentiated both ways, for the input and for every parameter. At most
    ``max_checks`` randomly chosen elements of each array are perturbed. ``training`` must give
    a deterministic forward (dropout is random in training mode).
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
    """``lrs`` and the (exponentially smoothed) ``losses`` of the sweep; ``suggested_lr`` is the
    learning rate of the lowest smoothed loss divided by 10; ``steepest_lr`` where the smoothed
    loss fell fastest."""

    lrs: list[float]
    losses: list[float]
    raw_losses: list[float]
    suggested_lr: float
    steepest_lr: float
    diverged: bool


def lr_range_test(model, X, y, *, start: float = 1e-6, end: float = 1.0, steps: int = 100,
                  batch_size: int = 64, smoothing: float = 0.9, diverge_factor: float = 4.0,
                  seed: int = 0) -> LRRangeResult:
    """Leslie Smith's learning-rate range test: one training step per learning rate on an
    exponential sweep from ``start`` to ``end`` (mini-batches of X cycled in a shuffled order),
    stopping once the smoothed loss exceeds ``diverge_factor`` times its best. Uses the model's
    compiled optimizer; the weights and optimizer state are restored afterwards.
    """
    start = V.check_float(start, "start", low=0.0, low_inclusive=False)
    end = V.check_float(end, "end", low=start, low_inclusive=False)
    steps = V.check_int(steps, "steps", minimum=2)
    batch_size = V.check_int(batch_size, "batch_size", minimum=1)
    smoothing = V.check_float(smoothing, "smoothing", 0.0, 1.0, high_inclusive=False)
    X, y = model.check_data(X, y)
    n = X.shape[0]
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
            idx = order[lo:lo + batch_size]
            model.optimizer.lr = float(lr)
            try:
                loss = float(model.train_step(X[idx], y[idx]))
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
    k_steep = int(np.argmin(slopes[:max(k_min, 1)]))
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
