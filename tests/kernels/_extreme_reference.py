"""Extreme finite inputs and 40-digit mpmath references for tests/kernels/test_extremes.py and the
CUDA parity tests at the extremes (tests_cuda/test_extremes_cuda.py).

References take the kernel's (already rounded) inputs, compute in mpmath (unbounded exponent
range), and return object arrays of mpf; :func:`representable` says where they fit a dtype.
Conventions follow the kernels: derivatives at 0 take the ``z > 0`` branch's other side
(relu' = 0, leaky_relu' = alpha, elu' = alpha), MAE's derivative at 0 is 0.
"""

from __future__ import annotations

import mpmath
import numpy as np

from fastnn.kernels.activations import SELU_ALPHA, SELU_SCALE

mp = mpmath.mp.clone() if hasattr(mpmath.mp, "clone") else mpmath.mp
mp.dps = 40
_C = mpmath.mpf("0.044715")
_SQRT_2_OVER_PI = mpmath.sqrt(2 / mpmath.pi)


def _mpf(v) -> mpmath.mpf:
    return mpmath.mpf(float(v))  # exact: float32 and float64 values are doubles


def _objects(shape, values) -> np.ndarray:
    out = np.empty(shape, dtype=object)
    out.ravel()[:] = list(values)
    return out


def representable(exact: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray]:
    """(fits, expected): where |exact| <= the dtype's max, and exact as float64 (inf where it does not fit)."""
    limit = mpmath.mpf(float(np.finfo(dtype).max))
    flat = exact.ravel()
    fits = np.array([abs(e) <= limit for e in flat], dtype=bool).reshape(exact.shape)
    expected = np.array(
        [float(e) if abs(e) <= limit else (np.inf if e > 0 else -np.inf) for e in flat], dtype=np.float64
    ).reshape(exact.shape)
    return fits, expected


def assert_matches_exact(actual, exact: np.ndarray, dtype, what: str, tol: tuple[float, float]) -> None:
    """``actual`` against ``exact`` (object array of mpf): finite and within (rtol, atol) where exact
    fits ``actual``'s dtype, an infinity of exact's sign (never NaN) where it overflows."""
    actual = np.asarray(actual)
    fits, expected = representable(exact, actual.dtype)
    bad = fits & ~np.isfinite(actual)
    assert not bad.any(), (
        f"{what}: non-finite {actual[bad]} where the exact result is finite, at {np.argwhere(bad).tolist()}"
    )
    np.testing.assert_allclose(actual[fits], expected[fits], rtol=tol[0], atol=tol[1], err_msg=what)
    over = ~fits
    if over.any():
        signs = np.array([1.0 if e > 0 else -1.0 for e in exact[over]])
        assert np.all(np.isinf(actual[over]) & (np.sign(actual[over]) == signs)), (
            f"{what}: expected +-inf where the exact result overflows, got {actual[over]}"
        )


# ---------------------------------------------------------------------------- inputs


def extremes(dtype) -> np.ndarray:
    """+-max, +-max/2, +-1e30 (float32) or +-1e300, +-1e20, +-1e14, +-1e4, +-1, +-smallest denormal, 0."""
    info = np.finfo(dtype)
    big = 1e30 if np.dtype(dtype) == np.float32 else 1e300
    magnitudes = [float(info.max), float(info.max) / 2, big, 1e20, 1e14, 1e4, 1.0, float(info.smallest_subnormal)]
    values = sorted({s * v for v in magnitudes for s in (1.0, -1.0)} | {0.0})
    return np.array(values, dtype=dtype)


def extreme_rows(dtype) -> np.ndarray:
    """(rows, 4): rows whose sums, squares or spreads overflow, all-equal extreme rows, denormals."""
    info = np.finfo(dtype)
    top, tiny = float(info.max), float(info.smallest_subnormal)
    f32 = np.dtype(dtype) == np.float32
    square_overflow = 1e20 if f32 else 2e154
    huge = 1e30 if f32 else 1e300
    rows = [
        [top, -top, 0.0, 1.0],
        [top, top, top, top],
        [-top, -top, -top, square_overflow],
        [square_overflow, -square_overflow, 0.3 * square_overflow, 5.0],
        [tiny, 0.0, -tiny, tiny],
        [1e4, -1e4, 1.0, 0.0],
        [huge, 2 * huge, -huge, 0.0],
        [top / 2, top / 3, -top / 2, top / 4],
    ]
    return np.array(rows, dtype=dtype)


def extreme_columns(dtype, rows: int) -> np.ndarray:
    """(rows, 4): columns cycling through +-max, values whose squares overflow, values whose variance
    overflows the dtype (1e30 in float32, 1e200 in float64), and denormals."""
    info = np.finfo(dtype)
    top, tiny = float(info.max), float(info.smallest_subnormal)
    f32 = np.dtype(dtype) == np.float32
    sq = 1e20 if f32 else 2e154
    huge = 1e30 if f32 else 1e200
    patterns = [
        [top, -top, 0.0, 1.0, top / 2],
        [sq, -sq, 0.3 * sq, 5.0, 0.0],
        [huge, -huge, 2 * huge, 0.0, 0.5 * huge],
        [tiny, 0.0, -tiny, tiny, 0.0],
    ]
    return np.array([[p[i % len(p)] for p in patterns] for i in range(rows)], dtype=dtype)


def loss_pairs(name: str, dtype) -> tuple[np.ndarray, np.ndarray]:
    """(pred, target) of shape (2, n): extreme predictions against mirrored extremes and zeros
    (regression losses), or against targets 0, 0.5, 1 (binary cross-entropy from logits)."""
    values = extremes(dtype)
    pred = np.stack([values, values])
    if name == "binary_cross_entropy":
        t = np.resize(np.array([0.0, 0.5, 1.0]), values.shape)
        return pred, np.stack([t, 1.0 - t]).astype(dtype)
    return pred, np.stack([values[::-1], np.zeros_like(values)]).astype(dtype)


# ---------------------------------------------------------------------------- references


def _activation_scalar(name: str, z, alpha):
    zero, one, half = mpmath.mpf(0), mpmath.mpf(1), mpmath.mpf("0.5")
    if name == "identity":
        return z, one
    if name == "relu":
        return (z, one) if z > 0 else (zero, zero)
    if name == "leaky_relu":
        return (z, one) if z > 0 else (alpha * z, alpha)
    if name == "elu":
        return (z, one) if z > 0 else (alpha * mpmath.expm1(z), alpha * mpmath.exp(z))
    if name == "selu":
        scale, a = _mpf(SELU_SCALE), _mpf(SELU_ALPHA)
        return (scale * z, scale) if z > 0 else (scale * a * mpmath.expm1(z), scale * a * mpmath.exp(z))
    if name == "sigmoid":
        s = one / (one + mpmath.exp(-z))
        return s, s * (one - s)
    if name == "tanh":
        t = mpmath.tanh(z)
        return t, one - t * t
    if name == "gelu":
        if abs(z) > 100:  # mpmath's erfc fails for huge arguments; the tails are below 1e-2000 here
            return (z, one) if z > 0 else (zero, zero)
        cdf = half * mpmath.erfc(-z / mpmath.sqrt(2))
        return z * cdf, cdf + z * mpmath.exp(-z * z / 2) / mpmath.sqrt(2 * mpmath.pi)
    if name == "gelu_tanh":
        t = mpmath.tanh(_SQRT_2_OVER_PI * (z + _C * z**3))
        grad = half * (one + t) + half * z * (one - t * t) * _SQRT_2_OVER_PI * (one + 3 * _C * z * z)
        return half * z * (one + t), grad
    raise ValueError(name)


def activation(name: str, x: np.ndarray, alpha: float):
    """(f(x), f'(x)) elementwise, as object arrays of mpf."""
    a = _mpf(x.dtype.type(alpha))
    pairs = [_activation_scalar(name, _mpf(v), a) for v in x.ravel()]
    return _objects(x.shape, (p[0] for p in pairs)), _objects(x.shape, (p[1] for p in pairs))


def _softmax_row(row):
    top = max(row)
    e = [mpmath.exp(v - top) for v in row]
    total = mpmath.fsum(e)
    return [v / total for v in e], [(v - top) - mpmath.log(total) for v in row], (top, mpmath.log(total))


def softmax_rows(z: np.ndarray, grad_y: np.ndarray, log: bool):
    """(y, grad_z) of softmax or log_softmax over rows, grad_z the Jacobian-vector product with grad_y."""
    ys, grads = [], []
    for row, g in zip(z, grad_y):
        p, logp, _ = _softmax_row([_mpf(v) for v in row])
        g = [_mpf(v) for v in g]
        if log:
            total = mpmath.fsum(g)
            ys += logp
            grads += [gj - pj * total for gj, pj in zip(g, p)]
        else:
            dot = mpmath.fsum(gj * pj for gj, pj in zip(g, p))
            ys += p
            grads += [pj * (gj - dot) for gj, pj in zip(g, p)]
    return _objects(z.shape, ys), _objects(z.shape, grads)


def _reduced(total, count: int, mean: bool) -> np.ndarray:
    """The loss the kernels return: a float64 *sum* divided by count for the mean; where that sum
    overflows float64 the result is inf even if the mean would fit (a documented limit)."""
    limit = mpmath.mpf(float(np.finfo(np.float64).max))
    value = total / count if mean and abs(total) <= limit else total
    return _objects((1,), [value])


def cross_entropy(logits: np.ndarray, labels: np.ndarray, mean: bool):
    """(loss (1,), grad) of softmax cross-entropy from logits; grad = (softmax - onehot) * scale."""
    m = logits.shape[0]
    scale = mpmath.mpf(1) / m if mean else mpmath.mpf(1)
    total, grads = mpmath.mpf(0), []
    for row, label in zip(logits, labels):
        p, _, (top, log_total) = _softmax_row([_mpf(v) for v in row])
        total += (top - _mpf(row[label])) + log_total  # shifted: top + log_total would round log_total away
        grads += [(pj - (1 if j == label else 0)) * scale for j, pj in enumerate(p)]
    return _reduced(total, m, mean), _objects(logits.shape, grads)


def _loss_scalar(name: str, p, t, delta):
    if name == "binary_cross_entropy":
        value = max(p, 0) - p * t + mpmath.log1p(mpmath.exp(-abs(p)))
        return value, 1 / (1 + mpmath.exp(-p)) - t
    d = p - t
    if name == "mse":
        return d * d, 2 * d
    if name == "mae":
        return abs(d), mpmath.sign(d)
    if abs(d) < delta:
        return d * d / 2, d
    return delta * (abs(d) - delta / 2), min(max(d, -delta), delta)


def elementwise_loss(name: str, pred: np.ndarray, target: np.ndarray, mean: bool, delta: float):
    """(loss (1,), grad) of an elementwise loss; mean divides by the element count."""
    count = pred.size
    scale = mpmath.mpf(1) / count if mean else mpmath.mpf(1)
    d = _mpf(pred.dtype.type(delta))
    pairs = [_loss_scalar(name, _mpf(p), _mpf(t), d) for p, t in zip(pred.ravel(), target.ravel())]
    total = mpmath.fsum(v for v, _ in pairs)
    return _reduced(total, count, mean), _objects(pred.shape, (g * scale for _, g in pairs))


def norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, grad_out, eps: float, axis: int) -> dict:
    """Layer norm (axis=1: over each row) or batch norm (axis=0: over each column) in mpmath:
    mean, inv_std, x_hat, out and, with grad_out, grad_x and grad_gamma (column sums)."""
    e = _mpf(x.dtype.type(eps))
    xs = np.vectorize(_mpf, otypes=[object])(x)
    if axis == 0:
        xs = xs.T
    means, invs, hats = [], [], []
    for line in xs:
        mu = mpmath.fsum(line) / len(line)
        var = mpmath.fsum((v - mu) ** 2 for v in line) / len(line)
        inv = 1 / mpmath.sqrt(var + e)
        means.append(mu)
        invs.append(inv)
        hats.append([(v - mu) * inv for v in line])
    x_hat = np.array(hats, dtype=object)
    x_hat = x_hat.T if axis == 0 else x_hat
    g_w = np.array([_mpf(v) for v in gamma], dtype=object)
    b_w = np.array([_mpf(v) for v in beta], dtype=object)
    result = {
        "mean": np.array(means, dtype=object),
        "inv_std": np.array(invs, dtype=object),
        "x_hat": x_hat,
        "out": x_hat * g_w + b_w,
    }
    if grad_out is not None:
        go = np.vectorize(_mpf, otypes=[object])(grad_out)
        g = go * g_w
        hat_lines, g_lines = (x_hat.T, g.T) if axis == 0 else (x_hat, g)
        grad_lines = []
        for h, gl, inv in zip(hat_lines, g_lines, invs):
            n = len(gl)
            sg, sgx = mpmath.fsum(gl), mpmath.fsum(a * b for a, b in zip(gl, h))
            grad_lines.append([inv / n * (n * a - sg - b * sgx) for a, b in zip(gl, h)])
        grad_x = np.array(grad_lines, dtype=object)
        result["grad_x"] = grad_x.T if axis == 0 else grad_x
        result["grad_gamma"] = np.array([mpmath.fsum(col) for col in (go * x_hat).T], dtype=object)
    return result


def clamped_unbiased_var(x: np.ndarray, dtype) -> np.ndarray:
    """Per column: the unbiased variance, as float64, limited to the dtype's max (what running_var tracks)."""
    m = x.shape[0]
    out = []
    for col in np.vectorize(_mpf, otypes=[object])(x).T:
        mu = mpmath.fsum(col) / m
        var = mpmath.fsum((v - mu) ** 2 for v in col) / (m - 1)
        out.append(min(var, mpmath.mpf(float(np.finfo(dtype).max))))
    return np.array([float(v) for v in out])
