"""CUDA kernel tests: run in their own pytest process, on Numba's CUDA simulator.

The simulator must be chosen before ``numba.cuda`` is first imported, so this conftest sets
NUMBA_ENABLE_CUDASIM=1 (unless already set) and reloads Numba's config before anything else, and
stops the run loudly when the simulator is not active (e.g. numba.cuda was imported earlier by a
plugin, or the variable was set to 0). To run these tests on a real GPU instead, set
FASTNN_CUDA_TESTS_ON_GPU=1 and NUMBA_ENABLE_CUDASIM=0.

Run: python -m pytest tests_cuda -q   (never in the same process as tests/)
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
_ON_GPU = os.environ.get("FASTNN_CUDA_TESTS_ON_GPU") == "1"
_CUDA_IMPORTED_BEFORE = "numba.cuda" in sys.modules

import numba

numba.config.reload_config()

import numpy as np
import pytest
from numba import cuda


def _simulator_active() -> bool:
    return bool(numba.config.ENABLE_CUDASIM) and "simulator" in type(cuda.device_array(1)).__module__


SIMULATOR = _simulator_active()
if not SIMULATOR and not _ON_GPU:
    raise RuntimeError(
        "tests_cuda must run on Numba's CUDA simulator, but it is not active "
        f"(NUMBA_ENABLE_CUDASIM={os.environ.get('NUMBA_ENABLE_CUDASIM')!r}, numba.cuda imported before this "
        f"conftest: {_CUDA_IMPORTED_BEFORE}). Run `python -m pytest tests_cuda` in its own process with "
        "NUMBA_ENABLE_CUDASIM=1 (or FASTNN_CUDA_TESTS_ON_GPU=1 on a machine with a GPU)."
    )

# Each simulated thread is an OS thread; shorter switch intervals make block barriers cheaper.
sys.setswitchinterval(1e-3)


def pytest_configure(config):
    # The simulator's worker threads do uint64 hash arithmetic in NumPy scalars, which warns.
    config.addinivalue_line("filterwarnings", "ignore:overflow encountered:RuntimeWarning")
    # On a real GPU, numba-cuda warns about small grids ("under-utilization"); the tiny test shapes
    # trigger it by design, and pyproject turns Numba warnings into errors for the CPU suite.
    config.addinivalue_line("filterwarnings", "ignore::numba.core.errors.NumbaPerformanceWarning")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def to_device(*arrays):
    """Device copies of host arrays."""
    return [cuda.to_device(np.ascontiguousarray(a)) for a in arrays]


def host(device_array):
    return device_array.copy_to_host()


def tol(dtype):
    """(rtol, atol) for comparing a CUDA result of ``dtype`` with the float64 CPU twin."""
    return (1e-4, 1e-5) if np.dtype(dtype) == np.float32 else (1e-12, 1e-13)


def f64(*arrays):
    """float64 copies for the CPU twins.

    The CPU reference runs in float64 only: compiling the parallel CPU kernels dominates a cold
    run of this suite (rmsprop_update alone takes ~20 s per dtype), and float32 GPU results are
    compared with float32 tolerances anyway. Integer arrays are copied unchanged.
    """
    return [a.astype(np.float64) if a.dtype.kind == "f" else a.copy() for a in map(np.asarray, arrays)]


@pytest.fixture
def gpu_geometry():
    """Launch the CUDA kernels with a GPU's block sizes (``GPU_GEOMETRY``: 256-thread blocks) on the
    simulator, which otherwise uses ``SIM_GEOMETRY``'s small blocks; yields the geometry.

    Sets the names in every ``fastnn.kernels.cuda`` module (all imported first, so none copies the
    GPU's sizes from an already patched ``_common``); a simulated kernel reads them at each launch.
    After the test every module has the simulator's sizes again (checked: a module left with the
    GPU's made later tests' results differ).
    """
    import fastnn.kernels.cuda as package
    from fastnn.kernels.cuda import _common

    modules = [
        importlib.import_module(f"{package.__name__}.{info.name}") for info in pkgutil.iter_modules(package.__path__)
    ]
    before = {
        (m.__name__, name): getattr(m, name) for m in modules for name in _common.GPU_GEOMETRY if hasattr(m, name)
    }
    with pytest.MonkeyPatch.context() as patch:
        for module in modules:
            for name, size in _common.GPU_GEOMETRY.items():
                if hasattr(module, name):
                    patch.setattr(module, name, size)
        patched = {name for _, name in before}
        assert patched == set(_common.GPU_GEOMETRY), (
            f"geometry names no module defines: {set(_common.GPU_GEOMETRY) - patched}"
        )
        yield dict(_common.GPU_GEOMETRY)
    after = {(m.__name__, name): getattr(m, name) for m in modules for name in _common.GPU_GEOMETRY if hasattr(m, name)}
    assert after == before, "gpu_geometry left GPU sizes behind"
