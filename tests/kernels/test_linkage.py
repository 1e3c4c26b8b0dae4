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


def test_a_callers_copies_of_its_callees_have_names_of_their_own():
    a = np.arange(12.0).reshape(3, 4)
    _caller(a, np.empty(3))
    callee = next(iter(_row_sums.overloads.values())).fndesc.llvm_func_name
    linkages = _defined_linkages(_caller)
    assert linkages  # (the caller's own functions at least)
    # no copy keeps a name shared with another library (the callee's own compile, loaded first,
    # would take its calls over: kernels/_linkage.py); the callee's copy, if not inlined away, is renamed
    assert callee not in linkages
    copies = [name for name, linkage in linkages.items() if linkage == _linkage.LINKED_COPY]
    assert all(_linkage.OWN_SUFFIX in name for name in copies), copies
    # the callee's own library still exports it under its name (callers link it as before)
    assert _defined_linkages(_row_sums)[callee] == llvm.Linkage.external


def test_own_linked_copies_renames_the_copies_and_their_calls():
    module = llvm.parse_assembly(
        "define linkonce_odr i64 @copy(i64 %x) {\n  ret i64 %x\n}\n"
        "define linkonce_odr i64 @again.own_old(i64 %x) {\n  ret i64 %x\n}\n"
        "define i64 @own(i64 %x) {\n  %y = call i64 @copy(i64 %x)\n  %z = call i64 @again.own_old(i64 %y)\n  ret i64 %z\n}\n"
        "declare i64 @elsewhere(i64)\n"
    )
    assert _linkage.own_linked_copies(module, "tok") == 2
    names = {fn.name: fn.linkage for fn in module.functions}
    assert names == {
        "copy.own_tok": llvm.Linkage.linkonce_odr,
        "again.own_tok": llvm.Linkage.linkonce_odr,  # one token, not a chain of them
        "own": llvm.Linkage.external,
        "elsewhere": llvm.Linkage.external,
    }
    assert "call i64 @copy.own_tok" in str(module) and "@again.own_tok(" in str(module)
