"""CUDA twins of kernels/recurrent.py: the same names, arguments and layout (see that module's note).

The time loop runs on the host over launches. Forward: one GEMM for the input projection of all
steps, then per step one GEMM launch ``hw = h @ W_hh^T`` and one fused launch, a thread per
(sample, unit), for the gate math and the state update. Backward, per step: one fused launch for
the gate gradients, then one GEMM launch ``dh += dgates_hh[t] @ W_hh``; the weight gradients are one
GEMM each over all steps and the bias gradients column sums in row order. GEMMs are
kernels/cuda/dense.py's :func:`gemm` (tiled, or cuBLAS through CuPy). The per-unit math calls the
CPU module's scalar cell functions (:func:`lstm_cell`, :func:`gru_cell`, :func:`rnn_cell` and their
gradients), and sums its pre-activations in the CPU's order, so the backends share every formula.
No atomics: every sum has an order fixed by the shapes, so results are deterministic.

Read-only inputs given as NumPy arrays (``lengths``, an eager initial state) are copied to the
device once per call. Device arrays of one float dtype, float32 or float64.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from .._scalar import like
from ..recurrent import (
    GRU,
    LSTM,
    _length,
    gru_cell,
    gru_cell_grad,
    lstm_cell,
    lstm_cell_grad,
    rnn_cell,
    rnn_cell_grad,
)
from ._common import BLOCK, blocks_for, combine_rows
from .dense import gemm

# The CPU's sequence-length rule compiled as a device function (its py_func: the simulator cannot
# pass arrays to @njit code).
_valid_steps = cuda.jit(device=True)(_length.py_func)


@cuda.jit(device=True)
def _pre(g, hw, b_ih, b_hh, b, k):
    """Pre-activation of gate column k of sample b: x side + b_ih + h side + b_hh (the CPU's order)."""
    return g[b, k] + b_ih[k] + hw[b, k] + b_hh[k]


@cuda.jit(device=True)
def _step_unit(cell, g, a, hw, b_ih, b_hh, h, c, b, j):
    """Unit j of sample b of one forward step: g (B, G*H) the gates (in: x @ W_ih^T; out: after
    their nonlinearities), a (B, H) GRU's hn (out), c (B, H) the LSTM cell state (updated), h the
    state entering the step. Returns h'."""
    n = h.shape[1]
    if cell == LSTM:
        i, f, gg, o, c_new, h_new = lstm_cell(
            _pre(g, hw, b_ih, b_hh, b, j),
            _pre(g, hw, b_ih, b_hh, b, n + j),
            _pre(g, hw, b_ih, b_hh, b, 2 * n + j),
            _pre(g, hw, b_ih, b_hh, b, 3 * n + j),
            c[b, j],
        )
        g[b, j], g[b, n + j], g[b, 2 * n + j], g[b, 3 * n + j] = i, f, gg, o
        c[b, j] = c_new
        return h_new
    if cell == GRU:
        hn = hw[b, 2 * n + j] + b_hh[2 * n + j]
        r, z, nn, h_new = gru_cell(
            _pre(g, hw, b_ih, b_hh, b, j),
            _pre(g, hw, b_ih, b_hh, b, n + j),
            g[b, 2 * n + j] + b_ih[2 * n + j],
            hn,
            h[b, j],
        )
        g[b, j], g[b, n + j], g[b, 2 * n + j] = r, z, nn
        a[b, j] = hn
        return h_new
    h_new = rnn_cell(_pre(g, hw, b_ih, b_hh, b, j), cell)
    g[b, j] = h_new
    return h_new


@cuda.jit
def _forward_step(cell, t, gates, aux, hw, b_ih, b_hh, h, c, h_prev, c_prev, y, lengths, column):
    """The gate math of step t, a thread per (sample, unit); padded samples keep their state, output 0."""
    n = h.shape[1]
    for e in range(cuda.grid(1), h.size, cuda.gridsize(1)):
        b = e // n
        j = e - b * n
        h_prev[t, b, j] = h[b, j]
        if cell == LSTM:
            c_prev[t, b, j] = c[b, j]
        if t < _valid_steps(lengths, b, y.shape[0]):
            h_new = _step_unit(cell, gates[t], aux[t] if cell == GRU else aux[0], hw, b_ih, b_hh, h, c, b, j)
            h[b, j] = h_new
            y[t, b, column + j] = h_new
        else:
            y[t, b, column + j] = like(0.0, y)


@cuda.jit
def _backward_step(cell, t, gates, aux, h_prev, c_prev, grad_y, dgates, dgates_hh, dh, dc, lengths, column):
    """Gate gradients of step t, a thread per (sample, unit): writes dgates[t], dgates_hh[t], replaces
    dh by the direct part of dh_prev (the GEMM with W_hh adds the rest) and dc by dc_prev."""
    n = dh.shape[1]
    zero = like(0.0, dh)
    for e in range(cuda.grid(1), dh.size, cuda.gridsize(1)):
        b = e // n
        j = e - b * n
        if t < _valid_steps(lengths, b, gates.shape[0]):
            g = gates[t]
            total = dh[b, j] + grad_y[t, b, column + j]
            if cell == LSTM:
                di, df, dgg, do, dc_prev = lstm_cell_grad(
                    g[b, j], g[b, n + j], g[b, 2 * n + j], g[b, 3 * n + j], c_prev[t, b, j], total, dc[b, j]
                )
                dg = dgates[t]
                dg[b, j], dg[b, n + j], dg[b, 2 * n + j], dg[b, 3 * n + j] = di, df, dgg, do
                dh[b, j] = zero
                dc[b, j] = dc_prev
            elif cell == GRU:
                dr, dz, dn, dhn, direct = gru_cell_grad(
                    g[b, j], g[b, n + j], g[b, 2 * n + j], aux[t, b, j], h_prev[t, b, j], total
                )
                dg, dg_hh = dgates[t], dgates_hh[t]
                dg[b, j], dg[b, n + j], dg[b, 2 * n + j] = dr, dz, dn
                dg_hh[b, j], dg_hh[b, n + j], dg_hh[b, 2 * n + j] = dr, dz, dhn
                dh[b, j] = direct
            else:
                dgates[t, b, j] = rnn_cell_grad(g[b, j], total, cell)
                dh[b, j] = zero
        else:
            for k in range(j, dgates.shape[2], n):
                dgates[t, b, k] = zero
                dgates_hh[t, b, k] = zero


@cuda.jit
def _broadcast_rows(src, dst):
    """dst (B, H) = src (B or 1, H): one row is broadcast over the batch."""
    n = dst.shape[1]
    for e in range(cuda.grid(1), dst.size, cuda.gridsize(1)):
        b = e // n
        j = e - b * n
        dst[b, j] = src[b if src.shape[0] > 1 else 0, j]


@cuda.jit
def _swap(src, dst):
    """dst[b, a, f] = src[a, b, f], a thread per element of dst (consecutive threads, consecutive f)."""
    steps, features = src.shape[0], src.shape[2]
    for e in range(cuda.grid(1), dst.size, cuda.gridsize(1)):
        f = e % features
        r = e // features
        a = r % steps
        b = r // steps
        dst[b, a, f] = src[a, b, f]


def _store_state(src, dst):
    """dst (B or 1, H) = src (B, H), summed over the batch in row order when dst has one row."""
    if dst.shape[0] == src.shape[0]:
        _broadcast_rows[blocks_for(dst.size), BLOCK](src, dst)
    else:
        combine_rows[blocks_for(dst.shape[1]), BLOCK](src, src.shape[0], dst[0])


def _flat(a):
    """(A, B, F) -> (A * B, F) view of a C-contiguous device array."""
    return a.reshape((a.shape[0] * a.shape[1], a.shape[2]))


def _on_device(a):
    """A device array for a read-only input that may come from the host."""
    if not isinstance(a, np.ndarray):
        return a
    return cuda.to_device(a) if a.size else cuda.device_array(a.shape, a.dtype)  # no 0-byte copy


def recurrent_forward(
    x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, gates, aux, h_prev, c_prev, hw, y, h_n, c_n, cell, reverse, column
):
    """One layer, one direction of a recurrent network over a time-major sequence, on the device."""
    steps = x.shape[0]
    lengths, h0, c0 = _on_device(lengths), _on_device(h0), _on_device(c0)
    gemm(False, True, _flat(x), w_ih, _flat(gates))
    state_launch = _broadcast_rows[blocks_for(h_n.size), BLOCK]
    state_launch(h0, h_n)
    if cell == LSTM:
        state_launch(c0, c_n)
    step = _forward_step[blocks_for(h_n.size), BLOCK]
    for s in range(steps):
        t = steps - 1 - s if reverse else s
        gemm(False, True, h_n, w_hh, hw)
        step(cell, t, gates, aux, hw, b_ih, b_hh, h_n, c_n, h_prev, c_prev, y, lengths, column)


def recurrent_backward(
    x,
    w_ih,
    w_hh,
    lengths,
    gates,
    aux,
    h_prev,
    c_prev,
    grad_y,
    grad_h_n,
    grad_c_n,
    dgates,
    dgates_hh,
    dh,
    dc,
    grad_x,
    grad_w_ih,
    grad_w_hh,
    grad_b_ih,
    grad_b_hh,
    grad_h0,
    grad_c0,
    cell,
    reverse,
    column,
    accumulate_x,
    need_grad_x,
):
    """Backward through time of :func:`recurrent_forward`, on the device."""
    steps = x.shape[0]
    lengths, grad_h_n, grad_c_n = _on_device(lengths), _on_device(grad_h_n), _on_device(grad_c_n)
    state_launch = _broadcast_rows[blocks_for(dh.size), BLOCK]
    state_launch(grad_h_n, dh)
    if cell == LSTM:
        state_launch(grad_c_n, dc)
    step = _backward_step[blocks_for(dh.size), BLOCK]
    for s in range(steps):
        t = s if reverse else steps - 1 - s
        step(cell, t, gates, aux, h_prev, c_prev, grad_y, dgates, dgates_hh, dh, dc, lengths, column)
        gemm(False, False, dgates_hh[t], w_hh, dh, accumulate=True)
    _store_state(dh, grad_h0)
    if cell == LSTM:
        _store_state(dc, grad_c0)
    flat_dg, flat_dg_hh = _flat(dgates), _flat(dgates_hh)
    gemm(True, False, flat_dg, _flat(x), grad_w_ih)
    gemm(True, False, flat_dg_hh, _flat(h_prev), grad_w_hh)
    rows = flat_dg.shape[0]
    combine_rows[blocks_for(grad_b_ih.size), BLOCK](flat_dg, rows, grad_b_ih)  # column sums in row order
    if dgates_hh is dgates:  # RNN, LSTM: the same gradients on both sides
        grad_b_hh.copy_to_device(grad_b_ih)
    else:
        combine_rows[blocks_for(grad_b_hh.size), BLOCK](flat_dg_hh, rows, grad_b_hh)
    if need_grad_x:
        gemm(False, False, flat_dg, w_ih, _flat(grad_x), accumulate=accumulate_x)


def swap_leading_axes(src, dst):
    """dst[b, a, :] = src[a, b, :]; src (A, B, F), dst (B, A, F) device arrays (batch-first <-> time-major)."""
    _swap[blocks_for(dst.size), BLOCK](src, dst)


__all__ = ["recurrent_backward", "recurrent_forward", "swap_leading_axes"]
