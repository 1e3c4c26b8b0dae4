"""Losses over positions: an output (batch, *positions, k) is scored row by row, one target per
position (per-step classification of sequences, as Keras' sparse categorical cross-entropy on
(batch, time, classes))."""

import numpy as np
import pytest

import fastnn as fnn
from fastnn import optim
from tests import reference as ref


def _model(loss, k=3, dtype="float64"):
    model = fnn.Sequential([fnn.Dense(4, k)], input_shape=(5, 4), dtype=dtype, seed=1)
    return model.compile(loss, optim.SGD(lr=0.1))


def test_cross_entropy_over_positions_is_the_mean_over_all_rows():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((6, 5, 4)), rng.integers(0, 3, (6, 5))
    model = _model("cross_entropy")
    loss, grads = model.loss_and_grads(X, y)
    logits = X.reshape(-1, 4) @ model.layers[0].weight + model.layers[0].bias
    want, grad_logits = ref.cross_entropy(logits, y.reshape(-1))
    assert loss == pytest.approx(want, rel=1e-12)
    np.testing.assert_allclose(grads["0.weight"], X.reshape(-1, 4).T @ grad_logits, rtol=1e-10, atol=1e-12)


def test_accuracy_predictions_and_probabilities_are_per_position():
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((7, 5, 4)), rng.integers(0, 3, (7, 5))
    model = _model("cross_entropy")
    labels = model.predict_classes(X)
    assert labels.shape == (7, 5)
    probs = model.predict_proba(X)
    assert probs.shape == (7, 5, 3)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0)
    np.testing.assert_array_equal(labels, probs.argmax(axis=-1))
    assert model.evaluate(X, y)["accuracy"] == pytest.approx(np.mean(labels == y))
    history = model.fit(X, y, epochs=2, batch_size=3, verbose=0, shuffle=False)
    assert 0 <= history.history["accuracy"][-1] <= 1


def test_a_sequence_tagger_learns_per_step_labels():
    """The label of each step is the sign of its first feature: learnable per position."""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((64, 5, 4)).astype(np.float32)
    y = (X[..., 0] > 0).astype(np.int64)
    model = fnn.Sequential([fnn.Dense(4, 8, activation="tanh"), fnn.Dense(8, 2)], input_shape=(5, 4), seed=0)
    model.compile("cross_entropy", optim.Adam(lr=0.05))
    before = model.evaluate(X, y)["loss"]
    model.fit(X, y, epochs=15, batch_size=16, verbose=0)
    after = model.evaluate(X, y)
    assert after["loss"] < 0.5 * before and after["accuracy"] > 0.9


@pytest.mark.parametrize("k, y_shape", [(2, (6, 5, 2)), (1, (6, 5))])
def test_regression_over_positions(k, y_shape):
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((6, 5, 4)), rng.standard_normal(y_shape)
    model = _model("mse", k=k)
    loss, _ = model.loss_and_grads(X, y)
    out = model.predict(X)
    assert loss == pytest.approx(np.mean((out - y.reshape(out.shape)) ** 2), rel=1e-12)
    assert "accuracy" not in model.evaluate(X, y)


def test_targets_must_give_one_target_per_position():
    model = _model("cross_entropy")
    X = np.zeros((4, 5, 4))
    with pytest.raises(ValueError, match=r"y must start with \(4, 5\): a label for each of the 5 positions"):
        model.train_step(X, np.zeros(4, np.int64))
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        model.train_step(X, np.full((4, 5), 3))
