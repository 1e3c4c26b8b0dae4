"""Fused steps (fastnn._fused): recorded kernel calls compiled into one function.

The rest of the suite runs with FASTNN_FUSE=never (tests/conftest.py) to save compile time;
here fusion is switched on per test through ``fastnn._config.FUSE``.
"""

import copy
import functools
import os
import re
import subprocess
import sys
import types

import numpy as np
import pytest
from numba.core.dispatcher import Dispatcher

import fastnn as fnn
from fastnn import _config, _fused, _inference
from fastnn.layers.base import Layer


@pytest.fixture
def fuse(monkeypatch, tmp_path):
    """Fuse every plan at once; generated steps go to a fresh cache folder."""
    monkeypatch.setattr(_config, "FUSE", "always")
    monkeypatch.setenv("FASTNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_fused, "_LOADED", {})  # load from this folder, not from earlier tests
    return tmp_path


@pytest.fixture(scope="module")
def _shared_steps(tmp_path_factory):
    """A cache folder and a loaded-steps table kept for the whole module."""
    return tmp_path_factory.mktemp("fused-steps"), {}


@pytest.fixture
def fuse_shared(monkeypatch, _shared_steps):
    """As ``fuse``, but the tests using it share their generated steps: a model structure they
    have in common compiles once for all of them, not once per test (seconds each). For tests of
    what a fused step does, not of how it is compiled or loaded."""
    folder, loaded = _shared_steps
    monkeypatch.setattr(_config, "FUSE", "always")
    monkeypatch.setenv("FASTNN_CACHE_DIR", str(folder))
    monkeypatch.setattr(_fused, "_LOADED", loaded)
    return folder


def _tiny(seed=3, dtype="float32", width=16):
    return fnn.Sequential(
        [fnn.Dense(2, width, activation="tanh"), fnn.Dense(width, width, activation="tanh"), fnn.Dense(width, 1)],
        seed=seed,
        dtype=dtype,
    )


def _regularised(dtype="float32"):
    return fnn.Sequential(
        [
            fnn.Dense(7, 33),
            fnn.BatchNorm1d(33),
            fnn.ReLU(),
            fnn.Dropout(0.3),
            fnn.Residual(fnn.Dense(33, 33, activation="gelu")),
            fnn.LayerNorm(33),
            fnn.Dense(33, 4),
        ],
        seed=11,
        dtype=dtype,
    )


def _train(model, X, y, loss, steps=6, batch=9):
    model.compile(loss=loss, optimizer=fnn.optim.Adam(lr=0.01))
    losses = [model.train_step(X[i * batch : (i + 1) * batch], y[i * batch : (i + 1) * batch]) for i in range(steps)]
    return np.array(losses), model.params.copy()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_training_steps_equal_the_python_loop_bit_for_bit(fuse, monkeypatch, dtype, rng):
    X = rng.standard_normal((60, 2))
    y = np.tanh(X[:, :1] * X[:, 1:])
    fused_model = _tiny(dtype=dtype)
    fused = _train(fused_model, X, y, "mse")
    assert fused_model.step_plan(9).run.fused
    monkeypatch.setattr(_config, "FUSE", "never")
    loop_model = _tiny(dtype=dtype)
    loop = _train(loop_model, X, y, "mse")
    assert not loop_model.step_plan(9).run.fused
    np.testing.assert_array_equal(fused[0], loop[0])
    np.testing.assert_array_equal(fused[1], loop[1])


def test_fused_step_with_batchnorm_dropout_residual_layernorm(fuse, monkeypatch, rng):
    """Every plannable layer kind in one fused step: same losses, weights, running statistics
    and dropout masks as the Python loop; then the same predictions at batch 1 and 5."""
    X = rng.standard_normal((54, 7)).astype(np.float32)
    y = np.arange(54) % 4
    fused_model = _regularised()
    fused = _train(fused_model, X, y, "cross_entropy")
    monkeypatch.setattr(_config, "FUSE", "never")
    loop_model = _regularised()
    loop = _train(loop_model, X, y, "cross_entropy")
    np.testing.assert_array_equal(fused[0], loop[0])
    np.testing.assert_array_equal(fused[1], loop[1])
    np.testing.assert_array_equal(fused_model.layers[1].running_var, loop_model.layers[1].running_var)
    monkeypatch.setattr(_config, "FUSE", "always")
    for rows in (X[:1], X[:5]):
        np.testing.assert_array_equal(fused_model.predict(rows), loop_model.predict(rows))
        assert _inference.plan(fused_model, rows.shape[0]).runner.fused


def test_one_generated_step_serves_every_model_of_one_structure(fuse):
    """The source holds the structure only (and the buffers' dtypes): sizes and values are arguments."""
    X32 = np.ones((8, 2), np.float32)
    sources = set()
    for width, seed in ((16, 1), (40, 2)):
        model = _tiny(seed=seed, width=width)
        model.compile(loss="mse", optimizer="sgd")
        model.train_step(X32, X32[:, :1])
        sources.add(model.step_plan(8).run._fused.source)
    assert len(sources) == 1
    assert len([f for f in os.listdir(fuse) if f.endswith(".py")]) == 1


def test_a_structure_this_process_loaded_fuses_at_a_new_models_second_run(fuse, monkeypatch, rng):
    """A scikit-learn estimator builds a new model per fit: a step structure this process has loaded
    fuses at the new model's second run (the probed one) when the runs expected pay for the build of
    its table, not after FUSE_AFTER_CALLS runs; a structure not loaded waits for them."""
    X = rng.standard_normal((18, 2)).astype(np.float32)
    y = X[:, :1] * X[:, 1:]
    loaded = _tiny(seed=1)
    loaded.compile(loss="mse", optimizer="sgd")
    loaded.train_step(X[:9], y[:9])  # FUSE "always": this structure is now loaded
    assert loaded.step_plan(9).run.fused
    monkeypatch.setattr(_config, "FUSE", "auto")
    with _fused.expected_runs(100_000):
        same = _tiny(seed=2, width=24)  # the same structure: sizes and values are arguments
        other = fnn.Sequential([fnn.Dense(2, 8, activation="relu"), fnn.Dense(8, 1)], seed=2)
        for model in (same, other):
            model.compile(loss="mse", optimizer="sgd")
            for i in range(2):
                model.train_step(X[9 * i : 9 * (i + 1)], y[9 * i : 9 * (i + 1)])
    assert same.step_plan(9).run.fused
    assert not other.step_plan(9).run.fused
    assert _config.FUSE_AFTER_CALLS > 2


def test_buffers_go_by_address_but_slots_and_read_only_arrays_are_arguments(fuse, rng):
    """Writeable buffers reach the step through its address table; a slot is an argument (any
    array of its shape), and so is a read-only array; results equal the kernels called directly."""
    from fastnn.kernels.activations import ACTIVATIONS, activation_forward

    tanh = ACTIVATIONS["tanh"][0]
    x, frozen = (rng.standard_normal((4, 3)).astype(np.float32) for _ in range(2))
    frozen.flags.writeable = False
    out, out_frozen = np.zeros_like(x), np.zeros_like(x)
    runner = _fused.CallRunner(
        [(activation_forward, (x, out, tanh, 0.0)), (activation_forward, (frozen, out_frozen, tanh, 0.0))], slots=(x,)
    )
    assert runner.fused
    assert re.search(r"def run\((.*)\):", runner._fused.source).group(1) == "address, s0, b2"
    expected, expected_frozen = np.zeros_like(x), np.zeros_like(x)
    activation_forward(frozen, expected_frozen, tanh, 0.0)
    for batch in (rng.standard_normal((4, 3)).astype(np.float32), None):  # None: the slot's own array
        runner(*(() if batch is None else (batch,)))
        activation_forward(x if batch is None else batch, expected, tanh, 0.0)
        np.testing.assert_array_equal(out, expected)
        np.testing.assert_array_equal(out_frozen, expected_frozen)
    with pytest.raises(TypeError, match="copy the model instead"):
        copy.deepcopy(runner)  # a copy would run on the original's buffers (the table holds addresses)


def test_a_slot_is_read_by_address_after_a_check_of_the_array_passed(fuse, rng):
    """A slot's views are taken at the address of the array passed in its place (no reference
    counts); an array that is not C-contiguous or not of the slot's size is refused with a
    ValueError before anything runs. The typed caller (no Numba dispatch: the version compiled
    for arrays like the slots, called directly) gives the same results as the dispatcher's."""
    from fastnn.kernels.activations import ACTIVATIONS, activation_forward

    tanh = ACTIVATIONS["tanh"][0]
    x = rng.standard_normal((4, 3)).astype(np.float32)
    out = np.zeros_like(x)
    runner = _fused.CallRunner([(activation_forward, (x, out, tanh, 0.0))], slots=(x,))
    assert runner.fused
    assert "s0.ctypes.data" in runner._fused.source and "s0.reshape" not in runner._fused.source
    for bad in (rng.standard_normal((5, 3)).astype(np.float32), rng.standard_normal((3, 8)).astype(np.float32)[:, ::2]):
        with pytest.raises(ValueError, match="argument 0 must be a C-contiguous array of the shape of the slot"):
            runner(bad)
        assert not out.any()  # refused before any kernel ran
    batch = rng.standard_normal((4, 3)).astype(np.float32)
    runner(batch)
    expected = np.zeros_like(x)
    activation_forward(batch, expected, tanh, 0.0)
    np.testing.assert_array_equal(out, expected)
    typed = runner.typed_slot_caller()
    assert isinstance(typed, functools.partial) and not isinstance(typed.func, Dispatcher)  # no dispatch
    out[...] = 0
    typed(x)
    activation_forward(x, expected, tanh, 0.0)
    np.testing.assert_array_equal(out, expected)


def test_runner_tiers_up_only_after_enough_runs_and_only_when_dispatch_matters(monkeypatch):
    monkeypatch.setattr(_config, "FUSE", "auto")
    monkeypatch.setattr(_config, "FUSE_AFTER_CALLS", 3)
    model = _tiny()
    model.compile(loss="mse", optimizer="sgd")
    X = np.zeros((4, 2), np.float32)
    monkeypatch.setattr(_config, "FUSE_MIN_SHARE", float("inf"))  # dispatch never worth it
    for _ in range(5):
        model.train_step(X, X[:, :1])
    assert not model.step_plan(4).run.fused
    monkeypatch.setattr(_config, "FUSE_MIN_SHARE", 0.0)  # dispatch always worth it
    X = np.zeros((5, 2), np.float32)
    model.train_step(X, X[:, :1])
    model.train_step(X, X[:, :1])
    assert not model.step_plan(5).run.fused
    model.train_step(X, X[:, :1])
    assert model.step_plan(5).run.fused


@pytest.mark.parametrize("fastest, fuses", [(0.1, True), (0.9, False)])
def test_the_tier_up_weighs_the_saving_against_the_fastest_run(monkeypatch, fastest, fuses):
    """The share of a run that fusing saves is of the fastest measured run: a run slowed by other
    processes (here one of two) does not hide what fusing saves (their mean would, at 0.9 s)."""
    from fastnn.kernels.checks import all_finite

    monkeypatch.setattr(_config, "FUSE", "auto")
    monkeypatch.setattr(_config, "FUSE_AFTER_CALLS", 4)
    monkeypatch.setattr(_config, "FUSE_MIN_SHARE", 0.02)
    monkeypatch.setattr(
        _fused, "estimated_saving", lambda calls, slots=(), unit=None: 0.01
    )  # > 2% of 0.1 s, < 2% of 0.9 s
    clock = [0.0]
    durations = iter([0.5, 1.0, fastest, 1.0])  # the first and the probed runs, unmeasured, then two measured

    def run_calls(self, arrays=()):
        clock[0] += next(durations)

    monkeypatch.setattr(_fused, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(_fused.CallRunner, "_run_calls", run_calls)
    fused: list = []
    monkeypatch.setattr(_fused.CallRunner, "_fuse", lambda self: fused.append(self))
    runner = _fused.CallRunner([(all_finite, (np.zeros((1, 1), np.float32),))], returns=0)
    for _ in range(4):
        runner()
    assert (fused == [runner]) == fuses and not runner._tiering


def test_fusing_waits_until_the_runs_still_expected_pay_for_the_compile(monkeypatch):
    monkeypatch.setattr(_config, "FUSE_COMPILE_SECONDS", 3.0)
    monkeypatch.setattr(_config, "FUSE_LOAD_SECONDS", 0.1)
    new_source, known_source = "new", "known"
    monkeypatch.setattr(_fused, "_compiled_before", lambda source: source == known_source)
    assert _fused.worth_fusing(1e-5, lambda: new_source)  # no hint: fuse as before
    with _fused.expected_runs(None):
        assert _fused.worth_fusing(1e-5, lambda: new_source)
    with _fused.expected_runs(100_000) as budget:
        assert not _fused.worth_fusing(1e-5, lambda: new_source)  # 100k x 10 us = 1 s < 3 s
        assert _fused.worth_fusing(1e-5, lambda: known_source)  # 1 s > a 0.1 s load
        budget.total = 1_000_000
        assert _fused.worth_fusing(1e-5, lambda: new_source)  # 10 s > 3 s
        budget.done = 990_000
        assert not _fused.worth_fusing(1e-5, lambda: new_source)  # 10k left: 0.1 s
    assert _fused._BUDGET.get() is None


def test_the_saving_estimate_counts_each_call_and_its_arguments(monkeypatch):
    """What fusing saves per run: per call the Python loop's own time and a dispatch (with its
    first array), per further array its unboxing, per scalar less; less the fused call's own (its
    Given arguments): in units of the measured one-array dispatch."""
    from fastnn.kernels.checks import all_finite, all_finite_pair

    monkeypatch.setattr(_fused, "_dispatch_seconds", lambda: 1.0)  # the unit
    a, b = np.zeros((2, 2), np.float32), np.zeros((2, 2), np.float32)
    one = [(all_finite, (a,))]
    per_call = 1 + _fused._LOOP_PER_CALL
    assert _fused.estimated_saving(one) == pytest.approx(per_call - 1)
    two = [(all_finite, (a,)), (all_finite_pair, (a, b))]
    assert _fused.estimated_saving(two) == pytest.approx(2 * per_call + _fused._PER_ARRAY - 1)
    scalars = [(all_finite, (a,)), (all_finite_pair, (a, b, 3, 0.5, None, _fused.Result(0)))]
    assert _fused.estimated_saving(scalars) == pytest.approx(
        2 * per_call + _fused._PER_ARRAY + 4 * _fused._PER_SCALAR - 1
    )
    given = [(all_finite, (_fused.Given(0),)), (all_finite_pair, (_fused.Given(0), b))]
    assert _fused.estimated_saving(given) == pytest.approx(2 * per_call + _fused._PER_ARRAY - 1 - _fused._PER_ARRAY)
    # a tuple's items count one by one (a Dense chain's per-layer arrays: Numba unboxes each)
    tupled = [(all_finite, (a,)), (all_finite_pair, (a, (a, b), (b, 0.5)))]
    assert _fused.estimated_saving(tupled) == pytest.approx(
        2 * per_call + 3 * _fused._PER_ARRAY + _fused._PER_SCALAR - 1
    )
    # a real step (fit's runner of a tiny network): more calls and arguments, a larger saving, and
    # several times the old estimate's dispatch of one argument per call
    model = _tiny()
    model.compile(loss="mse", optimizer="adam")
    plan = model.step_plan(8)
    calls = plan.run.calls
    estimate = _fused.estimated_saving(calls, plan.run.slots)
    assert estimate > _fused.estimated_saving(calls[:3]) > 0
    assert estimate > 1.5 * len(calls) * (1 + _fused._PER_ARRAY)


def test_fusing_costs_a_build_a_load_or_a_compile(monkeypatch):
    """A step this process loaded costs a build of its table, one an earlier process compiled a
    load of Numba's cache, any other a compile (the only one a short fit never waits for)."""
    monkeypatch.setattr(_config, "FUSE_COMPILE_SECONDS", 3.0)
    monkeypatch.setattr(_config, "FUSE_LOAD_SECONDS", 0.04)
    monkeypatch.setattr(_config, "FUSE_BUILD_SECONDS", 0.005)
    monkeypatch.setattr(_fused, "_compiled_before", lambda source: source in ("on disk", "loaded"))
    monkeypatch.setattr(_fused, "_LOADED", {_fused._step_file("loaded")[0]: lambda: None})
    assert _fused.fusing_cost("loaded") == (0.005, False)
    assert _fused.fusing_cost("on disk") == (0.04, False)
    assert _fused.fusing_cost("new") == (3.0, True)
    with _fused.expected_runs(1_000):  # 1000 x 10 us = 10 ms: pays for a build, not a load
        assert _fused.worth_fusing(1e-5, lambda: "loaded")
        assert not _fused.worth_fusing(1e-5, lambda: "on disk")
        # the runs it ran unfused before (earlier short fits) count for a load ...
        assert _fused.worth_fusing(1e-5, lambda: "on disk", runs_before=4_000)
        assert not _fused.worth_fusing(1e-5, lambda: "on disk", runs_before=2_000)
        # ... never for a compile: a short fit does not wait for one, however many came before
        assert not _fused.worth_fusing(1e-5, lambda: "new", runs_before=10**9)


def test_the_tier_up_decides_on_the_estimate_and_the_runs_it_ran_before(monkeypatch):
    """CallRunner's decision with a fake budget and clock-free measurements: the estimate (not a
    timing) against the cost; a step loadable from disk fuses once this fit's runs still to come and
    the runs before pay for the load; the share bar still keeps dispatch-free steps unfused."""
    from fastnn.kernels.checks import all_finite

    monkeypatch.setattr(_config, "FUSE", "auto")
    monkeypatch.setattr(_config, "FUSE_AFTER_CALLS", 5)
    monkeypatch.setattr(_config, "FUSE_MIN_SHARE", 0.0)
    monkeypatch.setattr(_fused, "_dispatch_seconds", lambda: 1e-6)
    monkeypatch.setattr(_fused, "fusing_cost", lambda source: (0.04, False))  # compiled before: a load
    fused = []
    monkeypatch.setattr(_fused.CallRunner, "_fuse", lambda self: fused.append(self))
    probe = np.zeros((2, 2), np.float32)
    calls = [(all_finite, (probe,))] * 10
    saving = _fused.estimated_saving(calls)  # 10 calls of one array, one unit each: ~20 us a run
    assert 1e-5 < saving < 1e-4
    runner = _fused.CallRunner(calls)
    with _fused.expected_runs(100) as budget:  # 100 runs: ~2 ms, not the 40 ms of a load
        for _ in range(5):
            runner()
            budget.done += 1
    assert not fused and runner._total == 5 and runner._runs == 1  # measuring again
    needed = int(0.04 / saving) + 1
    # at the next decision (4 runs on): needed - 6 runs to come do not pay alone; with the 9 run so far they do
    with _fused.expected_runs(needed - 3) as budget:
        for _ in range(4):
            runner()
            budget.done += 1
    assert fused == [runner]
    monkeypatch.setattr(_config, "FUSE_MIN_SHARE", float("inf"))  # what fusing saves is no share of a run
    other = _fused.CallRunner(calls)
    with _fused.expected_runs(10**9):
        for _ in range(5):
            other()
    assert fused == [runner] and not other._tiering


def test_a_short_fit_does_not_stop_to_compile_its_step(monkeypatch):
    """A fit of 12 steps never pays for a compile: the plan keeps running its calls (and is
    measured again, for a longer fit to come); the fit counts its steps into the budget."""
    monkeypatch.setattr(_config, "FUSE", "auto")
    monkeypatch.setattr(_config, "FUSE_AFTER_CALLS", 3)
    monkeypatch.setattr(_config, "FUSE_MIN_SHARE", 0.0)  # dispatch always worth saving ...
    monkeypatch.setattr(_config, "FUSE_COMPILE_SECONDS", 1e9)  # ... but never a compile
    monkeypatch.setattr(_fused, "_compiled_before", lambda source: False)
    seen = []
    real = _fused.worth_fusing
    monkeypatch.setattr(
        _fused,
        "worth_fusing",
        lambda saving, source, *rest: seen.append(_fused._BUDGET.get().done) or real(saving, source, *rest),
    )
    model = _tiny()
    model.compile(loss="mse", optimizer="sgd")
    X = np.zeros((8, 2), np.float32)
    model.fit(X, X[:, :1], epochs=6, batch_size=4, verbose=0)
    run = model.step_plan(4).gathering[2]  # fit's runner: the shuffled batch gathered inside (fastnn._step_feed)
    assert not run.fused
    assert seen == [2, 4, 6, 8, 10]  # decided at steps 3, 5, 7, 9, 11 (each a window of 2 timed runs)
    assert run._runs == 2  # measuring again: step 12 is the new window's first timed run


def test_a_runner_generates_its_step_source_once_across_re_measure_windows(monkeypatch):
    """A fit too short to fuse decides again every window: the source (hashed to find a step
    compiled before) is generated at the first decision only, and it is the step's source."""
    monkeypatch.setattr(_config, "FUSE", "auto")
    monkeypatch.setattr(_config, "FUSE_AFTER_CALLS", 3)
    monkeypatch.setattr(_config, "FUSE_MIN_SHARE", 0.0)
    monkeypatch.setattr(_config, "FUSE_COMPILE_SECONDS", 1e9)
    monkeypatch.setattr(_fused, "_compiled_before", lambda source: False)
    generated = []
    real_source = _fused._source
    monkeypatch.setattr(
        _fused, "_source", lambda calls, returns, slots=(): generated.append(1) or real_source(calls, returns, slots)
    )
    decisions = []
    real_worth = _fused.worth_fusing
    monkeypatch.setattr(
        _fused,
        "worth_fusing",
        lambda saving, source, *rest: decisions.append(source()) or real_worth(saving, source, *rest),
    )
    model = _tiny()
    model.compile(loss="mse", optimizer="sgd")
    X = np.zeros((8, 2), np.float32)
    model.fit(X, X[:, :1], epochs=6, batch_size=4, verbose=0)
    run = model.step_plan(4).gathering[2]  # fit's runner: the shuffled batch gathered inside (fastnn._step_feed)
    assert not run.fused and len(decisions) == 5
    assert len(generated) == 1
    assert set(decisions) == {real_source(run.calls, run.returns, run.slots)[0]}


def test_a_slow_first_run_does_not_hide_the_dispatch_share(fuse, monkeypatch):
    """The first run loads (or compiles) the kernels; timed, it would make a small step look
    dispatch-free and keep it unfused forever (tiny's step was, before this was fixed)."""
    monkeypatch.setattr(_config, "FUSE", "auto")
    monkeypatch.setattr(_config, "FUSE_AFTER_CALLS", 4)
    clock = {"now": 0.0, "runs": 0}
    run_calls = _fused.CallRunner._run_calls

    def timed_run_calls(self, arrays=()):  # the first run takes 1 s, the others 0.1 us, on a fake clock
        clock["now"] += 1.0 if clock["runs"] == 0 else 1e-7
        clock["runs"] += 1
        return run_calls(self, arrays)

    monkeypatch.setattr(_fused.CallRunner, "_run_calls", timed_run_calls)
    monkeypatch.setattr(_fused.time, "perf_counter", lambda: clock["now"])
    monkeypatch.setattr(_fused, "_dispatch_seconds", lambda: 1e-6)
    model = _tiny()
    model.compile(loss="mse", optimizer="sgd")
    X = np.zeros((4, 2), np.float32)
    for _ in range(4):
        model.train_step(X, X[:, :1])
    run = model.step_plan(4).run
    assert run.fused, (run._runs, run._fastest)


def test_user_layers_are_never_fused(fuse, rng):
    class Double(Layer):
        def build(self, in_features, dtype):
            return in_features

        def forward(self, x, training=True):
            return 2 * x

        def backward(self, grad_y, need_grad_x=True):
            return 2 * grad_y

    calls = [(lambda: None, ())]
    assert not _fused.fusible(calls)
    runner = _fused.CallRunner(calls)
    assert not runner.fused and runner() is None
    model = fnn.Sequential([fnn.Dense(3, 4), Double(), fnn.Dense(4, 1)], seed=0)
    model.compile(loss="mse", optimizer="sgd")
    X = rng.standard_normal((6, 3)).astype(np.float32)
    assert np.isfinite(model.train_step(X, X[:, :1]))


def test_cache_dir_falls_back_when_the_folder_is_not_writable(monkeypatch, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("FASTNN_CACHE_DIR", str(blocked / "sub"))
    folder = _fused.cache_dir()
    assert os.path.isdir(folder) and os.access(folder, os.W_OK)
    assert not folder.startswith(str(blocked))


def test_cache_dir_fallback_without_getuid(monkeypatch, tmp_path):
    """Windows has no os.getuid: the fallback is the (per-user) temporary folder's fastnn/."""
    monkeypatch.delattr(os, "getuid", raising=False)
    monkeypatch.setattr(_fused.tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setenv("FASTNN_CACHE_DIR", str(tmp_path / "file-not-folder" / "sub"))
    (tmp_path / "file-not-folder").write_text("not a folder")
    assert _fused.cache_dir() == os.path.join(str(tmp_path / "tmp"), "fastnn")


def test_bad_fastnn_fuse_value_is_a_clear_error():
    env = dict(os.environ, FASTNN_FUSE="sometimes")
    result = subprocess.run([sys.executable, "-c", "import fastnn"], env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "FASTNN_FUSE must be auto, always or never" in result.stderr


def test_a_failed_fusion_warns_and_keeps_the_python_loop(monkeypatch, rng):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler today")

    monkeypatch.setattr(_fused, "FusedCalls", broken)
    monkeypatch.setattr(_config, "FUSE", "always")
    X = rng.standard_normal((9, 2)).astype(np.float32)
    model = _tiny()
    model.compile(loss="mse", optimizer="sgd")
    with pytest.warns(RuntimeWarning, match="could not fuse.*no compiler today.*FASTNN_FUSE=never"):
        first = model.train_step(X, X[:, :1])
    assert not model.step_plan(9).run.fused
    assert np.isfinite(first) and np.isfinite(model.train_step(X, X[:, :1]))


def test_an_empty_list_of_calls_never_tiers_up(monkeypatch):
    monkeypatch.setattr(_config, "FUSE", "always")
    runner = _fused.CallRunner([])
    assert not runner.fused and runner() is None


@pytest.mark.parametrize("mode", ["always", "never"])
def test_training_steps_read_the_batch_in_place_or_from_a_copy_alike(fuse, monkeypatch, mode, rng):
    """The step plan takes a C-contiguous batch as it is (CallRunner slots) and copies any other
    into its buffers: the same steps either way, fused or not."""
    monkeypatch.setattr(_config, "FUSE", mode)
    X = rng.standard_normal((36, 2)).astype(np.float32)
    y = np.tanh(X[:, :1] * X[:, 1:])
    in_place, copied = _tiny(), _tiny()
    for model in (in_place, copied):
        model.compile(loss="mse", optimizer=fnn.optim.Adam(lr=0.01))
    for i in range(4):
        xb, yb = X[i * 9 : (i + 1) * 9], y[i * 9 : (i + 1) * 9]
        frozen = xb.copy()
        frozen.flags.writeable = False  # read-only: copied into the plan's buffer
        in_place.train_step(xb, yb)
        copied.train_step(frozen, yb)
    assert in_place.step_plan(9).run.slots and in_place.step_plan(9).run.fused == (mode == "always")
    assert not in_place.step_plan(9).x.any()  # never written: the steps read the caller's rows
    np.testing.assert_array_equal(copied.step_plan(9).x, X[27:])  # the last batch, copied
    np.testing.assert_array_equal(in_place.params, copied.params)


_OPTIMIZERS = {
    "sgd-nesterov-clip-value": lambda: fnn.optim.SGD(
        lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3, clip_value=0.05
    ),
    "adam-amsgrad-clip-norm": lambda: fnn.optim.Adam(lr=0.01, amsgrad=True, weight_decay=1e-3, clip_norm=0.1),
    "adamw": lambda: fnn.optim.AdamW(lr=0.01),
    "rmsprop-centered": lambda: fnn.optim.RMSProp(lr=0.01, momentum=0.5, centered=True, weight_decay=1e-3),
    "adagrad": lambda: fnn.optim.Adagrad(lr=0.05, lr_decay=0.01),
    "lion": lambda: fnn.optim.Lion(lr=1e-3, weight_decay=0.1),
}


def _steps_with_changes(model, X, y, batch=9):
    """Steps with the learning rate and the clipping changed between them, as schedules and users
    do: each must reach the update inside the compiled call (a step kernel compiled without value
    clipping, ``by_value`` None, is replaced when ``clip_value`` is set)."""
    losses = []
    for i in range(5):
        if i == 2:
            model.optimizer.lr = model.optimizer.lr * 0.5
        if i == 3 and model.optimizer.clip_norm is not None:
            model.optimizer.clip_norm = 1e-3
        elif i == 3:  # value clipping turned off, or on after the plan was built without it (rebuilds)
            model.optimizer.clip_value = None if model.optimizer.clip_value is not None else 1e-3
        losses.append(model.train_step(X[i * batch : (i + 1) * batch], y[i * batch : (i + 1) * batch]))
    return np.array(losses), model.params.copy(), model.optimizer.state_dict()


@pytest.mark.parametrize(
    "name, fused",
    [(name, False) for name in _OPTIMIZERS] + [("sgd-nesterov-clip-value", True), ("adam-amsgrad-clip-norm", True)],
)  # each fused structure is a compile of seconds: two of them
def test_the_update_inside_the_step_call_equals_optimizer_step(fuse, monkeypatch, name, fused, rng):
    """The optimizer's update runs as the step plan's last call (kernels.step_update): the same
    losses, weights and optimizer state, bit for bit, as Optimizer.step called from Python."""
    monkeypatch.setattr(_config, "FUSE", "always" if fused else "never")
    X = rng.standard_normal((45, 2)).astype(np.float32)
    y = np.tanh(X[:, :1] * X[:, 1:])
    inside = _tiny()
    inside.compile(loss="mse", optimizer=_OPTIMIZERS[name]())
    result = _steps_with_changes(inside, X, y)
    plan = inside.step_plan(9)
    assert plan.token is not None and plan.run.fused == fused
    assert plan.run.calls[-1][0].__module__ == "fastnn.kernels.step_update"
    monkeypatch.setattr(fnn.optim.Optimizer, "fused_step_token", lambda self: None)  # Optimizer.step
    outside = _tiny()
    outside.compile(loss="mse", optimizer=_OPTIMIZERS[name]())
    expected = _steps_with_changes(outside, X, y)
    assert outside.step_plan(9).token is None
    np.testing.assert_array_equal(result[0], expected[0])
    np.testing.assert_array_equal(result[1], expected[1])
    assert result[2].keys() == expected[2].keys()
    for key, value in expected[2].items():
        np.testing.assert_array_equal(result[2][key], value)
    assert inside.optimizer.step_count == 5 and inside.optimizer.last_grad_norm == outside.optimizer.last_grad_norm


@pytest.mark.parametrize(
    "name, fused, dtype",
    [(name, False, "float64") for name in _OPTIMIZERS]
    + [("sgd-nesterov-clip-value", False, "float32"), ("adam-amsgrad-clip-norm", True, "float32")],
)
def test_frozen_layers_update_inside_the_step_call_as_optimizer_step(fuse, monkeypatch, name, fused, dtype, rng):
    """Frozen layers (the middle Dense, and the first one's bias) no longer send the update to
    Python: the step kernel updates the trainable ranges only, the same bits as Optimizer.step
    over them (no update, no weight decay, untouched optimizer state of the frozen ranges)."""
    monkeypatch.setattr(_config, "FUSE", "always" if fused else "never")
    X = rng.standard_normal((45, 2)).astype(dtype)
    y = np.tanh(X[:, :1] * X[:, 1:])

    def frozen_model():
        model = _tiny(dtype=dtype).compile(loss="mse", optimizer=_OPTIMIZERS[name]())
        model.freeze(1)
        model.layers[0].trainable = True  # trainable ranges: split by the frozen layer, weights and biases
        return model

    inside = frozen_model()
    initial = inside.params.copy()
    result = _steps_with_changes(inside, X, y)
    plan = inside.step_plan(9)
    assert plan.token is not None and plan.run.fused == fused
    assert plan.run.calls[-1][0].__module__ == "fastnn.kernels.step_update"
    assert len(inside.optimizer.trainable) > 1  # more than one range: the range loop is exercised
    frozen = np.zeros(inside.params.size, bool)
    for i, _, lo, shape in inside.parameter_layout:
        frozen[lo : lo + int(np.prod(shape))] = i == 1
    np.testing.assert_array_equal(result[1][frozen], initial[frozen])
    assert np.all(result[1][~frozen] != initial[~frozen])
    for key, value in result[2].items():
        if isinstance(value, np.ndarray) and value.size:
            assert not value[frozen].any()  # the frozen ranges' state was never touched
    monkeypatch.setattr(fnn.optim.Optimizer, "fused_step_token", lambda self: None)  # Optimizer.step
    outside = frozen_model()
    expected = _steps_with_changes(outside, X, y)
    assert outside.step_plan(9).token is None
    np.testing.assert_array_equal(result[0], expected[0])
    np.testing.assert_array_equal(result[1], expected[1])
    for key, value in expected[2].items():
        np.testing.assert_array_equal(result[2][key], value)
    assert inside.optimizer.step_count == 5 and inside.optimizer.last_grad_norm == outside.optimizer.last_grad_norm


def test_a_non_finite_step_updates_nothing_and_the_next_steps_continue(monkeypatch, rng):
    """The update call of the plan (unfused here: the fused call runs the same kernel, see above)
    skips a step whose loss or norm is not finite; the model raises and stays as it was."""
    monkeypatch.setattr(_config, "FUSE", "never")
    X = rng.standard_normal((9, 2)).astype(np.float32)
    model = _tiny()
    model.compile(loss="mse", optimizer=fnn.optim.Adam(lr=0.01))
    model.train_step(X, X[:, :1])
    params, state = model.params.copy(), model.optimizer.state_dict()
    with pytest.raises(FloatingPointError):  # finite targets, a loss or gradient that overflows
        model.train_step(X, np.full((9, 1), 3e38, np.float32))
    assert model.step_plan(9).token is not None
    np.testing.assert_array_equal(model.params, params)
    assert model.optimizer.step_count == 1
    np.testing.assert_array_equal(model.optimizer.state_dict()["exp_avg"], state["exp_avg"])
    assert np.isfinite(model.train_step(X, X[:, :1])) and model.optimizer.step_count == 2


def test_steps_that_cannot_update_inside_the_call_update_from_python(monkeypatch, rng):
    """An optimizer subclass with its own update, gradients only (accumulation): the plan's update
    call is left out or not armed, and Optimizer.step does the update (frozen layers update inside
    the call: test_frozen_layers_update_inside_the_step_call_as_optimizer_step)."""
    monkeypatch.setattr(_config, "FUSE", "never")
    X = rng.standard_normal((9, 2)).astype(np.float32)

    class Halved(fnn.optim.SGD):
        name = "halved-sgd-test"

        def _update(self, grad_scale):
            super()._update(grad_scale * 0.5)

    model = _tiny()
    model.compile(loss="mse", optimizer=Halved(lr=0.1))
    before = model.params.copy()
    model.train_step(X, X[:, :1])
    assert model.step_plan(9).token is None and model.optimizer.step_count == 1
    twin = _tiny()
    twin.compile(loss="mse", optimizer=fnn.optim.SGD(lr=0.05))
    twin.train_step(X, X[:, :1])
    np.testing.assert_allclose(model.params, twin.params, rtol=1e-6)  # half the step: Halved's own update ran
    assert not np.array_equal(model.params, before)
    model = _tiny()
    model.compile(loss="mse", optimizer=fnn.optim.SGD(lr=0.1))
    model.train_step(X, X[:, :1])
    assert model.step_plan(9).token is not None
    params = model.params.copy()
    model.run_step(X, X[:, :1], update=False)  # gradients only: the armed flag stays down
    np.testing.assert_array_equal(model.params, params)
    assert model.optimizer.step_count == 1


def _lane_batches(rng, n=6, batch=8, dtype=np.float32, features=2, outputs=1):
    X = rng.standard_normal((n, batch, features)).astype(dtype)
    return X, np.tanh(X[:, :, :outputs] * X[:, :, 1 : outputs + 1])


@pytest.mark.parametrize("build, features, outputs", [(_tiny, 2, 1), (_regularised, 7, 4)])
def test_train_step_fast_lane_gives_the_long_ways_steps_bit_for_bit(fuse_shared, rng, build, features, outputs):
    """After one step the long way, train_step takes its fast lane (one check of the arrays' kind
    and values, then the compiled call): the same losses, weights, buffers (BatchNorm's running
    statistics, dropout's counter) and optimizer state as steps whose read-only batches must go the
    long way (copied into the plan), with the learning rate changed."""
    X, Y = _lane_batches(rng, features=features, outputs=outputs)
    lane, long_way = build(), build()
    for model in (lane, long_way):
        model.compile(loss="mse", optimizer=fnn.optim.SGD(lr=0.05, momentum=0.9))
    losses = {id(lane): [], id(long_way): []}
    for i in range(len(X)):
        if i == 3:
            lane.optimizer.lr = long_way.optimizer.lr = 0.01
        frozen_x, frozen_y = X[i].copy(), Y[i].copy()
        frozen_x.flags.writeable = frozen_y.flags.writeable = False
        losses[id(lane)].append(lane.train_step(X[i], Y[i]))
        losses[id(long_way)].append(long_way.train_step(frozen_x, frozen_y))
        assert (lane._lane is not None) and long_way._lane is None
    np.testing.assert_array_equal(losses[id(lane)], losses[id(long_way)])
    np.testing.assert_array_equal(lane.params, long_way.params)
    np.testing.assert_array_equal(
        lane.optimizer.state_dict()["momentum_buffer"], long_way.optimizer.state_dict()["momentum_buffer"]
    )
    for mine, theirs in zip(lane.layers, long_way.layers):
        for name, buffer in mine.buffers().items():
            np.testing.assert_array_equal(buffer, theirs.buffers()[name])
    assert lane.optimizer.step_count == long_way.optimizer.step_count == len(X)


def _nan_at(a, where):
    a = a.copy()
    a[where] = np.nan
    return a


@pytest.mark.parametrize(
    "bad_x, bad_y, error, match",
    [
        (lambda x: _nan_at(x, (3, 1)), None, ValueError, "xb contains NaN or infinity"),
        (None, lambda y: _nan_at(y, (5, 0)), ValueError, "y contains NaN or infinity"),
        (lambda x: np.full_like(x, np.inf), None, ValueError, "xb contains NaN or infinity"),
        (lambda x: np.ones((8, 3), np.float32), None, ValueError, "3 features per sample"),
        (None, lambda y: np.ones((7, 1), np.float32), ValueError, "different lengths"),
        (None, lambda y: np.ones((8, 2), np.float32), ValueError, r"shape \(n_samples, 1\)"),
    ],
)
def test_train_step_fast_lane_refuses_what_the_long_way_refuses(fuse_shared, rng, bad_x, bad_y, error, match):
    """Bad batches after the lane is set up get the long way's errors, and change nothing."""
    X, Y = _lane_batches(rng)
    model = _tiny().compile(loss="mse", optimizer=fnn.optim.SGD(lr=0.05, momentum=0.9))
    model.train_step(X[0], Y[0])
    model.train_step(X[1], Y[1])
    assert model._lane is not None
    params = model.params.copy()
    xb = X[2] if bad_x is None else bad_x(X[2])
    yb = Y[2] if bad_y is None else bad_y(Y[2])
    with pytest.raises(error, match=match):
        model.train_step(xb, yb)
    np.testing.assert_array_equal(model.params, params)
    assert model.optimizer.step_count == 2
    assert np.isfinite(model.train_step(X[3], Y[3])) and model.optimizer.step_count == 3


def test_a_batch_refused_inside_the_lanes_call_changes_no_buffer(fuse_shared, rng):
    """The lane's small float batches are checked inside the step's compiled call, after the
    forward pass has run: a NaN input leaves the weights, BatchNorm's running statistics, the
    dropout counter and the optimizer's state as they were, and raises the long way's error."""
    X, Y = _lane_batches(rng, features=7, outputs=4)
    model = _regularised().compile(loss="mse", optimizer=fnn.optim.Adam(lr=0.01))
    model.train_step(X[0], Y[0])
    model.train_step(X[1], Y[1])
    assert model._lane is not None and model._lane.checked  # the check inside the call
    before = copy.deepcopy(model)
    with pytest.raises(ValueError, match="xb contains NaN or infinity"):
        model.train_step(_nan_at(X[2], (0, 3)), Y[2])
    np.testing.assert_array_equal(model.params, before.params)
    for mine, theirs in zip(model.layers, before.layers):
        for name, buffer in mine.buffers().items():
            np.testing.assert_array_equal(buffer, theirs.buffers()[name])
    np.testing.assert_array_equal(model.optimizer.state_dict()["exp_avg"], before.optimizer.state_dict()["exp_avg"])
    assert model.optimizer.step_count == 2
    assert model.train_step(X[2], Y[2]) == before.train_step(X[2], Y[2])  # the same next step


def _assert_the_lane_refuses_a_label_out_of_range(model, X, labels):
    """Two steps put ``model`` (3 classes) on the fast lane; a third with a label 3 raises the loss's
    error and takes no step."""
    model.train_step(X[0], labels[0])
    model.train_step(X[1], labels[1])
    assert model._lane is not None
    with pytest.raises(ValueError, match=r"label 3, outside \[0, 3\)"):
        model.train_step(X[2], np.where(labels[2] == 0, 3, labels[2]))
    assert model.optimizer.step_count == 2


def test_train_step_fast_lane_checks_labels_the_loss_way_and_follows_a_new_compile(fuse, rng):
    """A loss with its own target checks (class labels) keeps them on the lane; a new optimizer or
    a diverging step leaves it as the long way would."""
    X = rng.standard_normal((4, 8, 2)).astype(np.float32)
    labels = rng.integers(0, 3, (4, 8))
    model = fnn.Sequential([fnn.Dense(2, 5, activation="relu"), fnn.Dense(5, 3)], seed=1)
    model.compile(loss="cross_entropy", optimizer=fnn.optim.SGD(lr=0.1))
    _assert_the_lane_refuses_a_label_out_of_range(model, X, labels)
    twin = copy.deepcopy(model)
    for m in (model, twin):
        m.compile(loss="cross_entropy", optimizer=fnn.optim.Adam(lr=0.01))
        m.train_step(X[2], labels[2].copy())  # the long way for the twin's fresh model
        m.train_step(X[3], labels[3])
    np.testing.assert_array_equal(model.params, twin.params)
    assert model.optimizer.step_count == 2
    params = model.params.copy()
    with pytest.raises(FloatingPointError):
        model.train_step(np.full((8, 2), 3e38, np.float32), labels[0])
    np.testing.assert_array_equal(model.params, params)
    assert model.optimizer.step_count == 2


def test_train_step_fast_lane_refuses_a_second_thread(fuse_shared, rng):
    import threading

    X, Y = _lane_batches(rng)
    model = _tiny().compile(loss="mse", optimizer=fnn.optim.SGD(lr=0.05))
    model.train_step(X[0], Y[0])
    model.train_step(X[1], Y[1])
    errors = []
    with model.training_session("test"):
        thread = threading.Thread(target=lambda: errors.append(_raises(model.train_step, X[2], Y[2])))
        thread.start()
        thread.join()
    assert errors and "being trained by another thread" in errors[0]
    assert model.optimizer.step_count == 2


def test_compile_and_restore_from_a_second_thread_are_refused_while_a_thread_trains(fuse_shared, rng):
    """(they swapped the optimizer or the weights between another thread's steps, silently); the
    training thread itself may still call them (a callback does)."""
    import threading

    X, Y = _lane_batches(rng)
    model = _tiny().compile(loss="mse", optimizer=fnn.optim.SGD(lr=0.05))
    model.train_step(X[0], Y[0])
    record, optimizer = model.snapshot(), model.optimizer
    errors = []
    with model.training_session("test"):
        for call in (lambda: model.compile("mse", fnn.optim.Adam()), lambda: model.restore(record)):
            thread = threading.Thread(target=lambda call=call: errors.append(_raises(call)))
            thread.start()
            thread.join()
        model.compile("mse", optimizer)  # the training thread: allowed
    assert len(errors) == 2 and all("being trained by another thread" in e for e in errors)
    assert model.optimizer is optimizer


def _reduce_nothing(loss, norm, output, target):
    return loss, norm


# each change that can leave train_step's fast lane stale, applied to a model on the lane and to its
# twin whose read-only batches always go the long way: (change, whether the lane takes the next step)
_LANE_CHANGES = {
    "compile": (lambda m: m.compile("mse", fnn.optim.SGD(lr=0.02, momentum=0.5)), False),
    "compile, the loss only": (lambda m: m.compile("mae", m.optimizer), False),
    "freeze": (lambda m: m.freeze(m.layers[0]), False),  # optimizer.trainable: a new token
    "clip_value switched on": (lambda m: setattr(m.optimizer, "clip_value", 0.01), False),  # a new token
    "clear_plans": (lambda m: m.clear_plans(), False),
    "rebind": (lambda m: m.compile("mse", m.optimizer, decay_bias_and_norm=True), False),
    "a layer's attribute": (lambda m: setattr(m.layers[0], "activation", "relu"), False),
    "gradient reducer": (lambda m: m.set_gradient_reducer(_reduce_nothing), False),  # (as under MPI)
    # not stale: the plan, its run and the optimizer's token unchanged; the new values reach the
    # kernel (the clips are written into its scalars when set, the rate at each step)
    "lr": (lambda m: setattr(m.optimizer, "lr", 0.003), True),
    "clip_norm": (lambda m: setattr(m.optimizer, "clip_norm", 0.05), True),
    "set_accumulation": (lambda m: m.set_accumulation(True), True),  # (unarmed outside fit: plain steps)
}


@pytest.mark.parametrize("change", list(_LANE_CHANGES))
def test_train_step_fast_lane_follows_each_change_that_can_make_it_stale(fuse_shared, rng, monkeypatch, change):
    """After each change, the next step goes the long way where the lane is stale (and a new lane
    is made after it, where the long way can be repeated) or stays on the lane where it is not:
    the same losses, weights and optimizer state as a twin on the long way throughout."""
    apply, stays = _LANE_CHANGES[change]
    X, Y = _lane_batches(rng, n=8)
    lane, long_way = _tiny(), _tiny()
    for model in (lane, long_way):
        model.compile(loss="mse", optimizer=fnn.optim.SGD(lr=0.05, momentum=0.9))
    long_ways = []
    run_step = fnn.Sequential.run_step
    monkeypatch.setattr(fnn.Sequential, "run_step", lambda m, *a, **k: long_ways.append(m) or run_step(m, *a, **k))
    losses: dict[int, list] = {id(lane): [], id(long_way): []}
    for i in range(len(X)):
        if i == 4:
            apply(lane)
            apply(long_way)
            long_ways.clear()
            before = lane._lane
        frozen_x, frozen_y = X[i].copy(), Y[i].copy()
        frozen_x.flags.writeable = frozen_y.flags.writeable = False
        losses[id(lane)].append(lane.train_step(X[i], Y[i]))
        losses[id(long_way)].append(long_way.train_step(frozen_x, frozen_y))
        if i == 4:
            assert (lane not in long_ways) == stays
            assert (lane._lane is before) == stays
        if i == 1:
            assert lane._lane is not None
    np.testing.assert_array_equal(losses[id(lane)], losses[id(long_way)])
    np.testing.assert_array_equal(lane.params, long_way.params)
    for name, buffer in lane.optimizer.state_dict().items():
        np.testing.assert_array_equal(buffer, long_way.optimizer.state_dict()[name])
    if change != "gradient reducer":  # (under a reducer every step goes the long way: no lane is made)
        assert lane._lane is not None and lane not in long_ways[-3:]  # back on a lane


def test_train_step_fast_lane_follows_an_update_replaced_on_the_optimizer(fuse_shared, rng, monkeypatch):
    """An optimizer whose own ``_update`` was replaced on the instance steps from Python (no fused
    token): the lane made before does not step past it."""
    X, Y = _lane_batches(rng)
    model = _tiny().compile(loss="mse", optimizer=fnn.optim.SGD(lr=0.05))
    model.train_step(X[0], Y[0])
    model.train_step(X[1], Y[1])
    assert model._lane is not None
    updates = []
    original = model.optimizer._update
    monkeypatch.setattr(model.optimizer, "_update", lambda scale: updates.append(scale) or original(scale))
    model.train_step(X[2], Y[2])
    model.train_step(X[3], Y[3])
    assert updates == [1.0, 1.0] and model.optimizer.step_count == 4


@pytest.mark.parametrize(
    "kind",
    ["strided", "fortran", "unaligned", "subclass", "float64", "one more row"],
)
def test_train_step_fast_lane_leaves_arrays_of_another_kind_to_the_long_way(fuse_shared, rng, monkeypatch, kind):
    """Arrays the lane's compiled call was not made for go the long way (converted there): the step
    is the long way's, bit for bit."""
    X, Y = _lane_batches(rng)
    lane, long_way = _tiny(), _tiny()
    for model in (lane, long_way):
        model.compile(loss="mse", optimizer=fnn.optim.SGD(lr=0.05, momentum=0.9))
        model.train_step(X[0], Y[0])
        model.train_step(X[1], Y[1])
    assert lane._lane is not None
    x = X[2]
    if kind == "strided":
        x = np.ascontiguousarray(np.repeat(x, 2, axis=1))[:, ::2]
    elif kind == "fortran":
        x = np.asfortranarray(x)
    elif kind == "unaligned":
        raw = np.zeros(x.nbytes + 1, np.uint8)
        x = raw[1:].view(np.float32).reshape(x.shape)
        x[...] = X[2]
        assert not x.flags.aligned
    elif kind == "subclass":
        x = X[2].view(type("Sub", (np.ndarray,), {}))
    elif kind == "float64":
        x = X[2].astype(np.float64)
    elif kind == "one more row":
        x = np.concatenate([X[2], X[2][:1]])
    y = Y[2] if kind != "one more row" else np.concatenate([Y[2], Y[2][:1]])
    long_ways = []
    run_step = fnn.Sequential.run_step
    monkeypatch.setattr(fnn.Sequential, "run_step", lambda m, *a, **k: long_ways.append(m) or run_step(m, *a, **k))
    frozen_x, frozen_y = np.array(x), y.copy()
    frozen_x.flags.writeable = frozen_y.flags.writeable = False
    assert lane.train_step(x, y) == long_way.train_step(frozen_x, frozen_y)
    assert lane in long_ways
    np.testing.assert_array_equal(lane.params, long_way.params)


def test_train_step_fast_lane_from_two_threads_at_once_takes_every_step_once(fuse_shared, rng):
    """Two threads stepping one model on its lane (no fit, no session: the lock alone orders them):
    every step is taken once, whole, as the same steps one after the other are."""
    import threading

    X, Y = _lane_batches(rng)
    model, alone = _tiny(), _tiny()
    for m in (model, alone):
        m.compile(loss="mse", optimizer=fnn.optim.SGD(lr=0.01, momentum=0.9))
        m.train_step(X[0], Y[0])
        m.train_step(X[1], Y[1])
    assert model._lane is not None
    n = 400
    start = threading.Barrier(2)

    def steps():
        start.wait()
        for _ in range(n):
            model.train_step(X[2], Y[2])

    threads = [threading.Thread(target=steps) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for _ in range(2 * n):
        alone.train_step(X[2], Y[2])
    assert model.optimizer.step_count == alone.optimizer.step_count == 2 * n + 2
    np.testing.assert_array_equal(model.params, alone.params)


def _embedder(sparse=False, mask_padding=False, seed=4):
    padding = {"padding_idx": 0, "mask_padding": True} if mask_padding else {}
    pool = [fnn.GlobalAvgPool(axis="time"), fnn.Dense(4, 8, activation="relu")]
    return fnn.Sequential(
        [
            fnn.Embedding(10, 4, sparse=sparse, **padding),
            *(pool if mask_padding else [fnn.Flatten(), fnn.Dense(12, 8, activation="relu")]),
            fnn.Dense(8, 3),
        ],
        input_shape=(3,),
        seed=seed,
    )


def _index_batches(rng, n=6, batch=8):
    return rng.integers(1, 10, (n, batch, 3)), rng.integers(0, 3, (n, batch))


def _counting_long_ways(monkeypatch) -> list:
    long_ways: list = []
    run_step = fnn.Sequential.run_step
    monkeypatch.setattr(fnn.Sequential, "run_step", lambda m, *a, **k: long_ways.append(m) or run_step(m, *a, **k))
    return long_ways


@pytest.mark.parametrize("sparse, loss", [(False, "cross_entropy"), (True, "cross_entropy"), (True, "mse")])
def test_train_step_fast_lane_takes_index_inputs_bit_for_bit(fuse_shared, rng, monkeypatch, sparse, loss):
    """A model whose first layer takes indices (Embedding, dense or sparse table) takes the fast lane
    after one step the long way, its indices' range checked at each step: the same losses, weights
    and optimizer state as a twin whose read-only batches always go the long way (whole-valued
    float indices, converted there, too)."""
    X, labels = _index_batches(rng)
    Y = labels if loss == "cross_entropy" else rng.standard_normal((len(X), 8, 3)).astype(np.float32)
    lane, long_way = _embedder(sparse), _embedder(sparse)
    for model in (lane, long_way):
        model.compile(loss=loss, optimizer=fnn.optim.Adam(lr=0.01))
    long_ways = _counting_long_ways(monkeypatch)
    losses: dict[int, list] = {id(lane): [], id(long_way): []}
    for i in range(len(X)):
        frozen_x = X[i].astype(np.float64) if i == 4 else X[i].copy()
        frozen_y = Y[i].copy()
        frozen_x.flags.writeable = frozen_y.flags.writeable = False
        losses[id(lane)].append(lane.train_step(X[i], Y[i]))
        losses[id(long_way)].append(long_way.train_step(frozen_x, frozen_y))
        assert lane._lane is not None and lane._lane.index_limit == 10 and long_way._lane is None
    assert long_ways.count(lane) == 1  # the first step only
    np.testing.assert_array_equal(losses[id(lane)], losses[id(long_way)])
    np.testing.assert_array_equal(lane.params, long_way.params)
    for name, buffer in lane.optimizer.state_dict().items():
        np.testing.assert_array_equal(buffer, long_way.optimizer.state_dict()[name])
    assert lane.optimizer.step_count == long_way.optimizer.step_count == len(X)


def _mutated(x, where, value):
    x[where] = value  # in place: the very array the lane checked and took before
    return x


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (lambda x: np.where(x == 9, 10, x), ValueError, r"xb holds index 10, outside \[0, 10\) of Embedding"),
        (lambda x: np.where(x == 1, -1, x), ValueError, r"xb holds index -1, outside \[0, 10\) of Embedding"),
        (lambda x: _mutated(x, (5, 2), 10), ValueError, r"xb holds index 10, outside \[0, 10\)"),
        (lambda x: _mutated(x, (0, 0), -3), ValueError, r"xb holds index -3, outside \[0, 10\)"),
        (lambda x: x + 0.5, TypeError, "xb must hold integer indices for Embedding.*non-integer values"),
        (lambda x: x > 4, TypeError, "xb must hold integer indices.*got a bool array"),
        (lambda x: x.astype(np.int32) + 10, ValueError, r"xb holds index \d+, outside \[0, 10\)"),
    ],
)
@pytest.mark.parametrize("at_step", [2, 5])
def test_train_step_fast_lane_refuses_bad_indices_at_any_step(fuse_shared, rng, bad, error, match, at_step):
    """Indices out of range, or not integers, after the lane is set up (a new array, or the array
    the lane took before changed in place) get the long way's errors and change nothing; the next
    good step goes on as on a twin that never saw the bad batch."""
    X, Y = _index_batches(rng)
    model, twin = _embedder(sparse=True), _embedder(sparse=True)
    for m in (model, twin):
        m.compile(loss="cross_entropy", optimizer=fnn.optim.Adam(lr=0.01))
    for i in range(at_step):
        model.train_step(X[i], Y[i])
        twin.train_step(X[i].copy(), Y[i].copy())
    assert model._lane is not None
    params, state = model.params.copy(), model.optimizer.state_dict()
    xb = X[at_step - 1]  # the array of the last step, on the lane
    with pytest.raises(error, match=match):
        model.train_step(bad(xb), Y[at_step - 1])
    np.testing.assert_array_equal(model.params, params)
    for name, buffer in state.items():
        np.testing.assert_array_equal(model.optimizer.state_dict()[name], buffer)
    assert model.optimizer.step_count == at_step
    assert model.train_step(X[at_step], Y[at_step]) == twin.train_step(X[at_step].copy(), Y[at_step].copy())
    np.testing.assert_array_equal(model.params, twin.params)


def test_train_step_fast_lane_checks_labels_beside_indices_and_skips_masked_sequences(fuse_shared, rng):
    """On an index lane the labels keep their loss's check; an Embedding with mask_padding (whose
    sequences are checked too) takes no lane, and refuses a sequence of padding alone at any step."""
    X, Y = _index_batches(rng)
    model = _embedder().compile(loss="cross_entropy", optimizer=fnn.optim.SGD(lr=0.1))
    _assert_the_lane_refuses_a_label_out_of_range(model, X, Y)
    masked = _embedder(mask_padding=True).compile(loss="cross_entropy", optimizer=fnn.optim.SGD(lr=0.1))
    for i in range(3):
        masked.train_step(X[i], Y[i])
    assert masked._lane is None and masked.layers[0].index_limit is None
    X[3][2] = 0
    with pytest.raises(ValueError, match="padding_idx=0"):
        masked.train_step(X[3], Y[3])
    assert masked.optimizer.step_count == 3


def _raises(fn, *args):
    try:
        fn(*args)
    except RuntimeError as error:
        return str(error)
    return ""


def test_the_dispatch_unit_in_the_step_adds_the_median_cold_excess_and_is_capped(monkeypatch):
    """A probe after each kernel (cold) against one right after it (warm): the unit is the warm
    dispatch plus the median excess, never below the warm unit, at most _COLD_MAX_UNITS of it."""
    monkeypatch.setattr(_fused, "_dispatch_seconds", lambda: 1e-6)
    assert _fused.cold_dispatch_seconds([], []) == 1e-6
    # a tiny step: the kernels leave the caches warm, the probes cost alike
    assert _fused.cold_dispatch_seconds([3e-7, 2e-7, 3e-7], [3e-7, 3e-7, 3e-7]) == pytest.approx(1e-6)
    # a large step: ~1 us more after most kernels; one preempted probe is not the median
    cold = [1.3e-6, 1.2e-6, 5e-3, 1.1e-6, 0.3e-6]
    warm = [0.3e-6] * 5
    assert _fused.cold_dispatch_seconds(cold, warm) == pytest.approx(1e-6 + 0.9e-6)
    # a step of one call preempted in its probe: capped
    assert _fused.cold_dispatch_seconds([5e-3], [3e-7]) == pytest.approx(_fused._COLD_MAX_UNITS * 1e-6)
    calls = [(None, (np.zeros(1),))] * 3
    assert _fused.estimated_saving(calls, (), 4e-6) == pytest.approx(4 * _fused.estimated_saving(calls, (), 1e-6))


def test_the_runner_probes_its_dispatch_once_untimed_and_decides_on_it(monkeypatch):
    """The second run probes after each call (same results, calls restored), is not timed, happens
    once per runner; the decision's estimate takes that unit: a step whose dispatch is dear in
    place fuses where the warm unit would keep it unfused."""
    from fastnn.kernels.checks import all_finite

    monkeypatch.setattr(_config, "FUSE", "auto")
    monkeypatch.setattr(_config, "FUSE_AFTER_CALLS", 4)
    monkeypatch.setattr(_config, "FUSE_MIN_SHARE", 1.0)  # the saving must beat a whole run's time
    monkeypatch.setattr(_fused, "_dispatch_seconds", lambda: 1e-12)  # warm: a saving of nothing
    monkeypatch.setattr(_fused, "fusing_cost", lambda source: (0.0, False))
    fused = []
    monkeypatch.setattr(_fused.CallRunner, "_fuse", lambda self: fused.append(self))
    probe, bad = np.zeros((2, 2), np.float32), np.full((2, 2), np.nan, np.float32)
    calls = [(all_finite, (probe,)), (all_finite, (bad,)), (all_finite, (probe,))]
    seen = []
    real = _fused.cold_dispatch_seconds
    monkeypatch.setattr(
        _fused, "cold_dispatch_seconds", lambda cold, warm: seen.append((len(cold), len(warm))) or real(cold, warm)
    )
    warm_runner = _fused.CallRunner(calls, returns=(0, 1))
    for _ in range(6):
        assert warm_runner() == (True, False)  # the probed run's results too
    assert seen == [(3, 3)] and warm_runner.calls == calls and not fused and not warm_runner._tiering
    assert 1e-12 <= warm_runner._unit <= _fused._COLD_MAX_UNITS * 1e-12
    monkeypatch.setattr(_fused, "cold_dispatch_seconds", lambda cold, warm: 1.0)  # dear in place: ~10 s a run
    dear = _fused.CallRunner(calls, returns=(0, 1))
    dear._cold = False  # (no compile in workers)
    for run in range(1, 5):
        dear()
        assert (dear._fastest < float("inf")) == (run >= 3)  # not the first run timed, nor the probed one
    assert fused == [dear]
