"""compile(metrics=[...]): each metric streamed over batches equals scikit-learn's on the same
predictions (multiclass, binary, multi-label, regression with one and several outputs), appears in
fit's history (and val_), evaluate, callbacks and the progress line, and survives save/load."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _config, _step_feed
from fastnn.metrics import Tracker
from tests._helpers import InterruptAt

skm = pytest.importorskip("sklearn.metrics")
N = 53  # streamed in batches of 7: uneven last batch


def _model(loss, k, dtype="float64"):
    model = fnn.Sequential([fnn.Dense(3, k)], seed=0, dtype=dtype)
    return model.compile(loss, "sgd")


@pytest.fixture(params=["python", "kernels"])
def kernels(request):
    """Stream with the metrics' Python updates, or with the accumulator kernels fit's step calls run
    (``Tracker.accumulate_inside``; called from Python here)."""
    return request.param == "kernels"


def _streamed(model, metrics, output, target, kernels=False):
    tracker = Tracker(model, fnn.metrics.check_metrics(metrics, model.loss))
    if kernels:
        assert len(tracker.accumulate_inside(output.shape[0])) > 0
    for lo in range(0, output.shape[0], 7):
        tracker.update(output[lo : lo + 7], target[lo : lo + 7])
    return tracker.results()


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.filterwarnings("ignore:'k' .5. greater than or equal")  # sklearn: top-5 of <= 5 classes
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("classes", [3, 5])
def test_multiclass_metrics_equal_sklearn(rng, classes, dtype, kernels):
    model = _model("cross_entropy", classes, np.dtype(dtype).name)
    y = np.arange(N) % classes
    rng.shuffle(y)
    out = (rng.standard_normal((N, classes)) + 0.8 * np.eye(classes)[y]).astype(dtype)
    metrics = [
        "top_k_accuracy",
        fnn.metrics.TopKAccuracy(k=2, name="top2"),
        "auc",
        "precision",
        "recall",
        "f1",
        *(
            cls(average=a, name=f"{cls.key}_{a}")
            for cls in (fnn.metrics.Precision, fnn.metrics.Recall, fnn.metrics.F1)
            for a in ("micro", "weighted")
        ),
    ]
    got = _streamed(model, metrics, out, y, kernels)
    pred, probs = out.argmax(axis=1), _softmax(out.astype(np.float64))
    labels = np.arange(classes)
    want = {
        "top_k_accuracy": skm.top_k_accuracy_score(y, probs, k=5, labels=labels),
        "top2": skm.top_k_accuracy_score(y, probs, k=2, labels=labels),
        "auc": skm.roc_auc_score(y, probs, multi_class="ovr"),
    }
    for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score), ("f1", skm.f1_score)):
        want[name] = fn(y, pred, average="macro", zero_division=0)
        for average in ("micro", "weighted"):
            want[f"{name}_{average}"] = fn(y, pred, average=average, zero_division=0)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name] == pytest.approx(want[name], rel=1e-6 if dtype == np.float32 else 1e-12), name


def test_class_counts_average_over_the_classes_present_like_sklearn(rng, kernels):
    """Class 4 is neither a label nor predicted, class 3 is predicted but never a label."""
    model = _model("cross_entropy", 5)
    y = rng.integers(0, 3, N)
    out = rng.standard_normal((N, 5))
    out[:, 4] = -10
    out[:5, 3] = 10
    pred = out.argmax(axis=1)
    for average in ("macro", "weighted", "micro"):
        got = _streamed(
            model,
            [
                fnn.metrics.F1(average=average),
                fnn.metrics.Precision(average=average),
                fnn.metrics.Recall(average=average),
            ],
            out,
            y,
            kernels,
        )
        assert got["f1"] == pytest.approx(skm.f1_score(y, pred, average=average, zero_division=0), rel=1e-12)
        assert got["precision"] == pytest.approx(
            skm.precision_score(y, pred, average=average, zero_division=0), rel=1e-12
        )
        assert got["recall"] == pytest.approx(skm.recall_score(y, pred, average=average, zero_division=0), rel=1e-12)


def test_binary_metrics_equal_sklearn(rng, kernels):
    model = _model("binary_cross_entropy", 1)
    y = (rng.uniform(size=N) < 0.4).astype(np.float64)[:, None]
    out = rng.standard_normal((N, 1)) + y
    out[:4] = 0.25  # tied scores: counted half in the AUC
    metrics = [
        "binary_accuracy",
        "auc",
        "precision",
        "recall",
        "f1",
        fnn.metrics.F1(average="macro", name="f1m"),
        fnn.metrics.BinaryAccuracy(threshold=0.7, name="acc70"),
    ]
    got = _streamed(model, metrics, out, y, kernels)
    t, pred, prob = y[:, 0], (out[:, 0] > 0).astype(int), 1 / (1 + np.exp(-out[:, 0]))
    assert got["binary_accuracy"] == pytest.approx(skm.accuracy_score(t, pred))
    assert got["acc70"] == pytest.approx(skm.accuracy_score(t, prob > 0.7))
    assert got["auc"] == pytest.approx(skm.roc_auc_score(t, prob), rel=1e-12)
    assert got["precision"] == pytest.approx(skm.precision_score(t, pred), rel=1e-12)
    assert got["recall"] == pytest.approx(skm.recall_score(t, pred), rel=1e-12)
    assert got["f1"] == pytest.approx(skm.f1_score(t, pred), rel=1e-12)
    assert got["f1m"] == pytest.approx(skm.f1_score(t, pred, average="macro"), rel=1e-12)


def test_multilabel_metrics_equal_sklearn(rng, kernels):
    model = _model("binary_cross_entropy", 3)
    Y = (rng.uniform(size=(N, 3)) < 0.5).astype(np.float64)
    out = rng.standard_normal((N, 3)) + Y
    pred, prob = (out > 0).astype(int), 1 / (1 + np.exp(-out))
    metrics = [
        "binary_accuracy",
        "auc",
        *(fnn.metrics.F1(average=a, name=a) for a in ("macro", "micro", "weighted")),
        "precision",
        "recall",
    ]
    got = _streamed(model, metrics, out, Y, kernels)
    assert got["binary_accuracy"] == pytest.approx(1 - skm.hamming_loss(Y, pred), rel=1e-12)
    assert got["auc"] == pytest.approx(skm.roc_auc_score(Y, prob), rel=1e-12)
    for average in ("macro", "micro", "weighted"):
        assert got[average] == pytest.approx(skm.f1_score(Y, pred, average=average, zero_division=0), rel=1e-12)
    assert got["precision"] == pytest.approx(skm.precision_score(Y, pred, average="macro", zero_division=0))
    assert got["recall"] == pytest.approx(skm.recall_score(Y, pred, average="macro", zero_division=0))


@pytest.mark.parametrize("outputs", [1, 3])
def test_regression_metrics_equal_sklearn(rng, outputs, kernels):
    model = _model("mse", outputs)
    target = 1e4 + rng.standard_normal((N, outputs))  # a large mean: the streamed spread must not cancel
    out = target + 0.3 * rng.standard_normal((N, outputs))
    got = _streamed(model, ["mae", "mse", "rmse", "r2", "mean_absolute_error"], out, target, kernels)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(target, out), rel=1e-12)
    assert got["mean_absolute_error"] == got["mae"]
    assert got["mse"] == pytest.approx(skm.mean_squared_error(target, out), rel=1e-10)
    rmse = np.sqrt(skm.mean_squared_error(target, out, multioutput="raw_values")).mean()  # (sklearn < 1.4 too)
    assert got["rmse"] == pytest.approx(rmse, rel=1e-10)
    assert got["r2"] == pytest.approx(skm.r2_score(target, out), rel=1e-9)


def test_r2_of_a_constant_target_follows_sklearn(rng, kernels):
    model = _model("mse", 2)
    target = np.column_stack([np.full(N, 3.0), rng.standard_normal(N)])
    out = target.copy()
    out[:, 1] += 0.1
    assert _streamed(model, ["r2"], out, target, kernels)["r2"] == pytest.approx(skm.r2_score(target, out))
    out[0, 0] = 2.0
    assert _streamed(model, ["r2"], out, target, kernels)["r2"] == pytest.approx(skm.r2_score(target, out))


@pytest.mark.filterwarnings("ignore:R\\^2 score is not well-defined")  # sklearn's warning for one sample
def test_r2_of_a_single_row_is_nan_as_sklearn(rng, kernels):
    model = _model("mse", 2)
    target, out = rng.standard_normal((1, 2)), rng.standard_normal((1, 2))
    assert np.isnan(skm.r2_score(target, out))
    assert np.isnan(_streamed(model, ["r2"], out, target, kernels)["r2"])
    assert np.isnan(_streamed(model, ["r2"], target.copy(), target, kernels)["r2"])  # even predicted exactly
    model.compile("mse", "sgd", metrics=["r2"])
    history = model.fit(np.ones((1, 3)), target, epochs=1, verbose=0, validation_data=(np.ones((1, 3)), target))
    assert np.isnan(history.history["r2"][0]) and np.isnan(history.history["val_r2"][0])


def test_the_kernels_tell_a_pass_without_batches_from_one_without_positives():
    """nan before any batch; a multi-label pass with no positive anywhere (all counts 0) scores 0,
    through the Python updates and through the kernels alike."""
    model = _model("binary_cross_entropy", 2)
    out, Y = -np.ones((9, 2)), np.zeros((9, 2))
    tracker = Tracker(model, fnn.metrics.check_metrics(["f1"], model.loss))
    tracker.accumulate_inside(9)
    assert np.isnan(tracker.results()["f1"])
    assert _streamed(model, ["f1"], out, Y) == _streamed(model, ["f1"], out, Y, kernels=True) == {"f1": 0.0}


def test_a_function_metric_gets_the_whole_epoch(rng):
    model = _model("cross_entropy", 3)
    y, out = rng.integers(0, 3, N), rng.standard_normal((N, 3))

    def balanced(y_true, y_pred):
        return skm.balanced_accuracy_score(y_true, y_pred.argmax(axis=1))

    got = _streamed(model, [balanced], out, y)
    assert got == {"balanced": pytest.approx(skm.balanced_accuracy_score(y, out.argmax(axis=1)))}


def test_auc_leaves_out_a_class_without_positives(rng, kernels):
    """A class that is never a label has no ROC curve: the mean is over the other classes."""
    model = _model("cross_entropy", 3)
    y, out = rng.integers(0, 2, N), rng.standard_normal((N, 3))  # class 2 is never a label
    probs = np.exp(out) / np.exp(out).sum(axis=1, keepdims=True)
    expected = np.mean([skm.roc_auc_score(y == c, probs[:, c]) for c in (0, 1)])
    assert _streamed(model, ["auc"], out, y, kernels) == {"auc": pytest.approx(expected, rel=1e-12)}


# ------------------------------------------------------------------------------ in fit and evaluate
def _frozen_fit(rng, metrics, callbacks=None, epochs=2, verbose=0):
    """lr = 0: the outputs in training equal the predictions after it, so the epoch's metrics
    can be checked against sklearn on predict()."""
    X = rng.standard_normal((45, 3))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)
    model = fnn.Sequential([fnn.Dense(3, 3)], seed=1, dtype="float64").compile(
        "cross_entropy", fnn.optim.SGD(lr=0.0), metrics=metrics
    )
    history = model.fit(
        X[:35],
        y[:35],
        epochs=epochs,
        batch_size=8,
        validation_data=(X[35:], y[35:]),
        callbacks=callbacks,
        verbose=verbose,
    )
    return model, history, X, y


def test_fit_logs_metrics_and_val_metrics_equal_to_sklearn(rng):
    model, history, X, y = _frozen_fit(rng, ["f1", "auc", "accuracy"])
    for part, prefix in ((slice(None, 35), ""), (slice(35, None), "val_")):
        probs = model.predict_proba(X[part])
        f1 = skm.f1_score(y[part], probs.argmax(axis=1), average="macro", zero_division=0)
        assert history.history[f"{prefix}f1"] == pytest.approx([f1, f1], rel=1e-12)
        auc = skm.roc_auc_score(y[part], probs, multi_class="ovr")
        assert history.history[f"{prefix}auc"] == pytest.approx([auc, auc], rel=1e-12)
    logs = model.evaluate(X[35:], y[35:])
    assert set(logs) == {"loss", "accuracy", "f1", "auc"}
    assert logs["f1"] == history.history["val_f1"][-1]


FIT_CASES = {  # loss, outputs, metrics, fit options
    "multiclass": (
        "cross_entropy",
        3,
        ["f1", "auc", "top_k_accuracy", fnn.metrics.Recall(average="micro", name="r")],
        {},
    ),
    "multiclass_weighted_unshuffled": (
        "cross_entropy",
        3,
        ["precision", "auc"],
        {"class_weight": {0: 2.0, 1: 0.5}, "shuffle": False},
    ),
    "binary_weighted": ("binary_cross_entropy", 1, ["f1", "auc", "binary_accuracy"], {"sample_weight": True}),
    "multilabel_unshuffled": ("binary_cross_entropy", 3, ["f1", "auc", "binary_accuracy"], {"shuffle": False}),
    "regression_weighted": ("mse", 2, ["mae", "mse", "rmse", "r2"], {"sample_weight": True}),
    "sequence": ("cross_entropy", 3, ["f1", "auc"], {}),  # a label per position
}


@pytest.mark.parametrize("case", list(FIT_CASES))
@pytest.mark.parametrize("fuse", ["never", "always"])
def test_metrics_accumulated_inside_fits_step_calls_equal_pythons(rng, monkeypatch, tmp_path, case, fuse):
    """fit adds each batch to the built-in metrics inside its step call (fastnn._step_feed), fused
    or call by call; the logs equal those of the metrics' Python updates (regression: to rounding,
    the sums' order differs)."""
    loss, k, metrics, options = FIT_CASES[case]
    monkeypatch.setattr(_config, "FUSE", fuse)
    monkeypatch.setenv("FASTNN_CACHE_DIR", str(tmp_path))
    shape = (4, 3) if case == "sequence" else (3,)
    X = rng.standard_normal((29, *shape))
    if loss == "cross_entropy":
        y = rng.integers(0, k, (29, 4) if case == "sequence" else 29)
    else:
        y = (
            (rng.standard_normal((29, k)) > 0).astype(float)
            if loss == "binary_cross_entropy"
            else rng.standard_normal((29, k))
        )
    options = {**options, "sample_weight": np.linspace(0.5, 2, 29)} if options.get("sample_weight") else options

    def fit():
        layers = [fnn.Dense(3, 6, activation="tanh"), fnn.Dense(6, k)]
        model = fnn.Sequential(layers, input_shape=shape, seed=1, dtype="float32").compile(
            loss, "adam", metrics=metrics
        )
        return model.fit(X, y, epochs=2, batch_size=8, verbose=0, **options).history

    inside = fit()
    added = []
    original = _step_feed.StepFeed.metrics_added
    monkeypatch.setattr(_step_feed.StepFeed, "metrics_added", lambda feed: added.append(original(feed)) or added[-1])
    assert fit() == inside and added and all(added)  # every step's call added its batch
    monkeypatch.setattr(Tracker, "accumulate_inside", lambda tracker, rows: [])  # Python's updates
    python = fit()
    assert python.keys() == inside.keys()
    for key in python:
        if loss == "mse":
            assert python[key] == pytest.approx(inside[key], rel=1e-12), key
        else:
            assert python[key] == inside[key], key


def test_early_stopping_on_val_f1_maximises(rng):
    stop = fnn.callbacks.EarlyStopping(monitor="val_f1", patience=2)
    assert stop.mode == "max" and fnn.callbacks.EarlyStopping(monitor="val_r2").mode == "max"
    model, history, *_ = _frozen_fit(rng, ["f1"], callbacks=[stop], epochs=6)
    assert len(history.history["val_f1"]) == 3  # a constant f1: no improvement after epoch 1


def test_the_epoch_line_shows_the_metrics(rng, capsys):
    _frozen_fit(rng, ["f1"], epochs=1, verbose=2)
    line = capsys.readouterr().err
    assert "f1: " in line and "val_f1: " in line


def test_a_function_metric_beside_metrics_counted_inside_the_steps_gets_every_batch(rng):
    def rows_seen(y_true, y_pred):
        return float(len(y_true))

    model, history, X, y = _frozen_fit(rng, ["f1", rows_seen])
    assert history.history["rows_seen"] == [35.0, 35.0] and history.history["val_rows_seen"] == [10.0, 10.0]
    pred = model.predict(X[:35]).argmax(axis=1)
    assert history.history["f1"][-1] == pytest.approx(skm.f1_score(y[:35], pred, average="macro"))


def test_metrics_train_with_sample_weights_and_stay_unweighted(rng):
    X = rng.standard_normal((30, 3))
    y = (X[:, 0] > 0).astype(int)
    model = fnn.Sequential([fnn.Dense(3, 2)], seed=0, dtype="float64").compile(
        "cross_entropy", fnn.optim.SGD(lr=0.0), metrics=["recall"]
    )
    history = model.fit(X, y, batch_size=7, sample_weight=np.linspace(0, 2, 30), verbose=0)
    pred = model.predict(X).argmax(axis=1)
    assert history.history["recall"] == [pytest.approx(skm.recall_score(y, pred, average="macro"))]


# ------------------------------------------------------------------------------ configuration
def test_compile_keeps_metrics_unless_given_and_fit_with_a_loss_keeps_them():
    model = _model("cross_entropy", 3).compile("cross_entropy", "sgd", metrics=["f1"])
    model.compile("cross_entropy", "adam")
    assert [m.name for m in model.metrics] == ["f1"]
    model.fit(np.zeros((4, 3)), np.arange(4) % 3, loss="cross_entropy", verbose=0)
    assert [m.name for m in model.metrics] == ["f1"]
    assert model.compile("cross_entropy", "sgd", metrics=[]).metrics == []


def test_bad_metrics_are_refused_clearly():
    model = _model("cross_entropy", 3)
    with pytest.raises(ValueError, match=r"Unknown metric 'precison'. Did you mean 'precision'\? Known: accuracy, bin"):
        model.compile("cross_entropy", "sgd", metrics=["precison"])
    with pytest.raises(ValueError, match="metric 'f1' does not apply to loss 'mse'"):
        model.compile("mse", "sgd", metrics=["f1"])
    with pytest.raises(ValueError, match="metric 'accuracy' does not apply to loss 'mse'"):
        model.compile("mse", "sgd", metrics=["accuracy"])
    with pytest.raises(ValueError, match="'mae' does not apply to loss 'cross_entropy'.*regression loss"):
        model.compile("cross_entropy", "sgd", metrics=["mae"])
    with pytest.raises(ValueError, match="'top_k_accuracy' does not apply to loss 'binary_cross_entropy'"):
        model.compile("binary_cross_entropy", "sgd", metrics=["top_k_accuracy"])
    with pytest.raises(ValueError, match="'binary_accuracy' does not apply to loss 'cross_entropy'"):
        model.compile("cross_entropy", "sgd", metrics=["binary_accuracy"])
    with pytest.raises(ValueError, match=r"two metrics \(or a metric and a key fit logs.*\) are named 'f1'"):
        model.compile("cross_entropy", "sgd", metrics=["f1", fnn.metrics.F1(average="micro")])

    def accuracy(y_true, y_pred):
        return 0.0

    with pytest.raises(ValueError, match="are named 'accuracy'"):
        model.compile("cross_entropy", "sgd", metrics=[accuracy])
    with pytest.raises(ValueError, match="Unknown average .samples.. Expected one of: binary, macro"):
        fnn.metrics.F1(average="samples")
    with pytest.raises(ValueError, match="k must be"):
        fnn.metrics.TopKAccuracy(k=0)
    with pytest.raises(TypeError, match="a metric must be a name"):
        model.compile("cross_entropy", "sgd", metrics=[3])
    model.compile("cross_entropy", "sgd", metrics=[fnn.metrics.F1(average="binary")])
    with pytest.raises(ValueError, match="average='binary' needs one binary output"):
        _streamed(model, model.metrics, np.eye(3), np.arange(3))


def test_save_load_pickle_and_copies_keep_the_metrics(tmp_path, rng):
    model = _model("cross_entropy", 3).compile(
        "cross_entropy", "sgd", metrics=[fnn.metrics.F1(average="weighted"), fnn.metrics.TopKAccuracy(k=2), "auc"]
    )
    model.save(tmp_path / "m.fnn")
    for other in (fnn.load(tmp_path / "m.fnn"), pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert [m.get_config() for m in other.metrics] == [m.get_config() for m in model.metrics]
    X, y = rng.standard_normal((9, 3)), np.arange(9) % 3
    assert fnn.load(tmp_path / "m.fnn").evaluate(X, y) == model.evaluate(X, y)


def test_a_function_metric_is_copied_but_dropped_from_files_with_a_warning(tmp_path):
    def spread(y_true, y_pred):
        return float(np.ptp(y_pred))

    model = _model("mse", 1).compile("mse", "sgd", metrics=["mae", spread])
    assert [m.name for m in copy.deepcopy(model).metrics] == ["mae", "spread"]
    with pytest.warns(UserWarning, match="metric 'spread' is a Python function and is not saved"):
        model.save(tmp_path / "m.fnn")
    assert [m.name for m in fnn.load(tmp_path / "m.fnn").metrics] == ["mae"]


def test_readme_training_options_example_runs(tmp_path, monkeypatch):
    from tests.test_readme import python_example

    monkeypatch.chdir(tmp_path)
    heading = "### Training options"
    exec(compile(python_example(heading), f"README.md {heading}", "exec"), {})


# ------------------------------------------------------------------------------ exact resume
@pytest.mark.parametrize(
    "data, accumulate, through_file",
    [("arrays", 1, False), ("arrays", 1, True), ("arrays", 2, True), ("dataset", 1, True), ("dataset", 2, False)],
)
def test_an_epoch_resumed_mid_way_logs_the_metrics_of_the_uninterrupted_one(
    rng, tmp_path, data, accumulate, through_file
):
    """Interrupted in the middle of epoch 2 (inside an accumulation group for accumulate=2, batch
    5 of 8), resumed in this process or from a file: the epoch's loss and metrics (counts, sums
    and the AUC's kept scores) are those of the run without interruption."""
    X = rng.standard_normal((60, 3))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)
    metrics = ["f1", "auc", fnn.metrics.TopKAccuracy(k=2), fnn.metrics.Recall(average="micro", name="rec")]

    def fit(model, **kwargs):
        source = (X, y) if data == "arrays" else (fnn.data.ArrayDataset(X, y, block_rows=25), None)
        return model.fit(*source, batch_size=8, accumulate=accumulate, verbose=0, **kwargs).history

    def model():
        return fnn.Sequential([fnn.Dense(3, 3)], seed=1, dtype="float64").compile(
            "cross_entropy", fnn.optim.Adam(lr=0.05), metrics=metrics
        )

    expected = fit(model(), epochs=2)
    interrupted = model()
    with pytest.raises(KeyboardInterrupt):
        fit(interrupted, epochs=2, callbacks=[InterruptAt(1, 4)])
    assert interrupted.state.cursor.epoch == 1 and 0 < interrupted.state.cursor.samples < 60
    if through_file:
        interrupted.save(tmp_path / "m.safetensors")
        interrupted = fnn.load(tmp_path / "m.safetensors")
    resumed = fit(interrupted, epochs=1)
    assert set(resumed) == set(expected) and "auc" in resumed
    assert {key: values[0] for key, values in resumed.items()} == {key: values[1] for key, values in expected.items()}
