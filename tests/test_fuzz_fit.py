"""Differential tests of fit's paths: seeded random small models (Dense, BatchNorm1d, Dropout,
LayerNorm; a random loss, optimizer and dtype) trained along two paths that must agree.

Bit equality where fastnn promises it (docs/guarantees.md: the same batches in the same order give
the same bits, whatever feeds them; an interrupted and resumed fit is the uninterrupted one), a tight
tolerance where the arithmetic differs (weights of ones, accumulation = a larger batch in float64).
"""

from __future__ import annotations

import os
import pickle
import signal

import numpy as np
import pytest

import fastnn as fnn
from fastnn.sklearn import MLPClassifier, MLPRegressor

SEEDS = [0, 1, 2, 3, 4]
LOSSES = ["cross_entropy", "mse", "binary_cross_entropy", "huber", "mae"]
OPTIMIZERS = {
    "sgd": lambda lr: fnn.optim.SGD(lr=lr),
    "nesterov": lambda lr: fnn.optim.SGD(lr=lr, momentum=0.9, nesterov=True),
    "adam": lambda lr: fnn.optim.Adam(lr=lr),
    "adamw": lambda lr: fnn.optim.AdamW(lr=lr, weight_decay=1e-2),
    "rmsprop": lambda lr: fnn.optim.RMSProp(lr=lr),
    "adagrad": lambda lr: fnn.optim.Adagrad(lr=lr),
    "lion": lambda lr: fnn.optim.Lion(lr=lr / 10),
}


def _spec(seed, *, batch_dependent=True, loss=None):
    """A random model description: layers, loss, optimizer, dtype, and data sizes."""
    rng = np.random.default_rng(seed)
    kinds = ["dense", "ln"] + (["bn", "drop"] if batch_dependent else [])
    loss = loss or LOSSES[rng.integers(len(LOSSES))]
    classes = int(rng.integers(2, 4))
    return {
        "d_in": int(rng.integers(2, 6)),
        "hidden": int(rng.integers(3, 8)),
        "extra": [kinds[i] for i in rng.integers(len(kinds), size=int(rng.integers(1, 3)))],
        "loss": loss,
        "classes": classes,
        "out": classes if loss == "cross_entropy" else 1 if loss == "binary_cross_entropy" else 2,
        "optimizer": list(OPTIMIZERS)[rng.integers(len(OPTIMIZERS))],
        "lr": float(10 ** rng.uniform(-3, -1.5)),
        "dtype": ["float32", "float64"][rng.integers(2)],
        "seed": int(rng.integers(1000)),
        "n": int(rng.integers(14, 30)),
        "batch_size": int(rng.integers(3, 7)),
        "epochs": int(rng.integers(2, 4)),
    }


def _build(spec):
    h = spec["hidden"]
    layers = [fnn.Dense(spec["d_in"], h, activation="tanh")]
    for kind in spec["extra"]:
        layers.append(
            {
                "dense": lambda: fnn.Dense(h, h, activation="relu"),
                "ln": lambda: fnn.LayerNorm(h),
                "bn": lambda: fnn.BatchNorm1d(h),
                "drop": lambda: fnn.Dropout(0.3),
            }[kind]()
        )
    layers.append(fnn.Dense(h, spec["out"]))
    model = fnn.Sequential(layers, seed=spec["seed"], dtype=spec["dtype"])
    return model.compile(spec["loss"], OPTIMIZERS[spec["optimizer"]](spec["lr"]))


def _data(spec, seed=100):
    rng = np.random.default_rng(seed + spec["seed"])
    n, dtype = spec["n"], spec["dtype"]
    X = rng.standard_normal((n, spec["d_in"])).astype(dtype)
    if spec["loss"] == "cross_entropy":
        y = rng.integers(0, spec["classes"], n)
    elif spec["loss"] == "binary_cross_entropy":
        y = rng.integers(0, 2, (n, 1)).astype(dtype)
    else:
        y = rng.standard_normal((n, spec["out"])).astype(dtype)
    return X, y


def _flat(obj, prefix=""):
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _flat(val, f"{prefix}/{key}").items()}
    if isinstance(obj, (list, tuple)):
        return {k: v for i, val in enumerate(obj) for k, v in _flat(val, f"{prefix}[{i}]").items()}
    return {prefix: np.array(obj, copy=True)}


def _state(model, history=None):
    """Everything a fit leaves: parameters, buffers, optimizer state, epochs done, history."""
    snap = model.snapshot()
    record = {"params": snap["params"], "buffers": snap["buffers"], "optimizer": model.optimizer.state_dict()}
    record["epochs_done"] = model.state.epochs_done
    if history is not None:
        record["history"] = {k: list(v) for k, v in history.history.items()}
    return _flat(record)


def _assert_same(a, b, *, exact=True, rtol=1e-6, atol=1e-9, skip=()):
    keys = sorted(k for k in set(a) | set(b) if not any(s in k for s in skip))
    missing = [k for k in keys if k not in a or k not in b]
    assert not missing, f"entries in one run only: {missing}"
    for k in keys:
        x, y = a[k], b[k]
        assert x.shape == y.shape, k
        if exact or x.dtype.kind not in "fc":
            np.testing.assert_array_equal(x, y, err_msg=k)
        else:
            np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=k)


def _fit(spec, X, y=None, **options):
    model = _build(spec)
    history = model.fit(X, y, verbose=0, **options)
    return _state(model, history)


def _batches(X, y, size, w=None):
    return [
        (X[i : i + size], y[i : i + size]) + (() if w is None else (w[i : i + size],)) for i in range(0, len(X), size)
    ]


def _bs_without_last_one(spec):
    """A batch size whose last batch is not one row (a BatchNorm skips that one in arrays' fits)."""
    size = spec["batch_size"]
    return size + 1 if spec["n"] % size == 1 else size


# -- the same batches from any source ---------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_arrays_batches_callable_dataset_and_memmap_train_alike(seed, tmp_path):
    spec = _spec(seed)
    X, y = _data(spec)
    size, epochs = _bs_without_last_one(spec), spec["epochs"]
    reference = _fit(spec, X, y, epochs=epochs, batch_size=size, shuffle=False)
    batches = _batches(X, y, size)
    _assert_same(reference, _fit(spec, batches, epochs=epochs))
    _assert_same(reference, _fit(spec, lambda: iter(batches), epochs=epochs))
    stream = iter(batches * epochs)  # one stream for all epochs
    _assert_same(reference, _fit(spec, stream, epochs=epochs, steps_per_epoch=len(batches)))
    dataset = fnn.data.ArrayDataset(X, y)
    _assert_same(reference, _fit(spec, dataset, epochs=epochs, batch_size=size, shuffle=False))
    mapped = np.memmap(tmp_path / "x.dat", dtype=X.dtype, mode="w+", shape=X.shape)
    mapped[:] = X
    mapped.flush()
    _assert_same(reference, _fit(spec, mapped, y, epochs=epochs, batch_size=size, shuffle=False))
    shuffled = _fit(spec, X, y, epochs=epochs, batch_size=size, shuffle=True)
    _assert_same(shuffled, _fit(spec, mapped, y, epochs=epochs, batch_size=size, shuffle=True))
    del mapped


# -- weights ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_weights_of_ones_class_weight_and_scaled_weights(seed):
    spec = _spec(seed, loss="cross_entropy")
    X, y = _data(spec)
    size, epochs = spec["batch_size"], spec["epochs"]
    options = {"epochs": epochs, "batch_size": size, "shuffle": True}
    tol = {"exact": False, "rtol": 1e-5, "atol": 1e-6}
    plain = _fit(spec, X, y, **options)
    _assert_same(plain, _fit(spec, X, y, sample_weight=np.ones(len(X)), **options), **tol)
    rng = np.random.default_rng(seed)
    class_weight = {c: float(rng.uniform(0.3, 2.0)) for c in range(spec["classes"])}
    weights = np.array([class_weight[c] for c in y])
    by_class = _fit(spec, X, y, class_weight=class_weight, **options)
    _assert_same(by_class, _fit(spec, X, y, sample_weight=weights, **options), **tol)
    # a batch's loss is sum w l / sum w (documented in Sequential.fit): scaling every weight changes nothing
    _assert_same(by_class, _fit(spec, X, y, sample_weight=weights * 8.0, **options), **tol)
    in_order = _fit(spec, X, y, class_weight=class_weight, epochs=epochs, batch_size=size, shuffle=False)
    _assert_same(in_order, _fit(spec, _batches(X, y, size), class_weight=class_weight, epochs=epochs))


# -- accumulate -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("weighted", [False, True])
def test_accumulate_is_one_larger_batch(seed, weighted):
    spec = dict(_spec(seed, batch_dependent=False), dtype="float64")  # BatchNorm and Dropout see each batch
    X, y = _data(spec)
    k = 2 + seed % 2
    size = spec["batch_size"]  # n is not a multiple of size * k for some seeds: a ragged last group
    weights = np.random.default_rng(seed).uniform(0.2, 2.0, len(X)) if weighted else None
    options = {"epochs": spec["epochs"], "shuffle": False, "sample_weight": weights}
    big = _fit(spec, X, y, batch_size=size * k, **options)
    grouped = _fit(spec, X, y, batch_size=size, accumulate=k, **options)
    _assert_same(big, grouped, exact=False, rtol=1e-9, atol=1e-12, skip=["history"])


# -- validation_split ---------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_validation_split_is_validation_data_of_the_last_rows(seed):
    spec = dict(_spec(seed), n=20)
    X, y = _data(spec)
    weights = np.random.default_rng(seed).uniform(0.2, 2.0, 20)
    options = {"epochs": spec["epochs"], "batch_size": 4, "shuffle": True}
    split = _fit(spec, X, y, validation_split=0.25, sample_weight=weights, **options)  # Keras: 15 train rows
    given = _fit(
        spec, X[:15], y[:15], validation_data=(X[15:], y[15:], weights[15:]), sample_weight=weights[:15], **options
    )
    _assert_same(split, given)
    assert any(k.startswith("/history/val_loss") for k in split)
    dataset = fnn.data.ArrayDataset(X, y, sample_weight=weights)
    options["shuffle"] = False
    from_dataset = _fit(spec, dataset, validation_split=0.25, **options)
    given = _fit(
        spec, X[:15], y[:15], validation_data=(X[15:], y[15:], weights[15:]), sample_weight=weights[:15], **options
    )
    _assert_same(from_dataset, given)


# -- interrupted and resumed ------------------------------------------------------------------------
class _InterruptAt(fnn.callbacks.Callback):
    """KeyboardInterrupt at a hook's ``at``-th call (once)."""

    state_key = "interrupt"

    def __init__(self, at, hook):
        self.at, self.hook, self.calls = at, hook, 0

    def _call(self, hook):
        if hook == self.hook:
            self.calls += 1
            if self.calls == self.at:
                raise KeyboardInterrupt

    def on_batch_begin(self, batch, logs=None):
        self._call("batch_begin")

    def on_batch_end(self, batch, logs=None):
        self._call("batch_end")


def _callbacks(kind):
    return [
        [],
        [fnn.callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=0, min_delta=0.01)],
        [fnn.callbacks.LearningRateScheduler(fnn.schedules.CosineAnnealing(0.01, T_max=5), per="batch")],
        [fnn.callbacks.EarlyStopping("loss", patience=1, min_delta=0.01, restore_best_weights=True)],
    ][kind]


@pytest.mark.parametrize("seed", range(12))
def test_an_interrupted_fit_resumed_is_the_uninterrupted_fit(seed, tmp_path):
    rng = np.random.default_rng(seed)
    spec = _spec(seed + 10)
    X, y = _data(spec)
    size, epochs = _bs_without_last_one(spec), spec["epochs"]
    k, kind, how = int(rng.integers(1, 3)), seed % 4, seed % 3
    weights = rng.uniform(0.2, 2.0, len(X)) if seed % 2 else None
    options = {"batch_size": size, "shuffle": bool(seed % 2), "accumulate": k, "sample_weight": weights}
    reference = _build(spec)
    history = reference.fit(X, y, epochs=epochs, verbose=0, callbacks=_callbacks(kind), **options)
    expected = _state(reference, history)

    model, callbacks, kept = _build(spec), _callbacks(kind), fnn.callbacks.History()
    at = int(rng.integers(1, 2 * -(-len(X) // size) + 1))  # in the first two epochs (EarlyStopping runs two)
    stop = _InterruptAt(at, ["batch_begin", "batch_end"][seed % 2])
    for _ in range(3):
        try:
            model.fit(
                X, y, epochs=epochs - model.state.epochs_done, verbose=0, callbacks=[*callbacks, stop, kept], **options
            )
        except KeyboardInterrupt:
            if how == 1:
                model, callbacks = pickle.loads(pickle.dumps(model)), [pickle.loads(pickle.dumps(c)) for c in callbacks]
            elif how == 2:
                model.save(tmp_path / "m.fnn")
                model = fnn.load(tmp_path / "m.fnn")
            continue
        break
    assert stop.calls >= stop.at  # it was interrupted
    _assert_same(expected, _state(model) | _flat({"history": kept.history}))


@pytest.mark.parametrize("seed", SEEDS)
def test_epochs_over_two_fits_are_one_fit(seed):
    spec = _spec(seed + 20)
    X, y = _data(spec)
    options = {"batch_size": _bs_without_last_one(spec), "shuffle": True}
    one = _fit(spec, X, y, epochs=3, **options)
    model = _build(spec)
    first, second = model.fit(X, y, epochs=1, verbose=0, **options), model.fit(X, y, epochs=2, verbose=0, **options)
    joined = {k: first.history[k] + second.history[k] for k in first.history}
    _assert_same(one, _state(model) | _flat({"history": joined}))


# -- Ctrl-C while callbacks run (regression: the callbacks after the interrupted one missed the end) --------
class _CtrlC(fnn.callbacks.Callback):
    """A real SIGINT from inside a hook, the first time it runs; or (``how="raise"``) the hook
    itself stops fit by raising KeyboardInterrupt."""

    state_key = "ctrl-c"

    def __init__(self, hook, how="signal"):
        self.hook, self.how, self.fired = hook, how, False

    def _fire(self, hook):
        if hook == self.hook and not self.fired:
            self.fired = True
            if self.how == "raise":
                raise KeyboardInterrupt("the callback's own stop")
            os.kill(os.getpid(), signal.SIGINT)

    def on_epoch_end(self, epoch, logs=None):
        self._fire("epoch_end")

    def on_batch_end(self, batch, logs=None):
        self._fire("batch_end")


class _BatchTally(fnn.callbacks.Callback):
    """Counts batch ends (its state is saved with the model)."""

    state_key = "tally"

    def __init__(self):
        self.seen = 0

    def on_batch_end(self, batch, logs=None):
        self.seen += 1

    def state_dict(self):
        return {"seen": self.seen}

    def load_state_dict(self, state):
        self.seen = state["seen"]


@pytest.mark.parametrize("accumulate", [1, 2])
@pytest.mark.parametrize("how", ["signal", "raise"])
@pytest.mark.parametrize("hook", ["epoch_end", "batch_end"])
def test_ctrl_c_in_a_callback_lets_the_later_callbacks_see_the_end(hook, how, accumulate, rng, tmp_path):
    """A Ctrl-C, or a callback's own ``raise KeyboardInterrupt``, in the first callback: the later
    ones (ReduceLROnPlateau, a batch tally, History, ModelCheckpoint) still see that end, fit stops
    at the step boundary (with accumulate=2, after the open group's update), and the resumed fit is
    the uninterrupted one."""
    X, y = rng.standard_normal((24, 3)), rng.integers(0, 2, 24)

    def model():
        layers = [fnn.Dense(3, 4, activation="tanh"), fnn.Dense(4, 2)]
        return fnn.Sequential(layers, seed=0, dtype="float64").compile("cross_entropy", fnn.optim.SGD(lr=0.1))

    def plateau():  # never improves after the first epoch: halves the rate at every later epoch's end
        return fnn.callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=0, min_delta=10.0)

    options = {"batch_size": 8, "accumulate": accumulate, "verbose": 0}
    reference, tally = model(), _BatchTally()
    reference.fit(X, y, epochs=3, callbacks=[plateau(), tally], **options)
    net, ctrl_c, later, counted = model(), _CtrlC(hook, how), plateau(), _BatchTally()
    checkpoint = fnn.callbacks.ModelCheckpoint(tmp_path / "m-{epoch}.fnn")
    with pytest.raises(KeyboardInterrupt, match="the callback's own stop" if how == "raise" else "^$"):
        net.fit(X, y, epochs=3, callbacks=[ctrl_c, later, counted, checkpoint], **options)
    if hook == "epoch_end":  # the epoch counts as done: in the History and the checkpoint of its end
        assert net.state.epochs_done == 1 and net.state.cursor is None
        assert net.history.epoch == [0] and checkpoint.saved == [str(tmp_path / "m-1.fnn")]
    else:  # after batch 0's end, or with accumulate=2 after batch 1's (its group's update)
        assert net.state.epochs_done == 0 and net.state.cursor.batches == accumulate
        assert counted.seen == accumulate
    net.fit(X, y, epochs=3 - net.state.epochs_done, callbacks=[ctrl_c, later, counted], **options)
    assert net.optimizer.lr == reference.optimizer.lr == 0.025
    assert counted.seen == tally.seen == 9
    _assert_same(_state(reference), _state(net))


# -- schedules ----------------------------------------------------------------------------------------------
class _RateLog(fnn.callbacks.Callback):
    """The optimizer's rate as each batch starts (after a scheduler set it)."""

    def __init__(self):
        self.rates = []

    def on_batch_begin(self, batch, logs=None):
        self.rates.append(float(self.model.optimizer.lr))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_a_per_batch_schedule_sets_the_rate_of_each_update(k, rng):
    X, y = rng.standard_normal((23, 3)), rng.integers(0, 2, 23)  # 6 batches of 4, the last of 3
    model = fnn.Sequential([fnn.Dense(3, 2)], seed=0).compile("cross_entropy", "adam")
    schedule, log = fnn.schedules.CosineAnnealing(0.05, T_max=7), _RateLog()
    scheduler = fnn.callbacks.LearningRateScheduler(schedule, per="batch")
    model.fit(X, y, epochs=2, batch_size=4, accumulate=k, verbose=0, callbacks=[scheduler, log])
    expected, update = [], 0
    for _ in range(2):
        for b in range(6):
            expected.append(schedule(update))
            update += (b + 1) % k == 0 or b == 5  # a group ends after k batches or at the epoch's end
    np.testing.assert_allclose(log.rates, expected, rtol=1e-12)
    assert model.optimizer.step_count == update


def test_a_keras_schedule_of_epoch_and_rate_is_given_the_current_rate(rng):
    """Keras' LearningRateScheduler calls ``schedule(epoch, lr)``; it raised TypeError (missing 'lr')."""
    X, y = rng.standard_normal((8, 2)), rng.standard_normal((8, 1))
    model = fnn.Sequential([fnn.Dense(2, 1)], seed=0).compile("mse", fnn.optim.SGD(lr=0.1))
    scheduler = fnn.callbacks.LearningRateScheduler(lambda epoch, lr: lr if epoch == 0 else lr * 0.5)
    history = model.fit(X, y, epochs=3, verbose=0, callbacks=[scheduler])
    assert history["lr"] == pytest.approx([0.1, 0.05, 0.025])
    one_argument = fnn.callbacks.LearningRateScheduler(lambda epoch, scale=2.0: 0.1 / (epoch + scale))
    history = model.fit(X, y, epochs=2, verbose=0, callbacks=[one_argument])  # epochs 3 and 4
    assert history["lr"] == pytest.approx([0.1 / 5, 0.1 / 6])


# -- frozen layers ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_a_frozen_layer_keeps_its_parameters_and_optimizer_state(seed):
    spec = _spec(seed + 30)
    X, y = _data(spec)
    model = _build(spec)
    snapshot = _flat(model.snapshot()["params"])
    model.freeze(model.layers[0])
    model.fit(X, y, epochs=2, batch_size=_bs_without_last_one(spec), verbose=0)
    after = _flat(model.snapshot()["params"])
    same = {k for k in snapshot if np.array_equal(snapshot[k], after[k])}
    assert {k for k in snapshot if k.startswith("/0.")} == {"/0.weight", "/0.bias"}
    assert {"/0.weight", "/0.bias"} <= same
    assert same != set(snapshot)  # the others trained
    trained = np.zeros(model.params.size, bool)  # the flat buffer's trainable ranges
    for lo, hi in fnn.freezing.trainable_ranges(model):
        trained[lo:hi] = True
    assert 0 < np.count_nonzero(~trained) == snapshot["/0.weight"].size + snapshot["/0.bias"].size
    for name, value in model.optimizer.state_dict().items():  # the frozen layer's moments were never written
        if isinstance(value, np.ndarray) and value.shape == model.params.shape:
            assert not value[~trained].any(), name


# -- scikit-learn estimators ------------------------------------------------------------------------------
@pytest.mark.parametrize("estimator", [MLPClassifier, MLPRegressor])
def test_partial_fit_warm_start_and_clone_give_the_fit_of_max_iter_epochs(estimator, rng):
    from sklearn.base import clone

    X = rng.standard_normal((30, 4))
    y = rng.integers(0, 3, 30) if estimator is MLPClassifier else rng.standard_normal(30)
    params = {"hidden_layer_sizes": (5,), "random_state": 3, "batch_size": 7, "tol": 0.0, "n_iter_no_change": 100}
    full = estimator(max_iter=3, **params).fit(X, y)
    stepwise, warm = estimator(**params), estimator(max_iter=1, warm_start=True, **params)
    for _ in range(3):
        if estimator is MLPClassifier:
            stepwise.partial_fit(X, y, classes=[0, 1, 2])
        else:
            stepwise.partial_fit(X, y)
        warm.fit(X, y)
    for other in (stepwise, warm, clone(full).fit(X, y)):
        _assert_same(_state(full.model_), _state(other.model_))
        assert other.loss_curve_ == full.loss_curve_
