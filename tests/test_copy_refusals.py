"""Copies of a model whose user container's ``get_config`` does not describe every child of its
``sublayers()``. A copy rebuilds each layer from its description, so such a container came back
without the child (``copy.deepcopy`` gave a model silently lacking a layer) or with a child of its
own defaults in that place. Now every copy path (``copy.deepcopy`` of the model or of
``[model, layer]``, pickle, joblib, an estimator holding the model, ``save``) is complete or refused:
a child the rebuilt container holds a default in the place of is put back (the copy's outputs and
training equal the original's bit for bit); one it rebuilds without, or holds where a copy cannot
put it back, is refused with a TypeError naming the container, the child and ``get_config``,
before anything is copied or written. A container whose ``get_config`` names its children's
classes itself (not through ``layer_to_config``) copies with the model's own classes, registered
or not."""

import copy
import io
import json
import pickle
import types

import joblib
import numpy as np
import pytest

import fastnn as fnn
from fastnn.layers import LAYERS, layer_from_config, layer_to_config


class _Holder(fnn.layers.Layer):
    """A user's container that runs one child (:meth:`run`) and lists ``self.kids`` as its children."""

    def run(self):
        return self.kids["body"]

    def sublayers(self):
        return list(self.kids.items())

    def build(self, input_shape, dtype):
        super().build(input_shape, dtype)
        for _, child in self.sublayers():
            child.build(input_shape, dtype)
        self.output_shape = self.run().output_shape
        return self.output_shape

    def forward_calls(self, x, ctx):
        index = [name for name, _ in self.sublayers()].index("body")
        return self.run().forward_calls(x, ctx.child(index))

    def backward_calls(self, grad_y, ctx, need_grad_x):
        index = [name for name, _ in self.sublayers()].index("body")
        return self.run().backward_calls(grad_y, ctx.child(index), need_grad_x)


class Forgetful(_Holder):
    """Describes its body, not its ``extra`` child: from_config rebuilds it without."""

    def __init__(self, body, extra=None):
        super().__init__()
        self.kids = {"body": body}
        if extra is not None:
            self.kids["extra"] = extra

    def get_config(self):
        return {"body": layer_to_config(self.kids["body"])}

    @classmethod
    def from_config(cls, config):
        return cls(layer_from_config(config["body"]))


class Defaulted(_Holder):
    """Describes nothing of its body: from_config rebuilds it with its default body in that place."""

    def __init__(self, body=None):
        super().__init__()
        self.kids = {"body": fnn.Dense(4, 4) if body is None else body}

    def get_config(self):
        return {}


class Boxed(_Holder):
    """As Defaulted, but holds its body in an object of its own: no place a copy can put it back."""

    def __init__(self, body=None):
        super().__init__()
        self.held = types.SimpleNamespace(body=fnn.Dense(4, 4) if body is None else body)

    @property
    def kids(self):
        return {"body": self.held.body}

    def get_config(self):
        return {}


class Eager(Forgetful):
    """Rebuilds an ``extra`` child the model's own container may not hold."""

    @classmethod
    def from_config(cls, config):
        return cls(layer_from_config(config["body"]), extra=fnn.ReLU())


class MyTanh(fnn.Tanh):
    """A user's layer class, never registered."""


class MyDense(fnn.Dense):
    """A user's layer class with parameters, never registered."""


class Named(_Holder):
    """Describes its body by class name itself, not through layer_to_config (which names the class
    itself inside a copy's description)."""

    def __init__(self, body):
        super().__init__()
        self.kids = {"body": body}

    def get_config(self):
        body = self.kids["body"]
        return {"body": {"class": type(body).__name__, "config": body.get_config()}}

    @classmethod
    def from_config(cls, config):
        return cls(layer_from_config(config["body"]))


CONTAINERS = (Forgetful, Defaulted, Boxed, Eager, Named)


@pytest.fixture(params=[True, False], ids=["registered", "unregistered"])
def registered(request):
    if request.param:
        for cls in CONTAINERS:
            fnn.register_layer(cls)
    yield request.param
    for cls in CONTAINERS:
        if LAYERS.get(cls.__name__) is cls:
            del LAYERS[cls.__name__]


def _data(rng):
    X = rng.standard_normal((16, 4)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(int)


def _model(container, built=True, compiled=True, width=4):
    model = fnn.Sequential([container, fnn.Dense(width, 2)], seed=0, input_shape=(4,) if built else None)
    return model.compile("cross_entropy", fnn.optim.Adam(lr=0.01)) if compiled else model


def _pickled(obj):
    return pickle.loads(pickle.dumps(obj))


def _joblibbed(obj):
    buffer = io.BytesIO()
    joblib.dump(obj, buffer)
    buffer.seek(0)
    return joblib.load(buffer)


COPIES = {
    "deepcopy": copy.deepcopy,
    "pickle": _pickled,
    "joblib": _joblibbed,
    "deepcopy_with_child": lambda model: copy.deepcopy([model, model.layers[0].kids["body"]])[0],
    "pickle_with_child": lambda model: _pickled([model.layers[0].kids["body"], model])[1],
}

_LEFT_OUT = r"Forgetful \(at '0'\) holds the child 'extra' \(ReLU, at '0.extra'\).*get_config.*without it"


@pytest.mark.parametrize("how", sorted(COPIES))
@pytest.mark.parametrize("extra", [fnn.ReLU, lambda: fnn.Dense(4, 4)], ids=["no_parameters", "parameters"])
def test_a_child_get_config_leaves_out_is_refused_by_every_copy(how, extra, registered, rng):
    model = _model(Forgetful(fnn.Dense(4, 4), extra=extra()))
    X, y = _data(rng)
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    before = model.params.copy()
    kind = type(model.layers[0].kids["extra"]).__name__
    with pytest.raises(TypeError, match=_LEFT_OUT.replace("ReLU", kind)) as info:
        COPIES[how](model)
    assert "describe every child of Forgetful.sublayers() in Forgetful.get_config()" in str(info.value)
    np.testing.assert_array_equal(model.params, before)  # the model is left as it was, and works
    assert [name for name, _ in model.layers[0].sublayers()] == ["body", "extra"]
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)


@pytest.mark.parametrize("compiled", [True, False])
def test_an_unbuilt_models_copy_is_refused_too(compiled, registered):
    model = _model(Forgetful(fnn.Dense(4, 4), extra=fnn.ReLU()), built=False, compiled=compiled)
    for make in (copy.deepcopy, _pickled):
        with pytest.raises(TypeError, match=_LEFT_OUT):
            make(model)


def test_save_refuses_it_and_writes_no_file(registered, tmp_path):
    model = _model(Forgetful(fnn.Dense(4, 4), extra=fnn.ReLU()))
    path = tmp_path / "model.safetensors"
    with pytest.raises(TypeError, match=r"cannot save this model: its layer " + _LEFT_OUT + ".*loaded from the file"):
        model.save(path)
    assert not path.exists()


def _forgetful_network(n_features, n_outputs):
    layers = [Forgetful(fnn.Dense(n_features, 4), extra=fnn.ReLU()), fnn.Dense(4, n_outputs)]
    return fnn.Sequential(layers, seed=0, input_shape=(n_features,))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_an_estimator_holding_such_a_model_is_refused(rng):
    from fastnn.sklearn import NeuralNetClassifier

    X, y = _data(rng)
    estimator = NeuralNetClassifier(build_fn=_forgetful_network, max_iter=2, random_state=0).fit(X, y)
    for make in (copy.deepcopy, _pickled, _joblibbed):
        with pytest.raises(TypeError, match=_LEFT_OUT):
            make(estimator)


def test_a_copy_keeps_a_described_container_whole(registered, rng):
    model = _model(Forgetful(fnn.Dense(4, 4)))  # (no extra child: its config describes all)
    X, _ = _data(rng)
    for make in (copy.deepcopy, _pickled):
        clone = make(model)
        np.testing.assert_array_equal(clone.predict(X), model.predict(X))


# -- a child its container's rebuilt defaults would replace: put back -------------------------------
BODIES = {  # (body, its output width)
    "other_class": lambda: (MyTanh(), 4),  # (the default body is a Dense: another class in its place)
    "other_config": lambda: (fnn.Dense(4, 4, activation="tanh"), 4),  # (the default: no activation)
    "other_width": lambda: (fnn.Dense(4, 6), 6),
}


@pytest.mark.parametrize("how", sorted(set(COPIES) - {"deepcopy_with_child", "pickle_with_child"}))
@pytest.mark.parametrize("body", sorted(BODIES))
def test_a_child_replaced_by_a_default_is_put_back_and_trains_bit_for_bit(how, body, registered, rng):
    X, y = _data(rng)
    layer, width = BODIES[body]()
    model = _model(Defaulted(layer), width=width)
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    clone = COPIES[how](model)
    mine, theirs = model.layers[0].kids["body"], clone.layers[0].kids["body"]
    assert type(theirs) is type(mine) and theirs.get_config() == mine.get_config()
    assert theirs.owner is clone and not np.shares_memory(clone.params, model.params)
    assert clone.count_params() == model.count_params()
    np.testing.assert_array_equal(clone.predict(X), model.predict(X))
    clone.fit(X, y, epochs=2, batch_size=8, verbose=0)
    model.fit(X, y, epochs=2, batch_size=8, verbose=0)
    np.testing.assert_array_equal(clone.params, model.params)
    again = COPIES[how](clone)  # the copy copies again
    np.testing.assert_array_equal(again.predict(X), clone.predict(X))


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("model_first", [True, False])
def test_a_put_back_child_copied_beside_its_model_is_the_copys(how, model_first, registered, rng):
    model = _model(Defaulted(fnn.Dense(4, 4, activation="tanh")))
    body = model.layers[0].kids["body"]
    make = copy.deepcopy if how == "deepcopy" else _pickled
    clone, child = make([model, body]) if model_first else make([body, model])[::-1]
    assert child is clone.layers[0].kids["body"] and child.owner is clone
    assert child.activation == "tanh"
    X, _ = _data(rng)
    np.testing.assert_array_equal(clone.predict(X), model.predict(X))


def test_an_unbuilt_models_child_is_put_back(registered, rng):
    model = _model(Defaulted(MyTanh()), built=False)
    clone = copy.deepcopy(model)
    assert type(clone.layers[0].kids["body"]) is MyTanh
    X, _ = _data(rng)
    np.testing.assert_array_equal(clone.predict(X), model.predict(X))


def test_save_refuses_a_child_a_file_would_load_as_its_default(registered, tmp_path):
    model = _model(Defaulted(fnn.Dense(4, 4, activation="tanh")))
    path = tmp_path / "model.safetensors"
    with pytest.raises(TypeError, match=r"cannot save.*Defaulted \(at '0'\) holds the child 'body' \(Dense"):
        model.save(path)
    assert not path.exists()


@pytest.mark.parametrize("make", [copy.deepcopy, _pickled], ids=["deepcopy", "pickle"])
def test_a_child_held_where_a_copy_cannot_put_it_back_is_refused(make, registered):
    model = _model(Boxed(fnn.Dense(4, 4, activation="tanh")))
    with pytest.raises(TypeError, match=r"Boxed \(at '0'\) holds the child 'body'.*cannot put the model's child back"):
        make(model)
    assert type(copy.deepcopy(_model(Boxed()))) is fnn.Sequential  # (its default body: a whole copy)


@pytest.mark.parametrize("make", [copy.deepcopy, _pickled], ids=["deepcopy", "pickle"])
def test_a_child_from_config_adds_is_refused(make, registered):
    model = _model(Eager(fnn.Dense(4, 4)))
    with pytest.raises(TypeError, match=r"Eager \(at '0'\).*a child 'extra' \(ReLU\) that the model's own Eager"):
        make(model)
    whole = _model(Eager(fnn.Dense(4, 4), extra=fnn.ReLU()))
    assert [name for name, _ in make(whole).layers[0].sublayers()] == ["body", "extra"]


# -- a container that names its children's classes itself -------------------------------------------
@pytest.mark.parametrize("how", sorted(COPIES))
@pytest.mark.parametrize("body", [MyTanh, lambda: MyDense(4, 4, activation="tanh")], ids=["MyTanh", "MyDense"])
def test_a_child_described_by_an_unregistered_name_copies_as_its_class(how, body, registered, rng):
    assert "MyTanh" not in LAYERS and "MyDense" not in LAYERS
    model = _model(Named(body()))
    X, y = _data(rng)
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    clone = COPIES[how](model)
    assert type(clone.layers[0].kids["body"]) is type(model.layers[0].kids["body"])
    np.testing.assert_array_equal(clone.predict(X), model.predict(X))
    clone.fit(X, y, epochs=1, batch_size=8, verbose=0)
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    np.testing.assert_array_equal(clone.params, model.params)


class Misnamed(Named):
    """Names its body's class wrongly: a name neither registered nor of a class the model holds."""

    def get_config(self):
        return {"body": {"class": "NoSuchLayer", "config": {}}}


@pytest.mark.parametrize("make", [copy.deepcopy, _pickled], ids=["deepcopy", "pickle"])
def test_a_name_neither_registered_nor_the_models_is_refused_as_unknown(make):
    model = _model(Misnamed(MyTanh()))
    with pytest.raises(ValueError, match=r"Unknown layer class 'NoSuchLayer'.*register_layer"):
        make(model)


@pytest.mark.parametrize("make", [copy.deepcopy, _pickled], ids=["deepcopy", "pickle"])
def test_a_users_container_inside_fastnns_containers_is_checked_too(make, registered):
    block = fnn.Residual([fnn.TimeDistributed(Forgetful(fnn.Dense(4, 4), extra=fnn.ReLU()))])
    model = fnn.Sequential([block, fnn.LastStep(), fnn.Dense(4, 2)], seed=0, input_shape=(3, 4))
    with pytest.raises(TypeError, match=r"Forgetful \(at '0.block.0.layer'\) holds the child 'extra'"):
        make(model)


# -- from_config / from_snapshot: the config's "structure" tells a child get_config leaves out -------
@pytest.fixture
def containers_registered():
    for cls in CONTAINERS:
        fnn.register_layer(cls)
    yield
    for cls in CONTAINERS:
        if LAYERS.get(cls.__name__) is cls:
            del LAYERS[cls.__name__]


REBUILDS = {
    "from_config": lambda model: fnn.Sequential.from_config(model.get_config()),
    "from_config_json": lambda model: fnn.Sequential.from_config(json.loads(json.dumps(model.get_config()))),
    "from_snapshot": lambda model: fnn.Sequential.from_snapshot(model.snapshot()),
}

UNDESCRIBED = {  # (the model, what the message says of its container and child)
    "left_out": (
        lambda: _model(Forgetful(fnn.Dense(4, 4), extra=fnn.ReLU())),
        r"Forgetful \(at '0'\) held the child 'extra' \(ReLU, at '0.extra'\) that Forgetful.get_config\(\) "
        r"does not describe: Forgetful.from_config rebuilds the Forgetful without it",
    ),
    "other_config": (
        lambda: _model(Defaulted(fnn.Dense(4, 4, activation="tanh"))),
        r"Defaulted \(at '0'\) held the child 'body' \(Dense, at '0.body'\).*as another Dense",
    ),
    "other_class": (
        lambda: _model(Defaulted(MyTanh())),
        r"Defaulted \(at '0'\) held the child 'body' \(MyTanh, at '0.body'\).*with a Dense in its place",
    ),
    "other_width": (  # (the default body does not chain with the next layer: said as this, not that)
        lambda: _model(Defaulted(fnn.Dense(4, 6)), width=6),
        r"Defaulted \(at '0'\) held the child 'body' \(Dense, at '0.body'\).*as another Dense",
    ),
    "added": (
        lambda: _model(Eager(fnn.Dense(4, 4))),
        r"Eager \(at '0'\), rebuilt from Eager.get_config\(\), holds a child 'extra' \(ReLU, at '0.extra'\)",
    ),
    "nested": (
        lambda: fnn.Sequential(
            [fnn.Residual([fnn.TimeDistributed(Forgetful(fnn.Dense(4, 4), extra=fnn.ReLU()))]), fnn.LastStep()],
            seed=0,
            input_shape=(3, 4),
        ),
        r"Forgetful \(at '0.block.0.layer'\) held the child 'extra' \(ReLU, at '0.block.0.layer.extra'\)",
    ),
}


@pytest.mark.parametrize("how", sorted(REBUILDS))
@pytest.mark.parametrize("case", sorted(UNDESCRIBED))
def test_from_config_and_from_snapshot_refuse_a_child_get_config_leaves_out(how, case, containers_registered):
    make, says = UNDESCRIBED[case]
    model = make()
    with pytest.raises(ValueError, match=r"cannot rebuild the model this config describes: its layer " + says) as info:
        REBUILDS[how](model)
    assert "silently differ" in str(info.value) and "get_config() (layer_to_config(child))" in str(info.value)


def test_an_unbuilt_models_config_is_checked_too(containers_registered):
    model = _model(Forgetful(fnn.Dense(4, 4), extra=fnn.ReLU()), built=False)
    assert not model.built
    with pytest.raises(ValueError, match=r"Forgetful \(at '0'\) held the child 'extra'"):
        fnn.Sequential.from_config(model.get_config())


@pytest.mark.parametrize("how", sorted(REBUILDS))
def test_a_described_container_rebuilds_from_its_config(how, containers_registered, rng):
    model = _model(Forgetful(fnn.Dense(4, 4, activation="tanh")))
    X, y = _data(rng)
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    assert "structure" in model.get_config()
    clone = REBUILDS[how](model)
    assert clone.layers[0].kids["body"].activation == "tanh"
    if how == "from_snapshot":
        np.testing.assert_array_equal(clone.predict(X), model.predict(X))


def test_a_described_container_saves_and_loads(containers_registered, rng, tmp_path):
    from fastnn.serialization import read_checkpoint

    model = _model(fnn.Residual([Forgetful(fnn.Dense(4, 4, activation="tanh"))]))
    X, y = _data(rng)
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    path = tmp_path / "model.safetensors"
    model.save(path)
    record, _ = read_checkpoint(path)  # (the file's config, through JSON)
    assert record["config"]["structure"]["layers"]["0"]["tree"]["0.block.0.body"]["class"] == "Dense"
    np.testing.assert_array_equal(fnn.load(path).predict(X), model.predict(X))


def test_a_config_without_structure_rebuilds_unchecked(containers_registered):
    # a config written before the check (or by a user): rebuilt as it describes, as before
    config = _model(Forgetful(fnn.Dense(4, 4), extra=fnn.ReLU())).get_config()
    del config["structure"]
    clone = fnn.Sequential.from_config(config)
    assert [name for name, _ in clone.layers[0].sublayers()] == ["body"]


def test_a_plain_models_config_is_unchanged():
    model = fnn.Sequential([fnn.Residual([fnn.Dense(4, 4)]), fnn.Dense(4, 2)], seed=0, input_shape=(4,))
    assert sorted(model.get_config()) == ["class", "dtype", "input_shape", "layers", "seed"]


def test_a_config_edited_on_purpose_is_rebuilt_as_edited(containers_registered):
    model = _model(Forgetful(fnn.Dense(4, 4), extra=fnn.ReLU()))
    config = model.get_config()
    edited = copy.deepcopy(config)  # the container's own entry edited: the user's description now
    edited["layers"][0]["config"]["body"]["config"]["activation"] = "relu"
    assert fnn.Sequential.from_config(edited).layers[0].kids["body"].activation == "relu"
    reshaped = {**config, "input_shape": [5]}  # another input shape: other parameter shapes
    reshaped["layers"] = copy.deepcopy(config["layers"])
    reshaped["layers"][0]["config"]["body"]["config"]["in_features"] = 5
    assert fnn.Sequential.from_config(reshaped).input_shape == (5,)
    # another dtype (what the model's advice suggests) changes no structure: still checked
    with pytest.raises(ValueError, match=r"Forgetful \(at '0'\) held the child 'extra'"):
        fnn.Sequential.from_config({**config, "dtype": "float64"})
    well = _model(Forgetful(fnn.Dense(4, 4)))
    assert fnn.Sequential.from_config({**well.get_config(), "dtype": "float64"}).dtype == np.float64


class Opaque(fnn.Dense):
    """A user's layer whose config cannot be read (nothing to compare but its class and parameters)."""

    def get_config(self):
        raise NotImplementedError("no config")


class OpaqueDefaulted(Defaulted):
    """As Defaulted, with an Opaque default body."""

    def __init__(self, body=None):
        super().__init__(Opaque(4, 4) if body is None else body)


def test_a_child_of_other_parameters_is_refused_where_its_config_tells_nothing(containers_registered):
    fnn.register_layer(OpaqueDefaulted)
    try:
        model = _model(OpaqueDefaulted(Opaque(4, 4, bias=False)))
        with pytest.raises(
            ValueError,
            match=r"OpaqueDefaulted \(at '0'\) held the child 'body' \(Opaque, at '0.body'\).*as another Opaque "
            r"\(of its defaults: parameters \{'weight': \[4, 4\], 'bias': \[4\]\}, not \{'weight': \[4, 4\]\}\)",
        ):
            fnn.Sequential.from_config(model.get_config())
        whole = _model(OpaqueDefaulted())
        assert type(fnn.Sequential.from_config(whole.get_config()).layers[0].kids["body"]) is Opaque
    finally:
        del LAYERS["OpaqueDefaulted"]


class Lazy(fnn.Dense):
    """A user's Dense whose config leaves its input width to the build (its weight's shape follows
    the model's input shape)."""

    def get_config(self):
        return {"out_features": self.out_features}

    @classmethod
    def from_config(cls, config):
        return cls(None, config["out_features"])


def test_another_input_shape_rebuilds_as_configured(containers_registered):
    fnn.register_layer(Lazy)
    try:
        model = fnn.Sequential([Forgetful(Lazy(None, 4)), fnn.Dense(4, 2)], seed=0, input_shape=(4,))
        config = model.get_config()
        clone = fnn.Sequential.from_config({**config, "input_shape": [5]})  # (the body's weight: (5, 4))
        assert clone.layers[0].kids["body"].weight.shape == (5, 4)
        assert fnn.Sequential.from_config(config).layers[0].kids["body"].weight.shape == (4, 4)
    finally:
        del LAYERS["Lazy"]
