"""numba-cuda's simulator gives each block one ``cuda.shared.array`` per source line only if no two
of the block's threads (OS threads) allocate it at once: its check-then-store has no lock.
fastnn.kernels.cuda._common replaces it with an atomic version; here the race is forced by a
slow allocation, which the simulator's own version loses and fastnn's does not."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from fastnn.kernels.cuda import _common

from .conftest import SIMULATOR

pytestmark = pytest.mark.skipif(not SIMULATOR, reason="the simulator's shared arrays only")

THREADS = 8


def arrays_seen_by_threads(array, monkeypatch) -> int:
    """How many distinct shared arrays THREADS threads get from one line of one block, with every
    allocation slowed so that all threads check the block's arrays before any stores one."""
    from numba.cuda.simulator import kernelapi

    block = kernelapi.FakeCUDAShared(0)
    real_empty = np.empty

    def slow_empty(*args, **kwargs):
        time.sleep(0.05)
        return real_empty(*args, **kwargs)

    monkeypatch.setattr(np, "empty", slow_empty)
    start, got = threading.Barrier(THREADS), []

    def thread():
        start.wait()
        got.append(array(block, (4,), np.float64))  # the same line for every thread: one array

    workers = [threading.Thread(target=thread) for _ in range(THREADS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    monkeypatch.undo()
    assert len(got) == THREADS
    return len({id(a) for a in got})


def test_the_simulators_own_shared_array_races():
    """The unpatched allocation hands out several arrays (why the patch exists)."""
    from numba.cuda.simulator import kernelapi

    assert _common.make_simulator_shared_arrays_atomic()
    original = kernelapi.FakeCUDAShared.array.original
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert arrays_seen_by_threads(original, monkeypatch) > 1


def test_fastnn_makes_shared_arrays_atomic():
    from numba.cuda.simulator import kernelapi

    assert _common.make_simulator_shared_arrays_atomic()
    assert _common.make_simulator_shared_arrays_atomic()  # once: not wrapped twice
    patched = kernelapi.FakeCUDAShared.array
    assert patched.fastnn_atomic and not getattr(patched.original, "fastnn_atomic", False)
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert arrays_seen_by_threads(patched, monkeypatch) == 1
