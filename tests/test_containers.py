"""Layers that hold layers (containers): ``Layer`` passes the protocol on to ``sublayers()`` by default
(parameter_specs, bind, buffers, set_device, seed_rng, plannable), as a torch ``nn.Module`` does, so
a container writes only what it computes; one with parameters or buffers of its own lists them before
``super()``'s; one that forgets ``super()`` is refused when built, by name."""

import copy
import pickle

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _config
from fastnn.layers import LAYERS, layer_from_config, layer_to_config
from fastnn.layers.base import ParamSpec, check_sublayers_bound, flat_rows, parameter_owners, rows
from tests._gradcheck import numeric_gradients_inplace


class ParallelSum(fnn.Layer):
    """``y = left(x) + right(x)``: a user's container written the short way (no parameter_specs,
    bind, buffers, set_device or seed_rng of its own)."""

    def __init__(self, left, right):
        super().__init__()
        self.left, self.right = left, right

    def sublayers(self):
        return [("left", self.left), ("right", self.right)]

    def build(self, input_shape, dtype):
        shape = super().build(input_shape, dtype)
        out = self.left.build(shape, dtype)
        if self.right.build(shape, dtype) != out:
            raise ValueError(f"{self!r}: its two branches must give the same shape")
        self.output_shape = out
        self._workspace = self.workspace(y=out, grad_x=shape)
        return out

    def forward_calls(self, x, ctx):
        left, a = self.left.forward_calls(x, ctx.child("left"))
        right, b = self.right.forward_calls(x, ctx.child("right"))
        y = self._workspace(x.shape[0], ctx.arena)["y"]
        return left + right + [(self.K.add, (flat_rows(a), flat_rows(b), flat_rows(y)))], y

    def backward_calls(self, grad_y, ctx, need_grad_x):
        left, ga = self.left.backward_calls(grad_y, ctx.child("left"), True)
        right, gb = self.right.backward_calls(grad_y, ctx.child("right"), True)
        grad_x = self._workspace(grad_y.shape[0], ctx.arena)["grad_x"]
        return left + right + [(self.K.add, (flat_rows(ga), flat_rows(gb), flat_rows(grad_x)))], grad_x

    def get_config(self):
        return {"left": layer_to_config(self.left), "right": layer_to_config(self.right)}

    @classmethod
    def from_config(cls, config):
        return cls(layer_from_config(config["left"]), layer_from_config(config["right"]))


def _fill(value):
    return lambda view, seed, stream: view.fill(value)


class PostNorm(fnn.Layer):
    """``y = gain * normalise(inner(x)) + shift``: a container with parameters (gain, shift) and a
    buffer (``tag``) of its own besides its child's, listed before ``super()``'s."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.gain = self.shift = self.grad_gain = self.grad_shift = None
        self.tag = np.zeros(1)

    def sublayers(self):
        return [("inner", self.inner)]

    def build(self, input_shape, dtype):
        super().build(input_shape, dtype)
        out = self.inner.build(input_shape, dtype)
        self.output_shape = out
        self._workspace = self.workspace(y=out, x_hat=out, grad_h=out)
        self._inv_std = self.workspace(inv_std=out[:-1])
        self._partials = self.zeros((2, 1, out[-1]))
        return out

    def parameter_specs(self):
        f = self.output_shape[-1]
        own = [ParamSpec("gain", (f,), False, _fill(1.0)), ParamSpec("shift", (f,), False, _fill(0.0))]
        return own + super().parameter_specs()

    def bind(self, params, grads):
        self.gain, self.grad_gain = params["gain"], grads["gain"]
        self.shift, self.grad_shift = params["shift"], grads["shift"]
        super().bind(params, grads)

    def buffers(self):
        return {"tag": self.tag, **super().buffers()}

    def forward_calls(self, x, ctx):
        calls, h = self.inner.forward_calls(x, ctx.child("inner"))
        ws, f = self._workspace(x.shape[0], ctx.arena), self.output_shape[-1]
        inv_std = self._inv_std(x.shape[0], ctx.arena)["inv_std"].reshape(-1)
        args = (rows(h, f), self.gain, self.shift, rows(ws["y"], f), rows(ws["x_hat"], f), inv_std, 1e-5, True)
        return [*calls, (self.K.layernorm_forward, args)], ws["y"]

    def backward_calls(self, grad_y, ctx, need_grad_x):
        m, f = grad_y.shape[0], self.output_shape[-1]
        ws, g = self._workspace(m, ctx.arena), rows(grad_y, f)
        n = self.K.partial_rows(g.shape[0])
        if self._partials.shape[1] < n:
            self._partials = self.zeros((2, n, f))
        inv_std = self._inv_std(m, ctx.arena)["inv_std"].reshape(-1)
        args = (g, rows(ws["x_hat"], f), inv_std, self.gain, rows(ws["grad_h"], f))
        args += (self.grad_gain, self.grad_shift, self._partials, True)
        more, grad_x = self.inner.backward_calls(ws["grad_h"], ctx.child("inner"), need_grad_x)
        return [(self.K.layernorm_backward, args), *more], grad_x

    def get_config(self):
        return {"inner": layer_to_config(self.inner)}

    @classmethod
    def from_config(cls, config):
        return cls(layer_from_config(config["inner"]))


@pytest.fixture(autouse=True)
def registered():
    for kind in (ParallelSum, PostNorm):
        fnn.register_layer(kind)
    yield
    for kind in (ParallelSum, PostNorm):
        LAYERS.pop(kind.__name__, None)


def parallel_model(seed=0, dtype="float32", p=0.2):
    right = fnn.Residual([fnn.Dense(4, 3, activation="tanh"), fnn.BatchNorm1d(3), fnn.Dropout(p)])
    layers = [ParallelSum(fnn.Dense(4, 3), right), fnn.Dense(3, 2)]
    return fnn.Sequential(layers, input_shape=(4,), seed=seed, dtype=dtype)


def post_norm_model(seed=0, dtype="float32"):
    inner = fnn.Residual([fnn.Dense(4, 4, activation="tanh"), fnn.BatchNorm1d(4)])
    return fnn.Sequential([PostNorm(inner), fnn.Dense(4, 2)], input_shape=(4,), seed=seed, dtype=dtype)


def container_data(n=24):
    rng = np.random.default_rng(5)
    return rng.standard_normal((n, 4)).astype(np.float32), rng.standard_normal((n, 2)).astype(np.float32)


def _fit(model, epochs=3):
    X, y = container_data()
    model.compile("mse", fnn.optim.Adam(lr=0.01))
    return model.fit(X, y, epochs=epochs, batch_size=8, verbose=0, shuffle=False).history["loss"]


# -- built-in containers: the same parameter names, order and values as before the defaults ------------
#: ``named_parameters()`` of each built-in container, recorded with the code before Layer's defaults
#: took over their parameter_specs/bind/buffers: saved files and optimizer states go by these
RECORDED = {
    "residual": (
        lambda: [fnn.Residual([fnn.Dense(4, 6), fnn.BatchNorm1d(6), fnn.Dropout(0.5)])],
        (4,),
        ["0.block.0.weight", "0.block.0.bias", "0.block.1.weight", "0.block.1.bias", "0.projection.weight"],
    ),
    "nested residual": (
        lambda: [fnn.Residual([fnn.Residual([fnn.Dense(4, 4), fnn.LayerNorm(4)]), fnn.Dense(4, 4)])],
        (4,),
        [
            "0.block.0.block.0.weight",
            "0.block.0.block.0.bias",
            "0.block.0.block.1.weight",
            "0.block.0.block.1.bias",
            "0.block.1.weight",
            "0.block.1.bias",
        ],
    ),
    "time distributed": (
        lambda: [fnn.TimeDistributed(fnn.Residual([fnn.Dense(3, 3), fnn.BatchNorm1d(3)]))],
        (5, 3),
        ["0.block.0.weight", "0.block.0.bias", "0.block.1.weight", "0.block.1.bias"],
    ),
    "encoder block": (
        lambda: [fnn.TransformerEncoderBlock(4, 2, 8, dropout=0.1)],
        (3, 4),
        [
            "0.attention.block.0.in_proj_weight",
            "0.attention.block.0.out_proj_weight",
            "0.attention.block.0.in_proj_bias",
            "0.attention.block.0.out_proj_bias",
            "0.norm1.weight",
            "0.norm1.bias",
            "0.feedforward.block.0.weight",
            "0.feedforward.block.0.bias",
            "0.feedforward.block.2.weight",
            "0.feedforward.block.2.bias",
            "0.norm2.weight",
            "0.norm2.bias",
        ],
    ),
    "pre-norm encoder block": (
        lambda: [fnn.TransformerEncoderBlock(4, 2, 8, dropout=0.1, norm_first=True)],
        (3, 4),
        [
            "0.attention.block.0.weight",
            "0.attention.block.0.bias",
            "0.attention.block.1.in_proj_weight",
            "0.attention.block.1.out_proj_weight",
            "0.attention.block.1.in_proj_bias",
            "0.attention.block.1.out_proj_bias",
            "0.feedforward.block.0.weight",
            "0.feedforward.block.0.bias",
            "0.feedforward.block.1.weight",
            "0.feedforward.block.1.bias",
            "0.feedforward.block.3.weight",
            "0.feedforward.block.3.bias",
        ],
    ),
    "positional encoding": (
        lambda: [fnn.PositionalEncoding(10, dropout=0.2), fnn.TimeDistributed(fnn.Dense(4, 2))],
        (3, 4),
        ["1.weight", "1.bias"],
    ),
}


@pytest.mark.parametrize("case", list(RECORDED))
def test_built_in_containers_keep_their_parameter_names_and_order(case):
    layers, shape, names = RECORDED[case]
    model = fnn.Sequential(layers(), input_shape=shape, seed=0)
    assert [name for name, *_ in model.named_parameters()] == names
    for name, param, _ in model.named_parameters():  # each name is a view of what its owner computes with
        index, _, inside = name.partition(".")
        owner, own = parameter_owners(model.layers[int(index)])[inside]
        assert np.shares_memory(param, getattr(owner, own))


def _keyed_by(drop, stream, seed=0):
    """Whether the model's Dropout ``drop`` draws the masks of a Dropout keyed by ``(seed, stream)``."""
    x = np.ones((2, *drop.input_shape), np.float32)
    fresh = fnn.Dropout(drop.p)
    fresh.build(drop.input_shape, "float32")
    fresh.seed_rng(seed, stream)
    return np.array_equal(drop.forward(x, training=True), fresh.forward(x, training=True))


def test_built_in_containers_keep_their_buffers_and_dropout_streams():
    """The buffers keep their names, and the dropout masks inside the containers their streams
    (stream * 1000 + k + 1 for sublayer k, as each container keyed them itself)."""
    model = fnn.Sequential(RECORDED["encoder block"][0](), input_shape=(3, 4), seed=0)
    assert [n for n in model.state_arrays() if n.endswith("step")] == [
        "0.attention.block.0.step",
        "0.attention.block.1.step",
        "0.feedforward.block.1.step",
        "0.feedforward.block.3.step",
    ]
    top = 1_000_000  # layer 0's stream
    attention, feedforward = model.layers[0].parts[0][1], model.layers[0].parts[2][1]
    assert _keyed_by(attention.block[1], (top * 1000 + 1) * 1000 + 2)
    assert not _keyed_by(attention.block[1], (top * 1000 + 1) * 1000 + 3)  # (the check can fail)
    assert _keyed_by(feedforward.block[3], (top * 1000 + 3) * 1000 + 4)
    td = fnn.Sequential([fnn.TimeDistributed(fnn.Dropout(0.5))], input_shape=(3, 4), seed=0).layers[0]
    assert _keyed_by(td.layer, top * 1000 + 1)
    positional = fnn.Sequential([fnn.PositionalEncoding(8, dropout=0.5)], input_shape=(3, 4), seed=0).layers[0]
    assert _keyed_by(positional.drop, top)  # its own rule: the layer's stream itself


# -- a user container written the short way ----------------------------------------------------------
def test_a_user_container_gets_the_protocol_from_layer():
    model = parallel_model()
    names = [name for name, *_ in model.named_parameters()]
    assert names == [
        "0.left.weight",
        "0.left.bias",
        "0.right.block.0.weight",
        "0.right.block.0.bias",
        "0.right.block.1.weight",
        "0.right.block.1.bias",
        "0.right.projection.weight",
        "1.weight",
        "1.bias",
    ]
    container = model.layers[0]
    assert container.right.block[0].weight is not None
    assert np.shares_memory(container.right.block[0].weight, model.params)
    assert sorted(container.buffers()) == [
        "right.block.1.num_batches_tracked",
        "right.block.1.running_mean",
        "right.block.1.running_var",
        "right.block.2.step",
    ]
    assert container.plannable()
    # the model keyed the dropout inside: stream of layer 0, then sublayer 1 ("right"), then block layer 2
    assert _keyed_by(container.right.block[2], (1_000_000 * 1000 + 2) * 1000 + 3)
    container.set_device("cpu")
    assert all(inner.device == "cpu" and inner.K is fnn.backend.kernels("cpu") for inner in container.right.block)


def test_a_user_container_holding_an_eager_layer_is_not_plannable():
    class Double(fnn.Layer):
        def forward(self, x, training):
            return 2 * x

        def backward(self, grad_y, need_grad_x=True):
            return 2 * grad_y

    assert not ParallelSum(Double(), fnn.ReLU()).plannable()
    assert ParallelSum(fnn.Identity(), fnn.ReLU()).plannable()


def test_a_user_container_trains_and_matches_its_gradients():
    model = parallel_model(dtype="float64", p=0.0)
    X, y = container_data(6)
    model.compile("mse", "sgd")
    model.loss_and_grads(X, y)
    analytic = model.grads.copy()
    (numeric,) = numeric_gradients_inplace(lambda: model.loss_and_grads(X, y)[0], [model.params])
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)
    losses = _fit(parallel_model(), epochs=6)
    assert losses[-1] < losses[0]


def test_a_user_container_saves_loads_copies_and_pickles(tmp_path):
    model = parallel_model()
    _fit(model)
    X, _ = container_data()
    expected = model.predict(X)
    path = tmp_path / "parallel.fnn"
    model.save(path)
    for clone in (fnn.load(path), copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        np.testing.assert_array_equal(clone.predict(X), expected)
        inner = clone.layers[0].right.block[1]
        np.testing.assert_array_equal(inner.running_mean, model.layers[0].right.block[1].running_mean)
        assert inner.owner is clone and np.shares_memory(inner.weight, clone.params)
    resumed, again = fnn.load(path), copy.deepcopy(model)  # training goes on alike (optimizer state kept)
    np.testing.assert_array_equal(_fit(resumed, epochs=1), _fit(again, epochs=1))


def test_a_user_container_fused_steps_equal_the_python_loop(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTNN_CACHE_DIR", str(tmp_path))
    results = []
    for fuse in ("never", "always"):
        monkeypatch.setattr(_config, "FUSE", fuse)
        model = parallel_model(seed=3)
        results.append((_fit(model, epochs=2), model.params.copy(), model.predict(container_data()[0])))
        assert model.step_plan(8).run.fused == (fuse == "always")
    for loop, fused in zip(*results):
        np.testing.assert_array_equal(loop, fused)


# -- a container with parameters and buffers of its own ----------------------------------------------
def test_a_container_with_parameters_of_its_own_lists_them_first():
    model = post_norm_model()
    assert [name for name, *_ in model.named_parameters()] == [
        "0.gain",
        "0.shift",
        "0.inner.block.0.weight",
        "0.inner.block.0.bias",
        "0.inner.block.1.weight",
        "0.inner.block.1.bias",
        "1.weight",
        "1.bias",
    ]
    assert list(model.layers[0].buffers())[0] == "tag"
    assert "0.tag" in model.state_arrays() and "0.inner.block.1.running_var" in model.state_arrays()


def test_a_container_with_parameters_of_its_own_trains_saves_and_copies(tmp_path):
    model = post_norm_model(dtype="float64")
    X, y = container_data(6)
    model.compile("mse", "sgd")
    model.loss_and_grads(X, y)
    analytic = model.grads.copy()
    (numeric,) = numeric_gradients_inplace(lambda: model.loss_and_grads(X, y)[0], [model.params])
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-8)

    model = post_norm_model()
    losses = _fit(model, epochs=6)
    assert losses[-1] < losses[0]
    assert not np.array_equal(model.layers[0].gain, np.ones(4))  # its own parameters trained
    model.layers[0].tag[0] = 7.0
    model.save(tmp_path / "post.fnn")
    expected = model.predict(X)
    for clone in (fnn.load(tmp_path / "post.fnn"), copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        np.testing.assert_array_equal(clone.predict(X), expected)
        assert clone.layers[0].tag[0] == 7.0
        np.testing.assert_array_equal(clone.layers[0].gain, model.layers[0].gain)


# -- what a container that forgets super() gets ------------------------------------------------------
class ForgetsBind(PostNorm):
    def bind(self, params, grads):
        self.gain, self.grad_gain = params["gain"], grads["gain"]
        self.shift, self.grad_shift = params["shift"], grads["shift"]


class ForgetsSpecs(PostNorm):
    def parameter_specs(self):
        f = self.output_shape[-1]
        return [ParamSpec("gain", (f,), False, _fill(1.0)), ParamSpec("shift", (f,), False, _fill(0.0))]


class ForgetsBuffers(PostNorm):
    def buffers(self):
        return {"tag": self.tag}


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        (
            ForgetsBind,
            r"ForgetsBind\.bind did not pass 'inner\.block\.0' \(Dense\(4, 4.*super\(\)\.bind\(params, grads\)",
        ),
        (ForgetsSpecs, r"ForgetsSpecs's parameters are \['gain', 'shift'\].*super\(\)\.parameter_specs\(\)"),
        (
            ForgetsBuffers,
            r"ForgetsBuffers\.buffers\(\) leaves out .*'inner\.block\.1\.running_mean'.*super\(\)\.buffers",
        ),
    ],
)
def test_a_container_that_forgets_super_is_refused_when_built(kind, message):
    inner = fnn.Residual([fnn.Dense(4, 4, activation="tanh"), fnn.BatchNorm1d(4)])
    with pytest.raises(ValueError, match=message):
        fnn.Sequential([kind(inner), fnn.Dense(4, 2)], input_shape=(4,), seed=0)


def test_a_container_whose_children_keep_stale_weights_is_refused():
    """A child that holds arrays from elsewhere (a copy's) when its container's bind forgot it."""
    model = post_norm_model()
    stale = copy.deepcopy(model.layers[0].inner)  # (free copies: arrays of their own)
    assert stale.block[0].weight is not None
    with pytest.raises(ValueError, match=r"ForgetsBind\.bind did not pass 'inner\.block\.0'.*another array.*stale"):
        fnn.Sequential([ForgetsBind(stale), fnn.Dense(4, 2)], input_shape=(4,), seed=0)


class _CountedNorm(fnn.BatchNorm1d):
    """A BatchNorm1d that counts the calls of its ``buffers()``."""

    def __init__(self, features):
        super().__init__(features)
        self.calls = [0]  # (mutated in place: setting an attribute of a built layer reads its buffers)

    def buffers(self):
        self.calls[0] += 1
        return super().buffers()


def test_nested_containers_are_checked_once_per_build_whatever_their_depth():
    """The check that every container's bind and buffers reached its sublayers walks the tree once:
    a layer 6 containers deep has its buffers read as often in a build as one in a single
    container (not once more per level above it), and once by the check itself."""

    def built(depth):
        leaf = layer = _CountedNorm(3)
        for i in range(depth):
            layer = fnn.Residual([layer]) if i % 2 else ParallelSum(layer, fnn.Dense(3, 3))
        model = fnn.Sequential([layer, fnn.Dense(3, 2)], input_shape=(3,), seed=0)
        return model, leaf

    (_, shallow_leaf), (deep, deep_leaf) = built(1), built(6)
    assert deep_leaf.calls == shallow_leaf.calls
    top = deep.layers[0]
    deep_leaf.calls[0] = 0
    check_sublayers_bound(top, top.parameter_views)
    assert deep_leaf.calls == [1]
    with pytest.raises(ValueError, match=r"ParallelSum\.bind did not pass"):  # (still refuses a stale child)
        check_sublayers_bound(top, {k: v.copy() for k, v in top.parameter_views.items()})
