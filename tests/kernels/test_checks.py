"""kernels/checks.py: the input checks of the training fast path against NumPy's ``isfinite``."""

import numpy as np
import pytest

from fastnn.kernels.checks import all_finite, all_finite_pair, loss_if_finite


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape_x, shape_y", [((1, 1), (1, 1)), ((7, 3), (7, 5)), ((33, 2), (33, 1))])
@pytest.mark.parametrize("bad", [None, np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["x", "y"])
def test_all_finite_pair_is_numpys_isfinite_of_both(rng, dtype, shape_x, shape_y, bad, where):
    x = rng.standard_normal(shape_x).astype(dtype)
    y = rng.standard_normal(shape_y).astype(dtype)
    if bad is not None:
        target = x if where == "x" else y
        target[-1, -1] = bad  # the last element: a check that stops early would miss it
    expected = bool(np.isfinite(x).all() and np.isfinite(y).all())
    assert all_finite_pair(x, y) is expected
    assert all_finite_pair(x, y) == (all_finite(x) and all_finite(y))
    big = np.finfo(dtype).max
    assert all_finite_pair(np.full(shape_x, big, dtype), np.full(shape_y, -big, dtype))  # the largest values are finite
    loss = 0.125
    gated = loss_if_finite(x, y, loss)
    assert gated == loss if expected else np.isnan(gated)  # the loss itself, or NaN: a step's update gate
