"""Gradient accumulation: accumulate=k batches of m equals batches of k*m (float64), updates are
counted (step_count, schedules), BatchNorm makes it differ, bad values are refused."""

import numpy as np
import pytest

import fastnn as fnn
from fastnn import callbacks as cb_mod
from fastnn import schedules


def _data(n=90, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5))
    return X, (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1)


def _model(loss="cross_entropy", optimizer=None, outputs=3, norm=False):
    layers = [fnn.Dense(5, 8, activation="tanh"), *([fnn.BatchNorm1d(8)] if norm else []), fnn.Dense(8, outputs)]
    model = fnn.Sequential(layers, dtype="float64", seed=3)
    return model.compile(loss, optimizer or fnn.optim.Adam(lr=0.02, weight_decay=0.01, clip_norm=1.0))


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: fnn.optim.Adam(lr=0.02, weight_decay=0.01, clip_norm=1.0),
        lambda: fnn.optim.SGD(lr=0.1, momentum=0.9, nesterov=True),
    ],
)
@pytest.mark.parametrize("shuffle", [False, True])
def test_k_batches_of_m_equal_batches_of_k_times_m(optimizer, shuffle):
    X, y = _data()  # 90 rows: the epoch's last group (and big batch) is short: 18 rows
    big = _model(optimizer=optimizer())
    big.fit(X, y, epochs=3, batch_size=24, shuffle=shuffle, verbose=0)
    small = _model(optimizer=optimizer())
    history = small.fit(X, y, epochs=3, batch_size=8, accumulate=3, shuffle=shuffle, verbose=0)
    np.testing.assert_allclose(small.params, big.params, rtol=1e-11, atol=1e-13)
    assert small.optimizer.step_count == big.optimizer.step_count == 12  # updates, not batches
    assert history.history["loss"][-1] == pytest.approx(big.evaluate(X, y)["loss"], rel=0.2)


def test_a_sum_loss_sums_the_gradients_and_a_per_batch_schedule_counts_updates():
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((40, 5)), rng.standard_normal((40, 2))
    runs = []
    for batch, k in ((20, 1), (5, 4)):
        model = _model(fnn.losses.MSE(reduction="sum"), fnn.optim.SGD(lr=0.002), outputs=2)
        schedule = cb_mod.LearningRateScheduler(schedules.StepDecay(0.002, step_size=1, gamma=0.5), per="batch")
        model.fit(X, Y, epochs=2, batch_size=batch, accumulate=k, shuffle=False, verbose=0, callbacks=[schedule])
        runs.append(model)
    np.testing.assert_allclose(runs[1].params, runs[0].params, rtol=1e-11, atol=1e-13)
    assert runs[1].optimizer.lr == runs[0].optimizer.lr == pytest.approx(0.002 * 0.5**3)


def test_the_epoch_s_short_last_group_updates_before_its_batch_ends():
    """on_batch_end of an array epoch's last batch sees its short group's update (as every
    other group's last batch does), not a flush after the epoch's batches."""

    class Steps(cb_mod.Callback):
        def __init__(self):
            self.seen = []

        def on_batch_end(self, batch, logs=None):
            self.seen.append(self.model.optimizer.step_count)

    X, y = _data()
    steps = Steps()
    _model().fit(X, y, batch_size=10, accumulate=4, shuffle=False, verbose=0, callbacks=[steps])
    assert steps.seen == [0, 0, 0, 1, 1, 1, 1, 2, 3]  # 9 batches: groups of 4, 4 and 1


def test_a_fit_leaving_mid_group_puts_the_running_statistics_back_to_the_group_s_start():
    """An error between the batches of an open group (here a callback's) drops the group: its
    batches' BatchNorm statistics go back, as its update never ran."""

    class Boom(cb_mod.Callback):
        def on_batch_end(self, batch, logs=None):
            if batch == 4:  # the second batch of the second group
                raise RuntimeError("boom")

    X, y = _data()
    model = _model(norm=True)
    model.fit(X[:30], y[:30], batch_size=10, accumulate=3, shuffle=False, verbose=0)  # one whole group
    before = {name: a.copy() for name, a in model.state_arrays().items()}
    with pytest.raises(RuntimeError, match="boom"):
        model.fit(X, y, batch_size=10, accumulate=3, shuffle=False, verbose=0, callbacks=[Boom()])
    after = model.state_arrays()
    assert model.optimizer.step_count == 2  # the first fit's group and this fit's first one
    assert not np.array_equal(after["1.running_mean"], before["1.running_mean"])  # ... which counted
    fresh = _model(norm=True)
    fresh.fit(X[:30], y[:30], batch_size=10, accumulate=3, shuffle=False, verbose=0)
    fresh.fit(X[:30], y[:30], batch_size=10, accumulate=3, shuffle=False, verbose=0)
    for name, a in after.items():
        np.testing.assert_array_equal(a, fresh.state_arrays()[name], err_msg=name)


def test_streamed_batches_accumulate_and_flush_the_last_group():
    X, y = _data()
    big = _model()
    big.fit(X, y, epochs=2, batch_size=40, shuffle=False, verbose=0)  # 40, 40, 10
    small = _model()
    small.fit(lambda: ((X[i : i + 10], y[i : i + 10]) for i in range(0, 90, 10)), epochs=2, accumulate=4, verbose=0)
    np.testing.assert_allclose(small.params, big.params, rtol=1e-11, atol=1e-13)


def test_batch_norm_sees_each_small_batch_so_it_differs_from_the_big_batch():
    X, y = _data()
    big = _model(norm=True)
    big.fit(X, y, epochs=1, batch_size=24, shuffle=False, verbose=0)
    small = _model(norm=True)
    small.fit(X, y, epochs=1, batch_size=8, accumulate=3, shuffle=False, verbose=0)
    assert small.optimizer.step_count == big.optimizer.step_count == 4
    assert np.all(np.isfinite(small.params)) and not np.allclose(small.params, big.params, rtol=1e-6)


@pytest.mark.parametrize(
    "value, error", [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError), ("2", TypeError)]
)
def test_bad_accumulate_values_are_refused(value, error):
    X, y = _data()
    with pytest.raises(error, match="accumulate"):
        _model().fit(X, y, accumulate=value, verbose=0)


@pytest.mark.parametrize("fuse", ["never", "always"])
def test_a_group_whose_summed_gradients_overflow_is_refused_and_applies_nothing(fuse, monkeypatch, tmp_path):
    """Each batch's gradient is finite (-2e37 per weight, float32), the group's weighted sum is not
    (8 * 2e37 four times > float32's 3.4e38): the group's update is refused, nothing changes."""
    from fastnn import _config, _fused

    monkeypatch.setenv("FASTNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_fused, "_LOADED", {})
    monkeypatch.setattr(_config, "FUSE", fuse)
    model = fnn.Sequential([fnn.Dense(2, 1, bias=False)], seed=0).compile("mse", fnn.optim.SGD(lr=0.1))
    model.layers[0].weight[...] = [[1.0], [-1.0]]  # the prediction 1e37 - 1e37 = 0 exactly: the loss is 1
    X, y = np.full((32, 2), 1e37, np.float32), np.ones((32, 1), np.float32)
    params = model.params.copy()
    with pytest.raises(FloatingPointError, match="summed over 4 accumulated batches is inf at step 1"):
        model.fit(X, y, epochs=1, batch_size=8, accumulate=4, shuffle=False, verbose=0)
    assert np.array_equal(model.params, params) and model.optimizer.step_count == 0
    model.layers[0].weight[...] = [[0.5], [-0.5]]  # the same data trains once the sum is finite
    model.fit(X[:16] * 1e-30, y[:16], epochs=1, batch_size=8, accumulate=4, shuffle=False, verbose=0)
    assert model.optimizer.step_count == 1


def _torch_fit(model, X, y, w, batch, epochs, optimizer):
    """The parameters after ``epochs`` of unshuffled batches of ``batch`` rows with PyTorch (float64)
    on ``model``'s initial weights: the weighted mean loss ``sum_i w_i l_i / sum_i w_i`` per batch."""
    torch = pytest.importorskip("torch")
    params = []
    for layer in model.layers:
        params += [
            torch.tensor(layer.weight.copy(), requires_grad=True),
            torch.tensor(layer.bias.copy(), requires_grad=True),
        ]
    opt = optimizer(params)
    Xt, yt, wt = torch.tensor(X), torch.tensor(y), torch.tensor(w)
    for _ in range(epochs):
        for lo in range(0, len(X), batch):
            xb, yb, wb = Xt[lo : lo + batch], yt[lo : lo + batch], wt[lo : lo + batch]
            logits = torch.tanh(xb @ params[0] + params[1]) @ params[2] + params[3]
            losses = torch.nn.functional.cross_entropy(logits, yb, reduction="none")
            opt.zero_grad()
            ((losses * wb).sum() / wb.sum()).backward()
            opt.step()
    return np.concatenate([p.detach().numpy().ravel() for p in params])


def _flat_params(model):
    return np.concatenate([a.ravel() for layer in model.layers for a in (layer.weight, layer.bias)])


@pytest.mark.parametrize("fuse", ["never", "always"])
@pytest.mark.parametrize("weighting", ["sample_weight", "class_weight", "both"])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_weighted_groups_equal_one_weighted_batch_k_times_larger_as_torch(opt, weighting, fuse, monkeypatch):
    """A weighted batch's loss is sum_i w_i l_i / sum_i w_i: each batch of a group counts for its sum
    of weights (not its rows), the group's sum is divided by the group's (class_weight: w_i =
    class_weight[y_i], times sample_weight if both). 90 rows, groups of 3 x 8 = 24: the last is short."""
    from fastnn import _config

    monkeypatch.setattr(_config, "FUSE", fuse)
    X, y = _data()
    w = np.random.default_rng(5).uniform(0.0, 3.0, len(X))
    cw = {0: 4.0, 2: 0.25}
    kwargs = {
        "sample_weight": {"sample_weight": w},
        "class_weight": {"class_weight": cw},
        "both": {"sample_weight": w, "class_weight": cw},
    }[weighting]
    per_sample = np.ones(len(X)) if weighting == "class_weight" else w
    if weighting != "sample_weight":
        per_sample = per_sample * np.array([cw.get(c, 1.0) for c in range(3)])[y]
    make = {
        "sgd": (lambda: fnn.optim.SGD(lr=0.3), lambda p: __import__("torch").optim.SGD(p, lr=0.3)),
        "adam": (lambda: fnn.optim.Adam(lr=0.02), lambda p: __import__("torch").optim.Adam(p, lr=0.02)),
    }[opt]
    reference = _torch_fit(_model(optimizer=make[0]()), X, y, per_sample, 24, 2, make[1])
    for shuffle in (False, True):
        big = _model(optimizer=make[0]())
        big.fit(X, y, epochs=2, batch_size=24, shuffle=shuffle, verbose=0, **kwargs)
        small = _model(optimizer=make[0]())
        small.fit(X, y, epochs=2, batch_size=8, accumulate=3, shuffle=shuffle, verbose=0, **kwargs)
        assert small.optimizer.step_count == big.optimizer.step_count == 8
        np.testing.assert_allclose(small.params, big.params, rtol=1e-10, atol=1e-12)
        if not shuffle:  # PyTorch's batches in order
            np.testing.assert_allclose(_flat_params(small), reference, rtol=1e-10, atol=1e-12)


def test_a_group_of_zero_weights_updates_nothing_and_a_sum_loss_stays_exact():
    X, y = _data(40)
    w = np.ones(40)
    w[:20] = 0.0  # the first group (2 x 10 rows) weighs nothing
    small = _model(optimizer=fnn.optim.SGD(lr=0.3))
    params = small.params.copy()
    small.fit(X[:20], y[:20], batch_size=10, accumulate=2, shuffle=False, verbose=0, sample_weight=w[:20])
    assert small.optimizer.step_count == 1 and np.array_equal(small.params, params)
    runs = []
    for batch, k in ((40, 1), (10, 4)):
        model = _model(fnn.losses.CrossEntropy(reduction="sum"), fnn.optim.SGD(lr=0.01))
        model.fit(X, y, batch_size=batch, accumulate=k, shuffle=False, verbose=0, sample_weight=np.linspace(0, 2, 40))
        runs.append(model.params.copy())
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-11, atol=1e-13)


def test_weighted_streams_accumulate_as_one_batch_k_times_larger():
    """A dataset's and a stream's (X, y, w) batches: each batch's targets carry its weights."""
    X, y = _data()
    w = np.random.default_rng(6).uniform(0.0, 2.0, len(X))
    dataset = fnn.data.ArrayDataset(X, y, sample_weight=w)
    for small_source, big_source, kwargs in (
        (dataset, dataset, {"shuffle": True}),
        (
            lambda: ((X[i : i + 10], y[i : i + 10], w[i : i + 10]) for i in range(0, 90, 10)),
            lambda: ((X[i : i + 40], y[i : i + 40], w[i : i + 40]) for i in range(0, 90, 40)),
            {},
        ),
    ):
        big = _model(optimizer=fnn.optim.SGD(lr=0.3))
        big.fit(big_source, epochs=2, batch_size=40, class_weight={1: 3.0}, verbose=0, **kwargs)
        small = _model(optimizer=fnn.optim.SGD(lr=0.3))
        small.fit(small_source, epochs=2, batch_size=10, accumulate=4, class_weight={1: 3.0}, verbose=0, **kwargs)
        np.testing.assert_allclose(small.params, big.params, rtol=1e-11, atol=1e-13)
