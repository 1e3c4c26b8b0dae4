"""fit on shuffled arrays gathers each batch, and counts its correct classifications, inside the
step's own call (fastnn._step_feed, fastnn.kernels.step_feed): the same results as gathering
with np.take and counting from Python, bit for bit."""

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _config, _fused, _step_feed, training
from fastnn.kernels.step_feed import add_to_total, gather_batch
from tests import reference as ref


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rows, width", [(1, 3), (7, 5), (300, 256)])  # 300 x 256: the parallel branch
def test_gather_batch_equals_the_reference(rows, width, dtype, rng):
    n = rows + 4
    x_all = rng.standard_normal((n, width)).astype(dtype)
    y_all = rng.integers(0, 9, (n, 1))
    order = rng.permutation(n).astype(np.int64)
    x, y = np.full((rows, width), np.nan, dtype), np.full((rows, 1), -1, np.int64)
    gather_batch(x_all, y_all, order, 3, 3 + rows, x, y)
    want_x, want_y = ref.gather_batch(x_all, y_all, order, 3, 3 + rows)
    np.testing.assert_array_equal(x, want_x.astype(dtype))
    np.testing.assert_array_equal(y, want_y)


@pytest.mark.parametrize("lo, rows", [(0, 5), (5, 5), (9, 3), (11, 1)])  # the prefetch ahead reaches the order's end
def test_gather_batch_prefetching_ahead_changes_no_row(lo, rows, rng):
    """Each copied row has the row PREFETCH_AHEAD later in the order prefetched, past the batch
    and up to the order's end: a hint only, the rows copied are the reference's."""
    n = 12
    x_all = rng.standard_normal((n, 40)).astype(np.float32)  # 160-byte rows: three cache lines each
    y_all = rng.standard_normal((n, 3))
    order = rng.permutation(n).astype(np.int64)
    x, y = np.full((rows, 40), np.nan, np.float32), np.full((rows, 3), np.nan)
    gather_batch(x_all, y_all, order, lo, lo + rows, x, y)
    want_x, want_y = ref.gather_batch(x_all, y_all, order, lo, lo + rows)
    np.testing.assert_array_equal(x, want_x)
    np.testing.assert_array_equal(y, want_y)


def test_add_to_total_keeps_a_running_count():
    totals = np.zeros(1, np.int64)
    for value in (3, 0, 4):
        add_to_total(np.int64(value), totals)
    assert totals[0] == 7


def _labels(dtype):
    model = fnn.Sequential([fnn.Dense(3, 8, activation="tanh"), fnn.Dense(8, 3)], seed=1, dtype=dtype)
    return model.compile("cross_entropy", fnn.optim.Adam(lr=0.05)), 3, lambda r, n: r.integers(0, 3, n)


def _values(dtype):
    model = fnn.Sequential([fnn.Dense(3, 6, activation="relu"), fnn.Dense(6, 2)], seed=1, dtype=dtype)
    return model.compile("mse", fnn.optim.SGD(lr=0.05, momentum=0.9)), 3, lambda r, n: r.standard_normal((n, 2))


def _binary(dtype):
    model = fnn.Sequential([fnn.Dense(3, 6, activation="tanh"), fnn.Dense(6, 2)], seed=1, dtype=dtype)
    targets = lambda r, n: r.integers(0, 2, (n, 2)).astype(dtype)  # noqa: E731
    return model.compile("binary_cross_entropy", fnn.optim.SGD(lr=0.1)), 3, targets


def _samples_2d(dtype):  # N-D samples: (n, 2, 3)
    model = fnn.Sequential([fnn.Flatten(), fnn.Dense(6, 3)], seed=1, dtype=dtype, input_shape=(2, 3))
    return model.compile("cross_entropy", fnn.optim.Adam(lr=0.05)), (2, 3), lambda r, n: r.integers(0, 3, n)


def _positions(dtype):  # a label per position: (n, 4, 3) outputs, (n, 4) targets
    layers = [fnn.Dense(3, 5, activation="tanh"), fnn.Dense(5, 3)]
    model = fnn.Sequential(layers, seed=1, dtype=dtype, input_shape=(4, 3))
    return model.compile("cross_entropy", fnn.optim.SGD(lr=0.1)), (4, 3), lambda r, n: r.integers(0, 3, (n, 4))


MODELS = {"labels": _labels, "values": _values, "binary": _binary, "samples_2d": _samples_2d, "positions": _positions}


def _fit(make, dtype, gather_inside, **options):
    name = make.__name__.lstrip("_")
    model, shape, targets = make(dtype)
    r = np.random.default_rng(7)
    n = 37  # batches of 8: the last one has 5 rows
    X = r.standard_normal((n, *np.atleast_1d(shape))).astype(dtype)
    y = targets(r, n)
    built = []  # the gathering runners fit built
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training.ArrayBatches, "gather_inside", gather_inside)
        for maker in ("gathering_runner", "counting_runner"):  # (the latter: shuffle=False)
            make = getattr(_step_feed, maker)
            patch.setattr(_step_feed, maker, lambda *a, make=make: built.append(make(*a)) or built[-1])
        if gather_inside:  # the count comes from inside the call (with sample weights too)
            patch.setattr(model, "correct_count", lambda *a: pytest.fail("counted from Python"))
        history = model.fit(X, y, epochs=2, batch_size=8, verbose=0, **options)
    counted = name != "values" or options.get("shuffle", True)  # unshuffled: a runner only to count
    assert bool(built) == (gather_inside and counted)  # for each batch size: the full batches and the last one
    assert all(runner.fused == (_config.FUSE == "always") for runner in built)
    return model, dict(history.history)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(MODELS))
def test_fit_gathering_inside_the_step_equals_gathering_in_python(name, dtype):
    inside, logs_inside = _fit(MODELS[name], dtype, True)
    outside, logs_outside = _fit(MODELS[name], dtype, False)
    np.testing.assert_array_equal(inside.params, outside.params)
    assert logs_inside == logs_outside


@pytest.mark.parametrize("options", [{"sample_weight": np.linspace(0.5, 2.0, 37)}, {"accumulate": 2}])
def test_sample_weights_and_accumulation_gather_inside_alike(options):
    inside, logs_inside = _fit(_labels, "float64", True, **options)
    outside, logs_outside = _fit(_labels, "float64", False, **options)
    np.testing.assert_array_equal(inside.params, outside.params)
    assert logs_inside == logs_outside


@pytest.mark.parametrize("name", ["labels", "values"])  # counted inside, or a loss without a count
def test_the_fused_step_gathers_and_counts_inside_its_one_call(name, monkeypatch, tmp_path):
    monkeypatch.setenv("FASTNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_fused, "_LOADED", {})
    monkeypatch.setattr(_config, "FUSE", "always")
    inside, logs_inside = _fit(MODELS[name], "float32", True)
    outside, logs_outside = _fit(MODELS[name], "float32", False)
    assert outside.step_plan(8).run.fused
    np.testing.assert_array_equal(inside.params, outside.params)
    assert logs_inside == logs_outside


def test_a_fit_left_early_leaves_no_step_armed_and_steps_on_other_arrays_read_them():
    model, _, targets = _labels("float64")
    r = np.random.default_rng(3)
    X, y = r.standard_normal((20, 3)), targets(r, 20)

    class Stop(fnn.callbacks.Callback):
        def on_batch_begin(self, batch, logs=None):
            if batch == 1:
                raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        model.fit(X, y, batch_size=8, verbose=0, callbacks=[Stop()])
    plan = model.step_plan(8)
    assert plan.feed is None  # the armed second step was forgotten
    feed = _step_feed.StepFeed(model, *model.check_data(X, y), np.arange(20), count=True)
    feed.arm(plan, 0, 8)
    xb, yb = model.check_data(X[8:16], y[8:16])
    loss, out = model.run_step(xb, yb, update=False)  # not the plan's buffers: read as given, no gather
    assert plan.feed is None and not feed.counted
    np.testing.assert_allclose(out, model.predict(xb), rtol=1e-12)


@pytest.mark.parametrize("name", ["labels", "binary", "positions", "values"])
def test_unshuffled_fit_counts_inside_the_call_alike(name):
    """shuffle=False: the batch read in place, its correct count added inside the same call."""
    if name != "positions":  # (sample weights take one target row per sample)
        weights = np.linspace(0.5, 2.0, 37)
        inside, logs_inside = _fit(MODELS[name], "float32", True, shuffle=False, sample_weight=weights)
        outside, logs_outside = _fit(MODELS[name], "float32", False, shuffle=False, sample_weight=weights)
        np.testing.assert_array_equal(inside.params, outside.params)
        assert logs_inside == logs_outside
    inside, logs_inside = _fit(MODELS[name], "float64", True, shuffle=False)
    outside, logs_outside = _fit(MODELS[name], "float64", False, shuffle=False)
    np.testing.assert_array_equal(inside.params, outside.params)
    assert logs_inside == logs_outside


def test_a_feed_works_out_what_its_loss_counts_once_per_loss_not_per_step(monkeypatch):
    """What the loss counts (its count kernel, the runners' key, the arrays after the batch) is
    worked out once per fit, not per step; a fit on another loss (a weighted fit's SampleWeighted,
    a loss that counts nothing) works it out for that loss."""
    seen = []
    real = _step_feed.counts_inside
    monkeypatch.setattr(_step_feed, "counts_inside", lambda loss: seen.append(loss) or real(loss))
    model, _, targets = _labels("float64")
    r = np.random.default_rng(5)
    X, y = r.standard_normal((40, 3)), targets(r, 40)
    history = model.fit(X, y, epochs=3, batch_size=8, verbose=0)  # 15 steps
    assert seen == [model.loss] and 0 < history.history["accuracy"][-1] <= 1
    seen.clear()
    model.fit(X, y, epochs=1, batch_size=8, verbose=0, sample_weight=np.linspace(0.5, 2.0, 40))
    assert len(seen) == 1 and isinstance(seen[0], fnn.losses.SampleWeighted)
    model.compile("mse", model.optimizer)  # a loss that counts nothing
    yv = r.standard_normal((40, 3))
    seen.clear()
    history = model.fit(X, yv, epochs=2, batch_size=8, verbose=0)
    assert seen == [model.loss] and "accuracy" not in history.history
    feed = _step_feed.StepFeed(model, *model.check_data(X, yv), np.arange(40), count=True)
    plan = model.step_plan(8)
    feed.arm(plan, 0, 8)
    model.run_step(plan.x, plan.y, update=False)
    assert not feed.classifies and not feed.counted and feed.correct_count(plan.out, plan.y) is None
