"""Transformer encoder block training step (batch 32, time 64, embed 128, 4 heads, ff 512): fastnn
beside the same matrix products in NumPy (the GEMM floor) and torch.nn.TransformerEncoderLayer.

    pytest benchmarks/test_bench_attention.py --benchmark-only --benchmark-group-by=group
    pytest benchmarks/test_bench_attention.py --benchmark-disable     # CI: each body runs once

The interleaved comparison on 1 and 2 threads is benchmarks/attention_step.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from attention_step import BATCH, EMBED, STEPS, Floor, fastnn_step, torch_step

GROUP = f"encoder block train step ({BATCH}, {STEPS}, {EMBED}), 4 heads, ff 512, float32"


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return (
        rng.standard_normal((BATCH, STEPS, EMBED), dtype=np.float32),
        rng.standard_normal((BATCH, STEPS * EMBED), dtype=np.float32),
    )


@pytest.mark.benchmark(group=GROUP)
def test_encoder_block_fastnn(benchmark, data):
    step = fastnn_step(*data)
    step()  # compile outside the timing
    loss = benchmark(step)
    assert np.isfinite(loss)


@pytest.mark.benchmark(group=GROUP)
def test_encoder_block_gemm_floor(benchmark, data):
    benchmark(Floor())


@pytest.mark.benchmark(group=GROUP)
def test_encoder_block_torch(benchmark, data):
    torch = pytest.importorskip("torch")
    benchmark(torch_step(torch, *data))
