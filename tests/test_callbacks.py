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


def test_history_best_skips_nan_epochs_wherever_they_are():
    history = C.History()
    for epoch, (loss, acc) in enumerate([(np.nan, np.nan), (0.5, 0.7), (0.3, 0.9), (np.nan, np.nan), (0.4, 0.8)]):
        history.on_epoch_end(epoch, {"loss": loss, "accuracy": acc})
    assert history.best("loss") == 0.3
    assert history.best("accuracy", mode="max") == 0.9


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


def test_early_stopping_restores_the_best_epoch_even_if_none_beats_the_baseline(problem):
    """Keras: "an epoch will be restored regardless of the performance relative to the baseline";
    fastnn kept no weights unless an epoch beat the baseline, leaving the last epoch's."""
    X, y, Xv, yv = problem
    values = [float("nan"), 3.0, 2.0, 2.5, 4.0]

    class Fake(C.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["val_loss"] = values[epoch]

    keep = _KeepState()
    stop = C.EarlyStopping("val_loss", patience=4, baseline=1.0, restore_best_weights=True)
    model = make_model()
    model.fit(X, y, epochs=5, validation_data=(Xv, yv), verbose=0, callbacks=[Fake(), keep, stop])
    assert stop.stopped_epoch == 3 and stop.best_epoch is None and stop.best == 1.0
    _assert_state(model, keep.seen[2])  # the best of the epochs, none under the baseline


def test_early_stopping_min_delta_and_accuracy_mode():
    stop = C.EarlyStopping(monitor="val_accuracy", min_delta=0.1)
    assert stop.mode == "max"
    stop.best = 0.5
    assert not stop._improved(0.55) and stop._improved(0.61)


def _stopped_at(stop, values):
    """The epoch at which ``stop`` (an EarlyStopping) stops on the monitored ``values``, or None."""
    from types import SimpleNamespace

    stop.set_model(SimpleNamespace(stop_training=False))
    for epoch, value in enumerate(values):
        stop.on_epoch_end(epoch, {stop.monitor: value})
        if stop.model.stop_training:
            return epoch
    return None


def test_early_stopping_needs_more_than_min_delta_as_keras():
    """An improvement must be strictly larger than ``min_delta`` (an equal value is none), and a
    negative ``min_delta`` counts as its absolute value (Keras)."""
    assert _stopped_at(C.EarlyStopping("loss", patience=1), [1.0, 1.0, 0.5]) == 1
    assert _stopped_at(C.EarlyStopping("loss", patience=1, min_delta=0.5), [2.0, 1.5, 1.0]) == 1
    assert _stopped_at(C.EarlyStopping("loss", patience=1, min_delta=-0.5), [2.0, 1.75, 1.0]) == 1
    assert _stopped_at(C.EarlyStopping("loss", patience=1, min_delta=-0.5), [2.0, 1.25, 0.5]) is None


def test_early_stopping_patience_counts_from_the_last_improvement():
    assert _stopped_at(C.EarlyStopping("loss", patience=2), [1.0, 2.0, 0.5, 2.0, 2.0, 2.0]) == 4


@pytest.mark.parametrize(
    "monitor", ["val_accuracy", "acc", "val_auc", "precision", "val_recall", "f1", "val_my_f1", "r2"]
)
def test_auto_mode_maximises_accuracy_like_metrics(monitor):
    assert C.EarlyStopping(monitor).mode == "max" and C.ReduceLROnPlateau(monitor).mode == "max"
    assert _stopped_at(C.EarlyStopping(monitor, patience=1), [0.5, 0.6, 0.4]) == 2


@pytest.mark.parametrize("monitor", ["loss", "val_loss", "val_mae", "rmse"])
def test_auto_mode_minimises_the_other_metrics(monitor):
    assert C.EarlyStopping(monitor).mode == "min"


def test_unknown_monitor_is_a_clear_error(problem):
    X, y, _, _ = problem
    with pytest.raises(ValueError, match="monitor 'val_los' is not a metric.*validation_data"):
        make_model().fit(X, y, epochs=1, verbose=0, callbacks=[C.EarlyStopping(monitor="val_los")])
    with pytest.raises(ValueError, match="Did you mean 'loss'"):
        make_model().fit(X, y, epochs=1, verbose=0, callbacks=[C.EarlyStopping(monitor="los")])


class _FlatLoss(C.Callback):
    """Reports a training loss of 1.0 every epoch: a plateau."""

    def on_epoch_end(self, epoch, logs=None):
        logs["loss"] = 1.0


def test_reduce_lr_on_plateau(problem):
    X, y, _, _ = problem

    plateau = C.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_lr=0.01)
    model = make_model(lr=0.08)
    hist = model.fit(X, y, epochs=7, verbose=0, callbacks=[_FlatLoss(), plateau])
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


def test_a_checkpoint_whose_save_fails_keeps_the_best_on_disk(tmp_path, problem, monkeypatch):
    X, y, Xv, yv = problem

    class Fake(C.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["val_loss"] = [3.0, 1.0, 2.0, 1.5][epoch]

    ckpt = C.ModelCheckpoint(tmp_path / "best-{epoch}.safetensors", save_best_only=True)
    model = make_model()
    save = type(model).save

    def interrupted(self, path, *args, **kwargs):  # Ctrl-C while the epoch 2 checkpoint is written
        if str(path).endswith("best-2.safetensors"):
            raise KeyboardInterrupt
        return save(self, path, *args, **kwargs)

    monkeypatch.setattr(type(model), "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y, epochs=4, validation_data=(Xv, yv), verbose=0, callbacks=[Fake(), ckpt])
    model.fit(X, y, epochs=2, validation_data=(Xv, yv), verbose=0, callbacks=[Fake(), ckpt])
    # 2.0 and 1.5 beat the 3.0 of the only file written: the best is the one saved, not the failed 1.0
    assert [p.split("/")[-1] for p in ckpt.saved] == ["best-1.safetensors", "best-3.safetensors", "best-4.safetensors"]


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


def test_csv_logger_replaces_the_file_of_an_earlier_run_unless_appending(tmp_path, problem):
    X, y, _, _ = problem
    path = tmp_path / "log.csv"
    for append, epochs in ((False, 3), (False, 2), (True, 1)):
        make_model().fit(X, y, epochs=epochs, verbose=0, callbacks=[C.CSVLogger(path, append=append)])
    rows = list(csv.DictReader(open(path)))
    assert [r["epoch"] for r in rows] == ["0", "1", "0"]  # the second run replaced the first, the third added


def test_csv_logger_appends_in_the_columns_of_the_files_header(tmp_path, problem):
    """Appending a fit with other metrics (validation now) wrote its values in its own order under
    the file's header: val_loss stood in the lr column. Rows now follow the header; a warning names
    the metrics it has no column for, and a metric the fit does not log is nan."""
    X, y, Xv, yv = problem
    path = tmp_path / "log.csv"
    make_model().fit(X, y, epochs=1, verbose=0, callbacks=[C.CSVLogger(path)])
    model = make_model(lr=0.125)
    with pytest.warns(
        UserWarning, match=r"no column for 'val_loss', 'val_accuracy' \(its header: epoch,loss,accuracy,lr\)"
    ):
        hist = model.fit(
            X, y, epochs=1, validation_data=(Xv, yv), verbose=0, callbacks=[C.CSVLogger(path, append=True)]
        )
    rows = list(csv.DictReader(open(path)))
    assert len(rows) == 2 and set(rows[1]) == {"epoch", "loss", "accuracy", "lr"}
    assert float(rows[1]["lr"]) == 0.125 and float(rows[1]["loss"]) == hist["loss"][0]
    with open(path, "w") as handle:
        handle.write("epoch,val_loss,loss\n")
    with pytest.warns(UserWarning, match="no column for 'accuracy', 'lr'"):
        make_model().fit(X, y, epochs=1, verbose=0, callbacks=[C.CSVLogger(path, append=True)])
    row = list(csv.DictReader(open(path)))[0]
    assert np.isnan(float(row["val_loss"])) and float(row["loss"]) > 0


def test_reduce_lr_on_plateau_never_goes_below_min_lr():
    model = fnn.Sequential([fnn.Dense(2, 1)], seed=0).compile("mse", fnn.optim.SGD(lr=1.0))
    plateau = C.ReduceLROnPlateau("loss", factor=0.5, patience=0, min_lr=0.3)
    plateau.set_model(model)
    rates = []
    for epoch in range(4):
        plateau.on_epoch_end(epoch, {"loss": 1.0})
        rates.append(model.optimizer.lr)
    assert rates == [1.0, 0.5, 0.3, 0.3]


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


def _bn_model():
    model = fnn.Sequential(
        [fnn.Dense(5, 16), fnn.BatchNorm1d(16), fnn.ReLU(), fnn.Dense(16, 2)], seed=0, dtype="float64"
    )
    return model.compile("cross_entropy", fnn.optim.Adam(lr=0.3))


class _KeepState(C.Callback):
    """Copies of every parameter and buffer at each epoch's end."""

    def __init__(self):
        self.seen = {}

    def on_epoch_end(self, epoch, logs=None):
        self.seen[epoch] = {k: np.array(v) for k, v in self.model.state_arrays().items()}


def _assert_state(model, expected):
    arrays = model.state_arrays()
    assert sorted(arrays) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(arrays[name], value, err_msg=name)


def test_early_stopping_restores_batch_norm_running_statistics(problem):
    """Keras restores all weights, moving statistics included: the restored model's val_loss is the
    best epoch's (it was not, with the parameters only)."""
    X, y, Xv, yv = problem
    X, Xv = X * 3 + 1, Xv * 3 + 1
    keep = _KeepState()
    stop = C.EarlyStopping("val_loss", patience=3, restore_best_weights=True)
    model = _bn_model()
    hist = model.fit(X, y, epochs=12, batch_size=16, validation_data=(Xv, yv), callbacks=[keep, stop], verbose=0)
    assert stop.best_epoch is not None and stop.best_epoch < len(hist.epoch) - 1  # later epochs changed the state
    assert "1.running_mean" in stop.best_weights and "1.num_batches_tracked" in stop.best_weights
    _assert_state(model, keep.seen[stop.best_epoch])
    assert model.evaluate(Xv, yv)["loss"] == pytest.approx(stop.best, rel=1e-12)


def test_a_checkpoint_keeps_the_best_epochs_buffers_for_a_resumed_early_stopping(tmp_path, problem):
    """ModelCheckpoint saves the whole model (its BatchNorm statistics reload) and EarlyStopping's
    kept arrays with it: a fit resumed from the file restores the best epoch's buffers too."""
    X, y, Xv, yv = problem
    values = [2.0, 1.0, 1.5, 1.6, 1.7, 1.8]

    class Fake(C.Callback):  # val_loss best at epoch 1
        def on_epoch_end(self, epoch, logs=None):
            logs["val_loss"] = values[epoch]

    def callbacks():
        return [Fake(), keep, C.EarlyStopping("val_loss", patience=10, restore_best_weights=True)]

    keep = _KeepState()
    ckpt = C.ModelCheckpoint(tmp_path / "m-{epoch}.safetensors")
    model = _bn_model()
    model.fit(X, y, epochs=3, batch_size=16, validation_data=(Xv, yv), callbacks=[*callbacks(), ckpt], verbose=0)
    loaded = fnn.load(ckpt.saved[-1])  # saved at the end of epoch 2: its own state, not the best yet
    _assert_state(loaded, keep.seen[2])
    stop = callbacks()[-1]
    loaded.fit(X, y, epochs=3, batch_size=16, validation_data=(Xv, yv), callbacks=[Fake(), keep, stop], verbose=0)
    assert stop.best_epoch == 1 and loaded.epochs_done == 6
    _assert_state(loaded, keep.seen[1])


_PLATEAU_VALUES = [
    5.0,
    4.0,
    4.0,
    3.95,
    4.1,
    3.0,
    3.0,
    3.0,
    2.99,
    3.5,
    1.0,
    1.0,
    1.0,
    1.0,
    1.0,
    1.0,
    0.5,
    0.45,
    0.5,
    0.5,
]


@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("patience", [0, 1])
@pytest.mark.parametrize("cooldown", [0, 1, 2])
def test_reduce_lr_on_plateau_matches_torch(cooldown, patience, mode):
    """PyTorch's ReduceLROnPlateau (threshold_mode "abs", threshold = min_delta): num_bad_epochs >
    patience lowers the rate; the cooldown's epochs count no bad epochs (it waited cooldown - 1)."""
    torch = pytest.importorskip("torch")
    values = _PLATEAU_VALUES if mode == "min" else [-v for v in _PLATEAU_VALUES]
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=1.0)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode=mode, factor=0.5, patience=patience, threshold=0.1, threshold_mode="abs", cooldown=cooldown
    )
    model = fnn.Sequential([fnn.Dense(2, 1)], seed=0).compile("mse", fnn.optim.SGD(lr=1.0))
    plateau = C.ReduceLROnPlateau("loss", mode=mode, factor=0.5, patience=patience, min_delta=0.1, cooldown=cooldown)
    plateau.set_model(model)
    ours, theirs = [], []
    for epoch, value in enumerate(values):
        plateau.on_epoch_end(epoch, {"loss": value})
        scheduler.step(value)
        ours.append(model.optimizer.lr)
        theirs.append(opt.param_groups[0]["lr"])
    assert ours == pytest.approx(theirs, rel=1e-12)
    assert len(set(theirs)) > 2  # the rate was lowered more than once


def test_reduce_lr_on_plateau_stops_at_torchs_eps():
    """A reduction smaller than eps (1e-8, torch's default) is not applied: from lr 1e-6 with factor
    0.1 torch stops at 1e-8 where fastnn went on towards 0."""
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-6)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.1, patience=0)
    model = fnn.Sequential([fnn.Dense(2, 1)], seed=0).compile("mse", fnn.optim.SGD(lr=1e-6))
    plateau = C.ReduceLROnPlateau("loss", factor=0.1, patience=0)
    plateau.set_model(model)
    ours, theirs = [], []
    for epoch in range(8):
        plateau.on_epoch_end(epoch, {"loss": 1.0})
        scheduler.step(1.0)
        ours.append(model.optimizer.lr)
        theirs.append(opt.param_groups[0]["lr"])
    assert ours == pytest.approx(theirs, rel=1e-12)
    assert ours[-1] == pytest.approx(1e-8)


def test_reduce_lr_on_plateau_cooldown_waits_its_epochs_in_a_fit(problem):
    X, y, _, _ = problem

    plateau = C.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, cooldown=2)
    hist = make_model(lr=0.08).fit(X, y, epochs=8, batch_size=40, verbose=0, callbacks=[_FlatLoss(), plateau])
    # epoch 0 sets best; 1 lowers; 2 and 3 cool down; 4 lowers; 5, 6 cool down; 7 lowers
    assert hist["lr"] == pytest.approx([0.08, 0.08, 0.04, 0.04, 0.04, 0.02, 0.02, 0.02])


def test_model_checkpoint_path_naming_a_missing_metric_is_a_clear_error(tmp_path, problem):
    """Keras: KeyError('Failed to format this callback filepath: ...'); here it names the callback,
    the path, the missing field and the logs' keys (val_* needs validation data)."""
    X, y, Xv, yv = problem
    path = str(tmp_path / "m-{val_loss:.3f}.safetensors")
    ckpt = C.ModelCheckpoint(path)
    with pytest.raises(KeyError, match=r"ModelCheckpoint: failed to format this callback filepath") as info:
        make_model().fit(X, y, epochs=1, batch_size=40, verbose=0, callbacks=[ckpt])
    message = str(info.value)
    assert path in message and "'val_loss'" in message and "validation_data" in message
    assert "available: accuracy, epoch, loss, lr" in message and ckpt.saved == []
    ckpt = C.ModelCheckpoint(path)  # with validation data the same path works
    make_model().fit(X, y, epochs=1, batch_size=40, validation_data=(Xv, yv), verbose=0, callbacks=[ckpt])
    assert len(ckpt.saved) == 1 and ckpt.saved[0].startswith(str(tmp_path / "m-"))
    with pytest.raises(ValueError, match=r"failed to format this callback filepath.*Unknown format code 'd'"):
        C.ModelCheckpoint(tmp_path / "m-{loss:d}.safetensors").format_path(0, {"loss": 0.5})
    with pytest.raises(ValueError, match="must be named"):
        C.ModelCheckpoint(tmp_path / "m-{}.safetensors")
    assert C.ModelCheckpoint("m-{epoch:02d}-{loss:.2f}.npz").format_path(2, {"loss": 0.5}) == "m-03-0.50.npz"


def test_early_stopping_state_of_a_file_of_before_restores_its_flat_parameters(problem):
    """States saved before the buffers were kept hold the flat parameters only ("best_weights")."""
    X, y, _, _ = problem
    model = make_model()
    kept = model.params.copy() + 1.0
    stop = C.EarlyStopping("loss", patience=10, restore_best_weights=True)
    stop.load_arrays({"best_weights": kept})
    assert stop.arrays() == {"best_weights": stop.best_weights}
    stop.best = -1.0  # no epoch improves: the loaded weights are put back
    model.fit(X, y, epochs=1, verbose=0, callbacks=[stop])
    np.testing.assert_array_equal(model.params, kept)


@pytest.mark.parametrize("checkpoint_first", [True, False])
def test_a_checkpoint_holds_the_epoch_s_updates_of_callbacks_after_it_in_the_list(problem, tmp_path, checkpoint_first):
    """ModelCheckpoint saves after the other callbacks' on_epoch_end wherever it stands: the file
    of epoch 2 holds the learning rate ReduceLROnPlateau set at epoch 2 and its counters, so the
    fit resumed from it equals the uninterrupted one."""
    X, y, _, _ = problem

    def plateau():
        return C.ReduceLROnPlateau(monitor="loss", patience=0, factor=0.5, min_delta=100.0)

    checkpoint = C.ModelCheckpoint(str(tmp_path / "ck-{epoch}.safetensors"))
    callbacks = [checkpoint, plateau()] if checkpoint_first else [plateau(), checkpoint]
    whole = make_model(lr=0.1)
    whole.fit(X, y, epochs=4, batch_size=40, verbose=0, callbacks=callbacks)
    resumed = fnn.load(tmp_path / "ck-2.safetensors")
    assert resumed.optimizer.lr == pytest.approx(0.05)  # epoch 1 sets the best, epoch 2 lowers it
    resumed.fit(X, y, epochs=2, batch_size=40, verbose=0, callbacks=[plateau()])
    np.testing.assert_array_equal(resumed.params, whole.params)


def test_save_best_only_without_validation_names_model_checkpoint(problem, tmp_path):
    X, y, _, _ = problem
    checkpoint = C.ModelCheckpoint(str(tmp_path / "best.safetensors"), save_best_only=True)
    with pytest.raises(ValueError, match=r"^ModelCheckpoint: monitor 'val_loss' is not a metric"):
        make_model().fit(X, y, epochs=1, verbose=0, callbacks=[checkpoint])


def test_keras_batch_hook_names_are_called_and_hooks_fastnn_never_calls_are_named():
    """A Keras callback's on_train_batch_begin/end were never called (silently); on_test_* and
    on_predict_* hooks, which fastnn never calls, are now named in a warning."""
    calls = []

    class KerasStyle(C.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            calls.append(("keras begin", batch))

        def on_train_batch_end(self, batch, logs=None):
            calls.append(("keras end", batch, logs["size"]))

    class FastnnStyle(C.Callback):
        def on_batch_end(self, batch, logs=None):
            calls.append(("fastnn end", batch))

    class Validation(C.Callback):
        def on_test_end(self, logs=None):
            calls.append("never")

    model = fnn.Sequential([fnn.Dense(2, 1)], seed=0)
    X, y = np.ones((8, 2), np.float32), np.ones((8, 1), np.float32)
    callbacks = [KerasStyle(), FastnnStyle(), Validation()]
    with pytest.warns(UserWarning, match="Validation defines on_test_end, which fastnn never calls"):
        model.fit(X, y, loss="mse", optimizer="sgd", epochs=1, batch_size=4, verbose=0, callbacks=callbacks)
    assert calls == [
        ("keras begin", 0),
        ("keras end", 0, 4),
        ("fastnn end", 0),
        ("keras begin", 1),
        ("keras end", 1, 4),
        ("fastnn end", 1),
    ]


class _FailingSave(C.Callback):
    """A checkpoint-like callback (runs last) whose save of ``epoch`` fails."""

    runs_last = True

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise OSError("No space left on device")


def test_an_early_stop_survives_a_later_callback_that_raises_in_its_epoch(problem):
    """EarlyStopping decided to stop at epoch 1, then a checkpoint of that epoch failed: fit raised
    before the stop (and the restore of the best weights), and continuing trained on (epochs 2, 3 ...).
    The continued fit now ends the run as the failed one would have, then a next fit trains on."""
    X, y, Xv, yv = problem
    values = [1.0, 2.0, 0.5, 0.4]

    class Fake(C.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["val_loss"] = values[epoch]

    keep = _KeepState()
    stop = C.EarlyStopping("val_loss", patience=0, restore_best_weights=True)
    callbacks = [Fake(), keep, stop, _FailingSave(epoch=1)]
    model = make_model()
    with pytest.raises(OSError, match="No space"):
        model.fit(X, y, epochs=4, validation_data=(Xv, yv), verbose=0, callbacks=callbacks)
    with pytest.warns(UserWarning, match="EarlyStopping stopped this run at epoch 2.*call fit again to train on"):
        hist = model.fit(X, y, epochs=2, validation_data=(Xv, yv), verbose=0, callbacks=callbacks)
    assert hist.epoch == [] and model.epochs_done == 2 and model.stop_training
    _assert_state(model, keep.seen[0])  # the best epoch's weights, restored at the end of the run
    hist = model.fit(X, y, epochs=2, validation_data=(Xv, yv), verbose=0, callbacks=callbacks)
    assert hist.epoch == [2, 3] and stop.best_epoch == 3


def test_a_checkpoint_of_the_stopping_epoch_resumes_to_the_end_of_the_run(problem, tmp_path):
    """A checkpoint written at the epoch EarlyStopping stopped (it runs after it): a fit resumed from it
    trained on; it now ends the run (restoring the best weights) as the uninterrupted fit did."""
    X, y, Xv, yv = problem
    values = [1.0, 2.0, 0.5]

    class Fake(C.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["val_loss"] = values[epoch]

    def callbacks():
        return [Fake(), C.EarlyStopping("val_loss", patience=0, restore_best_weights=True)]

    ckpt = C.ModelCheckpoint(tmp_path / "m-{epoch}.safetensors")
    model = make_model()
    model.fit(X, y, epochs=3, validation_data=(Xv, yv), verbose=0, callbacks=[*callbacks(), ckpt])
    assert model.epochs_done == 2
    resumed = fnn.load(ckpt.saved[-1])
    with pytest.warns(UserWarning, match="EarlyStopping stopped this run"):
        hist = resumed.fit(X, y, epochs=1, validation_data=(Xv, yv), verbose=0, callbacks=callbacks())
    assert hist.epoch == []
    np.testing.assert_array_equal(resumed.params, model.params)


def test_model_history_is_the_latest_fits_even_when_interrupted():
    """Keras' ``model.history``: None before any fit, then the History that fit returns; an
    interrupted fit's holds the epochs it finished."""
    X, y = np.ones((8, 2), np.float32), np.ones((8, 1), np.float32)
    model = fnn.Sequential([fnn.Dense(2, 1)], seed=0)
    assert model.history is None
    first = model.fit(X, y, loss="mse", optimizer="sgd", epochs=2, verbose=0)
    assert model.history is first and first.epoch == [0, 1]

    class StopAtSecondEpoch(fnn.callbacks.Callback):
        ends = 0

        def on_epoch_end(self, epoch, logs=None):
            self.ends += 1
            if self.ends == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y, epochs=10, verbose=0, callbacks=[StopAtSecondEpoch()])
    assert model.history is not first
    assert len(model.history.epoch) == 2 and len(model.history["loss"]) == 2


def test_a_keyboard_interrupt_from_an_end_hook_reaches_the_later_callbacks_first():
    """A callback stopping with KeyboardInterrupt in an end hook: the later callbacks (History,
    ModelCheckpoint, which runs last) still get that end, then the first interrupt is raised; in a
    begin hook it propagates at once (the batch or epoch has not run)."""
    calls = []

    class Stop(C.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            raise KeyboardInterrupt("begin")

        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt("end")

    class Seen(C.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            calls.append(("begin", epoch))

        def on_epoch_end(self, epoch, logs=None):
            calls.append(("end", epoch))
            raise KeyboardInterrupt("second")

    history = C.History()
    callbacks = C.CallbackList([Stop(), history, Seen()], model=None)
    with pytest.raises(KeyboardInterrupt, match="end"):
        callbacks.on_epoch_end(0, {"loss": 0.5})
    assert history["loss"] == [0.5] and calls == [("end", 0)]
    with pytest.raises(KeyboardInterrupt, match="begin"):
        callbacks.on_epoch_begin(1, {})
    assert calls == [("end", 0)]
