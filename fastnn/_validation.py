"""Every check of user input lives here: called once at the public boundary, never in kernels.

Messages follow scikit-learn's style: name the argument, say what was expected and what came,
and how to fix it.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
from collections.abc import Iterable
from typing import NamedTuple

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
        raise ValueError(
            f"Unknown {argument} {value!r}.{suggest(value, choices)} Expected one of: {', '.join(choices)}."
        )
    return value


def check_int(value, argument: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int within [minimum, maximum]; bools and fractional numbers are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and float(value).is_integer() and not isinstance(value, bool):
            value = int(float(value))
        else:
            raise TypeError(f"{argument} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{argument} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{argument} must be <= {maximum}, got {value}")
    return value


def check_path(path, argument: str = "path") -> str:
    """``path`` (a str, bytes or os.PathLike) as a str; a TypeError naming ``argument`` otherwise."""
    if isinstance(path, (str, bytes, os.PathLike)):
        return os.fsdecode(os.fspath(path))
    raise TypeError(f"{argument} must be a file path (a str or a pathlib.Path), got {type(path).__name__} {path!r}")


def check_bool(value, argument: str) -> bool:
    """``value`` as a bool when it is one (NumPy's too); TypeError naming ``argument`` otherwise."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{argument} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def check_float(
    value,
    argument: str,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
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


def _is_pandas(X) -> bool:
    return type(X).__module__.partition(".")[0] == "pandas"


def _pandas_column(col, label: str, non_numeric: list, missing: list):
    """One pandas column (Series) as a 1-D numeric ndarray, or None after noting why it is not one."""
    dtype = col.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
        return col.to_numpy()
    kind = getattr(dtype, "kind", "O")
    if kind in "biuf" and str(dtype) != "category":  # nullable Int64/Float64/boolean: numeric unless NA
        n_missing = int(col.isna().sum())
        if n_missing:
            missing.append(f"{label} ({dtype}, {n_missing} missing)")
            return None
        return col.to_numpy(dtype=getattr(dtype, "numpy_dtype", getattr(dtype, "subtype", None)))  # Sparse: subtype
    if kind == "O" and str(dtype) not in ("category", "string", "str"):  # objects may be plain numbers
        values = np.asarray(col.tolist())
        if values.dtype.kind in "biuf":
            return values
    non_numeric.append(f"{label} ({dtype})")
    return None


def _from_pandas(X, argument: str) -> np.ndarray:
    """A pandas DataFrame or Series as a numeric ndarray; strings, categories and missing values
    (pd.NA) are refused naming the columns, their dtypes and the fix."""
    frame = hasattr(X, "columns")
    if frame and all(isinstance(d, np.dtype) and d.kind in "biuf" for d in X.dtypes):
        return np.asarray(X)
    if frame:
        parts = [(X.iloc[:, j], f"column {name!r}") for j, name in enumerate(X.columns)]
    else:
        name = getattr(X, "name", None)
        parts = [(X if hasattr(X, "isna") else X.to_series(), type(X).__name__ + (f" {name!r}" if name else ""))]
    non_numeric: list[str] = []
    missing: list[str] = []
    arrays = [_pandas_column(col, label, non_numeric, missing) for col, label in parts]
    if non_numeric:
        encode = (
            f"pd.get_dummies({argument}) for one-hot columns, {argument}[name].astype('category')"
            f".cat.codes for integer codes"
            if frame
            else f"{argument}.astype('category').cat.codes for integer class codes"
        )
        raise TypeError(
            f"{argument} must be numeric, but has non-numeric data: {', '.join(non_numeric)}; "
            f"encode it as numbers first ({encode}, or .astype(float) for numbers stored as "
            f"text)"
        )
    if missing:
        raise ValueError(
            f"{argument} has missing values (pd.NA) in {', '.join(missing)}; fill or drop them "
            f"first ({argument}.fillna(value) or {argument}.dropna()), or convert with "
            f"{argument}.to_numpy(dtype=float, na_value=np.nan) and impute"
        )
    return np.column_stack(arrays) if frame else arrays[0]


def as_numeric_array(X, argument: str) -> np.ndarray:
    """``X`` (array-like, pandas too) as a NumPy array of numbers, any shape and numeric dtype;
    a string, a ragged list or Python objects are refused naming ``argument``."""
    if isinstance(X, (str, bytes)):
        raise TypeError(f"{argument} must be a numeric array, got a string {X[:20]!r}")
    if X is None:
        raise TypeError(f"{argument} must be a numeric array, got None")
    if _is_pandas(X) and hasattr(X, "dtype" if not hasattr(X, "columns") else "dtypes"):
        return _from_pandas(X, argument)
    try:
        arr = np.asarray(X)
    except ValueError as exc:  # ragged nested lists
        raise ValueError(
            f"{argument} could not be converted to an array ({exc}); every row must have the same length"
        ) from None
    if arr.dtype == object:
        raise ValueError(
            f"{argument} is ragged or holds Python objects (dtype=object); pass a rectangular numeric array"
        )
    if arr.dtype.kind in "USV":
        raise TypeError(
            f"{argument} must be numeric, got an array of strings (dtype={arr.dtype}); "
            f"convert or encode the values first"
        )
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{argument} must be a real numeric array, got dtype={arr.dtype}")
    return arr


def _number(value) -> str:
    """A label or value for a message: integers as integers, huge or fractional floats as %g."""
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, float) and value.is_integer() and abs(value) < 2.0**53:
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _as_finite(arr: np.ndarray, dtype, argument: str) -> np.ndarray:
    """``arr`` as a C-contiguous ``dtype`` array; NaN/inf, and finite values that overflow ``dtype``,
    are refused naming the first position."""
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, as a ValueError
        out = np.ascontiguousarray(arr, dtype=dtype)
        total = out.sum(dtype=np.float64)  # a sum of huge finite values may overflow: not an error
    if np.isfinite(total) or np.isfinite(out).all():
        return out
    where = tuple(np.argwhere(~np.isfinite(out))[0])
    at = f"row {where[0]}, column {where[1]}" if out.ndim == 2 else f"index {where[0]}"
    value = arr[where]
    if np.isfinite(value):
        dtype = np.dtype(dtype)
        raise ValueError(
            f"{argument} holds {_number(value)} (first at {at}), beyond the range of {dtype.name} "
            f"(largest {np.finfo(dtype).max:.4g}): it overflows to infinity when converted to "
            f"the model's {dtype.name}; rescale the data (e.g. fastnn.data.standardize) or build "
            f"the model with dtype='float64'"
        )
    raise ValueError(f"{argument} contains NaN or infinity (first at {at}); remove or impute those values first")


def ready_rows(X, dtype, sample_shape: tuple[int, ...] | None) -> bool:
    """Whether ``X`` is already what the kernels take, so its checks can stop here: an ndarray of
    ``dtype``, C-contiguous, of samples of ``sample_shape`` (None: one feature axis of any
    length), non-empty, all finite. Cheapest test first; the fast lane of :func:`check_input`,
    of ``Sequential``'s input check and of small predictions (``fastnn._inference``)."""
    return (
        type(X) is np.ndarray
        and X.dtype == dtype
        and (X.ndim == 2 if sample_shape is None else X.shape[1:] == sample_shape)
        and X.flags.c_contiguous
        and X.size > 0
        and all_finite(X if X.ndim == 2 else X.reshape(X.shape[0], -1))
    )


def check_array(
    X, argument: str = "X", dtype=np.float32, n_features: int | None = None, layer_name: str = "the first layer"
) -> np.ndarray:
    """X as a C-contiguous 2-D ``dtype`` array with finite values (converted, not refused)."""
    if ready_rows(X, dtype, None if n_features is None else (n_features,)):
        return X  # the fast path: already what the kernels take
    arr = as_numeric_array(X, argument)
    if arr.ndim == 1:
        raise ValueError(
            f"Expected 2D array for {argument}, got 1D array of shape {arr.shape} instead. "
            f"Reshape your data either using {argument}.reshape(-1, 1) if it has a single "
            f"feature or {argument}.reshape(1, -1) if it contains a single sample."
        )
    if arr.ndim != 2:
        raise ValueError(
            f"Expected 2D array for {argument} (samples, features), got {arr.ndim}D array "
            f"of shape {arr.shape}; flatten the trailing dimensions with "
            f"{argument}.reshape(len({argument}), -1)"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{argument} is empty (shape {arr.shape}); at least one sample and one feature are required")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(
            f"{argument} has {arr.shape[1]} features per sample, but {layer_name} expects "
            f"{n_features}; check the data or the model's input size"
        )
    return _as_finite(arr, dtype, argument)


def check_labels(y, n_samples: int, n_classes: int, argument: str = "y", ignore_index: int | None = None) -> np.ndarray:
    """Integer class labels in [0, n_classes) as a contiguous int64 vector of length n_samples;
    with ``ignore_index`` (``CrossEntropy``'s), labels equal to it are accepted too (left out)."""
    if (
        type(y) is np.ndarray
        and y.dtype == np.int64
        and y.ndim == 1
        and y.shape[0] == n_samples > 0
        and y.flags.c_contiguous
        and labels_in_range(y, n_classes)
    ):
        return y
    arr = as_numeric_array(y, argument)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(
            f"{argument} must be a 1D array of integer class labels for cross_entropy, "
            f"got shape {arr.shape}; for one-hot targets use {argument}.argmax(axis=1)"
        )
    check_length(arr, n_samples, argument)
    ignored = f" or the ignored label {ignore_index}" if ignore_index is not None else ""
    check_label_values(
        arr if ignore_index is None else arr[arr != ignore_index],
        n_classes,
        argument,
        f"the model's last layer has {n_classes} outputs; labels must be 0..{n_classes - 1}{ignored} (remap "
        f"them, or widen the last layer)",
        "for regression targets use loss='mse'",
    )
    return np.ascontiguousarray(arr, dtype=np.int64)


def check_label_values(labels: np.ndarray, n_classes: int, argument: str, fix: str, float_fix: str) -> None:
    """The one check of class labels' values, for the targets a model is given (:func:`check_labels`)
    and those of a direct loss call (:func:`check_loss_arrays`, weighted targets' float labels too):
    finite, integers, in [0, n_classes). ``fix`` ends the range message, ``float_fix`` the others."""
    if labels.size == 0:
        return
    if labels.dtype.kind == "f":
        if not np.isfinite(labels).all():
            raise ValueError(f"{argument} contains NaN or infinity; class labels must be integers ({float_fix})")
        if not np.all(labels == np.round(labels)):
            bad = labels[labels != np.round(labels)][0]
            raise ValueError(
                f"{argument} must hold integer class labels for cross_entropy, found {_number(bad)}; {float_fix}"
            )
    low, high = labels.min(), labels.max()  # before any cast: 1e20 would wrap around
    if low < 0 or high >= n_classes:
        bad = low if low < 0 else high
        raise ValueError(f"{argument} has label {_number(bad)}, outside [0, {n_classes}): {fix}")


def check_targets(y, n_samples: int, n_outputs: int, dtype, argument: str = "y") -> np.ndarray:
    """Real-valued targets as a contiguous (n_samples, n_outputs) array of ``dtype``."""
    if (
        type(y) is np.ndarray
        and y.dtype == dtype
        and y.ndim == 2
        and y.shape == (n_samples, n_outputs)
        and n_samples > 0
        and y.flags.c_contiguous
        and all_finite(y)
    ):
        return y
    arr = as_numeric_array(y, argument)
    if arr.ndim == 1 and n_outputs == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or arr.shape[1] != n_outputs:
        raise ValueError(
            f"{argument} must have shape (n_samples, {n_outputs}) to match the model's "
            f"{n_outputs} outputs, got shape {arr.shape}"
        )
    check_length(arr, n_samples, argument)
    return _as_finite(arr, dtype, argument)


def check_loss_arrays(output, target, grad, compute_grad: bool, trailing: tuple, labels_of) -> None:
    """The arrays of a direct ``Loss.forward_backward`` call, whose kernels index them unchecked:
    ``output`` (m, k) float32/float64, ``target`` (m, *trailing), ``grad`` of ``output``'s shape when
    ``compute_grad``, and the class labels ``labels_of(target)`` (None for values) integers in
    [0, k) on the host; a mismatch would read or write past an array's end."""
    shape = getattr(output, "shape", None)
    if shape is None or len(shape) != 2 or np.dtype(output.dtype) not in (np.float32, np.float64):
        raise TypeError(
            f"output must be a (batch, outputs) float32 or float64 array, got "
            f"{type(output).__name__} of shape {shape} and dtype {getattr(output, 'dtype', None)}"
        )
    m, k = shape
    fix = "check the targets first with loss.check_targets(y, n_samples, n_outputs, dtype)"
    got = getattr(target, "shape", None)
    if got is None or tuple(got) != (m, *trailing):
        what = type(target).__name__ if got is None else f"shape {tuple(got)}"
        raise ValueError(
            f"target has {what}, but this loss needs an array of shape {(m, *trailing)} for an output "
            f"of shape {tuple(shape)}; {fix}"
        )
    if compute_grad:
        got_grad = getattr(grad, "shape", None)
        if got_grad is None or np.dtype(getattr(grad, "dtype", object)) not in (np.float32, np.float64):
            raise TypeError(
                f"grad must be a float32 or float64 array of the output's shape {tuple(shape)} (it receives "
                f"d loss / d output), got {type(grad).__name__} of dtype {getattr(grad, 'dtype', None)}; pass "
                f"np.empty_like(output), or compute_grad=False for the value only"
            )
        if tuple(got_grad) != tuple(shape):
            raise ValueError(f"grad has shape {tuple(got_grad)}, but must have the output's shape {tuple(shape)}")
    labels = labels_of(target)
    if labels is None or not isinstance(labels, np.ndarray) or labels.size == 0:
        return
    if not trailing and labels.dtype.kind not in "iu":
        raise TypeError(f"target must hold integer class labels, got dtype {labels.dtype}; {fix}")
    check_label_values(labels, k, "target", f"the output has {k} classes; {fix}", fix)


def check_length(arr: np.ndarray, n_samples: int, argument: str) -> None:
    if arr.shape[0] != n_samples:
        raise ValueError(
            f"X and {argument} have different lengths: X has {n_samples} samples, "
            f"{argument} has {arr.shape[0]}; pass one target per sample"
        )


def _shape_advice(got: tuple, shape: tuple, argument: str) -> str:
    """How to turn an array of shape ``got`` into samples of shape ``shape``, for a message."""
    per_sample = got[1:]
    if len(per_sample) == len(shape) - 1:  # one axis short: a size-1 axis may complete the shape
        for k in range(len(shape)):
            if shape[k] == 1 and shape[:k] + shape[k + 1 :] == per_sample:
                where = "..., None" if k == len(shape) - 1 else ":, " * (k + 1) + "None"
                return f"add the missing axis with {argument}[{where}]"
        return f"{argument} lacks an axis: each sample must be {len(shape)}-D"
    if len(per_sample) == len(shape) and sorted(per_sample) == sorted(shape):  # channels last?
        free, order = list(range(len(shape))), [0]
        for size in shape:
            j = next(j for j in free if per_sample[j] == size)
            free.remove(j)
            order.append(j + 1)
        return f"if its axes are in another order (channels last?), move them: {argument}.transpose{tuple(order)}"
    if math.prod(per_sample) == math.prod(shape):
        return f"reshape the data: {argument}.reshape(len({argument}), {', '.join(map(str, shape))})"
    return "check the data or the model's input_shape"


def check_input(X, argument: str, dtype, input_shape, layer_name: str = "the first layer") -> np.ndarray:
    """X as a C-contiguous ``dtype`` array of shape (samples, *input_shape) with finite values.

    One-axis inputs go through :func:`check_array` (sklearn's messages); for images and sequences
    the per-sample shape must match ``input_shape`` exactly."""
    if input_shape is None or len(input_shape) == 1:
        return check_array(X, argument, dtype, None if input_shape is None else input_shape[0], layer_name)
    shape = tuple(input_shape)
    if ready_rows(X, dtype, shape):
        return X
    arr = as_numeric_array(X, argument)
    expected = "(samples, " + ", ".join(map(str, shape)) + ")"
    if arr.ndim == len(shape) and arr.shape == shape:
        raise ValueError(
            f"{argument} has the shape of one sample {arr.shape}; {layer_name} expects {expected}: "
            f"add the sample axis with {argument}[None]"
        )
    if arr.ndim != len(shape) + 1 or arr.shape[1:] != shape:
        raise ValueError(
            f"{argument} has shape {arr.shape}, but {layer_name} expects {expected}; "
            f"{_shape_advice(arr.shape, shape, argument)}"
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{argument} is empty (shape {arr.shape}); at least one sample is required")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(
            f"{argument} contains NaN or infinity (first at index {tuple(int(i) for i in bad)}); "
            f"remove or impute those values first"
        )
    return arr


def check_state_array(expected: dict, name: str, value) -> None:
    """A saved array ``name`` must exist in the model (``expected``) with the same shape."""
    if name not in expected:
        raise ValueError(
            f"the saved state has an array {name!r} that this model does not have; was it saved "
            f"from another architecture?"
        )
    shape = np.shape(value)
    if tuple(shape) != tuple(expected[name].shape):
        raise ValueError(
            f"the saved array {name!r} has shape {tuple(shape)}, the model expects {tuple(expected[name].shape)}"
        )


class BatchPlan(NamedTuple):
    """How fit() cuts an epoch: ``batches`` batches of ``batch_size`` over the first ``samples`` rows
    (of the shuffled order); ``note`` says why ``samples`` is less than n, or is ''."""

    batch_size: int
    batches: int
    samples: int
    note: str


def check_batch_plan(
    n_samples: int,
    batch_size,
    *,
    needs_batch_over_one: bool,
    shuffle: bool = True,
    layer_name: str = "a BatchNorm layer",
) -> BatchPlan:
    """The batches of an epoch over ``n_samples`` rows, checked before training starts.

    When a layer needs more than one sample per training batch (``needs_batch_over_one``, batch
    norm) and the last batch would hold one sample, that sample is skipped for the epoch (as
    torch's ``drop_last``; with ``shuffle`` a different one each epoch) and ``note`` says so and
    which batch_size would use every sample. A single sample in all is a ValueError.
    """
    batch_size = min(check_int(batch_size, "batch_size", minimum=1), n_samples)
    samples, note = n_samples, ""
    if needs_batch_over_one and batch_size == 1:
        fix = "pass at least 2 samples" if n_samples == 1 else "pass batch_size >= 2"
        raise ValueError(
            f"{layer_name} needs at least 2 samples per training batch (the variance of one "
            f"sample is 0), but fit() got batch_size=1 for {n_samples} sample(s); {fix}, or "
            f"remove the batch norm layer"
        )
    if needs_batch_over_one and n_samples % batch_size == 1:
        better = next(
            b
            for d in range(1, n_samples)
            for b in (batch_size - d, batch_size + d)
            if 2 <= b <= n_samples and n_samples % b != 1
        )
        samples = n_samples - 1
        which = "a different sample each epoch" if shuffle else "always the last sample, as shuffle=False"
        note = (
            f"{n_samples} samples in batches of {batch_size} leave a last batch of 1 sample, which "
            f"{layer_name} cannot train on (the variance of one sample is 0); each epoch skips it "
            f"({which}). Pass batch_size={better} to train on every sample."
        )
    return BatchPlan(batch_size, -(-samples // batch_size), samples, note)


def check_callbacks(callbacks, base: type) -> list:
    """``callbacks`` as a list of fastnn Callback instances: None gives [], a single Callback is
    wrapped in a list; anything else is a TypeError naming what came."""
    Callback = base  # fastnn.callbacks.Callback, passed in: validation imports nothing above it
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback):
        return [callbacks]
    if not isinstance(callbacks, (list, tuple)):
        hint = (
            f"pass an instance: callbacks=[{callbacks.__name__}(...)]"
            if isinstance(callbacks, type) and issubclass(callbacks, Callback)
            else "e.g. callbacks=[fnn.callbacks.EarlyStopping(patience=3)]"
        )
        raise TypeError(
            f"callbacks must be a list of fastnn.callbacks.Callback objects (or one Callback), "
            f"got {type(callbacks).__name__} {callbacks!r}; {hint}"
        )
    for i, cb in enumerate(callbacks):
        if not isinstance(cb, Callback):
            hint = (
                f"pass an instance, {cb.__name__}(...), not the class"
                if isinstance(cb, type) and issubclass(cb, Callback)
                else "subclass fastnn.callbacks.Callback and override its hooks"
            )
            raise TypeError(
                f"callbacks[{i}] must be a fastnn.callbacks.Callback, got {type(cb).__name__} {cb!r}; {hint}"
            )
    return list(callbacks)


def check_forward_done(context, what: str = "backward()") -> None:
    """A RuntimeError saying what to call first when ``context`` (what forward() keeps) is None."""
    if context is None:
        raise RuntimeError(
            f"{what} needs the values kept by a forward() call on the same batch; call "
            f"model.forward(x, training=True) first, then model.backward(grad_out)"
        )
