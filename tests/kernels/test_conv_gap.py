"""Convolution -> activation -> global average pooling fused (kernels.conv_gap): the float64
reference, the unfused kernels bit for bit (NaN included), finite differences, thread counts
and the refused shapes."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from fastnn.kernels.activations import IDENTITY, RELU, SIGMOID, TANH
from fastnn.kernels.conv import conv2d_backward, conv2d_forward, conv2d_scratch_shapes, conv_output_size
from fastnn.kernels.conv_gap import conv2d_gap_backward, conv2d_gap_forward
from fastnn.kernels.pooling import global_avgpool_backward, global_avgpool_forward
from tests import _reference_conv as ref
from tests._gradcheck import numeric_gradients

DTYPES = [np.float32, np.float64]
CODES = {"identity": IDENTITY, "relu": RELU, "tanh": TANH, "sigmoid": SIGMOID}
TOL = {np.float32: {"rtol": 2e-4, "atol": 2e-5}, np.float64: {"rtol": 1e-11, "atol": 1e-12}}

# (N, C, H, W, O, (KH, KW), stride, (pad_top, pad_left), dilation, groups, activation)
CASES = {
    "1d relu, odd length": (2, 3, 1, 11, 5, (1, 3), (1, 1), (0, 1), (1, 1), 1, "relu"),
    "2d tanh, odd sizes": (3, 2, 7, 9, 3, (3, 3), (1, 1), (1, 1), (1, 1), 1, "tanh"),
    "batch 1, sigmoid": (1, 2, 6, 8, 2, (2, 3), (1, 1), (0, 1), (1, 1), 1, "sigmoid"),
    "groups, stride, dilation, identity": (2, 4, 9, 12, 6, (2, 2), (1, 2), (1, 0), (2, 1), 2, "identity"),
    "parallel planes (the 1-D CNN's shape)": (16, 32, 1, 128, 32, (1, 5), (1, 1), (0, 2), (1, 1), 1, "relu"),
}


def _setup(case, dtype, seed=0):
    n, c, h, w_, o, (kh, kw), stride, pads, dil, groups, _ = case
    oh = conv_output_size(h, kh, stride[0], pads[0], pads[0], dil[0])
    ow = conv_output_size(w_, kw, stride[1], pads[1], pads[1], dil[1])
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w_)).astype(dtype)
    w = (rng.standard_normal((o, c // groups, kh, kw)) * 0.5).astype(dtype)
    b = (rng.standard_normal(o) * 0.1).astype(dtype)
    gm = rng.standard_normal((n, o)).astype(dtype)
    return x, w, b, gm, (n, o, oh, ow)


def _geometry(case):
    _, _, _, _, _, _, stride, pads, dil, groups, act = case
    return (*stride, *pads, *dil, groups, CODES[act], 0.0)


def _scratch(case, out, dtype):
    n, c, _, _, o, (kh, kw), *_ = case
    return [np.zeros(s, dtype) for s in conv2d_scratch_shapes(n, c, o, kh, kw, out[2], out[3])]


def fused(case, x, w, b, gm, out, need_grad_x=True):
    """(mean, grad_x, grad_w, grad_b) of the fused kernels."""
    col, zcol, partial_b = _scratch(case, out, x.dtype)
    y = np.full(out, np.nan, x.dtype)
    mean = np.full(out[:2], np.nan, x.dtype)
    conv2d_gap_forward(x, w, b, col, zcol, y, mean, *_geometry(case))
    if not np.isnan(y).all():
        raise AssertionError("the fused forward wrote the convolution's full output")
    grad_x, grad_w, grad_b = np.full_like(x, np.nan), np.full_like(w, np.nan), np.full_like(b, np.nan)
    conv2d_gap_backward(x, w, y, gm, col, zcol, grad_x, grad_w, grad_b, partial_b, *_geometry(case), need_grad_x, True)
    return mean, grad_x, grad_w, grad_b


def unfused(case, x, w, b, gm, out, need_grad_x=True):
    """The same from conv2d_forward (y as z), global_avgpool_forward/backward and conv2d_backward."""
    col, zcol, partial_b = _scratch(case, out, x.dtype)
    y = np.zeros(out, x.dtype)
    mean = np.zeros(out[:2], x.dtype)
    conv2d_forward(x, w, b, col, zcol, y, y, *_geometry(case))
    global_avgpool_forward(y, mean)
    grad_y = np.zeros(out, x.dtype)
    global_avgpool_backward(gm, grad_y)
    grad_x, grad_w, grad_b = np.full_like(x, np.nan), np.zeros_like(w), np.zeros_like(b)
    conv2d_backward(
        x, w, y, y, grad_y, col, zcol, grad_x, grad_w, grad_b, partial_b, *_geometry(case), need_grad_x, True
    )
    return mean, grad_x, grad_w, grad_b


def _reference(case, x, w, b, gm):
    _, _, _, _, _, _, stride, pads, dil, groups, act = case
    full_pads = (pads[0], pads[0], pads[1], pads[1])
    mean = ref.conv_gap_forward(x, w, b, stride, full_pads, dil, groups, act)
    return mean, ref.conv_gap_backward(x, w, b, gm, stride, full_pads, dil, groups, act)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CASES))
def test_equals_the_unfused_kernels_bit_for_bit(name, dtype):
    case = CASES[name]
    x, w, b, gm, out = _setup(case, dtype)
    for got, want in zip(fused(case, x, w, b, gm, out), unfused(case, x, w, b, gm, out)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CASES))
def test_matches_the_reference(name, dtype):
    case = CASES[name]
    x, w, b, gm, out = _setup(case, dtype, seed=1)
    mean, grad_x, grad_w, grad_b = fused(case, x, w, b, gm, out)
    want_mean, (want_gx, want_gw, want_gb) = _reference(case, x, w, b, gm)
    assert mean.dtype == grad_x.dtype == grad_w.dtype == grad_b.dtype == dtype
    for got, want in ((mean, want_mean), (grad_x, want_gx), (grad_w, want_gw), (grad_b, want_gb)):
        np.testing.assert_allclose(got, want, **TOL[dtype])


def test_first_layer_leaves_grad_x_alone():
    case = CASES["1d relu, odd length"]
    x, w, b, gm, out = _setup(case, np.float64)
    got = fused(case, x, w, b, gm, out, need_grad_x=False)
    assert np.isnan(got[1]).all()
    want = unfused(case, x, w, b, gm, out, need_grad_x=False)
    np.testing.assert_array_equal(got[2], want[2])
    np.testing.assert_array_equal(got[3], want[3])


@pytest.mark.parametrize("name", ["1d relu, odd length", "2d tanh, odd sizes", "groups, stride, dilation, identity"])
def test_finite_differences(name):
    case = CASES[name]
    x, w, b, gm, out = _setup(case, np.float64, seed=2)

    def objective(x_, w_, b_):
        return float((fused(case, x_, w_, b_, gm, out)[0] * gm).sum())

    _, grad_x, grad_w, grad_b = fused(case, x, w, b, gm, out)
    for got, want in zip((grad_x, grad_w, grad_b), numeric_gradients(objective, [x, w, b])):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bit_identical_on_one_and_two_threads(dtype):
    case = CASES["parallel planes (the 1-D CNN's shape)"]
    x, w, b, gm, out = _setup(case, dtype, seed=3)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = fused(case, x, w, b, gm, out)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = fused(case, x, w, b, gm, out)
    finally:
        numba.set_num_threads(before)
    for a, c in zip(one, two):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("name", ["groups, stride, dilation, identity", "2d tanh, odd sizes"])
def test_nan_and_inf_as_the_unfused_kernels(name):
    """A NaN (or inf) in the input reaches the mean and the gradients exactly as through the
    layers' own kernels, bit for bit (relu maps NaN to 0: its cases are not used here)."""
    case = CASES[name]
    for bad in (np.nan, np.inf):
        x, w, b, gm, out = _setup(case, np.float64)
        x[0, 0, 0, 2] = bad
        got, want = fused(case, x, w, b, gm, out), unfused(case, x, w, b, gm, out)
        if np.isnan(bad) or case[-1] == "identity":  # tanh(inf) is 1: finite from there on
            assert not np.isfinite(got[0]).all() and not np.isfinite(got[2]).all()
        for a, c in zip(got, want):
            np.testing.assert_array_equal(a, c)


def test_refuses_a_batch_over_one_pass_and_a_wrong_mean():
    case = CASES["1d relu, odd length"]
    x, w, b, gm, out = _setup(case, np.float64)
    col, zcol, _ = _scratch(case, out, np.float64)
    y = np.zeros(out)
    with pytest.raises(ValueError, match="one pass"):
        conv2d_gap_forward(x, w, b, np.zeros((col.shape[0], col.shape[1] - 1)), zcol, y, gm, *_geometry(case))
    with pytest.raises(ValueError, match="mean must be"):
        conv2d_gap_forward(x, w, b, col, zcol, y, np.zeros((out[0], out[1] - 1)), *_geometry(case))
