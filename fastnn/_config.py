"""Process-wide settings: compiler flags for every kernel, size thresholds, thread control.

Every ``@njit`` in ``fastnn.kernels`` takes its options from :data:`JIT` (serial) or
:data:`JIT_PARALLEL`; nothing else in the package spells ``fastmath=``.
"""
from __future__ import annotations

import os

import numba

# fastmath without 'nnan'/'ninf': NaN and inf stay detectable (DESIGN.md, PERF_NOTES.md).
# 'contract' allows FMA, 'reassoc' lets LLVM vectorise reductions, 'arcp'/'afn' cheapen
# divisions and libm calls, 'nsz' ignores the sign of zero.
FASTMATH = frozenset({"contract", "reassoc", "arcp", "afn", "nsz"})

JIT = dict(cache=True, error_model="numpy", fastmath=set(FASTMATH), nogil=True)
JIT_PARALLEL = dict(JIT, parallel=True)
JIT_INLINE = dict(JIT, inline="always")
# For the few scalar helpers whose order of operations is their point (a - (b - shift) with a huge
# shift, a/2 - b/2 near the dtype max): without 'reassoc', and not inlined, so their instructions
# keep these flags inside any caller (LLVM re-associated them into overflows or lost terms).
JIT_ORDERED = dict(JIT, fastmath=set(FASTMATH - {"reassoc"}))

# Work below this many elements runs in the serial twin of a kernel: a 2-thread parallel
# region costs ~2 us to start (PERF_NOTES.md: break-even near 65k elements).
PARALLEL_MIN_ELEMENTS = 65_536
# GEMMs with fewer multiply-adds than this run as one serial BLAS call.
PARALLEL_MIN_MACS = 1 << 20
# GEMMs run in parallel are split into this many output tiles (Numba's thread count at start-up,
# fixed for the process: set_num_threads changes who runs the tiles, not the tiling, so the
# bits of every product stay the same). Part of the kernels' cache stamp (kernels/_cache.py).
GEMM_TILES = max(1, numba.config.NUMBA_NUM_THREADS)
# Rows per fixed-size chunk of every reduction over the batch: partial sums are per chunk,
# combined in chunk order, so results never depend on the thread count.
REDUCTION_CHUNK_ROWS = 64

DTYPES = ("float32", "float64")

# Recorded kernel calls (training steps, small predictions) tier up to one compiled function
# (fastnn._fused) after this many runs, when Python's dispatch was more than FUSE_MIN_SHARE of
# their time. FASTNN_FUSE=always fuses at once, =never keeps the Python loop (the test suite
# uses never, except the tests of fusion itself, to save the compile time).
FUSE_AFTER_CALLS = 200
FUSE_MIN_SHARE = 0.02
FUSE = os.environ.get("FASTNN_FUSE", "auto").strip().lower() or "auto"
if FUSE not in ("auto", "always", "never"):
    raise ValueError(f"FASTNN_FUSE must be auto, always or never, got {FUSE!r}; unset it for auto")


def set_num_threads(n: int) -> None:
    """Use ``n`` threads for fastnn's kernels.

    fastnn parallelises with Numba's thread pool only; the BLAS library its kernels call is
    pinned to one thread (GEMMs are split into fixed tiles over Numba's threads), so the two
    pools never oversubscribe the cores.
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if not 1 <= n <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(
            f"n must be between 1 and {numba.config.NUMBA_NUM_THREADS} (the threads Numba "
            f"started with; set NUMBA_NUM_THREADS before import for more), got {n}")
    numba.set_num_threads(n)


def get_num_threads() -> int:
    """Number of threads fastnn's parallel kernels use."""
    return numba.get_num_threads()
