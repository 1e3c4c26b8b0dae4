"""Property-based tests: random layer stacks, per-sample shapes, dtypes, batch sizes and input values.

The property: every public call (Sequential construction, compile, fit, train_step, predict,
predict_proba, evaluate, forward/backward, save + load, summary) either works - finite outputs
for finite moderate inputs, the right shapes, the model's dtype kept - or raises a documented
error: ValueError/TypeError for bad input, FloatingPointError (naming a layer or the loss) for a
diverging training step, RuntimeError only for documented misuse. Never a Numba TypingError, an
AttributeError/KeyError/IndexError, or silent garbage. Widths stay tiny (<= 8) so examples are fast;
tests/conftest.py sets FASTNN_FUSE=never, so no fused step compiles per example.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

import fastnn as fnn
from fastnn.kernels.activations import ACTIVATIONS

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
USER_ERRORS = (ValueError, TypeError)
ACTIVATION_NAMES = sorted(ACTIVATIONS)
LOSSES = ("cross_entropy", "mse", "mae", "huber", "binary_cross_entropy")
OPTIMIZERS = ("sgd", "adam", "rmsprop", "adagrad", "adamw", "lion")
#: ValueErrors that valid data may still meet: BatchNorm1d training on one sample, losses on outputs
#: with more than one axis per sample, a model built from its first data whose layers cannot take it
EXPECTED_REFUSALS = re.compile(
    r"more than 1 sample per batch|more than 1 value per channel|at least 2 samples per training batch|holds 1 sample|layer shapes do not chain|takes \(batch, outputs\)|"
    r"cannot take the output of|Residual block maps"
)
#: the part of a divergence message that says where the first non-finite value came from
DIVERGENCE_WHERE = re.compile(
    r"first non-finite value: (the loss itself|the (output|gradient) of layer \d+ |"
    r"none, but the gradients are too large for their norm: .* in layer \d+ )"
)

# -- random layer stacks: plain tuples, turned into fresh layers per model -----------------------

widths = st.integers(1, 8)


def _dense_spec():
    return st.tuples(st.just("dense"), widths, st.sampled_from(ACTIVATION_NAMES), st.booleans())


_simple_specs = st.one_of(
    _dense_spec(),
    st.tuples(st.just("act"), st.sampled_from(ACTIVATION_NAMES)),
    st.tuples(st.just("dropout"), st.sampled_from([0.0, 0.1, 0.5, 0.9])),
    st.tuples(st.just("bn"), st.sampled_from([0.1, None])),
    st.tuples(st.just("ln"), st.booleans()),
)
layer_spec = st.one_of(
    _simple_specs,
    st.tuples(st.just("res"), st.lists(_simple_specs, min_size=1, max_size=3), st.booleans()),
)


def make_layers(specs, width: int) -> tuple[list, int]:
    """Fresh layers for ``specs`` on inputs of last axis ``width``; (layers, output width).

    Widths chain where a layer fixes them, so construction fails only for a real reason (a
    residual block that changes the width without a projection, BatchNorm1d on 2-axis samples).
    """
    layers = []
    for spec in specs:
        kind = spec[0]
        if kind == "dense":
            _, units, activation, fix_in = spec
            layers.append(fnn.Dense(width, units, activation) if fix_in else fnn.Dense(units, activation=activation))
            width = units
        elif kind == "act":
            layers.append(fnn.Activation(spec[1]))
        elif kind == "dropout":
            layers.append(fnn.Dropout(spec[1]))
        elif kind == "bn":
            layers.append(fnn.BatchNorm1d(width, momentum=spec[1]))
        elif kind == "ln":
            layers.append(fnn.LayerNorm(width, elementwise_affine=spec[1]))
        else:
            _, block_specs, projection = spec
            block, out = make_layers(block_specs, width)
            layers.append(fnn.Residual(block, projection=projection))
            if projection:
                width = out
    return layers, width


@st.composite
def stacks(draw, one_axis: bool = False):
    """(layer specs, per-sample input shape, loss name, output width, dtype name, how to build)."""
    loss = draw(st.sampled_from(LOSSES))
    features = draw(widths)
    lead = () if one_axis else draw(st.sampled_from([(), (), (), (2,), (1,)]))
    hidden = draw(st.lists(layer_spec, max_size=4))
    out = draw(st.integers(2 if loss == "cross_entropy" else 1, 5))
    specs = [*hidden, ("dense", out, "identity", draw(st.booleans()))]
    dtype = draw(st.sampled_from(["float32", "float64"]))
    how = draw(st.sampled_from(["input_shape", "first_layer", "from_data"]))
    return specs, (*lead, features), loss, out, dtype, how


def build_model(specs, shape, dtype, how, seed=0):
    layers, _ = make_layers(specs, shape[-1])
    if how == "input_shape":
        return fnn.Sequential(layers, seed=seed, dtype=dtype, input_shape=shape)
    return fnn.Sequential(layers, seed=seed, dtype=dtype)  # "first_layer" / "from_data": shape inferred


# -- input values -------------------------------------------------------------------------------

MODERATE = ("normal", "tiny", "zeros", "ints", "denormal")
EXTREME = ("huge", "max", "mixed_huge")


def make_values(kind: str, shape, dtype: str, rng) -> np.ndarray:
    """An array of ``shape`` of one kind of values (finite; "ints" gives an integer array)."""
    dt = np.dtype(dtype)
    if kind == "normal":
        return rng.normal(size=shape).astype(dt)
    if kind == "tiny":
        return (rng.normal(size=shape) * 1e-30).astype(dt)
    if kind == "denormal":
        return np.full(shape, np.finfo(dt).smallest_subnormal, dt) * rng.choice([-1, 1], size=shape).astype(dt)
    if kind == "zeros":
        return np.zeros(shape, dt)
    if kind == "ints":
        return rng.integers(-5, 6, size=shape)
    if kind == "huge":
        return (rng.choice([-1.0, 1.0], size=shape) * 1e30).astype(dt)
    if kind == "max":
        return np.full(shape, np.finfo(dt).max, dt) * rng.choice([-1, 1], size=shape).astype(dt)
    x = rng.normal(size=shape)
    x.flat[rng.integers(x.size)] = 1e30
    return x.astype(dt)


def make_targets(loss: str, n: int, out: int, rng, positions: tuple = ()):
    """Targets of n samples for an output (n, *positions, out): one per position."""
    if loss == "cross_entropy":
        return rng.integers(0, out, size=(n, *positions))
    if loss == "binary_cross_entropy":
        return rng.uniform(size=(n, *positions, out))
    return rng.normal(size=(n, *positions, out))


# -- helpers --------------------------------------------------------------------------------------


def attempt(fn, *args, **kwargs):
    """(result, None) or (None, exception) for an exception of the documented kinds; anything else
    (AttributeError, KeyError, IndexError, Numba's TypingError ...) propagates and fails the test."""
    try:
        return fn(*args, **kwargs), None
    except (*USER_ERRORS, FloatingPointError) as exc:
        return None, exc


def check_divergence(exc: FloatingPointError, model) -> None:
    assert DIVERGENCE_WHERE.search(str(exc)), f"divergence message names no layer or loss: {exc}"


def check_array(out, shape, dtype, finite: bool) -> None:
    assert isinstance(out, np.ndarray)
    assert out.shape == tuple(shape), (out.shape, shape)
    assert out.dtype == np.dtype(dtype), (out.dtype, dtype)
    if finite:
        assert np.isfinite(out).all(), out


def refused_as_expected(exc, moderate: bool, training: bool, model=None) -> None:
    """For finite data, a call may only fail with a documented refusal (or divergence on extreme data)."""
    if exc is None:
        return
    if isinstance(exc, FloatingPointError):
        assert training and not moderate, f"moderate data diverged: {exc}"
        check_divergence(exc, model)
        return
    assert isinstance(exc, ValueError), exc
    if not moderate and "NaN or infinity" in str(exc):
        return  # the extreme values overflowed when converted to the model's dtype
    assert EXPECTED_REFUSALS.search(str(exc)), f"valid data was refused: {exc!r}"


# -- properties -------------------------------------------------------------------------------------


@PROPERTY
@given(
    stack=stacks(),
    batch=st.integers(1, 9),
    kind=st.sampled_from(MODERATE + EXTREME),
    optimizer=st.sampled_from(OPTIMIZERS),
    seed=st.integers(0, 2**31 - 1),
)
def test_every_public_call_works_or_refuses_clearly(stack, batch, kind, optimizer, seed):
    specs, shape, loss, out_width, dtype, how = stack
    rng = np.random.default_rng(seed)
    model, exc = attempt(build_model, specs, shape, dtype, how)
    if exc is not None:  # a residual block that changes the width without a projection, BN on 2-axis samples
        assert isinstance(exc, ValueError) and re.search(r"Residual|BatchNorm1d|cannot take", str(exc)), exc
        return
    summary = model.summary(print_fn=None)
    assert isinstance(summary, str) and "Total params" in summary
    model.compile(loss=loss, optimizer=optimizer)
    moderate = kind in MODERATE
    X = make_values(kind, (batch, *shape), dtype, rng)
    y = make_targets(loss, batch, out_width, rng, shape[:-1])  # per-sample outputs (*shape[:-1], out_width)
    if model.built and model.input_shape != shape:  # the first layer fixed a 1-axis input: X does not fit
        for call in (model.predict, model.forward):
            with pytest.raises(ValueError, match="Expected 2D array"):
                call(X)
        return
    out_shape = (batch, *shape[:-1], out_width)

    # inference (eval mode): the shape is known before anything trains
    pred, exc = attempt(model.predict, X)
    refused_as_expected(exc, moderate, training=False)
    if exc is None:
        check_array(pred, out_shape, dtype, finite=moderate)
    assert model.built or exc is not None

    if exc is None:  # forward/backward in both modes
        for training in (False, True):
            out, exc2 = attempt(model.forward, X, training=training)
            refused_as_expected(exc2, moderate, training=False)
            if exc2 is None:
                check_array(out, out_shape, dtype, finite=moderate)
                grad_x, exc3 = attempt(model.backward, np.ones_like(out))
                assert exc3 is None, exc3
                check_array(grad_x, X.shape, dtype, finite=moderate)

    # training: one step and one epoch; a failed step leaves the parameters as they were
    before = model.params.copy() if model.built else None
    loss_value, exc = attempt(model.train_step, X, y)
    event(f"train_step: {type(exc).__name__ if exc else 'ok'}")
    refused_as_expected(exc, moderate, training=True, model=model)
    if exc is not None and before is not None:
        np.testing.assert_array_equal(model.params, before)
    elif exc is None:
        assert isinstance(loss_value, float) and (np.isfinite(loss_value) or not moderate)
    history, exc = attempt(model.fit, X, y, epochs=1, batch_size=max(1, batch // 2), verbose=0)
    refused_as_expected(exc, moderate, training=True, model=model)
    if exc is None:
        assert len(history.history["loss"]) == 1
        assert np.isfinite(history.history["loss"][0]) or not moderate
    if moderate and model.built:
        assert np.isfinite(model.params).all()
        assert model.params.dtype == np.dtype(dtype)

    metrics, exc = attempt(model.evaluate, X, y)
    refused_as_expected(exc, moderate, training=False)
    if exc is None:
        assert set(metrics) >= {"loss"}
        assert np.isfinite(metrics["loss"]) or not moderate
    proba, exc = attempt(model.predict_proba, X)
    if loss not in ("cross_entropy", "binary_cross_entropy"):
        assert isinstance(exc, USER_ERRORS), exc  # regression losses have no probabilities: TypeError
        if isinstance(exc, ValueError):  # ... unless the data was refused first
            refused_as_expected(exc, moderate, training=False)
    else:
        refused_as_expected(exc, moderate, training=False)
        if exc is None:
            check_array(proba, out_shape, dtype, finite=moderate)
            if moderate:
                assert ((proba >= 0) & (proba <= 1)).all()

    if model.built:  # save + load gives the same predictions
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "model.safetensors")
            model.save(path)
            loaded = fnn.load(path)
            assert os.listdir(tmp) == ["model.safetensors"]
        assert loaded.dtype == np.dtype(dtype) and loaded.params.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(loaded.params, model.params)
        a, exc_a = attempt(model.predict, X)
        b, exc_b = attempt(loaded.predict, X)
        assert type(exc_a) is type(exc_b)
        if exc_a is None:
            np.testing.assert_array_equal(a, b)


def _bad_inputs(shape, dtype):
    """(name, value) pairs of inputs every data-taking call must refuse with ValueError/TypeError."""
    good = np.ones((3, *shape), dtype)
    nan, inf = good.copy(), good.copy()
    nan.flat[-1] = np.nan
    inf.flat[0] = -np.inf
    return [
        ("nan", nan),
        ("inf", inf),
        ("wrong features", np.ones((3, *shape[:-1], shape[-1] + 1))),
        ("one sample without its axis", np.ones(shape)),
        ("extra axis", np.ones((3, 1, *shape))),
        ("empty", np.ones((0, *shape))),
        ("string", "data"),
        ("strings", np.full((3, *shape), "a")),
        ("objects", np.array([None] * 3, dtype=object)),
        ("complex", np.ones((3, *shape), np.complex128)),
        ("ragged", [[1.0] * (shape[-1] + 1), [1.0]]),
        ("none", None),
        ("dict", {"x": 1}),
        ("scalar", 3.0),
    ]


@PROPERTY
@given(stack=stacks(), which=st.integers(0, 13), seed=st.integers(0, 2**31 - 1))
def test_bad_inputs_are_refused_with_value_or_type_errors(stack, which, seed):
    specs, shape, loss, out_width, dtype, _ = stack
    model, exc = attempt(build_model, specs, shape, dtype, "input_shape")
    assume(exc is None)
    model.compile(loss=loss, optimizer="sgd")
    name, bad = _bad_inputs(shape, dtype)[which]
    y = make_targets(loss, 3, out_width, np.random.default_rng(seed), shape[:-1])
    before = model.params.copy()
    calls = {
        "predict": lambda: model.predict(bad),
        "forward": lambda: model.forward(bad),
        "predict_proba": lambda: model.predict_proba(bad),
        "evaluate": lambda: model.evaluate(bad, y),
        "train_step": lambda: model.train_step(bad, y),
        "fit": lambda: model.fit(bad, y, verbose=0),
        "loss_and_grads": lambda: model.loss_and_grads(bad, y),
    }
    for call, fn in calls.items():
        with pytest.raises(USER_ERRORS):
            fn()
    np.testing.assert_array_equal(model.params, before)
    assert name  # the case's name shows in hypothesis's falsifying example


@PROPERTY
@given(
    stack=stacks(one_axis=True),
    batch=st.integers(2, 9),
    seed=st.integers(0, 2**31 - 1),
    bad=st.sampled_from(["nan", "length", "strings", "range", "shape", "none", "fraction"]),
)
def test_bad_targets_are_refused(stack, batch, seed, bad):
    specs, shape, loss, out_width, dtype, _ = stack
    model, exc = attempt(build_model, specs, shape, dtype, "input_shape")
    assume(exc is None)
    model.compile(loss=loss, optimizer="adam")
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(batch, *shape))
    y = np.asarray(make_targets(loss, batch, out_width, rng))
    if bad == "nan":
        y = y.astype(float)
        y.flat[0] = np.nan
    elif bad == "length":
        y = y[:-1]
    elif bad == "strings":
        y = y.astype(str)
    elif bad == "range":
        assume(loss in ("cross_entropy", "binary_cross_entropy"))
        y = y + (out_width if loss == "cross_entropy" else 2)
    elif bad == "shape":
        y = np.stack([y, y], axis=-1)
    elif bad == "none":
        y = None
    else:
        assume(loss == "cross_entropy")
        y = y + 0.5
    for fn in (
        model.train_step,
        model.evaluate,
        model.loss_and_grads,
        lambda a, b: model.fit(a, b, epochs=1, verbose=0),
    ):
        with pytest.raises(USER_ERRORS):
            fn(X, y)


# floats stay small or are extreme on purpose (a float like 16777216.0 is a valid, slow layer width)
bad_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 12),
    st.floats(-1e3, 1e3, width=32),
    st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -1e30, 1e-30, 0.5, np.float32(2.0)]),
    st.text(max_size=4),
    st.lists(st.integers(0, 3), max_size=2),
    st.just(object()),
)


@PROPERTY
@given(
    value=bad_scalars,
    which=st.sampled_from(
        [
            "units",
            "in",
            "activation",
            "p",
            "bn",
            "eps",
            "momentum",
            "init",
            "seed",
            "dtype",
            "input_shape",
            "layers",
            "lr",
            "batch_size",
            "epochs",
        ]
    ),
)
def test_constructor_arguments_work_or_raise_value_or_type_errors(value, which):
    """Any value for any argument either works or raises ValueError/TypeError at once."""
    assume(not (which == "epochs" and isinstance(value, float) and value > 12))  # 3e38 epochs would run
    X, y = np.ones((4, 3)), np.array([0, 1, 0, 1])
    build = {
        "units": lambda: fnn.Sequential([fnn.Dense(3, value)]),
        "in": lambda: fnn.Sequential([fnn.Dense(value, 2)]),
        "activation": lambda: fnn.Sequential([fnn.Dense(3, 2, activation=value)]),
        "p": lambda: fnn.Sequential([fnn.Dense(3, 2), fnn.Dropout(value)]),
        "bn": lambda: fnn.Sequential([fnn.BatchNorm1d(value)], input_shape=(3,)),
        "eps": lambda: fnn.Sequential([fnn.LayerNorm(3, eps=value)], input_shape=(3,)),
        "momentum": lambda: fnn.Sequential([fnn.BatchNorm1d(3, momentum=value)], input_shape=(3,)),
        "init": lambda: fnn.Sequential([fnn.Dense(3, 2, init=value)]),
        "seed": lambda: fnn.Sequential([fnn.Dense(3, 2)], seed=value),
        "dtype": lambda: fnn.Sequential([fnn.Dense(3, 2)], dtype=value),
        "input_shape": lambda: fnn.Sequential([fnn.Tanh(), fnn.Dense(2)], input_shape=value),
        "layers": lambda: fnn.Sequential(value),
        "lr": lambda: fnn.Sequential([fnn.Dense(3, 2)]).compile("cross_entropy", fnn.optim.SGD(lr=value)),
        "batch_size": lambda: fnn.Sequential([fnn.Dense(3, 2)]).fit(
            X, y, loss="cross_entropy", optimizer="sgd", batch_size=value, verbose=0
        ),
        "epochs": lambda: fnn.Sequential([fnn.Dense(3, 2)]).fit(
            X, y, loss="cross_entropy", optimizer="sgd", epochs=value, verbose=0
        ),
    }[which]
    result, exc = attempt(build)
    assert exc is None or isinstance(exc, USER_ERRORS), exc
    if exc is None and isinstance(result, fnn.Sequential) and result.built:
        out = result.predict(np.ones((2, *result.input_shape)))
        assert np.isfinite(out).all()


@PROPERTY
@given(
    stack=stacks(one_axis=True),
    batch=st.integers(2, 9),
    seed=st.integers(0, 2**31 - 1),
    lr=st.sampled_from([1e10, 1e20, 1e30]),
    scale=st.sampled_from([1.0, 1e15, 1e30]),
)
def test_a_diverging_step_names_where_and_changes_nothing(stack, batch, seed, lr, scale):
    specs, shape, loss, out_width, dtype, _ = stack
    model, exc = attempt(build_model, specs, shape, dtype, "input_shape")
    assume(exc is None)
    model.compile(loss=loss, optimizer=fnn.optim.SGD(lr=lr))
    rng = np.random.default_rng(seed)
    X = (rng.normal(size=(batch, *shape)) * scale).astype(dtype)
    y = make_targets(loss, batch, out_width, rng)
    for _ in range(4):
        before, buffers = model.params.copy(), {k: v.copy() for k, v in model.state_arrays().items()}
        step = model.optimizer.step_count
        loss_value, exc = attempt(model.train_step, X, y)
        event(f"step: {type(exc).__name__ if exc else 'ok'}")
        if exc is None:
            continue
        assert isinstance(exc, FloatingPointError), exc
        check_divergence(exc, model)
        np.testing.assert_array_equal(model.params, before)
        for name, value in model.state_arrays().items():
            np.testing.assert_array_equal(value, buffers[name], err_msg=name)
        assert model.optimizer.step_count == step
        out = model.predict(X)  # still usable
        assert out.shape == (batch, out_width) and out.dtype == np.dtype(dtype)
        break


def test_backward_before_forward_is_a_runtime_error():
    model = fnn.Sequential([fnn.Dense(3, 2)])
    with pytest.raises(RuntimeError, match="forward"):
        model.backward(np.ones((1, 2)))
    with pytest.raises(RuntimeError, match="forward"):
        fnn.Dense(3, 2).backward(np.ones((1, 2)))


@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy"])
def test_predict_proba_of_multi_axis_outputs_is_per_position(loss):
    model = fnn.Sequential([fnn.Dense(2)], input_shape=(2, 3)).compile(loss, "sgd")
    probs = model.predict_proba(np.arange(6.0).reshape(1, 2, 3))
    assert probs.shape == (1, 2, 2) and ((probs > 0) & (probs < 1)).all()
    if loss == "cross_entropy":
        np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("where", ["X", "y"])
def test_float64_nan_is_refused(where):
    model = fnn.Sequential([fnn.Dense(2, 2)], dtype="float64").compile("mse", "sgd")
    X, y = np.ones((3, 2)), np.ones((3, 2))
    (X if where == "X" else y)[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        model.evaluate(X, y)


def test_an_overflowing_gradient_norm_names_a_layer():
    model = fnn.Sequential([fnn.Dense(3, 2)], dtype="float64").compile("cross_entropy", "sgd")
    with pytest.raises(FloatingPointError, match=r"first non-finite value: .*in layer 0 \(Dense\(3, 2\), 0.weight\)"):
        model.train_step(np.full((2, 3), 1e200), np.array([0, 1]))


def test_huge_finite_inputs_give_no_overflow_warning_from_validation():
    model = fnn.Sequential([fnn.Dense(2, 2)], dtype="float64")
    X = np.asfortranarray(np.full((3, 2), 1e308))  # not C-ordered: the converting path sums X
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model.forward(X).shape == (3, 2)


def test_calls_before_compile_are_runtime_errors():
    model = fnn.Sequential([fnn.Dense(3, 2)])
    X, y = np.ones((2, 3)), np.array([0, 1])
    for fn in (
        lambda: model.train_step(X, y),
        lambda: model.evaluate(X, y),
        lambda: model.predict_proba(X),
        lambda: model.fit(X, y, verbose=0),
    ):
        with pytest.raises(RuntimeError, match="compile"):
            fn()
