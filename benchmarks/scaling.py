"""Training-step time against batch size and hidden width, at 1 and 2 threads: fastnn beside
its GEMM floor (and torch when installed).

    python benchmarks/scaling.py                 # full sweep (batch 1..4096, width 64..4096)
    python benchmarks/scaling.py --quick         # fewer points and repeats: a few minutes

Network: 784-H-H-10 ReLU, Adam, cross-entropy. Batch sweep at H=256; width sweep at batch 128.
Writes benchmarks/results/scaling.{md,json} and scaling.png (when matplotlib is installed).
"""

import argparse
import dataclasses
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastnn.bench import (
    CONFIGS,
    GemmFloor,
    TorchBench,
    build_fastnn,
    interleaved,
    machine_info,
    make_batch,
    set_threads,
    summarize,
    torch_or_none,
    train_flops,
)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
BATCHES, BATCHES_QUICK = (1, 4, 16, 64, 256, 1024, 4096), (1, 16, 256, 4096)
WIDTHS, WIDTHS_QUICK = (64, 128, 256, 512, 1024, 2048, 4096), (64, 512, 4096)
BATCH_SWEEP_WIDTH, WIDTH_SWEEP_BATCH = 256, 128
IMPLS = ("fastnn", "floor", "torch")


def point(width: int, batch: int, repeats: int, min_time: float, torch) -> dict:
    """Medians (s) of the three implementations' training steps for 784-width-width-10."""
    cfg = dataclasses.replace(
        CONFIGS["mlp"], name=f"784-{width}-{width}-10", sizes=(784, width, width, 10), batch=batch
    )
    model = build_fastnn(cfg)
    x, y = make_batch(cfg)
    floor = GemmFloor(cfg.sizes, batch)
    cases = {"fastnn": lambda: model.train_step(x, y), "floor": floor.train_step}
    if torch is not None:
        tb = TorchBench(cfg, model)
        tx, ty = tb.tensors(x, y)
        cases["torch"] = lambda: tb.train_step(tx, ty)
    stats = {k: summarize(v, train_flops(cfg.sizes, batch)) for k, v in interleaved(cases, repeats, min_time).items()}
    return {
        "width": width,
        "batch": batch,
        **{k: s["median_s"] for k, s in stats.items()},
        "iqr": {k: [s["q1_s"], s["q3_s"]] for k, s in stats.items()},
    }


def table(rows: list[dict], key: str, threads: list[int]) -> str:
    head = (
        f"| {key} | "
        + " | ".join(f"{t}T fastnn ms | {t}T floor ms | {t}T torch ms | {t}T fastnn/floor" for t in threads)
        + " |"
    )
    lines = [head, "|" + "---|" * (1 + 4 * len(threads))]
    for value in sorted({r[key] for r in rows}):
        cells = []
        for t in threads:
            r = next(r for r in rows if r[key] == value and r["threads"] == t)
            cells += [f"{r[i] * 1e3:.3f}" if i in r else "-" for i in IMPLS] + [f"{r['fastnn'] / r['floor']:.2f}"]
        lines.append(f"| {value} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(result: dict, path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, (sweep, key, title) in zip(
        axes,
        (
            ("batch", "batch", f"784-{BATCH_SWEEP_WIDTH}-{BATCH_SWEEP_WIDTH}-10"),
            ("width", "width", f"784-H-H-10, batch {WIDTH_SWEEP_BATCH}"),
        ),
    ):
        rows = result[sweep]
        for t in result["threads"]:
            sel = sorted((r for r in rows if r["threads"] == t), key=lambda r: r[key])
            for impl, style in zip(IMPLS, ("-o", "--", ":s")):
                if all(impl in r for r in sel):
                    ax.plot([r[key] for r in sel], [r[impl] * 1e3 for r in sel], style, label=f"{impl} {t}T")
        ax.set(xscale="log", yscale="log", xlabel=key, ylabel="ms per training step", title=title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer points, 3 short repeats")
    parser.add_argument("--threads", default="1,2", help="thread counts (default 1,2)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", default=RESULTS, help="results folder; '-' writes nothing")
    args = parser.parse_args(argv)
    import numba

    torch = torch_or_none()
    threads = [t for t in map(int, args.threads.split(",")) if t <= numba.config.NUMBA_NUM_THREADS]
    repeats = args.repeats or (3 if args.quick else 5)
    min_time = 0.02 if args.quick else 0.1
    result = {"threads": threads, "repeats": repeats, "batch": [], "width": []}
    for t in threads:
        set_threads(t)
        for b in BATCHES_QUICK if args.quick else BATCHES:
            print(f"  {t} threads, batch {b}", file=sys.stderr, flush=True)
            result["batch"].append({"threads": t, **point(BATCH_SWEEP_WIDTH, b, repeats, min_time, torch)})
        for w in WIDTHS_QUICK if args.quick else WIDTHS:
            print(f"  {t} threads, width {w}", file=sys.stderr, flush=True)
            result["width"].append({"threads": t, **point(w, WIDTH_SWEEP_BATCH, repeats, min_time, torch)})
    cmd = f"python benchmarks/scaling.py {' '.join(sys.argv[1:] if argv is None else argv)}".strip()
    text = "\n".join(
        [
            f"## Training step against batch size (784-{BATCH_SWEEP_WIDTH}-{BATCH_SWEEP_WIDTH}-10 ReLU, Adam)",
            "",
            table(result["batch"], "batch", threads),
            "",
            f"## Training step against hidden width (784-H-H-10 ReLU, Adam, batch {WIDTH_SWEEP_BATCH})",
            "",
            table(result["width"], "width", threads),
            "",
            f"Medians of {repeats} interleaved repeats. Command: `{cmd}`",
        ]
    )
    print(text)
    if args.out != "-":
        os.makedirs(args.out, exist_ok=True)
        result["machine"] = machine_info()
        png = os.path.join(args.out, "scaling.png")
        plotted = plot(result, png)
        with open(os.path.join(args.out, "scaling.md"), "w") as handle:
            handle.write(text + ("\n\n![scaling](scaling.png)\n" if plotted else "\n"))
        with open(os.path.join(args.out, "scaling.json"), "w") as handle:
            json.dump(result, handle, indent=1)
        print(f"plot: {png}" if plotted else "plot skipped: matplotlib is not installed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
