"""A BatchNorm frozen when fit starts (inference mode: a last batch of one is fine) and unfrozen by a
callback: from then on fit skips the last batch of one as a fit with the layer trainable from the
start does, instead of meeting BatchNorm's error mid-fit (arrays, datasets, accumulate, an unfreeze
in the middle of an epoch); freezing it again trains on every sample again."""

import warnings

import numpy as np
import pytest

import fastnn as fnn
from fastnn.data import ArrayDataset


def _data(n=41, seed=0):  # batches of 8: a last batch of one
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5))
    return X, (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1)


def _model():
    layers = [fnn.Dense(5, 8, bias=False), fnn.BatchNorm1d(8), fnn.ReLU(), fnn.Dense(8, 3)]
    model = fnn.Sequential(layers, dtype="float64", seed=3)
    model.layers[1].running_mean[...] = np.linspace(-0.5, 0.5, 8)
    return model.compile("cross_entropy", fnn.optim.SGD(lr=0.1, momentum=0.9)).freeze(1)


class Unfreeze(fnn.callbacks.Callback):
    """model.unfreeze() at the end of epoch ``epoch``, or at the end of its batch ``batch``."""

    def __init__(self, epoch=0, batch=None):
        self.epoch, self.batch = epoch, batch

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_batch_end(self, batch, logs=None):
        if self.batch is not None and (self.current, batch) == (self.epoch, self.batch):
            self.model.unfreeze()

    def on_epoch_end(self, epoch, logs=None):
        if self.batch is None and epoch == self.epoch:
            self.model.unfreeze()


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("accumulate", [1, 2])
def test_a_batchnorm_unfrozen_after_an_epoch_trains_as_one_trainable_from_the_start(shuffle, accumulate):
    X, y = _data()
    model = _model()
    with pytest.warns(UserWarning, match="from epoch 2 on: 41 samples in batches of 8 leave a last batch of 1"):
        history = model.fit(
            X, y, epochs=3, batch_size=8, shuffle=shuffle, accumulate=accumulate, callbacks=[Unfreeze()], verbose=0
        )
    reference = _model()
    reference.fit(X, y, epochs=1, batch_size=8, shuffle=shuffle, accumulate=accumulate, verbose=0)  # frozen: 6 batches
    reference.unfreeze()
    with pytest.warns(UserWarning, match="each epoch skips it"):  # trainable from this fit's start
        expected = reference.fit(X, y, epochs=2, batch_size=8, shuffle=shuffle, accumulate=accumulate, verbose=0)
    np.testing.assert_array_equal(model.state_arrays()["1.running_mean"], reference.state_arrays()["1.running_mean"])
    np.testing.assert_array_equal(model.params, reference.params)
    assert history.history["loss"][1:] == expected.history["loss"]
    assert model.optimizer.step_count == reference.optimizer.step_count == (6 + 5 + 5 if accumulate == 1 else 3 + 3 + 3)


def test_an_unfreeze_in_the_middle_of_an_epoch_skips_its_last_batch_of_one():
    X, y = _data()
    model = _model()
    with pytest.warns(
        UserWarning, match="epoch 1: BatchNorm1d.*became trainable during the epoch.*each epoch skips it"
    ):
        model.fit(X, y, epochs=1, batch_size=8, shuffle=False, callbacks=[Unfreeze(batch=2)], verbose=0)
    reference = _model()
    reference.fit(X[:24], y[:24], epochs=1, batch_size=8, shuffle=False, verbose=0)  # frozen: batches 0-2
    reference.unfreeze().fit(X[24:40], y[24:40], epochs=1, batch_size=8, shuffle=False, verbose=0)  # not row 40
    np.testing.assert_array_equal(model.params, reference.params)
    assert model.optimizer.step_count == 5 and model.epochs_done == 1


def test_a_dataset_follows_the_unfreeze_too():
    X, y = _data()
    model = _model()
    with pytest.warns(UserWarning, match="from epoch 2 on"):
        model.fit(ArrayDataset(X, y), epochs=2, batch_size=8, shuffle=False, callbacks=[Unfreeze()], verbose=0)
    reference = _model()
    reference.fit(ArrayDataset(X, y), epochs=1, batch_size=8, shuffle=False, verbose=0)
    with pytest.warns(UserWarning, match="each epoch skips it"):
        reference.unfreeze().fit(ArrayDataset(X, y), epochs=1, batch_size=8, shuffle=False, verbose=0)
    np.testing.assert_array_equal(model.params, reference.params)
    assert model.optimizer.step_count == 6 + 5


def test_a_batchnorm_frozen_by_a_callback_trains_on_every_sample_again():
    X, y = _data()

    class Freeze(fnn.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.freeze(1)

    model = _model().unfreeze()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the first epoch's note (a last batch of one skipped)
        model.fit(X, y, epochs=2, batch_size=8, shuffle=False, callbacks=[Freeze()], verbose=0)
    assert model.optimizer.step_count == 5 + 6
