"""Frozen layers: no update, no weight decay, optimizer state kept, gradients still flow through;
fused step, save/load, summary; checked against PyTorch with requires_grad=False."""

import copy
import warnings

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _config, _fused


def _data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    return X, (X[:, 0] - X[:, 3] > 0).astype(np.int64) + (X[:, 1] > 0.5)


def _model(optimizer=None, dtype="float64"):
    model = fnn.Sequential(
        [
            fnn.Dense(4, 6, activation="tanh"),
            fnn.Dense(6, 5, activation="tanh"),
            fnn.Residual([fnn.Dense(5, 5, activation="tanh"), fnn.Dense(5, 5)]),
            fnn.Dense(5, 3),
        ],
        dtype=dtype,
        seed=7,
    )
    optimizer = optimizer or fnn.optim.AdamW(lr=0.05, weight_decay=0.1, clip_norm=0.5)
    return model.compile("cross_entropy", optimizer, decay_bias_and_norm=True)


def _slices(model, prefix):
    return [
        (lo, lo + int(np.prod(shape)))
        for i, name, lo, shape in model.parameter_layout
        if f"{i}.{name}".startswith(prefix)
    ]


def test_frozen_parameters_and_their_optimizer_state_do_not_change():
    X, y = _data()
    model = _model()
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)  # moments of every parameter are non-zero now
    model.freeze(1, "2.block.1")
    before = model.params.copy()
    state = {k: v.copy() for k, v in model.optimizer.state_dict().items() if isinstance(v, np.ndarray)}
    steps = model.optimizer.step_count
    model.fit(X, y, epochs=2, batch_size=8, verbose=0)
    frozen = _slices(model, "1.") + _slices(model, "2.block.1.")
    mask = np.zeros(model.params.size, bool)
    for lo, hi in frozen:
        mask[lo:hi] = True
    np.testing.assert_array_equal(model.params[mask], before[mask])
    assert np.all(model.params[~mask] != before[~mask])
    for key, value in model.optimizer.state_dict().items():
        if key in state:
            np.testing.assert_array_equal(value[mask], state[key][mask])
            assert np.all(value[~mask] != state[key][~mask])
    assert model.optimizer.step_count == steps + 6  # one global count of updates, as in Keras
    assert np.all(model.grads[mask] != 0)  # gradients are still computed, and flow through


@pytest.mark.parametrize("frozen", [[0], [1], [0, 3]])
def test_freezing_equals_torch_with_requires_grad_false(frozen):
    torch = pytest.importorskip("torch")
    X, y = _data()
    model = fnn.Sequential(
        [
            fnn.Dense(4, 6, activation="tanh"),
            fnn.Dense(6, 5, activation="tanh"),
            fnn.Dense(5, 5, activation="tanh"),
            fnn.Dense(5, 3),
        ],
        dtype="float64",
        seed=7,
    )
    model.compile("cross_entropy", fnn.optim.Adam(lr=0.05, weight_decay=0.1, clip_norm=0.5), decay_bias_and_norm=True)
    model.freeze(*frozen)
    linears = []
    for layer in model.layers:
        linear = torch.nn.Linear(*layer.weight.shape, dtype=torch.float64)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(layer.weight.T.copy()))
            linear.bias.copy_(torch.from_numpy(layer.bias.copy()))
        linears.append(linear)
    net = torch.nn.Sequential(*[m for lin in linears[:-1] for m in (lin, torch.nn.Tanh())], linears[-1])
    for i in frozen:
        linears[i].requires_grad_(False)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=0.05, weight_decay=0.1)
    for _ in range(3):
        for lo in range(0, len(X), 8):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(
                net(torch.from_numpy(X[lo : lo + 8])), torch.from_numpy(y[lo : lo + 8])
            )
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in net.parameters() if p.requires_grad], 0.5)
            opt.step()
    model.fit(X, y, epochs=3, batch_size=8, shuffle=False, verbose=0)
    for layer, linear in zip(model.layers, linears):
        np.testing.assert_allclose(layer.weight, linear.weight.detach().numpy().T, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(layer.bias, linear.bias.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_the_fused_step_honours_frozen_layers(monkeypatch, tmp_path):
    monkeypatch.setattr(_config, "FUSE", "always")
    monkeypatch.setenv("FASTNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_fused, "_LOADED", {})
    X, y = _data()

    def small():
        model = fnn.Sequential([fnn.Dense(4, 6, activation="tanh"), fnn.Dense(6, 3)], dtype="float32", seed=7)
        return model.compile("cross_entropy", fnn.optim.AdamW(lr=0.05, weight_decay=0.1))

    fused = small().freeze(0)
    fused.fit(X, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    assert any(fused.step_plan(key).run.fused for key in fused.plan_keys() if isinstance(key, int))
    monkeypatch.setattr(_config, "FUSE", "never")
    unfused = small().freeze(0)
    unfused.fit(X, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    np.testing.assert_array_equal(fused.params, unfused.params)
    np.testing.assert_array_equal(fused.layers[0].weight, small().layers[0].weight)
    assert np.all(fused.layers[1].weight != small().layers[1].weight)


def test_the_step_kernel_reports_the_clipping_norm_of_the_trainable_gradients(monkeypatch):
    """last_grad_norm after a step inside the compiled call is the norm clipping used (of the
    trainable gradients), as Optimizer.step's on the ranges."""
    X, y = _data()
    inside = _model().freeze(1)
    inside.fit(X, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    assert inside.step_plan(8).token is not None  # the step ran inside the plan's call
    monkeypatch.setattr(fnn.optim.Optimizer, "fused_step_token", lambda self: None)
    outside = _model().freeze(1)
    outside.fit(X, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    assert inside.optimizer.last_grad_norm == pytest.approx(outside.optimizer.last_grad_norm, rel=1e-12)
    np.testing.assert_allclose(inside.params, outside.params, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("fuse", ["never", "always"])
def test_a_model_frozen_whole_changes_nothing(monkeypatch, fuse):
    """No trainable range at all (an empty list, not None): the step kernels update nothing (they
    once read the empty list as 'the whole buffer' and updated every parameter)."""
    monkeypatch.setattr(_config, "FUSE", fuse)
    X, y = _data()
    model = fnn.Sequential([fnn.Dense(4, 6, activation="tanh"), fnn.Dense(6, 3)], seed=7)
    model.compile("cross_entropy", fnn.optim.Adam(lr=0.05)).freeze()
    params = model.params.copy()
    for _ in range(3):
        model.train_step(X[:8], y[:8])
    np.testing.assert_array_equal(model.params, params)
    assert model.optimizer.step_count == 3
    assert not model.optimizer.state_dict()["exp_avg"].any()


def test_unfreeze_trains_again_and_trainable_survives_save_load_and_copies(tmp_path):
    X, y = _data()
    model = _model().freeze("2")
    assert model.layers[2].trainable is False and model.layers[2].block[0].trainable  # frozen through its parent
    model.save(tmp_path / "m.safetensors")
    for other in (fnn.load(tmp_path / "m.safetensors"), copy.deepcopy(model)):
        assert [layer.trainable for layer in other.layers] == [True, True, False, True]
        assert other.optimizer.trainable == model.optimizer.trainable
    weight = model.layers[2].block[0].weight.copy()
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    np.testing.assert_array_equal(model.layers[2].block[0].weight, weight)
    model.unfreeze()
    assert model.optimizer.trainable is None
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    assert np.all(model.layers[2].block[0].weight != weight)


def test_restore_puts_back_the_snapshot_s_frozen_layers_nested_ones_too():
    """restore(record) continues exactly as from_snapshot(record): the same layers frozen."""
    X, y = _data()
    model = _model().freeze("2.block.0", 0)
    record = model.snapshot()
    model.unfreeze()
    model.layers[1].trainable = False
    model.restore(record)
    clone = fnn.Sequential.from_snapshot(record)
    for m in (model, clone):
        assert [layer.trainable for layer in m.layers] == [False, True, True, True]
        assert m.layers[2].block[0].trainable is False
    assert model.optimizer.trainable == clone.optimizer.trainable is not None
    model.fit(X, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    clone.fit(X, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    np.testing.assert_array_equal(model.params, clone.params)


def test_a_saved_model_keeps_its_nested_frozen_layers_and_eval_mode(tmp_path):
    """fnn.load gives back what pickle does: the frozen paths (nested ones too) and eval mode."""
    X, y = _data()
    model = _model().freeze("2.block.0")
    model.eval()
    model.save(tmp_path / "m.safetensors")
    loaded = fnn.load(tmp_path / "m.safetensors")
    assert loaded.layers[2].block[0].trainable is False and loaded.training is False
    loaded.train()
    weight = loaded.layers[2].block[0].weight.copy()
    loaded.fit(X, y, epochs=1, batch_size=8, verbose=0)
    np.testing.assert_array_equal(loaded.layers[2].block[0].weight, weight)


def test_summary_counts_trainable_and_frozen_parameters():
    model = _model()
    model.layers[0].trainable = False
    text = model.summary(print_fn=None)
    assert "Trainable params: 113" in text and "Non-trainable params: 30" in text
    model.unfreeze(model.layers[0])
    assert "Non-trainable params: 0" in model.summary(print_fn=None)


def _complement(spans, size):
    """The sorted, merged ``[lo, hi)`` ranges of ``[0, size)`` outside ``spans``."""
    free, at = [], 0
    for lo, hi in sorted(spans):
        if lo > at:
            free.append((at, lo))
        at = max(at, hi)
    return free + ([(at, size)] if at < size else [])


def test_the_optimizer_gets_the_merged_ranges_of_exactly_the_frozen_layer():
    """Freezing layer 1 of 12 freezes "1." only (not "10.", "11."), and the trainable ranges the
    optimizer steps on are merged where they touch."""
    model = fnn.Sequential([fnn.Dense(2, 2) for _ in range(12)], dtype="float64", seed=0)
    model.compile("mse", fnn.optim.SGD(lr=0.1))
    model.freeze(1)
    expected = _complement(_slices(model, "1."), model.params.size)
    assert len(expected) == 3  # layer 1's weight and bias cut the buffer in three
    assert model.optimizer.trainable == expected
    assert model.summary(print_fn=None).count("Non-trainable params: 6") == 1


def test_unknown_layers_and_bad_values_are_refused_clearly():
    model = _model()
    with pytest.raises(ValueError, match="unknown layer 'encoder'.*'2.block.0'"):
        model.freeze("encoder")
    with pytest.raises(ValueError, match="unknown layer 9"):
        model.freeze(9)
    with pytest.raises(ValueError, match="not a layer of this model"):
        model.freeze(fnn.Dense(2, 2))
    with pytest.raises(TypeError, match="trainable must be True or False"):
        model.layers[0].trainable = "no"


def test_numpy_and_negative_indices_and_lists_name_layers_as_in_python():
    """model.freeze(np.int64(1)) is index 1 (it said "unknown layer np.int64(1): expected ... an
    index"); -1 is the last layer, as model.layers[-1]; a list is its items."""
    model = _model()
    assert [layer.trainable for layer in model.freeze(np.int64(1))] == [True, False, True, True]
    assert [layer.trainable for layer in model.unfreeze().freeze(-1)] == [True, True, True, False]
    assert [layer.trainable for layer in model.unfreeze().freeze([0, "2.block.1"])] == [False, True, True, True]
    assert not model.layers[2].block[1].trainable
    model.unfreeze().freeze(*np.arange(2))
    assert [layer.trainable for layer in model.layers] == [False, False, True, True]
    with pytest.raises(ValueError, match="unknown layer -5"):
        model.freeze(-5)
    with pytest.raises(ValueError, match="unknown layer True"):
        model.freeze(True)


def test_unfreezing_a_layer_inside_a_frozen_container_warns_that_it_stays_frozen():
    """Keras's rule (a frozen container freezes what it holds) left ``unfreeze("1.block.0")`` a
    silent no-op; it now warns, naming the container to unfreeze."""
    model = fnn.Sequential([fnn.Dense(2, 4), fnn.Residual([fnn.Dense(4, 4), fnn.ReLU()]), fnn.Dense(4, 2)], seed=0)
    model.freeze(1)
    with pytest.warns(UserWarning, match=r"layer '1.block.0' \(Dense\) stays frozen: .* at '1' has trainable=False"):
        model.unfreeze("1.block.0")
    assert model.layers[1].block[0].frozen
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.unfreeze(1)  # the container itself: no warning, everything inside trains
    assert not model.layers[1].block[0].frozen
