"""Process-wide settings: compiler flags for every kernel, size thresholds, thread control.

Every ``@njit`` in ``fastnn.kernels`` takes its options from :data:`JIT` (serial) or
:data:`JIT_PARALLEL`; nothing else in the package spells ``fastmath=``. Importing this module
also picks Numba's threading layer (:data:`THREADING_LAYER`), before any parallel kernel runs.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import numbers
import os
import re
import sys

import llvmlite.binding as llvm
import numba
import numpy as np


def _release(version: str) -> tuple[int, ...]:
    """The leading numbers of a version string: "0.68.0rc1" -> (0, 68, 0)."""
    return tuple(int(m.group()) if (m := re.match(r"\d+", part)) else 0 for part in version.split(".")[:3])


def check_numba_numpy(numba_version: str = numba.__version__, numpy_version: str = np.__version__) -> None:
    """Refuse, with the fix, a Numba that cannot compile against the installed NumPy.

    Numba 0.68.0 registers an overload of ``np.row_stack``, which NumPy 2.5 removed, at its first
    compile: every kernel then raised AttributeError deep inside Numba (a GPU machine's image
    paired them, session 18). Numba 0.68.1 guards it; both allow NumPy below 2.6.

    Raises
    ------
    ImportError
        For such a pair, naming both versions and the two ways out.
    """
    if _release(numpy_version) >= (2, 5) and _release(numba_version) < (0, 68, 1):
        raise ImportError(
            f"fastnn cannot run numba {numba_version} with NumPy {numpy_version}: that Numba refers to "
            "np.row_stack, which NumPy 2.5 removed, so every kernel would fail to compile. Install "
            "numba>=0.68.1 (pip install -U 'numba>=0.68.1') or NumPy below 2.5 (pip install 'numpy<2.5')."
        )


check_numba_numpy()

# fastmath without 'nnan'/'ninf': NaN and inf stay detectable (DESIGN.md, PERF_NOTES.md).
# 'contract' allows FMA, 'reassoc' lets LLVM vectorise reductions, 'arcp'/'afn' cheapen
# divisions and libm calls, 'nsz' ignores the sign of zero.
FASTMATH = frozenset({"contract", "reassoc", "arcp", "afn", "nsz"})

JIT = dict(cache=True, error_model="numpy", fastmath=set(FASTMATH), nogil=True)
JIT_PARALLEL = dict(JIT, parallel=True)
# A helper with array arguments called per row, per element or per small block is inlined at Numba's
# level (JIT_INLINE): a call Numba does not inline costs atomic NRT_incref/NRT_decref pairs on its
# arrays at each call level, which the refcount pruning leaves in the caller's loop even where LLVM
# inlines the body (kernels/step_feed.py: gather_batch 16.9 -> 1.5 us). A call once per chunk or
# tile may stay a call; a helper with literal_unroll called in a prange body cannot be inlined.
JIT_INLINE = dict(JIT, inline="always")
# For the few scalar helpers whose order of operations is their point (a - (b - shift) with a huge
# shift, a/2 - b/2 near the dtype max): without 'reassoc', and not inlined, so their instructions
# keep these flags inside any caller (LLVM re-associated them into overflows or lost terms).
JIT_ORDERED = dict(JIT, fastmath=set(FASTMATH - {"reassoc"}))
# For the optimizers' elementwise updates (kernels/optim.py, kernels/sparse_update.py): without
# 'arcp'. They run over ranges that start anywhere (a layer's parameters, one chunk's decayed part),
# so an element is computed in LLVM's vector body in one split and in its scalar remainder in
# another; with 'arcp' (and 'reassoc') Adam's ``step_size * m / denom`` took other roundings in the
# two on AVX-512 (1 ulp in ~1 of 10^4 elements: a per-layer update != the whole buffer's), while the
# library promises the same bits for any split (tests/kernels/test_optim_kernels.py). The exact
# division costs nothing measurable in these memory-bound passes.
JIT_UPDATE = dict(JIT, fastmath=set(FASTMATH - {"arcp"}))
JIT_UPDATE_PARALLEL = dict(JIT_UPDATE, parallel=True)
JIT_UPDATE_INLINE = dict(JIT_UPDATE, inline="always")
# For scalar code that must give the bits Python gives (a fused step's clipping scale): no fastmath.
JIT_EXACT = dict(JIT, fastmath=False)

# Work below this many elements runs in the serial twin of a kernel: a 2-thread parallel
# region costs ~2 us to start (PERF_NOTES.md: break-even near 65k elements).
PARALLEL_MIN_ELEMENTS = 65_536
# GEMMs with fewer multiply-adds than this run as one serial BLAS call.
PARALLEL_MIN_MACS = 1 << 20
# ... and a Dense layer's (or a recurrent input projection's) tiled product runs its tiles in a
# parallel region only from this many multiply-adds; below, the same tiles run in a loop on the
# calling thread (the same bits). A region's start (waking the second thread, ~5 us with tbb) and
# the operands' move to the other core's cache cost more than half of a 1.3M multiply-add product
# saves: 2 threads against 1, same tiles, 200x64x100 forward 17.7 -> 16.9 us, its backward 36.5 ->
# 44.2 us; 200x100x100 (2M) forward 24.7 -> 19.7, backward 54.1 -> 54.8 (benchmarks/RESULTS.md,
# "Session 29: small products on one thread").
THREAD_MIN_MACS = 3 << 19  # 1.5M
# GEMMs run in parallel are split into this many output tiles (the machine's CPU count, or
# NUMBA_NUM_THREADS if larger; fixed for the process: set_num_threads changes who runs the tiles,
# not the tiling, so the bits of every product stay the same). Not NUMBA_NUM_THREADS alone:
# joblib's workers get NUMBA_NUM_THREADS=cpus/n_jobs, and a tiling of their own would give other
# bits than the parent and, being part of the kernels' cache stamp (kernels/_cache.py), make
# parent and workers recompile every kernel over each other's cache (measured: 100 s per fit).
GEMM_TILES = max(1, numba.config.NUMBA_DEFAULT_NUM_THREADS, numba.config.NUMBA_NUM_THREADS)
# OpenBLAS's x86-64 builds with AVX2 and FMA kernels compute a GEMM of at most 100**3 multiply-adds
# in small-matrix kernels that skip packing the operands: 10-20% faster per multiply-add on one
# thread with the operands in cache (its SkylakeX kernels on AMD EPYC), float32 and float64, except
# for the A @ B.T form. GEMMs up to SMALL_TILING_MAX_MACS are then split into tiles of that size
# (kernels/blas.py: tile_grid): the mlp step on one thread 1.10 -> 1.00-1.02 of NumPy's GEMMs, but
# 5-10% slower on two threads, where the unpacked tiles read operands another core wrote (benchmarks/
# RESULTS.md, "Session 17: GEMM tiles for OpenBLAS's small kernels"). Hence FASTNN_SMALL_GEMM: "auto"
# (the default) uses them where one thread runs every GEMM (GEMM_TILES == 1: a one-CPU machine),
# "on" always (a process that runs one thread: a search's worker, an MPI rank), "off" never. Fixed
# for the process like GEMM_TILES, so a run's bits never depend on set_num_threads. 0: not used.
SMALL_GEMM = os.environ.get("FASTNN_SMALL_GEMM", "auto").strip().lower() or "auto"
if SMALL_GEMM not in ("auto", "on", "off"):
    raise ValueError(f"FASTNN_SMALL_GEMM must be auto, on or off, got {SMALL_GEMM!r}; unset it for auto")
_CPU_FEATURES = set(llvm.get_host_cpu_features().flatten().split(","))
_SMALL_KERNELS = {"+avx2", "+fma"} <= _CPU_FEATURES
_SMALL_KERNEL_MACS = 100**3
SMALL_GEMM_MACS = (
    _SMALL_KERNEL_MACS if _SMALL_KERNELS and (SMALL_GEMM == "on" or (SMALL_GEMM == "auto" and GEMM_TILES == 1)) else 0
)
SMALL_TILING_MAX_MACS = 32 * _SMALL_KERNEL_MACS
# ... and whose inner size is at most this: with a longer one a tile of 10^6 multiply-adds has too few
# outputs (64 x 2048 @ 2048 x 128: 22 x 16 tiles, 13% slower than one call; k <= 1024: 9-17% faster).
SMALL_TILING_MAX_K = 1024
# A Dense layer's parallel forward product whose inner size is at least this many times its larger
# output side (embed-10k's 64x2048 @ 2048x128) is split along k into GEMM_TILES parts, summed in part
# order (kernels/dense.py: _k_parts), instead of into output tiles: each thread then reads its own rows
# of the weights, where output tiles had both threads read every row. The optimizer's update, which
# writes those rows next, was slowed by the lines the other core held (embed-10k-sparse on Zen 4, 2
# threads: Adam after the step's forward and backward 275 -> 151 us, the forward 198 -> 177 us;
# benchmarks/RESULTS.md, "Session 35: lines the other core holds").
K_SPLIT_MIN_RATIO = 4
# fastnn's own register-blocked GEMM (kernels/microgemm.py) for the products where it was measured
# faster than OpenBLAS on AVX-512: against OpenBLAS's 512-bit kernels (SkylakeX) products of at least
# 2**20 multiply-adds and 10 outputs wide with B not transposed (a Dense layer's forward and weight
# gradient, a convolution's; benchmarks/RESULTS.md, "Session 28: a register-blocked GEMM", and "Session
# 31" for partial widths, a masked last vector); against its 256-bit ones (Haswell,
# Zen) most products from 32 outputs wide, A @ B.T included ("Session 30"): microgemm.micro_wanted_shape.
# FASTNN_MICRO_GEMM: "auto" (the default) uses it where the kernels are compiled for AVX-512, "on"
# everywhere, "off" never (OpenBLAS for every product). Read at run time by the compiled kernels. The
# same switch governs the batch-1 row-times-matrix kernel (kernels/gemv.py, "Session 29").
MICRO_GEMM = os.environ.get("FASTNN_MICRO_GEMM", "auto").strip().lower() or "auto"
if MICRO_GEMM not in ("auto", "on", "off"):
    raise ValueError(f"FASTNN_MICRO_GEMM must be auto, on or off, got {MICRO_GEMM!r}; unset it for auto")
MICRO_GEMM_MODE = {"off": 0, "auto": 1, "on": 2}[MICRO_GEMM]


def _l2_bytes_per_core() -> int:
    """One core's L2 cache in bytes (sysconf, else sysfs), or 1 MiB when the system does not say."""
    try:
        size = os.sysconf("SC_LEVEL2_CACHE_SIZE")
        if size > 0:
            return size
    except (ValueError, OSError, AttributeError):
        pass
    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index2/size") as f:
            text = f.read().strip().upper()
        scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
        return int(text.rstrip("KM")) * scale
    except (OSError, ValueError):
        return 1 << 20


# A matrix-vector product (a Dense layer at batch 1: streaming its weights) runs its tiles in a
# parallel region only when its weights take more than half of one core's L2 (then each thread keeps
# its own share of the weights in its core's L2 across calls) and more than MATVEC_SPLIT_MIN_BYTES.
# Below, the region's start (a tbb wake-up: 4-6 us on the Intel VM, 3.2-3.4 us for an empty 2-thread
# region on the Zen 4 VM) costs as much as the halved stream saves or more: mlp's batch-1 predict
# (784x256 float32 = 784 KiB, L2 2 MiB) took 16.4 us split, 10.7 serial (benchmarks/RESULTS.md,
# "Session 27: batch-1 products"; on that session's AMD VM, 1 MiB L2, the split took it from 16.5 to
# ~9 us, a measurement the next one does not repeat). The floor is for L2s of 1 MiB: on the Zen 4 VM one core streams
# the weights through gemv.py's kernel at 9.0 ns/KiB from its L2 and 10.6-11.4 from L3 (~100 GB/s:
# the L2's bandwidth is the limit, not where the weights live), so splitting 784 KiB saves ~3.8 us
# of 7.6 against a region's 3.2+ us, and loses outright when the other core is busy or its thread
# asleep (session 32: mlp's batch-1 predict 28 against 43 us in the bench, under load). The same
# tiles run either way (serially in a loop), so the bits do not change.
MATVEC_SPLIT_MIN_BYTES = 1 << 20


def matvec_split_bytes_for(l2_bytes: int) -> int:
    """Bytes of weights above which a matrix-vector product splits over the threads, for a core
    with ``l2_bytes`` of L2: half of it, and at least :data:`MATVEC_SPLIT_MIN_BYTES`."""
    return max(l2_bytes // 2, MATVEC_SPLIT_MIN_BYTES)


MATVEC_SPLIT_BYTES = matvec_split_bytes_for(_l2_bytes_per_core())

# Rows per fixed-size chunk of every reduction over the batch: partial sums are per chunk,
# combined in chunk order, so results never depend on the thread count.
REDUCTION_CHUNK_ROWS = 64

DTYPES = ("float32", "float64")

# Recorded kernel calls (training steps, small predictions) tier up to one compiled function
# (fastnn._fused) after this many runs, when Python's dispatch was more than FUSE_MIN_SHARE of
# their fastest timed run (other processes only ever add time). FASTNN_FUSE=always fuses at once,
# =never keeps the Python loop (the test suite uses never, except the tests of fusion itself, to
# save the compile time).
# The share was estimated from the dispatch alone (~1.1 us per call), which is what fusing saves
# on a tiny network (9 calls: 12.6 us measured) but a fraction of what it saves on a mid-size one:
# the mlp step (784-256-128-10, batch 128, 9 calls; estimate 10 us, 0.6%) ran 76 us (4.5%) faster
# fused, mlp-bn-do (13 calls; estimate 0.2%) 108 us (1.4%) (interleaved A/B of the same plan,
# 1 thread, CPU time: benchmarks/RESULTS.md, "Session 10: tier-up"). Hence a low bar. It is now
# estimated per call and argument (fastnn._fused.estimated_saving), in units of a dispatch measured
# inside the step (fastnn._fused.cold_dispatch_seconds: after kernels that sweep megabytes a dispatch
# costs 2-4 warm ones). That still undershoots larger steps about 2-3x (mlp-bn-do: estimate 34-54 us,
# measured 110-150 us; session 32), so the bar on the estimate is 0.2% for a real saving of ~0.5%:
# mlp-bn-do fuses, a step of 100 ms (wide) does not compile for its 0.01%.
FUSE_AFTER_CALLS = 200
FUSE_MIN_SHARE = 0.002
# ... and when the runs still expected (a fit says how many steps it will take) times the estimated
# saving per run (fastnn._fused.estimated_saving) exceed the compile time of a new fused step (first
# time for a model structure); loading one compiled before costs FUSE_LOAD_SECONDS, one this process
# loaded already FUSE_BUILD_SECONDS (its table), and those two also count the runs the step ran
# unfused before (a loop of short fits): short fits never wait for a compile that would not pay for
# itself. Measured (session 38, Zen 4: FusedCalls and its first call after a fit loaded the kernels,
# the steps and fit runners of a 64-100-10 MLP, the 64-128-64-10 demo MLP and a BatchNorm/Dropout
# MLP): a load 5.0-6.8 ms (24-30 ms in session 29, before fused steps called their kernels by name), a
# build 0.85-1.3 ms; the constants keep a margin (~20%) over the slowest.
FUSE_COMPILE_SECONDS = 3.0
FUSE_LOAD_SECONDS = 0.008
FUSE_BUILD_SECONDS = 0.002
FUSE = os.environ.get("FASTNN_FUSE", "auto").strip().lower() or "auto"
if FUSE not in ("auto", "always", "never"):
    raise ValueError(f"FASTNN_FUSE must be auto, always or never, got {FUSE!r}; unset it for auto")


def set_num_threads(n: int) -> None:
    """Use ``n`` threads for fastnn's kernels.

    fastnn parallelises with Numba's thread pool only; the BLAS library its kernels call is
    pinned to one thread (GEMMs are split into fixed tiles over Numba's threads), so the two
    pools never oversubscribe the cores. The count is the calling thread's (Numba's rule):
    other threads keep theirs. Results do not depend on it (fixed-chunk reductions and tiles).

    Parameters
    ----------
    n : int
        Threads, from 1 to the number Numba started with (``NUMBA_NUM_THREADS``, by default the
        machine's CPU count).

    Raises
    ------
    TypeError
        When ``n`` is not an int (a NumPy integer is one; a bool is not).
    ValueError
        When ``n`` is outside [1, ``NUMBA_NUM_THREADS``].

    Examples
    --------
    >>> import fastnn as fnn
    >>> before = fnn.get_num_threads()
    >>> fnn.set_num_threads(1)
    >>> fnn.get_num_threads()
    1
    >>> fnn.set_num_threads(before)
    >>> fnn.set_num_threads(0)
    Traceback (most recent call last):
    ...
    ValueError: n must be between 1 and ... (the threads Numba started with; set NUMBA_NUM_THREADS before import for more), got 0
    """
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral):  # NumPy integers too, as Numba
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    n = int(n)
    if not 1 <= n <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(
            f"n must be between 1 and {numba.config.NUMBA_NUM_THREADS} (the threads Numba "
            f"started with; set NUMBA_NUM_THREADS before import for more), got {n}"
        )
    numba.set_num_threads(n)


def get_num_threads() -> int:
    """Number of threads fastnn's parallel kernels use (in the calling thread).

    Returns
    -------
    int
        The count :func:`set_num_threads` set, else Numba's (``NUMBA_NUM_THREADS``).

    Examples
    --------
    >>> import numba
    >>> import fastnn as fnn
    >>> 1 <= fnn.get_num_threads() <= numba.config.NUMBA_NUM_THREADS
    True
    """
    return numba.get_num_threads()


# --- Numba's threading layer (docs/architecture.md, "Threads") ---------------------------------
# tbb is the only layer that is both fork-safe (GNU OpenMP kills a child forked after a parallel
# region as soon as it runs one: a multiprocessing pool with the fork start method hangs) and
# thread-safe (workqueue aborts the process when two threads run parallel kernels at once).
_TBB_LIBRARY = {"win32": "tbb12.dll", "darwin": "libtbb.12.dylib"}.get(sys.platform, "libtbb.so.12")
_TBB_MIN_INTERFACE = 12060  # the oldest TBB Numba's tbbpool accepts (numba/np/ufunc/parallel.py)


def _load_tbb() -> bool:
    """Load the TBB runtime so Numba's tbb layer can start; True if it is there and new enough.

    The ``tbb`` wheel puts its library in ``<prefix>/lib`` (``Library/bin`` on Windows), which the
    dynamic loader does not always search (pyenv, some venvs): loaded once here by full path and
    globally, it is the one Numba's ``tbbpool`` extension links to.
    """
    try:
        library = ctypes.CDLL(_TBB_LIBRARY)
    except OSError:
        try:
            files = importlib.metadata.distribution("tbb").files or ()
        except importlib.metadata.PackageNotFoundError:
            return False
        paths = [str(f.locate()) for f in files if f.name == _TBB_LIBRARY]
        if not paths:
            return False
        try:
            library = ctypes.CDLL(paths[0], mode=ctypes.RTLD_GLOBAL)
        except OSError:
            return False
    try:
        if library.TBB_runtime_interface_version() < _TBB_MIN_INTERFACE:
            return False
        from numba.np.ufunc import tbbpool  # type: ignore[attr-defined]  # noqa: F401  (links against the library)
    except (AttributeError, ImportError, OSError):
        return False
    return True


def _select_threading_layer() -> str:
    """Ask Numba for the tbb layer unless the user chose a layer (``NUMBA_THREADING_LAYER`` or
    ``numba.config.THREADING_LAYER`` set before importing fastnn) or a parallel region already
    ran; returns the layer asked for (``"default"``: Numba's own order, tbb, omp, workqueue).
    A user's choice that may use tbb (tbb, safe, threadsafe, forksafe) gets its library loaded."""
    from numba.np.ufunc import parallel

    chosen = str(numba.config.THREADING_LAYER).lower()
    if parallel._is_initialized or chosen in ("omp", "workqueue"):
        return chosen
    if not _load_tbb() or "NUMBA_THREADING_LAYER" in os.environ or chosen != "default":
        return chosen
    numba.config.THREADING_LAYER = "tbb"
    return "tbb"


# The layer asked for at import: "tbb" when fastnn chose it, else the user's choice or "default".
# numba.threading_layer() names the one running, once a parallel kernel has run.
THREADING_LAYER = _select_threading_layer()
