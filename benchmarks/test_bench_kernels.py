"""Kernel benchmarks: fastnn's dense, activation and loss kernels beside NumPy's GEMM floor and torch.

    pytest benchmarks/test_bench_kernels.py --benchmark-only --benchmark-group-by=group
    pytest benchmarks --benchmark-disable        # CI: each benchmark runs once, as a test

Every benchmark calls its function once before timing (compilation and the first touch of
memory stay out of the numbers) and checks the result is finite.
"""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from fastnn._config import REDUCTION_CHUNK_ROWS
from fastnn.kernels.activations import ACTIVATIONS, activation_backward, activation_forward
from fastnn.kernels.blas import gemm
from fastnn.kernels.dense import dense_backward, dense_forward
from fastnn.kernels.elementwise import add
from fastnn.kernels.losses import cross_entropy_forward_backward, cross_entropy_rows, n_partials, weighted_cross_entropy
from fastnn.kernels.microgemm import micro_gemm_block

BATCH, IN, OUT = 128, 784, 256
# (batch, in, out) of the dense groups: mlp's first layer, and embed-10k's Dense layer, whose inner size
# (2048, at least 4x its outputs) splits the forward product along k (kernels.dense._k_parts)
DENSE_SHAPES = [(BATCH, IN, OUT), (64, 2048, 128)]


def _dense_group(x, w) -> str:
    return f"dense {w.shape[0]}->{w.shape[1]} relu, batch {x.shape[0]}, float32, forward+backward"


def _rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="module", params=DENSE_SHAPES, ids=lambda shape: "x".join(map(str, shape)))
def dense_arrays(request):
    batch, n_in, n_out = request.param
    rng = _rng()
    x = rng.standard_normal((batch, n_in)).astype(np.float32)
    w = (rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in)).astype(np.float32)
    b = np.zeros(n_out, np.float32)
    grad_y = rng.standard_normal((batch, n_out)).astype(np.float32)
    buffers = {
        name: np.empty(shape, np.float32)
        for name, shape in [
            ("z", (batch, n_out)),
            ("y", (batch, n_out)),
            ("grad_z", (batch, n_out)),
            ("grad_x", (batch, n_in)),
            ("grad_w", (n_in, n_out)),
            ("grad_b", (n_out,)),
            ("partial_b", (-(-batch // REDUCTION_CHUNK_ROWS), n_out)),
        ]
    }
    return x, w, b, grad_y, buffers


def _run(benchmark, fn, *args):
    fn(*args)  # warm-up: compile, first touch
    return benchmark(fn, *args)


def test_dense_fastnn(benchmark, dense_arrays):
    x, w, b, grad_y, o = dense_arrays
    benchmark.group = _dense_group(x, w)
    relu = ACTIVATIONS["relu"][0]

    def step():
        dense_forward(x, w, b, o["z"], o["y"], relu, 0.0)
        dense_backward(
            x,
            w,
            o["z"],
            o["y"],
            grad_y,
            o["grad_z"],
            o["grad_x"],
            o["grad_w"],
            o["grad_b"],
            o["partial_b"],
            relu,
            0.0,
            True,
        )

    _run(benchmark, step)
    assert all(np.all(np.isfinite(o[name])) for name in ("y", "grad_x", "grad_w", "grad_b"))


def test_dense_gemm_floor(benchmark, dense_arrays):
    """The three matrix products alone (NumPy's BLAS into preallocated outputs): the floor to beat."""
    x, w, _, grad_z, o = dense_arrays
    benchmark.group = _dense_group(x, w)

    def step():
        np.matmul(x, w, out=o["z"])
        np.matmul(x.T, grad_z, out=o["grad_w"])
        np.matmul(grad_z, w.T, out=o["grad_x"])

    _run(benchmark, step)
    assert np.all(np.isfinite(o["grad_x"]))


def test_dense_torch(benchmark, dense_arrays):
    torch = pytest.importorskip("torch")
    x, w, b, grad_y, _ = dense_arrays
    benchmark.group = _dense_group(x, w)
    layer = torch.nn.Linear(*w.shape)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w.T.copy()))
        layer.bias.copy_(torch.from_numpy(b))
    xt = torch.from_numpy(x).requires_grad_(True)
    gt = torch.from_numpy(grad_y)

    def step():
        layer.zero_grad(set_to_none=True)
        xt.grad = None
        torch.relu(layer(xt)).backward(gt)

    _run(benchmark, step)
    assert torch.isfinite(xt.grad).all()


@pytest.mark.benchmark(group="residual add 512x1024 float32")
@pytest.mark.parametrize("impl", ["fastnn", "numpy"])
def test_residual_add(benchmark, impl):
    rng = _rng()
    a, b = (rng.standard_normal((512, 1024)).astype(np.float32) for _ in range(2))
    out = np.empty_like(a)
    _run(benchmark, (lambda: add(a, b, out)) if impl == "fastnn" else (lambda: np.add(a, b, out=out)))
    np.testing.assert_array_equal(out, a + b)


@pytest.mark.benchmark(group="activation 128x256 float32, forward+backward")
@pytest.mark.parametrize("name", ["relu", "tanh", "sigmoid", "gelu", "softmax"])
def test_activation(benchmark, name):
    rng = _rng()
    x = rng.standard_normal((128, 256)).astype(np.float32)
    grad_y = rng.standard_normal((128, 256)).astype(np.float32)
    y, grad_x = np.empty_like(x), np.empty_like(x)
    code, alpha, _ = ACTIVATIONS[name]

    def step():
        activation_forward(x, y, code, alpha)
        activation_backward(x, y, grad_y, grad_x, code, alpha)

    _run(benchmark, step)
    assert np.all(np.isfinite(grad_x))


@pytest.fixture(scope="module")
def logits_labels():
    rng = _rng()
    return rng.standard_normal((128, 10)).astype(np.float32), rng.integers(0, 10, 128).astype(np.int64)


@pytest.mark.benchmark(group="cross-entropy 128x10 float32, loss+gradient")
def test_cross_entropy_fastnn(benchmark, logits_labels):
    logits, labels = logits_labels
    grad = np.empty_like(logits)
    partials = np.empty(n_partials(logits.shape[0]))
    loss = _run(benchmark, cross_entropy_forward_backward, logits, labels, grad, partials, True, True)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))


WEIGHTED_GROUP = "sample-weighted cross-entropy 128x10 float32, loss+gradient"


def _weighted_targets(logits_labels):
    labels = logits_labels[1]
    return np.column_stack([labels, np.linspace(0.5, 2.0, labels.shape[0])]).astype(np.float64)


@pytest.mark.benchmark(group=WEIGHTED_GROUP)
def test_weighted_cross_entropy_fastnn(benchmark, logits_labels):
    logits, m = logits_labels[0], logits_labels[0].shape[0]
    grad, labels, rows = np.empty_like(logits), np.empty(m, np.int64), np.empty(m)
    target = _weighted_targets(logits_labels)
    loss = _run(benchmark, weighted_cross_entropy, logits, target, grad, labels, rows, True, True)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))


@pytest.mark.benchmark(group=WEIGHTED_GROUP)
def test_weighted_cross_entropy_numpy_formula(benchmark, logits_labels):
    """The NumPy formula the kernel replaced (kernels for the rows and the gradient, NumPy around them)."""
    logits, m = logits_labels[0], logits_labels[0].shape[0]
    grad, partials = np.empty_like(logits), np.empty(n_partials(m))
    target = _weighted_targets(logits_labels)

    def step():
        labels, weights = target[:, 0].astype(np.int64), target[:, -1]
        rows = np.empty(m)
        cross_entropy_rows(logits, labels, rows)
        total = float(weights.sum()) or np.inf
        cross_entropy_forward_backward(logits, labels, grad, partials, True, True)
        grad[...] *= (weights * (m / total)).astype(grad.dtype)[:, None]
        return float(rows @ weights) / total

    assert np.isfinite(_run(benchmark, step))


@pytest.mark.benchmark(group=WEIGHTED_GROUP)
def test_weighted_cross_entropy_torch(benchmark, logits_labels):
    torch = pytest.importorskip("torch")
    logits = torch.from_numpy(logits_labels[0]).requires_grad_(True)
    labels, weights = torch.from_numpy(logits_labels[1]), torch.linspace(0.5, 2.0, logits_labels[1].shape[0])

    def step():
        logits.grad = None
        rows = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
        loss = (rows * weights).sum() / weights.sum()
        loss.backward()
        return loss.item()

    assert np.isfinite(_run(benchmark, step))


@pytest.mark.benchmark(group="cross-entropy 128x10 float32, loss+gradient")
def test_cross_entropy_torch(benchmark, logits_labels):
    torch = pytest.importorskip("torch")
    logits = torch.from_numpy(logits_labels[0]).requires_grad_(True)
    labels = torch.from_numpy(logits_labels[1])

    def step():
        logits.grad = None
        loss = torch.nn.functional.cross_entropy(logits, labels)
        loss.backward()
        return loss.item()

    assert np.isfinite(_run(benchmark, step))


GEMM_GROUP = f"GEMM {BATCH}x{IN} @ {IN}x{OUT} float32, one thread: fastnn's register-blocked kernel, NumPy, torch"


@pytest.fixture(scope="module")
def gemm_operands():
    rng = _rng()
    return rng.standard_normal((BATCH, IN)).astype(np.float32), rng.standard_normal((IN, OUT)).astype(np.float32)


@pytest.mark.benchmark(group=GEMM_GROUP)
def test_gemm_micro(benchmark, gemm_operands):
    a, b = gemm_operands
    c = np.empty((BATCH, OUT), np.float32)
    _run(benchmark, micro_gemm_block, False, a, b, c, 0, BATCH, 0, OUT)  # one call: one thread
    np.testing.assert_allclose(c, a.astype(np.float64) @ b.astype(np.float64), rtol=1e-3, atol=1e-3)


@pytest.mark.benchmark(group=GEMM_GROUP)
def test_gemm_numpy_floor(benchmark, gemm_operands):
    a, b = gemm_operands
    c = np.empty((BATCH, OUT), np.float32)
    with threadpool_limits(1):
        _run(benchmark, lambda: np.matmul(a, b, out=c))
    assert np.isfinite(c).all()


@pytest.mark.benchmark(group=GEMM_GROUP)
def test_gemm_torch(benchmark, gemm_operands):
    torch = pytest.importorskip("torch")
    a, b = (torch.from_numpy(x) for x in gemm_operands)
    c = torch.empty((BATCH, OUT))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _run(benchmark, lambda: torch.mm(a, b, out=c))
    finally:
        torch.set_num_threads(threads)
    assert torch.isfinite(c).all()


GEMV_GROUP = (
    f"GEMM 1x{IN} @ {IN}x{OUT} float32 (batch 1), one thread: fastnn's row-times-matrix kernel (blas.gemm), "
    "NumPy, torch"
)


@pytest.fixture(scope="module")
def gemv_operands():
    rng = _rng()
    return rng.standard_normal((1, IN)).astype(np.float32), rng.standard_normal((IN, OUT)).astype(np.float32)


@pytest.mark.benchmark(group=GEMV_GROUP)
def test_gemv_fastnn(benchmark, gemv_operands):
    x, w = gemv_operands
    c = np.empty((1, OUT), np.float32)
    _run(benchmark, gemm, False, False, 1.0, x, w, 0.0, c)  # one serial call (gemv.py where it takes the shape)
    np.testing.assert_allclose(c, x.astype(np.float64) @ w.astype(np.float64), rtol=1e-3, atol=1e-3)


@pytest.mark.benchmark(group=GEMV_GROUP)
def test_gemv_numpy_floor(benchmark, gemv_operands):
    x, w = gemv_operands
    c = np.empty((1, OUT), np.float32)
    with threadpool_limits(1):
        _run(benchmark, lambda: np.matmul(x, w, out=c))
    assert np.isfinite(c).all()


@pytest.mark.benchmark(group=GEMV_GROUP)
def test_gemv_torch(benchmark, gemv_operands):
    torch = pytest.importorskip("torch")
    x, w = (torch.from_numpy(a) for a in gemv_operands)
    c = torch.empty((1, OUT))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _run(benchmark, lambda: torch.mm(x, w, out=c))
    finally:
        torch.set_num_threads(threads)
    assert torch.isfinite(c).all()
