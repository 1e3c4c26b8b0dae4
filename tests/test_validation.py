"""Bad input gets a clear ValueError/TypeError naming the argument; benign input is converted."""

import re

import numpy as np
import pytest

import fastnn as fnn


@pytest.fixture
def model():
    m = fnn.Sequential([fnn.Dense(3, 8, activation="relu"), fnn.Dense(8, 4)], seed=0)
    m.compile(loss="cross_entropy", optimizer="sgd")
    return m


X = np.arange(30, dtype=np.float64).reshape(10, 3) / 30
Y = np.arange(10) % 4


@pytest.mark.parametrize(
    "bad, exc, pattern",
    [
        (np.zeros(3), ValueError, "Expected 2D array for X.*reshape"),
        (np.zeros((2, 3, 4)), ValueError, "Expected 2D array for X.*3D"),
        (np.zeros((10, 5)), ValueError, "X has 5 features.*first layer.*expects 3"),
        (np.zeros((0, 3)), ValueError, "X is empty"),
        ("abc", TypeError, "X must be a numeric array"),
        (np.array([["a", "b", "c"]] * 10), TypeError, "array of strings"),
        ([[1, 2, 3], [1, 2]], ValueError, "ragged|same length"),
    ],
)
def test_bad_X(model, bad, exc, pattern):
    with pytest.raises(exc, match=pattern):
        model.fit(bad, Y[: len(bad)] if hasattr(bad, "__len__") and len(bad) else Y, epochs=1, verbose=0)


def test_nan_and_inf_in_X(model):
    for value in (np.nan, np.inf):
        bad = X.copy()
        bad[4, 2] = value
        with pytest.raises(ValueError, match="X contains NaN or infinity.*row 4, column 2"):
            model.fit(bad, Y, verbose=0)


def test_length_mismatch(model):
    with pytest.raises(ValueError, match="X and y have different lengths.*10.*9"):
        model.fit(X, Y[:9], verbose=0)


@pytest.mark.parametrize(
    "labels, pattern",
    [
        (np.full(10, 4), r"label 4, outside \[0, 4\)"),
        (np.full(10, -1), r"label -1, outside \[0, 4\)"),
        (np.full(10, 1.5), "integer class labels.*1.5"),
    ],
)
def test_bad_labels(model, labels, pattern):
    with pytest.raises(ValueError, match=pattern):
        model.fit(X, labels, verbose=0)


def test_integer_valued_float_labels_are_accepted(model):
    model.fit(X, Y.astype(float), verbose=0, epochs=1)


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1"),
        ({"batch_size": 2.5}, TypeError, "batch_size must be an integer"),
        ({"epochs": -1}, ValueError, "epochs must be >= 0"),
        ({"loss": "cross_entropi"}, ValueError, "Unknown loss 'cross_entropi'. Did you mean 'cross_entropy'"),
        ({"optimizer": "adamm"}, ValueError, "Did you mean 'adam'"),
        ({"validation_data": X}, ValueError, "validation_data must be a tuple"),
    ],
)
def test_bad_fit_arguments(model, kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        model.fit(X, Y, verbose=0, **kwargs)


def test_unknown_activation_and_init_suggest_close_names():
    with pytest.raises(ValueError, match="Unknown activation 'rleu'. Did you mean 'relu'"):
        fnn.Dense(3, 4, activation="rleu")
    with pytest.raises(ValueError, match="Unknown init 'he_normall'. Did you mean 'he_normal'"):
        fnn.Dense(3, 4, init="he_normall")


@pytest.mark.parametrize("args", [(3, 0), (0, 3), (3, -2)])
def test_dense_with_units_below_one(args):
    with pytest.raises(ValueError, match="must be >= 1"):
        fnn.Dense(*args)


def test_layers_that_do_not_chain_name_both_layers():
    with pytest.raises(
        ValueError,
        match=r"layer 0 \(Dense\(3, 8.*outputs \(batch, 8\).*layer 1 \(Dense\(7, 2\)\) "
        r"expects 7",
    ):
        fnn.Sequential([fnn.Dense(3, 8), fnn.Dense(7, 2)])


def test_unknown_dtype_and_empty_model():
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        fnn.Sequential([fnn.Dense(3, 2)], dtype="float16")
    with pytest.raises(ValueError, match="layers is empty"):
        fnn.Sequential([])
    with pytest.raises(TypeError, match=r"layers\[1\] must be a fastnn layer"):
        fnn.Sequential([fnn.Dense(3, 2), "relu"])


def test_train_step_before_compile_says_what_to_do():
    model = fnn.Sequential([fnn.Dense(3, 2)])
    with pytest.raises(RuntimeError, match="compile"):
        model.train_step(X, Y % 2)


@pytest.mark.parametrize(
    "convert",
    [
        lambda a: np.asfortranarray(a),
        lambda a: np.repeat(a, 2, axis=1)[:, ::2],  # non-contiguous view
        lambda a: (a * 30).astype(np.int64),  # integers
        lambda a: a.astype(np.float64),  # float64 into a float32 model
        lambda a: a.tolist(),  # nested lists
    ],
)
def test_benign_inputs_are_converted(model, convert):
    expected = model.predict(X.astype(np.float32) if convert(X) is not None else X)
    got = model.predict(convert(X))
    assert got.dtype == np.float32 and got.flags.c_contiguous
    if not np.issubdtype(np.asarray(convert(X)).dtype, np.integer):
        np.testing.assert_allclose(got, expected, rtol=1e-6)


# -- values that only go wrong on conversion --------------------------------------------------


def test_finite_value_beyond_float32_is_called_an_overflow(model):
    bad = X.copy()
    bad[3, 1] = 1e39
    with pytest.raises(
        ValueError,
        match=r"X holds 1e\+39 \(first at row 3, column 1\), beyond the range of "
        r"float32.*overflows to infinity.*dtype='float64'",
    ):
        model.predict(bad)
    m64 = fnn.Sequential([fnn.Dense(3, 2)], dtype="float64")
    assert np.isfinite(m64.predict(bad)).all()  # float64 holds it


def test_regression_target_beyond_float32_is_called_an_overflow():
    m = fnn.Sequential([fnn.Dense(3, 1)], seed=0).compile(loss="mse", optimizer="sgd")
    y = np.zeros(10)
    y[7] = -1e40
    with pytest.raises(ValueError, match=r"y holds -1e\+40 \(first at row 7, column 0\).*float32"):
        m.fit(X, y, verbose=0)


@pytest.mark.parametrize("bad", [1.5, -0.5])
def test_binary_cross_entropy_targets_outside_0_1_are_refused(bad):
    model = fnn.Sequential([fnn.Dense(2, 1)], seed=0).compile("binary_cross_entropy", "sgd")
    X, y = np.zeros((4, 2)), np.array([0.0, 1.0, bad, 0.5])
    with pytest.raises(ValueError, match=re.escape("binary_cross_entropy targets must lie in [0, 1]")):
        model.fit(X, y, verbose=0)
    assert model.optimizer.step_count == 0


@pytest.mark.parametrize("big", [1e20, 2.0**63, 1e300])
def test_huge_label_is_named_not_wrapped_around(model, big):
    labels = Y.astype(float)
    labels[5] = big
    with pytest.raises(ValueError, match=re.escape(f"label {big:g}, outside [0, 4)")):
        model.fit(X, labels, verbose=0)


# -- pandas -----------------------------------------------------------------------------------


@pytest.fixture
def pd():
    return pytest.importorskip("pandas")


def _frame(pd, column):
    return pd.DataFrame({"a": column, "b": X[:, 1], "c": X[:, 2]})


@pytest.mark.parametrize(
    "make, exc, pattern",
    [
        (
            lambda pd: pd.array([str(v) for v in X[:, 0]], dtype="string"),
            TypeError,
            r"X must be numeric.*column 'a' \(string\).*encode.*get_dummies.*cat\.codes.*astype\(float\)",
        ),
        (lambda pd: pd.Series(["u", "v"] * 5, dtype=object), TypeError, r"column 'a' \(object\).*encode"),
        (lambda pd: pd.Categorical(["u", "v"] * 5), TypeError, r"column 'a' \(category\).*cat\.codes"),
        (
            lambda pd: pd.array([1, None] * 5, dtype="Int64"),
            ValueError,
            r"X has missing values \(pd\.NA\) in column 'a' \(Int64, 5 missing\).*fillna.*to_numpy\(dtype=float",
        ),
        (lambda pd: pd.array([0.5, None] * 5, dtype="Float64"), ValueError, r"column 'a' \(Float64, 5 missing\)"),
    ],
)
def test_pandas_columns_that_are_not_numbers_are_named(model, pd, make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        model.fit(_frame(pd, make(pd)), Y, verbose=0)


@pytest.mark.parametrize("dtype", ["Int64", "Float64", "object"])
def test_pandas_numeric_columns_without_missing_values_convert(model, pd, dtype):
    column = (X[:, 0] * 30).astype(np.int64) if dtype == "Int64" else X[:, 0]
    frame = _frame(pd, pd.array(column, dtype=dtype) if dtype != "object" else column.astype(object))
    expected = model.predict(np.column_stack([column, X[:, 1:]]))
    np.testing.assert_allclose(model.predict(frame), expected, rtol=1e-6)


def test_pandas_labels(model, pd):
    model.fit(X, pd.Series(Y, dtype="Int64"), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"y has missing values.*Series 'label' \(Int64, 1 missing\)"):
        model.fit(X, pd.Series([None, *Y[1:]], dtype="Int64", name="label"), verbose=0)
    with pytest.raises(TypeError, match=r"y must be numeric.*astype\('category'\)\.cat\.codes"):
        model.fit(X, pd.Series(np.where(Y > 1, "yes", "no")), verbose=0)


# -- batch plans and callbacks (checked before training starts) --------------------------------


def test_batch_plan_without_batch_norm_keeps_every_sample():
    assert fnn._validation.check_batch_plan(33, 32, needs_batch_over_one=False) == (32, 2, 33, "")
    assert fnn._validation.check_batch_plan(10, 64, needs_batch_over_one=True) == (10, 1, 10, "")


def test_batch_plan_skips_a_last_batch_of_one_for_batch_norm_and_says_so():
    plan = fnn._validation.check_batch_plan(33, 32, needs_batch_over_one=True, layer_name="BatchNorm1d(8)")
    assert plan[:3] == (32, 1, 32)
    assert "last batch of 1 sample, which BatchNorm1d(8) cannot train on" in plan.note
    assert "batch_size=31" in plan.note and 33 % 31 != 1
    plan = fnn._validation.check_batch_plan(5, 2, needs_batch_over_one=True, shuffle=False)
    assert plan[:3] == (2, 2, 4) and "shuffle=False" in plan.note and "batch_size=3" in plan.note


@pytest.mark.parametrize(
    "n, batch_size, pattern",
    [
        (1, 32, "batch_size=1 for 1 sample.*pass at least 2 samples"),
        (5, 1, "batch_size=1 for 5 sample.*pass batch_size >= 2"),
    ],
)
def test_batch_plan_refuses_batches_of_one_for_batch_norm(n, batch_size, pattern):
    with pytest.raises(ValueError, match=pattern):
        fnn._validation.check_batch_plan(n, batch_size, needs_batch_over_one=True)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        fnn._validation.check_batch_plan(n, 0, needs_batch_over_one=False)


def test_check_callbacks_wraps_one_and_names_what_is_wrong():
    from fastnn._validation import check_callbacks

    stop = fnn.callbacks.EarlyStopping(patience=2)
    base = fnn.callbacks.Callback
    assert check_callbacks(None, base) == [] and check_callbacks(stop, base) == [stop]
    assert check_callbacks((stop,), base) == [stop] and check_callbacks([stop], base) == [stop]
    with pytest.raises(TypeError, match=r"callbacks\[1\] must be a fastnn.callbacks.Callback, got str 'x'"):
        check_callbacks([stop, "x"], fnn.callbacks.Callback)
    with pytest.raises(TypeError, match=r"callbacks\[0\].*got type.*EarlyStopping\(\.\.\.\), not the class"):
        check_callbacks([fnn.callbacks.EarlyStopping], fnn.callbacks.Callback)
    with pytest.raises(TypeError, match=r"callbacks must be a list.*got type.*callbacks=\[EarlyStopping\(\.\.\.\)\]"):
        check_callbacks(fnn.callbacks.EarlyStopping, fnn.callbacks.Callback)
    with pytest.raises(TypeError, match=r"callbacks must be a list.*got dict"):
        check_callbacks({"a": stop}, fnn.callbacks.Callback)


def test_check_forward_done():
    fnn._validation.check_forward_done(np.zeros(1))
    with pytest.raises(RuntimeError, match=r"backward\(\) needs.*call model.forward\(x, training=True\) first"):
        fnn._validation.check_forward_done(None)


# -- model files with malformed metadata ------------------------------------------------------


@pytest.mark.parametrize(
    "key, value, pattern",
    [
        ("format_version", "x", "'format_version' must be a non-negative integer, got 'x'"),
        ("training", '{"epochs_done": "x"}', "'epochs_done' must be a non-negative integer, got 'x'"),
        ("training", '{"epochs_done": 2.5}', "'epochs_done' must be a non-negative integer, got 2.5"),
        (
            "training",
            '{"cursor": 5}',
            r"'cursor' must be null or \[epoch, sample, loss sum, correct count, data\], got 5",
        ),
        ("training", '{"cursor": [0, -1, 0.5, null]}', r"'cursor\[1\]' must be a non-negative integer, got -1"),
        ("training", '{"decay_bias_and_norm": "x"}', "'decay_bias_and_norm' must be true or false"),
        ("training", "[1]", "'training' must be a JSON object, got \\[1\\]"),
    ],
)
def test_malformed_metadata_is_a_corrupt_file_error(tmp_path, key, value, pattern):
    from fastnn.io import CorruptFileError, read_safetensors, write_safetensors

    path = tmp_path / "m.safetensors"
    fnn.Sequential([fnn.Dense(3, 2)]).compile(loss="mse", optimizer="sgd").save(path)
    tensors, meta = read_safetensors(path)
    write_safetensors(path, tensors, {**meta, key: value})
    with pytest.raises(CorruptFileError, match=pattern):
        fnn.load(path)


# -- a loss called directly (Loss.forward_backward) ----------------------------------------------


OUT = np.array([[1.0, 2.0], [0.5, 0.1]], np.float32)


@pytest.mark.parametrize(
    "loss, target, grad, pattern",
    [
        ("mse", np.ones((2, 1), np.float32), np.empty((2, 2), np.float32), r"target has shape \(2, 1\).*\(2, 2\)"),
        ("mse", np.ones((1, 2), np.float32), np.empty((2, 2), np.float32), r"target has shape \(1, 2\).*\(2, 2\)"),
        ("mse", np.ones((2, 2), np.float32), np.empty((1, 2), np.float32), r"grad has shape \(1, 2\).*\(2, 2\)"),
        ("cross_entropy", np.array([0, 2]), np.empty((2, 2), np.float32), r"target has label 2, outside \[0, 2\)"),
        ("cross_entropy", np.array([0, -1]), np.empty((2, 2), np.float32), r"target has label -1, outside \[0, 2\)"),
        ("cross_entropy", np.eye(2), np.empty((2, 2), np.float32), r"target has shape \(2, 2\).*\(2,\)"),
        ("cross_entropy", np.array([0.0, 1.0]), np.empty((2, 2), np.float32), r"target.*integer.*float64"),
    ],
)
def test_a_direct_loss_call_refuses_arrays_the_kernels_would_overrun(loss, target, grad, pattern):
    before = grad.copy()
    with pytest.raises((ValueError, TypeError), match=pattern):
        fnn.losses.get(loss).forward_backward(OUT, target, grad)
    np.testing.assert_array_equal(grad, before)  # nothing was written


def test_a_direct_weighted_loss_call_refuses_labels_out_of_range():
    loss = fnn.losses.SampleWeighted(fnn.losses.CrossEntropy())
    with pytest.raises(ValueError, match=r"target has label 5, outside \[0, 2\)"):
        loss.forward_backward(OUT, fnn.losses.weighted_targets(np.array([0, 5]), np.ones(2)), np.empty_like(OUT))
    value = loss.forward_backward(OUT, fnn.losses.weighted_targets(np.array([0, 1]), np.ones(2)), np.empty_like(OUT))
    assert value == pytest.approx(fnn.losses.CrossEntropy().forward_backward(OUT, np.array([0, 1]), np.empty_like(OUT)))


def test_a_direct_loss_call_without_a_gradient_takes_any_grad_placeholder():
    value = fnn.losses.MSE().forward_backward(OUT, np.zeros((2, 2), np.float32), np.empty((1, 1)), False)
    assert value == pytest.approx(np.mean(OUT.astype(np.float64) ** 2))


def test_targets_of_no_samples_are_checked_without_error():
    labels = fnn.losses.CrossEntropy().check_targets(np.zeros(0, np.int64), 0, 3, np.float32)
    assert labels.shape == (0,) and labels.dtype == np.int64
    values = fnn.losses.BinaryCrossEntropy().check_targets(np.zeros((0, 2)), 0, 2, np.float32)
    assert values.shape == (0, 2) and values.dtype == np.float32


def test_fractional_label_is_named_as_a_plain_number(model):
    with pytest.raises(ValueError, match=r"found 2\.5;"):
        model.fit(X, np.r_[2.5, Y[1:]], verbose=0)


def test_none_as_X_is_named(model):
    with pytest.raises(TypeError, match=r"X must be a numeric array, got None"):
        model.predict(None)


def test_pandas_sparse_columns_convert(model, pd):
    frame = pd.DataFrame(X).astype(pd.SparseDtype(np.float64, 0.0))
    np.testing.assert_allclose(model.predict(frame), model.predict(X), rtol=1e-6)
    series = pd.Series(Y).astype(pd.SparseDtype(np.int64, 0))
    assert model.evaluate(X, series)["loss"] == pytest.approx(model.evaluate(X, Y)["loss"])
