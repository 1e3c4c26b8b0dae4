"""Training step of each config: fastnn's model.train_step, its GEMM floor and torch.

    pytest benchmarks/test_bench_training.py --benchmark-only --benchmark-group-by=group
    pytest benchmarks --benchmark-disable        # CI: each benchmark runs once, as a test
    FASTNN_BENCH_LARGE=1 pytest benchmarks/test_bench_training.py   # adds 'wide'

The side-by-side table with ratios is benchmarks/compare.py; these are the same cases as
pytest-benchmark tests. Each test first checks the case is right (the loss is finite and falls
over a few steps on one batch, torch with the same weights gives the same first loss, the floor's
products have the right shapes and values); ``extra_info['gflop']`` holds the step's GFLOP.
"""

import numpy as np
import pytest
from configs import CONFIGS, GemmFloor, TorchBench, build_fastnn, make_batch, train_flops

STEPS = 8
NAMES = [pytest.param(name, marks=pytest.mark.heavy) if cfg.heavy else name for name, cfg in CONFIGS.items()]


def _setup(benchmark, name):
    cfg = CONFIGS[name]
    benchmark.group = f"train {name}: {cfg.describe()}"
    benchmark.extra_info["gflop"] = train_flops(cfg.sizes, cfg.batch) / 1e9
    return cfg


def _assert_learns(losses):
    assert np.all(np.isfinite(losses)), losses
    assert losses[-1] < losses[0], f"the loss did not fall over {len(losses)} steps on one batch: {losses}"


@pytest.mark.parametrize("name", NAMES)
def test_train_fastnn(benchmark, name):
    cfg = _setup(benchmark, name)
    model = build_fastnn(cfg)
    x, y = make_batch(cfg)
    _assert_learns([model.train_step(x, y) for _ in range(STEPS)])
    loss = benchmark(model.train_step, x, y)
    assert np.isfinite(loss)


@pytest.mark.parametrize("name", NAMES)
def test_train_floor(benchmark, name):
    cfg = _setup(benchmark, name)
    floor = GemmFloor(cfg.sizes, cfg.batch)
    benchmark(floor.train_step)
    for i, (a, b) in enumerate(cfg.layer_shapes):
        assert floor.acts[i + 1].shape == (cfg.batch, b)
        assert floor.grad_w[i].shape == (a, b)
        if i > 0:
            assert floor.grads[i].shape == (cfg.batch, a)
    f64 = [a.astype(np.float64) for a in (floor.acts[0], floor.weights[0], floor.grads[1])]
    scale = np.sqrt(cfg.sizes[0]) + np.sqrt(cfg.batch)
    np.testing.assert_allclose(floor.acts[1], f64[0] @ f64[1], rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(floor.grad_w[0], f64[0].T @ f64[2], rtol=1e-4, atol=1e-5 * scale)
    last = len(cfg.layer_shapes) - 1
    np.testing.assert_allclose(
        floor.grads[last],
        floor.grads[last + 1].astype(np.float64) @ floor.weights[last].T,
        rtol=1e-4,
        atol=1e-5 * scale,
    )


@pytest.mark.parametrize("name", NAMES)
def test_train_torch(benchmark, name):
    torch = pytest.importorskip("torch")
    cfg = _setup(benchmark, name)
    model = build_fastnn(cfg)
    tb = TorchBench(cfg, model)
    x, y = make_batch(cfg)
    tx, ty = tb.tensors(x, y)
    first = tb.train_step(tx, ty).item()
    if not cfg.dropout:  # same weights, same batch: the same first loss (dropout masks differ)
        assert first == pytest.approx(model.train_step(x, y), rel=1e-4, abs=1e-6)
    _assert_learns([first] + [tb.train_step(tx, ty).item() for _ in range(STEPS - 1)])
    loss = benchmark(tb.train_step, tx, ty)
    assert torch.isfinite(loss)
