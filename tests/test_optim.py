"""Optimizer objects, table-driven over fastnn.optim.OPTIMIZERS: trajectories against float64
references and torch.optim, clipping, dtypes, thread counts, state round trips and bad input."""

from __future__ import annotations

import json

import numba
import numpy as np
import pytest

from fastnn import optim
from fastnn._config import PARALLEL_MIN_ELEMENTS
from tests import _reference_optim as ref

SIZE, N_DECAY, STEPS = 103, 71, 20

# name -> hyper-parameter sets: weight decay off and on, every option exercised once.
CASES = {
    "sgd": [
        {"lr": 0.05},
        {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.1},
        {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1},
    ],
    "rmsprop": [{"lr": 0.01}, {"lr": 0.01, "alpha": 0.9, "momentum": 0.5, "centered": True, "weight_decay": 0.1}],
    "adagrad": [
        {"lr": 0.1},
        {"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1, "eps": 1e-8, "weight_decay": 0.1},
    ],
    "adam": [{"lr": 0.01}, {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.1, "amsgrad": True}],
    "adamw": [{"lr": 0.01, "weight_decay": 0.0}, {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}],
    "lion": [{"lr": 0.01}, {"lr": 0.01, "betas": (0.95, 0.98), "weight_decay": 0.1}],
}
PARAMS = [pytest.param(name, hyper, id=f"{name}-{i}") for name, cases in CASES.items() for i, hyper in enumerate(cases)]
CLIPS = [{}, {"clip_norm": 2.0}, {"clip_value": 0.3}]


def test_every_optimizer_has_cases():
    assert set(CASES) == set(optim.OPTIMIZERS)


def _problem(size=SIZE, steps=STEPS, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(size), [rng.standard_normal(size) for _ in range(steps)]


def _run(opt, p0, grads, dtype=np.float64, n_decay=N_DECAY):
    """Bind ``opt`` to fresh buffers, feed ``grads``; returns the parameter path and grad norms."""
    params, g = p0.astype(dtype), np.zeros(p0.size, dtype)
    opt.bind(params, g, n_decay)
    path, norms = [], []
    for grad in grads:
        g[:] = grad
        opt.step()
        path.append(params.copy())
        norms.append(opt.last_grad_norm)
    return path, norms


@pytest.mark.parametrize("clip", CLIPS, ids=["noclip", "clipnorm", "clipvalue"])
@pytest.mark.parametrize("name,hyper", PARAMS)
def test_matches_reference(name, hyper, clip):
    p0, grads = _problem()
    path, norms = _run(optim.get(name, **hyper, **clip), p0, grads)
    expected, expected_norms = ref.optimizer_trajectory_reference(name, p0, grads, N_DECAY, hyper, **clip)
    np.testing.assert_allclose(np.array(path), np.array(expected), rtol=1e-10, atol=1e-12)
    if "clip_norm" in clip:
        np.testing.assert_allclose(norms, expected_norms, rtol=1e-12)
    else:
        assert norms == [None] * STEPS


TORCH_CLASSES = {"sgd": "SGD", "rmsprop": "RMSprop", "adagrad": "Adagrad", "adam": "Adam", "adamw": "AdamW"}


@pytest.mark.parametrize("clip", CLIPS, ids=["noclip", "clipnorm", "clipvalue"])
@pytest.mark.parametrize("name,hyper", PARAMS)
def test_matches_torch(name, hyper, clip):
    torch = pytest.importorskip("torch")
    if name not in TORCH_CLASSES:
        pytest.skip(f"torch.optim has no {name}")
    p0, grads = _problem()
    path, norms = _run(optim.get(name, **hyper, **clip), p0, grads)
    # two parameter groups: the decayed prefix and the undecayed tail
    head = torch.tensor(p0[:N_DECAY], dtype=torch.float64, requires_grad=True)
    tail = torch.tensor(p0[N_DECAY:], dtype=torch.float64, requires_grad=True)
    wd = hyper.get("weight_decay", optim.OPTIMIZERS[name]().get_config().get("weight_decay", 0.0))
    kwargs = {k: v for k, v in hyper.items() if k != "weight_decay"}
    opt = getattr(torch.optim, TORCH_CLASSES[name])(
        [{"params": [head], "weight_decay": wd}, {"params": [tail], "weight_decay": 0.0}], **kwargs
    )
    for step, grad in enumerate(grads):
        head.grad = torch.tensor(grad[:N_DECAY])
        tail.grad = torch.tensor(grad[N_DECAY:])
        if "clip_norm" in clip:
            norm = torch.nn.utils.clip_grad_norm_([head, tail], clip["clip_norm"])
            assert norms[step] == pytest.approx(float(norm), rel=1e-12)
        if "clip_value" in clip:
            torch.nn.utils.clip_grad_value_([head, tail], clip["clip_value"])
        opt.step()
        got = np.concatenate([head.detach().numpy(), tail.detach().numpy()])
        np.testing.assert_allclose(path[step], got, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(optim.OPTIMIZERS))
def test_float32_stays_float32(name):
    hyper = CASES[name][-1]
    p0, grads = _problem(steps=5)
    opt = optim.get(name, **hyper, clip_norm=5.0)
    path, _ = _run(opt, p0, grads, dtype=np.float32)
    assert path[-1].dtype == np.float32
    for key, value in opt.state_dict().items():
        if isinstance(value, np.ndarray):
            assert value.dtype == np.float32, key
    expected, _ = ref.optimizer_trajectory_reference(name, p0, grads, N_DECAY, hyper, clip_norm=5.0)
    np.testing.assert_allclose(path[-1], expected[-1], rtol=1e-4, atol=1e-4)


def test_tail_is_not_decayed():
    """n_decay < size: with zero gradients only the decayed prefix moves."""
    for name in ("sgd", "adamw", "lion"):
        p0 = np.linspace(0.5, 1.5, SIZE)
        path, _ = _run(optim.get(name, lr=0.1, weight_decay=0.5), p0, [np.zeros(SIZE)] * 3)
        np.testing.assert_array_equal(path[-1][N_DECAY:], p0[N_DECAY:])
        assert np.all(np.abs(path[-1][:N_DECAY]) < p0[:N_DECAY])


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 Numba threads")
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_bit_identical_on_one_and_two_threads(name):
    p0, grads = _problem(size=PARALLEL_MIN_ELEMENTS + 12345, steps=3)
    runs = []
    before = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            runs.append(
                _run(optim.get(name, **CASES[name][-1], clip_norm=10.0), p0, grads, dtype=np.float32, n_decay=50_000)
            )
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(runs[0][0][-1], runs[1][0][-1])
    assert runs[0][1] == runs[1][1]


@pytest.mark.parametrize("name", list(optim.OPTIMIZERS))
def test_state_dict_round_trip_continues_exactly(name):
    p0, grads = _problem()
    straight, _ = _run(optim.get(name, **CASES[name][-1]), p0, grads)
    first = optim.get(name, **CASES[name][-1])
    half, _ = _run(first, p0, grads[:10])
    state = first.state_dict()
    assert state["step_count"] == 10 and state["name"] == name
    resumed = optim.optimizer_from_config(json.loads(json.dumps(first.get_config())))
    resumed.load_state_dict(state)  # before bind: applied when bound
    rest, _ = _run(resumed, half[-1], grads[10:])
    assert resumed.step_count == STEPS
    np.testing.assert_array_equal(rest[-1], straight[-1])


def test_state_dict_is_a_copy_and_load_checks():
    opt = optim.Adam(lr=0.1)
    _run(opt, *_problem(steps=2))
    state = opt.state_dict()
    state["exp_avg"][:] = 123.0
    assert not np.any(opt.state_dict()["exp_avg"] == 123.0)
    with pytest.raises(ValueError, match="'adam'"):
        optim.SGD().load_state_dict(state)
    other = optim.Adam(lr=0.1)
    other.bind(np.zeros(5), np.zeros(5), 5)
    with pytest.raises(ValueError, match="shape"):
        other.load_state_dict(state)
    ams = optim.Adam(amsgrad=True)
    ams.bind(np.zeros(SIZE), np.zeros(SIZE), N_DECAY)
    with pytest.raises(ValueError, match="max_exp_avg_sq"):
        ams.load_state_dict(state)


def test_a_refused_state_changes_nothing():
    """load_state_dict checks every buffer and scalar before it copies any: a state refused for
    its last buffer, a bad step count or a missing key leaves the moments and the step count as
    they were (they were overwritten one by one up to the bad one, mixing two states)."""
    opt = optim.Adam(lr=0.1, amsgrad=True)
    _run(opt, *_problem(steps=3))
    before = opt.state_dict()
    saved = optim.Adam(lr=0.5)
    _run(saved, *_problem(steps=7, seed=1))
    without_max = saved.state_dict()  # no max_exp_avg_sq: refused on the last buffer
    bad_shape = dict(before, exp_avg=np.full(SIZE, 9.0), max_exp_avg_sq=np.zeros(SIZE - 1))
    bad_step = dict(before, exp_avg=np.full(SIZE, 9.0), step_count=-1)
    bad_kind = dict(before, exp_avg=np.full(SIZE, 9.0), max_exp_avg_sq=np.array(["x"] * SIZE))
    no_lr = {k: v for k, v in dict(before, exp_avg=np.full(SIZE, 9.0)).items() if k != "lr"}
    for state, match in [
        (without_max, "max_exp_avg_sq"),
        (bad_shape, "shape"),
        (bad_step, "step_count"),
        (bad_kind, "numbers"),
        (no_lr, "'lr'"),
    ]:
        with pytest.raises(ValueError, match=match):
            opt.load_state_dict(state)
        after = opt.state_dict()
        assert after.keys() == before.keys()
        for key, value in before.items():
            np.testing.assert_array_equal(after[key], value, err_msg=key)


def test_an_unbound_optimizer_checks_the_scalars_of_a_state_at_once():
    with pytest.raises(ValueError, match="step_count"):
        optim.SGD().load_state_dict({"name": "sgd", "lr": 0.1})


def test_a_state_loaded_before_bind_shows_at_once_and_a_later_lr_wins():
    """Loaded into an unbound optimizer, a state only took effect at bind: until then step_count,
    lr and state_dict() were the optimizer's own (as torch's are not), and bind then overwrote a
    learning rate set after the load."""
    saved = optim.Adam(lr=0.1)
    _run(saved, *_problem(steps=3))
    state = saved.state_dict()
    fresh = optim.Adam(lr=0.5)
    fresh.load_state_dict(state)
    assert (fresh.step_count, fresh.lr) == (3, 0.1)
    shown = fresh.state_dict()
    assert shown.keys() == state.keys()
    for key, value in state.items():
        np.testing.assert_array_equal(shown[key], value, err_msg=key)
    fresh.lr = 0.02  # after the load: this rate trains
    fresh.bind(np.zeros(SIZE), np.zeros(SIZE), N_DECAY)
    assert (fresh.step_count, fresh.lr) == (3, 0.02)
    np.testing.assert_array_equal(fresh.state_dict()["exp_avg_sq"], state["exp_avg_sq"])


@pytest.mark.parametrize("name", list(optim.OPTIMIZERS))
def test_config_round_trip(name):
    opt = optim.get(name, **CASES[name][-1], clip_norm=1.5)
    config = json.loads(json.dumps(opt.get_config()))
    assert config["name"] == name
    assert optim.optimizer_from_config(config).get_config() == config
    assert type(optim.OPTIMIZERS[name]()).__name__ in repr(opt)


def test_get():
    assert isinstance(optim.get("Adam"), optim.Adam)
    assert isinstance(optim.get("RMSProp", lr=0.1), optim.RMSProp)
    opt = optim.SGD()
    assert optim.get(opt) is opt
    with pytest.raises(ValueError, match="Did you mean 'adamw'"):
        optim.get("adamww")
    with pytest.raises(TypeError, match="instance"):
        optim.get(opt, lr=0.1)
    with pytest.raises(TypeError):
        optim.get(3)


def test_lr_is_settable_and_used():
    opt = optim.SGD(lr=1.0)
    p, g = np.ones(3), np.ones(3)
    opt.bind(p, g, 3)
    opt.lr = 0.25
    opt.step()
    np.testing.assert_array_equal(p, np.full(3, 0.75))
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="lr"):
            opt.lr = bad


BAD_HYPER = [
    ("sgd", {"lr": -0.1}, "lr"),
    ("sgd", {"lr": float("nan")}, "lr"),
    ("adam", {"lr": "fast"}, "lr"),
    ("sgd", {"momentum": -0.5}, "momentum"),
    ("sgd", {"nesterov": True}, "nesterov"),
    ("sgd", {"momentum": 0.9, "dampening": 0.5, "nesterov": True}, "nesterov"),
    ("sgd", {"weight_decay": -1.0}, "weight_decay"),
    ("sgd", {"clip_norm": 0.0}, "clip_norm"),
    ("sgd", {"clip_value": -1.0}, "clip_value"),
    ("sgd", {"clip_norm": 1.0, "clip_value": 1.0}, "clip_value"),
    ("rmsprop", {"alpha": 1.0}, "alpha"),
    ("rmsprop", {"eps": 0.0}, "eps"),
    ("rmsprop", {"centered": 1}, "centered"),
    ("adagrad", {"lr_decay": -0.1}, "lr_decay"),
    ("adagrad", {"initial_accumulator_value": -1.0}, "initial_accumulator_value"),
    ("adam", {"betas": (1.0, 0.999)}, "betas"),
    ("adam", {"betas": (0.9, -0.1)}, "betas"),
    ("adam", {"betas": 0.9}, "betas"),
    ("adam", {"eps": -1e-8}, "eps"),
    ("adamw", {"amsgrad": "yes"}, "amsgrad"),
    ("lion", {"betas": (0.9, float("nan"))}, "betas"),
]


@pytest.mark.parametrize("name,kwargs,argument", BAD_HYPER)
def test_bad_hyper_parameters_name_the_argument(name, kwargs, argument):
    with pytest.raises((ValueError, TypeError), match=argument):
        optim.get(name, **kwargs)


@pytest.mark.parametrize(
    "name,kwargs,argument", [case for case in BAD_HYPER if set(case[1]) <= {"clip_norm", "clip_value"}]
)
def test_setting_a_clip_after_construction_is_checked_as_the_constructor_checks(name, kwargs, argument):
    """clip_norm / clip_value set on a built optimizer: a negative clip_norm would reverse every
    update, both clips would leave clip_value silently unused; each refused as in the constructor."""
    opt = optim.get(name)
    with pytest.raises(ValueError, match=argument):
        for key, value in kwargs.items():
            setattr(opt, key, value)


def test_clipping_can_be_switched_from_norm_to_value_and_is_used():
    opt = optim.SGD(lr=1.0, clip_norm=1.0)
    p, g = np.zeros(2), np.array([3.0, -4.0])
    opt.bind(p, g, 2)
    opt.clip_norm = None
    opt.clip_value = 0.5
    opt.step()
    np.testing.assert_array_equal(p, [-0.5, 0.5])
    opt.clip_value = None
    opt.clip_norm = 2.5  # norm 5 -> scaled by 0.5
    g[...] = [3.0, -4.0]  # (clipping by value clipped the gradients in place)
    opt.step()
    np.testing.assert_allclose(p, [-2.0, 2.5], rtol=1e-6)


def test_a_gradient_within_clip_norm_is_left_as_it_is():
    """clip_grad_norm_ only scales down: a norm below clip_norm keeps the gradients."""
    opt = optim.SGD(lr=1.0, clip_norm=10.0)
    p, g = np.zeros(2), np.array([3.0, -4.0])
    opt.bind(p, g, 2)
    opt.step()
    np.testing.assert_array_equal(p, [-3.0, 4.0])
    assert opt.last_grad_norm == 5.0


def test_trainable_ranges_clip_by_their_own_norm_and_decay_only_the_decayed_prefix():
    """Stepping on ranges (frozen parameters between them): the clipping norm is that of the
    trainable gradients (not their sum of norms), and a range past ``n_decay`` gets no decay."""
    opt = optim.SGD(lr=1.0, weight_decay=0.5, clip_norm=2.5)
    p, g = np.ones(6), np.array([3.0, 0.0, 100.0, 100.0, 0.0, 4.0])
    opt.bind(p, g, 3)  # the first 3 decay; 2 and 3 are frozen
    opt.trainable = [(0, 2), (4, 6)]
    opt.step()
    scale = 2.5 / (5.0 + 1e-6)  # torch's clip_grad_norm_ of the trainable gradients (norm 5)
    np.testing.assert_allclose(p, [1 - (3 * scale + 0.5), 0.5, 1.0, 1.0, 1.0, 1 - 4 * scale], rtol=1e-14)
    assert opt.last_grad_norm == 5.0


def test_a_loaded_state_brings_its_learning_rate_and_step_count():
    """As torch's load_state_dict (param_groups' lr): a schedule's rate comes back with the state."""
    saved = optim.Adam(lr=0.1)
    saved.bind(np.zeros(3), np.ones(3), 3)
    saved.step()
    saved.lr = 0.02
    loaded = optim.Adam(lr=0.5)
    loaded.bind(np.zeros(3), np.zeros(3), 3)
    loaded.load_state_dict(saved.state_dict())
    assert loaded.lr == 0.02 and loaded.step_count == 1
    np.testing.assert_array_equal(loaded.state_dict()["exp_avg"], saved.state_dict()["exp_avg"])


def test_hyper_parameters_are_keyword_only():
    with pytest.raises(TypeError):
        optim.Adam(1e-3, (0.9, 0.999))


def test_bind_and_step_checks():
    opt = optim.SGD()
    with pytest.raises(RuntimeError, match="bind"):
        opt.step()
    with pytest.raises(ValueError, match="grads"):
        opt.bind(np.zeros(4), np.zeros(5), 0)
    with pytest.raises(ValueError, match="grads"):
        opt.bind(np.zeros(4), np.zeros(4, np.float32), 0)
    with pytest.raises(ValueError, match="params"):
        opt.bind(np.zeros((2, 2)), np.zeros((2, 2)), 0)
    with pytest.raises(ValueError, match="params"):
        opt.bind(np.zeros(4, np.int64), np.zeros(4, np.int64), 0)
    with pytest.raises(ValueError, match="n_decay"):
        opt.bind(np.zeros(4), np.zeros(4), 5)


def test_begin_fused_step_writes_the_step_kernels_scalars_at_their_positions():
    """begin_fused_step packs (armed, lr, step, clip_norm, clip_value) in one write: the positions
    must be the ones fastnn.kernels.step_update reads (NaN: no clipping)."""
    from fastnn.kernels import step_update

    assert (step_update.ARMED, step_update.LR, step_update.STEP) == (0, 1, 2)
    assert (step_update.CLIP_NORM, step_update.CLIP_VALUE) == (3, 4)
    params, grads = np.array([1.0, -2.0], np.float32), np.array([0.5, 0.5], np.float32)
    for clip in ({"clip_norm": 2.5}, {"clip_value": 0.75}, {}):
        opt = optim.SGD(lr=0.125, **clip)
        opt.bind(params, grads, n_decay=2)
        opt.step_count = 6
        kernel, args = opt.fused_step_call(0.25, 1.0)
        scalars = next(a for a in args if isinstance(a, np.ndarray) and a.shape == (step_update.N_SCALARS,))
        for update in (True, False):
            opt.begin_fused_step(update)
            expected = [float(update), 0.125, 7.0, clip.get("clip_norm", np.nan), clip.get("clip_value", np.nan)]
            np.testing.assert_array_equal(scalars[:5], expected)


def _copied(opt, how):
    import copy
    import pickle

    if how == "older pickle":  # a state whose scalars were written only by begin_fused_step: none yet
        state = opt.__getstate__()
        state["_step_scalars"] = np.zeros_like(state["_step_scalars"])
        twin = type(opt).__new__(type(opt))
        twin.__setstate__(state)
        return twin
    return copy.deepcopy(opt) if how == "deepcopy" else pickle.loads(pickle.dumps(opt))


_SCALAR_CHANGES = {
    "lr": lambda opt: setattr(opt, "lr", 0.375),
    "clip_norm": lambda opt: setattr(opt, "clip_norm", 0.5),
    "clip_norm off": lambda opt: setattr(opt, "clip_norm", None),
    "clip_value": lambda opt: (setattr(opt, "clip_norm", None), setattr(opt, "clip_value", 0.25)),
    "clip_value changed": lambda opt: (
        setattr(opt, "clip_norm", None),
        setattr(opt, "clip_value", 0.25),
        opt.begin_fused_step(True),
        setattr(opt, "clip_value", 0.125),
    ),
    "step_count": lambda opt: setattr(opt, "step_count", 41),
    "bind": lambda opt: opt.bind(np.zeros(3, np.float32), np.zeros(3, np.float32), n_decay=3),
    "rebind": lambda opt: opt.rebind(np.ones(2, np.float32), np.zeros(2, np.float32)),
    "load_state_dict": lambda opt: opt.load_state_dict({**opt.state_dict(), "lr": 0.0625, "step_count": 9}),
    "deepcopy": lambda opt: _copied(opt, "deepcopy"),
    "pickle": lambda opt: _copied(opt, "pickle"),
    "older pickle": lambda opt: _copied(opt, "older pickle"),
}


@pytest.mark.parametrize("name", ["sgd", "adam"])
@pytest.mark.parametrize("change", list(_SCALAR_CHANGES))
def test_arm_fused_step_writes_what_begin_fused_step_writes(name, change):
    """arm_fused_step writes the armed flag, the rate and the step number only: the clips were
    written into the scalars when they were set (or bound, or copied). After each change that
    can reach them, its scalars are begin_fused_step(True)'s, and a stale token writes nothing."""
    params, grads = np.array([1.0, -2.0], np.float32), np.array([0.5, 0.5], np.float32)
    opt = optim.optimizer_from_config({"name": name, "lr": 0.125, "clip_norm": 2.5})
    opt.bind(params, grads, n_decay=2)
    opt.step_count = 6
    opt.begin_fused_step(True)
    copies = ("deepcopy", "pickle", "older pickle")
    opt = _SCALAR_CHANGES[change](opt) if change in copies else opt
    if change not in copies:
        _SCALAR_CHANGES[change](opt)
    scalars = opt.fused_step_call(0.25, 1.0)[1][2]
    assert opt.arm_fused_step(opt.fused_step_token())
    armed = scalars.copy()
    opt.begin_fused_step(True)  # (after: what it writes would hide clips not written when set)
    np.testing.assert_array_equal(armed, scalars)
    old = opt.fused_step_token()
    opt.trainable = [(0, 1)]  # a new token
    scalars[:3] = -1.0
    assert not opt.arm_fused_step(old) and not opt.arm_fused_step(None)
    assert (scalars[:3] == -1.0).all()
    assert opt.arm_fused_step(opt.fused_step_token()) and scalars[0] == 1.0


def test_a_copied_optimizer_writes_its_own_step_scalars():
    """begin_fused_step writes through a view of the optimizer's scalars array: a pickled or deep
    copy gets a view of its own array, never of the original's."""
    import copy
    import pickle

    params, grads = np.array([1.0, -2.0], np.float32), np.array([0.5, 0.5], np.float32)
    opt = optim.SGD(lr=0.1, momentum=0.9)
    opt.bind(params, grads, n_decay=2)
    opt.begin_fused_step(True)
    for twin in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        twin.lr = 0.5
        twin.step_count = 7
        twin.begin_fused_step(False)
        kernel, args = twin.fused_step_call(0.25, 1.0)
        assert kernel(*args) is False  # not armed: the copy's own scalars were read
        kernel, args = opt.fused_step_call(0.25, 1.0)
        assert kernel(*args) is True  # the original's stay armed
        opt.begin_fused_step(True)


def test_rebind_with_a_new_decay_prefix_keeps_the_state():
    """rebind(..., n_decay=k): the moments and step count go on (what a model recompiled with
    another decay_bias_and_norm needs: bind would zero them), the decay covers [0, k) from then on,
    and step plans holding the old prefix rebuild."""
    p0, grads = _problem(steps=6)
    hyper = {"lr": 0.01, "weight_decay": 0.1}
    straight = optim.AdamW(**hyper)
    params, g = p0.copy(), np.zeros(SIZE)
    straight.bind(params, g, N_DECAY)
    for grad in grads[:3]:
        g[:] = grad
        straight.step()
    token = straight.fused_step_token()
    straight.rebind(params, g, n_decay=SIZE)
    assert straight.step_count == 3 and straight.fused_step_token() is not token
    for grad in grads[3:]:
        g[:] = grad
        straight.step()
    state: dict = {}
    want = p0.copy()
    for t, grad in enumerate(grads, start=1):
        want = ref.adamw_step_reference(want, grad, state, t, N_DECAY if t <= 3 else SIZE, **hyper)
    np.testing.assert_allclose(params, want, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="n_decay"):
        straight.rebind(params, g, n_decay=SIZE + 1)
