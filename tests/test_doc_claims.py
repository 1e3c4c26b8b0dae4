"""Claims of the documentation (README, docs/, docstrings) that no other test ran: each test runs
the claim and checks the documented behaviour (an error's type, a setting that takes effect)."""

import pathlib

import numpy as np
import pytest

import fastnn as fnn

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_activation_raises_the_errors_its_docstring_names():
    with pytest.raises(ValueError, match="activation"):
        fnn.Activation("nope")
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['foo'\]"):
        fnn.Activation("relu", foo=1)
    raises = fnn.Activation.__doc__.split("Raises")[1].split("Examples")[0]
    assert "ValueError" in raises and "TypeError" in raises


def test_model_layers_cannot_be_changed_with_the_errors_the_guarantees_name():
    model = fnn.Sequential([fnn.Dense(2, 2)])
    with pytest.raises(TypeError):
        model.layers.append(fnn.ReLU())
    with pytest.raises(AttributeError, match="cannot be replaced"):
        model.layers = [fnn.Dense(2, 2)]
    text = " ".join((ROOT / "docs" / "guarantees.md").read_text().split())
    assert "`model.layers` cannot be changed after construction (`TypeError`; assigning" in text
    assert "`AttributeError`" in text


@pytest.mark.parametrize("make", [lambda: fnn.Dense(2, 2, activation="relu"), lambda: fnn.Activation("relu")])
def test_a_changed_activation_is_computed_and_saved(make, tmp_path):
    """guarantees.md: changing a built layer's setting rebuilds the plans; the activation was saved
    as changed but still computed as before, so predict changed across save and load."""
    layer = make()
    model = fnn.Sequential([layer], input_shape=(2,), dtype="float64", seed=0)
    x = np.array([[-1.0, 2.0], [0.5, -3.0]])
    before = model.predict(x)
    layer.activation = "tanh"
    z = x if isinstance(layer, fnn.Activation) else x @ layer.weight + layer.bias
    assert not np.allclose(before, np.tanh(z))
    np.testing.assert_allclose(model.predict(x), np.tanh(z), rtol=1e-12)
    model.save(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(fnn.load(tmp_path / "m.safetensors").predict(x), model.predict(x))
    with pytest.raises(ValueError, match="activation"):
        layer.activation = "nope"
    np.testing.assert_allclose(model.predict(x), np.tanh(z), rtol=1e-12)  # a refused name changes nothing


def test_a_convolution_refuses_a_row_wise_activation_set_later():
    conv = fnn.Conv1d(1, 2, 3)
    fnn.Sequential([conv], input_shape=(1, 5))
    with pytest.raises(ValueError, match="normalises whole rows"):
        conv.activation = "softmax"
    assert conv.activation == "identity"


def test_dropout_p_set_later_is_checked_as_the_constructor_checks_it():
    drop = fnn.Dropout(0.5)
    model = fnn.Sequential([fnn.Dense(2, 2), drop], seed=0)
    for bad in (1.5, -0.2, 1.0):
        with pytest.raises(ValueError, match="p"):
            drop.p = bad
    assert drop.p == 0.5
    drop.p = 0.25
    assert drop.p == 0.25 and model.get_config()["layers"][1]["config"] == {"p": 0.25}
