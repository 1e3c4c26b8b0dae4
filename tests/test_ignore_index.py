"""``CrossEntropy(ignore_index=...)``: torch's ``CrossEntropyLoss(ignore_index=-100)``, Keras 3's
``SparseCategoricalCrossentropy(ignore_class=...)``.

Targets labelled ``ignore_index`` add no loss and no gradient and are not counted: "mean" divides
by the targets not ignored (by their weights' sum when weighted, torch's ``weight=`` rule), a batch
whose targets are all ignored gives 0 and a zero gradient (torch: nan), and the accuracy and
compiled metrics skip them. Fit and evaluate then equal those on the data without those targets.
"""

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _config, optim
from tests._helpers import valid_rows

IGNORE = -100


def _logits_and_labels(m=13, k=4, dtype=np.float64, seed=0, every=3):
    rng = np.random.default_rng(seed)
    logits = (2.0 * rng.standard_normal((m, k))).astype(dtype)
    labels = rng.integers(0, k, m)
    labels[::every] = IGNORE
    return logits, labels


def _reference(logits, labels, weights=None, reduction="mean", counted=None):
    """float64 NumPy: value and gradient of softmax cross-entropy over the rows counted (not ignored,
    and ``counted``), weighted by ``weights``; "mean" divides by the counted weights' sum (0 if none)."""
    x = logits.astype(np.float64)
    keep = labels != IGNORE if counted is None else (labels != IGNORE) & counted
    w = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
    w = np.where(keep, w, 0.0)
    shifted = x - x.max(axis=1, keepdims=True)
    logsum = np.log(np.exp(shifted).sum(axis=1))
    safe = np.where(keep, labels, 0)
    rows = logsum - shifted[np.arange(len(x)), safe]
    soft = np.exp(shifted - logsum[:, None])
    soft[np.arange(len(x)), safe] -= 1.0
    divisor = (w.sum() or 1.0) if reduction == "mean" else 1.0
    return float(np.sum(w * rows) / divisor), soft * (w / divisor)[:, None]


# ---------------------------------------------------------------------------- the loss itself


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_and_gradient_match_torch(reduction, weighted):
    torch = pytest.importorskip("torch")
    logits, labels = _logits_and_labels()
    class_weight = np.array([0.5, 2.0, 1.0, 3.0])
    t_logits = torch.tensor(logits, requires_grad=True)
    t_loss = torch.nn.CrossEntropyLoss(
        weight=torch.tensor(class_weight) if weighted else None, ignore_index=IGNORE, reduction=reduction
    )(t_logits, torch.tensor(labels))
    t_loss.backward()
    loss = fnn.losses.CrossEntropy(reduction=reduction, ignore_index=IGNORE)
    grad = np.full_like(logits, np.nan)
    if weighted:
        weights = class_weight[np.where(labels == IGNORE, 0, labels)]  # (an ignored row's weight: not read)
        target = fnn.losses.weighted_targets(labels, weights)
        value = fnn.losses.SampleWeighted(loss).forward_backward(logits, target, grad)
    else:
        value = loss.forward_backward(logits, labels, grad)
    assert value == pytest.approx(t_loss.item(), rel=1e-13)
    np.testing.assert_allclose(grad, t_logits.grad.numpy(), rtol=1e-12, atol=1e-16)
    assert not grad[labels == IGNORE].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_loss_gradient_and_count_match_the_float64_reference(dtype, reduction):
    logits, labels = _logits_and_labels(m=300, k=5, dtype=dtype, every=4)  # large enough for the parallel path
    loss = fnn.losses.CrossEntropy(reduction=reduction, ignore_index=IGNORE)
    grad = np.full_like(logits, np.nan)
    value = loss.forward_backward(logits, labels, grad)
    want, want_grad = _reference(logits, labels, reduction=reduction)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert value == pytest.approx(want, rel=tol)
    np.testing.assert_allclose(grad, want_grad, rtol=tol, atol=tol * 1e-3)
    keep = labels != IGNORE
    assert loss.correct_count(logits, labels) == int(np.sum(logits.argmax(1)[keep] == labels[keep]))
    values = np.empty_like(logits)
    assert loss.forward_backward(logits, labels, values, False) == value  # value only: the same


def test_gradient_matches_central_differences():
    logits, labels = _logits_and_labels(m=7, k=3, seed=3)
    loss = fnn.losses.CrossEntropy(ignore_index=IGNORE)
    grad = np.empty_like(logits)
    loss.forward_backward(logits, labels, grad)
    numeric = np.empty_like(logits)
    scratch, h = np.empty_like(logits), 1e-6
    for index in np.ndindex(*logits.shape):
        plus, minus = logits.copy(), logits.copy()
        plus[index] += h
        minus[index] -= h
        numeric[index] = (
            loss.forward_backward(plus, labels, scratch, False) - loss.forward_backward(minus, labels, scratch, False)
        ) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("weighted", [False, True])
def test_a_batch_of_only_ignored_targets_gives_zero_not_nan(weighted):
    """torch gives nan (0/0); fastnn gives 0 and a zero gradient, as Keras does (no silent nan)."""
    logits = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]])
    labels = np.array([IGNORE, IGNORE])
    loss = fnn.losses.CrossEntropy(ignore_index=IGNORE)
    grad = np.full_like(logits, np.nan)
    if weighted:
        value = fnn.losses.SampleWeighted(loss).forward_backward(
            logits, fnn.losses.weighted_targets(labels, np.ones(2)), grad
        )
    else:
        value = loss.forward_backward(logits, labels, grad)
    assert value == 0.0
    np.testing.assert_array_equal(grad, 0.0)
    assert loss.correct_count(logits, labels) == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_padded_steps_and_ignored_targets_both_apply(dtype):
    """(batch=4, time=3) rows with lengths: a row counts when it is a valid step AND not ignored."""
    lengths = np.array([3, 1, 2, 3])
    logits, labels = _logits_and_labels(m=12, k=3, dtype=dtype, seed=5, every=5)
    labels[~valid_rows(lengths, 3)] = 7  # padded steps' labels: not read, not checked
    valid = valid_rows(lengths, 3)
    loss = fnn.losses.CrossEntropy(ignore_index=IGNORE)
    grad = np.full_like(logits, np.nan)
    value = loss.forward_backward(logits, labels, grad, True, lengths, 1)
    want, want_grad = _reference(logits, np.where(valid, labels, 0), counted=valid)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert value == pytest.approx(want, rel=tol)
    np.testing.assert_allclose(grad, want_grad, rtol=tol, atol=tol * 1e-3)
    keep = valid & (labels != IGNORE)
    assert loss.correct_count(logits, labels, lengths, 1) == int(np.sum(logits.argmax(1)[keep] == labels[keep]))
    weighted = fnn.losses.SampleWeighted(loss)
    w = np.linspace(0.5, 2.0, 12)
    value = weighted.forward_backward(logits, fnn.losses.weighted_targets(labels, w), grad, True, lengths, 1)
    want, want_grad = _reference(logits, np.where(valid, labels, 0), weights=w, counted=valid)
    assert value == pytest.approx(want, rel=tol)
    np.testing.assert_allclose(grad, want_grad, rtol=tol, atol=tol * 1e-3)


# ---------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("bad", [-100.0, True, "-100", 1.5])
def test_an_ignore_index_that_is_not_an_integer_is_refused(bad):
    with pytest.raises(TypeError, match="ignore_index must be None or an integer label"):
        fnn.losses.CrossEntropy(ignore_index=bad)


def test_numpy_integers_are_taken_and_none_ignores_nothing():
    assert fnn.losses.CrossEntropy(ignore_index=np.int32(-1)).ignore_index == -1
    plain = fnn.losses.CrossEntropy()
    assert plain.ignore_index is None
    with pytest.raises(ValueError, match="label -100, outside"):
        plain.forward_backward(np.zeros((2, 3)), np.array([0, IGNORE]), np.empty((2, 3)))


def test_other_labels_out_of_range_are_still_refused():
    loss = fnn.losses.CrossEntropy(ignore_index=IGNORE)
    with pytest.raises(ValueError, match=r"label 3, outside \[0, 3\)"):
        loss.forward_backward(np.zeros((3, 3)), np.array([0, IGNORE, 3]), np.empty((3, 3)))
    with pytest.raises(ValueError, match=r"label -1, outside \[0, 3\)"):
        loss.correct_count(np.zeros((3, 3)), np.array([0, IGNORE, -1]))
    model = fnn.Sequential([fnn.Dense(2, 3)], seed=0).compile(loss, "sgd")
    X = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"y has label 5, outside \[0, 3\).*or the ignored label -100"):
        model.fit(X, np.array([0, IGNORE, 5]), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"y has label -1"):
        model.evaluate(X, np.array([0, IGNORE, -1]))


def test_a_class_weight_for_the_ignored_label_is_refused_naming_ignore_index():
    """torch's ``weight=`` has no entry for ``ignore_index``: a weight keyed by it is refused, naming
    it (a weight for an ignored label within the classes is a class's weight, as in torch)."""
    X, y = np.zeros((4, 2)), np.array([0, IGNORE, 2, 1])
    model = fnn.Sequential([fnn.Dense(2, 3)], seed=0).compile(fnn.losses.CrossEntropy(ignore_index=IGNORE), "sgd")
    for call in (
        lambda: model.fit(X, y, epochs=1, verbose=0, class_weight={IGNORE: 2.0}),
        lambda: model.evaluate(X, y, class_weight={IGNORE: 2.0}),
    ):
        with pytest.raises(
            ValueError, match=r"weight for -100, the loss's ignore_index.*leave -100 out of class_weight"
        ):
            call()
    with pytest.raises(ValueError, match="unknown class 7"):
        model.evaluate(X, y, class_weight={7: 2.0})
    zero = fnn.Sequential([fnn.Dense(2, 3)], seed=0).compile(fnn.losses.CrossEntropy(ignore_index=0), "sgd")
    assert zero.evaluate(X, np.array([0, 1, 2, 1]), class_weight={0: 5.0}) == zero.evaluate(X, np.array([0, 1, 2, 1]))


@pytest.mark.parametrize("ignore_index", [None, IGNORE])
@pytest.mark.parametrize("weighted", [False, True])
def test_forward_backward_without_a_gradient_array_or_with_a_wrong_one(ignore_index, weighted):
    """compute_grad=False takes grad=None (was a Numba typing error); with compute_grad a None or
    integer grad is refused naming grad (an int64 one silently got a gradient truncated to 0)."""
    logits = np.random.default_rng(0).standard_normal((5, 3))
    labels = np.array([0, 1, 2, 2, 1]) if ignore_index is None else np.array([0, 1, IGNORE, 2, 1])
    loss = fnn.losses.CrossEntropy(ignore_index=ignore_index)
    target = labels
    if weighted:
        loss, target = fnn.losses.SampleWeighted(loss), fnn.losses.weighted_targets(labels, np.ones(5))
    for dtype in (np.float32, np.float64):
        out = logits.astype(dtype)
        want = loss.forward_backward(out, target, np.empty_like(out))
        assert loss.forward_backward(out, target, None, False) == want
        for bad in (None, np.zeros((5, 3), np.int64), [[0.0] * 3] * 5):
            with pytest.raises(TypeError, match="grad must be a float32 or float64 array of the output's shape"):
                loss.forward_backward(out, target, bad)
    model = fnn.Sequential([fnn.Dense(2, 3)], seed=0, dtype="float64").compile(fnn.losses.base_of(loss), "sgd")
    out = np.random.default_rng(1).standard_normal((5, 3))
    assert model.loss_value(out, labels, None, compute_grad=False) == model.loss_value(out, labels, np.empty_like(out))


def test_a_plain_cross_entropy_model_still_refuses_minus_100():
    model = fnn.Sequential([fnn.Dense(2, 3)], seed=0).compile("cross_entropy", "sgd")
    with pytest.raises(ValueError, match="label -100, outside"):
        model.fit(np.zeros((2, 2)), np.array([0, IGNORE]), epochs=1, verbose=0)


def test_config_round_trip_and_save_load(tmp_path):
    loss = fnn.losses.CrossEntropy(ignore_index=IGNORE)
    assert loss.get_config() == {"name": "cross_entropy", "reduction": "mean", "ignore_index": IGNORE}
    assert fnn.losses.from_config(loss.get_config()).ignore_index == IGNORE
    assert repr(loss) == "CrossEntropy(reduction='mean', ignore_index=-100)"
    assert fnn.losses.CrossEntropy().get_config() == {"name": "cross_entropy", "reduction": "mean"}
    X, y = np.random.default_rng(0).standard_normal((8, 2)), np.array([0, 1, IGNORE, 2, 1, IGNORE, 0, 2])
    model = fnn.Sequential([fnn.Dense(2, 3)], seed=0, dtype="float64").compile(loss, "sgd", metrics=["f1"])
    model.fit(X, y, epochs=1, verbose=0)
    path = str(tmp_path / "model.safetensors")
    model.save(path)
    loaded = fnn.load(path)
    assert fnn.losses.base_of(loaded.loss).ignore_index == IGNORE
    assert loaded.evaluate(X, y) == model.evaluate(X, y)


# ---------------------------------------------------------------------------- fit and evaluate


def _data(n=40, features=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, features))
    y = rng.integers(0, k, n)
    y[rng.random(n) < 0.3] = IGNORE
    return X, y


def _classifier(loss, dtype="float64", seed=1, metrics=("f1",)):
    model = fnn.Sequential([fnn.Dense(5, 8, activation="tanh"), fnn.Dense(8, 3)], seed=seed, dtype=dtype)
    return model.compile(loss, optim.SGD(lr=0.3), metrics=list(metrics))


@pytest.mark.parametrize("fuse", ["never", "always"])
def test_fit_and_evaluate_equal_those_on_the_rows_kept(fuse, monkeypatch):
    """One batch of every sample, ignored rows in it == one batch of the kept rows: same weights,
    loss, accuracy and f1 (torch's and Keras' rule); evaluate in several batches too."""
    monkeypatch.setattr(_config, "FUSE", fuse)
    X, y = _data()
    keep = y != IGNORE
    ignoring = _classifier(fnn.losses.CrossEntropy(ignore_index=IGNORE))
    plain = _classifier("cross_entropy")
    h1 = ignoring.fit(X, y, epochs=3, batch_size=len(X), verbose=0).history
    h2 = plain.fit(X[keep], y[keep], epochs=3, batch_size=int(keep.sum()), verbose=0).history
    np.testing.assert_allclose(ignoring.params, plain.params, rtol=1e-12, atol=1e-15)
    for key in ("loss", "accuracy", "f1"):
        np.testing.assert_allclose(h1[key], h2[key], rtol=1e-12, err_msg=key)
    for batch_size in (None, 7):
        got, want = (
            ignoring.evaluate(X, y, batch_size=batch_size),
            plain.evaluate(X[keep], y[keep], batch_size=batch_size),
        )
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-12), key
    out = ignoring.predict(X)
    assert got["accuracy"] == pytest.approx(np.mean(out.argmax(1)[keep] == y[keep]))


@pytest.mark.parametrize("shuffle", [False, True])
def test_fit_accuracy_counts_only_targets_not_ignored(shuffle):
    """lr=0: fit's epoch accuracy (counted inside the step's call) and f1 equal evaluate's."""
    X, y = _data(n=30)
    model = _classifier(fnn.losses.CrossEntropy(ignore_index=IGNORE))
    model.optimizer.lr = 0.0
    logs = model.evaluate(X, y)
    history = model.fit(X, y, epochs=1, batch_size=8, shuffle=shuffle, verbose=0, validation_data=(X, y)).history
    assert history["accuracy"][0] == pytest.approx(logs["accuracy"], rel=1e-12)
    assert history["f1"][0] == pytest.approx(logs["f1"], rel=1e-12)
    assert history["val_loss"][0] == pytest.approx(logs["loss"], rel=1e-12)
    f1 = pytest.importorskip("sklearn.metrics").f1_score
    keep, predicted = y != IGNORE, model.predict(X).argmax(1)
    assert logs["f1"] == pytest.approx(f1(y[keep], predicted[keep], average="macro"))


def test_sample_and_class_weights_with_ignored_targets_equal_the_rows_kept():
    X, y = _data(n=24)
    w = np.random.default_rng(3).uniform(0.2, 2.0, len(X))
    keep = y != IGNORE
    ignoring = _classifier(fnn.losses.CrossEntropy(ignore_index=IGNORE), metrics=())
    plain = _classifier("cross_entropy", metrics=())
    fit = {"epochs": 2, "shuffle": False, "verbose": 0, "class_weight": {1: 3.0}}
    ignoring.fit(X, y, sample_weight=w, batch_size=len(X), **fit)
    plain.fit(X[keep], y[keep], sample_weight=w[keep], batch_size=int(keep.sum()), **fit)
    np.testing.assert_allclose(ignoring.params, plain.params, rtol=1e-12, atol=1e-15)
    got = ignoring.evaluate(X, y, sample_weight=w, class_weight={1: 3.0})
    want = plain.evaluate(X[keep], y[keep], sample_weight=w[keep], class_weight={1: 3.0})
    assert got == pytest.approx(want, rel=1e-12)


def test_accumulated_batches_equal_one_batch_of_their_kept_targets():
    X, y = _data(n=24)
    big = _classifier(fnn.losses.CrossEntropy(ignore_index=IGNORE), metrics=())
    small = _classifier(fnn.losses.CrossEntropy(ignore_index=IGNORE), metrics=())
    big.fit(X, y, epochs=2, batch_size=24, shuffle=False, verbose=0)
    small.fit(X, y, epochs=2, batch_size=8, accumulate=3, shuffle=False, verbose=0)
    np.testing.assert_allclose(small.params, big.params, rtol=1e-11, atol=1e-14)


def test_weighted_accumulated_batches_and_their_accuracy_count_the_kept_targets_only():
    """Under sample weights the targets carry a weight column: the counted rows are read from the
    labels (``losses.counted_rows(..., weighted=True)``), for the groups' weights and the accuracy."""
    X, y = _data(n=24)
    w = np.random.default_rng(4).uniform(0.2, 2.0, len(X))
    keep = y != IGNORE
    big = _classifier(fnn.losses.CrossEntropy(ignore_index=IGNORE), metrics=())
    small = _classifier(fnn.losses.CrossEntropy(ignore_index=IGNORE), metrics=())
    plain = _classifier("cross_entropy", metrics=())
    fit = {"epochs": 2, "shuffle": False, "verbose": 0}
    logged = big.fit(X, y, sample_weight=w, batch_size=24, **fit).history
    small.fit(X, y, sample_weight=w, batch_size=8, accumulate=3, **fit)
    want = plain.fit(X[keep], y[keep], sample_weight=w[keep], batch_size=int(keep.sum()), **fit).history
    np.testing.assert_allclose(small.params, big.params, rtol=1e-11, atol=1e-14)
    assert logged["accuracy"] == pytest.approx(want["accuracy"], rel=1e-12)


def test_a_fit_whose_targets_are_all_ignored_logs_zero_not_nan():
    X = np.random.default_rng(0).standard_normal((6, 5))
    y = np.full(6, IGNORE)
    model = _classifier(fnn.losses.CrossEntropy(ignore_index=IGNORE), metrics=())
    params = model.params.copy()
    history = model.fit(X, y, epochs=1, batch_size=3, verbose=0).history
    assert history["loss"] == [0.0] and history["accuracy"] == [0.0]
    np.testing.assert_array_equal(model.params, params)  # a zero gradient: nothing moves
    assert model.evaluate(X, y) == {"loss": 0.0, "accuracy": 0.0}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_step_equals_unfused_bit_for_bit(monkeypatch, dtype):
    X, y = _data()
    runs = []
    for fuse in ("never", "always"):
        monkeypatch.setattr(_config, "FUSE", fuse)
        model = _classifier(fnn.losses.CrossEntropy(ignore_index=IGNORE), dtype=dtype)
        losses = [model.train_step(X.astype(dtype), y) for _ in range(3)]
        history = model.fit(X.astype(dtype), y, epochs=2, batch_size=8, verbose=0).history
        runs.append((losses, model.params.copy(), history))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert runs[0][2] == runs[1][2]


# ---------------------------------------------------------------------------- per-step outputs


def test_a_per_step_model_equals_a_row_model_on_the_kept_positions():
    """A TimeDistributed(Dense) tagger over (n, time) labels with some ignored == the same Dense on
    the kept positions as rows: same weights, loss and accuracy."""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((6, 4, 3))
    y = rng.integers(0, 3, (6, 4))
    y[rng.random((6, 4)) < 0.3] = IGNORE
    tagger = fnn.Sequential([fnn.TimeDistributed(fnn.Dense(3, 3))], input_shape=(4, 3), dtype="float64", seed=0)
    tagger.compile(fnn.losses.CrossEntropy(ignore_index=IGNORE), optim.SGD(lr=0.5), metrics=["f1"])
    rows = fnn.Sequential([fnn.Dense(3, 3)], input_shape=(3,), dtype="float64", seed=0)
    rows.compile("cross_entropy", optim.SGD(lr=0.5), metrics=["f1"])
    rows.params[...] = tagger.params
    keep = (y != IGNORE).reshape(-1)
    Xr, yr = X.reshape(-1, 3)[keep], y.reshape(-1)[keep]
    h1 = tagger.fit(X, y, epochs=2, batch_size=6, verbose=0).history
    h2 = rows.fit(Xr, yr, epochs=2, batch_size=len(yr), verbose=0).history
    np.testing.assert_allclose(tagger.params, rows.params, rtol=1e-12, atol=1e-15)
    for key in ("loss", "accuracy", "f1"):
        np.testing.assert_allclose(h1[key], h2[key], rtol=1e-12, err_msg=key)
    got, want = tagger.evaluate(X, y, batch_size=4), rows.evaluate(Xr, yr)
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-12), key


def test_a_masked_tagger_leaves_padded_steps_and_ignored_targets_out():
    lengths = np.array([4, 1, 3, 2, 4, 1])
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 4, 2))
    valid = valid_rows(lengths, 4)
    X[~valid.reshape(6, 4)] = 0.0
    y = rng.integers(0, 3, (6, 4))
    y[0, 1] = y[2, 0] = y[4, 3] = IGNORE
    y[~valid.reshape(6, 4)] = 9  # padded: not checked
    model = fnn.Sequential([fnn.Masking(0.0), fnn.Dense(2, 3)], input_shape=(4, 2), dtype="float64", seed=0)
    model.compile(fnn.losses.CrossEntropy(ignore_index=IGNORE), optim.SGD(lr=0.0), metrics=["f1"])
    out = model.predict(X).reshape(-1, 3)
    keep = valid & (y.reshape(-1) != IGNORE)
    logs = model.evaluate(X, y, batch_size=4)
    want, _ = _reference(out, np.where(keep, y.reshape(-1), 0), counted=keep)
    assert logs["loss"] == pytest.approx(want, rel=1e-12)
    assert logs["accuracy"] == pytest.approx(np.mean(out.argmax(1)[keep] == y.reshape(-1)[keep]))
    history = model.fit(X, y, epochs=1, batch_size=4, verbose=0).history
    assert history["accuracy"][0] == pytest.approx(logs["accuracy"])
    assert history["f1"][0] == pytest.approx(logs["f1"])


def test_counted_rows_is_one_rule_for_every_layout_of_the_targets():
    """``losses.counted_rows``: the loss rows of valid steps whose targets are not ignored, for labels
    (per sample or per step, before or as loss rows) and weighted (label, weight) rows alike."""
    loss = fnn.losses.CrossEntropy(ignore_index=IGNORE)
    labels = np.array([[1, IGNORE, 0], [IGNORE, 2, 2]])
    expected = np.array([True, False, True, False, True, True])
    weighted = fnn.losses.weighted_targets(labels.reshape(-1), np.linspace(0.5, 3.0, 6)).reshape(2, 3, 2)
    for target, is_weighted in ((labels, False), (labels.reshape(-1), False), (weighted, True)):
        np.testing.assert_array_equal(fnn.losses.counted_rows(loss, target, weighted=is_weighted), expected)
    wrapped = fnn.losses.SampleWeighted(loss)
    np.testing.assert_array_equal(fnn.losses.counted_rows(wrapped, weighted.reshape(6, 2), weighted=True), expected)
    valid = np.array([True, True, False, True, True, False])
    np.testing.assert_array_equal(fnn.losses.counted_rows(loss, labels, weighted=False, valid=valid), expected & valid)
    # a loss that ignores no label: the valid steps' rows, or None (every row counts)
    plain = fnn.losses.CrossEntropy()
    assert fnn.losses.counted_rows(plain, labels, weighted=False) is None
    assert fnn.losses.counted_rows(fnn.losses.MSE(), np.zeros((6, 1)), weighted=False, valid=valid) is valid


def test_counted_rows_refuses_a_layout_it_cannot_read():
    loss = fnn.losses.CrossEntropy(ignore_index=IGNORE)
    with pytest.raises(TypeError, match="weighted must be True .* or False"):
        fnn.losses.counted_rows(loss, np.array([0, 1]), weighted=None)
    with pytest.raises(ValueError, match=r"weighted targets must end in a \(label, weight\) axis.*weighted=False"):
        fnn.losses.counted_rows(loss, np.array([0, 1, 2]), weighted=True)
    with pytest.raises(ValueError, match="valid must be a 1D bool array .* 3 \\(one per loss row\\)"):
        fnn.losses.counted_rows(loss, np.array([0, 1, 2]), weighted=False, valid=np.array([True, False]))
    with pytest.raises(ValueError, match="valid must be a 1D bool array"):
        fnn.losses.counted_rows(loss, np.array([0, 1]), weighted=False, valid=np.array([1, 0]))
