"""Accuracy and predicted classes of every loss kind, through the loss objects, against NumPy.

cross_entropy: argmax == label. binary_cross_entropy with one output: (logit > 0) == (target > 0.5);
with k > 1 outputs (multi-label): exact match, every one of a sample's k labels right (sklearn's
``accuracy_score``). Regression losses report no accuracy.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastnn as fnn
from fastnn import losses

DTYPES = [np.float32, np.float64]
N = 41


def _accuracy(loss, output, y):
    target = loss.check_targets(y, output.shape[0], output.shape[1], output.dtype)
    return loss.correct_count(output, target) / output.shape[0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_accuracy(rng, dtype):
    loss = losses.get("cross_entropy")
    logits = rng.standard_normal((N, 4)).astype(dtype)
    logits[0] = [0.5, 2.0, 2.0, -1.0]  # a tie: the first maximum is the prediction
    labels = rng.integers(0, 4, N)
    labels[0] = 1
    want = np.mean(np.argmax(logits, axis=1) == labels)
    assert 0 < want < 1
    assert _accuracy(loss, logits, labels) == want
    classes = loss.predict_classes(logits)
    assert classes.dtype == np.int64 and classes.shape == (N,) and classes[0] == 1
    assert np.mean(classes == labels) == want


@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_cross_entropy_one_output_accuracy(rng, dtype):
    loss = losses.get("binary_cross_entropy")
    logits = rng.standard_normal((N, 1)).astype(dtype)
    targets = rng.choice([0.0, 0.2, 0.7, 1.0], N)  # soft targets: class 1 above 0.5
    want = np.mean((logits[:, 0] > 0) == (targets > 0.5))
    assert 0 < want < 1
    assert _accuracy(loss, logits, targets) == want
    classes = loss.predict_classes(logits)
    assert classes.dtype == np.int64 and classes.shape == (N,)
    assert np.mean(classes == (targets > 0.5)) == want


@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_cross_entropy_multi_label_is_exact_match(rng, dtype):
    loss = losses.get("binary_cross_entropy")
    logits = rng.standard_normal((N, 3)).astype(dtype)
    targets = (logits > 0).astype(np.float64)
    wrong = rng.random((N, 3)) < 0.15  # a few wrong labels, spread over the samples
    targets[wrong] = 1 - targets[wrong]
    exact = np.mean(np.all((logits > 0) == (targets > 0.5), axis=1))
    per_element = np.mean((logits > 0) == (targets > 0.5))
    assert 0 < exact < per_element < 1  # the two definitions differ on this data
    assert _accuracy(loss, logits, targets) == exact
    classes = loss.predict_classes(logits)
    assert classes.dtype == np.int64 and classes.shape == (N, 3)
    assert np.mean(np.all(classes == targets, axis=1)) == exact


def test_multi_label_accuracy_matches_sklearn(rng):
    metrics = pytest.importorskip("sklearn.metrics")
    loss = losses.get("binary_cross_entropy")
    logits = rng.standard_normal((N, 4))
    targets = rng.integers(0, 2, (N, 4)).astype(np.float64)
    targets[:20] = logits[:20] > 0  # some samples all right, so the accuracy is not 0
    want = metrics.accuracy_score(targets.astype(np.int64), loss.predict_classes(logits))
    assert want > 0
    assert _accuracy(loss, logits, targets) == want


@pytest.mark.parametrize("name", ["mse", "mae", "huber"])
def test_regression_losses_report_no_accuracy(rng, name):
    loss = losses.get(name)
    output = rng.standard_normal((N, 2))
    assert loss.correct_count(output, loss.check_targets(rng.standard_normal((N, 2)), N, 2, output.dtype)) is None
    with pytest.raises(TypeError, match="classification loss"):
        loss.predict_classes(output)


def test_fit_and_evaluate_report_multi_label_exact_match(rng):
    X = rng.standard_normal((N, 5)).astype(np.float32)
    model = fnn.Sequential([fnn.Dense(5, 3)], seed=0)
    model.compile(loss="binary_cross_entropy", optimizer="sgd")
    out = model.predict(X)
    Y = (out > 0).astype(np.float32)
    Y[::3, 1] = 1 - Y[::3, 1]  # one wrong label in every third sample
    want = np.mean(np.all((out > 0) == (Y > 0.5), axis=1))
    assert model.evaluate(X, Y)["accuracy"] == pytest.approx(want)
    history = model.fit(X, Y, epochs=1, batch_size=N, verbose=0)  # one batch: scored before the update
    assert history["accuracy"][0] == pytest.approx(want)
