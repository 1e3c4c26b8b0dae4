"""CUDA activations and dense layer against their CPU twins."""

from __future__ import annotations

import numpy as np
import pytest
from numba import cuda

from fastnn import backend
from fastnn.kernels import activations as cpu_act
from fastnn.kernels import dense as cpu_dense
from fastnn.kernels.cuda import activations as gpu_act
from fastnn.kernels.cuda import dense as gpu_dense

from .conftest import f64, host, to_device, tol

NAMES = list(cpu_act.ACTIVATIONS)


def layer_forward(act, dense, x, w, b, z, y, code, alpha):
    """The Dense layer's forward calls on one backend (act/dense: its kernel modules): softmax
    rows run after the dense kernel, called with identity."""
    if code >= cpu_act.ROWWISE_CODES:
        dense.dense_forward(x, w, b, z, z, cpu_act.IDENTITY, alpha)
        act.activation_forward(z, y, code, alpha)
    else:
        dense.dense_forward(x, w, b, z, y, code, alpha)


def layer_backward(act, dense, x, w, z, y, grad_y, grad_z, *grads_and_scratch, code, alpha, need_grad_x):
    """The Dense layer's backward calls (``grads_and_scratch``: grad_x, grad_w, grad_b, partial_b)."""
    if code >= cpu_act.ROWWISE_CODES:
        act.activation_backward(z, y, grad_y, grad_z, code, alpha)
        grad_y, code = grad_z, cpu_act.IDENTITY
    dense.dense_backward(x, w, z, y, grad_y, grad_z, *grads_and_scratch, code, alpha, need_grad_x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", NAMES)
def test_activation_forward_backward(name, dtype, rng):
    code, alpha, _ = cpu_act.ACTIVATIONS[name]
    x = (rng.standard_normal((7, 13)) * 2).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    x64, g64 = f64(x, g)
    y, gx = np.empty_like(x64), np.empty_like(x64)
    cpu_act.activation_forward(x64, y, code, alpha)
    cpu_act.activation_backward(x64, y, g64, gx, code, alpha)
    dx, dy_cpu, dg = to_device(x, y.astype(dtype), g)
    dy = cuda.device_array_like(x)
    dgx = cuda.device_array_like(x)
    gpu_act.activation_forward(dx, dy, code, alpha)
    gpu_act.activation_backward(dx, dy_cpu, dg, dgx, code, alpha)
    rtol, atol = tol(dtype)
    for got, want in ((host(dy), y), (host(dgx), gx)):
        assert got.dtype == x.dtype
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


CASES = [
    ("relu", np.float32, 20, 17, 18),
    ("softmax", np.float32, 9, 5, 10),
    ("identity", np.float64, 3, 19, 7),
    ("gelu", np.float64, 1, 6, 5),
]


@pytest.mark.parametrize("name,dtype,m,k,n", CASES)
def test_dense_forward_backward(name, dtype, m, k, n, rng):
    check_dense(name, dtype, m, k, n, rng)


def check_dense(name, dtype, m, k, n, rng, need_grad_x=True) -> dict:
    """Dense forward and backward of (m, k) @ (k, n) on the device against the float64 CPU kernels.

    Returns the device arrays by their CPU kernel argument names (x, w, z, grad_w ...).
    """
    code, alpha, _ = cpu_act.ACTIVATIONS[name]
    x = rng.standard_normal((m, k)).astype(dtype)
    w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(dtype)
    b = rng.standard_normal(n).astype(dtype)
    x64, w64, b64 = f64(x, w, b)
    z = np.empty((m, n))
    y = z if name == "identity" else np.empty((m, n))
    layer_forward(cpu_act, cpu_dense, x64, w64, b64, z, y, code, alpha)
    dx, dw, db = to_device(x, w, b)
    dz = cuda.device_array((m, n), dtype)
    dy = dz if name == "identity" else cuda.device_array((m, n), dtype)
    layer_forward(gpu_act, gpu_dense, dx, dw, db, dz, dy, code, alpha)
    rtol, atol = tol(dtype)
    np.testing.assert_allclose(host(dz), z, rtol=rtol, atol=atol * 10)
    np.testing.assert_allclose(host(dy), y, rtol=rtol, atol=atol * 10)
    assert host(dy).dtype == dtype

    gy = rng.standard_normal((m, n)).astype(dtype)
    (gy64,) = f64(gy)
    gz = gy64.copy() if name == "identity" else np.empty_like(gy64)
    gx, gw, gb = np.zeros_like(x64), np.empty_like(w64), np.empty_like(b64)
    pb = np.empty((-(-m // 64), n))
    options = {"code": code, "alpha": alpha, "need_grad_x": need_grad_x}
    layer_backward(cpu_act, cpu_dense, x64, w64, z, y, gy64, gz, gx, gw, gb, pb, **options)
    dgy = cuda.to_device(gy)
    dgz = dgy if name == "identity" else cuda.device_array_like(gy)
    dgx = cuda.to_device(np.zeros(gx.shape, dtype))
    dgw, dgb, dpb = (cuda.device_array(a.shape, dtype) for a in (gw, gb, pb))
    layer_backward(gpu_act, gpu_dense, dx, dw, dz, dy, dgy, dgz, dgx, dgw, dgb, dpb, **options)
    for got, want in ((dgz, gz), (dgx, gx), (dgw, gw), (dgb, gb)):
        np.testing.assert_allclose(host(got), want, rtol=rtol, atol=atol * 10)
    return {
        "x": dx,
        "w": dw,
        "b": db,
        "z": dz,
        "y": dy,
        "grad_y": dgy,
        "grad_z": dgz,
        "grad_x": dgx,
        "grad_w": dgw,
        "grad_b": dgb,
    }


def test_dense_backward_many_chunks_and_no_grad_x(rng):
    """Batch over several REDUCTION_CHUNK_ROWS chunks (bias partials combined in order); grad_x skipped."""
    m, k, n = 130, 3, 4
    code = cpu_act.ACTIVATIONS["tanh"][0]
    x, w, b = (rng.standard_normal(s) for s in ((m, k), (k, n), (n,)))
    z, y = np.empty((m, n)), np.empty((m, n))
    cpu_dense.dense_forward(x, w, b, z, y, code, 0.0)
    gy = rng.standard_normal((m, n))
    gz, gx, gw, gb, pb = np.empty((m, n)), np.zeros((m, k)), np.empty((k, n)), np.empty(n), np.empty((3, n))
    cpu_dense.dense_backward(x, w, z, y, gy, gz, gx, gw, gb, pb, code, 0.0, False)
    dx, dw, dz, dy, dgy = to_device(x, w, z, y, gy)
    dgz, dgw, dgb, dpb = (cuda.device_array_like(a) for a in (gz, gw, gb, pb))
    dgx = cuda.to_device(np.zeros((m, k)))
    gpu_dense.dense_backward(dx, dw, dz, dy, dgy, dgz, dgx, dgw, dgb, dpb, code, 0.0, False)
    np.testing.assert_allclose(host(dgb), gb, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(host(dgw), gw, rtol=1e-12, atol=1e-12)
    assert not host(dgx).any()


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_dense_refuses_rowwise_codes_as_the_cpu_kernel(name, rng):
    code = cpu_act.ACTIVATIONS[name][0]
    dx, dw, db, dz = to_device(*(rng.standard_normal(s) for s in ((3, 2), (2, 4), (4,), (3, 4))))
    with pytest.raises(ValueError, match="activation_forward"):
        gpu_dense.dense_forward(dx, dw, db, dz, dz, code, 0.0)
    grads = to_device(np.zeros((3, 2)), np.zeros((2, 4)), np.zeros(4), np.zeros((1, 4)))
    with pytest.raises(ValueError, match="activation_backward"):
        gpu_dense.dense_backward(dx, dw, dz, dz, dz, dz, *grads, code, 0.0, True)


def test_gemm_transposes(rng):
    a = rng.standard_normal((5, 17)).astype(np.float32)
    b = rng.standard_normal((18, 5)).astype(np.float32)
    c = cuda.device_array((17, 18), np.float32)
    gpu_dense.gemm(True, True, cuda.to_device(a), cuda.to_device(b), c)
    np.testing.assert_allclose(host(c), a.T.astype(np.float64) @ b.T.astype(np.float64), rtol=1e-5, atol=1e-5)
    if backend.cuda_simulator():
        assert gpu_dense.gemm_backend() == "tiled"  # the simulator never uses cuBLAS
