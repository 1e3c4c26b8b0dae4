"""Counter-based RNG: uniformity, independence, determinism across thread counts, dtypes."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from numba import njit
from scipy import stats

from fastnn.kernels import rng

N = 200_000  # above PARALLEL_MIN_ELEMENTS: the parallel path


def _uniform(n, dtype, seed=0, stream=0, step=0, low=0.0, high=1.0):
    out = np.full(n, np.nan, dtype)
    rng.fill_uniform(out, seed, stream, step, low, high)
    return out


def _normal(n, dtype, seed=0, stream=0, step=0, mean=0.0, std=1.0):
    out = np.full(n, np.nan, dtype)
    rng.fill_normal(out, seed, stream, step, mean, std)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_uniform_moments_range_and_chi_square(dtype):
    u = _uniform(N, dtype, seed=7, stream=3, step=11)
    assert u.dtype == dtype
    assert u.min() >= 0.0 and u.max() < 1.0
    se_mean = np.sqrt(1 / 12 / N)
    assert abs(u.mean() - 0.5) < 5 * se_mean
    assert abs(u.var() - 1 / 12) < 5 * np.sqrt(1 / 180 / N)  # var of (u - 1/2)^2 is 1/180
    counts, _ = np.histogram(u, bins=64, range=(0.0, 1.0))
    assert stats.chisquare(counts).pvalue > 1e-4


def test_uniform_range_scaled_and_small_sizes():
    u = _uniform(1001, np.float64, low=-3.0, high=5.0)  # serial path, odd size
    assert u.min() >= -3.0 and u.max() <= 5.0 and u.max() > 4.9 and u.min() < -2.9
    np.testing.assert_array_equal(_uniform(0, np.float32), np.empty(0, np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normal_moments_and_shape(dtype):
    z = _normal(N + 1, dtype, seed=1, stream=2, step=3, mean=0.0, std=1.0)  # odd length: last pair half used
    assert z.dtype == dtype and np.isfinite(z).all()
    assert abs(z.mean()) < 5 / np.sqrt(N)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / N)
    assert stats.kstest(z.astype(np.float64), "norm").pvalue > 1e-4
    shifted = _normal(1001, dtype, seed=1, stream=2, step=3, mean=2.0, std=0.5)
    np.testing.assert_allclose(shifted, 2.0 + 0.5 * z[:1001], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("counter", ["seed", "stream", "step"])
def test_neighbouring_counters_are_independent(counter):
    base = {"seed": 5, "stream": 9, "step": 100}
    other = dict(base, **{counter: base[counter] + 1})
    a = _uniform(N, np.float64, **base)
    b = _uniform(N, np.float64, **other)
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(N)
    assert np.mean(a == b) < 1e-4
    # consecutive elements of one draw are uncorrelated too
    assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 5 / np.sqrt(N)


def test_counter_order_matters():
    # (seed, stream, step) = (1, 2, 3) and (1, 3, 2) must not give the same numbers
    assert not np.array_equal(_uniform(64, np.float64, 1, 2, 3), _uniform(64, np.float64, 1, 3, 2))


def test_bit_identical_on_one_and_two_threads_and_serially():
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = (_uniform(N, np.float32), _normal(N, np.float64))
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = (_uniform(N, np.float32), _normal(N, np.float64))
    finally:
        numba.set_num_threads(threads)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    # the parallel fill equals the element-wise scalar functions
    idx = np.array([0, 1, 2, 4095, 4096, 65_537, N - 1])

    @njit
    def scalars(idx):
        u = np.empty(idx.size, np.float32)
        z = np.empty(idx.size, np.float64)
        for k in range(idx.size):
            u[k] = rng.uniform(0, 0, 0, idx[k], u)
            z[k] = rng.normal(0, 0, 0, idx[k], z)
        return u, z

    u, z = scalars(idx)
    np.testing.assert_array_equal(u, one[0][idx])
    np.testing.assert_array_equal(z, one[1][idx])


def test_hash_is_uint64_and_matches_pure_python():
    mask = (1 << 64) - 1

    def mix(z):
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    def hash_py(seed, stream, step, index):
        k = mix(mix(mix((seed & mask) ^ 0x243F6A8885A308D3) ^ stream) ^ step)
        return mix((k + (index + 1) * 0x9E3779B97F4A7C15) & mask)

    @njit
    def hashes(seed, stream, step, n):
        out = np.empty(n, np.uint64)
        for i in range(n):
            out[i] = rng.hash64(seed, stream, step, i)
        return out

    got = hashes(-1, 2, 3, 5)  # a negative seed wraps modulo 2**64
    assert got.dtype == np.uint64
    assert [int(v) for v in got] == [hash_py(-1, 2, 3, i) for i in range(5)]


def test_uniform_uses_24_or_53_bits():
    @njit
    def draw(ref):
        return rng.uniform(1, 2, 3, 4, ref)

    bits = int(rng.hash64(1, 2, 3, 4))
    assert draw(np.float32(0)) == np.float32((bits >> 40) / 2**24)
    assert draw(0.0) == (bits >> 11) / 2**53
    return_types = {sig[0]: draw.overloads[sig].signature.return_type for sig in draw.signatures}
    assert return_types == {numba.float32: numba.float32, numba.float64: numba.float64}


def test_permutation_is_a_deterministic_shuffle():
    n = 10_001
    out = np.empty(n, np.int64)
    rng.permutation(n, 3, 0, 1, out)
    assert np.array_equal(np.sort(out), np.arange(n))
    again = np.empty(n, np.int64)
    rng.permutation(n, 3, 0, 1, again)
    np.testing.assert_array_equal(out, again)
    other = np.empty(n, np.int64)
    rng.permutation(n, 3, 0, 2, other)  # the next epoch
    assert np.mean(out == other) < 0.01
    # position of element 0 is uniform over many seeds (chi-square on 10 cells)
    positions = np.empty(4000, np.int64)
    small = np.empty(10, np.int64)
    for s in range(positions.size):
        rng.permutation(10, s, 0, 0, small)
        positions[s] = np.flatnonzero(small == 0)[0]
    assert stats.chisquare(np.bincount(positions, minlength=10)).pvalue > 1e-4


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 2, 7, 4097, rng.NUMPY_BLOCK - 1, rng.NUMPY_BLOCK + 1, N + 3])
def test_numpy_fills_give_the_kernels_values(dtype, n):
    # the initialisers' NumPy fills (fastnn.init picks them below PARALLEL_FILL_MIN: nothing to compile)
    want, got = np.full(n, np.nan, dtype), np.full(n, np.nan, dtype)
    rng.fill_uniform(want, 5, 9, 2, -2.0, 3.0)
    rng.fill_uniform_numpy(got, 5, 9, 2, -2.0, 3.0)
    assert got.dtype == dtype and got.tobytes() == want.tobytes()  # integer hashing, exact scaling: the same bits
    rng.fill_normal(want, 5, 9, 2, 0.5, 2.0)
    rng.fill_normal_numpy(got, 5, 9, 2, 0.5, 2.0)
    # the same Box-Muller of the same uniforms; NumPy's log/cos/sin round unlike libm's: a few ulps
    ulp = np.finfo(dtype).eps
    assert got.dtype == dtype and np.all(np.abs(got - want) <= 8 * ulp * (1 + np.abs(want))), np.abs(got - want).max()


def test_numpy_key_and_hash_equal_the_kernels():
    for seed, stream, step in ((0, 0, 0), (-1, 2**63 + 5, 1 << 62), (12345, 7, 3)):
        key = rng.key64_numpy(seed, stream, step)
        assert key == rng.key64(np.uint64(seed % 2**64), np.uint64(stream), np.uint64(step))
        bits = rng.hash_numpy(key, 3, 40)
        assert bits.dtype == np.uint64 and list(bits) == [rng.hash_at(key, i) for i in range(3, 40)]
