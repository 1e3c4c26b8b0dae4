"""ReLU's two formulas in the kernels' vectorised loop: ``z if z > 0 else 0`` (before session 13:
NaN -> 0) against ``0 if z <= 0 else z`` (NaN stays NaN), 1 thread, CPU time, interleaved.

    python benchmarks/relu_nan_ab.py
"""

import time

import numpy as np
from numba import njit

from fastnn._config import JIT, JIT_INLINE


@njit(**JIT_INLINE)
def _relu_before(v):
    return v if v > 0 else np.float32(0)


@njit(**JIT_INLINE)
def _relu_now(v):
    return np.float32(0) if v <= 0 else v


def _loop(rule):
    """``run(z, y, n)``: y = rule(z) elementwise over rows, ``n`` times, as the kernels' loops run."""

    @njit(**dict(JIT, cache=False))
    def run(z, y, n):
        for _ in range(n):
            for i in range(z.shape[0]):
                zi, yi = z[i], y[i]
                for j in range(z.shape[1]):
                    yi[j] = rule(zi[j])

    return run


def main() -> None:
    z = np.random.default_rng(0).standard_normal((128, 256)).astype(np.float32)
    loops = {"before": _loop(_relu_before), "now": _loop(_relu_now)}
    outputs = []
    for run in loops.values():
        y = np.empty_like(z)
        run(z, y, 1)
        outputs.append(y)
    print("same outputs on finite inputs:", np.array_equal(*outputs))
    times: dict[str, list[float]] = {name: [] for name in loops}
    y = np.empty_like(z)
    for _ in range(20):
        for name, run in loops.items():
            start = time.thread_time()
            run(z, y, 200)
            times[name].append((time.thread_time() - start) / 200 * 1e6)
    for name, values in times.items():
        values.sort()
        print(f"{name:7s} min {values[0]:.2f}  median {values[10]:.2f} us per 128 x 256")


if __name__ == "__main__":
    main()
