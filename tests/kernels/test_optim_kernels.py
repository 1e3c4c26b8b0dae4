"""Optimizer update kernels, gradient norm and value clipping against float64 references."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from fastnn._config import PARALLEL_MIN_ELEMENTS
from fastnn.kernels import optim as K
from tests import _reference_optim as ref

DTYPES = [np.float32, np.float64]
TOL = {np.float32: {"rtol": 2e-4, "atol": 2e-5}, np.float64: {"rtol": 1e-11, "atol": 1e-12}}
# (size, n_decay): one element; odd sizes with a decayed prefix ending inside a chunk; and a buffer
# above the parallel threshold whose decay boundary falls inside a chunk, not at its edge.
SIZES = [(1, 1), (1001, 700), (PARALLEL_MIN_ELEMENTS + 4321, 3 * K.OPTIM_CHUNK + 77)]


def _kernel_runner(name, n, dtype, hyper):
    """A function ``step(p, g, t)`` that runs the kernel of ``name`` with buffers it owns."""

    def zeros():
        return np.zeros(n, dtype)

    empty = np.empty(0, dtype)
    h = hyper
    if name == "sgd":
        buf = zeros()
        return lambda p, g, t, nd: K.sgd_update(
            p, g, buf, h["lr"], h["momentum"], h["dampening"], h["weight_decay"], nd, h["nesterov"], 1.0, t == 1
        )
    if name == "rmsprop":
        sq, ga, buf = zeros(), zeros(), zeros()
        return lambda p, g, t, nd: K.rmsprop_update(
            p, g, sq, ga, buf, h["lr"], h["alpha"], h["eps"], h["weight_decay"], nd, h["momentum"], h["centered"], 1.0
        )
    if name == "adagrad":
        s = np.full(n, h["initial_accumulator_value"], dtype)
        return lambda p, g, t, nd: K.adagrad_update(
            p, g, s, h["lr"], h["lr_decay"], h["eps"], h["weight_decay"], nd, t, 1.0
        )
    if name in ("adam", "adamw"):
        m, v, vmax = zeros(), zeros(), zeros() if h["amsgrad"] else empty
        return lambda p, g, t, nd: K.adam_update(
            p,
            g,
            m,
            v,
            vmax,
            h["lr"],
            h["betas"][0],
            h["betas"][1],
            h["eps"],
            h["weight_decay"],
            nd,
            name == "adamw",
            h["amsgrad"],
            t,
            1.0,
        )
    m = zeros()
    return lambda p, g, t, nd: K.lion_update(p, g, m, h["lr"], h["betas"][0], h["betas"][1], h["weight_decay"], nd, 1.0)


# every kernel argument given, all floats as floats (one compiled signature per dtype)
KERNEL_CASES = {
    "sgd": {"lr": 0.05, "momentum": 0.9, "dampening": 0.0, "nesterov": True, "weight_decay": 0.1},
    "rmsprop": {"lr": 0.01, "alpha": 0.9, "eps": 1e-8, "momentum": 0.5, "centered": True, "weight_decay": 0.1},
    "adagrad": {"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1, "eps": 1e-10, "weight_decay": 0.1},
    "adam": {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-8, "weight_decay": 0.1, "amsgrad": True},
    "adamw": {"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.1, "amsgrad": False},
    "lion": {"lr": 0.01, "betas": (0.9, 0.99), "weight_decay": 0.1},
}


@pytest.mark.parametrize("size,n_decay", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(KERNEL_CASES))
def test_update_kernel_matches_reference(name, dtype, size, n_decay):
    hyper = KERNEL_CASES[name]
    rng = np.random.default_rng(size)
    p0 = rng.standard_normal(size)
    grads = [rng.standard_normal(size) for _ in range(5)]
    p = p0.astype(dtype)
    step = _kernel_runner(name, size, dtype, hyper)
    for t, g in enumerate(grads, start=1):
        step(p, g.astype(dtype), t, n_decay)
    assert p.dtype == dtype
    expected, _ = ref.optimizer_trajectory_reference(name, p0, grads, n_decay, hyper)
    np.testing.assert_allclose(p, expected[-1], **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_weight_decay_only_on_prefix(dtype):
    """With zero gradients only weight decay moves parameters: the tail [n_decay, n) stays put."""
    n, n_decay = 1001, 600
    p = np.linspace(-1, 1, n).astype(dtype)
    before = p.copy()
    K.sgd_update(p, np.zeros(n, dtype), np.empty(0, dtype), 0.5, 0.0, 0.0, 0.1, n_decay, False, 1.0, True)
    np.testing.assert_array_equal(p[n_decay:], before[n_decay:])
    np.testing.assert_allclose(p[:n_decay], before[:n_decay] * (1 - 0.5 * 0.1), rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_grad_scale_multiplies_gradients(dtype):
    n = 257
    rng = np.random.default_rng(3)
    g = rng.standard_normal(n).astype(dtype)
    p1, p2 = np.zeros(n, dtype), np.zeros(n, dtype)
    empty = np.empty(0, dtype)
    K.sgd_update(p1, g, empty, 1.0, 0.0, 0.0, 0.0, n, False, 0.25, True)
    K.sgd_update(p2, g * dtype(0.25), empty, 1.0, 0.0, 0.0, 0.0, n, False, 1.0, True)
    np.testing.assert_array_equal(p1, p2)


@pytest.mark.parametrize("size", [1, 1001, 5 * K.OPTIM_CHUNK + 13])
@pytest.mark.parametrize("dtype", DTYPES)
def test_grad_global_norm(dtype, size):
    g = np.random.default_rng(size).standard_normal(size).astype(dtype)
    partials = np.empty(K.norm_partials_size(size), np.float64)
    norm = K.grad_global_norm(g, partials)
    assert isinstance(norm, float)
    np.testing.assert_allclose(norm, ref.grad_norm_reference(g), rtol=1e-12 if dtype == np.float64 else 1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_by_value(dtype):
    g = np.random.default_rng(0).standard_normal(PARALLEL_MIN_ELEMENTS + 3).astype(dtype) * 2
    expected = np.clip(g.astype(np.float64), -0.5, 0.5)
    K.clip_by_value(g, 0.5)
    assert g.dtype == dtype
    np.testing.assert_array_equal(g, expected.astype(dtype))


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 Numba threads")
def test_kernels_identical_on_one_and_two_threads():
    n = 2 * PARALLEL_MIN_ELEMENTS + 999
    rng = np.random.default_rng(7)
    p0 = rng.standard_normal(n).astype(np.float32)
    grads = [rng.standard_normal(n).astype(np.float32) for _ in range(3)]
    results = []
    before = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            p = p0.copy()
            step = _kernel_runner("adam", n, np.float32, KERNEL_CASES["adam"])
            partials = np.empty(K.norm_partials_size(n), np.float64)
            norms = []
            for t, g in enumerate(grads, start=1):
                norms.append(K.grad_global_norm(g, partials))
                step(p, g, t, n // 3)
            results.append((p, norms))
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(results[0][0], results[1][0])
    assert results[0][1] == results[1][1]


@pytest.mark.parametrize("dtype", DTYPES)
def test_step_gate_arms_once_skips_non_finite_steps_and_clips_as_optimizer_step(dtype):
    """kernels.step_update.step_gate: the clipping scale Optimizer.step computes in Python, value
    clipping in place, no update (and grads untouched) when unarmed or not finite; disarms."""
    from fastnn.kernels import step_update as S

    grads = np.array([-3.0, 0.5, 2.0], dtype)
    whole, partials = np.array([[0, 3]], np.int64), np.zeros(K.norm_partials_size(3))
    scalars = np.full(S.N_SCALARS, np.nan)
    scalars[S.ARMED], scalars[S.CLIP_NORM] = 1.0, 0.7
    go, scale = S.step_gate(1.25, 4.0, scalars, True, grads, whole, partials)
    assert go and scale == min(1.0, 0.7 / (4.0 + 1e-6)) and scalars[S.ARMED] == 0.0
    assert scalars[S.USED_NORM] == 4.0  # the given norm: nothing frozen
    assert S.step_gate(1.25, 4.0, scalars, True, grads, whole, partials) == (False, 1.0)  # disarmed by the first call
    scalars[S.ARMED], scalars[S.CLIP_NORM], scalars[S.CLIP_VALUE] = 1.0, np.nan, 1.0
    for loss, norm in ((np.nan, 1.0), (1.0, np.inf)):
        scalars[S.ARMED] = 1.0
        assert S.step_gate(loss, norm, scalars, True, grads, whole, partials) == (False, 1.0)
    np.testing.assert_array_equal(grads, np.array([-3.0, 0.5, 2.0], dtype))  # not clipped: no update
    scalars[S.ARMED] = 1.0
    assert S.step_gate(1.0, 1.0, scalars, None, grads, whole, partials) == (
        True,
        1.0,
    )  # by_value None: no value clipping
    np.testing.assert_array_equal(grads, np.array([-3.0, 0.5, 2.0], dtype))
    scalars[S.ARMED] = 1.0
    assert S.step_gate(1.0, 1.0, scalars, True, grads, whole, partials) == (True, 1.0)
    np.testing.assert_array_equal(grads, np.array([-1.0, 0.5, 1.0], dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_step_gate_clips_the_trainable_ranges_only(dtype):
    """With frozen parameters (ranges not covering the buffer) clipping by value leaves the frozen
    gradients alone and clipping by norm uses the trainable ranges' norm, as Optimizer.step does."""
    from fastnn.kernels import step_update as S

    grads = np.array([-3.0, 0.5, 2.0, 4.0, -5.0], dtype)
    ranges, partials = np.array([[1, 3], [4, 5]], np.int64), np.zeros(K.norm_partials_size(5))
    scalars = np.full(S.N_SCALARS, np.nan)
    scalars[S.ARMED], scalars[S.CLIP_VALUE] = 1.0, 1.0
    assert S.step_gate(1.0, 99.0, scalars, True, grads, ranges, partials) == (True, 1.0)
    np.testing.assert_array_equal(grads, np.array([-3.0, 0.5, 1.0, 4.0, -1.0], dtype))
    scalars[S.ARMED], scalars[S.CLIP_VALUE], scalars[S.CLIP_NORM] = 1.0, np.nan, 0.7
    go, scale = S.step_gate(1.0, 99.0, scalars, True, grads, ranges, partials)
    expected = np.sqrt(0.5**2 + 1.0**2 + 1.0**2)  # 99, the whole buffer's norm, is not used
    assert go and scalars[S.USED_NORM] == pytest.approx(expected, rel=1e-12)
    assert scale == min(1.0, 0.7 / (scalars[S.USED_NORM] + 1e-6))
    assert S.range_of(ranges, 0, 2) == (1, 3, 1) and S.range_of(ranges, 1, 2) == (4, 5, 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_the_step_kernels_give_the_same_bits_on_any_split_into_ranges(name, dtype):
    """kernels.step_update: the update on ranges that split the buffer at odd offsets (each above
    the parallel threshold, and the serial twin's size) equals the update of the whole buffer bit
    for bit: elementwise, so a range-aware (or per-layer) update changes no result."""
    from fastnn.kernels import step_update as S

    n = 2 * PARALLEL_MIN_ELEMENTS + 1003
    rng = np.random.default_rng(5)
    grads = rng.standard_normal(n).astype(dtype)
    partials = np.zeros(K.norm_partials_size(n))
    results = []
    for ranges in ([[0, n]], [[0, PARALLEL_MIN_ELEMENTS + 7], [PARALLEL_MIN_ELEMENTS + 7, n - 999], [n - 999, n]]):
        params = np.linspace(-1.0, 1.0, n).astype(dtype)
        state = [np.full(n, 0.1, dtype), np.full(n, 0.01, dtype)]
        for step in (1, 2):
            scalars = np.array([1.0, 0.01, step, np.nan, 0.5, np.nan])  # armed, lr, step, clip by value
            r = np.array(ranges, np.int64)
            if name == "sgd":
                S.sgd_step(
                    1.0, 1.0, scalars, True, r, partials, params, grads.copy(), state[0], 0.9, 0.0, 1e-3, n // 2, True
                )
            else:
                S.adam_step(
                    1.0, 1.0, scalars, True, r, partials, params, grads.copy(), *state, state[0][:0], 0.9, 0.999, 1e-8,
                    1e-3, n // 2, True, False,
                )  # fmt: skip
        results.append((params, *state))
    for whole, split in zip(*results):
        np.testing.assert_array_equal(whole, split)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_every_rmsprop_branch_matches_reference(momentum, centered, dtype):
    """Each (centered, momentum) combination runs its own compiled loop (_rmsprop_range): plain,
    centered without momentum and momentum without centering are checked too, not only both."""
    hyper = {"lr": 0.01, "alpha": 0.9, "eps": 1e-8, "momentum": momentum, "centered": centered, "weight_decay": 0.1}
    size, n_decay = 1001, 700
    rng = np.random.default_rng(11)
    p0 = rng.standard_normal(size)
    grads = [rng.standard_normal(size) for _ in range(5)]
    p = p0.astype(dtype)
    step = _kernel_runner("rmsprop", size, dtype, hyper)
    for t, g in enumerate(grads, start=1):
        step(p, g.astype(dtype), t, n_decay)
    expected, _ = ref.optimizer_trajectory_reference("rmsprop", p0, grads, n_decay, hyper)
    np.testing.assert_allclose(p, expected[-1], **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_step_gate_never_scales_gradients_up(dtype):
    """Clipping by norm only shrinks: a norm below clip_norm gives the scale 1 (min(1, ...)), as
    torch.nn.utils.clip_grad_norm_ and Optimizer.step; the norm is still reported."""
    from fastnn.kernels import step_update as S

    grads = np.array([0.3, -0.4], dtype)
    whole, partials = np.array([[0, 2]], np.int64), np.zeros(K.norm_partials_size(2))
    scalars = np.full(S.N_SCALARS, np.nan)
    scalars[S.ARMED], scalars[S.CLIP_NORM] = 1.0, 10.0
    assert S.step_gate(1.0, 0.5, scalars, None, grads, whole, partials) == (True, 1.0)
    assert scalars[S.USED_NORM] == 0.5
    assert ref.clip_norm_scale_reference(0.5, 10.0) == 1.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_step_kernel_starts_the_momentum_buffer_at_step_one(dtype):
    """kernels.step_update.sgd_step: at step 1 the momentum buffer is the gradient itself (torch),
    not (1 - dampening) * gradient; visible only with dampening, so dampening is set here."""
    from fastnn.kernels import step_update as S

    hyper = {"lr": 0.1, "momentum": 0.9, "dampening": 0.5, "weight_decay": 0.1}
    n, n_decay = 37, 20
    rng = np.random.default_rng(2)
    p0 = rng.standard_normal(n)
    grads = [rng.standard_normal(n) for _ in range(3)]
    params, velocity = p0.astype(dtype), np.zeros(n, dtype)
    whole, partials = np.array([[0, n]], np.int64), np.zeros(K.norm_partials_size(n))
    for t, g in enumerate(grads, start=1):
        scalars = np.array([1.0, hyper["lr"], t, np.nan, np.nan, np.nan])  # armed, lr, step, no clipping
        assert S.sgd_step(
            1.0, 1.0, scalars, None, whole, partials, params, g.astype(dtype), velocity,
            hyper["momentum"], hyper["dampening"], hyper["weight_decay"], n_decay, False,
        )  # fmt: skip
    expected, _ = ref.optimizer_trajectory_reference("sgd", p0, grads, n_decay, hyper)
    np.testing.assert_allclose(params, expected[-1], **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_step_gate_clips_by_the_norm_of_a_leading_range_only(dtype):
    """Frozen trailing parameters (the one range [0, k), k < n: a frozen last layer) are not the
    whole buffer: clipping by norm uses the norm of [0, k), not the whole buffer's norm given."""
    from fastnn.kernels import step_update as S

    grads = np.array([3.0, -4.0, 100.0, 100.0], dtype)
    leading, partials = np.array([[0, 2]], np.int64), np.zeros(K.norm_partials_size(4))
    assert not S.covers_all(leading, grads.size) and S.covers_all(np.array([[0, 4]], np.int64), grads.size)
    scalars = np.full(S.N_SCALARS, np.nan)
    scalars[S.ARMED], scalars[S.CLIP_NORM] = 1.0, 1.0
    go, scale = S.step_gate(1.0, ref.grad_norm_reference(grads), scalars, None, grads, leading, partials)
    assert go and scalars[S.USED_NORM] == pytest.approx(5.0, rel=1e-12)
    assert scale == pytest.approx(ref.clip_norm_scale_reference(5.0, 1.0), rel=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("n", [1001, PARALLEL_MIN_ELEMENTS + 4321])  # serial and parallel paths
def test_adam_leaves_out_a_bias_correction_of_exactly_one_with_the_same_bits(n, amsgrad, dtype):
    """Once sqrt(1 - beta2**t) rounds to 1 in the dtype (float32 from t = 16,628 at beta2 0.999,
    float64 from 37,412), the kernel leaves out the division by it: the same bits as dividing by
    that 1 (the shared rule in a loop of the update's flags, given the 1); the step before still
    divides, and the same loop given its correction reproduces it (the loop is a faithful reference)."""
    import math

    from numba import njit

    from fastnn._config import JIT_UPDATE

    @njit(**dict(JIT_UPDATE, cache=False))
    def divided(p, g, m, v, vmax, step_size, omb1, b2, omb2, bc2, eps, zero, one, amsgrad):
        for i in range(p.size):
            p[i], m[i], v[i], w = K.adam_rule(
                p[i], g[i] * one, m[i], v[i], vmax[i] if amsgrad else v[i],
                step_size, omb1, b2, omb2, bc2, eps, zero, one, amsgrad,
            )  # fmt: skip
            if amsgrad:
                vmax[i] = w

    lr, beta1, beta2, eps = 1e-3, 0.9, 0.999, 1e-8
    first = {np.float32: 16_628, np.float64: 37_412}[dtype]
    assert dtype(math.sqrt(1.0 - beta2**first)) == 1.0 > dtype(math.sqrt(1.0 - beta2 ** (first - 1)))
    rng = np.random.default_rng(n)
    g = rng.standard_normal(n).astype(dtype) * dtype(10.0) ** rng.integers(-20, 20, n).astype(dtype)
    g[:6] = [np.nan, np.inf, -np.inf, 0.0, -0.0, np.finfo(dtype).max]
    state = [rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype) * dtype(0.1)]
    state += [np.abs(rng.standard_normal(n)).astype(dtype) * dtype(1e-3) for _ in range(2)]  # v, vmax
    for t in (first - 1, first, first + 1000):
        p, m, v, vmax = (a.copy() for a in state)
        want = [a.copy() for a in state]
        K.adam_update(p, g, m, v, vmax if amsgrad else v[:0], lr, beta1, beta2, eps, 0.0, 0, False, amsgrad, t, 1.0)
        divided(
            *want[:1], g, *want[1:], dtype(lr / (1.0 - beta1**t)), dtype(1.0 - beta1), dtype(beta2),
            dtype(1.0 - beta2), dtype(math.sqrt(1.0 - beta2**t)), dtype(eps), dtype(0.0), dtype(1.0), amsgrad,
        )  # fmt: skip
        for got, expected in zip((p, m, v, vmax) if amsgrad else (p, m, v), want):
            np.testing.assert_array_equal(got.view(f"u{got.itemsize}"), expected.view(f"u{got.itemsize}"))
