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


def test_gelu_approximate_set_later_is_computed_and_saved(tmp_path):
    """GELU.approximate set on a built model was saved (and shown) as "tanh" while the erf form
    was still computed, so predict changed across save and load."""
    gelu = fnn.GELU()
    model = fnn.Sequential([gelu], input_shape=(3,), dtype="float64", seed=0)
    x = np.array([[-1.0, 0.5, 2.0]])
    model.predict(x)
    gelu.approximate = "tanh"
    want = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    np.testing.assert_allclose(model.predict(x), want, rtol=1e-12)
    model.save(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(fnn.load(tmp_path / "m.safetensors").predict(x), model.predict(x))
    with pytest.raises(ValueError, match="approximate"):
        gelu.approximate = "fast"
    assert gelu.approximate == "tanh" and gelu.activation == "gelu_tanh"


@pytest.mark.parametrize("make", [fnn.ReLU, fnn.GELU, lambda: fnn.ELU(0.5)])
def test_an_activation_class_refuses_another_activation(make, tmp_path):
    """ReLU().activation = "tanh" computed tanh but was saved (and shown) as ReLU()."""
    layer = make()
    model = fnn.Sequential([layer], input_shape=(2,), dtype="float64", seed=0)
    x = np.array([[-1.0, 2.0], [0.5, -3.0]])
    before = model.predict(x)
    with pytest.raises(ValueError, match=r"fnn.Activation\('tanh'\)"):
        layer.activation = "tanh"
    np.testing.assert_array_equal(model.predict(x), before)
    model.save(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(fnn.load(tmp_path / "m.safetensors").predict(x), before)


def test_positional_encoding_dropout_set_later_is_used_and_checked():
    """PositionalEncoding.dropout set on a built model was saved but its inner Dropout kept the old p
    (training ignored it), and an out-of-range value passed unchecked."""
    layer = fnn.PositionalEncoding(8)
    model = fnn.Sequential([layer], input_shape=(3, 4), dtype="float64", seed=0)
    x = np.ones((2, 3, 4))
    layer.dropout = 0.5
    assert model.get_config()["layers"][0]["config"]["dropout"] == 0.5
    train = model.forward(x, training=True)
    assert np.any(train == 0.0) and not np.allclose(train, model.forward(x, training=False))
    with pytest.raises(ValueError, match="dropout"):
        layer.dropout = 1.5
    assert layer.dropout == 0.5


@pytest.mark.parametrize(
    "name, value", [("causal", True), ("activation", "gelu"), ("dropout", 0.5), ("norm_first", True)]
)
def test_a_built_transformer_block_refuses_a_changed_argument(name, value):
    """TransformerEncoderBlock.causal = True (or activation, dropout, norm_first) on a built model
    was saved in its config while the layers inside it kept computing the old block."""
    block = fnn.TransformerEncoderBlock(4, 2, 6)
    model = fnn.Sequential([block], input_shape=(3, 4), dtype="float64", seed=0)
    config = model.get_config()
    with pytest.raises(ValueError, match=rf"TransformerEncoderBlock\.{name} cannot change .* new model"):
        setattr(block, name, value)
    assert model.get_config() == config


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
