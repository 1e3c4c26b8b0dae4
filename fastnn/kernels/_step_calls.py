"""A fused step calls its kernels by a stable C name instead of compiling a copy of each.

Numba links the optimised module of every function a caller calls into the caller's library and
optimises and compiles it again there. A fused training step (``fastnn._fused``: one generated
function calling a model's kernels in order) called ~20-40 kernels, so its library re-optimised and
re-compiled all of them: 2/3 of a step's compile, each time a model structure is first trained.
The step calls each kernel once per step, so a copy saves nothing at run time.

Here, when a fused step's library is finalized, each call of a fastnn kernel's entry point (a
module-level ``@njit`` function of ``fastnn.kernels``) is renamed to a name of fastnn's own,
``fastnn_kernel_v1_<hash of the kernel's module, name, argument types and return type>``, the
kernel's own library is no longer linked in, and the name is bound in the JIT to the kernel's
compiled entry (``llvmlite.binding.add_symbol``). The step runs the very code a call from Python
runs, so its results are those of the step's kernels called one by one, to the bit. The kernel's
description is cached with the step (:mod:`._lazy_ir`'s needs), so a process loading the step from
the cache first compiles or loads each kernel for the same types and binds the name.
"""

from __future__ import annotations

import hashlib
import importlib
import pickle
import sys

import llvmlite.binding as llvm
from numba.core import codegen
from numba.core.registry import CPUDispatcher

from . import _lazy_ir

#: the C names of the kernels fused steps call (the version changes when the naming rule does)
PREFIX = "fastnn_kernel_v1_"

#: the packages whose module-level kernels a fused step calls by name
KERNEL_PACKAGE = "fastnn.kernels."

#: name -> (module, qualified name, pickled argument types, return type): what binds a name
_described: dict[str, tuple[str, str, bytes, str]] = {}

#: names bound in this process
_bound: set[str] = set()

_numba_finalize = codegen.CPUCodeLibrary.finalize

_STALE = "a cache file of another fastnn version? Delete fastnn's cache folder (FASTNN_CACHE_DIR, ~/.cache/fastnn)"


def stable_name(module: str, qualname: str, argtypes: tuple, return_type) -> str:
    """The C name of the kernel ``module.qualname`` compiled for ``argtypes``."""
    key = f"{module}.{qualname}|{'|'.join(map(str, argtypes))}|{return_type}"
    return PREFIX + hashlib.sha256(key.encode()).hexdigest()[:32]


def _kernel_entries() -> dict:
    """Numba-mangled entry name -> (stable name, description, compile result) of every compiled
    overload of the module-level kernels of fastnn.kernels imported in this process."""
    entries = {}
    for modname, mod in list(sys.modules.items()):
        if not modname.startswith(KERNEL_PACKAGE) or mod is None:
            continue
        for attr, obj in list(vars(mod).items()):
            if not isinstance(obj, CPUDispatcher) or obj.py_func.__module__ != modname:
                continue
            if obj.py_func.__qualname__ != attr:  # an alias: the kernel is listed under its own name
                continue
            for argtypes, cres in list(obj.overloads.items()):
                if cres.objectmode or cres.fndesc is None:
                    continue
                ret = cres.signature.return_type
                name = stable_name(modname, attr, argtypes, ret)
                description = (modname, attr, pickle.dumps(tuple(argtypes)), str(ret))
                entries[cres.fndesc.llvm_func_name] = (name, description, cres)
    return entries


def _bind(name: str, cres) -> None:
    """Bind ``name`` to the entry of ``cres`` (a compiled overload) in this process's JIT."""
    if name not in _bound:
        address = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
        if not address:
            raise RuntimeError(f"fastnn: the kernel of {name!r} has no compiled entry in this process")
        llvm.add_symbol(name, address)
        _bound.add(name)


def ensure(name: str) -> None:
    """Make ``name`` callable in this process: its kernel compiled or loaded for the described types."""
    if name in _bound:
        return
    if name not in _described:
        raise RuntimeError(f"fastnn: a cached fused step calls {name!r}, which it does not describe")
    modname, qualname, pickled, ret = _described[name]
    kernel = getattr(importlib.import_module(modname), qualname, None)
    if not isinstance(kernel, CPUDispatcher):
        raise RuntimeError(
            f"fastnn: a cached fused step calls {modname}.{qualname}, not a kernel of this version; {_STALE}"
        )
    argtypes = pickle.loads(pickled)
    try:
        kernel.compile(argtypes)
    except Exception as error:  # a kernel whose arguments changed since the step was cached
        raise RuntimeError(
            f"fastnn: a cached fused step calls {modname}.{qualname} with arguments it no longer takes "
            f"({error.__class__.__name__}); {_STALE}"
        ) from error
    cres = kernel.overloads[argtypes]
    if str(cres.signature.return_type) != ret:
        raise RuntimeError(
            f"fastnn: a cached fused step expects {modname}.{qualname} to return {ret}, "
            f"this version returns {cres.signature.return_type}; {_STALE}"
        )
    _bind(name, cres)


def describe(name: str):
    """What a cache file keeps about ``name`` (for :func:`remember` in a loading process)."""
    return _described.get(name)


def remember(name: str, description) -> None:
    """Learn what binds ``name`` (from a cached step's file)."""
    _described.setdefault(name, tuple(description))


def _defines_step(module: llvm.ModuleRef) -> bool:
    return any(name.startswith(_lazy_ir.STEP_PREFIX) for name in _lazy_ir.entry_owners(module))


#: the Numba-mangled prefix of the functions of the modules whose parallel regions call their task
#: function by name (:func:`_defines_region`)
BY_NAME_FROM_REGIONS = ("_ZN6fastnn7kernels11dense_chain",)

#: the name Numba gives a parallel region's body (a ``prange`` loop compiled as a gufunc)
_REGION_BODY = "__numba_parfor_gufunc_"


def _defines_region(module: llvm.ModuleRef) -> bool:
    """Whether ``module`` defines a parallel region's body: one that calls the functions of
    :data:`BY_NAME_FROM_REGIONS`' modules by name, whose copies, linked into the region and optimised
    again with it, were most of the kernel's compile (``kernels.dense_chain``: 7.0 s of which 5.7
    linking its task)."""
    return any(_REGION_BODY in f.name for f in module.functions if not f.is_declaration)


def call_kernels_by_name(library) -> None:
    """If ``library`` (being finalized, its callees not linked yet) is a fused step's: rename its calls
    of fastnn kernels to their stable names, bind them, and stop linking those kernels' libraries.

    Any other function the step calls directly has its own library in the linking list (Numba adds
    the library of every function it lowers a call to), so a copy inside a dropped kernel library is
    never the only definition the step needs."""
    module = library._final_module
    declared = [fn for fn in module.functions if fn.is_declaration]
    if not declared:
        return
    if not _defines_step(module):
        declared = [fn for fn in declared if fn.name.startswith(BY_NAME_FROM_REGIONS)]
        if not declared or not _defines_region(module):
            return
    entries = _kernel_entries()
    renamed = set()
    for fn in declared:
        entry = entries.get(fn.name)
        if entry is None:
            continue
        name, description, cres = entry
        _described.setdefault(name, description)
        _bind(name, cres)
        fn.name = name
        renamed.add(id(cres.library))
    linked = []
    for callee in library._linking_libraries:
        if id(callee) in renamed:
            library._reload_init.update(callee._reload_init)
        else:
            linked.append(callee)
    library._linking_libraries = linked


def _finalize(self):
    call_kernels_by_name(self)
    return _numba_finalize(self)


def install() -> None:
    """Have fused steps call fastnn's kernels by name (idempotent)."""
    codegen.CPUCodeLibrary.finalize = _finalize
    _lazy_ir.provide(PREFIX, ensure, describe, remember)


__all__ = ["PREFIX", "call_kernels_by_name", "describe", "ensure", "install", "remember", "stable_name"]
