"""Counting the crossings from Python into compiled code: every call of a Numba dispatcher made
from Python (a fused step's one function, or a kernel called on its own), not the calls compiled
code makes inside itself. Numba shows a dispatcher's call to a profiler (``sys.setprofile``) as a
call of its Python function's code; the code objects of cached kernels are not the module's, so
they are matched by (file name, function name)."""

from __future__ import annotations

import contextlib
import functools
import os
import sys

from numba.core.dispatcher import Dispatcher

import fastnn as fnn


def _key(code) -> tuple[str, str]:
    return os.path.basename(code.co_filename), code.co_name


def _dispatchers() -> tuple[set, dict]:
    """(file, name) of every dispatcher in fastnn's modules and its generated steps; and {id: name}
    of the compiled versions' entry points, which a caller may call without the dispatcher (a
    train_step lane: ``fastnn._fused.FusedCalls.typed_slot_caller``, a ``functools.partial`` of one)."""
    found, entries = set(), {}
    for name, module in list(sys.modules.items()):
        if module is not None and name.startswith("fastnn"):
            for v in list(vars(module).values()):
                if isinstance(v, Dispatcher):
                    found.add(_key(v.py_func.__code__))
                    entries.update((id(c.entry_point), v.py_func.__name__) for c in list(v.overloads.values()))
    return found, entries


@contextlib.contextmanager
def counting():
    """Within the block, the names of the compiled functions called from Python, in order."""
    (known, entries), seen = _dispatchers(), []

    def hook(frame, event, arg):
        if event == "call" and _key(frame.f_code) in known:
            seen.append(frame.f_code.co_name)
        elif event == "c_call":  # an entry point called directly, or through a functools.partial
            name = entries.get(id(arg.func if isinstance(arg, functools.partial) else arg))
            if name is not None:
                seen.append(name)

    previous = sys.getprofile()
    sys.setprofile(hook)
    try:
        yield seen
    finally:
        sys.setprofile(previous)


class PerStep(fnn.callbacks.Callback):
    """The crossings of each training step (between on_batch_begin and on_batch_end) of a fit run
    inside :func:`counting` (``seen``: its list)."""

    def __init__(self, seen: list):
        self.seen, self.steps, self._start = seen, [], 0

    def on_batch_begin(self, batch, logs=None):
        self._start = len(self.seen)

    def on_batch_end(self, batch, logs=None):
        self.steps.append(self.seen[self._start :])
