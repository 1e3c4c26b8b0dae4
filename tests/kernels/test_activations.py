"""activation_forward / activation_backward against float64 references, finite differences and torch."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from fastnn._config import PARALLEL_MIN_ELEMENTS
from fastnn.kernels.activations import ACTIVATIONS, activation_backward, activation_forward
from tests import _reference_core as ref

NAMES = sorted(ACTIVATIONS)
DTYPES = [np.float32, np.float64]
SHAPES = [(1, 1), (1, 7), (33, 5), (3, 1000)]
TOL = {np.float32: {"rtol": 3e-5, "atol": 3e-6}, np.float64: {"rtol": 1e-12, "atol": 1e-13}}
ROWWISE = {"softmax", "log_softmax"}


def _alphas(name):
    """The default parameter and, for activations that take one, a second value."""
    _, default, param = ACTIVATIONS[name]
    return [default] if param is None else [default, 0.3]


def _forward(name, x, alpha):
    out = np.full_like(x, np.nan)
    activation_forward(x, out, ACTIVATIONS[name][0], alpha)
    return out


def _backward(name, x, grad_y, alpha):
    y = _forward(name, x, alpha)
    grad_x = np.full_like(x, np.nan)
    activation_backward(x, y, grad_y, grad_x, ACTIVATIONS[name][0], alpha)
    return grad_x


def _inputs(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 2).astype(dtype), rng.standard_normal(shape).astype(dtype)


def test_every_activation_has_a_reference():
    assert set(ACTIVATIONS) == set(ref.ACTIVATION_NAMES)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_forward_matches_reference(name, dtype):
    for alpha in _alphas(name):
        for shape in SHAPES:
            x, _ = _inputs(shape, dtype)
            y = _forward(name, x, alpha)
            assert y.dtype == x.dtype
            np.testing.assert_allclose(
                y, ref.activation_forward(name, x, alpha), **TOL[dtype], err_msg=f"{name} alpha={alpha} shape={shape}"
            )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_backward_matches_reference(name, dtype):
    for alpha in _alphas(name):
        for shape in SHAPES:
            x, grad_y = _inputs(shape, dtype)
            grad_x = _backward(name, x, grad_y, alpha)
            assert grad_x.dtype == x.dtype
            np.testing.assert_allclose(
                grad_x,
                ref.activation_backward(name, x, grad_y, alpha),
                **TOL[dtype],
                err_msg=f"{name} alpha={alpha} shape={shape}",
            )


@pytest.mark.parametrize("name", NAMES)
def test_forward_in_place(name):
    x, _ = _inputs((5, 9), np.float64, seed=3)
    expected = _forward(name, x, ACTIVATIONS[name][1])
    activation_forward(x, x, ACTIVATIONS[name][0], ACTIVATIONS[name][1])
    np.testing.assert_array_equal(x, expected)


@pytest.mark.parametrize("name", NAMES)
def test_backward_finite_differences(name):
    rng = np.random.default_rng(1)
    # keep inputs away from the kinks of relu / leaky_relu / elu / selu at 0
    x = rng.uniform(0.2, 2.0, (3, 6)) * rng.choice([-1.0, 1.0], (3, 6))
    upstream = rng.standard_normal((3, 6))
    alpha = _alphas(name)[-1]
    grad_x = _backward(name, x, upstream, alpha)
    eps = 1e-6
    numeric = np.empty_like(x)
    for idx in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[idx] += eps
        minus[idx] -= eps
        numeric[idx] = (
            np.sum(upstream * _forward(name, plus, alpha)) - np.sum(upstream * _forward(name, minus, alpha))
        ) / (2 * eps)
    np.testing.assert_allclose(grad_x, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["sigmoid", "softmax", "log_softmax", "elu", "selu", "tanh", "gelu"])
def test_extreme_inputs_stay_finite(name, dtype):
    x = np.array([[-100.0, 0.0, 100.0], [100.0, 100.0, -100.0], [0.0, 0.0, 0.0], [-100.0, -100.0, -100.0]], dtype=dtype)
    grad_y = np.ones_like(x)
    alpha = ACTIVATIONS[name][1]
    y = _forward(name, x, alpha)
    grad_x = _backward(name, x, grad_y, alpha)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(grad_x))
    # float32: one rounding of a magnitude-100 intermediate (ulp 7.6e-6) is allowed
    tol = {"rtol": 1e-6, "atol": 2e-5} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}
    np.testing.assert_allclose(y, ref.activation_forward(name, x, alpha), **tol)
    np.testing.assert_allclose(grad_x, ref.activation_backward(name, x, grad_y, alpha), **tol)


def test_relu_gradient_at_zero_is_zero():
    x = np.zeros((2, 3))
    assert np.all(_backward("relu", x, np.ones_like(x), 0.0) == 0.0)


@pytest.mark.parametrize("name", NAMES)
def test_parallel_path_matches_reference_and_is_thread_independent(name):
    shape = (300, 300)
    assert shape[0] * shape[1] >= PARALLEL_MIN_ELEMENTS
    x, grad_y = _inputs(shape, np.float64, seed=2)
    alpha = ACTIVATIONS[name][1]
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        y1, g1 = _forward(name, x, alpha), _backward(name, x, grad_y, alpha)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        y2, g2 = _forward(name, x, alpha), _backward(name, x, grad_y, alpha)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(g1, g2)
    np.testing.assert_allclose(y2, ref.activation_forward(name, x, alpha), **TOL[np.float64])
    np.testing.assert_allclose(g2, ref.activation_backward(name, x, grad_y, alpha), **TOL[np.float64])


def _torch_activation(name, alpha):
    F = pytest.importorskip("torch").nn.functional
    return {
        "identity": lambda t: t,
        "sigmoid": F.sigmoid,
        "tanh": F.tanh,
        "relu": F.relu,
        "leaky_relu": lambda t: F.leaky_relu(t, alpha),
        "elu": lambda t: F.elu(t, alpha),
        "selu": F.selu,
        "gelu": F.gelu,
        "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
        "softmax": lambda t: F.softmax(t, dim=1),
        "log_softmax": lambda t: F.log_softmax(t, dim=1),
    }[name]


@pytest.mark.parametrize("name", NAMES)
def test_matches_torch(name):
    torch = pytest.importorskip("torch")
    x, grad_y = _inputs((9, 8), np.float64, seed=4)
    x[:, 0] = 0.0  # torch's conventions for the derivative at the kinks
    for alpha in _alphas(name):
        xt = torch.tensor(x, requires_grad=True)
        yt = _torch_activation(name, alpha)(xt)
        yt.backward(torch.tensor(grad_y))
        np.testing.assert_allclose(_forward(name, x, alpha), yt.detach().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(_backward(name, x, grad_y, alpha), xt.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_float32_tanh_approximation_error_bound():
    """tanh in float32 kernels is a vectorisable rational approximation: max error 5e-7."""
    from fastnn.kernels.activations import TANH, activation_forward

    x = np.linspace(-12, 12, 400_001, dtype=np.float32).reshape(1, -1)
    y = np.empty_like(x)
    activation_forward(x, y, TANH, 0.0)
    err = np.abs(y.astype(np.float64) - np.tanh(x.astype(np.float64)))
    assert err.max() < 5e-7
    assert np.all(np.abs(y) <= 1) and y[0, -1] == pytest.approx(1.0, abs=3e-7)  # saturates 2 ulp below 1


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_nan_and_infinities_pass_as_in_the_reference(name, dtype):
    """A NaN stays NaN and +-inf go where the reference sends them: an activation must not hide a
    NaN weight behind a finite output (relu(NaN) was 0). Row-wise codes see a NaN row."""
    x = np.array([[np.nan, 1.0, -1.0], [np.inf, -np.inf, 0.5]] * 40, dtype=dtype)  # 80 rows: vectorised loops
    alpha = ACTIVATIONS[name][1]
    with np.errstate(invalid="ignore", over="ignore"):
        expected = ref.activation_forward(name, x.astype(np.float64), alpha)
    got = _forward(name, x, alpha)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    finite = ~np.isnan(expected)
    np.testing.assert_allclose(got[finite], expected[finite], **TOL[dtype])
