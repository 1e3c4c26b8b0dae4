"""fastnn's scikit-learn MLPClassifier beside scikit-learn's own, and a GridSearchCV on 2 workers.

    python benchmarks/sklearn_mlp.py                 # digits and 50k x 100, 3 repeats, 2 threads
    python benchmarks/sklearn_mlp.py --quick         # small sizes: a smoke run (the CI test uses it)
    python benchmarks/sklearn_mlp.py --threads 1 --cpu-clock --fits-only   # a busy machine
    python benchmarks/sklearn_mlp.py --fits-only --seeds 8   # also: test accuracy over 8 seeds each

Fit cases: the same network (one hidden layer of 100 ReLU units, softmax output), the same solver
(Adam, lr 1e-3, L2 penalty ``alpha`` 1e-4, batch 200, shuffled each epoch), the same number of
epochs (scikit-learn's stopping rule switched off in both), float32 data for both, on
``--threads`` threads (fastnn's Numba pool; scikit-learn's NumPy BLAS). The time is the median fit
of ``--repeats`` interleaved fits, each after ``fastnn.bench.PAUSE_S`` of rest (the other library's
threads asleep: OpenBLAS's spin after its calls would take a core from the next fit), after one
untimed fit of each library on the same data with the same epochs (so every batch size, plan,
tier-up and compiled kernel the timed fits use is loaded before the clock); that first fit's time is
shown apart ("first fit": with this process's compiles or cache loads). Between the first fit and the
timed ones, ``fastnn warmup``'s recipe of this network runs (all but ``--quick``), as on a machine
where ``fastnn warmup`` ran once: it compiles the fused step of the fit's lane (gather, step, update
and count in one call), which a fit loads when its steps pay for the load; a fit never waits for
its ~3 s compile (``fastnn._fused``), so without the warmup a digits fit runs its step unfused
(~10 us a step more). The accuracy is on a held-out 20 %. The GEMM floor is the same fit's matrix
products alone in NumPy's BLAS (no activation, loss or update): neither library can go below it.

  digits        scikit-learn's 1797 8x8 digits, 200 epochs (scikit-learn's default max_iter)
  synthetic     make_classification: 50,000 x 100, 10 classes, 20 epochs

Search case: GridSearchCV over 12 candidates (hidden 32/64/128 x lr 1e-3/1e-2 x alpha 1e-4/1e-3),
3-fold, 100 epochs, on the digits: ``n_jobs=1`` (one process, all threads), ``n_jobs=2`` (joblib's
process workers: each gets CPUs // 2 Numba threads from joblib) and ``n_jobs=2`` with
joblib's ``inner_max_num_threads`` set to all CPUs (oversubscribed, to show what the split saves).
The worker pool is started and warmed before the timed runs.

``--seeds N`` also fits each library with ``random_state`` 0 .. N-1 on each fit case (untimed) and
gives the held-out accuracy's mean and standard deviation over the seeds: whether the two train
the same model (their initial weights come from the same distribution, scikit-learn's, but are
different draws; one seed's accuracy differs by up to ~1 % between seeds).

``--cpu-clock`` times the fits and the floor in the process's CPU time instead of wall time: on
a machine busy with other jobs, with ``--threads 1``, it leaves out the time spent waiting for
a core (the searches keep wall time: their workers are other processes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings

import numpy as np
from joblib import Parallel, delayed, parallel_config
from sklearn.datasets import make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.neural_network import MLPClassifier as SkMLP

from fastnn.bench import PAUSE_S, set_threads
from fastnn.data import load_digits
from fastnn.kernels.step_feed import gather_batch
from fastnn.sklearn import MLPClassifier as FastMLP
from fastnn.warmup import warmup

HERE = os.path.dirname(os.path.abspath(__file__))
CLOCK = time.perf_counter  # time.process_time with --cpu-clock
WARMUP_RECIPE = "scikit-learn's MLPClassifier"  # fastnn warmup's recipe of the estimators' default network
GRID = {"hidden_layer_sizes": [(32,), (64,), (128,)], "learning_rate_init": [1e-3, 1e-2], "alpha": [1e-4, 1e-3]}


def datasets(quick: bool) -> dict:
    X, y = load_digits()
    n, features = (4_000, 40) if quick else (50_000, 100)
    Xs, ys = make_classification(
        n_samples=n,
        n_features=features,
        n_informative=features * 2 // 5,
        n_classes=10,
        n_clusters_per_class=2,
        random_state=0,
    )
    return {"digits": (X / 16.0, y, 10 if quick else 200), "synthetic": (Xs, ys, 3 if quick else 20)}


def estimators(epochs: int) -> dict:
    """The two classifiers with the same network, solver and epochs (no early stop in either)."""
    common = dict(
        hidden_layer_sizes=(100,),
        alpha=1e-4,
        batch_size=200,
        learning_rate_init=1e-3,
        max_iter=epochs,
        n_iter_no_change=epochs + 1,
        tol=0.0,
        random_state=0,
    )
    return {"fastnn": lambda: FastMLP(**common), "scikit-learn": lambda: SkMLP(solver="adam", **common)}


def _timed_fit(make, X_train, y_train, X_test, y_test) -> tuple[float, float]:
    model = make()
    time.sleep(PAUSE_S)  # the other library's thread pool asleep first: two pools would fight over the cores
    start = CLOCK()
    model.fit(X_train, y_train)
    seconds = CLOCK() - start
    if model.n_iter_ != model.max_iter:  # the same work in both: every epoch run
        raise RuntimeError(f"{type(model).__module__} ran {model.n_iter_} epochs, not max_iter={model.max_iter}")
    return seconds, float(model.score(X_test, y_test))


def gemm_floor(n: int, features: int, hidden: int, classes: int, batch: int, epochs: int) -> float:
    """Seconds of the fit's matrix products alone in NumPy's BLAS (float32, preallocated outputs):
    per batch (``n // batch`` full ones and the remainder, as both libraries cut an epoch) the two
    forward products, the two weight gradients and the hidden layer's input gradient (neither
    library computes the input's gradient); fastest of 3 epochs, times ``epochs``."""
    rng = np.random.default_rng(0)
    x, w1, w2 = (
        rng.standard_normal(s, dtype=np.float32) for s in ((batch, features), (features, hidden), (hidden, classes))
    )
    h, o, dh = (
        np.empty((batch, hidden), np.float32),
        np.empty((batch, classes), np.float32),
        np.empty((batch, hidden), np.float32),
    )
    g1, g2 = np.empty_like(w1), np.empty_like(w2)
    sizes = [batch] * (n // batch) + ([n % batch] if n % batch else [])
    batches = [(x[:m], h[:m], o[:m], dh[:m]) for m in sizes]  # leading rows: C-contiguous
    best = np.inf
    for _ in range(3):
        start = CLOCK()
        for xb, hb, ob, dhb in batches:
            np.matmul(xb, w1, out=hb)
            np.matmul(hb, w2, out=ob)
            np.matmul(hb.T, ob, out=g2)
            np.matmul(ob, w2.T, out=dhb)
            np.matmul(xb.T, dhb, out=g1)
        best = min(best, CLOCK() - start)
    return best * epochs


def fit_cases(quick: bool, repeats: int) -> list[dict]:
    rows = []
    for name, (X, y, epochs) in datasets(quick).items():
        X = X.astype(np.float32)
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
        makers = estimators(epochs)
        first = {impl: _timed_fit(make, X_train, y_train, X_test, y_test)[0] for impl, make in makers.items()}
        if not quick:  # the fused step `fastnn warmup` compiles (module docstring)
            warmup(dtypes=("float32",), progress=False, only=WARMUP_RECIPE)
        times = {impl: [] for impl in makers}
        accuracy = {}
        for _ in range(repeats):  # interleaved: a slow spell of the machine hits both
            for impl, make in makers.items():
                seconds, accuracy[impl] = _timed_fit(make, X_train, y_train, X_test, y_test)
                times[impl].append(seconds)
        fast, sk = statistics.median(times["fastnn"]), statistics.median(times["scikit-learn"])
        floor = gemm_floor(X_train.shape[0], X.shape[1], 100, 10, 200, epochs)
        rows.append(
            {
                "case": f"{name} {X.shape[0]}x{X.shape[1]}, {epochs} epochs",
                "fastnn_s": fast,
                "sklearn_s": sk,
                "fastnn_first_s": first["fastnn"],
                "sklearn_first_s": first["scikit-learn"],
                "speedup": sk / fast,
                "floor_s": floor,
                "fastnn_accuracy": accuracy["fastnn"],
                "sklearn_accuracy": accuracy["scikit-learn"],
            }
        )
    return rows


def breakdown(repeats: int, quick: bool) -> list[dict]:
    """Where a fastnn fit's time goes, per step, on each fit case's training rows (batch 200; the
    digits 50 epochs, the synthetic set 3), each layer of the fit peeled off in turn (interleaved
    repeats, median, after one untimed pass of every part): the estimator's fit; Sequential.fit on
    the encoded labels (the loop: shuffle, gather, loss and accuracy sums, callbacks);
    Sequential.run_step over the epoch's batches in order (the step: its Python, the kernels, the
    optimizer); the step's kernel calls alone, one by one; the shuffled batches' gather alone
    (``gather_batch`` over an epoch's order, as fit runs it); the GEMM floor."""
    rows = []
    for name, (X, y, _) in datasets(quick).items():
        epochs = {"digits": 50, "synthetic": 3}[name] if not quick else 2
        rows += _breakdown_case(name, X.astype(np.float32), y, epochs, repeats)
    return rows


def _breakdown_case(name: str, X, y, epochs: int, repeats: int) -> list[dict]:
    X_train, _, y_train, _ = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    make = estimators(epochs)
    fitted = make["fastnn"]().fit(X_train, y_train)
    model, n = fitted.model_, X_train.shape[0]
    labels = np.searchsorted(fitted.classes_, y_train)
    batches = [(X_train[lo : lo + 200], labels[lo : lo + 200]) for lo in range(0, n, 200)]
    step_calls = [model.step_plan(xb.shape[0]).run.calls for xb, _ in batches]
    order = np.random.default_rng(0).permutation(n)
    x_all, y_all = X_train.reshape(n, -1), labels.astype(np.int64).reshape(n, -1)
    x_buf, y_buf = np.empty((200, x_all.shape[1]), np.float32), np.empty((200, 1), np.int64)

    def step_loop():
        for _ in range(epochs):
            for xb, yb in batches:
                model.run_step(xb, yb)

    def kernels():
        for _ in range(epochs):
            for calls in step_calls:
                results: list = []
                for fn, args in calls:  # the update call takes earlier calls' loss and norm (Result references)
                    results.append(fn(*[results[a.index] if type(a).__name__ == "Result" else a for a in args]))

    def gathers():
        for _ in range(epochs):
            for lo in range(0, n, 200):
                gather_batch(x_all, y_all, order, lo, min(n, lo + 200), x_buf, y_buf)

    parts = {
        "scikit-learn MLPClassifier.fit": lambda: make["scikit-learn"]().fit(X_train, y_train),
        "fastnn MLPClassifier.fit": lambda: make["fastnn"]().fit(X_train, y_train),
        "Sequential.fit (labels encoded)": lambda: model.fit(X_train, labels, epochs=epochs, batch_size=200, verbose=0),
        "Sequential.run_step per batch": step_loop,
        "the step's kernel calls alone": kernels,
        "the shuffled batch's gather alone": gathers,
    }
    for run in parts.values():  # untimed: every plan, runner and tier-up the timed passes use
        run()
    seconds: dict = {part: [] for part in parts}
    for _ in range(repeats):
        for part, run in parts.items():
            time.sleep(PAUSE_S)  # as in _timed_fit
            start = CLOCK()
            run()
            seconds[part].append(CLOCK() - start)
    steps = epochs * len(batches)
    case = f"{name} {n}x{x_all.shape[1]}, {epochs} epochs"
    rows = [{"case": case, "part": p, "us_per_step": statistics.median(v) / steps * 1e6} for p, v in seconds.items()]
    floor = gemm_floor(n, x_all.shape[1], 100, 10, 200, epochs) / steps * 1e6
    rows.append({"case": case, "part": "GEMM floor", "us_per_step": floor})
    for row in rows:
        row["over_floor"] = row["us_per_step"] / floor
    return rows


def _search(n_jobs: int, X, y, epochs: int) -> tuple[float, float]:
    search = GridSearchCV(FastMLP(max_iter=epochs, batch_size=64, random_state=0), GRID, cv=3, n_jobs=n_jobs)
    start = time.perf_counter()
    search.fit(X, y)
    return time.perf_counter() - start, float(search.best_score_)


def search_cases(quick: bool, threads: int) -> list[dict]:
    X, y = load_digits()
    X = (X / 16.0).astype(np.float32)
    epochs = 3 if quick else 100
    rows = []
    for label, n_jobs, inner in [
        ("n_jobs=1", 1, None),
        ("n_jobs=2 (CPUs // 2 threads each)", 2, None),
        (f"n_jobs=2, {threads} threads each (oversubscribed)", 2, threads),
    ]:
        with parallel_config(backend="loky", inner_max_num_threads=inner):
            if n_jobs > 1:  # start the workers (and load the kernels there) before the clock
                Parallel(n_jobs=n_jobs)(delayed(_search)(1, X[:90], y[:90], 1) for _ in range(n_jobs))
            seconds, best = _search(n_jobs, X, y, epochs)
        rows.append({"case": f"GridSearchCV 12 candidates x 3 folds, {label}", "seconds": seconds, "best_score": best})
    base = rows[0]["seconds"]
    for row in rows:
        row["speedup"] = base / row["seconds"]
    return rows


def seed_cases(quick: bool, seeds: int) -> list[dict]:
    """Held-out accuracy of each library on each fit case, over ``random_state`` 0 .. seeds - 1."""
    rows = []
    for name, (X, y, epochs) in datasets(quick).items():
        X = X.astype(np.float32)
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
        for impl, make in estimators(epochs).items():
            scores = [
                make().set_params(random_state=seed).fit(X_train, y_train).score(X_test, y_test)
                for seed in range(seeds)
            ]
            rows.append(
                {
                    "case": f"{name} {X.shape[0]}x{X.shape[1]}, {epochs} epochs",
                    "library": impl,
                    "mean": float(np.mean(scores)),
                    "sd": float(np.std(scores, ddof=1)) if seeds > 1 else 0.0,
                    "scores": [float(a) for a in scores],
                }
            )
    return rows


def table(fits: list[dict], searches: list[dict]) -> str:
    lines = [
        "| case | fastnn s | scikit-learn s | GEMM floor s | sklearn / fastnn | fastnn / floor | sklearn / floor "
        "| accuracy fastnn | accuracy sklearn | first fit fastnn / sklearn s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['case']} | {r['fastnn_s']:.2f} | {r['sklearn_s']:.2f} | {r['floor_s']:.2f} | {r['speedup']:.1f}x | "
        f"{r['fastnn_s'] / r['floor_s']:.2f} | {r['sklearn_s'] / r['floor_s']:.2f} | "
        f"{r['fastnn_accuracy']:.3f} | {r['sklearn_accuracy']:.3f} | "
        f"{r['fastnn_first_s']:.2f} / {r['sklearn_first_s']:.2f} |"
        for r in fits
    ]
    if not searches:
        return "\n".join(lines)
    lines += ["", "| search | seconds | speed-up over n_jobs=1 | best CV accuracy |", "|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['seconds']:.1f} | {r['speedup']:.2f}x | {r['best_score']:.3f} |" for r in searches]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--cpu-clock", action="store_true", help="fits and floor in process CPU time (a busy machine)")
    parser.add_argument("--fits-only", action="store_true", help="leave out the GridSearchCV cases")
    parser.add_argument("--breakdown", action="store_true", help="also: each case's fit time per step, by part")
    parser.add_argument("--seeds", type=int, default=0, help="also: each fit case's accuracy over this many seeds")
    parser.add_argument(
        "--out",
        default=os.path.join(HERE, "results", "sklearn_mlp"),
        help="write OUT.json and OUT.md ('-': print only)",
    )
    args = parser.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.cpu_clock else time.perf_counter
    set_threads(args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = {
            "threads": args.threads,
            "repeats": args.repeats,
            "quick": args.quick,
            "clock": "process CPU time" if args.cpu_clock else "wall",
            "fits": fit_cases(args.quick, args.repeats),
            "searches": [] if args.fits_only else search_cases(args.quick, args.threads),
        }
        if args.breakdown:
            result["breakdown"] = breakdown(args.repeats, args.quick)
        if args.seeds:
            result["seeds"] = seed_cases(args.quick, args.seeds)
    text = table(result["fits"], result["searches"])
    if args.seeds:
        text += (
            f"\n\n| accuracy over {args.seeds} seeds | library | mean | sd | min | max |\n|---|---|---|---|---|---|\n"
        )
        text += "\n".join(
            f"| {r['case']} | {r['library']} | {r['mean']:.4f} | {r['sd']:.4f} | {min(r['scores']):.3f} | "
            f"{max(r['scores']):.3f} |"
            for r in result["seeds"]
        )
    if args.breakdown:
        text += "\n\n| per step (batch 200) | part | us | / floor |\n|---|---|---|---|\n"
        text += "\n".join(
            f"| {r['case']} | {r['part']} | {r['us_per_step']:.1f} | {r['over_floor']:.2f} |"
            for r in result["breakdown"]
        )
    print(text)
    if args.out != "-":
        with open(args.out + ".json", "w") as f:
            json.dump(result, f, indent=1)
        with open(args.out + ".md", "w") as f:
            command = " ".join(["python benchmarks/sklearn_mlp.py", *(sys.argv[1:] if argv is None else argv)])
            f.write(f"`{command}`\n\n{text}\n")
    return result


if __name__ == "__main__":
    main()
