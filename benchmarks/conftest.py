"""pytest-benchmark setup for benchmarks/.

    pytest benchmarks --benchmark-disable              # CI: each benchmark body runs once, as a test
    pytest benchmarks --benchmark-only --benchmark-group-by=group
    FASTNN_BENCH_LARGE=1 pytest benchmarks ...          # adds the heavy configs (wide)
    FASTNN_BENCH_THREADS=1 pytest benchmarks ...        # fastnn, torch and NumPy's BLAS at 1 thread

Heavy configs carry the ``heavy`` mark and are skipped unless FASTNN_BENCH_LARGE=1.
"""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

LARGE = os.environ.get("FASTNN_BENCH_LARGE") == "1"


def pytest_configure(config):
    config.addinivalue_line("markers", "heavy: slow benchmark, run only with FASTNN_BENCH_LARGE=1")


def pytest_collection_modifyitems(config, items):
    if LARGE:
        return
    skip = pytest.mark.skip(reason="heavy config: set FASTNN_BENCH_LARGE=1 to run it")
    for item in items:
        if "heavy" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def bench_threads():
    """Threads for fastnn, torch and NumPy's BLAS: FASTNN_BENCH_THREADS, else unchanged."""
    n = os.environ.get("FASTNN_BENCH_THREADS")
    if n:
        from configs import set_threads, torch_or_none

        torch_or_none()  # import torch first so that its pool is set too
        set_threads(int(n))
    return n
