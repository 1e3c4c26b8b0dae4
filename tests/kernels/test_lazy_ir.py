"""fastnn's cached libraries load without parsing their IR until a compile links them (kernels/_lazy_ir.py)."""

import os
import subprocess
import sys

import llvmlite.binding as llvm

import fastnn  # noqa: F401  (installs the rule, as every fastnn import does)
from fastnn import _compiling
from fastnn.kernels import _lazy_ir


def test_installed_by_importing_fastnn():
    assert _lazy_ir.installed()


def test_fastnn_functions_and_fused_steps_are_its_own_others_keep_numbas_format():
    assert _lazy_ir.own_module("fastnn.kernels.dense")
    assert _lazy_ir.own_module(_compiling.FUSED_STEP_PREFIX + "0123abcd")
    assert not _lazy_ir.own_module("fastnnext.kernels")
    assert not _lazy_ir.own_module("tests.kernels.test_lazy_ir")
    assert not _lazy_ir.own_module("__main__")


def test_defined_names_lists_definitions_only():
    module = llvm.parse_assembly(
        "@g = global i64 1\n@ext = external global i64\n"
        "define linkonce_odr i64 @copy(i64 %x) {\n  ret i64 %x\n}\n"
        "define i64 @own(i64 %x) {\n  %y = call i64 @copy(i64 %x)\n  %z = call i64 @elsewhere(i64 %y)\n  ret i64 %z\n}\n"
        "declare i64 @elsewhere(i64)\n"
    )
    assert sorted(_lazy_ir.defined_names(module)) == ["copy", "g", "own"]


_LOAD_AND_LINK = r"""
import sys
import numpy as np
from numba import njit
from numba.core import codegen
from fastnn.kernels import losses, _lazy_ir

rng = np.random.default_rng(0)
logits = rng.standard_normal((20, 7))
labels = rng.integers(0, 7, 20).astype(np.int64)
grad = np.empty_like(logits)
loss = losses.cross_entropy_forward_backward(logits, labels, grad, np.zeros(256), True, True)
library = next(iter(losses.cross_entropy_forward_backward.overloads.values())).library
print("lazy" if "_fastnn_bitcode" in library.__dict__ else "parsed")

@njit
def caller(logits, labels, grad, mean, compute_grad):  # a new compile linking the cached kernel
    return losses.cross_entropy_forward_backward(logits, labels, grad, np.zeros(256), mean, compute_grad)

grad2 = np.empty_like(logits)
assert caller(logits, labels, grad2, True, True) == loss and np.array_equal(grad, grad2)
print("linked", "_fastnn_bitcode" not in library.__dict__)
"""


def test_a_cached_kernel_loads_unparsed_and_still_links_into_a_new_compile(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "FASTNN_CACHE_DIR": str(tmp_path / "fastnn")}
    runs = [
        subprocess.run([sys.executable, "-c", _LOAD_AND_LINK], env=env, capture_output=True, text=True)
        for _ in range(2)
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    compiled, loaded = (run.stdout.split() for run in runs)
    # compiled here (handed to the JIT as object code, its module kept as bitcode) or loaded from
    # the cache: the module is parsed only when a new compile links the library
    assert compiled == ["lazy", "linked", "True"]
    assert loaded == ["lazy", "linked", "True"]
