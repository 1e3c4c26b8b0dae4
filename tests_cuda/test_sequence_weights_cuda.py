"""Per-step sample weights over masked sequences on "cuda": the weighted loss runs on the host
(``SampleWeighted``), the lengths copied over with the output; the same fit as on the CPU."""

import numpy as np

import fastnn as fnn


def test_masked_temporal_weights_fit_like_the_cpu():
    rng = np.random.default_rng(0)
    lengths = np.array([4, 1, 3, 2, 4, 1])
    X = rng.standard_normal((6, 4, 2))
    valid = np.arange(4)[None, :] < lengths[:, None]
    X[~valid] = 0.0
    y = np.where(valid, rng.integers(0, 3, (6, 4)), -100)
    w = rng.uniform(0, 2, (6, 4))
    histories, params = {}, {}
    for device in ("cpu", "cuda"):
        model = fnn.Sequential(
            [fnn.Masking(0.0), fnn.Dense(2, 3)], input_shape=(4, 2), dtype="float64", seed=0, device=device
        ).compile("cross_entropy", fnn.optim.SGD(lr=0.3))
        histories[device] = model.fit(
            X,
            y,
            sample_weight=w,
            class_weight={1: 2.0},
            epochs=2,
            batch_size=4,
            shuffle=False,
            verbose=0,
            validation_data=(X, y, w),
        ).history
        params[device] = fnn.backend.to_host(model.params)
    for key, values in histories["cpu"].items():
        np.testing.assert_allclose(histories["cuda"][key], values, rtol=1e-10, err_msg=key)
    np.testing.assert_allclose(params["cuda"], params["cpu"], rtol=1e-10, atol=1e-14)
