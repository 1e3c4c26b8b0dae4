"""Skip Numba's import-time BLAS probe, which costs a warm start 0.2-0.5 s for nothing.

Numba's first call (compiled or cached) imports ``numba.np.arraymath``, whose module body calls
``numba.np.linalg.ensure_blas()`` to learn whether ``np.dot`` can work: that imports
``scipy.linalg`` (its cython BLAS). fastnn's kernels call their own BLAS (kernels/blas.py), and
SciPy is a dependency, so here ``numba.np.arraymath`` is imported with a probe that only checks
that ``scipy.linalg`` is installed; compiling a ``np.dot`` still runs Numba's full check (the
probe is swapped in for that one import only).
"""

from __future__ import annotations

import importlib.util
import sys


def _scipy_linalg_installed() -> None:
    if importlib.util.find_spec("scipy.linalg") is None:
        raise ImportError("scipy 0.16+ is required for linear algebra")


def _import_arraymath_without_probe() -> None:
    if "numba.np.arraymath" in sys.modules:
        return
    from numba.np import linalg

    ensure_blas = linalg.ensure_blas
    linalg.ensure_blas = _scipy_linalg_installed
    try:
        import numba.np.arraymath  # noqa: F401
    finally:
        linalg.ensure_blas = ensure_blas


_import_arraymath_without_probe()
