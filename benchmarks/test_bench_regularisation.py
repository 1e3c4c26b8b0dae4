"""Regularisation kernels: dropout, batch norm and layer norm beside torch, 256x512 float32.

    pytest benchmarks/test_bench_regularisation.py --benchmark-only --benchmark-group-by=group
    pytest benchmarks --benchmark-disable        # CI: each benchmark runs once, as a test

Every benchmark calls its function once before timing (compilation and the first touch of
memory stay out of the numbers) and checks the result is finite. Torch runs forward + backward
through autograd, with its default thread count.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastnn.kernels.batchnorm import batchnorm_backward, batchnorm_forward_train, partial_rows
from fastnn.kernels.dropout import dropout_backward, dropout_forward, mask_bytes
from fastnn.kernels.layernorm import layernorm_backward, layernorm_forward

BATCH, FEATURES = 256, 512
P = 0.2
EPS = 1e-5
DROPOUT_GROUP = f"dropout p={P} {BATCH}x{FEATURES} float32, forward+backward"
BATCHNORM_GROUP = f"batchnorm train {BATCH}x{FEATURES} float32, forward+backward"
LAYERNORM_GROUP = f"layernorm {BATCH}x{FEATURES} float32, forward+backward"


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, FEATURES)).astype(np.float32)
    grad = rng.standard_normal((BATCH, FEATURES)).astype(np.float32)
    gamma = np.ones(FEATURES, np.float32)
    beta = np.zeros(FEATURES, np.float32)
    return x, grad, gamma, beta


def _run(benchmark, fn, *args):
    fn(*args)  # warm-up: compile, first touch
    return benchmark(fn, *args)


def _torch_step(benchmark, torch, forward, x, grad, *params):
    xt = torch.from_numpy(x).requires_grad_(True)
    gt = torch.from_numpy(grad)

    def step():
        xt.grad = None
        for p in params:
            p.grad = None
        forward(xt).backward(gt)

    _run(benchmark, step)
    assert torch.isfinite(xt.grad).all()


@pytest.mark.benchmark(group=DROPOUT_GROUP)
def test_dropout_fastnn(benchmark, arrays):
    x, grad, _, _ = arrays
    out, grad_in = np.empty_like(x), np.empty_like(x)
    mask = np.empty((BATCH, mask_bytes(FEATURES)), np.uint8)
    step_counter = [0]

    def step():
        step_counter[0] += 1
        dropout_forward(x, out, mask, P, 0, 1, step_counter[0])
        dropout_backward(grad, mask, grad_in, P)

    _run(benchmark, step)
    assert np.isfinite(out).all() and np.isfinite(grad_in).all()
    assert 0.7 < np.mean(out != 0) < 0.9


@pytest.mark.benchmark(group=DROPOUT_GROUP)
def test_dropout_forward_only_fastnn(benchmark, arrays):
    x, _, _, _ = arrays
    out = np.empty_like(x)
    mask = np.empty((BATCH, mask_bytes(FEATURES)), np.uint8)
    _run(benchmark, dropout_forward, x, out, mask, P, 0, 1, 2)
    assert np.isfinite(out).all()


@pytest.mark.benchmark(group=DROPOUT_GROUP)
def test_dropout_torch(benchmark, arrays):
    torch = pytest.importorskip("torch")
    x, grad, _, _ = arrays
    _torch_step(benchmark, torch, lambda t: torch.nn.functional.dropout(t, P, training=True), x, grad)


@pytest.mark.benchmark(group=BATCHNORM_GROUP)
def test_batchnorm_fastnn(benchmark, arrays):
    x, grad, gamma, beta = arrays
    rm, rv = np.zeros(FEATURES, np.float32), np.ones(FEATURES, np.float32)
    out, x_hat, grad_x = (np.empty_like(x) for _ in range(3))
    mean, inv_std, grad_gamma, grad_beta = (np.empty(FEATURES, np.float32) for _ in range(4))
    partials = np.empty((2, partial_rows(BATCH), FEATURES), np.float32)

    def step():
        batchnorm_forward_train(x, gamma, beta, rm, rv, out, x_hat, mean, inv_std, partials, EPS, 0.1, True, True)
        batchnorm_backward(grad, x_hat, inv_std, gamma, grad_x, grad_gamma, grad_beta, partials, True)

    _run(benchmark, step)
    assert np.isfinite(out).all() and np.isfinite(grad_x).all() and np.isfinite(grad_gamma).all()


@pytest.mark.benchmark(group=BATCHNORM_GROUP)
def test_batchnorm_torch(benchmark, arrays):
    torch = pytest.importorskip("torch")
    x, grad, gamma, beta = arrays
    weight = torch.from_numpy(gamma.copy()).requires_grad_(True)
    bias = torch.from_numpy(beta.copy()).requires_grad_(True)
    rm, rv = torch.zeros(FEATURES), torch.ones(FEATURES)
    _torch_step(
        benchmark,
        torch,
        lambda t: torch.nn.functional.batch_norm(t, rm, rv, weight, bias, training=True, momentum=0.1, eps=EPS),
        x,
        grad,
        weight,
        bias,
    )


@pytest.mark.benchmark(group=LAYERNORM_GROUP)
def test_layernorm_fastnn(benchmark, arrays):
    x, grad, gamma, beta = arrays
    out, x_hat, grad_x = (np.empty_like(x) for _ in range(3))
    inv_std = np.empty(BATCH, np.float32)
    grad_gamma, grad_beta = np.empty(FEATURES, np.float32), np.empty(FEATURES, np.float32)
    partials = np.empty((2, partial_rows(BATCH), FEATURES), np.float32)

    def step():
        layernorm_forward(x, gamma, beta, out, x_hat, inv_std, EPS, True)
        layernorm_backward(grad, x_hat, inv_std, gamma, grad_x, grad_gamma, grad_beta, partials, True)

    _run(benchmark, step)
    assert np.isfinite(out).all() and np.isfinite(grad_x).all() and np.isfinite(grad_gamma).all()


@pytest.mark.benchmark(group=LAYERNORM_GROUP)
def test_layernorm_torch(benchmark, arrays):
    torch = pytest.importorskip("torch")
    x, grad, gamma, beta = arrays
    weight = torch.from_numpy(gamma.copy()).requires_grad_(True)
    bias = torch.from_numpy(beta.copy()).requires_grad_(True)
    _torch_step(
        benchmark,
        torch,
        lambda t: torch.nn.functional.layer_norm(t, (FEATURES,), weight, bias, EPS),
        x,
        grad,
        weight,
        bias,
    )


BN_ACT_DROPOUT_GROUP = f"batchnorm+relu+dropout p={P} train {BATCH}x{FEATURES} float32, forward+backward"


class _NormActDropout:
    """Buffers of a batch norm -> ReLU -> dropout block on ``arrays``."""

    def __init__(self, arrays):
        from fastnn.kernels.activations import ACTIVATIONS

        self.x, self.grad, self.gamma, self.beta = arrays
        self.relu = ACTIVATIONS["relu"][0]
        self.rm, self.rv = np.zeros(FEATURES, np.float32), np.ones(FEATURES, np.float32)
        self.z, self.y, self.out, self.x_hat, self.g1, self.g2, self.grad_x = (np.empty_like(self.x) for _ in range(7))
        self.mean, self.inv_std, self.grad_gamma, self.grad_beta = (np.empty(FEATURES, np.float32) for _ in range(4))
        self.partials = np.empty((2, partial_rows(BATCH), FEATURES), np.float32)
        self.mask = np.empty((BATCH, mask_bytes(FEATURES)), np.uint8)
        self.batches, self.counter, self.first_row = (np.zeros(1, np.int64) for _ in range(3))

    def check(self):
        assert np.isfinite(self.out).all() and np.isfinite(self.grad_x).all() and np.isfinite(self.grad_gamma).all()
        assert 0.3 < np.mean(self.out != 0) < 0.5  # ReLU keeps about half, dropout 80% of that


@pytest.mark.benchmark(group=BN_ACT_DROPOUT_GROUP)
def test_batchnorm_relu_dropout_fused_fastnn(benchmark, arrays):
    from fastnn.kernels.batchnorm_act import batchnorm_act_backward, batchnorm_act_forward_train

    b = _NormActDropout(arrays)

    def step():
        batchnorm_act_forward_train(
            b.x, b.gamma, b.beta, b.rm, b.rv, b.out, b.x_hat, b.mean, b.inv_std, b.partials, b.mask, b.batches,
            b.counter, b.first_row, EPS, 0.1, True, True, b.relu, 0.0, P, 0, 1, True,
        )  # fmt: skip
        batchnorm_act_backward(
            b.grad, b.mask, b.x_hat, b.inv_std, b.gamma, b.beta, b.g2, b.grad_x, b.grad_gamma, b.grad_beta,
            b.partials, True, b.relu, 0.0, P, True,
        )  # fmt: skip

    _run(benchmark, step)
    b.check()


@pytest.mark.benchmark(group=BN_ACT_DROPOUT_GROUP)
def test_batchnorm_relu_dropout_layer_by_layer_fastnn(benchmark, arrays):
    from fastnn.kernels.activations import activation_backward, activation_forward
    from fastnn.kernels.dropout import dropout_forward_counted_from

    b = _NormActDropout(arrays)

    def step():
        batchnorm_forward_train(
            b.x, b.gamma, b.beta, b.rm, b.rv, b.z, b.x_hat, b.mean, b.inv_std, b.partials, EPS, 0.1, True, True
        )
        activation_forward(b.z, b.y, b.relu, 0.0)
        dropout_forward_counted_from(b.y, b.out, b.mask, P, 0, 1, b.counter, b.first_row)
        dropout_backward(b.grad, b.mask, b.g1, P)
        activation_backward(b.z, b.y, b.g1, b.g2, b.relu, 0.0)
        batchnorm_backward(b.g2, b.x_hat, b.inv_std, b.gamma, b.grad_x, b.grad_gamma, b.grad_beta, b.partials, True)

    _run(benchmark, step)
    b.check()
