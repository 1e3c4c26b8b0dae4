"""A Dense chain's training step with its batch rows split over the threads (fastnn._dense_chain):
where step plans take it, the same training as the layer-by-layer plan, the same bits on any
number of threads and as one fused call."""

from __future__ import annotations

import numba
import numpy as np
import pytest

import fastnn as fnn
from fastnn import _config, _dense_chain, _fused

CHAIN = {"dense_chain_cross_entropy", "dense_chain_elementwise"}


@pytest.fixture(autouse=True)
def two_tasks(monkeypatch):
    """The row split of a 2-CPU machine, whatever this one has (the plan reads GEMM_TILES when built)."""
    monkeypatch.setattr(_config, "GEMM_TILES", 2)


def _digits_like(dtype="float32", loss="cross_entropy", out=10, hidden=100, inputs=64, extra=()):
    model = fnn.Sequential(
        [fnn.Dense(inputs, hidden, activation="relu"), *extra, fnn.Dense(hidden, out)], seed=3, dtype=dtype
    )
    return model.compile(loss=loss, optimizer=fnn.optim.Adam(lr=0.01))


def _data(rng, n=400, inputs=64, out=10, loss="cross_entropy", dtype=np.float32):
    X = rng.standard_normal((n, inputs)).astype(dtype)
    y = np.arange(n) % out if loss == "cross_entropy" else rng.standard_normal((n, out)).astype(dtype)
    return X, y


def _kernels(model, batch):
    return {fn.__name__ for fn, _ in model.step_plan(batch).calls}


@pytest.mark.parametrize(
    "loss,kernel", [("cross_entropy", "dense_chain_cross_entropy"), ("mse", "dense_chain_elementwise")]
)
def test_a_small_network_on_a_large_batch_takes_the_chain(rng, loss, kernel):
    model = _digits_like(loss=loss)
    X, y = _data(rng, loss=loss)
    model.fit(X, y, epochs=1, batch_size=200, verbose=0)
    names = _kernels(model, 200)
    assert kernel in names and "dense_forward" not in names and "dense_backward" not in names


@pytest.mark.parametrize(
    "case",
    [
        "small step",
        "large weights",
        "many weights a row",
        "dropout between",
        "one task",
        "disabled",
        "ignore_index",
        "small batch",
    ],
)
def test_steps_it_does_not_pay_for_or_does_not_fit_keep_their_layers(rng, monkeypatch, case):
    kwargs: dict = {}
    batch = 200
    if case == "small step":
        kwargs = {"hidden": 16}  # 200 x (64 x 16 x 2 + 16 x 10 x 3): 0.5M multiply-adds
    elif case == "large weights":
        kwargs = {"hidden": 600}  # 44k weights
    elif case == "many weights a row":
        kwargs, batch = {"inputs": 128, "hidden": 128}, 64  # 17.6k weights, 2.3M multiply-adds: 276 weights a row
    elif case == "dropout between":
        kwargs = {"extra": (fnn.Dropout(0.2),)}
    elif case == "one task":
        monkeypatch.setattr(_config, "GEMM_TILES", 1)
    elif case == "disabled":
        monkeypatch.setattr(_dense_chain, "ENABLED", False)
    elif case == "small batch":
        batch = 2 * _dense_chain.MIN_TASK_ROWS - 1
        monkeypatch.setattr(_dense_chain, "MIN_MACS", 0)
    model = _digits_like(**kwargs)
    if case == "ignore_index":
        model.compile(loss=fnn.losses.CrossEntropy(ignore_index=0), optimizer="adam")
    X, y = _data(rng, inputs=kwargs.get("inputs", 64))
    model.fit(X, y, epochs=1, batch_size=batch, verbose=0)
    names = _kernels(model, batch)
    assert not names & CHAIN and "dense_backward" in names


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-9), ("float32", 2e-4)])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_the_chain_trains_as_the_layer_by_layer_plan(rng, monkeypatch, dtype, tol, loss):
    X, y = _data(rng, loss=loss, dtype=np.dtype(dtype).type)
    results = {}
    for enabled in (True, False):
        monkeypatch.setattr(_dense_chain, "ENABLED", enabled)
        model = _digits_like(dtype, loss)
        history = model.fit(X, y, epochs=3, batch_size=200, verbose=0).history["loss"]
        assert bool(_kernels(model, 200) & CHAIN) == enabled
        results[enabled] = (np.array(history), model.params.copy(), model.predict(X))
    for chain, layers in zip(results[True], results[False]):
        np.testing.assert_allclose(chain, layers, rtol=tol, atol=tol)


def test_the_chain_gives_the_same_bits_on_one_and_two_threads(rng):
    X, y = _data(rng)
    params = []
    before = numba.get_num_threads()
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            model = _digits_like()
            model.fit(X, y, epochs=2, batch_size=200, verbose=0)
            assert _kernels(model, 200) & CHAIN
            params.append(model.params.copy())
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(params[0], params[1])


def test_the_one_call_step_equals_the_call_by_call_step_bit_for_bit(monkeypatch, tmp_path, rng):
    """The fused step builds the chain's tuples of layer arrays inside its one function."""
    X, y = _data(rng)
    monkeypatch.setenv("FASTNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_fused, "_LOADED", {})
    runs = {}
    for fuse in ("always", "never"):
        monkeypatch.setattr(_config, "FUSE", fuse)
        model = _digits_like()
        losses = [model.train_step(X[i : i + 200], y[i : i + 200]) for i in (0, 200, 0)]
        assert _kernels(model, 200) & CHAIN
        runs[fuse] = (np.array(losses), model.params.copy(), model.step_plan(200).run.fused)
    assert runs["always"][2] and not runs["never"][2]
    for a, b in zip(runs["always"][:2], runs["never"][:2]):
        np.testing.assert_array_equal(a, b)


def test_a_slot_viewed_inside_a_tuple_is_not_rebound():
    """A fused step swaps its batch slots per call only where every view of them is a call's own
    argument: a view inside a tuple argument would keep reading the recorded buffer."""
    x = np.zeros((4, 3))
    assert _fused.rebindable([(np.sum, (x,))], x)
    assert not _fused.rebindable([(np.sum, (x, (x[:2],)))], x)


@pytest.mark.parametrize("loss,fuse", [("cross_entropy", "never"), ("mse", "always")])
def test_fit_gathers_each_task_s_rows_inside_the_chain_bit_for_bit(rng, monkeypatch, tmp_path, loss, fuse):
    """fit's lane runs the chain gathering its own rows (no gather_batch call before it): the same
    bits as the gather kernel followed by the chain, one by one and fused (a regression's runner
    counts nothing: its last Given argument is the batch's end, which the chain takes)."""
    X, y = _data(rng, loss=loss)
    monkeypatch.setenv("FASTNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_fused, "_LOADED", {})
    monkeypatch.setattr(_config, "FUSE", fuse)
    runs = {}
    for inside in (True, False):
        if not inside:
            monkeypatch.setattr(_dense_chain, "gathering_call", lambda call, x, y: None)
        model = _digits_like(loss=loss)
        history = model.fit(X, y, epochs=2, batch_size=200, verbose=0).history["loss"]
        runner = model.step_plan(200).gathering[2]
        names = [fn.__name__ for fn, _ in runner.calls]
        assert names[0] in CHAIN if inside else names[:2] == ["gather_batch", names[1]] and names[1] in CHAIN
        assert runner.fused == (fuse == "always")
        runs[inside] = (history, model.params.copy())
    assert runs[True][0] == runs[False][0]
    np.testing.assert_array_equal(runs[True][1], runs[False][1])
