"""The standard checks of every layer, driven by the layer table (tests/layer_cases.py): finite
differences, dtypes, odd shapes and batch 1, save/load, fused == unfused steps, torch, the
predict-between-forward-and-backward promise, independent copies; then the tables that fastnn
derives from one row per item."""

import copy

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _config, _inference, init, optim
from fastnn.kernels.activations import ACTIVATION_TABLE, ACTIVATIONS
from fastnn.layers import LAYERS
from tests._gradcheck import check_model_gradients
from tests.layer_cases import CASES, float_inputs

table = pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
BATCH = 3  # odd on purpose


def one_layer(case, dtype="float64", seed=0):
    """Sequential([layer]) with random parameters and float buffers, in the case's mode."""
    model = fnn.Sequential([case.make()], dtype=dtype, input_shape=case.shape, seed=seed)
    randomize(model, seed)
    return model.train(case.training)


def randomize(model, seed=0):
    """Parameters in U(-1, 1) (norm gains and biases away from their trivial 1 and 0), float
    buffers (running statistics) in U(0.5, 1.5)."""
    rng = np.random.default_rng(seed + 100)
    model.params[...] = rng.uniform(-1.0, 1.0, model.params.size)
    for buf in model.state_arrays().values():
        if buf.dtype.kind == "f" and not np.shares_memory(buf, model.params):
            buf[...] = rng.uniform(0.5, 1.5, buf.shape)


def inputs(case, batch=BATCH, dtype=np.float64, seed=1):
    return case.inputs(np.random.default_rng(seed), batch, case.shape, dtype)


def upstream(model, batch=BATCH, seed=2):
    """A random d loss / d output for ``model``."""
    return np.random.default_rng(seed).standard_normal((batch, *model.output_shape)).astype(model.dtype)


def forward_backward(model, x, grad_out, training):
    out = model.forward(x, training)
    return out, model.backward(grad_out), model.grads.copy()


def trainable(case, dtype="float64", seed=3):
    """Dense(f, f) then the layer, compiled with Adam: gradients flow through the layer into
    weights even when it has none."""
    width = case.shape[-1]
    layer = case.make()
    if case.inputs is not float_inputs:
        layers = [layer, fnn.Flatten()]  # a layer taking indices comes first
    elif getattr(layer, "produces_lengths", False):
        layers = [layer, fnn.Dense(width, width)]  # a layer marking padding too
    else:
        layers = [fnn.Dense(width, width), layer]
    model = fnn.Sequential(layers, dtype=dtype, input_shape=case.shape, seed=seed)
    return model.compile("mse", optim.Adam(lr=0.01))


def engine_step(model, x, grad_out):
    """One training step through the engine API (any output shape): forward, backward, update."""
    model.forward(x, True)
    model.backward(grad_out)
    model.optimizer.step()


@table
def test_row_describes_its_layer(case):
    model = one_layer(case)
    layer = model.layers[0]
    assert model.input_shape == case.shape
    assert bool(layer.buffers()) == case.has_buffers
    assert LAYERS[type(layer).__name__] is type(layer)  # registered: loadable by name


@table
def test_gradients_match_finite_differences(case):
    check_model_gradients(one_layer(case), inputs(case), training=case.training)


@table
def test_float32_stays_float32_and_agrees_with_float64(case):
    m64, m32 = one_layer(case), one_layer(case, "float32")
    m32.params[...] = m64.params
    for name, buf in m32.state_arrays().items():
        buf[...] = m64.state_arrays()[name]
    x, g = inputs(case), upstream(m64)
    x32 = x.astype(np.float32) if case.inputs is float_inputs else x
    out32, gx32, grads32 = forward_backward(m32, x32, g.astype(np.float32), case.training)
    assert out32.dtype == grads32.dtype == m32.params.dtype == np.float32
    assert gx32 is None if case.inputs is not float_inputs else gx32.dtype == np.float32
    out64, gx64, grads64 = forward_backward(m64, x, g, case.training)
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-5)
    if gx64 is not None:
        np.testing.assert_allclose(gx32, gx64, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grads32, grads64, rtol=1e-4, atol=1e-5)


@table
def test_batch_of_one_is_row_zero_of_a_batch(case):
    training = case.training and case.batch_one_training
    model = one_layer(case).train(training)
    x, g = inputs(case), upstream(model)
    out, gx, _ = forward_backward(model, x, g, training)
    out1, gx1, grads1 = forward_backward(model, x[:1], g[:1], training)
    assert out1.shape == (1, *model.output_shape)
    np.testing.assert_allclose(out1, out[:1], rtol=1e-12, atol=1e-14)  # every row on its own (BN: in eval)
    if gx is not None:  # (integer inputs have none)
        assert gx1.shape == (1, *case.shape)
        np.testing.assert_allclose(gx1, gx[:1], rtol=1e-12, atol=1e-14)
    assert np.isfinite(grads1).all()


@table
def test_save_and_load_give_identical_predictions(case, tmp_path):
    model = one_layer(case)
    x = inputs(case)
    model.save(tmp_path / "model.safetensors")
    loaded = fnn.load(tmp_path / "model.safetensors")
    assert type(loaded.layers[0]) is type(model.layers[0])
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


@pytest.fixture(scope="module")
def fused_cache(tmp_path_factory):
    """One folder for the generated steps of this module (models of one structure share one)."""
    return str(tmp_path_factory.mktemp("fused"))


@table
def test_fused_steps_equal_the_python_loop_bit_for_bit(case, fused_cache, monkeypatch):
    monkeypatch.setenv("FASTNN_CACHE_DIR", fused_cache)
    x = inputs(case, batch=5)
    results = []
    for fuse in ("always", "never"):
        monkeypatch.setattr(_config, "FUSE", fuse)
        model = trainable(case)
        target = upstream(model, batch=5)  # N-D outputs: the loss is the mean over every position
        losses = [model.train_step(x, target) for _ in range(3)]
        assert model.step_plan(5).run.fused == (fuse == "always")
        preds = [model.predict(x[:1]), model.predict(x)]
        assert _inference.plan(model, 5).runner.fused == (fuse == "always")
        results.append((losses, model.params.copy(), model.state_arrays(), preds))
    (l1, p1, s1, y1), (l2, p2, s2, y2) = results
    np.testing.assert_array_equal(l1, l2)
    np.testing.assert_array_equal(p1, p2)
    for name in s1:
        np.testing.assert_array_equal(s1[name], s2[name], err_msg=name)
    for a, b in zip(y1, y2):
        np.testing.assert_array_equal(a, b)


@table
def test_matches_torch_in_float64(case):
    torch = pytest.importorskip("torch")
    if case.torch is None:
        pytest.skip("torch has no such layer")
    model = one_layer(case)
    layer = model.layers[0]
    module = case.torch(torch.nn).double().train(case.training)
    pairs = case.torch_pairs(layer, module)
    values = {**{name[2:]: v for name, v, _ in model.named_parameters()}, **layer.buffers()}
    assert {name for name, v in values.items() if v.dtype.kind == "f"} == set(pairs)
    with torch.no_grad():
        for name, (tensor, transposed) in pairs.items():
            tensor.copy_(torch.from_numpy(values[name].T if transposed else values[name]))
    x, g = inputs(case), upstream(model)
    out, gx, _ = forward_backward(model, x, g, case.training)
    float_input = case.inputs is float_inputs
    tx = torch.from_numpy(x).requires_grad_(float_input)
    tout = module(tx)
    tout.backward(torch.from_numpy(g))
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    if float_input:
        np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    else:
        assert gx is None  # integer indices have no gradient
    grads = {name[2:]: grad for name, _, grad in model.named_parameters()}
    for name, (tensor, transposed) in pairs.items():
        if name in grads:
            mine, theirs = grads[name], tensor.grad
        else:  # a buffer: the running statistics after the forward
            mine, theirs = values[name], tensor
        np.testing.assert_allclose(
            mine.T if transposed else mine, theirs.detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=name
        )


@table
def test_predict_between_forward_and_backward_keeps_the_gradients(case):
    model = one_layer(case)
    x, g = inputs(case), upstream(model)
    other = inputs(case, seed=7)
    out, gx, grads = forward_backward(model, x, g, case.training)
    assert np.array_equal(model.forward(x, case.training), out)
    model.predict(other)  # the same batch size
    model.predict(other[:2])  # and another one
    np.testing.assert_array_equal(model.backward(g), gx)
    np.testing.assert_array_equal(model.grads, grads)


@table
def test_deepcopy_trains_independently(case):
    model = trainable(case)
    x, g = inputs(case), upstream(model)
    before = {name: v.copy() for name, v in model.state_arrays().items()}
    prediction = model.predict(x)
    clone = copy.deepcopy(model)
    np.testing.assert_array_equal(clone.predict(x), prediction)
    for _ in range(2):
        engine_step(clone, x, g)
    assert not np.array_equal(clone.params, model.params)
    for name, value in model.state_arrays().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    np.testing.assert_array_equal(model.predict(x), prediction)
    trained = clone.params.copy()
    engine_step(model, x, g)  # and the other way round
    np.testing.assert_array_equal(clone.params, trained)


@pytest.mark.parametrize("case", [c for c in CASES if not c.deterministic], ids=lambda c: c.id)
def test_random_layers_in_training_mode(case):
    """Dropout: masks differ per step, keep 1-p of the units scaled by 1/(1-p) (unbiased), and
    backward uses the forward's own mask even after a predict in between."""
    model = one_layer(case).train()
    p = model.layers[0].p
    x = inputs(case, batch=400)
    g = upstream(model, batch=400)
    first, second = model.forward(x, True), model.forward(x, True)
    assert not np.array_equal(first, second)
    kept = second != 0
    assert abs(kept.mean() - (1 - p)) < 0.03
    np.testing.assert_allclose(second[kept], x[kept] / (1 - p), rtol=1e-12)
    model.predict(inputs(case, batch=400, seed=9))
    gx = model.backward(g)
    np.testing.assert_allclose(gx * x, second * g, rtol=1e-12, atol=1e-15)  # the same mask
    np.testing.assert_array_equal(model.forward(x, False), x)


# -- the tables fastnn derives from one row per item -------------------------------------------
def test_activation_table_drives_codes_layers_and_default_inits():
    assert [row.code for row in ACTIVATION_TABLE] == list(range(len(ACTIVATION_TABLE)))
    for row in ACTIVATION_TABLE:
        assert ACTIVATIONS[row.name] == (row.code, row.default, row.param)
        assert init.default_init(row.name) == row.init and row.init in init.INITIALIZERS
        if row.layer is not None:
            cls = LAYERS[row.layer]
            assert cls.__name__ == row.layer and getattr(fnn, row.layer) is cls and LAYERS[row.layer] is cls
            layer = cls()
            assert (layer.activation, layer.code, layer.alpha) == (row.name, row.code, row.default)
            assert cls.__doc__.startswith(row.doc)
    assert init.default_init("linear") == init.default_init(None) == "xavier_uniform"


def test_activation_layers_with_a_parameter_take_it_by_position_or_name():
    assert fnn.LeakyReLU(0.2).alpha == fnn.LeakyReLU(negative_slope=0.2).alpha == 0.2
    assert fnn.ELU(alpha=0.5).get_config() == {"alpha": 0.5}
    assert fnn.ReLU().get_config() == {}
    with pytest.raises(TypeError, match=r"LeakyReLU\(\).*slope.*negative_slope=0.01"):
        fnn.LeakyReLU(slope=0.2)
    with pytest.raises(ValueError, match="alpha"):
        fnn.ELU(-1.0)


def test_layer_registry_is_filled_by_the_decorator():
    assert {"Dense", "Dropout", "BatchNorm1d", "LayerNorm", "Residual", "Activation", "GELU"} <= set(LAYERS)

    @fnn.register_layer
    class Doubler(fnn.layers.Activation):
        def __init__(self):
            super().__init__("identity")

    assert LAYERS.pop("Doubler") is Doubler
    with pytest.raises(TypeError, match="subclass of fastnn.layers.Layer"):
        fnn.register_layer(int)


def test_optimizer_registry_is_filled_by_the_decorator():
    assert set(optim.OPTIMIZERS) == {"sgd", "rmsprop", "adagrad", "adam", "adamw", "lion"}
    assert all(cls.name == name for name, cls in optim.OPTIMIZERS.items())

    @optim.register_optimizer
    class Slow(optim.SGD):
        name = "slow_sgd"

    try:
        assert isinstance(optim.get("slow_sgd", lr=0.1), Slow)
        assert isinstance(optim.optimizer_from_config(Slow(lr=0.1).get_config()), Slow)
    finally:
        del optim.OPTIMIZERS["slow_sgd"]
    with pytest.raises(ValueError, match="belongs to fastnn's Adam"):
        optim.register_optimizer(type("Mine", (optim.Adam,), {"name": "adam"}))
    with pytest.raises(ValueError, match="own class attribute `name`"):
        optim.register_optimizer(type("Unnamed", (optim.Adam,), {}))
