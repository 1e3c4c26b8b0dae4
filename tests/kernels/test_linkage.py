"""Each compiled library binds the functions it links in to its own copies (kernels/_linkage.py)."""

import llvmlite.binding as llvm
import numpy as np
from numba import njit

import fastnn  # noqa: F401  (installs the linkage rule, as every fastnn import does)
from fastnn.kernels import _linkage


@njit
def _row_sums(a, out):
    """A callee big enough to be called, not inlined, in both the standalone and the linked copy."""
    for i in range(a.shape[0]):
        s = 0.0
        for j in range(a.shape[1]):
            s += a[i, j] * a[i, j] - 0.5 * a[i, j]
        out[i] = s


@njit
def _caller(a, out):
    _row_sums(a, out)
    _row_sums(a[::-1], out[::-1])
    return out.sum()


def _defined_linkages(dispatcher):
    library = next(iter(dispatcher.overloads.values())).library
    return {fn.name: fn.linkage for fn in library._final_module.functions if not fn.is_declaration}


def test_installed_by_importing_fastnn():
    assert _linkage.installed()


def test_a_caller_keeps_no_weak_copy_of_its_callee():
    a = np.arange(12.0).reshape(3, 4)
    _caller(a, np.empty(3))
    callee = next(iter(_row_sums.overloads.values())).fndesc.llvm_func_name
    linkages = _defined_linkages(_caller)
    assert linkages  # (the caller's own functions at least)
    # the callee's copy in the caller's library: internal (bound inside the library) or inlined away,
    # never linkonce_odr (a weak symbol that the callee's own compile, loaded first, would take over)
    assert linkages.get(callee, "internal") != _linkage.LINKED_COPY
    assert all(linkage != _linkage.LINKED_COPY for linkage in linkages.values()), linkages
    # the callee's own library still exports it (callers link it as before)
    assert _defined_linkages(_row_sums)[callee] == llvm.Linkage.external


def test_internalize_linked_copies_counts_what_it_changed():
    module = llvm.parse_assembly(
        "define linkonce_odr i64 @copy(i64 %x) {\n  ret i64 %x\n}\n"
        "define i64 @own(i64 %x) {\n  %y = call i64 @copy(i64 %x)\n  ret i64 %y\n}\n"
        "declare i64 @elsewhere(i64)\n"
    )
    assert _linkage.internalize_linked_copies(module) == 1
    linkages = {fn.name: fn.linkage for fn in module.functions}
    assert linkages["copy"] == llvm.Linkage.internal
    assert linkages["own"] == llvm.Linkage.external
    assert linkages["elsewhere"] == llvm.Linkage.external
