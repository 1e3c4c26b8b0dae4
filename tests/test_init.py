"""Initialisers: the variances each scheme promises, ranges, orthogonality, seeds, dtypes, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastnn import init
from fastnn.kernels.rng import fill_normal, fill_uniform

FAN_IN, FAN_OUT = 512, 256
N = FAN_IN * FAN_OUT


def _var_tolerance(var):
    """5 standard errors of a sample variance of N normal-ish draws."""
    return 5 * var * math.sqrt(2 / N)


# name -> (promised variance of the weights of a (FAN_IN, FAN_OUT) matrix, uniform bound or None)
RELU_GAIN = math.sqrt(2.0)
PROMISES = {
    "xavier_uniform": (2 / (FAN_IN + FAN_OUT), math.sqrt(6 / (FAN_IN + FAN_OUT))),
    "xavier_normal": (2 / (FAN_IN + FAN_OUT), None),
    "he_uniform": (2 / FAN_IN, math.sqrt(6 / FAN_IN)),
    "he_normal": (2 / FAN_IN, None),
    "lecun_uniform": (1 / FAN_IN, math.sqrt(3 / FAN_IN)),
    "lecun_normal": (1 / FAN_IN, None),
}


@pytest.mark.parametrize("name", sorted(PROMISES))
def test_variance_scaling_schemes_keep_their_promise(name):
    var, bound = PROMISES[name]
    w = init.initialize(np.empty((FAN_IN, FAN_OUT), np.float32), name, FAN_IN, FAN_OUT, seed=0, stream=1)
    assert w.dtype == np.float32
    assert abs(w.mean()) < 5 * math.sqrt(var / N)
    assert abs(w.var(dtype=np.float64) - var) < _var_tolerance(var)
    if bound is not None:
        assert np.abs(w).max() <= bound * (1 + 1e-6)
        assert np.abs(w).max() > 0.99 * bound


def test_gain_scales_the_standard_deviation_and_defaults_are_torchs():
    w = init.xavier_normal(np.empty((FAN_IN, FAN_OUT)), gain=3.0, seed=2)  # fans from the shape
    assert abs(w.var() - 9 * 2 / (FAN_IN + FAN_OUT)) < _var_tolerance(9 * 2 / (FAN_IN + FAN_OUT))
    tanh = init.he_normal(np.empty((FAN_IN, FAN_OUT)), nonlinearity="tanh", seed=2)
    assert abs(tanh.var() - (5 / 3) ** 2 / FAN_IN) < _var_tolerance((5 / 3) ** 2 / FAN_IN)
    fan_out = init.he_uniform(np.empty((FAN_IN, FAN_OUT)), mode="fan_out", seed=2)
    assert abs(fan_out.var() - 2 / FAN_OUT) < _var_tolerance(2 / FAN_OUT)
    leaky = init.initialize(
        np.empty((FAN_IN, FAN_OUT)),
        "kaiming_normal",
        FAN_IN,
        FAN_OUT,
        seed=2,
        nonlinearity="leaky_relu",
        negative_slope=0.2,
    )
    want = 2 / (1 + 0.2**2) / FAN_IN
    assert abs(leaky.var() - want) < _var_tolerance(want)


def test_calculate_gain_matches_torch():
    torch = pytest.importorskip("torch")
    for name, param in [
        ("linear", None),
        ("sigmoid", None),
        ("tanh", None),
        ("relu", None),
        ("leaky_relu", None),
        ("leaky_relu", 0.2),
        ("selu", None),
        ("conv2d", None),
    ]:
        assert init.calculate_gain(name, param) == pytest.approx(torch.nn.init.calculate_gain(name, param))
    assert init.calculate_gain("identity") == 1.0
    with pytest.raises(ValueError, match="nonlinearity.*'tanh'"):
        init.calculate_gain("tahn")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plain_distributions_and_constants(dtype):
    u = init.uniform(np.empty((300, 301), dtype), -2.0, 3.0, seed=1)
    assert u.dtype == dtype and u.min() >= -2.0 and u.max() <= 3.0
    assert abs(u.mean() - 0.5) < 5 * math.sqrt(25 / 12 / u.size)
    z = init.normal(np.empty((300, 301), dtype), 1.5, 0.5, seed=1)
    assert z.dtype == dtype
    assert abs(z.mean() - 1.5) < 5 * 0.5 / math.sqrt(z.size)
    assert abs(z.std() - 0.5) < 0.01
    assert np.all(init.zeros(np.ones(5, dtype)) == 0)
    assert np.all(init.ones(np.zeros(5, dtype)) == 1)
    c = init.initialize(np.zeros((2, 3), dtype), "constant", value=0.25)
    assert c.dtype == dtype and np.all(c == dtype(0.25))


def test_orthogonal_rows_or_columns_are_orthonormal_with_gain():
    tall = init.orthogonal(np.empty((64, 16)), seed=3, gain=2.0)
    np.testing.assert_allclose(tall.T @ tall, 4 * np.eye(16), atol=1e-10)
    wide = init.initialize(np.empty((16, 64), np.float32), "orthogonal", 16, 64, seed=3)
    assert wide.dtype == np.float32
    np.testing.assert_allclose(wide @ wide.T, np.eye(16), atol=1e-5)
    torch = pytest.importorskip("torch")
    # same construction as torch (QR of a normal matrix, signs from diag(R)): same statistics
    t = torch.nn.init.orthogonal_(torch.empty(64, 16, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(t.T @ t, np.eye(16), atol=1e-10)
    assert abs(np.abs(tall / 2).mean() - np.abs(t).mean()) < 0.02


def test_determinism_by_seed_and_independence_by_stream():
    a = init.he_normal(np.empty((100, 50)), seed=7, stream=0)
    np.testing.assert_array_equal(a, init.he_normal(np.empty((100, 50)), seed=7, stream=0))
    b = init.he_normal(np.empty((100, 50)), seed=7, stream=1)
    c = init.he_normal(np.empty((100, 50)), seed=8, stream=0)
    for other in (b, c):
        assert abs(np.corrcoef(a.ravel(), other.ravel())[0, 1]) < 5 / math.sqrt(a.size)
    # float32 and float64 fills of one seed differ only by the generator's precision
    a32 = init.uniform(np.empty(1000, np.float32), seed=4)
    a64 = init.uniform(np.empty(1000, np.float64), seed=4)
    np.testing.assert_allclose(a32, a64, atol=2**-23)


def test_non_contiguous_views_are_filled_in_place():
    buf = np.zeros((40, 60))
    view = buf[:, ::2]
    init.initialize(view, "he_uniform", 40, 30, seed=1, stream=2)
    want = init.he_uniform(np.empty((40, 30)), 40, 30, seed=1, stream=2)
    np.testing.assert_array_equal(buf[:, ::2], want)
    assert np.all(buf[:, 1::2] == 0)


def test_initialize_ignores_unused_arguments_and_reports_bad_ones():
    w = init.initialize(np.ones((3, 4)), "zeros", 3, 4, 0, 5)  # fans, seed and stream ignored
    assert np.all(w == 0)
    with pytest.raises(ValueError, match="gain does not apply to init 'zeros'"):
        init.initialize(np.ones(3), "zeros", gain=2.0)
    with pytest.raises(ValueError, match="Did you mean 'he_normal'"):
        init.initialize(np.ones(3), "he_norml")
    with pytest.raises(ValueError, match="init 'uniform' got unsupported"):
        init.initialize(np.ones(3), "uniform", mean=1.0)
    with pytest.raises(ValueError, match="a < b"):
        init.uniform(np.ones(3), 1.0, 1.0)
    with pytest.raises(TypeError, match="float32 or float64"):
        init.normal(np.ones(3, np.int64))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init.orthogonal(np.ones(3))


def test_default_init_by_activation_and_table():
    assert init.default_init("relu") == "he_normal"
    assert init.default_init("leaky_relu") == "he_normal"
    assert init.default_init("gelu") == "he_normal"
    assert init.default_init("selu") == "lecun_normal"
    for name in ("tanh", "sigmoid", "identity", "softmax", None):
        assert init.default_init(name) == "xavier_uniform"
    for name in (
        "zeros",
        "ones",
        "constant",
        "uniform",
        "normal",
        "xavier_uniform",
        "xavier_normal",
        "he_uniform",
        "he_normal",
        "lecun_uniform",
        "lecun_normal",
        "orthogonal",
        "glorot_uniform",
        "kaiming_normal",
    ):
        assert name in init.INITIALIZERS
    assert set(init.DEFAULT_INIT.values()) <= set(init.INITIALIZERS)


@pytest.mark.parametrize("name", ["uniform", "normal", "he_normal", "xavier_uniform", "orthogonal"])
def test_large_arrays_fill_on_threads_with_the_values_of_small_ones(name, monkeypatch):
    # below PARALLEL_FILL_MIN NumPy fills (nothing to compile), from it the threaded kernels: the
    # same bits for uniform draws, within a few ulps for normal ones (NumPy's log/cos/sin round unlike libm's)
    shape = (301, 203)
    small = init.initialize(np.empty(shape, np.float32), name, seed=4, stream=2)
    monkeypatch.setattr(init, "PARALLEL_FILL_MIN", 1)
    large = init.initialize(np.empty(shape, np.float32), name, seed=4, stream=2)
    if name.endswith("uniform"):
        assert large.tobytes() == small.tobytes()
    else:
        np.testing.assert_allclose(large, small, rtol=1e-5, atol=1e-6)
    # the threaded kernels ran: their float32 signatures exist now
    threaded = fill_uniform if name.endswith("uniform") else fill_normal
    assert any(sig[0].dtype.name == "float32" for sig in threaded.overloads)


@pytest.mark.parametrize("shape, fans", [((24, 4, 5, 5), (100, 600)), ((16, 3, 7), (21, 112))])
def test_a_kernel_s_fans_are_torch_s(shape, fans):
    """A convolution kernel (out, in / groups, *kernel): fan_in = in * receptive field, fan_out =
    out * receptive field, as torch.nn.init; he_normal on it has torch's std (its fans were taken
    in Dense's (in, out) order: 0.058 against torch's 0.141 for the first shape)."""
    torch = pytest.importorskip("torch")
    assert init.compute_fans(shape) == fans
    # the std of one small kernel's draws wanders by ~4% (336 values): average 40 seeded draws of
    # each side, so both sit within 2% of sqrt(2 / fan_in) and of each other (was flaky unseeded)
    ours = np.mean([init.he_normal(np.empty(shape), seed=s).std() for s in range(40)])
    generator = torch.Generator().manual_seed(3)
    theirs = np.mean(
        [
            float(torch.nn.init.kaiming_normal_(torch.empty(shape, dtype=torch.float64), generator=generator).std())
            for _ in range(40)
        ]
    )
    assert ours == pytest.approx(math.sqrt(2 / fans[0]), rel=0.02)
    assert ours == pytest.approx(theirs, rel=0.03)
