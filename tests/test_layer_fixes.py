"""Regression tests of layer and interop fixes: Residual blocks of channels-first layers (a ResNet
basic block) against torch and onnxruntime, torch's implicit softmax dim and the encoder
layer's activation in from_torch, bool ids refused by Embedding, the input-shape advice, and
reprs that show every non-default argument."""

import ast

import numpy as np
import pytest

import fastnn as fnn
from fastnn.layers.base import width_mismatch


def basic_block():
    """A ResNet basic block's residual branch: conv -> BN -> ReLU -> conv -> BN."""
    return [
        fnn.Conv2d(2, 2, 3, padding="same"),
        fnn.BatchNorm2d(2),
        fnn.ReLU(),
        fnn.Conv2d(2, 2, 3, padding="same", bias=False),
        fnn.BatchNorm2d(2),
    ]


# -- Residual: the block's layers are checked on their feature axis, as a model checks them ---------


def test_residual_of_channels_first_layers_builds():
    for block, shape in [
        (basic_block(), (2, 4, 5)),
        ([fnn.BatchNorm1d(3)], (3, 5)),  # BatchNorm1d first: channels on axis 0
        ([fnn.Conv1d(3, 3, 3, padding=1), fnn.BatchNorm1d(3)], (3, 7)),
    ]:
        model = fnn.Sequential([fnn.Residual(block)], input_shape=shape, seed=0)
        assert model.output_shape == shape
        assert model.predict(np.ones((2, *shape), np.float32)).shape == (2, *shape)


def test_residual_takes_feature_axis_and_argument_of_its_first_layer():
    res = fnn.Residual([fnn.BatchNorm2d(2), fnn.ReLU()])
    assert (res.feature_axis, res.input_argument, res.expected_input_shape()) == (0, "num_features", (2,))
    dense = fnn.Residual([fnn.Dense(4, 4)])
    assert (dense.feature_axis, dense.input_argument) == (-1, "in_features")
    assert width_mismatch(fnn.BatchNorm2d(2), (2, 4, 5)) is None
    assert width_mismatch(fnn.BatchNorm2d(3), (2, 4, 5)) == (
        "expects 3 features on the channel axis; set its num_features to 2"
    )


def test_residual_true_mismatches_stay_clear_errors():
    # the block's first layer against the model's input: the model's check, on the channel axis
    with pytest.raises(ValueError, match=r"expects 3 features on the channel axis; set layer 0.s num_features to 2"):
        fnn.Sequential([fnn.Residual([fnn.BatchNorm2d(3)])], input_shape=(2, 4, 5))
    # a later block layer
    with pytest.raises(
        ValueError,
        match=r"block layer 1 \(BatchNorm2d\(3.*receives \(batch, 2, 4, 5\) but expects 3 features on the "
        r"channel axis; set its num_features to 2",
    ):
        fnn.Sequential([fnn.Residual([fnn.Conv2d(2, 2, 3, padding="same"), fnn.BatchNorm2d(3)])], input_shape=(2, 4, 5))
    with pytest.raises(ValueError, match=r"block layer 1 \(Dense\(5, 4\)\) receives \(batch, 4\) but expects 5"):
        fnn.Sequential([fnn.Residual([fnn.Dense(4, 4), fnn.Dense(5, 4)])], input_shape=(4,))
    # a block layer whose build refuses the shape is named
    with pytest.raises(ValueError, match=r"block layer 1 \(Conv2d\(.*\)\) cannot take \(batch, 6\)"):
        fnn.Sequential([fnn.Residual([fnn.Dense(6, 6), fnn.Conv2d(6, 6, 1)])], input_shape=(6,))
    # a block that changes the channels cannot be added to its input
    with pytest.raises(ValueError, match=r"maps \(batch, 2, 4, 5\) to \(batch, 3, 4, 5\)"):
        fnn.Sequential([fnn.Residual([fnn.Conv2d(2, 3, 3, padding="same")])], input_shape=(2, 4, 5))


def test_resnet_basic_block_trains_a_step_as_torch():
    torch = pytest.importorskip("torch")
    from fastnn.interop import torch_adapters

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 2, 4, 5)), rng.standard_normal((4, 40))
    model = fnn.Sequential(
        [fnn.Residual(basic_block()), fnn.ReLU(), fnn.Flatten()], input_shape=(2, 4, 5), dtype="float64", seed=0
    ).compile("mse", fnn.optim.SGD(lr=0.1))
    # the torch twin by hand: relu(x + block(x)), with fastnn's initial weights
    nn = torch.nn
    converted = model.to_torch()
    block = nn.Sequential(
        nn.Conv2d(2, 2, 3, padding="same"),
        nn.BatchNorm2d(2),
        nn.ReLU(),
        nn.Conv2d(2, 2, 3, padding="same", bias=False),
        nn.BatchNorm2d(2),
    ).double()
    block.load_state_dict(converted[0].block.state_dict())
    net = nn.Sequential(torch_adapters.Residual(block), nn.ReLU(), nn.Flatten()).train()

    loss = model.train_step(x, y)
    out = net(torch.from_numpy(x))
    torch_loss = ((out - torch.from_numpy(y)) ** 2).mean()
    torch_loss.backward()
    with torch.no_grad():
        for p in net.parameters():
            p -= 0.1 * p.grad
    assert loss == pytest.approx(torch_loss.item(), rel=1e-12)
    after = model.to_torch().state_dict()
    for name, value in net.state_dict().items():
        np.testing.assert_allclose(after[name].numpy(), value.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)
    model.eval()
    net.eval()
    with torch.no_grad():
        np.testing.assert_allclose(model.predict(x), net(torch.from_numpy(x)).numpy(), rtol=1e-10, atol=1e-12)
    back = fnn.from_torch(net, input_shape=(2, 4, 5))  # and the hand-built module converts back
    np.testing.assert_allclose(back.predict(x), model.predict(x), rtol=1e-10, atol=1e-12)


def test_resnet_basic_block_exports_to_onnx(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from tests._helpers import randomize

    model = randomize(fnn.Sequential([fnn.Residual(basic_block()), fnn.ReLU()], input_shape=(2, 4, 5), seed=0))
    model.export_onnx(tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((3, 2, 4, 5)).astype(np.float32)
    got = session.run(None, {"input": x})[0]
    np.testing.assert_allclose(got, model.predict(x), rtol=1e-5, atol=1e-5)


# -- from_torch: torch's implicit softmax dim, the encoder layer's activation ------------------------


@pytest.mark.parametrize("kind", ["Softmax", "LogSoftmax"])
def test_from_torch_resolves_an_implicit_softmax_dim_as_torch(kind):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    rng = np.random.default_rng(0)
    # 2-D input (batch, features): torch picks dim=1, the last axis; accepted and equal
    net = nn.Sequential(nn.Linear(4, 3), getattr(nn, kind)()).double().eval()
    model = fnn.from_torch(net)
    x = rng.standard_normal((5, 4))
    with pytest.warns(UserWarning, match="Implicit dimension"), torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.predict(x), want, rtol=1e-10, atol=1e-12)
    # 3-D input: torch picks dim=0 (the batch); 4-D: dim=1 (the channels); refused, naming the axis
    for module, shape, dim in [
        (nn.Sequential(getattr(nn, kind)()), (3, 4), 0),
        (nn.Sequential(nn.Linear(4, 3), getattr(nn, kind)()), (5, 4), 0),
        (nn.Sequential(nn.Conv2d(1, 3, 3), getattr(nn, kind)()), (1, 5, 5), 1),
    ]:
        with pytest.raises(NotImplementedError, match=rf"{kind}\(\) without dim .*dim={dim}\).*use dim=-1"):
            fnn.from_torch(module.double(), input_shape=shape)
    # an explicit last axis is still accepted, inside a Residual too
    from fastnn.interop import torch_adapters

    block = nn.Sequential(nn.Linear(4, 4), getattr(nn, kind)(dim=2))
    assert fnn.from_torch(torch_adapters.Residual(block), input_shape=(3, 4)).output_shape == (3, 4)
    with pytest.raises(NotImplementedError, match=r"without dim"):
        fnn.from_torch(torch_adapters.Residual(nn.Sequential(getattr(nn, kind)())), input_shape=(3, 4))


def _encoder(nn, activation):
    return nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0, activation=activation, batch_first=True).double()


def test_from_torch_reads_the_encoder_layers_actual_activation():
    torch = pytest.importorskip("torch")
    nn, F = torch.nn, torch.nn.functional
    x = np.random.default_rng(0).standard_normal((2, 3, 4)) * 3
    for activation, name in [
        ("relu", "relu"),
        (F.relu, "relu"),
        (nn.ReLU(), "relu"),
        ("gelu", "gelu"),
        (F.gelu, "gelu"),
        (nn.GELU(), "gelu"),
    ]:
        torch.manual_seed(0)
        layer = _encoder(nn, activation)
        model = fnn.from_torch(nn.Sequential(layer), input_shape=(3, 4))
        assert model.layers[0].activation == name, activation
        with torch.no_grad():
            want = layer(torch.from_numpy(x)).numpy()  # train mode: the activation module runs
        np.testing.assert_allclose(model.forward(x, training=True), want, rtol=1e-10, atol=1e-10)
        # and back: to_torch gives the same activation
        back = model.to_torch()[0]
        assert back.activation_relu_or_gelu == {"relu": 1, "gelu": 2}[name]
        assert back.activation is {"relu": F.relu, "gelu": F.gelu}[name]
    for activation, shown in [
        (nn.GELU(approximate="tanh"), r"GELU\(approximate='tanh'\)"),
        (nn.Tanh(), r"Tanh\(\)"),
        (torch.sigmoid, "sigmoid"),
    ]:
        with pytest.raises(NotImplementedError, match=rf"activation={shown}.* takes activation 'relu'"):
            fnn.from_torch(nn.Sequential(_encoder(nn, activation)), input_shape=(3, 4))
    # an activation swapped after construction: torch's fast path would still run the flag's one
    layer = _encoder(nn, "relu")
    layer.activation = F.gelu
    with pytest.raises(NotImplementedError, match="activation_relu_or_gelu"):
        fnn.from_torch(nn.Sequential(layer), input_shape=(3, 4))


# -- export_onnx: the documented exceptions are the raised ones ----------------------------------------


def test_export_onnx_documents_the_errors_it_raises(tmp_path):
    pytest.importorskip("onnx")
    import inspect

    from fastnn.interop.onnx_export import export_onnx

    raises = inspect.getdoc(export_onnx).split("Raises\n------\n")[1].split("\n\n")[0]
    documented = dict(zip(raises.splitlines()[::2], (line.strip() for line in raises.splitlines()[1::2]), strict=True))
    assert documented["RuntimeError"].startswith("For an unbuilt model")
    assert "unbuilt" not in documented["ValueError"]
    with pytest.raises(RuntimeError, match="needs a built model"):
        export_onnx(fnn.Sequential([fnn.Dense(None, 2)]), tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="opset must be >= 17"):
        export_onnx(fnn.Sequential([fnn.Dense(3, 2)]), tmp_path / "m.onnx", opset=16)
    assert not (tmp_path / "m.onnx").exists()


# -- Embedding refuses bool ids (torch does) ------------------------------------------------------------


def test_embedding_refuses_bool_indices():
    model = fnn.Sequential([fnn.Embedding(5, 2)], input_shape=(3,))
    ids = np.array([[True, False, True]])
    for call in (model.predict, model.forward, model.layers[0].check_indices):
        with pytest.raises(TypeError, match=r"[Xx] must hold integer indices \(int64\).*got a bool array"):
            call(ids)
    with pytest.raises(TypeError, match="bool array"):
        model.predict(ids.tolist())
    assert model.predict(ids.astype(np.int64)).shape == (1, 3, 2)


# -- the input-shape advice: what the model expects, and a fix that the model can take -------------------


@pytest.mark.parametrize(
    "layer, shape, x_shape, advice",
    [
        (lambda: fnn.Conv2d(1, 2, 3), (1, 5, 5), (2, 5, 5), "add the missing axis with X[:, None]"),
        (lambda: fnn.LSTM(1, 4), (5, 1), (2, 5), "add the missing axis with X[..., None]"),
        (lambda: fnn.Conv2d(3, 2, (1, 3)), (3, 1, 5), (2, 3, 5), "add the missing axis with X[:, :, None]"),
        (lambda: fnn.LSTM(3, 4), (5, 3), (2, 3), "X lacks an axis: each sample must be 2-D"),
        (
            lambda: fnn.Conv2d(1, 2, 3),
            (1, 5, 5),
            (2, 5, 5, 1),
            "if its axes are in another order (channels last?), move them: X.transpose(0, 3, 1, 2)",
        ),
        (lambda: fnn.Conv2d(3, 2, 3), (3, 5, 5), (2, 75), "reshape the data: X.reshape(len(X), 3, 5, 5)"),
        (lambda: fnn.Conv2d(3, 2, 3), (3, 5, 5), (2, 3, 6, 6), "check the data or the model's input_shape"),
    ],
)
def test_input_shape_advice(layer, shape, x_shape, advice):
    model = fnn.Sequential([layer()], input_shape=shape)
    expected = f"(samples, {', '.join(map(str, shape))})"
    with pytest.raises(ValueError) as info:
        model.predict(np.ones(x_shape))
    message = str(info.value)
    assert message.startswith(f"X has shape {x_shape}, but the first layer (")
    assert message.endswith(f") expects {expected}; {advice}")
    assert "input_shape=" not in message  # no rebuild with a shape the first layer cannot take
    if "X[" in advice or "reshape" in advice or "transpose" in advice:  # the advice works
        fix = advice.split(": ")[-1] if ": " in advice else advice.split(" with ")[-1]
        fixed = eval(fix, {"X": np.ones(x_shape), "len": len})
        assert model.predict(fixed).shape[0] == 2


# -- reprs show every non-default constructor argument ---------------------------------------------------


def test_reprs_of_the_hunts_examples():
    assert repr(fnn.RNN(2, 3, nonlinearity="relu")) == "RNN(2, 3, nonlinearity='relu')"
    assert repr(fnn.Dense(1, 2, activation="leaky_relu", negative_slope=0.3)) == (
        "Dense(1, 2, activation='leaky_relu', negative_slope=0.3)"
    )
    assert repr(fnn.Conv2d(1, 2, 3, activation="leaky_relu", negative_slope=0.3)) == (
        "Conv2d(1, 2, kernel_size=(3, 3), activation='leaky_relu', negative_slope=0.3)"
    )
    assert (
        repr(fnn.Conv1d(1, 2, 3, activation="elu", alpha=2.0))
        == "Conv1d(1, 2, kernel_size=3, activation='elu', alpha=2.0)"
    )
    # defaults, including those an argument implies (an activation's initialiser), stay unprinted
    assert repr(fnn.Dense(3, 2, activation="relu", init="he_normal")) == "Dense(3, 2, activation='relu')"
    assert repr(fnn.Dense(3, 2, activation="leaky_relu")) == "Dense(3, 2, activation='leaky_relu')"
    assert repr(fnn.LSTM(2, 3)) == "LSTM(2, 3)" and repr(fnn.Embedding(5, 3)) == "Embedding(5, 3)"
    assert repr(fnn.Dense(3, 2, init="zeros", bias=False)) == "Dense(3, 2, init='zeros', bias=False)"
    assert repr(fnn.Embedding(5, 3, init="zeros")) == "Embedding(5, 3, init='zeros')"
    model = fnn.Sequential([fnn.RNN(2, 3, nonlinearity="relu")], input_shape=(4, 2))
    assert "RNN(2, 3, nonlinearity='relu')" in model.summary(print_fn=None)


def _variants():
    from tests.layer_cases import CASES

    yield from (case.make() for case in CASES)
    yield from [
        fnn.Dense(3, 2, init="zeros"),
        fnn.Dense(3, 2, bias=False),
        fnn.Dense(3, 2, bias_init="ones"),
        fnn.Dense(3, 2, activation="elu", alpha=0.5),
        fnn.Dense(3, 2, activation="leaky_relu", negative_slope=0.3),
        fnn.Conv2d(1, 2, 3, activation="leaky_relu", negative_slope=0.3),
        fnn.Conv2d(1, 2, 3, init="zeros"),
        fnn.Conv1d(1, 2, 3, bias_init="ones"),
        fnn.Conv1d(1, 2, 3, activation="elu", alpha=0.5),
        fnn.RNN(2, 3, nonlinearity="relu"),
        fnn.LSTM(2, 3, return_sequences=False, bias=False),
        fnn.GRU(2, 3, bidirectional=True, learn_initial_state=True),
        fnn.Embedding(5, 3, init="zeros"),
        fnn.Embedding(5, 3, padding_idx=0, mask_padding=True),
        fnn.MaxPool2d(2, stride=1),
        fnn.AvgPool1d(3, padding=1, count_include_pad=False),
        fnn.BatchNorm1d(3, momentum=None),
        fnn.LayerNorm(3, eps=1e-3),
        fnn.Dropout(0.3),
    ]


def test_reprs_tell_apart_layers_of_different_configurations():
    """Two layers of one class print alike only when their configurations are equal, and each
    argument at a value other than its default is printed by name or in its leading position."""
    seen: dict = {}
    for layer in _variants():
        config, text = layer.get_config(), repr(layer)
        other = seen.setdefault((type(layer), text), config)
        assert other == config, f"{text} prints two configurations: {other} and {config}"
        if layer.sublayers() or isinstance(layer, fnn.TimeDistributed):
            continue  # built from nested configs: its repr lists the inner layers' reprs
        call = ast.parse(text, mode="eval").body  # a repr reads as the constructor call
        positional = [ast.literal_eval(arg) for arg in call.args]
        named = {keyword.arg for keyword in call.keywords}
        for i, (key, value) in enumerate(config.items()):
            if i < len(positional):
                assert _tuples(positional[i]) == _tuples(value), (text, key)
            elif key not in named:
                rest = {k: v for k, v in config.items() if k != key}
                assert type(layer)(**rest).get_config().get(key) == value, f"{text} hides {key}={value!r}"


def _tuples(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value


def test_a_dense_embedding_table_gets_weight_decay_as_torch_gives_it():
    """AdamW decays every row of a dense table (looked up or not), as torch.optim.AdamW does."""
    torch = pytest.importorskip("torch")
    model = fnn.Sequential([fnn.Embedding(10, 4), fnn.Flatten(), fnn.Dense(12, 2)], input_shape=(3,), seed=0)
    model = model.compile("cross_entropy", fnn.optim.AdamW(lr=0.1, weight_decay=0.5), decay_bias_and_norm=False)
    ids, y = np.array([[1, 2, 3]] * 8), np.array([0, 1] * 4)
    table = torch.nn.Parameter(torch.tensor(model.layers[0].weight.astype(np.float64)))
    opt = torch.optim.AdamW([table], lr=0.1, weight_decay=0.5)
    table.grad = torch.zeros_like(table)
    opt.step()  # rows never looked up: only the decay moves them
    model.fit(ids, y, epochs=1, batch_size=8, verbose=0)
    np.testing.assert_allclose(model.layers[0].weight[4:], table.detach().numpy()[4:], rtol=1e-6)
    assert not np.allclose(model.layers[0].weight[4:], table.detach().numpy()[4:] / 0.95)


class _Half(fnn.layers.Layer):
    """A user layer whose NumPy result is float64 (promotion) in a float32 model."""

    def forward(self, x, training):
        return x.astype(np.float64) * 0.5

    def backward(self, grad_y, need_grad_x=True):
        return grad_y * np.full(grad_y.shape[1], 0.5)


class _Flip(fnn.layers.Layer):
    """A user layer returning negative-stride views."""

    def forward(self, x, training):
        return x[:, ::-1]

    def backward(self, grad_y, need_grad_x=True):
        return grad_y[:, ::-1]


@pytest.mark.parametrize("user", [_Half, _Flip])
def test_a_user_layer_s_arrays_reach_the_next_kernels_as_the_model_s_dtype_and_contiguous(user):
    """The next built-in layer read a float64 result or a reversed view as raw memory (1e19s)."""
    X = np.arange(6, dtype=np.float32).reshape(2, 3)
    model = fnn.Sequential([user(), fnn.Dense(3, 2, init="ones", bias=False)], seed=0)
    model.compile("mse", "sgd")
    y_user = user().forward(X, False)
    np.testing.assert_allclose(model.predict(X), np.repeat(y_user.sum(axis=1, keepdims=True), 2, axis=1))
    target = np.zeros((2, 2), np.float32)
    _, grads = model.loss_and_grads(X, target)
    grad_out = 2 * (model.predict(X) - target) / target.size  # mse's gradient
    np.testing.assert_allclose(grads["1.weight"], np.asarray(y_user, np.float32).T @ grad_out, rtol=1e-6)


def test_user_layer_mistakes_are_named():
    class WrongShape(fnn.layers.Layer):
        def forward(self, x, training):
            return x[:, :2]

        def backward(self, grad_y, need_grad_x=True):
            return np.pad(grad_y, ((0, 0), (0, 1)))

    class AList(fnn.layers.Layer):
        def forward(self, x, training):
            return x.tolist()

    class NoBackward(fnn.layers.Layer):
        def forward(self, x, training):
            return 2 * x

    X, y = np.ones((5, 3), np.float32), np.zeros((5, 2), np.float32)
    with pytest.raises(ValueError, match=r"WrongShape\(\).forward\(\) returned shape \(5, 2\).*\(batch, 3\).*build"):
        fnn.Sequential([WrongShape(), fnn.Dense(3, 2)], seed=0).predict(X)
    with pytest.raises(TypeError, match=r"AList\(\).forward\(\) returned list"):
        fnn.Sequential([AList(), fnn.Dense(3, 2)], seed=0).predict(X)
    model = fnn.Sequential([NoBackward(), fnn.Dense(3, 2)], seed=0).compile("mse", "sgd")
    with pytest.raises(NotImplementedError, match="NoBackward overrides forward but not backward"):
        model.fit(X, y, epochs=1, verbose=0)


def test_containers_refuse_a_user_layer_inside_with_the_reason():
    """(they said "implements neither forward_calls nor forward" of a layer that has forward)"""
    with pytest.raises(NotImplementedError, match=r"Residual: block layer 0 \(_Flip\(\)\) runs its own NumPy"):
        fnn.Sequential([fnn.Residual([_Flip()])], input_shape=(4,), seed=0)
    with pytest.raises(NotImplementedError, match=r"TimeDistributed: its layer \(_Flip\(\)\) runs its own NumPy"):
        fnn.Sequential([fnn.TimeDistributed(_Flip())], input_shape=(3, 4), seed=0)


def test_a_constructor_argument_set_on_a_layer_in_a_model_is_checked_as_the_constructor_checks_it():
    """ELU.alpha = -1 and BatchNorm1d.momentum = 5 (NaN statistics) were taken; LeakyReLU's
    negative_slope (kept as alpha) was stored beside it and changed nothing computed; a change of
    output shape was only refused at the next call, leaving the model broken until undone."""
    model = fnn.Sequential(
        [fnn.Dense(2, 3), fnn.ELU(), fnn.LeakyReLU(0.1), fnn.BatchNorm1d(3), fnn.Dense(3, 1)], dtype="float64"
    )
    x = np.random.default_rng(0).standard_normal((4, 2))
    before = model.predict(x)
    with pytest.raises(ValueError, match="alpha"):
        model[1].alpha = -1.0
    with pytest.raises(ValueError, match="momentum"):
        model[3].momentum = 5
    with pytest.raises(AttributeError, match="negative_slope.*another attribute"):
        model[2].negative_slope = 0.5
    with pytest.raises(ValueError, match="output shape or parameters"):
        model[0].out_features = 4
    assert (model[1].alpha, model[3].momentum, model[0].out_features) == (1.0, 0.1, 3)
    assert "negative_slope" not in vars(model[2])
    np.testing.assert_array_equal(model.predict(x), before)  # nothing changed, the model still works
    model[3].momentum = 0.2  # a valid change is kept, and saved
    model[1].alpha = 2  # kept as the constructor keeps it
    assert isinstance(model[1].alpha, float) and model.get_config()["layers"][3]["config"]["momentum"] == 0.2
    conv = fnn.Sequential([fnn.Conv2d(1, 2, 3)], input_shape=(1, 5, 5))
    conv[0].dilation = 1
    assert conv[0].dilation == (1, 1)
    model[0].note = "any other attribute"  # not a constructor argument: stored as it is
    assert model[0].note == "any other attribute"
