"""fastnn's MLPClassifier fit with the Dense chain's row-split step (fastnn._dense_chain) and with the
layer-by-layer step, beside scikit-learn's MLPClassifier, in one run.

    python benchmarks/dense_chain_ab.py                 # digits and 50k x 100, 7 rounds
    python benchmarks/dense_chain_ab.py --rounds 3 --cases digits

The cases and estimators are benchmarks/sklearn_mlp.py's (same network, solver, epochs, float32
data, 2 threads). Each round fits the three in turn, each after ``fastnn.bench.PAUSE_S`` of rest,
after one untimed fit of each; the table gives the median and the range of the rounds' fit times
and scikit-learn's time over each fastnn step's. The switch is the module flag
``fastnn._dense_chain.ENABLED``, read when a model builds its step plans (each fit builds a model).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--cases", default="digits,synthetic")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    set_threads(args.threads)
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
