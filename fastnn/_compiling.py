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

#: wall time of compiling a small model's kernels (one dtype) with empty caches: 16 s on a quiet
#: 2-core machine, 20-36 s under load (docs/architecture.md, "Start-up")
ESTIMATE_S = 20

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
            from ._shipped_cache import mismatch

            why = mismatch()
            print(
                f"fastnn: compiling fastnn's kernels for this CPU, once, about {ESTIMATE_S} s (cached for the "
                f"next runs; `fastnn warmup` compiles all of them ahead of use)" + (f"; {why}" if why else ""),
                file=sys.stderr,
                flush=True,
            )

    def on_end(self, ev):
        pass


def compiles() -> int:
    """How many fastnn functions this process has compiled (cache misses) so far."""
    return _counts["all"]


def compiled() -> list[str]:
    """Module-qualified names of the functions counted by :func:`compiles`, in order."""
    return list(_compiled)


@contextlib.contextmanager
def quiet():
    """No announcement inside (``fastnn warmup`` shows its own progress)."""
    _state["quiet"] += 1
    try:
        yield
    finally:
        _state["quiet"] -= 1


event.register("numba:compile", _Listener())
