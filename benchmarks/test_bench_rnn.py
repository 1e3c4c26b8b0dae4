"""Recurrent layers: LSTM and GRU (64 -> 128, batch 64, 100 steps) forward + backward beside the GEMM
floor (the same products in NumPy) and torch; batch-1 one-step LSTM inference.

    pytest benchmarks/test_bench_rnn.py --benchmark-only --benchmark-group-by=group
    pytest benchmarks/test_bench_rnn.py --benchmark-disable     # CI: each body runs once, as a test

The cases are those of benchmarks/rnn_step.py (which interleaves them in one run and prints a table).
"""

from __future__ import annotations

import pytest
import rnn_step

from fastnn.bench import torch_or_none

KINDS = ("LSTM", "GRU")


def _group(kind):
    return (
        f"{kind} {rnn_step.INPUTS}->{rnn_step.HIDDEN}, batch {rnn_step.BATCH}, {rnn_step.STEPS} steps, forward+backward"
    )


@pytest.mark.parametrize("impl", ["fastnn", "floor", "torch"])
@pytest.mark.parametrize("kind", KINDS)
def test_recurrent_train(benchmark, kind, impl):
    torch = torch_or_none()
    if impl == "torch" and torch is None:
        pytest.skip("torch is not installed")
    benchmark.group = _group(kind)
    fn = rnn_step.train_cases(kind, torch if impl == "torch" else None)[impl]
    benchmark(fn)


@pytest.mark.parametrize("impl", ["fastnn", "fastnn kernels", "floor", "torch"])
def test_lstm_one_step_inference(benchmark, impl):
    torch = torch_or_none()
    if impl == "torch" and torch is None:
        pytest.skip("torch is not installed")
    benchmark.group = f"LSTM {rnn_step.INPUTS}->{rnn_step.HIDDEN}, batch 1, one step with the carried state"
    benchmark(rnn_step.infer_cases(torch if impl == "torch" else None)[impl])
