"""Data-parallel training over MPI on this machine, and a model of its scaling across hosts.

    python benchmarks/mpi_scaling.py             # 5 repeats of a 4,096-sample epoch, scaling model
    python benchmarks/mpi_scaling.py --quick     # 3 repeats of 2,048 samples
    python benchmarks/mpi_scaling.py --overlap   # 2 ranks only: one Allreduce against buckets

Runs (each in fresh processes, the driver launches them):

1. ``mpiexec -n 2`` with NUMBA_NUM_THREADS=1 against one process with NUMBA_NUM_THREADS=2, for
   the 'mlp' and 'mlp-bn-do' configs (benchmarks/configs.py; same global batch, float32, one
   ``fit`` epoch of make-believe data): median time per epoch and the share of it spent in the
   step's reduction (``Session.reduce``: gradient scaling, the Allreduces and the waiting for
   the slower rank, the norm of the summed gradient); 'mlp-bn-do' also with SyncBatchNorm.
2. The in-place float32 Allreduce on 2 ranks over loopback for 4 B .. 64 MB: median latency and
   bandwidth.
3. One process, 2 threads: step times of 'mlp', 'wide' and 'lenet' at two batch sizes, fitted as
   ``c0 + c1 * batch``, feeding the scaling model (ring Allreduce, 2(p-1) latencies and
   2(p-1)/p of the gradient bytes per rank) for 2-64 hosts at 10 and 25 Gbit/s.

Writes benchmarks/results/mpi_scaling.{md,json}. The machine is shared: medians, and say so.

``--overlap`` runs only ``mpiexec -n 2`` (1 thread a rank), 'mlp' and 'mlp-bn-do': the gradient
summed by one Allreduce after the backward (fused step, then unfused) against buckets of
``--bucket-bytes`` started during the backward (``init(bucket_bytes=...)``, unfused by
construction): time per step and the share of the epoch in the reduction (``Session.reduce``
plus the bucket starts); writes benchmarks/results/mpi_overlap.{md,json}.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
HERE = os.path.abspath(__file__)
NET_LATENCY_S = 30e-6  # assumed one-way latency of a TCP message between hosts on Ethernet
NET_EFFICIENCY = 0.9  # share of the line rate an Allreduce gets
HOSTS = (2, 4, 8, 16, 32, 64)
LINKS_GBIT = (10, 25)


# ----------------------------------------------------------------------------- workers
def _epoch_data(n: int, features: int = 784, classes: int = 10):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, features), dtype=np.float32)
    y = (X @ rng.standard_normal((features, classes), dtype=np.float32)).argmax(axis=1).astype(np.int64)
    return X, y


def _timed_reduce(distributed):
    """Wrap Session.reduce and Buckets.start (the reduction's work in the step) to add their
    seconds to the returned list."""
    spent = [0.0]

    def timing(method):
        def timed(self, *args):
            start = time.perf_counter()
            try:
                return method(self, *args)
            finally:
                spent[0] += time.perf_counter() - start

        return timed

    distributed.Session.reduce = timing(distributed.Session.reduce)
    distributed.Buckets.start = timing(distributed.Buckets.start)
    return spent


def _fit_epochs(name: str, samples: int, repeats: int, spent) -> dict:
    from fastnn.bench import CONFIGS, build_fastnn, summarize

    cfg = CONFIGS[name]
    X, y = _epoch_data(samples)
    model = build_fastnn(cfg)
    model.fit(X, y, epochs=1, batch_size=cfg.batch, verbose=0)  # compiles, warms the caches
    seconds, shares = [], []
    for _ in range(repeats):
        spent[0] = 0.0
        start = time.perf_counter()
        model.fit(X, y, epochs=1, batch_size=cfg.batch, verbose=0)
        elapsed = time.perf_counter() - start
        seconds.append(elapsed)
        shares.append(spent[0] / elapsed)
    return {
        "epoch": summarize(seconds),
        "reduce_share": float(np.median(shares)),
        "params": int(model.params.size),
        "steps": math.ceil(samples / cfg.batch),
        "batch": cfg.batch,
    }


def _allreduce_sweep(comm) -> list[dict]:
    from mpi4py import MPI

    rows = []
    for power in range(0, 25, 2):
        values = np.ones(1 << power, np.float32)
        repeats = int(max(5, min(200, 2e7 / values.nbytes)))
        comm.Allreduce(MPI.IN_PLACE, values)
        times = []
        for _ in range(repeats):
            comm.Barrier()
            start = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, values)
            times.append(time.perf_counter() - start)
        rows.append(
            {
                "bytes": values.nbytes,
                "median_s": float(np.median(times)),
                "min_s": float(min(times)),
                "repeats": repeats,
            }
        )
    return rows


def _step_fit(name: str, batches: tuple[int, int]) -> dict:
    """Step seconds of config ``name`` at two batch sizes (median of a few train_steps) and the
    fitted c0 + c1 * batch."""
    from fastnn.bench import ALL_CONFIGS, build_fastnn, make_batch

    cfg = ALL_CONFIGS[name]
    model = build_fastnn(cfg)
    times = {}
    for batch in batches:
        x, y = make_batch(cfg, batch)
        model.train_step(x, y)
        runs = []
        for _ in range(3 if name == "wide" else 7):
            start = time.perf_counter()
            model.train_step(x, y)
            runs.append(time.perf_counter() - start)
        times[batch] = float(np.median(runs))
    (b0, t0), (b1, t1) = sorted(times.items())
    c1 = max((t1 - t0) / (b1 - b0), 1e-12)
    return {
        "params": int(model.params.size),
        "batch": cfg.batch,
        "step_s": times,
        "c0_s": max(t0 - c1 * b0, 0.0),
        "c1_s": c1,
    }


def _overlap(args, distributed, spent) -> dict:
    """{config: {variant: _fit_epochs entry}}: one Allreduce (fused and unfused steps) against buckets."""
    from fastnn import _config

    variants = (
        ("one Allreduce, fused step", "always", None),
        ("one Allreduce, unfused step", "never", None),
        (f"buckets of {args.bucket_bytes:,} B, unfused step", "never", args.bucket_bytes),
    )
    results: dict = {}
    for name in ("mlp", "mlp-bn-do"):
        for variant, fuse, bucket_bytes in variants:
            _config.FUSE = fuse
            distributed.init(bucket_bytes=bucket_bytes)
            results.setdefault(name, {})[variant] = _fit_epochs(name, args.samples, args.repeats, spent)
    return results


def _compile_first() -> None:
    """Compile the kernels and the fused steps of --overlap in this one process: ranks that compile
    the same kernels at once can corrupt the Numba cache they share."""
    from fastnn import _config

    for fuse in ("always", "never"):
        _config.FUSE = fuse
        for name in ("mlp", "mlp-bn-do"):
            _fit_epochs(name, 512, 1, [0.0])


def overlap_markdown(result: dict, command: str) -> str:
    lines = [
        f"Command: `{command}` (2 ranks x 1 thread, float32, loaded shared 2-core machine: medians "
        "of the epochs; noisy).",
        "",
        "| config | gradient reduction | ms/step | reduction share of the epoch |",
        "|---|---|---|---|",
    ]
    for name, variants in result["configs"].items():
        for variant, entry in variants.items():
            step_ms = 1e3 * entry["epoch"]["median_s"] / entry["steps"]
            lines.append(
                f"| {name} ({entry['steps']} steps of {entry['batch']}, {4 * entry['params'] / 1e6:.2f} MB of "
                f"gradient) | {variant} | {step_ms:.2f} | {100 * entry['reduce_share']:.0f}% |"
            )
    return "\n".join(lines) + "\n"


def worker(args) -> None:
    import fastnn as fnn
    from fastnn import distributed

    spent = _timed_reduce(distributed)
    comm = distributed.active()
    rank = 0 if comm is None else comm.Get_rank()
    if args.overlap:
        result = {
            "ranks": comm.Get_size(),
            "threads": fnn.get_num_threads(),
            "configs": _overlap(args, distributed, spent),
        }
        if rank == 0:
            with open(args.out, "w") as handle:
                json.dump(result, handle)
        return
    result = {"ranks": 1 if comm is None else comm.Get_size(), "threads": fnn.get_num_threads(), "configs": {}}
    for name in ("mlp", "mlp-bn-do"):
        result["configs"][name] = _fit_epochs(name, args.samples, args.repeats, spent)
    if comm is not None:
        distributed.init(sync_batchnorm=True)
        result["configs"]["mlp-bn-do+sync"] = _fit_epochs("mlp-bn-do", args.samples, args.repeats, spent)
        result["allreduce"] = _allreduce_sweep(comm)
    elif args.scaling:
        result["steps"] = {
            name: _step_fit(name, batches)
            for name, batches in (("mlp", (64, 256)), ("lenet", (32, 128)), ("wide", (128, 512)))
        }
    if rank == 0:
        with open(args.out, "w") as handle:
            json.dump(result, handle)


# ----------------------------------------------------------------------------- driver
def _launch(ranks: int, threads: int, out: str, args, scaling: bool) -> dict:
    env = {
        **os.environ,
        "NUMBA_NUM_THREADS": str(threads),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.path.dirname(os.path.dirname(HERE)),
    }
    command = [
        sys.executable,
        HERE,
        "--worker",
        "--out",
        out,
        "--samples",
        str(args.samples),
        "--repeats",
        str(args.repeats),
        *(["--scaling"] if scaling else []),
        *(["--overlap", "--bucket-bytes", str(args.bucket_bytes)] if args.overlap else []),
    ]
    if ranks > 1:
        command = ["mpiexec", "-n", str(ranks), *command]
    subprocess.run(command, env=env, check=True)
    with open(out) as handle:
        return json.load(handle)


def allreduce_model(rows: list[dict], key: str = "median_s") -> tuple[float, float]:
    """(latency s, bandwidth B/s) of a straight line through the small and the large messages
    (``key``: the medians, or "min_s" for the fastest calls)."""
    latency = min(r[key] for r in rows[:3])
    big = [r for r in rows if r["bytes"] >= 1 << 22]
    bandwidth = float(np.median([r["bytes"] / max(r[key] - latency, 1e-9) for r in big]))
    return latency, bandwidth


def ring_seconds(hosts: int, grad_bytes: int, gbit: float) -> float:
    """Seconds of a ring Allreduce of ``grad_bytes`` over ``hosts`` at ``gbit`` Gbit/s."""
    rate = gbit * 1e9 / 8 * NET_EFFICIENCY
    return 2 * (hosts - 1) * NET_LATENCY_S + 2 * (hosts - 1) / hosts * grad_bytes / rate


def scaling_rows(steps: dict) -> list[dict]:
    rows = []
    for name, fit in steps.items():
        grad_bytes = 4 * fit["params"]
        single = fit["c0_s"] + fit["c1_s"] * fit["batch"]
        for gbit in LINKS_GBIT:
            comm16 = ring_seconds(16, grad_bytes, gbit)
            crossover = max(0.0, (comm16 - fit["c0_s"]) / fit["c1_s"])
            efficiency = {}
            for hosts in HOSTS:
                step = fit["c0_s"] + fit["c1_s"] * fit["batch"] / hosts + ring_seconds(hosts, grad_bytes, gbit)
                efficiency[hosts] = single / step / hosts
            rows.append(
                {
                    "config": name,
                    "gbit": gbit,
                    "grad_bytes": grad_bytes,
                    "efficiency": efficiency,
                    "comm16_s": comm16,
                    "crossover_batch_per_host": crossover,
                    "global_batch": fit["batch"],
                }
            )
    return rows


def _crossover(batch: float) -> str:
    return "any (the fixed step cost alone exceeds it)" if batch < 1 else f"{batch:.0f}"


def markdown(one: dict, two: dict, rows: list[dict], command: str) -> str:
    lines = [
        f"Command: `{command}` (loaded shared 2-core machine: medians of {one['configs']['mlp']['epoch']['repeats']} "
        f"epochs; noisy).",
        "",
        "| config | 1 rank x 2 threads (s/epoch) | 2 ranks x 1 thread (s/epoch) | ratio | reduce share (2 ranks) |",
        "|---|---|---|---|---|",
    ]
    for name, entry in two["configs"].items():
        base = one["configs"].get(name.replace("+sync", ""))
        ratio = entry["epoch"]["median_s"] / base["epoch"]["median_s"]
        lines.append(
            f"| {name} ({entry['steps']} steps of {entry['batch']}) | {base['epoch']['median_s']:.3f} | "
            f"{entry['epoch']['median_s']:.3f} | {ratio:.2f} | {100 * entry['reduce_share']:.0f}% |"
        )
    latency, bandwidth = allreduce_model(two["allreduce"])
    best_latency, best_bandwidth = allreduce_model(two["allreduce"], "min_s")
    lines += [
        "",
        f"Allreduce (float32, in place, 2 ranks, loopback): latency {latency * 1e6:.1f} us, bandwidth "
        f"{bandwidth / 1e9:.2f} GB/s (medians); fastest calls: {best_latency * 1e6:.1f} us, "
        f"{best_bandwidth / 1e9:.2f} GB/s.",
        "",
        "| bytes | median | fastest |",
        "|---|---|---|",
    ]
    lines += [
        f"| {r['bytes']:,} | {r['median_s'] * 1e6:.1f} us | {r['min_s'] * 1e6:.1f} us |" for r in two["allreduce"]
    ]
    lines += [
        "",
        f"Scaling model: ring Allreduce, {NET_LATENCY_S * 1e6:.0f} us per message, "
        f"{NET_EFFICIENCY:.0%} of the line rate; compute c0 + c1 * (batch / hosts) from this machine "
        "(2 threads); efficiency = T(1 host) / (hosts * T(hosts)) at the config's global batch.",
        "",
        "| config | params | grad MB/step | Gbit/s | "
        + " | ".join(f"{h} hosts" for h in HOSTS)
        + " | Allreduce at 16 hosts | per-host batch where compute = comm |",
        "|---|---|---|---|" + "---|" * len(HOSTS) + "---|---|",
    ]
    for row in rows:
        fit = one["steps"][row["config"]]
        lines.append(
            f"| {row['config']} (batch {row['global_batch']}) | {fit['params']:,} | "
            f"{row['grad_bytes'] / 1e6:.1f} | {row['gbit']} | "
            + " | ".join(f"{100 * row['efficiency'][h]:.0f}%" for h in HOSTS)
            + f" | {row['comm16_s'] * 1e3:.2f} ms | {_crossover(row['crossover_batch_per_host'])} |"
        )
    lines += [
        "",
        "Step fits (1 process, 2 threads): "
        + "; ".join(
            f"{name}: c0 {fit['c0_s'] * 1e3:.2f} ms + c1 {fit['c1_s'] * 1e6:.1f} us/sample"
            for name, fit in one["steps"].items()
        ),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats of 2,048 samples")
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--overlap", action="store_true", help="2 ranks: one Allreduce against buckets")
    parser.add_argument("--bucket-bytes", type=int, default=1 << 18, help="bucket size of --overlap")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scaling", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.quick:
        args.samples, args.repeats = 2048, 3
    if args.overlap:
        _compile_first()
        with tempfile.TemporaryDirectory() as tmp:
            result = _launch(2, 1, os.path.join(tmp, "overlap.json"), args, scaling=False)
        command = "python benchmarks/mpi_scaling.py --overlap" + (" --quick" if args.quick else "")
        if args.bucket_bytes != 1 << 18:
            command += f" --bucket-bytes {args.bucket_bytes}"
        os.makedirs(RESULTS, exist_ok=True)
        with open(os.path.join(RESULTS, "mpi_overlap.json"), "w") as handle:
            json.dump(result, handle, indent=1)
        text = overlap_markdown(result, command)
        with open(os.path.join(RESULTS, "mpi_overlap.md"), "w") as handle:
            handle.write(text)
        print(text)
        return
    with tempfile.TemporaryDirectory() as tmp:
        one = _launch(1, 2, os.path.join(tmp, "one.json"), args, scaling=True)
        two = _launch(2, 1, os.path.join(tmp, "two.json"), args, scaling=False)
    rows = scaling_rows(one["steps"])
    command = "python benchmarks/mpi_scaling.py" + (" --quick" if args.quick else "")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "mpi_scaling.json"), "w") as handle:
        json.dump(
            {
                "one_rank_two_threads": one,
                "two_ranks_one_thread": two,
                "scaling": rows,
                "assumptions": {"net_latency_s": NET_LATENCY_S, "net_efficiency": NET_EFFICIENCY},
            },
            handle,
            indent=1,
        )
    text = markdown(one, two, rows, command)
    with open(os.path.join(RESULTS, "mpi_scaling.md"), "w") as handle:
        handle.write(text)
    print(text)


if __name__ == "__main__":
    main()
