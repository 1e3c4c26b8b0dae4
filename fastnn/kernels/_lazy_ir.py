"""fastnn's compiled libraries keep their LLVM IR only as bitcode, parsed when a new compile links them.

Numba caches a CPU library as its object code plus the bitcode of its optimised module (for later
callers to link and inline) and parses that bitcode into an LLVM module at every load, only to list
the symbols the library defines; most loaded kernels are never linked into a new compile, so the
parse is wasted, and each loaded library keeps its module in memory. Measured on this package
(2-core VM, warm caches): the mlp's first training step and prediction spent 0.10 s of ~1.0 s
parsing 8 modules, and a cached fused step's first call (every kernel of the step linked in) took
164-209 ms, against 17-21 ms without the parse. A library compiled in the process is worse: the
JIT keeps its optimised module for the life of the process (Numba never removes modules from it)
and a clone of it once a caller links it, so a process that compiles grows by the IR of everything
it compiled: fastnn's kernels and four fused steps compiled in one process held 903 MB, 166 MB when
loaded from the cache.

:func:`install` makes fastnn's own libraries (functions of modules ``fastnn.*`` and the generated
fused steps) behave alike whether compiled or loaded: a compiled one is turned into object code by
the JIT's target machine (with its linked-in copies local, :mod:`._linkage`), keeps its module as
bitcode bytes, and hands the JIT an empty module plus the object code, as a cache load does (the
same 4 fits: 721 MB); both are cached with their defined names under a kind of their own
(:data:`KIND`) and parse their bitcode the first time a new compile links them (Numba's
``_get_module_for_linking``). Their LLVM cannot be inspected (``inspect_llvm``/``inspect_asm``
refuse, as for any cached function). Other functions compiled in the process keep Numba's ways and
format, so their cache files stay readable without fastnn.
"""

from __future__ import annotations

import re
import weakref

import llvmlite.binding as llvm
from numba.core import codegen

from . import _linkage

#: the serialization kind of a library cached with its defined names (Numba's own: "object")
KIND = "fastnn-object"

_numba_serialize = codegen.CPUCodeLibrary.serialize_using_object_code
_numba_unserialize = codegen.CPUCodeLibrary._unserialize.__func__
_numba_module_for_linking = codegen.CPUCodeLibrary._get_module_for_linking
_previous_finalize = codegen.CPUCodeLibrary._finalize_final_module  # set again by install()

#: global variables that tie a module to this process (Python objects' addresses, recursion stubs)
_PROCESS_BOUND_PREFIXES = ("numba.dynamic.globals", codegen.RuntimeLinker.PREFIX)


#: module names of fastnn's own compiled functions: the package's, and the generated fused steps'
#: (``fastnn._compiling.FUSED_STEP_PREFIX``, above this package: a test keeps the two equal)
STEP_PREFIX = "fastnn_step_"
OWN_PREFIXES = ("fastnn.", STEP_PREFIX)

#: the code libraries of fastnn's functions compiled in this process, to be cached with their names
_own_libraries: weakref.WeakSet = weakref.WeakSet()

#: functions compiled code calls by a C name of fastnn's (not copied into each caller): the name's
#: prefix -> (ensure, describe, remember): ``ensure(name)`` makes such a name callable in this process
#: (compiling or loading the library that defines it), run before a library calling it is handed to the
#: JIT, compiled or loaded; ``describe(name)`` gives what a cache file keeps to do so in another process
#: (or None: nothing), which hands it to ``remember(name, description)`` before ``ensure``
_providers: dict = {}


def provide(prefix: str, ensure, describe=None, remember=None) -> None:
    """Register ``ensure(name)``, which makes the function ``name`` (any name starting with ``prefix``)
    callable in this process; a cached library that calls one runs it before it is loaded, after
    ``remember(name, describe(name))`` with the description its compiling process cached (if given)."""
    _providers[prefix] = (ensure, describe, remember)


def _provider(name: str):
    return next((entry for prefix, entry in _providers.items() if name.startswith(prefix)), None)


def needed_names(module: llvm.ModuleRef) -> tuple[str, ...]:
    """The functions ``module`` declares whose names a provider (:func:`provide`) defines."""
    prefixes = tuple(_providers)
    if not prefixes:
        return ()
    return tuple(fn.name for fn in module.functions if fn.is_declaration and fn.name.startswith(prefixes))


def _provide(names, descriptions=()) -> None:
    for name, description in descriptions:
        provider = _provider(name)
        if provider is not None and provider[2] is not None:
            provider[2](name, description)
    for name in names:
        provider = _provider(name)
        if provider is None:  # its provider's module was not imported: no kernel that calls it was either
            raise RuntimeError(f"fastnn: a cached kernel calls {name!r}, which nothing in this process defines")
        provider[0](name)


def _descriptions(names) -> tuple:
    """(name, description) of the ``names`` whose providers describe them (kept in the cache file)."""
    described = []
    for name in names:
        provider = _provider(name)
        if provider is not None and provider[1] is not None:
            description = provider[1](name)
            if description is not None:
                described.append((name, description))
    return tuple(described)


def own_module(modname: str) -> bool:
    """Whether a function of module ``modname`` is fastnn's (its kernels, its fused steps)."""
    return modname == "fastnn" or modname.startswith(OWN_PREFIXES)


def defined_names(module: llvm.ModuleRef) -> tuple[str, ...]:
    """Names of the functions and global variables that ``module`` defines."""
    return tuple(
        gv.name for gsets in (module.functions, module.global_variables) for gv in gsets if not gv.is_declaration
    )


def _serialize_with_names(self):
    if self not in _own_libraries:
        return _numba_serialize(self)
    self._ensure_finalized()
    needs = self.__dict__.get("_fastnn_needs", ())
    described = _descriptions(needs)
    if "_fastnn_object" in self.__dict__:  # compiled to object code by _finalize_from_object
        bitcode = self.__dict__.get("_fastnn_bitcode") or self._get_module_for_linking().as_bitcode()
        return (self.name, KIND, (self._fastnn_object, bitcode, self._fastnn_names, needs, described))
    shared = self._get_module_for_linking()
    data = (self._get_compiled_object(), shared.as_bitcode(), defined_names(shared), needs, described)
    return (self.name, KIND, data)


#: a Numba-mangled name (of a function, or of its CPython or C wrapper) up to its first namespace's length
_MANGLED_FIRST_NAMESPACE = re.compile(r"(?:cpython\.|cfunc\.)?_ZN(\d+)")


def owner(function_name: str) -> str:
    """The first namespace of a Numba-mangled function name (``_ZN6fastnn7kernels...`` -> ``fastnn``), or ""."""
    match = _MANGLED_FIRST_NAMESPACE.match(function_name)
    return function_name[match.end() : match.end() + int(match[1])] if match else ""


def entry_owners(module: llvm.ModuleRef) -> list[str]:
    """The first namespace (:func:`owner`) of each function ``module`` defines as an entry point
    (external linkage; the functions linked in from other libraries are not)."""
    return [owner(fn.name) for fn in module.functions if not fn.is_declaration and fn.linkage == llvm.Linkage.external]


def _defines_own(module: llvm.ModuleRef) -> bool:
    """Whether ``module`` (a library's, being finalized) defines a function of fastnn's."""
    return any(own_module(name) for name in entry_owners(module))


def _compiles_to_object(library, module: llvm.ModuleRef) -> bool:
    """Whether ``library`` (being finalized, fastnn's) can be handed to the JIT as object code: caching
    enabled, no dynamic globals (addresses of this process) or unresolved recursive calls."""
    if not library.__dict__.get("_object_caching_enabled"):
        return False
    return not any(gv.name.startswith(_PROCESS_BOUND_PREFIXES) for gv in module.global_variables)


def _finalize_from_object(self):
    module = self._final_module
    needs = needed_names(module)
    if needs:  # a new process provides them before it loads the library
        _provide(needs)
        self._fastnn_needs = needs
    own = _defines_own(module)
    if own or needs:  # cached in fastnn's format, with its names (and needs)
        _own_libraries.add(self)
    if not (own and _compiles_to_object(self, module)):
        return _previous_finalize(self)
    self._verify_declare_only_symbols()
    with _linkage.own_copies(module):
        object_code = bytes(self._codegen._tm.emit_object(module))
    names = defined_names(module)
    self._codegen._rtlinker.scan_defined_symbols(module)
    for fn in module.functions:  # the module later compiles link: Numba's _get_module_for_linking
        if not fn.is_declaration and fn.linkage == llvm.Linkage.external:
            fn.linkage = _linkage.LINKED_COPY
    self._fastnn_bitcode = module.as_bitcode()
    self._fastnn_object = object_code
    self._fastnn_names = names
    self._final_module = llvm.parse_assembly(str(self._codegen._create_empty_module(self.name)))
    self.enable_object_caching()
    self._set_compiled_object(object_code)
    _previous_finalize(self)  # an empty module: the JIT loads the object code through the object cache
    self._codegen._engine._defined_symbols.update(names)
    return None


def _unserialize_lazily(cls, codegen_, state):
    name, kind, data = state
    if kind != KIND:
        return _numba_unserialize(cls, codegen_, state)
    object_code, shared_bitcode, names = data[:3]
    needs = data[3] if len(data) > 3 else ()  # (older files: their code calls nothing by fastnn's names)
    _provide(needs, data[4] if len(data) > 4 else ())  # before the JIT resolves the object code's calls
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
    global _previous_finalize
    cls = codegen.CPUCodeLibrary
    if cls._finalize_final_module is not _finalize_from_object:
        _previous_finalize = cls._finalize_final_module
        cls._finalize_final_module = _finalize_from_object
    cls.serialize_using_object_code = _serialize_with_names
    cls._unserialize = classmethod(_unserialize_lazily)
    cls._get_module_for_linking = _module_for_linking


def installed() -> bool:
    """Whether :func:`install` ran in this process."""
    return codegen.CPUCodeLibrary._finalize_final_module is _finalize_from_object


__all__ = [
    "KIND",
    "OWN_PREFIXES",
    "STEP_PREFIX",
    "defined_names",
    "entry_owners",
    "install",
    "installed",
    "needed_names",
    "own_module",
    "owner",
    "provide",
]
