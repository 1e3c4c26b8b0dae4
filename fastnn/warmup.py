"""``fastnn warmup``: compile every kernel, for both dtypes, into the cache ahead of use.

    fastnn warmup                 # all recipes, float32 and float64, in one process
    fastnn warmup --jobs 2        # the same, split over 2 worker processes
    python -m fastnn.warmup --dtype float32

Each *recipe* is a tiny model that trains a step, predicts and evaluates, so every kernel its
layers, loss and optimizer call compiles (the kernels are generic in their sizes: tiny shapes
compile the same code as large ones). Together the recipes use every layer, loss, optimizer and
activation; those marked ``fused`` also compile the fused training step (``fastnn._fused``) of
the models ``fastnn demo``, the README and the scikit-learn estimators' default network train,
which small models tier up to; those marked ``weighted`` also fit with ``sample_weight`` and
``accumulate=2`` (the weighted losses' kernels and the gradient sum's), for each of their losses.

With ``--jobs N`` each worker process compiles a share of the recipes into the shared on-disk
cache (Numba's compiler holds the GIL and a process-wide lock, so threads would not help); the
parent then runs every recipe once more, which loads them from the cache and recompiles whatever
a race between workers lost (reported as ``recompiled``: 0 for a complete cache).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from typing import Callable, NamedTuple

import numpy as np

DTYPES = ("float32", "float64")


class Recipe(NamedTuple):
    name: str
    build: Callable  # rng -> (layers, X, y, Sequential keyword arguments, loss, optimizer names)
    fused: bool = False  # also compile its fused training and prediction steps
    weighted: bool = False  # also a fit with sample_weight and accumulate=2 (weighted losses, gradient sum)


def _labels(rng, n, classes=3):
    return rng.integers(0, classes, n)


def _mlp_demo(rng):  # fastnn demo: MLP 64-128-64-10, relu, cross-entropy, Adam
    import fastnn as fnn

    return (
        [fnn.Dense(8, 16, activation="relu"), fnn.Dense(16, 8, activation="relu"), fnn.Dense(8, 3)],
        rng.standard_normal((40, 8)),
        _labels(rng, 40),
        {},
        "cross_entropy",
        ("adam",),
    )


def _mlp_readme(rng):  # README's first example
    import fastnn as fnn

    return (
        [
            fnn.Dense(8, 16, init="he_normal"),
            fnn.BatchNorm1d(16),
            fnn.ReLU(),
            fnn.Dropout(0.2),
            fnn.Residual([fnn.Dense(16, 16, activation="relu"), fnn.LayerNorm(16)]),
            fnn.Dense(16, 3),
        ],
        rng.standard_normal((40, 8)),
        _labels(rng, 40),
        {},
        "cross_entropy",
        ("adamw",),
    )


def _activations(rng):  # every activation layer; regression losses and the other optimizers
    import fastnn as fnn
    from fastnn.kernels.activations import ACTIVATION_TABLE

    names = [row.name for row in ACTIVATION_TABLE if row.name not in ("identity", "softmax", "log_softmax")]
    layers = [fnn.Dense(6, 6, activation=name) for name in names]
    layers += [
        fnn.Sigmoid(),
        fnn.Tanh(),
        fnn.ReLU(),
        fnn.LeakyReLU(),
        fnn.ELU(),
        fnn.SELU(),
        fnn.GELU(),
        fnn.GELU("tanh"),
        fnn.Identity(),
        fnn.Dense(6, 2),
    ]
    return (
        layers,
        rng.standard_normal((20, 6)),
        rng.standard_normal((20, 2)),
        {},
        ("mse", "mae", "huber"),
        ("sgd", "rmsprop", "adagrad", "lion"),
    )


def _classifier_heads(rng):  # softmax / log-softmax outputs and binary cross-entropy
    import fastnn as fnn

    return (
        [fnn.Dense(6, 4), fnn.Softmax(), fnn.Dense(4, 3), fnn.LogSoftmax(), fnn.Dense(3, 2), fnn.Sigmoid()],
        rng.standard_normal((20, 6)),
        rng.integers(0, 2, (20, 2)).astype(float),
        {},
        "binary_cross_entropy",
        ("adam",),
    )


def _cnn2d(rng):  # README's CNN and fastnn demo --conv
    import fastnn as fnn

    return (
        [
            fnn.Conv2d(1, 4, 3, padding="same", activation="relu"),
            fnn.MaxPool2d(2),
            fnn.Conv2d(4, 4, 3, padding="same", activation="relu"),
            fnn.BatchNorm2d(4),
            fnn.AvgPool2d(2),
            fnn.Flatten(),
            fnn.Dense(16, 3),
        ],
        rng.standard_normal((12, 1, 8, 8)),
        _labels(rng, 12),
        {"input_shape": (1, 8, 8)},
        "cross_entropy",
        ("adam",),
    )


def _cnn1d(rng):
    import fastnn as fnn

    return (
        [
            fnn.Conv1d(2, 4, 3, padding="same", activation="tanh"),
            fnn.MaxPool1d(2),
            fnn.AvgPool1d(2),
            fnn.GlobalAvgPool(),
            fnn.Dense(4, 3),
        ],
        rng.standard_normal((12, 2, 8)),
        _labels(rng, 12),
        {"input_shape": (2, 8)},
        "cross_entropy",
        ("adam",),
    )


def _tokens(rng, n=12, steps=6, vocabulary=10):
    tokens = rng.integers(1, vocabulary, (n, steps))
    tokens[np.arange(steps) >= rng.integers(2, steps + 1, n)[:, None]] = 0
    return tokens


def _lstm(rng):  # README's LSTM
    import fastnn as fnn

    return (
        [
            fnn.Embedding(10, 4, padding_idx=0, mask_padding=True),
            fnn.LSTM(4, 6, return_sequences=False),
            fnn.Dense(6, 2),
        ],
        _tokens(rng),
        _labels(rng, 12, 2),
        {"input_shape": (6,)},
        "cross_entropy",
        ("adam",),
    )


def _recurrent(rng):  # GRU, RNN, bidirectional stacks, masking of float sequences, per-step outputs
    import fastnn as fnn

    return (
        [
            fnn.Masking(0.0),
            fnn.GRU(3, 4, num_layers=2, bidirectional=True),
            fnn.RNN(8, 4),
            fnn.TimeDistributed(fnn.Dense(4, 4)),
            fnn.LastStep(),
            fnn.Dense(4, 3),
        ],
        rng.standard_normal((12, 5, 3)),
        _labels(rng, 12),
        {"input_shape": (5, 3)},
        "cross_entropy",
        ("adam",),
    )


def _transformer(rng):  # README's Transformer
    import fastnn as fnn

    return (
        [
            fnn.Embedding(10, 8, padding_idx=0, mask_padding=True),
            fnn.PositionalEncoding(max_len=6),
            fnn.TransformerEncoderBlock(8, num_heads=2, ff_dim=8),
            fnn.MultiHeadSelfAttention(8, 2, causal=True),
            fnn.GlobalAvgPool(axis="time"),
            fnn.Reshape((8,)),
            fnn.Dense(8, 2),
        ],
        _tokens(rng),
        _labels(rng, 12, 2),
        {"input_shape": (6,)},
        "cross_entropy",
        ("adam",),
    )


def _sparse_embedding(rng):  # Embedding(sparse=True): its rows backward, row updates (SGD, Adam) and norm
    import fastnn as fnn

    return (
        [fnn.Embedding(10, 4, sparse=True), fnn.Flatten(), fnn.Dense(24, 2)],
        _tokens(rng),
        _labels(rng, 12, 2),
        {"input_shape": (6,)},
        "cross_entropy",
        ("adam", "sgd"),
    )


def _small_mlp_large_batch(rng):  # scikit-learn's MLPClassifier and MLPRegressor: rows split (fastnn._dense_chain)
    import fastnn as fnn

    return (
        [fnn.Dense(64, 100, activation="relu"), fnn.Dense(100, 10)],
        rng.standard_normal((400, 64)),
        _labels(rng, 400, 10),
        {},
        "cross_entropy",
        ("adam",),
    )


def _small_regressor_large_batch(rng):
    import fastnn as fnn

    return (
        [fnn.Dense(64, 100, activation="relu"), fnn.Dense(100, 1)],
        rng.standard_normal((400, 64)),
        rng.standard_normal((400, 1)),
        {},
        "mse",
        ("adam",),
    )


RECIPES = (
    Recipe("mlp (fastnn demo)", _mlp_demo, fused=True),
    Recipe("mlp (README)", _mlp_readme, fused=True, weighted=True),
    Recipe("activations, regression losses, optimizers", _activations, weighted=True),
    Recipe("classifier heads", _classifier_heads, weighted=True),
    Recipe("cnn 2-d (README, demo --conv)", _cnn2d, fused=True),
    Recipe("cnn 1-d", _cnn1d),
    Recipe("lstm (README)", _lstm, fused=True),
    Recipe("gru, rnn, masking", _recurrent),
    Recipe("transformer (README)", _transformer, fused=True),
    Recipe("sparse embedding", _sparse_embedding, fused=True),
    Recipe("small mlp on a large batch (scikit-learn's MLPClassifier)", _small_mlp_large_batch, fused=True),
    Recipe("small regressor on a large batch (scikit-learn's MLPRegressor)", _small_regressor_large_batch, fused=True),
)


def run_recipe(index: int, dtype: str) -> int:
    """Train, predict and evaluate recipe ``RECIPES[index]`` in ``dtype``; returns how many
    functions this call compiled (0: everything came from the cache)."""
    import fastnn as fnn
    from fastnn import _compiling, _config

    recipe = RECIPES[index]
    before = _compiling.compiles()
    fuse = _config.FUSE
    _config.FUSE = "always" if recipe.fused and fuse != "never" else "never"
    try:
        with _compiling.quiet():
            optimizers = recipe.build(np.random.default_rng(index))[-1]
            for step, optimizer in enumerate(optimizers):
                layers, X, y, kwargs, losses, _ = recipe.build(np.random.default_rng(index))
                losses = (losses,) if isinstance(losses, str) else losses
                model = fnn.Sequential(layers, seed=0, dtype=dtype, **kwargs)
                model.fit(
                    X,
                    y,
                    loss=losses[0],
                    optimizer=optimizer,
                    epochs=1,
                    batch_size=len(X) // 2,
                    validation_data=(X, y),
                    verbose=0,
                )
                if step == 0:  # the built-in metrics' kernels of the loss's family (fit's step call runs them)
                    _fit_with_metrics(model, X, y, losses[0], optimizer)
                weights = np.linspace(0.5, 1.5, len(X)) if recipe.weighted else None  # sample weights
                if recipe.weighted and step == 0:
                    model.fit(X, y, sample_weight=weights, accumulate=2, epochs=1, batch_size=len(X) // 4, verbose=0)
                for loss in losses[1:] if step == 0 else ():
                    model.compile(loss=loss, optimizer=optimizer)
                    model.train_step(X, y)
                    if recipe.weighted:
                        model.fit(X, y, sample_weight=weights, epochs=1, verbose=0)
                model.predict(X)
                model.evaluate(X, y)
    finally:
        _config.FUSE = fuse
    return _compiling.compiles() - before


#: the built-in metrics of each loss family (fastnn.metrics.family_of): one of each kind of state
FAMILY_METRICS = {
    "multiclass": ["f1", "auc", "top_k_accuracy"],
    "binary": ["f1", "auc", "binary_accuracy"],
    "regression": ["mae"],
}


def _fit_with_metrics(model, X, y, loss: str, optimizer: str) -> None:
    """An epoch of ``model`` compiled with its loss family's metrics, unfused (the metric kernels
    compile; a fused step of this structure is no user's)."""
    from fastnn import _config, losses, metrics

    family = metrics.family_of(losses.get(loss))
    fuse, _config.FUSE = _config.FUSE, "never"
    try:
        model.compile(loss=loss, optimizer=optimizer, metrics=FAMILY_METRICS[family])
        model.fit(X, y, epochs=1, batch_size=len(X) // 2, verbose=0)
    finally:
        _config.FUSE = fuse
        model.compile(loss=loss, optimizer=optimizer, metrics=[])


def _worker(job: tuple[int, str]) -> tuple[int, str, int, float]:
    start = time.perf_counter()
    compiled = run_recipe(*job)
    return (*job, compiled, time.perf_counter() - start)


def warmup(dtypes=DTYPES, jobs: int = 1, progress: bool = True, only: str = "") -> dict:
    """Compile every recipe's kernels in ``dtypes`` into the cache, in ``jobs`` worker processes
    (1: in this process); ``only``: just the recipes whose name contains it. Returns ``{"seconds", "compiled", "recompiled", "jobs"}``: ``compiled``
    functions (summed over workers), ``recompiled`` by the final pass in this process (0 when the
    cache is complete)."""
    from tqdm.auto import tqdm

    work = [(i, dtype) for dtype in dtypes for i, recipe in enumerate(RECIPES) if only in recipe.name]
    if not work:
        raise ValueError(
            f"no warmup recipe's name contains {only!r}; the recipes: " + ", ".join(recipe.name for recipe in RECIPES)
        )
    bar = tqdm(total=len(work), desc="fastnn warmup", unit="recipe", disable=not progress, file=sys.stderr)
    start = time.perf_counter()
    compiled = 0
    if jobs > 1:
        # spawn: a fresh interpreter per worker (no forked thread pools); each compiles a share
        with multiprocessing.get_context("spawn").Pool(min(jobs, len(work))) as pool:
            for index, dtype, count, _ in pool.imap_unordered(_worker, work):
                compiled += count
                bar.set_postfix_str(f"{RECIPES[index].name}, {dtype}", refresh=False)
                bar.update()
    else:
        for index, dtype in work:
            bar.set_postfix_str(f"{RECIPES[index].name}, {dtype}")
            compiled += run_recipe(index, dtype)
            bar.update()
    bar.close()
    recompiled = sum(run_recipe(index, dtype) for index, dtype in work)  # loads all; fills any gap
    if jobs <= 1:
        compiled += recompiled
    return {"seconds": time.perf_counter() - start, "compiled": compiled, "recompiled": recompiled, "jobs": jobs}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=1,
        help="worker processes compiling in parallel (default 1; at most the CPU count helps)",
    )
    parser.add_argument("--dtype", choices=[*DTYPES, "both"], default="both", help="dtypes to compile (default both)")
    parser.add_argument("--only", default="", metavar="TEXT", help="only the recipes whose name contains TEXT")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def run(args) -> int:
    """``fastnn warmup`` with parsed ``args``."""
    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    dtypes = DTYPES if args.dtype == "both" else (args.dtype,)
    result = warmup(dtypes, jobs=args.jobs, progress=not args.quiet, only=args.only)
    where = os.environ.get("NUMBA_CACHE_DIR") or "the package's __pycache__ folders"
    print(
        f"fastnn warmup: {result['compiled']} functions compiled in {result['seconds']:.1f} s "
        f"({args.jobs} process{'es' if args.jobs > 1 else ''}, {', '.join(dtypes)}), cached in {where}"
        + (f"; {result['recompiled']} recompiled by the check pass" if result["recompiled"] else "")
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastnn.warmup", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
