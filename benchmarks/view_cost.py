"""What 50 views of a flat buffer cost inside compiled code, three ways: ``view2`` (a call: slice,
then reshape with its checks; fused steps before session 13), the same slice + reshape written
inline, and ``numba.carray`` at each view's address (fused steps now). 1 thread, CPU time.

    python benchmarks/view_cost.py
"""

import time

import numpy as np
from numba import carray, njit

from fastnn._config import JIT
from fastnn.kernels.views import pointer, view2

N_VIEWS = 50
VIEW_SOURCE = {
    "view2": "view2(buf, meta[{m}:{m4}])",
    "inline": "buf[meta[{m}]:meta[{m1}]].reshape((meta[{m2}], meta[{m3}]))",
    "carray": "carray(pointer(address + meta[{m}] * 4), (meta[{m2}], meta[{m3}]), np.float32)",
}


@njit(**JIT)
def _sink(a, b, c, d, e):
    return a[0, 0] + b[0, 0] + c[0, 0] + d[0, 0] + e[0, 0]


def _views_body(kind: str):
    """``body(address, size, meta)``: makes the 50 views one way and reads one value of each."""
    lines = [
        "def body(address, size, meta):",
        "    buf = carray(pointer(address), size, np.float32)",
        "    total = 0.0",
    ]
    for v in range(N_VIEWS):
        m = 4 * v
        lines.append(f"    v{v} = " + VIEW_SOURCE[kind].format(m=m, m1=m + 1, m2=m + 2, m3=m + 3, m4=m + 4))
    for g in range(0, N_VIEWS, 5):
        lines.append(f"    total += sink(v{g}, v{g + 1}, v{g + 2}, v{g + 3}, v{g + 4})")
    lines.append("    return total")
    namespace = {"carray": carray, "pointer": pointer, "view2": view2, "np": np, "sink": _sink}
    exec("\n".join(lines), namespace)
    return njit(**dict(JIT, cache=False))(namespace["body"])


def main() -> None:
    buf = np.ones(100_000, np.float32)
    meta = np.array([[i * 100, i * 100 + 64, 8, 8] for i in range(N_VIEWS)], np.int64).ravel()
    bodies = {kind: _views_body(kind) for kind in VIEW_SOURCE}

    def repeat(body, n, address, size, meta):
        total = 0.0
        for _ in range(n):
            total += body(address, size, meta)
        return total

    loops = {kind: njit(**dict(JIT, cache=False))(repeat) for kind in bodies}
    times: dict[str, list[float]] = {kind: [] for kind in bodies}
    for kind, loop in loops.items():
        loop(bodies[kind], 1, buf.ctypes.data, buf.size, meta)
    for _ in range(15):
        for kind, loop in loops.items():
            start = time.thread_time()
            loop(bodies[kind], 20_000, buf.ctypes.data, buf.size, meta)
            times[kind].append((time.thread_time() - start) / 20_000 * 1e6)
    for kind, values in times.items():
        values.sort()
        print(f"{kind:7s} us per {N_VIEWS} views: min {values[0]:.3f}  median {values[7]:.3f}")


if __name__ == "__main__":
    main()
