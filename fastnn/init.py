"""Weight initialisers: fill an array (a view of the model's parameter buffer) in place.

Every random initialiser draws from the counter-based generator of ``fastnn.kernels.rng``
with counters (seed, stream, INIT_STEP): the same seed and stream give the same weights on any
thread count and device; different streams (one per parameter) give independent weights.
``INIT_STEP`` keeps the draws apart from dropout masks and shuffles, whose steps count from 0.

Fans follow fastnn's layouts: a Dense weight is ``(in_features, out_features)``, so ``fan_in =
shape[0]``, ``fan_out = shape[1]`` (PyTorch's Linear stores the transpose); a convolution kernel is
PyTorch's ``(out_channels, in_channels / groups, *kernel)``, so ``fan_in = shape[1] * receptive``
and ``fan_out = shape[0] * receptive`` as ``torch.nn.init`` computes them; a 1-D array has
``fan_in = fan_out = len``.

- zeros, ones, constant(value): fixed values;
- uniform(a, b), normal(mean, std): U(a, b), N(mean, std^2);
- xavier_uniform / xavier_normal (Glorot): variance gain^2 * 2 / (fan_in + fan_out);
- he_uniform / he_normal (Kaiming): variance gain^2 / fan (gain sqrt(2) for relu);
- lecun_uniform / lecun_normal (for SELU): variance gain^2 / fan_in (gain 1);
- orthogonal: Q of a QR of a normal matrix, rows or columns orthonormal, times gain.

Defaults by activation (:func:`default_init`): He normal for the ReLU family (relu,
leaky_relu, elu, gelu, gelu_tanh: these keep about half the variance, so the weights double
it), LeCun normal for SELU (its self-normalising fixed point assumes it), Xavier uniform for
identity, tanh, sigmoid, softmax and log_softmax (Keras's default; symmetric around 0).
Aliases: glorot_uniform, glorot_normal, kaiming_uniform, kaiming_normal.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .kernels.activations import ACTIVATION_TABLE
from .kernels.rng import fill_normal, fill_normal_numpy, fill_uniform, fill_uniform_numpy

#: the ``step`` counter of every initialiser's draws (training steps and epochs start at 0)
INIT_STEP = 1 << 62
#: arrays of at least this many elements fill with Numba's threaded kernels (``fill_uniform``,
#: ``fill_normal``), shorter ones with NumPy (``fill_*_numpy``): nothing to compile in a cold start
#: (the two kernels compile in about 2 s). Uniform fills give the same bits either way, normal fills
#: values within a few ulps (NumPy's log/cos/sin round differently). NumPy's normal fill of 2^20
#: float32 takes about 10 ms, the kernel's 6 ms on 2 threads
PARALLEL_FILL_MIN = 1 << 24

_LINEAR_GAIN_NAMES = (
    "linear",
    "identity",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "sigmoid",
    "softmax",
    "log_softmax",
)
#: activations without a PyTorch gain, treated like ReLU (a common approximation)
_RELU_LIKE = ("elu", "gelu", "gelu_tanh")


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The recommended gain for ``nonlinearity``, as ``torch.nn.init.calculate_gain``.

    linear/identity/conv*/sigmoid (and softmax, log_softmax): 1; tanh: 5/3; relu: sqrt(2);
    leaky_relu: sqrt(2 / (1 + param^2)); selu: 3/4. elu, gelu, gelu_tanh (no PyTorch gain):
    sqrt(2), as for relu.

    Parameters
    ----------
    nonlinearity : str
        The activation's name.
    param : float, optional
        leaky_relu's negative slope (default 0.01).

    Returns
    -------
    float
        The gain.

    Raises
    ------
    ValueError
        For an unknown name (with the close matches).

    Examples
    --------
    >>> from fastnn import init
    >>> init.calculate_gain("tanh"), round(init.calculate_gain("relu"), 4)
    (1.6666666666666667, 1.4142)
    """
    if nonlinearity in _LINEAR_GAIN_NAMES:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu" or nonlinearity in _RELU_LIKE:
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, bool) or not isinstance(param, (int, float)):
            raise ValueError(f"param (the negative slope of leaky_relu) must be a number, got {param!r}")
        else:
            slope = float(param)
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    names = _LINEAR_GAIN_NAMES + ("tanh", "relu", "leaky_relu", "selu") + _RELU_LIKE
    raise ValueError(
        f"nonlinearity must be one of {', '.join(names)}; got {nonlinearity!r}" + _suggest(nonlinearity, names)
    )


def compute_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """The fans of a parameter in fastnn's layouts (a Dense weight is ``(in, out)``, a convolution
    kernel ``(out, in / groups, *kernel)`` as PyTorch's).

    Parameters
    ----------
    shape : tuple of int
        The parameter's shape; 2-D: a Dense weight; more: a convolution kernel, the dimensions
        after the first two its receptive field.

    Returns
    -------
    fan_in, fan_out : int
        2-D: ``shape[0]`` and ``shape[1]``; a kernel: ``shape[1] * receptive`` and
        ``shape[0] * receptive`` (``torch.nn.init``'s); a 1-D shape gives its length twice.

    Examples
    --------
    >>> from fastnn import init
    >>> init.compute_fans((784, 256)), init.compute_fans((10,)), init.compute_fans((24, 4, 5, 5))
    ((784, 256), (10, 10), (100, 600))
    """
    shape = tuple(shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = int(np.prod(shape[2:]))  # a convolution kernel (out, in / groups, *kernel), as torch
    return shape[1] * receptive, shape[0] * receptive


def _suggest(name, choices) -> str:
    close = difflib.get_close_matches(str(name), list(choices), n=3)
    return f". Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _fill(out: np.ndarray, kind: str, seed: int, stream: int, a: float, b: float) -> np.ndarray:
    """Fill ``out`` (any shape, float32/float64) with U(a, b) or N(a, b^2) from the counter RNG."""
    if not isinstance(out, np.ndarray) or out.dtype not in (np.float32, np.float64):
        raise TypeError(
            "out must be a float32 or float64 numpy array, got "
            f"{type(out).__name__}{'' if not hasattr(out, 'dtype') else ' of ' + str(out.dtype)}"
        )
    contiguous = out.flags.c_contiguous
    flat = out.reshape(-1) if contiguous else np.empty(out.size, out.dtype)  # a view when contiguous
    _fill_kernel(kind, flat.size)(flat, int(seed), int(stream), INIT_STEP, float(a), float(b))
    if not contiguous:
        out[...] = flat.reshape(out.shape)
    return out


def _fill_kernel(kind: str, size: int):
    """The uniform or normal fill kernel for ``size`` elements (see :data:`PARALLEL_FILL_MIN`)."""
    if size >= PARALLEL_FILL_MIN:
        return fill_uniform if kind == "uniform" else fill_normal
    return fill_uniform_numpy if kind == "uniform" else fill_normal_numpy


def _fans(out, fan_in, fan_out):
    default_in, default_out = compute_fans(out.shape)
    return (default_in if fan_in is None else int(fan_in)), (default_out if fan_out is None else int(fan_out))


def _check_positive(value, name):
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


# ---------------------------------------------------------------------------- fixed values


def constant(out: np.ndarray, value: float) -> np.ndarray:
    """Fill ``out`` with ``value``.

    Parameters
    ----------
    out : ndarray
        The array to fill, any shape, in place.
    value : float
        The value.

    Returns
    -------
    ndarray
        ``out``.

    Examples
    --------
    >>> from fastnn import init
    >>> init.constant(np.empty(3, np.float32), 0.5)
    array([0.5, 0.5, 0.5], dtype=float32)
    """
    out[...] = value
    return out


def zeros(out: np.ndarray) -> np.ndarray:
    """Fill ``out`` with zeros.

    Parameters
    ----------
    out : ndarray
        The array to fill, in place.

    Returns
    -------
    ndarray
        ``out``.

    Examples
    --------
    >>> from fastnn import init
    >>> init.zeros(np.ones(2))
    array([0., 0.])
    """
    return constant(out, 0.0)


def ones(out: np.ndarray) -> np.ndarray:
    """Fill ``out`` with ones.

    Parameters
    ----------
    out : ndarray
        The array to fill, in place.

    Returns
    -------
    ndarray
        ``out``.

    Examples
    --------
    >>> from fastnn import init
    >>> init.ones(np.zeros(2, np.float32))
    array([1., 1.], dtype=float32)
    """
    return constant(out, 1.0)


# ---------------------------------------------------------------------------- plain distributions


def uniform(out: np.ndarray, a: float = 0.0, b: float = 1.0, *, seed: int = 0, stream: int = 0) -> np.ndarray:
    """Fill ``out`` with U(a, b) draws from the counter-based RNG.

    Parameters
    ----------
    out : ndarray
        float32 or float64 array, any shape, filled in place.
    a, b : float, default 0.0 and 1.0
        The interval, a < b.
    seed : int, default 0
        The model's seed (the counter-based RNG's first counter).
    stream : int, default 0
        One per parameter: different streams give independent draws.

    Returns
    -------
    ndarray
        ``out``, filled.

    Raises
    ------
    ValueError
        When ``a >= b``.
    TypeError
        When ``out`` is not a float32/float64 NumPy array.

    Examples
    --------
    >>> from fastnn import init
    >>> w = init.uniform(np.empty((2, 3), np.float32), -1.0, 1.0, seed=0)
    >>> w.dtype, bool((np.abs(w) <= 1).all())
    (dtype('float32'), True)
    >>> bool((init.uniform(np.empty((2, 3), np.float32), -1.0, 1.0, seed=0) == w).all())   # same seed, same bits
    True
    """
    if not a < b:
        raise ValueError(f"uniform needs a < b, got a={a!r}, b={b!r}")
    return _fill(out, "uniform", seed, stream, a, b)


def normal(out: np.ndarray, mean: float = 0.0, std: float = 1.0, *, seed: int = 0, stream: int = 0) -> np.ndarray:
    """Fill ``out`` with N(mean, std^2) draws from the counter-based RNG.

    Parameters
    ----------
    out : ndarray
        float32 or float64 array, any shape, filled in place.
    mean : float, default 0.0
        The mean.
    std : float, default 1.0
        The standard deviation, >= 0.
    seed : int, default 0
        The model's seed (the counter-based RNG's first counter).
    stream : int, default 0
        One per parameter: different streams give independent draws.

    Returns
    -------
    ndarray
        ``out``, filled.

    Raises
    ------
    ValueError
        When ``std < 0``.

    Examples
    --------
    >>> from fastnn import init
    >>> w = init.normal(np.empty(10000), 1.0, 0.5, seed=3)
    >>> round(float(w.mean()), 1), round(float(w.std()), 1)
    (1.0, 0.5)
    """
    if not std >= 0:
        raise ValueError(f"std must be >= 0, got {std!r}")
    return _fill(out, "normal", seed, stream, mean, std)


# ---------------------------------------------------------------------------- variance scaling


def _scaled(out, std, distribution, seed, stream):
    if distribution == "uniform":
        limit = math.sqrt(3.0) * std  # U(-l, l) has variance l^2 / 3
        return _fill(out, "uniform", seed, stream, -limit, limit)
    return _fill(out, "normal", seed, stream, 0.0, std)


_SCALED_DOC = """    Parameters
    ----------
    out : ndarray
        float32 or float64 array, filled in place.
    fan_in, fan_out : int, optional
        The fans; by default :func:`compute_fans` of ``out.shape``.
    gain : float, optional
        Scales the standard deviation; {gain_default}.{extra}
    seed : int, default 0
        The model's seed (the counter-based RNG's first counter).
    stream : int, default 0
        One per parameter: different streams give independent draws.

    Returns
    -------
    ndarray
        ``out``, filled.

    Examples
    --------
    >>> from fastnn import init
    >>> w = init.{name}(np.empty((400, 300), np.float32), seed=0)
    >>> w.shape, w.dtype, round(float(w.var() / {var}), 1)
    ((400, 300), dtype('float32'), 1.0)
    """
_HE_EXTRA = """
    nonlinearity : str, default "relu"
        The activation that follows (for the default gain).
    negative_slope : float, default 0.0
        leaky_relu's slope (for the default gain).
    mode : {"fan_in", "fan_out"}, default "fan_in"
        The fan that sets the variance: fan_in keeps forward activations, fan_out gradients."""


def _xavier(distribution):
    def init(
        out: np.ndarray,
        fan_in: int | None = None,
        fan_out: int | None = None,
        *,
        gain: float | None = None,
        seed: int = 0,
        stream: int = 0,
    ) -> np.ndarray:
        fi, fo = _fans(out, fan_in, fan_out)
        g = 1.0 if gain is None else gain
        return _scaled(
            out, g * math.sqrt(2.0 / _check_positive(fi + fo, "fan_in + fan_out")), distribution, seed, stream
        )

    init.__name__ = init.__qualname__ = f"xavier_{distribution}"
    init.__doc__ = f"Glorot/Xavier {distribution}: variance gain^2 * 2 / (fan_in + fan_out).\n\n" + _SCALED_DOC.format(
        gain_default="1 by default", extra="", name=init.__name__, var="(2 / 700)"
    )
    return init


def _he(distribution):
    def init(
        out: np.ndarray,
        fan_in: int | None = None,
        fan_out: int | None = None,
        *,
        gain: float | None = None,
        nonlinearity: str = "relu",
        negative_slope: float = 0.0,
        mode: str = "fan_in",
        seed: int = 0,
        stream: int = 0,
    ) -> np.ndarray:
        fi, fo = _fans(out, fan_in, fan_out)
        if mode not in ("fan_in", "fan_out"):
            raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
        fan = _check_positive(fi if mode == "fan_in" else fo, mode)
        g = calculate_gain(nonlinearity, negative_slope) if gain is None else gain
        return _scaled(out, g / math.sqrt(fan), distribution, seed, stream)

    init.__name__ = init.__qualname__ = f"he_{distribution}"
    init.__doc__ = f"He/Kaiming {distribution}: variance gain^2 / fan.\n\n" + _SCALED_DOC.format(
        gain_default="by default calculate_gain(nonlinearity, negative_slope)",
        extra=_HE_EXTRA,
        name=init.__name__,
        var="(2 / 400)",
    )
    return init


def _lecun(distribution):
    def init(
        out: np.ndarray,
        fan_in: int | None = None,
        fan_out: int | None = None,
        *,
        gain: float | None = None,
        seed: int = 0,
        stream: int = 0,
    ) -> np.ndarray:
        fi, _ = _fans(out, fan_in, fan_out)
        g = 1.0 if gain is None else gain
        return _scaled(out, g / math.sqrt(_check_positive(fi, "fan_in")), distribution, seed, stream)

    init.__name__ = init.__qualname__ = f"lecun_{distribution}"
    init.__doc__ = f"LeCun {distribution} (for SELU): variance gain^2 / fan_in.\n\n" + _SCALED_DOC.format(
        gain_default="1 by default", extra="", name=init.__name__, var="(1 / 400)"
    )
    return init


xavier_uniform = _xavier("uniform")
xavier_normal = _xavier("normal")
he_uniform = _he("uniform")
he_normal = _he("normal")
lecun_uniform = _lecun("uniform")
lecun_normal = _lecun("normal")


def orthogonal(
    out: np.ndarray,
    fan_in: int | None = None,
    fan_out: int | None = None,
    *,
    gain: float | None = None,
    seed: int = 0,
    stream: int = 0,
) -> np.ndarray:
    """A (semi-)orthogonal matrix times ``gain``, as ``torch.nn.init.orthogonal_``.

    ``out`` is viewed as ``(shape[0], prod(shape[1:]))``; its rows (if fewer than columns) or
    its columns are orthonormal: Q of the QR decomposition of a seeded normal matrix, with the
    signs fixed by diag(R) so the result is uniformly distributed.

    Parameters
    ----------
    out : ndarray
        At least 2-D, filled in place.
    fan_in, fan_out : int, optional
        Unused (accepted like the other initialisers').
    gain : float, optional
        Scale of the result (1 by default).
    seed : int, default 0
        The model's seed (the counter-based RNG's first counter).
    stream : int, default 0
        One per parameter: different streams give independent draws.

    Returns
    -------
    ndarray
        ``out``, filled.

    Raises
    ------
    ValueError
        When ``out`` has fewer than 2 dimensions.

    Examples
    --------
    >>> from fastnn import init
    >>> q = init.orthogonal(np.empty((3, 3)), seed=0)
    >>> bool(np.allclose(q @ q.T, np.eye(3)))
    True
    """
    del fan_in, fan_out
    if out.ndim < 2:
        raise ValueError(f"orthogonal needs an array of at least 2 dimensions, got shape {out.shape}")
    rows = out.shape[0]
    cols = out.size // rows
    flat = np.empty(rows * cols, np.float64)
    _fill_kernel("normal", flat.size)(flat, int(seed), int(stream), INIT_STEP, 0.0, 1.0)
    a = flat.reshape(rows, cols)
    if rows < cols:
        a = a.T
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    out[...] = ((1.0 if gain is None else gain) * q).reshape(out.shape)
    return out


# ---------------------------------------------------------------------------- dispatch


@dataclass(frozen=True)
class Initializer:
    """A row of :data:`INITIALIZERS`: the function and which of :func:`initialize`'s arguments it takes.

    Parameters
    ----------
    function : callable
        ``function(out, ...) -> out``.
    random : bool
        It takes ``seed=`` and ``stream=``.
    fans : bool
        It takes ``fan_in`` and ``fan_out``.
    gain : bool
        It takes ``gain=``.

    Examples
    --------
    >>> from fastnn import init
    >>> init.INITIALIZERS["he_normal"].gain, init.INITIALIZERS["zeros"].random
    (True, False)
    """

    function: Callable[..., np.ndarray]
    random: bool  # takes seed=, stream=
    fans: bool  # takes fan_in, fan_out
    gain: bool  # takes gain=


_SCALED = {"random": True, "fans": True, "gain": True}

#: name -> Initializer; drives :func:`initialize` and the names Dense(init=...) accepts
INITIALIZERS: dict[str, Initializer] = {
    "zeros": Initializer(zeros, random=False, fans=False, gain=False),
    "ones": Initializer(ones, random=False, fans=False, gain=False),
    "constant": Initializer(constant, random=False, fans=False, gain=False),
    "uniform": Initializer(uniform, random=True, fans=False, gain=False),
    "normal": Initializer(normal, random=True, fans=False, gain=False),
    "xavier_uniform": Initializer(xavier_uniform, **_SCALED),
    "xavier_normal": Initializer(xavier_normal, **_SCALED),
    "glorot_uniform": Initializer(xavier_uniform, **_SCALED),
    "glorot_normal": Initializer(xavier_normal, **_SCALED),
    "he_uniform": Initializer(he_uniform, **_SCALED),
    "he_normal": Initializer(he_normal, **_SCALED),
    "kaiming_uniform": Initializer(he_uniform, **_SCALED),
    "kaiming_normal": Initializer(he_normal, **_SCALED),
    "lecun_uniform": Initializer(lecun_uniform, **_SCALED),
    "lecun_normal": Initializer(lecun_normal, **_SCALED),
    "orthogonal": Initializer(orthogonal, **_SCALED),
}

#: activation name -> default initialiser name (see the module note): the ``init`` column of
#: the activation table, plus "linear", another name of identity
DEFAULT_INIT = {row.name: row.init for row in ACTIVATION_TABLE}
DEFAULT_INIT["linear"] = DEFAULT_INIT["identity"]


def default_init(activation: str | None) -> str:
    """The initialiser fastnn uses for the weights of a layer followed by ``activation``.

    Parameters
    ----------
    activation : str or None
        An activation name; None is the identity.

    Returns
    -------
    str
        He normal for the ReLU family, LeCun normal for SELU, Xavier uniform otherwise.

    Examples
    --------
    >>> from fastnn import init
    >>> init.default_init("relu"), init.default_init(None)
    ('he_normal', 'xavier_uniform')
    """
    return DEFAULT_INIT.get("identity" if activation is None else str(activation), "xavier_uniform")


def get_initializer(name: str) -> Initializer:
    """The :data:`INITIALIZERS` row of ``name``.

    Parameters
    ----------
    name : str
        An initialiser name.

    Returns
    -------
    Initializer
        Its row.

    Raises
    ------
    ValueError
        For an unknown name (with the close matches).

    Examples
    --------
    >>> from fastnn import init
    >>> init.get_initializer("glorot_uniform").function is init.xavier_uniform
    True
    """
    try:
        return INITIALIZERS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"init must be one of {', '.join(INITIALIZERS)}; got {name!r}" + _suggest(name, INITIALIZERS)
        ) from None


def initialize(
    out: np.ndarray,
    name: str,
    fan_in: int | None = None,
    fan_out: int | None = None,
    seed: int = 0,
    stream: int = 0,
    gain: float | None = None,
    **kwargs,
) -> np.ndarray:
    """Fill ``out`` in place with the initialiser ``name``.

    Arguments an initialiser does not use (fans, seed and stream for the fixed ones) are ignored.

    Parameters
    ----------
    out : ndarray
        float32 or float64 array, filled in place.
    name : str
        A name of :data:`INITIALIZERS`.
    fan_in, fan_out : int, optional
        The fans (default: from ``out.shape``).
    seed : int, default 0
        The model's seed.
    stream : int, default 0
        One per parameter.
    gain : float, optional
        For the variance-scaling initialisers.
    **kwargs
        The function's own arguments: ``value`` (constant), ``a``/``b`` (uniform),
        ``mean``/``std`` (normal), ``nonlinearity``/``negative_slope``/``mode`` (he_*).

    Returns
    -------
    ndarray
        ``out``.

    Raises
    ------
    ValueError
        For an unknown name, ``gain`` given to one without a gain, or an unknown keyword.

    Examples
    --------
    >>> from fastnn import init
    >>> init.initialize(np.empty(2), "constant", value=3.0)
    array([3., 3.])
    >>> init.initialize(np.empty((4, 2), np.float32), "he_normal", seed=1, stream=7).shape
    (4, 2)
    """
    spec = get_initializer(name)
    call = dict(kwargs)
    if spec.random:
        call.update(seed=seed, stream=stream)
    if spec.fans:
        call.update(fan_in=fan_in, fan_out=fan_out)
    if gain is not None:
        if not spec.gain:
            raise ValueError(
                f"gain does not apply to init {name!r}; it applies to "
                f"{', '.join(n for n, s in INITIALIZERS.items() if s.gain)}"
            )
        call["gain"] = gain
    try:
        return spec.function(out, **call)
    except TypeError as error:
        if "unexpected keyword" not in str(error) and "missing" not in str(error):
            raise
        raise ValueError(f"init {name!r} got unsupported or missing arguments {sorted(kwargs)}: {error}") from None


__all__ = [
    "DEFAULT_INIT",
    "INITIALIZERS",
    "INIT_STEP",
    "Initializer",
    "calculate_gain",
    "compute_fans",
    "constant",
    "default_init",
    "get_initializer",
    "he_normal",
    "he_uniform",
    "initialize",
    "lecun_normal",
    "lecun_uniform",
    "normal",
    "ones",
    "orthogonal",
    "uniform",
    "xavier_normal",
    "xavier_uniform",
    "zeros",
]
