"""Optimizer update alone over flat float32 buffers: fastnn's fused kernels beside a memory-copy
floor and torch's foreach / fused Adam.

    pytest benchmarks/test_bench_optim.py --benchmark-only --benchmark-group-by=group
    FASTNN_BENCH_LARGE=1 pytest benchmarks/test_bench_optim.py --benchmark-only   # adds 50M
    pytest benchmarks --benchmark-disable        # CI: each benchmark runs once, as a test

Each optimizer step streams the parameters, gradients and its state buffers: it reads
3 + k buffers and writes 1 + k (k state buffers; Adam k = 2: 7 buffer passes). Its floor is
those bytes divided by the copy bandwidth measured here: the faster of ``np.copyto`` (one
thread) and a chunked ``prange`` copy on fastnn's threads. Each benchmark records ``bytes``,
``floor_ms`` and, when timed, ``ratio_to_floor`` in ``extra_info`` (in ``--benchmark-json``). The
group's ``copy floor`` entries copy Adam's bytes (3.5 buffers read, 3.5 written) both ways.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from numba import njit, prange

from fastnn import optim
from fastnn._config import JIT_PARALLEL
from fastnn.bench import OPTIMIZER_CASES
from fastnn.kernels import accumulate

SIZES = [1_000_000, 10_000_000] + ([50_000_000] if os.environ.get("FASTNN_BENCH_LARGE") == "1" else [])
CONFIGS = OPTIMIZER_CASES  # one table for this suite and `fastnn bench`
assert {name for name, _ in CONFIGS.values()} == set(optim.OPTIMIZERS)


def _group(n: int) -> str:
    return f"optimizer update, {n // 1_000_000}M float32 params"


@njit(**JIT_PARALLEL)
def parallel_copy(dst, src):
    """dst[:] = src in chunks of 64k elements spread over Numba's threads."""
    chunk = 1 << 16
    for c in prange((src.size + chunk - 1) // chunk):
        dst[c * chunk : min((c + 1) * chunk, src.size)] = src[c * chunk : min((c + 1) * chunk, src.size)]


COPIES = {"np.copyto": lambda dst, src: np.copyto(dst, src), "prange copy": parallel_copy}


@pytest.fixture(scope="module")
def copy_bandwidth() -> float:
    """Bytes per second (read + write) of the faster copy on a 64 MB array: median of 5 each."""
    src = np.ones(16 * 1024 * 1024, np.float32)
    dst = np.empty_like(src)
    best = 0.0
    for copy in COPIES.values():
        copy(dst, src)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            copy(dst, src)
            times.append(time.perf_counter() - start)
        best = max(best, 2 * src.nbytes / float(np.median(times)))
    return best


_BUFFERS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _buffers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(params, grads) of n float32, shared by the benchmarks of one size."""
    if n not in _BUFFERS:
        _BUFFERS.clear()
        rng = np.random.default_rng(0)
        _BUFFERS[n] = (rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32) * 1e-3)
    return _BUFFERS[n]


def _record(benchmark, n_bytes: int, bandwidth: float) -> None:
    floor_s = n_bytes / bandwidth
    benchmark.extra_info["bytes"] = n_bytes
    benchmark.extra_info["floor_ms"] = round(floor_s * 1e3, 3)
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        benchmark.extra_info["ratio_to_floor"] = round(stats.stats.median / floor_s, 2)


@pytest.mark.parametrize("n", SIZES, ids=lambda n: f"{n // 1_000_000}M")
@pytest.mark.parametrize("config", list(CONFIGS))
def test_fastnn_update(benchmark, copy_bandwidth, config, n):
    benchmark.group = _group(n)
    name, hyper = CONFIGS[config]
    params, grads = _buffers(n)
    opt = optim.get(name, lr=1e-4, **hyper)
    opt.bind(params, grads, n - 1000)  # the last 1000 (biases) without weight decay
    opt.step()  # compile, first touch of the state buffers
    benchmark(opt.step)
    assert np.isfinite(params[:1000]).all()
    k = sum(isinstance(v, np.ndarray) for v in opt.state_dict().values())
    passes = 3 + 2 * k + (1 if opt.clip_norm is not None else 0)  # the norm reads grads once more
    _record(benchmark, passes * params.nbytes, copy_bandwidth)


@pytest.mark.parametrize("n", SIZES, ids=lambda n: f"{n // 1_000_000}M")
@pytest.mark.parametrize("copy", list(COPIES))
def test_copy_floor(benchmark, copy_bandwidth, copy, n):
    """A copy of Adam's bytes (7 buffer passes: 3.5 read, 3.5 written)."""
    benchmark.group = _group(n)
    src = np.ones(n * 7 // 2, np.float32)
    dst = np.empty_like(src)
    COPIES[copy](dst, src)
    benchmark(COPIES[copy], dst, src)
    assert dst[-1] == 1.0
    _record(benchmark, 2 * src.nbytes, copy_bandwidth)


@pytest.mark.parametrize("n", SIZES, ids=lambda n: f"{n // 1_000_000}M")
@pytest.mark.parametrize("impl", ["foreach", "fused"])
def test_torch_adam(benchmark, copy_bandwidth, impl, n):
    torch = pytest.importorskip("torch")
    benchmark.group = _group(n)
    params, grads = _buffers(n)
    p = torch.nn.Parameter(torch.from_numpy(params.copy()))
    p.grad = torch.from_numpy(grads.copy())
    opt = torch.optim.Adam([p], lr=1e-4, **{impl: True})
    opt.step()
    benchmark(opt.step)
    assert torch.isfinite(p[:1000]).all()
    _record(benchmark, 7 * params.nbytes, copy_bandwidth)


ACCUMULATE_PATHS = ["fastnn accumulate_gradients", "numpy multiply+add"]


@pytest.mark.parametrize("n", SIZES, ids=lambda n: f"{n // 1_000_000}M")
@pytest.mark.parametrize("path", ACCUMULATE_PATHS)
def test_accumulate_gradients(benchmark, copy_bandwidth, path, n):
    """One batch's weighted gradients added to an accumulating fit's group sum (not the group's
    last batch): the kernel inside the step's call, or the NumPy formula it replaced."""
    benchmark.group = f"gradient accumulation, {n // 1_000_000}M float32 params"
    grads, total = _buffers(n)[1].copy(), np.zeros(n, np.float32)
    if path == ACCUMULATE_PATHS[0]:
        scalars = np.zeros(accumulate.N_SCALARS)
        scalars[[accumulate.WEIGHT, accumulate.DIVISOR]] = 1.0, 1.0  # weight 1: the values stay put

        def add():
            scalars[accumulate.ARMED] = 1.0
            accumulate.accumulate_gradients(0.0, scalars, grads, total, np.zeros(1))
    else:

        def add():
            np.multiply(grads, 1, out=grads)
            np.add(total, grads, out=total)

    add()
    benchmark(add)
    assert np.isfinite(total[:1000]).all() and total[0] != 0.0
    _record(benchmark, 4 * grads.nbytes, copy_bandwidth)  # grads read and written, total read and written


SPARSE_PATHS = ["fastnn adam_rows_update (touched rows)", "fastnn adam_update (whole table)", "torch SparseAdam"]


@pytest.mark.parametrize("path", SPARSE_PATHS)
def test_sparse_table_update(benchmark, copy_bandwidth, path):
    """Adam on a 10,000 x 64 embedding table of which one step looked up 1,850 rows (the bench's
    embed-10k batch): the lazy update of those rows (``Embedding(sparse=True)``), the dense update of
    the whole table it replaces, and torch's SparseAdam on the same rows."""
    benchmark.group = "sparse table update, 10k x 64 float32, 1,850 rows looked up"
    vocabulary, width = 10_000, 64
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(vocabulary, 1_850, replace=False))
    params = rng.standard_normal(vocabulary * width, dtype=np.float32)
    grads = np.zeros_like(params)
    grads.reshape(vocabulary, width)[rows] = rng.standard_normal((rows.size, width), dtype=np.float32)
    touched = np.concatenate([[rows.size], rows, np.zeros(vocabulary - rows.size)]).astype(np.int64)
    if path == SPARSE_PATHS[2]:
        torch = pytest.importorskip("torch")
        weight = torch.nn.Parameter(torch.from_numpy(params.reshape(vocabulary, width).copy()))
        opt = torch.optim.SparseAdam([weight], lr=1e-4)
        grad = torch.sparse_coo_tensor(
            torch.from_numpy(rows[None]),
            torch.from_numpy(grads.reshape(vocabulary, width)[rows]),
            weight.shape,
            check_invariants=True,
        )

        def step():
            weight.grad = grad
            opt.step()
    else:
        adam = optim.Adam(lr=1e-4)
        adam.bind(params, grads, params.size)
        if path == SPARSE_PATHS[0]:
            adam.sparse_rows = optim.SparseRows(0, params.size, width, touched)
        step = adam.step
    step()
    benchmark(step)
    assert np.isfinite(params).all()
    moved = rows.size * width if path != SPARSE_PATHS[1] else params.size
    _record(benchmark, 7 * moved * params.itemsize, copy_bandwidth)
