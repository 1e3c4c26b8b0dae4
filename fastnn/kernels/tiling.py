"""The GEMM tiling's size, read at run time by compiled kernels (not a compile-time constant).

Parallel GEMMs split their output into :data:`fastnn._config.GEMM_TILES` tiles, fixed for the
process. A module constant would be frozen into every compiled kernel, so the kernels' cache would
hold one copy per thread count (a different ``NUMBA_NUM_THREADS`` recompiled 57 functions). Here
the count lives in one C ``int64`` whose address is given to the JIT linker under a symbol name;
compiled code loads it by that name, so a cached kernel links to each process's own value.

:func:`numba_threads` reads Numba's current thread count the same way, by the symbol name of the
threading layer's function (``numba.get_num_threads`` inside njit binds a ctypes pointer, which
stops a function from being cached).

:func:`small_gemm_macs` is linked the same way: the size of the tiles cut for OpenBLAS's
small-matrix kernels (``_config.SMALL_GEMM_MACS``: ``FASTNN_SMALL_GEMM`` and the CPU; 0 when not
used), read at run time so that one cached kernel serves every setting and a prebuilt cache loaded
on another CPU tiles for that CPU.
"""

from __future__ import annotations

import ctypes

import llvmlite.binding as llvm
from llvmlite import ir
from numba import get_num_threads, types
from numba.core import cgutils
from numba.extending import intrinsic

from .._config import GEMM_TILES, MATVEC_SPLIT_BYTES, SMALL_GEMM_MACS


def _linked_int64(symbol: str, value: int):
    """An intrinsic returning ``value`` (an int64 of this process) through the C symbol ``symbol``."""
    cell = ctypes.c_int64(value)
    _CELLS.append(cell)  # kept alive: compiled code reads it by address
    llvm.add_symbol(symbol, ctypes.addressof(cell))

    def read(typingctx):
        def codegen(context, builder, signature, args):
            module = builder.module
            variable = module.globals.get(symbol)
            if variable is None:
                variable = ir.GlobalVariable(module, ir.IntType(64), symbol)
                variable.linkage = "external"
            return builder.load(variable)

        return types.int64(), codegen

    return read


_CELLS: list = []


@intrinsic
def gemm_tiles(typingctx):
    """Number of output tiles of a parallel GEMM (int64): GEMM_TILES of this process."""
    return _gemm_tiles(typingctx)


@intrinsic
def small_gemm_macs(typingctx):
    """Multiply-adds (int64) up to which a GEMM runs in this CPU's small-matrix BLAS kernels
    (SMALL_GEMM_MACS, 0 where there are none)."""
    return _small_gemm_macs(typingctx)


@intrinsic
def matvec_split_bytes(typingctx):
    """Bytes of weights (int64) above which a matrix-vector product runs its tiles in a parallel
    region (``_config.MATVEC_SPLIT_BYTES``: half of this CPU's per-core L2, at least 1 MiB)."""
    return _matvec_split_bytes(typingctx)


_gemm_tiles = _linked_int64("fastnn_gemm_tiles", GEMM_TILES)
_small_gemm_macs = _linked_int64("fastnn_small_gemm_macs", SMALL_GEMM_MACS)
_matvec_split_bytes = _linked_int64("fastnn_matvec_split_bytes", MATVEC_SPLIT_BYTES)


@intrinsic
def numba_threads(typingctx):
    """Numba's current thread count (intp): ``numba.get_num_threads()``, callable from cached
    parallel kernels (whose loading starts the threading layer that defines the symbol)."""
    get_num_threads()  # starts Numba's threading layer, which defines the symbol, before this compiles

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(cgutils.intp_t, [])  # as Numba's parfor lowering declares it
        return builder.call(cgutils.get_or_insert_function(builder.module, fnty, "get_num_threads"), [])

    return types.intp(), codegen
