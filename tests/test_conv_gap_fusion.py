"""Conv -> GlobalAvgPool fused in training step plans (fastnn._conv_pool_fusion with
kernels.conv_gap): the same training as the layer-by-layer plan bit for bit, which pairs fuse,
threads, the one-call step, hooks, and a NaN step still refused by the step's finite check
(max-pool pairs too)."""

from __future__ import annotations

import numba
import numpy as np
import pytest

import fastnn as fnn
from fastnn import _config, _conv_pool_fusion, _fused
from tests.test_conv_pool_fusion import FUSED as MAXPOOL_FUSED
from tests.test_conv_pool_fusion import plan_kernels, train_plan

FUSED = {"conv2d_gap_forward", "conv2d_gap_backward"}


def _cnn1d():
    return [
        fnn.Conv1d(3, 4, 3, padding=1, activation="relu"),
        fnn.MaxPool1d(2),
        fnn.Conv1d(4, 6, 3, padding=1, activation="tanh"),
        fnn.GlobalAvgPool(),
        fnn.Dense(6, 3),
    ]


def _cnn2d():
    return [
        fnn.Conv2d(1, 4, 3, activation="sigmoid"),
        fnn.GlobalAvgPool(),
        fnn.Dense(4, 3),
    ]


def _identity():
    return [fnn.Conv1d(3, 5, 4, stride=2, dilation=2), fnn.GlobalAvgPool(), fnn.Dense(5, 3)]


CASES = {
    "1-D, odd length, after a fused max pool": (_cnn1d, (3, 21)),
    "2-D, odd sizes": (_cnn2d, (1, 9, 11)),
    "identity, stride, dilation": (_identity, (3, 17)),
}


@pytest.mark.parametrize("batch", [5, 1])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", list(CASES))
def test_fused_plan_trains_as_the_layer_by_layer_plan_bit_for_bit(case, dtype, batch):
    layers, shape = CASES[case]
    fused, loop = (
        train_plan(layers, shape, True, dtype, batch=batch),
        train_plan(layers, shape, False, dtype, batch=batch),
    )
    assert fused[2].count("conv2d_gap_forward") == 1 and fused[2].count("conv2d_gap_backward") == 1
    assert "global_avgpool_forward" not in fused[2] and "global_avgpool_backward" not in fused[2]
    assert not FUSED & set(loop[2]) and "global_avgpool_forward" in loop[2]
    np.testing.assert_array_equal(fused[0], loop[0])
    np.testing.assert_array_equal(fused[1], loop[1])


def test_pairs_that_do_not_fit_are_left_to_the_layers():
    """An activation whose derivative needs z, a pool after a non-convolution, and the switch."""
    unfused = [
        [fnn.Conv1d(3, 4, 3, activation="elu"), fnn.GlobalAvgPool()],
        [fnn.Conv1d(3, 4, 3), fnn.ReLU(), fnn.GlobalAvgPool()],
    ]
    for layers in unfused:
        model = fnn.Sequential(layers, input_shape=(3, 12), seed=0)
        model.compile(loss="mse", optimizer="sgd")
        assert not FUSED & set(plan_kernels(model, 4)), layers
    _conv_pool_fusion.GLOBAL_AVG_ENABLED = False
    try:
        names = train_plan(_cnn1d, (3, 21), True, "float32")[2]
    finally:
        _conv_pool_fusion.GLOBAL_AVG_ENABLED = True
    assert not FUSED & set(names) and "conv2d_maxpool_forward" in names


def test_the_one_call_step_equals_the_call_by_call_step_bit_for_bit(monkeypatch, tmp_path):
    """Both fusions in one generated step (conv + max pool, then conv + global average pool): one
    compile of the step serves both (compiling it is most of the test's time)."""
    monkeypatch.setattr(_config, "FUSE", "always")
    monkeypatch.setenv("FASTNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_fused, "_LOADED", {})
    one_call = train_plan(_cnn1d, (3, 21), True, "float32")
    monkeypatch.setattr(_config, "FUSE", "never")
    by_call = train_plan(_cnn1d, (3, 21), True, "float32")
    assert FUSED | MAXPOOL_FUSED <= set(one_call[2]) and one_call[3] and not by_call[3]
    for a, b in zip(one_call[:2], by_call[:2]):
        np.testing.assert_array_equal(a, b)


def test_same_bits_on_one_and_two_threads():
    """The 1-D CNN benchmark's second convolution (parallel planes)."""
    before = numba.get_num_threads()

    def layers():
        return [fnn.Conv1d(16, 32, 5, padding=2, activation="relu"), fnn.GlobalAvgPool(), fnn.Dense(32, 3)]

    try:
        numba.set_num_threads(1)
        one = train_plan(layers, (16, 128), True, "float32", steps=2, batch=16)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = train_plan(layers, (16, 128), True, "float32", steps=2, batch=16)
    finally:
        numba.set_num_threads(before)
    assert "conv2d_gap_backward" in one[2]
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])


def test_backward_hooks_keep_their_layer_order():
    seen: list = []
    model = fnn.Sequential(_cnn1d(), input_shape=(3, 21), seed=5, dtype="float64")
    model.compile(loss="cross_entropy", optimizer="sgd")
    model.set_backward_hook(lambda i: [(seen.append, (i,))])
    model.train_step(np.ones((4, 3, 21)), np.arange(4) % 3)
    assert seen == [4, 3, 2, 1, 0]
    names = plan_kernels(model, 4)
    first = names.index("conv2d_gap_backward")
    assert names[first + 1 : first + 3] == ["append", "append"]  # layers 3 and 2's hooks


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("layer", [0, 2])
def test_a_nan_in_a_fused_convolution_fails_the_step(fused, layer):
    """A NaN bias in the first (conv + max pool) or second (conv + global average pool)
    convolution (tanh passes NaN on): the step raises FloatingPointError and applies nothing,
    fused as layer by layer."""
    _conv_pool_fusion.ENABLED = fused
    try:
        model = fnn.Sequential(
            [
                fnn.Conv1d(3, 4, 3, padding=1, activation="tanh"),
                fnn.MaxPool1d(2),
                fnn.Conv1d(4, 6, 3, padding=1, activation="tanh"),
                fnn.GlobalAvgPool(),
                fnn.Dense(6, 3),
            ],
            input_shape=(3, 21),
            seed=5,
        )
        model.compile(loss="cross_entropy", optimizer="adam")
        x, y = np.ones((4, 3, 21), np.float32), np.arange(4) % 3
        model.train_step(x, y)
        names = set(plan_kernels(model, 4))
        model.layers[layer].bias[1] = np.nan
        before = model.params.copy()
        with pytest.raises(FloatingPointError, match="Training diverged"):
            model.train_step(x, y)
    finally:
        _conv_pool_fusion.ENABLED = True
    assert ({"conv2d_maxpool_forward", *FUSED} <= names) == fused
    np.testing.assert_array_equal(model.params, before)
