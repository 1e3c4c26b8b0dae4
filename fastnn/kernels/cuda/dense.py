"""CUDA twins of kernels/dense.py: ``z = x @ w + b``, ``y = f(z)`` and its backward.

GEMMs are a tiled shared-memory kernel of our own (TILE x TILE threads per block, one output
element per thread, grid-stride over output tiles) with the bias + activation epilogue fused
into the forward; when CuPy is importable and a GPU is present they go to cuBLAS instead
(zero-copy through ``__cuda_array_interface__``) and the epilogue runs as one elementwise
kernel. The backward computes grad_z = grad_y * f'(z) and the bias-gradient partial sums of
fixed ``REDUCTION_CHUNK_ROWS`` row chunks in one kernel (block reductions, the CPU's
``partial_b`` layout), combines the partials in chunk order (a batch of one chunk writes grad_b
in that kernel: one launch fewer), then runs the two GEMMs.

Shapes as on the CPU: x (batch, in), w (in, out), b (out,), z/y/grad_y/grad_z (batch, out),
grad_x (batch, in), grad_w (in, out), grad_b (out,), partial_b (ceil(batch / 64), out);
device arrays of one dtype, float32 or float64.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from ..._config import REDUCTION_CHUNK_ROWS
from ..activations import IDENTITY, ROWWISE_CODES, ROWWISE_REFUSED, activate, activate_grad
from ._common import (
    BLOCK,
    COLS,
    LANES,
    TILE,
    blocks_for,
    column_partials,
    combine_columns,
    lanes_sum,
    numba_type,
    per_dtype,
    simulator,
    typed,
)

#: GEMM epilogues: plain store, + bias, + bias and activation, + the old c (beta = 1)
STORE, BIAS, BIAS_ACTIVATE, ACCUMULATE = 0, 1, 2, 3

_FORCE_TILED = [False]
_UNPROBED = object()
#: the CuPy module (or None) once probed: a failed ``import cupy`` costs ~0.1 ms, three per dense step
_CUPY = [_UNPROBED]


def use_cublas(enabled: bool) -> None:
    """Allow (default) or forbid the cuBLAS path (the tiled kernels are then always used)."""
    _FORCE_TILED[0] = not enabled


def reset_gemm_backend() -> None:
    """Forget the cached CuPy probe: the next GEMM looks for CuPy (and a GPU) again."""
    _CUPY[0] = _UNPROBED


def _probe_cupy():
    """CuPy when it is importable, a GPU is present and the simulator is off; else None.

    The simulator's device arrays are host memory without ``__cuda_array_interface__``, which
    real CuPy cannot wrap, so the simulator always uses the tiled kernels.
    """
    if simulator():
        return None
    try:
        import cupy
    except ImportError:
        return None
    try:
        return cupy if cupy.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a broken CUDA install means "no cuBLAS", not a crash
        return None


def _cupy():
    """The CuPy module for the cuBLAS path, or None for the tiled kernels (probed once, see above)."""
    if _FORCE_TILED[0]:
        return None
    if _CUPY[0] is _UNPROBED:
        _CUPY[0] = _probe_cupy()
    return _CUPY[0]


def gemm_backend() -> str:
    """``"cublas"`` when dense GEMMs go to cuBLAS through CuPy, else ``"tiled"``."""
    return "cublas" if _cupy() is not None else "tiled"


@per_dtype
def _kernels(dtype):
    """The GEMM and reduction kernels for one dtype (typed zero and shared arrays)."""
    nb_type = numba_type(dtype)
    zero = np.dtype(dtype).type(0)

    @cuda.jit
    def gemm(a, b, c, trans_a, trans_b, bias, y, epilogue, code, alpha):
        """c = op(a) @ op(b), then the epilogue: + bias (into c) and y = f(c), or + the old c."""
        sa = cuda.shared.array((TILE, TILE), nb_type)
        sb = cuda.shared.array((TILE, TILE), nb_type)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        m = c.shape[0]
        n = c.shape[1]
        k = a.shape[0] if trans_a else a.shape[1]
        for tile_row in range(cuda.blockIdx.y, (m + TILE - 1) // TILE, cuda.gridDim.y):
            for tile_col in range(cuda.blockIdx.x, (n + TILE - 1) // TILE, cuda.gridDim.x):
                row = tile_row * TILE + ty
                col = tile_col * TILE + tx
                acc = zero
                for k0 in range(0, k, TILE):
                    ka = k0 + tx
                    if row < m and ka < k:
                        sa[ty, tx] = a[ka, row] if trans_a else a[row, ka]
                    else:
                        sa[ty, tx] = zero
                    kb = k0 + ty
                    if kb < k and col < n:
                        sb[ty, tx] = b[col, kb] if trans_b else b[kb, col]
                    else:
                        sb[ty, tx] = zero
                    cuda.syncthreads()
                    for q in range(TILE):
                        acc += sa[ty, q] * sb[q, tx]
                    cuda.syncthreads()
                if row < m and col < n:
                    if epilogue == ACCUMULATE:
                        acc += c[row, col]
                    elif epilogue != STORE:
                        acc += bias[col]
                    c[row, col] = acc
                    if epilogue == BIAS_ACTIVATE:
                        y[row, col] = activate(code, acc, alpha)

    @cuda.jit
    def bias_activate(z, b, y, epilogue, code, alpha):
        """z += b and (BIAS_ACTIVATE) y = f(z), elementwise (the epilogue after a cuBLAS GEMM)."""
        n = z.shape[1]
        for e in range(cuda.grid(1), z.shape[0] * n, cuda.gridsize(1)):
            i = e // n
            j = e - i * n
            v = z[i, j] + b[j]
            z[i, j] = v
            if epilogue == BIAS_ACTIVATE:
                y[i, j] = activate(code, v, alpha)

    @cuda.jit
    def grad_z_partials(z, y, grad_y, grad_z, partial_b, code, alpha):
        """grad_z = grad_y * f'(z) and partial_b[chunk, j] = sum of grad_z over the chunk's rows."""
        buf = cuda.shared.array((LANES, COLS), nb_type)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        m = z.shape[0]
        n = z.shape[1]
        for chunk in range(cuda.blockIdx.y, (m + REDUCTION_CHUNK_ROWS - 1) // REDUCTION_CHUNK_ROWS, cuda.gridDim.y):
            r1 = min(m, (chunk + 1) * REDUCTION_CHUNK_ROWS)
            for tile in range(cuda.blockIdx.x, (n + COLS - 1) // COLS, cuda.gridDim.x):
                j = tile * COLS + tx
                acc = zero
                if j < n:
                    for i in range(chunk * REDUCTION_CHUNK_ROWS + ty, r1, LANES):
                        if code != IDENTITY:
                            g = grad_y[i, j] * activate_grad(code, z[i, j], y[i, j], alpha)
                            grad_z[i, j] = g
                        else:
                            g = grad_z[i, j]
                        acc += g
                buf[ty, tx] = acc
                total = lanes_sum(buf, tx, ty)
                if ty == 0 and j < n:
                    partial_b[chunk, j] = total

    return gemm, bias_activate, grad_z_partials


def _gemm_grid(m, n):
    return (blocks_for(-(-n // TILE), 1), blocks_for(-(-m // TILE), 1)), (TILE, TILE)


def gemm(trans_a, trans_b, a, b, c, accumulate=False):
    """``C = op(A) @ op(B)`` (``C += ...`` when ``accumulate``) on the device (cuBLAS through CuPy
    when available, else tiled)."""
    cp = _cupy()
    if cp is not None:
        ca, cb, cc = cp.asarray(a), cp.asarray(b), cp.asarray(c)
        ca, cb = ca.T if trans_a else ca, cb.T if trans_b else cb
        if accumulate:  # cupy.matmul has no beta: the product goes to CuPy's memory pool first
            cc += cp.matmul(ca, cb)
        else:
            cp.matmul(ca, cb, out=cc)
        return
    kernel = _kernels(c.dtype)[0]
    grid, block = _gemm_grid(c.shape[0], c.shape[1])
    kernel[grid, block](
        a, b, c, trans_a, trans_b, c[0], c, ACCUMULATE if accumulate else STORE, IDENTITY, typed(0.0, c)
    )


def dense_forward(x, w, b, z, y, code, alpha):
    """z = x @ w + b and y = f(z) (elementwise activation ``code``) on the device; ``y`` may be ``z``.

    Row-wise codes are refused as by the CPU kernel: the layer applies softmax after the call."""
    if code >= ROWWISE_CODES:
        raise ValueError(ROWWISE_REFUSED)
    m, n = z.shape
    a = typed(alpha, z)
    epilogue = BIAS_ACTIVATE
    gemm_kernel, bias_activate = _kernels(z.dtype)[:2]
    cp = _cupy()
    if cp is not None:
        cp.matmul(cp.asarray(x), cp.asarray(w), out=cp.asarray(z))
        bias_activate[blocks_for(z.size), BLOCK](z, b, y, epilogue, code, a)
    else:
        grid, block = _gemm_grid(m, n)
        gemm_kernel[grid, block](x, w, z, False, False, b, y, epilogue, code, a)


def dense_backward(x, w, z, y, grad_y, grad_z, grad_x, grad_w, grad_b, partial_b, code, alpha, need_grad_x):
    """Gradients of the dense layer from ``grad_y`` (batch, out), on the device.

    Writes grad_z = grad_y * f'(z) (pass ``grad_z`` = ``grad_y`` for identity), grad_w, grad_b
    and, if ``need_grad_x``, grad_x. ``partial_b`` (ceil(batch / REDUCTION_CHUNK_ROWS), out) is
    scratch for the bias sums of fixed row chunks, combined in chunk order. Elementwise codes only.
    """
    if code >= ROWWISE_CODES:
        raise ValueError(ROWWISE_REFUSED)
    m, n = z.shape
    a = typed(alpha, z)
    grad_z_partials = _kernels(z.dtype)[2]
    chunks = -(-m // REDUCTION_CHUNK_ROWS)
    grid = (blocks_for(-(-n // COLS), 1), blocks_for(chunks, 1))
    grad_z_partials[grid, (COLS, LANES)](z, y, grad_y, grad_z, column_partials(partial_b, chunks, grad_b), code, a)
    combine_columns(partial_b, chunks, grad_b)  # (one chunk: grad_b written by the launch above)
    gemm(True, False, x, grad_z, grad_w)
    if need_grad_x:
        gemm(False, True, grad_z, w, grad_x)


__all__ = ["dense_backward", "dense_forward", "gemm", "gemm_backend", "reset_gemm_backend", "use_cublas"]
