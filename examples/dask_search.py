"""A randomized architecture search over fastnn networks on a Dask cluster (one or many machines).

    # on one machine: a LocalCluster of worker processes is started for you
    python examples/dask_search.py

    # on a cluster: start `dask scheduler` on one host and `dask worker tcp://HOST:8786` on each
    # machine (one worker process per host; its threads run the search's fits), then
    DASK_SCHEDULER_ADDRESS=tcp://HOST:8786 python examples/dask_search.py

Every worker needs fastnn installed (and `fastnn warmup` run once, or the first fits compile).
Inside each task fastnn's estimators give Numba the host's CPUs divided by the worker threads on
that host, so the fits running side by side on one machine do not oversubscribe its cores.
Needs ``pip install "fastnn[sklearn,dask]"``.
"""

from __future__ import annotations

import os
import time

import joblib
from distributed import Client, LocalCluster
from scipy.stats import loguniform
from sklearn.model_selection import RandomizedSearchCV

import fastnn as fnn
from fastnn.data import load_digits
from fastnn.sklearn import NeuralNetClassifier


def build(n_features, n_outputs, hidden=64, depth=1, dropout=0.0):
    """``depth`` ReLU layers of ``hidden`` units (dropout after each), then the output layer."""
    layers = []
    for i in range(depth):
        layers += [fnn.Dense(n_features if i == 0 else hidden, hidden, activation="relu", init="he_normal")]
        if dropout:
            layers.append(fnn.Dropout(dropout))
    return [*layers, fnn.Dense(hidden, n_outputs)]


def main() -> None:
    address = os.environ.get("DASK_SCHEDULER_ADDRESS")
    client = Client(address) if address else Client(LocalCluster(n_workers=2, threads_per_worker=1))
    print(f"Dask cluster: {len(client.scheduler_info()['workers'])} workers, dashboard {client.dashboard_link}")
    X, y = load_digits()
    space = {
        "module__hidden": [32, 64, 128, 256],
        "module__depth": [1, 2, 3],
        "module__dropout": [0.0, 0.1, 0.3],
        "optimizer__lr": loguniform(3e-4, 3e-2),
    }
    search = RandomizedSearchCV(
        NeuralNetClassifier(build, max_iter=20, batch_size=64, random_state=0),
        space,
        n_iter=int(os.environ.get("N_ITER", 16)),
        cv=3,
        random_state=0,
        n_jobs=-1,
    )
    start = time.perf_counter()
    with joblib.parallel_backend("dask"):
        search.fit(X, y)  # load_digits is already scaled to [0, 1]
    print(f"{len(search.cv_results_['params'])} candidates x 3 folds in {time.perf_counter() - start:.1f} s")
    print(f"best cross-validated accuracy {search.best_score_:.3f} with {search.best_params_}")
    client.close()


if __name__ == "__main__":
    main()
