"""Counts Numba compiles of fastnn's code and says so, in one line, when the first one starts.

Numba fires its ``numba:compile`` event only after a cache miss, just before it compiles: a warm
start (every kernel found in the cache) never reaches the listener, so the line costs nothing
there and never shows. The count (:func:`compiles`) is what tests and ``fastnn warmup`` use to
check that a cache was complete (zero compiles).
"""

from __future__ import annotations

import contextlib
import sys

from numba.core import event

#: seconds to compile one fastnn kernel with its callees when the wheel measured none: the demo's
#: 32 functions took 16 s on a quiet 2-core machine, 20-36 s under load (docs/architecture.md, "Start-up")
SECONDS_PER_FUNCTION = 0.6
#: compiles per function: literal and dtype specialisations, callees re-typed (the demo: 58 of 32)
COMPILES_PER_FUNCTION = 1.8
#: at most this many pending kernels are counted: a model calls a share of them (the demo 32)
TYPICAL_FUNCTIONS = 32
#: module name prefix of the generated fused steps (``fastnn._fused``)
FUSED_STEP_PREFIX = "fastnn_step_"

_counts = {"all": 0}
_compiled: list[str] = []  # qualified names, in order
_state = {"announced": False, "quiet": 0}


def _is_ours(dispatcher) -> bool:
    module = getattr(getattr(dispatcher, "py_func", None), "__module__", None) or ""
    return module.startswith("fastnn")  # the kernels, and the fused steps (fastnn_step_<hash>)


class _Listener(event.Listener):
    def on_start(self, ev):
        if not _is_ours(ev.data["dispatcher"]):
            return
        _counts["all"] += 1
        py_func = ev.data["dispatcher"].py_func
        _compiled.append(f"{py_func.__module__}.{py_func.__qualname__}")
        if not _state["announced"] and not _state["quiet"]:
            _state["announced"] = True
            print(first_notice(py_func.__module__), file=sys.stderr, flush=True)

    def on_end(self, ev):
        pass


def pending_functions() -> int:
    """How many of the fastnn kernels imported so far are neither compiled in this process nor in
    a valid cache (the user's, or the wheel's prebuilt files): each will compile at its first call.
    Helpers inlined into their callers (``inline="always"``) never compile or cache on their own
    and are not counted (128 of the 335 dispatchers in ``fastnn.kernels``: counted, they alone kept
    the estimate at its cap of :data:`TYPICAL_FUNCTIONS`, about 19 s, whatever was cached)."""
    from numba.core.registry import CPUDispatcher

    from ._shipped_cache import cached

    kernels = {
        id(value): value
        for name, module in list(sys.modules.items())
        if name.startswith("fastnn.kernels.") and module is not None
        for value in vars(module).values()
        if isinstance(value, CPUDispatcher) and value.targetoptions.get("inline") != "always"
    }
    return sum(1 for kernel in kernels.values() if not kernel.overloads and not cached(kernel))


def estimate_seconds(pending: int, per_function: float) -> int:
    """Whole seconds to compile ``pending`` kernels (at most :data:`TYPICAL_FUNCTIONS` of them; at
    least the one compiling now) at ``per_function`` seconds each; at least 1."""
    return max(1, round(min(max(pending, 1), TYPICAL_FUNCTIONS) * per_function))


def notice(seconds: int, why: str | None = None, processes: int = 1) -> str:
    """The line printed when the first fastnn compile of a process starts (``processes``: how many
    compile at once, :mod:`fastnn._parallel_compile`)."""
    where = f" in {processes} processes," if processes > 1 else ""
    return (
        f"fastnn: compiling fastnn's kernels for this CPU, once,{where} about {seconds} s (cached for "
        f"the next runs; `fastnn warmup` compiles all of them ahead of use)" + (f"; {why}" if why else "")
    )


def first_notice(module: str) -> str:
    """The line printed when a process's first fastnn compile starts, of a function of ``module``:
    a model's fused step (every kernel came from the cache) or the kernels still to compile."""
    if module.startswith(FUSED_STEP_PREFIX):
        return fused_step_notice()
    from ._shipped_cache import build_info, mismatch

    per_compile = build_info().get("seconds_per_compile")  # measured by the wheel's build
    per_function = per_compile * COMPILES_PER_FUNCTION if per_compile else SECONDS_PER_FUNCTION
    return notice(estimate_seconds(pending_functions(), per_function), mismatch())


def fused_step_notice() -> str:
    """The line printed when a process's first compile is a model's fused step (``fastnn._fused``:
    every kernel was cached, only the one function that calls them is new)."""
    from ._config import FUSE_COMPILE_SECONDS

    return (
        f"fastnn: compiling this model's fused step for this CPU, once, about {FUSE_COMPILE_SECONDS:.0f} s "
        "(cached for the next runs of models of the same structure)"
    )


def announce(seconds: int, processes: int) -> None:
    """Print the notice now, for a compile shared by ``processes`` processes (once per process;
    nothing inside :func:`quiet`)."""
    if _state["quiet"]:
        return
    if _state["announced"]:  # the first compiles (e.g. the initialisers) already said it
        print(
            f"fastnn: compiling more kernels in {processes} processes, about {max(1, seconds)} s",
            file=sys.stderr,
            flush=True,
        )
        return
    _state["announced"] = True
    from ._shipped_cache import mismatch

    print(notice(max(1, seconds), mismatch(), processes), file=sys.stderr, flush=True)


def compiles() -> int:
    """How many fastnn functions this process has compiled (cache misses) so far."""
    return _counts["all"]


def compiled() -> list[str]:
    """Module-qualified names of the functions counted by :func:`compiles`, in order."""
    return list(_compiled)


def is_quiet() -> bool:
    """Whether a :func:`quiet` block is running (``fastnn warmup``: it runs its own processes)."""
    return _state["quiet"] > 0


@contextlib.contextmanager
def quiet():
    """No announcement inside (``fastnn warmup`` shows its own progress)."""
    _state["quiet"] += 1
    try:
        yield
    finally:
        _state["quiet"] -= 1


event.register("numba:compile", _Listener())
