"""fastnn on an NVIDIA GPU beside PyTorch CUDA and cuBLAS's bare matrix products (issue 15, item 5).

Per config (``fastnn.bench`` CONFIGS) and batch size, float32, every time in ms per step:

- ``train, host batch``: one training step from host arrays to the loss on the host:
  ``model.train_step(x, y)`` against torch's copy in, zero_grad/forward/backward/step and
  ``loss.item()``.
- ``fit``: a whole epoch of ``--steps`` batches through ``model.fit`` (shuffled, batches
  gathered on the host and double-buffered in) against torch's loop over a shuffled permutation:
  ``torch (host)`` gathers each batch on the host and copies it in (as a DataLoader does),
  ``torch (gpu data)`` keeps the whole set on the GPU; one synchronisation at the end.
- ``infer``: ``model.predict(x)`` (host in, host out) against torch's eval-mode forward
  under ``no_grad`` with the copies.
- ``floor``: the step's (or forward's) matrix products alone, ``torch.matmul`` on GPU tensors
  into preallocated outputs (cuBLAS), no copies: the time no implementation can beat.

fastnn runs twice where CuPy is installed: ``fastnn`` (its dense products on cuBLAS through
CuPy) and ``fastnn-tiled`` (its own Numba CUDA GEMM kernels). Before timing, the first step's
loss and the predictions of fastnn and torch (same weights, same batch) are compared.

Run on a machine with an NVIDIA GPU, PyTorch with CUDA and numba-cuda::

    python benchmarks/gpu_compare.py --configs tiny,mlp,wide --batches 512,4096

``--torch-device cpu`` with ``NUMBA_ENABLE_CUDASIM=1`` smoke-tests the script without a GPU
(the numbers then mean nothing).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import traceback
from collections.abc import Callable

import numpy as np

import fastnn as fnn
from fastnn import bench


def _syncs(torch, device: str) -> Callable[[], None]:
    from numba import cuda

    def sync() -> None:
        cuda.synchronize()
        if device == "cuda":
            torch.cuda.synchronize()

    return sync


def interleaved_ms(impls: dict[str, Callable[[], object]], sync, repeats: int, min_time: float) -> dict[str, dict]:
    """Median and range in ms over ``repeats`` interleaved blocks of each implementation
    (:func:`fastnn.bench.interleaved`, the GPU's queue drained around each block)."""
    seconds = bench.interleaved(impls, repeats, min_time, pause=0.0, sync=sync)
    return {
        name: {"median_ms": 1e3 * statistics.median(s), "min_ms": 1e3 * min(s), "max_ms": 1e3 * max(s)}
        for name, s in seconds.items()
    }


class TorchCase:
    """The config in torch on ``device`` with the fastnn model's weights."""

    def __init__(self, cfg, model, device: str):
        tb = bench.TorchBench(cfg, model)
        tb.net.to(device)  # same Parameter objects: the optimizer (state made lazily) stays valid
        self.tb, self.torch, self.device = tb, tb.torch, device

    def to_device(self, array: np.ndarray):
        return self.torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def step_from_host(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(self.tb.train_step(self.to_device(x), self.to_device(y)).item())

    def predict_from_host(self, x: np.ndarray) -> np.ndarray:
        self.tb.net.eval()
        out = self.tb.predict(self.to_device(x)).cpu().numpy()
        self.tb.net.train()
        return out

    def epoch(self, X, Y, batch: int, on_device: bool) -> None:
        """One shuffled epoch; the loss is summed on the device, read once at the end."""
        torch = self.torch
        perm = torch.randperm(X.shape[0], device=X.device)
        total = torch.zeros((), device=self.device)
        for start in range(0, X.shape[0], batch):
            idx = perm[start : start + batch]
            xb, yb = (X[idx], Y[idx]) if on_device else (X[idx].to(self.device), Y[idx].to(self.device))
            total += self.tb.train_step(xb, yb).detach()
        total.item()


def compare_outputs(model, case: TorchCase, x, y) -> dict[str, float]:
    """Relative differences of fastnn and torch (same weights): predictions, then the first step's loss."""
    ours, theirs = np.asarray(model.predict(x), np.float64), case.predict_from_host(x).astype(np.float64)
    if ours.shape != theirs.shape:
        raise AssertionError(f"predict shapes differ: fastnn {ours.shape}, torch {theirs.shape}")
    pred = float(np.linalg.norm(ours - theirs) / max(np.linalg.norm(theirs), 1e-30))
    loss_ours, loss_theirs = model.train_step(x, y), case.step_from_host(x, y)
    return {"predict_rel": pred, "loss_rel": abs(loss_ours - loss_theirs) / max(abs(loss_theirs), 1e-30)}


def run_case(cfg, batch: int, steps: int, torch, device: str, repeats: int, min_time: float, log) -> dict:
    from fastnn.kernels.cuda import dense as cuda_dense

    sync = _syncs(torch, device)
    x, y = bench.make_batch(cfg, batch)
    X, Y = bench.make_batch(cfg, batch * steps, seed=1)
    model = bench.build_fastnn(cfg)
    case = TorchCase(cfg, model, device)  # torch copies the weights before fastnn's first step
    model.to("cuda")
    backends = ["cublas", "tiled"] if cuda_dense.gemm_backend() == "cublas" else ["tiled"]
    checks = {}
    for backend in backends:
        cuda_dense.use_cublas(backend == "cublas")
        checks[backend] = compare_outputs(model, case, x, y)
        log(f"  {cfg.name} b{batch} {backend}: {checks[backend]}")
    floor = bench.GemmFloor(cfg.sizes, batch, convert=case.to_device, matmul=torch.matmul)
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    Xd, Yd = Xt.to(device), Yt.to(device)

    def fastnn_impls(phase: str) -> dict[str, Callable[[], object]]:
        def with_backend(backend: str, fn: Callable[[], object]) -> Callable[[], object]:
            def call():
                cuda_dense.use_cublas(backend == "cublas")
                return fn()

            return call

        fns = {
            "train": lambda: model.train_step(x, y),
            "fit": lambda: model.fit(X, Y, epochs=1, batch_size=batch, verbose=0),
            "infer": lambda: model.predict(x),
        }
        return {("fastnn" if b == "cublas" else "fastnn-tiled"): with_backend(b, fns[phase]) for b in backends}

    phases = {
        "train": {
            **fastnn_impls("train"),
            "torch": lambda: case.step_from_host(x, y),
            "floor": floor.train_step,
        },
        "fit": {
            **fastnn_impls("fit"),
            "torch (host)": lambda: case.epoch(Xt, Yt, batch, on_device=False),
            "torch (gpu data)": lambda: case.epoch(Xd, Yd, batch, on_device=True),
        },
        "infer": {**fastnn_impls("infer"), "torch": lambda: case.predict_from_host(x), "floor": floor.forward},
    }
    result = {"config": cfg.name, "batch": batch, "steps": steps, "checks": checks, "phases": {}}
    for phase, impls in phases.items():
        times = interleaved_ms(impls, sync, repeats, min_time)
        if phase == "fit":  # per step
            times = {name: {k: v / steps for k, v in t.items()} for name, t in times.items()}
        result["phases"][phase] = times
        log(f"  {cfg.name} b{batch} {phase}: " + ", ".join(f"{n} {t['median_ms']:.3f}" for n, t in times.items()))
    cuda_dense.use_cublas(True)
    return result


def format_table(results: list[dict]) -> str:
    names = ["fastnn", "fastnn-tiled", "torch", "torch (host)", "torch (gpu data)", "floor"]
    present = [n for n in names if any(n in p for r in results for p in r["phases"].values())]
    lines = [
        "| config | batch | phase | " + " | ".join(present) + " | torch/fastnn |",
        "|---|---|---|" + "---|" * len(present) + "---|",
    ]
    for r in results:
        for phase, times in r["phases"].items():
            cells = [
                f"{times[n]['median_ms']:.3f} ({times[n]['min_ms']:.3f}-{times[n]['max_ms']:.3f})" if n in times else ""
                for n in present
            ]
            torch_key = "torch (host)" if phase == "fit" else "torch"
            ours = times.get("fastnn") or times["fastnn-tiled"]  # without CuPy only the tiled kernels run
            ratio = times[torch_key]["median_ms"] / ours["median_ms"]
            lines.append(f"| {r['config']} | {r['batch']} | {phase} | " + " | ".join(cells) + f" | {ratio:.2f}x |")
    return "\n".join(lines)


def machine(torch, device: str) -> str:
    import numba
    from numba import cuda

    parts = [f"Python {platform.python_version()}", f"numba {numba.__version__}", f"torch {torch.__version__}"]
    try:
        import numba_cuda

        parts.append(f"numba-cuda {numba_cuda.__version__}")
    except ImportError:
        pass
    try:
        import cupy

        parts.append(f"cupy {cupy.__version__}")
    except ImportError:
        parts.append("no cupy")
    if device == "cuda":
        parts.append(f"GPU {torch.cuda.get_device_name()}, driver CUDA {cuda.driver.get_version()}")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="tiny,mlp,wide", help="comma-separated MLP configs of fastnn.bench")
    parser.add_argument("--batches", default="512,4096", help="comma-separated batch sizes")
    parser.add_argument("--steps", type=int, default=8, help="batches per fit epoch")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved blocks per implementation")
    parser.add_argument("--min-time", type=float, default=0.1, help="seconds per timed block")
    parser.add_argument("--torch-device", default="cuda", help="'cpu' only to smoke-test on the simulator")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    import torch

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    configs = [bench.CONFIGS[name] for name in args.configs.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    log(f"fastnn {fnn.__version__}: {machine(torch, args.torch_device)}")
    failed: list[str] = []
    results: list[dict] = []
    for cfg in configs:
        for b in batches:
            try:
                results.append(run_case(cfg, b, args.steps, torch, args.torch_device, args.repeats, args.min_time, log))
            except Exception:  # one broken case must not lose the others' numbers
                log(f"{cfg.name} b{b} failed:\n{traceback.format_exc()}")
                failed.append(f"{cfg.name} b{b}")
            report(results, torch, args, argv)
    return 1 if failed or not results else 0


def report(results: list[dict], torch, args, argv) -> None:
    """Print the table of ``results`` (and write it to ``--out``): after every case, so a run cut
    short keeps what it measured."""
    text = "\n".join(
        [
            "## fastnn on the GPU beside PyTorch CUDA and cuBLAS's matrix products (float32, ms per step)",
            "",
            format_table(results),
            "",
            "Median (min-max) of interleaved blocks. torch/fastnn: above 1, fastnn is faster (fit: torch (host)).",
            "Largest relative differences to torch (predict, first loss): "
            + ", ".join(
                f"{r['config']} b{r['batch']} {max(c['predict_rel'] for c in r['checks'].values()):.1e}/"
                f"{max(c['loss_rel'] for c in r['checks'].values()):.1e}"
                for r in results
            ),
            "",
            machine(torch, args.torch_device),
            f"Command: `python benchmarks/gpu_compare.py {' '.join(sys.argv[1:] if argv is None else argv)}`",
        ]
    )
    print(text, flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
