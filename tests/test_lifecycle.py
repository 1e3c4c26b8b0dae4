"""Life-cycle paths of a model: copies, ownership, interrupts, threads, stale plans, allocation
failures, resuming on other data, callback state keys, non-finite gradients."""

import copy
import os
import pickle
import signal
import threading

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _config, _step_feed
from fastnn import callbacks as cb_mod


def _data(rng, n=48, d=5, k=3):
    X = rng.standard_normal((n, d)).astype(np.float32)
    return X, (np.abs(X[:, 0] * 3).astype(int) % k)


def _model(seed=0, dropout=0.2):
    model = fnn.Sequential(
        [fnn.Dense(5, 12, activation="relu"), fnn.BatchNorm1d(12), fnn.Dropout(dropout), fnn.Dense(12, 3)], seed=seed
    )
    model.compile("cross_entropy", fnn.optim.Adam(lr=1e-2))
    return model


# -- copies ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("trained", [False, True])
def test_copies_are_independent_models_that_train(how, trained, rng, tmp_path):
    X, y = _data(rng)
    model = _model()
    if trained:
        model.fit(X, y, epochs=1, batch_size=16, verbose=0)
    clone = copy.deepcopy(model) if how == "deepcopy" else pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(clone.predict(X), model.predict(X))
    before = model.params.copy()
    history = clone.fit(X, y, epochs=3, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]  # the copy trains
    np.testing.assert_array_equal(model.params, before)  # ... and never changes the original
    assert clone.optimizer is not model.optimizer
    clone.save(tmp_path / "clone.safetensors")
    np.testing.assert_array_equal(fnn.load(tmp_path / "clone.safetensors").predict(X), clone.predict(X))


def test_a_copy_continues_exactly_like_the_original(rng):
    X, y = _data(rng)
    model = _model()
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)
    clone = copy.deepcopy(model)
    model.fit(X, y, epochs=2, batch_size=16, verbose=0)
    clone.fit(X, y, epochs=2, batch_size=16, verbose=0)
    np.testing.assert_array_equal(clone.params, model.params)


def test_unbuilt_model_copies_and_shallow_copy_refuses(rng):
    model = fnn.Sequential([fnn.Dense(4), fnn.ReLU(), fnn.Dense(2)])
    assert not model.built
    clone = copy.deepcopy(model)
    assert not clone.built
    with pytest.raises(TypeError, match="deepcopy"):
        copy.copy(model)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("built", [False, True])
def test_a_copy_keeps_the_users_own_attributes_on_the_model_and_its_layers(how, built):
    """Tags set from outside (``model.note = ...``, kept by the attribute rule) were dropped by deepcopy
    and pickling (the copy is rebuilt from configs); now kept, on the model and on every layer,
    nested ones too, as copies (deepcopy: deep copies; a tag that refers to the model refers to the
    copy), and still tags (a misspelling of one is not refused)."""
    first = fnn.Dense(4, 3) if built else fnn.Dense(3)
    model = fnn.Sequential([first, fnn.Residual([fnn.Dense(3, 3), fnn.ReLU()]), fnn.Dense(3, 2)], seed=0)
    model.note, model.itself = {"run": [1, 2]}, model
    model[0].note = "stem"
    model[1].block[1].probe = 5
    model.gone = 1
    del model.gone
    clone = copy.deepcopy(model) if how == "deepcopy" else pickle.loads(pickle.dumps(model))
    assert clone.built is built
    assert clone.note == {"run": [1, 2]} and clone.note is not model.note and clone.itself is clone
    assert clone[0].note == "stem" and clone[1].block[1].probe == 5
    assert not hasattr(clone, "gone") and not hasattr(clone[2], "note")
    clone.notes = "another tag"  # close to 'note', which is a tag: not taken for a misspelling
    assert model.note == {"run": [1, 2]} and not hasattr(model, "notes")
    again = copy.deepcopy(clone) if how == "deepcopy" else pickle.loads(pickle.dumps(clone))
    assert again.notes == "another tag" and again[1].block[1].probe == 5


def test_a_shallow_copy_is_refused_with_the_deep_copy_that_keeps_tags():
    model = fnn.Sequential([fnn.Dense(4, 2)], seed=0)
    model.note = "x"
    with pytest.raises(TypeError, match=r"a layer belongs to one model; use copy.deepcopy\(model\).*own attributes"):
        copy.copy(model)
    assert copy.deepcopy(model).note == "x"


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_of_an_unbuilt_compiled_model_keeps_its_compilation(how, rng):
    """A copy of a model compiled before its input shape was known came back without its loss,
    optimizer (state included), metrics and mode: fit then trained with the defaults (or refused)."""
    model = fnn.Sequential([fnn.Dense(4), fnn.Dropout(0.5), fnn.Dense(3)], seed=0)
    optimizer = fnn.optim.SGD(lr=0.05)
    optimizer.load_state_dict({"name": "sgd", "step_count": 7, "lr": 0.02})  # applied when it binds
    model.compile("mse", optimizer, metrics=["mae"], decay_bias_and_norm=True).eval()
    clone = copy.deepcopy(model) if how == "deepcopy" else pickle.loads(pickle.dumps(model))
    assert not clone.built and clone.training is False and clone.decay_bias_and_norm is True
    assert clone.loss.get_config() == model.loss.get_config()
    assert [m.get_config() for m in clone.metrics] == [m.get_config() for m in model.metrics]
    assert clone.optimizer is not model.optimizer and clone.optimizer.owner is clone
    X, y = rng.standard_normal((12, 5)), rng.standard_normal((12, 3))
    model.train().fit(X, y, epochs=2, batch_size=4, verbose=0)
    clone.train().fit(X, y, epochs=2, batch_size=4, verbose=0)
    np.testing.assert_array_equal(clone.params, model.params)
    assert clone.optimizer.step_count == model.optimizer.step_count == 13


class _StillSGD(fnn.optim.SGD):
    """A user's SGD (not registered: it keeps the name "sgd") that never moves the weights."""

    def step(self, grad_norm=None):
        self.step_count += 1


class _DoubledMSE(fnn.losses.MSE):
    """A user's MSE (not registered: it keeps the name "mse"), twice the plain one."""

    def forward_backward(self, out, target, grad=None, *args, **kwargs):
        value = super().forward_backward(out, target, grad, *args, **kwargs)
        if grad is not None:
            grad *= 2
        return 2 * value


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_keeps_the_users_subclasses_of_optimizer_and_loss(how, rng):
    """An unregistered subclass of a built-in optimizer or loss inherits its name: a copy of the model
    made the built-in class from that name, so it trained and scored differently without a word."""
    X, y = rng.standard_normal((8, 3)), rng.standard_normal((8, 2))
    model = fnn.Sequential([fnn.Dense(3, 2)], seed=0).compile(_DoubledMSE(), _StillSGD(lr=0.1))
    clone = copy.deepcopy(model) if how == "deepcopy" else pickle.loads(pickle.dumps(model))
    assert type(clone.loss) is _DoubledMSE and type(clone.optimizer) is _StillSGD
    assert clone.evaluate(X, y) == model.evaluate(X, y)
    before = clone.params.copy()
    clone.fit(X, y, epochs=1, verbose=0)
    np.testing.assert_array_equal(clone.params, before)


# -- ownership ------------------------------------------------------------------------------------
def test_a_layer_belongs_to_one_model():
    dense = fnn.Dense(3, 4)
    first = fnn.Sequential([dense])
    with pytest.raises(ValueError, match="already belongs to another model"):
        fnn.Sequential([dense])
    del first  # a layer of a model that is gone can be reused
    import gc

    gc.collect()
    assert fnn.Sequential([dense]).count_params() == 16
    shared = fnn.Dense(4, 4)
    with pytest.raises(ValueError, match="appears twice.*no weight tying"):
        fnn.Sequential([shared, fnn.ReLU(), shared])
    inner = fnn.Dense(4, 4)
    with pytest.raises(ValueError, match="appears twice"):
        fnn.Sequential([inner, fnn.Residual([inner])])


def test_a_deepcopied_layer_is_free_to_join_another_model():
    dense = fnn.Dense(3, 4)
    fnn.Sequential([dense])
    twin = copy.deepcopy(dense)
    model = fnn.Sequential([twin])
    assert model.count_params() == 16


def test_a_compiled_models_loss_pickles_and_its_copies_belong_to_no_model():
    """The loss of a compiled model held its owner as a weak reference, which does not pickle."""
    model = fnn.Sequential([fnn.Dense(3, 2)]).compile(fnn.losses.Huber(delta=0.5), "sgd")
    assert model.loss.owner is model
    for twin in (pickle.loads(pickle.dumps(model.loss)), copy.deepcopy(model.loss)):
        assert twin.get_config() == {"name": "huber", "reduction": "mean", "delta": 0.5} and twin.owner is None


def test_an_optimizer_belongs_to_one_model_and_a_loss_is_copied(rng):
    X, y = _data(rng)
    opt = fnn.optim.Adam(lr=1e-2)
    loss = fnn.losses.CrossEntropy()
    first = _model()
    first.compile(loss, opt)
    second = _model(seed=1)
    with pytest.raises(ValueError, match="already bound to another model"):
        second.compile(loss, opt)
    second.compile(loss, "adam")
    assert second.loss is not first.loss  # each model gets its own loss (scratch buffers)
    before = first.params.copy()
    first.fit(X, y, epochs=1, batch_size=16, verbose=0)
    assert not np.array_equal(first.params, before)  # the first model still trains


def test_fit_with_the_same_optimizer_keeps_its_state(rng):
    X, y = _data(rng)
    model = _model()
    model.compile("cross_entropy", fnn.optim.Adam(lr=1e-2), decay_bias_and_norm=True)
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)
    opt = model.optimizer
    steps = opt.step_count
    moments = opt.state_dict()["exp_avg"].copy()
    model.fit(X, y, epochs=1, batch_size=16, verbose=0, loss="cross_entropy", optimizer=opt)
    assert model.optimizer is opt and opt.step_count == steps + 3
    assert model.decay_bias_and_norm
    assert np.any(opt.state_dict()["exp_avg"] != moments)
    reference = _model()
    reference.compile("cross_entropy", fnn.optim.Adam(lr=1e-2), decay_bias_and_norm=True)
    reference.fit(X, y, epochs=2, batch_size=16, verbose=0)
    np.testing.assert_array_equal(reference.params, model.params)


# -- interrupts ------------------------------------------------------------------------------------
class _RaiseAt(cb_mod.Callback):
    def __init__(self, batch, hook, exc=KeyboardInterrupt):
        self.batch, self.hook, self.exc, self.fired = batch, hook, exc, False

    def _maybe(self, batch):
        if not self.fired and batch == self.batch:
            self.fired = True
            raise self.exc("interrupted")

    def on_batch_begin(self, batch, logs=None):
        if self.hook == "begin":
            self._maybe(batch)

    def on_batch_end(self, batch, logs=None):
        if self.hook == "end":
            self._maybe(batch)


def _interrupt_kernel(monkeypatch, model, where, after_calls):
    """Make the step raise KeyboardInterrupt from inside the plan (forward/loss/backward) or the optimizer."""
    state = {"calls": 0}
    if where == "update":
        original = model.optimizer._update

        def update(scale):
            state["calls"] += 1
            if state["calls"] == after_calls:
                raise KeyboardInterrupt
            original(scale)

        monkeypatch.setattr(model.optimizer, "_update", update)
        return
    original_step = model.run_step

    def step(xb, yb):
        plan = model.step_plan(xb.shape[0])
        index = {"forward": 1, "loss": len(plan.forward), "backward": len(plan.forward) + 2}[where]
        state["calls"] += 1

        def broken(*a):
            raise KeyboardInterrupt

        if state["calls"] != after_calls:
            return original_step(xb, yb)
        gathering = plan.gathering  # fit's runner with the gather first (fastnn._step_feed), once built
        if gathering is None:
            count = _step_feed.counts_inside(model.loss)
            plan.gathering = (plan.run, count, _step_feed.gathering_runner(model, plan, count))
        broken_lists = [(plan.run.calls, index), (plan.gathering[2].calls, index + 1)]
        kept = [calls[i] for calls, i in broken_lists]
        for calls, i in broken_lists:
            calls[i] = (broken, calls[i][1])
        try:
            return original_step(xb, yb)
        finally:
            for (calls, i), call in zip(broken_lists, kept):
                calls[i] = call

    monkeypatch.setattr(model, "run_step", step)


@pytest.mark.parametrize("where", ["forward", "loss", "backward", "update", "callback_begin", "callback_end"])
def test_an_interrupt_anywhere_then_save_load_fit_equals_the_uninterrupted_run(where, rng, tmp_path, monkeypatch):
    X, y = _data(rng)
    reference = _model()
    reference.fit(X, y, epochs=2, batch_size=16, verbose=0)

    model = _model()
    callbacks = []
    if where.startswith("callback"):
        callbacks = [_RaiseAt(1, where.split("_")[1])]
    else:
        _interrupt_kernel(monkeypatch, model, where, after_calls=2)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y, epochs=2, batch_size=16, verbose=0, callbacks=callbacks)
    monkeypatch.undo()
    model.save(tmp_path / "m.safetensors")
    resumed = fnn.load(tmp_path / "m.safetensors")
    resumed.fit(X, y, epochs=2, batch_size=16, verbose=0)
    np.testing.assert_array_equal(resumed.params, reference.params)
    np.testing.assert_array_equal(resumed.predict(X), reference.predict(X))


@pytest.mark.parametrize("how", ["kernel", "signal"])
def test_an_interrupt_in_fits_lane_then_save_load_fit_equals_the_uninterrupted_run(how, rng, tmp_path, monkeypatch):
    """An epoch with nothing to run between its steps runs in fit's lane (Sequential.lane_step,
    not run_step): an exception from inside the 2nd step's call leaves the position after the 1st
    committed; a Ctrl-C during the 2nd step is held and acted on after it, its position committed."""
    X, y = _data(rng)
    reference = _model()
    reference.fit(X, y, epochs=2, batch_size=16, verbose=0)
    model = _model()
    original = model.lane_step
    calls = {"n": 0}

    def step(plan, runner, args):
        calls["n"] += 1
        if calls["n"] != 2:
            return original(plan, runner, args)
        if how == "signal":
            os.kill(os.getpid(), signal.SIGINT)  # held by fit (the step is critical) ...
            return original(plan, runner, args)  # ... so this step commits first

        def broken(*a):
            raise KeyboardInterrupt

        kept = runner.calls[1]
        runner.calls[1] = (broken, kept[1])
        try:
            return original(plan, runner, args)
        finally:
            runner.calls[1] = kept

    monkeypatch.setattr(model, "lane_step", step)
    monkeypatch.setattr(_config, "FUSE", "never")  # (the runner's calls, one by one: patchable)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y, epochs=2, batch_size=16, verbose=0)
    assert model.state.cursor is not None and model.state.cursor.batches == (2 if how == "signal" else 1)
    monkeypatch.undo()
    model.save(tmp_path / "m.safetensors")
    resumed = fnn.load(tmp_path / "m.safetensors")
    resumed.fit(X, y, epochs=2, batch_size=16, verbose=0)
    np.testing.assert_array_equal(resumed.params, reference.params)


def test_fit_on_other_data_starts_a_fresh_epoch_position(rng):
    X, y = _data(rng)
    model = _model()
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y, epochs=1, batch_size=16, verbose=0, callbacks=[_RaiseAt(2, "begin")])
    assert model.state.cursor is not None and model.state.cursor.samples == 32
    X2, y2 = _data(np.random.default_rng(7), n=40)
    seen = []

    class Count(cb_mod.Callback):
        def on_batch_end(self, batch, logs=None):
            seen.append(logs["size"])

    history = model.fit(X2, y2, epochs=1, batch_size=16, verbose=0, callbacks=[Count()])
    assert seen == [16, 16, 8]  # the whole of the new data, not the stale position's remainder
    assert 0 <= history.history["accuracy"][0] <= 1


def test_the_same_data_resumes_mid_epoch(rng):
    X, y = _data(rng)
    reference = _model()
    reference.fit(X, y, epochs=1, batch_size=16, verbose=0)
    model = _model()
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y, epochs=1, batch_size=16, verbose=0, callbacks=[_RaiseAt(2, "begin")])
    model.fit(X.copy(), y.copy(), epochs=1, batch_size=16, verbose=0)  # equal data, other arrays
    np.testing.assert_array_equal(model.params, reference.params)


def test_a_resumed_epoch_logs_the_loss_and_accuracy_of_the_uninterrupted_one(rng):
    X, y = _data(rng)
    reference = _model().fit(X, y, epochs=1, batch_size=16, verbose=0).history
    model = _model()
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y, epochs=1, batch_size=16, verbose=0, callbacks=[_RaiseAt(2, "begin")])
    resumed = model.fit(X, y, epochs=1, batch_size=16, verbose=0).history
    assert resumed["loss"] == pytest.approx(reference["loss"], rel=1e-6)
    assert resumed["accuracy"] == reference["accuracy"]


def test_the_epoch_loss_is_the_mean_over_samples_of_unequal_batches(rng):
    X, y = _data(rng)  # 48 rows in batches of 7: six of 7 and one of 6
    model = fnn.Sequential([fnn.Dense(5, 3)], seed=0, dtype="float64").compile("cross_entropy", fnn.optim.SGD(lr=0.0))
    history = model.fit(X, y, epochs=1, batch_size=7, verbose=0)
    assert history.history["loss"][0] == pytest.approx(model.evaluate(X, y)["loss"], rel=1e-12)


def test_fit_puts_back_the_mode_it_found(rng):
    X, y = _data(rng)
    model = _model().eval()
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)
    assert not model.training
    model.train().fit(X, y, epochs=1, batch_size=16, verbose=0)
    assert model.training


def test_the_data_fingerprint_covers_every_row_of_small_data_and_all_of_y(rng):
    from fastnn.training import data_fingerprint

    X, y = _data(rng, n=300)
    base = data_fingerprint(X, y)
    X2 = X.copy()
    X2[150, 1] += 1.0  # a middle row: 300 rows hold 256 evenly spaced ones, 150 among them
    y2 = y.copy()
    y2[151] = (y2[151] + 1) % 3  # all of y counts, rows not in X's sample too
    assert data_fingerprint(X2, y) != base and data_fingerprint(X, y2) != base
    assert data_fingerprint(X.copy(), y.copy()) == base


class _Tally(cb_mod.Callback):
    """A callback whose state its key does not show (``step`` is a tuple, not part of the key)."""

    def __init__(self, step):
        self.step, self.total = (step,), 0

    def on_epoch_end(self, epoch, logs=None):
        self.total += self.step[0]

    def state_dict(self):
        return {"total": self.total}

    def load_state_dict(self, state):
        self.total = state["total"]


def test_equal_keyed_callbacks_get_their_own_state_back_after_a_save_of_a_loaded_model(rng, tmp_path):
    """Callbacks of equal keys are numbered in order; a loaded model saved again before any fit
    keeps the callback states still waiting for one."""
    X, y = _data(rng)
    model = _model()
    model.fit(X, y, epochs=2, batch_size=16, verbose=0, callbacks=[_Tally(1), _Tally(10)])
    model.save(tmp_path / "a.safetensors")
    fnn.load(tmp_path / "a.safetensors").save(tmp_path / "b.safetensors")
    first, second = _Tally(0), _Tally(0)
    fnn.load(tmp_path / "b.safetensors").fit(X, y, epochs=0, verbose=0, callbacks=[first, second])
    assert (first.total, second.total) == (2, 20)


def test_a_memory_error_leaves_the_model_usable(rng, monkeypatch):
    X, y = _data(rng)
    model = _model()
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)
    from fastnn import backend

    real = backend.zeros
    monkeypatch.setattr(backend, "zeros", lambda *a, **k: (_ for _ in ()).throw(MemoryError("no memory")))
    with pytest.raises(MemoryError):
        model.fit(np.concatenate([X] * 3), np.concatenate([y] * 3), epochs=1, batch_size=48, verbose=0)
    monkeypatch.setattr(backend, "zeros", real)
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)
    assert np.isfinite(model.predict(X)).all()


# -- stale plans --------------------------------------------------------------------------------------
def test_changing_a_built_layer_rebuilds_the_plans_or_refuses(rng):
    X, y = _data(rng)
    model = _model(dropout=0.0)
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)
    model.layers[2].p = 0.9  # takes effect: the plans are rebuilt
    model.train()
    out = model.forward(X)
    assert np.mean(model.layer_outputs(X, training=True)[2] == 0) > 0.5
    assert out.shape == (48, 3)
    before = model.predict(X)
    with pytest.raises(ValueError, match="would change the layer's output shape or parameters"):
        model.layers[0].units = 7  # refused when set (units keeps Dense's out_features)
    assert model.layers[0].units == 12
    np.testing.assert_array_equal(model.predict(X), before)
    with pytest.raises(TypeError, match="layers are fixed"):
        model.layers.append(fnn.ReLU())


# -- threads -----------------------------------------------------------------------------------------
def test_predict_from_several_threads_is_correct(rng):
    X, y = _data(rng, n=64)
    model = _model()
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)
    expected = [model.predict(X[i : i + 1 + i % 5]) for i in range(40)]
    errors = []

    def work():
        for _ in range(20):
            for i in range(40):
                if not np.array_equal(model.predict(X[i : i + 1 + i % 5]), expected[i]):
                    errors.append(i)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_training_one_model_from_two_threads_is_refused(rng):
    X, y = _data(rng)
    model = _model()
    started, release = threading.Event(), threading.Event()

    class Hold(cb_mod.Callback):
        def on_batch_begin(self, batch, logs=None):
            started.set()
            release.wait(30)

    worker = threading.Thread(target=lambda: model.fit(X, y, epochs=1, batch_size=16, verbose=0, callbacks=[Hold()]))
    worker.start()
    assert started.wait(30)
    try:
        with pytest.raises(RuntimeError, match="another thread"):
            model.train_step(X[:16], y[:16])
        weights = {name: np.zeros_like(a) for name, a in model.state_arrays().items()}
        with pytest.raises(RuntimeError, match="load_state_arrays.*another thread"):  # was taken mid-fit
            model.load_state_arrays(weights)
        assert not all(np.all(a == 0) for a in model.state_arrays().values())
    finally:
        release.set()
        worker.join()


# -- the layer protocol: contexts ---------------------------------------------------------------------
def test_predict_between_forward_and_backward_does_not_change_gradients(rng):
    X, _ = _data(rng)
    model = fnn.Sequential(
        [
            fnn.Dense(5, 6, activation="tanh"),
            fnn.BatchNorm1d(6),
            fnn.Dropout(0.3),
            fnn.LayerNorm(6),
            fnn.Residual([fnn.Dense(6, 6, activation="gelu")]),
            fnn.Dense(6, 2),
        ],
        dtype="float64",
    )
    grad_out = rng.standard_normal((8, 2))
    twin = copy.deepcopy(model)  # the same weights, buffers and dropout counters
    twin.forward(X[:8], training=True)
    expected = twin.backward(grad_out), twin.grads.copy()
    model.forward(X[:8], training=True)
    model.predict(X[8:16])
    model.predict(X[:8] * 3)
    got = model.backward(grad_out), model.grads.copy()
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


def test_backward_before_forward_is_a_clear_error():
    model = fnn.Sequential([fnn.Dense(3, 2)])
    with pytest.raises(RuntimeError, match="needs a forward"):
        model.backward(np.zeros((1, 2)))
    with pytest.raises(RuntimeError, match="before forward"):
        fnn.Dense(3, 2).backward(np.zeros((1, 2)))


def test_shapes_chain_and_mismatches_name_both_layers(rng):
    model = fnn.Sequential([fnn.Dense(6), fnn.ReLU(), fnn.Dense(2)], input_shape=(4,))
    assert model.output_shape == (2,) and model.layers[0].input_shape == (4,)
    with pytest.raises(
        ValueError, match=r"layer 0 \(Dense\(3, 4\)\) outputs \(batch, 4\), but layer 1 \(Dense\(5, 2\)\) expects 5"
    ):
        fnn.Sequential([fnn.Dense(3, 4), fnn.Dense(5, 2)])
    lazy = fnn.Sequential([fnn.Dense(6), fnn.Tanh(), fnn.Dense(2)])
    assert not lazy.built and "unknown" in lazy.summary(print_fn=None)
    lazy.compile("mse", "sgd")
    lazy.fit(rng.standard_normal((10, 7)), rng.standard_normal((10, 2)), epochs=1, verbose=0)
    assert lazy.input_shape == (7,) and lazy.count_params() == 7 * 6 + 6 + 6 * 2 + 2
    seq = fnn.Sequential([fnn.Dense(3, 4), fnn.LayerNorm(4)], input_shape=(5, 3))
    assert seq.output_shape == (5, 4)
    out = seq.predict(rng.standard_normal((2, 5, 3)))
    assert out.shape == (2, 5, 4)
    with pytest.raises(ValueError, match=r"expects \(samples, 5, 3\)"):
        seq.predict(rng.standard_normal((2, 4, 3)))


# -- callbacks' saved states -------------------------------------------------------------------------
def test_two_callbacks_of_one_class_get_their_own_state_back(rng, tmp_path):
    X, y = _data(rng)
    model = _model()
    a = fnn.callbacks.EarlyStopping(monitor="loss", patience=5)
    b = fnn.callbacks.EarlyStopping(monitor="accuracy", mode="max", patience=7)
    model.fit(X, y, epochs=2, batch_size=16, verbose=0, callbacks=[a, b])
    model.save(tmp_path / "m.safetensors")
    loaded = fnn.load(tmp_path / "m.safetensors")
    a2 = fnn.callbacks.EarlyStopping(monitor="loss", patience=5)
    b2 = fnn.callbacks.EarlyStopping(monitor="accuracy", mode="max", patience=7)
    loaded.fit(X, y, epochs=0, batch_size=16, verbose=0, callbacks=[b2, a2])  # other order
    assert a2.state_dict() == a.state_dict() and b2.state_dict() == b.state_dict()


# -- non-finite gradients -------------------------------------------------------------------------------
def test_a_non_finite_gradient_with_a_finite_loss_is_caught_and_named(rng):
    from fastnn.layers import Layer

    class Sqrt(Layer):  # y = sqrt(|x|): infinite gradient at x = 0 but finite output
        def forward(self, x, training):
            self._x = x
            return np.sqrt(np.abs(x))

        def backward(self, grad_y, need_grad_x=True):
            with np.errstate(divide="ignore", invalid="ignore"):
                return grad_y * np.sign(self._x) / (2 * np.sqrt(np.abs(self._x)))

    model = fnn.Sequential([fnn.Dense(3, 3, init="zeros"), Sqrt(), fnn.Dense(3, 1)], dtype="float64")
    model.compile("mse", "sgd")
    before = model.params.copy()
    with pytest.raises(FloatingPointError, match=r"gradient norm is (nan|inf).*gradient of layer 1 \(Sqrt"):
        model.train_step(rng.standard_normal((4, 3)), rng.standard_normal((4, 1)))
    np.testing.assert_array_equal(model.params, before)  # the step was not applied


def test_slicing_a_model_copies_layers_with_their_trained_weights(rng):
    X, y = _data(rng)
    model = _model()
    model.fit(X, y, epochs=2, batch_size=16, verbose=0)
    head = model[:2]  # Dense + BatchNorm1d with running statistics
    assert len(head) == 2 and head.layers[0] is not model.layers[0] and model[0] is model.layers[0]
    np.testing.assert_array_equal(head.predict(X), model.layer_outputs(X)[1])
    before = model.params.copy()
    head.compile("mse", "sgd")
    head.fit(X, np.zeros((48, 12)), epochs=1, batch_size=16, verbose=0)
    np.testing.assert_array_equal(model.params, before)
    twin = fnn.Sequential([copy.deepcopy(layer) for layer in model.layers])  # a deep-copied layer keeps its weights
    np.testing.assert_array_equal(twin.predict(X), model.predict(X))


def test_ctrl_c_during_a_step_is_held_until_the_step_commits(rng, tmp_path, monkeypatch):
    """A real SIGINT delivered while the plan's kernels run: the step completes and commits, then
    fit raises KeyboardInterrupt; save, load and fit give the uninterrupted run."""
    import os
    import signal

    X, y = _data(rng)
    handler = signal.getsignal(signal.SIGINT)  # (SIG_IGN in a process started in the background)
    reference = _model()
    reference.fit(X, y, epochs=2, batch_size=16, verbose=0)
    model = _model()
    plan = model.step_plan(16)
    index = len(plan.forward) + 1  # the first backward call
    fn, args = plan.run.calls[index]
    fired = []

    def signalled(*a):
        if not fired:
            fired.append(True)
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs at the next bytecode, inside the step
        return fn(*a)

    plan.run.calls[index] = (signalled, args)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y, epochs=2, batch_size=16, verbose=0)
    plan.run.calls[index] = (fn, args)
    assert model.state.cursor.samples == 16 and model.optimizer.step_count == 1  # the step committed
    model.save(tmp_path / "m.safetensors")
    resumed = fnn.load(tmp_path / "m.safetensors")
    resumed.fit(X, y, epochs=2, batch_size=16, verbose=0)
    np.testing.assert_array_equal(resumed.params, reference.params)
    assert signal.getsignal(signal.SIGINT) is handler  # fit put the handler back


@pytest.mark.parametrize("broken", ["optimizer state", "metrics", "training state"])
def test_a_refused_restore_leaves_the_model_as_it_was(broken, rng):
    X, y = _data(rng)
    other = _model(seed=1)
    other.compile("cross_entropy", fnn.optim.Adam(lr=1e-2), metrics=["accuracy"])
    other.fit(X, y, epochs=1, batch_size=16, verbose=0)
    record = other.snapshot()
    if broken == "optimizer state":
        record["optimizer"]["state"]["exp_avg"] = record["optimizer"]["state"]["exp_avg"][:5]
    elif broken == "metrics":
        record["metrics"] = ["no such metric"]
    else:
        record["training"]["epochs_done"] = -1
    model, twin = _model(), _model()
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)
    twin.fit(X, y, epochs=1, batch_size=16, verbose=0)
    optimizer = model.optimizer
    with pytest.raises(ValueError):
        model.restore(record)
    assert model.optimizer is optimizer and model.metrics == [] and model.epochs_done == 1
    np.testing.assert_array_equal(model.params, twin.params)  # not the record's weights
    np.testing.assert_array_equal(model.optimizer.state_dict()["exp_avg"], twin.optimizer.state_dict()["exp_avg"])
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)  # trains on exactly as before
    twin.fit(X, y, epochs=1, batch_size=16, verbose=0)
    np.testing.assert_array_equal(model.params, twin.params)
