"""ReLU's two formulas in the kernels' vectorised loop: ``z if z > 0 else 0`` (before session 13:
NaN -> 0) against ``0 if z <= 0 else z`` (NaN stays NaN), 1 thread, CPU time, interleaved.

    python benchmarks/relu_nan_ab.py
"""

import time

import numpy as np
from numba import njit

from fastnn._config import JIT


@njit(**JIT)
def old(z, y, n):
    for _ in range(n):
        for i in range(z.shape[0]):
            zi, yi = z[i], y[i]
            for j in range(z.shape[1]):
                v = zi[j]
                yi[j] = v if v > 0 else np.float32(0)


@njit(**JIT)
def new(z, y, n):
    for _ in range(n):
        for i in range(z.shape[0]):
            zi, yi = z[i], y[i]
            for j in range(z.shape[1]):
                v = zi[j]
                yi[j] = np.float32(0) if v <= 0 else v


z = np.random.default_rng(0).standard_normal((128, 256)).astype(np.float32)
y = np.empty_like(z)
old(z, y, 1)
a = y.copy()
new(z, y, 1)
assert np.array_equal(a, y)
res = {"old": [], "new": []}
for r in range(20):
    for name, f in (("old", old), ("new", new)):
        t = time.thread_time()
        f(z, y, 200)
        res[name].append((time.thread_time() - t) / 200 * 1e6)
for k, v in res.items():
    v = sorted(v)
    print(k, f"min {v[0]:.2f} med {v[10]:.2f} us per 128x256")
