"""Same-process A/B of dropout's forward row code (session 8): the session-7 form (keep flags
written as floats into ``out``, then packed bit by bit) against ``kernels.dropout.dropout_forward``
(uint8 flags, packed 8 at a time by one multiply). Both draw the same hashes: the script checks the
outputs and masks are equal before timing. One thread, CPU time of the calling thread.

    python benchmarks/dropout_mask_ab.py
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np
from numba import njit

from fastnn._config import JIT
from fastnn.kernels.dropout import dropout_forward, keep_threshold, keep_unit, mask_bytes
from fastnn.kernels.rng import hash_at, key64


@njit(**JIT)
def session7_forward(x, out, mask, p, seed, stream, step):
    """dropout_forward as it was before session 8 (serial path), for the A/B only."""
    key = key64(seed, stream, step)
    threshold = keep_threshold(p)
    scale = x.dtype.type(1.0 / (1.0 - p))
    n = out.shape[1]
    zero = out.dtype.type(0)
    one = out.dtype.type(1)
    for i in range(out.shape[0]):
        for j in range(n):
            out[i, j] = one if keep_unit(hash_at(key, i * n + j), threshold) else zero
        for b in range(mask.shape[1]):
            byte = np.uint8(0)
            for j in range(8 * b, min(n, 8 * b + 8)):
                byte |= np.uint8(out[i, j] != zero) << np.uint8(j - 8 * b)
            mask[i, b] = byte
        for j in range(n):
            out[i, j] = x[i, j] * scale if out[i, j] != zero else zero


def _us(fn, args, calls: int, blocks: int) -> list:
    times = []
    for _ in range(blocks):
        start = time.thread_time()
        for _ in range(calls):
            fn(*args)
        times.append((time.thread_time() - start) / calls * 1e6)
    return times


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=7)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args(argv)
    numba.set_num_threads(1)
    print("| shape | dtype | session 7 us | now us | speed-up |\n|---|---|---|---|---|")
    for (m, n), dtype in (((256, 512), np.float32), ((256, 256), np.float32), ((256, 512), np.float64)):
        x = np.random.default_rng(0).random((m, n)).astype(dtype)
        outs = [np.empty_like(x), np.empty_like(x)]
        masks = [np.empty((m, mask_bytes(n)), np.uint8) for _ in range(2)]
        fns = (session7_forward, dropout_forward)
        for fn, out, mask in zip(fns, outs, masks):
            fn(x, out, mask, 0.2, 1, 2, 3)
        if not (np.array_equal(outs[0], outs[1]) and np.array_equal(masks[0], masks[1])):
            raise RuntimeError("the two forms drew different masks: the A/B compares different work")
        old, new = [], []
        for _ in range(args.blocks):  # interleaved blocks
            old += _us(fns[0], (x, outs[0], masks[0], 0.2, 1, 2, 3), args.calls, 1)
            new += _us(fns[1], (x, outs[1], masks[1], 0.2, 1, 2, 3), args.calls, 1)
        mo, mn = float(np.median(old)), float(np.median(new))
        print(
            f"| {m}x{n} | {np.dtype(dtype).name} | {mo:.1f} ({min(old):.1f}-{max(old):.1f}) | "
            f"{mn:.1f} ({min(new):.1f}-{max(new):.1f}) | {mo / mn:.2f}x |"
        )


if __name__ == "__main__":
    main()
