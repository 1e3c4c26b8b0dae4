"""RNN, LSTM and GRU layers: PyTorch equivalence in float64 (outputs, final states and every
gradient, with and without sequence lengths, with initial states), torch weights copied in by name,
dropout between layers, learned initial states, thread-count determinism, errors, save/load and a
small model that trains. The layer table (tests/layer_cases.py) runs the generic checks."""

from __future__ import annotations

import numba
import numpy as np
import pytest

import fastnn as fnn
from fastnn.layers.base import Context, run_calls
from tests._gradcheck import numeric_gradients_inplace

torch = pytest.importorskip("torch")

KINDS = {
    "lstm": (fnn.LSTM, "LSTM", {}),
    "gru": (fnn.GRU, "GRU", {}),
    "rnn_tanh": (fnn.RNN, "RNN", {"nonlinearity": "tanh"}),
    "rnn_relu": (fnn.RNN, "RNN", {"nonlinearity": "relu"}),
}
B, T, I, H = 4, 5, 3, 3  # noqa: E741 (batch, time, inputs, hidden as in the kernels' notes)
LENGTHS = np.array([5, 2, 4, 1], np.int64)  # unsorted, with a one-step sample


def pair(kind, num_layers=1, bidirectional=False, return_sequences=True, bias=True, seed=0):
    """(built fastnn layer in float64, torch module) with torch's initial weights copied into fastnn by name."""
    cls, torch_name, extra = KINDS[kind]
    torch.manual_seed(seed)
    module = getattr(torch.nn, torch_name)(
        I, H, num_layers=num_layers, bidirectional=bidirectional, bias=bias, batch_first=True, **extra
    ).double()
    layer = cls(
        I, H, num_layers=num_layers, bidirectional=bidirectional, return_sequences=return_sequences, bias=bias, **extra
    )
    model = fnn.Sequential([layer], input_shape=(T, I), dtype="float64", seed=seed)
    views = layer.parameter_views
    state = module.state_dict()
    assert set(views) == set(state)  # the same names ...
    for name, tensor in state.items():
        views[name][...] = tensor.numpy()  # ... and shapes: copied in directly
    return layer, module, model


def eager(layer, x, grad_y, lengths=None, initial_state=None, training=True):
    """fastnn's forward and backward with a context we build (lengths, initial state)."""
    ctx = Context(training, "eager", lengths=lengths)
    if initial_state is not None:
        ctx.initial_state = layer._check_initial_state(initial_state, x.shape[0])
    calls, y = layer.forward_calls(x, ctx)
    run_calls(calls)
    y = y.copy()
    final = tuple(None if s is None else s.copy() for s in ctx.final_state)
    calls, grad_x = layer.backward_calls(grad_y, ctx, True)
    run_calls(calls)
    return y, final, grad_x.copy(), ctx


def torch_run(module, x, h0, c0, grad_y, lengths, return_sequences, kind):
    tx = torch.from_numpy(x).requires_grad_(True)
    th0 = torch.from_numpy(h0).requires_grad_(True)
    tc0 = torch.from_numpy(c0).requires_grad_(True)
    state = (th0, tc0) if kind == "lstm" else th0
    inp = (
        tx
        if lengths is None
        else torch.nn.utils.rnn.pack_padded_sequence(
            tx, torch.from_numpy(lengths), batch_first=True, enforce_sorted=False
        )
    )
    out, final = module(inp, state)
    if lengths is not None:
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
    h_n = final[0] if kind == "lstm" else final
    if return_sequences:
        result = out
    else:
        d = 2 if module.bidirectional else 1
        result = h_n[-d:].transpose(0, 1).reshape(x.shape[0], -1)
    module.zero_grad()
    result.backward(torch.from_numpy(grad_y))
    grads = {name: p.grad.numpy() for name, p in module.named_parameters()}
    c_n = final[1].detach().numpy() if kind == "lstm" else None
    return (
        result.detach().numpy(),
        (h_n.detach().numpy(), c_n),
        tx.grad.numpy(),
        grads,
        th0.grad.numpy(),
        tc0.grad.numpy() if kind == "lstm" else None,
    )


TOL = {"rtol": 1e-10, "atol": 1e-12}


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize(
    ("num_layers", "bidirectional"),
    [(1, False), (1, True), (2, False), (2, True)],
    ids=["1layer", "1layer-bi", "2layers", "2layers-bi"],
)
@pytest.mark.parametrize("return_sequences", [True, False], ids=["sequence", "last"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_matches_torch_outputs_final_states_and_all_gradients(
    kind, return_sequences, num_layers, bidirectional, lengths
):
    layer, module, model = pair(kind, num_layers, bidirectional, return_sequences)
    rng = np.random.default_rng(1)
    d = 2 if bidirectional else 1
    x = rng.standard_normal((B, T, I))
    h0 = rng.standard_normal((num_layers * d, B, H))
    c0 = rng.standard_normal((num_layers * d, B, H))
    grad_y = rng.standard_normal((B, *layer.output_shape))
    state = (h0, c0) if kind == "lstm" else h0
    y, (h_n, c_n), grad_x, ctx = eager(layer, x, grad_y, lengths, state)
    t_y, (t_h, t_c), t_gx, t_grads, t_gh0, t_gc0 = torch_run(module, x, h0, c0, grad_y, lengths, return_sequences, kind)
    np.testing.assert_allclose(y, t_y, **TOL)
    np.testing.assert_allclose(h_n, t_h, **TOL)
    if kind == "lstm":
        np.testing.assert_allclose(c_n, t_c, **TOL)
    np.testing.assert_allclose(grad_x, t_gx, **TOL)
    grads = {name: grad for name, _, grad in model.named_parameters()}
    assert {name[2:] for name in grads} == set(t_grads)
    for name, grad in grads.items():
        np.testing.assert_allclose(grad, t_grads[name[2:]], err_msg=name, **TOL)
    g_h0, g_c0 = ctx.grad_initial_state
    np.testing.assert_allclose(g_h0, t_gh0, **TOL)
    if kind == "lstm":
        np.testing.assert_allclose(g_c0, t_gc0, **TOL)
    if lengths is not None:
        padded = np.arange(T)[None, :] >= lengths[:, None]
        assert np.all(grad_x[padded] == 0)
        if return_sequences:
            assert np.all(y[padded] == 0)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_eager_api_takes_an_initial_state_and_exposes_final_state_and_its_gradient(kind):
    layer, module, _ = pair(kind, num_layers=2)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((B, T, I))
    h0, c0 = rng.standard_normal((2, 2, B, H))
    state = (h0, c0) if kind == "lstm" else h0
    y = layer.forward(x, True, initial_state=state)
    grad_y = rng.standard_normal(y.shape)
    layer.backward(grad_y)
    t_y, (t_h, t_c), _, _, t_gh0, t_gc0 = torch_run(module, x, h0, c0, grad_y, None, True, kind)
    np.testing.assert_allclose(y, t_y, **TOL)
    final, grad_state = layer.final_state, layer.grad_initial_state
    if kind == "lstm":
        np.testing.assert_allclose(final[0], t_h, **TOL)
        np.testing.assert_allclose(final[1], t_c, **TOL)
        np.testing.assert_allclose(grad_state[0], t_gh0, **TOL)
        np.testing.assert_allclose(grad_state[1], t_gc0, **TOL)
    else:
        np.testing.assert_allclose(final, t_h, **TOL)
        np.testing.assert_allclose(grad_state, t_gh0, **TOL)
    # step by step with the carried state is the whole sequence at once
    state = (h0, c0) if kind == "lstm" else h0
    for t in range(T):
        step = layer.forward(x[:, t : t + 1], False, initial_state=state)
        np.testing.assert_allclose(step[:, 0], t_y[:, t], **TOL)
        state = tuple(s.copy() for s in layer.final_state) if kind == "lstm" else layer.final_state.copy()
    with pytest.raises(ValueError, match=r"initial_state's h0 must have shape \(num_layers \* directions"):
        layer.forward(x, True, initial_state=(h0[:1], c0) if kind == "lstm" else h0[:1])


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_learned_initial_state_gets_the_batch_summed_gradient(kind):
    cls = KINDS[kind][0]
    model = fnn.Sequential(
        [cls(I, H, num_layers=2, bidirectional=True, learn_initial_state=True)],
        input_shape=(T, I),
        dtype="float64",
        seed=3,
    )
    layer = model.layers[0]
    names = [name for name, _, _ in model.named_parameters()]
    assert "0.h0" in names and ("0.c0" in names) == (kind == "lstm")
    rng = np.random.default_rng(4)
    model.params[...] = rng.uniform(-0.5, 0.5, model.params.size)
    x = rng.standard_normal((B, T, I))
    grad_y = rng.standard_normal((B, T, 2 * H))
    out = model.forward(x, True)
    model.backward(grad_y)
    grads = {name[2:]: g.copy() for name, _, g in model.named_parameters()}
    views = layer.parameter_views
    h0 = np.repeat(views["h0"][:, None, :], B, axis=1)
    state = (h0, np.repeat(views["c0"][:, None, :], B, axis=1)) if kind == "lstm" else h0
    y = layer.forward(x, True, initial_state=state)
    layer.backward(grad_y)
    np.testing.assert_array_equal(y, out)
    g_state = layer.grad_initial_state
    g_h0 = g_state[0] if kind == "lstm" else g_state
    np.testing.assert_allclose(grads["h0"], g_h0.sum(axis=1), rtol=1e-12, atol=1e-14)
    if kind == "lstm":
        np.testing.assert_allclose(grads["c0"], g_state[1].sum(axis=1), rtol=1e-12, atol=1e-14)


def test_dropout_between_layers_draws_masks_in_training_only_and_backward_uses_them():
    model = fnn.Sequential([fnn.LSTM(I, H, num_layers=3, dropout=0.5)], input_shape=(T, I), dtype="float64", seed=5)
    layer = model.layers[0]
    assert set(layer.buffers()) == {"step"}
    rng = np.random.default_rng(6)
    x = rng.standard_normal((B, T, I))
    evaluation = model.forward(x, False)
    np.testing.assert_array_equal(model.forward(x, False), evaluation)
    assert layer.buffers()["step"][0] == 0
    first, second = model.forward(x, True), model.forward(x, True)
    assert layer.buffers()["step"][0] == 4  # two masks (between three layers) per training forward
    assert not np.array_equal(first, second) and not np.array_equal(first, evaluation)
    # with the counter reset before each forward the masks repeat: finite differences hold in training
    g = rng.standard_normal(first.shape)

    def value():
        layer.buffers()["step"][0] = 0
        return float(np.sum(model.forward(x, True) * g))

    value()
    grad_x = model.backward(g)
    analytic = model.grads.copy()
    numeric = numeric_gradients_inplace(value, [model.params, x])
    np.testing.assert_allclose(analytic, numeric[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad_x, numeric[1], rtol=1e-5, atol=1e-7)


def test_torch_default_initialisation_bounds_and_init_option():
    model = fnn.Sequential([fnn.GRU(I, 16, bias=True)], input_shape=(T, I), seed=7)
    for name, value, _ in model.named_parameters():
        assert np.abs(value).max() <= 0.25 and np.abs(value).max() > 0.2, name  # U(-1/sqrt(16), 1/sqrt(16))
    model = fnn.Sequential([fnn.GRU(I, 16, init="orthogonal", bias_init="zeros")], input_shape=(T, I), seed=7)
    views = model.layers[0].parameter_views
    assert np.all(views["bias_ih_l0"] == 0)
    w = views["weight_hh_l0"]
    np.testing.assert_allclose(w.T @ w, np.eye(16), atol=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_training_step_is_bit_identical_on_one_and_two_threads(kind):
    cls = KINDS[kind][0]
    rng = np.random.default_rng(8)
    x = rng.standard_normal((33, 12, 20)).astype(np.float32)
    y = rng.standard_normal((33, 5)).astype(np.float32)
    results = []
    before = numba.get_num_threads()
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            model = fnn.Sequential(
                [cls(20, 48, num_layers=2, bidirectional=True, dropout=0.2, return_sequences=False), fnn.Dense(96, 5)],
                seed=9,
            ).compile("mse", fnn.optim.Adam(lr=1e-2))
            losses = [model.train_step(x, y) for _ in range(3)]
            results.append((losses, model.params.copy(), model.predict(x)))
    finally:
        numba.set_num_threads(before)
    for a, b in zip(results[0], results[1]):
        np.testing.assert_array_equal(a, b)


def test_errors_are_clear():
    with pytest.raises(ValueError, match="hidden_size must be >= 1"):
        fnn.LSTM(3, 0)
    with pytest.raises(ValueError, match="num_layers must be >= 1"):
        fnn.GRU(3, 4, num_layers=0)
    with pytest.raises(TypeError, match="hidden_size must be an integer"):
        fnn.GRU(3, 4.5)
    with pytest.raises(ValueError, match=r"dropout must be in \[0.0, 1.0\)"):
        fnn.LSTM(3, 4, num_layers=2, dropout=1.0)
    with pytest.raises(ValueError, match="Unknown nonlinearity 'sigmoid'"):
        fnn.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(TypeError, match="bidirectional must be True or False"):
        fnn.LSTM(3, 4, bidirectional="yes")
    with pytest.warns(UserWarning, match="dropout=0.3 applies between stacked layers only"):
        fnn.LSTM(3, 4, dropout=0.3)
    with pytest.raises(ValueError, match=r"takes input \(batch, time, features\), got \(batch, 3\).*X\[:, None, :\]"):
        fnn.Sequential([fnn.LSTM(3, 4)], input_shape=(3,))
    with pytest.raises(ValueError, match=r"takes input \(batch, time, features\), got \(batch, 2, 3, 4\)"):
        fnn.Sequential([fnn.GRU(3, 4)], input_shape=(2, 3, 4))
    with pytest.raises(ValueError, match=r"expects 3 features per step.*receives \(batch, 7, 5\); set input_size to 5"):
        fnn.Sequential([fnn.LSTM(3, 4)], input_shape=(7, 5))
    with pytest.raises(ValueError, match=r"layer 1 \(GRU\(4, 2\)\).*expects 4 features per step.*set input_size to 8"):
        fnn.Sequential([fnn.LSTM(3, 4, bidirectional=True), fnn.GRU(4, 2)], input_shape=(7, 3))


def test_eager_forward_takes_any_steps_but_refuses_other_features_and_unbuilt_layers():
    layer, module, _ = pair("gru")
    x = np.random.default_rng(13).standard_normal((2, T + 4, I))
    expected, _ = module(torch.from_numpy(x))
    np.testing.assert_allclose(layer.forward(x, False), expected.detach().numpy(), **TOL)  # more steps than built
    with pytest.raises(
        ValueError,
        match=r"GRU\(3, 3\) was built for input \(batch, 5, 3\) but got \(batch, 5, 7\); pass arrays \(batch, time, 3\)",
    ):
        layer.forward(np.zeros((2, T, 7)), False)  # was: the first 3 of the 7 features read, silently
    with pytest.raises(ValueError, match=r"but got \(batch, 5\)"):
        layer.forward(np.zeros((2, T)), False)  # was: a Numba typing error
    with pytest.raises(RuntimeError, match=r"LSTM\(3, 3\) is not built"):
        fnn.LSTM(I, H).forward(np.zeros((2, T, I)), False)  # was: AttributeError '_sets'


def test_lengths_policy_follows_return_sequences():
    assert fnn.LSTM(3, 4).lengths_policy == "use"
    assert fnn.GRU(3, 4, return_sequences=False).lengths_policy == "drop"


def test_save_and_load_round_trip_through_sequential(tmp_path):
    model = fnn.Sequential(
        [
            fnn.LSTM(I, H, num_layers=2, dropout=0.25, bidirectional=True, learn_initial_state=True),
            fnn.GRU(2 * H, 2, return_sequences=False),
            fnn.Dense(2, 1),
        ],
        input_shape=(T, I),
        seed=10,
    ).compile("mse", "adam")
    rng = np.random.default_rng(11)
    x = rng.standard_normal((6, T, I)).astype(np.float32)
    y = rng.standard_normal((6, 1)).astype(np.float32)
    model.train_step(x, y)
    path = tmp_path / "rnn.safetensors"
    model.save(path)
    loaded = fnn.load(path)
    assert [type(layer) for layer in loaded.layers] == [fnn.LSTM, fnn.GRU, fnn.Dense]
    assert loaded.layers[0].get_config() == model.layers[0].get_config()
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    np.testing.assert_array_equal(loaded.layers[0].buffers()["step"], model.layers[0].buffers()["step"])
    np.testing.assert_array_equal(loaded.train_step(x, y), model.train_step(x, y))  # the same dropout masks next


def test_lstm_then_dense_learns_to_sum_a_sequence():
    rng = np.random.default_rng(12)
    x = rng.uniform(-1, 1, (256, 8, 1)).astype(np.float32)
    y = x.sum(axis=1)
    model = fnn.Sequential([fnn.LSTM(1, 16, return_sequences=False), fnn.Dense(16, 1)], seed=13)
    history = model.fit(x, y, loss="mse", optimizer=fnn.optim.Adam(lr=1e-2), epochs=15, batch_size=32, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.1 * losses[0]
