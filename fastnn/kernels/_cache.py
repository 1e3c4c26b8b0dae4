"""Numba's on-disk cache, made safe for a package whose kernels call each other across files.

Numba keys a cached function by its own source file only. When a kernel calls a function in
another file (dense.py calls blas.py and activations.py), editing the callee leaves the caller's
cache stale: it keeps the old inlined code, which was measured to give wrong results and even to
segfault (after a pip upgrade too, since pip leaves the cache files behind). Here every kernel's
cache stamp also covers the sources of all kernels and of ``_config.py``, so any change to them
invalidates every fastnn kernel cache at once.
"""

from __future__ import annotations

import glob
import hashlib
import os

import numba
from numba.core import caching

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_KERNELS = os.path.join(_PACKAGE, "kernels")


def _sources_digest() -> bytes:
    """SHA-256 over each source's path relative to the package and its content: the same for a
    copy of the package anywhere (a wheel installed at another path keeps its caches valid)."""
    paths = sorted(glob.glob(os.path.join(_KERNELS, "**", "*.py"), recursive=True))
    digest = hashlib.sha256()
    for path in [*paths, os.path.join(_PACKAGE, "_config.py")]:
        with open(path, "rb") as handle:
            relative = os.path.relpath(path, _PACKAGE).replace(os.sep, "/")
            digest.update(relative.encode() + b"\0" + handle.read())
    return digest.digest()


_DIGEST = _sources_digest()


def stamp() -> bytes:
    """Digest of every kernel source and ``_config.py``: code compiled from fastnn kernels is
    valid only while this is unchanged (the thread count is not in it: kernels read the GEMM
    tiling at run time, kernels/tiling.py)."""
    return _DIGEST


class _KernelStampMixin:
    @classmethod
    def from_function(cls, py_func, py_file):
        if not os.path.abspath(py_file).startswith(_KERNELS + os.sep):
            return None
        return super().from_function(py_func, py_file)

    def get_source_stamp(self):
        return (super().get_source_stamp(), _DIGEST)


def _numba(name):  # public names since numba 0.65, underscored before
    return getattr(caching, name, None) or getattr(caching, "_" + name)


class KernelInTreeCacheLocator(_KernelStampMixin, _numba("InTreeCacheLocator")):
    """fastnn kernels cached in their package's __pycache__."""


class KernelUserProvidedCacheLocator(_KernelStampMixin, _numba("UserProvidedCacheLocator")):
    """fastnn kernels cached under NUMBA_CACHE_DIR."""


class KernelUserWideCacheLocator(_KernelStampMixin, _numba("UserWideCacheLocator")):
    """fastnn kernels of a read-only install (no writable __pycache__, no NUMBA_CACHE_DIR), cached
    in the user's cache folder: with the same stamp as the others, so the wheel's prebuilt files
    (``fastnn._shipped_cache``) still match."""


def install() -> None:
    """Put the fastnn locators first, in Numba's order of preference (idempotent)."""
    classes = _numba("CacheImpl")._locator_classes
    for locator in (KernelUserWideCacheLocator, KernelInTreeCacheLocator, KernelUserProvidedCacheLocator):
        if locator not in classes:
            classes.insert(0, locator)


def start_threading_layer() -> None:
    """Start Numba's threading layer now (about 10 ms), before any cached kernel is loaded.

    Numba keeps "start the threading layer when this is loaded" on a compile result, not on its
    code library. A kernel compiled in a process where its parallel callee came from the cache
    links that callee's library without it, so the kernel's cache entry does not start the layer:
    loaded first in a fresh process, it calls the layer's functions before they exist (a jump to
    address 0, a segfault: numba/numba#8578, a fix proposed in numba PR #9950; reproduced with
    plain Numba 0.68 in tests/test_startup.py). With the layer started on import, the order in
    which kernels are first compiled and loaded no longer matters."""
    from .. import _config  # noqa: F401  (chooses the layer, _config.THREADING_LAYER, before it starts)

    numba.get_num_threads()  # public; starts the layer (Numba's _launch_threads) once
