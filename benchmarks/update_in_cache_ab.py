"""Same-process A/B of where a training step's Adam update runs (issue 15 item 2: "each layer's
parameters updated while its gradient is still in cache"), each case one fused call of a
config's recorded step plan on fastnn.bench's clock and threads:

- ``no update``: forward, loss, backward, gradient norm (what the others add to);
- ``separate pass``: then the update over the whole flat buffers (today's plans);
- ``per layer``: each layer's update right after the last backward call that touches its
  parameters or gradients (the gradient still in cache), the norm last. NOT transactional (a
  later layer's non-finite gradient would find earlier layers updated): the upper bound of
  what updating in cache can gain;
- ``reverse``: the norm first, then the update one parameter span at a time, last span first
  (the spans the norm pass read last, still in cache): transactional;
- ``reverse blocks``: the same in blocks of ``--block`` elements, last block first;
- ``forward spans``: the update span by span in buffer order (does splitting alone matter?);
- ``update alone``: the update by itself, everything in cache (the "alone" time).

The update is ``kernels.optim.adam_update`` with the bench's hyper-parameters on the model's
parameters and gradients and moment buffers of this script's own (timing only).

    python benchmarks/update_in_cache_ab.py --configs mlp,mlp-bn-do,embed-10k --threads 1 --cpu-clock --runs 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fastnn._fused import FusedCalls
from fastnn.bench import ALL_CONFIGS, build_fastnn, interleaved, make_batch, set_threads
from fastnn.kernels.optim import adam_update


def _spans(model) -> list[tuple[int, int, int]]:
    """(layer index, lo, hi) of every parameter in the flat buffers."""
    return [(i, lo, lo + int(np.prod(shape))) for i, _, lo, shape in model.parameter_layout]


def _update(model, m, v, lo: int, hi: int):
    """The Adam update (lr 1e-3, step 10) of ``[lo, hi)`` as one call."""
    n_decay = min(max(model.n_decay - lo, 0), hi - lo)
    empty = np.zeros(0, model.params.dtype)
    args = (model.params[lo:hi], model.grads[lo:hi], m[lo:hi], v[lo:hi], empty, 1e-3, 0.9, 0.999, 1e-8, 0.0)
    return adam_update, (*args, n_decay, False, False, 10, 1.0)


def _touches(args, arrays) -> bool:
    return any(isinstance(a, np.ndarray) and np.shares_memory(a, b) for a in args for b in arrays)


def cases(name: str, block: int) -> dict:
    """The fused calls of each case for config ``name``."""
    cfg = ALL_CONFIGS[name]
    model = build_fastnn(cfg)
    x, y = make_batch(cfg)
    model.train_step(x, y)  # records the plan at this batch size
    plan = model.step_plan(x.shape[0])
    m, v = np.zeros_like(model.params), np.full_like(model.params, 1e-4)
    spans = _spans(model)
    head = [*plan.forward, (plan.loss_fn, plan.loss_args)]
    norm = plan.calls[-1]
    last: dict[int, int] = {}  # layer -> index of its last backward call
    for k, (_, args) in enumerate(plan.backward):
        for i, lo, hi in spans:
            if _touches(args, (model.params[lo:hi], model.grads[lo:hi])):
                last[i] = k
    per_layer = list(head)
    for k, call in enumerate(plan.backward):
        per_layer.append(call)
        per_layer += [_update(model, m, v, lo, hi) for i, lo, hi in spans if last.get(i) == k]
    missing = [(i, lo, hi) for i, lo, hi in spans if i not in last]
    per_layer += [_update(model, m, v, lo, hi) for _, lo, hi in missing]
    per_layer.append(norm)
    base = [*head, *plan.backward, norm]
    ordered = sorted((lo, hi) for _, lo, hi in spans)
    n = model.params.size
    blocks = [(lo, min(lo + block, n)) for lo in range(0, n, block)]
    lists = {
        "no update": base,
        "separate pass": [*base, _update(model, m, v, 0, model.params.size)],
        "per layer": per_layer,
        "reverse": [*base, *(_update(model, m, v, lo, hi) for lo, hi in reversed(ordered))],
        "reverse blocks": [*base, *(_update(model, m, v, lo, hi) for lo, hi in reversed(blocks))],
        "forward spans": [*base, *(_update(model, m, v, lo, hi) for lo, hi in ordered)],
        "update alone": [_update(model, m, v, 0, model.params.size)],
    }
    return {case: FusedCalls(calls) for case, calls in lists.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="mlp")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cpu-clock", action="store_true", help="the calling thread's CPU time (1 thread)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--block", type=int, default=1 << 16, help="elements per block of 'reverse blocks'")
    args = parser.parse_args()
    set_threads(args.threads)
    clock = time.thread_time if args.cpu_clock else time.perf_counter
    print(
        f"{args.threads} thread(s), {'CPU' if args.cpu_clock else 'wall'} clock; us per call: median of runs (min-max)"
    )
    for name in args.configs.split(","):
        fused = cases(name, args.block)
        runs: dict[str, list[float]] = {case: [] for case in fused}
        for _ in range(args.runs):
            for case, seconds in interleaved(fused, args.repeats, 0.2, clock=clock).items():
                runs[case].append(float(np.median(seconds)) * 1e6)
        print(f"\n{name}\n| case | us | minus no update |\n|---|---|---|")
        for case, us in runs.items():
            extra = [a - b for a, b in zip(us, runs["no update"])] if case != "update alone" else us
            print(f"| {case} | {np.median(us):.1f} ({min(us):.1f}-{max(us):.1f}) | {np.median(extra):.1f} |")


if __name__ == "__main__":
    main()
