"""A fused step calls its kernels by stable C names (kernels._step_calls): same bits as the kernels
called one by one, compiled or loaded from the cache, and a clear error for a name it cannot bind."""

import os
import subprocess
import sys

import pytest

from fastnn.kernels import _lazy_ir, _step_calls

_FIT = """
import hashlib, sys
import numpy as np
from numba.core import event
import fastnn as fnn
from fastnn import _config
from fastnn.kernels import _lazy_ir, _step_calls

_config.FUSE = sys.argv[1]
compiled = []


class Steps(event.Listener):
    def on_start(self, ev):
        compiled.append(ev.data["dispatcher"].py_func.__module__)

    def on_end(self, ev):
        pass


event.register("numba:compile", Steps())
rng = np.random.default_rng(0)
X, y = rng.random((96, 7)).astype(np.float32), rng.integers(0, 3, 96)
model = fnn.Sequential(
    [fnn.Dense(7, 16), fnn.BatchNorm1d(16), fnn.ReLU(), fnn.Dropout(0.25), fnn.Dense(16, 3)], seed=1
)
model.compile(optimizer="adam", loss="cross_entropy")
model.fit(X, y, epochs=3, batch_size=32, verbose=0)
steps = sum(module.startswith("fastnn_step_") for module in compiled)
print(hashlib.sha256(model.params.tobytes()).hexdigest(), steps, len(_step_calls._bound))
"""


def _fit(tmp_path, fuse):
    # the fused steps' cache folder of its own (the step compiles in the first fused run, loads in the
    # second); the kernels come from the suite's cache, as in any process
    env = {**os.environ, "FASTNN_CACHE_DIR": str(tmp_path / "fastnn")}
    run = subprocess.run([sys.executable, "-c", _FIT, fuse], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    digest, steps, bound = run.stdout.split()
    return digest, int(steps), int(bound)


def test_a_fused_step_calls_its_kernels_by_name_compiled_and_cached_with_the_unfused_bits(tmp_path):
    unfused, steps, bound = _fit(tmp_path, "never")
    assert steps == 0 and bound == 0
    compiled = _fit(tmp_path, "always")
    assert compiled[1] >= 1 and compiled[2] >= 5  # the step compiled; dense, batch norm, loss, Adam by name
    loaded = _fit(tmp_path, "always")
    assert loaded[1] == 0 and loaded[2] == compiled[2]  # loaded from the cache, every name bound again
    assert compiled[0] == loaded[0] == unfused


def test_stable_names_tell_kernels_and_types_apart():
    from numba import types

    f32 = (types.Array(types.float32, 2, "C"),)
    f64 = (types.Array(types.float64, 2, "C"),)
    name = _step_calls.stable_name("fastnn.kernels.dense", "dense_forward", f32, types.none)
    assert name.startswith(_step_calls.PREFIX)
    assert name == _step_calls.stable_name("fastnn.kernels.dense", "dense_forward", f32, types.none)
    assert name != _step_calls.stable_name("fastnn.kernels.dense", "dense_forward", f64, types.none)
    assert name != _step_calls.stable_name("fastnn.kernels.dense", "dense_backward", f32, types.none)
    assert name != _step_calls.stable_name("fastnn.kernels.dense", "dense_forward", f32, types.float32)


def test_a_name_it_cannot_bind_is_a_clear_error():
    import pickle

    from numba import types

    with pytest.raises(RuntimeError, match="does not describe"):
        _step_calls.ensure(_step_calls.PREFIX + "0" * 32)
    argtypes = (types.Array(types.float64, 1, "C"), types.float64)
    gone = _step_calls.PREFIX + "1" * 32
    _step_calls.remember(gone, ("fastnn.kernels.checks", "no_such_kernel", pickle.dumps(argtypes), "none"))
    with pytest.raises(RuntimeError, match="not a kernel of this version"):
        _step_calls.ensure(gone)
    finite = (types.Array(types.float64, 2, "C"),)  # all_finite(x) returns a boolean
    other = _step_calls.PREFIX + "2" * 32
    _step_calls.remember(other, ("fastnn.kernels.checks", "all_finite", pickle.dumps(finite), "float64"))
    with pytest.raises(RuntimeError, match="returns bool.*Delete fastnn's cache folder"):
        _step_calls.ensure(other)
    changed = _step_calls.PREFIX + "3" * 32
    _step_calls.remember(changed, ("fastnn.kernels.checks", "all_finite", pickle.dumps(argtypes), "bool"))
    with pytest.raises(RuntimeError, match="arguments it no longer takes"):
        _step_calls.ensure(changed)


def test_the_step_prefix_is_the_fused_steps_module_prefix():
    from fastnn import _compiling

    assert _lazy_ir.STEP_PREFIX == _compiling.FUSED_STEP_PREFIX
    assert _lazy_ir.STEP_PREFIX in _lazy_ir.OWN_PREFIXES
