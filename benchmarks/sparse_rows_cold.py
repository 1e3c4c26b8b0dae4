"""Adam on an embedding table's looked-up rows with the rows out of cache, as in a training step
(``kernels.sparse_update.adam_rows_update``: 1,839 distinct rows of 64 of a 10,000-row table behind
263,424 other parameters, embed-10k-sparse's layout; a 12 MB stream before each call evicts them).
1 thread, CPU time of the calling thread, min and median of 7 blocks of 200 calls, us.

    python benchmarks/sparse_rows_cold.py
    PYTHONPATH=/tmp/base python benchmarks/sparse_rows_cold.py   # another tree, alternately
"""

from __future__ import annotations

import time

import numpy as np

from fastnn.bench import set_threads
from fastnn.kernels.embedding import embedding_rows
from fastnn.kernels.sparse_update import adam_rows_update


def main() -> None:
    set_threads(1)
    rng = np.random.default_rng(0)
    vocabulary, width, lo = 10_000, 64, 263_424
    n = lo + vocabulary * width + 138
    p, g, m, v = (rng.standard_normal(n).astype(np.float32) for _ in range(4))
    v = np.abs(v)
    evict = np.ones(12_000_000 // 4, np.float32)
    rows, seen = np.zeros(vocabulary + 1, np.int64), np.zeros(vocabulary, np.uint8)
    embedding_rows(rng.integers(0, vocabulary, 2048), -1, seen, rows)
    adam_rows_update(p, g, m, v, rows, lo, width, 1e-3, 0.9, 0.999, 1e-8, 1)
    blocks = []
    for _ in range(7):
        total = 0
        for _ in range(200):
            evict += 1.0  # stream 12 MB: the rows leave L2
            start = time.thread_time_ns()
            adam_rows_update(p, g, m, v, rows, lo, width, 1e-3, 0.9, 0.999, 1e-8, 2)
            total += time.thread_time_ns() - start
        blocks.append(total / 200 / 1e3)
    print(f"adam_rows_update, {rows[0]} rows out of cache: min {min(blocks):.1f} us, median {np.median(blocks):.1f} us")


if __name__ == "__main__":
    main()
