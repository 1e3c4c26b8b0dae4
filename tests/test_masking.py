"""Sequence lengths from padding (Masking, Embedding(mask_padding=True)) and how the model carries
them: to layers that honour them, refused by those that cannot."""

import re

import numpy as np
import pytest

import fastnn as fnn
from fastnn.kernels.masking import lengths_from_indices, lengths_from_values
from fastnn.layers.base import Layer
from tests import reference as ref


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 7, 3), (4, 6, 1)])
def test_lengths_from_values_matches_reference(dtype, shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    for b in range(shape[0]):  # trailing padding of a different length per sample, and a hole inside
        x[b, shape[1] - b % (shape[1] + 1) :] = 0
    if shape[1] > 2:
        x[0, 1] = 0  # padding inside a sequence counts as a valid step
    lengths = np.full(shape[0], -1, np.int64)
    lengths_from_values(x, dtype(0.0), lengths)
    np.testing.assert_array_equal(lengths, ref.sequence_lengths(x, 0.0))


def test_lengths_from_indices():
    indices = np.array([[3, 4, 0, 0], [0, 0, 0, 0], [1, 0, 2, 0], [5, 5, 5, 5]], np.int64)
    lengths = np.zeros(4, np.int64)
    lengths_from_indices(indices, 0, lengths)
    np.testing.assert_array_equal(lengths, [2, 0, 3, 4])


class _LengthProbe(Layer):
    """Records the lengths its forward saw and drops the time axis (a last-step copy)."""

    lengths_policy = "drop"

    def build(self, input_shape, dtype):
        super().build(input_shape, dtype)
        self.output_shape = input_shape[1:]
        self._ws = self.workspace(y=self.output_shape, gx=tuple(input_shape))
        return self.output_shape

    def forward_calls(self, x, ctx):
        ctx.x = x
        self.seen = ctx.lengths
        y = self._ws(x.shape[0], ctx.arena)["y"]
        return [(np.copyto, (y, x[:, -1]))], y

    def backward_calls(self, grad_y, ctx, need_grad_x):
        gx = self._ws(grad_y.shape[0], ctx.arena)["gx"]
        return [(np.copyto, (gx[:, -1], grad_y))], gx


def test_masking_carries_lengths_to_the_next_layer():
    x = np.ones((3, 4, 2), np.float32)
    x[1, 2:] = 0
    x[2, 1:] = 0
    probe = _LengthProbe()
    model = fnn.Sequential([fnn.Masking(), probe], input_shape=(4, 2))
    out = model.forward(x)
    np.testing.assert_array_equal(probe.seen, [4, 2, 1])
    np.testing.assert_array_equal(out, x[:, -1])


def test_embedding_mask_padding_carries_lengths():
    probe = _LengthProbe()
    model = fnn.Sequential([fnn.Embedding(6, 2, padding_idx=0, mask_padding=True), probe], input_shape=(3,))
    model.forward(np.array([[1, 2, 0], [4, 0, 0]]))
    np.testing.assert_array_equal(probe.seen, [2, 1])


def test_a_layer_that_cannot_honour_lengths_is_refused_at_build():
    with pytest.raises(ValueError, match=r"layer 1 \(Flatten\(\)\) cannot honour the padded steps"):
        fnn.Sequential([fnn.Masking(), fnn.Flatten(), fnn.Dense(8, 2)], input_shape=(4, 2))
    # after the time axis is dropped, anything goes
    fnn.Sequential([fnn.Masking(), _LengthProbe(), fnn.Flatten()], input_shape=(4, 2))


def test_masking_must_come_first_and_needs_sequences():
    with pytest.raises(ValueError, match="must be the model's first layer"):
        fnn.Sequential([_LengthProbe(), fnn.Masking()], input_shape=(4, 2, 2))
    with pytest.raises(ValueError, match=r"takes sequences \(batch, time, features"):
        fnn.Sequential([fnn.Masking(), _LengthProbe()], input_shape=(4,))
    with pytest.raises(ValueError, match="mask_padding=True needs padding_idx"):
        fnn.Embedding(5, 2, mask_padding=True)


def test_time_distributed_refuses_a_layer_that_marks_padding():
    # the marks of a Masking inside TimeDistributed reached no layer: the padding silently counted
    for inner in (fnn.Masking(), fnn.Embedding(5, 2, padding_idx=0, mask_padding=True)):
        with pytest.raises(ValueError, match=r"marks padded steps of the model's input and must be the model's first"):
            fnn.Sequential([fnn.TimeDistributed(inner), fnn.TimeDistributed(fnn.LSTM(2, 3))], input_shape=(4, 3, 2))
    fnn.Sequential([fnn.TimeDistributed(fnn.Embedding(5, 2, padding_idx=0))], input_shape=(4, 3))  # no marks: fine


def test_an_all_padding_sample_is_refused_with_its_index():
    model = fnn.Sequential([fnn.Masking(-1.0), _LengthProbe()], input_shape=(3, 2))
    x = np.ones((3, 3, 2))
    x[2] = -1.0
    with pytest.raises(ValueError, match=r"X\[2\] is padding at every step"):
        model.predict(x)
    tokens = fnn.Sequential([fnn.Embedding(5, 2, padding_idx=0, mask_padding=True), _LengthProbe()], input_shape=(3,))
    with pytest.raises(ValueError, match=r"X\[1\] is padding at every step"):
        tokens.predict(np.array([[1, 0, 0], [0, 0, 0]]))


def test_masking_options_round_trip_through_config():
    layer = fnn.layers.layer_from_config(fnn.layers.layer_to_config(fnn.Masking(0.5)))
    assert isinstance(layer, fnn.Masking) and layer.mask_value == 0.5
    emb = fnn.layers.layer_from_config(
        fnn.layers.layer_to_config(fnn.Embedding(6, 2, padding_idx=0, mask_padding=True))
    )
    assert emb.mask_padding and emb.produces_lengths


def test_a_batch_norm_nested_in_time_distributed_takes_lengths_and_per_step_layers_keep_them():
    """TimeDistributed(BatchNorm1d) takes masked statistics, at any depth of Residual blocks and
    TimeDistributed (tests/test_masked_batchnorm.py has the values and the refused nestings)."""
    nested = fnn.TimeDistributed(fnn.Residual([fnn.BatchNorm1d(2)], projection=False))
    masked = fnn.Sequential([fnn.Masking(), nested, fnn.LastStep()], input_shape=(4, 2))
    assert masked.layers[1].lengths_policy == "keep" and masked.layers[1].lengths_refusal is None
    model = fnn.Sequential([fnn.Masking(), fnn.TimeDistributed(fnn.Dense(2, 3)), fnn.LastStep()], input_shape=(4, 2))
    x = np.ones((2, 4, 2), np.float32)
    x[1, 2:] = 0
    out = model.predict(x)
    inner = model.layers[1].layer
    np.testing.assert_allclose(out[1], x[1, 1] @ inner.weight + inner.bias, rtol=1e-6)  # its last valid step


def test_masked_sequence_models_round_trip_through_save(tmp_path):
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 6, (8, 5))
    tokens[:4, 3:] = 0
    model = fnn.Sequential(
        [
            fnn.Embedding(6, 4, padding_idx=0, mask_padding=True),
            fnn.GRU(4, 3, bidirectional=True),
            fnn.GlobalAvgPool(axis="time"),
            fnn.Dense(6, 2),
        ],
        input_shape=(5,),
        seed=1,
    )
    model.compile("cross_entropy", "adam")
    model.fit(tokens, rng.integers(0, 2, 8), epochs=1, verbose=0)
    model.save(tmp_path / "m.safetensors")
    loaded = fnn.load(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(loaded.predict(tokens), model.predict(tokens))
    assert loaded.layers[0].mask_padding


@pytest.mark.parametrize("cls", [fnn.LSTM, fnn.GRU, fnn.RNN])
def test_a_masked_model_equals_each_sequence_run_alone(cls):
    """Masking + a bidirectional 2-layer recurrent layer: each sample's valid steps equal the layer
    run on that sample's unpadded sequence alone; padded steps give 0."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 6, 2))
    lengths = [6, 4, 1]
    for b, n in enumerate(lengths):
        x[b, n:] = 0
    model = fnn.Sequential(
        [fnn.Masking(), cls(2, 3, num_layers=2, bidirectional=True)], input_shape=(6, 2), dtype="float64", seed=2
    )
    out = model.predict(x)
    layer = model.layers[1]
    for b, n in enumerate(lengths):
        alone = layer.forward(x[b : b + 1, :n], False)
        np.testing.assert_allclose(out[b, :n], alone[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(out[b, n:], 0)


@pytest.mark.parametrize(
    "mask_value, X, want",
    [
        (0.1, np.array([[[1.0], [0.1], [0.1]], [[0.1], [2.0], [0.1]]], np.float16), [3, 3]),  # f16 0.1 != f32 0.1
        (0.5, np.array([[[1], [0], [0]], [[0], [0], [3]]]), [3, 3]),  # int data: 0 is not 0.5
        (0.1, np.array([[[1.0], [0.1 + 1e-12], [0.1]], [[0.1], [2.0], [0.1]]]), [1, 2]),  # float64: rounds to f32 0.1
        (0.0, np.array([[[1.0], [-0.0], [0.0]], [[-0.0], [2.0], [-0.0]]], np.float32), [1, 2]),  # -0.0 == 0.0
        (-0.0, np.array([[[1.0], [0.0], [-0.0]], [[3.0], [2.0], [1.0]]]), [1, 3]),
    ],
    ids=["float16", "int64", "float64 rounding to the mask value", "-0.0 is padding", "mask_value -0.0"],
)
def test_host_lengths_are_the_kernels_for_any_input_dtype(mask_value, X, want):
    """Masking.sequence_lengths (the loss's, the metrics' and the ranks' lengths, on the host) compares
    in the model's dtype after the model's own conversion, as the kernel in the step does: the
    lengths agree for float16 (once a Numba typing error), integer and float64 data in a float32
    model."""
    model = fnn.Sequential([fnn.Masking(mask_value), fnn.LastStep()], input_shape=(3, 1), seed=0)
    lengths = model.layers[0].sequence_lengths(X)
    np.testing.assert_array_equal(lengths, want)
    kernel_last = model.predict(X)[:, 0]  # each sample's last valid step, by the kernel's lengths
    np.testing.assert_array_equal(kernel_last, np.asarray(X, np.float32)[np.arange(len(X)), lengths - 1, 0])


def test_a_mask_value_the_model_dtype_cannot_hold_is_refused():
    for value, becomes in ((1e40, "inf"), (1e-50, "0.0")):
        message = re.escape(f"mask_value={value} becomes {becomes} in the model's dtype float32") + ".*float64"
        with pytest.raises(ValueError, match=message):
            fnn.Sequential([fnn.Masking(value), fnn.LastStep()], input_shape=(3, 1))
        model = fnn.Sequential([fnn.Masking(value), fnn.LastStep()], input_shape=(3, 1), dtype="float64")
        X = np.array([[[1.0], [value], [value]]])
        assert model.layers[0].sequence_lengths(X).tolist() == [1]
        assert model.predict(X).tolist() == [[1.0]]
    with pytest.raises(ValueError, match="mask_value must be a finite number, got nan"):
        fnn.Masking(float("nan"))
