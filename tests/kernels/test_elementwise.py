"""The residual sum kernel against its float64 reference, finite differences and aliasing."""

from __future__ import annotations

import numpy as np
import pytest

from fastnn._config import PARALLEL_MIN_ELEMENTS
from fastnn.kernels.elementwise import add
from tests import reference as ref
from tests._gradcheck import numeric_gradients

SHAPES = [(1, 1), (1, 37), (7, 13), (129, 515)]  # the last takes the parallel path


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_add_matches_reference(dtype, shape, rng):
    a = rng.standard_normal(shape).astype(dtype)
    b = rng.standard_normal(shape).astype(dtype)
    out = np.full(shape, np.nan, dtype)
    add(a, b, out)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, ref.add(a, b), rtol=1e-6 if dtype == np.float32 else 1e-15)
    assert (shape[0] * shape[1] >= PARALLEL_MIN_ELEMENTS) == (shape == (129, 515))


@pytest.mark.parametrize("shape", [(3, 5), (129, 515)])
def test_add_in_place_on_either_operand(shape, rng):
    a = rng.standard_normal(shape)
    b = rng.standard_normal(shape)
    expected = a + b
    a2, b2 = a.copy(), b.copy()
    add(a2, b, a2)
    add(a, b2, b2)
    np.testing.assert_array_equal(a2, expected)
    np.testing.assert_array_equal(b2, expected)


def test_add_gradient_by_finite_differences(rng):
    """d sum(w * (a + b)) / da = d / db = w: the backward pass of Residual passes the gradient on."""
    a, b, w = (rng.standard_normal((3, 4)) for _ in range(3))

    def objective(a, b):
        out = np.empty_like(a)
        add(a, b, out)
        return float((w * out).sum())

    grad_a, grad_b = numeric_gradients(objective, [a, b])
    np.testing.assert_allclose(grad_a, w, atol=1e-8)
    np.testing.assert_allclose(grad_b, w, atol=1e-8)
