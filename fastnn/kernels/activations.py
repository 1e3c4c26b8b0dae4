"""Activation functions: forward and derivative of each, written once as scalar functions.

Every activation is a code (an int) so one compiled kernel serves them all: the dense
layer's fused epilogue, the standalone activation layers and the CUDA kernels call
:func:`activate` and :func:`activate_grad`. ``softmax`` and ``log_softmax`` act on rows.

Shapes: 2-D ``(batch, features)`` arrays, float32 or float64; outputs have the input's dtype.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import literal_unroll, njit, prange, types
from numba.extending import overload

from .._config import JIT, JIT_INLINE, JIT_PARALLEL, PARALLEL_MIN_ELEMENTS
from ._scalar import like, n_chunks, start_of

IDENTITY, SIGMOID, TANH, RELU, LEAKY_RELU, ELU, SELU, GELU, GELU_TANH, SOFTMAX, LOG_SOFTMAX = range(11)


class ActivationRow(NamedTuple):
    """One activation: everything the package derives from it (kernel code, the parameter, the
    layer class, the default initialiser of a Dense layer it follows)."""

    name: str
    code: int
    default: float  #: default parameter ``alpha`` (0.0 when it takes none)
    param: str | None  #: the parameter's keyword name, or None
    layer: str | None  #: the activation layer class (fastnn.layers.activation), None for none of its own
    init: str  #: default initialiser of the weights before it (fastnn.init.default_init)
    doc: str


#: the one table of activations, in code order
ACTIVATION_TABLE = (
    ActivationRow("identity", IDENTITY, 0.0, None, "Identity", "xavier_uniform", "y = x."),
    ActivationRow("sigmoid", SIGMOID, 0.0, None, "Sigmoid", "xavier_uniform", "y = 1 / (1 + exp(-x))."),
    ActivationRow("tanh", TANH, 0.0, None, "Tanh", "xavier_uniform", "y = tanh(x)."),
    ActivationRow("relu", RELU, 0.0, None, "ReLU", "he_normal", "y = max(x, 0)."),
    ActivationRow(
        "leaky_relu",
        LEAKY_RELU,
        0.01,
        "negative_slope",
        "LeakyReLU",
        "he_normal",
        "y = x if x > 0 else negative_slope * x.",
    ),
    ActivationRow("elu", ELU, 1.0, "alpha", "ELU", "he_normal", "y = x if x > 0 else alpha * (exp(x) - 1)."),
    ActivationRow(
        "selu",
        SELU,
        0.0,
        None,
        "SELU",
        "lecun_normal",
        "Scaled ELU with the self-normalising constants (use lecun_normal init).",
    ),
    ActivationRow(
        "gelu",
        GELU,
        0.0,
        None,
        "GELU",
        "he_normal",
        'Gaussian error linear unit: x * Phi(x); approximate="tanh" uses the tanh form.',
    ),
    ActivationRow(
        "gelu_tanh", GELU_TANH, 0.0, None, None, "he_normal", 'GELU\'s tanh form (GELU(approximate="tanh")).'
    ),
    ActivationRow("softmax", SOFTMAX, 0.0, None, "Softmax", "xavier_uniform", "Row-wise softmax (numerically stable)."),
    ActivationRow(
        "log_softmax",
        LOG_SOFTMAX,
        0.0,
        None,
        "LogSoftmax",
        "xavier_uniform",
        "Row-wise log-softmax (numerically stable).",
    ),
)
#: name -> (code, default parameter ``alpha``, the parameter's name or None): a view of the table
ACTIVATIONS = {row.name: (row.code, row.default, row.param) for row in ACTIVATION_TABLE}
#: elementwise codes whose loops get their own branch-free, vectorised copy (``literal_unroll``);
#: the others call libm per element, where a copy per code would only add compile time
VECTORISED_CODES = (IDENTITY, TANH, RELU, LEAKY_RELU)
#: codes at or above this act on whole rows (softmax, log_softmax)
ROWWISE_CODES = SOFTMAX
#: why the dense kernels refuse row-wise codes (their callers apply those after them)
ROWWISE_REFUSED = (
    "dense kernels take elementwise activation codes only; for softmax / log_softmax call them with "
    "IDENTITY and apply activation_forward / activation_backward to the rows (as fastnn.layers.Dense does)"
)

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
_SQRT_HALF = 0.70710678118654752440
_INV_SQRT_2PI = 0.39894228040143267794
_SQRT_2_OVER_PI = 0.79788456080286535588
_GELU_C = 0.044715


# Rational approximation of tanh for float32 (Eigen's generic_fast_tanh_float): odd degree-13
# numerator over even degree-6 denominator on [-7.905, 7.905]. Max error 4e-7 (tested); unlike
# libm's tanhf it vectorises. float64 keeps np.tanh.
_TANH_CLAMP = 7.90531110763549805
_TANH_P = (
    4.89352455891786e-03,
    6.37261928875436e-04,
    1.48572235717979e-05,
    5.12229709037114e-08,
    -8.60467152213735e-11,
    2.00018790482477e-13,
    -2.76076847742355e-16,
)
_TANH_Q = (4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06)


def fast_tanh(z):
    """tanh(z): a vectorisable rational approximation for float32, libm's tanh for float64."""
    return math.tanh(z)


@overload(fast_tanh, jit_options=dict(JIT_INLINE))
def _fast_tanh_overload(z):
    if z != types.float32:
        return lambda z: math.tanh(z)
    c, (p1, p3, p5, p7, p9, p11, p13), (q0, q2, q4, q6) = (
        np.float32(_TANH_CLAMP),
        map(np.float32, _TANH_P),
        map(np.float32, _TANH_Q),
    )

    def impl(z):
        x = min(max(z, -c), c)
        x2 = x * x
        p = ((((((p13 * x2 + p11) * x2 + p9) * x2 + p7) * x2 + p5) * x2 + p3) * x2 + p1) * x
        q = ((q6 * x2 + q4) * x2 + q2) * x2 + q0
        return p / q

    return impl


@njit(**JIT_INLINE)
def sigmoid(z):
    """Logistic function without overflow for large ``|z|``."""
    one = like(1.0, z)
    if z >= 0:
        return one / (one + math.exp(-z))
    e = math.exp(z)
    return e / (one + e)


# tanh(sqrt(2/pi) (z + 0.044715 z^3)) is exactly +-1 in float32 and float64 once |z| >= 10 (its
# argument passes 43, where tanh rounds to 1 even in float64), so the tanh-form GELU evaluates its
# inner polynomial at z clamped to [-10, 10]: the same bits for every z, and no z^3 overflow (which
# made the gradient 0 * inf = NaN for |z| >= 1e14 in float32).
_GELU_TANH_CLAMP = 10.0


@njit(**JIT_INLINE)
def _gelu_tanh_clamped(z):
    c = like(_GELU_TANH_CLAMP, z)
    return min(max(z, -c), c)


@njit(**JIT_INLINE)
def _gelu_tanh_inner(z):
    return like(_SQRT_2_OVER_PI, z) * (z + like(_GELU_C, z) * z * z * z)


# The rules of the vectorised codes, each once: :func:`activate` / :func:`activate_grad` branch to
# them, and so do :func:`activate_const` / :func:`activate_grad_const` (inlined, for a constant code).


@njit(**JIT_INLINE)
def _identity(z, alpha):
    return z


@njit(**JIT_INLINE)
def _identity_grad(z, y, alpha):
    return like(1.0, z)


@njit(**JIT_INLINE)
def _relu(z, alpha):
    zero = like(0.0, z)
    return zero if z <= zero else z  # NaN stays NaN (a NaN weight must not look like a dead unit)


@njit(**JIT_INLINE)
def _relu_grad(z, y, alpha):
    return like(1.0, z) if z > like(0.0, z) else like(0.0, z)


@njit(**JIT_INLINE)
def _tanh(z, alpha):
    return fast_tanh(z)


@njit(**JIT_INLINE)
def _tanh_grad(z, y, alpha):
    return like(1.0, z) - y * y


@njit(**JIT_INLINE)
def _leaky_relu(z, alpha):
    return z if z > like(0.0, z) else alpha * z


@njit(**JIT_INLINE)
def _leaky_relu_grad(z, y, alpha):
    return like(1.0, z) if z > like(0.0, z) else alpha


@njit(**JIT)
def activate(code, z, alpha):
    """y = f(z) for the elementwise activation ``code`` (alpha: slope of leaky_relu, alpha of elu)."""
    zero = like(0.0, z)
    one = like(1.0, z)
    half = like(0.5, z)
    if code == RELU:
        return _relu(z, alpha)
    if code == TANH:
        return _tanh(z, alpha)
    if code == SIGMOID:
        return sigmoid(z)
    if code == LEAKY_RELU:
        return _leaky_relu(z, alpha)
    if code == ELU:
        return z if z > zero else alpha * math.expm1(z)
    if code == SELU:
        return like(SELU_SCALE, z) * (z if z > zero else like(SELU_ALPHA, z) * math.expm1(z))
    if code == GELU:
        return half * z * (one + math.erf(z * like(_SQRT_HALF, z)))
    if code == GELU_TANH:
        return half * z * (one + math.tanh(_gelu_tanh_inner(_gelu_tanh_clamped(z))))
    return _identity(z, alpha)


@njit(**JIT)
def activate_grad(code, z, y, alpha):
    """dy/dz of the elementwise activation ``code`` at pre-activation ``z`` with output ``y``."""
    zero = like(0.0, z)
    one = like(1.0, z)
    half = like(0.5, z)
    if code == RELU:
        return _relu_grad(z, y, alpha)
    if code == TANH:
        return _tanh_grad(z, y, alpha)
    if code == SIGMOID:
        return y * (one - y)
    if code == LEAKY_RELU:
        return _leaky_relu_grad(z, y, alpha)
    if code == ELU:
        return one if z > zero else alpha * math.exp(z)
    if code == SELU:
        scale = like(SELU_SCALE, z)
        return scale if z > zero else scale * like(SELU_ALPHA, z) * math.exp(z)
    if code == GELU:
        cdf = half * (one + math.erf(z * like(_SQRT_HALF, z)))
        return cdf + z * like(_INV_SQRT_2PI, z) * math.exp(-half * z * z)
    if code == GELU_TANH:
        zc = _gelu_tanh_clamped(z)  # (1 - t^2) is 0 wherever zc differs from z
        t = math.tanh(_gelu_tanh_inner(zc))
        inner_grad = like(_SQRT_2_OVER_PI, z) * (one + like(3.0 * _GELU_C, z) * zc * zc)
        return half * (one + t) + half * zc * (one - t * t) * inner_grad
    return _identity_grad(z, y, alpha)


@njit(**JIT_INLINE)
def activate_const(code, z, alpha):
    """:func:`activate` for a constant ``code`` of VECTORISED_CODES (a ``literal_unroll`` loop's):
    inlined into the loop, where the constant code leaves one rule (no compiled copy of the
    whole branch chain per code)."""
    if code == RELU:
        return _relu(z, alpha)
    if code == TANH:
        return _tanh(z, alpha)
    if code == LEAKY_RELU:
        return _leaky_relu(z, alpha)
    return _identity(z, alpha)


@njit(**JIT_INLINE)
def activate_grad_const(code, z, y, alpha):
    """:func:`activate_grad` for a constant ``code`` of VECTORISED_CODES, as :func:`activate_const`."""
    if code == RELU:
        return _relu_grad(z, y, alpha)
    if code == TANH:
        return _tanh_grad(z, y, alpha)
    if code == LEAKY_RELU:
        return _leaky_relu_grad(z, y, alpha)
    return _identity_grad(z, y, alpha)


@njit(**JIT_INLINE)
def softmax_row(code, z, y, i):
    """Row ``i`` of softmax or log_softmax of z (batch, classes) into y (may be z); stable: the row
    max is subtracted, and log_softmax is (z - max) - log(sum exp(z - max)) in that order.

    The one source of the row rule: the CPU loop below calls it, the CUDA kernels compile its
    ``py_func`` as a device function (arrays cannot enter @njit code from the simulator)."""
    n = z.shape[1]
    row_max = z[i, 0]
    for j in range(1, n):
        row_max = max(row_max, z[i, j])
    total = like(0.0, z)
    for j in range(n):  # no stores here: with y = z a storing loop would not vectorise (other sum order)
        total += math.exp(z[i, j] - row_max)
    if code == SOFTMAX:
        inv = like(1.0, z) / total
        for j in range(n):
            y[i, j] = math.exp(z[i, j] - row_max) * inv
    else:
        # z - max goes through y, so 'reassoc' cannot fold the two subtractions into
        # z - (max + log_total), which loses log_total when max is huge (measured)
        for j in range(n):
            y[i, j] = z[i, j] - row_max
        log_total = math.log(total)
        for j in range(n):
            y[i, j] -= log_total


@njit(**JIT_INLINE)
def softmax_row_grad(code, y, grad_y, grad_z, i):
    """Row ``i`` of the softmax / log_softmax Jacobian-vector product (y: the forward's output);
    shared with the CUDA kernels as :func:`softmax_row` is."""
    n = y.shape[1]
    total = like(0.0, y)
    if code == SOFTMAX:
        for j in range(n):
            total += grad_y[i, j] * y[i, j]
        for j in range(n):
            grad_z[i, j] = y[i, j] * (grad_y[i, j] - total)
    else:
        for j in range(n):
            total += grad_y[i, j]
        for j in range(n):
            grad_z[i, j] = grad_y[i, j] - math.exp(y[i, j]) * total


@njit(**JIT)  # not inlined: literal_unroll inside a prange body would serialise it
def rows_activate(code, z, y, alpha, r0, r1):
    """y[r0:r1] = f(z[r0:r1]); row-wise for softmax/log_softmax (:func:`softmax_row`)."""
    if code == SOFTMAX or code == LOG_SOFTMAX:
        for i in range(r0, r1):
            softmax_row(code, z, y, i)
    else:
        elementwise_rows(code, z, y, alpha, r0, r1)


@njit(**JIT)  # not inlined: literal_unroll inside a prange body would serialise it
def elementwise_rows(code, z, y, alpha, r0, r1):
    """y[r0:r1] = f(z[r0:r1]) for an elementwise ``code`` (below ``ROWWISE_CODES``): without the
    softmax rows, so the dense kernels that call it do not compile those."""
    n = z.shape[1]
    vectorised = False
    for c in literal_unroll(VECTORISED_CODES):  # the code is a constant inside each loop: it vectorises
        if code == c:
            vectorised = True
            for i in range(r0, r1):
                zi, yi = z[i], y[i]
                for j in range(n):
                    yi[j] = activate_const(c, zi[j], alpha)
    if not vectorised:
        for i in range(r0, r1):
            zr, yr = z[i], y[i]
            for j in range(n):
                yr[j] = activate(code, zr[j], alpha)


@njit(**JIT)  # not inlined: literal_unroll inside a prange body would serialise it
def rows_activate_grad(code, z, y, grad_y, grad_z, alpha, r0, r1):
    """grad_z[r0:r1] = grad_y * dy/dz (the full Jacobian-vector product for softmax rows)."""
    if code == SOFTMAX or code == LOG_SOFTMAX:
        for i in range(r0, r1):
            softmax_row_grad(code, y, grad_y, grad_z, i)
    else:
        elementwise_rows_grad(code, z, y, grad_y, grad_z, alpha, r0, r1)


@njit(**JIT)  # not inlined: literal_unroll inside a prange body would serialise it
def elementwise_rows_grad(code, z, y, grad_y, grad_z, alpha, r0, r1):
    """grad_z[r0:r1] = grad_y * f'(z) for an elementwise ``code`` (below ``ROWWISE_CODES``)."""
    n = z.shape[1]
    vectorised = False
    for c in literal_unroll(VECTORISED_CODES):
        if code == c:
            vectorised = True
            for i in range(r0, r1):  # indexed, not through row views: cheaper for narrow rows
                for j in range(n):
                    grad_z[i, j] = grad_y[i, j] * activate_grad_const(c, z[i, j], y[i, j], alpha)
    if not vectorised:
        for i in range(r0, r1):
            for j in range(n):
                grad_z[i, j] = grad_y[i, j] * activate_grad(code, z[i, j], y[i, j], alpha)


@njit(**JIT_PARALLEL)
def activation_forward(x, out, code, alpha):
    """out = f(x) for ``x``, ``out`` of shape (batch, features); ``out`` may be ``x``."""
    m = x.shape[0]
    a = like(alpha, x)
    chunks = n_chunks(m, 64)
    if x.size < PARALLEL_MIN_ELEMENTS:
        rows_activate(code, x, out, a, start_of(m), m)
    else:
        for c_u in prange(chunks):
            c = np.int64(c_u)  # prange indices are uint64; int64 like the serial twin
            rows_activate(code, x, out, a, c * 64, min(m, (c + 1) * 64))


@njit(**JIT_PARALLEL)
def activation_backward(x, y, grad_y, grad_x, code, alpha):
    """grad_x = grad_y * f'(x) given input ``x`` and output ``y = f(x)``; all (batch, features)."""
    m = x.shape[0]
    a = like(alpha, x)
    chunks = n_chunks(m, 64)
    if x.size < PARALLEL_MIN_ELEMENTS:
        rows_activate_grad(code, x, y, grad_y, grad_x, a, start_of(m), m)
    else:
        for c_u in prange(chunks):
            c = np.int64(c_u)  # prange indices are uint64; int64 like the serial twin
            rows_activate_grad(code, x, y, grad_y, grad_x, a, c * 64, min(m, (c + 1) * 64))


__all__ = [
    "ACTIVATIONS",
    "ACTIVATION_TABLE",
    "ActivationRow",
    "activate",
    "activate_const",
    "activate_grad",
    "activate_grad_const",
    "activation_backward",
    "activation_forward",
    "elementwise_rows",
    "elementwise_rows_grad",
    "rows_activate",
    "rows_activate_grad",
    "sigmoid",
    "softmax_row",
    "softmax_row_grad",
]

#: the functions the object layer calls (fastnn.backend.kernels); the CUDA twin module has them too
DEVICE_API = ("activation_forward", "activation_backward")
