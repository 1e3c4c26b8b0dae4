"""Figures for looking at training: curves, activation and gradient histograms, gradient norms
across depth, decision boundaries, learning-rate range tests.

Every function returns a :class:`matplotlib.figure.Figure` (made without pyplot, so nothing
accumulates in pyplot's global state) and saves it when given ``path``. Needs matplotlib:
``pip install "fastnn[plot]"``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from . import _validation as V
from . import backend, diagnostics

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .callbacks import History
    from .diagnostics import LRRangeResult
    from .model import Sequential


def _figure(n_panels: int = 1, *, ncols: int | None = None, size: tuple[float, float] = (4.0, 3.0)):
    """A Figure with ``n_panels`` axes on a grid (a flat list of axes)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            'fastnn.plot needs matplotlib, which is not installed: pip install "fastnn[plot]" '
            "(or pip install matplotlib)"
        ) from exc
    ncols = min(n_panels, ncols or 4)
    nrows = (n_panels + ncols - 1) // ncols
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes[:n_panels])


def _finish(fig, path):
    if path is not None:
        fig.savefig(os.fspath(path), dpi=100)
    return fig


def _history_dict(history) -> dict[str, list[float]]:
    data = getattr(history, "history", history)
    if not isinstance(data, dict) or not data:
        raise TypeError(
            f"history must be the History returned by fit() or a non-empty dict of metric lists, "
            f"got {type(history).__name__}"
        )
    return data


def _epoch_numbers(history, count: int) -> np.ndarray:
    """The 1-based epochs of ``count`` recorded values: a History's own (a continued fit's
    epochs follow the earlier fits'), else ``1 .. count``."""
    epochs = getattr(history, "epoch", None)
    if epochs is not None and len(epochs) == count:
        return np.asarray(epochs, np.int64) + 1
    return np.arange(1, count + 1)


def _check_twin(data: dict, name: str) -> None:
    """A ValueError when ``val_<name>`` and ``name`` differ in length (they share the epochs)."""
    twin = data.get(f"val_{name}")
    if twin is not None and len(twin) != len(data[name]):
        raise ValueError(
            f"val_{name} has {len(twin)} values but {name} has {len(data[name])}: a curve and its val_ twin "
            f"need one value per epoch each (pad the missing epochs with NaN)"
        )


def plot_history(
    history: History | dict[str, list[float]],
    *,
    metrics: Sequence[str] | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Training curves: one panel per metric, each with its ``val_`` twin when present.

    The x axis counts epochs from 1; a History of a continued fit is drawn at its own epochs
    (``history.epoch``, after those of the earlier fits).

    Parameters
    ----------
    history : History or dict of str to list of float
        What ``fit`` returned, or metric lists by name.
    metrics : list of str, optional
        The panels (``"loss"``, ``"accuracy"``, ``"lr"`` ...); all metrics by default. The
        learning rate is drawn on a log axis.
    path : str or path-like, optional
        Also save the figure there (PNG, SVG ... by the extension).

    Returns
    -------
    matplotlib.figure.Figure
        The figure (made without pyplot).

    Raises
    ------
    TypeError
        When ``history`` is neither a History nor a non-empty dict.
    ValueError
        When a metric is not in the history, or its ``val_`` twin has another length.
    ImportError
        When matplotlib is not installed.

    Examples
    --------
    >>> from fastnn import plot
    >>> fig = plot.plot_history({"loss": [1.0, 0.5], "val_loss": [1.1, 0.7]}, path="curves.png")
    >>> len(fig.axes)
    1
    """
    data = _history_dict(history)
    names = list(metrics) if metrics is not None else [k for k in data if not k.startswith("val_")]
    for name in names:
        if name not in data:
            raise ValueError(
                f"metric {name!r} is not in the history.{V.suggest(name, data)} Available: {', '.join(data)}"
            )
        _check_twin(data, name)
    fig, axes = _figure(len(names), ncols=3)
    for ax, name in zip(axes, names):
        epochs = _epoch_numbers(history, len(data[name]))
        ax.plot(epochs, data[name], marker=".", label=name)
        if f"val_{name}" in data:
            ax.plot(epochs, data[f"val_{name}"], marker=".", label=f"val_{name}")
        if name == "lr" and min(data[name]) > 0:
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.legend()
    return _finish(fig, path)


def _histogram_grid(arrays, titles, bins, xlabel, path):
    fig, axes = _figure(len(arrays), ncols=4, size=(3.2, 2.4))
    for ax, values, title in zip(axes, arrays, titles):
        values = np.asarray(values, np.float64).ravel()
        values = values[np.isfinite(values)]
        ax.hist(values, bins=bins)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel(xlabel, fontsize=8)
    return _finish(fig, path)


def plot_activation_histograms(
    model: Sequential, X: ArrayLike, *, bins: int = 50, training: bool = False, path: str | os.PathLike | None = None
) -> Figure:
    """Histogram of each layer's output, one panel per top-level layer.

    Panels are titled with the layer, its output std and, where it applies, the fraction of
    dead or saturated units (:func:`fastnn.diagnostics.activation_stats`).

    Parameters
    ----------
    model : Sequential
        A built model.
    X : array-like
        Inputs ``(batch, *input_shape)``.
    bins : int, default 50
        Histogram bins.
    training : bool, default False
        Run the forward in training mode.
    path : str or path-like, optional
        Also save the figure there (PNG, SVG ... by the extension).

    Returns
    -------
    matplotlib.figure.Figure
        The figure (made without pyplot).

    Raises
    ------
    ImportError
        When matplotlib is not installed.

    Examples
    --------
    >>> import fastnn as fnn
    >>> from fastnn import plot
    >>> X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32); y = np.array([0, 1, 1, 0])
    >>> model = fnn.Sequential([fnn.Dense(2, 8, activation="tanh"), fnn.Dense(8, 2)], seed=0)
    >>> model = model.compile(loss="cross_entropy", optimizer="adam")
    >>> len(plot.plot_activation_histograms(model, X).axes)
    2
    """
    stats = diagnostics.activation_stats(model, X, training=training)
    outputs = diagnostics.activations(model, X, training=training)
    titles = []
    for s in stats:
        extra = (
            f", dead {s.dead_fraction:.0%}"
            if s.dead_fraction is not None
            else f", saturated {s.saturated_fraction:.0%}"
            if s.saturated_fraction is not None
            else ""
        )
        titles.append(f"{s.index}: {s.layer}\nstd {s.std:.3g}{extra}")
    return _histogram_grid(outputs, titles, bins, "activation", path)


def plot_gradient_histograms(
    model: Sequential, X: ArrayLike, y: ArrayLike, *, bins: int = 50, path: str | os.PathLike | None = None
) -> Figure:
    """Histogram of each weight's gradient (matrices, convolution kernels, tables) for one batch (no update).

    Parameters
    ----------
    model : Sequential
        A compiled model.
    X : array-like
        A batch of inputs.
    y : array-like
        Its targets.
    bins : int, default 50
        Histogram bins.
    path : str or path-like, optional
        Also save the figure there (PNG, SVG ... by the extension).

    Returns
    -------
    matplotlib.figure.Figure
        The figure (made without pyplot).

    Raises
    ------
    ImportError
        When matplotlib is not installed.

    Examples
    --------
    >>> import fastnn as fnn
    >>> from fastnn import plot
    >>> X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32); y = np.array([0, 1, 1, 0])
    >>> model = fnn.Sequential([fnn.Dense(2, 8, activation="tanh"), fnn.Dense(8, 2)], seed=0)
    >>> model = model.compile(loss="cross_entropy", optimizer="adam")
    >>> len(plot.plot_gradient_histograms(model, X, y).axes)
    2
    """
    diagnostics.gradient_norms(model, X, y)
    items = [(name, backend.host_copy(grad)) for name, value, grad in model.named_parameters() if value.ndim >= 2]
    return _histogram_grid([g for _, g in items], [f"{name} gradient" for name, _ in items], bins, "gradient", path)


def plot_gradient_norms(
    model: Sequential | Sequence[Sequential],
    X: ArrayLike,
    y: ArrayLike,
    *,
    labels: Sequence[str] | None = None,
    path: str | os.PathLike | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Gradient norm of each weight-holding layer against its depth, on a log axis.

    Vanishing gradients show as a line falling towards the input.

    Parameters
    ----------
    model : Sequential or list of Sequential
        A compiled model, or several (one line each) for comparisons.
    X : array-like
        A batch of inputs.
    y : array-like
        Its targets.
    labels : list of str, optional
        One legend label per model.
    path : str or path-like, optional
        Also save the figure there (PNG, SVG ... by the extension).
    ax : matplotlib.axes.Axes, optional
        Draw into these axes instead of a new figure.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (made without pyplot).

    Raises
    ------
    ValueError
        When ``labels`` and the models differ in number.

    Examples
    --------
    >>> import fastnn as fnn
    >>> from fastnn import plot
    >>> X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32); y = np.array([0, 1, 1, 0])
    >>> model = fnn.Sequential([fnn.Dense(2, 8, activation="tanh"), fnn.Dense(8, 2)], seed=0)
    >>> model = model.compile(loss="cross_entropy", optimizer="adam")
    >>> fig = plot.plot_gradient_norms([model, model], X, y, labels=["a", "b"])
    >>> len(fig.axes[0].lines)
    2
    """
    models = model if isinstance(model, (list, tuple)) else [model]
    names: list[str | None] = list(labels) if labels is not None else [None] * len(models)
    if len(names) != len(models):
        raise ValueError(f"labels has {len(names)} entries for {len(models)} models")
    if ax is None:
        fig, (ax,) = _figure(1, size=(5.0, 3.5))
    else:
        fig = ax.figure
    for m, label in zip(models, names):
        norms = diagnostics.layer_gradient_norms(m, X, y)
        ax.plot(np.arange(1, len(norms) + 1), norms, marker="o", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("layer (input -> output)")
    ax.set_ylabel("weight-gradient L2 norm")
    if any(label is not None for label in names):
        ax.legend()
    return _finish(fig, path)


def plot_decision_boundary(
    model: Sequential,
    X: ArrayLike,
    y: ArrayLike,
    *,
    resolution: int = 200,
    margin: float = 0.5,
    path: str | os.PathLike | None = None,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Predicted class over a grid covering 2-D inputs, with the samples on top coloured by label.

    Parameters
    ----------
    model : Sequential
        A classifier of 2 input features.
    X : array-like
        ``(n, 2)`` inputs.
    y : array-like
        ``(n,)`` integer labels.
    resolution : int, default 200
        Grid points per axis.
    margin : float, default 0.5
        Space around the samples.
    path : str or path-like, optional
        Also save the figure there (PNG, SVG ... by the extension).
    ax : matplotlib.axes.Axes, optional
        Draw into these axes instead of a new figure.
    title : str, optional
        The panel's title.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (made without pyplot). The image is ``ax.images[0]``; its array holds the classes.

    Raises
    ------
    ValueError
        When X is not ``(n, 2)``.

    Examples
    --------
    >>> import fastnn as fnn
    >>> from fastnn import plot
    >>> X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32); y = np.array([0, 1, 1, 0])
    >>> model = fnn.Sequential([fnn.Dense(2, 8, activation="tanh"), fnn.Dense(8, 2)], seed=0)
    >>> model = model.compile(loss="cross_entropy", optimizer="adam")
    >>> fig = plot.plot_decision_boundary(model, X, y, resolution=20)
    >>> fig.axes[0].images[0].get_array().shape
    (20, 20)
    """
    X = np.asarray(X, np.float64)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"plot_decision_boundary needs 2-D inputs X of shape (n, 2), got {X.shape}")
    resolution = V.check_int(resolution, "resolution", minimum=2)
    lo, hi = X.min(axis=0) - margin, X.max(axis=0) + margin
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution))
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    classes = model.predict_classes(grid).reshape(resolution, resolution)
    if ax is None:
        fig, (ax,) = _figure(1, size=(4.5, 4.0))
    else:
        fig = ax.figure
    n_classes = max(int(np.max(classes)), int(np.max(y))) + 1
    ax.imshow(
        classes,
        extent=(lo[0], hi[0], lo[1], hi[1]),
        origin="lower",
        cmap="coolwarm",
        alpha=0.35,
        vmin=0,
        vmax=max(n_classes - 1, 1),
        aspect="auto",
        interpolation="nearest",
    )
    ax.scatter(
        X[:, 0], X[:, 1], c=np.asarray(y), cmap="coolwarm", vmin=0, vmax=max(n_classes - 1, 1), edgecolors="k", s=18
    )
    if title:
        ax.set_title(title)
    return _finish(fig, path)


def plot_lr_range(result: LRRangeResult, *, path: str | os.PathLike | None = None, ax: Axes | None = None) -> Figure:
    """Loss against learning rate (log axis) of a range test, the suggested learning rate marked.

    Parameters
    ----------
    result : LRRangeResult
        What :func:`fastnn.diagnostics.lr_range_test` returned.
    path : str or path-like, optional
        Also save the figure there (PNG, SVG ... by the extension).
    ax : matplotlib.axes.Axes, optional
        Draw into these axes instead of a new figure.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (made without pyplot).

    Raises
    ------
    ImportError
        When matplotlib is not installed.

    Examples
    --------
    >>> from fastnn import plot
    >>> from fastnn.diagnostics import LRRangeResult
    >>> result = LRRangeResult([1e-3, 1e-2, 1e-1], [1.0, 0.6, 2.0], [1.0, 0.5, 2.2], 1e-3, 1e-2, True)
    >>> plot.plot_lr_range(result).axes[0].get_xscale()
    'log'
    """
    if ax is None:
        fig, (ax,) = _figure(1, size=(5.0, 3.5))
    else:
        fig = ax.figure
    ax.plot(result.lrs, result.losses, label="smoothed loss")
    ax.axvline(result.suggested_lr, color="k", linestyle="--", label=f"suggested {result.suggested_lr:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.legend()
    return _finish(fig, path)


__all__ = [
    "plot_activation_histograms",
    "plot_decision_boundary",
    "plot_gradient_histograms",
    "plot_gradient_norms",
    "plot_history",
    "plot_lr_range",
]
