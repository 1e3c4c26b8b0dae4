"""fastnn's kernels loaded from the cache parse their LLVM IR only when a new compile links them.

Numba caches a CPU library as its object code plus the bitcode of its optimised module (for later
callers to link and inline) and parses that bitcode into an LLVM module at every load, only to list
the symbols the library defines; most loaded kernels are never linked into a new compile, so the
parse is wasted, and each loaded library keeps its module in memory. Measured on this package
(2-core VM, warm caches): the mlp's first training step and prediction spent 0.10 s of ~1.0 s
parsing 8 modules, and a cached fused step's first call (every kernel of the step linked in) took
164-209 ms, against 17-21 ms without the parse.

:func:`install` stores the defined symbols' names with the object code of fastnn's own functions
(modules ``fastnn.*`` and the generated fused steps) under a kind of its own (:data:`KIND`), loads
those libraries without parsing, and parses the bitcode the first time a new compile links the
library (Numba's ``_get_module_for_linking``). Other functions compiled in the process keep
Numba's format, so their cache files stay readable without fastnn.
"""

from __future__ import annotations

import weakref

import llvmlite.binding as llvm
from numba.core import codegen, compiler

#: the serialization kind of a library cached with its defined names (Numba's own: "object")
KIND = "fastnn-object"

_numba_serialize = codegen.CPUCodeLibrary.serialize_using_object_code
_numba_unserialize = codegen.CPUCodeLibrary._unserialize.__func__
_numba_module_for_linking = codegen.CPUCodeLibrary._get_module_for_linking
_numba_reduce = compiler.CompileResult._reduce


#: module names of fastnn's own compiled functions: the package's, and the generated fused steps'
#: (``fastnn._compiling.FUSED_STEP_PREFIX``, above this package: a test keeps the two equal)
OWN_PREFIXES = ("fastnn.", "fastnn_step_")

#: the code libraries of fastnn's functions compiled in this process, to be cached with their names
_own_libraries: weakref.WeakSet = weakref.WeakSet()


def own_module(modname: str) -> bool:
    """Whether a function of module ``modname`` is fastnn's (its kernels, its fused steps)."""
    return modname == "fastnn" or modname.startswith(OWN_PREFIXES)


def defined_names(module: llvm.ModuleRef) -> tuple[str, ...]:
    """Names of the functions and global variables that ``module`` defines."""
    return tuple(
        gv.name for gsets in (module.functions, module.global_variables) for gv in gsets if not gv.is_declaration
    )


def _reduce_marking_own(self):
    if own_module(self.fndesc.modname):
        _own_libraries.add(self.library)
    return _numba_reduce(self)


def _serialize_with_names(self):
    if self not in _own_libraries:
        return _numba_serialize(self)
    self._ensure_finalized()
    shared = self._get_module_for_linking()
    return (self.name, KIND, (self._get_compiled_object(), shared.as_bitcode(), defined_names(shared)))


def _unserialize_lazily(cls, codegen_, state):
    name, kind, data = state
    if kind != KIND:
        return _numba_unserialize(cls, codegen_, state)
    object_code, shared_bitcode, names = data
    self = codegen_.create_library(name)
    self.enable_object_caching()
    self._set_compiled_object(object_code)
    self._finalize_final_module()  # the object code, handed to the JIT through the object cache
    self._codegen._engine._defined_symbols.update(names)
    self._fastnn_bitcode = shared_bitcode  # parsed if a new compile links this library
    return self


def _module_for_linking(self):
    bitcode = self.__dict__.pop("_fastnn_bitcode", None)
    if bitcode is not None and self._shared_module is None:
        self._shared_module = llvm.parse_bitcode(bitcode)
    return _numba_module_for_linking(self)


def install() -> None:
    """Cache fastnn's libraries with their defined names and parse their bitcode lazily (idempotent)."""
    cls = codegen.CPUCodeLibrary
    cls.serialize_using_object_code = _serialize_with_names
    cls._unserialize = classmethod(_unserialize_lazily)
    cls._get_module_for_linking = _module_for_linking
    compiler.CompileResult._reduce = _reduce_marking_own


def installed() -> bool:
    """Whether :func:`install` ran in this process."""
    return compiler.CompileResult._reduce is _reduce_marking_own


__all__ = ["KIND", "OWN_PREFIXES", "defined_names", "install", "installed", "own_module"]
