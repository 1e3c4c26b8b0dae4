"""A short fit with an empty fused-step cache: the tier-up's cost model against fusing regardless.

Each mode runs in a fresh process with its own empty ``FASTNN_CACHE_DIR`` (Numba's kernel cache
stays warm: this measures the fused step's compile only): a tiny MLP, ``--epochs`` x 32 steps of
batch 32. ``regardless`` sets ``FUSE_COMPILE_SECONDS = 0`` (the tier-up before the cost model:
fuse after 200 steps whatever is left); ``cost-model`` is the default.

    python benchmarks/short_fit.py --epochs 10 100
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import sys, time
import numpy as np
import fastnn as fnn
from fastnn import _config
if sys.argv[1] == "regardless":
    _config.FUSE_COMPILE_SECONDS = 0.0
X = np.random.default_rng(0).normal(size=(1024, 2)).astype(np.float32)
y = (X[:, 0] * X[:, 1] > 0).astype(np.int64)
model = fnn.Sequential([fnn.Dense(2, 8, activation="relu"), fnn.Dense(8, 2)], seed=0)
model.compile("cross_entropy", "adam")
model.fit(X[:64], y[:64], epochs=1, batch_size=32, verbose=0)  # the kernels, from Numba's cache
start = time.perf_counter()
model.fit(X, y, epochs=int(sys.argv[2]), batch_size=32, verbose=0)
print(f"{time.perf_counter() - start:.3f} {model.step_plan(32).run.fused}")
"""


def run(mode: str, epochs: int) -> tuple[float, bool]:
    env = dict(os.environ, FASTNN_CACHE_DIR=tempfile.mkdtemp(prefix="fastnn-short-fit-"), FASTNN_FUSE="auto")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(epochs)], env=env, capture_output=True, text=True, check=True
    )
    seconds, fused = out.stdout.split()
    return float(seconds), fused == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, nargs="+", default=[10, 100])
    args = parser.parse_args()
    print("| epochs (x 32 steps) | fuse regardless: s (fused) | cost model: s (fused) |")
    print("|---|---|---|")
    for epochs in args.epochs:
        (a, fa), (b, fb) = run("regardless", epochs), run("cost-model", epochs)
        print(f"| {epochs} | {a:.2f} ({fa}) | {b:.2f} ({fb}) |")


if __name__ == "__main__":
    main()
