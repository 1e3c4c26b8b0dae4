"""Recurrent layers: a training step's forward + backward, and batch-1 step-by-step inference,
fastnn beside PyTorch and the GEMM floor, in one interleaved run.

    python benchmarks/rnn_step.py                  # 2 threads, 7 interleaved repeats
    python benchmarks/rnn_step.py --threads 1 --repeats 11
    python benchmarks/rnn_step.py --threads 1 --cpu-clock   # the calling thread's CPU time (loaded machines)

Cases (float32; x (batch 64, time 100, 64 features), hidden 128):
  LSTM/GRU train b=64 T=100   forward + backward of the layer (every parameter gradient and the
                              input gradient), fastnn's recorded kernel calls / torch's
                              ``nn.LSTM(batch_first=True)`` forward and ``backward`` / the floor:
                              the same matrix products in NumPy's BLAS into preallocated outputs
                              (input projection, 100 recurrent products, 100 backward recurrent
                              products, the weight and input gradients over all steps)
  LSTM infer b=1 step         one time step with the carried state: fastnn's public eager call
                              ``layer.forward(x_t, False, initial_state=state)`` and its bare
                              kernel calls / torch ``lstm(x_t, (h, c))`` under no_grad / the two
                              matrix-vector products
Medians of interleaved repeats, each a block of calls of about ``--block-ms`` (``--single-calls N``:
the fastest of N interleaved single calls instead, which a loaded machine disturbs least at 2
threads, where ``--cpu-clock`` cannot be used). fastnn's Numba pool,
torch and NumPy's BLAS all run ``--threads`` threads.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import fastnn as fnn
from fastnn.bench import median_seconds, set_threads
from fastnn.layers.base import Context, run_calls

BATCH, STEPS, INPUTS, HIDDEN = 64, 100, 64, 128
F32 = np.float32


class Floor:
    """The matrix products of one layer's forward + backward in NumPy, on random operands."""

    def __init__(self, gates, batch=BATCH, steps=STEPS):
        rng = np.random.default_rng(0)
        gh = gates * HIDDEN

        def r(*shape):
            return rng.standard_normal(shape, dtype=F32)

        self.x, self.w_ih, self.w_hh = r(steps * batch, INPUTS), r(gh, INPUTS), r(gh, HIDDEN)
        self.gates, self.hw, self.h = r(steps * batch, gh), r(batch, gh), r(batch, HIDDEN)
        self.dg, self.dh = r(batch, gh), r(batch, HIDDEN)
        self.dgates, self.hprev = r(steps * batch, gh), r(steps * batch, HIDDEN)
        self.gw_ih, self.gw_hh, self.gx = r(gh, INPUTS), r(gh, HIDDEN), r(steps * batch, INPUTS)
        self.steps = steps

    def train(self):
        np.matmul(self.x, self.w_ih.T, out=self.gates)
        for _ in range(self.steps):
            np.matmul(self.h, self.w_hh.T, out=self.hw)
        for _ in range(self.steps):
            np.matmul(self.dg, self.w_hh, out=self.dh)
        np.matmul(self.dgates.T, self.x, out=self.gw_ih)
        np.matmul(self.dgates.T, self.hprev, out=self.gw_hh)
        np.matmul(self.dgates, self.w_ih, out=self.gx)


class FloorStep:
    """One LSTM step at batch 1: x_t @ W_ih^T and h @ W_hh^T."""

    def __init__(self):
        rng = np.random.default_rng(0)
        self.x, self.h = rng.standard_normal((1, INPUTS), F32), rng.standard_normal((1, HIDDEN), F32)
        self.w_ih = rng.standard_normal((4 * HIDDEN, INPUTS), F32)
        self.w_hh = rng.standard_normal((4 * HIDDEN, HIDDEN), F32)
        self.a, self.b = np.empty((1, 4 * HIDDEN), F32), np.empty((1, 4 * HIDDEN), F32)

    def __call__(self):
        np.matmul(self.x, self.w_ih.T, out=self.a)
        np.matmul(self.h, self.w_hh.T, out=self.b)


def layer_calls(layer, x, grad_y):
    """The layer's forward and backward kernel calls, recorded once (as a model's step plan does)."""
    ctx = Context(True, "train")
    forward, _ = layer.forward_calls(x, ctx)
    backward, _ = layer.backward_calls(grad_y, ctx, True)
    calls = forward + backward
    return lambda: run_calls(calls)


def train_cases(kind, torch):
    cls = {"LSTM": fnn.LSTM, "GRU": fnn.GRU}[kind]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, STEPS, INPUTS), dtype=F32)
    g = rng.standard_normal((BATCH, STEPS, HIDDEN), dtype=F32)
    model = fnn.Sequential([cls(INPUTS, HIDDEN)], input_shape=(STEPS, INPUTS), seed=0)
    impls = {"fastnn": layer_calls(model.layers[0], x, g), "floor": Floor(4 if kind == "LSTM" else 3).train}
    if torch is not None:
        net = getattr(torch.nn, kind)(INPUTS, HIDDEN, batch_first=True)
        tx, tg = torch.from_numpy(x).requires_grad_(True), torch.from_numpy(g)

        def torch_train():
            net.zero_grad(set_to_none=True)
            tx.grad = None
            out, _ = net(tx)
            out.backward(tg)

        impls["torch"] = torch_train
    return impls


def infer_cases(torch):
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((STEPS, 1, 1, INPUTS), dtype=F32)
    model = fnn.Sequential([fnn.LSTM(INPUTS, HIDDEN)], input_shape=(1, INPUTS), seed=0)
    layer = model.layers[0]
    state = [(np.zeros((1, 1, HIDDEN), F32), np.zeros((1, 1, HIDDEN), F32))]
    position = [0]

    def eager():
        t = position[0] = (position[0] + 1) % STEPS
        layer.forward(xs[t], False, initial_state=state[0])
        state[0] = layer.final_state  # the layer's buffers: forward copies the initial state in

    # the same step as bare kernel calls on fixed buffers (what a fused inference plan would run)
    x_buf = xs[0].copy()
    ctx = Context(False, "infer")
    h0, c0 = np.zeros((1, 1, HIDDEN), F32), np.zeros((1, 1, HIDDEN), F32)
    ctx.initial_state = (h0, c0)
    calls, _ = layer.forward_calls(x_buf, ctx)
    h_n, c_n = ctx.final_state

    def kernels():
        t = position[0] = (position[0] + 1) % STEPS
        x_buf[...] = xs[t]
        run_calls(calls)
        h0[...] = h_n
        c0[...] = c_n

    impls = {"fastnn": eager, "fastnn kernels": kernels, "floor": FloorStep()}
    if torch is not None:
        net = torch.nn.LSTM(INPUTS, HIDDEN, batch_first=True).eval()
        txs = [torch.from_numpy(x) for x in xs]
        tstate = [(torch.zeros(1, 1, HIDDEN), torch.zeros(1, 1, HIDDEN))]

        def torch_step():
            t = position[0] = (position[0] + 1) % STEPS
            with torch.no_grad():
                _, tstate[0] = net(txs[t], tstate[0])

        impls["torch"] = torch_step
    return impls


def fastest_single_calls(cases, n):
    """Fastest of n interleaved single calls of each impl, in seconds (after 3 warm-up calls)."""
    for fn in cases.values():
        for _ in range(3):
            fn()
    times = {impl: [] for impl in cases}
    for _ in range(n):
        for impl, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[impl].append(time.perf_counter() - start)
    return {impl: min(t) for impl, t in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--block-ms", type=float, default=300.0)
    parser.add_argument(
        "--single-calls",
        type=int,
        default=0,
        metavar="N",
        help="report the fastest of N interleaved single calls instead of block medians",
    )
    parser.add_argument(
        "--settle-ms",
        type=float,
        default=None,
        help="sleep before each block so other pools stop spinning (default 300 with >1 thread)",
    )
    parser.add_argument(
        "--cpu-clock",
        action="store_true",
        help="time the calling thread's CPU time (needs --threads 1): preemptions drop out",
    )
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args(argv)
    if args.cpu_clock and args.threads != 1:
        parser.error("--cpu-clock needs --threads 1 (other threads' work is not in the calling thread's CPU time)")
    if args.cpu_clock and args.single_calls:
        parser.error("--single-calls times wall time; drop --cpu-clock")
    clock = time.thread_time if args.cpu_clock else time.perf_counter
    torch = None
    if not args.no_torch:
        import torch
    set_threads(args.threads)
    settle = (args.settle_ms if args.settle_ms is not None else (300.0 if args.threads > 1 else 0.0)) / 1e3
    what = "CPU time of the calling thread" if args.cpu_clock else "wall time"
    how = (
        f"fastest of {args.single_calls} interleaved single calls"
        if args.single_calls
        else f"median of {args.repeats} interleaved repeats"
    )
    print(f"## Recurrent layers, {args.threads} threads, {how} (us per call, {what})\n")
    print("| case | fastnn | torch | GEMM floor | fastnn/torch | fastnn/floor |\n|---|---|---|---|---|---|")
    cases = {
        f"{kind} {INPUTS}->{HIDDEN} train b={BATCH} T={STEPS}": train_cases(kind, torch) for kind in ("LSTM", "GRU")
    }
    cases[f"LSTM {INPUTS}->{HIDDEN} infer b=1, one step"] = infer_cases(torch)
    for label, impls in cases.items():
        if args.single_calls:
            t = fastest_single_calls(impls, args.single_calls)
        else:
            t = median_seconds(impls, args.repeats, args.block_ms / 1e3, pause=settle, clock=clock)
        tt = t.get("torch", float("nan"))
        print(
            f"| {label} | {t['fastnn'] * 1e6:.0f} | {tt * 1e6:.0f} | {t['floor'] * 1e6:.0f} | "
            f"{t['fastnn'] / tt:.2f} | {t['fastnn'] / t['floor']:.2f} |",
            flush=True,
        )
        if "fastnn kernels" in t:
            k = t["fastnn kernels"]
            print(f"| ... its kernel calls alone | {k * 1e6:.0f} | | | {k / tt:.2f} | {k / t['floor']:.2f} |")
    flag = (" --cpu-clock" if args.cpu_clock else "") + (
        f" --single-calls {args.single_calls}" if args.single_calls else ""
    )
    print(f"\nCommand: `python benchmarks/rnn_step.py --threads {args.threads} --repeats {args.repeats}{flag}`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
