"""model.predict with and without its fast path for repeated small calls
(``fastnn._inference.predict_small``), in one process, beside NumPy's floor and torch.

    python benchmarks/predict_fast_path.py             # mlp, batch 1 and 128, 15 interleaved blocks

One thread everywhere, timed in the calling thread's CPU time (a busy machine's waits drop out);
each block runs the call ``k`` times; the median and the fastest block per implementation.
"without" takes the general path (``predict_small`` answering None), as before the fast path.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from fastnn import _inference, bench

REAL = _inference.predict_small


def _block(fn, k: int) -> float:
    start = time.thread_time()
    for _ in range(k):
        fn()
    return (time.thread_time() - start) / k * 1e6


def _general_path(*args):
    return None


def compare(config: str, batch: int, blocks: int) -> dict:
    """Median and fastest microseconds per call of each implementation at ``batch`` rows."""
    cfg = bench.CONFIGS[config]
    model = bench.build_fastnn(cfg)
    x = np.ascontiguousarray(bench.make_batch(cfg, batch)[0])
    floor = bench.GemmFloor(cfg.sizes, batch)

    def without():
        _inference.predict_small = _general_path
        model.predict(x)
        _inference.predict_small = REAL

    impls = {"with": lambda: model.predict(x), "without": without, "floor": floor.forward}
    torch = bench.torch_or_none()
    if torch is not None:
        tb = bench.TorchBench(cfg, model).eval()
        tx = tb.tensors(x)
        impls["torch"] = lambda: tb.predict(tx)
    k = max(1, 40_000 // (batch * 10))
    for fn in impls.values():  # warm: the plan built and fused, the caches filled
        _block(fn, 3 * k)
    times: dict = {name: [] for name in impls}
    for _ in range(blocks):
        for name, fn in impls.items():
            times[name].append(_block(fn, k))
    return {name: (statistics.median(v), min(v)) for name, v in times.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="mlp")
    parser.add_argument("--batches", default="1,128")
    parser.add_argument("--blocks", type=int, default=15)
    args = parser.parse_args(argv)
    bench.torch_or_none()  # imported first, so that set_threads reaches its pool too
    bench.set_threads(1)
    print("| batch | with us | without us | floor us | torch us | without/with | with/floor | torch/with |")
    print("|---|---|---|---|---|---|---|---|")
    for batch in map(int, args.batches.split(",")):
        r = compare(args.config, batch, args.blocks)
        torch = r.get("torch", (float("nan"),) * 2)
        print(
            f"| {batch} | {r['with'][0]:.2f} ({r['with'][1]:.2f}) | {r['without'][0]:.2f} | {r['floor'][0]:.2f} | "
            f"{torch[0]:.2f} | {r['without'][0] / r['with'][0]:.3f} | {r['with'][0] / r['floor'][0]:.3f} | "
            f"{torch[0] / r['with'][0]:.2f} |"
        )


if __name__ == "__main__":
    main()
