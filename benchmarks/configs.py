"""The benchmark configs and their builders: one table, used by every benchmark here.

The definitions live in :mod:`fastnn.bench` so that ``fastnn bench`` works from an installed
package; this module re-exports them for the scripts and pytest-benchmark tests in benchmarks/.

- tiny: 2-16-16-1 tanh, batch 32, SGD momentum 0.9, MSE
- mlp: 784-256-128-10 ReLU, batch 128, Adam, cross-entropy
- mlp-bn-do: 784-512-256-10, Dense -> BatchNorm1d -> ReLU -> Dropout(0.2) per hidden layer,
  batch 256, Adam, cross-entropy
- wide: 1024-4096-4096-1024 ReLU, batch 512, Adam, MSE (``heavy``: left out of the default
  pytest run unless FASTNN_BENCH_LARGE=1)

Each config builds a float32 fastnn model (:func:`build_fastnn`), the same network in torch
with the same weights (:class:`TorchBench`, when torch is importable) and its GEMM floor
(:class:`GemmFloor`).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastnn.bench import (
    CONFIGS,
    OPTIMIZER_CASES,
    BenchConfig,
    GemmFloor,
    TorchBench,
    build_fastnn,
    copy_bandwidth,
    infer_flops,
    interleaved,
    machine_info,
    make_batch,
    numpy_blas_controllers,
    set_threads,
    summarize,
    torch_or_none,
    train_flops,
)

__all__ = [
    "CONFIGS",
    "OPTIMIZER_CASES",
    "BenchConfig",
    "GemmFloor",
    "TorchBench",
    "build_fastnn",
    "copy_bandwidth",
    "infer_flops",
    "interleaved",
    "machine_info",
    "make_batch",
    "numpy_blas_controllers",
    "set_threads",
    "summarize",
    "torch_or_none",
    "train_flops",
]
