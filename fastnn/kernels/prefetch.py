"""Software prefetch: hint the CPU to load cache lines a kernel reads a little later.

A kernel that visits rows in an order of its own (a shuffled batch, an embedding's looked-up rows)
waits a memory latency per row when the rows are not in cache: the hardware prefetchers follow
streams, not index lists. Prefetching the row a few positions ahead overlaps those waits.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .._config import JIT_INLINE

CACHE_LINE_BYTES = 64


@intrinsic
def prefetch(typingctx, address):
    """Hint the CPU to load the cache line at ``address`` (uintp) for reading (LLVM's
    ``llvm.prefetch``: no effect on any value; a no-op on targets without prefetch)."""
    signature = types.void(types.uintp)

    def codegen(context, builder, sig, args):
        byte_pointer, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        function_type = ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32])
        function = builder.module.declare_intrinsic("llvm.prefetch", [byte_pointer], function_type)
        # read (0), keep in all cache levels (3), data cache (1)
        builder.call(function, [builder.inttoptr(args[0], byte_pointer), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return signature, codegen


@njit(**JIT_INLINE)  # inlined: called per row, and a call with an array argument costs NRT refcounts
def prefetch_span(a, start, count):
    """Prefetch the cache lines of elements ``[start, start + count)`` of the contiguous array ``a``
    (any rank, by flat index)."""
    first = a.ctypes.data + np.uintp(start * a.itemsize)  # (uintp + int64 would type as float64)
    for offset in range(0, count * a.itemsize, CACHE_LINE_BYTES):
        prefetch(first + np.uintp(offset))


__all__ = ["CACHE_LINE_BYTES", "prefetch", "prefetch_span"]
