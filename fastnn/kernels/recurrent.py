"""Recurrent layers (RNN with tanh/ReLU, LSTM, GRU) as PyTorch computes them, one layer and one
direction per call: the input projection ``x @ W_ih^T``, the time loop (per step: the ``h @ W_hh^T``
GEMM, then the gate math and the state update), and the backward through time, which ends with the
weight gradients as one GEMM each over all steps.

Layout: sequences are *time-major* and C-contiguous, (T, B, F); the layer transposes its batch-first
input and output with :func:`swap_leading_axes`. Gate order and parameter shapes as torch:
``G`` gates of ``H`` units, LSTM (i, f, g, o), GRU (r, z, n), RNN one; w_ih (G*H, I), w_hh (G*H, H),
b_ih and b_hh (G*H,). GRU's n gate is ``tanh(x_n + b_in + r * (W_hn h + b_hn))``. One float dtype.

Arguments (inputs, then outputs, then scalars; T steps, B samples, I inputs, H hidden units):

recurrent_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths,
                  gates, aux, h_prev, c_prev, hw, y, h_n, c_n, cell, reverse, column)
  x (T, B, I)            the layer's input
  w_ih, w_hh, b_ih, b_hh the parameters above (zeros for bias=False)
  h0, c0 (B or 1, H)     initial state; one row is broadcast over the batch (c0: LSTM only)
  lengths (B,) int64     valid leading steps per sample, 1 <= length <= T (unchecked); (0,): all T
  gates (T, B, G*H)      out: the gates after their nonlinearities (RNN: h_t)
  aux (T, B, H)          out, GRU only: W_hn h_{t-1} + b_hn (other cells: any array, unused)
  h_prev, c_prev (T,B,H) out: the state entering each step (c_prev: LSTM only)
  hw (B, G*H)            scratch: h_{t-1} @ W_hh^T
  y (T, B, Y)            out: h_t in columns [column, column + H); 0 at padded steps (t >= length)
  h_n, c_n (B, H)        out: the final state (at each sample's last valid step)
  cell                   RNN_TANH, RNN_RELU, LSTM or GRU
  reverse                run from each sample's last valid step down to step 0 (bidirectional's second half)
  column                 the first column of ``y`` this direction writes

recurrent_backward(x, w_ih, w_hh, lengths, gates, aux, h_prev, c_prev, grad_y, grad_h_n, grad_c_n,
                   dgates, dgates_hh, dh, dc, grad_x, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh,
                   grad_h0, grad_c0, cell, reverse, column, accumulate_x, need_grad_x)
  x ... c_prev           as the forward left them
  grad_y (T, B, Y)       d loss / d y, columns [column, column + H) read; padded steps ignored
  grad_h_n, grad_c_n     (B or 1, H) d loss / d final state (one row: broadcast)
  dgates (T, B, G*H)     out: d loss / d gate pre-activations (the x side)
  dgates_hh (T, B, G*H)  out: the same on the h side (GRU: n part times r); pass ``dgates`` for RNN/LSTM
  dh, dc (B, H)          scratch: the running state gradients
  grad_x (T, B, I)       out: d loss / d x (added to when ``accumulate_x``; untouched without need_grad_x)
  grad_w_ih ... grad_b_hh out: the parameter gradients (overwritten)
  grad_h0, grad_c0       out (B or 1, H): d loss / d initial state (one row: summed over the batch)

swap_leading_axes(src (A, B, F), dst (B, A, F)): dst[b, a] = src[a, b] (batch-first <-> time-major).

The time loop runs per batch chunk (:func:`chunk_rows`, fixed by the batch size and the CPU
count): samples never interact inside it, so each chunk runs all its steps as one task (per step:
its rows of ``x_t @ W_ih^T`` and ``h @ W_hh^T``, then their gate math, while all are in cache;
backward: its gate gradients, then its rows of ``dh`` and ``grad_x``), one parallel region per call
instead of one per step. A batch of one chunk projects all steps' inputs in one GEMM and steps with
tiled GEMMs (in parallel when large).

Every sum runs in an order fixed by the shapes (batch chunks and GEMM tiles by shape, per-sample
gate math, column sums in row order), so results are bit-identical on any number of threads.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from .._config import JIT, JIT_INLINE, JIT_PARALLEL, PARALLEL_MIN_ELEMENTS, PARALLEL_MIN_MACS
from ._scalar import like, n_chunks, start_of
from .activations import fast_tanh, sigmoid
from .blas import gemm_block, small_kernel_form
from .dense import _block, _grid, _share, _shares, _threaded_product, _worth_parallel
from .tiling import gemm_tiles

RNN_TANH, RNN_RELU, LSTM, GRU = range(4)
#: cell name -> (code, gates per unit)
CELLS = {"rnn_tanh": (RNN_TANH, 1), "rnn_relu": (RNN_RELU, 1), "lstm": (LSTM, 4), "gru": (GRU, 3)}
#: columns per task of the parallel column sums (bias gradients)
_SUM_COLUMNS = 64


def gate_sigmoid(z):
    """The logistic function of a gate: 0.5 + 0.5 tanh(z / 2) with the vectorisable float32 tanh
    (libm's exp does not vectorise here), the exact form for float64."""
    return 1.0 / (1.0 + math.exp(-z))


@overload(gate_sigmoid, jit_options=dict(JIT_INLINE))
def _gate_sigmoid_overload(z):
    if z == types.float32:
        half = np.float32(0.5)
        return lambda z: half + half * fast_tanh(half * z)
    return lambda z: sigmoid(z)


# -- the scalar math of each cell, written once ------------------------------------------------
@njit(**JIT_INLINE)
def lstm_state(i, f, g, o, c):
    """(c', h') from the gates (after their nonlinearities) and the cell state c."""
    c_new = f * c + i * g
    return c_new, o * fast_tanh(c_new)


@njit(**JIT_INLINE)
def lstm_cell(xi, xf, xg, xo, c):
    """(i, f, g, o, c', h') from the gate pre-activations and the cell state c."""
    i, f, g, o = gate_sigmoid(xi), gate_sigmoid(xf), fast_tanh(xg), gate_sigmoid(xo)
    c_new, h_new = lstm_state(i, f, g, o, c)
    return i, f, g, o, c_new, h_new


@njit(**JIT_INLINE)
def lstm_cell_grad(i, f, g, o, c, dh, dc):
    """(d pre-activations of i, f, g, o, dc_prev) from the gates, the state c entering the step and
    the gradients of h' and c' (c' is recomputed: c is needed anyway, f can be 0)."""
    one = like(1.0, i)
    t = fast_tanh(f * c + i * g)
    dc_total = dc + dh * o * (one - t * t)
    return (
        dc_total * g * i * (one - i),
        dc_total * c * f * (one - f),
        dc_total * i * (one - g * g),
        dh * t * o * (one - o),
        dc_total * f,
    )


@njit(**JIT_INLINE)
def gru_cell(xr, xz, xn, hn, h):
    """(r, z, n, h') from the x-side pre-activations, hn = W_hn h + b_hn and the state h."""
    r, z = gate_sigmoid(xr), gate_sigmoid(xz)
    n = fast_tanh(xn + r * hn)
    return r, z, n, n + z * (h - n)


@njit(**JIT_INLINE)
def gru_cell_grad(r, z, n, hn, h, dh):
    """(d pre-activations of r, z, n on the x side, d hn, the direct part of dh_prev)."""
    one = like(1.0, r)
    dpn = dh * (one - z) * (one - n * n)
    return dpn * hn * r * (one - r), dh * (h - n) * z * (one - z), dpn, dpn * r, dh * z


@njit(**JIT_INLINE)
def rnn_cell(pre, cell):
    """h' = tanh(pre) or relu(pre)."""
    if cell == RNN_RELU:
        return max(pre, like(0.0, pre))
    return fast_tanh(pre)


@njit(**JIT_INLINE)
def rnn_cell_grad(h, dh, cell):
    """d pre-activation from h' and its gradient."""
    if cell == RNN_RELU:
        return dh if h > like(0.0, h) else like(0.0, h)
    return dh * (like(1.0, h) - h * h)


# -- one step of one sample --------------------------------------------------------------------
@njit(**JIT_INLINE)
def _gate(v, k, n):
    """Gate k's block v[k*n:(k+1)*n]: loops then index from 0, which Numba knows is not negative (an
    offset index k*n + j costs a wraparound select per access and stops vectorisation)."""
    return v[k * n : (k + 1) * n]


@njit(**JIT_INLINE)
def _copy(src, dst):
    """dst[:] = src (1-D): a loop, 5x faster here than slice assignment and its overlap check."""
    for j in range(dst.shape[0]):
        dst[j] = src[j]


@njit(**JIT_INLINE)
def _sigmoid_in_place(v):
    for j in range(v.shape[0]):
        v[j] = gate_sigmoid(v[j])


@njit(**JIT_INLINE)
def _tanh_in_place(v):
    for j in range(v.shape[0]):
        v[j] = fast_tanh(v[j])


@njit(**JIT_INLINE)
def _step_row(cell, g, a, hwr, b_ih, b_hh, h, c, out, n):
    """Sample row of one forward step: g (G*n,) gates (in: x @ W_ih^T), a (n,) GRU's hn, hwr
    (G*n,) h @ W_hh^T, h and c (n,) the state (updated), out (n,) h' (a view of y)."""
    g0, x0, h0, b0 = _gate(g, 0, n), _gate(b_ih, 0, n), _gate(hwr, 0, n), _gate(b_hh, 0, n)
    if cell == LSTM:  # as lstm_cell, in passes of few arrays each (20% faster than one loop over 23)
        for j in range(g.shape[0]):
            g[j] = g[j] + b_ih[j] + hwr[j] + b_hh[j]
        _sigmoid_in_place(g[: 2 * n])
        _tanh_in_place(_gate(g, 2, n))
        _sigmoid_in_place(_gate(g, 3, n))
        g1, g2, g3 = _gate(g, 1, n), _gate(g, 2, n), _gate(g, 3, n)
        for j in range(n):
            c_new, h_new = lstm_state(g0[j], g1[j], g2[j], g3[j], c[j])
            c[j] = c_new
            h[j] = h_new
            out[j] = h_new
    elif cell == GRU:
        g1, x1, h1, b1 = _gate(g, 1, n), _gate(b_ih, 1, n), _gate(hwr, 1, n), _gate(b_hh, 1, n)
        g2, x2, h2, b2 = _gate(g, 2, n), _gate(b_ih, 2, n), _gate(hwr, 2, n), _gate(b_hh, 2, n)
        for j in range(n):
            hn = h2[j] + b2[j]
            r, z, nn, h_new = gru_cell(
                g0[j] + x0[j] + h0[j] + b0[j], g1[j] + x1[j] + h1[j] + b1[j], g2[j] + x2[j], hn, h[j]
            )
            g0[j], g1[j], g2[j] = r, z, nn
            a[j] = hn
            h[j] = h_new
            out[j] = h_new
    else:
        for j in range(n):
            h_new = rnn_cell(g0[j] + x0[j] + h0[j] + b0[j], cell)
            g0[j] = h_new
            h[j] = h_new
            out[j] = h_new


@njit(**JIT_INLINE)
def _step_row_grad(cell, g, a, hp, cp, gy, dg, dg_hh, dh, dc, n):
    """Sample row of one backward step: gates g, GRU's hn a, the entering state hp/cp, the output
    gradient gy (n,); writes dg/dg_hh (G*n,) and replaces dh by the direct part of dh_prev (the
    GEMM with W_hh adds the rest) and dc by dc_prev."""
    zero = like(0.0, dh[0])
    g0, d0 = _gate(g, 0, n), _gate(dg, 0, n)
    if cell == LSTM:
        g1, g2, g3 = _gate(g, 1, n), _gate(g, 2, n), _gate(g, 3, n)
        d1, d2, d3 = _gate(dg, 1, n), _gate(dg, 2, n), _gate(dg, 3, n)
        for j in range(n):
            d0[j], d1[j], d2[j], d3[j], dc[j] = lstm_cell_grad(g0[j], g1[j], g2[j], g3[j], cp[j], dh[j] + gy[j], dc[j])
            dh[j] = zero
    elif cell == GRU:
        g1, g2, d1, d2 = _gate(g, 1, n), _gate(g, 2, n), _gate(dg, 1, n), _gate(dg, 2, n)
        e0, e1, e2 = _gate(dg_hh, 0, n), _gate(dg_hh, 1, n), _gate(dg_hh, 2, n)
        for j in range(n):
            dr, dz, dn, dhn, direct = gru_cell_grad(g0[j], g1[j], g2[j], a[j], hp[j], dh[j] + gy[j])
            d0[j], d1[j], d2[j] = dr, dz, dn
            e0[j], e1[j], e2[j] = dr, dz, dhn
            dh[j] = direct
    else:
        for j in range(n):
            d0[j] = rnn_cell_grad(g0[j], dh[j] + gy[j], cell)
            dh[j] = zero


@njit(**JIT_INLINE)
def _length(lengths, b, steps):
    return steps if lengths.shape[0] == 0 else lengths[b]


@njit(**JIT_INLINE)
def _row(state, b):
    """Row b of a (B or 1, H) state: one row is broadcast over the batch."""
    return state[b if state.shape[0] > 1 else 0]


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _forward_rows(cell, t, x_gates, aux, hw, b_ih, b_hh, h, c, h_prev, c_prev, y, lengths, column, b0, b1):
    """The gate math of step t for samples b0:b1 (padded samples keep their state, output 0)."""
    n = h.shape[1]
    zero = like(0.0, y)
    for b in range(b0, b1):
        out = y[t, b, column : column + n]
        _copy(h[b], h_prev[t, b])
        if cell == LSTM:
            _copy(c[b], c_prev[t, b])
        if t < _length(lengths, b, y.shape[0]):
            _step_row(
                cell,
                x_gates[t, b],
                aux[t, b] if cell == GRU else aux[0, 0],
                hw[b],
                b_ih,
                b_hh,
                h[b],
                c[b] if cell == LSTM else c[0],
                out,
                n,
            )
        else:
            out[:] = zero


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _backward_rows(cell, t, gates, aux, h_prev, c_prev, grad_y, dgates, dgates_hh, dh, dc, lengths, column, b0, b1):
    n = dh.shape[1]
    zero = like(0.0, dgates)
    for b in range(b0, b1):
        if t < _length(lengths, b, gates.shape[0]):
            _step_row_grad(
                cell,
                gates[t, b],
                aux[t, b] if cell == GRU else aux[0, 0],
                h_prev[t, b],
                c_prev[t, b] if cell == LSTM else c_prev[0, 0],
                grad_y[t, b, column : column + n],
                dgates[t, b],
                dgates_hh[t, b],
                dh[b],
                dc[b] if cell == LSTM else dc[0],
                n,
            )
        else:
            dgates[t, b] = zero
            dgates_hh[t, b] = zero


# The row loops take the cell as a compile-time constant: with a run-time cell (all cells' loops in
# one body) they were measured 3.4x slower. Numba compiles a callee per literal argument.
@njit(**JIT_INLINE)
def _forward_rows_of(cell, t, x_gates, aux, hw, b_ih, b_hh, h, c, h_prev, c_prev, y, lengths, column, b0, b1):
    if cell == LSTM:
        _forward_rows(LSTM, t, x_gates, aux, hw, b_ih, b_hh, h, c, h_prev, c_prev, y, lengths, column, b0, b1)
    elif cell == GRU:
        _forward_rows(GRU, t, x_gates, aux, hw, b_ih, b_hh, h, c, h_prev, c_prev, y, lengths, column, b0, b1)
    elif cell == RNN_RELU:
        _forward_rows(RNN_RELU, t, x_gates, aux, hw, b_ih, b_hh, h, c, h_prev, c_prev, y, lengths, column, b0, b1)
    else:
        _forward_rows(RNN_TANH, t, x_gates, aux, hw, b_ih, b_hh, h, c, h_prev, c_prev, y, lengths, column, b0, b1)


@njit(**JIT_INLINE)
def _backward_rows_of(cell, t, gates, aux, h_prev, c_prev, grad_y, dgates, dgates_hh, dh, dc, lengths, column, b0, b1):
    if cell == LSTM:
        _backward_rows(LSTM, t, gates, aux, h_prev, c_prev, grad_y, dgates, dgates_hh, dh, dc, lengths, column, b0, b1)
    elif cell == GRU:
        _backward_rows(GRU, t, gates, aux, h_prev, c_prev, grad_y, dgates, dgates_hh, dh, dc, lengths, column, b0, b1)
    elif cell == RNN_RELU:
        _backward_rows(
            RNN_RELU, t, gates, aux, h_prev, c_prev, grad_y, dgates, dgates_hh, dh, dc, lengths, column, b0, b1
        )
    else:
        _backward_rows(
            RNN_TANH, t, gates, aux, h_prev, c_prev, grad_y, dgates, dgates_hh, dh, dc, lengths, column, b0, b1
        )


#: gate math of a step runs over samples in parallel from this many state units (B * H) per step.
#: Measured (forward + backward, 2 threads, a loaded 2-core machine, so roughly): LSTM/GRU at
#: B=64, H=128 (8192 units) 14% / 6% slower in parallel (a region per step costs more than the
#: ~40 us of gate math it splits); at B=256, H=256 (65,536 units) 12% / 9% faster.
PARALLEL_MIN_UNITS = PARALLEL_MIN_ELEMENTS
_ROWS_PER_TASK = 16


@njit(**JIT_INLINE)
def chunk_rows(batch):
    """Rows per batch chunk of the time loop: the batch split in GEMM_TILES (the CPU count), rounded
    up to 16 rows (GEMMs of fewer rows repack W_hh for little work); all of it below 32 rows."""
    return min(batch, 16 * n_chunks(n_chunks(batch, gemm_tiles()), 16))


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _forward_chunk(
    cell, x, w_ih, w_hh, x_gates, aux, hw, b_ih, b_hh, h, c, h_prev, c_prev, y, lengths, column, reverse, b0, b1
):
    """All steps of samples b0:b1: their rows of x_t @ W_ih^T and h @ W_hh^T, then their gate math
    (in cache: the input projection of all steps at once was measured as fast, but streams the gates
    through memory twice more)."""
    steps = x_gates.shape[0]
    one, zero = like(1.0, hw), like(0.0, hw)
    for s in range(steps):
        t = steps - 1 - s if reverse else s
        gemm_block(False, True, one, x[t], w_ih, zero, x_gates[t], b0, b1, 0, hw.shape[1])
        gemm_block(False, True, one, h, w_hh, zero, hw, b0, b1, 0, hw.shape[1])
        _forward_rows_of(cell, t, x_gates, aux, hw, b_ih, b_hh, h, c, h_prev, c_prev, y, lengths, column, b0, b1)


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _backward_chunk(
    cell,
    w_ih,
    w_hh,
    gates,
    aux,
    h_prev,
    c_prev,
    grad_y,
    dgates,
    dgates_hh,
    dh,
    dc,
    grad_x,
    lengths,
    column,
    reverse,
    beta_x,
    need_grad_x,
    b0,
    b1,
):
    """All backward steps of samples b0:b1: their gate gradients, then their rows of dh += dg_hh @ W_hh
    and of grad_x = dg @ W_ih + beta_x * grad_x (while dg is in cache)."""
    steps = gates.shape[0]
    one = like(1.0, dh)
    for s in range(steps):
        t = s if reverse else steps - 1 - s
        _backward_rows_of(
            cell, t, gates, aux, h_prev, c_prev, grad_y, dgates, dgates_hh, dh, dc, lengths, column, b0, b1
        )
        gemm_block(False, False, one, dgates_hh[t], w_hh, one, dh, b0, b1, 0, dh.shape[1])
        if need_grad_x:
            gemm_block(False, False, one, dgates[t], w_ih, beta_x, grad_x[t], b0, b1, 0, grad_x.shape[2])


@njit(**JIT_INLINE)
def _chunks_in_parallel(steps, batch, gate_columns, depth):
    """Whether the time loop's GEMMs (steps * batch * G*H * depth multiply-adds) are worth a parallel region."""
    return steps * batch * gate_columns * depth >= PARALLEL_MIN_MACS


@njit(**JIT_PARALLEL)
def _forward_chunks(
    cell, x, w_ih, w_hh, x_gates, aux, hw, b_ih, b_hh, h, c, h_prev, c_prev, y, lengths, column, reverse
):
    batch = h.shape[0]
    rows = chunk_rows(batch)
    if _chunks_in_parallel(x_gates.shape[0], batch, hw.shape[1], h.shape[1] + x.shape[2]):
        for k_u in prange(n_chunks(batch, rows)):
            k = np.int64(k_u)  # prange indices are uint64; int64 like the serial twin
            _forward_chunk(
                cell,
                x,
                w_ih,
                w_hh,
                x_gates,
                aux,
                hw,
                b_ih,
                b_hh,
                h,
                c,
                h_prev,
                c_prev,
                y,
                lengths,
                column,
                reverse,
                k * rows,
                min(batch, (k + 1) * rows),
            )
    else:
        for k in range(n_chunks(batch, rows)):
            _forward_chunk(
                cell,
                x,
                w_ih,
                w_hh,
                x_gates,
                aux,
                hw,
                b_ih,
                b_hh,
                h,
                c,
                h_prev,
                c_prev,
                y,
                lengths,
                column,
                reverse,
                k * rows,
                min(batch, (k + 1) * rows),
            )


@njit(**JIT_PARALLEL)
def _backward_chunks(
    cell,
    w_ih,
    w_hh,
    gates,
    aux,
    h_prev,
    c_prev,
    grad_y,
    dgates,
    dgates_hh,
    dh,
    dc,
    grad_x,
    lengths,
    column,
    reverse,
    accumulate_x,
    need_grad_x,
):
    batch = dh.shape[0]
    rows = chunk_rows(batch)
    beta_x = like(1.0 if accumulate_x else 0.0, dh)
    depth = dh.shape[1] + (grad_x.shape[2] if need_grad_x else 0)
    if _chunks_in_parallel(gates.shape[0], batch, gates.shape[2], depth):
        for k_u in prange(n_chunks(batch, rows)):
            k = np.int64(k_u)  # prange indices are uint64; int64 like the serial twin
            _backward_chunk(
                cell,
                w_ih,
                w_hh,
                gates,
                aux,
                h_prev,
                c_prev,
                grad_y,
                dgates,
                dgates_hh,
                dh,
                dc,
                grad_x,
                lengths,
                column,
                reverse,
                beta_x,
                need_grad_x,
                k * rows,
                min(batch, (k + 1) * rows),
            )
    else:
        for k in range(n_chunks(batch, rows)):
            _backward_chunk(
                cell,
                w_ih,
                w_hh,
                gates,
                aux,
                h_prev,
                c_prev,
                grad_y,
                dgates,
                dgates_hh,
                dh,
                dc,
                grad_x,
                lengths,
                column,
                reverse,
                beta_x,
                need_grad_x,
                k * rows,
                min(batch, (k + 1) * rows),
            )


@njit(**JIT_PARALLEL)
def _forward_step(cell, t, x_gates, aux, hw, b_ih, b_hh, h, c, h_prev, c_prev, y, lengths, column):
    batch = h.shape[0]
    if batch * h.shape[1] < PARALLEL_MIN_UNITS:
        _forward_rows_of(
            cell, t, x_gates, aux, hw, b_ih, b_hh, h, c, h_prev, c_prev, y, lengths, column, start_of(batch), batch
        )
    else:
        for k_u in prange(n_chunks(batch, _ROWS_PER_TASK)):
            k = np.int64(k_u)  # prange indices are uint64; int64 like the serial twin
            _forward_rows_of(
                cell,
                t,
                x_gates,
                aux,
                hw,
                b_ih,
                b_hh,
                h,
                c,
                h_prev,
                c_prev,
                y,
                lengths,
                column,
                k * _ROWS_PER_TASK,
                min(batch, (k + 1) * _ROWS_PER_TASK),
            )


@njit(**JIT_PARALLEL)
def _backward_step(cell, t, gates, aux, h_prev, c_prev, grad_y, dgates, dgates_hh, dh, dc, lengths, column):
    batch = dh.shape[0]
    if batch * dh.shape[1] < PARALLEL_MIN_UNITS:
        _backward_rows_of(
            cell,
            t,
            gates,
            aux,
            h_prev,
            c_prev,
            grad_y,
            dgates,
            dgates_hh,
            dh,
            dc,
            lengths,
            column,
            start_of(batch),
            batch,
        )
    else:
        for k_u in prange(n_chunks(batch, _ROWS_PER_TASK)):
            k = np.int64(k_u)  # prange indices are uint64; int64 like the serial twin
            _backward_rows_of(
                cell,
                t,
                gates,
                aux,
                h_prev,
                c_prev,
                grad_y,
                dgates,
                dgates_hh,
                dh,
                dc,
                lengths,
                column,
                k * _ROWS_PER_TASK,
                min(batch, (k + 1) * _ROWS_PER_TASK),
            )


# -- GEMMs over fixed output tiles (kernels/dense.py's tiling) ---------------------------------
@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _gemm_tile(trans_a, trans_b, a, b, beta, c, tile, grid):
    r0, r1, c0, c1 = _block(tile, grid[0], grid[1], grid[3], c.shape[0], c.shape[1])
    gemm_block(trans_a, trans_b, like(1.0, c), a, b, like(beta, c), c, r0, r1, c0, c1)


@njit(**JIT_PARALLEL)
def gemm_tiled(trans_a, trans_b, a, b, beta, c):
    """c = op(a) @ op(b) + beta * c on output tiles fixed by the shape, in parallel when it pays
    (at one row, a recurrent step at batch 1: only when ``b`` exceeds ``_config.MATVEC_SPLIT_BYTES``, as Dense)."""
    m, n = c.shape
    k = a.shape[0] if trans_a else a.shape[1]
    parallel = _worth_parallel(m, n, k)
    grid = _grid(m, n, k, parallel, small_kernel_form(trans_a, trans_b))
    if _threaded_product(parallel, m, b):
        for s_u in prange(_shares(grid[2] * grid[3])):
            lo, hi = _share(np.int64(s_u), grid[2] * grid[3])  # prange indices are uint64
            for t in range(lo, hi):
                _gemm_tile(trans_a, trans_b, a, b, beta, c, t, grid)
    else:
        for t in range(grid[2] * grid[3]):  # the same tiles (one when not parallel), in a loop
            _gemm_tile(trans_a, trans_b, a, b, beta, c, t, grid)


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _column_sums(rows, out, c0, c1):
    acc = out[c0:c1]  # slices indexed from 0: vectorised (offset indices were 6x slower, measured)
    acc[:] = 0
    for i in range(rows.shape[0]):
        r = rows[i, c0:c1]
        for j in range(c1 - c0):
            acc[j] += r[j]


@njit(**JIT_PARALLEL)
def column_sums(rows, out):
    """out[j] = sum of rows[:, j] in row order (each task owns a range of columns)."""
    n = rows.shape[1]
    if rows.size < PARALLEL_MIN_ELEMENTS:
        _column_sums(rows, out, 0, n)
    else:
        for k_u in prange(n_chunks(n, _SUM_COLUMNS)):
            k = np.int64(k_u)  # prange indices are uint64; int64 like the serial twin
            _column_sums(rows, out, k * _SUM_COLUMNS, min(n, (k + 1) * _SUM_COLUMNS))


def _flat(a):
    return a.reshape((a.shape[0] * a.shape[1], a.shape[2]))


@overload(_flat, jit_options=dict(JIT_INLINE))
def _flat_overload(a):
    return lambda a: a.reshape((a.shape[0] * a.shape[1], a.shape[2]))


@njit(**JIT_INLINE)
def _load_state(src, dst):
    """dst (B, H) = src (B or 1, H)."""
    for b in range(dst.shape[0]):
        dst[b] = _row(src, b)


@njit(**JIT_INLINE)
def _store_state(src, dst):
    """dst (B or 1, H) = src (B, H), summed over the batch when dst has one row."""
    if dst.shape[0] == src.shape[0]:
        dst[:] = src
        return
    dst[0] = src[0]
    for b in range(1, src.shape[0]):
        dst[0] += src[b]


# -- the kernels -------------------------------------------------------------------------------
@njit(**JIT)
def recurrent_forward(
    x, w_ih, w_hh, b_ih, b_hh, h0, c0, lengths, gates, aux, h_prev, c_prev, hw, y, h_n, c_n, cell, reverse, column
):
    """One layer, one direction of a recurrent network over a time-major sequence (module note)."""
    steps = x.shape[0]
    _load_state(h0, h_n)
    if cell == LSTM:
        _load_state(c0, c_n)
    if chunk_rows(h_n.shape[0]) < h_n.shape[0]:
        _forward_chunks(
            cell, x, w_ih, w_hh, gates, aux, hw, b_ih, b_hh, h_n, c_n, h_prev, c_prev, y, lengths, column, reverse
        )
        return
    gemm_tiled(False, True, _flat(x), w_ih, 0.0, _flat(gates))
    for s in range(steps):  # one chunk: each step's GEMM in tiles (in parallel when large)
        t = steps - 1 - s if reverse else s
        gemm_tiled(False, True, h_n, w_hh, 0.0, hw)
        _forward_step(cell, t, gates, aux, hw, b_ih, b_hh, h_n, c_n, h_prev, c_prev, y, lengths, column)


@njit(**JIT)
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
    """Backward through time of :func:`recurrent_forward` (module note)."""
    steps = x.shape[0]
    _load_state(grad_h_n, dh)
    if cell == LSTM:
        _load_state(grad_c_n, dc)
    chunked = chunk_rows(dh.shape[0]) < dh.shape[0]
    if chunked:  # grad_x too, step by step
        _backward_chunks(
            cell,
            w_ih,
            w_hh,
            gates,
            aux,
            h_prev,
            c_prev,
            grad_y,
            dgates,
            dgates_hh,
            dh,
            dc,
            grad_x,
            lengths,
            column,
            reverse,
            accumulate_x,
            need_grad_x,
        )
    else:
        for s in range(steps):  # one chunk: each step's GEMM in tiles (in parallel when large)
            t = s if reverse else steps - 1 - s
            _backward_step(cell, t, gates, aux, h_prev, c_prev, grad_y, dgates, dgates_hh, dh, dc, lengths, column)
            gemm_tiled(False, False, dgates_hh[t], w_hh, 1.0, dh)
    _store_state(dh, grad_h0)
    if cell == LSTM:
        _store_state(dc, grad_c0)
    flat_dg, flat_dg_hh = _flat(dgates), _flat(dgates_hh)
    gemm_tiled(True, False, flat_dg, _flat(x), 0.0, grad_w_ih)
    gemm_tiled(True, False, flat_dg_hh, _flat(h_prev), 0.0, grad_w_hh)
    column_sums(flat_dg, grad_b_ih)
    if dgates_hh.ctypes.data == dgates.ctypes.data:  # RNN, LSTM: the same gradients on both sides
        grad_b_hh[:] = grad_b_ih
    else:
        column_sums(flat_dg_hh, grad_b_hh)
    if need_grad_x and not chunked:
        gemm_tiled(False, False, flat_dg, w_ih, 1.0 if accumulate_x else 0.0, _flat(grad_x))


@njit(**JIT)  # not inlined: one compiled body for the serial and parallel paths
def _swap_rows(src, dst, b):
    for a in range(src.shape[0]):
        _copy(src[a, b], dst[b, a])


@njit(**JIT_PARALLEL)
def swap_leading_axes(src, dst):
    """dst[b, a, :] = src[a, b, :]; src (A, B, F), dst (B, A, F) (each task writes one dst[b])."""
    if src.size < PARALLEL_MIN_ELEMENTS:
        for b in range(dst.shape[0]):
            _swap_rows(src, dst, b)
    else:
        for b_u in prange(dst.shape[0]):
            b = np.int64(b_u)  # prange indices are uint64; int64 like the serial twin
            _swap_rows(src, dst, b)


__all__ = [
    "CELLS",
    "GRU",
    "LSTM",
    "RNN_RELU",
    "RNN_TANH",
    "column_sums",
    "gemm_tiled",
    "recurrent_backward",
    "recurrent_forward",
    "swap_leading_axes",
]

#: the functions the object layer calls (fastnn.backend.kernels); the CUDA twin module has them too
DEVICE_API = ("recurrent_forward", "recurrent_backward", "swap_leading_axes")
