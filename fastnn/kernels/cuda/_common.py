"""Launch geometry, typed constants and block reductions shared by the CUDA kernels.

Kernels are compiled lazily (``@cuda.jit`` without a signature, or built per dtype by a cached
factory on first launch), so importing this package needs numba-cuda but neither a driver nor a
GPU. Block sizes are compile-time constants (no runtime-sized shared memory, never more than 1024
threads); every ``cuda.syncthreads()`` is reached by all threads of a block.
"""

from __future__ import annotations

import functools
import inspect
import math
import threading
import warnings

import numba
import numpy as np
from numba import cuda
from numba.core.errors import NumbaPerformanceWarning

# fastnn launches small grids on purpose (a layer of 16 units, a batch of 1, one block per
# reduction), and numba-cuda warns at every grid under 128 blocks, so a small model on a real GPU
# printed a dozen "Grid size N will likely result in GPU under-utilization" lines (an H200,
# session 18). Only that message is silenced (after Numba's highlighting codes); other performance
# warnings still show.
warnings.filterwarnings(
    "ignore", message=r".*Grid size \d+ will likely result in GPU under-utilization", category=NumbaPerformanceWarning
)

#: upper bound on the blocks of a grid-stride launch (the loops cover any size)
MAX_BLOCKS = 4096
#: blocks of a grid-stride launch under the simulator, where each thread is an OS thread
SIM_MAX_BLOCKS = 2


def simulator() -> bool:
    """True when Numba runs CUDA kernels on its CPU simulator (NUMBA_ENABLE_CUDASIM=1)."""
    return bool(numba.config.ENABLE_CUDASIM)


#: Launch geometry on a GPU (name -> threads): BLOCK threads per block of the 1-D (elementwise and
#: row) kernels, COLS columns x LANES row lanes per 2-D block of the column reductions, and (in
#: kernels.cuda.dense) TILE x TILE threads per GEMM tile. Every size is a power of two, and every
#: kernel is written for any power of two (tree sums halve from BLOCK // 2 or LANES // 2).
GPU_GEOMETRY = {"BLOCK": 256, "COLS": 32, "LANES": 8, "TILE": 16}
#: The same under the simulator, the one switch of its launch sizes: each simulated thread is an OS
#: thread (created per block and launch), so 32-64 threads per block instead of 256 make tests_cuda's
#: layer table ~5x cheaper (benchmarks/RESULTS.md, "Session 11: CI time"). tests_cuda's
#: ``gpu_geometry`` fixture runs one test per reduction kind with GPU_GEOMETRY on the simulator, so
#: the production sizes stay covered.
SIM_GEOMETRY = {"BLOCK": 32, "COLS": 16, "LANES": 4, "TILE": 8}
_GEOMETRY = SIM_GEOMETRY if simulator() else GPU_GEOMETRY

#: threads per block of the 1-D (elementwise and row) kernels
BLOCK = _GEOMETRY["BLOCK"]
#: 2-D blocks of the column reductions: COLS columns x LANES row lanes
COLS = _GEOMETRY["COLS"]
LANES = _GEOMETRY["LANES"]
#: side of the square GEMM tiles of kernels.cuda.dense (TILE * TILE threads per block)
TILE = _GEOMETRY["TILE"]


_SHARED_LOCK = threading.Lock()


def _atomic_shared_array(original):
    """numba-cuda's simulator ``cuda.shared.array`` made atomic: one array per (file, line) of the
    caller per block. The simulator's own ``original`` checks its dict, then stores a new array
    without a lock, so two of a block's threads (OS threads) can both miss and keep different
    arrays: one thread's writes then go to a private copy and the others read stale memory (a GEMM
    tile holding another launch's values: seen as rare wrong GRU states in tests_cuda)."""

    def array(self, shape, dtype, alignment=None):
        if shape == 0 or alignment is not None:  # dynamic shared memory (one buffer), or refused
            return original(self, shape, dtype, alignment)
        if isinstance(dtype, numba.core.types.Type):
            dtype = numba.np.numpy_support.as_dtype(dtype)
        frame = inspect.currentframe().f_back  # type: ignore[union-attr]
        caller = (frame.f_code.co_filename, frame.f_lineno)  # type: ignore[union-attr]
        with _SHARED_LOCK:
            res = self._allocations.get(caller)
            if res is None:
                res = self._allocations[caller] = np.empty(shape, dtype)
        return res

    array.fastnn_atomic = True  # type: ignore[attr-defined]
    array.original = original  # type: ignore[attr-defined]
    return array


def make_simulator_shared_arrays_atomic() -> bool:
    """Replace the simulator's ``cuda.shared.array`` by an atomic one (once; nothing on a real
    GPU). Returns True when the simulator is in use."""
    if not simulator():
        return False
    from numba.cuda.simulator import kernelapi

    shared = kernelapi.FakeCUDAShared
    if not getattr(shared.array, "fastnn_atomic", False):
        shared.array = _atomic_shared_array(shared.array)
    return True


make_simulator_shared_arrays_atomic()


def blocks_for(work: int, per_block: int | None = None) -> int:
    """Blocks of a grid-stride launch over ``work`` items, ``per_block`` per block (default BLOCK)."""
    cap = SIM_MAX_BLOCKS if simulator() else MAX_BLOCKS
    return max(1, min(-(-int(work) // (BLOCK if per_block is None else per_block)), cap))


_NO_LENGTHS = threading.local()


def no_lengths():
    """The 1-element int64 device array a launch passes for ``lengths`` when a kernel that can mask
    sequence steps runs unmasked (never read then), kept per thread and device: a host placeholder
    would be copied in and out by every launch, with a wait."""
    key = getattr(cuda.get_current_device(), "id", 0)  # the simulator's device has no id
    held = _NO_LENGTHS.__dict__.setdefault("arrays", {})
    if key not in held:
        held[key] = cuda.to_device(np.zeros(1, np.int64))  # zero, as the host placeholder was
    return held[key]


def typed(value, ref):
    """``value`` as a scalar of ``ref``'s dtype (host side: float32 stays float32)."""
    return ref.dtype.type(value)


def numba_type(dtype):
    """The Numba scalar type of a NumPy dtype (for shared arrays of kernel factories)."""
    return numba.from_dtype(np.dtype(dtype))


def per_dtype(factory):
    """Cache ``factory(dtype_name)`` -> kernels: one lazily built set of kernels per dtype."""
    cached = functools.lru_cache(maxsize=None)(factory)

    @functools.wraps(factory)
    def get(dtype):
        return cached(np.dtype(dtype).name)

    return get


@cuda.jit(device=True)
def block_sum(buf, tid):
    """Tree sum of ``buf[0:BLOCK]`` (shared) by all BLOCK threads of a block; returns the total.

    Every thread must call it (it synchronises, also before returning, so ``buf`` may be
    rewritten at once).
    """
    cuda.syncthreads()
    s = BLOCK // 2
    while s > 0:
        if tid < s:
            buf[tid] += buf[tid + s]
        cuda.syncthreads()
        s //= 2
    total = buf[0]
    cuda.syncthreads()
    return total


@cuda.jit(device=True)
def lanes_sum(buf, tx, ty):
    """Sum over the LANES row lanes of ``buf[LANES, COLS]`` (shared); returns column tx's total.

    Called by every thread of a (COLS, LANES) block; the result is valid in every thread.
    """
    cuda.syncthreads()
    s = LANES // 2
    while s > 0:
        if ty < s:
            buf[ty, tx] += buf[ty + s, tx]
        cuda.syncthreads()
        s //= 2
    total = buf[0, tx]
    cuda.syncthreads()
    return total


@cuda.jit
def combine_rows(partials, chunks, out):
    """out[j] = partials[0, j] + partials[1, j] + ... + partials[chunks - 1, j], in chunk order."""
    for j in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        total = partials[0, j]
        for c in range(1, chunks):
            total += partials[c, j]
        out[j] = total


def column_partials(partials, chunks: int, out):
    """Where a column reduction of ``chunks`` row chunks writes its per-chunk sums: ``partials``,
    to be combined into ``out`` by :func:`combine_columns`; or, for one chunk, ``out`` itself as
    its single row (that chunk's sum is the total: no combining launch)."""
    return out.reshape((1, out.shape[0])) if chunks == 1 else partials


def combine_columns(partials, chunks: int, out) -> None:
    """``out`` = the chunk-ordered sum of ``partials``' first ``chunks`` rows (:func:`combine_rows`);
    nothing for one chunk, written into ``out`` directly (:func:`column_partials`)."""
    if chunks > 1:
        combine_rows[blocks_for(out.shape[0]), BLOCK](partials, chunks, out)


@cuda.jit(device=True)
def _finished(partials, count, scale, root, buf, tid):
    """scale * sum(partials[0:count]) (its square root if ``root``), by every thread of one block
    (``buf``: its float64 shared array): the second stage of every float64 reduction."""
    acc = 0.0
    for c in range(tid, count, BLOCK):
        acc += partials[c]
    buf[tid] = acc
    total = block_sum(buf, tid) * scale
    return math.sqrt(total) if root else total


@cuda.jit
def finish_sum(partials, count, scale, root):
    """partials[0] = scale * sum(partials[0:count]) (its square root if ``root``): one block, float64."""
    buf = cuda.shared.array(BLOCK, numba.float64)
    tid = cuda.threadIdx.x
    total = _finished(partials, count, scale, root, buf, tid)
    if tid == 0:
        partials[0] = total


@cuda.jit
def finish_sums(p0, c0, s0, r0, p1, c1, s1, r1, p2, c2, s2, r2, out):
    """out[k] = the finished reduction k (as :func:`finish_sum`'s) for k = 0, 1, 2; a reduction of
    count 0 leaves out[k] alone. One block: the three second stages of a step in one launch."""
    buf = cuda.shared.array(BLOCK, numba.float64)
    tid = cuda.threadIdx.x
    if c0 > 0:
        total = _finished(p0, c0, s0, r0, buf, tid)
        if tid == 0:
            out[0] = total
    if c1 > 0:
        total = _finished(p1, c1, s1, r1, buf, tid)
        if tid == 0:
            out[1] = total
    if c2 > 0:
        total = _finished(p2, c2, s2, r2, buf, tid)
        if tid == 0:
            out[2] = total


class StepScalars:
    """The float64 results of a training step's reductions (the loss, the gradient norm, a
    correct count), finished together by one launch and read by one copy: the step's one
    device-to-host copy and its one host wait, where each reduction read alone cost a launch, a
    copy and a wait (benchmarks/RESULTS.md, session 23).

    A reduction launched with ``into=(scalars, slot)`` (:func:`reduce_partials`) queues its second
    stage here instead of running it; :meth:`read` runs the queued ones (:func:`finish_sums`) and
    copies the :data:`SLOTS` values into a pinned host array kept with the object. Device and
    host arrays are allocated once, at construction.

    Parameters
    ----------
    pinned : bool, default True
        Page-locked host memory for the values (False: a plain NumPy array).
    """

    #: the slots: 0 the loss, 1 the gradient norm, 2 a correct count
    SLOTS = 3

    def __init__(self, pinned: bool = True):
        host = np.zeros(self.SLOTS, np.float64)
        self.device = cuda.to_device(host)
        self.host = cuda.pinned_array(self.SLOTS, np.float64) if pinned else host
        self._queued: list = [None] * self.SLOTS

    def queue(self, slot: int, partials, count: int, scale: float, root: bool) -> None:
        """Queue the second stage of a reduction (see :func:`reduce_partials`) into ``slot``."""
        if self._queued[slot] is not None:
            raise RuntimeError(f"step scalar slot {slot} already holds a reduction not read yet: read() first")
        self._queued[slot] = (partials, int(count), np.float64(scale), bool(root))

    def read(self) -> np.ndarray:
        """Finish the queued reductions (one launch), copy the slots to the host (one copy, which
        waits for the device) and return the host array (valid until the next read; slots not
        queued hold what they held before)."""
        queued, self._queued = self._queued, [None] * self.SLOTS
        args: list = []
        for item in queued:
            args += (self.device, 0, np.float64(0.0), False) if item is None else item
        if any(item is not None for item in queued):
            finish_sums[1, BLOCK](*args, self.device)
        self.device.copy_to_host(self.host)
        return self.host

    def clear(self) -> None:
        """Forget the queued reductions (a step that failed before its read)."""
        self._queued = [None] * self.SLOTS

    @property
    def pending(self) -> int:
        """How many reductions are queued and not read yet (0 after :meth:`read` or :meth:`clear`)."""
        return sum(item is not None for item in self._queued)


def reduce_partials(partials, count: int, scale: float = 1.0, root: bool = False, sync: bool = True, into=None):
    """Second stage of a float64 reduction: partials[0] = scale * sum of the first ``count``.

    Returns that value as a Python float when ``sync`` (one 8-byte copy to the host), else None.
    ``into=(scalars, slot)`` (a :class:`StepScalars`): nothing runs now, the stage is queued into
    that slot and finished with the other queued ones by ``scalars.read()``; returns None.
    """
    if into is not None:
        into[0].queue(into[1], partials, count, scale, root)
        return None
    finish_sum[1, BLOCK](partials, count, np.float64(scale), root)
    if sync:
        return float(partials[0:1].copy_to_host()[0])
    return None
