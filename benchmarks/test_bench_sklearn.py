"""benchmarks/sklearn_mlp.py at its smoke size: both classifiers fit and score, the searches run
on 1 and 2 joblib workers and choose the same candidate (the timings are the script's business)."""

import pytest

pytest.importorskip("sklearn")

import sklearn_mlp


def test_sklearn_mlp_smoke_run():
    result = sklearn_mlp.main(["--quick", "--repeats", "1", "--out", "-"])
    assert [row["case"].split()[0] for row in result["fits"]] == ["digits", "synthetic"]
    for row in result["fits"]:
        assert row["fastnn_s"] > 0 and row["sklearn_s"] > 0
        assert row["fastnn_accuracy"] > 0.15 and row["sklearn_accuracy"] > 0.15  # 10 classes: chance is 0.1
    scores = {row["best_score"] for row in result["searches"]}
    assert len(result["searches"]) == 3 and len(scores) == 1  # same candidates, same seeds: same winner


def test_sklearn_mlp_breakdown_runs_every_part():
    """--breakdown peels each fit case down to its kernel calls (the update call among them takes
    the earlier calls' loss and norm) and the gather alone: every part runs and takes time."""
    rows = sklearn_mlp.breakdown(1, quick=True)
    cases = list(dict.fromkeys(row["case"] for row in rows))
    assert len(cases) == 2 and len(rows) == 14  # digits and the synthetic set, 6 parts + the floor each
    for case in cases:
        parts = [row["part"] for row in rows if row["case"] == case]
        assert parts[-3:] == ["the step's kernel calls alone", "the shuffled batch's gather alone", "GEMM floor"]
    assert all(row["us_per_step"] > 0 and row["over_floor"] > 0 for row in rows)


def test_sklearn_mlp_seeds_fit_each_library_on_each_seed():
    """--seeds: each library's held-out accuracy over random_state 0 .. N-1 on both fit cases."""
    rows = sklearn_mlp.seed_cases(quick=True, seeds=2)
    assert [(row["case"].split()[0], row["library"]) for row in rows] == [
        ("digits", "fastnn"),
        ("digits", "scikit-learn"),
        ("synthetic", "fastnn"),
        ("synthetic", "scikit-learn"),
    ]
    for row in rows:
        assert len(row["scores"]) == 2 and min(row["scores"]) > 0.15  # 10 classes: chance is 0.1
        assert row["mean"] == sum(row["scores"]) / 2 and row["sd"] >= 0
