"""BatchNorm1d -> activation (-> Dropout) fused in training step plans (fastnn._norm_fusion): the
same training as the layer-by-layer plan, which groups fuse, and the one-call step bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _config, _fused, _norm_fusion

FUSED = {"batchnorm_act_forward_train", "batchnorm_act_backward"}


def _kernels(model, batch):
    return {fn.__name__ for fn, _ in model.step_plan(batch).calls}


def _train(layers, X, y, fused, steps=4, batch=9, dtype="float64"):
    """(losses, params, buffers, kernel names, whether the step ran as one call) of ``steps`` Adam steps, plans fused or not."""
    _norm_fusion.ENABLED = fused
    try:
        model = fnn.Sequential(layers(), seed=5, dtype=dtype)
        model.compile(loss="cross_entropy", optimizer=fnn.optim.Adam(lr=0.01))
        losses = [
            model.train_step(X[i * batch : (i + 1) * batch], y[i * batch : (i + 1) * batch]) for i in range(steps)
        ]
        kernels = _kernels(model, batch)
        one_call = bool(model.step_plan(batch).run.fused)
    finally:
        _norm_fusion.ENABLED = True
    buffers = {k: np.array(v, copy=True) for k, v in model.state_arrays().items()}
    return np.array(losses), model.params.copy(), buffers, kernels, one_call


def _bn_relu_dropout():
    return [fnn.Dense(7, 13), fnn.BatchNorm1d(13), fnn.ReLU(), fnn.Dropout(0.3), fnn.Dense(13, 3)]


CASES = {
    "relu+dropout": _bn_relu_dropout,
    "tanh, no dropout": lambda: [fnn.Dense(7, 13), fnn.BatchNorm1d(13), fnn.Tanh(), fnn.Dense(13, 3)],
    "elu+identity dropout": lambda: [
        fnn.Dense(7, 13),
        fnn.BatchNorm1d(13),
        fnn.ELU(0.5),
        fnn.Dropout(0.0),
        fnn.Dense(13, 3),
    ],
    "not affine, momentum None, two groups": lambda: [
        fnn.BatchNorm1d(7, affine=False, momentum=None),
        fnn.LeakyReLU(0.2),
        fnn.Dropout(0.5),
        fnn.Dense(7, 13),
        fnn.BatchNorm1d(13),
        fnn.GELU(),
        fnn.Dropout(0.1),
        fnn.Dense(13, 3),
    ],
}


@pytest.mark.parametrize("case", list(CASES))
def test_fused_plan_trains_as_the_layer_by_layer_plan(case, rng):
    X = rng.standard_normal((36, 7))
    y = np.arange(36) % 3
    fused = _train(CASES[case], X, y, fused=True)
    loop = _train(CASES[case], X, y, fused=False)
    assert FUSED <= fused[3] and not FUSED & loop[3]
    assert {"batchnorm_forward_train_counted", "activation_forward"} <= loop[3] - fused[3]
    np.testing.assert_allclose(fused[0], loop[0], rtol=1e-12)
    np.testing.assert_allclose(fused[1], loop[1], rtol=1e-12, atol=1e-14)
    assert fused[2].keys() == loop[2].keys()
    for name in loop[2]:  # running statistics, batch counts, dropout steps
        np.testing.assert_allclose(fused[2][name], loop[2][name], rtol=1e-12, err_msg=name)


def test_groups_that_do_not_fit_are_left_to_the_layers():
    """Softmax rows, channels-first batch norm, and evaluation-mode plans record other calls."""
    model = fnn.Sequential(
        [fnn.Dense(4, 6), fnn.BatchNorm1d(6), fnn.Softmax(), fnn.Dense(6, 2)], seed=0, dtype="float64"
    )
    model.compile(loss="mse", optimizer="sgd")
    assert not FUSED & _kernels(model, 4)
    conv = fnn.Sequential([fnn.BatchNorm1d(3), fnn.ReLU(), fnn.Flatten(), fnn.Dense(15, 2)], input_shape=(3, 5))
    conv.compile(loss="mse", optimizer="sgd")
    assert not FUSED & _kernels(conv, 4)
    assert _norm_fusion.find_groups([[], []]) == []


def test_a_batch_of_one_refuses_as_the_layers_do():
    model = fnn.Sequential(_bn_relu_dropout(), seed=0)
    model.compile(loss="cross_entropy", optimizer="sgd")
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        model.train_step(np.ones((1, 7), np.float32), np.array([1]))


def test_the_one_call_step_equals_the_call_by_call_step_bit_for_bit(monkeypatch, tmp_path, rng):
    X = rng.standard_normal((36, 7)).astype(np.float32)
    y = np.arange(36) % 3
    monkeypatch.setattr(_config, "FUSE", "always")
    monkeypatch.setenv("FASTNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_fused, "_LOADED", {})
    one_call = _train(_bn_relu_dropout, X, y, fused=True, dtype="float32")
    monkeypatch.setattr(_config, "FUSE", "never")
    by_call = _train(_bn_relu_dropout, X, y, fused=True, dtype="float32")
    assert FUSED <= one_call[3] and one_call[4] and not by_call[4]
    for a, b in zip(one_call[:2], by_call[:2]):
        np.testing.assert_array_equal(a, b)
    for name in by_call[2]:
        np.testing.assert_array_equal(one_call[2][name], by_call[2][name], err_msg=name)


def test_backward_hooks_of_a_group_run_after_its_fused_call_in_layer_order(rng):
    """fastnn.distributed's hook (calls after each layer's backward) keeps every layer's calls, in
    the layer-by-layer order, the group's after its fused backward."""
    X, y = rng.standard_normal((9, 7)), np.arange(9) % 3
    seen: list = []
    model = fnn.Sequential(_bn_relu_dropout(), seed=5, dtype="float64")
    model.compile(loss="cross_entropy", optimizer="sgd")
    model.set_backward_hook(lambda i: [(seen.append, (i,))])
    model.train_step(X, y)
    assert seen == [4, 3, 2, 1, 0] and FUSED <= _kernels(model, 9)
    names = [getattr(fn, "__name__", "hook") for fn, _ in model.step_plan(9).calls]
    fused_at = names.index("batchnorm_act_backward")
    assert names[fused_at + 1 : fused_at + 4] == ["append"] * 3  # layers 3, 2, 1's hooks


def test_a_dropout_over_other_rows_stays_out_of_the_group(rng):
    """TimeDistributed(BatchNorm1d) -> ReLU sees (batch * time, features) rows, the Dropout after it
    (batch, time * features): the group fuses batch norm and activation only, the dropout keeps its
    own call and mask layout (fusing it wrote the mask and output out of bounds: the process aborted)."""

    def layers():
        return [fnn.TimeDistributed(fnn.BatchNorm1d(3)), fnn.ReLU(), fnn.Dropout(0.5), fnn.LastStep(), fnn.Dense(3, 3)]

    def train(fused):
        _norm_fusion.ENABLED = fused
        try:
            model = fnn.Sequential(layers(), input_shape=(4, 3), seed=0, dtype="float64")
            model.compile(loss="cross_entropy", optimizer="sgd")
            losses = [model.train_step(X, y) for _ in range(3)]
            names = [fn.__name__ for fn, _ in model.step_plan(6).calls]
        finally:
            _norm_fusion.ENABLED = True
        return names, np.array(losses), model.params.copy()

    X, y = rng.standard_normal((6, 4, 3)), np.arange(6) % 3
    fused, loop = train(True), train(False)
    assert {"batchnorm_act_forward_train", "dropout_forward_counted_from", "dropout_backward"} <= set(fused[0])
    np.testing.assert_array_equal(fused[1], loop[1])
    np.testing.assert_array_equal(fused[2], loop[2])
