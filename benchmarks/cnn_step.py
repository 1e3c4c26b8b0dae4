"""CNN training steps and batch-1 inference: fastnn beside PyTorch and the GEMM floor, in one run.

    python benchmarks/cnn_step.py                    # 2 threads, 7 interleaved repeats
    python benchmarks/cnn_step.py --threads 1 --repeats 11
    python benchmarks/cnn_step.py --profile lenet    # each kernel call timed inside the real step

Models (float32, batch 64, SGD momentum 0.9, cross-entropy):
  lenet   1x28x28: conv 1->6 5x5 relu, maxpool 2, conv 6->16 5x5 relu, maxpool 2, flatten,
          dense 256->120 relu, dense 120->10
  conv1d  16x256: conv1d 16->32 k5 pad 2 relu, maxpool 2, conv1d 32->32 k5 pad 2 relu,
          global average pool, dense 32->10

Cases, timed in interleaved repeats (fastnn, torch, floor, fastnn, ...), each repeat a block of
calls of about ``--block-ms``; the table gives the median per call:
  train     ``model.train_step(xb, yb)`` / torch zero_grad, forward, loss, backward, step /
            the floor: the same GEMMs in NumPy's BLAS into preallocated outputs (each conv's
            ``W @ col``, ``grad_z @ col.T`` and, except the first layer, ``W.T @ grad_z`` over
            the whole batch's im2col matrix; each dense layer's three products)
  infer b=1 ``model.predict(x[:1])`` / torch eval under no_grad / the forward GEMMs at batch 1
fastnn's Numba pool, torch and NumPy's BLAS all run ``--threads`` threads.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import fastnn as fnn
from fastnn.bench import median_seconds, set_threads

BATCH = 64
F32 = np.float32


# ----------------------------------------------------------------------------- the models


def lenet_fastnn(seed=0):
    return fnn.Sequential(
        [
            fnn.Conv2d(1, 6, 5, activation="relu"),
            fnn.MaxPool2d(2),
            fnn.Conv2d(6, 16, 5, activation="relu"),
            fnn.MaxPool2d(2),
            fnn.Flatten(),
            fnn.Dense(256, 120, activation="relu"),
            fnn.Dense(120, 10),
        ],
        input_shape=(1, 28, 28),
        seed=seed,
        dtype="float32",
    )


def lenet_torch(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 6, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(256, 120),
        nn.ReLU(),
        nn.Linear(120, 10),
    )


def conv1d_fastnn(seed=0):
    return fnn.Sequential(
        [
            fnn.Conv1d(16, 32, 5, padding=2, activation="relu"),
            fnn.MaxPool1d(2),
            fnn.Conv1d(32, 32, 5, padding=2, activation="relu"),
            fnn.GlobalAvgPool(),
            fnn.Dense(32, 10),
        ],
        input_shape=(16, 256),
        seed=seed,
        dtype="float32",
    )


def conv1d_torch(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv1d(16, 32, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Conv1d(32, 32, 5, padding=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


# (input shape, fastnn builder, torch builder, GEMMs of a training step: (m, k, n, transposes)),
# each conv as (out, C*KH*KW, batch*OH*OW) and each dense as (batch, in, out)
MODELS = {
    "lenet": (
        (1, 28, 28),
        lenet_fastnn,
        lenet_torch,
        dict(convs=[(6, 25, 24 * 24, False), (16, 150, 8 * 8, True)], dense=[(256, 120, True), (120, 10, True)]),
    ),
    "conv1d": (
        (16, 256),
        conv1d_fastnn,
        conv1d_torch,
        dict(convs=[(32, 80, 256, False), (32, 160, 128, True)], dense=[(32, 10, True)]),
    ),
}


class Floor:
    """The matrix products of a step in NumPy's BLAS, on random operands, into preallocated outputs."""

    def __init__(self, spec, batch):
        rng = np.random.default_rng(0)

        def r(*shape):
            return rng.standard_normal(shape, dtype=F32)

        self.train_ops, self.infer_ops = [], []
        for o, k, positions, grad_x in spec["convs"]:
            self._add(r(o, k), r(k, batch * positions), grad_x, r)
            self.infer_ops.append((r(o, k), r(k, positions), np.empty((o, positions), F32)))
        for i, o, grad_x in spec["dense"]:
            self._add(r(batch, i), r(i, o), grad_x, r)
            self.infer_ops.append((r(1, i), r(i, o), np.empty((1, o), F32)))

    def _add(self, a, b, grad_x, r):
        """Forward c = a @ b; grad of the left factor's partner; optionally of the other."""
        m, k, n = a.shape[0], a.shape[1], b.shape[1]
        c = np.empty((m, n), F32)
        self.train_ops.append((a, b, c))
        if a.shape[0] < b.shape[1]:  # conv: a = W (O, K), b = col (K, P): dW = dZ @ col.T, dcol = W.T @ dZ
            self.train_ops.append((c, b.T, np.empty((m, k), F32)))
            if grad_x:
                self.train_ops.append((a.T, c, np.empty((k, n), F32)))
        else:  # dense: a = x (B, I), b = W (I, O): dW = x.T @ dZ, dx = dZ @ W.T
            self.train_ops.append((a.T, c, np.empty((k, n), F32)))
            if grad_x:
                self.train_ops.append((c, b.T, np.empty((m, k), F32)))

    def train(self):
        for a, b, c in self.train_ops:
            np.matmul(a, b, out=c)

    def infer(self):
        for a, b, c in self.infer_ops:
            np.matmul(a, b, out=c)


def build_cases(name, torch):
    """{case: {impl: fn}} for one model."""
    shape, build, build_torch, spec = MODELS[name]
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((BATCH, *shape), dtype=F32)
    yb = rng.integers(0, 10, BATCH).astype(np.int64)
    model = build()
    model.compile("cross_entropy", fnn.optim.SGD(0.01, momentum=0.9))
    x1 = xb[:1].copy()
    floor = Floor(spec, BATCH)
    train = {"fastnn": lambda: model.train_step(xb, yb), "floor": floor.train}
    infer = {"fastnn": lambda: model.predict(x1), "floor": floor.infer}
    if torch is not None:
        net = build_torch(torch)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        loss_fn = torch.nn.CrossEntropyLoss()
        tx, ty, tx1 = torch.from_numpy(xb), torch.from_numpy(yb), torch.from_numpy(x1)
        inet = build_torch(torch).eval()

        def torch_train():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(tx), ty)
            loss.backward()
            opt.step()

        def torch_infer():
            with torch.no_grad():
                return inet(tx1)

        train["torch"], infer["torch"] = torch_train, torch_infer
    return {f"{name} train b={BATCH}": train, f"{name} infer b=1": infer}, model, xb, yb


def profile(name, steps=200, cpu_clock=False):
    """Each call of the model's step plan timed inside the step sequence (mean us per step);
    ``cpu_clock``: this thread's CPU time instead of wall time (1 thread on a loaded machine)."""
    cases, model, xb, yb = build_cases(name, None)
    train = cases[f"{name} train b={BATCH}"]["fastnn"]
    for _ in range(20):
        train()
    plan = model.step_plan(BATCH)
    calls = (
        [(f"forward {fn.__name__}", fn, a) for fn, a in plan.forward]
        + [("loss", plan.loss_fn, plan.loss_args)]
        + [(f"backward {fn.__name__}", fn, a) for fn, a in plan.backward]
        + [("optimizer step", model.optimizer.step, ())]
    )
    totals = np.zeros(len(calls))
    clock = time.thread_time if cpu_clock else time.perf_counter
    for _ in range(steps):
        for i, (_, fn, args) in enumerate(calls):
            start = clock()
            fn(*args)
            totals[i] += clock() - start
    whole = median_seconds({"step": train}, 5, 0.1, pause=0.0, clock=clock)["step"] * 1e6
    what = "CPU time of the calling thread" if cpu_clock else "wall time"
    print(f"## {name}: each call inside the step, {fnn.get_num_threads()} threads ({what}, mean us of {steps} steps)\n")
    print("| part | us | share of step |\n|---|---|---|")
    print(f"| whole train_step (median) | {whole:.0f} | 100% |")
    for (label, _, args), total in zip(calls, totals):
        shape = "x".join(str(d) for d in args[0].shape) if args else ""
        t = total / steps * 1e6
        print(f"| {label} ({shape}) | {t:.0f} | {t / whole:.0%} |")
    t = totals.sum() / steps * 1e6
    print(f"| sum of the parts | {t:.0f} | {t / whole:.0%} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--block-ms", type=float, default=150.0)
    parser.add_argument("--models", default="lenet,conv1d")
    parser.add_argument("--profile", choices=list(MODELS), help="per-call profile of one model's step instead")
    parser.add_argument(
        "--cpu-clock",
        action="store_true",
        help="time the calling thread's CPU time, not wall time: with --threads 1 every case runs "
        "in that thread, so a busy machine's preemptions drop out",
    )
    parser.add_argument(
        "--settle-ms",
        type=float,
        default=None,
        help="sleep before each timed block so the other libraries' thread pools stop spinning "
        "(default 300 with more than 1 thread, else 0): three pools on 2 cores otherwise "
        "measure each other's spinning",
    )
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args(argv)
    if args.cpu_clock and args.threads != 1:
        parser.error("--cpu-clock needs --threads 1 (other threads' work is not in the calling thread's CPU time)")
    clock = time.thread_time if args.cpu_clock else time.perf_counter
    settle = args.settle_ms if args.settle_ms is not None else (300.0 if args.threads > 1 else 0.0)
    torch = None
    if not args.no_torch and not args.profile:
        import torch
    set_threads(args.threads)
    if args.profile:
        profile(args.profile, cpu_clock=args.cpu_clock)
        return 0
    what = "CPU time of the calling thread" if args.cpu_clock else "wall time"
    print(f"## CNN steps, {args.threads} threads, median of {args.repeats} interleaved repeats (us per call, {what})\n")
    print("| case | fastnn | torch | GEMM floor | fastnn/torch | fastnn/floor |\n|---|---|---|---|---|---|")
    for name in args.models.split(","):
        cases = build_cases(name, torch)[0]
        for label, impls in cases.items():
            t = median_seconds(impls, args.repeats, args.block_ms / 1e3, pause=settle / 1e3, clock=clock)
            tt = t.get("torch", float("nan"))
            print(
                f"| {label} | {t['fastnn'] * 1e6:.0f} | {tt * 1e6:.0f} | {t['floor'] * 1e6:.0f} | "
                f"{t['fastnn'] / tt:.2f} | {t['fastnn'] / t['floor']:.2f} |",
                flush=True,
            )
    flag = " --cpu-clock" if args.cpu_clock else ""
    print(f"\nCommand: `python benchmarks/cnn_step.py --threads {args.threads} --repeats {args.repeats}{flag}`")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
