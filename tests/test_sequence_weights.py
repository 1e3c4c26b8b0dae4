"""Sample and class weights for per-step outputs (batch, time, ..., k), masked or not, and the
labels of padded steps.

Keras 3 takes ``sample_weight`` (batch,) (one weight per sequence) or (batch, time) (temporal
weights) and applies ``class_weight`` per step label. fastnn weighs each loss row (position) and
keeps its weighted mean of 2-D outputs: ``sum w l / sum w`` over the counted positions (torch's
normalisation with ``weight=``: ``CrossEntropyLoss(weight=..., ignore_index=-100)`` divides by the
summed weights of the counted targets), the positions of padded steps (Masking,
``Embedding(mask_padding=True)``) left out: their weight is not summed, their target not read or
checked (torch's -100 there is fine), their gradient is 0.
"""

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _config, optim
from tests import _reference_core as core
from tests import reference as ref
from tests._helpers import loss_rows, valid_rows

LOSSES = ["cross_entropy", "mse", "mae", "huber", "binary_cross_entropy"]
LENGTHS = np.array([4, 1, 3, 2, 4, 1])
STEPS = 4


def _valid(lengths=LENGTHS, steps=STEPS, per_step=1):
    return valid_rows(lengths, steps, per_step)


def _masked_weighted_reference(name, pred, target, weights, valid, reduction="mean"):
    """float64 (loss, grad): core.weighted_loss over the valid rows alone, zero gradient elsewhere."""
    grad = np.zeros(pred.shape)
    value, grad[valid] = core.weighted_loss(name, pred[valid], np.asarray(target)[valid], weights[valid], reduction)
    return value, grad


def _sequences(lengths=LENGTHS, steps=STEPS, features=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((len(lengths), steps, features))
    X[~_valid(lengths, steps).reshape(len(lengths), steps)] = 0.0
    return X


def _labels(shape, k=3, seed=1, padded=None):
    y = np.random.default_rng(seed).integers(0, k, shape)
    if padded is not None:
        y[~padded.reshape(shape)] = -100  # torch's ignore_index at padded steps
    return y


def _tagger(loss="cross_entropy", k=3, lr=0.1, masking=True, metrics=None, seed=0):
    first = [fnn.Masking(0.0)] if masking else []
    model = fnn.Sequential([*first, fnn.Dense(2, k)], input_shape=(STEPS, 2), dtype="float64", seed=seed)
    return model.compile(loss, optim.SGD(lr=lr), metrics=metrics)


# ---------------------------------------------------------------------------- the loss


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", LOSSES)
def test_masked_weighted_losses_match_the_float64_reference(name, dtype, reduction):
    """(batch, time=4, 2, k) rows, per_step 2, a weight per row (some zero): value, gradient, count."""
    rng = np.random.default_rng(0)
    per_step, k = 2, 3
    m = len(LENGTHS) * STEPS * per_step
    pred, target = loss_rows(name, rng, m, k, dtype)
    valid = _valid(per_step=per_step)
    if name == "cross_entropy":
        target = np.where(valid, target, -100)  # not read, not checked
    weights = rng.uniform(0, 3, m)
    weights[::7] = 0.0
    loss = fnn.losses.SampleWeighted(fnn.losses.LOSSES[name](reduction=reduction))
    wt = fnn.losses.weighted_targets(target, weights)
    grad = np.full_like(pred, np.nan)
    value = loss.forward_backward(pred, wt, grad, True, LENGTHS, per_step)
    want, want_grad = _masked_weighted_reference(name, pred, target, weights, valid, reduction)
    rtol = 1e-12 if dtype == np.float64 else 2e-6
    assert value == pytest.approx(want, rel=rtol)
    np.testing.assert_allclose(grad, want_grad, rtol=rtol, atol=1e-7 if dtype == np.float32 else 1e-15)
    assert not grad[~valid].any()  # padded rows: exactly zero
    assert loss.forward_backward(pred, wt, grad, False, LENGTHS, per_step) == value
    if name in ("cross_entropy", "binary_cross_entropy"):
        base = fnn.losses.LOSSES[name]()
        plain = np.where(valid, target, 0) if name == "cross_entropy" else target
        assert loss.correct_count(pred, wt, LENGTHS, per_step) == base.correct_count(pred, plain, LENGTHS, per_step)


@pytest.mark.parametrize("name", LOSSES)
def test_unit_weights_give_the_masked_loss_and_its_gradient_bit_for_bit(name):
    rng = np.random.default_rng(5)
    pred, target = loss_rows(name, rng, len(LENGTHS) * STEPS, 3, np.float32)
    base = fnn.losses.LOSSES[name]()
    grad, wgrad = np.empty_like(pred), np.empty_like(pred)
    value = base.forward_backward(pred, target, grad, True, LENGTHS, 1)
    wvalue = fnn.losses.SampleWeighted(base).forward_backward(
        pred, fnn.losses.weighted_targets(target, np.ones(len(pred))), wgrad, True, LENGTHS, 1
    )
    np.testing.assert_array_equal(wgrad, grad)
    assert wvalue == pytest.approx(value, rel=1e-6)  # (the sum's order differs: chunks vs rows)


def test_no_valid_row_or_zero_weights_contribute_nothing():
    rng = np.random.default_rng(6)
    pred, labels = rng.standard_normal((8, 3)), rng.integers(0, 3, 8)
    loss, grad = fnn.losses.SampleWeighted(fnn.losses.CrossEntropy()), np.full((8, 3), np.nan)
    wt = fnn.losses.weighted_targets(labels, np.ones(8))
    assert loss.forward_backward(pred, wt, grad, True, np.array([0, 0]), 1) == 0.0
    assert not grad.any()
    zero = fnn.losses.weighted_targets(labels, np.array([0.0, 0, 1, 1, 0, 0, 1, 1]))  # weight only on padded rows
    assert loss.forward_backward(pred, zero, grad, True, np.array([2, 2]), 1) == 0.0
    assert not grad.any()


def test_masked_weighted_gradient_matches_finite_differences():
    rng = np.random.default_rng(7)
    for name in ("cross_entropy", "huber"):
        pred, target = loss_rows(name, rng, len(LENGTHS) * STEPS, 3, np.float64)
        loss = fnn.losses.SampleWeighted(fnn.losses.LOSSES[name]())
        wt = fnn.losses.weighted_targets(target, rng.uniform(0.1, 2, len(pred)))
        grad, scratch = np.empty_like(pred), np.empty_like(pred)
        loss.forward_backward(pred, wt, grad, True, LENGTHS, 1)
        numeric, eps = np.empty_like(pred), 1e-6
        for idx in np.ndindex(pred.shape):
            p = pred.copy()
            p[idx] += eps
            up = loss.forward_backward(p, wt, scratch, False, LENGTHS, 1)
            p[idx] -= 2 * eps
            numeric[idx] = (up - loss.forward_backward(p, wt, scratch, False, LENGTHS, 1)) / (2 * eps)
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-9)


def test_class_weights_with_padded_steps_equal_torch_weighted_cross_entropy():
    """Per-step class weights, -100 at padded steps: torch's CrossEntropyLoss(weight=, ignore_index=-100)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    m, c = len(LENGTHS) * STEPS, 5
    logits, valid = rng.standard_normal((m, c)), _valid()
    labels = np.where(valid, rng.integers(0, c, m), -100)
    table = np.array([0.5, 2.0, 1.0, 3.0, 0.25])
    t_logits = torch.tensor(logits, requires_grad=True)
    want = torch.nn.CrossEntropyLoss(weight=torch.tensor(table), ignore_index=-100)(t_logits, torch.tensor(labels))
    want.backward()
    weights = table[np.where(valid, labels, 0)]
    grad = np.empty_like(logits)
    loss = fnn.losses.SampleWeighted(fnn.losses.CrossEntropy())
    value = loss.forward_backward(logits, fnn.losses.weighted_targets(labels, weights), grad, True, LENGTHS, 1)
    assert value == pytest.approx(want.item(), rel=1e-12)
    np.testing.assert_allclose(grad, t_logits.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_direct_calls_ignore_the_labels_of_padded_rows_only():
    rng = np.random.default_rng(9)
    logits, valid = rng.standard_normal((len(LENGTHS) * STEPS, 3)), _valid()
    labels = np.where(valid, rng.integers(0, 3, len(valid)), -100)
    grad = np.empty_like(logits)
    loss = fnn.losses.CrossEntropy()
    value = loss.forward_backward(logits, labels, grad, True, LENGTHS, 1)
    want, _ = ref.masked_loss("cross_entropy", logits, np.where(valid, labels, 0), valid)
    assert value == pytest.approx(want, rel=1e-12)
    assert loss.correct_count(logits, labels, LENGTHS, 1) == ref.accuracy_count(logits[valid], labels[valid])
    labels[0] = -100  # a valid step (sample 0 has 4)
    with pytest.raises(ValueError, match="target"):
        loss.forward_backward(logits, labels, grad, True, LENGTHS, 1)
    with pytest.raises(ValueError, match="target"):
        loss.forward_backward(logits, np.where(valid, labels, -100), grad)  # no lengths: every row is checked


def test_row_weights_and_weighted_targets_shapes():
    np.testing.assert_array_equal(fnn.losses.row_weights(np.array([1.0, 2.0]), (2, 3))[1], np.full((2, 3), 2.0))
    temporal = fnn.losses.row_weights(np.array([[1.0, 2.0]]), (2, 3))
    np.testing.assert_array_equal(temporal, [[[1, 1, 1], [2, 2, 2]]])
    with pytest.raises(ValueError, match=r"give \(n,\) one per sample, \(n, 2\) one per time step"):
        fnn.losses.row_weights(np.ones((1, 3)), (2, 3))
    wt = fnn.losses.weighted_targets(np.zeros((2, 4, 3)), np.ones((2, 4)))
    assert wt.shape == (2, 4, 4)
    np.testing.assert_array_equal(fnn.losses.SampleWeighted.weights(wt), np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"weights of shape \(2, 3\) do not fit targets of shape \(2, 4\)"):
        fnn.losses.weighted_targets(np.zeros((2, 4)), np.ones((2, 3)))


# ---------------------------------------------------------------------------- the model


def _reference_logs(model, X, y, row_w, valid):
    out = model.predict(X).reshape(-1, 3)
    labels = y.reshape(-1)
    want, _ = _masked_weighted_reference("cross_entropy", out, np.where(valid, labels, 0), row_w, valid)
    return want, out


@pytest.mark.parametrize("masking", [True, False])
def test_evaluate_with_sequence_sample_and_temporal_and_class_weights(masking):
    X = _sequences()
    valid = _valid() if masking else np.ones(len(LENGTHS) * STEPS, bool)
    y = _labels((len(LENGTHS), STEPS), padded=valid if masking else None)
    model = _tagger(masking=masking)
    rng = np.random.default_rng(3)
    per_sample, temporal = rng.uniform(0.5, 2, len(X)), rng.uniform(0, 2, (len(X), STEPS))
    table = {0: 2.0, 2: 0.5}
    per_class = np.array([2.0, 1.0, 0.5])[np.where(valid, y.reshape(-1), 0)]
    cases = [
        ({"sample_weight": per_sample}, np.repeat(per_sample, STEPS)),
        ({"sample_weight": per_sample[:, None]}, np.repeat(per_sample, STEPS)),  # (n, 1): per sample
        ({"sample_weight": temporal}, temporal.reshape(-1)),
        ({"class_weight": table}, per_class),
        ({"sample_weight": temporal, "class_weight": table}, temporal.reshape(-1) * per_class),
    ]
    for kwargs, row_w in cases:
        logs = model.evaluate(X, y, batch_size=4, **kwargs)  # (batches of 4 and 2: one loss of all)
        want, out = _reference_logs(model, X, y, row_w, valid)
        assert logs["loss"] == pytest.approx(want, rel=1e-12), kwargs
        assert logs["accuracy"] == pytest.approx(np.mean((out.argmax(1) == y.reshape(-1))[valid]))  # unweighted


def test_fit_step_with_temporal_weights_equals_torch():
    """One full-batch SGD step, temporal weights and class weights, -100 at padded steps: torch's
    weighted cross-entropy (class weights as ``weight=``, temporal ones on the unreduced loss,
    normalised by the counted rows' summed weights)."""
    torch = pytest.importorskip("torch")
    X, valid = _sequences(), _valid()
    y = _labels((len(LENGTHS), STEPS), padded=valid)
    temporal = np.random.default_rng(4).uniform(0, 2, (len(X), STEPS))
    model = _tagger(lr=0.5)
    W, b = torch.tensor(model.layers[1].weight.copy(), requires_grad=True), torch.tensor(model.layers[1].bias.copy())
    b.requires_grad_(True)
    table = np.array([1.0, 3.0, 0.5])
    logits = torch.tensor(X.reshape(-1, 2)) @ W + b
    per_row = torch.nn.functional.cross_entropy(
        logits, torch.tensor(y.reshape(-1)), weight=torch.tensor(table), ignore_index=-100, reduction="none"
    )  # w_class * l at counted rows, 0 at ignored ones
    row_w = torch.tensor(temporal.reshape(-1) * table[np.where(valid, y.reshape(-1), 0)] * valid)
    want = (per_row * torch.tensor(temporal.reshape(-1))).sum() / row_w.sum()
    want.backward()
    history = model.fit(
        X, y, sample_weight=temporal, class_weight={1: 3.0, 2: 0.5}, epochs=1, batch_size=6, verbose=0
    ).history
    assert history["loss"][0] == pytest.approx(want.item(), rel=1e-12)
    W_np, b_np = W.detach().numpy(), b.detach().numpy()
    np.testing.assert_allclose(model.layers[1].weight, W_np - 0.5 * W.grad.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(model.layers[1].bias, b_np - 0.5 * b.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_zero_temporal_weights_train_as_shorter_sequences():
    """Dense per step: weights 0 on steps past the lengths == those steps padded (masked)."""
    X = _sequences()
    y = _labels((len(LENGTHS), STEPS))
    cut = np.array([2, 1, 3, 1, 4, 1])
    shorter = X * _valid(cut).reshape(len(X), STEPS, 1)  # masked from `cut` on
    weights = _valid(cut).reshape(len(X), STEPS).astype(float)
    weighted, masked = _tagger(lr=0.3), _tagger(lr=0.3)
    weighted.fit(X, y, sample_weight=weights, epochs=2, batch_size=3, shuffle=False, verbose=0)
    masked.fit(shorter, y, epochs=2, batch_size=3, shuffle=False, verbose=0)
    np.testing.assert_allclose(weighted.params, masked.params, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_weighted_masked_step_equals_unfused(monkeypatch, dtype):
    X, valid = _sequences(), _valid()
    y = _labels((len(LENGTHS), STEPS), padded=valid)
    temporal = np.random.default_rng(4).uniform(0, 2, (len(X), STEPS))
    runs = []
    for fuse in ("never", "always"):
        monkeypatch.setattr(_config, "FUSE", fuse)
        model = fnn.Sequential([fnn.Masking(0.0), fnn.Dense(2, 3)], input_shape=(STEPS, 2), dtype=dtype, seed=0)
        model.compile("cross_entropy", optim.SGD(lr=0.5), metrics=["f1"])
        history = model.fit(X, y, sample_weight=temporal, epochs=3, batch_size=4, verbose=0).history
        runs.append((history, model.params.copy()))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_accumulated_weighted_batches_equal_one_batch():
    X, valid = _sequences(), _valid()
    y = _labels((len(LENGTHS), STEPS), padded=valid)
    temporal = np.random.default_rng(4).uniform(0, 2, (len(X), STEPS))
    big, small = _tagger(lr=0.3), _tagger(lr=0.3)
    big.fit(X, y, sample_weight=temporal, epochs=2, batch_size=6, shuffle=False, verbose=0)
    small.fit(X, y, sample_weight=temporal, epochs=2, batch_size=2, accumulate=3, shuffle=False, verbose=0)
    np.testing.assert_allclose(small.params, big.params, rtol=1e-12, atol=1e-14)


def test_streamed_weighted_fit_and_validation_equal_the_arrays():
    X, valid = _sequences(), _valid()
    y = _labels((len(LENGTHS), STEPS), padded=valid)
    temporal = np.random.default_rng(4).uniform(0, 2, (len(X), STEPS))
    arrays, streamed = _tagger(lr=0.3), _tagger(lr=0.3)
    want = arrays.fit(
        X, y, sample_weight=temporal, epochs=1, batch_size=2, shuffle=False, verbose=0, validation_data=(X, y, temporal)
    ).history
    batches = lambda: ((X[i : i + 2], y[i : i + 2], temporal[i : i + 2]) for i in range(0, 6, 2))  # noqa: E731
    got = streamed.fit(batches, epochs=1, verbose=0, validation_data=batches).history
    np.testing.assert_array_equal(streamed.params, arrays.params)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert got[key][0] == pytest.approx(want[key][0], rel=1e-12), key


def test_embedding_mask_padding_with_class_weights():
    ids = np.array([[3, 4, 0, 0], [5, 0, 0, 0], [1, 2, 3, 6]])
    valid = ids.reshape(-1) != 0
    y = _labels((3, 4), k=2, padded=valid)
    model = fnn.Sequential(
        [fnn.Embedding(7, 3, padding_idx=0, mask_padding=True), fnn.Dense(3, 2)], input_shape=(4,), dtype="float64"
    ).compile("cross_entropy", "sgd")
    logs = model.evaluate(ids, y, class_weight={1: 4.0})
    out = model.predict(ids).reshape(-1, 2)
    row_w = np.where(y.reshape(-1) == 1, 4.0, 1.0)
    want, _ = _masked_weighted_reference("cross_entropy", out, np.where(valid, y.reshape(-1), 0), row_w, valid)
    assert logs["loss"] == pytest.approx(want, rel=1e-12)
    model.fit(ids, y, class_weight={1: 4.0}, epochs=1, verbose=0)  # trains


@pytest.mark.parametrize("masking", [True, False])
def test_regression_per_step_weights(masking):
    X = _sequences()
    valid = _valid() if masking else np.ones(len(LENGTHS) * STEPS, bool)
    y = np.random.default_rng(2).standard_normal((len(X), STEPS, 2))
    if masking:
        y[~valid.reshape(len(X), STEPS)] = np.nan  # padded steps' targets: not checked
    temporal = np.random.default_rng(4).uniform(0, 2, (len(X), STEPS))
    model = _tagger("mse", k=2, masking=masking)
    logs = model.evaluate(X, y, sample_weight=temporal)
    out = model.predict(X).reshape(-1, 2)
    want, _ = _masked_weighted_reference("mse", out, np.nan_to_num(y.reshape(-1, 2)), temporal.reshape(-1), valid)
    assert logs["loss"] == pytest.approx(want, rel=1e-12)
    model.fit(X, y, sample_weight=temporal, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(model.params).all()


def test_padded_labels_are_ignored_but_valid_ones_still_checked():
    X, valid = _sequences(), _valid()
    y = _labels((len(LENGTHS), STEPS), padded=valid)
    model = _tagger()
    plain = _labels((len(LENGTHS), STEPS))
    assert model.evaluate(X, y) == model.evaluate(X, np.where(valid.reshape(y.shape), y, plain))
    model.fit(X, y, epochs=1, verbose=0)
    bad = y.copy()
    bad[0, 0] = -100  # sample 0's first step is valid
    with pytest.raises(ValueError, match=r"labels must be 0..2"):
        model.fit(X, bad, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"labels must be 0..2"):
        _tagger(masking=False).evaluate(X, y)  # no lengths: every label counts


def test_bad_sequence_weights_are_refused_with_the_shapes_allowed():
    X, y = _sequences(), _labels((len(LENGTHS), STEPS))
    model = _tagger()
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(6,\), one weight per sample, or \(6, 4\)"):
        model.fit(X, y, sample_weight=np.ones((6, 5)), verbose=0)
    with pytest.raises(ValueError, match=r"got shape \(6, 4, 1\)"):
        model.evaluate(X, y, sample_weight=np.ones((6, 4, 1)))
    bad = np.ones((6, 4))
    bad[2, 1] = -1.0
    with pytest.raises(ValueError, match="sample_weight must be non-negative; sample 2, step 1 has weight -1.0"):
        model.fit(X, y, sample_weight=bad, verbose=0)
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="sample_weight must be finite; sample 2, step 1 is nan"):
        model.evaluate(X, y, sample_weight=bad)
    with pytest.raises(ValueError, match=r"validation_data's sample_weight must have shape \(6,\)"):
        model.fit(X, y, validation_data=(X, y, np.ones(5)), verbose=0)
    with pytest.raises(ValueError, match=r"class_weight has unknown class 3"):
        model.fit(X, y, class_weight={3: 1.0}, verbose=0)
    with pytest.raises(ValueError, match=r"sample_weight_batch must have shape \(2,\)"):
        model.fit(lambda: iter([(X[:2], y[:2], np.ones((2, 7)))]), epochs=1, verbose=0)
    inner = fnn.Sequential([fnn.Masking(0.0), fnn.Dense(2, 3)], input_shape=(STEPS, 5, 2), dtype="float64")
    inner.compile("cross_entropy", "sgd")
    Xi, yi = np.ones((2, STEPS, 5, 2)), np.zeros((2, STEPS, 5), np.int64)
    with pytest.raises(ValueError, match=r"or \(2, 4, 5\), one per position; got shape \(2, 5\)"):
        inner.evaluate(Xi, yi, sample_weight=np.ones((2, 5)))
    assert np.isfinite(inner.evaluate(Xi, yi, sample_weight=np.ones((2, STEPS)))["loss"])
