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


def _tracked(k, metrics, output, target, inside):
    """Results of ``metrics`` over (output, target) streamed in batches of 4: through the metrics'
    Python updates, or through the accumulator kernels fit's step calls run (``inside``)."""
    from fastnn.metrics import Tracker

    model = fnn.Sequential([fnn.Dense(3, k)], seed=0, dtype="float64").compile("binary_cross_entropy", "sgd")
    tracker = Tracker(model, fnn.metrics.check_metrics(metrics, model.loss))
    if inside:
        assert tracker.accumulate_inside(output.shape[0])
    for lo in range(0, output.shape[0], 4):
        tracker.update(output[lo : lo + 4], target[lo : lo + 4])
    return tracker.results()


@pytest.mark.parametrize("inside", [False, True], ids=["python", "kernels"])
@pytest.mark.parametrize("k", [1, 2])
def test_a_target_of_one_half_and_a_logit_of_zero_are_the_negative_class(k, inside):
    """binary_cross_entropy's classes: a target is class 1 only above 0.5 and a logit only above 0,
    so exactly 0.5 and exactly 0 are class 0 in the accuracy count, the metrics' Python updates and
    their step-call kernels alike (every row here is then right)."""
    logits = np.repeat(np.array([[-1.0], [-1.0], [2.0], [-2.0], [0.0], [3.0]]), k, axis=1)
    targets = np.repeat(np.array([[0.5], [0.5], [1.0], [0.0], [0.0], [0.7]]), k, axis=1)
    loss = losses.get("binary_cross_entropy")
    assert _accuracy(loss, logits, targets) == 1.0
    got = _tracked(k, ["binary_accuracy", "recall", "precision"], logits, targets, inside)
    assert got == {"binary_accuracy": 1.0, "recall": 1.0, "precision": 1.0}


@pytest.mark.parametrize("inside", [False, True], ids=["python", "kernels"])
def test_multi_label_macro_and_weighted_averages_count_every_label_like_sklearn(rng, inside):
    """Multi-label averages are over every label, one never true nor predicted included (it scores
    0, as scikit-learn's zero_division=0), and "weighted" weighs each label by its support."""
    skm = pytest.importorskip("sklearn.metrics")
    Y = (rng.uniform(size=(30, 3)) < np.array([0.5, 0.2, 0.0])).astype(np.float64)  # label 2 never true
    out = rng.standard_normal((30, 3)) + 2 * Y - 0.5
    out[:, 2] = -1.0  # ... nor predicted
    pred = (out > 0).astype(int)
    metrics = [fnn.metrics.F1(average=a, name=a) for a in ("macro", "weighted", "micro")]
    got = _tracked(3, [*metrics, "precision", "recall"], out, Y, inside)
    for average in ("macro", "weighted", "micro"):
        assert got[average] == pytest.approx(skm.f1_score(Y, pred, average=average, zero_division=0), rel=1e-12)
    assert got["precision"] == pytest.approx(skm.precision_score(Y, pred, average="macro", zero_division=0))
    assert got["recall"] == pytest.approx(skm.recall_score(Y, pred, average="macro", zero_division=0))
