"""The GEMM tiling's size, read at run time by compiled kernels (not a compile-time constant).

Parallel GEMMs split their output into :data:`fastnn._config.GEMM_TILES` tiles, fixed for the
process. A module constant would be frozen into every compiled kernel, so the kernels' cache would
hold one copy per thread count (a different ``NUMBA_NUM_THREADS`` recompiled 57 functions). Here
the count lives in one C ``int64`` whose address is given to the JIT linker under a symbol name;
compiled code loads it by that name, so a cached kernel links to each process's own value.

:func:`numba_threads` reads Numba's current thread count the same way, by the symbol name of the
threading layer's function (``numba.get_num_threads`` inside njit binds a ctypes pointer, which
stops a function from being cached).
"""

from __future__ import annotations

import ctypes

import llvmlite.binding as llvm
from llvmlite import ir
from numba import get_num_threads, types
from numba.core import cgutils
from numba.extending import intrinsic

from .._config import GEMM_TILES

_SYMBOL = "fastnn_gemm_tiles"
_VALUE = ctypes.c_int64(GEMM_TILES)
llvm.add_symbol(_SYMBOL, ctypes.addressof(_VALUE))


@intrinsic
def gemm_tiles(typingctx):
    """Number of output tiles of a parallel GEMM (int64): GEMM_TILES of this process."""

    def codegen(context, builder, signature, args):
        module = builder.module
        value = module.globals.get(_SYMBOL)
        if value is None:
            value = ir.GlobalVariable(module, ir.IntType(64), _SYMBOL)
            value.linkage = "external"
        return builder.load(value)

    return types.int64(), codegen


@intrinsic
def numba_threads(typingctx):
    """Numba's current thread count (intp): ``numba.get_num_threads()``, callable from cached
    parallel kernels (whose loading starts the threading layer that defines the symbol)."""
    get_num_threads()  # starts Numba's threading layer, which defines the symbol, before this compiles

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(cgutils.intp_t, [])  # as Numba's parfor lowering declares it
        return builder.call(cgutils.get_or_insert_function(builder.module, fnty, "get_num_threads"), [])

    return types.intp(), codegen
