"""Views of a flat buffer, rebuilt inside compiled code from (start, stop, *shape) records.

Used by fused steps (``fastnn._fused``): a step receives each of its buffers once, flat, and
takes its arrays back as views, so Python unboxes a few buffers per step instead of every array.
"""
from __future__ import annotations

from numba import njit

from .._config import JIT


@njit(**JIT)
def view1(buffer, meta, i):
    """``buffer[meta[i]:meta[i + 1]]``: a 1-D view (no copy)."""
    return buffer[meta[i]:meta[i + 1]]


@njit(**JIT)
def view2(buffer, meta, i):
    """``buffer[meta[i]:meta[i + 1]]`` as a ``(meta[i + 2], meta[i + 3])`` C-contiguous view."""
    return buffer[meta[i]:meta[i + 1]].reshape((meta[i + 2], meta[i + 3]))
