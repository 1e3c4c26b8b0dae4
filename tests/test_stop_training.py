"""``model.stop_training = True`` set in a batch hook ends the epoch after that batch, as in Keras 3:
exactly the updates of the batches run (arrays, streams, accumulate), the partial epoch's logs,
validation, on_epoch_end and History entry, the progress bar, and what a later fit continues
with. (Two MPI ranks: tests/test_distributed.py::test_a_stop_in_a_batch_hook_is_rank_0s_on_every_rank.)"""

import io
import sys

import numpy as np
import pytest

import fastnn as fnn


def _data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5))
    return X, (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1)


def _model(metrics=None):
    model = fnn.Sequential([fnn.Dense(5, 8, activation="tanh"), fnn.Dense(8, 3)], dtype="float64", seed=3)
    return model.compile("cross_entropy", fnn.optim.SGD(lr=0.1, momentum=0.9), metrics=metrics)


class StopAt(fnn.callbacks.Callback):
    """Sets stop_training in on_batch_end (or on_batch_begin) of batch ``at`` (0-based) of epoch
    ``epoch``; records every hook."""

    def __init__(self, at, epoch=0, hook="end"):
        self.at, self.epoch, self.hook = at, epoch, hook
        self.calls, self.epoch_logs = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_batch_begin(self, batch, logs=None):
        self.calls.append(("begin", batch))
        if self.hook == "begin" and (self.current, batch) == (self.epoch, self.at):
            self.model.stop_training = True

    def on_batch_end(self, batch, logs=None):
        self.calls.append(("end", batch))
        if self.hook == "end" and (self.current, batch) == (self.epoch, self.at):
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_logs.append((epoch, dict(logs)))


@pytest.mark.parametrize("hook", ["end", "begin"])
def test_a_stop_in_a_batch_hook_ends_the_epoch_after_that_batch(hook):
    """Batch 3 of 10 (index 2): 3 updates, the weights of a fit on those 3 batches, one History entry
    whose loss, accuracy and metric are over those 3 batches, validation ran, on_epoch_end once."""
    X, y = _data()  # 10 batches of 4
    val = (X[:8], y[:8])
    model, stop = _model(metrics=["f1"]), StopAt(2, hook=hook)
    history = model.fit(X, y, epochs=3, batch_size=4, shuffle=False, validation_data=val, callbacks=[stop], verbose=0)
    reference = _model(metrics=["f1"])
    expected = reference.fit(X[:12], y[:12], epochs=1, batch_size=4, shuffle=False, validation_data=val, verbose=0)
    np.testing.assert_array_equal(model.params, reference.params)
    assert model.optimizer.step_count == 3
    assert stop.calls == [("begin", 0), ("end", 0), ("begin", 1), ("end", 1), ("begin", 2), ("end", 2)]
    assert history.epoch == [0] and history.history == expected.history
    assert {"val_loss", "val_accuracy", "val_f1"} <= set(history.history)
    assert [e for e, _ in stop.epoch_logs] == [0]
    # the loss is the mean over the 3 batches trained (each batch's loss before its update)
    first = _model()
    losses = [first.train_step(X[i : i + 4], y[i : i + 4]) for i in (0, 4, 8)]
    assert history.history["loss"][0] == pytest.approx(np.mean(losses), rel=1e-12)


def test_after_a_stop_the_epoch_counts_as_done_and_the_next_fit_starts_the_next_epoch():
    X, y = _data()
    model = _model()
    model.fit(X, y, epochs=2, batch_size=4, shuffle=False, callbacks=[StopAt(2)], verbose=0)
    assert model.epochs_done == 1 and model.state.cursor is None
    history = model.fit(X, y, epochs=1, batch_size=4, shuffle=False, verbose=0)
    reference = _model()
    reference.fit(X[:12], y[:12], epochs=1, batch_size=4, shuffle=False, verbose=0)
    reference.fit(X, y, epochs=1, batch_size=4, shuffle=False, verbose=0)  # epoch 1: all 10 batches
    assert history.epoch == [1] and model.epochs_done == 2
    np.testing.assert_array_equal(model.params, reference.params)
    assert model.optimizer.step_count == 13


def test_a_stop_at_an_epochs_last_batch_or_in_on_epoch_end_is_unchanged():
    X, y = _data()
    straight = _model()
    straight.fit(X, y, epochs=1, batch_size=4, shuffle=False, verbose=0)
    last = _model()
    history = last.fit(X, y, epochs=3, batch_size=4, shuffle=False, callbacks=[StopAt(9)], verbose=0)
    assert history.epoch == [0] and last.optimizer.step_count == 10
    np.testing.assert_array_equal(last.params, straight.params)
    early = _model()
    stop = fnn.callbacks.EarlyStopping("loss", patience=0, min_delta=10.0)  # stops at the end of epoch 1
    history = early.fit(X, y, epochs=5, batch_size=4, shuffle=False, callbacks=[stop], verbose=0)
    assert history.epoch == [0, 1] and early.optimizer.step_count == 20


@pytest.mark.parametrize("at, updates", [(2, 2), (3, 2), (4, 3)])
def test_a_stop_inside_an_accumulation_group_makes_its_update_with_the_batches_run(at, updates):
    """accumulate=2, a stop after batch at+1: an open group updates with the batches it holds (as an
    epoch's short last group does): the weights of a fit on those batches alone."""
    X, y = _data()
    model = _model()
    history = model.fit(X, y, epochs=2, batch_size=4, shuffle=False, accumulate=2, callbacks=[StopAt(at)], verbose=0)
    rows = 4 * (at + 1)
    reference = _model()
    expected = reference.fit(X[:rows], y[:rows], epochs=1, batch_size=4, shuffle=False, accumulate=2, verbose=0)
    assert model.optimizer.step_count == reference.optimizer.step_count == updates
    np.testing.assert_allclose(model.params, reference.params, rtol=1e-13, atol=1e-15)
    assert history.history["loss"] == pytest.approx(expected.history["loss"], rel=1e-13)
    assert model.epochs_done == 1 and model.state.cursor is None


def test_a_stop_on_a_shuffled_fit_trains_the_first_batches_of_the_epochs_order():
    """Shuffled: the stopped fit's 3 updates are the first 3 of the unstopped fit's epoch (same order)."""
    X, y = _data()

    class Keep(fnn.callbacks.Callback):
        def __init__(self):
            self.params = []

        def on_batch_end(self, batch, logs=None):
            self.params.append(self.model.params.copy())

    straight, kept = _model(), Keep()
    straight.fit(X, y, epochs=1, batch_size=4, callbacks=[kept], verbose=0)
    model = _model()
    model.fit(X, y, epochs=2, batch_size=4, callbacks=[StopAt(2)], verbose=0)
    np.testing.assert_array_equal(model.params, kept.params[2])


def _batches(X, y, size=4):
    return [(X[i : i + size], y[i : i + size]) for i in range(0, len(X), size)]


def test_a_stop_on_a_stream_ends_the_epoch_and_the_stream_goes_on_from_the_next_batch():
    X, y = _data()
    batches = _batches(X, y)
    stream = iter(batches)
    model, stop = _model(), StopAt(2)
    history = model.fit(stream, steps_per_epoch=5, epochs=3, callbacks=[stop], verbose=0)
    reference = _model()
    expected = reference.fit(batches[:3], epochs=1, verbose=0)
    assert history.history == expected.history and model.optimizer.step_count == 3
    np.testing.assert_array_equal(model.params, reference.params)
    assert model.epochs_done == 1 and model.state.cursor is None
    model.fit(stream, steps_per_epoch=5, epochs=1, verbose=0)  # the next epoch: batches 3 to 7
    reference.fit(batches[3:8], epochs=1, verbose=0)
    np.testing.assert_array_equal(model.params, reference.params)


def test_a_stop_on_a_callable_stream_with_accumulate():
    X, y = _data()
    batches = _batches(X, y)
    model = _model()
    model.fit(lambda: iter(batches), epochs=2, accumulate=2, callbacks=[StopAt(2)], verbose=0)
    reference = _model()
    reference.fit(batches[:3], epochs=1, accumulate=2, verbose=0)
    assert model.optimizer.step_count == 2
    np.testing.assert_allclose(model.params, reference.params, rtol=1e-13, atol=1e-15)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_the_progress_bar_of_a_stopped_epoch_ends_at_the_batches_run(monkeypatch):
    pytest.importorskip("tqdm")
    X, y = _data()
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    _model().fit(X, y, epochs=2, batch_size=4, shuffle=False, callbacks=[StopAt(2)], verbose=1)
    shown = terminal.getvalue()
    assert "Epoch 1/2" in shown and "3/10" in shown
    assert "Epoch 2/2" not in shown and "10/10" not in shown
