"""Counter-based random numbers: a stateless hash of (seed, stream, step, element index).

Nothing is stored between calls, so the value drawn for element ``i`` depends on the four
counters only: the same seed gives bit-identical dropout masks, shuffles and initial weights on
1 or N threads, serially, and on CUDA, which calls these same scalar functions.

Scheme (SplitMix64): a per-call key ``k = mix(mix(mix(seed ^ A) ^ stream) ^ step)`` (``mix``
is SplitMix64's bijective finaliser), then element ``i`` draws ``mix(k + (i + 1) * GOLDEN)``:
the ``i``-th output of a SplitMix64 generator seeded with ``k``. All arithmetic is explicit
``np.uint64`` (in Numba ``uint64 + int`` gives int64 and shifts turn arithmetic; PERF_NOTES.md).

Conventions for callers: ``stream`` names the consumer (a parameter, a dropout layer, the
epoch shuffle) and must be unique in a model; ``step`` counts its calls (the training step,
the epoch). Floats: ``uniform`` in [0, 1) from the top 24 bits (float32) or 53 bits (float64);
``normal`` by Box-Muller on pairs of indices (``2p`` -> cosine branch, ``2p + 1`` -> sine
branch of the same two hashes), computed in the output dtype.

``fill_uniform_numpy`` and ``fill_normal_numpy`` compute the fills with NumPy, in blocks: no
compile, for the initialisers of a cold start (``fastnn.init``). The uniform one gives the kernel's
bits; the normal one the same Box-Muller of the same uniforms, but through NumPy's ``log``, ``cos``
and ``sin``, which round differently from the libm functions the kernels call (within a few ulps).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from .._config import JIT, JIT_EXACT, JIT_INLINE, JIT_PARALLEL, PARALLEL_MIN_ELEMENTS
from ._scalar import like, n_chunks, start_of

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_SEED_SALT = np.uint64(0x243F6A8885A308D3)  # digits of pi: seed 0 does not start from mix(0) = 0
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S32 = np.uint64(32)
_S40 = np.uint64(40)
_S11 = np.uint64(11)
_ONE = np.uint64(1)
_INV_2_24 = 1.0 / (1 << 24)
_INV_2_53 = 1.0 / (1 << 53)
_TWO_PI = 6.283185307179586
#: elements per chunk of the array kernels (elementwise: the chunking only spreads the work)
FILL_CHUNK = 4096


@njit(**JIT_INLINE)
def mix64(z):
    """SplitMix64's finaliser: a bijection of uint64 with full avalanche."""
    z = (z ^ (z >> _S30)) * _MUL1
    z = (z ^ (z >> _S27)) * _MUL2
    return z ^ (z >> _S31)


@njit(**JIT_INLINE)
def key64(seed, stream, step):
    """The per-call key of (seed, stream, step); integers of any width, taken modulo 2**64."""
    k = mix64(np.uint64(seed) ^ _SEED_SALT)
    k = mix64(k ^ np.uint64(stream))
    return mix64(k ^ np.uint64(step))


@njit(**JIT_INLINE)
def hash_at(key, index):
    """The 64 random bits of element ``index`` (>= 0) under ``key`` (from :func:`key64`)."""
    return mix64(key + (np.uint64(index) + _ONE) * GOLDEN)


@njit(**JIT_INLINE)
def hash64(seed, stream, step, index):
    """64 random bits (uint64) of element ``index`` for counters (seed, stream, step)."""
    return hash_at(key64(seed, stream, step), index)


def unit_float(bits, ref):
    """``bits`` (uint64) as a float in [0, 1) of ``ref``'s dtype: 24 top bits (float32) or 53."""
    if np.asarray(ref).dtype == np.float32:
        return np.float32(int(bits) >> 40) * np.float32(_INV_2_24)
    return np.float64(int(bits) >> 11) * _INV_2_53


@overload(unit_float, jit_options=dict(JIT_INLINE))
def _unit_float_overload(bits, ref):
    numba_type = ref.dtype if isinstance(ref, types.Array) else ref
    if numba_type == types.float32:

        def impl32(bits, ref):
            return np.float32(bits >> _S40) * np.float32(_INV_2_24)

        return impl32

    def impl64(bits, ref):
        return np.float64(bits >> _S11) * np.float64(_INV_2_53)

    return impl64


@njit(**JIT_INLINE)
def uniform_at(key, index, ref):
    """Uniform float in [0, 1) of ``ref``'s dtype for element ``index`` under ``key``."""
    return unit_float(hash_at(key, index), ref)


@njit(**JIT_INLINE)
def uniform(seed, stream, step, index, ref):
    """Uniform float in [0, 1) of the dtype of ``ref`` (array or scalar) for one element."""
    return uniform_at(key64(seed, stream, step), index, ref)


@njit(**JIT_INLINE)
def normal_pair_at(key, pair, ref):
    """Two independent standard normals (Box-Muller) from the hashes of indices 2*pair, 2*pair+1."""
    one = like(1.0, ref)
    u1 = uniform_at(key, 2 * pair, ref)
    u2 = uniform_at(key, 2 * pair + 1, ref)
    r = math.sqrt(like(-2.0, ref) * math.log(one - u1))  # 1 - u1 in (0, 1]: finite
    theta = like(_TWO_PI, ref) * u2
    return r * math.cos(theta), r * math.sin(theta)


@njit(**JIT_INLINE)
def normal_at(key, index, ref):
    """Standard normal of ``ref``'s dtype for element ``index`` under ``key``."""
    c, s = normal_pair_at(key, index >> 1, ref)
    return s if index & 1 else c


@njit(**JIT_INLINE)
def normal(seed, stream, step, index, ref):
    """Standard normal float of the dtype of ``ref`` for one element (see the module note)."""
    return normal_at(key64(seed, stream, step), index, ref)


# The fill loops compile without fastmath: ``low + span * u`` rounds twice, as NumPy computes it
# (an FMA would round once: fill_uniform_numpy's bits are the kernel's).
@njit(**JIT_EXACT)  # not inlined: one compiled body for the serial and parallel paths
def _fill_uniform_range(out, key, low, span, i0, i1):
    for i in range(i0, i1):
        out[i] = low + span * uniform_at(key, i, out)


@njit(**JIT_PARALLEL)
def fill_uniform(out, seed, stream, step, low, high):
    """out[i] = low + (high - low) * uniform(seed, stream, step, i) for the 1-D array ``out``.

    float32 or float64; values lie in [low, high) (``high`` itself only by rounding).
    """
    n = out.shape[0]
    key = key64(seed, stream, step)
    lo = like(low, out)
    span = like(high, out) - lo
    if n < PARALLEL_MIN_ELEMENTS:
        _fill_uniform_range(out, key, lo, span, start_of(n), n)
    else:
        for c_u in prange(n_chunks(n, FILL_CHUNK)):
            c = np.int64(c_u)  # prange indices are uint64; int64 like the serial twin
            _fill_uniform_range(out, key, lo, span, c * FILL_CHUNK, min(n, (c + 1) * FILL_CHUNK))


@njit(**JIT_EXACT)  # not inlined; no fastmath (above): libm's own log, cos, sin
def _fill_normal_pairs(out, key, mean, std, p0, p1):
    n = out.shape[0]
    for p in range(p0, p1):
        c, s = normal_pair_at(key, p, out)
        out[2 * p] = mean + std * c
        if 2 * p + 1 < n:
            out[2 * p + 1] = mean + std * s


@njit(**JIT_PARALLEL)
def fill_normal(out, seed, stream, step, mean, std):
    """out[i] = mean + std * normal(seed, stream, step, i) for the 1-D array ``out`` (float32/64)."""
    n = out.shape[0]
    pairs = (n + 1) // 2
    key = key64(seed, stream, step)
    mu = like(mean, out)
    sigma = like(std, out)
    chunk = FILL_CHUNK // 2
    if n < PARALLEL_MIN_ELEMENTS:
        _fill_normal_pairs(out, key, mu, sigma, start_of(pairs), pairs)
    else:
        for c_u in prange(n_chunks(pairs, chunk)):
            c = np.int64(c_u)  # prange indices are uint64; int64 like the serial twin
            _fill_normal_pairs(out, key, mu, sigma, c * chunk, min(pairs, (c + 1) * chunk))


#: elements per block of the NumPy fills (their uint64 temporaries stay in the L2 cache)
NUMPY_BLOCK = 1 << 15
_MASK64 = (1 << 64) - 1


def _mix64_int(z: int) -> int:
    z = ((z ^ (z >> 30)) * int(_MUL1)) & _MASK64
    z = ((z ^ (z >> 27)) * int(_MUL2)) & _MASK64
    return z ^ (z >> 31)


def key64_numpy(seed: int, stream: int, step: int) -> np.uint64:
    """:func:`key64` in Python integers (the same key, without a compile)."""
    k = _mix64_int((int(seed) & _MASK64) ^ int(_SEED_SALT))
    k = _mix64_int(k ^ (int(stream) & _MASK64))
    return np.uint64(_mix64_int(k ^ (int(step) & _MASK64)))


def hash_numpy(key: np.uint64, start: int, stop: int) -> np.ndarray:
    """:func:`hash_at` of the indices ``start`` to ``stop - 1`` under ``key``: a uint64 array."""
    z = np.arange(start + 1, stop + 1, dtype=np.uint64)
    z *= GOLDEN
    z += key
    z ^= z >> _S30
    z *= _MUL1
    z ^= z >> _S27
    z *= _MUL2
    z ^= z >> _S31
    return z


def unit_float_numpy(bits: np.ndarray, dtype) -> np.ndarray:
    """:func:`unit_float` of a uint64 array: floats of ``dtype`` in [0, 1), exactly the kernel's."""
    if np.dtype(dtype) == np.float32:
        return (bits >> _S40).astype(np.float32) * np.float32(_INV_2_24)
    return (bits >> _S11).astype(np.float64) * np.float64(_INV_2_53)


def fill_uniform_numpy(out: np.ndarray, seed: int, stream: int, step: int, low: float, high: float) -> None:
    """:func:`fill_uniform`'s values, bit for bit, computed by NumPy (1-D ``out``, float32/64)."""
    kind = out.dtype.type
    key = key64_numpy(seed, stream, step)
    lo = kind(low)
    span = kind(high) - lo
    for start in range(0, out.shape[0], NUMPY_BLOCK):
        stop = min(out.shape[0], start + NUMPY_BLOCK)
        out[start:stop] = lo + span * unit_float_numpy(hash_numpy(key, start, stop), kind)


def fill_normal_numpy(out: np.ndarray, seed: int, stream: int, step: int, mean: float, std: float) -> None:
    """:func:`fill_normal`'s Box-Muller of the same uniforms, computed by NumPy (1-D ``out``,
    float32/64): within a few ulps of the kernel's values (NumPy's log, cos and sin are not libm's)."""
    kind = out.dtype.type
    key = key64_numpy(seed, stream, step)
    mu, sigma = kind(mean), kind(std)
    n = out.shape[0]
    for p0 in range(0, (n + 1) // 2, NUMPY_BLOCK // 2):
        p1 = min((n + 1) // 2, p0 + NUMPY_BLOCK // 2)
        u = unit_float_numpy(hash_numpy(key, 2 * p0, 2 * p1), kind)
        r = np.sqrt(kind(-2.0) * np.log(kind(1.0) - u[0::2]))  # 1 - u in (0, 1]: finite
        theta = kind(_TWO_PI) * u[1::2]
        pair = np.empty(2 * (p1 - p0), kind)
        pair[0::2] = r * np.cos(theta)
        pair[1::2] = r * np.sin(theta)
        stop = min(n, 2 * p1)
        out[2 * p0 : stop] = mu + sigma * pair[: stop - 2 * p0]


@njit(**JIT)
def permutation(n, seed, stream, step, out):
    """A seeded shuffle of 0..n-1 into ``out`` (int64, length >= n): Fisher-Yates on the hash.

    Serial by design (O(n), about a few ns per element), so it is the same on any thread count.
    Position ``i`` (from n-1 down to 1) swaps with ``hash(i) mod (i + 1)``: the bias is below
    n / 2**64.
    """
    key = key64(seed, stream, step)
    for i in range(n):
        out[i] = i
    for i in range(n - 1, 0, -1):
        j = np.int64(hash_at(key, i) % np.uint64(i + 1))
        t = out[i]
        out[i] = out[j]
        out[j] = t


__all__ = [
    "FILL_CHUNK",
    "GOLDEN",
    "NUMPY_BLOCK",
    "fill_normal",
    "fill_normal_numpy",
    "fill_uniform",
    "fill_uniform_numpy",
    "hash64",
    "hash_at",
    "hash_numpy",
    "key64",
    "key64_numpy",
    "mix64",
    "normal",
    "normal_at",
    "normal_pair_at",
    "permutation",
    "uniform",
    "uniform_at",
    "unit_float",
    "unit_float_numpy",
]
