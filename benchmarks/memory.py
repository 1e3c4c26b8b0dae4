"""Memory: Numba runtime allocations per steady-state training step (expected 0) and peak
resident memory beside the bytes the model needs (parameters, gradients, optimizer states,
layer buffers).

    python benchmarks/memory.py                  # every config, each in a fresh process
    python benchmarks/memory.py --quick --configs tiny,mlp

Each config runs in its own child process (NUMBA_NRT_STATS=1; peak RSS is per process): warm
up, then count ``numba.core.runtime.rtsys.get_allocation_stats()`` over N steps. When the count
is not 0 the child wraps every njit function the object layer calls and reports which ones
allocate. It also reports the NumPy-side transient bytes per step (tracemalloc peak) and
peak RSS (``resource.getrusage``) against the model's bytes.
Writes benchmarks/results/memory.{md,json}.
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
sys.path.insert(0, ROOT)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _layer_buffer_bytes(model) -> int:
    """Bytes of every layer's own arrays (activations, gradients, masks, scratch, statistics):
    Workspace buffers and ndarray attributes that are not views of the flat parameter buffers."""
    import numpy as np

    from fastnn.layers.base import Workspace

    def owned(arr):
        return arr.base is None or not (np.shares_memory(arr, model.params) or np.shares_memory(arr, model.grads))

    total = 0
    for layer in model.layers:
        for value in vars(layer).values():
            if isinstance(value, Workspace):
                total += value.nbytes()
            elif isinstance(value, np.ndarray) and owned(value):
                total += value.nbytes
    return total


def _wrap_kernels(counts: dict) -> None:
    """Replace each njit dispatcher in fastnn's modules by a wrapper that counts, per kernel,
    calls, NRT allocations and array arguments (each array passed in from Python gets a MemInfo
    when Numba unboxes it: one NRT allocation per array argument per call, freed on return)."""
    import numpy as np
    from numba.core.registry import CPUDispatcher
    from numba.core.runtime import rtsys

    from fastnn import backend

    targets = [sys.modules[m] for m in sys.modules if m == "fastnn" or m.startswith("fastnn.")]
    targets.append(backend.kernels("cpu"))  # the namespace layers take their kernels from
    for module in targets:
        for attr, value in list(vars(module).items()):
            if isinstance(value, CPUDispatcher):
                name = f"{value.py_func.__module__}.{value.py_func.__qualname__}"

                def wrapper(*args, _f=value, _name=name, **kwargs):
                    before = rtsys.get_allocation_stats().alloc
                    result = _f(*args, **kwargs)
                    entry = counts.setdefault(_name, [0, 0, 0])  # calls, allocations, array arguments
                    entry[0] += 1
                    entry[1] += rtsys.get_allocation_stats().alloc - before
                    entry[2] += sum(isinstance(a, np.ndarray) for a in (*args, *kwargs.values()))
                    return result

                setattr(module, attr, wrapper)


def child(name: str, steps: int) -> dict:
    import tracemalloc

    from numba.core.runtime import _nrt_python, rtsys

    import fastnn  # noqa: F401
    from fastnn.bench import CONFIGS, build_fastnn, make_batch

    if not _nrt_python.memsys_stats_enabled():
        _nrt_python.memsys_enable_stats()
    rss_import = _rss_bytes()
    cfg = CONFIGS[name]
    model = build_fastnn(cfg)
    x, y = make_batch(cfg)
    for _ in range(3):
        model.train_step(x, y)
    rss_warm = _rss_bytes()
    before = rtsys.get_allocation_stats()
    for _ in range(steps):
        model.train_step(x, y)
    after = rtsys.get_allocation_stats()
    nrt = {k: (getattr(after, k) - getattr(before, k)) / steps for k in ("alloc", "free", "mi_alloc", "mi_free")}
    tracemalloc.start()
    model.train_step(x, y)
    base, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    model.train_step(x, y)
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    counts: dict = {}
    _wrap_kernels(counts)
    model.clear_plans()  # rebuild the step plans so they call the counting wrappers
    model.train_step(x, y)
    counts.clear()
    for _ in range(steps):
        model.train_step(x, y)
    by_kernel = {
        k: {"calls": c / steps, "allocs": a / steps, "array_args": n / steps} for k, (c, a, n) in sorted(counts.items())
    }
    boundary = sum(v["array_args"] for v in by_kernel.values())
    inside = {k: v["allocs"] - v["array_args"] for k, v in by_kernel.items() if v["allocs"] != v["array_args"]}
    states = sum(v.nbytes for v in model.optimizer.state_dict().values() if hasattr(v, "nbytes"))
    need = {
        "params": model.params.nbytes,
        "grads": model.grads.nbytes,
        "optimizer_states": states,
        "layer_buffers": _layer_buffer_bytes(model),
        "batch": x.nbytes + y.nbytes,
    }
    return {
        "config": name,
        "steps": steps,
        "nrt_per_step": nrt,
        "kernels_per_step": by_kernel,
        "unboxing_allocs_per_step": boundary,
        "allocs_inside_kernels_per_step": nrt["alloc"] - boundary,
        "allocating_kernels": inside,
        "kernel_calls_per_step": sum(v["calls"] for v in by_kernel.values()),
        "python_transient_bytes_per_step": peak - base,
        "python_retained_bytes_per_step": current - base,
        "model_bytes": need,
        "model_bytes_total": sum(need.values()),
        "rss_after_import": rss_import,
        "rss_after_warmup": rss_warm,
        "peak_rss": _peak_rss_bytes(),
    }


def _mb(n: float) -> str:
    return f"{n / 2**20:.3f}" if n < 2**20 else f"{n / 2**20:.1f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default=None, help="comma-separated config names (default: all)")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="steady-state steps counted (default 50; 10 with "
        "--quick; the heavy 'wide' config runs a fifth of them, at least 2)",
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=RESULTS, help="results folder; '-' writes nothing")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from fastnn.bench import CONFIGS

    steps = args.steps or (10 if args.quick else 50)
    if args.child:
        print(json.dumps(child(args.child, steps)))
        return 0
    names = args.configs.split(",") if args.configs else list(CONFIGS)
    rows = []
    for name in names:
        n = max(2, steps // 5) if CONFIGS[name].heavy else steps
        print(f"  {name}: {n} steps in a child process ...", file=sys.stderr, flush=True)
        env = dict(os.environ, NUMBA_NRT_STATS="1")
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", name, "--steps", str(n)],
            env=env,
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"memory child for {name} failed:\n{proc.stderr}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    lines = [
        "## Memory per steady-state training step and peak resident memory",
        "",
        (
            "| config | kernel calls/step | NRT allocs/step | of which array unboxing | inside kernels "
            "| NRT frees/step | NumPy transient KiB/step | params+grads+states MiB "
            "| layer buffers MiB | model total MiB | RSS after import MiB | peak RSS MiB | peak - import MiB |"
        ),
        "|" + "---|" * 13,
    ]
    for r in rows:
        m = r["model_bytes"]
        lines.append(
            f"| {r['config']} | {r['kernel_calls_per_step']:g} | {r['nrt_per_step']['alloc']:g} | "
            f"{r['unboxing_allocs_per_step']:g} | {r['allocs_inside_kernels_per_step']:g} | "
            f"{r['nrt_per_step']['free']:g} | "
            f"{r['python_transient_bytes_per_step'] / 1024:.1f} | "
            f"{_mb(m['params'] + m['grads'] + m['optimizer_states'])} | {_mb(m['layer_buffers'])} | "
            f"{_mb(r['model_bytes_total'])} | {_mb(r['rss_after_import'])} | {_mb(r['peak_rss'])} | "
            f"{_mb(r['peak_rss'] - r['rss_after_import'])} |"
        )
    for r in rows:
        if r["allocating_kernels"]:
            lines.append(
                f"\n{r['config']}: kernels allocating inside (allocations per step beyond their "
                "array arguments): " + ", ".join(f"{k} {v:g}" for k, v in r["allocating_kernels"].items())
            )
    lines += [
        "",
        (
            "NRT: Numba runtime allocations per steady-state step (after 3 warm-up steps). Every array "
            "passed from Python into an njit function is unboxed into a MemInfo (one NRT allocation, freed "
            "on return): 'array unboxing' counts those; 'inside kernels' is the rest, the allocations the "
            "kernels' own code makes (the target is 0). NumPy transient: tracemalloc peak above the "
            "baseline during one train_step (Python/NumPy side: validation, views, the returned loss). "
            "peak - import includes the compiled code Numba loads."
        ),
        f"Command: `python benchmarks/memory.py {' '.join(sys.argv[1:] if argv is None else argv)}`".strip(),
    ]
    text = "\n".join(lines)
    print(text)
    if args.out != "-":
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "memory.md"), "w") as handle:
            handle.write(text + "\n")
        with open(os.path.join(args.out, "memory.json"), "w") as handle:
            json.dump(rows, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
