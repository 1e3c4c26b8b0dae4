"""BLAS GEMM callable from ``@njit`` code on any sub-block of a matrix, without copies.

``np.dot`` inside njit copies non-contiguous operands and cannot accumulate. fastnn instead
calls the CBLAS ``?gemm`` of its own OpenBLAS instance, bound by symbol name (so functions that
use it can still be cached): the ``scipy-openblas32`` wheel (the OpenBLAS build SciPy itself
vendors, as a standalone package, found through its own ``get_lib_dir``/``get_library``), or,
without it, the copy bundled inside SciPy's wheel (``scipy.libs`` on Linux and Windows,
``scipy/.dylibs`` on macOS). The standalone wheel comes first because it is newer: OpenBLAS
0.3.31+ runs the single-thread GEMMs of fastnn's tiles 5-30% faster than SciPy 1.17's 0.3.30 on
this project's machine (benchmarks/RESULTS.md). Either library is a separate instance from
NumPy's, so pinning it to one thread leaves NumPy's BLAS alone: parallel kernels split a GEMM
into fixed tiles of the output and run tiles on Numba's threads, so one thread pool does all the
work (two pools fighting were measured 27x slower).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys

import llvmlite.binding as llvm
import numpy as np
from numba import carray, njit, types
from numba.extending import intrinsic

from .._config import JIT, JIT_INLINE, SMALL_TILING_MAX_K, SMALL_TILING_MAX_MACS
from ._scalar import n_chunks
from .gemv import gemv_wanted, row_times_matrix
from .microgemm import blas_family, micro_gemm_block, micro_wanted, transpose_rows
from .tiling import _linked_int64
from .views import _stack_bytes, pointer

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112


# Where each platform's wheel tools put SciPy's vendored libraries, relative to site-packages:
# auditwheel (Linux), delocate (macOS), delvewheel (Windows; scipy/.libs in older SciPy wheels).
_SCIPY_LIB_DIRS = {
    "linux": ("scipy.libs",),
    "darwin": (os.path.join("scipy", ".dylibs"),),
    "win32": ("scipy.libs", os.path.join("scipy", ".libs")),
}
_LIB_SUFFIX = {"linux": ".so", "darwin": ".dylib", "win32": ".dll"}
_PREFIXES = ("scipy_", "")  # CBLAS symbol prefix: scipy_ in the scipy-openblas builds, none in plain OpenBLAS
_INSTALL_HINT = "pip install scipy-openblas32"


def _platform() -> str:
    """The library layout to search: "linux", "darwin" or "win32" (other POSIX systems use Linux's)."""
    return sys.platform if sys.platform in ("darwin", "win32") else "linux"


def _is_openblas(name: str, suffix: str) -> bool:
    """An OpenBLAS shared library of this platform (``.so`` may carry a version: ``.so.0``)."""
    name = name.lower()
    return "openblas" in name and (name.endswith(suffix) or f"{suffix}." in name)


def _libraries_in(directory: str, suffix: str, stem: str = "") -> list[str]:
    """OpenBLAS shared libraries in ``directory`` whose name starts with ``stem``, sorted."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    return [os.path.join(directory, n) for n in names if n.startswith(stem) and _is_openblas(n, suffix)]


def _wheel_libraries(suffix: str, searched: list[str]) -> list[str]:
    """The scipy-openblas32 wheel's library, located through the wheel's own API."""
    try:
        import scipy_openblas32 as wheel  # its import loads the library itself
    except ImportError:
        searched.append("the scipy-openblas32 wheel: not installed")
        return []
    except OSError as exc:
        searched.append(f"the scipy-openblas32 wheel: its library failed to load ({exc})")
        return []
    try:
        lib_dir = wheel.get_lib_dir()
        # libscipy_openblas.so / .dylib, or the .lib import library beside the .dll on Windows
        stem = wheel.get_library(fullname=True).split(".", 1)[0]
    except (AttributeError, IndexError, OSError) as exc:
        searched.append(f"the scipy-openblas32 wheel: broken install ({exc!r})")
        return []
    found = _libraries_in(lib_dir, suffix, stem)
    if not found:
        searched.append(f"the scipy-openblas32 wheel: no {stem}*{suffix} in {lib_dir}")
    return found


def _scipy_dir() -> str | None:
    """SciPy's package folder, found without importing SciPy, or None."""
    spec = importlib.util.find_spec("scipy")
    return os.path.dirname(spec.origin) if spec is not None and spec.origin else None


def _scipy_libraries(platform: str, suffix: str, searched: list[str]) -> list[str]:
    """The OpenBLAS bundled in SciPy's wheel (libscipy_openblas*, libopenblas* before SciPy 1.13)."""
    scipy_dir = _scipy_dir()
    if scipy_dir is None:
        searched.append("SciPy's bundled OpenBLAS: SciPy is not installed")
        return []
    site = os.path.dirname(scipy_dir)
    found = []
    for sub in _SCIPY_LIB_DIRS[platform]:
        directory = os.path.join(site, sub)
        libraries = _libraries_in(directory, suffix)
        found += libraries
        if not libraries:
            searched.append(f"SciPy's bundled OpenBLAS: no *openblas*{suffix} in {directory}")
    return found


def _search() -> tuple[list[str], list[str]]:
    """(OpenBLAS libraries with 32-bit-int CBLAS, best first; what was searched without success)."""
    platform = _platform()
    suffix = _LIB_SUFFIX[platform]
    searched: list[str] = []
    found = _wheel_libraries(suffix, searched) + _scipy_libraries(platform, suffix, searched)
    return list(dict.fromkeys(found)), searched


def _candidate_libraries() -> list[str]:
    """OpenBLAS shared libraries with 32-bit-int CBLAS, best first (none is loaded here)."""
    return _search()[0]


def _cblas_prefix(lib) -> str | None:
    """The prefix of ``lib``'s CBLAS symbols (see _PREFIXES), or None if it has no ``cblas_sgemm``."""
    return next((p for p in _PREFIXES if hasattr(lib, p + "cblas_sgemm")), None)


def _find_openblas() -> tuple[str, str]:
    """(path, symbol prefix) of the first candidate library that loads and has CBLAS."""
    candidates, searched = _search()
    for path in candidates:
        try:
            prefix = _cblas_prefix(ctypes.CDLL(path))
        except OSError as exc:
            searched.append(f"{path}: failed to load ({exc})")
            continue
        if prefix is not None:
            return path, prefix
        searched.append(f"{path}: no cblas_sgemm symbol (tried prefixes {_PREFIXES})")
    raise ImportError(
        "fastnn needs an OpenBLAS with CBLAS (the scipy-openblas32 wheel, or the copy inside SciPy's "
        f"PyPI wheel) and found none on {sys.platform}. Searched:\n  "
        + "\n  ".join(searched)
        + f"\nFix: {_INSTALL_HINT} (in this Python: {sys.executable} -m {_INSTALL_HINT})"
    )


LIBRARY_PATH, _PREFIX = _find_openblas()  #: the BLAS library fastnn's kernels call (pinned to 1 thread)
llvm.load_library_permanently(LIBRARY_PATH)
_lib = ctypes.CDLL(LIBRARY_PATH)
for _name in (_PREFIX + "openblas_set_num_threads", "openblas_set_num_threads"):
    if hasattr(_lib, _name):
        getattr(_lib, _name)(1)
        break

#: OpenBLAS's kernel family for this CPU (``openblas_get_corename``: "SkylakeX", "Haswell", ...; "" if unknown)
CORE_NAME = ""
for _name in (_PREFIX + "openblas_get_corename", "openblas_get_corename"):
    if hasattr(_lib, _name):
        _corename = getattr(_lib, _name)
        _corename.restype = ctypes.c_char_p
        CORE_NAME = (_corename() or b"").decode("ascii", "replace").strip()
        break

#: :data:`CORE_NAME`'s ``family`` code for :func:`~.microgemm.micro_wanted` (which products fastnn's
#: register-blocked GEMM takes): ``microgemm.BLAS_512`` for OpenBLAS's 512-bit kernels, else ``BLAS_256``
OPENBLAS_FAMILY = blas_family(CORE_NAME)
_openblas_family = _linked_int64("fastnn_openblas_family", OPENBLAS_FAMILY)


@intrinsic
def openblas_family(typingctx):
    """:data:`OPENBLAS_FAMILY` of this process (int64), read at run time through a linked symbol (as
    :func:`nt_copy_row_bytes`), so one cached kernel serves every CPU."""
    return _openblas_family(typingctx)


# ``A @ B.T`` (row-major), which OpenBLAS's small-matrix permit refuses: its packing GEMM costs ~0.1-0.2 us
# more than the small kernel of ``A @ B`` at a tiny step's sizes (32x16 @ (16x16).T: 0.37 against 0.27 us
# with the copy of B). So :func:`_gemm_block` copies a small ``B`` transposed onto its stack and runs the
# ``A @ B`` form, where the two give the same bits: measured on OpenBLAS 0.3.34's SkylakeX kernels
# (the Cooperlake family uses the same s/dgemm kernels), at every m up to 512 and width n up to 64 with an
# inner size k of at most 31 float32 or 15 float64 values (k * itemsize < 128 bytes) and alpha 1, beta 0:
# beyond those the two paths sum k in different orders (float64 from k = 16 at some widths, float32 from
# k = 32; float64 k = 2 at n ~200). Other kernel families keep the packing GEMM (not measured: their bits
# must not change). ``FASTNN_NT_COPY=off`` keeps the packing GEMM everywhere ("auto", the default: as above).
NT_COPY = os.environ.get("FASTNN_NT_COPY", "auto").strip().lower() or "auto"
if NT_COPY not in ("auto", "off"):
    raise ValueError(f"FASTNN_NT_COPY must be auto or off, got {NT_COPY!r}; unset it for auto")
#: bytes of one row of ``B`` (its inner size k times the itemsize) below which the copy is taken; 0: never
NT_COPY_ROW_BYTES = 128 if NT_COPY == "auto" and CORE_NAME.lower() in ("skylakex", "cooperlake") else 0
#: widths n (rows of ``B``) up to which the copy is taken
NT_COPY_MAX_N = 64
#: bytes of the stack copy of ``B`` (its n x k block): larger blocks keep the packing GEMM
NT_COPY_BYTES = 4096
_nt_copy_row_bytes = _linked_int64("fastnn_nt_copy_row_bytes", NT_COPY_ROW_BYTES)


@intrinsic
def nt_copy_row_bytes(typingctx):
    """:data:`NT_COPY_ROW_BYTES` of this process (int64), read at run time through a linked symbol
    (as the tile count), so one cached kernel serves every CPU."""
    return _nt_copy_row_bytes(typingctx)


#: the address (int64) of NT_COPY_BYTES bytes, aligned for its argument's dtype, in the calling function's
#: stack frame (no allocation), valid until that function returns
_stack_block = _stack_bytes(NT_COPY_BYTES)


_i32, _ip = types.int32, types.intp


def _gemm_signature(real):
    return types.void(_i32, _i32, _i32, _i32, _i32, _i32, real, _ip, _i32, _ip, _i32, real, _ip, _i32)


def _gemv_signature(real):
    return types.void(_i32, _i32, _i32, _i32, real, _ip, _i32, _ip, _i32, real, _ip, _i32)


_sgemm = types.ExternalFunction(_PREFIX + "cblas_sgemm", _gemm_signature(types.float32))
_dgemm = types.ExternalFunction(_PREFIX + "cblas_dgemm", _gemm_signature(types.float64))
_sgemv = types.ExternalFunction(_PREFIX + "cblas_sgemv", _gemv_signature(types.float32))
_dgemv = types.ExternalFunction(_PREFIX + "cblas_dgemv", _gemv_signature(types.float64))


@njit(**JIT)
def _address(a, row, col):
    return a.ctypes.data + (row * a.strides[0] + col * a.strides[1])


@njit(**JIT)
def _gemv(trans, rows, cols, alpha, pa, lda, px, incx, beta, py, incy, itemsize):
    """y = alpha * op(A) @ x + beta * y for a row-major ``rows x cols`` matrix at address ``pa``."""
    if itemsize == 4:
        _sgemv(_ROW_MAJOR, trans, rows, cols, np.float32(alpha), pa, lda, px, incx, np.float32(beta), py, incy)
    else:
        _dgemv(_ROW_MAJOR, trans, rows, cols, np.float64(alpha), pa, lda, px, incx, np.float64(beta), py, incy)


@njit(**JIT_INLINE)
def gemm_block(trans_a, trans_b, alpha, a, b, beta, c, r0, r1, c0, c1):
    """``C[r0:r1, c0:c1] = alpha * op(A) @ op(B)[:, c0:c1] + beta * C[r0:r1, c0:c1]``.

    ``op(A)`` is ``A`` or ``A.T`` (``trans_a``), rows r0:r1 of it are used; ``op(B)`` likewise
    with columns c0:c1. All three matrices are 2-D, row-major with unit inner stride (views of
    C-contiguous arrays qualify), of the same dtype float32 or float64. No allocation.

    Inlined at the call site, it passes the flags and bounds on as run-time values: callers give
    literals (``True``, ``0``), each of which would compile another copy of the body (around a
    BLAS call, a branch on a flag costs nothing).
    """
    # one row of C, B not transposed: fastnn's row-times-matrix kernel where it takes the shape (_row_block)
    row = r1 - r0 == 1 and not trans_b and alpha == 1 and beta == 0
    if not (row and _row_block(bool(trans_a), a, b, c, np.int64(r0), np.int64(c0), np.int64(c1))):
        _gemm_block(
            bool(trans_a), bool(trans_b), alpha, a, b, beta, c, np.int64(r0), np.int64(r1), np.int64(c0), np.int64(c1)
        )


@njit(**JIT)
def _row_block(trans_a, a, b, c, r0, c0, c1):
    """``C[r0, c0:c1] = op(A)[r0] @ B[:, c0:c1]`` by fastnn's row-times-matrix kernel (gemv.py: the
    output row in registers, B streamed once) when :func:`~.gemv.gemv_wanted` takes the shape;
    returns whether it did (else the caller runs :func:`_gemm_block`: OpenBLAS's gemv). A small
    function of its own, calling nothing that raises: Numba then drops its reference counting
    of the arrays, which through _gemm_block's entry cost ~0.07 us, as much as a 16x16 product."""
    n = c1 - c0
    k = a.shape[0] if trans_a else a.shape[1]
    itemsize = c.itemsize
    if n <= 0 or not gemv_wanted(k, n, itemsize):
        return False
    lda = a.strides[0] // itemsize
    a_off, inc_a = (r0, lda) if trans_a else (r0 * lda, np.int64(1))
    row_times_matrix(a, a_off, inc_a, b, c0, b.strides[0] // itemsize, c, r0 * (c.strides[0] // itemsize) + c0, k, n)
    return True


@njit(**JIT)
def _gemm_block(trans_a, trans_b, alpha, a, b, beta, c, r0, r1, c0, c1):
    """:func:`gemm_block` for run-time flags and bounds."""
    m = r1 - r0
    n = c1 - c0
    if m <= 0 or n <= 0:
        return
    k = a.shape[0] if trans_a else a.shape[1]
    itemsize = c.itemsize
    lda = a.strides[0] // itemsize
    ldb = b.strides[0] // itemsize
    ldc = c.strides[0] // itemsize
    first = np.int64(0)  # not a literal: one compiled _address
    pa = _address(a, first, r0) if trans_a else _address(a, r0, first)
    pb = _address(b, c0, first) if trans_b else _address(b, first, c0)
    pc = _address(c, r0, c0)
    ta = _TRANS if trans_a else _NO_TRANS
    tb = _TRANS if trans_b else _NO_TRANS
    if k == 1 and trans_b and alpha == 1 and beta == 0:
        # op(A) @ B.T with inner size 1: an outer product, which OpenBLAS takes to its packing
        # GEMM (no small kernel for this form): ~0.15 -> 0.09 us at 32 x 16 (a Dense layer with one
        # output, its input gradient), 4.6 -> 2.2 us at 256 x 128. The same bits: one rounded
        # product per element, as BLAS's (alpha 1, beta 0)
        _outer_b_trans(trans_a, a, b, c, r0, r1, c0, c1)
        return
    # One row or one column of C: a matrix-vector product (gemm with M or N = 1 packs a whole
    # operand and is ~8x slower than gemv at batch 1).
    # (one _gemv call site each, with run-time codes and increments: a literal compiled a _gemv of its own)
    if m == 1:  # C's row = op(B)[:, c0:c1].T @ (the row of op(A)); op(B) block is k x n
        inc_a = lda if trans_a else 1
        rows, cols = (n, k) if trans_b else (k, n)
        _gemv(_NO_TRANS if trans_b else _TRANS, rows, cols, alpha, pb, ldb, pa, inc_a, beta, pc, np.int64(1), itemsize)
        return
    if n == 1:  # C's column = op(A)[r0:r1] @ (the column of op(B)); op(A) block is m x k
        inc_b = 1 if trans_b else ldb
        rows, cols = (k, m) if trans_a else (m, k)
        _gemv(_TRANS if trans_a else _NO_TRANS, rows, cols, alpha, pa, lda, pb, inc_b, beta, pc, ldc, itemsize)
        return
    if alpha == 1 and beta == 0 and micro_wanted(m, n, k, trans_b, openblas_family()):
        micro_gemm_block(trans_a, a, b, c, r0, r1, c0, c1, trans_b)  # fastnn's register-blocked GEMM (microgemm.py)
        return
    if (
        trans_b
        and not trans_a
        and alpha == 1
        and beta == 0
        and k * itemsize < nt_copy_row_bytes()
        and n <= NT_COPY_MAX_N
        and n * k * itemsize <= NT_COPY_BYTES
    ):
        # A @ B.T as A @ (B's block copied transposed): the small kernel, the same bits (NT_COPY_ROW_BYTES)
        pb = _stack_block(c)
        transpose_rows(b, carray(pointer(pb), n * k, c.dtype), c0, n, np.int64(0), k, n)
        tb = _NO_TRANS
        ldb = n
    if itemsize == 4:
        _sgemm(_ROW_MAJOR, ta, tb, m, n, k, np.float32(alpha), pa, lda, pb, ldb, np.float32(beta), pc, ldc)
    else:
        _dgemm(_ROW_MAJOR, ta, tb, m, n, k, np.float64(alpha), pa, lda, pb, ldb, np.float64(beta), pc, ldc)


@njit(**JIT)
def _outer_b_trans(trans_a, a, b, c, r0, r1, c0, c1):
    """``C[r0:r1, c0:c1] = op(A)[r0:r1] @ B[c0:c1].T`` for an inner size of 1 (``B`` is n x 1)."""
    # (unsigned bounds: no negative-index wraparound in the loops, see dense._bias_activate_block)
    i0, i1, j0, j1, first = np.uint64(r0), np.uint64(r1), np.uint64(c0), np.uint64(c1), np.uint64(0)
    for i in range(i0, i1):
        ai = a[first, i] if trans_a else a[i, first]
        for j in range(j0, j1):
            c[i, j] = ai * b[j, first]


@njit(**JIT)
def gemm(trans_a, trans_b, alpha, a, b, beta, c):
    """``C = alpha * op(A) @ op(B) + beta * C`` in one serial BLAS call (see gemm_block)."""
    gemm_block(trans_a, trans_b, alpha, a, b, beta, c, 0, c.shape[0], 0, c.shape[1])


@njit(**JIT_INLINE)
def small_kernel_form(trans_a, trans_b):
    """Whether OpenBLAS's small-matrix kernels take ``op(A) @ op(B)`` in row-major order: every
    form but ``A @ B.T`` (which its permit refuses above ~1,200 outputs: tiling it only costs)."""
    return trans_a or not trans_b


@njit(**JIT)
def tile_grid(m, n, k, tiles, small_macs):
    """Output tiles of an ``m x n`` GEMM with inner size ``k``: ``(tile_rows, tile_cols, row_tiles,
    col_tiles)``, all int64.

    At least ``tiles`` tiles (the threads' share), and, when ``small_macs`` > 0 and the GEMM is at
    most :data:`~fastnn._config.SMALL_TILING_MAX_MACS` with ``k`` at most
    :data:`~fastnn._config.SMALL_TILING_MAX_K`, tiles of at most ``small_macs``
    multiply-adds (OpenBLAS's small-matrix kernels; pass 0 for a form they do not take). The
    larger of a tile's sides is split first; rows evenly, columns in multiples of 16 (a cache line
    of float32: threads never share one). Depends on the arguments only, never on the number of
    threads that runs the tiles, so results are bit-identical on any thread count.
    """
    small = small_macs > 0 and k <= SMALL_TILING_MAX_K and m * n * k <= SMALL_TILING_MAX_MACS
    row_tiles = 1
    col_tiles = 1
    tile_rows = m
    tile_cols = n
    while row_tiles * col_tiles < tiles or (small and tile_rows * tile_cols * k > small_macs):
        if tile_rows >= tile_cols and tile_rows > 1:
            row_tiles += 1
        elif tile_cols > 16:
            col_tiles += 1
        elif tile_rows > 1:
            row_tiles += 1
        else:
            break
        tile_rows = n_chunks(m, row_tiles)
        tile_cols = min(n, 16 * n_chunks(n_chunks(n, col_tiles), 16))
    return tile_rows, tile_cols, n_chunks(m, tile_rows), n_chunks(n, tile_cols)
