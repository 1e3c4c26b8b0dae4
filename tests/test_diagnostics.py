"""fastnn.diagnostics: norms, update ratios, activation statistics, NaN detection, overfitting
one batch, gradient checks of user layers and the learning-rate range test."""

import math

import numpy as np
import pytest

import fastnn as fnn
from fastnn import diagnostics as D
from fastnn.layers import Layer


def small_model(optimizer=None, *, dtype="float64"):
    model = fnn.Sequential(
        [
            fnn.Dense(2, 16, activation="relu"),
            fnn.Dense(16, 16, activation="tanh"),
            fnn.Dense(16, 8),
            fnn.Sigmoid(),
            fnn.Dense(8, 2),
        ],
        seed=0,
        dtype=dtype,
    )
    model.compile("cross_entropy", optimizer or fnn.optim.SGD(lr=0.1))
    return model


@pytest.fixture
def moons():
    return fnn.data.make_moons(64, noise=0.1, seed=0)


def test_weight_norms_match_numpy(moons):
    model = small_model()
    norms = D.weight_norms(model)
    assert norms["0.weight"] == pytest.approx(np.linalg.norm(model.layers[0].weight))
    assert norms["0.bias"] == 0.0 and set(norms) == {name for name, _, _ in model.named_parameters()}


def test_update_ratios_equal_lr_times_gradient_for_sgd_and_undo_the_step(moons):
    X, y = moons
    model = small_model(fnn.optim.SGD(lr=0.05))
    before = model.params.copy()
    D.gradient_norms(model, X, y)
    grads = {name: g.copy() for name, _, g in model.named_parameters()}
    ratios = D.update_ratios(model, X, y)
    np.testing.assert_array_equal(model.params, before)
    assert model.optimizer.step_count == 0
    for name, value, _ in model.named_parameters():
        if name.endswith("bias"):
            assert math.isnan(ratios[name])  # zero-initialised: ratio undefined
        else:
            expected = 0.05 * np.linalg.norm(grads[name]) / np.linalg.norm(value)
            assert ratios[name] == pytest.approx(expected, rel=1e-9)


def test_update_ratios_restore_adam_state_and_dropout_counter(moons):
    X, y = moons
    model = fnn.Sequential(
        [fnn.Dense(2, 8, activation="relu"), fnn.Dropout(0.5), fnn.BatchNorm1d(8), fnn.Dense(8, 2)], seed=0
    )
    model.compile("cross_entropy", fnn.optim.Adam(lr=1e-2))
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)
    state = {k: np.copy(v) for k, v in model.state_arrays().items()}
    opt_state = model.optimizer.state_dict()
    D.update_ratios(model, X, y)
    for k, v in model.state_arrays().items():
        np.testing.assert_array_equal(v, state[k])
    after = model.optimizer.state_dict()
    assert after["step_count"] == opt_state["step_count"]
    np.testing.assert_array_equal(after["exp_avg"], opt_state["exp_avg"])


def test_activation_stats_dead_relu_and_saturation(moons):
    X, _ = moons
    model = small_model()
    dense0 = model.layers[0]
    dense0.weight[:, :4] = 0.0
    dense0.bias[:4] = -1.0  # four units can never fire
    dense0.bias[4:] = 0.0
    model.layers[2].weight[...] *= 1000.0  # the Sigmoid layer after it saturates
    stats = D.activation_stats(model, X)
    assert [s.activation for s in stats] == ["relu", "tanh", "identity", "sigmoid", "identity"]
    assert stats[0].dead_fraction == pytest.approx(4 / 16)
    assert stats[1].dead_fraction is None and stats[1].saturated_fraction is not None
    assert stats[3].saturated_fraction > 0.8
    outs = D.activations(model, X)
    assert stats[1].mean == pytest.approx(outs[1].mean()) and stats[1].std == pytest.approx(outs[1].std())
    assert stats[2].dead_fraction is None and stats[2].saturated_fraction is None


def test_output_stats_counts_units_dead_for_every_sample_only():
    out = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert D.output_stats(out, "relu").dead_fraction == pytest.approx(2 / 3)
    tanh = np.array([[0.995, 0.5], [-0.999, 0.0]])
    assert D.output_stats(tanh, "tanh").saturated_fraction == pytest.approx(0.5)
    sig = np.array([[0.005, 0.5, 0.995, 0.2]])
    assert D.output_stats(sig, "sigmoid").saturated_fraction == pytest.approx(0.5)


def test_find_nonfinite_names_the_first_bad_output(moons):
    X, y = moons
    model = small_model()
    assert D.find_nonfinite(model, X, y) is None
    model.layers[2].weight[0, 0] = np.inf
    report = D.find_nonfinite(model, X, y)
    assert (report.index, report.where) == (2, "output")
    assert "Dense(16, 8)" in report.layer and "layer 2" in str(report)


class BrokenBackward(Layer):
    """Identity whose backward returns NaN: a user's layer with a bug."""

    def forward(self, x, training):
        self.last_output = x
        return x

    def backward(self, grad_y, need_grad_x=True):
        return np.full_like(grad_y, np.nan)


def test_find_nonfinite_names_the_layer_whose_gradient_breaks(moons):
    X, y = moons
    model = fnn.Sequential([fnn.Dense(2, 8, activation="relu"), BrokenBackward(), fnn.Dense(8, 2)])
    model.compile("cross_entropy", "sgd")
    report = D.find_nonfinite(model, X, y)
    assert (report.index, report.where) == (1, "gradient")
    assert "input gradient" in report.detail


def test_find_nonfinite_runs_models_of_token_sequences_with_their_padding():
    """Integer input (no input gradient) and lengths from the padding reach every layer: a NaN
    written into a padded step is not a finding, one in a valid step is."""
    X = np.array([[1, 2, 0], [3, 0, 0]])
    model = fnn.Sequential(
        [
            fnn.Embedding(5, 2, padding_idx=0, mask_padding=True),
            fnn.LSTM(2, 3, return_sequences=False),
            fnn.Dense(3, 2),
        ],
        input_shape=(3,),
    )
    model.compile("cross_entropy", "sgd")
    before = model.params.copy()
    assert D.find_nonfinite(model, X, [0, 1]) is None
    np.testing.assert_array_equal(model.params, before)
    model.layers[0].weight[3, 0] = np.nan
    report = D.find_nonfinite(model, X, [0, 1])
    assert (report.index, report.where) == (0, "output")


def test_overfit_one_batch_succeeds_for_a_healthy_model_and_restores_it(moons):
    X, y = moons
    model = small_model()
    before = model.params.copy()
    result = D.overfit_one_batch(model, X[:16], y[:16], steps=300, lr=3e-2)
    assert result.success and bool(result) and result.accuracy == 1.0
    assert len(result.losses) == 300 and result.final_loss <= result.tolerance
    np.testing.assert_array_equal(model.params, before)
    assert isinstance(model.optimizer, fnn.optim.SGD)


def test_overfit_one_batch_fails_when_the_network_is_broken():
    model = fnn.Sequential([fnn.Dense(2, 8, activation="relu"), fnn.Dense(8, 2)], seed=0)
    model.compile("cross_entropy", "sgd")
    model.layers[0].weight[...] = 0.0
    model.layers[0].bias[...] = -10.0  # every ReLU dead: no gradient reaches the first layer
    y_random = np.arange(16) % 2
    X16 = np.random.default_rng(0).standard_normal((16, 2))
    result = D.overfit_one_batch(model, X16, y_random, steps=100)
    assert not result.success and result.final_loss > result.tolerance


def test_overfit_one_batch_fails_when_the_first_step_diverges():
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    model = fnn.Sequential([fnn.Dense(2, 8, activation="relu"), fnn.Dense(8, 2)], seed=0)
    model.compile("cross_entropy", "adam")
    model.layers[1].weight[...] = 3e38  # float32 logits overflow: the loss is not finite from step 1
    result = D.overfit_one_batch(model, X, [0, 1, 1, 0], steps=5)
    assert result.losses == [math.inf] and result.final_loss == math.inf
    assert not result.success and not bool(result)


def test_overfit_one_batch_checks_tolerance_before_training(moons, monkeypatch):
    X, y = moons
    model = small_model()

    def no_training(*args, **kwargs):
        raise AssertionError("trained before the arguments were checked")

    monkeypatch.setattr(model, "train_step", no_training)
    with pytest.raises(ValueError, match="tolerance"):
        D.overfit_one_batch(model, X[:8], y[:8], steps=200, tolerance=-1.0)


class Square(Layer):
    """y = x * x * scale with one parameter per feature; ``bug=True`` forgets the factor 2."""

    def __init__(self, bug=False):
        super().__init__()
        self.bug = bug

    def parameter_specs(self):
        from fastnn.layers import ParamSpec

        def init(view, seed, stream):
            view[...] = np.linspace(0.5, 1.5, view.size)

        return [ParamSpec("scale", (self.in_features,), False, init)]

    def bind(self, params, grads):
        self.scale, self.grad_scale = params["scale"], grads["scale"]

    def forward(self, x, training):
        self._x = x
        self.last_output = x * x * self.scale
        return self.last_output

    def backward(self, grad_y, need_grad_x=True):
        self.grad_scale[...] = (grad_y * self._x * self._x).sum(axis=0)
        return grad_y * self._x * self.scale * (1.0 if self.bug else 2.0)


def test_gradient_check_passes_correct_layers_and_catches_a_bug(rng):
    x = rng.standard_normal((5, 3))
    assert D.gradient_check(Square(), x).passed
    bad = D.gradient_check(Square(bug=True), x)
    assert not bad.passed and bad.input_error > 0.1 and bad.param_errors["scale"] < 1e-6
    for layer in (fnn.Dense(3, 4, activation="tanh"), fnn.Dense(3, 2, activation="gelu"), fnn.LayerNorm(3)):
        check = D.gradient_check(layer, x)
        assert check.passed, check
        assert set(check.param_errors) == {"weight", "bias"}
    assert D.gradient_check(fnn.BatchNorm1d(3), x, training=True).passed


def test_gradient_check_leaves_the_users_layer_alone(rng):
    model = small_model()
    layer = model.layers[1]
    before = layer.weight.copy()
    D.gradient_check(layer, rng.standard_normal((4, 16)))
    np.testing.assert_array_equal(layer.weight, before)
    assert layer.weight.dtype == np.float64 and np.shares_memory(layer.weight, model.params)


def test_lr_range_test_sweeps_exponentially_restores_and_suggests(moons):
    X, y = moons
    model = small_model(fnn.optim.SGD(lr=0.123, momentum=0.9))
    before = model.params.copy()
    result = D.lr_range_test(model, X, y, start=1e-4, end=1e3, steps=50, batch_size=16)
    np.testing.assert_array_equal(model.params, before)
    assert model.optimizer.lr == 0.123 and model.optimizer.step_count == 0
    ratios = np.diff(np.log(result.lrs))
    np.testing.assert_allclose(ratios, ratios[0])
    assert result.diverged and len(result.lrs) < 50  # 1e3 blows the loss up
    assert 1e-4 < result.suggested_lr < 1e2 and result.suggested_lr in [lr / 10 for lr in result.lrs]
    assert len(result.losses) == len(result.raw_losses) == len(result.lrs)


def test_diagnostics_validate_their_arguments(moons):
    X, y = moons
    model = fnn.Sequential([fnn.Dense(2, 2)])
    with pytest.raises(RuntimeError, match="compile"):
        D.find_nonfinite(model, X, y)
    model.compile("cross_entropy", "sgd")
    with pytest.raises(ValueError, match="end"):
        D.lr_range_test(model, X, y, start=1.0, end=0.1)
    with pytest.raises(ValueError, match=r"diverge_factor must be in \(1.0, inf\]"):
        D.lr_range_test(model, X, y, diverge_factor=0.5)  # would stop after the first step
    with pytest.raises(ValueError, match="x must be an array"):
        D.gradient_check(fnn.Dense(2, 2), np.ones(3))


def test_layer_gradient_norms_count_convolution_kernels_and_tables():
    """Every weight-holding layer gets its norm: conv kernels (4-D) and embedding tables, not only
    Dense matrices; each equals the norm of that layer's weight gradients computed here."""
    rng = np.random.default_rng(0)
    model = fnn.Sequential(
        [
            fnn.Conv2d(1, 3, 3, padding="same", activation="relu"),
            fnn.MaxPool2d(2),
            fnn.Conv2d(3, 2, 3, padding="same"),
            fnn.Flatten(),
            fnn.Dense(8, 3),
        ],
        input_shape=(1, 4, 4),
        seed=0,
        dtype="float64",
    ).compile("cross_entropy", "adam")
    X, y = rng.standard_normal((5, 1, 4, 4)), np.arange(5) % 3
    norms = D.layer_gradient_norms(model, X, y)
    _, grads = model.loss_and_grads(X, y)
    want = [np.linalg.norm(grads[f"{i}.weight"]) for i in (0, 2, 4)]
    np.testing.assert_allclose(norms, want, rtol=1e-12)
    embed = fnn.Sequential([fnn.Embedding(7, 3), fnn.Flatten(), fnn.Dense(6, 2)], input_shape=(2,), seed=0)
    assert (
        len(D.layer_gradient_norms(embed.compile("cross_entropy", "sgd"), rng.integers(0, 7, (4, 2)), [0, 1, 0, 1]))
        == 2
    )


def test_dead_units_of_a_convolution_are_its_channels():
    """A unit of (batch, channels, *spatial) outputs is a channel: dead when zero at every sample and
    position (it counted (channel, y, x) positions, so a live channel's zero border read as dead units)."""
    model = fnn.Sequential(
        [
            fnn.Conv2d(1, 4, 3, padding=1),
            fnn.ReLU(),
            fnn.MaxPool2d(2),
            fnn.Flatten(),
            fnn.Dense(16, 3, activation="relu"),
        ],
        input_shape=(1, 4, 4),
        seed=0,
    )
    conv, dense = model.layers[0], model.layers[4]
    conv.weight[...] = 0.0
    conv.bias[...] = [-1.0, -1.0, 0.5, 0.0]  # channels 0, 1 and 3 are zero everywhere, channel 2 constant
    conv.weight[3, 0, 1, 1] = 1.0  # ... but channel 3 passes the positive pixels
    dense.weight[...] = 0.0
    dense.bias[...] = [1.0, 0.0, -1.0]
    X = np.random.default_rng(0).standard_normal((5, 1, 4, 4))
    relu, pool, out = (D.activation_stats(model, X)[i] for i in (1, 2, 4))
    assert relu.dead_fraction == pytest.approx(2 / 4) and pool.dead_fraction is None
    assert out.dead_fraction == pytest.approx(2 / 3)
    series = D.output_stats(np.zeros((2, 3, 4)) + [1.0, 0.0, 0.0, 0.0], "relu", unit_axis=-1)
    assert series.dead_fraction == pytest.approx(3 / 4)  # (batch, time, features): the features
