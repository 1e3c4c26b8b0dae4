"""CUDA twins of kernels/layernorm.py: one block per row with shared-memory block reductions.

Forward: each block (grid-stride over rows) sums its row, then the squared deviations from the
row mean (two passes, stable), and normalises; a row whose sums overflowed is redone by one
thread with the CPU's :func:`~fastnn.kernels.batchnorm.scaled_moments`. Backward: each block reduces sum(g) and
sum(g * x_hat) over its row (g = grad_out * gamma) and writes grad_x; the parameter gradients are
column sums over rows, reduced per fixed ``REDUCTION_CHUNK_ROWS`` chunk and combined in chunk
order as on the CPU. Buffers, shapes and arguments as on the CPU (device arrays).
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from ..._config import REDUCTION_CHUNK_ROWS
from .._scalar import is_finite, like
from ..batchnorm import normalize_value, scaled_moments
from ..layernorm import partial_rows
from ._common import BLOCK, block_sum, blocks_for, numba_type, per_dtype
from .batchnorm import column_grid, column_kernels, sum_partials

# The CPU's rescue of a row whose sums overflowed, compiled as a device function.
_scaled_moments = cuda.jit(device=True)(scaled_moments.py_func)


@per_dtype
def _kernels(dtype):
    nb_type = numba_type(dtype)
    zero = np.dtype(dtype).type(0)

    @cuda.jit
    def forward(x, gamma, beta, out, x_hat, inv_std, eps, affine):
        buf = cuda.shared.array(BLOCK, nb_type)
        tid = cuda.threadIdx.x
        n = x.shape[1]
        inv_n = like(1.0, x) / like(n, x)
        for i in range(cuda.blockIdx.x, x.shape[0], cuda.gridDim.x):
            acc = zero
            for j in range(tid, n, BLOCK):
                acc += x[i, j]
            buf[tid] = acc
            mean = block_sum(buf, tid) * inv_n
            acc = zero
            for j in range(tid, n, BLOCK):
                d = x[i, j] - mean
                acc += d * d
            buf[tid] = acc
            var = block_sum(buf, tid)
            if is_finite(mean) and is_finite(var):  # the same in every thread of the block
                s = like(1.0, x) / math.sqrt(var * inv_n + eps)
            else:  # the row's sums overflowed: one thread redoes it on scaled values, as the CPU
                if tid == 0:
                    buf[0], _, buf[1] = _scaled_moments(x[i], eps)
                cuda.syncthreads()
                mean = buf[0]
                s = buf[1]
                cuda.syncthreads()
            if tid == 0:
                inv_std[i] = s
            for j in range(tid, n, BLOCK):
                h = normalize_value(x[i, j], mean, s)
                x_hat[i, j] = h
                out[i, j] = gamma[j] * h + beta[j] if affine else h

    @cuda.jit
    def backward_rows(grad_out, x_hat, inv_std, gamma, grad_x, affine):
        buf = cuda.shared.array(BLOCK, nb_type)
        tid = cuda.threadIdx.x
        n = grad_out.shape[1]
        inv_n = like(1.0, grad_out) / like(n, grad_out)
        for i in range(cuda.blockIdx.x, grad_out.shape[0], cuda.gridDim.x):
            sg = zero
            sgx = zero
            for j in range(tid, n, BLOCK):
                g = grad_out[i, j] * gamma[j] if affine else grad_out[i, j]
                sg += g
                sgx += g * x_hat[i, j]
            buf[tid] = sg
            sum_g = block_sum(buf, tid) * inv_n
            buf[tid] = sgx
            sum_gx = block_sum(buf, tid) * inv_n
            s_i = inv_std[i]
            for j in range(tid, n, BLOCK):
                g = grad_out[i, j] * gamma[j] if affine else grad_out[i, j]
                grad_x[i, j] = s_i * (g - sum_g - x_hat[i, j] * sum_gx)

    return forward, backward_rows


def layernorm_forward(x, gamma, beta, out, x_hat, inv_std, eps, affine):
    """Layer norm of each row of ``x`` (batch, features) on the device; as the CPU kernel."""
    _kernels(x.dtype)[0][blocks_for(x.shape[0], 1), BLOCK](
        x, gamma, beta, out, x_hat, inv_std, x.dtype.type(eps), affine
    )


def layernorm_backward(grad_out, x_hat, inv_std, gamma, grad_x, grad_gamma, grad_beta, partials, affine):
    """Gradients of layer norm on the device; as the CPU kernel (parameter gradients only if ``affine``).

    The parameter sums are read before grad_x is written, so grad_x may be grad_out.
    """
    m, n = grad_out.shape
    if affine:
        grid, block = column_grid(m, n)
        column_kernels(grad_out.dtype)[1][grid, block](grad_out, x_hat, partials)
        chunks = -(-m // REDUCTION_CHUNK_ROWS)
        sum_partials(partials, 0, grad_beta, chunks)
        sum_partials(partials, 1, grad_gamma, chunks)
    _kernels(grad_out.dtype)[1][blocks_for(m, 1), BLOCK](grad_out, x_hat, inv_std, gamma, grad_x, affine)


__all__ = ["layernorm_backward", "layernorm_forward", "partial_rows"]
