"""Rules that had two copies, now one (review of session 23): freezing (``Layer.frozen`` and the
optimizer's trainable ranges), label checks (targets a model is given and a direct loss call,
``correct_count`` included), the parameter layout a built model's argument may not change (weight
decay too), the check of arrays written into a model's state, and a masked batch's lengths in fit.
Each test fails on the code before: there the two copies disagreed."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import fastnn as fnn
from fastnn import freezing, losses
from fastnn.model import checked_state_array


# -- freezing: Layer.frozen and the optimizer's ranges, one rule ------------------------------------
def _nested_model():
    """Containers at two depths: Residual (a BatchNorm and a Dense inside), TimeDistributed (whose
    parameters keep the inner layer's names), TransformerEncoderBlock (attention, norms, dense)."""
    layers = [
        fnn.TimeDistributed(fnn.Dense(3, 3)),
        fnn.TimeDistributed(fnn.Residual([fnn.Dense(3, 3), fnn.ReLU()])),
        fnn.TransformerEncoderBlock(3, 1, ff_dim=4),
        fnn.LastStep(),
        fnn.Residual([fnn.Dense(3, 3), fnn.BatchNorm1d(3)]),
        fnn.Dense(3, 2),
    ]
    return fnn.Sequential(layers, input_shape=(4, 3), dtype="float64", seed=0).compile("mse", "sgd")


def _leaf_spans(model):
    """(layer, [lo, hi)) of each layer's own parameter arrays, found by memory offset into
    model.params (independent of how containers name their children's parameters)."""
    base, size = model.params.__array_interface__["data"][0], model.params.itemsize
    spans = []
    for _, layer, _ in fnn.layers.base.layer_tree(model.layers):
        if layer.sublayers():  # containers (attention's own projections are checked through its leaf arrays)
            owned = {n: a for n, a in vars(layer).items() if n.endswith(("proj_weight", "proj_bias"))}
        else:
            owned = {spec.name: getattr(layer, spec.name) for spec in layer.parameter_specs()}
        for array in owned.values():
            lo = (array.__array_interface__["data"][0] - base) // size
            spans.append((layer, lo, lo + array.size))
    return spans


def test_frozen_layers_and_the_trainable_ranges_agree_at_every_depth():
    """Freeze a container, a child, or a container then unfreeze a child inside it (the child stays
    frozen: ``trainable`` False on a layer freezes the layers inside it, Layer.frozen's docstring):
    a parameter is outside the optimizer's ranges exactly when its layer is ``frozen``. Before, the
    ranges matched path prefixes, and TimeDistributed's inner layer ("0.layer") names its parameters
    "0.weight": freezing it froze nothing, while Layer.frozen said frozen."""
    paths = [
        "0",
        "0.layer",
        "1",
        "1.layer",
        "1.layer.block.0",
        "2",
        "2.attention",
        "2.attention.block.0",
        "2.norm1",
        "4",
        "4.block.1",
    ]
    model = _nested_model()
    assert set(paths) <= set(freezing.layer_paths(model))
    spans = _leaf_spans(model)
    assert sum(hi - lo for _, lo, hi in spans) == model.params.size  # every parameter is some leaf's
    nested = [(outer, inner) for outer, inner in itertools.permutations(paths, 2) if inner.startswith(outer + ".")]
    cases = [(p,) for p in paths] + nested + [("0.layer", "4.block.1"), ("2.norm1", "1.layer")]
    for frozen in cases:
        for unfreeze_child in (False, True):
            model.freeze(*frozen)
            child = [p for p in freezing.layer_paths(model) if p.startswith(frozen[0] + ".")][:1]
            if unfreeze_child:  # a child inside a frozen container set trainable again
                model.unfreeze(*child)
            ranges = freezing.trainable_ranges(model) or [(0, model.params.size)]
            inside = np.zeros(model.params.size, bool)
            for lo, hi in ranges:
                inside[lo:hi] = True
            for layer, lo, hi in spans:
                assert inside[lo:hi].all() == (not layer.frozen), (frozen, unfreeze_child, layer)
                assert inside[lo:hi].any() == (not layer.frozen), (frozen, unfreeze_child, layer)
            trainable, fixed = freezing.parameter_counts(model)
            assert fixed == sum(hi - lo for layer, lo, hi in spans if layer.frozen)
            model.unfreeze(*frozen)


def test_a_frozen_layer_inside_time_distributed_keeps_its_weights_in_fit():
    inner = fnn.Dense(3, 2)
    model = fnn.Sequential([fnn.TimeDistributed(inner), fnn.Dense(2, 2)], input_shape=(4, 3), seed=0)
    model.compile("mse", fnn.optim.SGD(lr=0.5))
    model.freeze("0.layer")
    assert inner.frozen and freezing.frozen_paths(model) == ["0.layer"]
    before, head = inner.weight.copy(), model[1].weight.copy()
    rng = np.random.default_rng(0)
    model.fit(rng.standard_normal((8, 4, 3)), rng.standard_normal((8, 4, 2)), epochs=1, verbose=0)
    np.testing.assert_array_equal(inner.weight, before)  # before: updated (its range stayed trainable)
    assert not np.array_equal(model[1].weight, head)
    assert "Non-trainable params: 8" in model.summary(print_fn=None)


def test_a_container_that_renames_its_childrens_parameters_must_say_so():
    class Wrapper(fnn.Layer):
        lengths_policy = "keep"

        def __init__(self):
            super().__init__()
            self.inner = fnn.Dense(2, 2)

        def sublayers(self):
            return [("inner", self.inner)]

        def build(self, input_shape, dtype):
            super().build(input_shape, dtype)
            self.output_shape = self.inner.build(input_shape, dtype)
            return self.output_shape

        def parameter_specs(self):  # "w.weight": not "inner." + the child's name
            return [
                fnn.layers.base.ParamSpec("w." + s.name, s.shape, s.decay, s.init) for s in self.inner.parameter_specs()
            ]

    layer = Wrapper()
    layer.build((2,), "float32")
    with pytest.raises(ValueError, match=r"override child_parameter_prefix"):
        fnn.layers.base.parameter_owners(layer)


# -- labels: the targets a model gets and those of a direct loss call -------------------------------
def test_weighted_targets_with_a_non_integer_label_are_refused_as_model_targets_are():
    """A SampleWeighted cross-entropy's forward_backward took a label 1.5 (the kernel read it as 1);
    model targets with 1.5 were refused. Both refuse it now, with one message."""
    out, grad = np.zeros((2, 3)), np.empty((2, 3))
    weighted = losses.SampleWeighted(losses.CrossEntropy())
    with pytest.raises(ValueError, match="target must hold integer class labels for cross_entropy, found 1.5"):
        weighted.forward_backward(out, np.array([[1.5, 1.0], [0.0, 1.0]]), grad)
    with pytest.raises(ValueError, match="y must hold integer class labels for cross_entropy, found 1.5"):
        losses.CrossEntropy().check_targets(np.array([1.5, 0.0]), 2, 3, np.float64)
    with pytest.raises(ValueError, match=r"target contains NaN or infinity"):
        weighted.forward_backward(out, np.array([[np.nan, 1.0], [0.0, 1.0]]), grad)
    with pytest.raises(ValueError, match=r"target has label 3, outside \[0, 3\): the output has 3 classes"):
        weighted.correct_count(out, np.array([[3.0, 1.0], [0.0, 1.0]]))


@pytest.mark.parametrize(
    ("loss", "target", "error", "message"),
    [
        (losses.CrossEntropy(), np.array([0]), ValueError, r"target has shape \(1,\), but this loss needs .* \(2,\)"),
        (losses.CrossEntropy(), np.array([0, 7]), ValueError, r"target has label 7, outside \[0, 3\)"),
        (losses.CrossEntropy(), np.array([0.0, 1.0]), TypeError, "integer class labels, got dtype float64"),
        (losses.BinaryCrossEntropy(), np.zeros((1, 3)), ValueError, r"target has shape \(1, 3\)"),
    ],
)
def test_correct_count_called_directly_checks_its_arrays(loss, target, error, message):
    """It indexed them unchecked: a short target read past its end, a label 7 counted as a miss."""
    with pytest.raises(error, match=message):
        loss.correct_count(np.zeros((2, 3)), target)


def test_the_unchecked_count_fit_uses_equals_the_checked_one():
    rng = np.random.default_rng(0)
    out, labels = rng.standard_normal((50, 4)), rng.integers(0, 4, 50)
    expected = int(np.sum(np.argmax(out, axis=1) == labels))
    assert losses.CrossEntropy().correct_count(out, labels) == expected
    assert losses.count_correct(losses.CrossEntropy(), out, labels) == expected
    weighted = losses.SampleWeighted(losses.CrossEntropy())
    targets = losses.weighted_targets(labels, np.ones(50))
    assert weighted.correct_count(out, targets) == losses.count_correct(weighted, out, targets) == expected
    assert losses.count_correct(losses.MSE(), out, out) is None
    model = fnn.Sequential([fnn.Dense(4, 4)], seed=0).compile("cross_entropy", "sgd")
    assert model.correct_count(out, labels) == model.correct_count(out, labels, checked=False) == expected
    with pytest.raises(ValueError, match=r"target has label 9, outside \[0, 4\)"):
        model.correct_count(out, np.full(50, 9))


# -- a built model's argument may not change its parameter layout, weight decay included ------------
def test_an_argument_that_changes_which_parameters_get_weight_decay_is_refused_when_set():
    """Embedding.sparse = True keeps the weight's name and shape but takes it out of weight decay
    (the flat buffer keeps decayed parameters first): it was stored, and the next fit failed with
    "changes its parameters (their shapes or names)", leaving the model unusable until undone."""
    model = fnn.Sequential([fnn.Embedding(10, 4), fnn.LastStep(), fnn.Dense(4, 2)], input_shape=(3,), seed=0)
    model.compile("cross_entropy", "adam")
    X, y = np.random.default_rng(0).integers(0, 10, (8, 3)), np.zeros(8, int)
    with pytest.raises(ValueError, match=r"Embedding.sparse = True would change .*weight decay of 'weight': on -> off"):
        model[0].sparse = True
    assert model[0].sparse is False
    model.fit(X, y, epochs=1, verbose=0)  # the model still trains


# -- arrays written into a model's state: one check, one message -------------------------------------
def test_an_array_set_before_the_model_is_built_is_checked_as_one_set_after():
    """A complex array set on a free Dense was copied in at build time (its imaginary part dropped);
    set on a built model's layer it was refused. Both are refused now, with the same message."""
    free = fnn.Dense(3, 2)
    free.weight = np.ones((3, 2), complex)
    with pytest.raises(TypeError, match=r"Dense.weight \(set before the model was built\) must be a real numeric"):
        fnn.Sequential([free], input_shape=(3,))
    built = fnn.Sequential([fnn.Dense(3, 2)], input_shape=(3,), seed=0)
    with pytest.raises(TypeError, match=r"Dense.weight must be a real numeric array, got dtype=complex128"):
        built[0].weight = np.ones((3, 2), complex)


def test_lists_numbers_and_buffers_set_on_a_free_layer_are_kept_or_refused_never_dropped():
    """Only arrays set on a free layer reached its model: ``dense.bias = [0.5, 0.25]``, a number,
    and any buffer (``bn.running_mean = ...``) were silently replaced by the initial values."""
    dense, norm = fnn.Dense(3, 2), fnn.BatchNorm1d(2)
    dense.bias = [0.5, 0.25]
    norm.running_mean = np.ones(2)
    norm.running_var = (2.0, 3.0)
    model = fnn.Sequential([dense, norm], input_shape=(3,), dtype="float64")
    np.testing.assert_array_equal(model[0].bias, [0.5, 0.25])
    np.testing.assert_array_equal(model[1].running_mean, [1.0, 1.0])
    np.testing.assert_array_equal(model[1].running_var, [2.0, 3.0])
    scalar = fnn.Dense(3, 2)
    scalar.bias = 1
    with pytest.raises(ValueError, match=r"Dense.bias \(set before the model was built\) has shape \(2,\)"):
        fnn.Sequential([scalar], input_shape=(3,))
    one = fnn.Dense(3, 1)
    one.bias = 0.5  # one value for a one-value parameter
    np.testing.assert_array_equal(fnn.Sequential([one], input_shape=(3,), dtype="float64")[0].bias, [0.5])


def test_shape_mismatches_read_alike_wherever_an_array_is_written():
    transposed = "has shape \\(3, 2\\), got an array of shape \\(2, 3\\); that is its transpose"
    free = fnn.Dense(3, 2)
    free.weight = np.ones((2, 3))
    with pytest.raises(ValueError, match=r"Dense.weight \(set before the model was built\) " + transposed):
        fnn.Sequential([free], input_shape=(3,))
    model = fnn.Sequential([fnn.Dense(3, 2)], input_shape=(3,), seed=0)
    with pytest.raises(ValueError, match="Dense.weight " + transposed):
        model[0].weight = np.ones((2, 3))
    arrays = {**model.state_arrays(), "0.weight": np.ones((2, 3))}
    with pytest.raises(ValueError, match="arrays: 0.weight " + transposed):
        model.load_state_arrays(arrays)
    with pytest.raises(TypeError, match=r"num holds int64, got float64, which does not convert to it"):
        checked_state_array("num", np.array([1.5]), np.zeros(1, np.int64))
    np.testing.assert_array_equal(checked_state_array("b", 2.0, np.zeros(1)), [2.0])  # one value, one-value target


# -- a masked batch's lengths: computed once, counted directly -------------------------------------
def test_a_masked_fit_computes_each_batchs_lengths_once(monkeypatch):
    calls = []
    original = fnn.Masking.sequence_lengths

    def counted(self, X):
        calls.append(len(X))
        return original(self, X)

    monkeypatch.setattr(fnn.Masking, "sequence_lengths", counted)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((8, 4, 2))
    X[::2, 2:] = 0.0  # every other sample: two valid steps
    y = rng.integers(0, 3, (8, 4))
    model = fnn.Sequential([fnn.Masking(0.0), fnn.Dense(2, 3)], input_shape=(4, 2), dtype="float64", seed=0)
    model.compile("cross_entropy", fnn.optim.SGD(lr=0.1), metrics=["accuracy"])
    calls.clear()
    history = model.fit(X, y, epochs=1, batch_size=2, accumulate=2, shuffle=False, verbose=0)
    # once over the data when fit checks the labels (those at padded steps are not checked), then
    # once per batch (before: twice per batch, the group's weight, then the counts)
    assert calls == [8, 2, 2, 2, 2]
    assert 0.0 <= history.history["accuracy"][0] <= 1.0


def test_valid_count_counts_the_rows_valid_rows_marks():
    model = fnn.Sequential([fnn.Masking(0.0), fnn.TimeDistributed(fnn.Dense(2, 3))], input_shape=(5, 2), seed=0)
    for lengths in (np.array([0, 5, 2, 1]), np.array([5]), np.array([3, 3, 4, 0, 1, 2])):
        assert model.valid_count(lengths) == int(np.count_nonzero(model.valid_rows(lengths)))
