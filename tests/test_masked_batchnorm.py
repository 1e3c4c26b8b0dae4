"""BatchNorm over padded sequence steps (Keras 3's masked BatchNormalization): inside
TimeDistributed after Masking, the batch statistics (and the running statistics' update) are those
of the valid (sample, step) positions, every position is normalised with them, and the gradient is
that forward's exact one (kernels.batchnorm with ``lengths``; layers.sequence.TimeDistributed)."""

import copy

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _norm_fusion
from fastnn.kernels.batchnorm import batchnorm_backward, batchnorm_forward_train_counted, partial_rows
from fastnn.layers.base import walk_layers
from tests._gradcheck import numeric_gradients_inplace

EPS = 1e-5


def _valid_rows(lengths, steps, positions):
    """Which rows (sample, step, position) of the kernels' (batch * steps * positions, C) are valid."""
    valid = np.arange(steps)[None, :] < np.asarray(lengths)[:, None]
    return np.repeat(valid.reshape(-1), positions)


def _reference(x, valid, gamma, beta, running_mean, running_var, momentum):
    """float64 NumPy: (out, mean, var, running_mean, running_var) with statistics over valid rows."""
    xv = x[valid]
    mean, var = xv.mean(axis=0), xv.var(axis=0)
    out = (x - mean) / np.sqrt(var + EPS) * gamma + beta
    rm = (1 - momentum) * running_mean + momentum * mean
    rv = (1 - momentum) * running_var + momentum * xv.var(axis=0, ddof=1)
    return out, mean, var, rm, rv


def _forward(x, gamma, beta, lengths, per_sample, per_step, momentum=0.1, rm=None, rv=None):
    c = x.shape[1]
    rm = np.zeros(c) if rm is None else rm
    rv = np.ones(c) if rv is None else rv
    out, x_hat = np.empty_like(x), np.empty_like(x)
    mean, inv_std, batches = np.empty(c), np.empty(c), np.zeros(1, np.int64)
    partials = np.zeros((2, partial_rows(x.shape[0]), c))
    args = (x, gamma, beta, rm, rv, out, x_hat, mean, inv_std, partials, EPS, momentum, True, True, batches)
    batchnorm_forward_train_counted(*args, lengths, per_sample, per_step)
    return out, x_hat, mean, inv_std, rm, rv, batches


# two samples of 140 steps: sample 0 has 1 valid step, so the second 64-row chunk holds no valid row
CASES = {"rows": (np.array([1, 140]), 140, 1), "channels first, 3 positions": (np.array([4, 2, 7]), 7, 3)}


@pytest.mark.parametrize("case", list(CASES))
def test_the_statistics_are_those_of_the_valid_steps(case, rng):
    lengths, steps, positions = CASES[case]
    valid = _valid_rows(lengths, steps, positions)
    x = rng.standard_normal((valid.size, 3)) * 2 + 1
    x[~valid] = rng.standard_normal(((~valid).sum(), 3)) * 50 + 100  # padding far off: would show in any statistic
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    rm0, rv0 = rng.standard_normal(3), rng.random(3) + 0.5
    out, _, mean, inv_std, rm, rv, batches = _forward(
        x, gamma, beta, lengths, steps * positions, positions, 0.3, rm0.copy(), rv0.copy()
    )
    want_out, want_mean, want_var, want_rm, want_rv = _reference(x, valid, gamma, beta, rm0, rv0, 0.3)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-12)
    np.testing.assert_allclose(inv_std, 1 / np.sqrt(want_var + EPS), rtol=1e-12)
    np.testing.assert_allclose(out, want_out, rtol=1e-11, atol=1e-12)  # padded rows: the valid steps' statistics
    np.testing.assert_allclose(rm, want_rm, rtol=1e-12)
    np.testing.assert_allclose(rv, want_rv, rtol=1e-12)  # unbiased over the valid count
    assert batches[0] == 1


def test_the_backward_is_the_exact_gradient_of_the_masked_forward(rng):
    """Central differences of sum(out * G) with G nonzero at padded rows too: a valid row gets the
    statistics' terms over the valid count, a padded row only gamma * inv_std * G."""
    lengths, steps, positions = CASES["channels first, 3 positions"]
    valid = _valid_rows(lengths, steps, positions)
    x = rng.standard_normal((valid.size, 3))
    gamma, beta, weights = rng.standard_normal(3), rng.standard_normal(3), rng.standard_normal(x.shape)
    out, x_hat, _, inv_std, *_ = _forward(x, gamma, beta, lengths, steps * positions, positions)
    grad_x, grad_gamma, grad_beta = np.empty_like(x), np.empty(3), np.empty(3)
    partials = np.zeros((2, partial_rows(x.shape[0]), 3))
    batchnorm_backward(
        weights,
        x_hat,
        inv_std,
        gamma,
        grad_x,
        grad_gamma,
        grad_beta,
        partials,
        True,
        lengths,
        steps * positions,
        positions,
    )
    params = [x, gamma, beta]
    numeric = numeric_gradients_inplace(
        lambda: float(np.sum(_forward(x, gamma, beta, lengths, steps * positions, positions)[0] * weights)), params
    )
    for got, want in zip((grad_x, grad_gamma, grad_beta), numeric):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(grad_x[~valid], (weights * gamma * inv_std)[~valid], rtol=1e-13)


def _sequences(rng, lengths=(5, 2, 3, 1, 4, 5, 2, 3), steps=5, features=3):
    X = rng.standard_normal((len(lengths), steps, features)) * 1.5 + 0.5
    for b, n in enumerate(lengths):
        X[b, n:] = 0.0
    return X, np.arange(len(lengths)) % 2


def _model(*middle, momentum=0.1, dtype="float64", seed=0):
    layers = [fnn.Masking(), fnn.TimeDistributed(fnn.BatchNorm1d(3, momentum=momentum)), *middle]
    model = fnn.Sequential([*layers, fnn.LastStep(), fnn.Dense(3, 2)], input_shape=(5, 3), seed=seed, dtype=dtype)
    return model.compile(loss="cross_entropy", optimizer=fnn.optim.SGD(lr=0.1))


def test_the_layer_equals_batch_norm_on_the_gathered_valid_rows(rng):
    X, _ = _sequences(rng)
    valid = _valid_rows((X != 0).any(axis=2).sum(axis=1), 5, 1)
    gathered = fnn.Sequential([fnn.BatchNorm1d(3)], input_shape=(3,), seed=0, dtype="float64")
    masked = fnn.Sequential(
        [fnn.Masking(), fnn.TimeDistributed(fnn.BatchNorm1d(3))], input_shape=(5, 3), seed=0, dtype="float64"
    )
    out = masked.forward(X, training=True).reshape(-1, 3)
    want = gathered.forward(X.reshape(-1, 3)[valid], training=True)
    np.testing.assert_allclose(out[valid], want, rtol=1e-12, atol=1e-13)
    inner, bn = masked.layers[1].layer, gathered.layers[0]
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        np.testing.assert_allclose(getattr(inner, name), getattr(bn, name), rtol=1e-12, err_msg=name)
    # padded positions: normalised with the valid steps' statistics (Keras 3)
    x_pad = X.reshape(-1, 3)[~valid]
    mean, var = X.reshape(-1, 3)[valid].mean(0), X.reshape(-1, 3)[valid].var(0)
    np.testing.assert_allclose(out[~valid], (x_pad - mean) / np.sqrt(var + EPS), rtol=1e-12)
    # evaluation: the running statistics, per position
    out_eval = masked.forward(X, training=False).reshape(-1, 3)
    want_eval = (X.reshape(-1, 3) - inner.running_mean) / np.sqrt(inner.running_var + EPS)
    np.testing.assert_allclose(out_eval, want_eval, rtol=1e-12, atol=1e-13)


def test_parameter_gradients_by_central_differences(rng):
    X, y = _sequences(rng)
    model = _model(fnn.Tanh())
    X, y = model.check_data(X, y)
    model.loss_and_grads(X, y)
    analytic = model.grads.copy()
    (numeric,) = numeric_gradients_inplace(lambda: model.loss_and_grads(X, y)[0], [model.params])
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)
    model.run_step(X, y, update=False)  # the recorded step plan (fused group) gives the same
    np.testing.assert_allclose(model.grads, analytic, rtol=1e-12, atol=1e-14)


def _train(middle, fused, X, y, steps=3, dtype="float64"):
    _norm_fusion.ENABLED = fused
    try:
        model = _model(*middle(), dtype=dtype)
        losses = [model.train_step(X, y) for _ in range(steps)]
        names = [fn.__name__ for fn, _ in model.step_plan(X.shape[0]).calls]
    finally:
        _norm_fusion.ENABLED = True
    bn = model.layers[1].layer
    return (
        names,
        np.array(losses),
        model.params.copy(),
        model.grads.copy(),
        bn.running_mean.copy(),
        bn.running_var.copy(),
    )


@pytest.mark.parametrize(
    "middle",
    [lambda: [fnn.ReLU()], lambda: [fnn.ELU(0.5), fnn.Dropout(0.3)]],
    ids=["relu", "elu, dropout over (batch, time * features): its own calls"],
)
def test_the_fused_group_trains_as_the_layers_bit_for_bit(middle, rng):
    X, y = _sequences(rng)
    fused, loop = _train(middle, True, X, y), _train(middle, False, X, y)
    assert "batchnorm_act_forward_train" in fused[0] and "batchnorm_act_forward_train" not in loop[0]
    for a, b in zip(fused[1:], loop[1:]):
        np.testing.assert_array_equal(a, b)


def test_fit_matches_a_torch_reference_step(rng):
    """One full-batch SGD step of Masking -> TimeDistributed(BatchNorm1d) -> ReLU -> LastStep -> Dense
    against torch with the statistics taken over the valid positions by hand."""
    torch = pytest.importorskip("torch")
    X, y = _sequences(rng)
    lengths = (X != 0).any(axis=2).sum(axis=1)
    model = _model(fnn.ReLU(), momentum=0.2)
    bn, dense = model.layers[1].layer, model.layers[-1]
    bn.weight[...] = rng.standard_normal(3)
    bn.bias[...] = rng.standard_normal(3)
    w, b, g, beta = (torch.tensor(a.copy(), requires_grad=True) for a in (dense.weight, dense.bias, bn.weight, bn.bias))
    x = torch.from_numpy(X)
    mask = torch.from_numpy(np.arange(5)[None, :] < lengths[:, None])
    xv = x[mask]
    mean, var = xv.mean(0), xv.var(0, unbiased=False)
    h = torch.relu((x - mean) / torch.sqrt(var + EPS) * g + beta)
    last = h[torch.arange(len(X)), torch.from_numpy(lengths - 1)]
    loss = torch.nn.functional.cross_entropy(last @ w + b, torch.from_numpy(y))
    loss.backward()
    history = model.fit(X, y, epochs=1, batch_size=len(X), shuffle=False, verbose=0)
    np.testing.assert_allclose(history.history["loss"][0], loss.item(), rtol=1e-12)
    for got, param in ((dense.weight, w), (dense.bias, b), (bn.weight, g), (bn.bias, beta)):
        np.testing.assert_allclose(got, (param - 0.1 * param.grad).detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bn.running_mean, 0.2 * mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, 0.8 + 0.2 * xv.var(0, unbiased=True).numpy(), rtol=1e-12)


def test_a_frozen_masked_batch_norm_keeps_its_running_statistics(rng):
    X, y = _sequences(rng)
    model = _model(fnn.ReLU())
    model.train_step(X, y)
    model.freeze(1)
    bn = model.layers[1].layer
    before = bn.running_mean.copy(), bn.running_var.copy(), bn.num_batches_tracked.copy()
    model.train_step(X, y)
    for a, b in zip(before, (bn.running_mean, bn.running_var, bn.num_batches_tracked)):
        np.testing.assert_array_equal(a, b)
    assert "batchnorm_act_forward_eval" in {fn.__name__ for fn, _ in model.step_plan(len(X)).calls}


def test_a_saved_masked_model_predicts_and_trains_on_identically(tmp_path, rng):
    X, y = _sequences(rng)
    model = _model(fnn.ReLU(), fnn.Dropout(0.2))
    model.fit(X, y, epochs=2, batch_size=4, verbose=0)
    model.save(tmp_path / "m.safetensors")
    loaded = fnn.load(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    model.fit(X, y, epochs=1, batch_size=4, verbose=0)
    loaded.fit(X, y, epochs=1, batch_size=4, verbose=0)
    np.testing.assert_array_equal(loaded.params, model.params)
    np.testing.assert_array_equal(loaded.layers[1].layer.running_var, model.layers[1].layer.running_var)


def _synchronised(model, rows):
    """``model`` with its BatchNorms computing their statistics through a SyncBatchNorm over a group
    of one rank (``MPI.COMM_SELF``): the synchronised NumPy path, which must equal the kernels."""
    MPI = pytest.importorskip("mpi4py.MPI")
    run = fnn.distributed.Session(MPI.COMM_SELF, model)
    sync = fnn.distributed.SyncBatchNorm(run)
    for layer in run.norms:
        layer.set_synchronizer(sync)
    model.clear_plans()
    run.shard(0, rows)  # the shard is the whole batch: weight 1
    return sync


def _steps_of(model, X, y, steps=3):
    losses = [model.train_step(X, y) for _ in range(steps)]
    return np.array(losses), model.state_arrays()


@pytest.mark.parametrize(
    "middle",
    [
        lambda: [fnn.ReLU()],
        lambda: [fnn.TimeDistributed(fnn.Residual([fnn.Dense(3, 3), fnn.BatchNorm1d(3, momentum=None)]))],
    ],
    ids=["relu", "and a nested batch norm"],
)
def test_a_synchronised_batch_norm_over_padded_steps_equals_the_kernels(middle, rng):
    """SyncBatchNorm (the data-parallel fit's, here over one rank) takes the statistics of the
    valid steps' rows, the running statistics from them and the masked forward's gradient, as the
    one-process kernels: losses, weights, running statistics and batches counted after 3 steps."""
    X, y = _sequences(rng)
    plain, synced = _model(*middle()), _model(*middle())
    sync = _synchronised(synced, len(X))
    assert "_forward" in {fn.__name__ for fn, _ in synced.step_plan(len(X)).calls}  # the synchronised calls ran
    want_losses, want = _steps_of(plain, X, y)
    losses, got = _steps_of(synced, X, y)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-12)
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-10, atol=1e-13, err_msg=name)
    assert sync.rows == (X != 0).any(axis=2).sum()  # the valid steps, not the 8 * 5 rows


def test_a_synchronised_batch_norm_keeps_each_layers_row_count(rng):
    """Two synchronised BatchNorms over different rows per sample (BatchNorm2d over 3 * 3 positions,
    then BatchNorm1d over one): each backward divides by its own layer's count (it took the last
    forward's, the other layer's), so the step equals the kernels'."""
    layers = [
        fnn.Conv2d(1, 2, 3),
        fnn.BatchNorm2d(2),
        fnn.ReLU(),
        fnn.Flatten(),
        fnn.Dense(18, 4),
        fnn.BatchNorm1d(4),
        fnn.Dense(4, 2),
    ]
    X, y = rng.standard_normal((6, 1, 5, 5)), np.arange(6) % 2
    models = [
        fnn.Sequential(copy.deepcopy(layers), input_shape=(1, 5, 5), seed=0, dtype="float64").compile(
            "cross_entropy", fnn.optim.SGD(lr=0.1)
        )
        for _ in range(2)
    ]
    _synchronised(models[1], len(X))
    (want_losses, want), (losses, got) = (_steps_of(model, X, y) for model in models)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-12)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-10, atol=1e-13, err_msg=name)


# ---------------------------------------------------------------- BatchNorm nested in TimeDistributed
# Each case: (the layers after Masking, the equivalent layers on the gathered valid steps' rows, the
# step shape). The masked model on padded sequences must equal the gathered model on the valid steps.
NESTINGS = {
    "residual": (
        lambda: [fnn.TimeDistributed(fnn.Residual([fnn.Dense(3, 3), fnn.BatchNorm1d(3), fnn.ReLU()]))],
        lambda: [fnn.Residual([fnn.Dense(3, 3), fnn.BatchNorm1d(3), fnn.ReLU()])],
        (3,),
    ),
    "residual in residual": (
        lambda: [fnn.TimeDistributed(fnn.Residual([fnn.Residual([fnn.BatchNorm1d(3)]), fnn.Dense(3, 3)]))],
        lambda: [fnn.Residual([fnn.Residual([fnn.BatchNorm1d(3)]), fnn.Dense(3, 3)])],
        (3,),
    ),
    "time distributed in time distributed": (
        lambda: [fnn.TimeDistributed(fnn.TimeDistributed(fnn.BatchNorm1d(3)))],
        lambda: [fnn.TimeDistributed(fnn.BatchNorm1d(3))],
        (2, 3),
    ),
    "time distributed in a residual block": (
        lambda: [fnn.TimeDistributed(fnn.Residual([fnn.TimeDistributed(fnn.BatchNorm1d(3)), fnn.Tanh()]))],
        lambda: [fnn.Residual([fnn.TimeDistributed(fnn.BatchNorm1d(3)), fnn.Tanh()])],
        (2, 3),
    ),
    "channels first in a residual block (4 positions)": (
        lambda: [fnn.TimeDistributed(fnn.Residual([fnn.BatchNorm1d(2), fnn.ReLU()]))],
        lambda: [fnn.Residual([fnn.BatchNorm1d(2), fnn.ReLU()])],
        (2, 4),
    ),
    "batchnorm2d in a residual block, batch statistics in evaluation": (
        lambda: [fnn.TimeDistributed(fnn.Residual([fnn.BatchNorm2d(2, track_running_stats=False)]))],
        lambda: [fnn.Residual([fnn.BatchNorm2d(2, track_running_stats=False)])],
        (2, 2, 3),
    ),
    "residual around time distributed": (
        lambda: [fnn.Residual([fnn.TimeDistributed(fnn.BatchNorm1d(3)), fnn.Dense(3, 3)])],
        lambda: [fnn.Residual([fnn.BatchNorm1d(3), fnn.Dense(3, 3)])],
        (3,),
    ),
}


def _norms(model):
    return [layer for layer in walk_layers(model.layers) if isinstance(layer, fnn.BatchNorm1d)]


@pytest.mark.parametrize("case", list(NESTINGS))
def test_a_nested_batch_norm_takes_the_valid_steps_statistics(case, rng):
    """Forward (training, then evaluation), running statistics and the gradients of
    sum(out * G) (G zero at padded steps) equal the same layers on the valid steps' rows gathered
    into a batch: the padded steps enter no statistic at any depth of nesting."""
    masked_layers, gathered_layers, step = NESTINGS[case]
    lengths = np.array([5, 2, 3, 1, 4, 5, 2, 3])
    valid = np.arange(5)[None, :] < lengths[:, None]
    X = rng.standard_normal((len(lengths), 5, *step)) * 1.5 + 0.5
    X[~valid] = 0.0  # Masking(0.0)'s padding: counted, it would pull every mean towards 0
    masked = fnn.Sequential([fnn.Masking(), *masked_layers()], input_shape=(5, *step), seed=0, dtype="float64")
    gathered = fnn.Sequential(gathered_layers(), input_shape=step, seed=1, dtype="float64")
    assert masked.params.size == gathered.params.size
    gathered.params[...] = masked.params
    out = masked.forward(X, training=True)
    want = gathered.forward(X[valid], training=True)
    np.testing.assert_allclose(out[valid], want, rtol=1e-12, atol=1e-12)
    G = rng.standard_normal(out.shape)
    G[~valid] = 0.0
    grad_x = masked.backward(G)
    want_grad_x = gathered.backward(G[valid])
    np.testing.assert_allclose(grad_x[valid], want_grad_x, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(masked.grads, gathered.grads, rtol=1e-10, atol=1e-12)
    for got_norm, want_norm in zip(*(_norms(model) for model in (masked, gathered)), strict=True):
        for name, value in want_norm.buffers().items():
            np.testing.assert_allclose(got_norm.buffers()[name], value, rtol=1e-12, atol=1e-14, err_msg=name)
    out_eval = masked.forward(X, training=False)
    np.testing.assert_allclose(out_eval[valid], gathered.forward(X[valid], training=False), rtol=1e-12, atol=1e-12)


def test_a_nested_batch_norm_normalises_padded_steps_with_the_valid_ones_statistics(rng):
    X, _ = _sequences(rng)
    valid = (X != 0).any(axis=2)
    model = fnn.Sequential(
        [fnn.Masking(), fnn.TimeDistributed(fnn.Residual([fnn.BatchNorm1d(3)]))], input_shape=(5, 3), dtype="float64"
    )
    out = model.forward(X, training=True)
    mean, var = X[valid].mean(axis=0), X[valid].var(axis=0)
    np.testing.assert_allclose(out, (X - mean) / np.sqrt(var + EPS) + X, rtol=1e-12, atol=1e-13)  # padded rows too


def test_nested_batch_norm_gradients_by_central_differences(rng):
    X, y = _sequences(rng)
    block = fnn.Residual([fnn.Dense(3, 3), fnn.BatchNorm1d(3), fnn.Tanh()])
    model = fnn.Sequential(
        [fnn.Masking(), fnn.TimeDistributed(block), fnn.LastStep(), fnn.Dense(3, 2)],
        input_shape=(5, 3),
        seed=0,
        dtype="float64",
    ).compile(loss="cross_entropy", optimizer="sgd")
    X, y = model.check_data(X, y)
    model.loss_and_grads(X, y)
    analytic = model.grads.copy()
    (numeric,) = numeric_gradients_inplace(lambda: model.loss_and_grads(X, y)[0], [model.params])
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)


class _Holder(fnn.Layer):
    """A user-written container: its child contexts would carry the steps, but fastnn cannot know."""

    lengths_policy = "keep"

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def sublayers(self):
        return [("inner", self.inner)]

    def build(self, input_shape, dtype):
        super().build(input_shape, dtype)
        return self.inner.build(input_shape, dtype)

    def forward_calls(self, x, ctx):
        return self.inner.forward_calls(x, ctx.child("inner"))

    def backward_calls(self, grad_y, ctx, need_grad_x):
        return self.inner.backward_calls(grad_y, ctx.child("inner"), need_grad_x)


@pytest.mark.parametrize(
    "layer",
    [
        lambda: fnn.TimeDistributed(_Holder(fnn.BatchNorm1d(3))),
        lambda: fnn.TimeDistributed(fnn.Residual([_Holder(fnn.BatchNorm1d(3))])),
        lambda: fnn.Residual([fnn.TimeDistributed(fnn.Residual([_Holder(fnn.BatchNorm1d(3))]))]),
    ],
    ids=["in a user container", "in a user container in a residual block", "under a residual block"],
)
def test_a_batch_norm_the_steps_cannot_reach_is_refused_when_built(layer):
    with pytest.raises(ValueError, match=r"BatchNorm1d\(3.*inside _Holder.*padded steps too.*Residual blocks"):
        fnn.Sequential([fnn.Masking(), layer()], input_shape=(5, 3), dtype="float64")
    fnn.Sequential([layer()], input_shape=(5, 3), dtype="float64")  # without masking: fine
