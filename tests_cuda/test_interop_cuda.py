"""Interop from a model on "cuda": ONNX export and to_torch read its parameters and running
statistics from the device and give the CPU model's outputs."""

import numpy as np
import pytest

import fastnn as fnn


def test_cuda_model_exports_like_its_cpu_copy(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch = pytest.importorskip("torch")
    model = fnn.Sequential(
        [fnn.Conv1d(2, 3, 2), fnn.BatchNorm1d(3), fnn.Flatten(), fnn.Dense(12, 2)], input_shape=(2, 5), seed=0
    ).eval()
    model.layers[1].running_mean[...] = 0.3
    x = np.random.default_rng(0).standard_normal((3, 2, 5)).astype(np.float32)
    want = model.predict(x)
    model.to("cuda")
    model.export_onnx(tmp_path / "m.onnx")
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        got = model.to_torch()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
