"""Device availability: is CUDA usable here, and if not, exactly why (and how to fix it).

fastnn's CUDA kernels (:mod:`fastnn.kernels.cuda`) need three things: the ``numba-cuda``
package (installed by ``pip install "fastnn[cuda]"``), an NVIDIA driver, and at least one GPU.
:func:`cuda_available` probes them without raising; :func:`require_cuda` raises one clear
``RuntimeError`` naming the first that is missing. Numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1`` set before Numba is imported) counts as available: it runs the same
kernels on the CPU, slowly, for tests.
"""
from __future__ import annotations

import importlib.util

INSTALL_HINT = 'pip install "fastnn[cuda]"'


def _probe() -> tuple[bool, str]:
    """(available, reason): reason is empty when available, else a sentence saying what is missing."""
    import numba

    if numba.config.ENABLE_CUDASIM:
        return True, ""
    if importlib.util.find_spec("numba_cuda") is None:
        return False, (f"the numba-cuda package is not installed. Install fastnn's cuda extra: {INSTALL_HINT} "
                       "(it pins numba-cuda with the CUDA 12 toolkit libraries)")
    try:
        from numba import cuda
        from numba.cuda.cudadrv import driver as cuda_driver
    except Exception as exc:  # noqa: BLE001 - a broken install is reported, not raised from deep inside
        return False, (f"numba-cuda is installed but could not be imported ({type(exc).__name__}: {exc}). "
                       f"Reinstall it: {INSTALL_HINT}")
    try:
        driver_ok = cuda_driver.driver.is_available
    except Exception:  # noqa: BLE001
        driver_ok = False
    if not driver_ok:
        detail = getattr(cuda_driver.driver, "initialization_error", None) or "driver library not found"
        detail = " ".join(str(detail).split()).rstrip(":")
        return False, (f"no usable NVIDIA driver was found ({detail}). Install the NVIDIA driver for your GPU "
                       "(libcuda.so must be loadable), then check with `nvidia-smi`")
    try:
        n_gpus = len(cuda.gpus)
    except Exception:  # noqa: BLE001
        n_gpus = 0
    if n_gpus == 0:
        return False, ("the NVIDIA driver loaded but reports no GPU (is CUDA_VISIBLE_DEVICES empty, or is the "
                       "GPU in use by another container?). Check with `nvidia-smi`")
    return True, ""


def cuda_available() -> bool:
    """True when fastnn's CUDA kernels can run here (numba-cuda, a driver and a GPU; or the simulator)."""
    return _probe()[0]


def require_cuda() -> None:
    """Raise ``RuntimeError`` saying what is missing when CUDA cannot be used; return quietly otherwise."""
    available, reason = _probe()
    if not available:
        raise RuntimeError(f'device="cuda" is not available: {reason}. Use device="cpu" meanwhile.')


def cuda_simulator() -> bool:
    """True when Numba runs CUDA kernels on its CPU simulator (NUMBA_ENABLE_CUDASIM=1)."""
    import numba

    return bool(numba.config.ENABLE_CUDASIM)


__all__ = ["INSTALL_HINT", "cuda_available", "cuda_simulator", "require_cuda"]
