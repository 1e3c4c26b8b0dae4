"""Start-up: time for a fresh process to import fastnn and finish its first 'mlp' training step.

    python benchmarks/startup.py                 # 2 cold runs, 3 warm runs after each
    python benchmarks/startup.py --quick         # 1 cold, 2 warm

cold: NUMBA_CACHE_DIR points to a new empty folder, so every kernel the step needs compiles.
warm: the same cache folder again (filled by the cold run): the time a user sees on the second
run. Each run reports the whole process's wall time (interpreter start included, measured by
this parent) and, inside the child, import / model build / first train_step.
Writes benchmarks/results/startup.{md,json}.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")

CHILD = r"""
import json, time
t0 = time.perf_counter()
import fastnn
t1 = time.perf_counter()
from fastnn.bench import CONFIGS, build_fastnn, make_batch
cfg = CONFIGS["mlp"]
model = build_fastnn(cfg)
x, y = make_batch(cfg)
t2 = time.perf_counter()
loss = model.train_step(x, y)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "build_s": t2 - t1, "first_step_s": t3 - t2, "loss": loss}))
"""


def run_child(cache_dir: str, threads: int | None) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if threads:
        env["NUMBA_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, cwd=ROOT, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"the child process failed:\n{proc.stderr}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cold", type=int, default=None, help="cold runs, each with a new cache (default 2)")
    parser.add_argument("--warm", type=int, default=None, help="warm runs after each cold run (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="NUMBA_NUM_THREADS of the child")
    parser.add_argument("--quick", action="store_true", help="1 cold run, 2 warm runs")
    parser.add_argument("--out", default=RESULTS, help="results folder; '-' writes nothing")
    args = parser.parse_args(argv)
    n_cold = args.cold or (1 if args.quick else 2)
    n_warm = args.warm or (2 if args.quick else 3)
    runs = {"cold": [], "warm": []}
    for i in range(n_cold):
        with tempfile.TemporaryDirectory(prefix="fastnn-numba-cache-") as cache:
            print(f"  cold run {i + 1}/{n_cold} ...", file=sys.stderr, flush=True)
            runs["cold"].append(run_child(cache, args.threads))
            for _ in range(n_warm):
                runs["warm"].append(run_child(cache, args.threads))
    keys = ("wall_s", "import_s", "build_s", "first_step_s")
    lines = ["## Start-up: fresh process, import fastnn, build 'mlp', first train_step", "",
             "| cache | runs | wall s (median, min-max) | import s | build s | first step s |", "|---|---|---|---|---|---|"]
    summary = {}
    for kind, rs in runs.items():
        med = {k: float(np.median([r[k] for r in rs])) for k in keys}
        summary[kind] = med
        lines.append(f"| {kind} | {len(rs)} | {med['wall_s']:.2f} ({min(r['wall_s'] for r in rs):.2f}-"
                     f"{max(r['wall_s'] for r in rs):.2f}) | {med['import_s']:.2f} | {med['build_s']:.2f} | "
                     f"{med['first_step_s']:.2f} |")
    lines += ["", ("cold: empty NUMBA_CACHE_DIR; warm: the same cache again. wall: the whole child process "
                   "(interpreter start included)."),
              f"Command: `python benchmarks/startup.py {' '.join(sys.argv[1:] if argv is None else argv)}`".strip()]
    text = "\n".join(lines)
    print(text)
    if args.out != "-":
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "startup.md"), "w") as handle:
            handle.write(text + "\n")
        with open(os.path.join(args.out, "startup.json"), "w") as handle:
            json.dump({"runs": runs, "median": summary}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
