"""Convolution, pooling and embedding kernels beside the GEMM floor (the same products in NumPy) and torch.

    pytest benchmarks/test_bench_conv.py --benchmark-only --benchmark-group-by=group
    pytest benchmarks/test_bench_conv.py --benchmark-disable     # CI: each body runs once, as a test

The GEMM floor multiplies the im2col matrices (precomputed, random) with np.matmul into
preallocated outputs: what fastnn's convolutions cost without im2col, col2im and the fused
sweeps. ``per-sample passes`` runs fastnn's kernels with scratch for one sample per pass (one
small GEMM per sample) instead of the whole batch in one GEMM: the alternative to batched im2col.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastnn.kernels.activations import ACTIVATIONS
from fastnn.kernels.conv import conv2d_backward, conv2d_forward, conv2d_scratch_shapes, conv_output_size
from fastnn.kernels.embedding import embedding_backward, embedding_forward
from fastnn.kernels.pooling import maxpool2d_backward, maxpool2d_forward

RELU = ACTIVATIONS["relu"][0]
F32 = np.float32
LENET_GROUP = "LeNet convs 1x28x28 batch 64 (conv 1->6 5x5, pool 2, conv 6->16 5x5, pool 2), forward+backward"
CONV1D_GROUP = "conv1d (64, 16, 256) -> 32 channels, kernel 5, pad 2, relu, forward+backward"
EMBEDDING_GROUP = "embedding 10k x 64, indices (64, 50), forward+backward"


def _rng():
    return np.random.default_rng(0)


class Conv:
    """One conv layer's arrays and its two kernel calls (stride 1, dilation 1, groups 1; ``pad_h``
    rows above and below, ``pad_w`` columns left and right; a 1-D conv has h = kh = 1)."""

    def __init__(self, n, c, h, w, o, kh, kw, pad_h, pad_w, need_grad_x, per_pass=None):
        rng = _rng()
        oh, ow = conv_output_size(h, kh, 1, pad_h, pad_h), conv_output_size(w, kw, 1, pad_w, pad_w)
        self.x = rng.standard_normal((n, c, h, w)).astype(F32)
        self.w = (rng.standard_normal((o, c, kh, kw)) / np.sqrt(c * kh * kw)).astype(F32)
        self.b = np.zeros(o, F32)
        self.z, self.y, self.grad_y = (np.empty((n, o, oh, ow), F32) for _ in range(3))
        self.grad_y[...] = rng.standard_normal(self.grad_y.shape)
        self.grad_x, self.grad_w, self.grad_b = np.empty_like(self.x), np.empty_like(self.w), np.empty_like(self.b)
        col, zcol, partial = conv2d_scratch_shapes(n, c, o, kh, kw, oh, ow)
        if per_pass is not None:
            col, zcol = (col[0], per_pass * oh * ow), (zcol[0], per_pass * oh * ow)
        self.col, self.zcol, self.partial = (np.empty(s, F32) for s in (col, zcol, partial))
        self.pad_h, self.pad_w, self.need_grad_x = pad_h, pad_w, need_grad_x
        # the GEMM floor's operands: the im2col matrix of the whole batch and the output columns
        self.cols = rng.standard_normal((c * kh * kw, n * oh * ow)).astype(F32)
        self.zcols = np.empty((o, n * oh * ow), F32)
        self.grad_cols = np.empty_like(self.cols)
        self.w2 = self.w.reshape(o, -1)
        self.grad_w2 = self.grad_w.reshape(o, -1)

    def forward(self):
        conv2d_forward(
            self.x,
            self.w,
            self.b,
            self.col,
            self.zcol,
            self.z,
            self.y,
            1,
            1,
            self.pad_h,
            self.pad_w,
            1,
            1,
            1,
            RELU,
            0.0,
        )

    def backward(self):
        """After :meth:`forward` (every step here runs it first): col_ready, as the layers pass it in training."""
        conv2d_backward(
            self.x,
            self.w,
            self.z,
            self.y,
            self.grad_y,
            self.col,
            self.zcol,
            self.grad_x,
            self.grad_w,
            self.grad_b,
            self.partial,
            1,
            1,
            self.pad_h,
            self.pad_w,
            1,
            1,
            1,
            RELU,
            0.0,
            self.need_grad_x,
            True,
        )

    def gemm_floor(self):
        np.matmul(self.w2, self.cols, out=self.zcols)
        np.matmul(self.zcols, self.cols.T, out=self.grad_w2)
        if self.need_grad_x:
            np.matmul(self.w2.T, self.zcols, out=self.grad_cols)


def _lenet(per_pass=None):
    conv1 = Conv(64, 1, 28, 28, 6, 5, 5, 0, 0, False, per_pass)
    conv2 = Conv(64, 6, 12, 12, 16, 5, 5, 0, 0, True, per_pass)
    pool1 = (np.empty((64, 6, 12, 12), F32), np.empty((64, 6, 12, 12), np.int32), np.empty((64, 6, 24, 24), F32))
    pool2 = (np.empty((64, 16, 4, 4), F32), np.empty((64, 16, 4, 4), np.int32), np.empty((64, 16, 8, 8), F32))
    pool2_grad = _rng().standard_normal((64, 16, 4, 4)).astype(F32)

    def step():
        conv1.forward()
        maxpool2d_forward(conv1.y, pool1[0], pool1[1], 2, 2, 2, 2, 0, 0)
        conv2.x[...] = pool1[0]
        conv2.forward()
        maxpool2d_forward(conv2.y, pool2[0], pool2[1], 2, 2, 2, 2, 0, 0)
        maxpool2d_backward(pool2[1], pool2_grad, conv2.grad_y, 2, 2, 2, 2, 0, 0)
        conv2.backward()
        maxpool2d_backward(pool1[1], conv2.grad_x, conv1.grad_y, 2, 2, 2, 2, 0, 0)
        conv1.backward()

    return step, (conv1, conv2)


def _run(benchmark, fn):
    fn()  # warm-up: compile, first touch
    return benchmark(fn)


@pytest.mark.benchmark(group=LENET_GROUP)
def test_lenet_fastnn(benchmark):
    step, convs = _lenet()
    _run(benchmark, step)
    assert all(np.all(np.isfinite(c.grad_w)) for c in convs)


@pytest.mark.benchmark(group=LENET_GROUP)
def test_lenet_fastnn_per_sample_passes(benchmark):
    step, convs = _lenet(per_pass=1)
    _run(benchmark, step)
    assert all(np.all(np.isfinite(c.grad_w)) for c in convs)


@pytest.mark.benchmark(group=LENET_GROUP)
def test_lenet_gemm_floor(benchmark):
    _, convs = _lenet()
    _run(benchmark, lambda: [c.gemm_floor() for c in convs])
    assert np.all(np.isfinite(convs[1].grad_cols))


def _torch_step(torch, convs, pools, grad):
    """Forward + backward of torch convs (relu, and max pooling when ``pools``)."""
    functional = torch.nn.functional
    layers = []
    for conv in convs:
        if conv.x.shape[2] == 1:
            module = torch.nn.Conv1d(conv.w.shape[1], conv.w.shape[0], conv.w.shape[3], padding=conv.pad_w)
        else:
            module = torch.nn.Conv2d(
                conv.w.shape[1], conv.w.shape[0], conv.w.shape[2:], padding=(conv.pad_h, conv.pad_w)
            )
        layers.append(module)
    x = torch.from_numpy(convs[0].x if convs[0].x.shape[2] != 1 else convs[0].x[:, :, 0].copy())
    g = torch.from_numpy(grad)

    def step():
        h = x
        for module in layers:
            h = torch.relu(module(h))
            if pools:
                h = functional.max_pool2d(h, 2)
        h.backward(g)

    return step, layers


@pytest.mark.benchmark(group=LENET_GROUP)
def test_lenet_torch(benchmark):
    torch = pytest.importorskip("torch")
    _, convs = _lenet()
    step, layers = _torch_step(torch, convs, True, np.ones((64, 16, 4, 4), F32))
    _run(benchmark, step)
    assert torch.isfinite(layers[0].weight.grad).all()


def _conv1d_layer(per_pass=None):
    """(N, C, 1, L) with a (1, 5) kernel, padded 2 on the left and right."""
    return Conv(64, 16, 1, 256, 32, 1, 5, 0, 2, True, per_pass)


@pytest.mark.benchmark(group=CONV1D_GROUP)
def test_conv1d_fastnn(benchmark):
    conv = _conv1d_layer()
    _run(benchmark, lambda: (conv.forward(), conv.backward()))
    assert np.all(np.isfinite(conv.grad_x))


@pytest.mark.benchmark(group=CONV1D_GROUP)
def test_conv1d_fastnn_per_sample_passes(benchmark):
    conv = _conv1d_layer(per_pass=1)
    _run(benchmark, lambda: (conv.forward(), conv.backward()))
    assert np.all(np.isfinite(conv.grad_x))


@pytest.mark.benchmark(group=CONV1D_GROUP)
def test_conv1d_gemm_floor(benchmark):
    conv = _conv1d_layer()
    _run(benchmark, conv.gemm_floor)
    assert np.all(np.isfinite(conv.grad_cols))


@pytest.mark.benchmark(group=CONV1D_GROUP)
def test_conv1d_torch(benchmark):
    torch = pytest.importorskip("torch")
    conv = _conv1d_layer()
    step, layers = _torch_step(torch, [conv], False, conv.grad_y[:, :, 0].copy())
    _run(benchmark, step)
    assert torch.isfinite(layers[0].weight.grad).all()


@pytest.fixture(scope="module")
def embedding_arrays():
    rng = _rng()
    indices = rng.integers(0, 10_000, size=(64, 50), dtype=np.int64).reshape(-1)
    weight = rng.standard_normal((10_000, 64)).astype(F32)
    grad_out = rng.standard_normal((indices.size, 64)).astype(F32)
    return indices, weight, grad_out, np.empty_like(grad_out), np.empty_like(weight)


@pytest.mark.benchmark(group=EMBEDDING_GROUP)
def test_embedding_fastnn(benchmark, embedding_arrays):
    indices, weight, grad_out, out, grad_w = embedding_arrays

    def step():
        embedding_forward(indices, weight, out)
        embedding_backward(indices, grad_out, grad_w, 0)

    _run(benchmark, step)
    assert np.all(np.isfinite(grad_w))


@pytest.mark.benchmark(group=EMBEDDING_GROUP)
def test_embedding_numpy_floor(benchmark, embedding_arrays):
    """np.take into a preallocated output and a zeroed np.add.at: NumPy's own gather and scatter-add."""
    indices, weight, grad_out, out, grad_w = embedding_arrays

    def step():
        np.take(weight, indices, axis=0, out=out)
        grad_w[...] = 0
        np.add.at(grad_w, indices, grad_out)

    _run(benchmark, step)
    assert np.all(np.isfinite(grad_w))


@pytest.mark.benchmark(group=EMBEDDING_GROUP)
def test_embedding_torch(benchmark, embedding_arrays):
    torch = pytest.importorskip("torch")
    indices, weight, grad_out, _, _ = embedding_arrays
    layer = torch.nn.Embedding(10_000, 64, padding_idx=0)
    idx, g = torch.from_numpy(indices), torch.from_numpy(grad_out)

    def step():
        layer.weight.grad = None
        layer(idx).backward(g)

    _run(benchmark, step)
    assert torch.isfinite(layer.weight.grad).all()
