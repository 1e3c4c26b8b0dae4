"""A stand-in for the few CuPy calls of ``fastnn.kernels.cuda.dense``, working on simulator device arrays.

Real CuPy cannot touch the simulator's arrays (they are host memory and lack
``__cuda_array_interface__``), so the cuBLAS path is tested against this fake: :func:`install`
gives the simulator's arrays the interface numba's real device arrays have (pointer, shape,
strides, typestr), and the fake ``cupy.asarray`` wraps that pointer without copying, as CuPy does;
``cupy.matmul`` computes with NumPy into ``out``. Every matmul is logged with the data pointers and
transposition of its operands, so tests can check what dense.py passed, not only the results.
"""

from __future__ import annotations

import sys
import types

import numpy as np
from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray


def _cuda_array_interface(self) -> dict:
    """``__cuda_array_interface__`` (version 3) of a simulator array, as numba gives a real one."""
    ary = self._ary
    return {
        "shape": tuple(ary.shape),
        "typestr": ary.dtype.str,
        "data": (ary.ctypes.data, False),
        "strides": None if ary.flags.c_contiguous else tuple(ary.strides),
        "stream": None,
        "version": 3,
    }


class _Memory:
    """Exposes the memory a CUDA array interface points at to NumPy (simulated device memory is host memory)."""

    def __init__(self, interface: dict, owner):
        self.__array_interface__ = {key: interface[key] for key in ("shape", "typestr", "data", "strides")}
        self.__array_interface__["version"] = 3
        self.owner = owner  # keeps the wrapped array alive, as CuPy's UnownedMemory does


class FakeArray:
    """A ``cupy.ndarray`` over borrowed memory: ``view`` is a NumPy view of it, ``ptr`` where it starts."""

    def __init__(self, view: np.ndarray, transposed: bool = False):
        self.view = view
        self.transposed = transposed

    @property
    def ptr(self) -> int:
        return self.view.ctypes.data

    @property
    def shape(self) -> tuple:
        return self.view.shape

    @property
    def dtype(self) -> np.dtype:
        return self.view.dtype

    @property
    def T(self) -> FakeArray:  # noqa: N802 - CuPy's name
        return FakeArray(self.view.T, not self.transposed)

    def __iadd__(self, other: FakeArray) -> FakeArray:
        np.add(self.view, other.view, out=self.view)  # in place, as CuPy's ``+=``
        return self


class FakeCupy(types.ModuleType):
    """The fake ``cupy`` module. ``available``: what ``cupy.cuda.is_available()`` answers (an
    exception instance is raised instead). ``calls``: one ``(a, b, out)`` tuple of
    ``(ptr, transposed, shape)`` per matmul. ``host_copies``: NumPy arrays given to asarray (real
    CuPy copies them to a new device array, so results written there would be lost)."""

    def __init__(self, available=True):
        super().__init__("cupy")
        self.available = available
        self.calls: list[tuple] = []
        self.host_copies = 0
        self.cuda = types.SimpleNamespace(is_available=self._is_available)

    def _is_available(self) -> bool:
        if isinstance(self.available, BaseException):
            raise self.available
        return bool(self.available)

    def asarray(self, obj) -> FakeArray:
        if isinstance(obj, FakeArray):
            return obj
        if isinstance(obj, np.ndarray):
            self.host_copies += 1
            return FakeArray(obj.copy())
        interface = getattr(obj, "__cuda_array_interface__", None)
        if interface is None:
            raise TypeError(f"cupy.asarray: {type(obj).__name__} has no __cuda_array_interface__")
        return FakeArray(np.asarray(_Memory(interface, obj)))

    def matmul(self, a, b, out=None) -> FakeArray:
        if not (isinstance(a, FakeArray) and isinstance(b, FakeArray)):
            raise TypeError("cupy.matmul takes cupy arrays")
        if out is None:
            out = FakeArray(np.empty((a.shape[0], b.shape[1]), np.result_type(a.dtype, b.dtype)))
        self.calls.append(tuple((x.ptr, x.transposed, x.shape) for x in (a, b, out)))
        np.matmul(a.view, b.view, out=out.view)
        return out


def install(monkeypatch, available=True) -> FakeCupy:
    """Put a :class:`FakeCupy` in ``sys.modules`` and give simulator arrays ``__cuda_array_interface__``."""
    fake = FakeCupy(available)
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(FakeCUDAArray, "__cuda_array_interface__", property(_cuda_array_interface), raising=False)
    return fake


def ptr(device_array) -> int:
    """Where a simulator device array's memory starts (what its interface reports)."""
    return device_array._ary.ctypes.data
