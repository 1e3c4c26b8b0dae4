"""Numba's cache files, saved so that processes compiling the same kernels at once stay correct.

Numba keeps one index per function (``<name>.nbi``: {key: data file name}) beside numbered data
files (``<name>.<n>.nbc``). Its save reads the index, picks the first number the index does not
name, writes the index, then the data, with no lock. Two processes that compile two signatures of
one kernel at once (a joblib search with ``n_jobs``, MPI ranks, two notebooks, ``pytest -n 2``)
both pick number 1: one process's index then names the other's code, and a later process loads
float64 machine code for a float32 call (a segfault or garbage, seen in tests/test_distributed.py
before its compile-once fixture). And between the index write and the data write, a reader can
load the stale data file that the new index already names.

:class:`LockedIndexDataCacheFile` saves under an exclusive lock on the cache folder (POSIX
``flock``; released when the process dies), re-reads the index inside it, and writes the data
before the index that names it. Compiling stays outside the lock; only the two file writes
(milliseconds) are serialised. Where ``fcntl`` does not exist (Windows) the order of the writes
is kept and the lock is skipped, as on a file system that refuses ``flock`` (some NFS mounts),
where a save must not fail where Numba's own would have worked.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from typing import Iterator

from numba.core import caching

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

#: the lock file in each cache folder (not a cache entry: wheels ship only .nbi/.nbc files)
LOCK_NAME = ".fastnn-cache.lock"


@contextlib.contextmanager
def folder_lock(folder: str) -> Iterator[None]:
    """Hold an exclusive lock on ``folder``'s :data:`LOCK_NAME` for the block (other processes'
    saves into the folder wait; threads of one process wait too: each holds its own open file)."""
    if fcntl is None:
        yield
        return
    with open(os.path.join(folder, LOCK_NAME), "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        except OSError:  # a file system without locks (some NFS mounts): the write order only, as before
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class LockedIndexDataCacheFile(caching.IndexDataCacheFile):
    """Numba's index and data files of one function, saved under :func:`folder_lock`."""

    def save(self, key, data) -> None:
        """Save the entry ``key``: its data under a name the current index does not use (or the
        name it already has), then the index naming it."""
        with folder_lock(self._cache_path):
            overloads = self._load_index()
            data_name = overloads.get(key)
            if data_name is None:
                taken = set(overloads.values())
                data_name = next(n for n in map(self._data_name, itertools.count(1)) if n not in taken)
                overloads[key] = data_name
            self._save_data(data_name, data)
            self._save_index(overloads)
