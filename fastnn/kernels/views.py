"""Views of a flat buffer, rebuilt inside compiled code from (start, stop, *shape) records.

Used by fused steps (``fastnn._fused``): a step receives each of its buffers once, flat, and
takes its arrays back as views, so Python unboxes a few buffers per step instead of every array.
The record is a slice of an int64 array (never a constant index: a literal index would compile
one specialisation per position).
"""

from __future__ import annotations

from numba import njit

from .._config import JIT


@njit(**JIT)
def view1(buffer, record):
    """``buffer[record[0]:record[1]]``: a 1-D view (no copy)."""
    return buffer[record[0] : record[1]]


@njit(**JIT)
def view2(buffer, record):
    """``buffer[record[0]:record[1]]`` as a ``(record[2], record[3])`` C-contiguous view (no copy)."""
    return buffer[record[0] : record[1]].reshape((record[2], record[3]))


@njit(**JIT)
def view3(buffer, record):
    """``buffer[record[0]:record[1]]`` as a ``(record[2], record[3], record[4])`` view (no copy)."""
    return buffer[record[0] : record[1]].reshape((record[2], record[3], record[4]))


@njit(**JIT)
def view4(buffer, record):
    """``buffer[record[0]:record[1]]`` as a 4-D view (images: batch, channels, height, width)."""
    return buffer[record[0] : record[1]].reshape((record[2], record[3], record[4], record[5]))
