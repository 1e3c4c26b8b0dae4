"""Where a cold start's compile time goes: run a ``fastnn`` command in this process and time
every Numba compile (CPU seconds, per function, its callees' compiles subtracted).

    NUMBA_CACHE_DIR=$(mktemp -d) FASTNN_CACHE_DIR=$(mktemp -d) python benchmarks/compile_profile.py demo --verbose 0
    NUMBA_CACHE_DIR=$(mktemp -d) python benchmarks/compile_profile.py --group dense   # or adam, conv_pool
    NUMBA_CACHE_DIR=$(mktemp -d) FASTNN_CACHE_DIR=$(mktemp -d) python benchmarks/compile_profile.py --llvm \
        warmup --only "cnn 2-d" --dtype float32 -q

``pytest ARGS`` instead of a fastnn command profiles a test run (``pytest.main(ARGS)``), e.g.
``... compile_profile.py --llvm pytest -q -p no:cacheprovider tests/test_fused.py``.

Run it with empty caches (as above), else nothing compiles. ``--group`` compiles one group of
kernels only, by calling them once on small float32 arrays (dense: dense_forward and
dense_backward with relu; adam: the gradient norm and the in-step Adam update; conv_pool: the fused
conv -> ReLU -> max pooling pair, forward and backward, of a small 1-D convolution). Prints the process's CPU time, the
number of compiles and, per function, its exclusive compile CPU seconds and how many times it
compiled (literal and dtype specialisations count once each); ``--json FILE`` keeps every event.
``--llvm`` adds LLVM's share: the CPU seconds Numba's code libraries spend optimising their final
module (the function's own code and every callee linked into it) and compiling it to object code,
in total and per function (the compile in progress when its library is finalized).
"""

import json
import sys
import time
from collections import defaultdict

from numba.core import event

_stack: list = []  # [name, start cpu, callees' cpu, signature] of the compiles in progress
_events: list = []  # (name, inclusive s, exclusive s, signature)


class _Timer(event.Listener):
    def on_start(self, ev):
        py_func = ev.data["dispatcher"].py_func
        name = f"{py_func.__module__}.{py_func.__qualname__}"
        _stack.append([name, time.process_time(), 0.0, str(ev.data.get("args"))])

    def on_end(self, ev):
        name, start, callees, signature = _stack.pop()
        inclusive = time.process_time() - start
        if _stack:
            _stack[-1][2] += inclusive
        _events.append((name, inclusive, inclusive - callees, signature))


_llvm: dict = defaultdict(lambda: [0.0, 0.0])  # function -> [optimise s, object code s]


def _time_llvm() -> None:
    """Wrap Numba's two LLVM steps of a library's finalize (module optimisation, object code)."""
    from numba.core import codegen

    for slot, method in enumerate(("_optimize_final_module", "_finalize_final_module")):
        original = getattr(codegen.CPUCodeLibrary, method)

        def timed(self, original=original, slot=slot):
            start = time.process_time()
            try:
                return original(self)
            finally:
                _llvm[_stack[-1][0] if _stack else "(outside a compile)"][slot] += time.process_time() - start

        setattr(codegen.CPUCodeLibrary, method, timed)


def _compile_group(group: str) -> int:
    """Call the kernels of ``group`` once on small float32 arrays (what a cold start compiles)."""
    import numpy as np

    f32 = np.float32
    if group == "dense":
        from fastnn.kernels.activations import RELU
        from fastnn.kernels.dense import dense_backward, dense_forward

        x, w, b = np.ones((32, 64), f32), np.ones((64, 128), f32), np.ones(128, f32)
        z, y = np.empty((32, 128), f32), np.empty((32, 128), f32)
        dense_forward(x, w, b, z, y, RELU, 0.0)
        grads = (z.copy(), x.copy(), w.copy(), b.copy(), np.zeros((1, 128), f32))
        dense_backward(x, w, z, y, y.copy(), *grads, RELU, 0.0, True)
    elif group == "adam":
        from fastnn.kernels.optim import grad_global_norm, norm_partials_size
        from fastnn.kernels.step_update import N_SCALARS, adam_step

        n = 20_000
        params, grads, m, v = np.zeros(n, f32), np.ones(n, f32), np.zeros(n, f32), np.zeros(n, f32)
        scalars = np.full(N_SCALARS, np.nan)
        scalars[:3] = 1.0, 1e-3, 1.0  # armed, lr, step
        norm = grad_global_norm(grads, np.zeros(4))
        ranges, partials = np.array([[0, n]], np.int64), np.zeros(norm_partials_size(n))
        adam_step(
            1.0, norm, scalars, None, ranges, partials, params, grads, m, v, np.zeros(0, f32), 0.9, 0.999, 1e-8, 0.0,
            n, False, False,
        )  # fmt: skip
    elif group == "conv_pool":
        from fastnn.kernels.activations import RELU
        from fastnn.kernels.conv import conv2d_scratch_shapes
        from fastnn.kernels.conv_pool import conv2d_maxpool_backward, conv2d_maxpool_forward

        n, c, o, length = 2, 3, 4, 11  # a 1-D conv (kernel 1x3, padding 1) -> ReLU -> 1x2 max pooling
        x, w, b = np.ones((n, c, 1, length), f32), np.ones((o, c, 1, 3), f32), np.ones(o, f32)
        col, zcol, partial_b = (np.zeros(s, f32) for s in conv2d_scratch_shapes(n, c, o, 1, 3, 1, length))
        y, pooled = np.zeros((n, o, 1, length), f32), np.zeros((n, o, 1, length // 2), f32)
        argmax = np.zeros(pooled.shape, np.int32)
        geometry = (1, 1, 0, 1, 1, 1, 1, RELU, 0.0)
        conv2d_maxpool_forward(x, w, b, col, zcol, y, pooled, argmax, *geometry, 1)
        grads = (np.zeros_like(x), np.zeros_like(w), np.zeros_like(b), partial_b)
        conv2d_maxpool_backward(x, w, y, pooled, argmax, pooled.copy(), col, zcol, *grads, *geometry, True, True, 1)
    else:
        raise SystemExit(f"--group {group!r}: expected dense, adam or conv_pool")
    return 0


def main(argv: list[str]) -> int:
    out = None
    if "--json" in argv:
        i = argv.index("--json")
        out, argv = argv[i + 1], argv[:i] + argv[i + 2 :]
    event.register("numba:compile", _Timer())
    llvm = "--llvm" in argv
    if llvm:
        argv = [a for a in argv if a != "--llvm"]
        import fastnn.kernels  # noqa: F401  (its own patches of the finalize first: the timer wraps them)

        _time_llvm()
    start = time.process_time()
    if "--group" in argv:
        rc = _compile_group(argv[argv.index("--group") + 1])
    elif argv[:1] == ["pytest"]:
        import pytest

        rc = pytest.main(argv[1:])
    else:
        from fastnn.cli import main as fastnn_main

        rc = fastnn_main(argv or ["demo", "--verbose", "0"])
    total = time.process_time() - start
    per_function: dict = defaultdict(lambda: [0, 0.0])
    for name, _, exclusive, _ in _events:
        per_function[name][0] += 1
        per_function[name][1] += exclusive
    compile_s = sum(exclusive for _, _, exclusive, _ in _events)
    print(
        f"process CPU {total:.1f} s (after interpreter start); {len(_events)} compiles of "
        f"{len(per_function)} functions, {compile_s:.1f} s CPU",
        file=sys.stderr,
    )
    if llvm:
        optimise, emit = (sum(times[i] for times in _llvm.values()) for i in (0, 1))
        print(f"LLVM: optimising {optimise:.1f} s, object code {emit:.1f} s CPU (per function below)", file=sys.stderr)
    for name, (count, seconds) in sorted(per_function.items(), key=lambda item: -item[1][1]):
        phases = f"  (LLVM {_llvm[name][0]:.2f} + {_llvm[name][1]:.2f})" if llvm else ""
        print(f"{seconds:7.2f} s {count:3d}x {name}{phases}", file=sys.stderr)
    if out:
        with open(out, "w") as handle:
            json.dump(_events, handle)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
