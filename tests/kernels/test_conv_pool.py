"""Convolution -> activation -> max pooling fused (kernels.conv_pool): the float64 reference,
the unfused kernels bit for bit, finite differences, thread counts and the refused shapes."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from fastnn.kernels.activations import IDENTITY, RELU, SIGMOID, TANH
from fastnn.kernels.conv import (
    conv2d_backward,
    conv2d_forward,
    conv2d_scratch_shapes,
    conv_output_size,
    is_shifted_forward,
)
from fastnn.kernels.conv_pool import conv2d_maxpool_backward, conv2d_maxpool_forward
from fastnn.kernels.pooling import maxpool2d_backward, maxpool2d_forward
from tests import _reference_conv as ref
from tests._gradcheck import numeric_gradients

DTYPES = [np.float32, np.float64]
CODES = {"identity": IDENTITY, "relu": RELU, "tanh": TANH, "sigmoid": SIGMOID}
TOL = {np.float32: {"rtol": 2e-4, "atol": 2e-5}, np.float64: {"rtol": 1e-11, "atol": 1e-12}}

# (N, C, H, W, O, (KH, KW), stride, (pad_top, pad_left), dilation, groups, activation, pool_h)
CASES = {
    "1d relu, odd length": (2, 3, 1, 11, 4, (1, 3), (1, 1), (0, 1), (1, 1), 1, "relu", 1),
    "2d tanh 2x2, odd rows": (3, 2, 7, 9, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1, "tanh", 2),
    "batch 1, sigmoid": (1, 2, 6, 8, 2, (2, 3), (1, 1), (0, 1), (1, 1), 1, "sigmoid", 2),
    "groups, stride, dilation, identity": (2, 4, 9, 12, 6, (2, 2), (1, 2), (1, 0), (2, 1), 2, "identity", 1),
    "2d relu 1x2 windows": (2, 3, 5, 10, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1, "relu", 1),
    "parallel planes (the 1-D CNN's shape)": (16, 16, 1, 256, 16, (1, 5), (1, 1), (0, 2), (1, 1), 1, "relu", 1),
    # 1-D, stride 1, one group, over THIN_FORWARD_WEIGHTS: conv.is_shifted_forward (the per-sample fused path)
    "shifted, dilated, odd length, chunks of 3": (19, 18, 1, 21, 16, (1, 3), (1, 1), (0, 2), (1, 2), 1, "tanh", 1),
    "shifted, batch 1, odd channels, valid": (1, 20, 1, 16, 11, (1, 5), (1, 1), (0, 0), (1, 1), 1, "sigmoid", 1),
    "shifted, identity, padding over the kernel": (2, 17, 1, 9, 10, (1, 5), (1, 1), (0, 4), (1, 1), 1, "identity", 1),
    # O x C over 1,200: the weight gradient's transposed form (conv._NT_SMALL_OUTPUTS); O == C too
    "shifted, transposed weight gradient": (24, 40, 1, 14, 32, (1, 3), (1, 1), (0, 1), (1, 1), 1, "relu", 1),
    "shifted, transposed, as many outputs as inputs": (3, 36, 1, 10, 36, (1, 3), (1, 1), (0, 1), (1, 2), 1, "tanh", 1),
}
#: the cases conv.is_shifted_forward takes (test_shifted_cases_take_the_shifted_forward checks)
SHIFTED = ["parallel planes (the 1-D CNN's shape)", *(k for k in CASES if k.startswith("shifted"))]
SMALL = [k for k in CASES if not k.startswith("parallel")]


def _setup(case, dtype, seed=0):
    n, c, h, w_, o, (kh, kw), stride, pads, dil, groups, act, pool_h = case
    oh = conv_output_size(h, kh, stride[0], pads[0], pads[0], dil[0])
    ow = conv_output_size(w_, kw, stride[1], pads[1], pads[1], dil[1])
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w_)).astype(dtype)
    w = (rng.standard_normal((o, c // groups, kh, kw)) * 0.5).astype(dtype)
    b = (rng.standard_normal(o) * 0.1).astype(dtype)
    gp = rng.standard_normal((n, o, oh // pool_h, ow // 2)).astype(dtype)
    return x, w, b, gp, (n, o, oh, ow)


def _geometry(case):
    _, _, _, _, _, _, stride, pads, dil, groups, act, _ = case
    return (*stride, *pads, *dil, groups, CODES[act], 0.0)


def _scratch(case, out, dtype):
    n, c, _, _, o, (kh, kw), *_ = case
    return [np.zeros(s, dtype) for s in conv2d_scratch_shapes(n, c, o, kh, kw, out[2], out[3])]


def fused(case, x, w, b, gp, out, need_grad_x=True):
    """(pooled, argmax, grad_x, grad_w, grad_b) of the fused kernels."""
    pool_h = case[-1]
    col, zcol, partial_b = _scratch(case, out, x.dtype)
    y = np.full(out, np.nan, x.dtype)
    pshape = (out[0], out[1], out[2] // pool_h, out[3] // 2)
    pooled, argmax = np.full(pshape, np.nan, x.dtype), np.full(pshape, -7, np.int32)
    conv2d_maxpool_forward(x, w, b, col, zcol, y, pooled, argmax, *_geometry(case), pool_h)
    if not np.isnan(y).all():
        raise AssertionError("the fused forward wrote the convolution's full output")
    grad_x, grad_w, grad_b = np.full_like(x, np.nan), np.full_like(w, np.nan), np.full_like(b, np.nan)
    conv2d_maxpool_backward(
        x,
        w,
        y,
        pooled,
        argmax,
        gp,
        col,
        zcol,
        grad_x,
        grad_w,
        grad_b,
        partial_b,
        *_geometry(case),
        need_grad_x,
        True,
        pool_h,
    )
    return pooled, argmax, grad_x, grad_w, grad_b


def unfused(case, x, w, b, gp, out, need_grad_x=True):
    """The same from conv2d_forward (y as z), maxpool2d_forward/backward and conv2d_backward."""
    pool_h = case[-1]
    col, zcol, partial_b = _scratch(case, out, x.dtype)
    y = np.zeros(out, x.dtype)
    pshape = (out[0], out[1], out[2] // pool_h, out[3] // 2)
    pooled, argmax = np.zeros(pshape, x.dtype), np.zeros(pshape, np.int32)
    pool = (pool_h, 2, pool_h, 2, 0, 0)
    conv2d_forward(x, w, b, col, zcol, y, y, *_geometry(case))
    maxpool2d_forward(y, pooled, argmax, *pool)
    grad_y = np.zeros(out, x.dtype)
    maxpool2d_backward(argmax, gp, grad_y, *pool)
    grad_x, grad_w, grad_b = np.full_like(x, np.nan), np.zeros_like(w), np.zeros_like(b)
    conv2d_backward(
        x, w, y, y, grad_y, col, zcol, grad_x, grad_w, grad_b, partial_b, *_geometry(case), need_grad_x, True
    )
    return pooled, argmax, grad_x, grad_w, grad_b


def _reference(case, x, w, b, gp):
    _, _, _, _, _, _, stride, pads, dil, groups, act, pool_h = case
    full_pads = (pads[0], pads[0], pads[1], pads[1])
    pooled = ref.conv_maxpool_forward(x, w, b, stride, full_pads, dil, groups, act, pool_h)
    return pooled, ref.conv_maxpool_backward(x, w, b, gp, stride, full_pads, dil, groups, act, pool_h)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CASES))
def test_equals_the_unfused_kernels_bit_for_bit(name, dtype):
    case = CASES[name]
    x, w, b, gp, out = _setup(case, dtype)
    for got, want in zip(fused(case, x, w, b, gp, out), unfused(case, x, w, b, gp, out)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CASES))
def test_matches_the_reference(name, dtype):
    case = CASES[name]
    x, w, b, gp, out = _setup(case, dtype, seed=1)
    pooled, _, grad_x, grad_w, grad_b = fused(case, x, w, b, gp, out)
    want_pooled, (want_gx, want_gw, want_gb) = _reference(case, x, w, b, gp)
    assert pooled.dtype == grad_w.dtype == dtype
    for got, want in ((pooled, want_pooled), (grad_x, want_gx), (grad_w, want_gw), (grad_b, want_gb)):
        np.testing.assert_allclose(got, want, **TOL[dtype])


@pytest.mark.parametrize("name", ["1d relu, odd length", "shifted, dilated, odd length, chunks of 3"])
def test_first_layer_leaves_grad_x_alone(name):
    case = CASES[name]
    x, w, b, gp, out = _setup(case, np.float64)
    got = fused(case, x, w, b, gp, out, need_grad_x=False)
    assert np.isnan(got[2]).all()
    want = unfused(case, x, w, b, gp, out, need_grad_x=False)
    np.testing.assert_array_equal(got[3], want[3])
    np.testing.assert_array_equal(got[4], want[4])


def test_shifted_cases_take_the_shifted_forward():
    """SHIFTED run the per-sample fused path (conv.is_shifted_forward), the others the sweeps."""
    for name, case in CASES.items():
        x, w, _, _, out = _setup(case, np.float64)
        stride, pads, dil, groups = case[6], case[7], case[8], case[9]
        w2 = w.reshape(w.shape[0], -1)
        got = is_shifted_forward(x, w2, groups, w.shape[2], out[2], out[3], pads[0], stride[1], dil[1])
        assert got == (name in SHIFTED), name
    # both forms of the shifted weight gradient (O x C over 1,200 outputs: transposed) are covered
    outputs = {CASES[k][4] * CASES[k][1] for k in SHIFTED}
    assert min(outputs) <= 1200 < max(outputs)


@pytest.mark.parametrize(
    "name",
    [
        "1d relu, odd length",
        "2d tanh 2x2, odd rows",
        "groups, stride, dilation, identity",
        "shifted, dilated, odd length, chunks of 3",
        "shifted, identity, padding over the kernel",
        "shifted, transposed, as many outputs as inputs",
    ],
)
def test_finite_differences(name):
    case = CASES[name]
    x, w, b, gp, out = _setup(case, np.float64, seed=2)

    def objective(x_, w_, b_):
        return float((fused(case, x_, w_, b_, gp, out)[0] * gp).sum())

    _, _, grad_x, grad_w, grad_b = fused(case, x, w, b, gp, out)
    for got, want in zip((grad_x, grad_w, grad_b), numeric_gradients(objective, [x, w, b])):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "name",
    [
        "parallel planes (the 1-D CNN's shape)",
        "shifted, dilated, odd length, chunks of 3",
        "shifted, transposed weight gradient",
    ],
)
def test_bit_identical_on_one_and_two_threads(dtype, name):
    case = CASES[name]
    x, w, b, gp, out = _setup(case, dtype, seed=3)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = fused(case, x, w, b, gp, out)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = fused(case, x, w, b, gp, out)
    finally:
        numba.set_num_threads(before)
    for a, c in zip(one, two):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize(
    "name", ["groups, stride, dilation, identity", "2d tanh 2x2, odd rows", "shifted, dilated, odd length, chunks of 3"]
)
def test_nan_pools_as_the_unfused_kernels(name):
    """A NaN in the convolution's output wins its window (kernels/pooling.py's rule): the same
    pooled output and argmax as the unfused kernels, and the gradients are not finite (relu
    maps NaN to 0: its cases never see one)."""
    case = CASES[name]
    x, w, b, gp, out = _setup(case, np.float64)
    x[0, 0, 0, 2] = np.nan
    got, want = fused(case, x, w, b, gp, out), unfused(case, x, w, b, gp, out)
    assert np.isnan(got[0]).any()
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert not np.isfinite(got[3]).all()


def test_refuses_a_batch_over_one_pass_and_other_windows():
    case = CASES["1d relu, odd length"]
    x, w, b, gp, out = _setup(case, np.float64)
    col, zcol, _ = _scratch(case, out, np.float64)
    y = np.zeros(out)
    pooled, argmax = np.zeros(gp.shape), np.zeros(gp.shape, np.int32)
    with pytest.raises(ValueError, match="one pass"):
        conv2d_maxpool_forward(
            x, w, b, np.zeros((col.shape[0], col.shape[1] - 1)), zcol, y, pooled, argmax, *_geometry(case), 1
        )
    with pytest.raises(ValueError, match="pool_h must be 1 or 2"):
        conv2d_maxpool_forward(x, w, b, col, zcol, y, pooled, argmax, *_geometry(case), 3)
    with pytest.raises(ValueError, match="pooled must be"):
        conv2d_maxpool_forward(
            x, w, b, col, zcol, y, np.zeros((*gp.shape[:3], gp.shape[3] - 1)), argmax, *_geometry(case), 1
        )
