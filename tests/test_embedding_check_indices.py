"""Embedding.check_indices: the fast path for ready int64 indices (one pass for the range, no
copies) gives what the full checks give, and everything else still takes the full checks."""

from __future__ import annotations

import numpy as np
import pytest

import fastnn as fnn


@pytest.fixture
def emb():
    model = fnn.Sequential([fnn.Embedding(10, 4), fnn.Flatten(), fnn.Dense(12, 2)], input_shape=(3,), seed=0)
    return model.layers[0]


def test_ready_indices_come_back_as_they_are(emb):
    x = np.array([[0, 5, 9], [1, 2, 3]], np.int64)
    assert emb.check_indices(x) is x


@pytest.mark.parametrize("bad", [-1, 10, 123])
def test_out_of_range_still_refused_with_the_index(emb, bad):
    x = np.array([[0, 5, 9], [1, bad, 3]], np.int64)
    with pytest.raises(ValueError, match=f"holds index {bad}, outside \\[0, 10\\)"):
        emb.check_indices(x)


def test_wrong_shape_still_refused(emb):
    with pytest.raises(ValueError, match="expects \\(samples, 3\\)"):
        emb.check_indices(np.zeros((2, 4), np.int64))


def test_other_layouts_and_dtypes_take_the_full_checks(emb):
    x = np.array([[0, 5, 9], [1, 2, 3]], np.int64)
    strided = np.zeros((2, 6), np.int64)[:, ::2]
    strided[...] = x
    for given in (x.astype(np.int32), x.astype(np.float64), strided, x.tolist(), x.astype(">i8")):
        got = emb.check_indices(given)
        assert got.dtype == np.int64 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, x)
    with pytest.raises(TypeError, match="bool array"):
        emb.check_indices(x.astype(bool))


def test_mask_padding_still_checks_the_sequences():
    emb = fnn.Embedding(10, 4, padding_idx=0, mask_padding=True)
    emb.build((3,), np.float32)
    x = np.array([[1, 2, 0], [1, 0, 0]], np.int64)
    assert emb.check_indices(x) is x
    with pytest.raises(ValueError, match="padding"):
        emb.check_indices(np.array([[1, 2, 0], [0, 0, 0]], np.int64))


def test_train_step_refuses_an_out_of_range_batch_and_keeps_the_model():
    model = fnn.Sequential([fnn.Embedding(10, 4), fnn.Flatten(), fnn.Dense(12, 2)], input_shape=(3,), seed=0)
    model.compile(loss="cross_entropy", optimizer="adam")
    x, y = np.array([[0, 5, 9], [1, 2, 3]], np.int64), np.array([0, 1], np.int64)
    for _ in range(3):
        model.train_step(x, y)
    before = model.params.copy()
    with pytest.raises(ValueError, match="holds index 10"):
        model.train_step(np.array([[0, 5, 10], [1, 2, 3]], np.int64), y)
    np.testing.assert_array_equal(model.params, before)
