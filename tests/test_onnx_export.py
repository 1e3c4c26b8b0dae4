"""ONNX export: every row of the layer table and a few whole models, checked by onnx.checker (inside
the export) and by onnxruntime giving model.predict's outputs at several batch sizes."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import fastnn as fnn
from tests._helpers import randomize
from tests.layer_cases import CASES

BATCHES = (1, 3, 17)


def check_against_runtime(model, path, draw=None, opset=17, atol=1e-5, batches=BATCHES):
    """Export ``model`` to ``path``; one onnxruntime session must give predict's outputs at every batch size."""
    proto = model.export_onnx(path, opset=opset)
    assert proto.opset_import[0].version == opset
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(7)
    for batch in batches:
        x = draw(rng, batch) if draw else rng.standard_normal((batch, *model.input_shape))
        x = x if x.dtype.kind == "i" else x.astype(model.dtype)
        got = session.run(None, {"input": x if x.dtype.kind == "i" else x.astype(np.float32)})[0]
        want = model.predict(x)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=atol, err_msg=f"batch {batch}")


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_layer_case_exports_and_runs_equal(case, tmp_path):
    model = randomize(fnn.Sequential([case.make()], input_shape=case.shape, seed=0))

    def draw(rng, batch):
        return case.inputs(rng, batch, case.shape, np.float32)

    check_against_runtime(model, tmp_path / "m.onnx", draw)


def test_whole_models(tmp_path):
    """An MLP with batch norm and dropout, a LeNet-like CNN, an LSTM classifier and an encoder stack."""
    models = [
        fnn.Sequential(
            [fnn.Dense(6, 8, activation="relu"), fnn.BatchNorm1d(8), fnn.Dropout(0.5), fnn.Dense(8, 3), fnn.Softmax()]
        ),
        fnn.Sequential(
            [
                fnn.Conv2d(1, 4, 3, padding="same", activation="relu"),
                fnn.MaxPool2d(2),
                fnn.Conv2d(4, 6, 3, activation="tanh"),
                fnn.AvgPool2d(2),
                fnn.Flatten(),
                fnn.Dense(6, 5, activation="elu"),
                fnn.Dense(5, 2),
            ],
            input_shape=(1, 10, 10),
        ),
        fnn.Sequential(
            [
                fnn.Embedding(20, 4),
                fnn.LSTM(4, 5, num_layers=2, bidirectional=True, learn_initial_state=True),
                fnn.LSTM(10, 3, return_sequences=False),
                fnn.Dense(3, 2),
            ],
            input_shape=(6,),
        ),
        fnn.Sequential(
            [
                fnn.Dense(3, 8),
                fnn.PositionalEncoding(),
                fnn.TransformerEncoderBlock(8, 2, 16),
                fnn.TransformerEncoderBlock(8, 4, 12, activation="gelu", norm_first=True, causal=True),
                fnn.GlobalAvgPool(axis="time"),
                fnn.Dense(8, 1),
            ],
            input_shape=(5, 3),
        ),
    ]
    draws = [None, None, lambda rng, batch: rng.integers(0, 20, (batch, 6)), None]
    for i, (model, draw) in enumerate(zip(models, draws)):
        randomize(model, seed=i)
        model.layers[-1].training = True  # the model's mode does not matter: the export is evaluation mode
        check_against_runtime(model, tmp_path / f"m{i}.onnx", draw)


def test_options_beyond_the_table(tmp_path):
    """Layer options no table row has: no running statistics, learned GRU/RNN states, LeakyReLU's
    slope, pooling without counting the padding, a GELU(tanh) Dense, opset 18 (ReduceMean's axes input)."""
    models = [
        fnn.Sequential(
            [
                fnn.BatchNorm1d(3, track_running_stats=False),
                fnn.LeakyReLU(0.3),
                fnn.Dense(3, 2, activation="gelu_tanh"),
            ],
            input_shape=(3,),
        ),
        fnn.Sequential(
            [
                fnn.BatchNorm2d(2, affine=False, track_running_stats=False),
                fnn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
                fnn.GlobalAvgPool(),
            ],
            input_shape=(2, 5, 5),
        ),
        fnn.Sequential(
            [
                fnn.GRU(3, 4, learn_initial_state=True, bidirectional=True),
                fnn.RNN(8, 2, num_layers=2, learn_initial_state=True, return_sequences=False),
            ],
            input_shape=(4, 3),
        ),
        fnn.Sequential(
            [
                fnn.LayerNorm(4, elementwise_affine=False),
                fnn.Residual([fnn.LSTM(4, 4)]),
                fnn.GlobalAvgPool(axis="time"),
            ],
            input_shape=(3, 4),
        ),
    ]
    for i, model in enumerate(models):
        randomize(model, seed=i)  # (batch statistics need batches over 1)
        check_against_runtime(model, tmp_path / f"m{i}.onnx", opset=18, batches=(3, 17) if i < 2 else BATCHES)


def padded(draw_steps):
    """draw(rng, batch) of sequences whose samples have 1..time valid steps, then padding (0)."""

    def draw(rng, batch):
        x = draw_steps(rng, batch)
        for b, length in enumerate(rng.integers(1, x.shape[1] + 1, batch)):
            x[b, length:] = 0
        return x

    return draw


def test_sequence_lengths_reach_the_layers_that_read_them(tmp_path):
    """Masking and Embedding(mask_padding=True): recurrent layers (both directions, last state),
    attention (alone and in an encoder block), LastStep and the time mean skip the padding."""

    def values(rng, batch):
        return rng.standard_normal((batch, 5, 3))

    def tokens(rng, batch):
        return rng.integers(1, 9, (batch, 5))

    models = [
        fnn.Sequential(
            [
                fnn.Masking(),
                fnn.LSTM(3, 4, bidirectional=True),
                fnn.Dense(8, 2),
                fnn.GRU(2, 3, num_layers=2, bidirectional=True, return_sequences=False),
            ],
            input_shape=(5, 3),
        ),
        fnn.Sequential(
            [fnn.Masking(), fnn.Dense(3, 4), fnn.TransformerEncoderBlock(4, 2, 6), fnn.GlobalAvgPool(axis="time")],
            input_shape=(5, 3),
        ),
        fnn.Sequential(
            [fnn.Embedding(9, 4, padding_idx=0, mask_padding=True), fnn.RNN(4, 3), fnn.LastStep()], input_shape=(5,)
        ),
        fnn.Sequential(
            [
                fnn.Masking(),
                fnn.TimeDistributed(fnn.Dense(3, 4)),
                fnn.MultiHeadSelfAttention(4, 2),
                fnn.LastStep(),
                fnn.Dense(4, 2),
            ],
            input_shape=(5, 3),
        ),
    ]
    for i, (model, draw) in enumerate(zip(models, [values, values, tokens, values])):
        randomize(model, seed=i)
        check_against_runtime(model, tmp_path / f"m{i}.onnx", padded(draw))


def test_float64_model_exports_float32(tmp_path):
    model = randomize(fnn.Sequential([fnn.Dense(4, 3, activation="tanh"), fnn.Dense(3, 2)], dtype="float64"))
    proto = model.export_onnx(tmp_path / "m.onnx")
    assert all(init.data_type == onnx.TensorProto.FLOAT for init in proto.graph.initializer)
    check_against_runtime(model, tmp_path / "m.onnx")


def test_refusals_name_the_layer(tmp_path):
    class Double(fnn.Layer):
        def forward(self, x, training):
            return 2 * x

    with pytest.raises(NotImplementedError, match="Double"):
        fnn.Sequential([fnn.Dense(2, 2), Double()]).export_onnx(tmp_path / "m.onnx")
    with pytest.raises(RuntimeError, match="built model"):
        fnn.Sequential([fnn.Conv1d(1, 1, 2)]).export_onnx(tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="opset"):
        fnn.Sequential([fnn.Dense(2, 2)]).export_onnx(tmp_path / "m.onnx", opset=11)
    assert not (tmp_path / "m.onnx").exists()


def test_module_function_is_the_method(tmp_path):
    model = fnn.Sequential([fnn.Dense(2, 2)])
    fnn.export_onnx(model, tmp_path / "a.onnx")
    model.export_onnx(tmp_path / "b.onnx")
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
