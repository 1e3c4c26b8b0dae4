"""``validation_split`` holds out Keras' rows: the first ``floor(n * (1 - split))`` samples train
(``keras.src.trainers.data_adapters.data_adapter_utils.train_validation_split``), for arrays and
``fastnn.data.ArrayDataset`` alike; an empty part is a clear error."""

import math

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _fit_options as options


def _keras_split_at(n, validation_split):
    return int(math.floor(n * (1.0 - validation_split)))  # Keras' formula


@pytest.mark.parametrize(
    "n, split, held_out", [(100, 0.7, 70), (10, 0.25, 3), (23, 0.2, 5), (10, 0.05, 1), (7, 0.5, 4), (3, 0.3, 1)]
)
def test_split_point_is_keras_floor(n, split, held_out):
    at = options.split_point(split, n)
    assert at == _keras_split_at(n, split) and n - at == held_out


def _model():
    model = fnn.Sequential([fnn.Dense(4, 2)], seed=0, dtype="float64")
    return model.compile("cross_entropy", fnn.optim.SGD(lr=0.0))  # lr 0: val_loss is the held-out rows' loss


@pytest.mark.parametrize("n, split, held_out", [(100, 0.7, 70), (10, 0.25, 3)])
def test_fit_holds_out_keras_rows_for_arrays_and_datasets(n, split, held_out):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((n, 4)), rng.integers(0, 2, n)
    model = _model()
    expected = model.evaluate(X[n - held_out :], y[n - held_out :])["loss"]
    assert expected != pytest.approx(model.evaluate(X[n - held_out - 1 :], y[n - held_out - 1 :])["loss"], rel=1e-9)
    by_arrays = model.fit(X, y, epochs=1, batch_size=8, validation_split=split, verbose=0)
    dataset = fnn.data.ArrayDataset(X, y)
    by_dataset = _model().fit(dataset, epochs=1, batch_size=8, validation_split=split, verbose=0)
    assert by_arrays.history["val_loss"] == [pytest.approx(expected, rel=1e-12)]
    assert by_dataset.history["val_loss"] == [pytest.approx(expected, rel=1e-12)]


@pytest.mark.parametrize(
    "n, split, part", [(10, 0.95, "no training"), (1, 0.5, "no training"), (10, 1e-17, "no validation")]
)
def test_an_empty_part_is_a_clear_error_naming_validation_split(n, split, part):
    X, y = np.zeros((n, 4)), np.zeros(n, np.int64)
    with pytest.raises(ValueError, match=f"validation_split={split} of {n} samples leaves {part} samples"):
        _model().fit(X, y, validation_split=split, verbose=0)
    with pytest.raises(ValueError, match=f"validation_split={split} of {n} samples leaves {part} samples"):
        _model().fit(fnn.data.ArrayDataset(X, y), validation_split=split, verbose=0)


@pytest.mark.parametrize(
    "shuffle, pattern",
    [
        ("batch", "shuffle='batch'.*ArrayDataset"),
        (None, "shuffle must be True or False"),
        ("no", "shuffle must be True or False"),
    ],
)
def test_shuffle_must_be_a_bool(shuffle, pattern):
    X, y = np.ones((6, 4)), np.arange(6) % 2
    model = _model()
    with pytest.raises(TypeError, match=pattern):  # not silently taken as True ("batch", "no") or False (None)
        model.fit(X, y, shuffle=shuffle, verbose=0)
    assert model.epochs_done == 0
    model.fit(X, y, shuffle=np.bool_(False), verbose=0)
    assert model.epochs_done == 1
