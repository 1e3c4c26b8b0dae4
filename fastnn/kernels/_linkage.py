"""Each compiled library runs its own copies of the functions it calls: the same bits whether a
kernel was compiled in this process or loaded from the cache, and whatever ran before it.

When a Numba function calls another, the callee's optimised module is linked into the caller's
with its functions marked ``linkonce_odr`` (Numba's ``_get_module_for_linking``): weak symbols in
the object code. The JIT then binds a weak definition to the first definition of that name already
loaded in the process. So a kernel compiled in this process called the callee's standalone compile
(registered first, as a strong symbol), while the same object code loaded from the cache in a new
process called its own copy, or the copy of whichever library that links the callee loaded first.
Those copies were optimised in different modules and, under ``fastmath`` ``reassoc``, may sum in
another order: measured on ``cross_entropy_forward_backward`` (200 x 10, float64, mean), 602 of
2000 gradient entries 1 ulp apart between a compiling process and a loading one, and a digits fit
with another loss curve on its first (compiling) run than on the next ones.

:func:`install` gives the linked-in copies a name of their library's own (a random token) before
the final module's optimisation: every call then binds inside its own library (what the
cache-loaded code did when nothing else was loaded), with the same linkage and so the same inlining
and code as before (making them ``internal`` instead also worked, but LLVM then inlined every
single-call copy whatever its size: a cold digits fit compiled in 63-66 s instead of 51-55). The
library's own exported functions keep their names (callers link them as before). Functions only:
global variables (the run-time constants of :mod:`.tiling`) keep binding by name.
"""

from __future__ import annotations

import uuid

import llvmlite.binding as llvm
from numba.core import codegen

#: the linkage Numba gives the functions of a library linked into another (weak in the object code)
LINKED_COPY = llvm.Linkage.linkonce_odr


#: what separates a linked-in copy's original name from its library's token
OWN_SUFFIX = ".own_"


def own_linked_copies(module: llvm.ModuleRef, token: str) -> int:
    """Rename every function defined in ``module`` with ``linkonce_odr`` linkage (a copy linked in
    from another library) to its original name, :data:`OWN_SUFFIX` and ``token`` (the calls to it
    follow); returns how many."""
    count = 0
    for function in module.functions:
        if not function.is_declaration and function.linkage == LINKED_COPY:
            function.name = f"{function.name.split(OWN_SUFFIX, 1)[0]}{OWN_SUFFIX}{token}"
            count += 1
    return count


def _optimize_own_copies(self) -> None:
    own_linked_copies(self._final_module, uuid.uuid4().hex)
    _numba_optimize_final_module(self)


_numba_optimize_final_module = codegen.CPUCodeLibrary._optimize_final_module


def install() -> None:
    """Give the linked copies their own names in every CPU library finalized from now on (idempotent). It
    applies to any Numba function compiled in this process: only symbol binding changes, not what
    a function computes."""
    if codegen.CPUCodeLibrary._optimize_final_module is not _optimize_own_copies:
        codegen.CPUCodeLibrary._optimize_final_module = _optimize_own_copies


def installed() -> bool:
    """Whether :func:`install` ran in this process."""
    return codegen.CPUCodeLibrary._optimize_final_module is _optimize_own_copies


__all__ = ["LINKED_COPY", "OWN_SUFFIX", "install", "installed", "own_linked_copies"]
