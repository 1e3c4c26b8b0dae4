"""Counting the crossings from Python into compiled code: every call of a Numba dispatcher made
from Python (a fused step's one function, or a kernel called on its own), not the calls compiled
code makes inside itself. Numba shows a dispatcher's call to a profiler (``sys.setprofile``) as a
call of its Python function's code; the code objects of cached kernels are not the module's, so
they are matched by (file name, function name)."""

from __future__ import annotations

import contextlib
import os
import sys

from numba.core.dispatcher import Dispatcher

import fastnn as fnn


def _key(code) -> tuple[str, str]:
    return os.path.basename(code.co_filename), code.co_name


def _dispatchers() -> set:
    """(file, name) of every dispatcher in fastnn's modules and its generated steps."""
    found = set()
    for name, module in list(sys.modules.items()):
        if module is not None and name.startswith("fastnn"):
            found.update(_key(v.py_func.__code__) for v in list(vars(module).values()) if isinstance(v, Dispatcher))
    return found


@contextlib.contextmanager
def counting():
    """Within the block, the names of the compiled functions called from Python, in order."""
    known, seen = _dispatchers(), []

    def hook(frame, event, arg):
        if event == "call" and _key(frame.f_code) in known:
            seen.append(frame.f_code.co_name)

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
