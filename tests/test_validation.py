"""Bad input gets a clear ValueError/TypeError naming the argument; benign input is converted."""
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


@pytest.mark.parametrize("bad, exc, pattern", [
    (np.zeros(3), ValueError, "Expected 2D array for X.*reshape"),
    (np.zeros((2, 3, 4)), ValueError, "Expected 2D array for X.*3D"),
    (np.zeros((10, 5)), ValueError, "X has 5 features.*first layer.*expects 3"),
    (np.zeros((0, 3)), ValueError, "X is empty"),
    ("abc", TypeError, "X must be a numeric array"),
    (np.array([["a", "b", "c"]] * 10), TypeError, "array of strings"),
    ([[1, 2, 3], [1, 2]], ValueError, "ragged|same length"),
])
def test_bad_X(model, bad, exc, pattern):
    with pytest.raises(exc, match=pattern):
        model.fit(bad, Y[:len(bad)] if hasattr(bad, "__len__") and len(bad) else Y, epochs=1, verbose=0)


def test_nan_and_inf_in_X(model):
    for value in (np.nan, np.inf):
        bad = X.copy()
        bad[4, 2] = value
        with pytest.raises(ValueError, match="X contains NaN or infinity.*row 4, column 2"):
            model.fit(bad, Y, verbose=0)


def test_length_mismatch(model):
    with pytest.raises(ValueError, match="X and y have different lengths.*10.*9"):
        model.fit(X, Y[:9], verbose=0)


@pytest.mark.parametrize("labels, pattern", [
    (np.full(10, 4), r"label 4, outside \[0, 4\)"),
    (np.full(10, -1), r"label -1, outside \[0, 4\)"),
    (np.full(10, 1.5), "integer class labels.*1.5"),
])
def test_bad_labels(model, labels, pattern):
    with pytest.raises(ValueError, match=pattern):
        model.fit(X, labels, verbose=0)


def test_integer_valued_float_labels_are_accepted(model):
    model.fit(X, Y.astype(float), verbose=0, epochs=1)


@pytest.mark.parametrize("kwargs, exc, pattern", [
    ({"batch_size": 0}, ValueError, "batch_size must be >= 1"),
    ({"batch_size": 2.5}, TypeError, "batch_size must be an integer"),
    ({"epochs": -1}, ValueError, "epochs must be >= 0"),
    ({"loss": "cross_entropi"}, ValueError, "Unknown loss 'cross_entropi'. Did you mean 'cross_entropy'"),
    ({"optimizer": "adamm"}, ValueError, "Did you mean 'adam'"),
    ({"validation_data": X}, ValueError, "validation_data must be a tuple"),
])
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
    with pytest.raises(ValueError, match=r"layer 0 \(Dense\(3, 8.*outputs \(batch, 8\).*layer 1 \(Dense\(7, 2\)\) "
                                         r"expects 7"):
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


@pytest.mark.parametrize("convert", [
    lambda a: np.asfortranarray(a),
    lambda a: np.repeat(a, 2, axis=1)[:, ::2],           # non-contiguous view
    lambda a: (a * 30).astype(np.int64),                 # integers
    lambda a: a.astype(np.float64),                      # float64 into a float32 model
    lambda a: a.tolist(),                                # nested lists
])
def test_benign_inputs_are_converted(model, convert):
    expected = model.predict(X.astype(np.float32) if convert(X) is not None else X)
    got = model.predict(convert(X))
    assert got.dtype == np.float32 and got.flags.c_contiguous
    if not np.issubdtype(np.asarray(convert(X)).dtype, np.integer):
        np.testing.assert_allclose(got, expected, rtol=1e-6)
