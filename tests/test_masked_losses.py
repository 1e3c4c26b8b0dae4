"""Per-step losses and metrics leave masked (padded) steps out, as Keras 3 does.

A model whose input carries per-sample lengths (``Masking`` or ``Embedding(mask_padding=True)``)
and whose output keeps the time axis trains and scores only the valid positions (step <
length): the mean is over them (Keras 3's ``sum(mask * loss) / sum(mask)``), padded positions get
a zero gradient, and accuracy and every metric count valid positions only, in every path that
trains or evaluates (fused and unfused steps, fit's feed, accumulation, streams, validation).
"""

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _config, optim
from tests import reference as ref
from tests._gradcheck import numeric_gradients_inplace
from tests._helpers import InterruptAt, loss_rows, valid_rows

LOSSES = ["cross_entropy", "mse", "mae", "huber", "binary_cross_entropy"]
LENGTHS = np.array([4, 1, 3, 2, 4, 1])


def _sequences(lengths=LENGTHS, steps=4, features=2, seed=0, dtype=np.float64):
    """Float sequences whose steps at and after each sample's length are all zero (Masking(0.0))."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((len(lengths), steps, features)).astype(dtype)
    X[~valid_rows(lengths, steps).reshape(len(lengths), steps)] = 0.0
    return X


def _tagger(loss="cross_entropy", k=3, dtype="float64", lr=0.1, metrics=None, recurrent=False, seed=0):
    middle = [fnn.LSTM(2, 4, return_sequences=True), fnn.Dense(4, k)] if recurrent else [fnn.Dense(2, k)]
    model = fnn.Sequential([fnn.Masking(0.0), *middle], input_shape=(4, 2), dtype=dtype, seed=seed)
    return model.compile(loss, optim.SGD(lr=lr), metrics=metrics)


def _targets(name, shape, k, seed=1):
    rng = np.random.default_rng(seed)
    if name == "cross_entropy":
        return rng.integers(0, k, shape)
    if name == "binary_cross_entropy":
        return rng.random((*shape, k))
    return rng.standard_normal((*shape, k))


# ---------------------------------------------------------------------------- the loss kernels


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", LOSSES)
def test_masked_losses_match_the_float64_reference(name, dtype, reduction):
    """(batch, time=4, 2, k) rows: per_step 2; the value, gradient and correct count of valid rows only."""
    rng = np.random.default_rng(0)
    steps, per_step, k = 4, 2, 3
    m = len(LENGTHS) * steps * per_step
    pred, target = loss_rows(name, rng, m, k, dtype)
    loss = fnn.losses.LOSSES[name](reduction=reduction)
    grad = np.full_like(pred, np.nan)
    value = loss.forward_backward(pred, target, grad, True, LENGTHS, per_step)
    valid = valid_rows(LENGTHS, steps, per_step)
    want, want_grad = ref.masked_loss(name, pred, target, valid, reduction)
    rtol = 1e-12 if dtype == np.float64 else 2e-6
    assert value == pytest.approx(want, rel=rtol)
    np.testing.assert_allclose(grad, want_grad, rtol=rtol, atol=1e-7 if dtype == np.float32 else 1e-15)
    assert not grad[~valid].any()  # padded rows: exactly zero
    assert loss.forward_backward(pred, target, grad, False, LENGTHS, per_step) == value
    if name in ("cross_entropy", "binary_cross_entropy"):
        count = (ref.accuracy_count if name == "cross_entropy" else ref.binary_accuracy_count)(
            pred[valid], target[valid]
        )
        assert loss.correct_count(pred, target, LENGTHS, per_step) == count


@pytest.mark.parametrize("name", ["cross_entropy", "mse"])
def test_masked_losses_over_many_rows_take_the_parallel_path_and_match(name):
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 65, 64)
    m, k = 64 * 64, 20  # m * k above PARALLEL_MIN_ELEMENTS: chunks in prange
    pred, target = loss_rows(name, rng, m, k, np.float64)
    grad = np.empty_like(pred)
    value = fnn.losses.get(name).forward_backward(pred, target, grad, True, lengths, 1)
    want, want_grad = ref.masked_loss(name, pred, target, valid_rows(lengths, 64))
    assert value == pytest.approx(want, rel=1e-12)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-10, atol=1e-16)


def test_a_sample_with_one_valid_step_and_a_batch_of_one():
    rng = np.random.default_rng(2)
    pred, labels = rng.standard_normal((5, 3)), rng.integers(0, 3, 5)
    grad = np.empty_like(pred)
    value = fnn.losses.CrossEntropy().forward_backward(pred, labels, grad, True, np.array([1]), 1)
    want, want_grad = ref.cross_entropy(pred[:1], labels[:1])
    assert value == pytest.approx(want, rel=1e-14)
    np.testing.assert_allclose(grad[:1], want_grad, rtol=1e-13)
    assert not grad[1:].any()


def test_masked_cross_entropy_and_mse_equal_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    batch, steps, c = len(LENGTHS), 4, 5
    logits, labels = rng.standard_normal((batch * steps, c)), rng.integers(0, c, batch * steps)
    valid = valid_rows(LENGTHS, steps)
    t_logits = torch.tensor(logits, requires_grad=True)
    ignored = torch.tensor(np.where(valid, labels, -100))
    want = torch.nn.CrossEntropyLoss(ignore_index=-100)(t_logits, ignored)
    want.backward()
    grad = np.empty_like(logits)
    value = fnn.losses.CrossEntropy().forward_backward(logits, labels, grad, True, LENGTHS, 1)
    assert value == pytest.approx(want.item(), rel=1e-12)
    np.testing.assert_allclose(grad, t_logits.grad.numpy(), rtol=1e-10, atol=1e-15)

    pred, target = rng.standard_normal((batch * steps, 2)), rng.standard_normal((batch * steps, 2))
    t_pred = torch.tensor(pred, requires_grad=True)
    mask = torch.tensor(valid, dtype=torch.float64)[:, None]
    want = (((t_pred - torch.tensor(target)) ** 2) * mask).sum() / (mask.sum() * 2)  # Keras' masked mean
    want.backward()
    value = fnn.losses.MSE().forward_backward(pred, target, grad[:, :2].copy(), True, LENGTHS, 1)
    out_grad = np.empty_like(pred)
    fnn.losses.MSE().forward_backward(pred, target, out_grad, True, LENGTHS, 1)
    assert value == pytest.approx(want.item(), rel=1e-12)
    np.testing.assert_allclose(out_grad, t_pred.grad.numpy(), rtol=1e-12, atol=1e-16)


def test_lengths_that_do_not_fit_the_rows_are_refused():
    loss, pred = fnn.losses.MSE(), np.zeros((6, 1))
    with pytest.raises(ValueError, match="not 4 samples"):
        loss.forward_backward(pred, pred, pred.copy(), True, np.array([1, 1, 1, 1]), 1)
    with pytest.raises(ValueError, match="1-D int64"):
        loss.forward_backward(pred, pred, pred.copy(), True, np.array([1.0, 2.0]), 1)
    with pytest.raises(ValueError, match="per_step"):
        loss.forward_backward(pred, pred, pred.copy(), True, np.array([1, 2]), 0)


# ---------------------------------------------------------------------------- the model


@pytest.mark.parametrize("name", ["cross_entropy", "mse"])
def test_model_loss_is_the_masked_mean_and_padded_targets_do_not_matter(name):
    model = _tagger(name, k=3)
    X = _sequences()
    y = _targets(name, (len(LENGTHS), 4), 3)
    assert model.masks_steps and model.per_step == 1
    np.testing.assert_array_equal(model.output_lengths(X), LENGTHS)
    loss, grads = model.loss_and_grads(X, y)
    out = model.predict(X).reshape(-1, 3)
    valid = valid_rows(LENGTHS, 4)
    target = y.reshape(-1) if name == "cross_entropy" else y.reshape(-1, 3)
    want, grad_out = ref.masked_loss(name, out, target, valid)
    assert loss == pytest.approx(want, rel=1e-12)
    rows = X.reshape(-1, 2)
    np.testing.assert_allclose(grads["1.weight"], rows.T @ grad_out, rtol=1e-10, atol=1e-14)
    y2 = y.copy()
    y2[~valid.reshape(y.shape[:2])] = _targets(name, (len(LENGTHS), 4), 3, seed=9)[~valid.reshape(y.shape[:2])]
    loss2, grads2 = model.loss_and_grads(X, y2)
    assert loss2 == loss
    np.testing.assert_array_equal(grads2["1.weight"], grads["1.weight"])


@pytest.mark.parametrize("name", ["cross_entropy", "huber"])
def test_recurrent_tagger_gradients_match_finite_differences(name):
    model = _tagger(name, k=3, recurrent=True)
    X = _sequences(np.array([4, 1, 3]))
    y = _targets(name, (3, 4), 3)
    model.loss_and_grads(X, y)
    analytic = model.grads.copy()  # every parameter's gradient, in the flat buffer's layout
    (numeric,) = numeric_gradients_inplace(lambda: model.loss_and_grads(X, y)[0], [model.params])
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)


def test_recurrent_tagger_equals_torch_on_each_sequence_alone():
    """An LSTM + Linear in torch with the same weights, run on each sample's valid steps only
    (what packed sequences compute), and CrossEntropyLoss over those steps: the same loss and
    the same Linear gradients."""
    torch = pytest.importorskip("torch")
    lengths = np.array([4, 1, 3])
    model = _tagger("cross_entropy", k=3, recurrent=True)
    plain = fnn.Sequential(
        [fnn.LSTM(2, 4, return_sequences=True), fnn.Dense(4, 3)], input_shape=(4, 2), dtype="float64"
    )
    assert [p.shape for _, p, _ in plain.named_parameters()] == [p.shape for _, p, _ in model.named_parameters()]
    plain.params[:] = model.params  # the same weights (Masking has none: the same flat layout)
    X, y = _sequences(lengths), _targets("cross_entropy", (3, 4), 3)
    loss, grads = model.loss_and_grads(X, y)
    net = plain.to_torch().double()
    outs = [net(torch.tensor(X[b : b + 1, : lengths[b]]))[0] for b in range(3)]
    labels = torch.tensor(np.concatenate([y[b, : lengths[b]] for b in range(3)]))
    want = torch.nn.CrossEntropyLoss()(torch.cat(outs), labels)
    want.backward()
    linear = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert loss == pytest.approx(want.item(), rel=1e-10)
    np.testing.assert_allclose(grads["2.weight"], linear.weight.grad.numpy().T, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(grads["2.bias"], linear.bias.grad.numpy(), rtol=1e-8, atol=1e-12)


def test_a_masked_model_refuses_losses_and_counts_without_lengths():
    model = _tagger()
    X, y = model.check_data(_sequences(), _targets("cross_entropy", (6, 4), 3))
    out = model.predict(X)
    with pytest.raises(ValueError, match=r"pass lengths=model.output_lengths\(X\)"):
        model.loss_value(out, y, np.empty_like(out), False)
    with pytest.raises(ValueError, match="output_lengths"):
        model.correct_count(out, y)
    with pytest.raises(ValueError, match="output_lengths"):
        fnn.metrics.Tracker(model, ["accuracy"]).update(out, y)
    plain = fnn.Sequential([fnn.Dense(2, 3)], input_shape=(4, 2)).compile("cross_entropy")
    with pytest.raises(ValueError, match="leave lengths out"):
        plain.correct_count(out.astype(np.float32), y, LENGTHS)
    assert model.correct_count(out, y, model.output_lengths(X)) == int(
        (out.argmax(-1) == y)[valid_rows(LENGTHS, 4).reshape(6, 4)].sum()
    )


def test_a_loss_whose_call_takes_no_lengths_is_refused():
    class Plain(fnn.losses.MSE):
        name = "plain_mse_test"

        def call(self, output, target, grad, compute_grad=True):
            return super().call(output, target, grad, compute_grad)

    model = _tagger(Plain(), k=3)
    with pytest.raises(ValueError, match="without a `lengths` parameter"):
        model.train_step(_sequences(), _targets("mse", (6, 4), 3))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_step_equals_unfused(monkeypatch, dtype):
    X, y = _sequences(dtype=np.dtype(dtype)), _targets("cross_entropy", (6, 4), 3)
    runs = []
    for fuse in ("never", "always"):
        monkeypatch.setattr(_config, "FUSE", fuse)
        model = _tagger(dtype=dtype, lr=0.5)
        losses = [model.train_step(X, y) for _ in range(3)]
        runs.append((losses, model.params.copy()))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    want, _ = ref.masked_loss(
        "cross_entropy", _tagger(dtype=dtype).predict(X).reshape(-1, 3), y.ravel(), valid_rows(LENGTHS, 4)
    )
    assert runs[0][0][0] == pytest.approx(want, rel=1e-5 if dtype == "float32" else 1e-12)


# ---------------------------------------------------------------------------- fit, evaluate, metrics


@pytest.mark.parametrize("shuffle, fuse", [(True, "never"), (False, "never"), (True, "always")])
def test_fit_evaluate_and_validation_count_only_valid_steps(shuffle, fuse, monkeypatch):
    """lr=0: the weights stay, so fit's epoch accuracy (counted inside the step's call, fused or
    not) and metrics equal evaluate's, and both are the valid positions' only."""
    monkeypatch.setattr(_config, "FUSE", fuse)
    X, y = _sequences(), _targets("cross_entropy", (6, 4), 3)
    model = _tagger(lr=0.0, metrics=["f1"])
    valid = valid_rows(LENGTHS, 4)
    out = model.predict(X).reshape(-1, 3)
    logs = model.evaluate(X, y, batch_size=4)
    want, _ = ref.masked_loss("cross_entropy", out, y.ravel(), valid)
    assert logs["loss"] == pytest.approx(want, rel=1e-12)  # the mean over every batch's valid steps
    assert logs["accuracy"] == pytest.approx(np.mean((out.argmax(1) == y.ravel())[valid]))
    f1 = pytest.importorskip("sklearn.metrics").f1_score(y.ravel()[valid], out.argmax(1)[valid], average="macro")
    assert logs["f1"] == pytest.approx(f1)
    history = model.fit(X, y, epochs=1, batch_size=4, shuffle=shuffle, verbose=0, validation_data=(X, y)).history
    assert history["accuracy"][0] == pytest.approx(logs["accuracy"])
    assert history["f1"][0] == pytest.approx(logs["f1"])
    assert history["val_loss"][0] == pytest.approx(logs["loss"], rel=1e-12)
    assert history["val_accuracy"][0] == pytest.approx(logs["accuracy"])
    whole = model.fit(X, y, epochs=1, batch_size=6, verbose=0).history
    assert whole["loss"][0] == pytest.approx(want, rel=1e-12)  # one batch: its masked mean


def test_regression_metrics_count_only_valid_steps():
    X, y = _sequences(), _targets("mse", (6, 4), 2)
    model = _tagger("mse", k=2, lr=0.0, metrics=["mae", "rmse", "r2"])
    valid = valid_rows(LENGTHS, 4)
    out, target = model.predict(X).reshape(-1, 2)[valid], y.reshape(-1, 2)[valid]
    logs = model.evaluate(X, y, batch_size=5)
    assert logs["loss"] == pytest.approx(np.mean((out - target) ** 2), rel=1e-12)
    assert logs["mae"] == pytest.approx(np.mean(np.abs(out - target)), rel=1e-12)
    assert logs["rmse"] == pytest.approx(np.mean(np.sqrt(np.mean((out - target) ** 2, axis=0))), rel=1e-12)
    r2 = pytest.importorskip("sklearn.metrics").r2_score(target, out)
    assert logs["r2"] == pytest.approx(r2, rel=1e-10)
    history = model.fit(X, y, epochs=1, batch_size=4, verbose=0).history
    assert history["mae"][0] == pytest.approx(logs["mae"], rel=1e-12)


def test_accumulated_batches_equal_one_batch_of_all_their_valid_steps():
    """accumulate=3 batches of 2 samples == one batch of 6: the normaliser is the group's valid positions."""
    X, y = _sequences(), _targets("cross_entropy", (6, 4), 3)
    one = _tagger(lr=0.3)
    weight = one.layers[1].weight.copy()
    _, grad_out = ref.masked_loss("cross_entropy", one.predict(X).reshape(-1, 3), y.ravel(), valid_rows(LENGTHS, 4))
    one.fit(X, y, epochs=1, batch_size=2, accumulate=3, shuffle=False, verbose=0)  # one update
    np.testing.assert_allclose(one.layers[1].weight, weight - 0.3 * X.reshape(-1, 2).T @ grad_out, rtol=1e-12)
    big, small = _tagger(lr=0.3), _tagger(lr=0.3)
    big.fit(X, y, epochs=2, batch_size=6, shuffle=False, verbose=0)
    small.fit(X, y, epochs=2, batch_size=2, accumulate=3, shuffle=False, verbose=0)
    np.testing.assert_allclose(small.params, big.params, rtol=1e-12, atol=1e-14)
    shuffled_big, shuffled_small = _tagger(lr=0.3), _tagger(lr=0.3)
    shuffled_big.fit(X, y, epochs=1, batch_size=6, verbose=0)  # one batch: any order, the same sum
    shuffled_small.fit(X, y, epochs=1, batch_size=2, accumulate=3, verbose=0)
    np.testing.assert_allclose(shuffled_small.params, shuffled_big.params, rtol=1e-12, atol=1e-14)


def test_a_streamed_fit_equals_the_fit_on_arrays():
    X, y = _sequences(), _targets("cross_entropy", (6, 4), 3)
    arrays, streamed = _tagger(lr=0.3, metrics=["f1"]), _tagger(lr=0.3, metrics=["f1"])
    want = arrays.fit(X, y, epochs=1, batch_size=2, shuffle=False, verbose=0).history
    got = streamed.fit(lambda: ((X[i : i + 2], y[i : i + 2]) for i in range(0, 6, 2)), epochs=1, verbose=0).history
    np.testing.assert_array_equal(streamed.params, arrays.params)
    for key in ("loss", "accuracy", "f1"):
        assert got[key][0] == pytest.approx(want[key][0], rel=1e-12)
    logs = streamed.evaluate(lambda: iter([(X[:3], y[:3]), (X[3:], y[3:])]))
    assert logs == pytest.approx(streamed.evaluate(X, y))
    want_loss, _ = ref.masked_loss(
        "cross_entropy", streamed.predict(X).reshape(-1, 3), y.ravel(), valid_rows(LENGTHS, 4)
    )
    assert logs["loss"] == pytest.approx(want_loss, rel=1e-12)


def test_embedding_mask_padding_leaves_padded_tokens_out():
    ids = np.array([[3, 4, 0, 0], [5, 0, 0, 0], [1, 2, 3, 6]])
    y = _targets("cross_entropy", (3, 4), 2)
    model = fnn.Sequential(
        [fnn.Embedding(7, 3, padding_idx=0, mask_padding=True), fnn.Dense(3, 2)], input_shape=(4,), dtype="float64"
    ).compile("cross_entropy", "sgd")
    np.testing.assert_array_equal(model.output_lengths(ids), [2, 1, 4])
    loss, _ = model.loss_and_grads(ids, y)
    want, _ = ref.masked_loss("cross_entropy", model.predict(ids).reshape(-1, 2), y.ravel(), valid_rows([2, 1, 4], 4))
    assert loss == pytest.approx(want, rel=1e-12)
    assert model.evaluate(ids, y)["loss"] == pytest.approx(want, rel=1e-12)


def test_an_interrupted_epoch_resumes_with_its_valid_steps_count(tmp_path):
    """The accuracy's denominator (valid positions done) is saved with the epoch's position."""
    X, y = _sequences(), _targets("cross_entropy", (6, 4), 3)
    whole = _tagger(lr=0.3)
    want = whole.fit(X, y, epochs=1, batch_size=2, shuffle=False, verbose=0).history
    frozen = _tagger(lr=0.0)  # (its accuracy: the valid steps' of its one set of weights)
    with pytest.raises(KeyboardInterrupt):
        frozen.fit(X, y, epochs=1, batch_size=2, shuffle=False, verbose=0, callbacks=[InterruptAt(0, 1)])
    frozen.save(tmp_path / "frozen.safetensors")
    resumed_frozen = fnn.load(tmp_path / "frozen.safetensors")
    accuracy = resumed_frozen.fit(X, y, epochs=1, batch_size=2, shuffle=False, verbose=0).history
    hits = (frozen.predict(X).argmax(-1) == y).reshape(-1)[valid_rows(LENGTHS, 4)]
    assert accuracy["accuracy"][0] == pytest.approx(hits.mean())
    model = _tagger(lr=0.3)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y, epochs=1, batch_size=2, shuffle=False, verbose=0, callbacks=[InterruptAt(0, 1)])
    model.save(tmp_path / "mid.safetensors")
    resumed = fnn.load(tmp_path / "mid.safetensors")
    got = resumed.fit(X, y, epochs=1, batch_size=2, shuffle=False, verbose=0).history
    np.testing.assert_array_equal(resumed.params, whole.params)
    assert got["accuracy"] == pytest.approx(want["accuracy"])
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-12)
