"""model.to_torch() and fnn.from_torch(module): every row of the layer table makes the round trip
fastnn -> torch -> fastnn with equal outputs in float64, in evaluation and (where the layer is
deterministic) training mode; plus whole models, running statistics and the refusals."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import fastnn as fnn
from fastnn.interop import torch_adapters
from tests._helpers import randomize
from tests.layer_cases import CASES

REFUSED = {"masking": "Masking"}  # layer case -> the name the refusal must give
RTOL = 1e-10


def torch_out(module, x):
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def fastnn_out(model, x, training):
    return model.predict(x) if not training else model.forward(x, True).copy()


def check_round_trip(model, x, training=False):
    """to_torch(model) and from_torch(to_torch(model)) compute model's outputs on x in the mode given."""
    model.train(training)
    module = model.to_torch()
    assert module.training == training
    want = fastnn_out(model, x, training)
    np.testing.assert_allclose(torch_out(module, x), want, rtol=RTOL, atol=1e-12)
    has_tensors = any(True for _ in module.parameters()) or any(t.is_floating_point() for t in module.buffers())
    back = fnn.from_torch(module, input_shape=model.input_shape, dtype=None if has_tensors else model.dtype)
    assert back.dtype == model.dtype and back.training == training
    np.testing.assert_allclose(fastnn_out(back, x, training), want, rtol=RTOL, atol=1e-12)
    return module, back


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_layer_case_round_trip(case):
    model = randomize(fnn.Sequential([case.make()], dtype="float64", input_shape=case.shape))
    if case.id in REFUSED:
        with pytest.raises(NotImplementedError, match=REFUSED[case.id]):
            model.to_torch()
        return
    x = case.inputs(np.random.default_rng(1), 3, case.shape, np.float64)
    check_round_trip(model, x, training=False)
    if case.deterministic:
        check_round_trip(model, x, training=True)


def test_options_beyond_the_table():
    """Learned initial states, a causal encoder block, batch norm inside a residual block (nested
    buffers), a convolution with its activation inside TimeDistributed, ELU and LeakyReLU slopes."""
    models = [
        fnn.Sequential(
            [
                fnn.LSTM(3, 2, num_layers=2, bidirectional=True, learn_initial_state=True),
                fnn.GRU(4, 3, learn_initial_state=True, return_sequences=False),
            ],
            dtype="float64",
            input_shape=(4, 3),
        ),
        fnn.Sequential(
            [fnn.TransformerEncoderBlock(4, 2, 6, causal=True), fnn.GlobalAvgPool(axis="time")],
            dtype="float64",
            input_shape=(3, 4),
        ),
        fnn.Sequential(
            [fnn.Residual([fnn.Dense(4, 4), fnn.BatchNorm1d(4), fnn.ELU(0.5)]), fnn.LeakyReLU(0.3)],
            dtype="float64",
            input_shape=(4,),
        ),
        fnn.Sequential(
            [fnn.TimeDistributed(fnn.Conv1d(2, 3, 2, activation="leaky_relu", negative_slope=0.2)), fnn.Flatten()],
            dtype="float64",
            input_shape=(3, 2, 5),
        ),
        fnn.Sequential(
            [fnn.Residual([fnn.GRU(3, 3, learn_initial_state=True)]), fnn.LastStep()],
            dtype="float64",
            input_shape=(4, 3),
        ),
    ]
    for i, model in enumerate(models):
        randomize(model, seed=i)
        x = np.random.default_rng(i).standard_normal((3, *model.input_shape)).astype(model.dtype)
        check_round_trip(model, x, training=False)


def test_batchnorm_running_statistics_carry_over():
    model = randomize(
        fnn.Sequential([fnn.Conv2d(2, 3, 2), fnn.BatchNorm2d(3, momentum=0.3)], dtype="float64", input_shape=(2, 4, 4))
    )
    model.forward(np.random.default_rng(0).standard_normal((5, 2, 4, 4)), True)  # one training step's statistics
    module = model.to_torch()
    bn = module[1]
    layer = model.layers[1]
    np.testing.assert_array_equal(bn.running_mean.numpy(), layer.running_mean)
    np.testing.assert_array_equal(bn.running_var.numpy(), layer.running_var)
    assert int(bn.num_batches_tracked) == int(layer.num_batches_tracked[0]) == 1
    x = np.random.default_rng(1).standard_normal((4, 2, 4, 4))
    with torch.no_grad():  # a training step in torch moves its statistics as fastnn's would
        module.train()(torch.from_numpy(x))
    back = fnn.from_torch(module, input_shape=(2, 4, 4))
    model.forward(x, True)
    np.testing.assert_allclose(back.layers[1].running_mean, layer.running_mean, rtol=RTOL)
    np.testing.assert_allclose(back.layers[1].running_var, layer.running_var, rtol=RTOL)
    assert int(back.layers[1].num_batches_tracked[0]) == 2


def test_torch_models_become_equal_fastnn_models():
    """Written in torch, run in fastnn: an MLP, a CNN, an LSTM classifier (adapter), an encoder."""
    torch.manual_seed(0)
    a = torch_adapters
    cases = [
        (
            nn.Sequential(
                nn.Sequential(nn.Linear(6, 8), nn.ReLU()),
                nn.BatchNorm1d(8),
                nn.Dropout(0.2),
                nn.Linear(8, 3),
                nn.Softmax(dim=1),
            ),
            (6,),
        ),
        (
            nn.Sequential(
                nn.Conv2d(1, 4, 3, padding="same"),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(4, 4, 3, groups=2),
                nn.AvgPool2d(2, padding=1),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(4, 2),
            ),
            (1, 8, 8),
        ),
        (
            nn.Sequential(
                nn.Embedding(10, 4, padding_idx=0),
                a.Recurrent(nn.GRU(4, 5, batch_first=True, bidirectional=True)),
                a.Recurrent(nn.LSTM(10, 3, num_layers=2, batch_first=True), return_sequences=False),
                nn.Linear(3, 2),
            ),
            (6,),
        ),
        (
            nn.Sequential(
                nn.Linear(3, 8),
                a.PositionalEncoding(50, 8),
                nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True),
                nn.LayerNorm(8),
                a.LastStep(),
            ),
            (5, 3),
        ),
    ]
    for i, (module, shape) in enumerate(cases):
        module = module.double().eval()
        rng = np.random.default_rng(i)
        x = rng.integers(0, 10, (4, *shape)) if i == 2 else rng.standard_normal((4, *shape))
        if i == 0:
            module[1].running_mean.uniform_(-1, 1)
        model = fnn.from_torch(module, input_shape=shape)
        assert model.dtype == np.float64 and not model.training
        np.testing.assert_allclose(model.predict(x), torch_out(module, x), rtol=RTOL, atol=1e-12)


def test_float32_and_modes():
    module = nn.Sequential(nn.Linear(4, 3), nn.Tanh())  # float32, training mode
    model = fnn.from_torch(module)
    assert model.dtype == np.float32 and model.training
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x), torch_out(module, x), rtol=1e-6, atol=1e-6)
    assert model.eval().to_torch()[0].weight.dtype == torch.float32 and not model.to_torch().training


def test_refusals_name_the_module():
    with pytest.raises(NotImplementedError, match="LSTM.*tuple.*Recurrent"):
        fnn.from_torch(nn.Sequential(nn.LSTM(3, 4, batch_first=True)), input_shape=(2, 3))
    with pytest.raises(NotImplementedError, match="batch_first"):
        fnn.from_torch(torch_adapters.Recurrent(nn.GRU(3, 4)), input_shape=(2, 3))
    with pytest.raises(NotImplementedError, match="Hardswish"):
        fnn.from_torch(nn.Sequential(nn.Linear(2, 2), nn.Hardswish()))
    with pytest.raises(NotImplementedError, match="AdaptiveAvgPool2d.*Flatten"):
        fnn.from_torch(nn.Sequential(nn.AdaptiveAvgPool2d(1)), input_shape=(1, 3, 3))
    with pytest.raises(NotImplementedError, match="dim=1"):
        fnn.from_torch(nn.Sequential(nn.Softmax(dim=1)), input_shape=(2, 3))
    with pytest.raises(NotImplementedError, match="padding_mode|zeros"):
        fnn.from_torch(nn.Conv1d(1, 1, 3, padding=1, padding_mode="reflect"), input_shape=(1, 5))
    with pytest.raises(ValueError, match="input_shape"):
        fnn.from_torch(nn.Sequential(nn.Conv1d(1, 1, 3)))
    masked = fnn.Sequential([fnn.Embedding(5, 2, padding_idx=0, mask_padding=True), fnn.LastStep()], input_shape=(3,))
    with pytest.raises(NotImplementedError, match="Embedding"):
        masked.to_torch()


def test_adapters_pickle():
    import pickle

    module = fnn.Sequential([fnn.Dense(3, 4), fnn.Reshape((2, 2)), fnn.LastStep()]).to_torch()
    again = pickle.loads(pickle.dumps(module))
    x = torch.randn(2, 3)
    assert torch.equal(again(x), module(x))


def test_a_convolution_then_softmax_inside_time_distributed_is_refused():
    """A convolution fuses elementwise activations only (a row-wise softmax fused into it was skipped:
    outputs off by about 2); from_torch refuses the pair inside TimeDistributed instead of folding it."""
    nn, adapters = torch.nn, torch_adapters.adapters
    module = nn.Sequential(adapters().TimeDistributed(nn.Sequential(nn.Conv1d(2, 3, 2), nn.Softmax(dim=-1))))
    with pytest.raises(NotImplementedError, match="a convolution an elementwise one"):
        fnn.from_torch(module.double(), input_shape=(3, 2, 5))
    relu = nn.Sequential(adapters().TimeDistributed(nn.Sequential(nn.Conv1d(2, 3, 2), nn.ReLU())))
    assert fnn.from_torch(relu.double(), input_shape=(3, 2, 5)).layers[0].layer.activation == "relu"


def test_a_softmax_fused_into_a_linear_inside_time_distributed_keeps_its_axis():
    """TimeDistributed(Linear, Softmax(dim=1)) on steps of shape (3, 4): torch's softmax acts on the
    axis of size 3, not the last; fusing it into the Dense dropped that check (outputs off by 0.4)."""
    a = torch_adapters.adapters()
    for softmax in (nn.Softmax(dim=1), nn.LogSoftmax(dim=1), nn.Softmax()):
        module = nn.Sequential(a.TimeDistributed(nn.Sequential(nn.Linear(4, 5), softmax))).double()
        with pytest.raises(NotImplementedError, match=r"Softmax.*axis other than the last.*\(batch, 3, 5\)"):
            fnn.from_torch(module, input_shape=(2, 3, 4))
    module = nn.Sequential(a.TimeDistributed(nn.Sequential(nn.Linear(4, 5), nn.Softmax(dim=2)))).double()
    model = fnn.from_torch(module, input_shape=(2, 3, 4))  # dim=2: the last axis of the steps' (batch, 3, 5)
    x = np.random.default_rng(0).standard_normal((2, 2, 3, 4))
    np.testing.assert_allclose(model.predict(x), torch_out(module.eval(), x), rtol=RTOL, atol=1e-12)


def test_a_module_whose_parts_are_in_different_modes_is_refused():
    """A Dropout left in eval mode inside a training module: fastnn's mode is the model's, so the
    converted model dropped units. A BatchNorm in eval mode there is fastnn's frozen BatchNorm only
    with requires_grad=False (torch's fine-tuning recipe, tests/test_freeze_batchnorm.py); with
    trainable parameters it is refused (it was refused for its mode before frozen BatchNorms
    trained in inference mode)."""
    module = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Dropout(0.2)).double().train()
    module[2].eval()
    with pytest.raises(NotImplementedError, match=r"Dropout.*eval mode.*module\.train\(\) or module\.eval\(\)"):
        fnn.from_torch(module)
    module[2].train()
    module[1].eval()
    with pytest.raises(NotImplementedError, match=r"BatchNorm1d.*eval mode.*require grad.*requires_grad_\(False\)"):
        fnn.from_torch(module)
    assert fnn.from_torch(module.eval()).training is False


def test_a_sequential_subclass_with_its_own_forward_is_refused():
    """Its modules were unrolled and its forward (here: doubling the output) silently ignored."""

    class Doubled(nn.Sequential):
        def forward(self, x):
            return 2 * super().forward(x)

    class Plain(nn.Sequential):
        pass

    with pytest.raises(NotImplementedError, match="Doubled.*own forward"):
        fnn.from_torch(nn.Sequential(nn.Linear(4, 3), Doubled(nn.Linear(3, 2))))
    module = Plain(nn.Linear(4, 3), nn.Tanh()).double()
    x = np.random.default_rng(0).standard_normal((2, 4))
    np.testing.assert_allclose(fnn.from_torch(module).predict(x), torch_out(module, x), rtol=RTOL)


def test_inputs_from_torch_cannot_take_get_clear_errors():
    """A subclass of nn.LSTM in the Recurrent adapter (was a bare KeyError), bfloat16 weights (a
    TypeError from numpy) and a list of modules (an AttributeError)."""

    class MyLSTM(nn.LSTM):
        pass

    with pytest.raises(NotImplementedError, match="MyLSTM.*nn.LSTM, nn.GRU or nn.RNN"):
        fnn.from_torch(torch_adapters.Recurrent(MyLSTM(3, 4, batch_first=True)), input_shape=(2, 3))
    half = nn.Sequential(nn.Linear(3, 2)).to(torch.bfloat16)
    model = fnn.from_torch(half)
    assert model.dtype == np.float32
    np.testing.assert_array_equal(model.layers[0].weight, half[0].weight.detach().float().numpy().T)
    with pytest.raises(TypeError, match=r"module.*torch\.nn\.Module.*list.*nn\.Sequential\(\*modules\)"):
        fnn.from_torch([nn.Linear(3, 2)])


def test_frozen_parameters_cross_over_both_ways():
    """requires_grad=False on all of a module's parameters becomes trainable=False (a fit then leaves
    them unchanged, as torch's optimizer would), and a frozen layer gives modules without
    gradients; a module or layer frozen in part is refused (fastnn freezes whole layers)."""
    module = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    module[0].requires_grad_(False)
    model = fnn.from_torch(module)
    assert [layer.trainable for layer in model.layers] == [False, True, True]
    before = model.layers[0].weight.copy()
    rng = np.random.default_rng(0)
    model.compile("mse", fnn.optim.SGD(lr=0.1))
    model.fit(rng.standard_normal((8, 4)), rng.standard_normal((8, 3)), epochs=1, batch_size=4, verbose=0)
    np.testing.assert_array_equal(model.layers[0].weight, before)
    assert [p.requires_grad for p in model.to_torch().parameters()] == [False, False, True, True]

    module[2].bias.requires_grad_(False)  # the second Linear's weight trains, its bias does not
    with pytest.raises(NotImplementedError, match="requires_grad=False and others not"):
        fnn.from_torch(module)
    block = fnn.Sequential([fnn.Residual([fnn.Dense(4, 4), fnn.Dense(4, 4)])], input_shape=(4,))
    block.layers[0].block[0].trainable = False
    with pytest.raises(NotImplementedError, match="frozen .*and others not"):
        block.to_torch()
    block.layers[0].trainable = False
    assert not any(p.requires_grad for p in block.to_torch().parameters())
