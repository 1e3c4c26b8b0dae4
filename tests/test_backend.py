"""fastnn.backend on a machine without a GPU: clear errors for device="cuda", CPU kernel namespace.

Runs in the normal CPU test process (no CUDA simulator): asking for CUDA must raise one
RuntimeError that says what is missing and how to install the extra, never a Numba traceback.
"""

from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pytest

import fastnn as fnn
from fastnn import backend
from fastnn.kernels import dense as dense_kernels
from fastnn.kernels import elementwise as elementwise_kernels
from fastnn.kernels import losses as loss_kernels
from fastnn.kernels import optim as optim_kernels

needs_no_cuda = pytest.mark.skipif(
    backend.cuda_available(), reason="CUDA (or the simulator) is available in this process"
)


def _layers():
    return [fnn.Dense(3, 4, activation="relu"), fnn.Dense(4, 2)]


@needs_no_cuda
def test_sequential_on_cuda_without_gpu_raises_a_clear_error():
    with pytest.raises(RuntimeError, match=r'device="cuda" is not available') as info:
        fnn.Sequential(_layers(), device="cuda")
    message = str(info.value)
    assert 'pip install "fastnn[cuda]"' in message
    assert any(word in message for word in ("driver", "numba-cuda", "no GPU"))


@needs_no_cuda
def test_to_cuda_and_load_on_cuda_raise_the_same_error(tmp_path):
    model = fnn.Sequential(_layers())
    with pytest.raises(RuntimeError, match=r"fastnn\[cuda\]"):
        model.to("cuda")
    assert model.device == "cpu"
    path = tmp_path / "m.safetensors"
    model.save(path)
    with pytest.raises(RuntimeError, match=r"fastnn\[cuda\]"):
        fnn.load(path, device="cuda")


def test_moving_the_model_from_a_fit_callback_is_refused_before_the_device_check():
    """A fit keeps its batch source and step plans on the device it started on: model.to(another
    device) from one of its callbacks is refused, saying to move before or after fit (on "cuda"
    it crashed in a step, or counted accuracy 0 after an epoch's move)."""

    class MoveAfterFirstBatch(fnn.callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            self.model.to("cuda")

    X, y = np.random.default_rng(0).standard_normal((6, 3)), np.array([0, 1, 0, 1, 0, 1])
    model = fnn.Sequential(_layers(), seed=0).compile("cross_entropy", "sgd")
    with pytest.raises(RuntimeError, match=r"model.to\('cuda'\) was called while this model trains on 'cpu'"):
        model.fit(X, y, batch_size=3, callbacks=[MoveAfterFirstBatch()], verbose=0)
    assert model.device == "cpu" and model.optimizer.step_count == 1
    assert model.to("cpu") is model  # outside fit, to() works as before


def test_require_cuda_names_a_missing_numba_cuda(monkeypatch):
    import numba

    monkeypatch.setattr(numba.config, "ENABLE_CUDASIM", 0)
    real_find_spec = backend.importlib.util.find_spec
    monkeypatch.setattr(
        backend.importlib.util, "find_spec", lambda name, *a: None if name == "numba_cuda" else real_find_spec(name, *a)
    )
    assert not backend.cuda_available()
    with pytest.raises(RuntimeError, match=r"numba-cuda package is not installed.*fastnn\[cuda\]"):
        backend.require_cuda()


def test_require_cuda_names_a_missing_gpu(monkeypatch):
    import numba
    from numba import cuda
    from numba.cuda.cudadrv import driver

    monkeypatch.setattr(numba.config, "ENABLE_CUDASIM", 0)
    monkeypatch.setattr(driver, "driver", types.SimpleNamespace(is_available=True))
    monkeypatch.setattr(cuda, "gpus", [])
    with pytest.raises(RuntimeError, match=r"reports no GPU.*fastnn\[cuda\]"):
        backend.require_cuda()


@needs_no_cuda
def test_require_cuda_names_a_missing_driver():
    with pytest.raises(RuntimeError, match=r"driver"):
        backend.require_cuda()


def test_unknown_device_is_a_value_error():
    with pytest.raises(ValueError, match="device"):
        fnn.Sequential(_layers(), device="tpu")
    with pytest.raises(ValueError, match="device"):
        fnn.Sequential(_layers()).to("gpu")


def test_importing_fastnn_does_not_import_numba_cuda():
    code = (
        "import sys, fastnn; m = fastnn.Sequential([fastnn.Dense(2, 2)]); m.to('cpu'); "
        "sys.exit('numba.cuda' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_cpu_namespace_holds_the_cpu_kernels():
    cpu = backend.kernels("cpu")
    assert cpu is backend.kernels("cpu")
    assert cpu.device == "cpu"
    assert {"dense", "conv", "recurrent", "attention", "optim"} <= set(backend.kernel_names())
    for names, cuda_only in backend.kernel_names().values():
        for name in names:
            assert callable(getattr(cpu, name)), name
        for name in cuda_only:
            assert not hasattr(cpu, name), name
    assert cpu.dense_forward is dense_kernels.dense_forward
    assert cpu.adam_update is optim_kernels.adam_update
    assert cpu.cross_entropy_forward_backward is loss_kernels.cross_entropy_forward_backward
    assert cpu.add is elementwise_kernels.add  # a kernel, so Residual's calls can be fused


def test_cpu_step_plan_calls_the_kernels_directly():
    """No dispatch layer inside a step: the plan holds the CPU kernel functions themselves."""
    model = fnn.Sequential(_layers(), seed=1).compile("cross_entropy", "adam")
    X = np.ones((4, 3), np.float32)
    model.train_step(X, np.array([0, 1, 0, 1]))
    plan = model.step_plan(4)
    assert [fn for fn, _ in plan.forward] == [dense_kernels.dense_forward] * 2
    assert plan.loss_fn is loss_kernels.cross_entropy_forward_backward
    assert model.device == "cpu" and model.to("cpu") is model
    assert model.optimizer.device == "cpu"


def test_host_helpers():
    a = np.arange(6.0).reshape(2, 3)
    assert backend.to_host(a) is a
    assert backend.to_device(a, "cpu") is a
    copy = backend.host_copy(a)
    assert copy is not a and np.array_equal(copy, a)
    dst = np.zeros((2, 3), np.float32)
    backend.copy_into(dst, a)
    assert np.array_equal(dst, a)
    z = backend.zeros((2, 2), np.float32, "cpu")
    assert z.dtype == np.float32 and not z.any()
    assert backend.device_of(a) == "cpu"


def test_every_kernel_the_layers_call_is_in_a_device_api():
    """A module that loses its DEVICE_API line would leave the layers without their kernels."""
    expected = {
        "activations",
        "attention",
        "batchnorm",
        "conv",
        "dense",
        "dropout",
        "elementwise",
        "embedding",
        "layernorm",
        "layout",
        "losses",
        "masking",
        "optim",
        "pooling",
        "recurrent",
        "sequence",
        "sparse_update",
    }
    assert set(backend.kernel_names()) == expected
