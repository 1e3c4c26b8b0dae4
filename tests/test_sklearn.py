"""fastnn.sklearn: scikit-learn's estimator checks, sample weights, targets of every kind, and the
estimators inside Pipeline, searches, cross-validation, clone, pickle and set_output."""

from __future__ import annotations

import os
import pickle
import threading

import numpy as np
import pytest

pytest.importorskip("sklearn", minversion="1.6")  # validate_data, __sklearn_tags__

from sklearn.base import clone
from sklearn.datasets import make_classification, make_regression
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import fastnn as fnn
from fastnn.sklearn import MLPClassifier, MLPRegressor, NeuralNetClassifier, NeuralNetRegressor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # short fits on purpose
SMALL = dict(hidden_layer_sizes=(8,), max_iter=15, random_state=0)

#: scikit-learn checks the default (float32) estimators fail, with the reason (the same for all four);
#: both pass with dtype="float64" (test_float64_passes_the_float32_expected_failures)
EXPECTED_FAILED_CHECKS = {
    "check_methods_subset_invariance": "float32 (the default dtype): a sample's output depends in its last bits on "
    "the batch's GEMM shape where OpenBLAS computes the products (relative 3e-6, the check allows atol 1e-7; it "
    "passes where fastnn's own GEMM takes them all: AVX-512 kernels beside OpenBLAS's AVX2 ones); passes "
    "with dtype='float64'",
    "check_sample_weight_equivalence_on_dense_data": "float32 (the default dtype): weights equal repeated samples up "
    "to the order of float32 sums (relative 7e-7, the check allows "
    "rtol 1e-7); passes with dtype='float64'",
}
EXPECTED_FAILED_CHECKS["check_sample_weight_equivalence_on_sparse_data"] = EXPECTED_FAILED_CHECKS[
    "check_sample_weight_equivalence_on_dense_data"
]  # (a sparse X is densified: the same float32 sums)


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED_CHECKS


@parametrize_with_checks(
    [MLPClassifier(), MLPRegressor(), NeuralNetClassifier(), NeuralNetRegressor()],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("check_name", sorted(EXPECTED_FAILED_CHECKS))
@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_float64_passes_the_float32_expected_failures(Estimator, check_name):
    from sklearn.utils import estimator_checks

    getattr(estimator_checks, check_name)(Estimator.__name__, Estimator(dtype="float64"))


def _classes(n=60, classes=3, seed=0):
    X, y = make_classification(n, 6, n_informative=4, n_redundant=0, n_classes=classes, random_state=seed)
    return StandardScaler().fit_transform(X), y


def _weights_of(estimator) -> np.ndarray:
    return estimator.model_.params.copy()


# ---------------------------------------------------------------------------- targets
def test_string_labels_round_trip_through_the_label_encoder():
    X, y = _classes()
    names = np.array(["cat", "dog", "emu"])[y]
    clf = MLPClassifier(**SMALL).fit(X, names)
    assert list(clf.classes_) == ["cat", "dog", "emu"]
    assert set(clf.predict(X)) <= set(names)
    proba = clf.predict_proba(X)
    assert proba.shape == (60, 3) and np.allclose(proba.sum(axis=1), 1)
    assert np.array_equal(clf.predict(X), clf.classes_[proba.argmax(axis=1)])
    assert clf.decision_function(X).shape == (60, 3)


def test_binary_decision_function_is_one_column_and_orders_like_the_probability():
    X, y = _classes(classes=2)
    clf = MLPClassifier(**SMALL).fit(X, y)
    decision = clf.decision_function(X)
    assert decision.shape == (60,)
    assert np.array_equal(decision > 0, clf.predict_proba(X)[:, 1] > 0.5)


def test_multilabel_uses_binary_cross_entropy_over_k_outputs():
    X, y = _classes()
    Y = np.stack([y == 0, y == 1, y != 1], axis=1).astype(int)
    clf = MLPClassifier(**SMALL).fit(X, Y)
    assert clf.model_.loss.name == "binary_cross_entropy" and clf.out_activation_ == "logistic"
    assert clf.predict(X).shape == (60, 3) and set(np.unique(clf.predict(X))) <= {0, 1}
    assert clf.predict_proba(X).shape == (60, 3)
    assert np.array_equal(clf.predict(X), (clf.predict_proba(X) > 0.5).astype(int))


def test_a_sparse_multilabel_indicator_trains_as_the_dense_one():
    import scipy.sparse as sp

    X, y = _classes()
    Y = np.stack([y == 0, y == 1, y != 1], axis=1).astype(int)
    dense = MLPClassifier(**SMALL).fit(X, Y)
    sparse = MLPClassifier(**SMALL).fit(X, sp.csr_matrix(Y))
    assert np.array_equal(sparse.predict_proba(X), dense.predict_proba(X)) and sparse.predict(X).shape == (60, 3)
    streamed = MLPClassifier(**SMALL).partial_fit(X, sp.csr_matrix(Y))  # multi-label: no classes needed
    assert np.array_equal(streamed.classes_, [0, 1, 2]) and streamed.n_iter_ == 1


def test_multi_output_regression():
    X, Y = make_regression(50, 4, n_targets=2, random_state=0)
    reg = MLPRegressor(**SMALL).fit(X, Y / 100)
    assert reg.predict(X).shape == (50, 2) and reg.n_outputs_ == 2
    assert MLPRegressor(**SMALL).fit(X, Y[:, 0] / 100).predict(X).shape == (50,)


def test_a_column_y_is_raveled_with_scikit_learns_warning():
    """scikit-learn's MLPRegressor ravels a y of shape (n, 1) with a DataConversionWarning and
    predicts 1-D; fastnn's raveled it without the warning."""
    from sklearn.exceptions import DataConversionWarning

    X, y = make_regression(40, 4, random_state=0)
    with pytest.warns(DataConversionWarning, match="column-vector y"):
        column = MLPRegressor(**SMALL).fit(X, y[:, None] / 100)
    with pytest.warns(DataConversionWarning, match="column-vector y"):
        column.partial_fit(X, y[:, None] / 100)
    flat = MLPRegressor(**SMALL).fit(X, y / 100).partial_fit(X, y / 100)
    assert column.n_outputs_ == 1 and column.predict(X).shape == (40,)
    np.testing.assert_array_equal(column.predict(X), flat.predict(X))


@pytest.mark.parametrize("dtype", [object, "string", "category"])
def test_classes_of_pandas_string_labels_have_scikit_learns_dtype(dtype):
    """classes_ (and predict) of a pandas y of strings were object arrays; scikit-learn's
    MLPClassifier gives unique_labels' <U array, for fit and for partial_fit's classes."""
    pd = pytest.importorskip("pandas")
    from sklearn.neural_network import MLPClassifier as SklearnMLP

    X, codes = _classes(n=30)
    y = pd.Series(np.array(["cat", "dog", "emu"])[codes], dtype=dtype)
    ours = MLPClassifier(**SMALL).fit(X, y)
    theirs = SklearnMLP(**SMALL).fit(X, y)
    assert ours.classes_.dtype == theirs.classes_.dtype == np.dtype("<U3")
    assert ours.classes_.tolist() == theirs.classes_.tolist() == ["cat", "dog", "emu"]
    assert ours.predict(X).dtype == theirs.predict(X).dtype
    streamed = MLPClassifier(**SMALL).partial_fit(X, y, classes=pd.Series(["emu", "cat", "dog", "yak"], dtype=dtype))
    streamed.partial_fit(X, y)
    assert streamed.classes_.dtype == np.dtype("<U3") and streamed.classes_.tolist() == ["cat", "dog", "emu", "yak"]


def test_feature_names_from_a_dataframe():
    pd = pytest.importorskip("pandas")
    X, y = _classes()
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(6)])
    clf = MLPClassifier(**SMALL).fit(frame, y)
    assert list(clf.feature_names_in_) == list(frame.columns) and clf.n_features_in_ == 6
    with pytest.raises(ValueError, match="feature names"):
        clf.predict(frame[frame.columns[::-1]])


def test_clear_errors():
    X, y = _classes()
    with pytest.raises(ValueError, match="classes must be passed"):
        MLPClassifier(**SMALL).partial_fit(X, y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        MLPClassifier(**SMALL).fit(X, np.zeros(60))
    clf = MLPClassifier(**SMALL).partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match=r"labels \[7\]"):
        clf.partial_fit(X, np.where(y == 2, 7, y))
    with pytest.raises(ValueError, match="multi-label indicator"):
        MLPClassifier(**SMALL).fit(X, np.stack([y, y], axis=1))


# ---------------------------------------------------------------------------- sample weights
def test_unit_sample_weights_are_bit_identical_to_none():
    X, y = _classes()
    plain = MLPClassifier(**SMALL).fit(X, y)
    weighted = MLPClassifier(**SMALL).fit(X, y, sample_weight=np.ones(60))
    assert np.array_equal(_weights_of(plain), _weights_of(weighted))
    np.testing.assert_allclose(plain.loss_curve_, weighted.loss_curve_, rtol=1e-14)  # other float64 sum orders


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("name", ["cross_entropy", "binary_cross_entropy", "mse", "huber"])
def test_weighted_loss_against_the_float64_reference(name, reduction):
    """sum_i w_i l_i / sum_i w_i (l_i: sample i's loss over its k outputs / k) and its gradient."""
    from fastnn.losses import SampleWeighted as _SampleWeighted
    from tests import _reference_core as ref

    rng = np.random.default_rng(0)
    out = rng.standard_normal((7, 3)) * 2
    target = rng.integers(0, 3, 7) if name == "cross_entropy" else rng.uniform(0, 1, (7, 3))
    weights = rng.uniform(0, 2, 7)
    loss = _SampleWeighted(fnn.losses.LOSSES[name](reduction=reduction))
    grad = np.full_like(out, np.nan)
    value = loss.forward_backward(out, np.column_stack([target, weights]), grad)
    per_sample = [ref.LOSS_REFERENCES[name](out[i : i + 1], target[i : i + 1], "sum") for i in range(7)]
    divisor = weights.sum() * (1 if name == "cross_entropy" else 3) if reduction == "mean" else 1.0
    np.testing.assert_allclose(value, sum(w * v for w, (v, _) in zip(weights, per_sample)) / divisor, rtol=1e-12)
    np.testing.assert_allclose(
        grad, np.concatenate([w * g for w, (_, g) in zip(weights, per_sample)]) / divisor, rtol=1e-12
    )


@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_integer_weights_equal_repeated_samples(Estimator):
    """One full batch, no shuffling: weight 2 (or 0) is the sample twice (or removed) - the same objective
    and the same L2 term, so the same weights up to the order of float sums."""
    X, y = _classes()
    if Estimator is MLPRegressor:
        y = X[:, 0] - 0.5 * X[:, 1]
    weights = np.ones(60, int)
    weights[:10], weights[10:15] = 2, 0
    params = dict(SMALL, shuffle=False, dtype="float64", alpha=1e-2)
    weighted = Estimator(**params).fit(X, y, sample_weight=weights)
    rows = np.repeat(np.arange(60), weights)
    repeated = Estimator(**params).fit(X[rows], y[rows])
    np.testing.assert_allclose(_weights_of(weighted), _weights_of(repeated), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(weighted.loss_curve_, repeated.loss_curve_, rtol=1e-9)
    assert not np.allclose(_weights_of(weighted), _weights_of(Estimator(**params).fit(X, y)))


def test_weighted_model_pickles_and_keeps_its_plain_loss():
    X, y = _classes()
    clf = MLPClassifier(**SMALL).fit(X, y, sample_weight=np.linspace(0.5, 2, 60))
    assert clf.model_.loss.name == "cross_entropy"
    again = pickle.loads(pickle.dumps(clf))
    assert np.array_equal(again.predict_proba(X), clf.predict_proba(X))


# ---------------------------------------------------------------------------- training life cycle
def test_partial_fit_and_warm_start_continue_the_network():
    X, y = _classes()
    clf = MLPClassifier(**SMALL)
    for _ in range(3):
        clf.partial_fit(X, y, classes=[0, 1, 2])
    assert clf.n_iter_ == 3 and len(clf.loss_curve_) == 3 and clf.t_ == 180
    warm = MLPClassifier(**dict(SMALL, warm_start=True, max_iter=2)).fit(X, y)
    first = _weights_of(warm)
    warm.fit(X, y)
    assert warm.n_iter_ == 4 and not np.array_equal(first, _weights_of(warm))
    cold = MLPClassifier(**dict(SMALL, max_iter=2)).fit(X, y)
    cold.fit(X, y)
    assert cold.n_iter_ == 2 and np.array_equal(_weights_of(cold), first)


def test_tol_stops_training_and_early_stopping_keeps_the_best_epoch():
    X, y = _classes(n=120)
    stopped = MLPClassifier(**dict(SMALL, max_iter=200, tol=10.0, n_iter_no_change=2)).fit(X, y)
    assert stopped.n_iter_ == 4 and stopped.best_loss_ == min(stopped.loss_curve_)
    early = MLPClassifier(
        **dict(SMALL, max_iter=40, early_stopping=True, validation_fraction=0.25, learning_rate_init=0.05)
    ).fit(X, y)
    assert early.best_loss_ is None and len(early.validation_scores_) == early.n_iter_
    assert early.best_validation_score_ == max(early.validation_scores_)
    assert np.argmax(early.validation_scores_) < early.n_iter_ - 1  # the last epoch was not the best ...
    _, X_val, _, y_val = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    assert early.score(X_val, y_val) == early.best_validation_score_  # ... and the best one's weights came back


def test_a_warm_started_early_stopping_keeps_the_best_weights_of_all_fits():
    X, y = _classes(n=120)
    clf = MLPClassifier(
        **dict(SMALL, max_iter=30, early_stopping=True, validation_fraction=0.25, learning_rate_init=0.05)
    ).fit(X, y)
    first_epochs, best = clf.n_iter_, _weights_of(clf)
    clf.set_params(warm_start=True, learning_rate_init=3.0, n_iter_no_change=2).fit(X, y)  # only gets worse
    assert clf.n_iter_ > first_epochs and max(clf.validation_scores_[first_epochs:]) < clf.best_validation_score_
    # scikit-learn's _best_coefs: the weights of best_validation_score_, though an earlier fit's
    assert np.array_equal(_weights_of(clf), best)
    _, X_val, _, y_val = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    assert clf.score(X_val, y_val) == clf.best_validation_score_


@pytest.mark.parametrize("Estimator", [MLPClassifier, NeuralNetRegressor])
def test_partial_fit_refuses_early_stopping_like_scikit_learn(Estimator):
    X, y = _classes(n=20)
    estimator = Estimator(max_iter=2, random_state=0, early_stopping=True)
    classes = {"classes": [0, 1, 2]} if Estimator is MLPClassifier else {}
    with pytest.raises(ValueError, match=r"partial_fit does not support early_stopping=True.*set_params"):
        estimator.partial_fit(X, y, **classes)
    assert not hasattr(estimator, "model_") and not hasattr(estimator, "classes_")
    assert estimator.set_params(early_stopping=False).partial_fit(X, y, **classes).n_iter_ == 1


@pytest.mark.parametrize("activation, factor", [("relu", 6.0), ("tanh", 6.0), ("logistic", 2.0)])
@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_initial_weights_are_scikit_learns(Estimator, activation, factor):
    # scikit-learn's _init_coef: every Dense weight and bias from U(-b, b), b = sqrt(factor / (fan_in +
    # fan_out)); a learning rate of 1e-12 leaves them where they started (Adam moves each by ~lr)
    X, y = make_classification(n_samples=64, n_features=30, n_informative=5, n_classes=3, random_state=0)
    est = Estimator(hidden_layer_sizes=(200, 40), activation=activation, learning_rate_init=1e-12, max_iter=1)
    model = est.set_params(random_state=3).fit(X, y).model_
    state = model.state_arrays()
    for layer, (fan_in, fan_out) in enumerate([(30, 200), (200, 40), (40, state["2.bias"].shape[0])]):
        bound = np.sqrt(factor / (fan_in + fan_out))
        for name in ("weight", "bias"):
            values = state[f"{layer}.{name}"].astype(np.float64)
            assert np.abs(values).max() <= bound * (1 + 1e-6), (layer, name)
            if values.size >= 200:  # a uniform's spread: max near the bound, variance b^2 / 3
                assert np.abs(values).max() > 0.9 * bound, (layer, name)
                assert values.std() == pytest.approx(bound / np.sqrt(3), rel=0.15), (layer, name)
        assert np.count_nonzero(state[f"{layer}.bias"]) == fan_out  # (not zeros: scikit-learn's biases are drawn)
    again = Estimator(**est.get_params()).fit(X, y).model_.state_arrays()
    assert all(np.array_equal(again[k], state[k]) for k in state)  # the seed fixes them


def test_loss_is_the_last_epochs_loss_like_scikit_learns():
    X, y = _classes()
    clf = MLPClassifier(**SMALL).fit(X, y)
    assert clf.loss_ == clf.loss_curve_[-1]
    clf.partial_fit(X, y)
    assert clf.loss_ == clf.loss_curve_[-1] and len(clf.loss_curve_) == SMALL["max_iter"] + 1


@pytest.mark.parametrize("Estimator", [MLPRegressor, NeuralNetRegressor])
def test_early_stopping_refuses_a_validation_set_of_one_sample(Estimator):
    X, _ = _classes(n=10)  # 10% of 10 samples: R^2 of one sample is undefined (nan scores before)
    refused = Estimator(max_iter=3, random_state=0, early_stopping=True)
    with pytest.raises(ValueError, match="validation set is too small: 1 of the 10 samples"):
        refused.fit(X, X[:, 0])
    assert not hasattr(refused, "model_")  # nothing half-made for a later warm start to go on from
    reg = Estimator(max_iter=3, random_state=0, early_stopping=True, validation_fraction=0.2).fit(X, X[:, 0])
    assert np.all(np.isfinite(reg.validation_scores_))


def test_early_stopping_warns_of_a_batch_larger_than_the_training_part():
    X, y = _classes(n=100)  # 90 samples train: a batch of 95 is clipped to 90
    with pytest.warns(UserWarning, match=r"batch_size \(95\) is larger than the 90 training samples"):
        MLPClassifier(**dict(SMALL, max_iter=1, batch_size=95, early_stopping=True)).fit(X, y)


@pytest.mark.parametrize("Estimator", [MLPClassifier, NeuralNetClassifier, MLPRegressor, NeuralNetRegressor])
def test_sparse_input_equals_the_dense_one(Estimator):
    sparse = pytest.importorskip("scipy.sparse")
    X, y = _classes()
    X[np.abs(X) < 0.8] = 0.0
    if Estimator in (MLPRegressor, NeuralNetRegressor):
        y = X[:, 0] - X[:, 1]
    dense = Estimator(max_iter=3, random_state=0).fit(X, y)
    for to_sparse in (sparse.csr_matrix, sparse.csc_matrix, sparse.coo_matrix, sparse.csr_array):
        fitted = Estimator(max_iter=3, random_state=0).fit(to_sparse(X), y)
        assert np.array_equal(fitted.predict(to_sparse(X)), dense.predict(X))
        assert fitted.loss_curve_ == dense.loss_curve_


def test_a_column_transformers_sparse_output_trains():
    pd = pytest.importorskip("pandas")
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder

    X, y = _classes()
    frame = pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "kind": np.array(["u", "v", "w"])[np.arange(60) % 3]})
    columns = ColumnTransformer(
        [("num", StandardScaler(), ["a", "b"]), ("cat", OneHotEncoder(), ["kind"])], sparse_threshold=1.0
    )
    pipe = make_pipeline(columns, MLPClassifier(**SMALL)).fit(frame, y)
    assert pipe.predict(frame).shape == (60,)


@pytest.mark.parametrize("Estimator", [NeuralNetClassifier, NeuralNetRegressor])
def test_a_builders_output_count_must_match_the_targets(Estimator):
    X, y = _classes()  # 3 classes; the regressor: 1 target
    wide = lambda n, k: [fnn.Dense(n, 5)]  # noqa: E731
    with pytest.raises(ValueError, match=r"outputs of shape \(5,\) per sample; the estimator needs \((3|1),\)"):
        Estimator(wide, max_iter=1).fit(X, y)


def test_optimizer_parameters_reach_an_optimizer_instance():
    X, y = _classes()
    instance = fnn.optim.SGD(lr=0.01, momentum=0.5)
    net = NeuralNetClassifier(optimizer=instance, optimizer__lr=0.2, optimizer__momentum=0.9, max_iter=2).fit(X, y)
    config = net.model_.optimizer.get_config()
    assert (net.model_.optimizer.lr, config["momentum"]) == (0.2, 0.9)
    assert (instance.lr, instance.get_config()["momentum"]) == (0.01, 0.5)  # the instance itself is not changed
    with pytest.raises(ValueError, match="has no parameter 'betas'"):
        NeuralNetClassifier(optimizer=instance, optimizer__betas=(0.9, 0.99), max_iter=1).fit(X, y)
    with pytest.raises(ValueError, match=r"has no parameter 'bogus'; its parameters are amsgrad, betas"):
        NeuralNetClassifier(optimizer="adam", optimizer__bogus=1, max_iter=1).fit(X, y)  # a bare TypeError before
    named = NeuralNetClassifier(optimizer="adam", optimizer__lr=0.05, max_iter=1).fit(X, y)
    assert named.model_.optimizer.lr == 0.05


def test_dropout_batch_norm_and_optimizers_build_the_network():
    X, y = _classes()
    clf = MLPClassifier(
        **dict(
            SMALL,
            hidden_layer_sizes=(8, 4),
            batch_norm=True,
            dropout=0.1,
            activation="tanh",
            optimizer="sgd",
            learning_rate_init=0.1,
            dtype="float64",
        )
    ).fit(X, y)
    kinds = [type(layer).__name__ for layer in clf.model_.layers]
    assert kinds == ["Dense", "BatchNorm1d", "Activation", "Dropout"] * 2 + ["Dense"]
    assert clf.model_.dtype == np.float64 and isinstance(clf.model_.optimizer, fnn.optim.SGD)
    assert clf.model_.optimizer.lr == 0.1


# ---------------------------------------------------------------------------- scikit-learn tools
def test_pipeline_grid_search_randomized_search_and_cross_val_score():
    X, y = _classes(n=90)
    pipe = make_pipeline(StandardScaler(), MLPClassifier(**SMALL))
    search = GridSearchCV(pipe, {"mlpclassifier__hidden_layer_sizes": [(4,), (8,)]}, cv=2).fit(X, y)
    assert search.best_params_["mlpclassifier__hidden_layer_sizes"] in [(4,), (8,)]
    assert search.predict(X).shape == (90,)
    randomized = RandomizedSearchCV(
        MLPRegressor(**SMALL),
        {"alpha": [1e-4, 1e-2], "learning_rate_init": [1e-3, 1e-2]},
        n_iter=2,
        cv=2,
        random_state=0,
    ).fit(X, X[:, 0])
    assert randomized.best_estimator_.n_iter_ >= 1
    scores = cross_val_score(MLPClassifier(**SMALL), X, y, cv=3)
    assert scores.shape == (3,) and np.all((0 <= scores) & (scores <= 1))


def test_clone_pickle_and_set_output():
    pd = pytest.importorskip("pandas")
    X, y = _classes()
    clf = MLPClassifier(**SMALL).fit(X, y)
    fresh = clone(clf)
    assert fresh.get_params() == clf.get_params() and not hasattr(fresh, "model_")
    again = pickle.loads(pickle.dumps(clf))
    assert np.array_equal(again.predict_proba(X), clf.predict_proba(X))
    pipe = make_pipeline(StandardScaler(), MLPClassifier(**SMALL)).set_output(transform="pandas")
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(6)])
    pipe.fit(frame, y)
    assert list(pipe[-1].feature_names_in_) == list(frame.columns)
    assert isinstance(pipe[:-1].transform(frame), pd.DataFrame) and pipe.predict(frame).shape == (60,)


# ---------------------------------------------------------------------------- any network
def _build(n_features, n_outputs, hidden=8, depth=1):
    layers, width = [], n_features
    for _ in range(depth):
        layers.append(fnn.Dense(width, hidden, activation="relu"))
        width = hidden
    return [*layers, fnn.Dense(width, n_outputs)]


def test_routed_parameters_reach_the_builder_and_the_optimizer():
    X, y = _classes()
    net = NeuralNetClassifier(
        _build,
        module__hidden=5,
        module__depth=2,
        optimizer="sgd",
        optimizer__lr=0.05,
        optimizer__momentum=0.9,
        max_iter=3,
        random_state=0,
    ).fit(X, y)
    assert [layer.units for layer in net.model_.layers] == [5, 5, 3]
    assert net.model_.optimizer.lr == 0.05 and net.model_.optimizer.get_config()["momentum"] == 0.9
    params = net.get_params()
    assert params["module__hidden"] == 5 and params["optimizer__lr"] == 0.05
    twin = clone(net).set_params(module__hidden=7)
    assert twin.module__hidden == 7 and twin.module__depth == 2 and not hasattr(twin, "model_")
    with pytest.raises(TypeError, match="unknown parameter 'hidden'.*module__<name>"):
        NeuralNetClassifier(_build, hidden=5).fit(X, y)


def test_a_module_parameter_the_builder_lacks_is_named_with_its_prefix():
    X, y = _classes(n=20)
    net = NeuralNetClassifier(_build, module__widht=5, max_iter=1)
    with pytest.raises(TypeError, match=r"hidden=8, depth=1\) cannot be called with module__widht .*'widht'"):
        net.fit(X, y)
    assert not hasattr(net, "model_")
    with pytest.raises(TypeError, match="too many positional arguments"):  # not build_fn(n_features, n_outputs)
        NeuralNetRegressor(lambda n_features: _build(n_features, 1), max_iter=1).fit(X, X[:, 0])


def test_grid_search_over_architectures():
    X, y = _classes(n=90)
    grid = {"module__hidden": [4, 16], "module__depth": [1, 2], "optimizer__lr": [1e-2]}
    search = GridSearchCV(NeuralNetClassifier(_build, max_iter=5, random_state=0), grid, cv=2).fit(X, y)
    assert len(search.cv_results_["params"]) == 4
    best = search.best_estimator_
    assert best.model_.layers[0].units == search.best_params_["module__hidden"]
    reg = NeuralNetRegressor(_build, module__hidden=4, max_iter=3, random_state=0).fit(X, X[:, 0])
    assert reg.predict(X).shape == (90,)


def test_a_builder_may_return_a_sequential():
    X, y = _classes()
    net = NeuralNetClassifier(lambda n, k: fnn.Sequential(_build(n, k), seed=3, dtype="float64"), max_iter=2).fit(X, y)
    assert net.model_.dtype == np.float64 and net.model_.seed == 3


# ---------------------------------------------------------------------------- threads
def test_threads_inside_fit_and_in_joblib_thread_workers():
    from joblib import parallel_config

    seen = []

    def build(n_features, n_outputs):
        seen.append((threading.current_thread() is threading.main_thread(), fnn.get_num_threads()))
        return _build(n_features, n_outputs)

    X, y = _classes()
    before = fnn.get_num_threads()
    NeuralNetClassifier(build, max_iter=1, n_threads=1, random_state=0).fit(X, y)
    assert seen.pop() == (True, 1) and fnn.get_num_threads() == before
    with parallel_config(backend="threading", n_jobs=2):
        cross_val_score(NeuralNetClassifier(build, max_iter=1, random_state=0), X, y, cv=2)
    assert seen == [(False, 1), (False, 1)]
    with pytest.raises(
        ValueError, match=r"'n_threads' parameter of MLPClassifier must be at most \d+, the Numba threads.*inner_max"
    ):
        MLPClassifier(**dict(SMALL, n_threads=10_000)).fit(X, y)


def _threads_seen_in_a_worker(seed: int) -> int:
    seen = []

    def build(n_features, n_outputs):
        seen.append(fnn.get_num_threads())
        return [fnn.Dense(n_features, n_outputs)]

    X, y = np.random.default_rng(seed).standard_normal((20, 3)), np.arange(20) % 2
    NeuralNetClassifier(build, max_iter=1, random_state=0).fit(X, y)
    return seen[0]


@pytest.mark.skipif("NUMBA_NUM_THREADS" in os.environ, reason="joblib keeps a NUMBA_NUM_THREADS set by the user")
def test_joblib_process_workers_split_the_cores():
    """joblib's process workers (GridSearchCV(n_jobs=2) ...) get NUMBA_NUM_THREADS = CPUs // 2, which
    n_threads=None follows: two workers do not oversubscribe the cores."""
    from joblib import Parallel, cpu_count, delayed

    seen = Parallel(n_jobs=2)(delayed(_threads_seen_in_a_worker)(seed) for seed in range(2))
    assert seen == [max(1, cpu_count() // 2)] * 2


# ---------------------------------------------------------------------------- README
def test_readme_sklearn_example_runs():
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text.split("## With scikit-learn")[1]
    code = section.split("```python")[1].split("```")[0]
    exec(compile(code, "README.md", "exec"), {})
