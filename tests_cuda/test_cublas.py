"""The cuBLAS path of the CUDA dense kernels (CuPy, zero-copy), against a fake CuPy on the simulator.

Real CuPy cannot run here (no GPU, and the simulator's arrays are host memory), so
``_fake_cupy`` stands in: it wraps device arrays through ``__cuda_array_interface__`` without
copying and multiplies with NumPy. The tests check when dense.py chooses cuBLAS, which arrays it
hands to ``cupy.matmul`` (order, transposition, output written in place) and that dense
forward/backward on that path equal the CPU kernels.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from numba import cuda

import fastnn as fnn
from fastnn.kernels.cuda import dense as gpu_dense

from . import _fake_cupy
from .conftest import SIMULATOR, host
from .test_activations_dense import check_dense

pytestmark = pytest.mark.skipif(
    not SIMULATOR,
    reason="the fake CuPy reads simulated device memory as host "
    "memory; on a GPU install CuPy and the other tests run the real cuBLAS path",
)


@pytest.fixture(autouse=True)
def fresh_probe(monkeypatch):
    """Every test probes for CuPy anew (the probe is cached per process), and leaves no fake behind."""
    gpu_dense.reset_gemm_backend()
    gpu_dense.use_cublas(True)
    yield
    monkeypatch.undo()
    gpu_dense.reset_gemm_backend()
    gpu_dense.use_cublas(True)


@pytest.fixture
def fake_gpu(monkeypatch):
    """A fake CuPy that reports a GPU, and dense.py told that the simulator is off (as on a GPU)."""
    fake = _fake_cupy.install(monkeypatch)
    monkeypatch.setattr(gpu_dense, "simulator", lambda: False)
    return fake


def test_no_cupy_means_tiled(monkeypatch):
    monkeypatch.setattr(gpu_dense, "simulator", lambda: False)
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError
    assert gpu_dense.gemm_backend() == "tiled"


def test_cupy_with_a_gpu_is_chosen_automatically(fake_gpu):
    assert gpu_dense.gemm_backend() == "cublas"
    gpu_dense.use_cublas(False)
    assert gpu_dense.gemm_backend() == "tiled"
    gpu_dense.use_cublas(True)
    assert gpu_dense.gemm_backend() == "cublas"


@pytest.mark.parametrize("available", [False, RuntimeError("cudaErrorInsufficientDriver")])
def test_cupy_without_a_gpu_means_tiled(monkeypatch, available):
    fake = _fake_cupy.install(monkeypatch, available=available)
    monkeypatch.setattr(gpu_dense, "simulator", lambda: False)
    assert gpu_dense.gemm_backend() == "tiled"
    fake.available = True  # the probe is cached until reset: no per-call import or driver query
    assert gpu_dense.gemm_backend() == "tiled"
    gpu_dense.reset_gemm_backend()
    assert gpu_dense.gemm_backend() == "cublas"


def test_the_simulator_never_uses_cupy(monkeypatch):
    """Real CuPy cannot wrap the simulator's host-memory arrays, so an installed CuPy is ignored there."""
    _fake_cupy.install(monkeypatch)
    assert gpu_dense.gemm_backend() == "tiled"


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_transposes_on_cublas(fake_gpu, trans_a, trans_b, dtype, rng):
    m, k, n = 7, 5, 3
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    da, db = cuda.to_device(a), cuda.to_device(b)
    c = cuda.device_array((m, n), dtype)
    gpu_dense.gemm(trans_a, trans_b, da, db, c)
    want = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
    np.testing.assert_allclose(host(c), want, rtol=1e-5, atol=1e-5)
    assert host(c).dtype == dtype
    ptr = _fake_cupy.ptr
    assert fake_gpu.calls == [((ptr(da), trans_a, (m, k)), (ptr(db), trans_b, (k, n)), (ptr(c), False, (m, n)))]
    assert fake_gpu.host_copies == 0


CASES = [
    ("relu", np.float32, 20, 17, 18),
    ("softmax", np.float32, 9, 5, 10),
    ("identity", np.float64, 3, 19, 7),
    ("gelu", np.float64, 1, 6, 5),
    ("tanh", np.float32, 1, 3, 1),
    ("sigmoid", np.float64, 130, 3, 2),
]


@pytest.mark.parametrize("name,dtype,m,k,n", CASES)
def test_dense_on_cublas_matches_the_cpu(fake_gpu, name, dtype, m, k, n, rng):
    """Forward and backward through cupy.matmul (zero-copy, outputs in place) equal the CPU kernels."""
    d = check_dense(name, dtype, m, k, n, rng)
    p = {key: _fake_cupy.ptr(arr) for key, arr in d.items()}
    assert fake_gpu.calls == [
        ((p["x"], False, (m, k)), (p["w"], False, (k, n)), (p["z"], False, (m, n))),  # z = x @ w
        ((p["x"], True, (k, m)), (p["grad_z"], False, (m, n)), (p["grad_w"], False, (k, n))),  # x.T @ grad_z
        ((p["grad_z"], False, (m, n)), (p["w"], True, (n, k)), (p["grad_x"], False, (m, k))),  # grad_z @ w.T
    ]
    assert fake_gpu.host_copies == 0


def test_dense_on_cublas_without_grad_x(fake_gpu, rng):
    d = check_dense("relu", np.float32, 4, 3, 2, rng, need_grad_x=False)
    assert len(fake_gpu.calls) == 2 and fake_gpu.calls[-1][2][0] == _fake_cupy.ptr(d["grad_w"])
    assert not host(d["grad_x"]).any()


def test_training_steps_on_cublas_match_the_cpu(fake_gpu, rng):
    """A model on "cuda" whose GEMMs all go through the (fake) cuBLAS path trains like the CPU."""
    X = rng.standard_normal((6, 4)).astype(np.float32)
    y = rng.integers(0, 3, 6)
    models = []
    for device in ("cpu", "cuda"):
        model = fnn.Sequential([fnn.Dense(4, 5, activation="tanh"), fnn.Dense(5, 3)], seed=1, device=device)
        model.compile("cross_entropy", fnn.optim.SGD(lr=0.1))
        losses = [model.train_step(X, y) for _ in range(2)]
        models.append((model, losses))
    (cpu, cpu_losses), (gpu, gpu_losses) = models
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=1e-5)
    np.testing.assert_allclose(gpu.params.copy_to_host(), cpu.params, rtol=1e-5, atol=1e-6)
    assert len(fake_gpu.calls) == 2 * (2 + 3)  # per step: two forward GEMMs, three backward (no grad_x into X)
