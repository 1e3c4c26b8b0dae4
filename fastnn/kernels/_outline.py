"""Functions of LLVM IR compiled once a process and called by a C name of fastnn's from every kernel.

Numba copies a callee into each caller: the callee's optimised module is linked into the caller's,
optimised again with it and compiled again to machine code, at every level of a call chain (a parallel
kernel's gufunc, its wrappers, the kernel, the fused step). fastnn's GEMM register blocks
(:mod:`.microgemm`) and batch-1 row kernel (:mod:`.gemv`), large unrolled vector code written in LLVM
IR, were ~2/3 of every GEMM-using library's code and of the package's compile time that way.

An :class:`OutOfLine` family instead defines its functions in the library of a small host function
(one per vector width, compiled and cached like any kernel, for one dtype at a time); a kernel declares
the function by its stable name (:meth:`OutOfLine.call`), makes it callable first (:meth:`OutOfLine.ensure`:
the host compiled or loaded, its function's address registered with the JIT) and caches the names it
needs (:mod:`._lazy_ir`), so that a process loading it from the cache provides them before the JIT
resolves its calls. The functions compute what their inline copies did, to the bit.
"""

from __future__ import annotations

from collections.abc import Callable

import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from . import _lazy_ir

#: vector widths (bits) of the compile targets: 512 (AVX-512) or 256 (AVX2 and older)
WIDE_BITS, NARROW_BITS = 512, 256


def element_bytes(real) -> int:
    """Bytes of an element of the LLVM float type ``real``."""
    return 8 if isinstance(real, ir.DoubleType) else 4


def vector_lanes(real, wide: bool) -> int:
    """Elements of ``real`` in one vector of ``wide`` (512-bit) or 256-bit width."""
    return (WIDE_BITS if wide else NARROW_BITS) // (8 * element_bytes(real))


class OutOfLine:
    """A family of functions named ``f"{prefix}{dtype}_{bits}_{variant}"`` (dtype float32 or float64,
    ``bits`` the vector width, one function per ``variants`` entry), defined by
    ``define(module, symbol, real, wide, variant)`` (``real``: the LLVM float type). :meth:`definer`
    gives the intrinsic a host function calls to define them; :meth:`hosts` registers the two hosts."""

    def __init__(self, prefix: str, variants: tuple[str, ...], define: Callable) -> None:
        self.prefix, self.variants, self.define = prefix, variants, define
        self._hosts: dict = {}
        self._ready: set = set()
        _lazy_ir.provide(prefix, self.ensure)

    def symbol(self, dtype, wide: bool, variant: str) -> str:
        """The C name of ``variant`` for ``dtype`` (a Numba float type) on ``wide`` (512-bit) vectors or not."""
        return f"{self.prefix}{dtype}_{WIDE_BITS if wide else NARROW_BITS}_{variant}"

    def definer(self, wide: bool):
        """An intrinsic ``define(like)`` adding to its module every variant for ``like``'s dtype (an array)."""

        @intrinsic
        def define(typingctx, like):
            def codegen(context, builder, signature, args):
                dtype = signature.args[0].dtype
                for variant in self.variants:
                    symbol = self.symbol(dtype, wide, variant)
                    if symbol not in builder.module.globals:
                        self.define(builder.module, symbol, context.get_value_type(dtype), wide, variant)
                return context.get_dummy_value()

            return types.void(like), codegen

        return define

    def hosts(self, wide, narrow) -> None:
        """Register the host functions (``@njit`` of one array argument) whose libraries define the family
        on 512-bit (``wide``) and 256-bit (``narrow``) vectors."""
        self._hosts = {str(WIDE_BITS): wide, str(NARROW_BITS): narrow}

    def ensure(self, symbol: str) -> None:
        """Make ``symbol`` callable by name in this process: its host compiled or loaded from the cache
        (once a process), every variant's address registered with the JIT."""
        if symbol in self._ready:
            return
        dtype_name, bits, *_ = symbol[len(self.prefix) :].split("_")
        if dtype_name not in ("float32", "float64") or bits not in self._hosts:
            raise RuntimeError(f"fastnn: no function named {symbol!r} (a cache file of another fastnn version?)")
        host = self._hosts[bits]
        argtypes = (types.Array(getattr(types, dtype_name), 1, "C"),)
        host.compile(argtypes)
        library = host.overloads[argtypes].library
        for variant in self.variants:
            name = f"{self.prefix}{dtype_name}_{bits}_{variant}"
            llvm.add_symbol(name, library.get_pointer_to_function(name))
            self._ready.add(name)

    def call(self, builder, symbol: str, function_type, arguments) -> None:
        """Emit a call of ``symbol`` (of type ``function_type``), made callable first (:meth:`ensure`)."""
        self.ensure(symbol)
        builder.call(cgutils.get_or_insert_function(builder.module, function_type, symbol), arguments)


__all__ = ["NARROW_BITS", "OutOfLine", "WIDE_BITS", "element_bytes", "vector_lanes"]
