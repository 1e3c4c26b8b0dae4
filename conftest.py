"""pytest-xdist workers each compile into their own Numba cache (tests, benchmarks, tests_cuda).

The README's test command runs the suites on one worker per core. A kernel's last bits depend on
its compile context: a caller compiled beside its freshly compiled callees can inline them (and
vectorise their ``exp``), one compiled against callees loaded from the cache links their machine
code. With one cache shared by the workers, which worker compiles a callee first varies from run
to run, and so would the bits that the suite compares exactly (a fused step against its unfused
kernels, a gradient against the NumPy formula). Each worker therefore gets its own folder,
``<cache root>/xdist/<worker>`` (the cache root: ``$NUMBA_CACHE_DIR``, else this checkout's
``.pytest_cache``), and compiles as one process would; tests in one file stay on one worker
(``--dist loadfile``), so a file's kernels compile once.
"""

import os
import sys

_WORKER = os.environ.get("PYTEST_XDIST_WORKER")

if _WORKER:
    _ROOT = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), ".pytest_cache"
    )
    _FOLDER = os.path.join(_ROOT, "xdist", _WORKER)
    os.environ["NUMBA_CACHE_DIR"] = _FOLDER
    os.environ["FASTNN_CACHE_DIR"] = os.path.join(_FOLDER, "fastnn")
    if "numba" in sys.modules:  # a plugin imported Numba before this file: re-read its settings
        from numba.core import config

        config.reload_config()
