"""conv2d_forward / conv2d_backward (and 1-D as height 1) against float64 references, finite
differences, torch, and thread counts."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from fastnn.kernels.activations import ACTIVATIONS
from fastnn.kernels.conv import (
    conv2d_backward,
    conv2d_forward,
    conv2d_scratch_shapes,
    conv_output_size,
    is_shifted_forward,
    is_thin_forward,
)
from tests import _reference_conv as ref
from tests._gradcheck import numeric_gradients

DTYPES = [np.float32, np.float64]
TOL = {np.float32: {"rtol": 2e-4, "atol": 2e-4}, np.float64: {"rtol": 1e-10, "atol": 1e-11}}

# (N, C, H, W, O, KH, KW, stride, pads (top, bottom, left, right), dilation, groups, activation)
CASES = [
    (1, 1, 5, 5, 1, 3, 3, (1, 1), (0, 0, 0, 0), (1, 1), 1, "identity"),
    (2, 3, 7, 6, 4, 3, 2, (1, 1), (1, 1, 0, 1), (1, 1), 1, "relu"),
    (3, 2, 9, 8, 5, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), 1, "tanh"),
    (2, 4, 8, 9, 6, 2, 3, (2, 1), (0, 1, 2, 0), (1, 2), 2, "leaky_relu"),
    (1, 4, 6, 6, 4, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 4, "relu"),  # depthwise
    (2, 3, 7, 7, 6, 3, 3, (1, 2), (2, 2, 2, 2), (2, 2), 3, "gelu"),  # depthwise, multiplier 2
    (2, 6, 5, 5, 4, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 2, "sigmoid"),  # 1x1, groups
    (2, 2, 4, 6, 3, 4, 2, (1, 1), (1, 2, 0, 1), (1, 1), 1, "elu"),  # even kernel, "same"
    (3, 3, 1, 11, 5, 1, 3, (1, 1), (0, 0, 1, 1), (1, 1), 1, "relu"),  # 1-D
    (2, 4, 1, 13, 4, 1, 4, (1, 3), (0, 0, 2, 1), (1, 2), 2, "identity"),  # 1-D, strided, dilated
    (1, 5, 1, 9, 5, 1, 3, (1, 1), (0, 0, 1, 1), (1, 1), 5, "selu"),  # 1-D depthwise
    (2, 3, 5, 4, 2, 5, 4, (3, 3), (2, 2, 1, 2), (1, 1), 1, "identity"),  # kernel larger than the input
    (8, 8, 20, 20, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, "relu"),  # parallel im2col and GEMM tiles
    (6, 16, 12, 12, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 16, "relu"),  # parallel depthwise
    (2, 24, 5, 5, 24, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, "relu"),  # grad_w 24 x 216 > 5120: BLAS
    (16, 2, 30, 30, 6, 3, 3, (1, 1), (0, 0, 0, 0), (1, 1), 1, "leaky_relu"),  # parallel thin forward, 13 column chunks
    (8, 16, 1, 60, 32, 1, 5, (1, 1), (0, 0, 3, 1), (1, 2), 1, "leaky_relu"),  # 1-D, dilated, parallel shifted GEMMs
    (24, 8, 1, 1100, 15, 1, 3, (1, 1), (0, 0, 1, 1), (1, 1), 1, "tanh"),  # shifted, 8 partial weight gradients
]
#: cases whose forward product runs in the direct thin loops (an even number of rows, K % 4 = 2, 2, 3, 0, 0, 2)
THIN_CASES = [1, 5, 6, 9, 11, 15]
#: cases whose forward product runs as shifted GEMMs without im2col (1-D, stride 1, one group, not thin)
SHIFTED_CASES = [8, 16, 17]


def _problem(case, dtype, seed=0):
    n, c, h, w, o, kh, kw, _, _, _, groups, _ = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = (rng.standard_normal((o, c // groups, kh, kw)) / np.sqrt(c // groups * kh * kw)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    return x, weight, b


def _geometry(case):
    n, c, h, w, o, kh, kw, stride, pads, dilation, groups, name = case
    oh = conv_output_size(h, kh, stride[0], pads[0], pads[1], dilation[0])
    ow = conv_output_size(w, kw, stride[1], pads[2], pads[3], dilation[1])
    return oh, ow


def _scalars(case):
    _, _, _, _, _, _, _, stride, pads, dilation, groups, name = case
    code, alpha, _ = ACTIVATIONS[name]
    return (stride[0], stride[1], pads[0], pads[2], dilation[0], dilation[1], groups, code, alpha)


def _scratch(case, dtype, per_pass=None):
    n, c, _, _, o, kh, kw = case[:7]
    oh, ow = _geometry(case)
    col, zcol, partial = conv2d_scratch_shapes(n, c, o, kh, kw, oh, ow)
    if per_pass is not None:  # force several passes over the batch
        col, zcol = (col[0], per_pass * oh * ow), (zcol[0], per_pass * oh * ow)
    return [np.full(s, np.nan, dtype) for s in (col, zcol, partial)]


def forward(case, x, w, b, per_pass=None):
    oh, ow = _geometry(case)
    z = np.full((x.shape[0], w.shape[0], oh, ow), np.nan, x.dtype)
    y = z if case[-1] == "identity" else np.full_like(z, np.nan)
    col, zcol, _ = _scratch(case, x.dtype, per_pass)
    conv2d_forward(x, w, b, col, zcol, z, y, *_scalars(case))
    return z, y


def backward(case, x, w, b, grad_y, per_pass=None, need_grad_x=True, grad_x=None):
    z, y = forward(case, x, w, b, per_pass)
    col, zcol, partial = _scratch(case, x.dtype, per_pass)
    grad_x = np.full_like(x, np.nan) if grad_x is None else grad_x
    grad_w, grad_b = np.full_like(w, np.nan), np.full_like(b, np.nan)
    conv2d_backward(x, w, z, y, grad_y, col, zcol, grad_x, grad_w, grad_b, partial, *_scalars(case), need_grad_x)
    return grad_x, grad_w, grad_b


def _ref_args(case):
    _, _, _, _, _, _, _, stride, pads, dilation, groups, name = case
    return dict(stride=stride, pads=pads, dilation=dilation, groups=groups, activation=name, alpha=ACTIVATIONS[name][1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_forward_and_backward_match_reference(case, dtype):
    x, w, b = _problem(case, dtype)
    z, y = forward(case, x, w, b)
    z_ref, y_ref = ref.conv2d_forward(x, w, b, **_ref_args(case))
    assert z.dtype == y.dtype == dtype
    np.testing.assert_allclose(z, z_ref, **TOL[dtype])
    np.testing.assert_allclose(y, y_ref, **TOL[dtype])
    grad_y = np.random.default_rng(5).standard_normal(z.shape).astype(dtype)
    for label, got, want in zip(
        ("grad_x", "grad_w", "grad_b"),
        backward(case, x, w, b, grad_y),
        ref.conv2d_backward(x, w, b, grad_y, **_ref_args(case)),
    ):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, **TOL[dtype], err_msg=label)


@pytest.mark.parametrize("case", [CASES[3], CASES[12], CASES[16]], ids=["small", "parallel", "shifted"])
def test_batch_in_several_passes_matches_one_pass(case):
    """Scratch for 3 samples per pass (the kernel reads the pass size from the scratch shape)."""
    x, w, b = _problem(case, np.float64)
    grad_y = np.random.default_rng(6).standard_normal(forward(case, x, w, b)[0].shape)
    one = forward(case, x, w, b) + backward(case, x, w, b, grad_y)
    several = forward(case, x, w, b, per_pass=3) + backward(case, x, w, b, grad_y, per_pass=3)
    for got, want in zip(several, one):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("per_pass", [None, 3], ids=["one-pass", "several-passes"])
@pytest.mark.parametrize("case", [CASES[3], CASES[12], CASES[16]], ids=["small", "parallel", "shifted"])
def test_backward_on_the_forwards_col_gives_the_same_bits(case, per_pass):
    """col_ready: the backward reuses the im2col the forward left in col (one pass) or, with
    several passes or after the shifted GEMMs (which leave no im2col), recomputes it; either way
    the gradients are those of a fresh col."""
    x, w, b = _problem(case, np.float32)
    oh, ow = _geometry(case)
    z = np.empty((x.shape[0], w.shape[0], oh, ow), x.dtype)
    y = np.empty_like(z)
    col, zcol, partial = _scratch(case, x.dtype, per_pass)
    conv2d_forward(x, w, b, col, zcol, z, y, *_scalars(case))
    grad_y = np.random.default_rng(7).standard_normal(z.shape).astype(x.dtype)
    got = np.empty_like(x), np.empty_like(w), np.empty_like(b)
    conv2d_backward(x, w, z, y, grad_y, col, zcol, *got, partial, *_scalars(case), True, True)
    want = backward(case, x, w, b, grad_y, per_pass)  # fresh NaN-filled scratch, col_ready False
    for label, g, e in zip(("grad_x", "grad_w", "grad_b"), got, want):
        np.testing.assert_array_equal(g, e, err_msg=label)


@pytest.mark.parametrize("case", [CASES[1], CASES[2], CASES[6], CASES[12]], ids=["relu", "tanh", "sigmoid", "parallel"])
def test_y_only_activations_with_y_as_z_give_the_same_bits(case):
    """y is z (what Conv layers pass for relu, tanh, sigmoid): the forward stores f(z) once and
    the backward, taking the derivative from y, gives the gradients of separate z and y."""
    x, w, b = _problem(case, np.float32)
    z, y = forward(case, x, w, b)
    one = np.full_like(z, np.nan)
    col, zcol, partial = _scratch(case, x.dtype)
    conv2d_forward(x, w, b, col, zcol, one, one, *_scalars(case))
    np.testing.assert_array_equal(one, y)
    grad_y = np.random.default_rng(8).standard_normal(z.shape).astype(x.dtype)
    got = np.full_like(x, np.nan), np.full_like(w, np.nan), np.full_like(b, np.nan)
    conv2d_backward(x, w, one, one, grad_y, col, zcol, *got, partial, *_scalars(case), True)
    for label, g, e in zip(("grad_x", "grad_w", "grad_b"), got, backward(case, x, w, b, grad_y)):
        np.testing.assert_array_equal(g, e, err_msg=label)


def test_scratch_shapes_cap_the_pass_size():
    col, zcol, partial = conv2d_scratch_shapes(64, 64, 32, 3, 3, 56, 56)
    assert col[0] == 64 * 9 and zcol[0] == 32 and partial == (64, 32)
    per_pass = col[1] // (56 * 56)
    assert 1 <= per_pass < 64 and col[1] == zcol[1] == per_pass * 56 * 56
    assert conv2d_scratch_shapes(2, 1, 6, 5, 5, 24, 24)[0] == (25, 2 * 576)
    assert conv_output_size(28, 5) == 24 and conv_output_size(7, 3, 2, 1, 1) == 4
    assert conv_output_size(10, 4, 1, 1, 2) == 10  # "same" with an even kernel


def test_need_grad_x_false_leaves_grad_x_untouched():
    case = CASES[2]
    x, w, b = _problem(case, np.float64)
    grad_y = np.ones(forward(case, x, w, b)[0].shape)
    sentinel = np.full_like(x, 7.0)
    _, grad_w, grad_b = backward(case, x, w, b, grad_y, need_grad_x=False, grad_x=sentinel)
    assert np.all(sentinel == 7.0)
    _, want_w, want_b = ref.conv2d_backward(x, w, b, grad_y, **_ref_args(case))
    np.testing.assert_allclose(grad_w, want_w, **TOL[np.float64])
    np.testing.assert_allclose(grad_b, want_b, **TOL[np.float64])


@pytest.mark.parametrize("case", [CASES[3], CASES[5], CASES[8]], ids=["groups-dilation", "depthwise", "shifted"])
def test_backward_finite_differences(case):
    small = (2,) + case[1:4] + case[4:]
    x, w, b = _problem(small, np.float64, seed=1)
    upstream = np.random.default_rng(2).standard_normal(forward(small, x, w, b)[0].shape)
    grads = backward(small, x, w, b, upstream)

    def objective(x_, w_, b_):
        return np.sum(upstream * forward(small, x_, w_, b_)[1])

    for label, got, want in zip("xwb", grads, numeric_gradients(objective, [x, w, b], h=1e-6)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8, err_msg=label)


@pytest.mark.parametrize(
    "case", [CASES[12], CASES[15], CASES[16], CASES[17]], ids=["gemm", "thin", "shifted", "shifted-parts"]
)
def test_bit_identical_on_one_and_two_threads(case):
    x, w, b = _problem(case, np.float32, seed=3)
    grad_y = np.random.default_rng(4).standard_normal(forward(case, x, w, b)[0].shape).astype(np.float32)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = forward(case, x, w, b) + backward(case, x, w, b, grad_y, per_pass=3) + backward(case, x, w, b, grad_y)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = forward(case, x, w, b) + backward(case, x, w, b, grad_y, per_pass=3) + backward(case, x, w, b, grad_y)
    finally:
        numba.set_num_threads(threads)
    for a, c in zip(one, two):
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize(
    "case",
    [CASES[3], CASES[5], CASES[9], CASES[15], CASES[16]],
    ids=["conv2d", "depthwise", "conv1d", "thin", "shifted"],
)
def test_matches_torch(case):
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    x, w, b = _problem(case, np.float64, seed=7)
    _, _, _, _, _, _, _, stride, pads, dilation, groups, name = case
    z, y = forward(case, x, w, b)
    grad_y = np.random.default_rng(8).standard_normal(z.shape)
    grads = backward(case, x, w, b, grad_y)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    padded = functional.pad(xt, (pads[2], pads[3], pads[0], pads[1]))  # torch pads symmetrically only
    if x.shape[2] == 1:  # 1-D: (N, C, L) and (O, C / g, K)
        zt = functional.conv1d(padded[:, :, 0], wt[:, :, 0], bt, stride[1], 0, dilation[1], groups)[:, :, None]
    else:
        zt = functional.conv2d(padded, wt, bt, stride, 0, dilation, groups)
    yt = {"identity": zt, "leaky_relu": functional.leaky_relu(zt, 0.01), "gelu": functional.gelu(zt)}[name]
    yt.backward(torch.tensor(grad_y))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, (xt.grad, wt.grad, bt.grad)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-11, atol=1e-12)


def test_thin_cases_take_the_direct_forward():
    """THIN_CASES run the direct loops and the others BLAS (the reference tests then cover both)."""
    for i, case in enumerate(CASES):
        _, c, _, _, o, kh, kw = case[:7]
        groups = case[10]
        w2 = np.zeros((o, c // groups * kh * kw), np.float32)
        assert is_thin_forward(w2, groups) == (i in THIN_CASES), i


def test_shifted_cases_take_the_shifted_forward():
    """SHIFTED_CASES run the shifted GEMMs and the others im2col (the reference tests then cover both)."""
    for i, case in enumerate(CASES):
        n, c, h, w_, o, kh, kw, stride, pads, dilation, groups, _ = case
        oh, ow = _geometry(case)
        w2 = np.zeros((o, c // groups * kh * kw), np.float32)
        x = np.zeros((n, c, h, w_), np.float32)
        assert is_shifted_forward(x, w2, groups, kh, oh, ow, pads[0], stride[1], dilation[1]) == (i in SHIFTED_CASES), i
