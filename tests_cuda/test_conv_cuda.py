"""CUDA conv, pooling, embedding (and its sparse row updates), masking and layout kernels against their CPU twins (float64 on the CPU)."""

from __future__ import annotations

import numpy as np
import pytest
from numba import cuda

from fastnn.kernels import conv as cpu_conv
from fastnn.kernels import embedding as cpu_emb
from fastnn.kernels import layout as cpu_layout
from fastnn.kernels import pooling as cpu_pool
from fastnn.kernels import sparse_update as cpu_upd
from fastnn.kernels.activations import ACTIVATIONS
from fastnn.kernels.cuda import conv as gpu_conv
from fastnn.kernels.cuda import embedding as gpu_emb
from fastnn.kernels.cuda import layout as gpu_layout
from fastnn.kernels.cuda import pooling as gpu_pool
from fastnn.kernels.cuda import sparse_update as gpu_upd

from .conftest import f64, host, to_device, tol

# (N, C, H, W, O, KH, KW, stride, pads (top, bottom, left, right), dilation, groups, activation, dtype)
CONV_CASES = [
    (2, 2, 5, 4, 3, 3, 2, (1, 1), (1, 1, 0, 1), (1, 1), 1, "relu", np.float32),
    (1, 4, 5, 5, 4, 3, 3, (2, 1), (1, 0, 1, 1), (1, 2), 2, "tanh", np.float64),
    (2, 3, 4, 4, 3, 2, 2, (1, 1), (1, 1, 1, 1), (1, 1), 3, "identity", np.float64),  # depthwise
    (2, 2, 1, 7, 2, 1, 3, (1, 2), (0, 0, 1, 1), (1, 1), 1, "gelu", np.float32),  # 1-D
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[f"case{i}" for i in range(len(CONV_CASES))])
def test_conv2d_forward_backward(case, rng):
    n, c, h, w, o, kh, kw, stride, pads, dilation, groups, name, dtype = case
    code, alpha, _ = ACTIVATIONS[name]
    oh = cpu_conv.conv_output_size(h, kh, stride[0], pads[0], pads[1], dilation[0])
    ow = cpu_conv.conv_output_size(w, kw, stride[1], pads[2], pads[3], dilation[1])
    scalars = (stride[0], stride[1], pads[0], pads[2], dilation[0], dilation[1], groups, code, alpha)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((o, c // groups, kh, kw)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    gy = rng.standard_normal((n, o, oh, ow)).astype(dtype)
    x64, w64, b64, gy64 = f64(x, wt, b, gy)
    shapes = cpu_conv.conv2d_scratch_shapes(n, c, o, kh, kw, oh, ow)
    col, zcol, partial = (np.empty(s) for s in shapes)
    z, y = np.empty((n, o, oh, ow)), np.empty((n, o, oh, ow))
    gx, gw, gb = np.empty_like(x64), np.empty_like(w64), np.empty_like(b64)
    cpu_conv.conv2d_forward(x64, w64, b64, col, zcol, z, y, *scalars)
    cpu_conv.conv2d_backward(x64, w64, z, y, gy64, col, zcol, gx, gw, gb, partial, *scalars, True)

    dx, dw, db, dgy = to_device(x, wt, b, gy)
    dcol, dzcol, dpartial = (cuda.device_array(s, dtype) for s in shapes)
    dz, dy = cuda.device_array(z.shape, dtype), cuda.device_array(z.shape, dtype)
    gpu_conv.conv2d_forward(dx, dw, db, dcol, dzcol, dz, dy, *scalars)
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(host(dz), z, rtol=rtol, atol=atol * 10)
    np.testing.assert_allclose(host(dy), y, rtol=rtol, atol=atol * 10)
    dz_cpu, dy_cpu = to_device(z.astype(dtype), y.astype(dtype))
    dgx = cuda.to_device(np.full(x.shape, 7.0, dtype))
    dgw, dgb = cuda.device_array(wt.shape, dtype), cuda.device_array(b.shape, dtype)
    gpu_conv.conv2d_backward(dx, dw, dz_cpu, dy_cpu, dgy, dcol, dzcol, dgx, dgw, dgb, dpartial, *scalars, False)
    assert np.all(host(dgx) == 7.0)
    gpu_conv.conv2d_backward(dx, dw, dz_cpu, dy_cpu, dgy, dcol, dzcol, dgx, dgw, dgb, dpartial, *scalars, True)
    for got, want in ((host(dgx), gx), (host(dgw), gw), (host(dgb), gb)):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=rtol * 10, atol=atol * 100)


# (N, C, H, W, kernel, stride, pads, dtype)
POOL_CASES = [
    (2, 2, 5, 6, (2, 2), (2, 2), (0, 1, 0, 0), np.float32),
    (1, 3, 6, 5, (3, 2), (1, 2), (1, 1, 1, 0), np.float64),  # overlapping windows, padding
    (2, 2, 1, 9, (1, 3), (1, 2), (0, 0, 1, 1), np.float64),  # 1-D
]


@pytest.mark.parametrize("case", POOL_CASES, ids=[f"case{i}" for i in range(len(POOL_CASES))])
def test_pooling(case, rng):
    n, c, h, w, (kh, kw), (sh, sw), pads, dtype = case
    oh = cpu_conv.conv_output_size(h, kh, sh, pads[0], pads[1])
    ow = cpu_conv.conv_output_size(w, kw, sw, pads[2], pads[3])
    geometry = (kh, kw, sh, sw, pads[0], pads[2])
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    gy = rng.standard_normal((n, c, oh, ow)).astype(dtype)
    x64, gy64 = f64(x, gy)
    dx, dgy = to_device(x, gy)
    rtol, atol = tol(dtype)

    y, argmax, gx = np.empty((n, c, oh, ow)), np.empty((n, c, oh, ow), np.int32), np.empty_like(x64)
    cpu_pool.maxpool2d_forward(x64, y, argmax, *geometry)
    cpu_pool.maxpool2d_backward(argmax, gy64, gx, *geometry)
    dy, dargmax = cuda.device_array(y.shape, dtype), cuda.device_array(y.shape, np.int32)
    dgx = cuda.device_array(x.shape, dtype)
    gpu_pool.maxpool2d_forward(dx, dy, dargmax, *geometry)
    gpu_pool.maxpool2d_backward(dargmax, dgy, dgx, *geometry)
    np.testing.assert_array_equal(host(dargmax), argmax)
    np.testing.assert_allclose(host(dy), y, rtol=rtol, atol=atol)
    np.testing.assert_allclose(host(dgx), gx, rtol=rtol, atol=atol)

    for include_pad in (True, False):
        cpu_pool.avgpool2d_forward(x64, y, *geometry, include_pad)
        cpu_pool.avgpool2d_backward(gy64, gx, *geometry, include_pad)
        gpu_pool.avgpool2d_forward(dx, dy, *geometry, include_pad)
        gpu_pool.avgpool2d_backward(dgy, dgx, *geometry, include_pad)
        assert host(dy).dtype == dtype
        np.testing.assert_allclose(host(dy), y, rtol=rtol, atol=atol)
        np.testing.assert_allclose(host(dgx), gx, rtol=rtol, atol=atol)

    pooled, gpooled = np.empty((n, c)), np.empty_like(x64)
    cpu_pool.global_avgpool_forward(x64, pooled)
    cpu_pool.global_avgpool_backward(pooled, gpooled)
    dpooled = cuda.device_array((n, c), dtype)
    gpu_pool.global_avgpool_forward(dx, dpooled)
    np.testing.assert_allclose(host(dpooled), pooled, rtol=rtol, atol=atol)
    gpu_pool.global_avgpool_backward(cuda.to_device(pooled.astype(dtype)), dgx)
    np.testing.assert_allclose(host(dgx), gpooled, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype,padding_idx", [(np.float32, 2), (np.float64, -1)])
def test_embedding(dtype, padding_idx, rng):
    vocabulary, dim = 9, 3
    indices = rng.integers(0, vocabulary, size=14, dtype=np.int64)
    indices[::3] = 2
    weight = rng.standard_normal((vocabulary, dim)).astype(dtype)
    grad_out = rng.standard_normal((14, dim)).astype(dtype)
    (weight64, grad_out64) = f64(weight, grad_out)
    out, grad_w = np.empty((14, dim)), np.empty((vocabulary, dim))
    cpu_emb.embedding_forward(indices, weight64, out)
    cpu_emb.embedding_backward(indices, grad_out64, grad_w, padding_idx)
    dind, dweight, dgrad = to_device(indices, weight, grad_out)
    dout, dgw = cuda.device_array(out.shape, dtype), cuda.to_device(np.full(grad_w.shape, np.nan, dtype))
    gpu_emb.embedding_forward(dind, dweight, dout)
    gpu_emb.embedding_backward(dind, dgrad, dgw, padding_idx)
    rtol, atol = tol(dtype)
    np.testing.assert_array_equal(host(dout), out.astype(dtype))
    np.testing.assert_allclose(host(dgw), grad_w, rtol=rtol, atol=atol)


def test_layout_round_trip(rng):
    x = rng.standard_normal((2, 3, 5)).astype(np.float32)
    rows = np.empty((10, 3), np.float32)
    cpu_layout.nchw_to_rows(x.astype(np.float64), rows_64 := np.empty((10, 3)))
    dx, drows = to_device(x, rows)
    gpu_layout.nchw_to_rows(dx, drows)
    np.testing.assert_array_equal(host(drows), rows_64.astype(np.float32))
    dback = cuda.device_array(x.shape, np.float32)
    gpu_layout.rows_to_nchw(drows, dback)
    np.testing.assert_array_equal(host(dback), x)


def test_masking_lengths_match_the_cpu(rng):
    from fastnn.kernels import masking as cpu_mask
    from fastnn.kernels.cuda import masking as gpu_mask

    x = rng.standard_normal((4, 5, 2)).astype(np.float32)
    x[1, 3:] = 0
    x[2, 1:] = 0
    x[3] = 0
    want, (got, dx) = np.zeros(4, np.int64), to_device(np.zeros(4, np.int64), x)
    cpu_mask.lengths_from_values(x, np.float32(0), want)
    gpu_mask.lengths_from_values(dx, np.float32(0), got)
    np.testing.assert_array_equal(host(got), want)
    indices = (x[..., 0] != 0).astype(np.int64) * 3
    cpu_mask.lengths_from_indices(indices, 0, want)
    gpu_mask.lengths_from_indices(to_device(indices)[0], 0, got)
    np.testing.assert_array_equal(host(got), want)


@pytest.mark.parametrize("padding_idx", [-1, 2])
def test_embedding_rows(padding_idx, rng):
    vocabulary = 9
    indices = rng.integers(0, vocabulary, size=14, dtype=np.int64)
    indices[::3] = 2
    rows = np.zeros(vocabulary + 1, np.int64)
    cpu_emb.embedding_rows(indices, padding_idx, np.zeros(vocabulary, np.uint8), rows)
    dind, dseen, drows = to_device(indices, np.zeros(vocabulary, np.uint8), np.full(vocabulary + 1, -1, np.int64))
    gpu_emb.embedding_rows(dind, padding_idx, dseen, drows)
    np.testing.assert_array_equal(host(drows)[: rows[0] + 1], rows[: rows[0] + 1])
    assert not host(dseen).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparse_row_updates(dtype, rng):
    vocabulary, width, lo = 7, 3, 2
    n = lo + vocabulary * width + 1
    params = rng.standard_normal(n).astype(dtype)
    grads = np.zeros(n, dtype)
    touched = [1, 4, 6]
    rows = np.array([len(touched), *touched, 0, 0, 0, 0], np.int64)
    for r in touched:
        grads[lo + r * width : lo + (r + 1) * width] = rng.standard_normal(width)
    m = np.zeros(n, dtype)
    cpu = [params.copy(), m.copy(), m.copy()]
    cpu_upd.adam_rows_update(cpu[0], grads, cpu[1], cpu[2], rows, lo, width, 0.01, 0.9, 0.99, 1e-8, 2)
    cpu_upd.sgd_rows_update(cpu[0], grads, rows, lo, width, 0.1)
    dp, dg, dm, dv, drows = to_device(params, grads, m, m, rows)
    gpu_upd.adam_rows_update(dp, dg, dm, dv, drows, lo, width, 0.01, 0.9, 0.99, 1e-8, 2)
    gpu_upd.sgd_rows_update(dp, dg, drows, lo, width, 0.1)
    rtol, atol = tol(dtype)
    for got, want in zip((dp, dm, dv), cpu):
        np.testing.assert_allclose(host(got), want, rtol=rtol, atol=atol)
    norm = cpu_upd.sparse_grad_norm(grads, np.zeros(1), lo, width, rows)
    assert gpu_upd.sparse_grad_norm(dg, cuda.device_array(64, np.float64), lo, width, drows) == pytest.approx(norm)


def test_sparse_embedding_model_trains_on_cuda_as_on_the_cpu(rng):
    import fastnn as fnn

    def build():
        layers = [fnn.Embedding(12, 3, sparse=True), fnn.Flatten(), fnn.Dense(6, 2)]
        return fnn.Sequential(layers, input_shape=(2,), dtype="float64", seed=0).compile("cross_entropy", "adam")

    cpu, gpu = build(), build().to("cuda")
    x, y = rng.integers(0, 6, (5, 2)), rng.integers(0, 2, 5)
    for _ in range(2):
        assert gpu.train_step(x, y) == pytest.approx(cpu.train_step(x, y), rel=1e-12)
    np.testing.assert_allclose(gpu.to("cpu").params, cpu.params, rtol=1e-12)
