"""Dropout, BatchNorm1d, LayerNorm, Residual as layers of a model; train/eval modes; the
vanishing-gradient experiment."""

import numpy as np
import pytest

import fastnn as fnn
from tests._gradcheck import check_model_gradients


def test_batchnorm_layernorm_residual_gradients_match_finite_differences(rng):
    model = fnn.Sequential(
        [
            fnn.Dense(5, 6),
            fnn.BatchNorm1d(6),
            fnn.Tanh(),
            fnn.Residual([fnn.Dense(6, 6, activation="tanh"), fnn.LayerNorm(6)]),
            fnn.Residual([fnn.Dense(6, 4, activation="gelu")]),  # projection 6 -> 4 on the skip path
            fnn.Dense(4, 3),
        ],
        dtype="float64",
        seed=1,
    )
    model.compile(loss="cross_entropy", optimizer="sgd")
    check_model_gradients(model, rng.standard_normal((9, 5)), rng.integers(0, 3, 9))


def test_non_affine_norms_gradients(rng):
    model = fnn.Sequential(
        [
            fnn.Dense(4, 5),
            fnn.BatchNorm1d(5, affine=False),
            fnn.LayerNorm(5, elementwise_affine=False),
            fnn.Dense(5, 2),
        ],
        dtype="float64",
    )
    model.compile(loss="mse", optimizer="sgd")
    check_model_gradients(model, rng.standard_normal((6, 4)), rng.standard_normal((6, 2)))


def test_dropout_train_and_eval(rng):
    layer = fnn.Dropout(0.3)
    model = fnn.Sequential([fnn.Dense(50, 400, init="ones", bias_init="zeros"), layer], seed=3, dtype="float64")
    X = np.full((200, 50), 0.02)
    train_out = model.forward(X, training=True)
    kept = train_out != 0
    assert abs(kept.mean() - 0.7) < 0.01  # 80,000 units
    np.testing.assert_allclose(train_out[kept], 1.0 / 0.7)
    assert abs(train_out.mean() - 1.0) < 0.02  # expected activation preserved
    grad = model.backward(np.ones((200, 400)))
    np.testing.assert_allclose(model.layers[0].grad_bias, kept.sum(axis=0) / 0.7)  # only kept units
    assert grad.shape == (200, 50)
    np.testing.assert_allclose(model.forward(X, training=False), np.ones((200, 400)), rtol=1e-12)  # identity
    again = model.forward(X, training=True)
    assert not np.array_equal(again != 0, kept)  # a new mask each step


def test_dropout_zero_is_an_exact_identity(rng):
    model = fnn.Sequential([fnn.Dense(3, 4), fnn.Dropout(0.0)])
    X = rng.standard_normal((5, 3))
    np.testing.assert_array_equal(model.forward(X, training=True), model.forward(X, training=False))


def test_seeded_training_is_bit_identical_on_one_and_two_threads(rng):
    """Dropout masks, batch-norm and layer-norm sums, bias gradients, tiled GEMMs and the
    optimizer all give the same bits whatever the thread count (every size here takes the
    parallel paths)."""
    import numba

    X = rng.standard_normal((300, 20))

    def run(threads):
        numba.set_num_threads(threads)
        try:
            model = fnn.Sequential(
                [
                    fnn.Dense(20, 512),
                    fnn.BatchNorm1d(512),
                    fnn.ReLU(),
                    fnn.Dropout(0.5),
                    fnn.Dense(512, 256, activation="tanh"),
                    fnn.LayerNorm(256),
                    fnn.Dense(256, 3),
                ],
                seed=5,
            )
            model.fit(
                X, np.arange(300) % 3, loss="cross_entropy", optimizer="adam", epochs=2, batch_size=150, verbose=0
            )
            return model.params.copy()
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)

    assert np.array_equal(run(1), run(2))


def test_batchnorm_uses_batch_stats_in_training_and_running_stats_in_eval(rng):
    bn = fnn.BatchNorm1d(3, momentum=0.5)
    model = fnn.Sequential([bn], input_features=3, dtype="float64")
    X = rng.standard_normal((64, 3)) * 4 + 10
    out = model.forward(X, training=True)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(out.std(axis=0), 1, atol=1e-4)
    np.testing.assert_allclose(bn.running_mean, 0.5 * X.mean(axis=0))
    np.testing.assert_allclose(bn.running_var, 0.5 + 0.5 * X.var(axis=0, ddof=1))
    eval_out = model.forward(X, training=False)
    np.testing.assert_allclose(eval_out, (X - bn.running_mean) / np.sqrt(bn.running_var + 1e-5))


def test_batchnorm_batch_of_one_in_training_is_refused():
    model = fnn.Sequential([fnn.Dense(3, 4), fnn.BatchNorm1d(4)])
    with pytest.raises(ValueError, match="more than 1 value per channel in training"):
        model.forward(np.ones((1, 3)), training=True)
    assert model.forward(np.ones((1, 3)), training=False).shape == (1, 4)


def test_batchnorm_without_running_stats_names_the_eval_batch_of_one():
    # eval mode normalises with the batch's statistics too: the error must not say "training" nor
    # suggest eval mode (the caller is in it), but the batch size and track_running_stats
    model = fnn.Sequential([fnn.Dense(3, 4), fnn.BatchNorm1d(4, track_running_stats=False)], dtype="float64")
    model.compile("mse", "sgd")
    X = np.arange(15.0).reshape(5, 3)
    with pytest.raises(ValueError, match="evaluation mode too.*batch size 1.*track_running_stats=True") as info:
        model.predict(X[:1])
    assert "in training" not in str(info.value)
    with pytest.raises(ValueError, match="evaluation mode too"):
        model.evaluate(X, np.zeros((5, 4)), batch_size=4)  # a last batch of one
    assert model.predict(X, batch_size=5).shape == (5, 4)


def test_model_with_batchnorm_and_dropout_matches_torch(rng):
    torch = pytest.importorskip("torch")
    model = fnn.Sequential(
        [fnn.Dense(7, 9), fnn.BatchNorm1d(9, momentum=0.2), fnn.ReLU(), fnn.LayerNorm(9), fnn.Dense(9, 4)],
        dtype="float64",
        seed=2,
    )
    model.compile(loss="cross_entropy", optimizer=fnn.optim.SGD(lr=0.1))
    lin1, lin2 = torch.nn.Linear(7, 9).double(), torch.nn.Linear(9, 4).double()
    bn, ln = torch.nn.BatchNorm1d(9, momentum=0.2).double(), torch.nn.LayerNorm(9).double()
    tmodel = torch.nn.Sequential(lin1, bn, torch.nn.ReLU(), ln, lin2)
    with torch.no_grad():
        for ours, theirs in ((model.layers[0], lin1), (model.layers[4], lin2)):
            theirs.weight.copy_(torch.from_numpy(ours.weight.T.copy()))
            theirs.bias.copy_(torch.from_numpy(ours.bias.copy()))
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.1)
    for _ in range(4):
        X = rng.standard_normal((16, 7))
        y = rng.integers(0, 4, 16)
        loss = model.train_step(X, y)
        topt.zero_grad()
        tloss = torch.nn.functional.cross_entropy(tmodel(torch.from_numpy(X)), torch.from_numpy(y))
        tloss.backward()
        topt.step()
        assert loss == pytest.approx(tloss.item(), rel=1e-10)
    np.testing.assert_allclose(model.layers[1].running_mean, bn.running_mean.numpy(), rtol=1e-10)
    np.testing.assert_allclose(model.layers[1].running_var, bn.running_var.numpy(), rtol=1e-10)
    np.testing.assert_allclose(model.layers[1].weight, bn.weight.detach().numpy(), rtol=1e-9)
    np.testing.assert_allclose(model.layers[3].bias, ln.bias.detach().numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.layers[0].weight, lin1.weight.detach().numpy().T, rtol=1e-9)
    X = rng.standard_normal((5, 7))
    tmodel.eval()
    np.testing.assert_allclose(model.predict(X), tmodel(torch.from_numpy(X)).detach().numpy(), rtol=1e-9)


def test_fit_uses_train_mode_and_predict_eval_mode_restoring_the_mode(rng):
    model = fnn.Sequential([fnn.Dense(4, 8), fnn.Dropout(0.5), fnn.Dense(8, 2)])
    model.compile("cross_entropy", "sgd")
    X = rng.standard_normal((10, 4))
    model.eval()
    model.fit(X, np.arange(10) % 2, epochs=1, verbose=0)
    assert not model.training
    np.testing.assert_array_equal(model.predict(X), model.predict(X))  # no dropout in predict
    model.train()
    assert model.training
    np.testing.assert_array_equal(model.predict(X), model.forward(X, training=False))
    assert not np.array_equal(model.forward(X), model.forward(X))  # train mode: dropout on


def test_residual_identity_path_and_projection(rng):
    res = fnn.Residual([fnn.Dense(4, 4, init="zeros")])
    model = fnn.Sequential([res], input_features=4, dtype="float64")
    X = rng.standard_normal((3, 4))
    np.testing.assert_array_equal(model.forward(X), X)  # zero block: y = x
    proj = fnn.Sequential([fnn.Residual(fnn.Sequential([fnn.Dense(4, 6), fnn.ReLU()]))], input_features=4)
    assert proj.layers[0].projection is not None and proj.out_features == 6
    with pytest.raises(ValueError, match=r"maps \(batch, 4\) to \(batch, 6\).*projection"):
        fnn.Sequential([fnn.Residual([fnn.Dense(4, 6)], projection=False)], input_features=4)


@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda: fnn.Dropout(1.0), r"p must be in \[0.0, 1.0\)"),
        (lambda: fnn.Dropout(-0.1), r"p must be in"),
        (lambda: fnn.BatchNorm1d(4, eps=0), r"eps must be in \(0.0"),
        (lambda: fnn.BatchNorm1d(4, momentum=1.5), r"momentum must be in \[0.0, 1.0\]"),
        (lambda: fnn.LayerNorm(4, eps=-1), r"eps must be in"),
        (
            lambda: fnn.Sequential([fnn.Dense(3, 5), fnn.BatchNorm1d(4)]),
            r"layer 1 \(BatchNorm1d\(4.*expects 4 features.*set layer 1.s num_features to 5",
        ),
        (lambda: fnn.Dense(3, 4, init="xavier_unifrom"), r"Did you mean 'xavier_uniform'"),
    ],
)
def test_bad_layer_arguments(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


def test_save_and_load_keeps_running_stats_and_dropout_position(tmp_path, rng):
    model = fnn.Sequential(
        [
            fnn.Dense(4, 8),
            fnn.BatchNorm1d(8),
            fnn.Dropout(0.2),
            fnn.Residual([fnn.Dense(8, 8, activation="relu")]),
            fnn.Dense(8, 2),
        ]
    )
    X = rng.standard_normal((40, 4))
    model.fit(X, np.arange(40) % 2, loss="cross_entropy", optimizer="adam", epochs=2, batch_size=8, verbose=0)
    model.save(tmp_path / "m.safetensors")
    loaded = fnn.load(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(loaded.layers[1].running_var, model.layers[1].running_var)
    assert loaded.layers[2].step[0] == model.layers[2].step[0] == 10
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))


def deep_net(activation, init, *, batch_norm=False, residual=False, depth=20, width=32):
    layers = []
    for _ in range(depth):
        if residual:
            layers.append(fnn.Residual([fnn.Dense(width, width, activation=activation, init=init)]))
        elif batch_norm:
            layers += [fnn.Dense(width, width, init=init), fnn.BatchNorm1d(width), fnn.Activation(activation)]
        else:
            layers.append(fnn.Dense(width, width, activation=activation, init=init))
    model = fnn.Sequential(layers + [fnn.Dense(width, 4)], dtype="float64", seed=0)
    model.compile("cross_entropy", "sgd")
    return model


def test_vanishing_gradients_and_their_three_fixes(rng):
    """First hidden layer's weight-gradient norm vs the last hidden layer's, 20 layers deep."""
    X, y = rng.standard_normal((256, 32)), rng.integers(0, 4, 256)

    def first_over_last(model):
        norms = fnn.diagnostics.layer_gradient_norms(model, X, y)
        return norms[0] / norms[-2]

    assert first_over_last(deep_net("sigmoid", "xavier_normal")) < 1e-6  # vanishes by > 6 orders
    assert 0.1 < first_over_last(deep_net("relu", "he_normal")) < 10
    assert 0.1 < first_over_last(deep_net("sigmoid", "xavier_normal", batch_norm=True)) < 10
    assert 0.02 < first_over_last(deep_net("sigmoid", "xavier_normal", residual=True)) < 50


def test_weight_decay_skips_bias_and_norm_unless_asked(rng):
    def run(decay_all):
        model = fnn.Sequential([fnn.Dense(3, 4), fnn.BatchNorm1d(4), fnn.Dense(4, 2)], dtype="float64")
        model.compile("mse", fnn.optim.SGD(lr=0.1, weight_decay=0.5), decay_bias_and_norm=decay_all)
        before = {name: value.copy() for name, value, _ in model.named_parameters()}
        model.grads[...] = 0.0
        model.optimizer.step()  # zero gradients: only the decay moves parameters
        return {name: (value, before[name]) for name, value, _ in model.named_parameters()}

    for name, (after, before) in run(False).items():
        if name.endswith("weight") and after.ndim == 2:
            np.testing.assert_allclose(after, before * 0.95)
        else:
            np.testing.assert_array_equal(after, before)
    for name, (after, before) in run(True).items():
        np.testing.assert_allclose(after, before * 0.95)


def test_set_num_threads_takes_numpy_integers_and_refuses_bools_and_floats():
    before = fnn.get_num_threads()
    try:
        fnn.set_num_threads(np.int64(1))  # (refused before; Numba's own takes it)
        assert fnn.get_num_threads() == 1
        for bad in (True, np.bool_(True), 1.0, "1"):
            with pytest.raises(TypeError, match="n must be an int"):
                fnn.set_num_threads(bad)
    finally:
        fnn.set_num_threads(before)


def test_eager_forward_checks_its_input_and_backward_its_gradient():
    """layer.forward(x, training) on a model's layer: another per-sample shape is refused naming both
    (the kernels loop over the built buffers: LayerNorm returned the built shape's garbage, Dense a
    reshape error), host data converted to the layer's dtype and C order as predict converts it; a
    layer built alone with parameters no model allocated, and an unbuilt layer, are refused clearly
    (Numba typing and attribute errors before); backward checks grad_y against the last output."""
    model = fnn.Sequential([fnn.Dense(3, 2), fnn.LayerNorm(2)], input_shape=(3,), seed=0)
    dense, norm = model.layers
    x = np.arange(6.0).reshape(3, 2).T  # float64, Fortran order
    np.testing.assert_array_equal(
        dense.forward(x, False), model.layers[0].forward(np.ascontiguousarray(x, np.float32), False)
    )
    assert dense.forward(x, False).dtype == np.float32
    with pytest.raises(ValueError, match=r"Dense\(3, 2\) was built for input \(batch, 3\) but got \(batch, 5\)"):
        dense.forward(np.ones((2, 5), np.float32), False)
    with pytest.raises(ValueError, match=r"built for input \(batch, 2\) but got \(batch, 3, 2\)"):
        norm.forward(np.ones((4, 3, 2), np.float32), True)
    dense.forward(np.ones((2, 3)), True)
    with pytest.raises(
        ValueError, match=r"grad_y of Dense\(3, 2\) must have the shape of its last forward's output \(2, 2\)"
    ):
        dense.backward(np.ones((3, 2)))
    assert dense.backward(np.ones((2, 2))).dtype == np.float32  # float64 gradient converted
    alone = fnn.LayerNorm(4)
    with pytest.raises(RuntimeError, match=r"LayerNorm\(4.*is not built"):
        alone.forward(np.ones((2, 4)), True)
    alone.build((4,), "float32")
    with pytest.raises(RuntimeError, match="has no parameters yet: a model allocates them"):
        alone.forward(np.ones((2, 4)), True)
    embedding = fnn.Sequential([fnn.Embedding(5, 2)], input_shape=(3,), seed=0).layers[0]
    with pytest.raises(TypeError, match="takes int64 input, got float64"):
        embedding.forward(np.ones((2, 3)), True)
    assert embedding.forward(np.ones((2, 3), np.int32), True).shape == (2, 3, 2)


@pytest.mark.parametrize(
    "make, flag",
    [
        (lambda v: fnn.Dense(2, 3, bias=v), "bias"),
        (lambda v: fnn.Conv1d(2, 3, 2, bias=v), "bias"),
        (lambda v: fnn.BatchNorm1d(3, affine=v), "affine"),
        (lambda v: fnn.BatchNorm1d(3, track_running_stats=v), "track_running_stats"),
        (lambda v: fnn.LayerNorm(3, elementwise_affine=v), "elementwise_affine"),
        (lambda v: fnn.Embedding(5, 2, mask_padding=v), "mask_padding"),
        (lambda v: fnn.Residual([fnn.Dense(2, 3)], projection=v), "projection"),
        (lambda v: fnn.LSTM(2, 3, bidirectional=v), "bidirectional"),
    ],
)
def test_layer_flags_must_be_booleans(make, flag):
    """bool("False") is True: a string flag turned the option on (Dense(bias="False") had a bias)."""
    with pytest.raises(TypeError, match=f"{flag} must be True or False, got str 'False'"):
        make("False")
    make(np.bool_(False))
