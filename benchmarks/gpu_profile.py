"""Where a fastnn step on an NVIDIA GPU spends its time: the CUDA API's unit costs, then profiles.

benchmarks/gpu_compare.py measured fastnn's mlp step at 1.8x PyTorch's and its predict at 3.6x on
an H200 (benchmarks/RESULTS.md, session 18), with 23 kernel launches per Adam step and 3 per
predict: far above what the launches and copies should cost. This script answers, on the GPU:

1. unit costs in microseconds (median of many calls): an empty kernel launch with 1 and with 8
   array arguments, a launch and synchronize, ``cuda.device_array`` (allocation), a host-to-device
   copy into an existing buffer and a device-to-host copy into an existing host array (64 KiB,
   pageable), ``cuda.synchronize()``, and a CuPy view of a Numba array (the cuBLAS path);
2. the host-side CUDA work per call of that config (allocations, copies each way, host waits,
   kernel launches, by tests_cuda/_cuda_counts.py on numba-cuda's real classes): a steady
   ``train_step``, a 1024-row ``predict`` and a step of ``fit``, to set beside the simulator's
   counts (benchmarks/RESULTS.md, "Session 23") and the unit costs;
3. a cProfile of ``--calls`` training steps and of ``--calls`` predicts of one config, the top
   functions by own time (``--top``).

Run on a machine with an NVIDIA GPU::

    python benchmarks/gpu_profile.py --config mlp --batch 512
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import time
from collections.abc import Callable

import numpy as np
from numba import cuda

from fastnn import bench


@cuda.jit
def _empty1(a):
    pass


@cuda.jit
def _empty8(a, b, c, d, e, f, g, h):
    pass


def _median_us(fn: Callable[[], object], calls: int) -> float:
    fn()
    cuda.synchronize()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    cuda.synchronize()
    return 1e6 * statistics.median(times)


def unit_costs(calls: int = 1000) -> dict[str, float]:
    """Microseconds per call (median of ``calls``) of the CUDA operations a step is made of."""
    host = np.ones(16384, np.float32)  # 64 KiB
    dev = cuda.to_device(host)
    out = np.empty_like(host)
    args = [cuda.to_device(host) for _ in range(8)]
    costs = {
        "launch, 1 array": _median_us(lambda: _empty1[1, 32](dev), calls),
        "launch, 8 arrays": _median_us(lambda: _empty8[1, 32](*args), calls),
        "launch + synchronize": _median_us(lambda: (_empty1[1, 32](dev), cuda.synchronize()), calls),
        "synchronize (idle)": _median_us(cuda.synchronize, calls),
        "device_array 64 KiB": _median_us(lambda: cuda.device_array(16384, np.float32), calls),
        "copy_to_device 64 KiB": _median_us(lambda: dev.copy_to_device(host), calls),
        "copy_to_host 64 KiB": _median_us(lambda: dev.copy_to_host(out), calls),
    }
    try:
        import cupy

        costs["cupy.asarray(numba array)"] = _median_us(lambda: cupy.asarray(dev), calls)
    except ImportError:
        pass
    return costs


def profile(fn: Callable[[], object], calls: int, top: int) -> str:
    """The ``top`` functions by own time over ``calls`` calls of ``fn``."""
    for _ in range(3):
        fn()
    cuda.synchronize()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        fn()
    cuda.synchronize()
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
    return text.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="mlp", help="an MLP config of fastnn.bench")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--unit-calls", type=int, default=1000, help="calls per unit cost")
    args = parser.parse_args(argv)
    print("## CUDA unit costs (us per call, median)")
    for name, us in unit_costs(args.unit_calls).items():
        print(f"{name:32s} {us:9.1f}")
    cfg = bench.CONFIGS[args.config]
    x, y = bench.make_batch(cfg, args.batch)
    model = bench.build_fastnn(cfg).to("cuda")
    print(f"\n## host-side CUDA work per call, {cfg.name} batch {args.batch} (tests_cuda/_cuda_counts.py)")
    try:
        import os
        import sys

        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from tests_cuda import _cuda_counts

        counted = _cuda_counts.measure_model(cfg.name, bench.build_fastnn(cfg).to("cuda"), x, y)
        print(_cuda_counts.table(counted))
        for what, counts in counted.items():
            print(f"{what}: launches by kernel {dict(counts.kernels)}")
    except Exception as error:  # noqa: BLE001 - the counts are extra: the profile below still runs
        print(f"counting failed: {type(error).__name__}: {error}")
    for name, fn in (("train_step", lambda: model.train_step(x, y)), ("predict", lambda: model.predict(x))):
        start = time.perf_counter()
        for _ in range(args.calls):
            fn()
        cuda.synchronize()
        ms = 1e3 * (time.perf_counter() - start) / args.calls
        print(f"\n## {name}, {cfg.name} batch {args.batch}: {ms:.3f} ms per call; cProfile of {args.calls} calls")
        print(profile(fn, args.calls, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
