"""Transformer encoder block training step: fastnn beside its GEMM floor and PyTorch, in one run.

    python benchmarks/attention_step.py                  # 1 and 2 threads, 7 interleaved repeats
    python benchmarks/attention_step.py --threads 2 --repeats 11

Model (float32): TransformerEncoderBlock(128, 4 heads, ff 512, relu, post-norm, dropout 0) on
(batch 32, time 64, 128), then Flatten and MSE against a fixed target, plain SGD: one call is
``model.train_step(x, target)`` / torch's zero_grad, forward, loss, backward, step of
``nn.TransformerEncoderLayer(batch_first=True)`` / the GEMM floor: the same matrix products in
NumPy's BLAS into preallocated outputs (the four projections forward, each one's two gradient
products, and per (sample, head) q @ k.T and probs @ v forward with their four gradient products
as batched np.matmul). fastnn's Numba pool, torch and NumPy's BLAS run ``--threads`` threads;
the table gives medians of interleaved repeats (fastnn, torch, floor, fastnn, ...).
"""

from __future__ import annotations

import argparse

import numpy as np

import fastnn as fnn
from fastnn.bench import interleaved, set_threads

BATCH, STEPS, EMBED, HEADS, FF = 32, 64, 128, 4, 512
F32 = np.float32


def fastnn_step(x, target):
    model = fnn.Sequential(
        [fnn.TransformerEncoderBlock(EMBED, HEADS, FF), fnn.Flatten()], input_shape=x.shape[1:], dtype="float32", seed=0
    )
    model.compile("mse", fnn.optim.SGD(1e-4))
    return lambda: model.train_step(x, target)


def torch_step(torch, x, target):
    block = torch.nn.TransformerEncoderLayer(EMBED, HEADS, FF, dropout=0.0, batch_first=True)
    opt = torch.optim.SGD(block.parameters(), lr=1e-4)
    tx, tt = torch.from_numpy(x), torch.from_numpy(target)
    loss_fn = torch.nn.MSELoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(block(tx).flatten(1), tt)
        loss.backward()
        opt.step()

    return step


class Floor:
    """The block's matrix products in NumPy, on random operands, into preallocated outputs."""

    def __init__(self):
        rng = np.random.default_rng(0)
        rows, d = BATCH * STEPS, EMBED // HEADS
        self.ops = []
        for k, n in ((EMBED, 3 * EMBED), (EMBED, EMBED), (EMBED, FF), (FF, EMBED)):  # y = x @ w.T per projection
            x, w, y = rng.standard_normal((rows, k), F32), rng.standard_normal((n, k), F32), np.empty((rows, n), F32)
            self.ops += [(x, w.T, y), (y.T, x, np.empty((n, k), F32)), (y, w, np.empty((rows, k), F32))]
        q, k, v = (rng.standard_normal((BATCH, HEADS, STEPS, d), F32) for _ in range(3))
        s, o = np.empty((BATCH, HEADS, STEPS, STEPS), F32), np.empty((BATCH, HEADS, STEPS, d), F32)
        kt, st = k.transpose(0, 1, 3, 2), s.transpose(0, 1, 3, 2)
        self.ops += [
            (q, kt, s),
            (s, v, o),  # forward: scores, context
            (st, o, np.empty_like(v)),
            (o, v.transpose(0, 1, 3, 2), np.empty_like(s)),  # grad v, grad probs
            (s, k, np.empty_like(q)),
            (st, q, np.empty_like(k)),
        ]  # grad q, grad k

    def __call__(self):
        for a, b, c in self.ops:
            np.matmul(a, b, out=c)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--block-ms", type=float, default=300.0)
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args(argv)
    torch = None
    if not args.no_torch:
        import torch
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, STEPS, EMBED), dtype=F32)
    target = rng.standard_normal((BATCH, STEPS * EMBED), dtype=F32)
    print(
        f"## Encoder block training step (batch {BATCH}, time {STEPS}, embed {EMBED}, {HEADS} heads, ff {FF}, "
        f"float32), median of {args.repeats} interleaved repeats (ms per step)\n"
    )
    print("| threads | fastnn | torch | GEMM floor | fastnn/torch | fastnn/floor |\n|---|---|---|---|---|---|")
    for threads in (int(t) for t in args.threads.split(",")):
        set_threads(threads)
        cases = {"fastnn": fastnn_step(x, target), "floor": Floor()}
        if torch is not None:
            cases["torch"] = torch_step(torch, x, target)
        t = {name: float(np.median(s)) for name, s in interleaved(cases, args.repeats, args.block_ms / 1e3).items()}
        tt = t.get("torch", float("nan"))
        print(
            f"| {threads} | {t['fastnn'] * 1e3:.2f} | {tt * 1e3:.2f} | {t['floor'] * 1e3:.2f} | "
            f"{t['fastnn'] / tt:.2f} | {t['fastnn'] / t['floor']:.2f} |",
            flush=True,
        )
    print(f"\nCommand: `python benchmarks/attention_step.py --threads {args.threads} --repeats {args.repeats}`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
