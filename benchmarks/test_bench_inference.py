"""Inference latency of each config at batch 1 and at the training batch: fastnn's
model.predict, the forward GEMM floor and torch (eval mode, no_grad).

    pytest benchmarks/test_bench_inference.py --benchmark-only --benchmark-group-by=group
    pytest benchmarks --benchmark-disable        # CI: each benchmark runs once, as a test

Each test checks its output: shape, finite, and (torch) equal to fastnn's with the same weights.
"""

import numpy as np
import pytest
from configs import CONFIGS, GemmFloor, TorchBench, build_fastnn, infer_flops, make_batch

NAMES = [pytest.param(name, marks=pytest.mark.heavy) if cfg.heavy else name for name, cfg in CONFIGS.items()]
BATCHES = pytest.mark.parametrize("batch", ["1", "train"])


def _setup(benchmark, name, batch):
    cfg = CONFIGS[name]
    m = 1 if batch == "1" else cfg.batch
    benchmark.group = f"infer {name} batch {m}: {cfg.describe()}"
    benchmark.extra_info["gflop"] = infer_flops(cfg.sizes, m) / 1e9
    x, _ = make_batch(cfg, m)
    return cfg, m, x


@BATCHES
@pytest.mark.parametrize("name", NAMES)
def test_infer_fastnn(benchmark, name, batch):
    cfg, m, x = _setup(benchmark, name, batch)
    model = build_fastnn(cfg)
    out = benchmark(model.predict, x)
    assert out.shape == (m, cfg.sizes[-1]) and out.dtype == np.float32
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out, model.predict(x))  # eval mode: deterministic


@BATCHES
@pytest.mark.parametrize("name", NAMES)
def test_infer_floor(benchmark, name, batch):
    cfg, m, _ = _setup(benchmark, name, batch)
    floor = GemmFloor(cfg.sizes, m)
    benchmark(floor.forward)
    assert [a.shape for a in floor.acts] == [(m, s) for s in cfg.sizes]
    ref = floor.acts[0].astype(np.float64)
    for w in floor.weights:
        ref = ref @ w
    np.testing.assert_allclose(floor.acts[-1], ref, rtol=1e-3, atol=1e-4)


@BATCHES
@pytest.mark.parametrize("name", NAMES)
def test_infer_torch(benchmark, name, batch):
    pytest.importorskip("torch")
    cfg, m, x = _setup(benchmark, name, batch)
    model = build_fastnn(cfg)
    tb = TorchBench(cfg, model).eval()
    tx = tb.tensors(x)
    out = benchmark(tb.predict, tx)
    assert tuple(out.shape) == (m, cfg.sizes[-1])
    np.testing.assert_allclose(out.numpy(), model.predict(x), rtol=1e-4, atol=1e-5)
