"""One crossing from Python into compiled code per steady-state step of fit (issue 15 item 2):
counted with a profiler hook (tests/_crossings.py) on fused steps (FASTNN_FUSE=always)."""

from __future__ import annotations

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _config, _fused
from tests._crossings import PerStep, counting


@pytest.fixture
def fused(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_fused, "_LOADED", {})
    monkeypatch.setattr(_config, "FUSE", "always")


def _classifier(loss="cross_entropy", k=3):
    model = fnn.Sequential([fnn.Dense(3, 8, activation="tanh"), fnn.Dense(8, k)], seed=1)
    return model.compile(loss, fnn.optim.Adam(lr=0.01))


def _steps(model, X, y, **options):
    """The crossings of each step of the second of two fits (the first compiles and fuses)."""
    model.fit(X, y, epochs=1, batch_size=8, verbose=0, **options)
    with counting() as seen:
        per_step = PerStep(seen)
        model.fit(X, y, epochs=2, batch_size=8, verbose=0, callbacks=[per_step], **options)
    return per_step.steps


def _data(n=44, k=3, labels=True):
    r = np.random.default_rng(0)
    X = r.standard_normal((n, 3)).astype(np.float32)
    return X, (r.integers(0, k, n) if labels else r.standard_normal((n, k)).astype(np.float32))


WEIGHTS = np.linspace(0.5, 2.0, 44)
CASES = {
    "plain": ("cross_entropy", {}),
    "sample_weight": ("cross_entropy", {"sample_weight": WEIGHTS}),
    "class_weight": ("cross_entropy", {"class_weight": {0: 1.0, 1: 2.0, 2: 0.5}}),
    "weighted_mse": ("mse", {"sample_weight": WEIGHTS}),
    "weighted_bce": ("binary_cross_entropy", {"sample_weight": WEIGHTS}),
    "unshuffled": ("cross_entropy", {"shuffle": False}),
    "unshuffled_weighted": ("cross_entropy", {"shuffle": False, "class_weight": {0: 1.0, 1: 2.0, 2: 0.5}}),
    "accumulate": ("cross_entropy", {"accumulate": 4}),  # the group's sum and its update inside the call
    "accumulate_unshuffled_mse": ("mse", {"accumulate": 4, "shuffle": False}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_steady_step_of_fit_is_one_call_into_compiled_code(fused, case):
    loss, options = CASES[case]
    X, y = _data(labels=loss == "cross_entropy")
    if loss == "binary_cross_entropy":
        y = (y > 0).astype(np.float32)
    steps = _steps(_classifier(loss), X, y, **options)
    assert len(steps) == 12  # 2 epochs of 5 full batches and a last one of 4
    assert all(len(calls) == 1 for calls in steps), steps


def test_the_counter_sees_kernels_called_one_by_one(monkeypatch):
    monkeypatch.setattr(_config, "FUSE", "never")  # the calls of each step run from Python
    steps = _steps(_classifier(), *_data(), sample_weight=WEIGHTS)
    assert all(len(calls) > 5 and "weighted_cross_entropy" in calls for calls in steps)


def test_an_accumulating_fit_updates_on_each_groups_last_batch_inside_its_call(monkeypatch):
    monkeypatch.setattr(_config, "FUSE", "never")  # the calls of each step run from Python: counted by name
    model = _classifier()
    steps = _steps(model, *_data(), accumulate=4)
    assert all(calls.count("accumulate_gradients") == 1 and calls.count("adam_step") == 1 for calls in steps)
    assert all("grad_global_norm" in calls for calls in steps)  # the batch's norm, the group's inside the sum
    assert model.optimizer.step_count == 3 * 2  # 6 batches an epoch: groups of 4 and 2, 3 epochs
