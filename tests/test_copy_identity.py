"""Identity of a model's parts across one copy: ``copy.deepcopy([model.layers[0], model])`` gave a
free copy of the layer beside the copied model (with the model first it was the copy's layer), and
``pickle.loads(pickle.dumps([model, model.layers[0]]))`` lost the link in both orders (the model
pickles its layers as configs), also for its optimizer. Now, as torch's deepcopy and pickle keep
``copies[0] is copies[1][0]``, a top-level layer or the optimizer copied in the same call as its
model is the copy's own, in either order; copied alone it stays a free object, as before. And a
model holding a view of its memory pickled ``id()`` of the view: equal models now pickle to equal
bytes."""

import copy
import pickle

import numpy as np
import pytest

import fastnn as fnn


def _data(rng, n=24):
    X = rng.standard_normal((n, 4)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(int)


def _model(seed=0):
    model = fnn.Sequential([fnn.Dense(4, 6), fnn.BatchNorm1d(6), fnn.ReLU(), fnn.Dense(6, 2)], seed=seed)
    return model.compile("cross_entropy", fnn.optim.Adam(lr=0.01))


def _copy(objects, how, protocol=pickle.DEFAULT_PROTOCOL):
    return copy.deepcopy(objects) if how == "deepcopy" else pickle.loads(pickle.dumps(objects, protocol))


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("model_first", [True, False])
def test_a_layer_and_the_optimizer_copied_with_their_model_are_the_copys_own(how, model_first, rng):
    X, y = _data(rng)
    model = _model()
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)  # (moments, running statistics, a step count)
    if model_first:
        clone, dense, norm, opt = _copy([model, model.layers[0], model.layers[1], model.optimizer], how)
    else:
        dense, norm, opt, clone = _copy([model.layers[0], model.layers[1], model.optimizer, model], how)
    assert dense is clone.layers[0] and norm is clone.layers[1] and opt is clone.optimizer
    assert dense.owner is clone and norm.owner is clone and opt.owner is clone
    assert dense is not model.layers[0] and opt is not model.optimizer
    assert np.shares_memory(dense.weight, clone.params) and not np.shares_memory(dense.weight, model.params)
    np.testing.assert_array_equal(norm.running_mean, model.layers[1].running_mean)
    assert opt.step_count == model.optimizer.step_count
    # the copy goes on training as the original would, and leaves the original alone
    before = model.params.copy()
    clone.fit(X, y, epochs=2, batch_size=8, verbose=0)
    np.testing.assert_array_equal(model.params, before)
    model.fit(X, y, epochs=2, batch_size=8, verbose=0)
    np.testing.assert_array_equal(clone.params, model.params)
    np.testing.assert_array_equal(norm.running_var, model.layers[1].running_var)
    assert opt.step_count == model.optimizer.step_count


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_the_link_holds_for_every_pickle_protocol(protocol):
    model = _model()
    for objects in ([model, model.layers[3], model.optimizer], [model.layers[3], model.optimizer, model]):
        copies = _copy(objects, "pickle", protocol)
        clone = copies[0] if copies[0].__class__ is fnn.Sequential else copies[2]
        layer, opt = (copies[1], copies[2]) if clone is copies[0] else (copies[0], copies[1])
        assert layer is clone.layers[3] and opt is clone.optimizer


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("model_first", [True, False])
def test_an_unbuilt_models_layers_and_optimizer_copied_with_it_are_the_copys_own(how, model_first, rng):
    X, y = _data(rng)
    model = fnn.Sequential([fnn.ReLU(), fnn.Dense(4, 6), fnn.Dense(6, 2)], seed=0)  # (no input shape yet)
    model.compile("cross_entropy", fnn.optim.Adam(lr=0.01))
    if model_first:
        clone, dense, opt = _copy([model, model.layers[1], model.optimizer], how)
    else:
        dense, opt, clone = _copy([model.layers[1], model.optimizer, model], how)
    assert not clone.built and dense is clone.layers[1] and opt is clone.optimizer
    assert dense.owner is clone and opt.owner is clone
    clone.fit(X, y, epochs=1, batch_size=8, verbose=0)
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    np.testing.assert_array_equal(dense.weight, model.layers[1].weight)
    assert opt.step_count == model.optimizer.step_count > 0


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_layer_or_optimizer_copied_alone_or_without_its_model_stays_free(how, rng):
    """The rule of a copied part is unchanged: without its model in the same copy it belongs to no
    model (a new model takes the layer with its weights)."""
    X, _ = _data(rng)
    model = _model()
    for objects in ([model.layers[0]], [model.layers[0], _model(seed=1)], {"opt": model.optimizer}):
        copies = _copy(objects, how)
        part = copies["opt"] if isinstance(copies, dict) else copies[0]
        assert part.owner is None
    layers = _copy(model.layers, how)
    assert all(layer.owner is None for layer in layers)
    rebuilt = fnn.Sequential(layers, input_shape=(4,))
    np.testing.assert_array_equal(rebuilt.predict(X), model.predict(X))
    model.layers[0].weight[...] = 0  # (the copies hold their own weights)
    assert np.any(rebuilt.layers[0].weight != 0)


def test_a_layer_pickled_with_its_model_in_another_pickle_stays_free():
    """A part pickled inside its model is a bare object filled by the model; in the next pickle of
    the layer alone it is a whole free layer again (nothing is left armed by the model's pickle)."""
    model = _model()
    pickle.dumps(model)
    layer = pickle.loads(pickle.dumps(model.layers[0]))
    assert layer.owner is None and layer.weight.shape == (4, 6)
    np.testing.assert_array_equal(layer.weight, model.layers[0].weight)
    assert copy.deepcopy(model.optimizer).owner is None


class Views(fnn.Sequential):
    """A subclass holding views of its memory (a row of a weight, a slice of the flat buffer, the
    same view twice)."""

    def __init__(self, seed=7):
        super().__init__([fnn.Dense(4, 6), fnn.Tanh(), fnn.Dense(6, 2)], seed=seed, input_shape=(4,))
        self.row = self.layers[0].weight[0]
        self.tail = self.params[-5:]
        self.again = self.row


def test_equal_models_holding_views_pickle_to_equal_bytes():
    """The views were pickled with their id(): two pickles of one model differed."""
    model = Views()
    first = pickle.dumps(model)
    assert pickle.dumps(model) == first
    assert pickle.dumps(Views()) == first  # an equal model: the same bytes
    assert pickle.dumps(Views(seed=8)) != first  # (the bytes do depend on the weights)
    clone = pickle.loads(first)
    assert clone.again is clone.row and np.shares_memory(clone.row, clone.params)
    assert np.shares_memory(clone.tail, clone.params)


class Headed(fnn.Sequential):
    """A subclass keeping a reference to its last layer and to its optimizer."""

    def __init__(self):
        super().__init__([fnn.Dense(4, 3), fnn.Tanh(), fnn.Dense(3, 2)], seed=2, input_shape=(4,))
        self.compile("mse", fnn.optim.SGD(lr=0.1, momentum=0.9))
        self.head, self.opt = self.layers[-1], self.optimizer


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("model_first", [True, False])
def test_a_subclass_and_its_held_layer_copied_together_agree(how, model_first):
    net = Headed()
    if model_first:
        clone, head, opt = _copy([net, net.head, net.opt], how)
    else:
        head, opt, clone = _copy([net.head, net.opt, net], how)
    assert type(clone) is Headed and head is clone.head is clone.layers[-1] and opt is clone.opt is clone.optimizer


def test_a_pickle_that_failed_between_its_marks_leaves_no_part_pickling_bare():
    """A model's pickle registers its parts to pickle as bare objects between two marks; a pickle
    that stopped between them (an I/O error, Ctrl-C) drops its marks, and a part pickled later on
    its own is a whole free copy, not an empty object."""
    from fastnn._ownership import PartsPickling

    model = fnn.Sequential([fnn.Dense(3, 2), fnn.Dense(2, 1)], seed=0).compile("mse", "adam")
    layer = model.layers[0]
    begin = PartsPickling([layer], True)
    begin.__reduce__()  # what the pickler does on meeting the first mark ...
    del begin  # ... then the pickle fails and the pickler, holding the mark, is freed
    alone = pickle.loads(pickle.dumps(layer))
    np.testing.assert_array_equal(alone.weight, layer.weight)
    assert alone.owner is None
    again, again_layer = pickle.loads(pickle.dumps([model, layer]))
    assert again_layer is again.layers[0]


# -- nested layers, the loss and the metric objects ---------------------------------------------------
# (a layer inside a container, a Residual's projection made by the build, the loss and a compiled
# metric object were free copies beside the copied model unless deepcopied with the model first)


def _nested():
    model = fnn.Sequential(
        [
            fnn.Dense(4, 6),
            fnn.Residual([fnn.Dense(6, 6), fnn.BatchNorm1d(6), fnn.ReLU()]),
            fnn.Residual([fnn.Dense(6, 3), fnn.Dropout(0.25)]),  # (a projection 6 -> 3, made by the build)
            fnn.Dense(3, 2),
        ],
        seed=3,
        input_shape=(4,),
    )
    return model.compile("cross_entropy", fnn.optim.Adam(lr=0.01), metrics=["f1_score"])


_NESTED_PATHS = ("1.block.0", "1.block.1", "2.block.1", "2.projection", "1")


def _nested_parts(model):
    paths = fnn.freezing.layer_paths(model)
    return [*(paths[path] for path in _NESTED_PATHS), model.loss, model.metrics[0]]


def _with_model(model, parts, how, model_first, protocol=pickle.DEFAULT_PROTOCOL):
    """(the copy, its parts' copies) of ``[model, *parts]`` or ``[*parts, model]`` copied at once."""
    copies = _copy([model, *parts] if model_first else [*parts, model], how, protocol)
    return (copies[0], copies[1:]) if model_first else (copies[-1], copies[:-1])


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("model_first", [True, False])
def test_nested_layers_the_loss_and_metrics_copied_with_their_model_are_the_copys_own(how, model_first, rng):
    X, y = _data(rng)
    model = _nested()
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    clone, parts = _with_model(model, _nested_parts(model), how, model_first)
    for part, theirs, mine in zip(parts, _nested_parts(clone), _nested_parts(model)):
        assert part is theirs and part is not mine
    inner, norm, drop, projection, residual, loss, f1 = parts
    assert residual.block[0] is inner and residual.block[1] is norm and clone.layers[2].projection is projection
    assert inner.owner is clone and projection.owner is clone and loss.owner is clone
    assert np.shares_memory(inner.weight, clone.params) and not np.shares_memory(inner.weight, model.params)
    assert np.shares_memory(projection.weight, clone.params)
    np.testing.assert_array_equal(norm.running_mean, model.layers[1].block[1].running_mean)
    # the copy trains bit for bit as the original, through the very objects handed back
    before = model.params.copy()
    clone.fit(X, y, epochs=2, batch_size=8, verbose=0)
    np.testing.assert_array_equal(model.params, before)
    model.fit(X, y, epochs=2, batch_size=8, verbose=0)
    np.testing.assert_array_equal(clone.params, model.params)
    np.testing.assert_array_equal(norm.running_var, model.layers[1].block[1].running_var)
    assert drop.step[0] == model.layers[2].block[1].step[0] > 0
    np.testing.assert_array_equal(projection.weight, model.layers[2].projection.weight)
    # the metric object handed back is the copy's (a fresh one of the same configuration)
    assert clone.metrics == [f1] and f1.get_config() == model.metrics[0].get_config()
    assert clone.evaluate(X, y)["f1_score"] == model.evaluate(X, y)["f1_score"]


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_nested_parts_keep_the_link_for_every_pickle_protocol(protocol):
    model = _nested()
    for model_first in (True, False):
        clone, parts = _with_model(model, _nested_parts(model), "pickle", model_first, protocol)
        assert all(part is theirs for part, theirs in zip(parts, _nested_parts(clone)))


def _sequence_model():
    model = fnn.Sequential(
        [
            fnn.TimeDistributed(fnn.Dense(4, 8)),
            fnn.TransformerEncoderBlock(8, 2, 16, dropout=0.1),
            fnn.TimeDistributed(fnn.Dense(8, 1)),
        ],
        seed=5,
        input_shape=(5, 4),
    )
    return model.compile("mse", fnn.optim.SGD(lr=0.05, momentum=0.9))


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("model_first", [True, False])
def test_layers_deep_inside_timedistributed_and_transformer_blocks_are_the_copys_own(how, model_first, rng):
    """Containers hold their layers as an attribute (TimeDistributed's ``layer``), in a list of
    (name, layer) pairs (a Transformer block's ``parts``) and nested three deep."""
    X = rng.standard_normal((12, 5, 4)).astype(np.float32)
    y = rng.standard_normal((12, 5, 1)).astype(np.float32)
    model = _sequence_model()
    model.fit(X, y, epochs=1, batch_size=4, verbose=0)
    paths = [path for path in fnn.freezing.layer_paths(model) if "." in path]
    assert "1.feedforward.block.1" in paths and "0.layer" in paths
    originals = [fnn.freezing.layer_paths(model)[path] for path in paths]
    clone, parts = _with_model(model, originals, how, model_first)
    theirs = fnn.freezing.layer_paths(clone)
    assert all(part is theirs[path] and part.owner is clone for path, part in zip(paths, parts))
    clone.fit(X, y, epochs=2, batch_size=4, verbose=0)
    model.fit(X, y, epochs=2, batch_size=4, verbose=0)
    np.testing.assert_array_equal(clone.params, model.params)
    np.testing.assert_array_equal(parts[paths.index("0.layer")].weight, model.layers[0].layer.weight)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("model_first", [True, False])
def test_an_unbuilt_models_nested_layers_loss_and_metrics_are_the_copys_own(how, model_first, rng):
    X, y = _data(rng)
    model = fnn.Sequential([fnn.Residual([fnn.Dense(None, 4), fnn.Tanh()]), fnn.Dense(4, 2)], seed=0)
    model.compile("cross_entropy", "adam", metrics=["f1_score"])
    parts = [model.layers[0].block[0], model.loss, model.metrics[0]]
    clone, (inner, loss, f1) = _with_model(model, parts, how, model_first)
    assert not clone.built
    assert inner is clone.layers[0].block[0] and loss is clone.loss and f1 is clone.metrics[0]
    clone.fit(X, y, epochs=1, batch_size=8, verbose=0)
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    np.testing.assert_array_equal(inner.weight, model.layers[0].block[0].weight)
    assert np.shares_memory(inner.weight, clone.params)


class _CopyDuringFit(fnn.callbacks.Callback):
    """Copies the model with its loss (a weighted fit's SampleWeighted) in the middle of a fit."""

    def __init__(self, how, model_first):
        super().__init__()
        self.how, self.model_first, self.copies = how, model_first, None

    def on_epoch_end(self, epoch, logs=None):
        if self.copies is None:
            self.copies = _with_model(self.model, [self.model.loss], self.how, self.model_first)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("model_first", [True, False])
def test_a_weighted_fits_loss_copied_with_its_model_wraps_the_copys_loss(how, model_first, rng):
    """A copy holds the plain loss (as a snapshot does: the weights belong to that fit); the weighted
    loss copied with it is a free SampleWeighted around the copy's loss."""
    X, y = _data(rng)
    model = _model()
    callback = _CopyDuringFit(how, model_first)
    model.fit(
        X, y, epochs=2, batch_size=8, verbose=0, sample_weight=np.linspace(0.5, 1.5, len(y)), callbacks=[callback]
    )
    clone, (weighted,) = callback.copies
    assert type(clone.loss) is fnn.losses.CrossEntropy and clone.loss.owner is clone
    assert isinstance(weighted, fnn.losses.SampleWeighted) and weighted.base is clone.loss
    assert weighted.owner is None


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_nested_layers_the_loss_and_metrics_copied_without_their_model_stay_free(how):
    model = _nested()
    for objects in (_nested_parts(model), [*_nested_parts(model), _nested()]):
        copies = _copy(objects, how)
        inner, norm, _, projection, residual, loss, f1 = copies[:7]
        assert inner.owner is None and projection.owner is None and residual.owner is None and loss.owner is None
        assert residual.block[0] is inner and residual.block[1] is norm  # (one copy: its links kept)
        assert not np.shares_memory(inner.weight, model.params)
        np.testing.assert_array_equal(inner.weight, model.layers[1].block[0].weight)
        assert f1 is not model.metrics[0] and type(f1) is type(model.metrics[0])


@fnn.register_layer
class SlotDense(fnn.Dense):
    """A layer with a slot of its own: a copy cannot move another object's state into it."""

    __slots__ = ("note",)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("model_first", [True, False])
def test_a_nested_layer_that_cannot_be_adopted_is_a_free_copy_sharing_no_memory(how, model_first, rng):
    X, y = _data(rng)
    model = fnn.Sequential([fnn.Residual([SlotDense(4, 4), fnn.ReLU()]), fnn.Dense(4, 2)], seed=1, input_shape=(4,))
    model.compile("cross_entropy", "sgd")
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    clone, (inner, relu) = _with_model(model, list(model.layers[0].block), how, model_first)
    assert relu is clone.layers[0].block[1]
    if inner is not clone.layers[0].block[0]:  # (deepcopy with the model first keeps it: the memo)
        assert inner.owner is None and type(inner) is SlotDense
        assert not np.shares_memory(inner.weight, clone.params) and not np.shares_memory(inner.weight, model.params)
        np.testing.assert_array_equal(inner.weight, model.layers[0].block[0].weight)
        clone.fit(X, y, epochs=1, batch_size=8, verbose=0)  # (the free copy is left alone)
        np.testing.assert_array_equal(inner.weight, model.layers[0].block[0].weight)
    else:
        assert how == "deepcopy" and model_first
