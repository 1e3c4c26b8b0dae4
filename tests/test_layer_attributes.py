"""A misspelt or another framework's attribute name set on a layer or a model is refused
(``dropout.rate = 0.2``, ``dense.trainabel = False``, ``model.stop_trainning = True``): it would be
stored as a new attribute that changes nothing. Tags of one's own (``layer.note = ...``) are kept,
and a layer's own code (a subclass's ``__init__``, ``build``, ``forward``) sets what it likes."""

import copy
import pickle
import re

import numpy as np
import pytest

import fastnn as fnn
from fastnn.layers.base import settable_attributes
from tests.layer_cases import CASES

# (make the layer, another framework's name, fastnn's name, a value)
FOREIGN = [
    (lambda: fnn.Dropout(0.5), "rate", "p", 0.2),
    (lambda: fnn.Dense(3, 2), "kernel_initializer", "init", "he_normal"),
    (lambda: fnn.Dense(3, 2), "kernel", "weight", np.ones((3, 2))),
    (lambda: fnn.Conv2d(1, 2, 3), "filters", "out_channels", 4),
    (lambda: fnn.Conv1d(1, 2, 3), "strides", "stride", 2),
    (lambda: fnn.Conv2d(1, 2, 3), "dilation_rate", "dilation", 2),
    (lambda: fnn.MaxPool2d(2), "pool_size", "kernel_size", 3),
    (lambda: fnn.AvgPool1d(2), "strides", "stride", 1),
    (lambda: fnn.BatchNorm1d(3), "epsilon", "eps", 1e-3),
    (lambda: fnn.BatchNorm2d(3), "epsilon", "eps", 1e-3),
    (lambda: fnn.LayerNorm(3), "epsilon", "eps", 1e-3),
    (lambda: fnn.LayerNorm(3), "normalized_shape", "normalized_features", 4),
    (lambda: fnn.Embedding(5, 3), "input_dim", "num_embeddings", 6),
    (lambda: fnn.Embedding(5, 3), "output_dim", "embedding_dim", 4),
    (lambda: fnn.LSTM(3, 4), "units", "hidden_size", 8),
    (lambda: fnn.GRU(3, 4), "units", "hidden_size", 8),
    (lambda: fnn.RNN(3, 4), "units", "hidden_size", 8),
]


@pytest.mark.parametrize(("make", "foreign", "own", "value"), FOREIGN, ids=[f"{f[1]}-{f[2]}" for f in FOREIGN])
def test_another_frameworks_name_is_refused_naming_fastnns(make, foreign, own, value):
    layer = make()
    before = dict(vars(layer))
    with pytest.raises(AttributeError) as caught:
        setattr(layer, foreign, value)
    message = str(caught.value)
    kind = type(layer).__name__
    assert message.startswith(f"{kind} has no attribute {foreign!r} (another framework's name for its {own!r})")
    assert f"set layer.{own} = " in message or f"make a new layer: {kind}(" in message
    assert foreign not in vars(layer) and vars(layer).keys() == before.keys()


def test_the_advice_sets_the_value_or_makes_a_new_layer():
    with pytest.raises(
        AttributeError, match=re.escape("set layer.p = 0.2 instead, or make a new layer: Dropout(p=0.2)")
    ):
        fnn.Dropout(0.5).rate = 0.2
    # LayerNorm keeps normalized_features as num_features: only a new layer changes it
    with pytest.raises(AttributeError) as caught:
        fnn.LayerNorm(3).normalized_shape = 4
    assert str(caught.value).endswith("make a new layer: LayerNorm(**{**layer.get_config(), 'normalized_features': 4})")
    # an array is not printed in the advice
    with pytest.raises(AttributeError, match=re.escape("set layer.weight = ... instead")):
        fnn.Dense(30, 20).kernel = np.ones((30, 20))


def test_every_declared_alias_names_an_attribute_the_layer_has_and_is_not_one_itself():
    """A class's aliases stay true to its constructor: the key is not a name the layer has (else it
    would never be refused), the value is one it has (an attribute or a constructor argument)."""
    seen = set()
    for case in CASES:
        layer = case.make()
        names = settable_attributes(layer) | set(layer.get_config())
        for foreign, own in type(layer).attribute_aliases.items():
            seen.add((type(layer).__name__, foreign))
            assert foreign not in names and not hasattr(type(layer), foreign), (type(layer).__name__, foreign)
            assert own in names, (type(layer).__name__, foreign, own)
    assert {("Dropout", "rate"), ("Conv2d", "filters"), ("LSTM", "units"), ("BatchNorm2d", "epsilon")} <= seen


@pytest.mark.parametrize(
    ("make", "typo", "meant", "value"),
    [
        (lambda: fnn.Dense(3, 2), "trainabel", "trainable", False),
        (lambda: fnn.Dense(3, 2), "Trainable", "trainable", False),
        (lambda: fnn.BatchNorm1d(3), "momentun", "momentum", 0.5),
        (lambda: fnn.Dense(3, 2), "wieght", "weight", np.zeros((3, 2))),
        (lambda: fnn.Dense(3, 2), "weights", "weight", np.zeros((3, 2))),
        (lambda: fnn.Dropout(0.5), "traning", "training", False),
        (lambda: fnn.Conv2d(1, 2, 3), "kernel_sizes", "kernel_size", 5),
        (lambda: fnn.LSTM(3, 4), "return_sequence", "return_sequences", False),
        (lambda: fnn.Dense(3, 2), "out_feature", "out_features", 4),  # read-only here: a new layer
    ],
)
def test_a_misspelling_is_refused_naming_the_attribute_meant(make, typo, meant, value):
    layer = make()
    with pytest.raises(AttributeError) as caught:
        setattr(layer, typo, value)
    message = str(caught.value)
    assert message.startswith(f"{type(layer).__name__} has no attribute {typo!r} (did you mean {meant!r}?)")
    assert "changes nothing the layer computes" in message and "a tag of your own" in message
    assert typo not in vars(layer)


def test_a_constructor_argument_kept_under_another_attribute_is_refused_before_build():
    """A built model's layer already refused these (Sequential.checked_layer_argument); an unbuilt
    layer stored them and computed the old value."""
    leaky = fnn.LeakyReLU(0.1)
    with pytest.raises(
        AttributeError,
        match=r"LeakyReLU keeps its 'negative_slope' argument under another attribute.*LeakyReLU\(negative_slope=0.2\)",
    ):
        leaky.negative_slope = 0.2
    assert leaky.alpha == pytest.approx(0.1) and "negative_slope" not in vars(leaky)
    with pytest.raises(AttributeError, match="LayerNorm keeps its 'elementwise_affine' argument"):
        fnn.LayerNorm(3).elementwise_affine = False
    with pytest.raises(AttributeError, match="Dense keeps its 'negative_slope' argument"):
        fnn.Dense(3, 2, activation="leaky_relu").negative_slope = 0.3


TAGS = {"note": "the first block", "tag": 1, "name": "encoder", "color": "red", "my_data": [1, 2], "label": None}


def test_tags_of_ones_own_are_kept_on_every_layer_and_on_a_model():
    for case in CASES:
        layer = case.make()
        for key, value in TAGS.items():
            setattr(layer, key, value)
        assert {key: getattr(layer, key) for key in TAGS} == TAGS
    model = fnn.Sequential([fnn.Dense(3, 2)], input_shape=(3,))
    for key, value in {**TAGS, "history": {}, "hparams": {"lr": 0.1}, "trained": True}.items():
        setattr(model, key, value)
        assert getattr(model, key) == value


def test_a_tag_close_to_an_earlier_tag_is_kept_and_misspellings_are_still_refused():
    """Tags are not taken for the layer's or model's attributes: ``fold`` then ``folds`` are two tags."""
    dense = fnn.Dense(3, 2)
    model = fnn.Sequential([dense], input_shape=(3,))
    for obj in (dense, model):
        obj.fold, obj.folds, obj.tag_a, obj.tag_b = 1, 5, "a", "b"
        assert (obj.fold, obj.folds, obj.tag_a, obj.tag_b) == (1, 5, "a", "b")
    with pytest.raises(AttributeError, match="did you mean 'trainable'"):
        dense.trainabel = False
    with pytest.raises(AttributeError, match="did you mean 'stop_training'"):
        model.stop_trainning = True
    clone = copy.deepcopy(dense)  # (the copy knows its tags too)
    clone.folds2 = 6
    assert clone.folds2 == 6


def test_a_refused_name_leaves_a_built_model_as_it_was():
    model = fnn.Sequential([fnn.Dense(3, 4), fnn.Dropout(0.5), fnn.Dense(4, 2)], input_shape=(3,), seed=0)
    x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    before = model.predict(x)
    with pytest.raises(AttributeError, match="another framework's name for its 'p'"):
        model[1].rate = 0.0
    with pytest.raises(AttributeError, match="did you mean 'trainable'"):
        model[0].trainabel = False
    assert model[1].p == 0.5 and model[0].trainable
    np.testing.assert_array_equal(model.predict(x), before)


class Scaled(fnn.Layer):
    """A user layer whose own code sets names the check would refuse from outside."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor
        self.trainabel = "set in __init__"  # close to 'trainable'

    def build(self, input_shape, dtype):
        shape = super().build(input_shape, dtype)
        self.weights = "set in build"  # no 'weight' here, but close to nothing else either
        self.last_outputs = "set in build"  # close to 'last_output'

        def nested():
            self.traning = "set in a nested function"  # close to 'training'

        nested()
        return shape

    def forward(self, x, training):
        self.input_seen = x  # a user layer keeps its own state between forward and backward
        return self.factor * x

    def backward(self, grad_y, need_grad_x=True):
        return self.factor * grad_y

    def get_config(self):
        return {"factor": self.factor}


class Guarded(fnn.Dropout):
    """A subclass of a fastnn layer with its own __setattr__ (passing on to the base's) that sets
    Dropout's foreign name 'rate' in its own __init__."""

    def __init__(self, p=0.5):
        super().__init__(p)
        self.rate = p
        self.epsilon_note = "kept"

    def __setattr__(self, name, value):
        super().__setattr__(name, value)


def test_a_user_layers_own_code_sets_new_attributes():
    layer = Scaled(2.0)
    model = fnn.Sequential([layer], input_shape=(3,))
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(model.predict(x), 2 * x)
    assert (layer.trainabel, layer.weights, layer.last_outputs, layer.traning) == (
        "set in __init__",
        "set in build",
        "set in build",
        "set in a nested function",
    )
    assert layer.input_seen.shape == (2, 3)
    # from outside, the same kind of name is still refused
    with pytest.raises(AttributeError, match="did you mean 'factor'"):
        layer.factors = 3.0

    guarded = Guarded(0.25)
    assert guarded.rate == 0.25 and guarded.epsilon_note == "kept"
    guarded.rate = 0.1  # an attribute it has: set as any other
    assert guarded.rate == 0.1
    with pytest.raises(AttributeError, match="did you mean 'trainable'"):
        guarded.trainabel = False  # through its own __setattr__, from outside


def test_copied_and_pickled_layers_keep_their_tags_and_the_check():
    dense = fnn.Dense(3, 2)
    dense.note = "head"
    for clone in (copy.deepcopy(dense), pickle.loads(pickle.dumps(dense))):
        assert clone.note == "head"
        clone.note = "copy"
        clone.trainable = False
        clone.use_bias = False
        assert (clone.note, clone.trainable, clone.use_bias) == ("copy", False, False)
        with pytest.raises(AttributeError, match="another framework's name for its 'weight'"):
            clone.kernel = np.zeros((3, 2))
    clone = copy.deepcopy(fnn.Sequential([fnn.Dense(3, 2), fnn.Dropout(0.5)], input_shape=(3,)))
    clone[1].p = 0.25
    assert clone[1].p == 0.25
    with pytest.raises(AttributeError, match="'rate'"):
        clone[1].rate = 0.25


def test_a_models_misspelt_or_keras_attribute_is_refused():
    model = fnn.Sequential([fnn.Dense(3, 2)], input_shape=(3,))
    with pytest.raises(AttributeError, match=re.escape("did you mean 'stop_training'?")):
        model.stop_trainning = True
    with pytest.raises(AttributeError, match=re.escape("set model.optimizer = None instead")):
        model.optimiser = None
    with pytest.raises(AttributeError, match=re.escape("call model.freeze(...) instead")):
        model.trainable = False  # Keras freezes the whole model so; fastnn: model.freeze()
    with pytest.raises(AttributeError, match=re.escape("call model.unfreeze(...) instead")):
        model.trainable = True  # Keras unfreezes it so (not model.freeze())
    assert "stop_trainning" not in vars(model) and "trainable" not in vars(model)
    assert model[0].trainable


@pytest.mark.parametrize(
    ("make", "shape", "attribute", "value"),
    [
        (lambda: fnn.Dense(3, 4), (3,), "units", 64),
        (lambda: fnn.Dense(3, 4), (3,), "use_bias", False),
        (lambda: fnn.LSTM(3, 4), (5, 3), "use_bias", False),
        (lambda: fnn.MultiHeadSelfAttention(4, 2), (5, 4), "use_bias", False),
    ],
)
def test_an_argument_kept_under_another_attribute_is_checked_when_set_on_a_built_model(make, shape, attribute, value):
    layer = make()
    model = fnn.Sequential([layer], input_shape=shape, seed=0)
    x = np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32)
    before = model.predict(x)
    old = getattr(layer, attribute)
    with pytest.raises(ValueError, match=f"{attribute} = .* would change the layer's output shape or parameters"):
        setattr(layer, attribute, value)
    assert getattr(layer, attribute) == old  # refused when set: nothing stored, the model still runs
    np.testing.assert_array_equal(model.predict(x), before)


def test_marking_padded_steps_before_a_layer_that_cannot_honour_them_is_refused_when_set():
    """``Embedding.mask_padding = True`` on a built model whose Flatten cannot skip padded steps is
    refused at the assignment (it was stored, and the model failed at its next use)."""
    embedding = fnn.Embedding(5, 3, padding_idx=0)
    model = fnn.Sequential([embedding, fnn.Flatten(), fnn.Dense(12, 2)], input_shape=(4,), seed=0)
    x = np.array([[1, 2, 0, 0], [3, 1, 2, 4]])
    before = model.predict(x)
    with pytest.raises(ValueError, match=r"layer 1 \(Flatten\(\)\) cannot honour the padded steps"):
        embedding.mask_padding = True
    assert embedding.mask_padding is False and not model.masks_steps
    np.testing.assert_array_equal(model.predict(x), before)
    tagger = fnn.Sequential([fnn.Embedding(5, 3, padding_idx=0), fnn.Dense(3, 2)], input_shape=(4,), seed=0)
    tagger[0].mask_padding = True  # per-step layers keep the lengths: allowed
    assert tagger.masks_steps


@pytest.mark.parametrize(
    ("make", "shape", "name", "kept_as"),
    [
        (lambda: fnn.Dense(3, 2), (3,), "bias", "use_bias"),
        (lambda: fnn.Conv1d(2, 3, 2), (2, 5), "bias", "use_bias"),
        (lambda: fnn.Residual([fnn.Dense(3, 4)]), (3,), "projection", "allow_projection"),
    ],
)
def test_a_bool_for_an_argument_whose_name_is_another_attribute_is_refused(make, shape, name, kept_as):
    """``dense.bias = False`` (the constructor's ``bias``): ``bias`` is the array, the argument is
    ``use_bias``; it was ignored on a free Dense or Conv1d (the model kept a bias), and broke the
    build of a Residual ('bool' object has no attribute 'owner')."""
    layer = make()
    params = fnn.Sequential([make()], input_shape=shape, seed=0).count_params()
    with pytest.raises(AttributeError, match=re.escape(f"set layer.{kept_as} = False instead")):
        setattr(layer, name, False)
    assert fnn.Sequential([layer], input_shape=shape, seed=0).count_params() == params  # still builds
    with pytest.raises(AttributeError, match=re.escape(f"constructor argument {name!r} as")):
        setattr(layer, name, False)  # built: the same advice
    model = fnn.Sequential([fnn.Dense(3, 1, bias_init="ones")], input_shape=(3,), seed=0)
    model[0].bias = 0  # a value for a one-element bias array is still written
    assert model[0].bias.tolist() == [0.0]
    with pytest.raises(AttributeError, match=re.escape("set layer.use_bias = True instead")):
        model[0].bias = np.True_  # NumPy's bool, advised as a plain one (it said np.True_)


def _configure(obj, name, value):
    """A function of the user's own that takes the layer or model first (as a method would)."""
    setattr(obj, name, value)


def _tag_all(model):
    model.note = "set in a helper"
    for layer in model.layers:
        layer.fold = 2


def test_a_helper_function_taking_the_layer_first_is_checked_and_its_tags_survive_copies():
    """A function of one's own whose first argument is the layer or model was taken for its own code:
    misspellings and foreign names set there were stored silently, and its tags were not kept, so a
    copy of the model lost them."""
    model = fnn.Sequential([fnn.Dense(3, 4), fnn.Dropout(0.5)], input_shape=(3,), seed=0)
    with pytest.raises(AttributeError, match="did you mean 'trainable'"):
        _configure(model[0], "trainabel", False)
    with pytest.raises(AttributeError, match="another framework's name for its 'p'"):
        (lambda layer: setattr(layer, "rate", 0.1))(model[1])
    with pytest.raises(AttributeError, match="did you mean 'stop_training'"):
        _configure(model, "stop_trainning", True)
    _tag_all(model)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert clone.note == "set in a helper" and [layer.fold for layer in clone.layers] == [2, 2]
    # a user layer's own helper, called from its own method with the layer first, still sets what it likes
    assert (Helped().trainabel, Helped().weights) == ("set by a helper of __init__", "set by a nested helper")


def _set_up(layer):
    layer.trainabel = "set by a helper of __init__"  # close to 'trainable': its own code may


class Helped(fnn.Layer):
    def __init__(self):
        super().__init__()
        _set_up(self)

        def nested(me):
            me.weights = "set by a nested helper"

        nested(self)
