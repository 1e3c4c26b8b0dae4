"""Copies and pickles of a model whose user container layer holds its children somewhere the built-in
containers do not: in a dict, a list of lists, a tuple inside a dict (the copy swaps the child
copied with the model, or pickled beside it, into those places: ``pickle.dumps([model, child])``
keeps them together as ``copy.deepcopy`` does), or an object of its own, where no place can be
swapped: the child pickled beside the model is then a free copy of the copy's child, with its
values and its own memory, never an empty object (``fastnn.model``'s ``_fill_unadopted``). A child
that the container's ``get_config`` does not describe is refused by name when pickled (and when
unpickled, where the container's class changed since)."""

import copy
import pickle
import types

import numpy as np
import pytest

import fastnn as fnn
from fastnn.layers import LAYERS, layer_from_config, layer_to_config


class _Box(fnn.layers.Layer):
    """A user's container of one child, kept where each subclass says (``held``, ``child``)."""

    def __init__(self, inner):
        super().__init__()
        self.keep(inner)

    def keep(self, inner):
        raise NotImplementedError

    def child(self):
        raise NotImplementedError

    def sublayers(self):
        return [("inner", self.child())]

    def build(self, input_shape, dtype):
        super().build(input_shape, dtype)
        self.output_shape = self.child().build(input_shape, dtype)
        return self.output_shape

    def forward_calls(self, x, ctx):
        return self.child().forward_calls(x, ctx.child(0))

    def backward_calls(self, grad_y, ctx, need_grad_x):
        return self.child().backward_calls(grad_y, ctx.child(0), need_grad_x)

    def get_config(self):
        return {"inner": layer_to_config(self.child())}

    @classmethod
    def from_config(cls, config):
        return cls(layer_from_config(config["inner"]))


class DictBox(_Box):
    def keep(self, inner):
        self.kids = {"inner": inner}

    def child(self):
        return self.kids["inner"]


class NestedListBox(_Box):
    def keep(self, inner):
        self.stages = [["stage", [inner]]]

    def child(self):
        return self.stages[0][1][0]


class TupleInDictBox(_Box):
    def keep(self, inner):
        self.parts = {"body": ("inner", inner)}

    def child(self):
        return self.parts["body"][1]


class ObjectBox(_Box):
    """Holds its child in an object of its own: no place a copy can swap."""

    def keep(self, inner):
        self.held = types.SimpleNamespace(inner=inner)

    def child(self):
        return self.held.inner


SWAPPABLE = [DictBox, NestedListBox, TupleInDictBox]


@pytest.fixture(autouse=True)
def _registered():
    for cls in (*SWAPPABLE, ObjectBox):
        fnn.register_layer(cls)
    yield
    for cls in (*SWAPPABLE, ObjectBox):
        LAYERS.pop(cls.__name__, None)


def _trained(box, rng):
    X = rng.standard_normal((16, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    model = fnn.Sequential([box(fnn.Dense(4, 6)), fnn.ReLU(), fnn.Dense(6, 2)], seed=0, input_shape=(4,))
    model.compile("cross_entropy", fnn.optim.Adam(lr=0.01))
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    return model, X, y


def _copy(objects, how):
    return copy.deepcopy(objects) if how == "deepcopy" else pickle.loads(pickle.dumps(objects))


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("model_first", [True, False])
@pytest.mark.parametrize("box", SWAPPABLE, ids=lambda cls: cls.__name__)
def test_a_child_held_in_a_dict_or_nested_list_stays_the_copys_own(box, model_first, how, rng):
    model, X, y = _trained(box, rng)
    inner = model.layers[0].child()
    if model_first:
        clone, child = _copy([model, inner], how)
    else:
        child, clone = _copy([inner, model], how)
    assert child is clone.layers[0].child() and type(child) is fnn.Dense  # one copy: its links kept
    assert child.owner is clone and np.shares_memory(child.weight, clone.params)
    assert not np.shares_memory(clone.params, model.params)
    np.testing.assert_array_equal(child.weight, inner.weight)
    np.testing.assert_array_equal(clone.predict(X), model.predict(X))
    clone.fit(X, y, epochs=1, batch_size=8, verbose=0)  # the copy trains its child: the one held beside it
    assert not np.array_equal(child.weight, inner.weight)
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    np.testing.assert_array_equal(clone.params, model.params)  # bit for bit as the original


def test_a_child_held_in_an_object_of_its_own_pickles_beside_its_model_as_a_filled_free_copy(rng):
    model, X, y = _trained(ObjectBox, rng)
    inner = model.layers[0].child()
    clone, child = pickle.loads(pickle.dumps([model, inner]))
    mine = clone.layers[0].child()
    assert child is not mine and type(child) is fnn.Dense  # (the container cannot be made to hold it)
    assert child.owner is None and mine.owner is clone  # a free copy, as a layer pickled alone
    np.testing.assert_array_equal(child.weight, inner.weight)  # filled: the values, not an empty object
    np.testing.assert_array_equal(child.bias, inner.bias)
    assert not np.shares_memory(child.weight, clone.params) and not np.shares_memory(child.weight, model.params)
    np.testing.assert_array_equal(clone.predict(X), model.predict(X))
    np.testing.assert_array_equal(
        child.forward(X, training=False), mine.forward(X, training=False)
    )  # a working layer of its own
    clone.fit(X, y, epochs=1, batch_size=8, verbose=0)
    np.testing.assert_array_equal(child.weight, inner.weight)  # the copy's training leaves it alone
    again = pickle.loads(pickle.dumps(clone))  # the copy pickles again (its child held the same way)
    np.testing.assert_array_equal(again.predict(X), clone.predict(X))


def test_a_child_held_in_an_object_of_its_own_deep_copies_beside_its_model_as_the_copys(rng):
    model, X, _ = _trained(ObjectBox, rng)
    clone, child = copy.deepcopy([model, model.layers[0].child()])
    assert child is clone.layers[0].child() and child.owner is clone
    np.testing.assert_array_equal(clone.predict(X), model.predict(X))


@pytest.mark.parametrize("box", [*SWAPPABLE, ObjectBox], ids=lambda cls: cls.__name__)
def test_a_model_with_a_users_container_pickles_alone(box, rng):
    model, X, _ = _trained(box, rng)
    clone = pickle.loads(pickle.dumps(model))
    assert type(clone.layers[0]) is box and clone.layers[0].child().owner is clone
    np.testing.assert_array_equal(clone.predict(X), model.predict(X))


class Forgetful(DictBox):
    """A container whose get_config leaves a child of sublayers() out (its ``extra``)."""

    def __init__(self, inner, extra=False):
        super().__init__(inner)
        if extra:
            self.kids["extra"] = fnn.ReLU()

    def sublayers(self):
        return list(self.kids.items())


def test_a_child_the_containers_config_leaves_out_is_refused_by_name_when_pickled(monkeypatch):
    fnn.register_layer(Forgetful)
    try:
        model = fnn.Sequential([Forgetful(fnn.Dense(4, 2), extra=True)], seed=0, input_shape=(4,))
        model.compile("mse", "sgd")
        with pytest.raises(TypeError, match=r"Forgetful \(at '0'\) holds the child 'extra' \(ReLU.*get_config"):
            pickle.dumps(model)  # (refused before anything is written: tests/test_copy_refusals.py)
        # a pickle whose container's class no longer rebuilds the child (changed since it was
        # pickled): refused by name when unpickled
        full = {"get_config": lambda self: {"inner": layer_to_config(self.child()), "extra": True}}
        monkeypatch.setattr(Forgetful, "get_config", full["get_config"])
        monkeypatch.setattr(
            Forgetful, "from_config", classmethod(lambda cls, c: cls(layer_from_config(c["inner"]), c["extra"]))
        )
        blob = pickle.dumps(model)
        monkeypatch.undo()
        with pytest.raises(pickle.UnpicklingError, match=r"\('layer', '0.extra'\) \(ReLU\).*get_config"):
            pickle.loads(blob)
    finally:
        LAYERS.pop("Forgetful", None)
