"""The networks of fastnn.bench.NET_CONFIGS (LeNet-like CNN, 1-D CNN, embedding of a 10k
vocabulary): training step and batch-1 inference, fastnn beside torch and the GEMM floor.

    pytest benchmarks/test_bench_nets.py --benchmark-only --benchmark-group-by=group
    pytest benchmarks/test_bench_nets.py --benchmark-disable     # CI: each body runs once, as a test

Each test first checks its case: fastnn's loss falls over a few steps on one batch; torch built
by ``torch_sequential`` from the fastnn model gives the same predictions and the same first loss;
the floor's products have the shapes of the model's Dense and im2col convolution GEMMs.
"""

import numpy as np
import pytest

from fastnn.bench import NET_CONFIGS, GemmListFloor, TorchBench, build_fastnn, make_batch, model_gemms, torch_or_none

NAMES = list(NET_CONFIGS)


@pytest.mark.parametrize("name", NAMES)
def test_net_train_fastnn(benchmark, name):
    cfg = NET_CONFIGS[name]
    benchmark.group = f"net train {name}: {cfg.describe()}"
    model = build_fastnn(cfg)
    x, y = make_batch(cfg)
    losses = [model.train_step(x, y) for _ in range(6)]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    assert np.isfinite(benchmark(model.train_step, x, y))


@pytest.mark.parametrize("name", NAMES)
def test_net_infer_batch1_fastnn(benchmark, name):
    cfg = NET_CONFIGS[name]
    benchmark.group = f"net infer {name} batch 1: {cfg.describe()}"
    model = build_fastnn(cfg)
    x, _ = make_batch(cfg, batch=1)
    out = benchmark(model.predict, x)
    assert out.shape == (1, cfg.n_out) and out.dtype == np.float32


@pytest.mark.parametrize("name", NAMES)
def test_net_floor_shapes(benchmark, name):
    cfg = NET_CONFIGS[name]
    benchmark.group = f"net train {name}: {cfg.describe()}"
    model = build_fastnn(cfg)
    gemms = model_gemms(model, cfg.batch)
    dense = [layer for layer in model.layers if type(layer).__name__ == "Dense"]
    convs = [layer for layer in model.layers if type(layer).__name__.startswith("Conv")]
    assert len(gemms) == len(dense) + len(convs)
    assert gemms[0][3] == (type(model.layers[0]).__name__ == "Embedding")  # dx only after the first layer
    floor = GemmListFloor(gemms)
    benchmark(floor.train_step)
    for x, w, y, dw in zip(floor.x, floor.w, floor.y, floor.dw):
        np.testing.assert_allclose(y, x @ w, rtol=1e-4, atol=1e-4)
        assert dw.shape == w.shape


@pytest.mark.parametrize("name", NAMES)
def test_net_torch_twin(benchmark, name):
    if torch_or_none() is None:
        pytest.skip("torch is not installed")
    cfg = NET_CONFIGS[name]
    benchmark.group = f"net train {name}: {cfg.describe()}"
    model = build_fastnn(cfg)
    x, y = make_batch(cfg, batch=8)
    evaluation = TorchBench(cfg, model).eval()
    np.testing.assert_allclose(
        evaluation.predict(evaluation.tensors(x)).numpy(), model.predict(x), rtol=1e-4, atol=1e-5
    )
    tb = TorchBench(cfg, model)
    tx, ty = tb.tensors(x, y)
    first = float(tb.train_step(tx, ty).detach())
    np.testing.assert_allclose(first, model.train_step(x, y), rtol=1e-4)
    x, y = make_batch(cfg)
    tx, ty = tb.tensors(x, y)
    benchmark(tb.train_step, tx, ty)
