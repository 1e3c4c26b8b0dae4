"""Attention, positional encoding, the encoder block and the sequence-shape layers at layer level:
torch equivalence with causal and key-padding masks (float64, dropout 0), sequence lengths,
clear errors, determinism on 1 and 2 threads, and a small Transformer classifier that trains
with fit() and round-trips through save/load."""

from __future__ import annotations

import numba
import numpy as np
import pytest

import fastnn as fnn
from fastnn.layers.base import Context, run_calls
from tests import reference as ref
from tests.layer_cases import attention_pairs, encoder_pairs

torch = pytest.importorskip("torch")
TIGHT = {"rtol": 1e-10, "atol": 1e-12}
LENGTHS = np.array([5, 2, 4], np.int64)


def _built(layer, shape, seed=0):
    """A float64 model of ``layer`` with random parameters (U(-1, 1))."""
    model = fnn.Sequential([layer], input_shape=shape, dtype="float64", seed=seed)
    model.params[...] = np.random.default_rng(seed + 100).uniform(-1, 1, model.params.size)
    return model


def _run(layer, x, grad_y, lengths, training=True):
    """forward_calls/backward_calls under a Context with ``lengths``: (y, grad_x) copies."""
    ctx = Context(training, "eager", lengths=lengths)
    calls, y = layer.forward_calls(x, ctx)
    run_calls(calls)
    y = np.array(y)
    calls, grad_x = layer.backward_calls(grad_y, ctx, True)
    run_calls(calls)
    return y, np.array(grad_x)


def _copy_into_torch(model, pairs):
    values = {name[2:]: v for name, v, _ in model.named_parameters()}
    assert set(values) == set(pairs)
    with torch.no_grad():
        for name, (tensor, transposed) in pairs.items():
            tensor.copy_(torch.from_numpy(values[name].T if transposed else values[name]))


def _compare_grads(model, pairs):
    grads = {name[2:]: g for name, _, g in model.named_parameters()}
    for name, (tensor, transposed) in pairs.items():
        mine = grads[name].T if transposed else grads[name]
        np.testing.assert_allclose(mine, tensor.grad.numpy(), err_msg=name, **TIGHT)


def _torch_masks(steps, causal, lengths):
    attn_mask = torch.triu(torch.ones(steps, steps, dtype=torch.bool), diagonal=1) if causal else None
    pad = None if lengths is None else torch.from_numpy(~ref.valid_step_mask(lengths, len(lengths), steps))
    return attn_mask, pad


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "padded"])
def test_attention_matches_torch_with_masks(causal, lengths):
    model = _built(fnn.MultiHeadSelfAttention(6, 3, causal=causal), (5, 6))
    layer = model.layers[0]
    mha = torch.nn.MultiheadAttention(6, 3, batch_first=True, dtype=torch.float64)
    _copy_into_torch(model, attention_pairs(mha))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 5, 6))
    valid = ref.valid_step_mask(lengths, 3, 5)[..., None]
    grad_y = rng.standard_normal(x.shape) * valid  # padded outputs are 0 and carry no gradient
    y, grad_x = _run(layer, x, grad_y, lengths)
    tx = torch.from_numpy(x).requires_grad_(True)
    attn_mask, pad = _torch_masks(5, causal, lengths)
    ty = mha(tx, tx, tx, need_weights=False, attn_mask=attn_mask, key_padding_mask=pad)[0] * torch.from_numpy(valid)
    ty.backward(torch.from_numpy(grad_y))
    np.testing.assert_allclose(y, ty.detach().numpy(), **TIGHT)
    np.testing.assert_allclose(grad_x, tx.grad.numpy(), **TIGHT)
    _compare_grads(model, attention_pairs(mha))
    assert not grad_x[~np.broadcast_to(valid, x.shape)].any()  # padded inputs get no gradient
    assert not y[~np.broadcast_to(valid, x.shape)].any()


def test_padded_steps_change_nothing():
    """Whatever the padded steps hold, the valid outputs and the gradients stay the same."""
    model = _built(fnn.MultiHeadSelfAttention(4, 2), (5, 4))
    rng = np.random.default_rng(2)
    x, grad_y = rng.standard_normal((3, 5, 4)), rng.standard_normal((3, 5, 4))
    y1, gx1 = _run(model.layers[0], x, grad_y, LENGTHS)
    g1 = model.grads.copy()
    noisy = x.copy()
    noisy[~ref.valid_step_mask(LENGTHS, 3, 5)] = 1e3
    y2, gx2 = _run(model.layers[0], noisy, grad_y, LENGTHS)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(gx1, gx2)
    np.testing.assert_allclose(model.grads, g1, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("norm_first", "activation", "causal"), [(False, "relu", False), (True, "gelu", True)])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "padded"])
def test_encoder_block_matches_torch(norm_first, activation, causal, lengths):
    block = fnn.TransformerEncoderBlock(6, 2, 10, activation=activation, norm_first=norm_first, causal=causal)
    model = _built(block, (5, 6))
    module = torch.nn.TransformerEncoderLayer(
        6, 2, 10, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first, dtype=torch.float64
    )
    pairs = encoder_pairs(model.layers[0], module)
    _copy_into_torch(model, pairs)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5, 6))
    valid = ref.valid_step_mask(lengths, 3, 5)[..., None]
    grad_y = rng.standard_normal(x.shape) * valid
    y, grad_x = _run(model.layers[0], x, grad_y, lengths)
    tx = torch.from_numpy(x).requires_grad_(True)
    attn_mask, pad = _torch_masks(5, causal, lengths)
    ty = module(tx, src_mask=attn_mask, src_key_padding_mask=pad)
    ty.backward(torch.from_numpy(grad_y))
    np.testing.assert_allclose(y * valid, ty.detach().numpy() * valid, **TIGHT)  # padded steps: free
    np.testing.assert_allclose(grad_x, tx.grad.numpy(), **TIGHT)
    _compare_grads(model, pairs)


def test_attention_defaults_are_torchs_init():
    model = fnn.Sequential([fnn.MultiHeadSelfAttention(8, 2)], input_shape=(3, 8), seed=0)
    layer = model.layers[0]
    assert layer.in_proj_weight.shape == (24, 8) and layer.out_proj_weight.shape == (8, 8)
    assert not layer.in_proj_bias.any() and not layer.out_proj_bias.any()
    assert np.abs(layer.in_proj_weight).max() <= np.sqrt(6 / 32) and np.abs(layer.out_proj_weight).max() <= 8**-0.5
    assert layer.in_proj_weight.std() > 0.5 * np.sqrt(6 / 32) / np.sqrt(3)


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "padded"])
def test_last_step_and_time_mean_honour_lengths(lengths):
    rng = np.random.default_rng(4)
    x, grad_y = rng.standard_normal((3, 5, 2)), rng.standard_normal((3, 2))
    for layer, reference in ((fnn.LastStep(), ref.last_step), (fnn.GlobalAvgPool(axis="time"), ref.time_mean)):
        model = _built(layer, (5, 2))
        y, grad_x = _run(model.layers[0], x, grad_y, lengths)
        np.testing.assert_allclose(y, reference(x, lengths), **TIGHT)
        assert not grad_x[~ref.valid_step_mask(lengths, 3, 5)].any()
        assert model.layers[0].lengths_policy == "drop"


def test_time_distributed_runs_its_layer_on_every_step():
    model = _built(fnn.TimeDistributed(fnn.Conv1d(2, 3, 2)), (4, 2, 5))
    x = np.random.default_rng(5).standard_normal((3, 4, 2, 5))
    out = model.predict(x)
    assert out.shape == (3, 4, 3, 4) and model.output_shape == (4, 3, 4)
    inner = fnn.Sequential([fnn.Conv1d(2, 3, 2)], input_shape=(2, 5), dtype="float64")
    inner.params[...] = model.params
    np.testing.assert_allclose(out, inner.predict(x.reshape(12, 2, 5)).reshape(out.shape), **TIGHT)
    y, _ = _run(model.layers[0], x, np.ones_like(out), LENGTHS)  # lengths pass by: every step is mapped alone
    np.testing.assert_array_equal(y, out)


def test_lengths_policies():
    assert {cls.lengths_policy for cls in (fnn.Dense, fnn.ReLU, fnn.LayerNorm, fnn.Dropout, fnn.Softmax)} == {"keep"}
    assert (
        fnn.MultiHeadSelfAttention(4, 2).lengths_policy == fnn.TransformerEncoderBlock(4, 2, 8).lengths_policy == "use"
    )
    assert fnn.PositionalEncoding().lengths_policy == fnn.TimeDistributed(fnn.Dense(2)).lengths_policy == "keep"
    assert fnn.LastStep().lengths_policy == fnn.GlobalAvgPool(axis="time").lengths_policy == "drop"
    assert fnn.GlobalAvgPool().lengths_policy is None and fnn.GlobalAvgPool().get_config() == {"axis": "spatial"}


def test_clear_errors():
    with pytest.raises(ValueError, match=r"embed_dim \(6\) must be divisible by num_heads \(4\).*\[1, 2, 3, 6\]"):
        fnn.MultiHeadSelfAttention(6, 4)
    with pytest.raises(ValueError, match="dropout"):
        fnn.MultiHeadSelfAttention(4, 2, dropout=1.0)
    with pytest.raises(ValueError, match=r"takes sequences \(batch, time, features\), got input \(batch, 8\)"):
        fnn.Sequential([fnn.MultiHeadSelfAttention(8, 2)], input_shape=(8,))
    with pytest.raises(ValueError, match="expects 8 features.*set embed_dim to 6"):
        fnn.Sequential([fnn.MultiHeadSelfAttention(8, 2)], input_shape=(3, 6))
    with pytest.raises(ValueError, match="at most max_len=4 steps, got sequences of 6.*raise max_len to at least 6"):
        fnn.Sequential([fnn.PositionalEncoding(max_len=4)], input_shape=(6, 2))
    with pytest.raises(ValueError, match="activation"):
        fnn.TransformerEncoderBlock(4, 2, 8, activation="swish")
    with pytest.raises(ValueError, match="takes sequences"):
        fnn.Sequential([fnn.LastStep()], input_shape=(3, 4, 5))
    with pytest.raises(ValueError, match="axis='time'"):
        fnn.Sequential([fnn.GlobalAvgPool()], input_shape=(4, 3, 2, 1))
    with pytest.raises(TypeError, match="wraps one fastnn layer"):
        fnn.TimeDistributed("dense")


def test_flags_must_be_booleans():
    for make, flag in [
        (lambda v: fnn.MultiHeadSelfAttention(4, 2, causal=v), "causal"),
        (lambda v: fnn.MultiHeadSelfAttention(4, 2, bias=v), "bias"),
        (lambda v: fnn.TransformerEncoderBlock(4, 2, 8, causal=v), "causal"),
        (lambda v: fnn.TransformerEncoderBlock(4, 2, 8, norm_first=v), "norm_first"),
    ]:
        with pytest.raises(TypeError, match=f"{flag} must be True or False, got str 'False'"):
            make("False")  # bool("False") is True: a string was taken for the opposite option
        assert make(np.bool_(False)).get_config()[flag] is False
    # torch's positional order: MultiheadAttention(E, H, dropout, bias), TransformerEncoderLayer(..., activation,
    # layer_norm_eps): fastnn's flags are keyword-only, so such a call is refused (it was causal / pre-norm)
    with pytest.raises(TypeError, match="positional argument"):
        fnn.MultiHeadSelfAttention(8, 2, 0.0, True)
    with pytest.raises(TypeError, match="positional argument"):
        fnn.TransformerEncoderBlock(8, 2, 16, 0.1, "relu", 1e-5)


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (fnn.MultiHeadSelfAttention(4, 2), (6, 4)),
        (fnn.PositionalEncoding(10), (6, 4)),
        (fnn.TransformerEncoderBlock(4, 2, 8, norm_first=True), (6, 4)),
        (fnn.LastStep(), (6, 4)),
        (fnn.TimeDistributed(fnn.Dense(4, 3)), (6, 4)),
    ],
    ids=["attention", "positional", "encoder", "last-step", "time-distributed"],
)
def test_eager_forward_refuses_a_shape_other_than_the_built_one(layer, shape):
    model = _built(layer, shape)
    x = np.random.default_rng(7).standard_normal((2, *shape))
    expected = model.predict(x)
    np.testing.assert_array_equal(layer.forward(x, False), expected)  # as built: the model's result
    for steps in (3, 9):  # the kernels loop over the built buffers: fewer steps read, more wrote, out of bounds
        with pytest.raises(ValueError, match=rf"was built for input \(batch, 6, 4\) but got \(batch, {steps}, 4\)"):
            layer.forward(np.zeros((2, steps, 4)), False)
    with pytest.raises(ValueError, match=r"but got \(batch, 6, 5\); pass arrays \(batch, 6, 4\)"):
        layer.forward(np.zeros((2, 6, 5)), False)
    with pytest.raises(RuntimeError, match="is not built: put it in a model"):
        fnn.layers.layer_from_config(fnn.layers.layer_to_config(layer)).forward(x, False)


def test_attention_dropout_in_training_only():
    model = _built(fnn.MultiHeadSelfAttention(4, 2, dropout=0.5), (6, 4))
    x = np.random.default_rng(6).standard_normal((2, 6, 4))
    first, second = model.forward(x, True).copy(), model.forward(x, True).copy()
    assert not np.array_equal(first, second)  # a new mask per step
    assert model.layers[0].buffers()["step"][0] == 2
    plain = _built(fnn.MultiHeadSelfAttention(4, 2), (6, 4))
    np.testing.assert_array_equal(model.forward(x, False), plain.forward(x, False))


def _classifier(seed=0, steps=8, features=3, embed=16):
    return fnn.Sequential(
        [
            fnn.Dense(features, embed),
            fnn.PositionalEncoding(max_len=32),
            fnn.TransformerEncoderBlock(embed, 2, 32),
            fnn.GlobalAvgPool(axis="time"),
            fnn.Dense(embed, 2),
        ],
        input_shape=(steps, features),
        seed=seed,
    )


def test_transformer_classifier_trains_and_round_trips(tmp_path):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((256, 8, 3)).astype(np.float32)
    y = (X[:, :4, 0].sum(axis=1) > X[:, 4:, 1].sum(axis=1)).astype(np.int64)
    model = _classifier().compile(loss="cross_entropy", optimizer=fnn.optim.Adam(lr=3e-3))
    history = model.fit(X, y, epochs=8, batch_size=32, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.7 * losses[0]
    model.save(tmp_path / "transformer.safetensors")
    loaded = fnn.load(tmp_path / "transformer.safetensors")
    np.testing.assert_array_equal(loaded.predict(X[:5]), model.predict(X[:5]))
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]


def test_training_is_bit_identical_on_one_and_two_threads():
    """Shapes large enough for the parallel paths of the attention and Dense kernels."""
    rng = np.random.default_rng(8)
    X = rng.standard_normal((16, 32, 32)).astype(np.float32)
    y = rng.integers(0, 2, 16)
    results = []
    before = numba.get_num_threads()
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            fnn.set_num_threads(threads)
            model = fnn.Sequential(
                [fnn.TransformerEncoderBlock(32, 4, 64, dropout=0.1), fnn.GlobalAvgPool(axis="time"), fnn.Dense(32, 2)],
                input_shape=(32, 32),
                seed=0,
            )
            model.compile(loss="cross_entropy", optimizer=fnn.optim.Adam(lr=1e-3))
            losses = [model.train_step(X, y) for _ in range(3)]
            results.append((losses, model.params.copy()))
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
