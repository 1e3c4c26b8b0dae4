"""fastnn's MLPClassifier fit with the Dense chain's row-split step (fastnn._dense_chain) and with the
layer-by-layer step, beside scikit-learn's MLPClassifier, in one run.

    python benchmarks/dense_chain_ab.py                 # digits and 50k x 100, 7 rounds
    python benchmarks/dense_chain_ab.py --rounds 3 --cases digits
    python benchmarks/dense_chain_ab.py --steps 64-100-10:200 128-128-10:64   # train_step, chain forced on/off

``--steps``: for each ``WIDTHS:BATCH`` (ReLU hidden layers, softmax cross-entropy, Adam), the median of 7
alternated blocks of 300 ``train_step`` calls on one batch with the chain and with the layer-by-layer
step (``MIN_MACS`` and the weight bounds lifted, so that the chain is measured where the rule
would refuse it too): what the rule's bounds (fastnn._dense_chain) were set from.

The cases and estimators are benchmarks/sklearn_mlp.py's (same network, solver, epochs, float32
data, 2 threads). Each round fits the three in turn, each after ``fastnn.bench.PAUSE_S`` of rest,
after one untimed fit of each; the table gives the median and the range of the rounds' fit times
and scikit-learn's time over each fastnn step's. The switch is the module flag
``fastnn._dense_chain.ENABLED``, read when a model builds its step plans (each fit builds a model).
Both fastnn variants run their calls unfused (``FASTNN_FUSE=never``, set here unless given): the A/B
is of the step's strategy, whereas whether the tier-up fuses a fit's calls depends on which fused
steps a ``fastnn warmup`` compiled (benchmarks/sklearn_mlp.py times the fit as users get it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

os.environ.setdefault("FASTNN_FUSE", "never")  # before fastnn's import (module docstring)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sklearn_mlp import datasets, estimators  # noqa: E402

from fastnn import _dense_chain  # noqa: E402
from fastnn.bench import PAUSE_S, set_threads  # noqa: E402

VARIANTS = ("fastnn, rows split", "fastnn, layer by layer", "scikit-learn")


def _fit(variant: str, makers: dict, X, y) -> float:
    _dense_chain.ENABLED = variant != "fastnn, layer by layer"
    make = makers["scikit-learn" if variant == "scikit-learn" else "fastnn"]
    time.sleep(PAUSE_S)
    start = time.perf_counter()
    model = make().fit(X, y)
    seconds = time.perf_counter() - start
    if variant.startswith("fastnn"):
        chain = any(fn.__name__.startswith("dense_chain") for fn, _ in model.model_.step_plan(200).calls)
        assert chain == _dense_chain.ENABLED, f"{variant}: the plan's step is not the one asked for"
    return seconds


def _steps_case(spec: str, batch: int) -> str:
    """The train_step A/B of one ``WIDTHS`` chain at ``batch`` (module docstring), as a table row."""
    import fastnn as fnn

    sizes = [int(v) for v in spec.split("-")]
    rng = np.random.default_rng(0)
    X = rng.random((batch, sizes[0])).astype(np.float32)
    y = np.arange(batch) % sizes[-1]
    models = {}
    for chain in (True, False):
        _dense_chain.ENABLED = chain
        hidden = [fnn.Dense(a, b, activation="relu") for a, b in zip(sizes[:-2], sizes[1:-1])]
        model = fnn.Sequential([*hidden, fnn.Dense(sizes[-2], sizes[-1])], seed=0)
        model.compile(loss="cross_entropy", optimizer="adam")
        for _ in range(300):
            model.train_step(X, y)
        assert any(fn.__name__.startswith("dense_chain") for fn, _ in model.step_plan(batch).calls) == chain
        models[chain] = model
    times: dict = {True: [], False: []}
    for _ in range(7):
        for chain, model in models.items():
            time.sleep(0.1)
            start = time.perf_counter()
            for _ in range(300):
                model.train_step(X, y)
            times[chain].append((time.perf_counter() - start) / 300 * 1e6)
    on, off = statistics.median(times[True]), statistics.median(times[False])
    weights = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return f"| {spec} | {batch} | {weights} | {weights / batch:.0f} | {on:.1f} | {off:.1f} | {on / off:.2f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--cases", default="digits,synthetic")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", nargs="*", default=None, help="WIDTHS:BATCH cases of the train_step A/B")
    args = parser.parse_args()
    set_threads(args.threads)
    if args.steps is not None:
        limits = _dense_chain.MIN_MACS, _dense_chain.MAX_WEIGHTS, _dense_chain.MAX_WEIGHTS_PER_ROW
        _dense_chain.MIN_MACS, _dense_chain.MAX_WEIGHTS, _dense_chain.MAX_WEIGHTS_PER_ROW = 0, 1 << 62, 1 << 62
        print("| widths | batch | weights | a row | chain us | layer by layer us | ratio |")
        print("|---|---|---|---|---|---|---|")
        for case in args.steps:
            spec, batch = case.split(":")
            print(_steps_case(spec, int(batch)), flush=True)
        _dense_chain.MIN_MACS, _dense_chain.MAX_WEIGHTS, _dense_chain.MAX_WEIGHTS_PER_ROW = limits
        _dense_chain.ENABLED = True
        return
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    print("| case | " + " | ".join(f"{v} s" for v in VARIANTS) + " | sklearn / rows split | sklearn / layer by layer |")
    print("|---|" + "---|" * (len(VARIANTS) + 2))
    for name, (X, y, epochs) in datasets(False).items():
        if name not in args.cases.split(","):
            continue
        X_train, _, y_train, _ = train_test_split(X.astype(np.float32), y, test_size=0.2, random_state=0, stratify=y)
        makers = estimators(epochs)
        for variant in VARIANTS:  # untimed: compiles, loads, plans
            _fit(variant, makers, X_train, y_train)
        times: dict = {v: [] for v in VARIANTS}
        for _ in range(args.rounds):
            for variant in VARIANTS:
                times[variant].append(_fit(variant, makers, X_train, y_train))
        med = {v: statistics.median(t) for v, t in times.items()}
        cells = [f"{med[v]:.3f} ({min(times[v]):.3f}-{max(times[v]):.3f})" for v in VARIANTS]
        sk = med["scikit-learn"]
        ratios = f"{sk / med[VARIANTS[0]]:.1f}x | {sk / med[VARIANTS[1]]:.1f}x"
        print(
            f"| {name} {X.shape[0]}x{X.shape[1]}, {epochs} epochs | " + " | ".join(cells) + f" | {ratios} |", flush=True
        )
    _dense_chain.ENABLED = True


if __name__ == "__main__":
    main()
