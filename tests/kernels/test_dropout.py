"""Inverted dropout kernels: mask statistics, scaling, backward, determinism, p = 0."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from fastnn.kernels.dropout import dropout_backward, dropout_forward, mask_bytes
from fastnn.kernels.rng import hash64
from tests import _reference_norm as ref


def _forward(x, p, seed=0, stream=0, step=0):
    out = np.full_like(x, np.nan)
    mask = np.full((x.shape[0], mask_bytes(x.shape[1])), 0xAA, np.uint8)
    dropout_forward(x, out, mask, p, seed, stream, step)
    return out, mask


def _backward(grad_out, mask, p):
    grad_in = np.full_like(grad_out, np.nan)
    dropout_backward(grad_out, mask, grad_in, p)
    return grad_in


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 5), (7, 13), (300, 301)])  # batch 1, odd, parallel path
def test_matches_reference_and_keeps_dtype(shape, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    p = 0.3
    out, mask = _forward(x, p, seed=4, stream=1, step=2)
    keep = ref.unpack_mask(mask, shape[1])
    assert out.dtype == dtype
    np.testing.assert_allclose(out, ref.dropout_forward(x, keep, p), rtol=1e-6, atol=0)
    # padding bits of the last byte of each row are zero
    assert not np.unpackbits(mask, axis=1, bitorder="little")[:, shape[1] :].any()
    grad = rng.standard_normal(shape).astype(dtype)
    grad_in = _backward(grad, mask, p)
    assert grad_in.dtype == dtype
    np.testing.assert_allclose(grad_in, ref.dropout_backward(grad, keep, p), rtol=1e-6, atol=0)
    assert np.all(grad_in[~keep] == 0)


@pytest.mark.parametrize("features", [1, 7, 8, 9, 10, 16, 17, 63, 64, 65])  # whole bytes packed by a multiply
def test_mask_follows_the_documented_hash(features):
    x = np.ones((3, features))
    p = 0.5
    out, mask = _forward(x, p, seed=9, stream=8, step=7)
    keep = ref.unpack_mask(mask, features)
    want = np.array(
        [[(int(hash64(9, 8, 7, i * features + j)) >> 32) >= p * 2**32 for j in range(features)] for i in range(3)]
    )
    np.testing.assert_array_equal(keep, want)
    np.testing.assert_array_equal(out, np.where(want, 2.0, 0.0))
    assert not np.unpackbits(mask, axis=1, bitorder="little")[:, features:].any()


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_kept_fraction_and_expected_activation(p):
    x = np.full((512, 512), 2.0, np.float32)
    out, mask = _forward(x, p, seed=1)
    keep = ref.unpack_mask(mask, 512)
    n = x.size
    assert abs(keep.mean() - (1 - p)) < 5 * np.sqrt(p * (1 - p) / n)
    # inverted dropout: E[out] = x
    assert abs(out.mean() - 2.0) < 5 * 2.0 * np.sqrt(p / (1 - p) / n)
    np.testing.assert_array_equal(out != 0, keep)


def test_p_zero_is_an_exact_identity():
    x = np.random.default_rng(1).standard_normal((33, 17)).astype(np.float32)
    x[0, 0] = np.float32(1e-38)  # subnormal-adjacent values pass through unchanged
    out, mask = _forward(x, 0.0)
    np.testing.assert_array_equal(out, x)
    grad = _backward(x, mask, 0.0)
    np.testing.assert_array_equal(grad, x)


def test_in_place_backward():
    x = np.random.default_rng(2).standard_normal((20, 9))
    _, mask = _forward(x, 0.4, seed=3)
    g = x.copy()
    want_g = _backward(x, mask, 0.4)
    dropout_backward(g, mask, g, 0.4)
    np.testing.assert_array_equal(g, want_g)


def test_steps_streams_and_seeds_give_different_masks():
    x = np.ones((64, 64), np.float32)
    base = _forward(x, 0.5, seed=0, stream=0, step=0)[1]
    for counters in [(1, 0, 0), (0, 1, 0), (0, 0, 1)]:
        other = _forward(x, 0.5, *counters)[1]
        agree = np.mean(ref.unpack_mask(base, 64) == ref.unpack_mask(other, 64))
        assert 0.45 < agree < 0.55  # independent masks agree on about half the units
    np.testing.assert_array_equal(base, _forward(x, 0.5)[1])


def test_same_mask_on_one_and_two_threads_and_any_dtype():
    x = np.random.default_rng(3).standard_normal((256, 515)).astype(np.float32)  # parallel path
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _forward(x, 0.2, seed=5, step=9)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = _forward(x, 0.2, seed=5, step=9)
        grads = _backward(x, one[1], 0.2)
    finally:
        numba.set_num_threads(threads)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    # the serial path (small input) draws the same mask for the same element indices
    small = _forward(x[:100, :].copy(), 0.2, seed=5, step=9)[1]
    np.testing.assert_array_equal(small, one[1][:100])
    # float64 input: same mask
    np.testing.assert_array_equal(_forward(x.astype(np.float64), 0.2, seed=5, step=9)[1], one[1])
    np.testing.assert_array_equal(grads, _backward(x, one[1], 0.2))


def test_matches_torch_statistics():
    torch = pytest.importorskip("torch")
    x = np.ones((256, 512), np.float32)
    out, _ = _forward(x, 0.2, seed=11)
    t = torch.nn.functional.dropout(torch.from_numpy(x), 0.2, training=True).numpy()
    # different generators: same scale of kept units, kept fractions within tolerance of each other
    assert set(np.unique(out)) == set(np.unique(t)) == {np.float32(0), np.float32(1 / 0.8)}
    assert abs((out != 0).mean() - (t != 0).mean()) < 0.01


@pytest.mark.parametrize("shape, first_row", [((9, 13), 5), ((300, 301), 123)])  # serial and parallel paths
def test_counted_from_draws_the_rows_of_the_whole_batch(shape, first_row):
    """A shard of rows [first_row, first_row + m) of a batch gets the masks those rows get in the
    whole batch (fastnn.distributed's ranks together equal one process), and advances the counter."""
    from fastnn.kernels.dropout import dropout_forward_counted_from

    x = np.random.default_rng(1).standard_normal(shape)
    whole, whole_mask = _forward(x, 0.4, seed=3, stream=2, step=7)
    part = x[first_row:]
    out, mask = np.empty_like(part), np.empty((part.shape[0], mask_bytes(shape[1])), np.uint8)
    counter = np.array([7], np.int64)
    dropout_forward_counted_from(part, out, mask, 0.4, 3, 2, counter, np.array([first_row], np.int64))
    np.testing.assert_array_equal(mask, whole_mask[first_row:])
    np.testing.assert_array_equal(out, whole[first_row:])
    assert counter[0] == 8


@pytest.mark.parametrize("steps, batch, features, first_row", [(3, 5, 7, 4), (4, 70, 240, 61)])  # serial, parallel
def test_steps_from_draws_the_masks_of_the_batch_major_samples(steps, batch, features, first_row):
    """Time-major sequences (steps, batch, features) draw at element (t, i, j) what element (i, t, j)
    of the batch-major input draws: a shard of samples numbered from first_row gets the masks its
    samples get in the whole batch (the recurrent layers' dropout under fastnn.distributed)."""
    from fastnn.kernels.dropout import dropout_forward_steps_from

    x = np.random.default_rng(2).standard_normal((steps, first_row + batch, features))
    whole = np.ascontiguousarray(x.transpose(1, 0, 2)).reshape(first_row + batch, steps * features)
    whole_out, _ = _forward(whole, 0.4, seed=3, stream=2, step=7)
    expected = whole_out.reshape(first_row + batch, steps, features)[first_row:].transpose(1, 0, 2)
    part = np.ascontiguousarray(x[:, first_row:])
    out, mask = np.empty_like(part), np.empty((steps * batch, mask_bytes(features)), np.uint8)
    counter = np.array([7], np.int64)
    dropout_forward_steps_from(part, out, mask, 0.4, 3, 2, counter, np.array([first_row], np.int64))
    np.testing.assert_array_equal(out, expected)
    kept = ref.unpack_mask(mask, features).reshape(steps, batch, features)
    np.testing.assert_array_equal(kept, expected != 0)
    assert 0.5 < kept.mean() < 0.7 and counter[0] == 8
    np.testing.assert_array_equal(
        _backward(part.reshape(steps * batch, features), mask, 0.4), out.reshape(mask.shape[0], -1)
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("features", [1, 7, 8, 9, 64, 515])
def test_serial_backward_gives_the_parallel_paths_bits(features, dtype):
    """The serial twin (its mask spread to flags first, so it vectorises) against the parallel path:
    the same rows of one large input, bit for bit, NaN, infinities, signed zeros and in place too."""
    from fastnn._config import PARALLEL_MIN_ELEMENTS

    rows = -(-PARALLEL_MIN_ELEMENTS // features)  # the parallel path for the whole input
    rng = np.random.default_rng(features)
    x = rng.standard_normal((rows, features)).astype(dtype)
    x.flat[:5] = [np.nan, np.inf, -np.inf, -0.0, 0.0]
    mask = rng.integers(0, 256, (rows, mask_bytes(features)), dtype=np.uint8)
    mask[:, -1] &= np.uint8((1 << (features - 8 * (mask_bytes(features) - 1))) - 1)  # padding bits 0
    whole = _backward(x, mask, 0.3)
    small = max(1, (PARALLEL_MIN_ELEMENTS - 1) // features)  # the serial path
    part = _backward(x[:small].copy(), mask[:small].copy(), 0.3)
    np.testing.assert_array_equal(part.view(np.uint8), whole[:small].view(np.uint8))
    in_place = x[:small].copy()
    dropout_backward(in_place, mask[:small], in_place, 0.3)
    np.testing.assert_array_equal(in_place.view(np.uint8), whole[:small].view(np.uint8))
    # a strided (non-contiguous) grad_out and grad_in
    strided_in, strided_out = np.zeros((small, 2 * features), dtype), np.zeros((small, 2 * features), dtype)
    strided_in[:, ::2] = x[:small]
    dropout_backward(strided_in[:, ::2], mask[:small], strided_out[:, ::2], 0.3)
    np.testing.assert_array_equal(
        np.ascontiguousarray(strided_out[:, ::2]).view(np.uint8), whole[:small].view(np.uint8)
    )
