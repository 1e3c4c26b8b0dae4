"""sample_weight, class_weight and validation_split in fit/evaluate (Keras' semantics).

The weighted loss of a batch is sum_i w_i l_i / sum_i w_i (PyTorch's normalisation with weight=,
not Keras' division by the batch size), l_i the sample's loss (over its k outputs / k for
elementwise losses); checked against torch's unreduced losses, with gradients, in float64.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastnn as fnn
from fastnn.losses import SampleWeighted, weighted_targets


@pytest.fixture
def torch():
    return pytest.importorskip("torch")  # only the comparisons with torch need it (not in the test extra)


def _torch_rows(torch, name, out, target):
    """Per-sample losses (m,) of torch for fastnn's loss ``name``."""
    F = torch.nn.functional
    if name == "cross_entropy":
        return F.cross_entropy(out, target, reduction="none")
    per_element = {
        "binary_cross_entropy": F.binary_cross_entropy_with_logits,
        "mse": F.mse_loss,
        "mae": F.l1_loss,
        "huber": F.huber_loss,
    }[name](out, target, reduction="none")
    return per_element.mean(dim=1)


@pytest.mark.parametrize("name", ["cross_entropy", "binary_cross_entropy", "mse", "mae", "huber"])
def test_weighted_loss_and_gradient_equal_torch(rng, torch, name):
    out = rng.standard_normal((9, 3)) * 2
    target = rng.integers(0, 3, 9) if name == "cross_entropy" else rng.uniform(0, 1, (9, 3))
    weights = rng.uniform(0, 2, 9)
    weights[2] = 0.0
    loss = SampleWeighted(fnn.losses.get(name))
    grad = np.full_like(out, np.nan)
    value = loss.forward_backward(out, weighted_targets(target, weights), grad)
    t_out = torch.tensor(out, requires_grad=True)
    w = torch.tensor(weights)
    expected = (_torch_rows(torch, name, t_out, torch.tensor(target)) * w).sum() / w.sum()
    expected.backward()
    assert value == pytest.approx(expected.item(), rel=1e-12)
    np.testing.assert_allclose(grad, t_out.grad.numpy(), rtol=1e-10, atol=1e-15)


def _data(rng, n=24):
    X = rng.standard_normal((n, 4))
    return X, (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.7)


def _model(loss="cross_entropy", k=3, lr=0.1):
    return fnn.Sequential([fnn.Dense(4, k)], seed=0, dtype="float64").compile(loss, fnn.optim.SGD(lr=lr))


def test_fit_with_sample_weight_takes_torchs_weighted_step(rng, torch):
    """Two full-batch SGD steps: the parameters equal torch's on the weighted cross-entropy."""
    X, y = _data(rng)
    w = rng.uniform(0, 3, X.shape[0])
    model = _model()
    params = {name: value.copy() for name, value, _ in model.named_parameters()}
    linear = torch.nn.Linear(4, 3).double()
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(params["0.weight"].T))
        linear.bias.copy_(torch.from_numpy(params["0.bias"]))
    opt = torch.optim.SGD(linear.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        wt = torch.from_numpy(w)
        (
            (
                torch.nn.functional.cross_entropy(linear(torch.from_numpy(X)), torch.from_numpy(y), reduction="none")
                * wt
            ).sum()
            / wt.sum()
        ).backward()
        opt.step()
    history = model.fit(X, y, epochs=2, batch_size=X.shape[0], shuffle=False, sample_weight=w, verbose=0)
    trained = {name: value for name, value, _ in model.named_parameters()}
    np.testing.assert_allclose(trained["0.weight"].T, linear.weight.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(trained["0.bias"], linear.bias.detach().numpy(), rtol=1e-12)
    assert model.loss.name == "cross_entropy"  # the plain loss is back after fit
    assert np.isfinite(history.history["loss"]).all()


def test_class_weight_is_per_sample_weight_and_multiplies_sample_weight(rng):
    X, y = _data(rng)
    sw = rng.uniform(0.5, 1.5, X.shape[0])
    a = _model()
    a.fit(X, y, epochs=2, batch_size=5, class_weight={0: 2.0, 2: 0.5}, sample_weight=sw, verbose=0)
    b = _model()
    b.fit(X, y, epochs=2, batch_size=5, sample_weight=sw * np.array([2.0, 1.0, 0.5])[y], verbose=0)
    assert np.array_equal(a.params, b.params)
    c = _model()
    c.fit(X, y, epochs=2, batch_size=5, verbose=0)
    assert not np.allclose(a.params, c.params)


def test_binary_class_weight_uses_the_0_1_classes(rng):
    X, y = _data(rng)
    t = (y > 0).astype(np.float64)
    a = _model("binary_cross_entropy", 1)
    a.fit(X, t, batch_size=6, class_weight={1: 3.0}, verbose=0)
    b = _model("binary_cross_entropy", 1)
    b.fit(X, t, batch_size=6, sample_weight=np.where(t > 0.5, 3.0, 1.0), verbose=0)
    assert np.array_equal(a.params, b.params)


def test_a_soft_target_of_one_half_is_class_0_for_class_weight(rng):
    """A target > 0.5 is class 1 (as accuracy counts it): 0.5 itself takes class 0's weight."""
    X, y = _data(rng)
    t = np.where(y > 0, 1.0, 0.5)
    a = _model("binary_cross_entropy", 1)
    a.fit(X, t, batch_size=6, class_weight={0: 0.25, 1: 3.0}, verbose=0)
    b = _model("binary_cross_entropy", 1)
    b.fit(X, t, batch_size=6, sample_weight=np.where(t > 0.5, 3.0, 0.25), verbose=0)
    assert np.array_equal(a.params, b.params)


def test_a_column_of_sample_weights_trains_as_the_flat_weights(rng):
    X, y = _data(rng)
    w = rng.uniform(0.5, 2, X.shape[0])
    a, b = _model(), _model()
    a.fit(X, y, batch_size=7, sample_weight=w[:, None], verbose=0)
    b.fit(X, y, batch_size=7, sample_weight=w, verbose=0)
    assert np.array_equal(a.params, b.params)
    assert a.evaluate(X, y, sample_weight=w[:, None]) == b.evaluate(X, y, sample_weight=w)


def test_unit_weights_train_like_no_weights(rng):
    X, y = _data(rng)
    a, b = _model(), _model()
    a.fit(X, y, epochs=2, batch_size=7, verbose=0)
    b.fit(X, y, epochs=2, batch_size=7, sample_weight=np.ones(X.shape[0]), verbose=0)
    assert np.array_equal(a.params, b.params)


def test_weighted_evaluate_and_validation_equal_torch(rng, torch):
    X, y = _data(rng)
    w = rng.uniform(0, 2, X.shape[0])
    model = _model()
    out = torch.from_numpy(model.predict(X))
    expected = (
        (torch.nn.functional.cross_entropy(out, torch.from_numpy(y), reduction="none") * torch.from_numpy(w)).sum()
        / w.sum()
    ).item()
    assert model.evaluate(X, y, sample_weight=w)["loss"] == pytest.approx(expected, rel=1e-12)
    class_w = {0: 0.5, 1: 2.0}
    per_class = np.array([0.5, 2.0, 1.0])[y]
    assert model.evaluate(X, y, class_weight=class_w)["loss"] == pytest.approx(
        model.evaluate(X, y, sample_weight=per_class)["loss"], rel=1e-14
    )
    model.compile("cross_entropy", fnn.optim.SGD(lr=0.0))
    history = model.fit(X[:4], y[:4], validation_data=(X, y, w), verbose=0)
    assert history.history["val_loss"] == [pytest.approx(expected, rel=1e-12)]


def test_validation_split_holds_out_the_last_samples_before_shuffling(rng):
    X, y = _data(rng, 23)
    w = rng.uniform(0.5, 2, 23)
    split = _model().fit(X, y, epochs=2, batch_size=5, validation_split=0.2, sample_weight=w, verbose=0)
    at = int(np.floor(23 * 0.8))  # Keras: the first floor(n (1 - split)) samples train
    by_hand = _model().fit(
        X[:at],
        y[:at],
        epochs=2,
        batch_size=5,
        sample_weight=w[:at],
        validation_data=(X[at:], y[at:], w[at:]),
        verbose=0,
    )
    assert split.history == by_hand.history


def test_bad_weights_and_splits_are_refused_clearly(rng):
    X, y = _data(rng, 10)
    model = _model()
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(10,\), one weight per sample, got shape"):
        model.fit(X, y, sample_weight=np.ones(9), verbose=0)
    with pytest.raises(ValueError, match="sample_weight must be non-negative; sample 3 has weight -1.0"):
        model.fit(X, y, sample_weight=np.where(np.arange(10) == 3, -1.0, 1.0), verbose=0)
    with pytest.raises(ValueError, match="sample_weight must be finite"):
        model.evaluate(X, y, sample_weight=np.full(10, np.nan))
    with pytest.raises(
        ValueError,
        match=r"class_weight has unknown class 3: the classes of this model are the "
        r"integers 0..2",
    ):
        model.fit(X, y, class_weight={3: 1.0}, verbose=0)
    with pytest.raises(ValueError, match=r"class_weight\[0\] must be a finite non-negative number"):
        model.fit(X, y, class_weight={0: -2}, verbose=0)
    with pytest.raises(TypeError, match="class_weight must be a dict"):
        model.fit(X, y, class_weight=[1.0, 2.0], verbose=0)
    with pytest.raises(ValueError, match="class_weight needs single-label classes.*'mse'"):
        _model("mse", 2).fit(X, rng.standard_normal((10, 2)), class_weight={0: 1.0}, verbose=0)
    with pytest.raises(ValueError, match="pass either validation_split or validation_data, not both"):
        model.fit(X, y, validation_split=0.2, validation_data=(X, y), verbose=0)
    for bad in (1.0, -0.1, "0.2", True):
        with pytest.raises(ValueError, match=r"validation_split must be a number in \[0, 1\)"):
            model.fit(X, y, validation_split=bad, verbose=0)
    with pytest.raises(ValueError, match="validation_split=0.95 of 10 samples leaves no training samples"):
        model.fit(X, y, validation_split=0.95, verbose=0)
    with pytest.raises(ValueError, match=r"validation_data must be a tuple \(X_val, y_val\) or"):
        model.fit(X, y, validation_data=(X, y, None, None), verbose=0)
    with pytest.raises(ValueError, match=r"validation_data's sample_weight must have shape \(10,\)"):
        model.fit(X, y, validation_data=(X, y, np.ones(3)), verbose=0)
    assert model.loss.name == "cross_entropy" and model.epochs_done == 0


def test_a_failed_weighted_fit_leaves_the_plain_loss(rng):
    class Boom(fnn.callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            raise RuntimeError("boom")

    X, y = _data(rng)
    model = _model()
    with pytest.raises(RuntimeError, match="boom"):
        model.fit(X, y, sample_weight=np.ones(X.shape[0]), callbacks=[Boom()], verbose=0)
    assert type(model.loss) is fnn.losses.CrossEntropy
    model.fit(X, y, verbose=0)  # plain targets train again


def test_a_checkpoint_of_a_weighted_fit_holds_the_plain_loss(rng, tmp_path):
    X, y = _data(rng)
    model = _model()
    model.fit(
        X,
        y,
        epochs=1,
        sample_weight=rng.uniform(0, 1, X.shape[0]),
        callbacks=[fnn.callbacks.ModelCheckpoint(str(tmp_path / "ckpt.safetensors"))],
        verbose=0,
    )
    loaded = fnn.load(tmp_path / "ckpt.safetensors")
    assert type(loaded.loss) is fnn.losses.CrossEntropy
    assert np.array_equal(loaded.params, model.params)
    loaded.fit(X, y, verbose=0)


def test_a_callback_of_a_weighted_fit_gets_the_plain_loss_of_plain_targets():
    """During fit(sample_weight=...) the model trains on a SampleWeighted loss; a callback's
    loss_and_grads, train_step or diagnostic on plain (X, y) gets the plain loss and gradients (each
    sample weighing 1), as outside the fit; it raised a Numba typing error."""
    rng = np.random.default_rng(0)
    X, y, w = rng.standard_normal((64, 5)), rng.integers(0, 3, 64), rng.random(64)
    model = fnn.Sequential([fnn.Dense(5, 8, activation="relu"), fnn.Dense(8, 3)], seed=0, dtype="float64")
    model.compile("cross_entropy", "adam")
    seen = {}

    class Probe(fnn.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen["loss_and_grads"] = self.model.loss_and_grads(X[:8], y[:8])
            seen["norms"] = fnn.diagnostics.gradient_norms(self.model, X[:8], y[:8])
            seen["params"] = self.model.params.copy()
            seen["step"] = self.model.train_step(X[:8], y[:8])
            self.model.params[:] = seen["params"]  # undo the probe's update

    model.fit(X, y, sample_weight=w, epochs=1, batch_size=16, callbacks=[Probe()], verbose=0)
    assert model.loss.name == "cross_entropy"
    loss, grads = model.loss_and_grads(X[:8], y[:8])
    assert seen["loss_and_grads"][0] == loss and seen["step"] == loss
    for name, g in grads.items():
        np.testing.assert_array_equal(seen["loss_and_grads"][1][name], g)
    assert seen["norms"] == fnn.diagnostics.gradient_norms(model, X[:8], y[:8])
