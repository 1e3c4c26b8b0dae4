"""Float64 NumPy references for the attention and sequence kernels.

Plain NumPy, no numba, no fastnn. x is (batch, time, embed); weights in torch's layout (in_proj
(3E, E), out_proj (E, E)); ``lengths`` None or (batch,) valid leading steps. The backward uses
the step-by-step chain rule through the softmax (the Jacobian diag(p) - p p^T per row).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "attention_backward",
    "attention_forward",
    "last_step",
    "positional_encoding",
    "time_mean",
    "valid_step_mask",
]


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def valid_step_mask(lengths, batch, steps):
    """(batch, steps) bool: step t of sample b is valid (t < lengths[b]; all valid without lengths)."""
    if lengths is None:
        return np.ones((batch, steps), bool)
    return np.arange(steps)[None, :] < np.clip(np.asarray(lengths), 0, steps)[:, None]


def _split_heads(a, heads):
    b, t, e = a.shape
    return a.reshape(b, t, heads, e // heads).transpose(0, 2, 1, 3)  # (B, H, T, d)


def _merge_heads(a):
    b, h, t, d = a.shape
    return a.transpose(0, 2, 1, 3).reshape(b, t, h * d)


def attention_forward(x, w_in, b_in, w_out, b_out, heads, causal=False, lengths=None, keep=None):
    """Multi-head self-attention: returns (y, probs, probs_drop, context).

    probs (B, H, T, T) softmax over the attended keys (0 elsewhere); ``keep`` (B, H, T, T) the
    dropout factors (0 or 1/(1-p)) applied to probs, or None; y is 0 at padded steps.
    """
    x = _f64(x)
    batch, steps, embed = x.shape
    qkv = x @ _f64(w_in).T + _f64(b_in)
    q, k, v = (_split_heads(qkv[..., i * embed : (i + 1) * embed], heads) for i in range(3))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(embed // heads)
    valid = valid_step_mask(lengths, batch, steps)
    allowed = np.broadcast_to(valid[:, None, None, :], scores.shape).copy()
    if causal:
        allowed &= np.tril(np.ones((steps, steps), bool))
    scores = np.where(allowed, scores, -np.inf)
    top = np.max(scores, axis=-1, keepdims=True)
    e = np.where(allowed, np.exp(scores - np.where(np.isfinite(top), top, 0.0)), 0.0)
    total = e.sum(axis=-1, keepdims=True)
    probs = np.divide(e, total, out=np.zeros_like(e), where=total > 0)
    probs_drop = probs if keep is None else probs * _f64(keep)
    context = _merge_heads(probs_drop @ v)
    y = (context @ _f64(w_out).T + _f64(b_out)) * valid[..., None]
    return y, probs, probs_drop, context


def attention_backward(x, w_in, b_in, w_out, heads, probs, probs_drop, grad_y, lengths=None):
    """Gradients (grad_x, grad_w_in, grad_b_in, grad_w_out, grad_b_out) given the forward's probs
    and probs_drop (dropout: grad of probs = grad of probs_drop * probs_drop / probs where probs > 0)."""
    x, probs, probs_drop = _f64(x), _f64(probs), _f64(probs_drop)
    batch, steps, embed = x.shape
    d = embed // heads
    valid = valid_step_mask(lengths, batch, steps)
    qkv = x @ _f64(w_in).T + _f64(b_in)
    q, k, v = (_split_heads(qkv[..., i * embed : (i + 1) * embed], heads) for i in range(3))
    context = _merge_heads(probs_drop @ v)
    grad_z = _f64(grad_y) * valid[..., None]
    grad_w_out = np.einsum("bti,btj->ij", grad_z, context)
    grad_b_out = grad_z.sum(axis=(0, 1))
    grad_o = _split_heads(grad_z @ _f64(w_out), heads)
    grad_v = probs_drop.transpose(0, 1, 3, 2) @ grad_o
    grad_pd = grad_o @ v.transpose(0, 1, 3, 2)
    factor = np.divide(probs_drop, probs, out=np.zeros_like(probs), where=probs > 0)
    grad_p = grad_pd * factor
    grad_s = probs * (grad_p - np.sum(grad_p * probs, axis=-1, keepdims=True)) / math.sqrt(d)
    grad_q = grad_s @ k
    grad_k = grad_s.transpose(0, 1, 3, 2) @ q
    grad_qkv = np.concatenate([_merge_heads(g) for g in (grad_q, grad_k, grad_v)], axis=-1)
    grad_w_in = np.einsum("bti,btj->ij", grad_qkv, x)
    grad_b_in = grad_qkv.sum(axis=(0, 1))
    grad_x = grad_qkv @ _f64(w_in)
    return grad_x, grad_w_in, grad_b_in, grad_w_out, grad_b_out


def positional_encoding(steps, features):
    """pe[t, 2i] = sin(t / 10000^(2i / features)), pe[t, 2i + 1] = cos(t / 10000^(2i / features)), by loops."""
    pe = np.zeros((steps, features))
    for t in range(steps):
        for j in range(features):
            angle = t / 10000.0 ** ((j - j % 2) / features)
            pe[t, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
    return pe


def last_step(x, lengths=None):
    """x[b, lengths[b] - 1] per sample (0 for length 0); x[:, -1] without lengths."""
    x = _f64(x)
    n = valid_step_mask(lengths, x.shape[0], x.shape[1]).sum(axis=1)
    return np.stack([x[b, n[b] - 1] if n[b] else np.zeros(x.shape[2]) for b in range(x.shape[0])])


def time_mean(x, lengths=None):
    """Mean over each sample's valid steps (0 for length 0)."""
    x = _f64(x)
    valid = valid_step_mask(lengths, x.shape[0], x.shape[1])
    n = valid.sum(axis=1, keepdims=True)
    return np.divide((x * valid[..., None]).sum(axis=1), n, out=np.zeros((x.shape[0], x.shape[2])), where=n > 0)
