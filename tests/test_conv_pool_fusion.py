"""Conv -> MaxPool fused in training step plans (fastnn._conv_pool_fusion): the same training as
the layer-by-layer plan bit for bit, which pairs fuse, hooks and threads (the one-call step of both
fusions: tests/test_conv_gap_fusion.py)."""

from __future__ import annotations

import numba
import numpy as np
import pytest

import fastnn as fnn
from fastnn import _conv_pool_fusion

FUSED = {"conv2d_maxpool_forward", "conv2d_maxpool_backward"}


def plan_kernels(model, batch):
    return [fn.__name__ for fn, _ in model.step_plan(batch).calls]


def train_plan(layers, shape, fused, dtype="float64", steps=3, batch=5, seed=0):
    """(losses, params, kernel names, whether the step ran as one call) of ``steps`` Adam steps."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((steps * batch, *shape)).astype(dtype)
    y = np.arange(steps * batch) % 3
    _conv_pool_fusion.ENABLED = fused
    try:
        model = fnn.Sequential(layers(), input_shape=shape, seed=5, dtype=dtype)
        model.compile(loss="cross_entropy", optimizer=fnn.optim.Adam(lr=0.01))
        losses = [
            model.train_step(X[i * batch : (i + 1) * batch], y[i * batch : (i + 1) * batch]) for i in range(steps)
        ]
        names = plan_kernels(model, batch)
        one_call = bool(model.step_plan(batch).run.fused)
    finally:
        _conv_pool_fusion.ENABLED = True
    return np.array(losses), model.params.copy(), names, one_call


def _cnn1d():
    return [
        fnn.Conv1d(3, 4, 3, padding=1, activation="relu"),
        fnn.MaxPool1d(2),
        fnn.Conv1d(4, 6, 3, padding=1, activation="tanh"),
        fnn.MaxPool1d(2),
        fnn.Flatten(),
        fnn.Dense(6 * 5, 3),
    ]


def _lenet_like():
    return [
        fnn.Conv2d(1, 4, 3, activation="relu"),
        fnn.MaxPool2d(2),
        fnn.Conv2d(4, 6, 3, padding=1, activation="sigmoid"),
        fnn.MaxPool2d(2),
        fnn.Flatten(),
        fnn.Dense(6 * 2 * 2, 3),
    ]


CASES = {"1-D, odd length": (_cnn1d, (3, 21)), "2-D, odd sizes": (_lenet_like, (1, 11, 11))}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", list(CASES))
def test_fused_plan_trains_as_the_layer_by_layer_plan_bit_for_bit(case, dtype):
    layers, shape = CASES[case]
    fused, loop = train_plan(layers, shape, True, dtype), train_plan(layers, shape, False, dtype)
    assert fused[2].count("conv2d_maxpool_forward") == 2 and fused[2].count("conv2d_maxpool_backward") == 2
    assert not FUSED & set(loop[2]) and "maxpool2d_forward" not in fused[2]
    np.testing.assert_array_equal(fused[0], loop[0])
    np.testing.assert_array_equal(fused[1], loop[1])


def test_pairs_that_do_not_fit_are_left_to_the_layers():
    """Overlapping or 3-wide windows, padding, average pooling, an activation whose derivative
    needs z, and a pool after a non-convolution record other calls."""
    unfused = [
        [fnn.Conv1d(3, 4, 3, activation="relu"), fnn.MaxPool1d(2, stride=1)],
        [fnn.Conv1d(3, 4, 3, activation="relu"), fnn.MaxPool1d(3)],
        [fnn.Conv1d(3, 4, 3, activation="relu"), fnn.MaxPool1d(2, padding=1)],
        [fnn.Conv1d(3, 4, 3, activation="relu"), fnn.AvgPool1d(2)],
        [fnn.Conv1d(3, 4, 3, activation="elu"), fnn.MaxPool1d(2)],
        [fnn.Conv1d(3, 4, 3), fnn.ReLU(), fnn.MaxPool1d(2)],
        [fnn.Conv2d(3, 4, 3, activation="relu"), fnn.MaxPool2d((2, 3))],
    ]
    for layers in unfused:
        shape = (3, 9, 9) if isinstance(layers[0], fnn.Conv2d) else (3, 12)
        model = fnn.Sequential([*layers, fnn.Flatten()], input_shape=shape, seed=0)
        model.compile(loss="mse", optimizer="sgd")
        assert not FUSED & set(plan_kernels(model, 4)), layers
    assert _conv_pool_fusion.find_pairs([[], []]) == []


def test_same_bits_on_one_and_two_threads():
    before = numba.get_num_threads()
    layers = lambda: [fnn.Conv1d(16, 32, 5, padding=2, activation="relu"), fnn.MaxPool1d(2), fnn.Flatten()]  # noqa: E731
    try:
        numba.set_num_threads(1)
        one = train_plan(lambda: [*layers(), fnn.Dense(32 * 64, 3)], (16, 128), True, "float32", steps=2, batch=16)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = train_plan(lambda: [*layers(), fnn.Dense(32 * 64, 3)], (16, 128), True, "float32", steps=2, batch=16)
    finally:
        numba.set_num_threads(before)
    assert "conv2d_maxpool_backward" in one[2]
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])


def test_backward_hooks_keep_their_layer_order():
    """fastnn.distributed's hook (calls after each layer's backward) still runs once per layer, in
    the layer-by-layer order, after the pair's fused backward."""
    seen: list = []
    model = fnn.Sequential(_cnn1d(), input_shape=(3, 21), seed=5, dtype="float64")
    model.compile(loss="cross_entropy", optimizer="sgd")
    model.set_backward_hook(lambda i: [(seen.append, (i,))])
    model.train_step(np.ones((4, 3, 21)), np.arange(4) % 3)
    assert seen == [5, 4, 3, 2, 1, 0]
    names = plan_kernels(model, 4)
    first = names.index("conv2d_maxpool_backward")
    assert names[first + 1 : first + 3] == ["append", "append"]  # layers 3 and 2's hooks
