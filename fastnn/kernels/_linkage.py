"""Each compiled library runs its own copies of the functions it calls: the same bits whether a
kernel was compiled in this process or loaded from the cache, and whatever ran before it.

When a Numba function calls another, the callee's optimised module is linked into the caller's
with its functions marked ``linkonce_odr`` (Numba's ``_get_module_for_linking``); those the
optimiser does not inline stay weak symbols in the caller's object code, and the JIT binds a weak
symbol to the first definition of that name loaded in the process. So a kernel compiled in this
process called the callee's standalone compile (loaded first), while the same object code loaded
from the cache in a new process called its own copy, or the copy of whichever library linking the
callee was loaded first. The copies were optimised in different modules and, under ``fastmath``
``reassoc``, may sum in another order: ``cross_entropy_forward_backward`` (200 x 10, float64) gave
533-602 of 2000 gradient entries 1 ulp apart between a compiling process and a loading one, and a
seeded digits fit another loss curve on its first (compiling) run than on the next ones.

:func:`install` changes only the object code: while the JIT compiles a library's optimised module,
its linked-in functions are ``internal`` (local symbols, so every call binds inside its own
library, in this process and in any that loads the cached object), and they are ``linkonce_odr``
again after, so a later caller links and merges them exactly as before. (Making them internal or
renaming them before the optimisation, tried first, changed the inlining, +7-20% compile time, or
stopped copies from merging across libraries, each test worker growing to ~12 GB.) Functions
only: global variables (the run-time constants of :mod:`.tiling`) keep binding by name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import llvmlite.binding as llvm
from numba.core import codegen

#: the linkage Numba gives the functions of a library linked into another (weak in the object code)
LINKED_COPY = llvm.Linkage.linkonce_odr


def linked_copies(module: llvm.ModuleRef) -> list:
    """The functions ``module`` defines with ``linkonce_odr`` linkage (copies linked in from other
    libraries), as LLVM value references."""
    return [fn for fn in module.functions if not fn.is_declaration and fn.linkage == LINKED_COPY]


@contextlib.contextmanager
def own_copies(module: llvm.ModuleRef) -> Iterator[None]:
    """Within the block, the functions ``module`` links in from other libraries are ``internal``
    (compile its object code there); ``linkonce_odr`` again after."""
    copies = linked_copies(module)
    for fn in copies:
        fn.linkage = llvm.Linkage.internal
    try:
        yield
    finally:
        for fn in copies:
            fn.linkage = LINKED_COPY


def _finalize_with_own_copies(self) -> None:
    with own_copies(self._final_module):
        _numba_finalize_final_module(self)  # adds the module to the JIT and compiles it to object code


_numba_finalize_final_module = codegen.CPUCodeLibrary._finalize_final_module


_installed = False


def install() -> None:
    """Compile the linked-in copies of every CPU library finalized from now on as local symbols
    (idempotent). It applies to any Numba function compiled in this process: only which copy a
    call binds to changes, not what a function computes. Install it before :mod:`._lazy_ir`,
    which wraps it."""
    global _installed
    if not _installed:
        codegen.CPUCodeLibrary._finalize_final_module = _finalize_with_own_copies
        _installed = True


def installed() -> bool:
    """Whether :func:`install` ran in this process."""
    return _installed


__all__ = ["LINKED_COPY", "install", "installed", "linked_copies", "own_copies"]
