"""fastnn.sklearn against scikit-learn's own MLP: the strength of ``alpha`` for every target kind,
``loss_curve_`` on scikit-learn's scale, the learning rate and L2 term of the current parameters and
data at every fit and partial_fit, ``alpha`` with an optimizer instance, warm starts of another target
kind or network, and the validation of the constructor parameters."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn", minversion="1.6")  # validate_data, __sklearn_tags__

from sklearn import neural_network as sk_nn
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import check_param_validation

import fastnn as fnn
from fastnn.sklearn import MLPClassifier, MLPRegressor, NeuralNetClassifier, NeuralNetRegressor

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # short fits on purpose

RNG = np.random.default_rng(1)
X = RNG.standard_normal((40, 3))
Y3 = X @ RNG.standard_normal((3, 3))  # 3 regression outputs
TARGETS = {  # (fastnn estimator, scikit-learn's, y)
    "regression, 1 output": (MLPRegressor, sk_nn.MLPRegressor, Y3[:, 0]),
    "regression, 3 outputs": (MLPRegressor, sk_nn.MLPRegressor, Y3),
    "multi-label, 3 labels": (MLPClassifier, sk_nn.MLPClassifier, (Y3 > 0).astype(int)),
    "multiclass": (MLPClassifier, sk_nn.MLPClassifier, np.argmax(Y3, axis=1)),
}
#: one full batch in a fixed order, float64: the two libraries' steps can be compared one by one
EXACT = dict(
    hidden_layer_sizes=(4,),
    activation="tanh",
    batch_size=40,
    tol=0.0,
    n_iter_no_change=10**6,
    shuffle=False,
    random_state=0,
)


def _twins(target: str, solver: str, alpha: float, lr: float):
    """A fastnn estimator after one epoch, and scikit-learn's with the same weights (its optimizer
    and ours start anew at the next fit: sklearn's warm-start fit builds a new one, ours when the
    optimizer choice changes, hence the first epoch with another one)."""
    Estimator, SkEstimator, y = TARGETS[target]
    params = dict(EXACT, alpha=alpha, learning_rate_init=lr, warm_start=True, max_iter=1)
    first = "sgd" if solver == "adam" else "adam"
    ours = Estimator(optimizer=first, dtype="float64", **params).fit(X, y)
    theirs = SkEstimator(solver=first, momentum=0.0, **params).fit(X, y)
    theirs.coefs_ = [layer.weight.copy() for layer in ours.model_.layers]
    theirs.intercepts_ = [layer.bias.copy() for layer in ours.model_.layers]
    return ours.set_params(optimizer=solver), theirs.set_params(solver=solver), y


def _assert_same_weights(ours, theirs, rtol, atol):
    for layer, coef, intercept in zip(ours.model_.layers, theirs.coefs_, theirs.intercepts_):
        np.testing.assert_allclose(layer.weight, coef, rtol=rtol, atol=atol)
        np.testing.assert_allclose(layer.bias, intercept, rtol=rtol, atol=atol)


def _l2_term(theirs) -> float:
    """scikit-learn's L2 term of its loss_ (one full batch, no sample weights)."""
    return 0.5 * theirs.alpha * sum(float((coef**2).sum()) for coef in theirs.coefs_) / X.shape[0]


# ---------------------------------------------------------------------------- 1. alpha's strength, the loss's scale
@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("solver, rtol, atol", [("sgd", 1e-11, 1e-14), ("adam", 1e-4, 1e-5)])
def test_alpha_steps_equal_scikit_learns(target, solver, rtol, atol):
    """A large alpha, 20 full-batch epochs from the same weights: scikit-learn's weights, for every
    target kind (fastnn's "mse" and multi-label "binary_cross_entropy" are 2/k and 1/k times its
    losses' gradients; the decay, and plain SGD's learning rate, are scaled to match). Adam only
    up to where eps enters (it is invariant to the gradient's scale otherwise; the two place it
    apart from each other's bias corrections: 1e-6 apart after 20 steps of 0.01, multiclass too)."""
    ours, theirs, y = _twins(target, solver, alpha=5.0, lr=0.1 if solver == "sgd" else 0.01)
    ours.set_params(max_iter=20).fit(X, y)
    theirs.set_params(max_iter=20).fit(X, y)
    _assert_same_weights(ours, theirs, rtol, atol)


@pytest.mark.parametrize("target", list(TARGETS))
def test_loss_curve_is_scikit_learns_data_loss(target):
    """loss_curve_ is scikit-learn's loss_curve_ less its L2 term (half the mean squared error for
    regression, the log-loss summed over the labels for multi-label), epoch by epoch."""
    ours, theirs, y = _twins(target, "sgd", alpha=5.0, lr=0.1)
    for _ in range(4):  # (one epoch a call: scikit-learn's L2 term is of the weights before the epoch)
        l2 = _l2_term(theirs)
        ours.fit(X, y)
        theirs.fit(X, y)
        np.testing.assert_allclose(ours.loss_curve_[-1], theirs.loss_curve_[-1] - l2, rtol=1e-12)
    assert ours.best_loss_ == min(ours.loss_curve_)


@pytest.mark.parametrize("target, alpha", [("regression, 1 output", 20.0), ("multi-label, 3 labels", 3.0)])
def test_alpha_converges_to_scikit_learns_predictions(target, alpha):
    """bug_alpha.py, alpha2.py: a linear network (one identity unit) under a large L2 penalty (not so
    large that all weights go to 0), trained to convergence by Adam from different initial weights:
    scikit-learn's predictions (fastnn's alpha was 1/2, 1/k of scikit-learn's)."""
    Estimator, SkEstimator, y = TARGETS[target]
    params = dict(EXACT, hidden_layer_sizes=(1,), activation="identity", alpha=alpha)
    params.update(learning_rate_init=0.01, max_iter=5000)
    ours = Estimator(dtype="float64", **params).fit(X, y)
    theirs = SkEstimator(**params).fit(X, y)
    predict = "predict" if Estimator is MLPRegressor else "predict_proba"
    expected = getattr(theirs, predict)(X)
    np.testing.assert_allclose(getattr(ours, predict)(X), expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())


def test_sgd_learning_rate_is_scikit_learns_on_fastnns_loss():
    """Plain SGD is not invariant to the gradient's scale: learning_rate_init / c on fastnn's loss."""
    params = dict(EXACT, optimizer="sgd", learning_rate_init=0.1, max_iter=1)
    assert MLPRegressor(**params).fit(X, Y3).model_.optimizer.lr == pytest.approx(0.1 * 3 / 2)
    assert MLPRegressor(**params).fit(X, Y3[:, 0]).model_.optimizer.lr == pytest.approx(0.1 / 2)
    assert MLPClassifier(**params).fit(X, Y3 > 0).model_.optimizer.lr == pytest.approx(0.1 * 3)
    assert MLPClassifier(**params).fit(X, Y3[:, 0] > 0).model_.optimizer.lr == 0.1
    assert MLPRegressor(**dict(params, optimizer="adam")).fit(X, Y3).model_.optimizer.lr == 0.1


@pytest.mark.parametrize("name", ["adamw", "lion"])
def test_decoupled_decay_is_alpha_over_the_batch(name):
    """AdamW and Lion decay the weights apart from the gradient: alpha / batch, whatever the loss."""
    reg = MLPRegressor(**dict(EXACT, optimizer=name, alpha=2.0, max_iter=1)).fit(X, Y3)
    assert reg.model_.optimizer.get_config()["weight_decay"] == pytest.approx(2.0 / 40)


# ---------------------------------------------------------------------------- 2. every call's parameters and data
def _decay(estimator) -> float:
    return estimator.model_.optimizer.get_config()["weight_decay"]


def test_partial_fit_follows_the_batch_size_and_alpha_of_each_call():
    """sk9.py: the L2 strength of a first chunk of 10 rows stayed for all later chunks."""
    y = (X[:, 0] > 0).astype(int)
    clf = MLPClassifier(hidden_layer_sizes=(8,), alpha=1.0, random_state=0)  # batch_size "auto": min(200, n)
    clf.partial_fit(X[:10], y[:10], classes=[0, 1])
    assert _decay(clf) == pytest.approx(1.0 / 10)
    clf.partial_fit(X, y)
    assert _decay(clf) == pytest.approx(1.0 / 40)
    clf.set_params(alpha=3.0, learning_rate_init=0.05, batch_size=20)
    clf.partial_fit(X, y, sample_weight=np.full(40, 2.0))
    assert _decay(clf) == pytest.approx(3.0 / (20 * 2.0)) and clf.model_.optimizer.lr == 0.05
    assert clf.model_.optimizer.step_count == 1 + 1 + 2  # the same Adam throughout: its state continues


def test_partial_fit_steps_equal_scikit_learns_after_alpha_and_batch_changes():
    ours, theirs, y = _twins("regression, 3 outputs", "sgd", alpha=5.0, lr=0.05)
    ours.fit(X, y)  # (scikit-learn's partial_fit keeps the optimizer of its last fit: SGD now)
    theirs.fit(X, y)
    for alpha, rows in [(5.0, 40), (0.5, 20), (2.0, 40)]:
        ours.set_params(alpha=alpha, batch_size=rows)
        theirs.set_params(alpha=alpha, batch_size=rows)
        for _ in range(3):
            ours.partial_fit(X[:rows], y[:rows])
            theirs.partial_fit(X[:rows], y[:rows])
    _assert_same_weights(ours, theirs, 1e-11, 1e-14)


def test_warm_start_follows_the_current_parameters_and_weights():
    """bug_warm_params.py, sk9.py: a warm-start fit kept the learning rate and L2 term of the first."""
    y = (X[:, 0] > 0).astype(int)
    clf = MLPClassifier(hidden_layer_sizes=(8,), alpha=1.0, max_iter=2, random_state=0, warm_start=True)
    clf.fit(X[:10], y[:10])
    assert _decay(clf) == pytest.approx(1.0 / 10)
    clf.set_params(learning_rate_init=0.5, alpha=10.0).fit(X, y, sample_weight=np.full(40, 10.0))
    assert _decay(clf) == pytest.approx(10.0 / (40 * 10.0)) and clf.model_.optimizer.lr == 0.5
    assert clf.model_.optimizer.step_count == 4  # kept: the optimizer choice is the same
    clf.set_params(optimizer="sgd").fit(X, y)  # another choice: a new optimizer, of the current parameters
    assert isinstance(clf.model_.optimizer, fnn.optim.SGD) and clf.model_.optimizer.step_count == 2
    assert clf.model_.optimizer.lr == 0.5 and _decay(clf) == pytest.approx(10.0 / 40)


@pytest.mark.parametrize(
    "changes",
    [
        {"hidden_layer_sizes": (32, 32), "activation": "tanh", "dropout": 0.5},
        {"batch_norm": True},
        {"dtype": "float64"},
    ],
)
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_a_warm_start_cannot_change_the_network(changes, method):
    y = (X[:, 0] > 0).astype(int)
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, random_state=0, warm_start=True).fit(X, y)
    weights = clf.model_.params.copy()
    clf.set_params(**changes)
    with pytest.raises(ValueError, match=f"{', '.join(changes)} changed since the network was built.*warm_start=False"):
        getattr(clf, method)(X, y)
    assert np.array_equal(clf.model_.params, weights)
    clf.set_params(hidden_layer_sizes=[8], activation="relu", dropout=0.0, batch_norm=False, dtype=np.float32)
    clf.fit(X, y)  # the same network in other spellings
    clf.set_params(warm_start=False, **changes).fit(X, y)  # a new network


def test_a_warm_start_cannot_change_a_builders_network_but_may_change_its_optimizer():
    y = (X[:, 0] > 0).astype(int)

    def build(n_features, n_outputs, hidden=4):
        return [fnn.Dense(n_features, hidden, activation="relu"), fnn.Dense(hidden, n_outputs)]

    net = NeuralNetClassifier(build, module__hidden=4, max_iter=2, random_state=0, warm_start=True).fit(X, y)
    with pytest.raises(ValueError, match="module__hidden changed since the network was built"):
        clone(net).set_params(module__hidden=4).fit(X, y).set_params(module__hidden=8).fit(X, y)
    with pytest.raises(ValueError, match="build_fn changed"):
        clone(net).fit(X, y).set_params(build_fn=lambda n, k: build(n, k)).partial_fit(X, y)
    net.set_params(optimizer__lr=0.5).fit(X, y)  # optimizer__ parameters: a new optimizer
    assert net.model_.optimizer.lr == 0.5 and net.model_.optimizer.step_count == 2
    net.fit(X, y)  # unchanged: the optimizer continues
    assert net.model_.optimizer.step_count == 4
    reg = NeuralNetRegressor(build, max_iter=2, random_state=0, warm_start=True).fit(X, X[:, 0])
    with pytest.raises(ValueError, match="device"):
        reg.set_params(device="cuda").fit(X, X[:, 0])


# ---------------------------------------------------------------------------- 3. alpha with an optimizer instance
def test_alpha_applies_to_an_optimizer_instance():
    """bug_opt_alpha.py: alpha was ignored with an instance."""
    y = (X[:, 0] > 0).astype(int)
    adam = fnn.optim.Adam(lr=0.01)
    params = dict(hidden_layer_sizes=(8,), max_iter=20, random_state=0, optimizer=adam)
    plain = MLPClassifier(alpha=0.0, **params).fit(X, y)
    decayed = MLPClassifier(alpha=100.0, **params).fit(X, y)
    assert _decay(plain) == 0 and _decay(decayed) == pytest.approx(100.0 / 40)
    assert isinstance(decayed.model_.optimizer, fnn.optim.Adam) and decayed.model_.optimizer.lr == 0.01
    assert not np.allclose(decayed.predict_proba(X), plain.predict_proba(X), atol=1e-3)
    assert adam.get_config()["weight_decay"] == 0 and adam.owner is None  # the instance itself is untouched
    # the same as the named optimizer with that learning rate
    named = MLPClassifier(alpha=100.0, **dict(params, optimizer="adam", learning_rate_init=0.01)).fit(X, y)
    assert np.array_equal(named.model_.params, decayed.model_.params)


def test_alpha_and_an_instances_own_weight_decay_are_refused_together():
    y = (X[:, 0] > 0).astype(int)
    params = dict(hidden_layer_sizes=(8,), max_iter=2, random_state=0)
    with pytest.raises(ValueError, match="set alpha=0 or the instance's weight_decay=0"):
        MLPClassifier(optimizer=fnn.optim.SGD(lr=0.1, weight_decay=0.01), **params).fit(X, y)
    with pytest.raises(ValueError, match="set alpha=0 or the instance's weight_decay=0"):
        MLPClassifier(optimizer=fnn.optim.AdamW(), **params).fit(X, y)  # AdamW's default decay is 1e-2
    clf = MLPClassifier(alpha=0.0, optimizer=fnn.optim.SGD(lr=0.1, weight_decay=0.01), **params).fit(X, y)
    assert _decay(clf) == 0.01


# ---------------------------------------------------------------------------- 4. warm starts of another target kind
def test_a_multi_label_estimator_refuses_multiclass_labels_and_back():
    """bug_warm_ml.py: a multi-label estimator trained its sigmoid outputs with softmax cross-entropy."""
    Y = (X > 0).astype(int)
    y = np.argmax(X, axis=1)
    multi_label = MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, random_state=0, warm_start=True).fit(X, Y)
    weights = multi_label.model_.params.copy()
    message = "fitted on a multi-label indicator with 3 columns; y is 1-D labels: use warm_start=False"
    with pytest.raises(ValueError, match=message):
        multi_label.fit(X, y)
    with pytest.raises(ValueError, match=message):
        multi_label.partial_fit(X, y)
    assert np.array_equal(multi_label.model_.params, weights) and multi_label.out_activation_ == "logistic"
    multiclass = MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, random_state=0, warm_start=True).fit(X, y)
    message = r"fitted on multiclass labels \(3 classes\); y is a multi-label indicator with 3 columns"
    with pytest.raises(ValueError, match=message):
        multiclass.fit(X, Y)
    with pytest.raises(ValueError, match=message):
        multiclass.partial_fit(X, Y)
    with pytest.raises(ValueError, match="y has 2 label columns, the estimator was fitted on a multi-label indicator"):
        multi_label.fit(X, Y[:, :2])


# ---------------------------------------------------------------------------- 5. the constructor's parameters
@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor, NeuralNetClassifier, NeuralNetRegressor])
def test_scikit_learns_parameter_validation(Estimator):
    """scikit-learn's own check: every parameter has a constraint, and a value of the wrong type or
    range is refused by fit and partial_fit with an error naming the parameter."""
    check_param_validation(Estimator.__name__, Estimator())


@pytest.mark.parametrize(
    "name, value, allowed",
    [
        ("alpha", -1.0, r"a float in the range \[0.0, inf\)"),
        ("max_iter", 0, r"an int in the range \[1, inf\)"),
        ("learning_rate_init", 0.0, r"a float in the range \(0.0, inf\)"),
        ("hidden_layer_sizes", (8, 0), "an int >= 1 or a sequence of ints >= 1"),
        ("activation", "logisitc", r"one of scikit-learn's 'identity', 'logistic', 'tanh', 'relu' or a fastnn"),
        ("hidden_layer_sizes", 0, r"an array-like or an int in the range \[1, inf\)"),
        ("dropout", 1.0, r"a float in the range \[0.0, 1.0\)"),
        ("validation_fraction", 1.5, r"a float in the range \(0.0, 1.0\)"),
        ("n_iter_no_change", 0, r"an int in the range \[1, inf\)"),
        ("tol", -1.0, r"a float in the range \[0.0, inf\)"),
        ("shuffle", "no", "an instance of 'bool'"),
        ("early_stopping", "yes", "an instance of 'bool'"),
        ("warm_start", "yes", "an instance of 'bool'"),
        ("batch_norm", "yes", "an instance of 'bool'"),
        ("verbose", "loud", r"an int in the range \[0, inf\), an instance of 'bool'"),
        ("n_threads", 10_000, r"at most \d+, the Numba threads of this process"),
        ("n_threads", 0, r"None or an int in the range \[1, inf\)"),
        ("batch_size", 0, r"a str among \{'auto'\} or an int in the range \[1, inf\)"),
    ],
)
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_invalid_parameters_are_named(name, value, allowed, method):
    """bug_params.py: errors named fastnn's internals (or none came)."""
    y = (X[:, 0] > 0).astype(int)
    clf = MLPClassifier(hidden_layer_sizes=(4,), max_iter=5, random_state=0).set_params(**{name: value})
    with pytest.raises(InvalidParameterError, match=rf"The '{name}' parameter of MLPClassifier must be {allowed}"):
        getattr(clf, method)(X, y)  # (partial_fit without classes: the parameter is named first)
    assert not hasattr(clf, "model_")
