"""Views of a flat buffer, rebuilt inside compiled code from (start, stop, *shape) records.

Used by fused steps (``fastnn._fused``): a step receives each of its buffers once, flat, and
takes its arrays back as views, so Python unboxes a few buffers per step instead of every array.
The record is a slice of an int64 array (never a constant index: a literal index would compile
one specialisation per position).

A fused step also takes most buffers by address (:func:`pointer` + ``numba.carray``): such
arrays carry no reference count, so neither unboxing them nor taking views of them inside the
step touches one (48 views of reference-counted buffers cost ~1.9 us of a 10 us tiny step).
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .._config import JIT


@intrinsic
def pointer(typingctx, address):
    """The int64 ``address`` as a ``void*``, for ``numba.carray(pointer(a), size, dtype)``.

    The caller keeps the memory alive for as long as compiled code uses it.
    """

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], ir.IntType(8).as_pointer())

    return types.voidptr(types.int64), codegen


def _stack_bytes(nbytes: int):
    """An intrinsic ``(like) -> int64``: the address of ``nbytes`` bytes, aligned for ``like``'s dtype
    (an array), in the calling function's stack frame (no allocation), valid until it returns; for
    ``numba.carray(pointer(address), size, dtype)``."""

    def buffer(typingctx, like):
        def codegen(context, builder, signature, args):
            element = context.get_data_type(like.dtype)
            size = context.get_constant(types.intp, nbytes // context.get_abi_sizeof(element))
            return builder.ptrtoint(cgutils.alloca_once(builder, element, size=size), ir.IntType(64))

        return types.int64(like), codegen

    return intrinsic(buffer)


@njit(**JIT)
def view1(buffer, record):
    """``buffer[record[0]:record[1]]``: a 1-D view (no copy)."""
    return buffer[record[0] : record[1]]


@njit(**JIT)
def view2(buffer, record):
    """``buffer[record[0]:record[1]]`` as a ``(record[2], record[3])`` C-contiguous view (no copy)."""
    return buffer[record[0] : record[1]].reshape((record[2], record[3]))


@njit(**JIT)
def view3(buffer, record):
    """``buffer[record[0]:record[1]]`` as a ``(record[2], record[3], record[4])`` view (no copy)."""
    return buffer[record[0] : record[1]].reshape((record[2], record[3], record[4]))


@njit(**JIT)
def view4(buffer, record):
    """``buffer[record[0]:record[1]]`` as a 4-D view (images: batch, channels, height, width)."""
    return buffer[record[0] : record[1]].reshape((record[2], record[3], record[4], record[5]))
