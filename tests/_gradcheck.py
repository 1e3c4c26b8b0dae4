"""Central finite differences for gradient checks in tests: the one loop, and its use on models."""

import numpy as np


def numeric_gradients_inplace(objective, arrays, h=1e-6):
    """d objective() / d each array by central differences, perturbing the arrays in place (each
    entry is restored after its two probes). Use for arrays the objective reads through views,
    such as a model's flat parameter buffer. Returns arrays of the arrays' shapes and dtypes."""
    grads = []
    for arr in arrays:
        numeric = np.empty_like(arr)
        for idx in np.ndindex(arr.shape):
            keep = arr[idx]
            arr[idx] = keep + h
            up = objective()
            arr[idx] = keep - h
            down = objective()
            arr[idx] = keep
            numeric[idx] = (up - down) / (2 * h)
        grads.append(numeric)
    return grads


def numeric_gradients(objective, params, h=1e-6):
    """d objective(*params) / d each param, by central differences; the objective gets fresh
    copies of the params at every probe (it may overwrite them)."""
    work = [np.array(p, copy=True) for p in params]
    return numeric_gradients_inplace(lambda: objective(*[w.copy() for w in work]), work, h)


def check_model_gradients(model, X, y=None, *, training=True, h=1e-6, rtol=1e-5, atol=1e-7, seed=0):
    """Assert that a float64 model's input and parameter gradients (model.forward, then
    model.backward) match central differences of a scalar of its output: the compiled loss on
    (X, y) when ``y`` is given, else ``sum(forward(X) * G)`` for a fixed random ``G``. Both the
    analytic and the numeric passes run in mode ``training``."""
    if y is None:
        X = np.array(model.check_data(X), copy=True)
        weights = np.random.default_rng(seed).standard_normal((X.shape[0], *model.output_shape))

        def value(out):
            return float(np.sum(out * weights))

        def gradient(out):
            return weights
    else:
        X, y = model.check_data(X, y)
        X = np.array(X, copy=True)

        def value(out):
            return model.loss.forward_backward(out, y, np.empty((1, 1)), False)

        def gradient(out):
            grad = np.empty_like(out)
            model.loss.forward_backward(out, y, grad, True)
            return grad

    out = model.forward(X, training)
    grad_x = model.backward(gradient(out))
    analytic = model.grads.copy()
    float_input = X.dtype.kind == "f"  # integer inputs (indices) have no gradient
    arrays = [model.params, X] if float_input else [model.params]
    numeric = numeric_gradients_inplace(lambda: value(model.forward(X, training)), arrays, h)
    np.testing.assert_allclose(analytic, numeric[0], rtol=rtol, atol=atol, err_msg="parameter gradients")
    if float_input:
        np.testing.assert_allclose(grad_x, numeric[1], rtol=rtol, atol=atol, err_msg="input gradient")
    else:
        assert grad_x is None
