"""fit's options on the device (simulator): frozen layers (the optimizer updates the trainable
ranges of the device buffers only) and streamed data train as on the CPU; gradient accumulation
is refused on "cuda" with a clear message."""

import numpy as np
import pytest

import fastnn as fnn
from fastnn import backend
from fastnn.data import ArrayDataset


def _fit(device, X, y):
    model = fnn.Sequential([fnn.Dense(5, 4, activation="tanh"), fnn.Dense(4, 3)], seed=5, device=device)
    model.compile("cross_entropy", fnn.optim.AdamW(lr=0.05, weight_decay=0.1, clip_norm=0.5))
    model.freeze(0)
    initial = backend.host_copy(model.layers[0].weight)
    model.fit(X, y, epochs=2, batch_size=6, verbose=0)
    state = {k: backend.host_copy(v) for k, v in model.state_arrays().items()}
    state.update({f"opt.{k}": np.asarray(v) for k, v in model.optimizer.state_dict().items() if k != "name"})
    return model, initial, state


def test_frozen_layers_train_on_the_device_as_on_the_cpu():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((12, 5)).astype(np.float32), rng.integers(0, 3, 12)
    _, _, cpu = _fit("cpu", X, y)
    model, initial, gpu = _fit("cuda", X, y)
    np.testing.assert_array_equal(gpu["0.weight"], initial)
    assert not np.any(gpu["opt.exp_avg"][:20])  # the frozen weight's moments were never touched
    for key in cpu:
        np.testing.assert_allclose(gpu[key], cpu[key], rtol=1e-5, atol=1e-6, err_msg=key)
    with pytest.raises(ValueError, match="accumulate=2 runs on the CPU only"):
        model.fit(X, y, accumulate=2, verbose=0)


@pytest.mark.parametrize("kind", ["dataset", "callable"])
def test_streamed_data_trains_on_the_device_as_on_the_cpu(kind):
    # 12 rows in blocks of 10: the second batch of 6 spans two blocks (each simulated step costs seconds)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((12, 5)).astype(np.float32), rng.integers(0, 3, 12)
    results = []
    for device in ("cpu", "cuda"):
        model = fnn.Sequential([fnn.Dense(5, 4, activation="tanh"), fnn.Dense(4, 3)], seed=5, device=device)
        model.compile("cross_entropy", fnn.optim.Adam(lr=0.05))
        data = (
            ArrayDataset(X, y, block_rows=10)
            if kind == "dataset"
            else (lambda: ((X[i : i + 6], y[i : i + 6]) for i in range(0, len(X), 6)))
        )
        history = model.fit(data, epochs=2, batch_size=6, verbose=0)
        results.append((model.predict(X), history.history))
    (cpu_out, cpu_hist), (gpu_out, gpu_hist) = results
    np.testing.assert_allclose(gpu_out, cpu_out, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gpu_hist["loss"], cpu_hist["loss"], rtol=1e-4)
    assert gpu_hist["accuracy"] == cpu_hist["accuracy"]
