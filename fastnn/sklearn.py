"""scikit-learn estimators over fastnn networks (``pip install "fastnn[sklearn]"``).

- :class:`MLPClassifier`, :class:`MLPRegressor`: scikit-learn's MLP parameters where they mean
  the same thing, plus fastnn's own (dropout, batch_norm, optimizer, dtype, device, n_threads).
- :class:`NeuralNetClassifier`, :class:`NeuralNetRegressor`: any network from a builder
  ``build_fn(n_features, n_outputs, **module_params)``; ``module__<name>`` parameters go to the
  builder and ``optimizer__<name>`` ones to the optimizer, so GridSearchCV can search architectures.

All four share one fit loop (``_NeuralNetBase``): fastnn's :meth:`fastnn.Sequential.fit`, with a
callback that applies scikit-learn's stopping rule (``tol``, ``n_iter_no_change``, ``early_stopping``
on a held-out ``validation_fraction``). ``sample_weight`` weights each sample's loss: the loss is
``sum_i w_i l_i / sum_i w_i`` (:class:`fastnn.losses.SampleWeighted`, through ``Sequential.fit(sample_weight=...)``).

Threads: ``n_threads=None`` uses Numba's thread count, which joblib's process workers (the default
of ``GridSearchCV(n_jobs=k)``, ``cross_val_score(n_jobs=k)``) already set to CPUs // k through
``NUMBA_NUM_THREADS``; inside a joblib *thread* worker (``backend="threading"``) it uses 1 thread,
since the other workers share the cores; in a task on a ``dask.distributed`` worker (Dask's joblib
backend, ``with joblib.parallel_backend("dask")``) it uses the host's CPUs // the worker threads of all
worker processes on that host. An int sets the count for this estimator's fit and predict, up to
the process's ``NUMBA_NUM_THREADS`` (in a joblib process worker CPUs // k: raise it with
``joblib.parallel_config(inner_max_num_threads=...)``).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import os
import sys
import threading
import warnings
from dataclasses import dataclass
from numbers import Integral, Real
from typing import cast

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
except ImportError as exc:  # pragma: no cover - the optional extra
    raise ImportError('fastnn.sklearn needs scikit-learn: pip install "fastnn[sklearn]"') from exc
from scipy.special import expit, softmax
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions
from sklearn.utils.multiclass import _check_partial_fit_first_call, check_classification_targets, type_of_target
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, column_or_1d, validate_data

from . import _config, backend, init, optim
from . import losses as losses_mod
from .callbacks import Callback
from .kernels.activations import ACTIVATIONS
from .layers import Activation, BatchNorm1d, Dense, Dropout
from .model import Sequential

_SKLEARN_ACTIVATIONS = {"logistic": "sigmoid"}  # scikit-learn's names that fastnn spells otherwise


# ------------------------------------------------------------------------------ threads
def _in_joblib_thread_worker() -> bool:
    """True inside a worker thread of joblib's threading backend (its workers share the cores)."""
    if threading.current_thread() is threading.main_thread():
        return False
    try:
        from joblib.parallel import get_active_backend
    except ImportError:  # pragma: no cover - joblib comes with scikit-learn
        return False
    backend_, _ = get_active_backend()
    return getattr(backend_, "nesting_level", 0) >= 1


def _dask_worker_share() -> int | None:
    """Inside a task on a ``dask.distributed`` worker: the host's CPUs divided by the task slots
    that share them (the worker threads of every worker process on this host), at least 1.
    None outside a Dask worker. Dask's nanny sets no ``NUMBA_NUM_THREADS``: without this, each of
    k tasks on a host would start Numba's full thread count and oversubscribe the cores."""
    distributed = sys.modules.get("distributed")  # a Dask worker has imported it already
    if distributed is None or not hasattr(distributed, "get_worker"):  # (or another module of that name)
        return None
    try:
        worker = distributed.get_worker()
    except ValueError:  # not inside a task
        return None
    host = worker.address.rsplit(":", 1)[0]
    try:
        workers = distributed.get_client().scheduler_info(n_workers=-1)["workers"]
        slots = sum(info.get("nthreads", 1) for address, info in workers.items() if address.rsplit(":", 1)[0] == host)
    except Exception:  # pragma: no cover - a scheduler that cannot answer: count this worker alone
        slots = worker.state.nthreads
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(_config.get_num_threads(), cpus // max(slots, 1)))


@contextlib.contextmanager
def _threads(n_threads):
    """Numba's thread count set to ``n_threads`` (None: see the module docstring) inside the block;
    the count is per calling thread, so this changes nothing for other threads."""
    if n_threads is None:
        share = _dask_worker_share()
        if share is not None:
            n_threads = share
        else:
            n_threads = 1 if _in_joblib_thread_worker() else _config.get_num_threads()
    previous = _config.get_num_threads()
    _config.set_num_threads(n_threads)
    try:
        yield
    finally:
        _config.set_num_threads(previous)


# ------------------------------------------------------------------------------ losses and optimizers
def _gradient_scale(loss: str, n_outputs: int) -> float:
    """c: the gradient of fastnn's ``loss`` over scikit-learn's, at the same outputs. scikit-learn's
    data gradient at the output is (act - y) w_i / sum(w) for its three losses; fastnn's
    "cross_entropy" (mean over samples) has the same, "mse" (mean of e^2 over samples *and* the
    k outputs) 2 e w_i / (sum(w) k), "binary_cross_entropy" (mean over samples and the k labels)
    (act - y) w_i / (sum(w) k)."""
    return {"mse": 2.0 / n_outputs, "binary_cross_entropy": 1.0 / n_outputs}.get(loss, 1.0)


def _reported_loss_factor(loss: str, n_outputs: int) -> float:
    """fastnn's ``loss`` times this is scikit-learn's ``loss_``: its squared_loss is half the mean of
    e^2 (over samples and outputs), its binary_log_loss the sum over labels of the mean over samples."""
    return {"mse": 0.5, "binary_cross_entropy": float(n_outputs)}.get(loss, 1.0)


def _decoupled(optimizer: optim.Optimizer) -> bool:
    """Whether ``optimizer`` decays the weights apart from the gradient (AdamW, Lion:
    ``p *= 1 - lr * weight_decay``), not as an L2 term added to it (SGD, Adam, RMSProp, Adagrad)."""
    return bool(getattr(optimizer, "decoupled", False)) or isinstance(optimizer, optim.Lion)


def _rebuilt(optimizer: optim.Optimizer, **changes) -> optim.Optimizer:
    """A new, unbound optimizer of ``optimizer``'s class and hyper-parameters, ``changes`` applied
    (``weight_decay`` from ``alpha``, or the ``optimizer__`` parameters of an instance)."""
    config = optimizer.get_config()
    config.pop("name", None)
    unknown = sorted(set(changes) - set(config))
    if unknown:
        raise ValueError(
            f"the optimizer {optimizer!r} has no parameter {', '.join(map(repr, unknown))}; its parameters "
            f"are {', '.join(sorted(config))} (optimizer__<name> sets one)"
        )
    config.update(changes)
    try:
        return type(optimizer)(**config)
    except TypeError as exc:  # a subclass whose constructor takes other arguments than its config
        raise ValueError(
            f"cannot set {', '.join(sorted(changes))} of the optimizer {optimizer!r}: "
            f"{type(optimizer).__name__}(**get_config()) fails ({exc}); set alpha=0 (or leave out the "
            f"optimizer__ parameters)"
        ) from exc


def _check_outputs(model: Sequential, n_outputs: int) -> None:
    """The network must give ``n_outputs`` values per sample (one per class, label or target): a
    builder's wider last layer would otherwise give probabilities of classes that do not exist."""
    shape = model.output_shape  # (built: the builder's network was built for n_features)
    if shape is None or tuple(shape) != (n_outputs,):
        raise ValueError(
            f"the network gives outputs of shape {shape} per sample; the estimator needs ({n_outputs},): one "
            f"per class (classifier), label (multi-label) or target (regressor). Make build_fn's last layer "
            f"Dense(..., n_outputs), n_outputs being build_fn's second argument"
        )


_MISSING = object()


def _same(a, b) -> bool:
    """a == b, for parameter values (arrays compared element-wise; incomparable values differ)."""
    if a is b:
        return True
    if a is _MISSING or b is _MISSING:
        return False
    try:
        if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
            return bool(np.array_equal(a, b))
        return bool(a == b)
    except Exception:
        return False


def _dtype_name(dtype):
    """ "float32" for every spelling of a dtype (np.float32, np.dtype("float32")); others as given."""
    try:
        return np.dtype(dtype).name
    except TypeError:
        return dtype


#: scikit-learn's constraints of the parameters every estimator here has (``_validate_params``)
_SHARED_CONSTRAINTS = {
    "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
    "max_iter": [Interval(Integral, 1, None, closed="left")],
    "shuffle": ["boolean"],
    "random_state": ["random_state"],
    "tol": [Interval(Real, 0, None, closed="left")],
    "verbose": ["verbose"],
    "warm_start": ["boolean"],
    "early_stopping": ["boolean"],
    "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
    "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
    "optimizer": [str, optim.Optimizer],
    "dtype": [StrOptions({"float32", "float64"}), type, np.dtype],
    "device": [StrOptions({"cpu", "cuda"})],
    # (its upper bound, the process's NUMBA_NUM_THREADS, is checked at fit: _NeuralNetBase._validate)
    "n_threads": [None, Interval(Integral, 1, None, closed="left")],
}


# ------------------------------------------------------------------------------ the shared fit loop
_SPARSE_FORMATS = ["csr", "csc"]  # scikit-learn's MLPs take these (others are converted to csr)


def _sklearn_classes(labels: np.ndarray) -> np.ndarray:
    """Sorted unique ``labels`` with scikit-learn's ``classes_`` dtype (``unique_labels``:
    ``np.asarray(sorted(labels))``): object labels (pandas' object, "string" or categorical y) become
    the array NumPy makes of them, ``<U`` for strings.

    Parameters
    ----------
    labels : ndarray of shape (n_classes,)
        Sorted unique labels.

    Returns
    -------
    ndarray of shape (n_classes,)
        The same labels; a new array of their own dtype if ``labels`` was of object dtype.
    """
    return np.asarray(labels.tolist()) if labels.dtype == object else labels


def _dense(X):
    """X as a dense array: fastnn's layers take dense input, so a scipy.sparse X (e.g. a
    OneHotEncoder's or a ColumnTransformer's output) is densified, n_samples x n_features values."""
    return X.toarray() if hasattr(X, "toarray") else X


@dataclass
class _Validation:
    """The held-out part of one fit with early stopping."""

    X: np.ndarray
    y: np.ndarray
    weights: np.ndarray | None


class _Stopping(Callback):
    """scikit-learn's stopping rule after each epoch (:meth:`_NeuralNetBase._end_epoch`)."""

    def __init__(self, estimator, n_samples: int, validation, incremental: bool, loss_factor: float):
        self.estimator, self.n_samples, self.validation, self.incremental = (
            estimator,
            n_samples,
            validation,
            incremental,
        )
        self.loss_factor = loss_factor  # fastnn's loss to scikit-learn's scale (_reported_loss_factor)

    def on_epoch_end(self, epoch, logs=None):
        loss = logs["loss"] * self.loss_factor
        if self.estimator._end_epoch(loss, self.n_samples, self.validation, self.incremental):
            self.model.stop_training = True


class _NeuralNetBase(BaseEstimator):
    """What every estimator here shares: validation of X, the network's life cycle, the fit loop
    with scikit-learn's stopping rule, predict. Subclasses give the network (:meth:`_layers`), the
    optimizer (:meth:`_optimizer`) and the task's targets (:meth:`_targets`, :meth:`_validation_score`)."""

    loss_curve_: list[float]  # (fitted attributes: each estimator's Attributes section says them all)
    validation_scores_: list[float] | None
    _best_state: dict[str, np.ndarray] | None  # host copies of state_arrays() at best_validation_score_

    # -- hooks ----------------------------------------------------------------------------------
    def _layers(self, n_features: int, n_outputs: int):
        raise NotImplementedError

    def _network_params(self) -> dict:
        """The parameters that define the network (a warm start cannot change them)."""
        raise NotImplementedError

    def _new_optimizer(self) -> optim.Optimizer:
        """A new optimizer of the current choice (before :meth:`_optimizer_values`)."""
        raise NotImplementedError

    def _optimizer_key(self):
        """What chooses the optimizer: a change since the last fit builds a new one."""
        raise NotImplementedError

    def _optimizer_values(self, optimizer, batch_size: int, mean_weight: float, scale: float) -> dict:
        """``lr`` and ``weight_decay`` the parameters and this call's data give ``optimizer``
        (``scale``: :func:`_gradient_scale`); the ones left out stay as they are."""
        return {}

    def _check_params(self) -> None:
        """Checks of the parameters beyond ``_parameter_constraints``."""

    # -- the network ----------------------------------------------------------------------------
    def _seed(self) -> int:
        if isinstance(self.random_state, (int, np.integer)) and not isinstance(self.random_state, bool):
            return int(self.random_state)
        from sklearn.utils import check_random_state

        return int(check_random_state(self.random_state).randint(0, 2**31 - 1))

    def _new_model(self, n_features: int, n_outputs: int) -> Sequential:
        built = self._layers(n_features, n_outputs)
        if isinstance(built, Sequential):
            model = built.to(self.device)
            if not model.built:
                model.build((n_features,))
        else:
            model = Sequential(
                built, seed=self._seed(), dtype=self.dtype, device=self.device, input_features=n_features
            )
        _check_outputs(model, n_outputs)
        return model

    def _batch_size(self, n: int) -> int:
        if isinstance(self.batch_size, str) and self.batch_size == "auto":
            return min(200, n)
        if (
            isinstance(self.batch_size, bool)
            or not isinstance(self.batch_size, (int, np.integer))
            or self.batch_size < 1
        ):
            raise ValueError(f"batch_size must be 'auto' or a positive int, got {self.batch_size!r}")
        if self.batch_size > n:
            warnings.warn(
                f"batch_size ({self.batch_size}) is larger than the {n} training samples; it is clipped to {n}",
                UserWarning,
                stacklevel=5,
            )
        return min(int(self.batch_size), n)

    # -- fit ------------------------------------------------------------------------------------
    def fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None):
        """Train on (X, y) for up to ``max_iter`` epochs, with scikit-learn's stopping rule.

        A fresh network unless ``warm_start`` (then the previous one continues, with its
        optimizer state unless the optimizer choice changed; see ``warm_start``).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The training input, float64 or float32 (cast to the network's ``dtype``); a scipy.sparse
            matrix is densified.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Labels (classifiers: of any type; a 2-D 0/1 indicator for multi-label, dense or a
            scipy.sparse matrix, which is densified: predict gives a dense indicator) or real values
            (regressors).
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each sample's loss (None: all 1); the loss is sum_i w_i l_i / sum_i w_i.

        Returns
        -------
        self : object
            The fitted estimator.

        Raises
        ------
        ValueError
            For invalid X, y or parameters (scikit-learn's checks: ``InvalidParameterError``
            names the parameter), a classifier's y of one class; with ``warm_start``, a y of
            another kind than the fitted one or changed network parameters.

        Examples
        --------
        >>> from sklearn.datasets import make_regression
        >>> from fastnn.sklearn import MLPRegressor
        >>> X, y = make_regression(n_samples=40, n_features=3, noise=0.1, random_state=0)
        >>> y = y / 100  # targets of order 1
        >>> reg = MLPRegressor(hidden_layer_sizes=(8,), learning_rate_init=0.03, max_iter=1000, random_state=0)
        >>> reg.fit(X, y).n_iter_ < 1000  # stopped once the loss no longer improved by tol
        True
        """
        return self._fit(X, y, sample_weight, incremental=False)

    def _validate(self, incremental: bool) -> None:
        """scikit-learn's check of the parameters (InvalidParameterError names the one at fault);
        ``incremental``: for partial_fit, which cannot stop early (nothing to hold out of one epoch)."""
        self._validate_params()
        if incremental and self.early_stopping:  # scikit-learn refuses it too, rather than ignore it
            raise ValueError(
                "partial_fit does not support early_stopping=True: it trains one epoch on the data it is given, "
                "with no validation part held out. Use fit for early stopping, or set_params(early_stopping=False) "
                "before partial_fit"
            )
        limit = numba.config.NUMBA_NUM_THREADS  # fixed when Numba starts, per process
        if self.n_threads is not None and self.n_threads > limit:
            raise InvalidParameterError(
                f"The 'n_threads' parameter of {type(self).__name__} must be at most {limit}, the Numba "
                f"threads of this process (NUMBA_NUM_THREADS), got {self.n_threads}. In a joblib process "
                f"worker (GridSearchCV/cross_val_score with n_jobs=k) that is CPUs // k: give the workers "
                f"more with joblib.parallel_config(inner_max_num_threads=...), or leave n_threads=None"
            )
        self._check_params()

    def _fit(self, X, y, sample_weight, incremental: bool, classes=None):
        self._validate(incremental)
        with _threads(self.n_threads):  # the builder, the fit and the validation predictions
            return self._fit_on_threads(X, y, sample_weight, incremental, classes)

    def _check_same_network(self) -> None:
        """A warm start (or partial_fit) continues the fitted network: its defining parameters must
        not have changed since it was built."""
        before = getattr(self, "_fitted_network", None)
        if before is None:  # (an estimator pickled before this was recorded)
            return
        now = self._network_params()
        changed = [k for k in now if not _same(before.get(k, _MISSING), now[k])]
        if changed:
            details = ", ".join(f"{k}={before.get(k, _MISSING)!r} -> {now[k]!r}" for k in changed)
            raise ValueError(
                f"{', '.join(changed)} changed since the network was built ({details}); warm_start=True "
                f"and partial_fit continue the fitted network and cannot change it: use warm_start=False "
                f"(or a fresh estimator, e.g. sklearn.base.clone) to build a new one"
            )

    def _set_optimizer(self, fresh: bool, loss: str, n_outputs: int, batch_size: int, mean_weight: float) -> None:
        """Give the network the optimizer of the current parameters: a new one at a fresh fit or when
        the optimizer choice changed, else the fitted one (its state kept) with this call's
        learning rate and weight decay."""
        scale = _gradient_scale(loss, n_outputs)
        key = self._optimizer_key()
        if fresh or not _same(getattr(self, "_fitted_optimizer", _MISSING), key):
            optimizer = self._new_optimizer()
            values = self._optimizer_values(optimizer, batch_size, mean_weight, scale)
            if "weight_decay" in values and optimizer.get_config().get("weight_decay") != values["weight_decay"]:
                optimizer = _rebuilt(optimizer, weight_decay=values["weight_decay"])
            self.model_.compile(loss, optimizer)
        else:
            current = cast(optim.Optimizer, self.model_.optimizer)  # (a fitted network is compiled)
            values = self._optimizer_values(current, batch_size, mean_weight, scale)
            if "weight_decay" in values and current.get_config().get("weight_decay") != values["weight_decay"]:
                optimizer = _rebuilt(current, weight_decay=values["weight_decay"])
                optimizer.load_state_dict(current.state_dict())  # the moments and step count continue
                self.model_.compile(loss, optimizer)
        if "lr" in values:  # (read by the fused step at each step)
            cast(optim.Optimizer, self.model_.optimizer).lr = values["lr"]
        self._fitted_optimizer = key

    def _fit_on_threads(self, X, y, sample_weight, incremental: bool, classes):
        fresh = not hasattr(self, "model_") or not (incremental or self.warm_start)
        if not fresh:
            self._check_same_network()
        X, y = validate_data(
            self,
            X,
            y,
            reset=fresh,
            accept_sparse=_SPARSE_FORMATS,
            multi_output=True,
            dtype=(np.float64, np.float32),
            y_numeric=not self._is_classifier(),
        )
        X, y = _dense(X), _dense(y)  # (a sparse y: a multi-label indicator, as scikit-learn's MLPClassifier takes)
        targets, n_outputs, loss = self._targets(y, fresh, classes)
        n = X.shape[0]
        weights = (
            None
            if sample_weight is None
            else _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        )
        early = bool(self.early_stopping)  # (not with partial_fit: _validate)
        n_val = -(-n * float(self.validation_fraction) // 1)  # train_test_split's ceil(fraction * n)
        if early and n_val < 2:  # refused before a fresh fit builds anything: no half-made model_ stays
            raise ValueError(
                f"The validation set is too small: {int(n_val)} of the {n} samples "
                f"(validation_fraction={self.validation_fraction}); early stopping needs at least 2. "
                f"Increase 'validation_fraction' or the size of your dataset."
            )
        if fresh:
            self.model_ = self._new_model(X.shape[1], n_outputs)
            self._fitted_network = self._network_params()
            self.n_outputs_ = n_outputs
            self.loss_curve_, self.n_iter_, self.t_ = [], 0, 0
            self.best_loss_ = None if early else np.inf
            self.validation_scores_ = [] if early else None
            self.best_validation_score_ = -np.inf if early else None
            self._best_state = None
            self._no_improvement = 0
        validation = None
        if early:
            split = [X, targets] + ([] if weights is None else [weights])
            stratify = targets if targets.ndim == 1 else None
            parts = train_test_split(
                *split, test_size=self.validation_fraction, random_state=self._seed(), stratify=stratify
            )
            X, X_val, targets, y_val = parts[:4]
            weights, w_val = (parts[4], parts[5]) if weights is not None else (None, None)
            validation = _Validation(X_val, y_val, w_val)
            if self.validation_scores_ is None:  # a warm start of a fit without early stopping
                self.validation_scores_, self.best_validation_score_ = [], -np.inf
        batch_size = self._batch_size(X.shape[0])  # (of the training part, with early stopping)
        # the L2 strength and learning rate of this call's parameters and (training) data
        self._set_optimizer(fresh, loss, n_outputs, batch_size, 1.0 if weights is None else float(weights.mean()))
        epochs = 1 if incremental else self.max_iter
        epochs_before = self.n_iter_
        self.model_.fit(
            X,
            targets,
            loss=losses_mod.get(loss),
            epochs=epochs,
            batch_size=batch_size,
            shuffle=self.shuffle,
            sample_weight=weights,  # the loss: sum_i w_i l_i / sum_i w_i
            callbacks=[_Stopping(self, X.shape[0], validation, incremental, _reported_loss_factor(loss, n_outputs))],
            verbose=0,
        )
        best = getattr(self, "_best_state", None)  # (None in an estimator pickled before it was kept)
        if validation is not None and best is not None:  # back to best_validation_score_'s weights, as scikit-learn
            self.model_.load_state_arrays(best)
        if not incremental and self.n_iter_ - epochs_before == self.max_iter and not self.model_.stop_training:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the optimization "
                f"hasn't converged yet.",
                ConvergenceWarning,
                stacklevel=4,
            )
        return self

    def _end_epoch(self, loss: float, n_samples: int, validation, incremental: bool) -> bool:
        """Record an epoch's training loss (and validation score); True to stop (scikit-learn's
        rule: no improvement by more than ``tol`` for more than ``n_iter_no_change`` epochs)."""
        self.loss_ = float(loss)
        self.loss_curve_.append(self.loss_)
        self.n_iter_ += 1
        self.t_ += n_samples
        message = f"Iteration {self.n_iter_}, loss = {loss:.8f}"
        if validation is not None:
            score = self._validation_score(self.model_.predict(validation.X), validation.y, validation.weights)
            if self.validation_scores_ is None:  # fit sets a list whenever there is validation data
                self.validation_scores_ = []
            self.validation_scores_.append(score)
            message += f", validation score = {score:.6f}"
            improved = score >= self.best_validation_score_ + self.tol
            if score > self.best_validation_score_:  # (over warm starts too: scikit-learn's _best_coefs)
                self._best_state = {name: backend.host_copy(a) for name, a in self.model_.state_arrays().items()}
                self.best_validation_score_ = score
        else:
            improved = self.best_loss_ is None or loss <= self.best_loss_ - self.tol
            self.best_loss_ = loss if self.best_loss_ is None else min(self.best_loss_, loss)
        self._no_improvement = 0 if improved else self._no_improvement + 1
        if self.verbose:
            print(message)
        if incremental or self._no_improvement <= self.n_iter_no_change:
            return False
        if self.verbose:
            print(
                f"Training stopped: no improvement by more than tol={self.tol} for {self.n_iter_no_change} "
                f"consecutive epochs."
            )
        return True

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # (densified: _dense)
        return tags

    # -- predict --------------------------------------------------------------------------------
    def _outputs(self, X) -> np.ndarray:
        """The network's outputs (n, n_outputs_) for X, float64."""
        check_is_fitted(self, "model_")
        X = _dense(validate_data(self, X, reset=False, accept_sparse=_SPARSE_FORMATS, dtype=(np.float64, np.float32)))
        with _threads(self.n_threads):
            return self.model_.predict(X).astype(np.float64)


class _Classifier(ClassifierMixin, _NeuralNetBase):
    """Labels of any type (a label encoder: ``classes_``), or a 2-D 0/1 indicator for multi-label
    (``binary_cross_entropy`` over k outputs)."""

    def partial_fit(
        self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None, classes: ArrayLike | None = None
    ):
        """One epoch over (X, y), continuing the network (no early stopping: refused, as scikit-learn's).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input, float64 or float32.
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
            Labels, or a 0/1 indicator for multi-label.
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each sample's loss (None: all 1).
        classes : array-like of shape (n_classes,), default=None
            Every class of the whole problem; required on the first call (not for multi-label y).

        Returns
        -------
        self : object
            The estimator, trained one more epoch.

        Raises
        ------
        ValueError
            Without ``classes`` on the first call, for labels outside them, a y of another kind
            (multi-label or multiclass) than the fitted one, invalid or changed network parameters,
            ``early_stopping=True``.

        Examples
        --------
        >>> from sklearn.datasets import make_classification
        >>> from fastnn.sklearn import MLPClassifier
        >>> X, y = make_classification(n_samples=40, n_features=4, random_state=0)
        >>> clf = MLPClassifier(hidden_layer_sizes=(8,), learning_rate_init=0.03, random_state=0)
        >>> for epoch in range(3):  # e.g. one chunk of a stream per call
        ...     clf = clf.partial_fit(X, y, classes=[0, 1])
        >>> clf.n_iter_, clf.classes_
        (3, array([0, 1]))
        """
        self._validate(incremental=True)  # (before the classes check: an invalid parameter is named first)
        y = _dense(y)  # (a sparse multi-label indicator)
        if not (np.ndim(y) == 2 and np.shape(y)[1] > 1):
            _check_partial_fit_first_call(self, classes)
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def _is_classifier(self) -> bool:
        return True

    def _targets(self, y, fresh: bool, classes):
        if y.ndim == 2 and y.shape[1] > 1:
            if type_of_target(y) != "multilabel-indicator":
                raise ValueError(
                    f"a 2-D y must be a multi-label indicator of 0/1 values (one column per label); got "
                    f"{type_of_target(y)!r} targets. Multi-class multi-output is not supported: fit one "
                    f"estimator per output (sklearn.multioutput.MultiOutputClassifier)"
                )
            if fresh:
                self.classes_, self.out_activation_ = np.arange(y.shape[1]), "logistic"
            elif self.out_activation_ != "logistic":
                raise ValueError(
                    f"the estimator was fitted on multiclass labels ({len(self.classes_)} classes); y is a "
                    f"multi-label indicator with {y.shape[1]} columns: use warm_start=False or a fresh estimator"
                )
            elif y.shape[1] != len(self.classes_):
                raise ValueError(
                    f"y has {y.shape[1]} label columns, the estimator was fitted on a multi-label indicator "
                    f"with {len(self.classes_)}: use warm_start=False or a fresh estimator"
                )
            return y.astype(np.float64), y.shape[1], "binary_cross_entropy"
        if not fresh and self.out_activation_ == "logistic":
            raise ValueError(
                f"the estimator was fitted on a multi-label indicator with {len(self.classes_)} columns; y is "
                f"1-D labels: use warm_start=False or a fresh estimator"
            )
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        codes = None
        if fresh:
            if classes is None:  # the classes are y's labels: their codes come with them, in one sort
                found, codes = np.unique(y, return_inverse=True)
            else:
                found = np.unique(np.asarray(classes))
            found = _sklearn_classes(found)
            if len(found) < 2:
                raise ValueError(
                    f"a classifier needs samples of at least 2 classes, y has only one class: {found[0]!r}"
                )
            self.classes_, self.out_activation_ = found, "softmax"
        if codes is not None:
            return codes.astype(np.int64, copy=False).reshape(-1), len(self.classes_), "cross_entropy"
        unknown = np.setdiff1d(y, self.classes_)
        if unknown.size:
            raise ValueError(
                f"y contains labels {unknown.tolist()} the estimator was not fitted with "
                f"(classes_ = {self.classes_.tolist()})"
            )
        return np.searchsorted(self.classes_, y).astype(np.int64), len(self.classes_), "cross_entropy"

    def _validation_score(self, outputs, y, weights) -> float:
        predicted = (outputs > 0).astype(np.int64) if outputs.ndim == 2 and y.ndim == 2 else outputs.argmax(axis=1)
        return float(accuracy_score(y, predicted, sample_weight=weights))

    def decision_function(self, X: ArrayLike) -> NDArray[np.float64]:
        """The network's outputs (logits) for X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input.

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_classes), float64
            (n_samples,) for two classes (the second class's logit minus the first's), else
            (n_samples, n_classes) (or (n_samples, n_labels) for multi-label).

        Examples
        --------
        >>> from sklearn.datasets import make_classification
        >>> from fastnn.sklearn import MLPClassifier
        >>> X, y = make_classification(n_samples=40, n_features=4, random_state=0)
        >>> clf = MLPClassifier(hidden_layer_sizes=(8,), alpha=1.0, learning_rate_init=0.03, max_iter=1000, random_state=0)
        >>> clf = clf.fit(X, y)
        >>> clf.decision_function(X[3:6]).round(1)  # two classes: one logit difference per sample
        array([ 7.2, -3. ,  2.4])
        """
        out = self._outputs(X)
        if self.out_activation_ == "softmax" and len(self.classes_) == 2:
            return out[:, 1] - out[:, 0]
        return out

    def predict_proba(self, X: ArrayLike) -> NDArray[np.float64]:
        """Class probabilities: softmax of the logits, or per-label sigmoids (multi-label).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input.

        Returns
        -------
        ndarray of shape (n_samples, n_classes), float64
            The probability of each class (columns in the order of ``classes_``); for multi-label,
            (n_samples, n_labels) independent probabilities.

        Examples
        --------
        >>> from sklearn.datasets import make_classification
        >>> from fastnn.sklearn import MLPClassifier
        >>> X, y = make_classification(n_samples=40, n_features=4, random_state=0)
        >>> clf = MLPClassifier(hidden_layer_sizes=(8,), alpha=1.0, learning_rate_init=0.03, max_iter=1000, random_state=0)
        >>> clf = clf.fit(X, y)
        >>> clf.predict_proba(X[3:6]).round(2)
        array([[0.  , 1.  ],
               [0.95, 0.05],
               [0.08, 0.92]])
        """
        out = self._outputs(X)
        return expit(out) if self.out_activation_ == "logistic" else softmax(out, axis=1)

    def predict_log_proba(self, X: ArrayLike) -> NDArray[np.float64]:
        """Logarithm of :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input.

        Returns
        -------
        ndarray of shape (n_samples, n_classes), float64
            The log-probability of each class.

        Examples
        --------
        >>> from sklearn.datasets import make_classification
        >>> from fastnn.sklearn import MLPClassifier
        >>> X, y = make_classification(n_samples=40, n_features=4, random_state=0)
        >>> clf = MLPClassifier(hidden_layer_sizes=(8,), alpha=1.0, learning_rate_init=0.03, max_iter=1000, random_state=0)
        >>> clf = clf.fit(X, y)
        >>> clf.predict_log_proba(X[3:6]).round(1)
        array([[-7.2, -0. ],
               [-0. , -3.1],
               [-2.5, -0.1]])
        """
        return np.log(self.predict_proba(X))

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predicted labels: the class of the largest logit (multi-label: each logit > 0).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input.

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_labels)
            Labels of the type of ``classes_``; int64 0/1 indicators for multi-label.

        Examples
        --------
        >>> from sklearn.datasets import make_classification
        >>> from fastnn.sklearn import MLPClassifier
        >>> X, y = make_classification(n_samples=40, n_features=4, random_state=0)
        >>> clf = MLPClassifier(hidden_layer_sizes=(8,), alpha=1.0, learning_rate_init=0.03, max_iter=1000, random_state=0)
        >>> clf = clf.fit(X, y)
        >>> clf.predict(X[3:6]), y[3:6]
        (array([1, 0, 1]), array([1, 0, 1]))
        """
        out = self._outputs(X)
        if self.out_activation_ == "logistic":
            return (out > 0).astype(np.int64)
        return self.classes_[out.argmax(axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class _Regressor(RegressorMixin, _NeuralNetBase):
    """Real targets (n,) or (n, n_outputs), squared error."""

    def partial_fit(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None):
        """One epoch over (X, y), continuing the network (no early stopping: refused, as scikit-learn's).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input, float64 or float32.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The targets.
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each sample's loss (None: all 1).

        Returns
        -------
        self : object
            The estimator, trained one more epoch.

        Raises
        ------
        ValueError
            For a y with another number of outputs than the fitted estimator's, invalid or changed
            network parameters, ``early_stopping=True``.

        Examples
        --------
        >>> from sklearn.datasets import make_regression
        >>> from fastnn.sklearn import MLPRegressor
        >>> X, y = make_regression(n_samples=40, n_features=3, noise=0.1, random_state=0)
        >>> y = y / 100  # targets of order 1
        >>> reg = MLPRegressor(hidden_layer_sizes=(8,), learning_rate_init=0.03, random_state=0)
        >>> for epoch in range(3):
        ...     reg = reg.partial_fit(X, y)
        >>> reg.n_iter_, reg.n_outputs_
        (3, 1)
        """
        return self._fit(X, y, sample_weight, incremental=True)

    def _is_classifier(self) -> bool:
        return False

    def _targets(self, y, fresh: bool, classes):
        if y.ndim == 2 and y.shape[1] == 1:  # scikit-learn's MLPRegressor ravels it, with its warning
            y = column_or_1d(y, warn=True)
        targets = np.asarray(y, np.float64).reshape(y.shape[0], -1)
        if fresh:
            self.out_activation_ = "identity"
        elif targets.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {targets.shape[1]} outputs, the fitted estimator has {self.n_outputs_}")
        return targets, targets.shape[1], "mse"

    def _validation_score(self, outputs, y, weights) -> float:
        return float(r2_score(y, outputs, sample_weight=weights))

    def predict(self, X: ArrayLike) -> NDArray[np.float64]:
        """The network's predictions for X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input.

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_outputs), float64
            (n_samples,) for a y of shape (n_samples,) or (n_samples, 1) at fit (as scikit-learn's),
            else one column per output.

        Examples
        --------
        >>> from sklearn.datasets import make_regression
        >>> from fastnn.sklearn import MLPRegressor
        >>> X, y = make_regression(n_samples=40, n_features=3, noise=0.1, random_state=0)
        >>> y = y / 100  # targets of order 1
        >>> reg = MLPRegressor(hidden_layer_sizes=(8,), learning_rate_init=0.03, max_iter=1000, random_state=0)
        >>> reg.fit(X, y).predict(X[:3]).round(1), y[:3].round(1)
        (array([ 2.4, -0.8,  1.2]), array([ 2.4, -0.8,  1.3]))
        """
        out = self._outputs(X)
        return out[:, 0] if out.shape[1] == 1 else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


# ------------------------------------------------------------------------------ MLPs
_SHARED_PARAMETERS = """
    batch_size : int or "auto", default="auto"
        Samples per step; "auto" is min(200, n_samples).
    max_iter : int, default=200
        Epochs (passes over the data) at most.
    shuffle : bool, default=True
        Shuffle the samples each epoch (fastnn's counter-based order: depends on the seed and epoch).
    random_state : int, RandomState instance or None, default=None
        Seed of the initial weights, the shuffling order, dropout masks and the validation split.
    tol : float, default=1e-4
        An epoch improves when its training loss is at least tol below the lowest so far (or its
        validation score at least tol above the best so far), scikit-learn's rule.
    verbose : bool, default=False
        Print the loss (and validation score) after each epoch.
    warm_start : bool, default=False
        ``fit`` continues the previous network instead of a new one (as ``partial_fit`` does). Kept:
        the weights and, while the optimizer choice (``optimizer``, and for the NeuralNet estimators its
        ``optimizer__`` parameters) is unchanged, the optimizer's state (moments, step count); its
        learning rate and weight decay follow the current parameters and data (``alpha``,
        ``learning_rate_init``, batch size, sample weights) at every call. A changed optimizer
        choice starts a new optimizer (as scikit-learn's warm start does). The parameters that
        define the network (``hidden_layer_sizes``, ``activation``, ``dropout``, ``batch_norm``,
        ``dtype``, ``device``; ``build_fn`` and ``module__`` parameters) cannot change: ValueError.
        Classifiers: y's labels must be among ``classes_`` (a subset is fine, as for partial_fit;
        scikit-learn's warm start refuses any other set than ``classes_``).
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the data (stratified for classifiers of 1-D labels), stop
        when its score (accuracy, R^2) stops improving, and keep the weights of the best score
        (``best_validation_score_``: with ``warm_start``, the best of all fits, as scikit-learn's).
        Not with ``partial_fit`` (ValueError, as scikit-learn's).
    validation_fraction : float, default=0.1
        Share of the training data held out for early stopping, in (0, 1).
    n_iter_no_change : int, default=10
        Stop when more than this many epochs in a row have not improved (see ``tol``).
    optimizer : str or fastnn.optim.Optimizer, default="adam"
        A fastnn optimizer name ("adam", "sgd", "adamw", "rmsprop", "adagrad", "lion"), or an
        instance (copied at each fresh fit, with its own learning rate; MLPClassifier and MLPRegressor: a non-zero ``alpha``
        sets the copy's weight decay and needs an instance with a weight decay of 0, else
        ValueError: set ``alpha=0`` to keep the instance's own, e.g. AdamW's default 1e-2).
    dtype : {"float32", "float64"}, default="float32"
        The network's floating-point type.
    device : {"cpu", "cuda"}, default="cpu"
        Where the network trains and predicts.
    n_threads : int or None, default=None
        Numba threads for fit and predict; None: Numba's count, 1 inside a joblib worker thread
        (joblib's process workers already get CPUs // n_jobs); see :mod:`fastnn.sklearn`."""

_FITTED_ATTRIBUTES = """
    model_ : fastnn.Sequential
        The trained network (its outputs are logits for classifiers).
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (``n_features_in_``,)
        Defined when X was a DataFrame with string column names.
    n_outputs_ : int
        Number of outputs of the network.
    out_activation_ : {"softmax", "logistic", "identity"}
        How outputs become predictions: softmax over classes, per-label sigmoid, none.
    loss_ : float
        Training loss of the last epoch (the last value of ``loss_curve_``).
    loss_curve_ : list of float
        Training loss of each epoch on scikit-learn's scale (the data loss, without the L2 term):
        cross-entropy, half the mean squared error (regression), the binary log-loss summed over
        the labels (multi-label). ``tol`` compares these values.
    best_loss_ : float or None
        Lowest training loss (None with early stopping).
    validation_scores_ : list of float or None
        Validation score of each epoch (with early stopping, else None).
    best_validation_score_ : float or None
        Best validation score (with early stopping, else None).
    n_iter_ : int
        Epochs run, in all: warm-start fits and partial_fit calls add to it, so it is always
        ``len(loss_curve_)`` (scikit-learn's counts only the last call's epochs: 1 after a
        partial_fit).
    t_ : int
        Training samples seen."""


class _MLP:
    """A stack of Dense layers (scikit-learn's MLP parameters where they mean the same)."""

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        alpha=1e-4,
        batch_size="auto",
        learning_rate_init=1e-3,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        dropout=0.0,
        batch_norm=False,
        optimizer="adam",
        dtype="float32",
        device="cpu",
        n_threads=None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.optimizer = optimizer
        self.dtype = dtype
        self.device = device
        self.n_threads = n_threads

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [str],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "batch_norm": ["boolean"],
        **_SHARED_CONSTRAINTS,
    }

    def _hidden_sizes(self) -> list:
        return [self.hidden_layer_sizes] if np.isscalar(self.hidden_layer_sizes) else list(self.hidden_layer_sizes)

    def _check_params(self):
        if _SKLEARN_ACTIVATIONS.get(self.activation, self.activation) not in ACTIVATIONS:
            fastnn_names = ", ".join(repr(name) for name in ACTIVATIONS if name not in ("identity", "tanh", "relu"))
            raise InvalidParameterError(
                f"The 'activation' parameter of {type(self).__name__} must be one of scikit-learn's 'identity', "
                f"'logistic', 'tanh', 'relu' or a fastnn activation ({fastnn_names}). Got {self.activation!r} instead."
            )
        sizes = self._hidden_sizes()
        if not all(isinstance(size, Integral) and not isinstance(size, bool) and size >= 1 for size in sizes):
            raise InvalidParameterError(
                f"The 'hidden_layer_sizes' parameter of {type(self).__name__} must be an int >= 1 or a "
                f"sequence of ints >= 1. Got {self.hidden_layer_sizes!r} instead."
            )

    def _network_params(self):
        return {
            "hidden_layer_sizes": tuple(int(size) for size in self._hidden_sizes()),
            "activation": self.activation,
            "dropout": self.dropout,
            "batch_norm": bool(self.batch_norm),
            "dtype": _dtype_name(self.dtype),
            "device": self.device,
        }

    def _layers(self, n_features, n_outputs):
        sizes = self._hidden_sizes()
        activation = _SKLEARN_ACTIVATIONS.get(self.activation, self.activation)
        layers, width = [], n_features
        for size in sizes:
            if self.batch_norm:  # Dense -> BatchNorm -> activation
                layers += [Dense(width, size), BatchNorm1d(size), Activation(activation)]
            else:
                layers.append(Dense(width, size, activation=activation))
            if self.dropout:
                layers.append(Dropout(self.dropout))
            width = size
        return [*layers, Dense(width, n_outputs)]

    def _new_model(self, n_features, n_outputs):
        model = super()._new_model(n_features, n_outputs)
        _sklearn_initialisation(model, self.activation)
        return model

    def _new_optimizer(self):
        if isinstance(self.optimizer, optim.Optimizer):
            return copy.deepcopy(self.optimizer)
        return optim.get(self.optimizer)

    def _optimizer_key(self):
        if isinstance(self.optimizer, optim.Optimizer):
            return ("instance", type(self.optimizer), self.optimizer.get_config())
        return ("name", self.optimizer.lower())

    def _optimizer_values(self, optimizer, batch_size, mean_weight, scale):
        # scikit-learn's L2 term: alpha * W / (the batch's weight sum) added to the gradient of its data
        # loss; fastnn's loss has `scale` times that gradient, so the decay is scaled alike (the same
        # objective, times `scale`). A decoupled decay (AdamW, Lion) is no L2 term: alpha / batch weight.
        decay = float(self.alpha) / (batch_size * mean_weight) * (1.0 if _decoupled(optimizer) else scale)
        if isinstance(self.optimizer, optim.Optimizer):  # its own learning rate, alpha on a decay of 0
            own = self.optimizer.get_config().get("weight_decay", _MISSING)
            if not self.alpha:
                return {"lr": self.optimizer.lr}
            if own is _MISSING:
                raise ValueError(
                    f"alpha={self.alpha} needs an optimizer with a weight_decay; {self.optimizer!r} has "
                    f"none: set alpha=0"
                )
            if own != 0:
                raise ValueError(
                    f"alpha={self.alpha} and the optimizer instance's weight_decay={own} are both L2 "
                    f"penalties: set alpha=0 or the instance's weight_decay=0"
                )
            return {"lr": self.optimizer.lr, "weight_decay": decay}
        # plain SGD's steps scale with the gradient: learning_rate_init / scale gives scikit-learn's steps
        # (Adam, RMSProp, Adagrad and Lion are invariant to the gradient's scale, up to eps)
        lr = self.learning_rate_init / scale if isinstance(optimizer, optim.SGD) else self.learning_rate_init
        return {"lr": float(lr), "weight_decay": decay}


def _sklearn_initialisation(model: Sequential, activation: str) -> None:
    """Give ``model``'s Dense layers scikit-learn's initial weights (its MLP's ``_init_coef``): weight
    and bias from U(-b, b), b = sqrt(factor / (fan_in + fan_out)), factor 2 for the "logistic"
    activation, else 6 (a Glorot uniform weight, a bias of the same bound). Drawn from fastnn's
    counter RNG with the model's seed, each parameter's stream its index, as the model's own
    initialisation; every other parameter (a BatchNorm's) keeps its own."""
    factor = 2.0 if activation == "logistic" else 6.0
    arrays = {name: backend.host_copy(a) for name, a in model.state_arrays().items()}
    for stream, (name, _, _) in enumerate(model.named_parameters()):
        layer, kind = name.split(".", 1)
        dense = model.layers[int(layer)]
        if isinstance(dense, Dense) and kind in ("weight", "bias"):
            fan_in, fan_out = arrays[f"{layer}.weight"].shape
            bound = math.sqrt(factor / (fan_in + fan_out))
            init.uniform(arrays[name], -bound, bound, seed=model.seed, stream=stream)
    model.load_state_arrays(arrays)


_MLP_PARAMETERS = """
    hidden_layer_sizes : tuple of int, default=(100,)
        Width of each hidden layer.
    activation : str, default="relu"
        Hidden activation: scikit-learn's "identity", "logistic", "tanh", "relu", or any fastnn
        activation ("gelu", "elu", "leaky_relu" ...).
    alpha : float, default=1e-4
        L2 penalty on the weight matrices, as scikit-learn's: ``alpha * W / (the batch's weight sum)``
        added to the gradient of scikit-learn's loss (here the batch's weight sum is ``batch_size`` x the
        mean sample weight, recomputed at every fit and partial_fit call). fastnn's losses have
        c times scikit-learn's gradient ("mse": c = 2 / n_outputs, multi-label
        "binary_cross_entropy": c = 1 / n_labels, else 1), so the optimizer's weight decay is
        ``c * alpha / (batch weight)``: the same objective, times c. With "adamw" and "lion" (decoupled
        weight decay, ``p *= 1 - lr * weight_decay``) the weight decay is ``alpha / (batch weight)``, not
        scikit-learn's L2 penalty. With an ``optimizer`` instance, alpha sets its copy's weight
        decay; an instance with a weight_decay of its own needs alpha=0 (else ValueError).
    learning_rate_init : float, default=1e-3
        The optimizer's learning rate, scikit-learn's: for "sgd" it is divided by c (see
        ``alpha``), giving scikit-learn's steps (Adam and the others are invariant to the
        gradient's scale). Not used when ``optimizer`` is an instance (its own lr is).
    dropout : float, default=0.0
        Dropout probability after each hidden layer (0: none).
    batch_norm : bool, default=False
        Batch normalisation before each hidden activation."""

_MLP_INITIALISATION = """
    The initial weights are scikit-learn's MLP's: every Dense weight and bias drawn from U(-b, b),
    b = sqrt(factor / (fan_in + fan_out)), factor 2 for "logistic", else 6 (from fastnn's counter RNG
    and ``random_state``: the draws differ from scikit-learn's)."""


class MLPClassifier(_MLP, _Classifier):
    __doc__ = f"""Multi-layer perceptron classifier trained by fastnn (softmax cross-entropy).

    Labels of any type (``classes_``); a 2-D 0/1 ``y`` is multi-label (a sigmoid per label,
    binary cross-entropy). Outputs are logits: ``decision_function``; ``predict_proba`` applies
    softmax (or sigmoids).
{_MLP_INITIALISATION}

    Parameters
    ----------{_MLP_PARAMETERS}{_SHARED_PARAMETERS}

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The labels (0 .. n_labels - 1 for multi-label).{_FITTED_ATTRIBUTES}

    See Also
    --------
    MLPRegressor : The same network for regression.
    NeuralNetClassifier : Any fastnn network, from a builder function.
    sklearn.neural_network.MLPClassifier : scikit-learn's own, whose parameters these follow.

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from sklearn.model_selection import train_test_split
    >>> from fastnn.sklearn import MLPClassifier
    >>> X, y = make_classification(n_samples=60, n_features=4, random_state=1)
    >>> X_train, X_test, y_train, y_test = train_test_split(X, y, stratify=y, random_state=1)
    >>> clf = MLPClassifier(hidden_layer_sizes=(8,), learning_rate_init=0.03, max_iter=1000, random_state=1)
    >>> clf = clf.fit(X_train, y_train)
    >>> clf.predict_proba(X_test[:1]).round(2)
    array([[1., 0.]])
    >>> clf.predict(X_test[:5]), y_test[:5]
    (array([0, 1, 1, 1, 1]), array([0, 1, 1, 1, 1]))
    >>> round(clf.score(X_test, y_test), 2)
    1.0
    """


class MLPRegressor(_MLP, _Regressor):
    __doc__ = f"""Multi-layer perceptron regressor trained by fastnn (mean squared error).

    ``y`` of shape (n_samples,) or (n_samples, n_outputs).
{_MLP_INITIALISATION}

    Parameters
    ----------{_MLP_PARAMETERS}{_SHARED_PARAMETERS}

    Attributes
    ----------{_FITTED_ATTRIBUTES}

    See Also
    --------
    MLPClassifier : The same network for classification.
    NeuralNetRegressor : Any fastnn network, from a builder function.
    sklearn.neural_network.MLPRegressor : scikit-learn's own, whose parameters these follow.

    Examples
    --------
    >>> from sklearn.datasets import make_regression
    >>> from sklearn.model_selection import train_test_split
    >>> from fastnn.sklearn import MLPRegressor
    >>> X, y = make_regression(n_samples=60, n_features=3, noise=0.1, random_state=1)
    >>> X_train, X_test, y_train, y_test = train_test_split(X, y / 100, random_state=1)
    >>> reg = MLPRegressor(hidden_layer_sizes=(8,), learning_rate_init=0.03, max_iter=1000, random_state=1)
    >>> reg = reg.fit(X_train, y_train)
    >>> reg.predict(X_test[:2]).round(1), y_test[:2].round(1)
    (array([-1.6,  0.3]), array([-1.5,  0.2]))
    >>> round(reg.score(X_test, y_test), 2)
    1.0
    """


# ------------------------------------------------------------------------------ any network
_ROUTED = ("module__", "optimizer__")


def default_network(n_features: int, n_outputs: int, hidden: int = 100, activation: str = "relu") -> list:
    """The builder used when ``build_fn`` is None: one hidden Dense layer.

    Parameters
    ----------
    n_features : int
        Input features.
    n_outputs : int
        Outputs (classes, labels or regression targets).
    hidden : int, default=100
        Width of the hidden layer (``module__hidden``).
    activation : str, default="relu"
        The hidden layer's activation (``module__activation``).

    Returns
    -------
    list of fastnn layers
        ``[Dense(n_features, hidden, activation), Dense(hidden, n_outputs)]``.

    Examples
    --------
    >>> from fastnn.sklearn import default_network
    >>> default_network(4, 3, hidden=8)
    [Dense(4, 8, activation='relu'), Dense(8, 3)]
    """
    return [Dense(n_features, hidden, activation=activation), Dense(hidden, n_outputs)]


def _check_builder_call(build, module_params: dict) -> None:
    """``build(n_features, n_outputs, **module_params)`` must match the builder's signature: a
    TypeError naming the ``module__`` parameters otherwise (not the builder's bare "unexpected
    keyword argument", which does not say where the argument came from)."""
    try:
        signature = inspect.signature(build)
    except (TypeError, ValueError):  # no signature to check (e.g. a builtin): the call itself tells
        return
    try:
        signature.bind(0, 0, **module_params)
    except TypeError as exc:
        given = ", ".join(f"module__{k}" for k in module_params) or "no module__ parameters"
        raise TypeError(
            f"build_fn {getattr(build, '__name__', build)}{signature} cannot be called with {given} ({exc}): it "
            f"is called as build_fn(n_features, n_outputs, **module_params), each module__<name>=value giving "
            f"it name=value; rename the module__ parameter to one of its arguments, or add that argument"
        ) from exc


class _BuildFn(BaseEstimator):
    """A network from ``build_fn(n_features, n_outputs, **module params)``, with skorch-style
    routed parameters: ``module__<name>`` to the builder, ``optimizer__<name>`` to the optimizer."""

    _parameter_constraints: dict = {"build_fn": [callable, None], **_SHARED_CONSTRAINTS}

    def __init__(
        self,
        build_fn=None,
        *,
        optimizer="adam",
        batch_size="auto",
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        dtype="float32",
        device="cpu",
        n_threads=None,
        **routed,
    ):
        self.build_fn = build_fn
        self.optimizer = optimizer
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.dtype = dtype
        self.device = device
        self.n_threads = n_threads
        self._set_routed(routed)

    def _set_routed(self, params: dict) -> None:
        for key, value in params.items():  # checked at fit (scikit-learn: nothing raises in init or set_params)
            setattr(self, key, value)

    def _routed_names(self) -> list[str]:
        fixed = set(self._get_param_names())
        return [k for k in vars(self) if k not in fixed and not k.startswith("_") and not k.endswith("_")]

    def _routed(self, prefix: str) -> dict:
        for key in self._routed_names():
            if not key.startswith(_ROUTED) or key in _ROUTED:
                raise TypeError(
                    f"unknown parameter {key!r}: pass module__<name> for build_fn's arguments or "
                    f"optimizer__<name> for the optimizer's (e.g. optimizer__lr=1e-3)"
                )
        return {k[len(prefix) :]: getattr(self, k) for k in self._routed_names() if k.startswith(prefix)}

    def get_params(self, deep=True):
        """The estimator's parameters, routed ones (``module__``, ``optimizer__``) included.

        Parameters
        ----------
        deep : bool, default=True
            Also the parameters of contained estimators (scikit-learn's meaning).

        Returns
        -------
        params : dict
            Parameter names mapped to their values.

        Examples
        --------
        >>> from fastnn.sklearn import NeuralNetClassifier
        >>> clf = NeuralNetClassifier(module__hidden=16, optimizer__lr=0.01)
        >>> params = clf.get_params()
        >>> params["module__hidden"], params["optimizer__lr"], params["max_iter"]
        (16, 0.01, 200)
        """
        params = super().get_params(deep=deep)
        params.update({k: getattr(self, k) for k in self._routed_names()})
        return params

    def set_params(self, **params):
        """Set parameters, routed ones (``module__<name>``, ``optimizer__<name>``) included.

        Routed names are checked at ``fit`` (scikit-learn: nothing raises here).

        Parameters
        ----------
        **params : dict
            Parameter names mapped to their new values.

        Returns
        -------
        self : object
            The estimator.

        Examples
        --------
        >>> from fastnn.sklearn import NeuralNetClassifier
        >>> clf = NeuralNetClassifier(module__hidden=16, optimizer__lr=0.01)
        >>> clf = clf.set_params(module__hidden=32, module__activation="tanh", max_iter=50)
        >>> clf.module__hidden, clf.module__activation, clf.max_iter
        (32, 'tanh', 50)
        """
        fixed = set(self._get_param_names())
        self._set_routed({k: params.pop(k) for k in list(params) if k not in fixed})
        return super().set_params(**params)

    def _layers(self, n_features, n_outputs):
        build = default_network if self.build_fn is None else self.build_fn
        module_params = self._routed("module__")
        _check_builder_call(build, module_params)
        return build(n_features, n_outputs, **module_params)

    def _network_params(self):
        params = {"build_fn": self.build_fn, "dtype": _dtype_name(self.dtype), "device": self.device}
        return {**params, **{f"module__{k}": v for k, v in self._routed("module__").items()}}

    def _new_optimizer(self):
        routed = self._routed("optimizer__")
        if isinstance(self.optimizer, optim.Optimizer):  # a copy, with the routed values
            return _rebuilt(self.optimizer, **routed) if routed else copy.deepcopy(self.optimizer)
        return _rebuilt(optim.get(self.optimizer), **routed) if routed else optim.get(self.optimizer)

    def _optimizer_key(self):
        routed = sorted(self._routed("optimizer__").items())
        if isinstance(self.optimizer, optim.Optimizer):
            return ("instance", type(self.optimizer), self.optimizer.get_config(), routed)
        return ("name", self.optimizer.lower(), routed)


_BUILD_PARAMETERS = """
    build_fn : callable or None, default=None
        ``build_fn(n_features, n_outputs, **module_params)`` returning a list of fastnn layers (then
        ``random_state``, ``dtype`` and ``device`` apply) or a :class:`fastnn.Sequential` (used as
        it is, moved to ``device``). None: :func:`default_network` (one hidden layer of 100 ReLUs).
    **routed : module__<name>=value, optimizer__<name>=value
        ``module__`` parameters are passed to ``build_fn``; ``optimizer__`` ones to the optimizer
        (e.g. ``optimizer__lr=1e-3, optimizer__weight_decay=1e-4``), an ``optimizer`` instance's copy
        included (ValueError for a name it has no parameter of). Both can be searched over."""


class NeuralNetClassifier(_BuildFn, _Classifier):
    __doc__ = f"""Classifier over any fastnn network (skorch-style): the network's outputs are logits.

    Same targets and methods as :class:`MLPClassifier`.

    Parameters
    ----------{_BUILD_PARAMETERS}{_SHARED_PARAMETERS}

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The labels.{_FITTED_ATTRIBUTES}

    See Also
    --------
    MLPClassifier : A stack of Dense layers with scikit-learn's MLP parameters.
    NeuralNetRegressor : The same for regression.

    Examples
    --------
    A builder whose ``hidden`` argument a grid search tries, beside the optimizer's learning rate:

    >>> import fastnn as fnn
    >>> from sklearn.datasets import make_classification
    >>> from sklearn.model_selection import GridSearchCV
    >>> from fastnn.sklearn import NeuralNetClassifier
    >>> def build(n_features, n_outputs, hidden=8):
    ...     return [fnn.Dense(n_features, hidden, activation="relu"), fnn.Dense(hidden, n_outputs)]
    >>> X, y = make_classification(n_samples=60, n_features=4, random_state=0)
    >>> net = NeuralNetClassifier(build, max_iter=1000, random_state=0)
    >>> search = GridSearchCV(net, {{"module__hidden": [4, 16], "optimizer__lr": [0.03, 0.1]}}, cv=2).fit(X, y)
    >>> sorted(search.best_params_), search.best_score_ > 0.7
    (['module__hidden', 'optimizer__lr'], True)
    """


class NeuralNetRegressor(_BuildFn, _Regressor):
    __doc__ = f"""Regressor over any fastnn network (skorch-style), mean squared error.

    Parameters
    ----------{_BUILD_PARAMETERS}{_SHARED_PARAMETERS}

    Attributes
    ----------{_FITTED_ATTRIBUTES}

    See Also
    --------
    MLPRegressor : A stack of Dense layers with scikit-learn's MLP parameters.
    NeuralNetClassifier : The same for classification.

    Examples
    --------
    The default network (:func:`default_network`, one hidden layer), 32 units wide:

    >>> from sklearn.datasets import make_regression
    >>> from fastnn.sklearn import NeuralNetRegressor
    >>> X, y = make_regression(n_samples=40, n_features=3, noise=0.1, random_state=0)
    >>> reg = NeuralNetRegressor(module__hidden=32, optimizer__lr=0.03, max_iter=1000, random_state=0)
    >>> reg = reg.fit(X, y / 100)
    >>> round(reg.score(X, y / 100), 2)
    1.0
    """


__all__ = ["MLPClassifier", "MLPRegressor", "NeuralNetClassifier", "NeuralNetRegressor", "default_network"]
