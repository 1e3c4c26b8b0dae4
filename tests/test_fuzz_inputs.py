"""Randomized bad-input fuzzing of the public API: every refusal is clear and loses nothing.

Each seed draws a small valid model (Dense, Conv1d/Conv2d, pooling, Flatten, Embedding,
LSTM/GRU/RNN, BatchNorm, Dropout, LayerNorm, MultiHeadSelfAttention), a loss and an optimizer, and
clean data for it; then throws a random selection of bad inputs at ``Sequential(...)``, ``compile``,
``fit`` (X/y of the wrong rank, shape or dtype, labels of the wrong kind or out of range, NaN/inf,
empty batches, mismatched lengths, bad batch_size/epochs/validation/weights), ``predict``,
``evaluate``, ``train_step``, layer constructors, Embedding indices, ``save``/``load`` and the
``fastnn.sklearn`` estimators. For each refused call it checks that:

* the exception is one a user expects (ValueError, TypeError, IndexError, ...), never a Numba
  error, a SystemError, or an AttributeError/KeyError/UnboundLocalError from inside the library;
* its message names the argument or the value;
* the model (parameters, running statistics, epochs done) is unchanged.

Inputs a user may pass that are converted (lists of lists, int X, float64 X in a float32 model,
integer-valued float labels) must give the same result as the clean input.

The CI run is a fixed list of seeds; ``FASTNN_FUZZ_N=200`` runs seeds 0..199 instead.
"""

from __future__ import annotations

import copy
import os
import tempfile

import numpy as np
import pytest

import fastnn as fnn

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

try:  # the expected-exception check must also refuse Numba's own errors
    from numba.core.errors import NumbaError
except ImportError:  # pragma: no cover - numba is a dependency
    NumbaError = ()

# Exceptions a user expects from a refused call (a clear message is checked separately).
EXPECTED = (ValueError, TypeError, IndexError, RuntimeError, FileNotFoundError, IsADirectoryError, OSError)
# Exceptions that mean the library did not check its input.
FORBIDDEN = (AttributeError, KeyError, UnboundLocalError, SystemError, ZeroDivisionError, AssertionError)

LOSSES = ["cross_entropy", "mse", "mae", "huber", "binary_cross_entropy"]
OPTIMIZERS = {
    "sgd": lambda: fnn.optim.SGD(lr=0.01, momentum=0.9),
    "adam": lambda: fnn.optim.Adam(lr=1e-3),
    "adamw": lambda: fnn.optim.AdamW(lr=1e-3, weight_decay=1e-2),
    "rmsprop": lambda: fnn.optim.RMSProp(lr=1e-3),
    "adagrad": lambda: fnn.optim.Adagrad(lr=1e-2),
    "lion": lambda: fnn.optim.Lion(lr=1e-4),
}


class Case:
    """A drawn model recipe with clean data for it."""

    def __init__(self, seed: int):
        r = np.random.default_rng(seed)
        self.seed = seed
        self.r = r
        self.family = str(r.choice(["flat", "flat", "conv1d", "conv2d", "embed", "seq", "attn"]))
        self.loss = str(r.choice(LOSSES))
        if self.family == "embed":  # Embedding + recurrent: a classifier or regressor over sequences
            self.loss = str(r.choice(["cross_entropy", "mse", "binary_cross_entropy"]))
        self.classes = int(r.integers(2, 5))
        self.out = {"cross_entropy": self.classes, "binary_cross_entropy": 1}.get(self.loss, int(r.integers(1, 3)))
        self.opt = str(r.choice(list(OPTIMIZERS)))
        self.dtype = str(r.choice(["float32", "float64"]))
        self.n = int(r.integers(6, 14))
        self.vocab = int(r.integers(5, 12))
        fam = self.family
        if fam == "flat":
            self.shape = (int(r.integers(2, 6)),)
        elif fam == "conv1d":
            self.shape = (int(r.integers(1, 3)), int(r.integers(6, 10)))
        elif fam == "conv2d":
            self.shape = (int(r.integers(1, 3)), int(r.integers(5, 8)), int(r.integers(5, 8)))
        elif fam == "embed":
            self.shape = (int(r.integers(3, 6)),)
        elif fam == "seq":
            self.shape = (int(r.integers(3, 6)), int(r.integers(2, 4)))
        else:
            self.shape = (int(r.integers(3, 6)), 4)
        self.extra = str(r.choice(["none", "bn", "drop", "ln"]))
        self.cell = str(r.choice(["LSTM", "GRU", "RNN"]))
        self.hidden = int(r.integers(3, 6))
        self.model_seed = int(r.integers(1000))

    def layers(self) -> list:
        """Fresh layers for this case (the same weights for the same model seed)."""
        h, fam = self.hidden, self.family
        if fam == "flat":
            body = [fnn.Dense(self.shape[0], h, activation="tanh")]
            body += {
                "none": [],
                "bn": [fnn.BatchNorm1d(h)],
                "drop": [fnn.Dropout(0.3)],
                "ln": [fnn.LayerNorm(h)],
            }[self.extra]
        elif fam == "conv1d":
            body = [fnn.Conv1d(self.shape[0], h, 3, activation="relu"), fnn.MaxPool1d(2), fnn.Flatten()]
        elif fam == "conv2d":
            norm = [fnn.BatchNorm2d(h)] if self.extra == "bn" else []
            body = [fnn.Conv2d(self.shape[0], h, 3), *norm, fnn.ReLU(), fnn.MaxPool2d(2), fnn.Flatten()]
        elif fam == "embed":
            cell = getattr(fnn, self.cell)(4, h, return_sequences=False)
            body = [fnn.Embedding(self.vocab, 4), cell]
        elif fam == "seq":
            cell = getattr(fnn, self.cell)(self.shape[1], h, return_sequences=False)
            body = [cell]
        else:
            body = [fnn.MultiHeadSelfAttention(4, 2), fnn.LayerNorm(4), fnn.LastStep()]
        return [*body, fnn.Dense(None, self.out)]

    def model(self) -> fnn.Sequential:
        """A compiled, built model."""
        m = fnn.Sequential(self.layers(), seed=self.model_seed, dtype=self.dtype, input_shape=self.shape)
        return m.compile(self.loss, OPTIMIZERS[self.opt]())

    def data(self, n: int | None = None, seed: int = 0):
        """Clean (X, y) for this case."""
        n = self.n if n is None else n
        r = np.random.default_rng(1000 + 7 * self.seed + seed)
        if self.family == "embed":
            X = r.integers(0, self.vocab, (n, *self.shape))
        else:
            X = r.standard_normal((n, *self.shape)).astype(self.dtype)
        if self.loss == "cross_entropy":
            y = r.integers(0, self.classes, n)
        elif self.loss == "binary_cross_entropy":
            y = r.integers(0, 2, (n, 1)).astype(self.dtype)
        else:
            y = r.standard_normal((n, self.out)).astype(self.dtype)
        return X, y


def _state(model) -> dict:
    arrays = {k: np.array(v, copy=True) for k, v in model.state_arrays().items()}
    arrays["__epochs__"] = np.array(model.epochs_done)
    return arrays


def _same_state(a: dict, b: dict) -> list[str]:
    changed = [k for k in a if k not in b or a[k].shape != b[k].shape or not np.array_equal(a[k], b[k], equal_nan=True)]
    return changed + [k for k in b if k not in a]


def _refusal(fn, *, mentions, model=None) -> str | None:
    """None when ``fn()`` raises an expected exception whose message mentions one of ``mentions``
    and leaves ``model`` as it was; else a description of what went wrong."""
    before = _state(model) if model is not None else None
    try:
        fn()
    except FORBIDDEN as e:
        return f"raised {type(e).__name__}: {e}"
    except Exception as e:  # noqa: BLE001 - classified below
        if NumbaError and isinstance(e, NumbaError):
            return f"raised a Numba error {type(e).__name__}: {str(e)[:300]}"
        if not isinstance(e, EXPECTED):
            return f"raised unexpected {type(e).__name__}: {e}"
        msg = str(e).lower()
        if not any(str(m).lower() in msg for m in mentions):
            return f"{type(e).__name__} message does not mention any of {mentions}: {e}"
    else:
        return "was accepted (expected a refusal)"
    if model is not None:
        changed = _same_state(before, _state(model))
        if changed:
            return f"refused but changed the model: {changed}"
    return None


def _bad_fit_cases(case: Case, X, y):
    """(name, kwargs for fit, X, y, mentions) bad inputs for fit/evaluate."""
    n = len(X)
    cls = case.loss == "cross_entropy"
    embed = case.family == "embed"
    yield "X rank too low", X.reshape(n, -1)[:, 0], y, ["X", "dimension", "shape", "D array"]
    yield "X rank too high", X[..., None], y, ["X", "dimension", "shape"]
    if case.family == "flat":
        yield "X wrong features", np.concatenate([X, X], axis=1), y, ["X", "features", "expects"]
    else:
        yield "X wrong sample shape", np.concatenate([X, X], axis=-1), y, ["X", "shape", "expects"]
    yield "X strings", X.astype(str), y, ["X", "string"]
    yield "X object", X.astype(object), y, ["X", "object", "numeric"]
    yield "X complex", X.astype(np.complex128), y, ["X", "complex"]
    if not embed:
        Xn = X.copy()
        Xn.flat[int(case.r.integers(Xn.size))] = case.r.choice([np.nan, np.inf, -np.inf])
        yield "X nan/inf", Xn, y, ["X", "nan", "inf"]
    else:
        yield "indices float", X.astype(float) + 0.5, y, ["X", "integer", "indices", "float"]
        Xb = X.copy()
        Xb.flat[int(case.r.integers(Xb.size))] = -1
        yield "index negative", Xb, y, ["X", "-1", "index", "indices"]
        Xb = X.copy()
        Xb.flat[int(case.r.integers(Xb.size))] = case.vocab
        yield "index too large", Xb, y, ["X", str(case.vocab), "index", "indices"]
    yield "X empty", X[:0], None if y is None else y[:0], ["X", "empty", "0 samples", "no samples"]
    if y is None:
        return
    yield "length mismatch", X, y[:-1], ["length", str(n), str(n - 1)]
    if cls:
        yield "float labels", X, y + 0.5, ["label", "integer", "y"]
        yield "labels too large", X, np.full_like(y, case.classes), ["label", str(case.classes)]
        yield "labels negative", X, np.full_like(y, -1), ["label", "-1"]
        yield "labels 2d wrong", X, np.stack([y, y], axis=1), ["y", "shape", "label"]
        yield "labels strings", X, y.astype(str), ["y", "label", "string"]
    else:
        yn = np.array(y, dtype=float)
        yn.flat[0] = np.nan
        yield "y nan", X, yn, ["y", "nan", "inf"]
        yield "y wrong width", X, np.concatenate([y, y, y], axis=1), ["y", "shape", "output"]
        yield "y strings", X, y.astype(str), ["y", "string", "numeric"]
        yield "y complex", X, y.astype(np.complex128), ["y", "complex"]
    yield "y None", X, None, ["y", "target", "label"]


def _bad_fit_options(case: Case, X, y):
    """(name, kwargs, mentions) bad fit keyword arguments."""
    n = len(X)
    yield "batch_size 0", {"batch_size": 0}, ["batch_size"]
    yield "batch_size -1", {"batch_size": -1}, ["batch_size"]
    yield "batch_size float", {"batch_size": 2.5}, ["batch_size"]
    yield "batch_size str", {"batch_size": "8"}, ["batch_size"]
    yield "epochs -1", {"epochs": -1}, ["epochs"]
    yield "epochs float", {"epochs": 1.5}, ["epochs"]
    yield "epochs str", {"epochs": "2"}, ["epochs"]
    yield "shuffle str", {"shuffle": "yes"}, ["shuffle"]
    yield "verbose 7", {"verbose": 7}, ["verbose"]
    yield "validation_split 1.5", {"validation_split": 1.5}, ["validation_split"]
    yield "validation_split -0.1", {"validation_split": -0.1}, ["validation_split"]
    yield "validation_split str", {"validation_split": "0.2"}, ["validation_split"]
    yield "validation_data array", {"validation_data": X}, ["validation_data"]
    yield "validation_data 1-tuple", {"validation_data": (X,)}, ["validation_data"]
    yield "validation_data 4-tuple", {"validation_data": (X, y, None, None)}, ["validation_data"]
    yield "validation_data bad X", {"validation_data": (X[..., None], y)}, ["validation_data", "X_val", "x"]
    yield "validation_data mismatch", {"validation_data": (X, y[:-1])}, ["validation_data", "length", "y_val"]
    yield "sample_weight short", {"sample_weight": np.ones(n - 1)}, ["sample_weight"]
    yield "sample_weight negative", {"sample_weight": -np.ones(n)}, ["sample_weight"]
    yield "sample_weight nan", {"sample_weight": np.full(n, np.nan)}, ["sample_weight"]
    yield "sample_weight str", {"sample_weight": np.array(["a"] * n)}, ["sample_weight"]
    yield "sample_weight 2d", {"sample_weight": np.ones((n, 3, 2))}, ["sample_weight"]
    yield "sample_weight scalar", {"sample_weight": 1.0}, ["sample_weight"]
    if case.loss == "cross_entropy":
        yield "class_weight list", {"class_weight": [1.0]}, ["class_weight"]
        yield "class_weight bad key", {"class_weight": {case.classes + 3: 1.0}}, ["class_weight", str(case.classes + 3)]
        yield "class_weight negative", {"class_weight": {0: -1.0}}, ["class_weight"]
        yield "class_weight str value", {"class_weight": {0: "a"}}, ["class_weight"]
    elif case.loss == "binary_cross_entropy":
        yield "class_weight bad key", {"class_weight": {2: 1.0}}, ["class_weight", "2"]
        yield "class_weight nan", {"class_weight": {1: float("nan")}}, ["class_weight"]
    else:
        yield "class_weight regression", {"class_weight": {0: 2.0}}, ["class_weight"]
    yield "accumulate 0", {"accumulate": 0}, ["accumulate"]
    yield "callbacks bad", {"callbacks": [object()]}, ["callbacks", "callback"]
    yield "unknown option", {"epochz": 2}, ["epochz"]
    yield "loss unknown", {"loss": "cross_entropi"}, ["loss", "cross_entropi"]
    yield "optimizer unknown", {"optimizer": "adamm"}, ["optimizer", "adamm"]
    yield "optimizer wrong type", {"optimizer": 3}, ["optimizer"]


def _refuse_all(case: Case, failures: list, cases_iter, call, k: int):
    items = list(cases_iter)
    picks = case.r.choice(len(items), size=min(k, len(items)), replace=False)
    for i in sorted(picks):
        item = items[i]
        problem = call(item)
        if problem:
            failures.append(f"{item[0]}: {problem}")


def _fit_checks(case: Case, failures: list, k: int):
    model = case.model()
    X, y = case.data()
    model.fit(X, y, epochs=1, batch_size=4, verbose=0)  # a trained model with optimizer state

    def fit_call(item):
        _, Xb, yb, mentions = item
        return _refusal(lambda: model.fit(Xb, yb, epochs=1, batch_size=4, verbose=0), mentions=mentions, model=model)

    def evaluate_call(item):
        _, Xb, yb, mentions = item
        return _refusal(lambda: model.evaluate(Xb, yb), mentions=mentions, model=model)

    def step_call(item):
        _, Xb, yb, mentions = item
        return _refusal(lambda: model.train_step(Xb, yb), mentions=mentions + ["xb", "yb"], model=model)

    def option_call(item):
        _, kwargs, mentions = item
        return _refusal(lambda: model.fit(X, y, verbose=0, **{"epochs": 1, **kwargs}), mentions=mentions, model=model)

    _refuse_all(case, failures, _bad_fit_cases(case, X, y), fit_call, k)
    _refuse_all(
        case, failures, (("evaluate " + c[0], *c[1:]) for c in _bad_fit_cases(case, X, y)), evaluate_call, k // 2
    )
    steps = (("train_step " + c[0], *c[1:]) for c in _bad_fit_cases(case, X, y) if c[2] is not None)
    _refuse_all(case, failures, steps, step_call, k // 2)
    _refuse_all(case, failures, _bad_fit_options(case, X, y), option_call, k)


def _predict_checks(case: Case, failures: list, k: int):
    model = case.model()
    X, _ = case.data()
    items = [c for c in _bad_fit_cases(case, X, None) if not c[0].startswith(("length", "y ", "label", "float labels"))]
    items += [
        ("predict batch_size 0", X, "bs0", ["batch_size"]),
        ("predict batch_size float", X, "bsf", ["batch_size"]),
    ]

    def call(item):
        name, Xb, extra, mentions = item
        kwargs = {"bs0": {"batch_size": 0}, "bsf": {"batch_size": 1.5}}.get(extra, {})
        return _refusal(lambda: model.predict(Xb, **kwargs), mentions=mentions, model=model)

    _refuse_all(case, failures, (("predict " + c[0], *c[1:]) for c in items), call, k)


def _compile_and_construction_checks(case: Case, failures: list, k: int):
    model = case.model()
    X, y = case.data()
    model.fit(X, y, epochs=1, batch_size=4, verbose=0)
    if case.family in ("conv1d", "conv2d"):  # a sample shape the first layer cannot take
        wrong_shape = (case.shape[0] + 3, *case.shape[1:])
    elif case.family == "embed":  # (an Embedding takes sequences of any length, but one axis of them)
        wrong_shape = (*case.shape, 2)
    else:
        wrong_shape = (*case.shape[:-1], case.shape[-1] + 3)
    items = [
        ("compile loss unknown", lambda: model.compile("msee"), ["loss", "msee"]),
        ("compile loss int", lambda: model.compile(3), ["loss"]),
        ("compile optimizer unknown", lambda: model.compile(case.loss, "sgdd"), ["optimizer", "sgdd"]),
        ("compile optimizer class", lambda: model.compile(case.loss, fnn.optim.Adam), ["optimizer"]),
        ("compile metrics unknown", lambda: model.compile(case.loss, metrics=["f11"]), ["metric", "f11"]),
        ("compile metrics str", lambda: model.compile(case.loss, metrics=3), ["metrics"]),
        ("compile metric arity", lambda: model.compile(case.loss, metrics=[lambda y_true: 0.0]), ["metric", "lambda"]),
        ("compile decay str", lambda: model.compile(case.loss, decay_bias_and_norm="yes"), ["decay_bias_and_norm"]),
        ("Sequential empty", lambda: fnn.Sequential([]), ["layers"]),
        ("Sequential not layers", lambda: fnn.Sequential([3, "dense"]), ["layers"]),
        ("Sequential dtype", lambda: fnn.Sequential(case.layers(), dtype="float16"), ["dtype", "float16"]),
        ("Sequential dtype int", lambda: fnn.Sequential(case.layers(), dtype="int32"), ["dtype", "int32"]),
        ("Sequential seed", lambda: fnn.Sequential(case.layers(), seed=-1), ["seed"]),
        ("Sequential seed str", lambda: fnn.Sequential(case.layers(), seed="a"), ["seed"]),
        ("Sequential device", lambda: fnn.Sequential(case.layers(), device="tpu"), ["device", "tpu"]),
        (
            "Sequential input_shape",
            lambda: fnn.Sequential(case.layers(), input_shape=(0,) * len(case.shape)),
            ["input_shape", "0"],
        ),
        (
            "Sequential input_shape wrong",
            lambda: fnn.Sequential(case.layers(), input_shape=wrong_shape),
            ["input_shape", "expects", "shape", "dimension", "takes"],
        ),
        (
            "Sequential input_shape str",
            lambda: fnn.Sequential(case.layers(), input_shape="abc"),
            ["input_shape"],
        ),
        (
            "Sequential shared layer",
            lambda: fnn.Sequential([model.layers[0]]),
            ["layer", "model", "already"],
        ),
    ]

    def call(item):
        name, fn, mentions = item
        return _refusal(fn, mentions=mentions, model=model)

    _refuse_all(case, failures, items, call, k)


LAYER_BAD = [
    ("Dense 0", lambda: fnn.Dense(0, 3), ["in_features", "0"]),
    ("Dense -2 out", lambda: fnn.Dense(3, -2), ["out_features", "-2"]),
    ("Dense str", lambda: fnn.Dense("3", 4), ["in_features"]),
    ("Dense float", lambda: fnn.Dense(3.5, 4), ["in_features"]),
    ("Dense activation", lambda: fnn.Dense(3, 4, activation="relux"), ["activation", "relux"]),
    ("Dense init", lambda: fnn.Dense(3, 4, init="glorot_bad"), ["init", "glorot_bad"]),
    ("Dense bias str", lambda: fnn.Dense(3, 4, bias="no"), ["bias"]),
    ("Conv1d kernel 0", lambda: fnn.Conv1d(2, 3, 0), ["kernel_size", "0"]),
    ("Conv1d stride -1", lambda: fnn.Conv1d(2, 3, 3, stride=-1), ["stride", "-1"]),
    ("Conv1d padding bad", lambda: fnn.Conv1d(2, 3, 3, padding="full"), ["padding", "full"]),
    ("Conv1d groups", lambda: fnn.Conv1d(3, 4, 3, groups=2), ["groups", "2"]),
    ("Conv1d channels str", lambda: fnn.Conv1d("2", 3, 3), ["in_channels"]),
    ("Conv2d kernel tuple3", lambda: fnn.Conv2d(2, 3, (3, 3, 3)), ["kernel_size"]),
    ("Conv2d kernel neg", lambda: fnn.Conv2d(2, 3, (3, -1)), ["kernel_size", "-1"]),
    ("Conv2d dilation 0", lambda: fnn.Conv2d(2, 3, 3, dilation=0), ["dilation", "0"]),
    ("Conv2d out 0", lambda: fnn.Conv2d(2, 0, 3), ["out_channels", "0"]),
    ("MaxPool2d 0", lambda: fnn.MaxPool2d(0), ["kernel_size", "0"]),
    ("MaxPool1d str", lambda: fnn.MaxPool1d("2"), ["kernel_size"]),
    ("MaxPool1d pad too big", lambda: fnn.MaxPool1d(2, padding=3), ["padding"]),
    ("AvgPool2d stride 0", lambda: fnn.AvgPool2d(2, stride=0), ["stride", "0"]),
    ("Embedding 0", lambda: fnn.Embedding(0, 3), ["num_embeddings", "0"]),
    ("Embedding dim -1", lambda: fnn.Embedding(5, -1), ["embedding_dim", "-1"]),
    ("Embedding padding_idx", lambda: fnn.Embedding(5, 3, padding_idx=5), ["padding_idx", "5"]),
    ("Embedding padding_idx float", lambda: fnn.Embedding(5, 3, padding_idx=1.5), ["padding_idx"]),
    ("LSTM hidden 0", lambda: fnn.LSTM(3, 0), ["hidden_size", "0"]),
    ("GRU layers 0", lambda: fnn.GRU(3, 4, num_layers=0), ["num_layers", "0"]),
    ("RNN nonlinearity", lambda: fnn.RNN(3, 4, nonlinearity="sigmoid"), ["nonlinearity", "sigmoid"]),
    ("RNN dropout 1.5", lambda: fnn.RNN(3, 4, dropout=1.5), ["dropout", "1.5"]),
    ("LSTM bidirectional str", lambda: fnn.LSTM(3, 4, bidirectional="yes"), ["bidirectional"]),
    ("BatchNorm1d 0", lambda: fnn.BatchNorm1d(0), ["num_features", "0"]),
    ("BatchNorm2d eps -1", lambda: fnn.BatchNorm2d(3, eps=-1.0), ["eps", "-1"]),
    ("BatchNorm1d momentum 2", lambda: fnn.BatchNorm1d(3, momentum=2.0), ["momentum", "2"]),
    ("Dropout 1.5", lambda: fnn.Dropout(1.5), ["p", "1.5"]),
    ("Dropout str", lambda: fnn.Dropout("0.5"), ["p"]),
    ("Dropout nan", lambda: fnn.Dropout(float("nan")), ["p", "nan"]),
    ("LayerNorm 0", lambda: fnn.LayerNorm(0), ["normalized_features", "0"]),
    ("LayerNorm eps 0", lambda: fnn.LayerNorm(4, eps=0.0), ["eps"]),
    ("MHSA heads", lambda: fnn.MultiHeadSelfAttention(6, 4), ["num_heads", "embed_dim"]),
    ("MHSA heads 0", lambda: fnn.MultiHeadSelfAttention(6, 0), ["num_heads", "0"]),
    ("Transformer ff 0", lambda: fnn.TransformerEncoderBlock(4, 2, 0), ["ff_dim", "0"]),
    ("Reshape bad", lambda: fnn.Reshape((-1, -1)), ["target_shape", "-1"]),
    ("Reshape str", lambda: fnn.Reshape("ab"), ["target_shape"]),
    ("GlobalAvgPool axis", lambda: fnn.GlobalAvgPool("channels"), ["axis", "channels"]),
    ("LeakyReLU str", lambda: fnn.LeakyReLU("a"), ["negative_slope"]),
    # Shapes that cannot fit the input: refused when the model is built.
    (
        "Conv2d kernel > input",
        lambda: fnn.Sequential([fnn.Conv2d(1, 2, 9)], input_shape=(1, 5, 5)),
        ["kernel", "input"],
    ),
    ("Conv1d kernel > input", lambda: fnn.Sequential([fnn.Conv1d(1, 2, 9)], input_shape=(1, 5)), ["kernel", "input"]),
    ("MaxPool2d > input", lambda: fnn.Sequential([fnn.MaxPool2d(7)], input_shape=(1, 5, 5)), ["kernel", "input"]),
    ("Conv2d channels", lambda: fnn.Sequential([fnn.Conv2d(3, 2, 2)], input_shape=(1, 5, 5)), ["channel", "3", "1"]),
    ("Dense after Dense", lambda: fnn.Sequential([fnn.Dense(3, 4), fnn.Dense(5, 2)]), ["5", "4", "in_features"]),
    ("LSTM input size", lambda: fnn.Sequential([fnn.LSTM(3, 4)], input_shape=(5, 2)), ["input_size", "3", "2"]),
    ("Embedding not first", lambda: fnn.Sequential([fnn.Dense(3, 4), fnn.Embedding(5, 2)]), ["first", "Embedding"]),
]


def _layer_checks(case: Case, failures: list, k: int):
    def call(item):
        name, fn, mentions = item
        return _refusal(fn, mentions=mentions)

    _refuse_all(case, failures, LAYER_BAD, call, k)


def _save_load_checks(case: Case, failures: list):
    model = case.model()
    with tempfile.TemporaryDirectory() as tmp:
        missing_dir = os.path.join(tmp, "no", "such", "dir", "m.fnn")
        items = [
            (
                "load missing",
                lambda: fnn.load(os.path.join(tmp, "missing.fnn")),
                ["missing.fnn", "no such", "not found"],
            ),
            ("load directory", lambda: fnn.load(tmp), [tmp, "directory"]),
            ("save directory", lambda: model.save(tmp), [tmp, "directory"]),
            ("save missing dir", lambda: model.save(missing_dir), ["dir", "no such", "not found", "exist"]),
            ("save path int", lambda: model.save(3.5), ["path"]),
            ("load path None", lambda: fnn.load(None), ["path"]),
            ("load_weights path int", lambda: model.load_weights(7), ["path"]),
            ("save_weights path list", lambda: model.save_weights(["w.npz"]), ["path"]),
            ("load_weights missing", lambda: model.load_weights(os.path.join(tmp, "w.npz")), ["w.npz", "no such"]),
        ]
        junk = os.path.join(tmp, "junk.fnn")
        with open(junk, "wb") as f:
            f.write(b"not a model at all" * 10)
        items.append(("load junk", lambda: fnn.load(junk), ["junk.fnn", "not a", "corrupt", "fastnn"]))
        for name, fn, mentions in items:
            problem = _refusal(fn, mentions=mentions, model=model)
            if problem:
                failures.append(f"{name}: {problem}")


def _trained(case: Case, X, y) -> tuple[dict, np.ndarray]:
    m = case.model()
    m.fit(X, y, epochs=1, batch_size=4, verbose=0, shuffle=False)
    return _state(m), m.predict(X)


def _converted_checks(case: Case, failures: list):
    """Inputs that are converted must train (and predict) exactly like the clean input they stand for."""
    X, y = case.data()
    other = "float64" if case.dtype == "float32" else "float32"
    variants = [  # (name, X given, y given, the clean X, the clean y)
        ("list of lists", X.tolist(), y.tolist(), X, y),
        ("Fortran order", np.asfortranarray(X), np.asfortranarray(y), X, y),
        ("reversed strides", X[::-1].copy()[::-1], y[::-1].copy()[::-1], X, y),
    ]
    if case.family != "embed":
        variants.append(("bool X", X > 0, y, (X > 0).astype(case.dtype), y))
        variants.append(("float16 X", X.astype(np.float16), y, X.astype(np.float16).astype(case.dtype), y))
        Xi = np.round(X * 4).astype(np.int64)
        variants.append(("int X", Xi, y, Xi.astype(case.dtype), y))
        if case.dtype == "float32":  # float64 -> float32 rounds to the same float32 values
            variants.append(("float64 X", X.astype(other), y, X, y))
    else:
        variants.append(("int32 indices", X.astype(np.int32), y, X, y))
        variants.append(("uint8 indices", X.astype(np.uint8), y, X, y))
        variants.append(("integral float indices", X.astype(np.float64), y, X, y))
    if case.loss == "cross_entropy":
        variants.append(("float labels", X, y.astype(np.float64), X, y))
        variants.append(("int32 labels", X, y.astype(np.int32), X, y))
        variants.append(("column labels", X, y[:, None], X, y))
        variants.append(("bool labels", X, y > 0, X, (y > 0).astype(np.int64)))
    else:
        variants.append(("int targets", X, np.round(y).astype(np.int64), X, np.round(y).astype(case.dtype)))
        variants.append((f"{other} targets", X, y.astype(other), X, y.astype(other).astype(case.dtype)))
    for name, Xv, yv, Xc, yc in variants:
        want_state, want_pred = _trained(case, Xc, yc)
        try:
            got_state, got_pred = _trained(case, Xv, yv)
        except Exception as e:  # noqa: BLE001 - reported
            failures.append(f"converted {name}: refused with {type(e).__name__}: {e}")
            continue
        changed = _same_state(want_state, got_state)
        if changed:
            failures.append(f"converted {name}: trains differently from the clean input: {changed}")
        if got_pred.shape != want_pred.shape or not np.array_equal(got_pred, want_pred):
            failures.append(f"converted {name}: predict differs from the clean input")


def _path_checks(case: Case, failures: list):
    """str, bytes and pathlib paths save and load the same model."""
    import pathlib

    model = case.model()
    X, _ = case.data()
    want = model.predict(X)
    with tempfile.TemporaryDirectory() as tmp:
        for kind, path in [
            ("str", os.path.join(tmp, "a.fnn")),
            ("bytes", os.fsencode(os.path.join(tmp, "b.fnn"))),
            ("Path", pathlib.Path(tmp) / "c.fnn"),
        ]:
            try:
                model.save(path)
                got = fnn.load(path).predict(X)
                weights = pathlib.Path(tmp) / f"{kind}.npz"
                weights = os.fsencode(weights) if kind == "bytes" else weights if kind == "Path" else str(weights)
                model.save_weights(weights)
                model.load_weights(weights)
            except Exception as e:  # noqa: BLE001 - reported
                failures.append(f"{kind} path: refused with {type(e).__name__}: {e}")
                continue
            if not np.array_equal(got, want) or not np.array_equal(model.predict(X), want):
                failures.append(f"{kind} path: the loaded model predicts differently")


def _sklearn_checks(case: Case, failures: list, k: int):
    from fastnn.sklearn import MLPClassifier, MLPRegressor

    r = case.r
    n, d = 12, int(r.integers(2, 5))
    X = r.standard_normal((n, d))
    yc = np.arange(n) % 3
    yr = r.standard_normal(n)
    clf = MLPClassifier((4,), max_iter=2, random_state=0, batch_size=4).fit(X, yc)
    reg = MLPRegressor((4,), max_iter=2, random_state=0, batch_size=4).fit(X, yr)
    Xn = X.copy()
    Xn[1, 0] = np.nan
    words = np.array([["a", "b", "c", "d"][: X.shape[1]]] * n)  # (numeric strings convert, as in scikit-learn)
    items = [
        ("clf fit X 1d", lambda: MLPClassifier((4,), max_iter=1).fit(X[:, 0], yc), ["X", "2D", "reshape"]),
        (
            "clf fit mismatch",
            lambda: MLPClassifier((4,), max_iter=1).fit(X, yc[:-1]),
            ["length", "samples", "12", "11"],
        ),
        ("clf fit nan", lambda: MLPClassifier((4,), max_iter=1).fit(Xn, yc), ["nan", "inf"]),
        ("clf fit str X", lambda: MLPClassifier((4,), max_iter=1).fit(words, yc), ["could not convert", "string"]),
        ("clf fit complex", lambda: MLPClassifier((4,), max_iter=1).fit(X + 1j, yc), ["X", "complex"]),
        ("clf fit empty", lambda: MLPClassifier((4,), max_iter=1).fit(X[:0], yc[:0]), ["0 sample", "empty", "X"]),
        ("clf fit one class", lambda: MLPClassifier((4,), max_iter=1).fit(X, np.zeros(n)), ["class", "1"]),
        ("clf fit continuous y", lambda: MLPClassifier((4,), max_iter=1).fit(X, yr), ["continuous", "label", "y"]),
        ("clf max_iter 0", lambda: MLPClassifier((4,), max_iter=0).fit(X, yc), ["max_iter"]),
        ("clf hidden -1", lambda: MLPClassifier((-1,), max_iter=1).fit(X, yc), ["hidden_layer_sizes", "-1"]),
        ("clf hidden str", lambda: MLPClassifier("abc", max_iter=1).fit(X, yc), ["hidden_layer_sizes"]),
        ("clf activation", lambda: MLPClassifier((4,), activation="relux").fit(X, yc), ["activation", "relux"]),
        ("clf batch_size 0", lambda: MLPClassifier((4,), batch_size=0).fit(X, yc), ["batch_size"]),
        ("clf lr -1", lambda: MLPClassifier((4,), learning_rate_init=-1.0).fit(X, yc), ["learning_rate_init"]),
        ("clf alpha str", lambda: MLPClassifier((4,), alpha="a").fit(X, yc), ["alpha"]),
        ("clf optimizer", lambda: MLPClassifier((4,), optimizer="adamm").fit(X, yc), ["optimizer", "adamm"]),
        (
            "clf validation 1.0",
            lambda: MLPClassifier((4,), early_stopping=True, validation_fraction=1.0).fit(X, yc),
            ["validation_fraction"],
        ),
        ("clf predict features", lambda: clf.predict(X[:, :-1]), ["feature", str(d)]),
        ("clf predict 1d", lambda: clf.predict(X[0]), ["2D", "reshape", "X"]),
        ("clf predict nan", lambda: clf.predict(Xn), ["nan", "inf"]),
        ("clf predict_proba str", lambda: clf.predict_proba(words), ["could not convert", "string"]),
        ("clf score mismatch", lambda: clf.score(X, yc[:-1]), ["length", "samples", "12", "11"]),
        ("clf partial_fit new class", lambda: clf.partial_fit(X, yc + 5), ["class", "label"]),
        (
            "reg fit y 2d wrong",
            lambda: MLPRegressor((4,), max_iter=1).fit(X, np.ones((n - 1, 2))),
            ["length", "samples", "y"],
        ),
        ("reg fit y nan", lambda: MLPRegressor((4,), max_iter=1).fit(X, np.full(n, np.nan)), ["nan", "inf", "y"]),
        ("reg fit y str", lambda: MLPRegressor((4,), max_iter=1).fit(X, words[:, 0]), ["could not convert", "string"]),
        ("reg predict features", lambda: reg.predict(X[:, :-1]), ["feature", str(d)]),
        ("reg predict empty", lambda: reg.predict(X[:0]), ["0 sample", "empty", "X"]),
        ("reg partial_fit features", lambda: reg.partial_fit(X[:, :-1], yr), ["feature", str(d)]),
        (
            "reg sample_weight short",
            lambda: MLPRegressor((4,), max_iter=1).fit(X, yr, sample_weight=np.ones(3)),
            ["sample_weight", "3"],
        ),
    ]

    def call(item):
        name, fn, mentions = item
        owner = clf if name.startswith("clf ") else reg
        model = getattr(owner, "model_", None)
        return _refusal(fn, mentions=mentions, model=model)

    _refuse_all(case, failures, items, call, k)


CI_SEEDS = list(range(12))
FUZZ_N = int(os.environ.get("FASTNN_FUZZ_N", "0") or 0)
SEEDS = list(range(FUZZ_N)) if FUZZ_N > 0 else CI_SEEDS


@pytest.mark.parametrize("seed", SEEDS)
def test_bad_inputs_are_refused_clearly(seed):
    case = Case(seed)
    k = 1000 if FUZZ_N > 0 else 12  # cases per group: all of them in a long run
    failures: list[str] = []
    _fit_checks(case, failures, k)
    _predict_checks(case, failures, k)
    _compile_and_construction_checks(case, failures, k)
    _layer_checks(case, failures, k)
    if seed % 4 == 0 or FUZZ_N > 0:
        _save_load_checks(case, failures)
    if seed % 3 == 0 or FUZZ_N > 0:
        _sklearn_checks(case, failures, k)
    assert not failures, f"seed {seed} ({case.family}, {case.loss}, {case.dtype}):\n" + "\n".join(failures)


@pytest.mark.parametrize("family_seed", [0, 5])  # a "seq" and an "embed" case
def test_every_construction_and_path_case(family_seed):
    """The cheap groups in full (CI draws a subset per seed): the regressions fixed with this fuzzer
    (a malformed input_shape named, a metric function of the wrong arity refused by compile, non-path
    and bytes paths of save/load) are always run."""
    case = Case(family_seed)
    failures: list[str] = []
    _compile_and_construction_checks(case, failures, 1000)
    _layer_checks(case, failures, 1000)
    _save_load_checks(case, failures)
    _path_checks(case, failures)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("seed", SEEDS)
def test_converted_inputs_train_like_the_clean_input(seed):
    case = Case(seed)
    failures: list[str] = []
    _converted_checks(case, failures)
    if seed % 4 == 1 or FUZZ_N > 0:
        _path_checks(case, failures)
    assert not failures, f"seed {seed} ({case.family}, {case.loss}, {case.dtype}):\n" + "\n".join(failures)


def test_copy_of_state_is_detached():
    """The fuzzer's before/after comparison copies the arrays (else a refusal's change is missed)."""
    case = Case(0)
    model = case.model()
    before = _state(model)
    arrays = model.state_arrays()
    name = next(iter(arrays))
    assert not _same_state(before, _state(model))
    snapshot = copy.deepcopy(before)
    model.fit(*case.data(), epochs=1, verbose=0)
    assert _same_state(snapshot, _state(model)), "fit changed nothing the fuzzer can see"
    assert name in before
