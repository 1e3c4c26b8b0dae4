"""The kernel cache is invalidated by a change to any kernel source (Numba alone watches only
the function's own file, and a stale caller of an edited callee was seen to segfault)."""

import os
import subprocess
import sys
import textwrap

import fastnn
from fastnn.kernels import _cache

SCRIPT = textwrap.dedent("""
    import numpy as np
    from fastnn.kernels.checks import all_finite
    all_finite(np.ones((2, 2)))
    print(len(all_finite.stats.cache_hits))
""")


def run(tmp_path, package_root):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=package_root)
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, check=True)
    return int(out.stdout.split()[-1])


def test_stamp_covers_every_kernel_source(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
    assert run(tmp_path, root) == 0  # compiled and written
    assert run(tmp_path, root) == 1  # loaded from the cache
    # the same cache seen with another kernel source digest must not be used
    locator_classes = _cache._numba("CacheImpl")._locator_classes
    assert locator_classes[:2] == [_cache.KernelUserProvidedCacheLocator, _cache.KernelInTreeCacheLocator]
    loc = _cache.KernelInTreeCacheLocator.from_function(
        fastnn.kernels.checks.all_finite.py_func, fastnn.kernels.checks.__file__
    )
    stamp = loc.get_source_stamp()
    assert stamp[1] == _cache._DIGEST and len(_cache._DIGEST) == 32
    assert _cache.KernelInTreeCacheLocator.from_function(run, __file__) is None  # not a kernel file
