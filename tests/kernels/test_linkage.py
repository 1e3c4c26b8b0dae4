"""Each compiled library binds the functions it links in to its own copies (kernels/_linkage.py)."""

import os
import subprocess
import sys

import llvmlite.binding as llvm
import numpy as np
from numba import njit

import fastnn  # noqa: F401  (installs the linkage rule, as every fastnn import does)
from fastnn.kernels import _linkage


@njit
def _row_sums(a, out):
    """A callee big enough to stay a call, not inlined, in its caller's library."""
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


def test_linked_copies_lists_the_weak_definitions_only():
    module = llvm.parse_assembly(
        "define linkonce_odr i64 @copy(i64 %x) {\n  ret i64 %x\n}\n"
        "define internal i64 @private(i64 %x) {\n  ret i64 %x\n}\n"
        "define i64 @own(i64 %x) {\n  %y = call i64 @copy(i64 %x)\n  %z = call i64 @private(i64 %y)\n  ret i64 %z\n}\n"
        "declare i64 @elsewhere(i64)\n"
    )
    assert [fn.name for fn in _linkage.linked_copies(module)] == ["copy"]


def test_a_callers_module_keeps_its_copies_weak_for_later_callers():
    # the object code binds the copies inside the library; the optimised module that later callers
    # link keeps them linkonce_odr, so their copies merge with the same functions of other libraries
    a = np.arange(12.0).reshape(3, 4)
    expected = (a * a - 0.5 * a).sum()  # (the second call writes the same sums, reversed)
    assert np.isclose(_caller(a, np.empty(3)), expected)
    linkages = _defined_linkages(_caller)
    callee = next(iter(_row_sums.overloads.values())).fndesc.llvm_func_name
    copies = [name for name, linkage in linkages.items() if linkage == _linkage.LINKED_COPY]
    assert copies, linkages  # (the callee, not inlined, at least; else this test shows nothing)
    assert _defined_linkages(_row_sums)[callee] == llvm.Linkage.external


_CROSS_ENTROPY_BITS = """
import hashlib
import numpy as np
from fastnn.kernels import losses
rng = np.random.default_rng(0)
logits = rng.standard_normal((200, 10)) * 3
labels = rng.integers(0, 10, 200).astype(np.int64)
grad = np.empty_like(logits)
losses.cross_entropy_forward_backward(logits, labels, grad, np.zeros(4096), True, True)
print(hashlib.sha256(grad.tobytes()).hexdigest())
"""


def test_a_kernel_compiled_here_gives_the_bits_of_its_cached_copy(tmp_path):
    # the first process compiles the kernel, the second loads it from the cache: before the rule,
    # 533-602 of these 2000 float64 gradient entries were 1 ulp apart (fastmath reassoc, the
    # callee's standalone compile against the caller's own copy)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "FASTNN_CACHE_DIR": str(tmp_path / "fastnn")}
    runs = [
        subprocess.run([sys.executable, "-c", _CROSS_ENTROPY_BITS], env=env, capture_output=True, text=True, check=True)
        for _ in range(2)
    ]
    compiled, loaded = (run.stdout.strip().splitlines()[-1] for run in runs)
    assert compiled == loaded
