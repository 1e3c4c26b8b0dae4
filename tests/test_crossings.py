"""One crossing from Python into compiled code per steady-state step of fit (issue 15 item 2):
counted with a profiler hook (tests/_crossings.py) on fused steps (FASTNN_FUSE=always), the built-in
metrics accumulated inside that call too (no batch read back in Python)."""

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


def _classifier(loss="cross_entropy", k=3, metrics=None):
    model = fnn.Sequential([fnn.Dense(3, 8, activation="tanh"), fnn.Dense(8, k)], seed=1)
    return model.compile(loss, fnn.optim.Adam(lr=0.01), metrics=metrics)


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


CLASS_METRICS = ["accuracy", "f1", "precision", "recall", "auc"]
METRIC_CASES = {
    "multiclass": ("cross_entropy", [*CLASS_METRICS, "top_k_accuracy"], {}),
    "multiclass_unshuffled_weighted": ("cross_entropy", CLASS_METRICS, {"shuffle": False, "sample_weight": WEIGHTS}),
    "multilabel": ("binary_cross_entropy", [*CLASS_METRICS, "binary_accuracy"], {"sample_weight": WEIGHTS}),
    "regression": ("mse", ["mae", "mse", "rmse", "r2"], {}),
    "regression_unshuffled": ("mse", ["mae", "r2"], {"shuffle": False}),
}


@pytest.mark.parametrize("case", list(METRIC_CASES))
def test_metrics_accumulate_inside_the_one_call(fused, monkeypatch, case):
    loss, metrics, options = METRIC_CASES[case]
    X, y = _data(labels=loss == "cross_entropy")
    if loss == "binary_cross_entropy":
        y = (y > 0).astype(np.float32)
    model = _classifier(loss, metrics=metrics)
    model.fit(X, y, epochs=1, batch_size=8, verbose=0, **options)  # compiles and fuses
    monkeypatch.setattr(fnn.metrics.Batch, "__init__", lambda *a: pytest.fail("a batch read back in Python"))
    steps = _steps(model, X, y, **options)
    assert len(steps) == 12 and all(len(calls) == 1 for calls in steps), steps


def test_a_function_metric_reads_each_batch_back_in_python(fused, monkeypatch):
    """A user's callable stays in Python (a crossing back per step); the built-in ones beside it
    stay inside the call."""
    seen = []
    original = fnn.metrics.FunctionMetric.update
    monkeypatch.setattr(fnn.metrics.FunctionMetric, "update", lambda self, b: seen.append(b) or original(self, b))
    monkeypatch.setattr(fnn.metrics.F1, "update", lambda *a: pytest.fail("f1 updated in Python"))
    _steps(_classifier(metrics=["f1", lambda y_true, y_pred: float(len(y_true))]), *_data())
    assert len(seen) == 6 + 12  # the first fit's epoch, then the counted fit's two


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


def test_train_steps_fast_lane_is_one_call_for_a_small_float_batch(fused):
    """A small batch of float inputs and targets is checked inside the step's own call (its loss NaN,
    the update not applied, when the batch is not finite); a batch of labels is checked in Python
    (the inputs, then the labels' range by the loss: two calls more)."""
    r = np.random.default_rng(0)
    X = r.standard_normal((8, 3)).astype(np.float32)
    for loss, y, calls in (
        ("mse", r.standard_normal((8, 3)).astype(np.float32), 1),
        ("cross_entropy", r.integers(0, 3, 8), 3),
    ):
        model = _classifier(loss)
        model.train_step(X, y)
        model.train_step(X, y)
        with counting() as seen:
            model.train_step(X, y)
        assert len(seen) == calls, seen
