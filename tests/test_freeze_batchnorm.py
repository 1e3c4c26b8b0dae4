"""A frozen BatchNorm trains in inference mode (Keras's ``trainable=False`` rule, PyTorch's fine-tuning
recipe ``bn.eval(); bn.requires_grad_(False)``): its running statistics normalise and stay unchanged,
in every path that trains (fastnn.freezing)."""

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _config, _fused, _norm_fusion
from tests._gradcheck import check_model_gradients, numeric_gradients_inplace


def _data(n=17, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4)) * 2.0 + 1.0
    return X, (X[:, 0] - X[:, 3] > 0).astype(np.int64) + (X[:, 1] > 1.5)


def _model(dtype="float64", norm=None, tail=()):
    model = fnn.Sequential(
        [fnn.Dense(4, 6), norm or fnn.BatchNorm1d(6, momentum=0.3), fnn.ReLU(), *tail, fnn.Dense(6, 3)],
        dtype=dtype,
        seed=3,
    )
    return model.compile("cross_entropy", fnn.optim.Adam(lr=0.05))


def _warmed(dtype="float64", **kwargs):
    """A model whose BatchNorm has moved away from its initial statistics and parameters (one epoch
    unfrozen), then frozen."""
    model = _model(dtype, **kwargs)
    X, y = _data(24, seed=1)
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    return model.freeze(1)


def _state(bn):
    return [a.copy() for a in (bn.running_mean, bn.running_var, bn.num_batches_tracked, bn.weight, bn.bias)]


def _torch_copy(torch, model):
    """The torch net of ``_model`` with the same values, its BatchNorm per the fine-tuning recipe."""
    dense0, bn, _, dense1 = model.layers
    dtype = torch.float64 if model.dtype == np.float64 else torch.float32
    nn = torch.nn
    net = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6, momentum=0.3), nn.ReLU(), nn.Linear(6, 3)).to(dtype)
    with torch.no_grad():
        for lin, dense in ((net[0], dense0), (net[3], dense1)):
            lin.weight.copy_(torch.from_numpy(dense.weight.T.copy()))
            lin.bias.copy_(torch.from_numpy(dense.bias.copy()))
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(net[1], name).copy_(torch.from_numpy(getattr(bn, name).copy()))
    net[1].eval()
    net[1].requires_grad_(False)
    return net


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fit_with_a_frozen_batchnorm_equals_torch_s_fine_tuning_recipe(dtype):
    """Weights and per-epoch losses of three epochs of Adam; the batches 8, 8, 1: a last batch of
    one is trained on (a frozen BatchNorm needs no batch variance), as torch does."""
    torch = pytest.importorskip("torch")
    model = _warmed(dtype).compile("cross_entropy", fnn.optim.Adam(lr=0.05))  # Adam afresh, as torch's
    assert model.layers[1].frozen
    net = _torch_copy(torch, model)
    bn_before = _state(model.layers[1])
    X, y = _data()
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=0.05)
    losses = []
    for _ in range(3):
        total = 0.0
        for lo in range(0, len(X), 8):
            opt.zero_grad()
            xb = torch.from_numpy(X[lo : lo + 8].astype(dtype))
            loss = torch.nn.functional.cross_entropy(net(xb), torch.from_numpy(y[lo : lo + 8]))
            loss.backward()
            opt.step()
            total += loss.item() * xb.shape[0]
        losses.append(total / len(X))
    history = model.fit(X, y, epochs=3, batch_size=8, shuffle=False, verbose=0)
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == "float64" else {"rtol": 2e-4, "atol": 2e-5}
    np.testing.assert_allclose(history.history["loss"], losses, **tol)
    for i, lin in ((0, net[0]), (3, net[3])):
        np.testing.assert_allclose(model.layers[i].weight, lin.weight.detach().numpy().T, **tol)
        np.testing.assert_allclose(model.layers[i].bias, lin.bias.detach().numpy(), **tol)
    for before, after in zip(bn_before, _state(model.layers[1])):
        np.testing.assert_array_equal(after, before)  # statistics, batch count and parameters untouched
    assert model.optimizer.step_count == 9  # every batch


def test_the_frozen_step_is_the_evaluation_forward_and_its_exact_gradient():
    """Training-mode forward == evaluation forward (the same kernel); the gradients of that map by
    central differences, through the eager engine, loss_and_grads and a step plan."""
    model = _warmed()
    X, y = _data(6, seed=2)
    X, y = model.check_data(X, y)
    np.testing.assert_array_equal(model.forward(X, training=True), model.forward(X, training=False))
    outputs = model.layer_outputs(X, training=True)  # the probes of fastnn.diagnostics
    np.testing.assert_array_equal(outputs[1], model.layer_outputs(X, training=False)[1])
    check_model_gradients(model, X, y, training=True)
    _, grads = model.loss_and_grads(X, y)
    analytic = model.grads.copy()
    (numeric,) = numeric_gradients_inplace(lambda: model.loss_and_grads(X, y)[0], [model.params])
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)
    assert np.abs(grads["1.weight"]).sum() > 0 and np.abs(grads["1.bias"]).sum() > 0  # still computed
    bn = model.layers[1]
    before = _state(bn)
    model.run_step(X, y, update=False)  # the recorded training step
    np.testing.assert_allclose(model.grads, analytic, rtol=1e-13, atol=1e-15)
    for a, b in zip(before, _state(bn)):
        np.testing.assert_array_equal(a, b)


def test_freezing_after_training_records_the_plans_again_also_without_parameters():
    """Plans recorded in training mode are recorded again when trainable changes, also for a
    BatchNorm without parameters (affine=False: the optimizer's trainable ranges do not change)."""
    X, y = _data(16)
    for norm in (fnn.BatchNorm1d(6, momentum=0.3), fnn.BatchNorm1d(6, momentum=0.3, affine=False)):
        model = _model(norm=norm)
        model.fit(X, y, epochs=1, batch_size=8, verbose=0)  # step plans recorded in training mode
        moved = _state(norm)[:3]
        norm.trainable = False
        model.fit(X, y, epochs=1, batch_size=8, verbose=0)
        for a, b in zip(moved, _state(norm)[:3]):
            np.testing.assert_array_equal(a, b)
        norm.trainable = True  # training mode again: the statistics move, the batch is counted
        model.fit(X, y, epochs=1, batch_size=8, verbose=0)
        assert not np.array_equal(norm.running_mean, moved[0]) and norm.num_batches_tracked[0] == moved[2][0] + 2


def test_unfreezing_trains_exactly_as_a_model_never_frozen():
    X, y = _data(16)
    plain, toggled = _model(), _model()
    toggled.freeze(1)
    toggled.train_step(X[:8], y[:8])  # a plan recorded frozen
    assert toggled.layers[1].num_batches_tracked[0] == 0
    np.testing.assert_array_equal(toggled.layers[1].running_mean, 0.0)
    toggled.unfreeze(1)
    toggled.train_step(X[:8], y[:8])  # the plan recorded again, in training mode
    assert toggled.layers[1].num_batches_tracked[0] == 1 and np.all(toggled.layers[1].running_mean != 0)
    plain, toggled = _model(), _model().freeze(1).unfreeze()
    plain.fit(X, y, epochs=2, batch_size=8, verbose=0)
    toggled.fit(X, y, epochs=2, batch_size=8, verbose=0)
    np.testing.assert_array_equal(toggled.params, plain.params)
    for a, b in zip(_state(plain.layers[1]), _state(toggled.layers[1])):
        np.testing.assert_array_equal(a, b)
    assert toggled.layers[1].num_batches_tracked[0] == 4


def test_a_batchnorm_inside_a_frozen_container_is_frozen_and_one_without_running_statistics_uses_the_batch():
    X, y = _data(16)
    block = fnn.Residual([fnn.Dense(6, 6), fnn.BatchNorm1d(6, momentum=0.5)])
    model = fnn.Sequential([fnn.Dense(4, 6), block, fnn.Dense(6, 3)], dtype="float64", seed=1)
    model.compile("cross_entropy", fnn.optim.SGD(lr=0.1))
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    inner = block.block[1]
    moved = _state(inner)
    model.freeze("1")
    assert inner.trainable and inner.frozen
    model.fit(X, y, epochs=2, batch_size=8, verbose=0)
    for a, b in zip(moved, _state(inner)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model.forward(X, training=True), model.forward(X, training=False))
    # track_running_stats=False: no statistics to use; frozen, it normalises with the batch's (torch's eval mode)
    batchwise = _model(norm=fnn.BatchNorm1d(6, track_running_stats=False)).freeze(1)
    out = batchwise.layer_outputs(X[:8], training=True)[1]
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=0), 1.0, rtol=1e-3)
    assert batchwise.layers[1].needs_batch_over_one


def test_accumulated_steps_with_a_frozen_batchnorm_equal_the_big_batch():
    """With its statistics fixed, a BatchNorm no longer depends on how the batch is cut."""
    X, y = _data(16)
    big, small = _warmed(), _warmed()
    big.fit(X, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    small.fit(X, y, epochs=2, batch_size=4, accumulate=2, shuffle=False, verbose=0)
    np.testing.assert_allclose(small.params, big.params, rtol=1e-11, atol=1e-13)
    for a, b in zip(_state(big.layers[1]), _state(small.layers[1])):
        np.testing.assert_array_equal(a, b)


def test_fused_steps_equal_unfused_ones_bit_for_bit(monkeypatch, tmp_path):
    """BatchNorm -> ReLU -> Dropout frozen: the norm fusion runs the group as its evaluation-mode
    pair (kernels.batchnorm_act), which gives the layer-by-layer plan's bits (parameters, the
    frozen gamma/beta's gradients, running statistics), and the one-call fused step gives the
    call-by-call bits."""
    X, y = _data(16)
    runs = {}
    for fuse, norm_fusion in (("always", True), ("never", True), ("never", False)):
        monkeypatch.setattr(_config, "FUSE", fuse)
        monkeypatch.setattr(_norm_fusion, "ENABLED", norm_fusion)
        monkeypatch.setenv("FASTNN_CACHE_DIR", str(tmp_path))
        monkeypatch.setattr(_fused, "_LOADED", {})
        model = _warmed(tail=(fnn.Dropout(0.3),))
        model.fit(X, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
        plan = model.step_plan(8)
        assert plan.run.fused == (fuse == "always")
        kernels = [fn.__name__ for fn, _ in plan.calls]
        pair = {"batchnorm_act_forward_eval", "batchnorm_act_backward_eval"}
        assert pair <= set(kernels) if norm_fusion else "batchnorm_forward_eval" in kernels
        assert "batchnorm_act_forward_train" not in kernels and "batchnorm_forward_train_counted" not in kernels
        runs[fuse, norm_fusion] = model.params.copy(), model.grads.copy(), model.layers[1].running_mean.copy()
    for run in (runs["never", True], runs["never", False]):
        for a, b in zip(runs["always", True], run):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("case", ["affine", "not affine", "no dropout", "float32"])
def test_the_fused_frozen_group_trains_as_the_layers_bit_for_bit(case):
    """The evaluation-mode pair against the layers' kernels: losses, parameters, every gradient
    (the frozen gamma/beta's too: they enter the gradient norm) and the running statistics."""
    X, y = _data(24, seed=4)
    runs = []
    for fused in (True, False):
        _norm_fusion.ENABLED = fused
        try:
            norm = fnn.BatchNorm1d(6, momentum=0.3, affine=case != "not affine")
            tail = () if case == "no dropout" else (fnn.Dropout(0.4),)
            model = _model("float32" if case == "float32" else "float64", norm=norm, tail=tail)
            model.fit(X[:8], y[:8], epochs=1, batch_size=8, verbose=0)
            model.freeze(1)
            losses = [model.train_step(X[i : i + 8], y[i : i + 8]) for i in (0, 8, 16)]
            names = {fn.__name__ for fn, _ in model.step_plan(8).calls}
        finally:
            _norm_fusion.ENABLED = True
        assert ("batchnorm_act_backward_eval" in names) == fused
        runs.append((np.array(losses), model.params.copy(), model.grads.copy(), *_state(norm)[:3]))
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_a_saved_model_keeps_its_frozen_batchnorm(tmp_path):
    X, y = _data(16)
    model = _warmed()
    model.save(tmp_path / "m.safetensors")
    loaded = fnn.load(tmp_path / "m.safetensors")
    assert loaded.layers[1].frozen
    before = _state(loaded.layers[1])
    model.fit(X, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    loaded.fit(X, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    np.testing.assert_array_equal(loaded.params, model.params)
    for a, b in zip(before, _state(loaded.layers[1])):
        np.testing.assert_array_equal(a, b)


def test_torch_s_fine_tuning_recipe_crosses_over_both_ways():
    """from_torch: a BatchNorm in eval mode with requires_grad=False inside a module in train mode
    becomes a frozen BatchNorm (also without parameters), and a step of each trains alike;
    to_torch gives it back in eval mode without gradients, the rest in train mode."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.BatchNorm1d(6, affine=False))
    module = nn.Sequential(*module, nn.Linear(6, 3)).double().train()
    with torch.no_grad():
        for bn in (module[1], module[3]):
            bn.running_mean.copy_(torch.linspace(-1, 1, 6, dtype=torch.float64))
            bn.running_var.copy_(torch.linspace(0.5, 2, 6, dtype=torch.float64))
        module[1].weight.copy_(torch.linspace(0.5, 1.5, 6, dtype=torch.float64))
    for bn in (module[1], module[3]):
        bn.eval()
        bn.requires_grad_(False)
    model = fnn.from_torch(module).compile("cross_entropy", fnn.optim.SGD(lr=0.1))
    assert model.training and [layer.frozen for layer in model.layers] == [False, True, False, True, False]
    back = model.to_torch()
    assert back.training and not back[1].training and not back[3].training and back[0].training
    assert [p.requires_grad for p in back[1].parameters()] == [False, False]
    X, y = _data(8)
    opt = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=0.1)
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(module(torch.from_numpy(X)), torch.from_numpy(y))
    loss.backward()
    opt.step()
    assert model.train_step(X, y) == pytest.approx(loss.item(), rel=1e-12)
    again = fnn.from_torch(module)
    np.testing.assert_allclose(model.params, again.params, rtol=1e-12, atol=1e-14)
    for name in ("running_mean", "running_var"):  # unchanged on both sides
        np.testing.assert_array_equal(getattr(model.layers[1], name), getattr(again.layers[1], name))
        np.testing.assert_allclose(getattr(model.layers[1], name), getattr(back[1], name).numpy())


def test_torch_modules_that_fastnn_would_train_otherwise_are_refused():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    module = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 3)).train()
    module[1].requires_grad_(False)  # frozen but in train mode: torch updates its statistics
    with pytest.raises(NotImplementedError, match=r"BatchNorm1d.*train mode.*requires_grad=False.*\.eval\(\)"):
        fnn.from_torch(module)
    module[1].requires_grad_(True).eval()  # eval mode but trainable
    with pytest.raises(NotImplementedError, match=r"BatchNorm1d.*eval mode.*require grad.*requires_grad_\(False\)"):
        fnn.from_torch(module)
    from fastnn.interop import torch_adapters

    residual = torch_adapters.adapters().Residual(nn.Sequential(nn.Linear(6, 6), nn.BatchNorm1d(6)), None)
    module = nn.Sequential(nn.Linear(4, 6), residual).train()
    residual.block[1].eval()  # a trainable block with a BatchNorm in eval mode inside
    with pytest.raises(NotImplementedError, match=r"BatchNorm1d.*eval mode inside.*freeze the whole Residual"):
        fnn.from_torch(module)
    residual.requires_grad_(False)  # the block frozen whole: its BatchNorm is a frozen one
    model = fnn.from_torch(module)
    assert model.layers[1].frozen and model.layers[1].block[1].frozen
    residual.block[1].train()
    with pytest.raises(NotImplementedError, match=r"BatchNorm1d.*train mode.*inside.*frozen whole"):
        fnn.from_torch(module)
