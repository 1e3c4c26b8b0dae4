"""The TensorBoard callback: event files read back record by record (TFRecord framing, Event
protobufs shipped with tensorboardX)."""

import struct
import sys
import types

import numpy as np
import pytest

import fastnn as fnn

tensorboardX = pytest.importorskip("tensorboardX")
from tensorboardX.proto import event_pb2

from fastnn.tensorboard import TensorBoard


def read_events(log_dir):
    """{tag: [(step, value)]} for scalars and {tag: [(step, HistogramProto)]} for histograms."""
    scalars, histograms = {}, {}
    files = sorted(log_dir.glob("events.out.tfevents.*"))
    assert files, f"no event file in {log_dir}"
    for path in files:
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("histo"):
                    histograms.setdefault(value.tag, []).append((event.step, value.histo))
                else:
                    scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars, histograms


@pytest.fixture
def trained(tmp_path):
    X, y = fnn.data.make_moons(96, noise=0.1, seed=0)
    model = fnn.Sequential([fnn.Dense(2, 8, activation="relu"), fnn.Dense(8, 2)], seed=0)
    tb = TensorBoard(tmp_path / "run", histogram_freq=2, activation_data=X[:32])
    history = model.fit(
        X,
        y,
        loss="cross_entropy",
        optimizer=fnn.optim.SGD(lr=0.1),
        epochs=4,
        batch_size=32,
        validation_data=(X[:32], y[:32]),
        callbacks=[tb],
        verbose=0,
    )
    return model, history, read_events(tmp_path / "run"), X


def test_scalars_every_epoch_equal_the_history(trained):
    _, history, (scalars, _), _ = trained
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        steps, values = zip(*scalars[key])
        assert steps == (0, 1, 2, 3)
        np.testing.assert_allclose(values, history[key], rtol=1e-6)


def test_gradient_norms_of_the_last_batch(trained):
    model, _, (scalars, _), _ = trained
    names = [name for name, _, _ in model.named_parameters()]
    assert all(len(scalars[f"grad_norm/{name}"]) == 4 for name in names)
    last = {name: float(np.linalg.norm(g)) for name, _, g in model.named_parameters()}
    for name in names:
        assert scalars[f"grad_norm/{name}"][-1][1] == pytest.approx(last[name], rel=1e-5)
    assert scalars["grad_norm/global"][-1][1] == pytest.approx(np.linalg.norm(model.grads), rel=1e-5)


def test_histograms_at_the_chosen_frequency(trained):
    model, _, (_, histograms), X = trained
    expected = (
        {f"weights/{n}" for n, _, _ in model.named_parameters()}
        | {f"gradients/{n}" for n, _, _ in model.named_parameters()}
        | {"activations/0.Dense", "activations/1.Dense"}
    )
    assert set(histograms) == expected
    for records in histograms.values():
        assert [step for step, _ in records] == [1, 3]  # epochs 2 and 4
    histo = histograms["weights/0.weight"][-1][1]
    w = model.layers[0].weight
    assert histo.num == w.size and histo.min == pytest.approx(w.min()) and histo.max == pytest.approx(w.max())
    assert histo.sum == pytest.approx(float(w.sum()), rel=1e-5, abs=1e-6)
    acts = fnn.diagnostics.activations(model, X[:32])
    histo = histograms["activations/1.Dense"][-1][1]
    assert histo.num == acts[1].size and histo.sum == pytest.approx(float(acts[1].sum()), rel=1e-4)


def test_no_histograms_when_frequency_is_zero(tmp_path):
    X, y = fnn.data.make_xor(16, noise=0.1)
    model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)])
    model.fit(
        X,
        y,
        loss="cross_entropy",
        optimizer="sgd",
        epochs=2,
        verbose=0,
        callbacks=[TensorBoard(tmp_path, histogram_freq=0, gradient_norms=False)],
    )
    scalars, histograms = read_events(tmp_path)
    assert histograms == {} and not any(tag.startswith("grad_norm") for tag in scalars)
    assert len(scalars["loss"]) == 2


def test_missing_tensorboardx_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(ImportError, match=r"fastnn\[tensorboard\]"):
        TensorBoard(tmp_path)


def test_bad_histogram_freq():
    with pytest.raises(ValueError, match="histogram_freq"):
        TensorBoard("runs", histogram_freq=-1)


def test_a_second_fit_in_the_same_second_appends_to_the_log(tmp_path, monkeypatch):
    """Event files are named by the second they are opened in: a continued fit opened within the
    same second must not overwrite the first fit's file."""
    from tensorboardX import event_file_writer

    monkeypatch.setattr(event_file_writer, "time", types.SimpleNamespace(time=lambda: 1700000000.25))
    X, y = fnn.data.make_xor(16, noise=0.1, seed=0)
    model = fnn.Sequential([fnn.Dense(2, 4, activation="tanh"), fnn.Dense(4, 2)], seed=0)
    model.compile("cross_entropy", "sgd")
    board = TensorBoard(tmp_path, histogram_freq=0, gradient_norms=False)
    first = model.fit(X, y, epochs=2, batch_size=8, verbose=0, callbacks=[board])
    second = model.fit(X, y, epochs=2, batch_size=8, verbose=0, callbacks=[board])
    scalars, _ = read_events(tmp_path)
    steps, values = zip(*sorted(scalars["loss"]))
    assert steps == (0, 1, 2, 3)
    np.testing.assert_allclose(values, first["loss"] + second["loss"], rtol=1e-6)


def test_activations_of_the_last_batch_are_those_of_evaluation_mode_and_change_no_training(tmp_path):
    """Without activation_data the histograms came from a training-mode pass on the last batch:
    fresh dropout masks and batch statistics, unlike the documented (and activation_data's)
    evaluation mode. Now evaluation mode on the last step's input; training is unchanged."""
    X, y = fnn.data.make_moons(48, noise=0.1, seed=0)

    def fit(callbacks):
        model = fnn.Sequential(
            [fnn.Dense(2, 8, activation="relu"), fnn.Dropout(0.5), fnn.BatchNorm1d(8), fnn.Dense(8, 2)], seed=0
        )
        model.fit(X, y, loss="cross_entropy", optimizer="adam", epochs=2, batch_size=16, callbacks=callbacks, verbose=0)
        return model

    model = fit([TensorBoard(tmp_path / "run", histogram_freq=1)])
    plain = fit([])
    for name, value in plain.state_arrays().items():
        np.testing.assert_array_equal(model.state_arrays()[name], value, err_msg=name)
    _, histograms = read_events(tmp_path / "run")
    expected = fnn.diagnostics.activations(model, model.last_batch())
    for i, kind in enumerate(["Dense", "Dropout", "BatchNorm1d"]):
        histo = histograms[f"activations/{i}.{kind}"][-1][1]
        assert histo.sum == pytest.approx(float(expected[i].sum()), rel=1e-5)
        assert histo.sum_squares == pytest.approx(float(np.square(expected[i], dtype=np.float64).sum()), rel=1e-5)
