"""Sequential end to end: building, gradients against finite differences and torch, training."""

import copy

import numpy as np
import pytest

import fastnn as fnn
from fastnn.data import load_digits, make_xor, standardize, train_test_split
from tests._gradcheck import check_model_gradients


def mlp(sizes, activation="tanh", dtype="float64", seed=0):
    layers = [fnn.Dense(a, b, activation=activation) for a, b in zip(sizes[:-2], sizes[1:-1])]
    layers.append(fnn.Dense(sizes[-2], sizes[-1]))
    return fnn.Sequential(layers, seed=seed, dtype=dtype)


def test_flat_buffers_hold_every_parameter_as_views():
    model = mlp([3, 5, 2])
    names = [name for name, _, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert model.params.size == 3 * 5 + 5 + 5 * 2 + 2
    for _, value, grad in model.named_parameters():
        assert np.shares_memory(value, model.params) and np.shares_memory(grad, model.grads)
    # weights (decayed) come first in the flat buffer
    assert model.n_decay == 3 * 5 + 5 * 2
    assert np.shares_memory(model.layers[1].weight, model.params[: model.n_decay])


def test_same_seed_same_weights_and_other_seed_differs():
    a, b, c = mlp([4, 8, 3], seed=1), mlp([4, 8, 3], seed=1), mlp([4, 8, 3], seed=2)
    assert np.array_equal(a.params, b.params)
    assert not np.array_equal(a.params, c.params)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse", "binary_cross_entropy", "mae", "huber"])
def test_parameter_gradients_match_finite_differences(loss, rng):
    n_out = 3
    model = mlp([4, 6, 5, n_out], activation="tanh")
    model.compile(loss=loss, optimizer="sgd")
    X = rng.standard_normal((7, 4))
    if loss == "cross_entropy":
        y = rng.integers(0, n_out, 7)
    elif loss == "binary_cross_entropy":
        y = (rng.random((7, n_out)) > 0.5).astype(float)
    else:
        y = rng.standard_normal((7, n_out))
    check_model_gradients(model, X, y)


def test_forward_backward_match_torch(rng):
    torch = pytest.importorskip("torch")
    acts = [
        ("relu", torch.nn.ReLU()),
        ("tanh", torch.nn.Tanh()),
        ("gelu", torch.nn.GELU()),
        ("elu", torch.nn.ELU()),
        ("sigmoid", torch.nn.Sigmoid()),
    ]
    sizes = [9, 17, 13, 11, 7, 5, 4]
    layers, tlayers = [], []
    for (a, b), (name, tact) in zip(zip(sizes[:-1], sizes[1:]), acts + [(None, None)]):
        layers.append(fnn.Dense(a, b, activation=name))
        lin = torch.nn.Linear(a, b).double()
        tlayers += [lin] + ([tact] if tact is not None else [])
    model = fnn.Sequential(layers, seed=3, dtype="float64")
    tmodel = torch.nn.Sequential(*tlayers)
    with torch.no_grad():
        linears = [m for m in tmodel if isinstance(m, torch.nn.Linear)]
        for layer, lin in zip(model.layers, linears):
            lin.weight.copy_(torch.from_numpy(layer.weight.T.copy()))
            lin.bias.copy_(torch.from_numpy(layer.bias.copy()))
    X = rng.standard_normal((33, 9))
    y = rng.integers(0, 4, 33)
    model.compile(loss="cross_entropy", optimizer="sgd")
    out = model.forward(X, training=True)
    grad_out = np.empty_like(out)
    loss = model.loss.forward_backward(out, y, grad_out, True)
    model.backward(grad_out)
    tx = torch.from_numpy(X)
    tout = tmodel(tx)
    tloss = torch.nn.functional.cross_entropy(tout, torch.from_numpy(y))
    tloss.backward()
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-12, atol=1e-12)
    assert loss == pytest.approx(tloss.item(), rel=1e-12)
    for layer, lin in zip(model.layers, linears):
        np.testing.assert_allclose(layer.grad_weight, lin.weight.grad.numpy().T, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(layer.grad_bias, lin.bias.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_perceptron_cannot_learn_xor_but_mlp_can():
    X, y = make_xor(n_samples=4)
    perceptron = fnn.Sequential([fnn.Dense(2, 2)], seed=0)
    perceptron.fit(X, y, loss="cross_entropy", optimizer=fnn.optim.SGD(lr=0.5), epochs=300, batch_size=4, verbose=0)
    assert perceptron.evaluate(X, y)["accuracy"] <= 0.75
    model = fnn.Sequential([fnn.Dense(2, 16, activation="tanh"), fnn.Dense(16, 1)], seed=0)
    model.fit(
        X,
        y.astype(float),
        loss="binary_cross_entropy",
        optimizer=fnn.optim.SGD(lr=0.5, momentum=0.9),
        epochs=300,
        batch_size=4,
        verbose=0,
    )
    assert model.evaluate(X, y.astype(float))["accuracy"] == 1.0


def test_mlp_reaches_95_percent_on_digits():
    pytest.importorskip("sklearn")
    X, y = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, seed=0, stratify=True)
    X_train, X_test, _ = standardize(X_train, X_test)
    model = fnn.Sequential([fnn.Dense(64, 128, activation="relu"), fnn.Dense(128, 10)], seed=0)
    hist = model.fit(
        X_train,
        y_train,
        loss="cross_entropy",
        optimizer=fnn.optim.Adam(lr=1e-3),
        epochs=20,
        batch_size=32,
        validation_data=(X_test, y_test),
        verbose=0,
    )
    assert model.evaluate(X_test, y_test)["accuracy"] >= 0.95
    assert len(hist["loss"]) == 20 and hist["loss"][-1] < hist["loss"][0]
    assert set(hist.history) >= {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    proba = model.predict_proba(X_test[:5])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert np.array_equal(model.predict_classes(X_test[:5]), proba.argmax(axis=1))


def test_training_steps_allocate_no_new_workspaces(rng):
    model = mlp([10, 32, 16, 4], activation="relu", dtype="float32")
    model.compile(loss="cross_entropy", optimizer=fnn.optim.SGD(lr=0.1, momentum=0.9))
    X = rng.standard_normal((16, 10)).astype(np.float32)
    y = rng.integers(0, 4, 16)
    model.train_step(X, y)
    buffers = [id(arr) for layer in model.layers for arr in layer._workspace(16).values()]
    outs = [id(model.step_plan(16).out)]
    for _ in range(3):
        model.train_step(X, y)
    assert buffers == [id(arr) for layer in model.layers for arr in layer._workspace(16).values()]
    assert outs == [id(model.step_plan(16).out)]


def test_fit_writes_one_line_per_epoch_when_not_a_terminal(capsys, rng):
    X = rng.standard_normal((100, 3))
    y = rng.integers(0, 2, 100)
    model = fnn.Sequential([fnn.Dense(3, 8, activation="relu"), fnn.Dense(8, 2)])
    model.fit(X, y, loss="cross_entropy", optimizer="adam", epochs=3, batch_size=10, verbose=1)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 3
    assert lines[0].startswith("Epoch 1/3") and "loss" in lines[0] and "accuracy" in lines[0]


def test_fit_verbose_zero_is_silent(capsys, rng):
    model = fnn.Sequential([fnn.Dense(3, 2)])
    model.fit(
        rng.standard_normal((20, 3)), rng.integers(0, 2, 20), loss="cross_entropy", optimizer="sgd", epochs=2, verbose=0
    )
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_fit_shows_a_progress_bar_in_a_terminal(rng):
    import io

    from fastnn._progress import EpochProgress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    progress = EpochProgress(1, 2, 5, stream=stream)
    assert progress.use_bar
    progress.epoch_begin(0)
    for _ in range(5):
        progress.batch_end(0.5)
    progress.epoch_end(0, {"loss": 0.5}, 0.1)
    text = stream.getvalue()
    assert "Epoch 1/2" in text and "5/5" in text and "loss: 0.5" in text


def test_predict_and_evaluate_in_eval_mode_and_restore_mode(rng):
    model = mlp([3, 4, 2], dtype="float32")
    model.compile(loss="cross_entropy", optimizer="sgd")
    X = rng.standard_normal((5, 3))
    model.train()
    out = model.predict(X)
    assert out.dtype == np.float32 and out.shape == (5, 2)
    assert model.training
    model.eval()
    model.evaluate(X, rng.integers(0, 2, 5))
    assert not model.training


def test_summary_lists_layers_shapes_and_counts():
    model = fnn.Sequential(
        [
            fnn.Dense(784, 256, activation="relu"),
            fnn.Dropout(0.2) if hasattr(fnn, "Dropout") else fnn.Identity(),
            fnn.Dense(256, 10),
        ]
    )
    text = model.summary(print_fn=None)
    assert "Dense(784, 256, activation='relu')" in text
    assert "(batch, 256)" in text and "(batch, 10)" in text
    assert "200,960" in text and "2,570" in text
    assert f"Total params: {784 * 256 + 256 + 2570:,}" in text


def test_save_and_load_weights_roundtrip(tmp_path, rng):
    model = mlp([3, 4, 2], dtype="float32", seed=0)
    other = mlp([3, 4, 2], dtype="float32", seed=1)
    path = tmp_path / "w.npz"
    model.save_weights(path)
    other.load_weights(path)
    assert np.array_equal(model.params, other.params)
    with pytest.raises(ValueError, match=r"0.weight has shape \(3, 5\), got an array of shape \(3, 4\)"):
        mlp([3, 5, 2]).load_weights(path)


def test_a_bad_weights_file_changes_nothing(tmp_path):
    """A file whose last array cannot convert, or a truncated file, is refused before any array
    is copied (the first layers used to take the other model's weights, then the load failed)."""
    model, other = mlp([3, 4, 2], seed=0), mlp([3, 4, 2], seed=7)
    other.save_weights(tmp_path / "w.npz")
    arrays = dict(np.load(tmp_path / "w.npz"))
    arrays["1.bias"] = arrays["1.bias"].astype(complex)
    np.savez(tmp_path / "complex.npz", **arrays)
    (tmp_path / "cut.npz").write_bytes((tmp_path / "w.npz").read_bytes()[:300])
    before = model.params.copy()
    with pytest.raises(TypeError, match="1.bias must be a real numeric array, got dtype=complex128"):
        model.load_weights(tmp_path / "complex.npz")
    with pytest.raises(ValueError, match="not a readable .npz"):
        model.load_weights(tmp_path / "cut.npz")
    np.testing.assert_array_equal(model.params, before)
    with pytest.raises(ValueError, match=r"writes an .npz archive.*model.save"):
        model.save_weights(tmp_path / "w.safetensors")
    assert not (tmp_path / "w.safetensors").exists()
    with pytest.raises(ValueError, match=r"save writes a safetensors file.*model.save_weights"):
        model.save(tmp_path / "m.NPZ")  # a weights archive's name: load_weights would then misread it
    assert not (tmp_path / "m.NPZ").exists()


def test_diverging_training_names_the_first_non_finite_layer(rng):
    model = fnn.Sequential([fnn.Dense(2, 4, activation="relu"), fnn.Dense(4, 1)], dtype="float32")
    model.layers[0].weight[...] = 3e38  # the first layer's output overflows to inf
    with pytest.raises(FloatingPointError, match=r"diverged.*output of layer 0 \(Dense\(2, 4"):
        model.fit(rng.standard_normal((8, 2)) + 2, rng.standard_normal(8), loss="mse", optimizer="sgd", verbose=0)


@pytest.mark.parametrize(
    "layers",
    [
        lambda: [fnn.Dense(2, 4, activation="relu"), fnn.Dense(4, 1)],
        lambda: [fnn.Dense(2, 4), fnn.BatchNorm1d(4), fnn.ReLU(), fnn.Dense(4, 1)],
        lambda: [fnn.Reshape((1, 2)), fnn.Conv1d(1, 3, 2, activation="relu"), fnn.Flatten(), fnn.Dense(3, 1)],
    ],
    ids=["dense", "batchnorm", "conv"],
)
def test_a_nan_weight_is_not_hidden_by_relu(rng, layers):
    """A NaN weight behind a ReLU gives NaN outputs and a refused step, as in PyTorch, not a finite
    output from a unit that looks dead (relu(NaN) was 0: training went on, the NaN stayed)."""
    model = fnn.Sequential(layers(), seed=0).compile("mse", "sgd")
    X, y = rng.standard_normal((8, 2)).astype(np.float32), rng.standard_normal((8, 1)).astype(np.float32)
    model.train_step(X, y)
    first = next(layer for layer in model.layers if getattr(layer, "weight", None) is not None)
    first.weight.reshape(-1)[0] = np.nan
    assert np.isnan(model.predict(X)).any()
    params = model.params.copy()
    with pytest.raises(FloatingPointError, match="diverged"):
        model.train_step(X, y)
    np.testing.assert_array_equal(model.params, params)


def test_diverging_loss_is_reported(rng):
    model = fnn.Sequential([fnn.Dense(1, 1)], dtype="float32")
    with pytest.raises(FloatingPointError, match=r"diverged: the loss is (inf|finite .* but the gradient norm is inf)"):
        model.fit(np.ones((4, 1)), np.full(4, 3e38), loss="mse", optimizer="sgd", verbose=0)


def test_small_predictions_use_recorded_calls_and_match_the_layer_path(rng):
    model = fnn.Sequential([fnn.Dense(5, 8), fnn.BatchNorm1d(8), fnn.ReLU(), fnn.Dropout(0.5), fnn.Dense(8, 3)], seed=2)
    model.compile("cross_entropy", "adam")
    X = rng.standard_normal((16, 5)).astype(np.float32)
    for _ in range(3):
        model.train_step(X, np.arange(16) % 3)
    one = model.predict(X[:1])
    assert ("fused-infer", 1) in model.plan_keys()  # the recorded path (batch norm folded: tests/test_inference.py)
    np.testing.assert_allclose(one, model.forward(X[:1], False), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict(X)[:1], one, rtol=1e-5, atol=1e-6)  # gemm vs gemv rounding
    model.train_step(X, np.arange(16) % 3)  # training after an inference plan still matches a fresh pass
    np.testing.assert_allclose(model.predict(X[:1]), model.forward(X[:1], False), rtol=1e-5, atol=1e-6)


def test_engine_queries_before_build_or_compile_raise_clear_errors():
    """positions/target_shape/loss_value/correct_count/run_step name the missing step and its fix
    (RuntimeError, as require_built/require_compiled), never a bare assert."""
    unbuilt = fnn.Sequential([fnn.Dense(None, 2)])
    with pytest.raises(RuntimeError, match="positions needs a built model"):
        unbuilt.positions
    model = fnn.Sequential([fnn.Dense(2, 2)], seed=0)
    out, labels = np.zeros((1, 2), np.float32), np.zeros(1, np.int64)
    for call in (
        model.target_shape,
        lambda: model.loss_value(out, labels, np.empty_like(out)),
        lambda: model.correct_count(out, labels),
    ):
        with pytest.raises(RuntimeError, match=r"needs a loss: call model.compile\(loss=\.\.\., optimizer=\.\.\.\)"):
            call()
    with pytest.raises(RuntimeError, match="run_step needs a loss and an optimizer"):
        model.run_step(np.zeros((1, 2), np.float32), labels)


def test_setting_a_layer_parameter_or_buffer_writes_it_into_the_model(rng):
    """``dense.weight = w`` (as torch users set weights) used to be dropped silently at the next
    predict: the rebuild bound the layer to the old view again. Values are now written in place."""
    X = rng.standard_normal((4, 3))
    model = fnn.Sequential(
        [fnn.Dense(3, 4), fnn.Residual([fnn.Dense(4, 4), fnn.BatchNorm1d(4)]), fnn.Dense(4, 2)], seed=0, dtype="float64"
    )
    twin = fnn.Sequential(
        [fnn.Dense(3, 4), fnn.Residual([fnn.Dense(4, 4), fnn.BatchNorm1d(4)]), fnn.Dense(4, 2)], seed=0, dtype="float64"
    )
    weight, bias, var = rng.standard_normal((3, 4)), [1.0, 2.0, 3.0, 4.0], np.full(4, 9.0, np.float32)
    model.layers[0].weight, model.layers[0].bias = weight, bias
    model.layers[1].block[1].running_var = var
    twin.state_arrays()["0.weight"][...] = weight
    twin.state_arrays()["0.bias"][...] = bias
    twin.state_arrays()["1.block.1.running_var"][...] = var
    np.testing.assert_array_equal(model.predict(X), twin.predict(X))
    np.testing.assert_array_equal(model.layers[0].weight, weight)
    assert np.shares_memory(model.layers[0].weight, model.params)
    lstm = fnn.Sequential([fnn.LSTM(2, 3)], input_shape=(4, 2), seed=0)
    lstm.layers[0].weight_ih_l0 = np.zeros((12, 2))
    assert not lstm.layers[0].parameter_arrays["weight_ih_l0"].any()
    with pytest.raises(ValueError, match=r"Dense.weight has shape \(3, 4\), got .* \(4, 3\); that is its transpose"):
        model.layers[0].weight = weight.T
    with pytest.raises(ValueError, match="Dense.bias cannot be set to None"):
        model.layers[0].bias = None
    with pytest.raises(TypeError, match="num_batches_tracked holds int64, got float64"):
        model.layers[1].block[1].num_batches_tracked = 1.5
    np.testing.assert_array_equal(model.layers[0].weight, weight)  # a refused value changes nothing
    plain = fnn.Sequential([fnn.Dense(3, 2), fnn.BatchNorm1d(2, affine=False)], input_shape=(3,), seed=0)
    with pytest.raises(AttributeError, match=r"BatchNorm1d.weight is not a parameter or buffer.*parameters are none"):
        plain.layers[1].weight = np.full(2, 3.0)  # a placeholder: the next rebuild reset it to ones
    with pytest.raises(AttributeError, match=r"Dense.grad_weight is not a parameter or buffer"):
        plain.layers[0].grad_weight = np.ones((3, 2))


@pytest.mark.parametrize("name", ["dtype", "seed", "params", "grads", "layers", "input_shape"])
def test_attributes_a_built_model_was_made_for_cannot_be_replaced(rng, name):
    """``model.dtype = "float32"`` on a float64 model used to make predict read float64 buffers as
    float32 (values around 1e37); ``model.params = ...`` was ignored. Both are refused now."""
    X = rng.standard_normal((2, 3))
    model = mlp([3, 4, 2])
    before = model.predict(X)
    value = {"dtype": np.dtype("float32"), "seed": 5, "params": np.zeros_like(model.params)}.get(name, None)
    with pytest.raises(AttributeError, match=f"a model's {name} cannot be replaced"):
        setattr(model, name, value)
    np.testing.assert_array_equal(model.predict(X), before)


def test_layers_of_a_model_that_failed_to_build_can_be_used_again():
    """A Sequential whose shapes did not chain used to keep its layers while its error was alive
    (inside the except block, or IPython's last traceback): the corrected model was refused with
    'already belongs to another model'."""
    relu, dense = fnn.ReLU(), fnn.Dense(4, 2)
    with pytest.raises(ValueError, match="do not chain") as failed:
        fnn.Sequential([relu, dense], input_shape=(5,))
    model = fnn.Sequential([relu, dense], input_shape=(4,), seed=0)  # while `failed` holds the traceback
    assert failed.value is not None and model.predict(np.ones((1, 4))).shape == (1, 2)
    with pytest.raises(ValueError, match="already belongs to another model"):
        fnn.Sequential([dense])  # a model that was made keeps its layers


def test_recompiling_with_another_decay_bias_and_norm_keeps_the_optimizer_state():
    """compile(loss, same optimizer, decay_bias_and_norm=True) on a trained model goes on with the
    moments and step count (it zeroed them: Adam's bias correction started over), and the decay covers
    the biases from then on: torch's AdamW whose bias group gets the weight decay after 3 steps."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((16, 5)), rng.integers(0, 3, 16)
    model = fnn.Sequential([fnn.Dense(5, 4, activation="tanh"), fnn.Dense(4, 3)], seed=0, dtype="float64")
    opt = fnn.optim.AdamW(lr=0.05, weight_decay=0.5)
    model.compile("cross_entropy", opt)
    net = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)).double()
    with torch.no_grad():
        for linear, dense in zip((net[0], net[2]), model.layers):
            linear.weight.copy_(torch.from_numpy(dense.weight.T.copy()))
            linear.bias.copy_(torch.from_numpy(dense.bias.copy()))
    weights, biases = [net[0].weight, net[2].weight], [net[0].bias, net[2].bias]
    torch_opt = torch.optim.AdamW(
        [{"params": weights}, {"params": biases, "weight_decay": 0.0}], lr=0.05, weight_decay=0.5
    )
    tx, ty = torch.from_numpy(X), torch.from_numpy(y)
    for step in range(6):
        if step == 3:
            moments = opt.state_dict()["exp_avg"].copy()
            model.compile("cross_entropy", opt, decay_bias_and_norm=True)
            assert opt.step_count == 3
            np.testing.assert_array_equal(opt.state_dict()["exp_avg"], moments)
            torch_opt.param_groups[1]["weight_decay"] = 0.5
        model.train_step(X, y)
        torch_opt.zero_grad()
        torch.nn.functional.cross_entropy(net(tx), ty).backward()
        torch_opt.step()
    for linear, dense in zip((net[0], net[2]), model.layers):
        np.testing.assert_allclose(dense.weight, linear.weight.detach().numpy().T, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(dense.bias, linear.bias.detach().numpy(), rtol=1e-10, atol=1e-12)
    with pytest.raises(TypeError, match="decay_bias_and_norm must be True or False"):
        model.compile("cross_entropy", opt, decay_bias_and_norm="False")


def test_arrays_set_on_a_free_layer_are_its_parameters_in_the_next_model():
    """dense.weight = w on a layer outside any model (fresh, or a deep copy of a trained one) was
    silently replaced by a fresh initialisation or the copy's old weights; now the model takes it,
    and an array of the wrong shape is refused naming both shapes."""
    trained = fnn.Sequential([fnn.Dense(3, 2), fnn.BatchNorm1d(2)], input_shape=(3,), seed=0)
    copied = copy.deepcopy(trained.layers[0])
    copied.weight = np.full((3, 2), 2.0)
    model = fnn.Sequential([copied], input_shape=(3,), seed=1)
    np.testing.assert_array_equal(model.layers[0].weight, np.full((3, 2), 2.0, np.float32))
    np.testing.assert_array_equal(model.layers[0].bias, trained.layers[0].bias)  # the copy's own bias
    fresh = fnn.Dense(3, 2)
    fresh.bias = np.arange(2.0)
    np.testing.assert_array_equal(fnn.Sequential([fresh], input_shape=(3,)).layers[0].bias, [0.0, 1.0])
    wrong = fnn.Dense(3, 2)
    wrong.weight = np.ones((2, 3))  # torch's (out, in)
    with pytest.raises(
        ValueError, match=r"Dense.weight \(set before the model was built\) has shape \(3, 2\), got .* \(2, 3\)"
    ):
        fnn.Sequential([wrong], input_shape=(3,))
