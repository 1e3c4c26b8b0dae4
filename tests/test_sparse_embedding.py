"""Embedding(sparse=True): only the rows a step looked up are updated, as PyTorch's sparse
embedding gradients with SGD and SparseAdam; clear errors where the lazy update cannot apply."""

from __future__ import annotations

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _config

VOCABULARY, DIM, TOKENS = 40, 3, 4


def _model(sparse, optimizer, dtype="float64", seed=0):
    layers = [fnn.Embedding(VOCABULARY, DIM, padding_idx=0, sparse=sparse), fnn.Flatten(), fnn.Dense(TOKENS * DIM, 3)]
    model = fnn.Sequential(layers, input_shape=(TOKENS,), dtype=dtype, seed=seed)
    return model.compile("cross_entropy", optimizer)


def _batches(steps=3, batch=5, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, VOCABULARY // 2, (batch, TOKENS)), rng.integers(0, 3, batch)) for _ in range(steps)]


@pytest.mark.parametrize("fuse", ["never", "always"])
def test_plain_sgd_gives_the_dense_result_bit_for_bit(monkeypatch, fuse):
    monkeypatch.setattr(_config, "FUSE", fuse)
    sparse, dense = _model(True, fnn.optim.SGD(lr=0.1)), _model(False, fnn.optim.SGD(lr=0.1))
    for x, y in _batches():
        assert sparse.train_step(x, y) == dense.train_step(x, y)
    # by name: the flat buffers order them apart (a dense table takes weight decay, so it sits
    # among the decayed weights; a sparse one does not)
    for (name, p_sparse, g_sparse), (other, p_dense, g_dense) in zip(
        sparse.named_parameters(), dense.named_parameters(), strict=True
    ):
        assert name == other
        np.testing.assert_array_equal(p_sparse, p_dense, err_msg=name)
        np.testing.assert_array_equal(g_sparse, g_dense, err_msg=name)  # grad_weight is the whole gradient


@pytest.mark.parametrize("fuse", ["never", "always"])
def test_adam_is_torch_sparse_adam_on_the_table_and_adam_elsewhere(monkeypatch, fuse):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(_config, "FUSE", fuse)
    model = _model(True, fnn.optim.Adam(lr=0.05, betas=(0.8, 0.9), eps=1e-6))
    table, dense = model[0], model[2]
    embedding = torch.nn.Embedding(VOCABULARY, DIM, padding_idx=0, sparse=True).double()
    linear = torch.nn.Linear(TOKENS * DIM, 3).double()
    with torch.no_grad():
        embedding.weight.copy_(torch.from_numpy(np.array(table.weight)))
        linear.weight.copy_(torch.from_numpy(np.array(dense.weight).T))
        linear.bias.copy_(torch.from_numpy(np.array(dense.bias)))
    optimizers = [
        torch.optim.SparseAdam(embedding.parameters(), lr=0.05, betas=(0.8, 0.9), eps=1e-6),
        torch.optim.Adam(linear.parameters(), lr=0.05, betas=(0.8, 0.9), eps=1e-6),
    ]
    before = np.array(table.weight)
    looked_up = set()
    for x, y in _batches():
        loss = model.train_step(x, y)
        for opt in optimizers:
            opt.zero_grad()
        out = linear(embedding(torch.from_numpy(x)).reshape(len(x), -1))
        torch_loss = torch.nn.functional.cross_entropy(out, torch.from_numpy(y))
        torch_loss.backward()
        for opt in optimizers:
            opt.step()
        assert loss == pytest.approx(torch_loss.item(), rel=1e-10)
        looked_up |= set(np.unique(x)) - {0}
    np.testing.assert_allclose(table.weight, embedding.weight.detach().numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(dense.weight, linear.weight.detach().numpy().T, rtol=1e-9, atol=1e-12)
    never = sorted(set(range(VOCABULARY)) - looked_up)
    np.testing.assert_array_equal(table.weight[never], before[never])  # lazy: rows never looked up stay


def test_fused_and_unfused_steps_agree_bit_for_bit(monkeypatch):
    results = []
    for fuse in ("never", "always"):
        monkeypatch.setattr(_config, "FUSE", fuse)
        model = _model(True, fnn.optim.Adam(lr=0.01), dtype="float32")
        for x, y in _batches(steps=4):
            model.train_step(x, y)
        results.append((model.params.copy(), model.optimizer.state_dict()))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    for name in ("exp_avg", "exp_avg_sq"):
        np.testing.assert_array_equal(results[0][1][name], results[1][1][name])
    assert results[0][1]["step_count"] == results[1][1]["step_count"] == 4


def test_a_frozen_sparse_table_gets_no_update():
    model = _model(True, fnn.optim.Adam(lr=0.05))
    model.freeze(0)
    table, dense = np.array(model[0].weight), np.array(model[2].weight)
    for x, y in _batches():
        model.train_step(x, y)
    np.testing.assert_array_equal(model[0].weight, table)
    assert not np.array_equal(model[2].weight, dense)
    model.unfreeze(0)
    model.train_step(*_batches(1, seed=5)[0])
    assert not np.array_equal(model[0].weight, table)


@pytest.mark.parametrize("fuse", ["never", "always"])
def test_a_frozen_layer_stays_frozen_beside_a_sparse_table(monkeypatch, fuse):
    """The dense ranges around the table keep out a frozen layer's parameters lying between the
    table and the next trainable ones (here the frozen Dense's bias, right after the table)."""
    monkeypatch.setattr(_config, "FUSE", fuse)
    layers = [fnn.Embedding(VOCABULARY, DIM, sparse=True), fnn.Flatten(), fnn.Dense(TOKENS * DIM, 4), fnn.Dense(4, 3)]
    model = fnn.Sequential(layers, input_shape=(TOKENS,), dtype="float64", seed=0)
    model.compile("cross_entropy", fnn.optim.SGD(lr=0.1)).freeze(2)
    frozen = {name: np.array(value) for name, value, _ in model.named_parameters() if name.startswith("2.")}
    others = {name: np.array(value) for name, value, _ in model.named_parameters() if name.startswith("3.")}
    for x, y in _batches():
        model.train_step(x, y)
    for name, value, _ in model.named_parameters():
        if name in frozen:
            np.testing.assert_array_equal(value, frozen[name], err_msg=name)
        elif name in others:
            assert not np.array_equal(value, others[name]), name


def test_save_and_load_keep_sparse_and_continue_alike(tmp_path):
    model = _model(True, fnn.optim.Adam(lr=0.05))
    (x, y), (x2, y2) = _batches(2)
    model.train_step(x, y)
    model.save(tmp_path / "m.fnn")
    loaded = fnn.load(tmp_path / "m.fnn")
    assert loaded[0].sparse and "sparse=True" in repr(loaded[0])
    assert model.train_step(x2, y2) == loaded.train_step(x2, y2)
    np.testing.assert_array_equal(model.params, loaded.params)


@pytest.mark.parametrize(
    "optimizer",
    [
        fnn.optim.SGD(lr=0.1, momentum=0.9),
        fnn.optim.SGD(lr=0.1, weight_decay=1e-4),
        fnn.optim.Adam(amsgrad=True),
        fnn.optim.AdamW(),
        fnn.optim.RMSProp(),
        fnn.optim.Adam(clip_norm=1.0),
    ],
    ids=["momentum", "weight decay", "amsgrad", "adamw", "rmsprop", "clip_norm"],
)
def test_optimizers_without_a_lazy_update_are_refused_by_name(optimizer):
    with pytest.raises(ValueError, match=rf"Embedding\(sparse=True\).*{type(optimizer).__name__}.*sparse=False"):
        _model(True, optimizer)


def test_switching_on_clipping_later_is_refused_at_the_next_step():
    model = _model(True, fnn.optim.Adam())
    x, y = _batches(1)[0]
    model.train_step(x, y)
    model.optimizer.clip_value = 1.0
    params = model.params.copy()
    with pytest.raises(ValueError, match="clips gradients"):
        model.train_step(x, y)
    np.testing.assert_array_equal(model.params, params)  # refused before any update


def test_accumulation_and_gradient_reducers_are_refused():
    model = _model(True, fnn.optim.SGD(lr=0.1))
    x, y = _batches(1)[0]
    with pytest.raises(ValueError, match=r"accumulated over batches.*sparse=False"):
        model.fit(x, y, epochs=1, batch_size=2, accumulate=2, verbose=0)
    with pytest.raises(ValueError, match=r"summed over processes.*sparse=False"):
        model.set_gradient_reducer(lambda loss, norm, out, target: (loss, norm))


def test_sparse_must_be_a_bool():
    with pytest.raises(TypeError, match="sparse must be True or False"):
        fnn.Embedding(4, 2, sparse="yes")


def test_sparse_moves_to_and_from_torch():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    module = nn.Sequential(nn.Embedding(10, 4, sparse=True), nn.Flatten(), nn.Linear(8, 2)).double()
    model = fnn.from_torch(module, input_shape=(2,))
    assert model[0].sparse
    assert model.to_torch()[0].sparse
    with pytest.raises(NotImplementedError, match="scale gradients by frequency"):
        fnn.from_torch(nn.Sequential(nn.Embedding(10, 4, scale_grad_by_freq=True)), input_shape=(2,))


def test_each_steady_step_of_fit_is_one_call_into_compiled_code(monkeypatch, tmp_path):
    from fastnn import _fused
    from tests._crossings import PerStep, counting

    monkeypatch.setenv("FASTNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_fused, "_LOADED", {})
    monkeypatch.setattr(_config, "FUSE", "always")
    model = _model(True, fnn.optim.Adam(lr=0.01), dtype="float32")
    rng = np.random.default_rng(1)
    X, y = rng.integers(0, VOCABULARY, (40, TOKENS)), rng.integers(0, 3, 40)
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    with counting() as seen:
        per_step = PerStep(seen)
        model.fit(X, y, epochs=1, batch_size=8, verbose=0, callbacks=[per_step])
    assert per_step.steps and all(len(calls) == 1 for calls in per_step.steps), per_step.steps


def test_a_refused_compile_leaves_the_model_training_as_before():
    model, twin = _model(True, fnn.optim.Adam(lr=0.05)), _model(True, fnn.optim.Adam(lr=0.05))
    (x, y), (x2, y2) = _batches(2)
    model.train_step(x, y)
    twin.train_step(x, y)
    adam, loss = model.optimizer, model.loss
    refused = fnn.optim.Adam(lr=0.05, clip_norm=1.0)
    with pytest.raises(ValueError, match="clips gradients"):
        model.compile("mse", refused, metrics=["r2"])
    assert model.optimizer is adam and model.loss is loss and model.metrics == []
    assert refused.owner is None  # free for another model
    assert model.train_step(x2, y2) == twin.train_step(x2, y2)  # Adam's moments went on, the table lazily
    np.testing.assert_array_equal(model.params, twin.params)


@pytest.mark.parametrize("how", ["unfreeze", "attribute"])
def test_a_refused_unfreeze_leaves_the_table_frozen(how):
    model = _model(True, fnn.optim.SGD(lr=0.05)).freeze(0)
    model.compile("cross_entropy", fnn.optim.RMSProp(lr=0.05))  # refused for a trainable sparse table
    (x, y), (x2, y2) = _batches(2)
    model.train_step(x, y)
    table = model[0].weight.copy()
    with pytest.raises(ValueError, match=r"Embedding\(sparse=True\).*RMSProp"):
        if how == "unfreeze":
            model.unfreeze()
        else:
            model[0].trainable = True
    assert not model[0].trainable and model[2].trainable
    model.train_step(x2, y2)
    np.testing.assert_array_equal(model[0].weight, table)  # still frozen: RMSProp never touches it
