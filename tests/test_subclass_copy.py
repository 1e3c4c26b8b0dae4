"""Copies, pickles and files of models of a user's subclass of Sequential: ``copy.deepcopy`` gave a
plain Sequential without the subclass's attributes, pickling called the subclass's ``__init__``
with Sequential's arguments (and failed). Now a copy is of the subclass, with its own attributes
(deep copies; references to the model's own layers, parameters and optimizer are the copy's), and
its constructor is never called; a file holds no code and says so, at save and at load."""

import copy
import pickle
import warnings

import numpy as np
import pytest

import fastnn as fnn


def _data(rng, n=24):
    X = rng.standard_normal((n, 4)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(int)


def _copy(model, how):
    return copy.deepcopy(model) if how == "deepcopy" else pickle.loads(pickle.dumps(model))


class Net(fnn.Sequential):
    """A subclass whose constructor takes other (required) arguments, keeps arrays, a free layer, a
    reference to one of its own layers and a view of its parameters."""

    made = 0

    def __init__(self, hidden, *, note="net"):
        Net.made += 1
        super().__init__([fnn.Dense(4, hidden), fnn.ReLU(), fnn.Dense(hidden, 2)], seed=3)
        self.hidden = hidden
        self.note_text = note
        self.history_of_lr = [0.01]
        self.scale = np.arange(3.0)
        self.spare = fnn.Dense(2, 2)  # a layer of no model
        self.head = self.layers[-1]
        self.first_weight = self.layers[0].weight  # a view of the parameter buffer

    def summary_line(self):
        return f"{self.note_text}: {self.hidden} hidden"


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("trained", [False, True])
def test_a_copy_of_a_subclass_is_the_subclass_with_its_own_attributes(how, trained, rng):
    X, y = _data(rng)
    model = Net(5, note="mine")
    model.compile("cross_entropy", fnn.optim.Adam(lr=0.01))
    if trained:
        model.fit(X, y, epochs=2, batch_size=8, verbose=0)
    model.tag = "a tag"
    made = Net.made
    clone = _copy(model, how)
    assert Net.made == made  # its constructor (other arguments) was never called
    assert type(clone) is Net and clone.summary_line() == "mine: 5 hidden"
    assert clone.hidden == 5 and clone.history_of_lr == [0.01] and clone.tag == "a tag"
    assert clone.history_of_lr is not model.history_of_lr
    np.testing.assert_array_equal(clone.scale, model.scale)
    assert clone.scale is not model.scale
    assert type(clone.spare) is fnn.Dense and clone.spare is not model.spare
    assert clone.spare.get_config() == model.spare.get_config() and clone.spare.owner is None
    # references to the model's own parts are the copy's parts
    assert clone.head is clone.layers[-1] and clone.head is not model.head
    assert np.shares_memory(clone.first_weight, clone.params)
    assert not np.shares_memory(clone.first_weight, model.params)
    # the compiled and training state, as a plain Sequential's copy
    np.testing.assert_array_equal(clone.predict(X), model.predict(X))
    assert clone.optimizer is not model.optimizer and clone.optimizer.owner is clone
    assert clone.optimizer.step_count == model.optimizer.step_count
    assert clone.epochs_done == model.epochs_done == (2 if trained else 0)
    # training the copy leaves the original alone, and moves the copy's own view
    before, scale = model.params.copy(), model.scale.copy()
    first = clone.first_weight.copy()
    clone.fit(X, y, epochs=2, batch_size=8, verbose=0)
    clone.scale += 1
    np.testing.assert_array_equal(model.params, before)
    np.testing.assert_array_equal(model.scale, scale)
    assert not np.array_equal(clone.first_weight, first)
    # ... and the copy continues exactly as the original does
    model.fit(X, y, epochs=2, batch_size=8, verbose=0)
    np.testing.assert_array_equal(clone.params, model.params)
    again = _copy(clone, how)  # a copy of a copy keeps them too
    assert type(again) is Net and again.hidden == 5 and again.head is again.layers[-1]


class NoArgs(fnn.Sequential):
    def __init__(self):
        super().__init__([fnn.Dense(4, 3), fnn.Tanh(), fnn.Dense(3, 2)], seed=1)
        self.made_here = True


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_subclass_with_a_no_argument_constructor_copies(how, rng):
    X, _ = _data(rng)
    model = NoArgs()
    clone = _copy(model, how)
    assert type(clone) is NoArgs and clone.made_here is True
    np.testing.assert_array_equal(clone.predict(X), model.predict(X))


class Keraslike(fnn.Sequential):
    """Keras habits: compile, build and get_config/from_config overridden with other arguments,
    and a public method (predict) overridden."""

    def __init__(self, width=3):
        super().__init__([fnn.Dense(None, width), fnn.ReLU(), fnn.Dense(width, 2)], seed=2)
        self.width = width

    def compile(self, lr):  # other arguments than Sequential.compile's
        return super().compile("cross_entropy", fnn.optim.SGD(lr=lr))

    def build(self, input_shape, extra=None):
        self.built_with = tuple(input_shape)
        return super().build(input_shape)

    def get_config(self):
        return {"width": self.width}

    @classmethod
    def from_config(cls, config, device="cpu"):
        return cls(**config)

    def predict(self, X, batch_size=None):
        return super().predict(X, batch_size).argmax(axis=1)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("built", [False, True])
def test_a_copy_never_calls_the_subclass_overrides_of_compile_build_get_config(how, built, rng):
    X, y = _data(rng)
    model = Keraslike(4).compile(0.1)
    if built:
        model.fit(X, y, epochs=1, batch_size=8, verbose=0)
        assert model.built_with == (4,)
    clone = _copy(model, how)
    assert type(clone) is Keraslike and clone.width == 4 and clone.built is built
    assert type(clone.optimizer) is fnn.optim.SGD and clone.optimizer.lr == 0.1
    clone.fit(X, y, epochs=1, batch_size=8, verbose=0)
    if not built:
        model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    predicted = clone.predict(X)  # the subclass's predict, on the copy too
    assert predicted.shape == (len(X),) and predicted.dtype.kind == "i"
    if not built:
        np.testing.assert_array_equal(clone.params, model.params)
        np.testing.assert_array_equal(predicted, model.predict(X))
    assert Keraslike.from_config(clone.get_config()).width == 4  # the subclass's own config round trip


class Slotted(fnn.Sequential):
    __slots__ = ("rate", "__private")

    def __init__(self, rate):
        super().__init__([fnn.Dense(4, 2)], seed=4)
        self.rate = rate
        self.__private = "hidden"
        self._units = 2

    @property
    def units(self):
        return self._units

    @units.setter
    def units(self, value):
        self._units = int(value)

    def private(self):
        return self.__private

    def compile(self):  # another signature: a copy must not call it
        return super().compile("cross_entropy", fnn.optim.Adam(lr=self.rate))


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_subclass_with_slots_and_properties_copies(how, rng):
    X, y = _data(rng)
    model = Slotted(0.05).compile()
    model.units = 7
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    clone = _copy(model, how)
    assert type(clone) is Slotted and clone.rate == 0.05 and clone.private() == "hidden" and clone.units == 7
    assert clone.optimizer.get_config()["lr"] == 0.05
    np.testing.assert_array_equal(clone.predict(X), model.predict(X))


class WithTeacher(fnn.Sequential):
    def __init__(self):
        super().__init__([fnn.Dense(4, 2)], seed=5)
        self.teacher = fnn.Sequential([fnn.Dense(4, 2)], seed=6)  # another model, held whole


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_subclass_holding_another_model_copies_both(how, rng):
    X, _ = _data(rng)
    model = WithTeacher()
    clone = _copy(model, how)
    assert type(clone.teacher) is fnn.Sequential and clone.teacher is not model.teacher
    np.testing.assert_array_equal(clone.teacher.predict(X), model.teacher.predict(X))
    clone.teacher.params[...] = 0
    assert np.any(model.teacher.params != 0)


def test_a_deep_copy_of_a_model_and_its_layer_together_keeps_them_together():
    model = Net(3)
    clone, layer = copy.deepcopy([model, model.layers[0]])
    assert layer is clone.layers[0]


def test_a_shallow_copy_of_a_subclass_is_refused_pointing_at_deepcopy():
    model = Net(3)
    with pytest.raises(TypeError, match=r"use copy.deepcopy\(model\)"):
        copy.copy(model)


class Unpicklable(fnn.Sequential):
    def __init__(self):
        super().__init__([fnn.Dense(4, 2)])
        self.hook = lambda x: x


def test_pickling_a_subclass_with_an_unpicklable_attribute_names_it():
    model = Unpicklable()
    with pytest.raises(TypeError, match=r"Unpicklable model: its attribute 'hook' \(function\) does not pickle"):
        pickle.dumps(model)
    assert type(copy.deepcopy(model)) is Unpicklable  # (a deep copy shares the function, as Python's does)


def test_sklearn_clone_of_a_subclass():
    from sklearn.base import clone

    model = Net(3)
    with pytest.raises(TypeError, match="get_params"):  # not an estimator: scikit-learn's own refusal
        clone(model)
    twin = clone(model, safe=False)  # scikit-learn's deep copy
    assert type(twin) is Net and twin.hidden == 3 and twin.head is twin.layers[-1]


def _build_net(n_features, n_outputs):
    model = Net(4)
    assert (n_features, n_outputs) == (4, 2)
    return model


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_fitted_estimator_of_a_subclass_model_pickles(rng):
    from sklearn.base import clone

    from fastnn.sklearn import NeuralNetClassifier

    X, y = _data(rng)
    net = NeuralNetClassifier(_build_net, max_iter=2, random_state=0).fit(X, y)
    assert type(net.model_) is Net
    again = pickle.loads(pickle.dumps(net))
    assert type(again.model_) is Net and again.model_.hidden == 4
    np.testing.assert_array_equal(again.predict_proba(X), net.predict_proba(X))
    fresh = clone(net).fit(X, y)
    assert type(fresh.model_) is Net and fresh.model_ is not net.model_


def test_saving_a_subclass_warns_and_loading_gives_a_sequential_saying_so(rng, tmp_path):
    X, y = _data(rng)
    model = Net(5)
    model.compile("cross_entropy", fnn.optim.Adam(lr=0.01))
    model.fit(X, y, epochs=2, batch_size=8, verbose=0)
    path = tmp_path / "net.safetensors"
    with pytest.warns(UserWarning, match=r"Net is a subclass of fastnn.Sequential.*own attributes \(.*hidden"):
        model.save(path)
    with pytest.warns(UserWarning, match=r"saved from a model of .*Net, a subclass of fastnn.Sequential"):
        loaded = fnn.load(path)
    assert type(loaded) is fnn.Sequential and not hasattr(loaded, "hidden")
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    # the documented way back to the subclass: make one and restore the file's state into it
    net = Net(5)
    net.restore(loaded.snapshot())
    assert net.hidden == 5 and net.epochs_done == 2 and net.optimizer.step_count == model.optimizer.step_count
    np.testing.assert_array_equal(net.predict(X), model.predict(X))
    plain = fnn.Sequential([fnn.Dense(4, 2)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a plain Sequential's file: no warning either way
        plain.save(tmp_path / "plain.safetensors")
        fnn.load(tmp_path / "plain.safetensors")


class PassThrough(fnn.Sequential):
    def __init__(self, layers, **kwargs):
        super().__init__(layers, **kwargs)
        self.extra = "kept"


class Methods(fnn.Sequential):
    def double(self, X):
        return 2 * self.predict(X)


def test_from_config_of_a_subclass_is_refused_unless_its_constructor_takes_sequentials_arguments(rng):
    X, _ = _data(rng)
    config = Net(3).get_config()
    with pytest.raises(TypeError, match=r"Net.from_config cannot make a Net: .*override from_config in Net"):
        Net.from_config(config)
    for cls in (PassThrough, Methods):
        made = cls.from_config(config)
        assert type(made) is cls
        np.testing.assert_array_equal(made.predict(X), fnn.Sequential.from_config(config).predict(X))
    assert PassThrough.from_config(config).extra == "kept"
    record = Net(3).snapshot()
    assert type(Methods.from_snapshot(record)) is Methods
    with pytest.raises(TypeError, match="override from_config"):
        Net.from_snapshot(record)


class Views(fnn.Sequential):
    """A subclass caching NumPy views of its own memory, not the parameter views themselves: a row
    and the transpose of a weight, a slice of the flat parameters, a read-only view of the flat
    gradient, and views inside a dict; the same view held twice."""

    def __init__(self):
        super().__init__([fnn.Dense(4, 6), fnn.Tanh(), fnn.Dense(6, 2)], seed=7, dtype="float64", input_shape=(4,))
        self.row = self.layers[0].weight[0]
        self.views = {"transposed": self.layers[0].weight.T, "tail": self.params[-5:]}
        self.again = self.row
        self.grad_head = self.grads[:3]
        self.grad_head.flags.writeable = False
        self.init_row = self.layers[0].weight[0].copy()  # a copy, not a view: stays a copy


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_views_of_the_models_memory_are_views_of_the_copys(how, rng):
    """A subclass's view of a parameter or of the flat buffers (self.row = self.layers[0].weight[0])
    was copied as a detached array: the copy's view no longer followed the copy's training. Now it is
    the same view of the copy's memory (as torch's deepcopy keeps a tensor view on the copied storage)."""
    X, y = _data(rng)
    model = Views().compile("cross_entropy", fnn.optim.SGD(lr=0.1))
    clone = _copy(model, how)
    pairs = {
        "row": (clone.row, model.row),
        "transposed": (clone.views["transposed"], model.views["transposed"]),
        "tail": (clone.views["tail"], model.views["tail"]),
        "grad_head": (clone.grad_head, model.grad_head),
    }
    for name, (mine, theirs) in pairs.items():
        buffer = clone.grads if name == "grad_head" else clone.params
        assert np.shares_memory(mine, buffer) and not np.shares_memory(mine, theirs), name
        assert mine.shape == theirs.shape and mine.strides == theirs.strides, name
        np.testing.assert_array_equal(mine, theirs, err_msg=name)
    assert clone.again is clone.row and not clone.grad_head.flags.writeable
    assert not np.shares_memory(clone.init_row, clone.params)
    clone.fit(X, y, epochs=1, batch_size=8, verbose=0)
    np.testing.assert_array_equal(clone.row, clone.layers[0].weight[0])  # follows the copy's training
    np.testing.assert_array_equal(clone.views["transposed"], clone.layers[0].weight.T)
    np.testing.assert_array_equal(clone.views["tail"], clone.params[-5:])
    np.testing.assert_array_equal(clone.grad_head, clone.grads[:3])
    assert not np.array_equal(clone.row, model.row)  # ... and the original's stays its own
    np.testing.assert_array_equal(model.row, model.init_row)


class Blocks(fnn.Sequential):
    """Keras and torch habits: the layers list kept as an attribute, a dict of layers, references
    to the optimizer and to a compiled metric, a property."""

    def __init__(self):
        super().__init__([fnn.Dense(4, 5), fnn.ReLU(), fnn.Dense(5, 2)], seed=8, input_shape=(4,))
        self.blocks = self.layers
        self.by_name = {"encoder": self.layers[0], "head": self.layers[-1]}
        self.compile("cross_entropy", fnn.optim.Adam(lr=0.01), metrics=["f1"])
        self.opt = self.optimizer
        self.f1 = self.metrics[0]

    @property
    def head(self):
        return self.by_name["head"]


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_subclass_keeping_its_layers_list_copies(how, rng):
    """self.blocks = self.layers made copy.deepcopy and pickle fail (the model's list refuses the
    appends Python's copy rebuilds a list with); a compiled metric held by the subclass was a
    detached copy. Now both are the copy's own."""
    X, y = _data(rng)
    model = Blocks()
    clone = _copy(model, how)
    assert clone.blocks is clone.layers and clone.blocks is not model.layers
    assert clone.by_name["encoder"] is clone.layers[0] and clone.head is clone.layers[-1]
    assert clone.opt is clone.optimizer and clone.f1 is clone.metrics[0] and clone.f1 is not model.f1
    with pytest.raises(TypeError, match="layers are fixed"):
        clone.blocks.append(fnn.Dense(2, 2))  # still the model's list
    clone.fit(X, y, epochs=1, batch_size=8, verbose=0)
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    np.testing.assert_array_equal(clone.params, model.params)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_of_the_layers_list_alone_is_a_list_of_free_layers(how, rng):
    X, _ = _data(rng)
    model = Blocks()
    layers = _copy(model.layers, how)
    assert type(layers) is list and len(layers) == 3
    assert all(a is not b and a.owner is None for a, b in zip(layers, model.layers))
    rebuilt = fnn.Sequential(layers, input_shape=(4,))  # free layers: a new model takes them
    rebuilt.params[...] = model.params
    np.testing.assert_array_equal(rebuilt.predict(X), model.predict(X))


class Regularised(Net):
    """A subclass of a subclass, with Dropout and BatchNorm layers of its own."""

    def __init__(self):
        fnn.Sequential.__init__(
            self,
            [fnn.Dense(4, 6, bias=False), fnn.BatchNorm1d(6), fnn.ReLU(), fnn.Dropout(0.3), fnn.Dense(6, 2)],
            seed=9,
            dtype="float64",
        )
        self.hidden, self.note_text = 6, "regularised"


def test_a_compiled_subclass_of_a_subclass_copied_then_trained_equals_the_original(rng):
    """Held up (session 25 review): a deep copy of a compiled model of a subclass of a subclass
    shares no buffer with the original and trains exactly as it (shuffle, dropout masks, batch
    statistics, Adam's moments)."""
    X, y = _data(rng)
    model = Regularised().compile("cross_entropy", fnn.optim.Adam(lr=0.01))
    clone = copy.deepcopy(model)
    assert type(clone) is Regularised and clone.summary_line() == "regularised: 6 hidden"
    for name, array in model.state_arrays().items():
        assert not np.shares_memory(array, clone.state_arrays()[name]), name
    assert not np.shares_memory(model.grads, clone.grads)
    model.fit(X, y, epochs=2, batch_size=8, verbose=0)
    assert not np.array_equal(clone.params, model.params)  # the original's fit left the copy alone
    clone.fit(X, y, epochs=2, batch_size=8, verbose=0)
    for name, array in model.state_arrays().items():
        np.testing.assert_array_equal(clone.state_arrays()[name], array, err_msg=name)


def _fit_in_worker(model, X, y):
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    return model


def test_a_subclass_model_round_trips_through_a_joblib_worker(rng):
    """Held up: sent to a joblib (loky) worker, trained there and sent back, a subclass's model is
    the subclass with its references to its own parts, and equals the same fit here."""
    from joblib import Parallel, delayed

    X, y = _data(rng)
    model = Blocks()
    (back,) = Parallel(n_jobs=2)(delayed(_fit_in_worker)(model, X, y) for _ in range(1))
    here = _fit_in_worker(copy.deepcopy(model), X, y)
    assert type(back) is Blocks and back.blocks is back.layers and back.opt is back.optimizer
    assert back.f1 is back.metrics[0]
    np.testing.assert_array_equal(back.params, here.params)
