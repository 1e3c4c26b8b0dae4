"""scikit-learn searches over fastnn estimators on a ``dask.distributed`` cluster through joblib's
Dask backend: a LocalCluster of 2 worker processes stands in for the machines of a real cluster."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")
distributed = pytest.importorskip("distributed")
joblib = pytest.importorskip("joblib")

from sklearn.model_selection import GridSearchCV

import fastnn as fnn
from fastnn.sklearn import NeuralNetClassifier

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _build(n_features, n_outputs, hidden=8):
    return [fnn.Dense(n_features, hidden, activation="relu"), fnn.Dense(hidden, n_outputs)]


def _threads_in_a_task(_):
    """What ``n_threads=None`` gives inside this task (the estimators' rule)."""
    from fastnn import sklearn as fsk

    return fsk._dask_worker_share()


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
    )
    with distributed.Client(cluster) as dask_client:
        yield dask_client
    cluster.close()


def test_grid_search_on_dask_workers_equals_the_sequential_search(client):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((90, 5))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    grid = {"module__hidden": [4, 8], "optimizer__lr": [1e-3, 1e-2]}

    def make():
        return GridSearchCV(NeuralNetClassifier(_build, max_iter=3, random_state=0, dtype="float64"), grid, cv=2)

    sequential = make().fit(X, y)
    with joblib.parallel_backend("dask"):
        on_dask = make().fit(X, y)
    np.testing.assert_array_equal(on_dask.cv_results_["mean_test_score"], sequential.cv_results_["mean_test_score"])
    assert on_dask.best_params_ == sequential.best_params_
    workers = {w for w in client.run(lambda dask_worker: dask_worker.address)}
    assert len(workers) == 2


def test_each_task_gets_its_share_of_the_host_cores(client):
    """Two 1-thread worker processes on one host: each task gets CPUs // 2 Numba threads."""
    import os

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    shares = client.gather(client.map(_threads_in_a_task, range(4), pure=False))
    assert shares == [max(1, min(fnn.get_num_threads(), cpus // 2))] * 4
    assert _threads_in_a_task(0) is None  # outside a worker: the caller's own count
