"""Attention and sequence kernels against the float64 references, finite differences and thread counts."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from fastnn.kernels.attention import (
    add_positional,
    attention_backward,
    attention_forward,
    partials_shape,
    positional_table,
)
from fastnn.kernels.sequence import last_step_backward, last_step_forward, time_mean_backward, time_mean_forward
from tests import reference as ref
from tests._gradcheck import numeric_gradients

TOL = {np.float32: {"rtol": 2e-4, "atol": 2e-5}, np.float64: {"rtol": 1e-10, "atol": 1e-12}}
NO_LENGTHS = np.zeros(0, np.int64)

SHAPES = [  # (batch, time, embed, heads, causal, lengths)
    (3, 5, 6, 3, False, None),
    (3, 5, 6, 2, True, [5, 2, 0]),
    (1, 1, 4, 1, False, None),
    (2, 7, 4, 2, False, [3, 7]),
    (1, 4, 3, 1, True, None),
]


def _params(embed, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [
        rng.uniform(-1, 1, shape).astype(dtype)
        for shape in ((3 * embed, embed), (3 * embed,), (embed, embed), (embed,))
    ]


def _lengths(lengths):
    return NO_LENGTHS if lengths is None else np.asarray(lengths, np.int64)


def _forward(x, params, heads, causal, lengths, p=0.0, seed=0, counter=None):
    batch, steps, embed = x.shape
    dtype = x.dtype
    bufs = {
        "qkv": np.full((batch * steps, 3 * embed), np.nan, dtype),
        "probs": np.full((batch * heads, steps, steps), np.nan, dtype),
        "context": np.full((batch * steps, embed), np.nan, dtype),
        "y": np.full((batch * steps, embed), np.nan, dtype),
    }
    bufs["probs_drop"] = np.full_like(bufs["probs"], np.nan) if p > 0 else bufs["probs"]
    counter = np.zeros(1, np.int64) if counter is None else counter
    attention_forward(
        x.reshape(-1, embed),
        *params,
        bufs["qkv"],
        bufs["probs"],
        bufs["probs_drop"],
        bufs["context"],
        bufs["y"],
        _lengths(lengths),
        heads,
        causal,
        p,
        seed,
        7,
        counter,
    )
    return bufs


def _backward(x, params, heads, lengths, bufs, grad_y, need_grad_x=True):
    batch, steps, embed = x.shape
    dtype = x.dtype
    w_in, _, w_out, _ = params
    out = {"grad_x": np.full((batch * steps, embed), np.nan, dtype)}
    out.update(
        {
            name: np.full(p.shape, np.nan, dtype)
            for name, p in zip(("grad_w_in", "grad_b_in", "grad_w_out", "grad_b_out"), params)
        }
    )
    scratch = [
        np.full((batch * steps, embed), np.nan, dtype),
        np.full((batch * steps, embed), np.nan, dtype),
        np.full(bufs["probs"].shape, np.nan, dtype),
        np.full((batch * steps, 3 * embed), np.nan, dtype),
    ]
    attention_backward(
        x.reshape(-1, embed),
        w_in,
        w_out,
        bufs["qkv"],
        bufs["probs"],
        bufs["probs_drop"],
        bufs["context"],
        grad_y.reshape(-1, embed),
        _lengths(lengths),
        *scratch,
        out["grad_x"],
        out["grad_w_in"],
        out["grad_b_in"],
        out["grad_w_out"],
        out["grad_b_out"],
        np.full(partials_shape(batch * steps, embed), np.nan, dtype),
        heads,
        need_grad_x,
    )
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("batch", "steps", "embed", "heads", "causal", "lengths"), SHAPES)
def test_attention_matches_reference(dtype, batch, steps, embed, heads, causal, lengths):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, steps, embed)).astype(dtype)
    grad_y = rng.standard_normal((batch, steps, embed)).astype(dtype)
    params = _params(embed, dtype)
    bufs = _forward(x, params, heads, causal, lengths)
    y, probs, _, _ = ref.attention_forward(x, *params, heads, causal, lengths)
    np.testing.assert_allclose(bufs["y"].reshape(y.shape), y, **TOL[dtype])
    np.testing.assert_allclose(bufs["probs"].reshape(probs.shape), probs, **TOL[dtype])
    grads = _backward(x, params, heads, lengths, bufs, grad_y)
    expected = ref.attention_backward(x, params[0], params[1], params[2], heads, probs, probs, grad_y, lengths)
    for name, want in zip(("grad_x", "grad_w_in", "grad_b_in", "grad_w_out", "grad_b_out"), expected):
        assert grads[name].dtype == dtype
        np.testing.assert_allclose(grads[name].reshape(want.shape), want, err_msg=name, **TOL[dtype])
    valid = ref.valid_step_mask(lengths, batch, steps)
    assert not grads["grad_x"].reshape(x.shape)[~valid].any()  # padded inputs get no gradient


@pytest.mark.parametrize(("causal", "lengths"), [(False, None), (True, [3, 1])])
def test_attention_gradients_match_finite_differences(causal, lengths):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4))
    params = _params(4, np.float64, seed=3)
    weights = rng.standard_normal((2, 3, 4))

    def objective(x, *params):
        return float(np.sum(_forward(x, params, 2, causal, lengths)["y"].reshape(x.shape) * weights))

    numeric = numeric_gradients(objective, [x, *params])
    bufs = _forward(x, params, 2, causal, lengths)
    grads = _backward(x, params, 2, lengths, bufs, weights)
    for name, want in zip(("grad_x", "grad_w_in", "grad_b_in", "grad_w_out", "grad_b_out"), numeric):
        np.testing.assert_allclose(grads[name].reshape(want.shape), want, rtol=1e-6, atol=1e-8, err_msg=name)


def test_attention_dropout_keeps_probabilities_scaled_and_matches_reference():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 16, 8))
    params = _params(8, np.float64)
    counter = np.zeros(1, np.int64)
    p = 0.25
    bufs = _forward(x, params, 2, False, [16, 9, 1, 12], p=p, counter=counter)
    again = _forward(x, params, 2, False, [16, 9, 1, 12], p=p, counter=np.zeros(1, np.int64))
    np.testing.assert_array_equal(bufs["probs_drop"], again["probs_drop"])  # the same step: the same mask
    assert counter[0] == 1
    probs, drop = bufs["probs"], bufs["probs_drop"]
    live = probs > 0
    factor = drop[live] / probs[live]
    kept = factor != 0
    np.testing.assert_allclose(factor[kept], 1 / (1 - p), rtol=1e-12)
    assert abs(kept.mean() - (1 - p)) < 0.05
    keep = np.divide(drop, probs, out=np.zeros_like(drop), where=live).reshape(4, 2, 16, 16)
    lengths = [16, 9, 1, 12]
    y, _, _, _ = ref.attention_forward(x, *params, 2, False, lengths, keep=keep)
    np.testing.assert_allclose(bufs["y"].reshape(y.shape), y, rtol=1e-10, atol=1e-12)
    grad_y = rng.standard_normal(x.shape)
    grads = _backward(x, params, 2, lengths, bufs, grad_y)
    expected = ref.attention_backward(
        x, params[0], params[1], params[2], 2, probs.reshape(4, 2, 16, 16), drop.reshape(4, 2, 16, 16), grad_y, lengths
    )
    for name, want in zip(("grad_x", "grad_w_in", "grad_b_in", "grad_w_out", "grad_b_out"), expected):
        np.testing.assert_allclose(grads[name].reshape(want.shape), want, rtol=1e-10, atol=1e-12, err_msg=name)
    other = _forward(x, params, 2, False, lengths, p=p, counter=counter)  # the next step draws another mask
    assert not np.array_equal(other["probs_drop"], drop)


def test_attention_is_bit_identical_on_one_and_two_threads():
    """Shapes large enough for the parallel paths (projections and heads)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 32, 64)).astype(np.float32)
    params = _params(64, np.float32)
    grad_y = rng.standard_normal(x.shape).astype(np.float32)
    lengths = rng.integers(0, 33, 8)
    results = []
    before = numba.get_num_threads()
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            bufs = _forward(x, params, 4, True, lengths, p=0.1)
            results.append((bufs, _backward(x, params, 4, lengths, bufs, grad_y)))
    finally:
        numba.set_num_threads(before)
    (f1, b1), (f2, b2) = results
    for name in f1:
        np.testing.assert_array_equal(f1[name], f2[name], err_msg=name)
    for name in b1:
        np.testing.assert_array_equal(b1[name], b2[name], err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("steps", "features"), [(1, 1), (7, 6), (5, 5)])
def test_positional_encoding_matches_reference(dtype, steps, features):
    table = positional_table(steps, features)
    np.testing.assert_allclose(table, ref.positional_encoding(steps, features), rtol=1e-12, atol=1e-12)
    x = np.random.default_rng(6).standard_normal((3, steps * features)).astype(dtype)
    y = np.full_like(x, np.nan)
    add_positional(x, table.astype(dtype).reshape(-1), y)
    np.testing.assert_allclose(y, x + table.reshape(-1), **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lengths", [None, [4, 1, 0]])
@pytest.mark.parametrize(
    ("kernels", "reference"),
    [
        ((last_step_forward, last_step_backward), ref.last_step),
        ((time_mean_forward, time_mean_backward), ref.time_mean),
    ],
    ids=["last_step", "time_mean"],
)
def test_sequence_kernels_match_reference(dtype, lengths, kernels, reference):
    forward, backward = kernels
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 4, 5)).astype(dtype)
    y = np.full((3, 5), np.nan, dtype)
    forward(x, _lengths(lengths), y)
    np.testing.assert_allclose(y, reference(x, lengths), **TOL[dtype])
    grad_y = rng.standard_normal((3, 5)).astype(dtype)
    grad_x = np.full_like(x, np.nan)
    backward(grad_y, _lengths(lengths), grad_x)
    # the maps are linear: the gradient is the adjoint, <grad_y, f(e_i)> for each unit input e_i
    jac = np.stack([reference(e.reshape(x.shape), lengths).reshape(-1) for e in np.eye(x.size)])
    np.testing.assert_allclose(grad_x.reshape(-1), jac @ grad_y.reshape(-1).astype(np.float64), **TOL[dtype])


def test_attention_forward_from_draws_the_masks_of_the_whole_batch():
    """A shard of samples numbered from first_row gets the dropout masks (and outputs) its samples
    get in the whole batch (fastnn.distributed's ranks equal one process); first_row 0 is
    attention_forward's draw; the counter advances once."""
    from fastnn.kernels.attention import attention_forward_from

    batch, steps, embed, heads, first, p = 5, 4, 6, 2, 3, 0.3
    x = np.random.default_rng(5).standard_normal((batch, steps, embed))
    params = _params(embed, np.float64)
    lengths = np.array([4, 2, 3, 1, 4], np.int64)
    whole = _forward(x, params, heads, False, lengths, p=p, seed=1, counter=np.array([2], np.int64))
    part = x[first:]
    bufs = _forward(part, params, heads, False, lengths[first:], p=p, seed=1)  # buffers of the shard's shapes
    counter = np.array([2], np.int64)
    names = ("qkv", "probs", "probs_drop", "context", "y")
    attention_forward_from(
        part.reshape(-1, embed), *params, *(bufs[n] for n in names), lengths[first:], heads, False, p, 1, 7, counter,
        np.array([first], np.int64),
    )  # fmt: skip
    assert counter[0] == 3
    np.testing.assert_array_equal(bufs["probs_drop"] == 0, whole["probs_drop"][first * heads :] == 0)
    assert (whole["probs_drop"][first * heads :] == 0).any()
    np.testing.assert_allclose(bufs["y"], whole["y"][first * steps :], rtol=1e-12, atol=1e-14)
