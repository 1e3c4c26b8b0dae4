"""An epoch's last batch of one sample (n % batch_size == 1) in fit: trained unless a BatchNorm sees a
single value per channel in it. A batch skipped as planned gets no on_batch_begin / on_batch_end
(Keras pairs them); a callback that unfreezes a BatchNorm in that batch's on_batch_begin gets it
skipped with a warning, not BatchNorm's error; a BatchNorm over per-step rows (TimeDistributed) or
positions (BatchNorm2d) sees more than one value per channel in a one-sample batch and trains on it,
as torch does."""

import copy
import io
import sys
import warnings

import numpy as np
import pytest

import fastnn as fnn
from fastnn.data import ArrayDataset
from fastnn.training import ArrayBatches

N, BATCH = 41, 8  # batches 8, 8, 8, 8, 8, 1


def _data(n=N, shape=(5,), seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, *shape))
    flat = X.reshape(n, -1)
    return X, (flat[:, 0] + flat[:, 1] > 0).astype(np.int64) + (flat[:, 2] > 1)


def _model(frozen=False, accumulate_lr=0.1):
    layers = [fnn.Dense(5, 8, bias=False), fnn.BatchNorm1d(8), fnn.ReLU(), fnn.Dense(8, 3)]
    model = fnn.Sequential(layers, dtype="float64", seed=3)
    model.layers[1].running_mean[...] = np.linspace(-0.5, 0.5, 8)
    model.compile("cross_entropy", fnn.optim.SGD(lr=accumulate_lr, momentum=0.9))
    return model.freeze(1) if frozen else model


def _batches(model, X, y, batch_size, shuffle, epoch=0):
    """Copies of the batches fit's epoch ``epoch`` gives (its order), read through a source on a twin
    of ``model`` whose BatchNorms are frozen (so a last batch of one is among them)."""
    twin = copy.deepcopy(model).freeze()
    source = ArrayBatches(twin, *twin.check_data(X, y), batch_size, shuffle=shuffle, weighted=False)
    source.gather_inside = False  # each batch gathered here, into arrays we can copy
    out = [(xb.copy(), yb.copy()) for _, xb, yb in source.epoch(epoch, 0)]
    source.close()
    return out


class At(fnn.callbacks.Callback):
    """Runs ``action(model)`` in on_batch_begin of batch ``batch`` (of every epoch)."""

    def __init__(self, batch, action):
        self.batch, self.action, self.seen = batch, action, []

    def on_batch_begin(self, batch, logs=None):
        self.seen.append(batch)
        if batch == self.batch:
            self.action(self.model)


class StopAfter(fnn.callbacks.Callback):
    """Ends the epoch after batch ``batch`` (``stop_training``: Keras' rule)."""

    def __init__(self, batch):
        self.batch = batch

    def on_batch_end(self, batch, logs=None):
        if batch == self.batch:
            self.model.stop_training = True


def _same(model, reference):
    np.testing.assert_array_equal(model.params, reference.params)
    for name, value in reference.state_arrays().items():
        np.testing.assert_array_equal(model.state_arrays()[name], value, err_msg=name)
    assert model.optimizer.step_count == reference.optimizer.step_count


@pytest.mark.parametrize("shuffle", [False, True])
def test_an_unfreeze_in_on_batch_begin_of_the_last_batch_of_one_skips_it_with_a_warning(shuffle):
    X, y = _data()
    model = _model(frozen=True)
    batches = _batches(model, X, y, BATCH, shuffle)
    assert [len(xb) for xb, _ in batches] == [8, 8, 8, 8, 8, 1]
    hook = At(5, lambda m: m.unfreeze())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(X, y, epochs=1, batch_size=BATCH, shuffle=shuffle, callbacks=[hook], verbose=0)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1, messages
    assert "epoch 1: BatchNorm1d(8" in messages[0] and "became trainable during the epoch" in messages[0]
    assert "leave a last batch of 1 sample" in messages[0] and "batch_size=7" in messages[0]
    assert hook.seen == [0, 1, 2, 3, 4, 5]
    reference = _model(frozen=True)  # the same trainable states: frozen for batches 0-4, the last skipped
    losses = [reference.train_step(xb, yb) for xb, yb in batches[:5]]
    reference.unfreeze()
    _same(model, reference)
    np.testing.assert_allclose(history.history["loss"][0], np.mean(losses), rtol=1e-12)
    assert model.epochs_done == 1 and model.state.cursor is None


class Pairs(fnn.callbacks.Callback):
    """Records on_batch_begin and on_batch_end calls in order."""

    def __init__(self):
        self.calls = []

    def on_batch_begin(self, batch, logs=None):
        self.calls.append(("begin", batch))

    def on_batch_end(self, batch, logs=None):
        self.calls.append(("end", batch))


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_last_batch_of_one_skipped_as_planned_gets_no_batch_calls(shuffle):
    """A trainable BatchNorm: the plan skips the last batch of one, and its on_batch_begin /
    on_batch_end are not called (every call paired, as Keras); a freeze planned for that batch's
    on_batch_begin never runs."""
    X, y = _data()
    model = _model()
    batches = _batches(model, X, y, BATCH, shuffle)
    pairs, hook = Pairs(), At(5, lambda m: m.freeze(1))
    with pytest.warns(UserWarning, match="each epoch skips it"):  # the plan at the fit's start
        history = model.fit(X, y, epochs=2, batch_size=BATCH, shuffle=shuffle, callbacks=[pairs, hook], verbose=0)
    per_epoch = [(what, b) for b in range(5) for what in ("begin", "end")]
    assert pairs.calls == per_epoch * 2
    assert hook.seen == [0, 1, 2, 3, 4] * 2 and model.layers[1].trainable
    reference = _model()
    losses = [reference.train_step(xb, yb) for xb, yb in batches[:5]]
    assert model.optimizer.step_count == 10
    np.testing.assert_allclose(history.history["loss"][0], np.mean(losses), rtol=1e-12)


def test_a_batchnorm_unfrozen_during_the_epoch_skips_the_last_batch_of_one_without_its_calls():
    """A hook unfreezes the BatchNorm on batch 2: the last batch of one, planned to train (frozen at the
    epoch's start), is skipped with a warning and gets no on_batch_begin (its freeze there never runs)."""
    X, y = _data()
    model = _model(frozen=True)
    batches = _batches(model, X, y, BATCH, False)
    hooks = [At(2, lambda m: m.unfreeze()), At(5, lambda m: m.freeze(1))]
    with pytest.warns(UserWarning, match="became trainable during the epoch"):
        model.fit(X, y, epochs=1, batch_size=BATCH, shuffle=False, callbacks=hooks, verbose=0)
    assert hooks[1].seen == [0, 1, 2, 3, 4]
    reference = _model(frozen=True)
    for b, (xb, yb) in enumerate(batches[:5]):
        if b == 2:
            reference.unfreeze()
        reference.train_step(xb, yb)
    _same(model, reference)


def test_a_freeze_in_on_batch_begin_reads_the_shuffled_batch_into_the_new_plan():
    """Freezing records new step plans; the shuffled batch is read after the hook, into the plan the
    step runs (it was gathered into the old plan's buffers and the step read stale rows)."""
    X, y = _data(17)
    model = fnn.Sequential([fnn.Dense(5, 8), fnn.ReLU(), fnn.Dense(8, 3)], dtype="float64", seed=3)
    model.compile("cross_entropy", fnn.optim.SGD(lr=0.1))
    reference = copy.deepcopy(model)
    batches = _batches(model, X, y, 8, True)
    model.fit(X, y, epochs=1, batch_size=8, shuffle=True, callbacks=[At(1, lambda m: m.freeze(0))], verbose=0)
    for b, (xb, yb) in enumerate(batches):
        if b == 1:
            reference.freeze(0)
        reference.train_step(xb, yb)
    _same(model, reference)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_the_unfreeze_skip_holds_for_datasets_and_accumulation(accumulate):
    """33 samples with accumulate=2: groups (0, 1), (2, 3), then the last batch of one alone,
    skipped: no open group is left (an open one would update after the unfreeze, with the
    BatchNorm trainable by then)."""
    n = N if accumulate == 1 else 33
    X, y = _data(n)
    last = n // BATCH
    results = []
    for data in ((X, y), (ArrayDataset(X, y),)):
        model = _model(frozen=True)
        kwargs = {"epochs": 1, "batch_size": BATCH, "shuffle": False, "accumulate": accumulate, "verbose": 0}
        with pytest.warns(UserWarning, match="became trainable during the epoch"):
            model.fit(*data, callbacks=[At(last, lambda m: m.unfreeze())], **kwargs)
        results.append(model)
    reference = _model(frozen=True)  # the batches before the last one frozen, then the epoch ends
    stop = StopAfter(last - 1)
    reference.fit(X, y, epochs=1, batch_size=BATCH, shuffle=False, accumulate=accumulate, callbacks=[stop], verbose=0)
    reference.unfreeze()
    for model in results:
        _same(model, reference)
    assert reference.optimizer.step_count == (5 if accumulate == 1 else 2)


def test_the_skip_warning_comes_once_per_fit():
    """Unfrozen on the last batch of epoch 1: epoch 1 warns, epochs 2-3 skip the sample silently
    (the plan knows it), without its on_batch_begin; a step count of 5 + 5 + 5."""
    X, y = _data()
    model = _model(frozen=True)
    hook = At(5, lambda m: m.unfreeze())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X, y, epochs=3, batch_size=BATCH, shuffle=True, callbacks=[hook], verbose=0)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1 and messages[0].startswith("epoch 1: "), messages
    assert model.optimizer.step_count == 15
    assert hook.seen == [0, 1, 2, 3, 4, 5] + [0, 1, 2, 3, 4] * 2


# -- a BatchNorm that sees more than one value per channel in a batch of one sample ----------------


def _step_model(layers, input_shape):
    model = fnn.Sequential(layers, input_shape=input_shape, dtype="float64", seed=2)
    return model.compile("cross_entropy", fnn.optim.SGD(lr=0.1, momentum=0.9))


CASES = {
    "TimeDistributed(BatchNorm1d)": (
        lambda: [
            fnn.TimeDistributed(fnn.Dense(4, 6)),
            fnn.TimeDistributed(fnn.BatchNorm1d(6)),
            fnn.ReLU(),
            fnn.LastStep(),
            fnn.Dense(6, 3),
        ],
        (3, 4),
    ),
    "nested TimeDistributed": (
        lambda: [
            fnn.TimeDistributed(fnn.TimeDistributed(fnn.BatchNorm1d(4))),
            fnn.Flatten(),
            fnn.Dense(24, 3),
        ],
        (3, 2, 4),
    ),
    "BatchNorm2d": (
        lambda: [fnn.Conv2d(2, 3, 3, padding=1), fnn.BatchNorm2d(3), fnn.ReLU(), fnn.Flatten(), fnn.Dense(48, 3)],
        (2, 4, 4),
    ),
    "BatchNorm1d over a length": (
        lambda: [fnn.Conv1d(2, 3, 3, padding=1), fnn.BatchNorm1d(3), fnn.ReLU(), fnn.Flatten(), fnn.Dense(15, 3)],
        (2, 5),
    ),
}


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_batchnorm_over_several_rows_per_sample_trains_on_a_last_batch_of_one(case, shuffle):
    layers, shape = CASES[case]
    X, y = _data(9, shape)
    model = _step_model(layers(), shape)
    batches = _batches(model, X, y, 4, shuffle)
    assert [len(xb) for xb, _ in batches] == [4, 4, 1]
    reference = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no note: every sample is trained on
        history = model.fit(X, y, epochs=1, batch_size=4, shuffle=shuffle, verbose=0)
    losses = [reference.train_step(xb, yb) for xb, yb in batches]
    _same(model, reference)
    assert model.optimizer.step_count == 3
    np.testing.assert_allclose(history.history["loss"][0], np.dot(losses, [4, 4, 1]) / 9, rtol=1e-12)


def test_a_one_sample_fit_of_a_time_distributed_batchnorm_trains():
    """One sample of 3 steps: 3 values per channel, so even a single sample trains (torch accepts
    a BatchNorm1d over 3 rows); a BatchNorm over rows of one value still refuses it, naming the fix."""
    layers, shape = CASES["TimeDistributed(BatchNorm1d)"]
    X, y = _data(1, shape)
    model = _step_model(layers(), shape)
    reference = copy.deepcopy(model)
    model.fit(X, y, epochs=2, batch_size=4, verbose=0)
    for _ in range(2):
        reference.train_step(X, y)
    _same(model, reference)
    with pytest.raises(ValueError, match="needs at least 2 samples per training batch.*pass at least 2 samples"):
        _model().fit(*_data(1), epochs=1, verbose=0)


def test_a_time_distributed_batchnorm_of_one_step_still_skips_the_last_batch_of_one():
    """TimeDistributed over a single step: one value per channel in a one-sample batch."""
    X, y = _data(9, (1, 4))
    model = _step_model([fnn.TimeDistributed(fnn.BatchNorm1d(4)), fnn.Flatten(), fnn.Dense(4, 3)], (1, 4))
    with pytest.warns(UserWarning, match="last batch of 1 sample, which BatchNorm1d\\(4.*cannot train on"):
        model.fit(X, y, epochs=1, batch_size=4, shuffle=False, verbose=0)
    assert model.optimizer.step_count == 2


def test_a_masked_batchnorm_trains_on_a_last_sample_of_one_valid_step():
    """After Masking the BatchNorm takes the valid steps: a last sample with one valid step gives one
    value per channel, where the layer has Keras' masked result (variance 0) as in train_step; fit
    trains on it as train_step does."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((9, 4, 3))
    lengths = np.array([4, 2, 3, 1, 4, 2, 3, 4, 1])  # the last sample: one valid step
    for i, length in enumerate(lengths):
        X[i, length:] = 0.0
    y = (X[:, 0, 0] > 0).astype(np.int64)
    layers = [fnn.Masking(), fnn.TimeDistributed(fnn.BatchNorm1d(3)), fnn.ReLU(), fnn.LastStep(), fnn.Dense(3, 2)]
    model = _step_model(layers, (4, 3))
    reference = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(X, y, epochs=1, batch_size=4, shuffle=False, verbose=0)
    for lo in (0, 4, 8):
        reference.train_step(X[lo : lo + 4], y[lo : lo + 4])
    _same(model, reference)
    assert model.optimizer.step_count == 3


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _draws(shown: str) -> list[list[str]]:
    """Each epoch's bar as drawn, draw by draw, per epoch ("Epoch i/n: ..."; tqdm redraws after a
    carriage return); other output on the stream (fastnn's one-time "compiling" notice with a fresh
    cache, which may break a bar's line in two) left out."""
    epochs: dict[str, list[str]] = {}
    for draw in shown.replace("\n", "\r").split("\r"):
        if draw.startswith("Epoch "):
            epochs.setdefault(draw.split(":")[0], []).append(draw)
    return list(epochs.values())


def _final_bars(shown: str) -> list[str]:
    """Each epoch's bar as last drawn."""
    return [draws[-1] for draws in _draws(shown)]


@pytest.mark.parametrize(
    ("frozen", "batch", "action", "trained"),
    [
        (True, 5, lambda m: m.unfreeze(), 5),  # the last batch of one skipped after its on_batch_begin
        (False, 2, lambda m: m.freeze(1), 6),  # planned to be skipped, trained after a freeze
    ],
    ids=["unfrozen_in_the_last_batch", "frozen_before_it"],
)
def test_the_progress_bar_ends_full_when_the_last_batch_of_one_is_decided_during_the_epoch(
    monkeypatch, frozen, batch, action, trained
):
    """Keras shows a finished epoch done: the bar ends at 100%, on the batches trained (5/5, not stuck
    at 5/6; 6/6, not 6/5), and a skipped batch still gets no on_batch_end."""
    pytest.importorskip("tqdm")
    X, y = _data()
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    pairs = Pairs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # (the skip's notes: tested above)
        _model(frozen=frozen).fit(
            X, y, epochs=1, batch_size=BATCH, shuffle=False, callbacks=[pairs, At(batch, action)], verbose=1
        )
    assert [b for what, b in pairs.calls if what == "end"] == list(range(trained))
    (bar,) = _final_bars(terminal.getvalue())
    assert bar.startswith("Epoch 1/1: 100%") and f" {trained}/{trained} " in bar, bar


def test_the_bar_of_an_epoch_of_unknown_length_ends_full(monkeypatch):
    """An epoch of unknown length (a callable stream): the bar ends full on the batches seen."""
    pytest.importorskip("tqdm")
    X, y = _data()
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    batches = [(X[i : i + BATCH], y[i : i + BATCH]) for i in range(0, 40, BATCH)]
    _model(frozen=True).fit(lambda: iter(batches), epochs=2, verbose=1)
    bars = _final_bars(terminal.getvalue())
    assert len(bars) == 2 and all(" 5/5 " in bar for bar in bars), bars


def test_a_resumed_epochs_bar_starts_at_its_batches_done_and_ends_full(monkeypatch):
    """An epoch interrupted after 2 of its 6 batches and resumed: its bar starts at 2 and ends 6/6
    (the uninterrupted epoch's count), not 4/4 or 4/6."""
    pytest.importorskip("tqdm")
    X, y = _data()
    model = _model(frozen=True)

    class Interrupt(fnn.callbacks.Callback):
        def on_batch_begin(self, batch, logs=None):
            if batch == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y, epochs=1, batch_size=BATCH, shuffle=False, callbacks=[Interrupt()], verbose=0)
    assert model.state.cursor is not None and model.state.cursor.batches == 2
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    model.fit(X, y, epochs=1, batch_size=BATCH, shuffle=False, verbose=1)
    (bar,) = _final_bars(terminal.getvalue())
    assert bar.startswith("Epoch 1/1: 100%") and " 6/6 " in bar, bar
    (draws,) = _draws(terminal.getvalue())
    assert " 2/6 " in draws[0], draws
