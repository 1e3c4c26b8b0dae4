"""Kernels compiled ahead of time, shipped in the wheel (``fastnn/_prebuilt``), loaded on a cache miss.

A wheel built with ``python tools/prebuild_wheel.py`` holds Numba cache files of every kernel
(and of the fused steps ``fastnn warmup`` compiles) for portable CPU targets: ``x86-64-v3`` (AVX2,
FMA: 0.92-1.05x of a host-tuned build) and ``generic``. A cache entry is keyed by the compiling
CPU's name and features, so an entry built on one machine would never hit on another; here, when
the user's own cache misses, the lookup goes on in the shipped folder with the host's key, then
the ``x86-64-v3`` key when this CPU has its features, then the ``generic`` key. The shipped files are
only read (a read-only install works); new compiles go to the user's cache as usual
(``NUMBA_CACHE_DIR`` respected). A wheel built by another Numba version, or from other kernel
sources, does not match (the index holds both) and fastnn compiles once, saying so
(``fastnn._compiling``).

Installed by patching the name ``FunctionCache`` in ``numba.core.dispatcher`` (what
``@njit(cache=True)`` instantiates) before any kernel module is imported; for functions outside
fastnn the subclass behaves as Numba's own. fastnn's own functions also save their entries under a
lock (``fastnn._cache_file``).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import sys
from typing import Iterator, Sequence

import llvmlite.binding as llvm
import numba
from numba.core import caching, dispatcher

from ._cache_file import LockedIndexDataCacheFile

PREBUILT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_prebuilt")
_PACKAGE = os.path.dirname(os.path.abspath(__file__))
#: what x86-64-v3 requires of the CPU (LLVM feature names)
_V3_FEATURES = ("avx", "avx2", "bmi", "bmi2", "f16c", "fma", "lzcnt", "movbe", "xsave")
#: the folder of each kind of shipped function: fastnn's kernels, and the fused steps
#: (generated as step_<hash>.py files, named fastnn_step_<hash> when imported)
KERNELS, STEPS = "kernels", "steps"


@functools.cache
def _fallback_targets(triple: str) -> tuple[tuple[str, str, str], ...]:
    """Magic tuples (triple, CPU name, features) of the shipped targets this CPU can run, best first."""
    if not triple.startswith("x86_64"):
        return ()
    host = llvm.get_host_cpu_features()
    targets = []
    if all(host.get(feature, False) for feature in _V3_FEATURES):
        targets.append((triple, "x86-64-v3", ""))
    targets.append((triple, "generic", ""))
    return tuple(targets)


def build_info() -> dict:
    """The wheel's ``_prebuilt/build.json`` (tools/prebuild_wheel.py: Numba and Python versions,
    targets, ``seconds_per_compile`` its warmup measured), or {} for a source install."""
    try:
        with open(os.path.join(PREBUILT, "build.json")) as handle:
            built = json.load(handle)
    except (OSError, ValueError):
        return {}
    return built if isinstance(built, dict) else {}


def mismatch() -> str | None:
    """Why the shipped kernels cannot serve this process (another Numba or Python version than the
    wheel was built with), or None (none shipped, or they match). Read when a compile starts."""
    built = build_info()
    if not built:
        return None
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    if built.get("numba") != numba.__version__ or built.get("python") != python:
        return (
            f"the kernels prebuilt in this wheel are for Numba {built.get('numba')} on Python "
            f"{built.get('python')}, this is Numba {numba.__version__} on Python {python}"
        )
    return None


def shipped_folder(py_func) -> str | None:
    """The folder under ``_prebuilt`` that may hold ``py_func``'s cache files, or None."""
    module = getattr(py_func, "__module__", "") or ""
    if module.startswith("fastnn.kernels."):
        return os.path.join(PREBUILT, KERNELS)
    if module.startswith("fastnn_step_"):
        return os.path.join(PREBUILT, STEPS)
    return None


def cached(kernel) -> bool:
    """Whether ``kernel`` (a ``cache=True`` dispatcher) has a valid index in the user's cache or in
    the wheel's prebuilt files (for some signature: a first call will most likely load it)."""
    cache = getattr(kernel, "_cache", None)
    if not isinstance(cache, ShippedFunctionCache):
        return False
    return bool(cache._cache_file._load_index()) or bool(cache.shipped_index())


#: cache folders other processes compiled into (``fastnn._parallel_compile``'s workers), read on a miss
_ELSEWHERE: list[str] = []


@contextlib.contextmanager
def compiled_elsewhere(folders: Sequence[str]) -> Iterator[None]:
    """Inside the block a cache miss also looks in ``folders`` (each a ``NUMBA_CACHE_DIR`` another
    process compiled into, with this process's CPU, Numba and kernel sources) and copies what it
    finds into this process's own cache."""
    _ELSEWHERE.extend(folders)
    try:
        yield
    finally:
        for folder in folders:
            _ELSEWHERE.remove(folder)


def has_entry(kernel, argtypes: tuple) -> bool:
    """Whether ``kernel`` (a ``cache=True`` dispatcher) has ``argtypes`` for this CPU in the user's
    cache or in the wheel's prebuilt files (its first call with them loads instead of compiling)."""
    cache = getattr(kernel, "_cache", None)
    if not isinstance(cache, ShippedFunctionCache):
        return False
    key = cache._index_key(argtypes, kernel.targetctx.codegen())
    if key in cache._cache_file._load_index():
        return True
    shipped = cache.shipped_index()
    return any((key[0], magic, key[2]) in shipped for magic in (key[1], *_fallback_targets(key[1][0])))


class ShippedFunctionCache(caching.FunctionCache):
    """Numba's function cache, falling back to the wheel's prebuilt files on a miss; fastnn's
    functions save through :class:`fastnn._cache_file.LockedIndexDataCacheFile` (safe when several
    processes compile them at once)."""

    def __init__(self, py_func):
        super().__init__(py_func)
        if shipped_folder(py_func) is not None:
            self._cache_file = LockedIndexDataCacheFile(
                cache_path=self._cache_path,
                filename_base=self._impl.filename_base,
                source_stamp=self._impl.locator.get_source_stamp(),
            )

    def _shipped_file(self) -> caching.IndexDataCacheFile | None:
        folder = shipped_folder(self._py_func)
        if folder is None or not os.path.isdir(folder):
            return None
        return caching.IndexDataCacheFile(
            cache_path=folder,
            filename_base=self._impl.filename_base,
            source_stamp=self._impl.locator.get_source_stamp(),
        )

    def shipped_index(self) -> dict:
        """The wheel's index of this function ({} when none is shipped, or it is stale)."""
        shipped = self._shipped_file()
        return shipped._load_index() if shipped is not None else {}

    def _elsewhere(self, key) -> object | None:
        """The entry ``key`` from a folder of :func:`compiled_elsewhere`, copied into this
        process's cache (when writable), or None."""
        locator = getattr(caching, "CacheLocator", None) or getattr(caching, "_CacheLocator")  # public since numba 0.65
        subpath = locator.get_suitable_cache_subpath(inspect.getfile(self._py_func))
        for folder in _ELSEWHERE:
            data = caching.IndexDataCacheFile(
                cache_path=os.path.join(folder, subpath),
                filename_base=self._impl.filename_base,
                source_stamp=self._impl.locator.get_source_stamp(),
            ).load(key)
            if data is not None:
                try:
                    self._cache_file.save(key, data)
                except OSError:  # a read-only cache: loaded for this process only
                    pass
                return data
        return None

    def _load_overload(self, sig, target_context):
        data = super()._load_overload(sig, target_context)
        if data is not None or not self._enabled:
            return data
        if _ELSEWHERE:
            data = self._elsewhere(self._index_key(sig, target_context.codegen()))
            if data is not None:
                return self._impl.rebuild(target_context, data)
        shipped = self._shipped_file()
        if shipped is None:
            return None
        key = self._index_key(sig, target_context.codegen())
        for magic in (key[1], *_fallback_targets(key[1][0])):
            data = shipped.load((key[0], magic, key[2]))
            if data is not None:
                return self._impl.rebuild(target_context, data)
        return None


def install() -> None:
    """Make ``@njit(cache=True)`` use :class:`ShippedFunctionCache` (idempotent)."""
    if not issubclass(dispatcher.FunctionCache, ShippedFunctionCache):  # type: ignore[attr-defined]
        dispatcher.FunctionCache = ShippedFunctionCache  # type: ignore[attr-defined]


install()
