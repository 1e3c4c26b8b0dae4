"""The convolutional family as layers of a model: torch equivalence of outputs and every gradient
(stride/padding/dilation/groups combinations), init fans, clear errors, save/load, summary."""

import numpy as np
import pytest

import fastnn as fnn

torch = pytest.importorskip("torch")

CONV2D_CASES = [
    dict(in_channels=3, out_channels=4, kernel_size=3),
    dict(in_channels=2, out_channels=4, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0)),
    dict(in_channels=4, out_channels=4, kernel_size=3, padding="same", dilation=2, groups=2),
    dict(in_channels=3, out_channels=6, kernel_size=3, padding=1, groups=3),  # depthwise, multiplier 2
    dict(in_channels=2, out_channels=3, kernel_size=4, padding="same"),  # even kernel: asymmetric padding
    dict(in_channels=2, out_channels=3, kernel_size=1, bias=False),
]
CONV1D_CASES = [
    dict(in_channels=3, out_channels=5, kernel_size=3),
    dict(in_channels=4, out_channels=2, kernel_size=5, stride=2, padding=2, dilation=1),
    dict(in_channels=4, out_channels=4, kernel_size=3, padding="same", dilation=3, groups=4),
]


def _check_against_torch(layer, module, x, rng):
    """The torch module's parameters move into the fastnn layer as they are (same names and
    layouts); then outputs and every gradient must agree in float64."""
    model = fnn.Sequential([layer], dtype="float64", input_shape=x.shape[1:])
    values = {name.split(".", 1)[1]: value for name, value, _ in model.named_parameters()}
    for name, param in module.named_parameters():
        values[name][...] = param.detach().numpy()
    out = model.forward(x, training=True)
    grad_out = rng.standard_normal(out.shape)
    grad_x = model.backward(grad_out)
    xt = torch.from_numpy(x).requires_grad_()
    yt = module(xt)
    (yt * torch.from_numpy(grad_out)).sum().backward()
    np.testing.assert_allclose(out, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad_x, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    grads = {name.split(".", 1)[1]: g for name, _, g in model.named_parameters()}
    assert sorted(grads) == sorted(name for name, _ in module.named_parameters())
    for name, param in module.named_parameters():
        np.testing.assert_allclose(grads[name], param.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("kwargs", CONV2D_CASES)
def test_conv2d_matches_torch(kwargs, rng):
    x = rng.standard_normal((2, kwargs["in_channels"], 7, 6))
    _check_against_torch(fnn.Conv2d(**kwargs), torch.nn.Conv2d(**kwargs).double(), x, rng)


@pytest.mark.parametrize("kwargs", CONV1D_CASES)
def test_conv1d_matches_torch(kwargs, rng):
    x = rng.standard_normal((3, kwargs["in_channels"], 11))
    _check_against_torch(fnn.Conv1d(**kwargs), torch.nn.Conv1d(**kwargs).double(), x, rng)


def test_conv_with_fused_activation_matches_torch(rng):
    x = rng.standard_normal((2, 3, 6, 6))
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.GELU()).double()
    layer = fnn.Conv2d(3, 4, 3, padding=1, activation="gelu")
    model = fnn.Sequential([layer], dtype="float64", input_shape=(3, 6, 6))
    model.layers[0].weight[...] = module[0].weight.detach().numpy()
    model.layers[0].bias[...] = module[0].bias.detach().numpy()
    np.testing.assert_allclose(model.predict(x), module(torch.from_numpy(x)).detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "fnn_layer, torch_layer, shape",
    [
        (lambda: fnn.MaxPool2d(2), lambda: torch.nn.MaxPool2d(2), (3, 6, 7)),
        (lambda: fnn.MaxPool2d(3, stride=2, padding=1), lambda: torch.nn.MaxPool2d(3, stride=2, padding=1), (2, 7, 7)),
        (lambda: fnn.AvgPool2d(2, padding=1), lambda: torch.nn.AvgPool2d(2, padding=1), (2, 5, 6)),
        (
            lambda: fnn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
            lambda: torch.nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
            (2, 4, 4),
        ),
        (lambda: fnn.MaxPool1d(3, stride=2), lambda: torch.nn.MaxPool1d(3, stride=2), (2, 9)),
        (lambda: fnn.AvgPool1d(2), lambda: torch.nn.AvgPool1d(2), (3, 8)),
        (
            lambda: fnn.GlobalAvgPool(),
            lambda: torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()),
            (3, 5, 4),
        ),
        (lambda: fnn.BatchNorm2d(3), lambda: torch.nn.BatchNorm2d(3), (3, 4, 5)),
        (lambda: fnn.BatchNorm1d(3), lambda: torch.nn.BatchNorm1d(3), (3, 6)),
        (lambda: fnn.Flatten(), lambda: torch.nn.Flatten(), (2, 3, 4)),
    ],
)
def test_pooling_norm_and_shape_layers_match_torch(fnn_layer, torch_layer, shape, rng):
    x = rng.standard_normal((4, *shape))
    _check_against_torch(fnn_layer(), torch_layer().double(), x, rng)


def test_batchnorm2d_running_statistics_match_torch(rng):
    layer, module = fnn.BatchNorm2d(3), torch.nn.BatchNorm2d(3).double()
    model = fnn.Sequential([layer], dtype="float64", input_shape=(3, 4, 4))
    for _ in range(3):
        x = rng.standard_normal((5, 3, 4, 4)) * 2 + 1
        model.forward(x, training=True)
        module(torch.from_numpy(x))
    np.testing.assert_allclose(layer.running_mean, module.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, module.running_var.numpy(), rtol=1e-12)
    module.eval()
    x = rng.standard_normal((2, 3, 4, 4))
    np.testing.assert_allclose(model.predict(x), module(torch.from_numpy(x)).detach().numpy(), rtol=1e-10, atol=1e-12)


def test_embedding_matches_torch_and_padding_row_gets_no_gradient(rng):
    layer = fnn.Embedding(20, 4, padding_idx=3)
    model = fnn.Sequential([layer, fnn.Flatten(), fnn.Dense(20, 2)], dtype="float64", input_shape=(5,))
    weight = np.array(layer.weight)
    assert np.all(weight[3] == 0)
    module = torch.nn.Embedding(20, 4, padding_idx=3).double()
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(weight))
    idx = rng.integers(0, 20, (6, 5))
    idx[0, 0] = 3
    out = model.layer_outputs(idx)[0]
    np.testing.assert_array_equal(out, module(torch.from_numpy(idx)).detach().numpy())
    model.forward(idx, training=True)
    assert model.backward(rng.standard_normal((6, 2))) is None  # no gradient for integer input
    assert np.all(layer.grad_weight[3] == 0)
    model.compile("cross_entropy", "adam")
    with pytest.raises(ValueError, match="index 20, outside"):
        model.predict(np.full((1, 5), 20))
    with pytest.raises(TypeError, match="integer indices"):
        model.predict(np.full((1, 5), 1.5))
    with pytest.raises(ValueError, match="must be the model's first layer"):
        fnn.Sequential([fnn.Dense(3, 3), fnn.Embedding(3, 2)])


def test_conv_init_uses_torch_fans():
    layer = fnn.Conv2d(8, 16, 3, groups=2, init="he_normal")
    assert layer._fans() == (8 // 2 * 9, 16 * 9)
    model = fnn.Sequential([fnn.Conv2d(8, 64, 3, activation="relu")], input_shape=(8, 16, 16), dtype="float64")
    std = float(np.std(model.layers[0].weight))
    assert abs(std - np.sqrt(2.0 / (8 * 9))) < 0.1 * np.sqrt(2.0 / (8 * 9))  # He: gain^2 / fan_in


@pytest.mark.parametrize(
    "build, pattern",
    [
        (lambda: fnn.Conv2d(3, 4, 5), r"kernel.*larger than the padded input"),
        (lambda: fnn.Conv2d(3, 4, 3, groups=2), r"divisible by groups"),
        (lambda: fnn.Conv2d(2, 4, 3), r"expects 2 input channels"),
        (lambda: fnn.Conv1d(3, 4, 3), r"takes input \(batch, channels, length\)"),
        (lambda: fnn.Conv2d(3, 4, 3, stride=2, padding="same"), r"padding='same' needs stride 1"),
        (lambda: fnn.MaxPool2d(5), r"larger than the padded input"),
        (lambda: fnn.BatchNorm2d(4), r"expects 4 features on the channel axis; set layer 0.s num_features to 3"),
        (lambda: fnn.Reshape((5, 5)), r"cannot reshape"),
    ],
)
def test_conv_family_errors_are_clear(build, pattern):
    with pytest.raises(ValueError, match=pattern):
        fnn.Sequential([build()], input_shape=(3, 4, 4))


@pytest.mark.parametrize("conv", [fnn.Conv1d, fnn.Conv2d])
@pytest.mark.parametrize("activation", ["softmax", "log_softmax", fnn.Softmax()])
def test_conv_refuses_row_wise_activations(conv, activation):
    # the convolution's epilogue is elementwise: softmax used to be skipped, the outputs left as logits
    with pytest.raises(ValueError, match="normalises whole rows.*elementwise activation"):
        conv(2, 3, 3, activation=activation)


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: fnn.Conv1d(2, 3, 3, **kw),
        lambda **kw: fnn.Conv2d(2, 3, 3, **kw),
        lambda **kw: fnn.Dense(2, 3, **kw),
    ],
)
@pytest.mark.parametrize(
    "kwargs, unknown",
    [
        (
            dict(padding_mode="reflect"),
            r"\['padding_mode'\]: without an activation by name",
        ),  # was silently zero padding
        (dict(dilaton=2), r"\['dilaton'\]"),  # a misspelt argument was silently dropped
        (dict(activation=fnn.LeakyReLU(0.2), negative_slope=0.3), r"\['negative_slope'\]"),
        (
            dict(activation="leaky_relu", alpha=0.3),
            r"\['alpha'\] for activation 'leaky_relu' \(it takes 'negative_slope'\)",
        ),
    ],
    ids=["padding_mode", "misspelt", "activation_layer", "other_parameter"],
)
def test_layers_with_an_activation_refuse_unknown_keywords(make, kwargs, unknown):
    with pytest.raises(TypeError, match=rf"unexpected keyword argument\(s\) {unknown}"):
        make(**kwargs)
    assert make(activation="leaky_relu", negative_slope=0.3).alpha == 0.3


@pytest.mark.parametrize("target", [(2.7, 6), "12", True, (3, 4.5)])
def test_reshape_refuses_sizes_that_are_not_integers(target):
    # they used to be truncated: Reshape((2.7, 6)) reshaped 12 features to (2, 6), "12" to (1, 2)
    with pytest.raises(TypeError, match="target_shape must be a tuple of ints"):
        fnn.Reshape(target)


def test_reshape_takes_numpy_integers():
    model = fnn.Sequential([fnn.Reshape(np.int64(12)), fnn.Reshape(np.array([2, -1]))], input_shape=(3, 4))
    assert model.output_shape == (2, 6)
    assert fnn.Reshape((np.int32(3), 4.0)).target_shape == (3, 4)


@pytest.mark.parametrize("pool", [fnn.AvgPool1d, fnn.AvgPool2d])
def test_count_include_pad_must_be_a_bool(pool):
    # a string was taken for its truth value: count_include_pad="no" counted the padding
    with pytest.raises(TypeError, match="count_include_pad must be True or False"):
        pool(3, padding=1, count_include_pad="no")
    assert pool(3, padding=1, count_include_pad=np.bool_(False)).count_include_pad is False


def test_embedding_out_of_range_message_names_the_exact_index():
    model = fnn.Sequential([fnn.Embedding(10, 3)], input_shape=(2,))
    with pytest.raises(ValueError, match=r"holds index 1234567, outside \[0, 10\)"):
        model.predict(np.array([[1, 1234567]]))


def test_cnn_trains_saves_loads_and_summarises(rng, tmp_path):
    X = rng.standard_normal((40, 1, 8, 8)).astype(np.float32)
    y = (X[:, 0, :4].mean(axis=(1, 2)) > X[:, 0, 4:].mean(axis=(1, 2))).astype(int)
    model = fnn.Sequential(
        [
            fnn.Conv2d(1, 4, 3, padding="same", activation="relu"),
            fnn.BatchNorm2d(4),
            fnn.MaxPool2d(2),
            fnn.Dropout(0.1),
            fnn.Conv2d(4, 8, 3),
            fnn.GlobalAvgPool(),
            fnn.Dense(8, 2),
        ],
        seed=0,
    )
    model.compile("cross_entropy", fnn.optim.Adam(lr=1e-2))
    history = model.fit(X, y, epochs=8, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert model.input_shape == (1, 8, 8) and model.predict(X).dtype == np.float32
    text = model.summary(print_fn=None)
    assert (
        "(batch, 4, 8, 8)" in text and "(batch, 8, 2, 2)" in text and f"{4 * 9 + 4 + 8 + 8 * 4 * 9 + 8 + 18:,}" in text
    )
    model.save(tmp_path / "cnn.safetensors")
    loaded = fnn.load(tmp_path / "cnn.safetensors")
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    loaded.fit(X, y, epochs=1, batch_size=8, verbose=0)
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    np.testing.assert_array_equal(loaded.params, model.params)  # exact resume
