"""Callbacks: EarlyStopping, ReduceLROnPlateau, LearningRateScheduler, ModelCheckpoint, CSVLogger,
custom subclasses; History."""

import csv

import numpy as np
import pytest

import fastnn as fnn
from fastnn import callbacks as C


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 5))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    return X[:80], y[:80], X[80:], y[80:]


def make_model(lr=0.05):
    model = fnn.Sequential([fnn.Dense(5, 16, activation="relu"), fnn.Dense(16, 2)], seed=0)
    model.compile("cross_entropy", fnn.optim.SGD(lr=lr, momentum=0.9))
    return model


class Recorder(C.Callback):
    def __init__(self):
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(f"epoch_begin{epoch}")

    def on_batch_end(self, batch, logs=None):
        self.calls.append(f"batch{batch}")

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(f"epoch_end{epoch}:{sorted(logs)}")

    def on_train_end(self, logs=None):
        self.calls.append("train_end")


def test_custom_callback_hooks_run_in_order(problem):
    X, y, Xv, yv = problem
    rec = Recorder()
    make_model().fit(X, y, epochs=2, batch_size=40, validation_data=(Xv, yv), callbacks=[rec], verbose=0)
    keys = "['accuracy', 'loss', 'lr', 'val_accuracy', 'val_loss']"
    assert rec.calls == [
        "train_begin",
        "epoch_begin0",
        "batch0",
        "batch1",
        f"epoch_end0:{keys}",
        "epoch_begin1",
        "batch0",
        "batch1",
        f"epoch_end1:{keys}",
        "train_end",
    ]


def test_history_records_metrics_and_learning_rate(problem):
    X, y, Xv, yv = problem
    hist = make_model().fit(X, y, epochs=3, validation_data=(Xv, yv), verbose=0)
    assert hist.epoch == [0, 1, 2]
    assert len(hist["val_accuracy"]) == 3 and hist["lr"] == [0.05] * 3


def test_early_stopping_stops_and_restores_best(problem):
    X, y, Xv, yv = problem

    class Worsen(C.Callback):  # fake a validation loss that is best at epoch 2
        def on_epoch_end(self, epoch, logs=None):
            logs["val_loss"] = [3.0, 2.0, 1.0, 1.5, 1.6, 1.7, 1.8][epoch]
            if epoch == 2:
                self.best_params = self.model.params.copy()

    worsen = Worsen()
    stop = C.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    model = make_model()
    hist = model.fit(X, y, epochs=7, validation_data=(Xv, yv), callbacks=[worsen, stop], verbose=0)
    assert len(hist.epoch) == 5 and stop.stopped_epoch == 4 and stop.best_epoch == 2
    np.testing.assert_array_equal(model.params, worsen.best_params)


def test_early_stopping_restores_best_even_without_stopping(problem):
    X, y, Xv, yv = problem

    class Fake(C.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["val_loss"] = [2.0, 1.0, 1.5][epoch]
            if epoch == 1:
                self.best = self.model.params.copy()

    fake = Fake()
    model = make_model()
    model.fit(
        X,
        y,
        epochs=3,
        validation_data=(Xv, yv),
        verbose=0,
        callbacks=[fake, C.EarlyStopping(patience=5, restore_best_weights=True)],
    )
    np.testing.assert_array_equal(model.params, fake.best)


def test_early_stopping_min_delta_and_accuracy_mode():
    stop = C.EarlyStopping(monitor="val_accuracy", min_delta=0.1)
    assert stop.mode == "max"
    stop.best = 0.5
    assert not stop._improved(0.55) and stop._improved(0.61)


def test_unknown_monitor_is_a_clear_error(problem):
    X, y, _, _ = problem
    with pytest.raises(ValueError, match="monitor 'val_los' is not a metric.*validation_data"):
        make_model().fit(X, y, epochs=1, verbose=0, callbacks=[C.EarlyStopping(monitor="val_los")])
    with pytest.raises(ValueError, match="Did you mean 'loss'"):
        make_model().fit(X, y, epochs=1, verbose=0, callbacks=[C.EarlyStopping(monitor="los")])


def test_reduce_lr_on_plateau(problem):
    X, y, _, _ = problem

    class Flat(C.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["loss"] = 1.0

    plateau = C.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_lr=0.01)
    model = make_model(lr=0.08)
    hist = model.fit(X, y, epochs=7, verbose=0, callbacks=[Flat(), plateau])
    # epoch 0 sets best; 1 waits; 2 reduces; 3 waits; 4 reduces; ... lr never below min_lr
    assert hist["lr"] == [0.08, 0.08, 0.08, 0.04, 0.04, 0.02, 0.02]
    assert model.optimizer.lr == 0.01


def test_learning_rate_scheduler_per_epoch_and_per_batch(problem):
    X, y, _, _ = problem
    model = make_model()
    hist = model.fit(X, y, epochs=3, verbose=0, callbacks=[C.LearningRateScheduler(lambda e: 0.1 / (e + 1))])
    assert hist["lr"] == pytest.approx([0.1, 0.05, 0.1 / 3])
    model = make_model()
    seen = []

    class Spy(C.Callback):
        def on_batch_end(self, batch, logs=None):
            seen.append(self.model.optimizer.lr)

    model.fit(
        X,
        y,
        epochs=1,
        batch_size=20,
        verbose=0,
        callbacks=[C.LearningRateScheduler(fnn.schedules.get("exponential", 1.0, gamma=0.5), per="batch"), Spy()],
    )
    assert seen == [1.0, 0.5, 0.25, 0.125]


def test_model_checkpoint_best_only(tmp_path, problem):
    X, y, Xv, yv = problem

    class Fake(C.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["val_loss"] = [3.0, 1.0, 2.0, 0.5][epoch]

    ckpt = C.ModelCheckpoint(tmp_path / "best-{epoch}.safetensors", save_best_only=True)
    model = make_model()
    model.fit(X, y, epochs=4, validation_data=(Xv, yv), verbose=0, callbacks=[Fake(), ckpt])
    assert [p.split("/")[-1] for p in ckpt.saved] == ["best-1.safetensors", "best-2.safetensors", "best-4.safetensors"]
    np.testing.assert_array_equal(fnn.load(ckpt.saved[-1]).predict(X), model.predict(X))


def test_checkpoint_and_logger_paths_must_have_a_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        C.ModelCheckpoint(tmp_path / "missing" / "m.safetensors")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        C.CSVLogger(tmp_path / "missing" / "log.csv")


def test_csv_logger(tmp_path, problem):
    X, y, Xv, yv = problem
    path = tmp_path / "log.csv"
    make_model().fit(X, y, epochs=3, validation_data=(Xv, yv), verbose=0, callbacks=[C.CSVLogger(path)])
    rows = list(csv.DictReader(open(path)))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert set(rows[0]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    assert float(rows[2]["loss"]) < float(rows[0]["loss"])


def test_callbacks_must_be_callback_instances(problem):
    X, y, _, _ = problem
    with pytest.raises(TypeError, match=r"callbacks\[0\] must be a fastnn.callbacks.Callback"):
        make_model().fit(X, y, verbose=0, callbacks=[lambda: None])


@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda: C.ReduceLROnPlateau(factor=1.0), r"factor must be in \(0.0, 1.0\)"),
        (lambda: C.EarlyStopping(patience=-1), "patience must be >= 0"),
        (lambda: C.EarlyStopping(mode="maximum"), "Unknown mode 'maximum'"),
        (lambda: C.LearningRateScheduler(per="epochs", schedule=lambda e: 0.1), "Did you mean 'epoch'"),
    ],
)
def test_bad_callback_arguments(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()
