"""compile(metrics=...) and sample weights on "cuda" (the simulator) give the CPU's history."""

from __future__ import annotations

import numpy as np

import fastnn as fnn


def test_weighted_fit_with_metrics_matches_the_cpu():
    rng = np.random.default_rng(0)
    X, y, w = rng.standard_normal((12, 4)).astype(np.float32), rng.integers(0, 3, 12), rng.uniform(0, 2, 12)
    histories = {}
    for device in ("cpu", "cuda"):
        model = fnn.Sequential([fnn.Dense(4, 3)], seed=0, device=device).compile(
            "cross_entropy", fnn.optim.SGD(lr=0.1), metrics=["f1", "auc"]
        )
        histories[device] = model.fit(
            X, y, epochs=2, batch_size=9, sample_weight=w, validation_split=0.25, verbose=0
        ).history
        assert model.loss.name == "cross_entropy"
    assert histories["cpu"].keys() == histories["cuda"].keys() and "val_f1" in histories["cpu"]
    for key, values in histories["cpu"].items():
        np.testing.assert_allclose(histories["cuda"][key], values, rtol=1e-5, err_msg=key)
