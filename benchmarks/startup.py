"""Start-up: a fresh process imports fastnn and finishes its first 'mlp' training step.

    python benchmarks/startup.py                                 # cold (source), warm, floor, torch
    python benchmarks/startup.py --wheel dist/fastnn-*-cp311-*.whl   # + cold from a prebuilt wheel
    python benchmarks/startup.py --before /path/to/old/checkout      # + cold (source) of another tree
    python benchmarks/startup.py --in-process        # + cold (source) compiled in one process (no workers)

Rows, all measured in one run (the machine's load moves absolute times, ratios in one run hold):
  cold (wheel)   the wheel (tools/prebuild_wheel.py) installed in a fresh venv, empty user caches
  cold (source)  this checkout with empty caches: every kernel the step needs compiles (the step's
                 kernels in worker processes too, fastnn._parallel_compile; "in-process": not)
  warm           this checkout again, caches filled by the cold run: what a user sees next time
  numba floor    import numba and call one cached trivial kernel: Numba's own start-up cost
  torch          import torch and run the same MLP's first Adam step (784-256-128-10, batch 128)
Each run reports the child's whole wall time and CPU time (user + system; interpreter start
included, measured here), and inside the child the time to import and to finish the first step. Writes
benchmarks/results/startup.{md,json}.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")

FASTNN_CHILD = r"""
import json, time
t0 = time.perf_counter()
import fastnn
t1 = time.perf_counter()
try:
    from fastnn._compiling import compiles
except ImportError:  # a tree older than the compile counter (--before)
    compiles = lambda: float("nan")
from fastnn.bench import CONFIGS, build_fastnn, make_batch
cfg = CONFIGS["mlp"]
model = build_fastnn(cfg)
x, y = make_batch(cfg)
loss = model.train_step(x, y)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_step_s": t2 - t1, "compiles": compiles()}))
"""

FLOOR_MODULE = "from numba import njit\n\n\n@njit(cache=True)\ndef add(a, b):\n    return a + b\n"
FLOOR_CHILD = r"""
import json, time
t0 = time.perf_counter()
import numba, startup_floor
t1 = time.perf_counter()
startup_floor.add(1.0, 2.0)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_step_s": t2 - t1, "compiles": 0}))
"""

TORCH_CHILD = r"""
import json, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128), torch.nn.ReLU(),
                          torch.nn.Linear(128, 10))
optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
x, y = torch.randn(128, 784), torch.randint(0, 10, (128,))
optimizer.zero_grad()
loss = torch.nn.functional.cross_entropy(net(x), y)
loss.backward()
optimizer.step()
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_step_s": t2 - t1, "compiles": 0}))
"""


def _clean_env() -> dict:
    """This process's environment without what points Python or the caches elsewhere; .pyc files
    are written and used, as in users' installs."""
    drop = ("PYTHONPATH", "NUMBA_CACHE_DIR", "FASTNN_CACHE_DIR", "PYTHONDONTWRITEBYTECODE")
    return {k: v for k, v in os.environ.items() if k not in drop}


def run_child(code: str, python: str = sys.executable, path: str | None = ROOT, cwd: str = ROOT, **env) -> dict:
    environment = _clean_env()
    if path:
        environment["PYTHONPATH"] = path
    environment.update(env)
    start, cpu_start = time.perf_counter(), _children_cpu()
    proc = subprocess.run([python, "-c", code], env=environment, capture_output=True, text=True, cwd=cwd, check=False)
    wall, cpu = time.perf_counter() - start, _children_cpu() - cpu_start
    if proc.returncode != 0:
        raise RuntimeError(f"the child process failed:\n{proc.stderr}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"], out["cpu_s"] = wall, cpu
    return out


def _children_cpu() -> float:
    """User + system CPU seconds of the finished child processes so far (steadier than wall
    time on a loaded machine: a compile is CPU-bound)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _venv_with(wheel: str, folder: str) -> str:
    """Python of a new venv (system site-packages for the dependencies) with ``wheel`` installed."""
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", folder], check=True, env=_clean_env())
    python = os.path.join(folder, "bin", "python")
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "-q", wheel], check=True, env=_clean_env())
    return python


def measure(args, tmp: str) -> dict:
    runs = {}

    def caches(name):
        folder = os.path.join(tmp, name)
        return {"NUMBA_CACHE_DIR": os.path.join(folder, "numba"), "FASTNN_CACHE_DIR": os.path.join(folder, "fastnn")}

    python = _venv_with(args.wheel, os.path.join(tmp, "venv")) if args.wheel else None
    floor_dir = os.path.join(tmp, "floor")
    os.makedirs(floor_dir)
    with open(os.path.join(floor_dir, "startup_floor.py"), "w") as handle:
        handle.write(FLOOR_MODULE)
    run_child(FLOOR_CHILD, path=floor_dir, cwd=floor_dir)  # compiles the trivial kernel once
    try:
        import torch  # noqa: F401

        has_torch = True
    except ImportError:
        has_torch = False
    for repeat in range(args.repeat):
        print(f"  round {repeat + 1}/{args.repeat} ...", file=sys.stderr, flush=True)
        if python:
            runs.setdefault("cold (wheel)", []).append(
                run_child(FASTNN_CHILD, python=python, path=None, cwd=tmp, **caches(f"wheel{repeat}"))
            )
        if args.before:
            runs.setdefault("cold (source, before)", []).append(
                run_child(FASTNN_CHILD, path=args.before, cwd=tmp, **caches(f"before{repeat}"))
            )
        if args.in_process:
            runs.setdefault("cold (source, in-process)", []).append(
                run_child(FASTNN_CHILD, FASTNN_PARALLEL_COMPILE="0", **caches(f"alone{repeat}"))
            )
        runs.setdefault("cold (source)", []).append(run_child(FASTNN_CHILD, **caches(f"source{repeat}")))
        for _ in range(args.warm):
            runs.setdefault("warm", []).append(run_child(FASTNN_CHILD, **caches(f"source{repeat}")))
            runs.setdefault("numba floor", []).append(run_child(FLOOR_CHILD, path=floor_dir, cwd=floor_dir))
            if has_torch:
                runs.setdefault("torch", []).append(run_child(TORCH_CHILD, path=None, cwd=tmp))
    return runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wheel", default=None, help="a wheel with prebuilt kernels (tools/prebuild_wheel.py)")
    parser.add_argument("--before", default=None, help="another source tree, measured cold (e.g. the last release)")
    parser.add_argument(
        "--in-process", action="store_true", help="also cold (source) with FASTNN_PARALLEL_COMPILE=0 (no workers)"
    )
    parser.add_argument("--repeat", type=int, default=2, help="cold runs of each kind, each with new caches")
    parser.add_argument("--warm", type=int, default=3, help="warm, floor and torch runs after each cold run")
    parser.add_argument("--out", default=RESULTS, help="results folder; '-' writes nothing")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fastnn-startup-") as tmp:
        runs = measure(args, tmp)
    median = {
        kind: {
            k: float(np.median([r[k] for r in rs])) for k in ("wall_s", "cpu_s", "import_s", "first_step_s", "compiles")
        }
        for kind, rs in runs.items()
    }
    warm, floor = median["warm"]["wall_s"], median["numba floor"]["wall_s"]
    lines = [
        "## Start-up: fresh process, import, first 'mlp' training step (784-256-128-10, Adam, batch 128)",
        "",
        "| run | n | wall s (median, min-max) | cpu s (median, min-max) | import s | to first step s | compiles | / warm | / numba floor |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, rs in runs.items():
        m = median[kind]
        walls, cpus = [r["wall_s"] for r in rs], [r["cpu_s"] for r in rs]
        lines.append(
            f"| {kind} | {len(rs)} | {m['wall_s']:.2f} ({min(walls):.2f}-{max(walls):.2f}) | "
            f"{m['cpu_s']:.2f} ({min(cpus):.2f}-{max(cpus):.2f}) | "
            f"{m['import_s']:.2f} | {m['first_step_s']:.2f} | {m['compiles']:.0f} | "
            f"{m['wall_s'] / warm:.2f} | {m['wall_s'] / floor:.2f} |"
        )
    command = "python benchmarks/startup.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines += [
        "",
        "wall: the whole child process, interpreter start included; cpu: its user + system CPU time; "
        "import and first step: inside it. "
        "cold runs have empty NUMBA_CACHE_DIR and FASTNN_CACHE_DIR; .pyc files are written and used.",
        f"Command: `{command.strip()}`",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out != "-":
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "startup.md"), "w") as handle:
            handle.write(text + "\n")
        with open(os.path.join(args.out, "startup.json"), "w") as handle:
            json.dump({"runs": runs, "median": median}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
