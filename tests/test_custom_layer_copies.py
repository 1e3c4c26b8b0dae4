"""Copies, pickles and files of models holding a user's layer class inside a container (Residual,
TimeDistributed, a user's registered container), at any depth. A container described its children
by registered name only, so ``copy.deepcopy`` and pickling of such a model failed with "Unknown
layer class" for an unregistered class (while the same layer at the top level copied): now a copy's
description names the classes themselves at every depth, and the copy is of the user's classes and
trains bit for bit as the original. A file holds names, not code: ``save`` warns, naming the class,
where it is and ``register_layer``, and ``fnn.load`` refuses it until the class is registered."""

import copy
import pickle
import warnings

import numpy as np
import pytest

import fastnn as fnn
from fastnn.io import CorruptFileError
from fastnn.layers import LAYERS, layer_from_config, layer_to_config


class MyDense(fnn.Dense):
    """A user's layer, not registered, with a constructor argument of its own."""

    def __init__(self, in_features, out_features, note="mine", **kwargs):
        super().__init__(in_features, out_features, **kwargs)
        self.note = note

    def get_config(self):
        return {**super().get_config(), "note": self.note}


class MyReLU(fnn.ReLU):
    """A user's activation, not registered."""


class Dense(fnn.Dense):
    """A user's subclass that takes fastnn's own name (not registered)."""


@fnn.register_layer
class Wrapped(fnn.layers.Layer):
    """A user's registered container: one child, described in its config with ``layer_to_config``."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def sublayers(self):
        return [("inner", self.inner)]

    def build(self, input_shape, dtype):
        super().build(input_shape, dtype)
        self.output_shape = self.inner.build(input_shape, dtype)
        return self.output_shape

    def forward_calls(self, x, ctx):
        return self.inner.forward_calls(x, ctx.child(0))

    def backward_calls(self, grad_y, ctx, need_grad_x):
        return self.inner.backward_calls(grad_y, ctx.child(0), need_grad_x)

    def get_config(self):
        return {"inner": layer_to_config(self.inner)}

    @classmethod
    def from_config(cls, config):
        return cls(layer_from_config(config["inner"]))


def _copy(obj, how):
    return copy.deepcopy(obj) if how == "deepcopy" else pickle.loads(pickle.dumps(obj))


def _residual(seed=1):
    return fnn.Sequential(
        [fnn.Dense(4, 6), fnn.Residual([MyDense(6, 6, note="in"), MyReLU()]), fnn.Dense(6, 2)],
        seed=seed,
        input_shape=(4,),
    )


def _deep(seed=1):
    inner = fnn.Residual([fnn.Residual([MyDense(6, 8), MyReLU()]), fnn.LayerNorm(8)])
    return fnn.Sequential([fnn.Dense(4, 6), inner, fnn.Dense(8, 2)], seed=seed, input_shape=(4,))


def _time_distributed(seed=1):
    layers = [fnn.TimeDistributed(MyDense(4, 5)), fnn.TimeDistributed(MyReLU()), fnn.LastStep(), fnn.Dense(5, 2)]
    return fnn.Sequential(layers, seed=seed, input_shape=(3, 4))


def _wrapped(seed=1):
    layers = [Wrapped(MyDense(4, 6)), Wrapped(fnn.Residual([MyDense(6, 6), MyReLU()])), fnn.Dense(6, 2)]
    return fnn.Sequential(layers, seed=seed, input_shape=(4,))


MODELS = {"residual": _residual, "deep": _deep, "time_distributed": _time_distributed, "wrapped": _wrapped}

#: the path of the user's MyDense in each model
INNER = {"residual": "1.block.0", "deep": "1.block.0.block.0", "time_distributed": "0.layer", "wrapped": "0.inner"}


def _data(rng, kind, n=24):
    X = rng.standard_normal((n, 3, 4) if kind == "time_distributed" else (n, 4)).astype(np.float32)
    return X, (X.reshape(n, -1)[:, 0] > 0).astype(int)


def _at(model, path):
    return fnn.freezing.layer_paths(model)[path]


def _user_classes(model):
    return {path: type(layer) for path, layer in fnn.freezing.layer_paths(model).items()}


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_a_model_with_a_users_layer_inside_a_container_copies_and_trains_as_the_original(kind, how, rng):
    X, y = _data(rng, kind)
    model = MODELS[kind]()
    model.compile("cross_entropy", fnn.optim.Adam(lr=0.01))
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    clone = _copy(model, how)
    assert _user_classes(clone) == _user_classes(model)
    inner = _at(clone, INNER[kind])
    assert type(inner) is MyDense and inner.note == _at(model, INNER[kind]).note
    assert inner.owner is clone and not np.shares_memory(clone.params, model.params)
    np.testing.assert_array_equal(clone.predict(X), model.predict(X))
    model.fit(X, y, epochs=2, batch_size=8, verbose=0)
    before = model.params.copy()
    clone.fit(X, y, epochs=2, batch_size=8, verbose=0)
    np.testing.assert_array_equal(clone.params, before)  # bit for bit, and the original untouched
    np.testing.assert_array_equal(model.params, before)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_an_unbuilt_model_with_a_nested_users_layer_copies(how, rng):
    X, y = _data(rng, "residual")
    model = fnn.Sequential([fnn.Residual([MyReLU(), MyDense(4, 4)]), fnn.Dense(4, 2)], seed=2)  # (no input size)
    model.compile("cross_entropy", "sgd")
    clone = _copy(model, how)
    assert not model.built and not clone.built
    assert [type(layer) for layer in clone.layers[0].block] == [MyReLU, MyDense]
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    clone.fit(X, y, epochs=1, batch_size=8, verbose=0)
    np.testing.assert_array_equal(clone.params, model.params)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_keeps_a_nested_users_layer_frozen_tagged_and_together_with_its_model(how, rng):
    X, y = _data(rng, "residual")
    model = _residual()
    model.compile("cross_entropy", "sgd")
    model.freeze("1.block.0")
    _at(model, "1.block.0").tag = "kept"
    inner, clone = _copy([_at(model, "1.block.0"), model], how)
    assert inner is _at(clone, "1.block.0") and type(inner) is MyDense  # (one copy: its links kept)
    assert not inner.trainable and inner.tag == "kept"
    frozen = inner.weight.copy()
    clone.fit(X, y, epochs=1, batch_size=8, verbose=0)
    np.testing.assert_array_equal(inner.weight, frozen)


def test_a_free_container_holding_a_users_layer_copies():
    block = fnn.Residual([MyDense(3, 3), MyReLU()])
    for clone in (copy.deepcopy(block), pickle.loads(pickle.dumps(block))):
        assert [type(layer) for layer in clone.block] == [MyDense, MyReLU] and clone.block[0] is not block.block[0]


def test_a_copys_description_names_classes_at_every_depth_and_a_files_names_them():
    block = fnn.Residual([fnn.TimeDistributed(MyDense(3, 3)), Wrapped(MyReLU())])
    by_class = layer_to_config(block, by_class=True)
    inner = by_class["config"]["block"]
    assert by_class["class"] is fnn.Residual and inner[0]["config"]["layer"]["class"] is MyDense
    assert inner[1]["class"] is Wrapped and inner[1]["config"]["inner"]["class"] is MyReLU
    rebuilt = layer_from_config(by_class)
    assert type(rebuilt.block[0].layer) is MyDense and type(rebuilt.block[1].inner) is MyReLU
    by_name = layer_to_config(block)  # (as a file holds it: names, also after a copy's description)
    assert by_name["config"]["block"][0]["config"]["layer"]["class"] == "MyDense"
    assert by_name["config"]["block"][1]["config"]["inner"]["class"] == "MyReLU"
    assert block.get_config()["block"][0]["class"] == "TimeDistributed"


def test_a_failing_get_config_inside_a_copys_description_leaves_files_naming_classes():
    class Broken(fnn.ReLU):
        def get_config(self):
            raise RuntimeError("no config")

    with pytest.raises(RuntimeError, match="no config"):
        layer_to_config(fnn.Residual([Broken()]), by_class=True)
    assert layer_to_config(fnn.Residual([MyReLU()]))["config"]["block"][0]["class"] == "MyReLU"


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_saving_a_nested_unregistered_layer_warns_and_loading_refuses_until_registered(kind, rng, tmp_path):
    X, _ = _data(rng, kind)
    model = MODELS[kind]()
    path = tmp_path / "model.safetensors"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.save(path)
    said = sorted(str(w.message) for w in caught if w.category is UserWarning)
    assert len(said) == 2 and all("refuse the file" in m and "@fastnn.register_layer" in m for m in said)
    assert said[0].startswith(f"save: the layer class MyDense (at {INNER[kind]}")
    assert said[1].startswith("save: the layer class MyReLU (at ")
    with pytest.raises(CorruptFileError, match="Unknown layer class 'MyDense'.*register_layer"):
        fnn.load(path)
    fnn.register_layer(MyDense)
    fnn.register_layer(MyReLU)
    try:
        loaded = fnn.load(path)
        assert (
            type(_at(loaded, INNER[kind])) is MyDense and _at(loaded, INNER[kind]).note == _at(model, INNER[kind]).note
        )
        np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model.save(tmp_path / "registered.safetensors")  # registered now: no warning
    finally:
        del LAYERS["MyDense"], LAYERS["MyReLU"]


def test_saving_a_users_layer_that_takes_a_fastnn_name_warns_at_any_depth(tmp_path):
    """A file holds only the name: fnn.load would rebuild fastnn's Dense for the user's."""
    top = fnn.Sequential([Dense(3, 3), fnn.Dense(3, 2)], seed=0, input_shape=(3,))
    nested = fnn.Sequential([fnn.Residual([Dense(3, 3)]), fnn.Dense(3, 2)], seed=0, input_shape=(3,))
    for model, where in ((top, "0"), (nested, "0.block.0")):
        with pytest.warns(UserWarning, match=rf"class Dense \(at {where}\).*rebuild fastnn.layers.dense.Dense"):
            model.save(tmp_path / "model.safetensors")


def test_saving_fastnn_containers_of_fastnn_layers_warns_nothing(tmp_path):
    model = fnn.Sequential(
        [fnn.Residual([fnn.Dense(4, 6), fnn.ReLU()]), fnn.TransformerEncoderBlock(6, 2, 8)], seed=0, input_shape=(3, 4)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.save(tmp_path / "plain.safetensors")
        wrapped = fnn.Sequential([Wrapped(fnn.Dense(4, 2))], seed=0, input_shape=(4,))
        wrapped.save(tmp_path / "wrapped.safetensors")  # a registered user container of fastnn layers
    assert type(fnn.load(tmp_path / "wrapped.safetensors").layers[0]) is Wrapped


def _build_residual(n_features, n_outputs):
    return [fnn.Dense(n_features, 6), fnn.Residual([MyDense(6, 6), MyReLU()]), fnn.Dense(6, n_outputs)]


def _fit_in_worker(model, X, y):
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    return model


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_an_estimator_with_a_nested_users_layer_pickles_clones_and_goes_to_a_joblib_worker(rng):
    from joblib import Parallel, delayed
    from sklearn.base import clone

    from fastnn.sklearn import NeuralNetClassifier

    X, y = _data(rng, "residual")
    net = NeuralNetClassifier(_build_residual, max_iter=2, random_state=0).fit(X, y)
    again = pickle.loads(pickle.dumps(net))
    assert type(_at(again.model_, "1.block.0")) is MyDense
    np.testing.assert_array_equal(again.predict_proba(X), net.predict_proba(X))
    fresh = clone(net).fit(X, y)
    np.testing.assert_array_equal(fresh.predict_proba(X), net.predict_proba(X))
    model = _residual().compile("cross_entropy", "adam")
    (back,) = Parallel(n_jobs=2)(delayed(_fit_in_worker)(model, X, y) for _ in range(1))
    here = _fit_in_worker(copy.deepcopy(model), X, y)
    assert type(_at(back, "1.block.0")) is MyDense and type(_at(back, "1.block.1")) is MyReLU
    np.testing.assert_array_equal(back.params, here.params)
