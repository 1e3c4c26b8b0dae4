"""Float64 NumPy references of the recurrent cells (RNN tanh/relu, LSTM, GRU): one layer, one
direction, batch-first as torch with ``batch_first=True``, with optional sequence lengths.

Plain NumPy, no numba, no fastnn. The backward is backpropagation through time written step by
step from the forward's saved values (the chain rule through each gate, not the kernels' fused
formulas). Gate order and parameter shapes as torch: w_ih (G*H, I), w_hh (G*H, H), b_ih, b_hh (G*H,).
"""

from __future__ import annotations

import numpy as np

__all__ = ["GATES", "recurrent_layer_backward", "recurrent_layer_forward"]

#: gates per hidden unit of each cell
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _order(steps, reverse):
    return range(steps - 1, -1, -1) if reverse else range(steps)


def recurrent_layer_forward(x, w_ih, w_hh, b_ih, b_hh, h0, c0, cell, reverse=False, lengths=None):
    """(y (B, T, H) with zeros at padded steps, h_n (B, H), c_n (B, H) or None, cache).

    x (B, T, I); h0, c0 (B, H) (c0 only for "lstm"); ``lengths`` (B,) valid leading steps (None: all);
    ``reverse``: each sample runs from its last valid step down to step 0.
    """
    x, w_ih, w_hh, b_ih, b_hh = map(_f64, (x, w_ih, w_hh, b_ih, b_hh))
    batch, steps, _ = x.shape
    hidden = w_hh.shape[1]
    lengths = np.full(batch, steps) if lengths is None else np.asarray(lengths)
    y = np.zeros((batch, steps, hidden))
    h_n, c_n = _f64(h0).copy(), None if c0 is None else _f64(c0).copy()
    steps_saved = {}
    for b in range(batch):
        h = h_n[b].copy()
        c = None if c_n is None else c_n[b].copy()
        for t in _order(lengths[b], reverse):
            xs = w_ih @ x[b, t] + b_ih
            hs = w_hh @ h + b_hh
            saved = {"h_prev": h.copy(), "c_prev": None if c is None else c.copy()}
            if cell == "lstm":
                i, f, g, o = np.split(xs + hs, 4)
                i, f, g, o = _sigmoid(i), _sigmoid(f), np.tanh(g), _sigmoid(o)
                c = f * c + i * g
                h = o * np.tanh(c)
                saved.update(i=i, f=f, g=g, o=o, c=c.copy())
            elif cell == "gru":
                xr, xz, xn = np.split(xs, 3)
                hr, hz, hn = np.split(hs, 3)
                r, z = _sigmoid(xr + hr), _sigmoid(xz + hz)
                n = np.tanh(xn + r * hn)
                h = (1.0 - z) * n + z * h
                saved.update(r=r, z=z, n=n, hn=hn)
            else:
                pre = xs + hs
                h = np.tanh(pre) if cell == "rnn_tanh" else np.maximum(pre, 0.0)
                saved.update(pre=pre)
            y[b, t] = h
            steps_saved[b, t] = saved
        h_n[b] = h
        if c_n is not None:
            c_n[b] = c
    cache = dict(x=x, w_ih=w_ih, w_hh=w_hh, cell=cell, reverse=reverse, lengths=lengths, steps=steps_saved)
    return y, h_n, c_n, cache


def recurrent_layer_backward(cache, grad_y, grad_h_n, grad_c_n=None):
    """(grad_x (B, T, I), {"w_ih", "w_hh", "b_ih", "b_hh"}: gradients, grad_h0 (B, H), grad_c0 or None).

    ``grad_y`` (B, T, H) (padded steps ignored), ``grad_h_n``/``grad_c_n`` (B, H): d loss / d outputs.
    """
    x, w_ih, w_hh, cell = cache["x"], cache["w_ih"], cache["w_hh"], cache["cell"]
    grad_y = _f64(grad_y)
    batch = x.shape[0]
    grads = {
        "w_ih": np.zeros_like(w_ih),
        "w_hh": np.zeros_like(w_hh),
        "b_ih": np.zeros(w_ih.shape[0]),
        "b_hh": np.zeros(w_ih.shape[0]),
    }
    grad_x = np.zeros_like(x)
    grad_h0 = np.zeros_like(_f64(grad_h_n))
    grad_c0 = None if cell != "lstm" else np.zeros_like(grad_h0)
    for b in range(batch):
        dh = _f64(grad_h_n)[b].copy()
        dc = None if cell != "lstm" else _f64(grad_c_n)[b].copy()
        for t in reversed(list(_order(cache["lengths"][b], cache["reverse"]))):
            s = cache["steps"][b, t]
            dh = dh + grad_y[b, t]
            if cell == "lstm":
                i, f, g, o, c = s["i"], s["f"], s["g"], s["o"], s["c"]
                do = dh * np.tanh(c)
                dc = dc + dh * o * (1.0 - np.tanh(c) ** 2)
                di, df, dg = dc * g, dc * s["c_prev"], dc * i
                d_x = d_h = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g**2), do * o * (1 - o)])
                dc = dc * f
                direct = 0.0
            elif cell == "gru":
                r, z, n, hn = s["r"], s["z"], s["n"], s["hn"]
                dn = dh * (1.0 - z)
                dz = dh * (s["h_prev"] - n)
                dpn = dn * (1.0 - n**2)
                dr = dpn * hn
                dpr, dpz = dr * r * (1 - r), dz * z * (1 - z)
                d_x = np.concatenate([dpr, dpz, dpn])
                d_h = np.concatenate([dpr, dpz, dpn * r])
                direct = dh * z
            else:
                slope = 1.0 - np.tanh(s["pre"]) ** 2 if cell == "rnn_tanh" else (s["pre"] > 0).astype(float)
                d_x = d_h = dh * slope
                direct = 0.0
            grads["w_ih"] += np.outer(d_x, x[b, t])
            grads["b_ih"] += d_x
            grads["w_hh"] += np.outer(d_h, s["h_prev"])
            grads["b_hh"] += d_h
            grad_x[b, t] = w_ih.T @ d_x
            dh = w_hh.T @ d_h + direct
        grad_h0[b] = dh
        if grad_c0 is not None:
            grad_c0[b] = dc
    return grad_x, grads, grad_h0, grad_c0
