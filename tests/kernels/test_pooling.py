"""Max, average and global-average pooling (and the NCHW <-> rows transposes) against float64
references, finite differences, torch and thread counts."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from fastnn.kernels.conv import conv_output_size
from fastnn.kernels.layout import nchw_to_rows, rows_to_nchw
from fastnn.kernels.pooling import (
    avgpool2d_backward,
    avgpool2d_forward,
    global_avgpool_backward,
    global_avgpool_forward,
    maxpool2d_backward,
    maxpool2d_forward,
)
from tests import _reference_conv as ref
from tests._gradcheck import numeric_gradients

DTYPES = [np.float32, np.float64]
TOL = {np.float32: {"rtol": 1e-5, "atol": 1e-6}, np.float64: {"rtol": 1e-12, "atol": 1e-13}}

# (N, C, H, W, kernel, stride, pads (top, bottom, left, right))
CASES = [
    (1, 1, 4, 4, (2, 2), (2, 2), (0, 0, 0, 0)),
    (2, 3, 7, 9, (3, 3), (2, 2), (1, 1, 1, 1)),
    (3, 2, 6, 5, (2, 3), (1, 2), (1, 0, 1, 1)),  # overlapping windows, asymmetric padding
    (2, 3, 5, 8, (3, 2), (3, 1), (0, 1, 1, 0)),
    (2, 4, 1, 15, (1, 4), (1, 3), (0, 0, 2, 1)),  # 1-D
    (16, 12, 24, 24, (2, 2), (2, 2), (0, 0, 0, 0)),  # parallel planes
    (3, 2, 7, 9, (2, 2), (2, 2), (0, 0, 0, 0)),  # the unpadded 2x2 stride-2 sweep, odd sizes
    (2, 3, 1, 11, (1, 2), (1, 2), (0, 0, 0, 0)),  # the unpadded 1x2 stride-2 sweep (1-D)
    (2, 2, 5, 6, (2, 2), (2, 2), (0, 1, 0, 0)),  # 2x2 stride 2, bottom padding only: not that sweep
    (2, 3, 1, 11, (1, 2), (1, 2), (0, 0, 0, 1)),  # 1x2 stride 2, right padding only
    (2, 3, 1, 67, (1, 2), (1, 2), (0, 0, 0, 0)),  # backward in tiled rows (>= 32 windows), a column past
    (2, 2, 5, 70, (2, 2), (2, 2), (0, 0, 0, 0)),  # tiled rows, 2x2: a row past the last window
    (2, 2, 1, 100, (1, 3), (1, 3), (0, 0, 0, 0)),  # kernel 3: not the tiled rows
]
IDS = [f"case{i}" for i in range(len(CASES))]


def _x(case, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(case[:4]).astype(dtype)


def _out_shape(case):
    n, c, h, w, (kh, kw), (sh, sw), pads = case
    return n, c, conv_output_size(h, kh, sh, pads[0], pads[1]), conv_output_size(w, kw, sw, pads[2], pads[3])


def _geometry(case):
    _, _, _, _, (kh, kw), (sh, sw), pads = case
    return kh, kw, sh, sw, pads[0], pads[2]


def max_forward(case, x):
    y = np.full(_out_shape(case), np.nan, x.dtype)
    argmax = np.full(y.shape, -7, np.int32)
    maxpool2d_forward(x, y, argmax, *_geometry(case))
    return y, argmax


def max_backward(case, x, grad_y):
    _, argmax = max_forward(case, x)
    grad_x = np.full_like(x, np.nan)
    maxpool2d_backward(argmax, grad_y, grad_x, *_geometry(case))
    return grad_x


def avg_forward(case, x, include_pad=True):
    y = np.full(_out_shape(case), np.nan, x.dtype)
    avgpool2d_forward(x, y, *_geometry(case), include_pad)
    return y


def avg_backward(case, x, grad_y, include_pad=True):
    grad_x = np.full_like(x, np.nan)
    avgpool2d_backward(grad_y, grad_x, *_geometry(case), include_pad)
    return grad_x


def _ref(case):
    return dict(kernel=case[4], stride=case[5], pads=case[6])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_maxpool_matches_reference(case, dtype):
    x = _x(case, dtype)
    y, argmax = max_forward(case, x)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, ref.maxpool2d_forward(x, **_ref(case)), **TOL[dtype])
    np.testing.assert_array_equal(
        np.take_along_axis(x.reshape(*x.shape[:2], -1), argmax.reshape(*argmax.shape[:2], -1), axis=2).reshape(y.shape),
        y,
    )
    grad_y = _x((*y.shape, *case[4:]), dtype, seed=1)
    grad_x = max_backward(case, x, grad_y)
    assert grad_x.dtype == dtype
    np.testing.assert_allclose(grad_x, ref.maxpool2d_backward(x, grad_y, **_ref(case)), **TOL[dtype])


@pytest.mark.parametrize("include_pad", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_avgpool_matches_reference(case, dtype, include_pad):
    x = _x(case, dtype)
    y = avg_forward(case, x, include_pad)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, ref.avgpool2d_forward(x, **_ref(case), count_include_pad=include_pad), **TOL[dtype])
    grad_y = _x((*y.shape, *case[4:]), dtype, seed=1)
    grad_x = avg_backward(case, x, grad_y, include_pad)
    assert grad_x.dtype == dtype
    np.testing.assert_allclose(
        grad_x, ref.avgpool2d_backward(x, grad_y, **_ref(case), count_include_pad=include_pad), **TOL[dtype]
    )


def test_maxpool_propagates_nan():
    case = CASES[0]
    x = _x(case, np.float64)
    x[0, 0, 1, 0] = np.nan
    y, argmax = max_forward(case, x)
    assert np.isnan(y[0, 0, 0, 0]) and argmax[0, 0, 0, 0] == 4 and np.all(np.isfinite(y[0, 0, 1:]))


def _first_argmax(x, case):
    """Flat index h * W + w of each window's first maximum, a NaN counting as the maximum (torch)."""
    _, _, h, w, (kh, kw), (sh, sw), (top, _, left, _) = case
    out = np.empty(_out_shape(case), np.int64)
    for n, c, a, b in np.ndindex(out.shape):
        rows = range(max(0, a * sh - top), min(h, a * sh - top + kh))
        cols = range(max(0, b * sw - left), min(w, b * sw - left + kw))
        flat = [(r * w + q, x[n, c, r, q]) for r in rows for q in cols]
        nans = [k for k, v in flat if np.isnan(v)]
        out[n, c, a, b] = nans[0] if nans else max(flat, key=lambda kv: (kv[1], -kv[0]))[0]
    return out


@pytest.mark.parametrize(
    "case",
    [CASES[1], CASES[4], CASES[5], CASES[6], CASES[7]],
    ids=["padded", "1d", "parallel", "pairs-2x2", "pairs-1x2"],
)
def test_maxpool_ties_and_nan_planes_take_the_first_maximum(case):
    """Ties (rounded values) pick the first maximum; planes holding a NaN (the exact NaN path)
    sit beside NaN-free planes (the vectorised path) and give NaN with the first NaN's index."""
    x = np.round(_x(case, np.float32, seed=3))
    np.testing.assert_array_equal(max_forward(case, x)[1], _first_argmax(x, case))  # ties in NaN-free sweeps
    x[0, 0, 0, 1] = x[-1, -1, 0, 2] = x[-1, -1, 0, 3] = np.nan
    y, argmax = max_forward(case, x)
    np.testing.assert_array_equal(argmax, _first_argmax(x, case))
    np.testing.assert_array_equal(
        y,
        np.take_along_axis(x.reshape(*x.shape[:2], -1), argmax.reshape(*argmax.shape[:2], -1), axis=2).reshape(y.shape),
    )
    assert np.isnan(y[0, 0]).any() and np.isnan(y[-1, -1]).any() and np.isfinite(y[1:-1]).all()


@pytest.mark.parametrize("case", [CASES[4], CASES[6], *CASES[10:]], ids=["1d-overlap", "2x2", *IDS[10:]])
def test_maxpool_backward_routes_to_the_argmax(case):
    """grad_x is exactly zeros with grad_y stored at each window's argmax, ties and NaN included
    (the tiled rows' one sweep and the fill and scatter alike)."""
    x = np.round(_x(case, np.float32, seed=3))
    x[0, 0, 0, 1] = x[-1, -1, 0, 3] = np.nan
    grad_y = _x(_out_shape(case), np.float32, seed=4)
    _, argmax = max_forward(case, x)
    expected = np.zeros(x.shape, np.float32).reshape(*x.shape[:2], -1)
    flat_grad = grad_y.reshape(*grad_y.shape[:2], -1)
    for n, c in np.ndindex(*x.shape[:2]):
        np.add.at(expected[n, c], argmax[n, c].ravel(), flat_grad[n, c])
    np.testing.assert_array_equal(max_backward(case, x, grad_y), expected.reshape(x.shape))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 5, 4, 7), (2, 3, 1, 9), (16, 32, 16, 16)])
def test_global_avgpool_matches_reference(shape, dtype):
    x = _x(shape, dtype)
    y = np.full(shape[:2], np.nan, dtype)
    global_avgpool_forward(x, y)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, ref.global_avgpool_forward(x), **TOL[dtype])
    grad_y = _x(shape[:2], dtype, seed=1)
    grad_x = np.full_like(x, np.nan)
    global_avgpool_backward(grad_y, grad_x)
    np.testing.assert_allclose(grad_x, ref.global_avgpool_backward(shape, grad_y), **TOL[dtype])


@pytest.mark.parametrize("kind", ["avg", "avg-exclude-pad", "global"])
def test_backward_finite_differences(kind):
    case = CASES[2]
    x = _x(case, np.float64, seed=3)
    if kind == "global":
        upstream = _x(case[:2], np.float64, seed=4)
        grad_x = np.empty_like(x)
        global_avgpool_backward(upstream, grad_x)

        def objective(x_):
            y = np.empty(case[:2])
            global_avgpool_forward(x_, y)
            return np.sum(upstream * y)
    else:
        include_pad = kind == "avg"
        upstream = _x(_out_shape(case), np.float64, seed=4)
        grad_x = avg_backward(case, x, upstream, include_pad)

        def objective(x_):
            return np.sum(upstream * avg_forward(case, x_, include_pad))

    np.testing.assert_allclose(grad_x, numeric_gradients(objective, [x])[0], rtol=1e-6, atol=1e-8)


def test_maxpool_finite_differences():
    case = CASES[2]
    x = _x(case, np.float64, seed=3)  # distinct values: the max is differentiable
    upstream = _x(_out_shape(case), np.float64, seed=4)

    def objective(x_):
        return np.sum(upstream * max_forward(case, x_)[0])

    np.testing.assert_allclose(
        max_backward(case, x, upstream), numeric_gradients(objective, [x])[0], rtol=1e-6, atol=1e-8
    )


def test_bit_identical_on_one_and_two_threads():
    case = CASES[5]
    x = _x(case, np.float32, seed=5)
    grad_y = _x(_out_shape(case), np.float32, seed=6)
    threads = numba.get_num_threads()
    try:
        results = []
        for n in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(n)
            results.append((max_backward(case, x, grad_y), avg_backward(case, x, grad_y)))
    finally:
        numba.set_num_threads(threads)
    for a, c in zip(*results):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("case", [CASES[1], (2, 4, 1, 15, (1, 4), (1, 3), (0, 0, 2, 2))], ids=["2d", "1d"])
def test_matches_torch(case):
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    x = _x(case, np.float64, seed=9)
    _, _, _, _, kernel, stride, pads = case
    grad_y = _x(_out_shape(case), np.float64, seed=10)
    symmetric = (pads[0], pads[2])
    assert pads[1] == pads[0] and pads[3] == pads[2], "torch pads symmetrically"
    for mine, theirs in (
        (
            lambda: (max_forward(case, x)[0], max_backward(case, x, grad_y)),
            lambda t: functional.max_pool2d(t, kernel, stride, symmetric),
        ),
        (
            lambda: (avg_forward(case, x), avg_backward(case, x, grad_y)),
            lambda t: functional.avg_pool2d(t, kernel, stride, symmetric),
        ),
        (
            lambda: (avg_forward(case, x, False), avg_backward(case, x, grad_y, False)),
            lambda t: functional.avg_pool2d(t, kernel, stride, symmetric, count_include_pad=False),
        ),
    ):
        xt = torch.tensor(x, requires_grad=True)
        yt = theirs(xt)
        yt.backward(torch.tensor(grad_y))
        y, grad_x = mine()
        np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(grad_x, xt.grad.numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 7), (2, 4, 1), (32, 16, 256)])
def test_nchw_rows_round_trip(shape, dtype):
    x = _x(shape, dtype)
    rows = np.full((shape[0] * shape[2], shape[1]), np.nan, dtype)
    nchw_to_rows(x, rows)
    np.testing.assert_array_equal(rows, ref.nchw_to_rows(x))
    back = np.full_like(x, np.nan)
    rows_to_nchw(rows, back)
    np.testing.assert_array_equal(back, x)
