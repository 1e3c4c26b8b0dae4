"""Single-thread GEMMs of fastnn's tile shapes in each OpenBLAS on this machine, interleaved.

    python benchmarks/blas_versions.py

Compares NumPy's bundled OpenBLAS (the floor's), the copy inside SciPy's wheel and the
scipy-openblas32 wheel fastnn's kernels call, each pinned to one thread, through ctypes
(the same call overhead for all), on the same operands.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
import time

import numpy as np

from fastnn.kernels import blas


def _libraries() -> dict[str, tuple]:
    """name -> (cblas_sgemm, int type) for NumPy's OpenBLAS and every one fastnn could call."""
    spec = importlib.util.find_spec("numpy")
    numpy_libs = os.path.join(os.path.dirname(os.path.dirname(spec.origin)), "numpy.libs")
    paths = sorted(glob.glob(os.path.join(numpy_libs, "libscipy_openblas*.so*"))) + blas._candidate_libraries()
    found = {}
    for path in paths:
        name = "numpy" if "numpy.libs" in path else "scipy-openblas32" if "scipy_openblas32" in path else "scipy"
        lib = ctypes.CDLL(path)
        for suffix, int_type in (("64_", ctypes.c_int64), ("", ctypes.c_int32)):
            if hasattr(lib, "scipy_cblas_sgemm" + suffix):
                getattr(lib, "scipy_openblas_set_num_threads" + suffix)(1)
                get_config = getattr(lib, "scipy_openblas_get_config" + suffix)
                get_config.restype = ctypes.c_char_p
                version = get_config().decode().split()[1]
                sgemm = getattr(lib, "scipy_cblas_sgemm" + suffix)
                sgemm.argtypes = [int_type] * 6 + [
                    ctypes.c_float,
                    ctypes.c_void_p,
                    int_type,
                    ctypes.c_void_p,
                    int_type,
                    ctypes.c_float,
                    ctypes.c_void_p,
                    int_type,
                ]
                found[f"{name} {version}"] = (sgemm, int_type)
                break
    return found


def _time_us(sgemm, a, b, c, reps: int) -> float:
    m, k = a.shape
    n = b.shape[1]
    args = (101, 111, 111, m, n, k, 1.0, a.ctypes.data, k, b.ctypes.data, n, 0.0, c.ctypes.data, n)
    sgemm(*args)
    start = time.perf_counter()
    for _ in range(reps):
        sgemm(*args)
    return (time.perf_counter() - start) / reps * 1e6


def main() -> int:
    libs = _libraries()
    rng = np.random.default_rng(0)
    shapes = [(128, 784, 128), (64, 784, 256), (256, 784, 256), (400, 128, 256), (256, 256, 256), (128, 256, 128)]
    print("| m x k x n | " + " | ".join(libs) + " |")
    print("|---" * (len(libs) + 1) + "|")
    for m, k, n in shapes:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        c = np.empty((m, n), np.float32)
        best = {name: float("inf") for name in libs}
        for _ in range(7):  # interleaved rounds
            for name, (sgemm, _) in libs.items():
                best[name] = min(best[name], _time_us(sgemm, a, b, c, 100))
        print(f"| {m}x{k}x{n} | " + " | ".join(f"{best[name]:.0f}" for name in libs) + " |")
    print("\nmin us of 7 interleaved rounds of 100 calls, 1 thread each. Command: `python benchmarks/blas_versions.py`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
