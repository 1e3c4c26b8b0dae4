"""Every check of user input lives here: called once at the public boundary, never in kernels.

Messages follow scikit-learn's style: name the argument, say what was expected and what came,
and how to fix it.
"""
from __future__ import annotations

import difflib
import numbers
from collections.abc import Iterable

import numpy as np

from .kernels.checks import all_finite, labels_in_range


def suggest(name: str, choices: Iterable[str]) -> str:
    """' Did you mean 'x'?' for the closest of ``choices``, or ''."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


def check_choice(value, choices: Iterable[str], argument: str) -> str:
    """``value`` if it is one of ``choices`` (a str), else a ValueError listing them."""
    choices = list(choices)
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be a string, one of {choices}; got {type(value).__name__} {value!r}")
    if value not in choices:
        raise ValueError(f"Unknown {argument} {value!r}.{suggest(value, choices)} "
                         f"Expected one of: {', '.join(choices)}.")
    return value


def check_int(value, argument: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int within [minimum, maximum]; bools and fractional numbers are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and float(value).is_integer() and not isinstance(value, bool):
            value = int(value)
        else:
            raise TypeError(f"{argument} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{argument} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{argument} must be <= {maximum}, got {value}")
    return value


def check_float(value, argument: str, low: float | None = None, high: float | None = None,
                low_inclusive: bool = True, high_inclusive: bool = True) -> float:
    """``value`` as a finite float within the given bounds."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{argument} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{argument} must be a finite number, got {value}")
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if too_low or too_high:
        left = "[" if low_inclusive else "("
        right = "]" if high_inclusive else ")"
        interval = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise ValueError(f"{argument} must be in {interval}, got {value}")
    return value


def check_dtype(dtype) -> np.dtype:
    """np.float32 or np.float64 from a name or dtype-like."""
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return resolved


def _as_numeric_array(X, argument: str) -> np.ndarray:
    if isinstance(X, (str, bytes)):
        raise TypeError(f"{argument} must be a numeric array, got a string {X[:20]!r}")
    try:
        arr = np.asarray(X)
    except ValueError as exc:  # ragged nested lists
        raise ValueError(f"{argument} could not be converted to an array ({exc}); "
                         f"every row must have the same length") from None
    if arr.dtype == object:
        raise ValueError(f"{argument} is ragged or holds Python objects (dtype=object); "
                         f"pass a rectangular numeric array")
    if arr.dtype.kind in "USV":
        raise TypeError(f"{argument} must be numeric, got an array of strings (dtype={arr.dtype}); "
                        f"convert or encode the values first")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{argument} must be a real numeric array, got dtype={arr.dtype}")
    return arr


def check_array(X, argument: str = "X", dtype=np.float32, n_features: int | None = None,
                layer_name: str = "the first layer") -> np.ndarray:
    """X as a C-contiguous 2-D ``dtype`` array with finite values (converted, not refused)."""
    if (type(X) is np.ndarray and X.dtype == dtype and X.ndim == 2 and X.flags.c_contiguous and X.size
            and (n_features is None or X.shape[1] == n_features) and all_finite(X)):
        return X  # the fast path: already what the kernels take
    arr = _as_numeric_array(X, argument)
    if arr.ndim == 1:
        raise ValueError(f"Expected 2D array for {argument}, got 1D array of shape {arr.shape} instead. "
                         f"Reshape your data either using {argument}.reshape(-1, 1) if it has a single "
                         f"feature or {argument}.reshape(1, -1) if it contains a single sample.")
    if arr.ndim != 2:
        raise ValueError(f"Expected 2D array for {argument} (samples, features), got {arr.ndim}D array "
                         f"of shape {arr.shape}; flatten the trailing dimensions with "
                         f"{argument}.reshape(len({argument}), -1)")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{argument} is empty (shape {arr.shape}); at least one sample and one feature "
                         f"are required")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"{argument} has {arr.shape[1]} features per sample, but {layer_name} expects "
                         f"{n_features}; check the data or the model's input size")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    with np.errstate(over="ignore", invalid="ignore"):  # a sum of huge finite values may overflow: not an error
        total = arr.sum(dtype=np.float64)
    if not np.isfinite(total) and not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"{argument} contains NaN or infinity (first at row {bad[0]}, column {bad[1]}); "
                         f"remove or impute those values first")
    return arr


def check_labels(y, n_samples: int, n_classes: int, argument: str = "y") -> np.ndarray:
    """Integer class labels in [0, n_classes) as a contiguous int64 vector of length n_samples."""
    if (type(y) is np.ndarray and y.dtype == np.int64 and y.ndim == 1 and y.shape[0] == n_samples > 0
            and y.flags.c_contiguous and labels_in_range(y, n_classes)):
        return y
    arr = _as_numeric_array(y, argument)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{argument} must be a 1D array of integer class labels for cross_entropy, "
                         f"got shape {arr.shape}; for one-hot targets use {argument}.argmax(axis=1)")
    check_length(arr, n_samples, argument)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ValueError(f"{argument} contains NaN or infinity; class labels must be integers")
        if not np.all(arr == np.round(arr)):
            bad = arr[arr != np.round(arr)][0]
            raise ValueError(f"{argument} must hold integer class labels for cross_entropy, found "
                             f"{bad!r}; for regression targets use loss='mse'")
    labels = np.ascontiguousarray(arr, dtype=np.int64)
    low, high = labels.min(), labels.max()
    if low < 0 or high >= n_classes:
        bad = low if low < 0 else high
        raise ValueError(f"{argument} has label {bad}, outside [0, {n_classes}): the model's last layer "
                         f"has {n_classes} outputs; labels must be 0..{n_classes - 1} (remap them, or "
                         f"widen the last layer)")
    return labels


def check_targets(y, n_samples: int, n_outputs: int, dtype, argument: str = "y") -> np.ndarray:
    """Real-valued targets as a contiguous (n_samples, n_outputs) array of ``dtype``."""
    if (type(y) is np.ndarray and y.dtype == dtype and y.ndim == 2 and y.shape == (n_samples, n_outputs)
            and n_samples > 0 and y.flags.c_contiguous and all_finite(y)):
        return y
    arr = _as_numeric_array(y, argument)
    if arr.ndim == 1 and n_outputs == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or arr.shape[1] != n_outputs:
        raise ValueError(f"{argument} must have shape (n_samples, {n_outputs}) to match the model's "
                         f"{n_outputs} outputs, got shape {arr.shape}")
    check_length(arr, n_samples, argument)
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if not np.isfinite(arr).all():
        raise ValueError(f"{argument} contains NaN or infinity; remove or impute those targets first")
    return arr


def check_length(arr: np.ndarray, n_samples: int, argument: str) -> None:
    if arr.shape[0] != n_samples:
        raise ValueError(f"X and {argument} have different lengths: X has {n_samples} samples, "
                         f"{argument} has {arr.shape[0]}; pass one target per sample")


def check_input(X, argument: str, dtype, input_shape, layer_name: str = "the first layer") -> np.ndarray:
    """X as a C-contiguous ``dtype`` array of shape (samples, *input_shape) with finite values.

    One-axis inputs go through :func:`check_array` (sklearn's messages); for images and sequences
    the per-sample shape must match ``input_shape`` exactly."""
    if input_shape is None or len(input_shape) == 1:
        return check_array(X, argument, dtype, None if input_shape is None else input_shape[0], layer_name)
    shape = tuple(input_shape)
    if (type(X) is np.ndarray and X.dtype == dtype and X.shape[1:] == shape and X.flags.c_contiguous and X.size
            and all_finite(X.reshape(X.shape[0], -1))):
        return X
    arr = _as_numeric_array(X, argument)
    expected = "(samples, " + ", ".join(map(str, shape)) + ")"
    if arr.ndim == len(shape) and arr.shape == shape:
        raise ValueError(f"{argument} has the shape of one sample {arr.shape}; {layer_name} expects {expected}: "
                         f"add the sample axis with {argument}[None]")
    if arr.ndim != len(shape) + 1 or arr.shape[1:] != shape:
        raise ValueError(f"{argument} has shape {arr.shape}, but {layer_name} expects {expected}; reshape the data "
                         f"(e.g. {argument}.reshape(len({argument}), {', '.join(map(str, shape))})) or build the "
                         f"model with input_shape={arr.shape[1:]}")
    if arr.shape[0] == 0:
        raise ValueError(f"{argument} is empty (shape {arr.shape}); at least one sample is required")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"{argument} contains NaN or infinity (first at index {tuple(int(i) for i in bad)}); "
                         f"remove or impute those values first")
    return arr


def check_loss_output(output_shape, loss) -> None:
    """Losses compare (batch, outputs) arrays: refuse models whose per-sample output has more axes."""
    if output_shape is not None and len(output_shape) != 1:
        raise ValueError(f"the model's output has per-sample shape {tuple(output_shape)}, but the loss {loss!r} "
                         f"takes (batch, outputs): end the model with Flatten() (and a Dense layer) or a global "
                         f"pooling layer")


def check_state_array(expected: dict, name: str, value) -> None:
    """A saved array ``name`` must exist in the model (``expected``) with the same shape."""
    if name not in expected:
        raise ValueError(f"the saved state has an array {name!r} that this model does not have; was it saved "
                         f"from another architecture?")
    shape = np.shape(value)
    if tuple(shape) != tuple(expected[name].shape):
        raise ValueError(f"the saved array {name!r} has shape {tuple(shape)}, the model expects "
                         f"{tuple(expected[name].shape)}")
