"""A small network on a large batch (the digits MLP of scikit-learn's MLPClassifier: 64-100-10, ReLU,
batch 200, softmax cross-entropy, float32): its forward, loss and backward as one call with the
batch rows split over the threads (kernels.dense_chain), layer by layer (kernels.dense and the loss
kernel), the GEMM floor (the same five products in NumPy's BLAS) and torch.

    pytest benchmarks/test_bench_dense_chain.py --benchmark-only --benchmark-group-by=group
    pytest benchmarks --benchmark-disable        # CI: each benchmark runs once, as a test

The chain is what step plans run on a machine with 2 or more CPUs (fastnn._dense_chain); the
row split is that of 2 CPUs here on any machine (``GEMM_TILES`` set to 2 for the plan).
"""

from __future__ import annotations

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _config, _dense_chain

BATCH, SIZES = 200, (64, 100, 10)
GROUP = f"dense chain {'-'.join(map(str, SIZES))} relu, batch {BATCH}, float32, forward+loss+backward"


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    return rng.standard_normal((BATCH, SIZES[0])).astype(np.float32), rng.integers(0, SIZES[-1], BATCH)


def _calls(chain: bool, batch, monkeypatch):
    """The recorded calls of the step's forward, loss and backward (not the norm) of a model built
    with the chain on or off, and the model."""
    monkeypatch.setattr(_config, "GEMM_TILES", 2)
    monkeypatch.setattr(_dense_chain, "ENABLED", chain)
    model = fnn.Sequential([fnn.Dense(SIZES[0], SIZES[1], activation="relu"), fnn.Dense(SIZES[1], SIZES[2])], seed=0)
    model.compile(loss="cross_entropy", optimizer="adam")
    plan = model.step_plan(BATCH)
    plan.x[...], plan.y[...] = batch
    calls = plan.calls[:-1]
    assert any(fn.__name__.startswith("dense_chain") for fn, _ in calls) == chain
    return calls, model


def _run(benchmark, fn):
    fn()  # warm-up: compile or load, first touch
    return benchmark(fn)


@pytest.mark.parametrize("chain", [True, False], ids=["rows split (one call)", "layer by layer"])
def test_dense_chain_fastnn(benchmark, batch, monkeypatch, chain):
    benchmark.group = GROUP
    calls, model = _calls(chain, batch, monkeypatch)

    def step():
        loss = None
        for fn, args in calls:
            value = fn(*args)
            loss = value if loss is None else loss
        return loss

    loss = _run(benchmark, step)
    assert np.isfinite(loss) and np.all(np.isfinite(model.grads)) and np.any(model.grads != 0)


def test_dense_chain_gemm_floor(benchmark, batch):
    """The five matrix products alone (NumPy's BLAS into preallocated outputs): two forward, the
    two weight gradients and the hidden layer's input gradient."""
    benchmark.group = GROUP
    x, _ = batch
    rng = np.random.default_rng(1)
    w1, w2 = (rng.standard_normal(s).astype(np.float32) for s in ((SIZES[0], SIZES[1]), (SIZES[1], SIZES[2])))
    h, o, dh = (
        np.empty((BATCH, SIZES[1]), np.float32),
        np.empty((BATCH, SIZES[2]), np.float32),
        np.empty((BATCH, SIZES[1]), np.float32),
    )
    g1, g2 = np.empty_like(w1), np.empty_like(w2)

    def step():
        np.matmul(x, w1, out=h)
        np.matmul(h, w2, out=o)
        np.matmul(h.T, o, out=g2)
        np.matmul(o, w2.T, out=dh)
        np.matmul(x.T, dh, out=g1)

    _run(benchmark, step)
    assert np.all(np.isfinite(g1))


def test_dense_chain_torch(benchmark, batch):
    torch = pytest.importorskip("torch")
    benchmark.group = GROUP
    x, y = batch
    net = torch.nn.Sequential(torch.nn.Linear(SIZES[0], SIZES[1]), torch.nn.ReLU(), torch.nn.Linear(SIZES[1], SIZES[2]))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        net.zero_grad(set_to_none=True)
        loss = loss_fn(net(xt), yt)
        loss.backward()
        return loss

    loss = _run(benchmark, step)
    assert torch.isfinite(loss)
