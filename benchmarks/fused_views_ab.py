"""A fused training step's views of its buffers: ``numba.carray`` at each view's address (session 13)
against ``view2`` of the flat buffer (slice + reshape, before), on the bench's tiny network; 30
interleaved blocks of 2000 train_steps in one process, CPU time of the thread.

    NUMBA_NUM_THREADS=1 python benchmarks/fused_views_ab.py
"""

import time

import numpy as np

import fastnn as fnn
from fastnn import _fused
from fastnn.kernels.dense import dense_forward

CARRAY_VIEWS = _fused._Arguments.view_line


def _view2_line(arguments, view, table_entry):
    """The view's line as before session 13: view<ndim> of the flat buffer, wherever it came from."""
    return CARRAY_VIEWS(arguments, view, None)


def _trained(view_line, X, y):
    """The tiny network, past its fused-step tier-up, its step generated with ``view_line``."""
    _fused._Arguments.view_line = view_line
    try:
        model = fnn.Sequential(
            [fnn.Dense(2, 16, activation="tanh"), fnn.Dense(16, 16, activation="tanh"), fnn.Dense(16, 1)], seed=0
        )
        model.compile(loss="mse", optimizer=fnn.optim.SGD(lr=0.01, momentum=0.9))
        for _ in range(400):
            model.train_step(X, y)
    finally:
        _fused._Arguments.view_line = CARRAY_VIEWS
    return model


def main() -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((32, 2)).astype(np.float32)
    y = rng.standard_normal((32, 1)).astype(np.float32)
    models = {"view2 (before)": _trained(_view2_line, X, y), "carray": _trained(CARRAY_VIEWS, X, y)}
    print("dense_forward signatures (1: the same kernel types either way):", len(dense_forward.signatures))
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(30):
        for name, model in models.items():
            start = time.thread_time()
            for _ in range(2000):
                model.train_step(X, y)
            times[name].append((time.thread_time() - start) / 2000 * 1e6)
    for name, values in times.items():
        values.sort()
        print(f"{name:16s} us per step: min {values[0]:.2f}  p25 {values[7]:.2f}  median {values[15]:.2f}")
    same = all(np.array_equal(m.params, models["carray"].params) for m in models.values())
    print("same parameters after the same steps:", same)


if __name__ == "__main__":
    main()
