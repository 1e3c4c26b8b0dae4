"""The register blocks of fastnn's GEMM are compiled once a process, out of line, and called by name from
every kernel that uses them (kernels/microgemm.py, ``block_symbol``): a kernel's library declares them
and does not define them, a cached kernel makes them callable before it is loaded, and the results are
the same bits whether the kernel was compiled in the process or loaded from the cache."""

import os
import re
import subprocess
import sys

import pytest

from fastnn.kernels import _lazy_ir, microgemm

_PRODUCTS = r"""
import hashlib
import numpy as np
from fastnn.kernels import microgemm

rng = np.random.default_rng(0)
digest = hashlib.sha256()
for dtype in (np.float32, np.float64):
    for m, n, k, trans_a, trans_b in [(70, 48, 300, False, False), (13, 37, 129, True, False), (64, 100, 77, False, True)]:
        a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
        b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
        c = np.zeros((m, n), dtype)
        microgemm.micro_gemm_block(trans_a, a, b, c, 0, m, 0, n, trans_b)
        assert np.allclose(c, a.T @ b.T if trans_a and trans_b else (a.T if trans_a else a) @ (b.T if trans_b else b), rtol=1e-4, atol=1e-3)
        digest.update(c.tobytes())
print(digest.hexdigest())
from fastnn.kernels import _lazy_ir
for library in (overload.library for overload in microgemm.micro_gemm_block.overloads.values()):
    if "_fastnn_object" in library.__dict__:  # compiled in this process: what its cache file keeps
        _, kind, (_, _, names, needs, _) = library.serialize_using_object_code()
        print(kind, sorted(needs), any(name.startswith("fastnn_microgemm_block_") for name in names))
"""


def test_a_cached_kernel_loads_its_blocks_first_and_gives_the_compiled_bits(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "FASTNN_CACHE_DIR": str(tmp_path / "fastnn")}
    runs = [
        subprocess.run([sys.executable, "-c", _PRODUCTS], env=env, capture_output=True, text=True) for _ in range(2)
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
    compiled, loaded = (run.stdout.splitlines() for run in runs)
    assert "compiling" in runs[0].stderr  # the first process compiled the kernel and its blocks ...
    assert "compiling" not in runs[1].stderr  # ... the second loaded both (the blocks before the kernel)
    assert compiled[0] == loaded[0]  # the same bits
    # the kernel's cache files name the blocks it calls (its dtype's, with and without packing, for
    # the target's vector width) and its code does not define them
    assert len(compiled) > 2
    for line in compiled[1:]:
        kind, needs, defines = line.split(" ", 1)[0], line.split(" ", 1)[1].rsplit(" ", 1)[0], line.rsplit(" ", 1)[1]
        assert kind == _lazy_ir.KIND and defines == "False", line
        assert re.fullmatch(
            r"\['fastnn_microgemm_block_v2_(float\d\d)_(512|256)_nopack', 'fastnn_microgemm_block_v2_\1_\2_pack'\]",
            needs,
        ), line
    assert loaded[1:] == []  # (loaded: nothing compiled)


def test_an_unknown_block_name_is_refused_clearly():
    with pytest.raises(RuntimeError, match="no function named 'fastnn_microgemm_block_v2_float16_512_pack'"):
        microgemm.BLOCKS.ensure("fastnn_microgemm_block_v2_float16_512_pack")
